//! What an open does with what a crash left: the recovery rules, in one place.
//!
//! Whose an entry of `.temp/` is, and whether that writer is alive, is asked
//! of the `owner` module only ([`owner::probe`]); see there for how
//! liveness is known.
//!
//! | found | read-write open | read-only open |
//! |---|---|---|
//! | staging directory of a live writer | left alone | left alone |
//! | dead writer's staging directory, no commit record | removed (record-less staging is never published) | ignored |
//! | dead writer's staging directory with a complete record | rolled forward, then the record is retired durably before the directory | [`Error::NeedsRecovery`] |
//! | a record that this version cannot read (newer format, damage) | [`Error::CorruptCommitRecord`], directory left untouched for inspection | [`Error::CorruptCommitRecord`] |
//! | an interrupted reshard | finished (taking the store exclusively) | [`Error::NeedsRecovery`] ([`Error::Locked`] while the resharder lives) |
//! | `.temp`, a shard directory or any store entry that is a symlink or of the wrong type | refused with [`Error::BadStoreEntry`]; nothing is followed or removed outside `ROOT` | refused |
//! | dead writer's single-put temp file (or delete trash) | removed | ignored |
//! | an entry with no owner token (an older version's, go-ds-flatfs's) | finished or removed like a dead writer's, one open at a time | like a dead writer's |
//!
//! A dead writer's changes to the counters died with it, so an open that
//! finds one marks `diskUsage.cache` approximate and recounts.
//!
//! Each row has a test in `tests/recovery.rs` named after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::FileType;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::batch;
use crate::error::{Error, IoContext, Result};
use crate::layout::{Layout, DISK_USAGE, LOCK, QUARANTINE, SHARDING, TEMP};
use crate::lock::WriterLock;
use crate::owner::{self, Liveness, TempName};
use crate::platform;
use crate::reshard;
use crate::shard::Shard;
use crate::store::Store;

/// Refuses a store whose fixed entries are symbolic links or of the wrong
/// type (checked before anything is read through them). Shard directories
/// are checked once the shard function is known ([`check_shard_dirs`]).
pub(crate) fn check_entries(root: &Path) -> Result<()> {
    for (name, dir) in [
        (TEMP, true),
        (QUARANTINE, true),
        (SHARDING, false),
        (LOCK, false),
        (DISK_USAGE, false),
    ] {
        let path = root.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) => check_type(&path, m.file_type(), dir)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", path, e)),
        }
    }
    Ok(())
}

/// Refuses a store where a name of a shard directory is a symbolic link or
/// a file: a publish there would reach outside the root.
pub(crate) fn check_shard_dirs(root: &Path, shard: &Shard) -> Result<()> {
    for entry in platform::read_dir(root).ctx("read directory", root)? {
        let entry = entry.ctx("read directory", root)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if shard.is_dir_name(&name) {
            let t = entry.file_type().ctx("stat", &entry.path())?;
            check_type(&entry.path(), t, true)?;
        }
    }
    Ok(())
}

fn check_type(path: &Path, t: FileType, dir: bool) -> Result<()> {
    let reason = if t.is_symlink() {
        "is a symbolic link (the store never follows one)"
    } else if dir && !t.is_dir() {
        "is not a directory"
    } else if !dir && !t.is_file() {
        "is not a regular file"
    } else {
        return Ok(());
    };
    Err(Error::BadStoreEntry {
        path: path.to_path_buf(),
        reason,
    })
}

/// One entry of `.temp/`.
struct TempEntry {
    path: PathBuf,
    is_dir: bool,
    /// A batch staging directory.
    staging: bool,
}

/// `.temp/`'s entries grouped by owner: tokens with an owner file, entries
/// by token, and entries that carry no token. Refuses symbolic links and
/// anything that is neither a file nor a directory.
struct TempListing {
    owners: BTreeSet<String>,
    owned: BTreeMap<String, Vec<TempEntry>>,
    untagged: Vec<TempEntry>,
}

fn list_temp(temp: &Path) -> Result<TempListing> {
    let mut out = TempListing {
        owners: BTreeSet::new(),
        owned: BTreeMap::new(),
        untagged: Vec::new(),
    };
    let rd = match platform::read_dir(temp) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read directory", temp, e)),
    };
    for entry in rd {
        let entry = entry.ctx("read directory", temp)?;
        let path = entry.path();
        let t = entry.file_type().ctx("stat", &path)?;
        // A symbolic link, or neither a file nor a directory, is refused.
        check_type(&path, t, t.is_dir())?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let e = |staging| TempEntry {
            path: path.clone(),
            is_dir: t.is_dir(),
            staging: staging && t.is_dir(),
        };
        match owner::parse_name(&name) {
            TempName::Owner(token) => {
                out.owners.insert(token.to_string());
            }
            TempName::Owned { kind, token } => out
                .owned
                .entry(token.to_string())
                .or_default()
                .push(e(kind == "batch")),
            TempName::Untagged if name == reshard::RECORD => {}
            TempName::Untagged => out.untagged.push(e(name.starts_with("batch-"))),
        }
    }
    Ok(out)
}

/// Finishes or removes one entry a dead writer (or an older version) left.
fn clean(store: &Store, e: &TempEntry) -> Result<()> {
    match std::fs::symlink_metadata(&e.path) {
        // Finished meanwhile by the open that cleaned up this writer.
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io("stat", &e.path, err)),
        Ok(m) => check_type(&e.path, m.file_type(), e.is_dir)?,
    }
    if e.staging {
        return batch::recover(store, &e.path);
    }
    let removed = if e.is_dir {
        platform::remove_dir_all(&e.path)
    } else {
        platform::remove_file(&e.path)
    };
    match removed {
        Err(err) if err.kind() != ErrorKind::NotFound => Err(Error::io("remove", &e.path, err)),
        _ => Ok(()),
    }
}

/// What a read-write open found in `.temp/`.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Dead writers whose leftovers were finished or removed.
    pub(crate) dead_writers: usize,
}

/// The read-write open's recovery: every dead writer's staging directory is
/// rolled forward or removed, its temp files removed, and its owner file
/// last; live writers' entries (this process's included) are left alone.
///
/// `lost_counts` runs once, before anything of the first dead writer is
/// touched: it marks the counters stale while the dead owner file still
/// says so, so a crash during recovery cannot leave exact-looking figures.
pub(crate) fn recover(
    store: &Store,
    lock: &WriterLock,
    lost_counts: &dyn Fn() -> Result<()>,
) -> Result<Recovered> {
    let temp = &store.layout().temp;
    let mut listing = list_temp(temp)?;
    let mut found = Recovered::default();
    let tokens: BTreeSet<String> = listing
        .owners
        .iter()
        .chain(listing.owned.keys())
        .cloned()
        .collect();
    // First find the dead, and refuse what this version cannot read before
    // anything is changed.
    let mut dead = Vec::new();
    for token in tokens {
        if let Liveness::Dead(claim) = owner::probe(temp, &token, true)? {
            let entries = listing.owned.remove(&token).unwrap_or_default();
            for e in entries.iter().filter(|e| e.staging) {
                batch::committed(&e.path)?;
            }
            dead.push((claim, entries));
        }
    }
    // A writer whose owner file is gone closed cleanly and folded its
    // counts; one whose owner file is still there died with them.
    if dead.iter().any(|(claim, _)| claim.is_some()) {
        lost_counts()?;
    }
    for (claim, entries) in dead {
        for e in &entries {
            clean(store, e)?;
        }
        if let Some(dead) = claim {
            dead.finish()?;
        }
        found.dead_writers += 1;
    }
    if !listing.untagged.is_empty() {
        lock.with_recovery(|| {
            listing.untagged.iter().try_for_each(|e| {
                // An owner file being made by a live writer is not a leftover.
                if owner::pending_is_dead(&e.path)? {
                    clean(store, e)
                } else {
                    Ok(())
                }
            })
        })??;
    }
    Ok(found)
}

/// The read-only open's check: fails where serving the store as it is
/// would show part of a committed batch, or a reshard midway. Changes nothing.
pub(crate) fn check_read_only(layout: &Layout) -> Result<()> {
    let temp = &layout.temp;
    if let Some(record) = reshard::read_record(&layout.root)? {
        let live = match &record.owner {
            Some(token) => !matches!(owner::probe(temp, token, false)?, Liveness::Dead(_)),
            None => false,
        };
        return Err(if live {
            Error::Locked {
                path: layout.root.join(LOCK),
                holders: owner::live_pids(temp),
            }
        } else {
            Error::NeedsRecovery {
                path: layout.root.clone(),
            }
        });
    }
    let listing = list_temp(temp)?;
    let dead_staging = |e: &TempEntry| e.staging;
    for (token, entries) in &listing.owned {
        if !entries.iter().any(dead_staging) {
            continue;
        }
        if !matches!(owner::probe(temp, token, false)?, Liveness::Dead(_)) {
            continue;
        }
        for e in entries.iter().filter(|e| e.staging) {
            if batch::committed(&e.path)? {
                return Err(Error::NeedsRecovery {
                    path: layout.root.clone(),
                });
            }
        }
    }
    for e in listing.untagged.iter().filter(|e| e.staging) {
        if batch::committed(&e.path)? {
            return Err(Error::NeedsRecovery {
                path: layout.root.clone(),
            });
        }
    }
    Ok(())
}

/// A read-write open's handling of a reshard record: the resharder is dead
/// (it would hold the store exclusively otherwise), so the reshard is
/// finished, with the store taken exclusively meanwhile. Returns whether
/// there was one.
pub(crate) fn finish_reshard(root: &Path, lock: &WriterLock, durable: bool) -> Result<bool> {
    let Some(record) = reshard::read_record(root)? else {
        return Ok(false);
    };
    lock.upgrade(None)?;
    let result = reshard::run(root, record.from, record.to, durable, None, &mut |_| {});
    lock.downgrade()?;
    result.map(|_| true)
}
