/*
 * Minimal bcryptprimitives.dll for running Rust test binaries under Wine 8.
 *
 * Rust's standard library (since 1.78) imports ProcessPrng from
 * bcryptprimitives.dll. Wine gained that DLL in version 9; Debian 12 ships
 * Wine 8.0, where a Rust executable fails to start ("Library
 * bcryptprimitives.dll not found", exit status 53). This DLL provides the one
 * export std needs, backed by RtlGenRandom (advapi32!SystemFunction036), which
 * Wine 8 implements.
 *
 * Built and installed into the Wine prefix by .ci/install; never shipped.
 */
#include <windows.h>
#include <ntsecapi.h>

/* RtlGenRandom takes a ULONG length; never ask for more than 2^31 - 1 at once. */
#define MAX_CHUNK ((SIZE_T)0x7fffffff)

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = (ULONG)(len < MAX_CHUNK ? len : MAX_CHUNK);
        if (!RtlGenRandom(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
