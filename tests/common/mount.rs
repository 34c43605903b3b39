//! Mounting small filesystems for tests (Linux, root): a tmpfs of a chosen
//! size and loop-mounted images. Every mount is undone by a guard, also when
//! the test fails. Where mounting is impossible (not root, no permission),
//! the constructors return the reason, and the test prints it and skips.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a mount cannot be done here, or `None` if it can be tried.
pub fn cannot_mount() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root: mounting a filesystem needs root".into());
    }
    None
}

/// Prints why a test is skipped, in a form that stands out in the log.
/// Under `FLATSTORE_REQUIRE_ROOT=1` (as CI runs, as root) a skip is a
/// failure instead: CI can never pass these tests by skipping them.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("FLATSTORE_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {reason} (FLATSTORE_REQUIRE_ROOT=1 requires it)");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// A mounted filesystem, unmounted (and its directory removed) on drop.
pub struct Mount {
    dir: PathBuf,
    _base: Option<tempfile::TempDir>,
}

impl Mount {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A tmpfs of `size` bytes on a fresh directory.
    ///
    /// # Errors
    /// The reason it cannot be mounted here (not root, no permission); any
    /// other failure panics.
    pub fn tmpfs(size: u64) -> Result<Mount, String> {
        Mount::tmpfs_with(&format!("size={size}"))
    }

    /// A tmpfs with the mount options `options` (e.g. `size=24m,nr_inodes=200`).
    ///
    /// # Errors
    /// As [`Mount::tmpfs`].
    pub fn tmpfs_with(options: &str) -> Result<Mount, String> {
        if let Some(reason) = cannot_mount() {
            return Err(reason);
        }
        let base = tempfile::Builder::new()
            .prefix("flatstore-mnt-")
            .tempdir()
            .expect("create mount point");
        let dir = base.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let c = |s: &[u8]| CString::new(s).unwrap();
        let (src, target, fstype) = (c(b"tmpfs"), c(dir.as_os_str().as_bytes()), c(b"tmpfs"));
        let data = c(format!("{options},mode=0755").as_bytes());
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return Err(format!("mounting a tmpfs is not permitted here: {e}"));
            }
            panic!("mount tmpfs on {}: {e}", dir.display());
        }
        Ok(Mount {
            dir,
            _base: Some(base),
        })
    }

    /// Loop-mounts the image `image` (any filesystem `mount` recognises) on
    /// `dir`, with the extra mount options `options` (may be empty).
    ///
    /// # Errors
    /// The reason it cannot be mounted here (not root, no permission); any
    /// other failure panics.
    pub fn loop_image(image: &Path, dir: &Path, options: &str) -> Result<Mount, String> {
        if let Some(reason) = cannot_mount() {
            return Err(reason);
        }
        std::fs::create_dir_all(dir).unwrap();
        let opts = if options.is_empty() {
            "loop".to_string()
        } else {
            format!("loop,{options}")
        };
        let out = Command::new("mount")
            .arg("-o")
            .arg(&opts)
            .arg(image)
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let lower = err.to_lowercase();
            if lower.contains("permission denied")
                || lower.contains("not permitted")
                || lower.contains("must be superuser")
                || lower.contains("no such device")
                || lower.contains("failed to setup loop device")
            {
                return Err(format!("loop mount not possible here: {}", err.trim()));
            }
            panic!(
                "mount -o {opts} {} {}: {}",
                image.display(),
                dir.display(),
                err.trim()
            );
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
            _base: None,
        })
    }

    /// Bytes available to an unprivileged writer (statvfs `f_bavail`).
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.dir)
    }

    /// Inodes available (statvfs `f_favail`).
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    pub fn free_inodes(&self) -> u64 {
        statvfs(&self.dir).f_favail as u64
    }
}

/// Bytes available on the filesystem holding `path`.
#[allow(clippy::unnecessary_cast)] // the field types differ between targets
pub fn free_bytes(path: &Path) -> u64 {
    let st = statvfs(path);
    st.f_bavail as u64 * st.f_frsize as u64
}

fn statvfs(path: &Path) -> libc::statvfs {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: p is NUL-terminated and st is a valid out-pointer.
    let rc = unsafe { libc::statvfs(p.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    st
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        // Retry briefly (a child process may still be exiting), then detach
        // lazily so that the mount never outlives the test.
        for _ in 0..50 {
            // SAFETY: target is a valid NUL-terminated path.
            if unsafe { libc::umount(target.as_ptr()) } == 0 {
                return;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                eprintln!("umount {}: {e}", self.dir.display());
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "umount -l {}: {}",
                self.dir.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}
