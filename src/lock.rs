//! The process lock on `ROOT/.lock`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::layout::LOCK;

/// Takes the store's lock: exclusive for a read-write open, shared for a
/// read-only one. Fails at once with [`Error::Locked`] if it is held in a
/// conflicting way (by another process, or another open handle in this one).
///
/// A read-only open of a store without a `.lock` file (one made by
/// go-ds-flatfs) on a filesystem where it cannot be created proceeds unlocked.
pub(crate) fn acquire(root: &Path, exclusive: bool) -> Result<Option<File>> {
    let path = root.join(LOCK);
    let file = if exclusive {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open", &path)?
    } else {
        match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(_) => return Ok(None),
                }
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        }
    };
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}
