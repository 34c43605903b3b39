//! Unix implementations (Linux first; other Unixes use portable fallbacks).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `renameat2(RENAME_NOREPLACE)` has been found unsupported, so
/// later calls go straight to the fallback.
static NO_RENAMEAT2: AtomicBool = AtomicBool::new(false);
/// The same for `renameat2(RENAME_EXCHANGE)`, which some filesystems that
/// have `RENAME_NOREPLACE` lack.
static NO_EXCHANGE: AtomicBool = AtomicBool::new(false);

/// `renameat2(from, to, flags)`; `None` where the kernel or the filesystem
/// does not support it (remembered in `unsupported`, so later calls skip it).
#[cfg(target_os = "linux")]
fn renameat2(
    from: &Path,
    to: &Path,
    flags: libc::c_uint,
    unsupported: &AtomicBool,
) -> Option<io::Result<()>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    if unsupported.load(Ordering::Relaxed) {
        return None;
    }
    let (f, t) = match (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return Some(Err(e.into())),
    };
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Some(Ok(()));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            unsupported.store(true, Ordering::Relaxed);
            None
        }
        _ => Some(Err(e)),
    }
}

pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(r) = renameat2(from, to, libc::RENAME_NOREPLACE, &NO_RENAMEAT2) {
        return r;
    }
    let _ = &NO_RENAMEAT2;
    // Fallback: link refuses an existing target; then drop the old name.
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

pub(super) fn exchange_supported() -> bool {
    cfg!(target_os = "linux") && !NO_EXCHANGE.load(Ordering::Relaxed)
}

pub(super) fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    if let Some(r) = renameat2(a, b, libc::RENAME_EXCHANGE, &NO_EXCHANGE) {
        return r.map(|()| true);
    }
    let _ = (a, b);
    Ok(false)
}

pub(super) fn store_root(root: &Path) -> io::Result<std::path::PathBuf> {
    Ok(root.to_path_buf())
}

/// A POSIX record lock on the one byte at `offset` of `file`: `F_SETLK`
/// (or `F_SETLKW` when `wait`) with `l_type`.
fn record_lock(file: &File, offset: u64, l_type: libc::c_int, wait: bool) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed flock is a valid value; the fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = offset as _;
    fl.l_len = 1;
    let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    loop {
        // SAFETY: valid descriptor and a valid flock for the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EACCES) | Some(libc::EAGAIN) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

pub(super) fn lock_byte(file: &File, offset: u64, exclusive: bool, wait: bool) -> io::Result<bool> {
    let l_type = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    record_lock(file, offset, l_type as libc::c_int, wait)
}

pub(super) fn upgrade_byte(file: &File, offset: u64) -> io::Result<bool> {
    // A record lock converts in place: no instant without the shared lock.
    record_lock(file, offset, libc::F_WRLCK as libc::c_int, false)
}

pub(super) fn downgrade_byte(file: &File, offset: u64) -> io::Result<()> {
    record_lock(file, offset, libc::F_RDLCK as libc::c_int, true).map(|_| ())
}

pub(super) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    record_lock(file, offset, libc::F_UNLCK as libc::c_int, false).map(|_| ())
}

pub(super) fn file_identity(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!("{}:{}", m.dev(), m.ino()))
}

pub(super) fn read_up_to(file: &File, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let end = buf.len() + len;
    buf.reserve(len);
    while buf.len() < end {
        let want = end - buf.len();
        // SAFETY: the spare capacity holds at least `want` bytes (reserved
        // above); read(2) writes at most `want` bytes there, and only the
        // bytes it reports are added to the length.
        let n = unsafe {
            libc::read(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(buf.len()).cast(),
                want,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: read(2) initialised these `n` bytes.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn open_for_sync(path: &Path) -> io::Result<File> {
    File::open(path)
}

pub(super) fn open_read(path: &Path) -> io::Result<File> {
    File::open(path)
}

pub(super) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

pub(super) fn can_sync_filesystem() -> bool {
    cfg!(target_os = "linux")
}

pub(super) fn dirs_need_sync() -> bool {
    true
}

pub(super) fn sync_filesystem(root: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = File::open(root)?;
        // SAFETY: the descriptor is valid for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        Ok(false)
    }
}

pub(super) fn is_too_many_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

pub(super) fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(lim.rlim_cur as u64)
    }
}

pub(super) fn is_sharing_conflict(_e: &io::Error) -> bool {
    false
}
