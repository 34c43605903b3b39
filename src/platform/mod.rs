//! Platform differences, each behind one small function.
//!
//! The rest of the crate calls these and never uses `cfg(unix)` or
//! `cfg(windows)` itself. Unix (Linux first) and Windows each have a module
//! exporting the same functions; see each module for how it does the job.

use std::fs::{self, File, ReadDir};
use std::io;
use std::path::Path;

use crate::fault::{hit, FaultKind};
use std::time::Duration;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// Renames `from` to `to` unless `to` exists, in which case it fails with
/// [`io::ErrorKind::AlreadyExists`] and leaves both files as they were.
///
/// Linux: `renameat2(RENAME_NOREPLACE)`, falling back to `link` + `unlink`
/// on filesystems without it. Windows: `MoveFileExW` without
/// `MOVEFILE_REPLACE_EXISTING`, retried while another handle blocks it.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    hit(FaultKind::Rename)?;
    imp::rename_noreplace(from, to)
}

/// Whether [`exchange`] can work here (Linux, until a filesystem refuses it).
pub(crate) fn exchange_supported() -> bool {
    imp::exchange_supported()
}

/// Swaps the names `a` and `b` atomically (both must exist, else
/// [`io::ErrorKind::NotFound`]): a reader of either name sees one file or
/// the other, never neither. `Ok(false)` where the platform or filesystem
/// cannot, with nothing changed. Linux: `renameat2(RENAME_EXCHANGE)`.
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    hit(FaultKind::Rename)?;
    imp::exchange(a, b)
}

/// Gives the file `from` the second name `to` (a hard link; `to` must not exist).
pub(crate) fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    hit(FaultKind::Create)?;
    fs::hard_link(from, to)
}

/// Renames `from` to `to`, replacing `to` if it exists (for metadata files).
pub(crate) fn rename_replace(from: &Path, to: &Path) -> io::Result<()> {
    hit(FaultKind::Rename)?;
    retry_shared(|| std::fs::rename(from, to))
}

/// Makes the directory's entries durable (fsync of the directory).
/// A no-op where directories cannot be synced (Windows).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    hit(FaultKind::SyncDir)?;
    imp::sync_dir(dir)
}

/// Opens a file for reading so that it can still be renamed or deleted by
/// others while open (`FILE_SHARE_DELETE` on Windows).
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    imp::open_read(path)
}

/// Creates a new file for writing; fails if it exists. Shared like [`open_read`].
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    hit(FaultKind::Create)?;
    imp::create_new(path)
}

/// Removes a file, retrying while another handle blocks it (Windows).
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    hit(FaultKind::Unlink)?;
    retry_shared(|| std::fs::remove_file(path))
}

/// Removes a directory tree, retrying while another handle blocks it (Windows).
pub(crate) fn remove_dir_all(path: &Path) -> io::Result<()> {
    hit(FaultKind::Unlink)?;
    retry_shared(|| match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    })
}

/// The path the store uses for its root. On Windows, the verbatim (`\\?\`)
/// form of the absolute path, under which the reserved device names (`CON`,
/// `AUX`, …, which a shard function can produce as a directory name) are
/// ordinary names; elsewhere the path as given.
pub(crate) fn store_root(root: &Path) -> io::Result<std::path::PathBuf> {
    imp::store_root(root)
}

/// Locks the one byte at `offset` of `file`, shared or exclusive; without
/// `wait`, `Ok(false)` at once if another holder conflicts. Unix: a POSIX
/// record lock (per process, never inherited by a forked child, dropped when
/// the process closes *any* descriptor of the file: the lock module keeps one
/// descriptor per file). Windows: `LockFileEx` (per handle).
pub(crate) fn lock_byte(file: &File, offset: u64, exclusive: bool, wait: bool) -> io::Result<bool> {
    imp::lock_byte(file, offset, exclusive, wait)
}

/// Turns this process's shared lock on byte `offset` into an exclusive one
/// if nobody else holds it; `Ok(false)`, still holding the shared lock,
/// otherwise. Unix converts in place; Windows releases, retries, and takes
/// the shared lock back.
pub(crate) fn upgrade_byte(file: &File, offset: u64) -> io::Result<bool> {
    imp::upgrade_byte(file, offset)
}

/// Turns an exclusive lock on byte `offset` back into a shared one.
pub(crate) fn downgrade_byte(file: &File, offset: u64) -> io::Result<()> {
    imp::downgrade_byte(file, offset)
}

/// Releases this process's lock on byte `offset`.
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    imp::unlock_byte(file, offset)
}

/// A string naming the file at `path` itself, the same through any path
/// that reaches it (Unix: device and inode; Windows: the canonical path,
/// since locks there belong to handles and cannot be dropped by another).
pub(crate) fn file_identity(path: &Path) -> io::Result<String> {
    imp::file_identity(path)
}

/// Appends up to `len` bytes read from `file` to `buf`, stopping early only
/// at end of file: one `read` call for a block in the page cache, without
/// zero-filling the buffer first (Unix) or the read-size probing of
/// `Read::read_to_end`.
pub(crate) fn read_up_to(file: &File, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    imp::read_up_to(file, buf, len)
}

/// Creates one directory.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    hit(FaultKind::Mkdir)?;
    fs::create_dir(path)
}

/// Opens a directory for listing.
pub(crate) fn read_dir(path: &Path) -> io::Result<ReadDir> {
    hit(FaultKind::Readdir)?;
    fs::read_dir(path)
}

/// Writes `data` to a file being created.
pub(crate) fn write_all(file: &mut File, data: &[u8]) -> io::Result<()> {
    hit(FaultKind::Write)?;
    std::io::Write::write_all(file, data)
}

/// Copies `reader` into a file being created.
pub(crate) fn copy_into(reader: &mut dyn std::io::Read, file: &mut File) -> io::Result<u64> {
    hit(FaultKind::Write)?;
    std::io::copy(reader, file)
}

/// Makes the data of the existing file at `path` durable (a file written
/// by somebody else, perhaps not synced yet). `Ok(false)` if it is gone.
/// Unix: opened read-only and fdatasynced; Windows: `FlushFileBuffers`
/// needs a handle with write access.
pub(crate) fn sync_existing(path: &Path) -> io::Result<bool> {
    let f = match imp::open_for_sync(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    sync_file(&f).map(|()| true)
}

/// Makes a file's data durable (fdatasync).
pub(crate) fn sync_file(file: &File) -> io::Result<()> {
    hit(FaultKind::Fsync)?;
    file.sync_data()
}

/// Flushes every file of the filesystem holding `root`, if the platform can
/// (Linux `syncfs`). Returns `Ok(false)` where it cannot, and the caller
/// syncs file by file instead.
pub(crate) fn sync_filesystem(root: &Path) -> io::Result<bool> {
    hit(FaultKind::Fsync)?;
    imp::sync_filesystem(root)
}

/// Whether [`sync_filesystem`] can flush a whole filesystem here (Linux
/// `syncfs`), so that a batch need not fsync each staged file on its own.
pub(crate) fn can_sync_filesystem() -> bool {
    imp::can_sync_filesystem()
}

/// Whether fsyncing a directory does anything here ([`sync_dir`] is a no-op
/// on Windows, whose filesystems journal directory entries themselves).
pub(crate) fn dirs_need_sync() -> bool {
    imp::dirs_need_sync()
}

/// Whether the error means the process (or system) has too many files open.
pub(crate) fn is_too_many_files(e: &io::Error) -> bool {
    imp::is_too_many_files(e)
}

/// The process's limit on open files, if known.
pub(crate) fn open_file_limit() -> Option<u64> {
    imp::open_file_limit()
}

/// Whether the error is a transient sharing conflict with another handle
/// (Windows: sharing violation, lock violation, access denied while a file
/// is being deleted). Always false on Unix.
pub(crate) fn is_sharing_conflict(e: &io::Error) -> bool {
    imp::is_sharing_conflict(e)
}

/// Runs `op`, retrying with exponential backoff (about 2 s in all) while it
/// fails with a sharing conflict.
pub(crate) fn retry_shared<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let backoff = crate::backoff::Backoff {
        first: Duration::from_micros(500),
        max: Duration::from_millis(200),
        total: Duration::from_secs(2),
    };
    backoff.run(op, |r| matches!(r, Err(e) if is_sharing_conflict(e)))
}
