//! The store lock, `ROOT/.lock`: writers share it, exclusive work takes it
//! alone, and it serialises the short updates of `diskUsage.cache`.
//!
//! Three bytes of the file are locked, each on its own:
//! - byte 0, [`WRITERS`]: every read-write handle holds it *shared*;
//!   exclusive work (a reshard) holds it *exclusive*. Readers never take it,
//!   so a reader never waits and never makes anyone wait.
//! - byte 1, [`COUNTERS`]: held exclusive for the few milliseconds in which
//!   `diskUsage.cache` is read and rewritten.
//! - byte 2, [`RECOVERY`]: held exclusive while an open cleans up entries of
//!   `.temp/` that carry no owner token (an older version's, another
//!   program's), so that two opens never finish one of them at once.
//!
//! Which writers are alive is not asked of this file but of each writer's
//! own owner file (see `owner`), which also names its process id.
//!
//! # Why these primitives
//! On Unix the locks are POSIX record locks (`fcntl(F_SETLK)`): they are
//! never inherited by a forked child, unlike `flock` and open-file-
//! description locks, which a child forked by any thread shares until it
//! execs (a store closed in that window would stay locked). Record locks
//! belong to the process and are dropped when it closes *any* descriptor of
//! the file, so this module keeps exactly one descriptor of each `.lock` per
//! process, in a registry keyed by the file's identity (device and inode,
//! so a bind mount or a symlinked root reaches the same entry), and closes it
//! only under the registry's mutex when the last handle is gone: no other
//! descriptor of `.lock` is ever opened while one is held. On Windows the
//! locks are `LockFileEx` byte ranges, which belong to the handle.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::backoff::Backoff;

use crate::error::{Error, IoContext, Result};
use crate::layout::{LOCK, TEMP};
use crate::owner;
use crate::platform;

/// Byte shared by writers, exclusive for exclusive work.
const WRITERS: u64 = 0;
/// Byte held while `diskUsage.cache` is read and rewritten.
const COUNTERS: u64 = 1;
/// Byte held while untagged leftovers in `.temp/` are cleaned up.
const RECOVERY: u64 = 2;

/// One process's descriptor of one `.lock`.
struct LockFile {
    path: PathBuf,
    root: PathBuf,
    /// `None` once closed (under the registry's mutex).
    file: Mutex<Option<File>>,
    /// Serialise this process's threads before they take the byte locks
    /// (record locks do not exclude threads of one process).
    counters: Mutex<()>,
    recovery: Mutex<()>,
}

struct Entry {
    lock: Arc<LockFile>,
    /// Read-write handles of this process holding byte 0.
    handles: usize,
    /// Whether byte 0 is held exclusive (by one of those handles).
    exclusive: bool,
}

static REGISTRY: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<HashMap<String, Entry>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A read-write handle's hold on the store lock; released on drop.
pub(crate) struct WriterLock {
    id: String,
    lock: Arc<LockFile>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("path", &self.lock.path)
            .finish()
    }
}

/// The error for a lock held by others: names their process ids where the
/// owner files tell them.
fn locked(root: &Path, path: &Path) -> Error {
    Error::Locked {
        path: path.to_path_buf(),
        holders: owner::live_pids(&root.join(TEMP)),
    }
}

/// Polls `attempt` until it succeeds or `wait` has passed.
fn retry_for(wait: Option<Duration>, attempt: impl FnMut() -> Result<bool>) -> Result<bool> {
    let backoff = Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(200),
        total: wait.unwrap_or(Duration::ZERO),
    };
    backoff.run(attempt, |r| matches!(r, Ok(false)))
}

/// Takes the store lock for a read-write handle: byte 0 shared. Fails with
/// [`Error::Locked`] if exclusive work holds it (after waiting up to `wait`).
pub(crate) fn acquire_writer(root: &Path, wait: Option<Duration>) -> Result<WriterLock> {
    let path = root.join(LOCK);
    let acquired = retry_value(wait, || {
        let mut reg = registry();
        let map = reg.get_or_insert_with(HashMap::new);
        // The identity is read by path (no descriptor is opened), so a held
        // lock is found before anything could close a descriptor of it.
        let id = match platform::file_identity(&path) {
            Ok(id) => id,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // No descriptor of a file that does not exist can be open here.
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .ctx("create", &path)?;
                platform::file_identity(&path).ctx("stat", &path)?
            }
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        if let Some(entry) = map.get_mut(&id) {
            if entry.exclusive {
                return Ok(None);
            }
            entry.handles += 1;
            return Ok(Some(WriterLock {
                id,
                lock: entry.lock.clone(),
            }));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        if !platform::lock_byte(&file, WRITERS, false, false).ctx("lock", &path)? {
            return Ok(None);
        }
        let lock = Arc::new(LockFile {
            path: path.clone(),
            root: root.to_path_buf(),
            file: Mutex::new(Some(file)),
            counters: Mutex::new(()),
            recovery: Mutex::new(()),
        });
        map.insert(
            id.clone(),
            Entry {
                lock: lock.clone(),
                handles: 1,
                exclusive: false,
            },
        );
        Ok(Some(WriterLock { id, lock }))
    })?;
    acquired.ok_or_else(|| locked(root, &path))
}

/// Polls `attempt` until it hands back a value or `wait` has passed.
fn retry_value<T>(
    wait: Option<Duration>,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut out = None;
    retry_for(wait, || {
        out = attempt()?;
        Ok(out.is_some())
    })?;
    Ok(out)
}

impl WriterLock {
    fn file(&self) -> MutexGuard<'_, Option<File>> {
        self.lock.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` holding byte `byte` exclusive (waiting for it), after `local`
    /// has kept out this process's other threads.
    fn with_byte<T>(&self, local: &Mutex<()>, byte: u64, f: impl FnOnce() -> T) -> Result<T> {
        let _local = local.lock().unwrap_or_else(|e| e.into_inner());
        let path = &self.lock.path;
        {
            let file = self.file();
            let file = file
                .as_ref()
                .expect("lock file open while a handle holds it");
            platform::lock_byte(file, byte, true, true).ctx("lock", path)?;
        }
        let out = f();
        let file = self.file();
        let file = file
            .as_ref()
            .expect("lock file open while a handle holds it");
        platform::unlock_byte(file, byte).ctx("unlock", path)?;
        Ok(out)
    }

    /// Runs `f` while no other writer reads or rewrites `diskUsage.cache`.
    pub(crate) fn with_counters<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.with_byte(&self.lock.counters, COUNTERS, f)
    }

    /// Runs `f` while no other open cleans up untagged leftovers.
    pub(crate) fn with_recovery<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.with_byte(&self.lock.recovery, RECOVERY, f)
    }

    /// Takes the store exclusively: no other writer, in this process or any
    /// other, holds it meanwhile (until [`downgrade`](WriterLock::downgrade)).
    ///
    /// # Errors
    /// [`Error::Busy`] if this process has other read-write handles of the
    /// store; [`Error::Locked`] (with the other writers' process ids) if
    /// other processes hold it after waiting up to `wait`.
    pub(crate) fn upgrade(&self, wait: Option<Duration>) -> Result<()> {
        let path = self.lock.path.clone();
        let got = retry_for(wait, || {
            let mut reg = registry();
            let entry = reg
                .as_mut()
                .and_then(|m| m.get_mut(&self.id))
                .expect("registered while held");
            if entry.handles > 1 {
                return Err(Error::Busy);
            }
            let file = self.file();
            let file = file
                .as_ref()
                .expect("lock file open while a handle holds it");
            if platform::upgrade_byte(file, WRITERS).ctx("lock", &path)? {
                entry.exclusive = true;
                return Ok(true);
            }
            Ok(false)
        })?;
        if got {
            Ok(())
        } else {
            Err(locked(&self.lock.root, &path))
        }
    }

    /// Gives exclusive hold back: byte 0 shared again.
    pub(crate) fn downgrade(&self) -> Result<()> {
        let mut reg = registry();
        let entry = reg
            .as_mut()
            .and_then(|m| m.get_mut(&self.id))
            .expect("registered while held");
        if entry.exclusive {
            let file = self.file();
            let file = file
                .as_ref()
                .expect("lock file open while a handle holds it");
            platform::downgrade_byte(file, WRITERS).ctx("lock", &self.lock.path)?;
            entry.exclusive = false;
        }
        Ok(())
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Under the registry's mutex, so an open racing this drop either
        // joins this descriptor or finds it closed, never a second one.
        let mut reg = registry();
        let Some(map) = reg.as_mut() else { return };
        let Some(entry) = map.get_mut(&self.id) else {
            return;
        };
        entry.handles -= 1;
        if entry.handles == 0 {
            map.remove(&self.id);
            // Closing the only descriptor releases every byte it held.
            drop(self.file().take());
        }
    }
}
