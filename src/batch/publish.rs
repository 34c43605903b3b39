//! Applying a committed batch to the store: used by
//! [`Batch::commit`](super::Batch::commit) right after the commit point, and
//! by recovery to roll forward a dead writer's committed batch.
//!
//! The operations are derived by listing the staging directory, one staging
//! shard directory at a time (several in parallel), so neither memory nor a
//! record grows with the batch, and the work is linear in its entries.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Mutex;

use super::staging::{self, Entries, Kind, ShardDirs};
use super::{record, CommitSummary};
use crate::error::{Error, IoContext, Result};
use crate::platform;
use crate::store::{Published, Store};

/// Below this many staged entries a batch is published on the calling thread.
const PARALLEL_MIN: u64 = 2048;
/// Shard directory names handed to the store per call when making them exist.
const DIR_CHUNK: usize = 1024;

/// Creates the store's shard directory for every staging shard directory
/// (under Fsync, their entries in the root are made durable, one root fsync
/// for all), so that what follows the commit point only renames and
/// unlinks: running out of inodes, or a file in the way, fails a commit
/// before it.
pub(crate) fn ensure_shard_dirs(store: &Store, dir: &Path) -> Result<()> {
    let mut names = Vec::new();
    let flush = |names: &mut Vec<String>| -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        store.create_shard_dirs(names.iter().cloned())?;
        if store.durable() {
            store.ensure_dir_entries_durable(names)?;
        }
        names.clear();
        Ok(())
    };
    for shard in ShardDirs::new(&dir.join(staging::BLOCKS))? {
        names.push(shard?.0);
        if names.len() == DIR_CHUNK {
            flush(&mut names)?;
        }
    }
    flush(&mut names)
}

/// Publishes every staged entry of the committed staging directory `dir`,
/// makes the touched shard directories durable (under Fsync), retires the
/// commit record durably, then removes `dir`.
///
/// `entries` is how many entries the batch staged, if known (it chooses
/// whether to use several threads). Every step is idempotent, so a crash at
/// any point is finished by running this again: a staged file that is gone
/// was already published.
pub(crate) fn apply(store: &Store, dir: &Path, entries: Option<u64>) -> Result<CommitSummary> {
    let blocks = dir.join(staging::BLOCKS);
    let threads = match entries {
        Some(n) if n < PARALLEL_MIN => 1,
        _ => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4),
    };
    let listing = Mutex::new(ShardDirs::new(&blocks)?);
    let work = || -> Result<CommitSummary> {
        let mut summary = CommitSummary::default();
        loop {
            let next = listing.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some(shard) = next else {
                return Ok(summary);
            };
            let (name, path) = shard?;
            summary.merge(&apply_shard(store, &name, &path)?);
        }
    };
    let results: Vec<Result<CommitSummary>> = if threads == 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::io(
                            "publish",
                            dir,
                            std::io::Error::other("a publishing thread panicked"),
                        ))
                    })
                })
                .collect()
        })
    };
    let mut summary = CommitSummary::default();
    for r in results {
        summary.merge(&r?);
    }
    staging::remove(dir, store.durable())?;
    Ok(summary)
}

/// Publishes the entries of one staging shard directory, then fsyncs the
/// store directories it touched (normally the one of the same name).
fn apply_shard(store: &Store, name: &str, path: &Path) -> Result<CommitSummary> {
    let mut summary = CommitSummary::default();
    let mut same = false;
    let mut other: HashSet<String> = HashSet::new();
    let shard = store.shard();
    for entry in Entries::new(path)? {
        let e = entry?;
        let size = || -> Result<Option<u64>> {
            match std::fs::symlink_metadata(&e.path) {
                Ok(m) => Ok(Some(m.len())),
                // Published and removed by an earlier, interrupted run.
                Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
                Err(err) => Err(Error::io("stat", &e.path, err)),
            }
        };
        let published = match e.kind {
            Kind::Swap => continue,
            Kind::Delete => {
                if store.delete_unsynced(&e.key)? {
                    summary.deleted += 1;
                } else {
                    continue;
                }
                None
            }
            Kind::Put => {
                let Some(size) = size()? else { continue };
                Some((store.publish(&e.path, &e.key, size)?, size))
            }
            Kind::Replace => {
                let Some(size) = size()? else { continue };
                let (replaced, p) = store.replace_block(&e.path, &e.key, size)?;
                summary.deleted += u64::from(replaced);
                Some((p, size))
            }
        };
        match published {
            Some((Published::Written, size)) => {
                summary.written += 1;
                summary.bytes += size;
            }
            Some((Published::AlreadyPresent, _)) => summary.already_present += 1,
            None => {}
        }
        // Staged under the store's shard function, so normally `name`; a
        // different one only if the store was resharded meanwhile.
        let dir = shard.dir(&e.key);
        if dir == name {
            same = true;
        } else {
            other.insert(dir);
        }
    }
    if store.durable() {
        if same {
            store.sync_shard_dir_named(name)?;
        }
        for d in &other {
            store.sync_shard_dir_named(d)?;
        }
    }
    Ok(summary)
}

/// Recovers the dead writer's staging directory `dir`: rolled forward if it
/// holds a complete commit record, removed otherwise (record first; see
/// [`staging::remove`]).
///
/// # Errors
/// - [`Error::CorruptCommitRecord`]: a record this version cannot read
///   (another format version, damage); `dir` is left untouched.
/// - [`Error::BadStoreEntry`]: `dir` is not a directory, or a committed
///   `dir` holds a symbolic link, something other than a regular file, or
///   a name a batch does not write; nothing is changed, nothing followed.
/// - [`Error::Io`]: the filesystem failed; running this again finishes.
pub(crate) fn recover(store: &Store, dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).ctx("stat", dir)?;
    if !meta.file_type().is_dir() {
        return Err(Error::BadStoreEntry {
            path: dir.to_path_buf(),
            reason: if meta.file_type().is_symlink() {
                "is a symbolic link"
            } else {
                "is not a directory"
            },
        });
    }
    if !record::committed(dir)? {
        return staging::remove(dir, store.durable());
    }
    staging::validate(dir)?;
    ensure_shard_dirs(store, dir)?;
    apply(store, dir, None).map(|_| ())
}

/// Fsyncs every directory of the staging tree `dir` (its staging shard
/// directories, `b/`, `dir` itself) and `dir`'s parent, and with `files`
/// every staged file too: for platforms that cannot flush a whole
/// filesystem at once.
pub(crate) fn sync_tree(dir: &Path, files: bool) -> Result<()> {
    let blocks = dir.join(staging::BLOCKS);
    for shard in ShardDirs::new(&blocks)? {
        let (_, path) = shard?;
        if files {
            for e in Entries::new(&path)? {
                let e = e?;
                if matches!(e.kind, Kind::Put | Kind::Replace) {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&e.path)
                        .ctx("open", &e.path)?;
                    platform::sync_file(&f).ctx("fsync", &e.path)?;
                }
            }
        }
        platform::sync_dir(&path).ctx("fsync", &path)?;
    }
    platform::sync_dir(&blocks).ctx("fsync", &blocks)?;
    platform::sync_dir(dir).ctx("fsync", dir)?;
    if let Some(parent) = dir.parent() {
        platform::sync_dir(parent).ctx("fsync", parent)?;
    }
    Ok(())
}
