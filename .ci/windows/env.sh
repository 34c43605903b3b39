# Shared settings for running the x86_64-pc-windows-gnu tests under Wine.
# Sourced by .ci/install, .ci/test and .ci/windows/wine-runner.

# The 64-bit loader: the plain `wine` launcher tries the 32-bit side on a
# fresh prefix and fails.
FLATSTORE_WINE=${FLATSTORE_WINE:-/usr/lib/wine/wine64}
FLATSTORE_WINESERVER=${FLATSTORE_WINESERVER:-/usr/lib/wine/wineserver64}
FLATSTORE_MINGW_GCC=${FLATSTORE_MINGW_GCC:-x86_64-w64-mingw32-gcc}
FLATSTORE_WINDOWS_TARGET=x86_64-pc-windows-gnu

# A prefix of our own, so a developer's everyday ~/.wine is left alone.
export WINEPREFIX="${FLATSTORE_WINEPREFIX:-${HOME:?HOME is not set}/.wine-flatstore}"
export WINEARCH=win64
# Quiet, headless, and no Mono/Gecko installer prompts when Wine
# creates or updates the prefix.
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
export DISPLAY=

FLATSTORE_SHIM_DLL="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"

# Prints what is missing to run Windows binaries under Wine; empty if ready.
flatstore_wine_missing() {
    local missing=()
    [ -x "$FLATSTORE_WINE" ] || missing+=("$FLATSTORE_WINE (apt package wine64)")
    command -v "$FLATSTORE_MINGW_GCC" >/dev/null 2>&1 \
        || missing+=("$FLATSTORE_MINGW_GCC (apt package gcc-mingw-w64-x86-64)")
    if ! rustup target list --installed 2>/dev/null | grep -qx "$FLATSTORE_WINDOWS_TARGET"; then
        missing+=("rust target $FLATSTORE_WINDOWS_TARGET")
    fi
    [ -f "$FLATSTORE_SHIM_DLL" ] || missing+=("Wine prefix with the ProcessPrng shim ($FLATSTORE_SHIM_DLL)")
    if [ ${#missing[@]} -gt 0 ]; then
        printf '  - %s\n' "${missing[@]}"
    fi
}
