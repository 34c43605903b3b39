//! Windows implementations.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::OpenOptionsExt;
use std::path::Path;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION, ERROR_TOO_MANY_OPEN_FILES,
};
use windows_sys::Win32::Storage::FileSystem::{
    LockFileEx, MoveFileExW, UnlockFileEx, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
    LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

const SHARE_ALL: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

fn wide(p: &Path) -> Vec<u16> {
    p.as_os_str().encode_wide().chain(Some(0)).collect()
}

pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (wide(from), wide(to));
    super::retry_shared(|| {
        // Without MOVEFILE_REPLACE_EXISTING the move fails if `to` exists.
        // SAFETY: both are valid NUL-terminated wide strings.
        let ok = unsafe { MoveFileExW(f.as_ptr(), t.as_ptr(), 0) };
        if ok != 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            // ERROR_ALREADY_EXISTS / ERROR_FILE_EXISTS map to AlreadyExists in std.
            Err(e)
        }
    })
}

pub(super) fn exchange_supported() -> bool {
    false
}

/// Windows has no call that swaps two names atomically.
pub(super) fn exchange(_a: &Path, _b: &Path) -> io::Result<bool> {
    Ok(false)
}

pub(super) fn store_root(root: &Path) -> io::Result<std::path::PathBuf> {
    // canonicalize returns the verbatim `\\?\C:\…` form.
    std::fs::canonicalize(root)
}

/// `LockFileEx` on the one byte at `offset` of `file`.
fn lock_range(file: &File, offset: u64, exclusive: bool, wait: bool) -> io::Result<bool> {
    use std::os::windows::io::AsRawHandle;
    let mut flags = 0;
    if exclusive {
        flags |= LOCKFILE_EXCLUSIVE_LOCK;
    }
    if !wait {
        flags |= LOCKFILE_FAIL_IMMEDIATELY;
    }
    // SAFETY: a zeroed OVERLAPPED is valid; the offset is set below.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = offset as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    // SAFETY: a valid handle, and `ov` lives for the (synchronous) call.
    let ok = unsafe { LockFileEx(file.as_raw_handle() as _, flags, 0, 1, 0, &mut ov) };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if !wait && e.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        return Ok(false);
    }
    Err(e)
}

pub(super) fn lock_byte(file: &File, offset: u64, exclusive: bool, wait: bool) -> io::Result<bool> {
    lock_range(file, offset, exclusive, wait)
}

pub(super) fn upgrade_byte(file: &File, offset: u64) -> io::Result<bool> {
    // Windows cannot convert a lock: give the shared one up, try for the
    // exclusive one, and take the shared one back (waiting) if that fails.
    unlock_byte(file, offset)?;
    if lock_range(file, offset, true, false)? {
        return Ok(true);
    }
    lock_range(file, offset, false, true)?;
    Ok(false)
}

pub(super) fn downgrade_byte(file: &File, offset: u64) -> io::Result<()> {
    unlock_byte(file, offset)?;
    lock_range(file, offset, false, true).map(|_| ())
}

pub(super) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    use std::os::windows::io::AsRawHandle;
    // SAFETY: a zeroed OVERLAPPED is valid; the offset is set below.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = offset as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    // SAFETY: a valid handle, and `ov` lives for the call.
    let ok = unsafe { UnlockFileEx(file.as_raw_handle() as _, 0, 1, 0, &mut ov) };
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn file_identity(path: &Path) -> io::Result<String> {
    // Locks belong to handles here, so no handle's close can drop another's:
    // the canonical path is identity enough for the registry.
    Ok(std::fs::canonicalize(path)?.to_string_lossy().into_owned())
}

pub(super) fn read_up_to(file: &File, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    use std::io::Read;
    let start = buf.len();
    buf.resize(start + len, 0);
    let mut filled = start;
    let mut f = file;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return Err(e);
            }
        }
    }
    buf.truncate(filled);
    Ok(())
}

pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be flushed on Windows; NTFS journals the metadata.
    Ok(())
}

pub(super) fn open_for_sync(path: &Path) -> io::Result<File> {
    super::retry_shared(|| {
        OpenOptions::new()
            .write(true)
            .share_mode(SHARE_ALL)
            .open(path)
    })
}

pub(super) fn open_read(path: &Path) -> io::Result<File> {
    super::retry_shared(|| {
        OpenOptions::new()
            .read(true)
            .share_mode(SHARE_ALL)
            .open(path)
    })
}

pub(super) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .share_mode(SHARE_ALL)
        .open(path)
}

pub(super) fn can_sync_filesystem() -> bool {
    false
}

pub(super) fn dirs_need_sync() -> bool {
    false
}

pub(super) fn sync_filesystem(_root: &Path) -> io::Result<bool> {
    Ok(false)
}

pub(super) fn is_too_many_files(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_TOO_MANY_OPEN_FILES as i32)
}

pub(super) fn open_file_limit() -> Option<u64> {
    None
}

pub(super) fn is_sharing_conflict(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(|c| c as u32),
        Some(ERROR_SHARING_VIOLATION) | Some(ERROR_LOCK_VIOLATION) | Some(ERROR_ACCESS_DENIED)
    )
}
