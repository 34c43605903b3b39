//! The process lock on `ROOT/.lock`.
//!
//! Between processes the lock is the operating system's: on Unix a POSIX
//! record lock (`fcntl(F_SETLK)`), on Windows `LockFileEx` (std's
//! `File::try_lock`). On Unix a record lock is used rather than `flock`
//! (what std's `File::try_lock` takes there) because an `flock` is shared
//! with every process forked by any thread until that process calls exec:
//! a store closed in that window would stay locked. Record locks are never
//! inherited by a child. They belong to the process, though, so within one
//! process a registry of held locks refuses a second read-write open, and all
//! of the process's handles to one store share one lock file (closing any
//! descriptor of the file would drop a record lock).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, IoContext, Result};
use crate::layout::LOCK;
use crate::platform;

/// A held lock; released when the last store handle holding it is dropped.
pub(crate) struct LockGuard {
    /// Registry key: the lock file's canonical path.
    key: PathBuf,
    exclusive: bool,
    file: Mutex<Option<File>>,
}

static HELD: Mutex<Option<HashMap<PathBuf, Weak<LockGuard>>>> = Mutex::new(None);

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Unregister and close under the registry's mutex, so that an open
        // racing with this drop either sees the lock held or finds it free.
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = held.as_mut() {
            if map.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.key);
            }
        }
        drop(self.file.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

/// Takes the store's lock: exclusive for a read-write open, shared for a
/// read-only one. Fails at once with [`Error::Locked`] if it is held in a
/// conflicting way, by another process or by another open handle in this one.
///
/// A read-only open of a store without a `.lock` file (one made by
/// go-ds-flatfs) on a filesystem where it cannot be created proceeds unlocked.
pub(crate) fn acquire(root: &Path, exclusive: bool) -> Result<Option<Arc<LockGuard>>> {
    let path = root.join(LOCK);
    // The registry is consulted before `.lock` is opened: on Unix, opening
    // and closing another descriptor of it would drop this process's lock.
    let key = std::fs::canonicalize(root).ctx("resolve", root)?.join(LOCK);
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let map = held.get_or_insert_with(HashMap::new);
    if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
        // This process holds it already: readers share, anything else conflicts.
        if exclusive || existing.exclusive {
            return Err(Error::Locked { path });
        }
        return Ok(Some(existing));
    }
    let Some(file) = open_lock_file(&path, exclusive)? else {
        return Ok(None);
    };
    match platform::try_lock(&file, exclusive) {
        Ok(true) => {}
        Ok(false) => return Err(Error::Locked { path }),
        Err(e) => return Err(Error::io("lock", &path, e)),
    }
    let guard = Arc::new(LockGuard {
        key: key.clone(),
        exclusive,
        file: Mutex::new(Some(file)),
    });
    map.insert(key, Arc::downgrade(&guard));
    Ok(Some(guard))
}

/// Opens (creating it if needed) the lock file; `None` for a read-only open
/// where it neither exists nor can be created.
fn open_lock_file(path: &Path, exclusive: bool) -> Result<Option<File>> {
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    if exclusive {
        return rw().ctx("open", path).map(Some);
    }
    match rw() {
        Ok(f) => Ok(Some(f)),
        Err(_) => match File::open(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", path, e)),
        },
    }
}
