//! Applying a committed batch's operations to the store: used by
//! [`Batch::commit`](super::Batch::commit) right after the commit point, and
//! by recovery at open to roll forward a batch whose commit was interrupted.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use super::record::{self, RecordOp};
use super::CommitSummary;
use crate::error::{Error, Result};
use crate::platform;
use crate::store::{Published, Store};

/// Below this many operations a batch is published on the calling thread.
const PARALLEL_MIN: usize = 2048;

/// Publishes every operation of `ops` from staging directory `dir`, makes the
/// touched shard directories durable (under Fsync), then removes `dir`.
///
/// Every step is idempotent, so a crash at any point is finished by running
/// this again: a staged file that is already gone was already published.
pub(crate) fn apply(
    store: &Store,
    dir: &Path,
    ops: &[RecordOp],
    recovering: bool,
) -> Result<CommitSummary> {
    let threads = if ops.len() < PARALLEL_MIN {
        1
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4)
    };
    let chunk = ops.len().div_ceil(threads).max(1);
    let results: Vec<Result<(CommitSummary, HashSet<String>)>> = if threads == 1 {
        vec![apply_chunk(store, dir, ops, recovering)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = ops
                .chunks(chunk)
                .map(|c| s.spawn(move || apply_chunk(store, dir, c, recovering)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::BatchFailed("publisher panicked".into())))
                })
                .collect()
        })
    };
    let mut summary = CommitSummary::default();
    let mut dirs = HashSet::new();
    for r in results {
        let (s, d) = r?;
        summary.merge(&s);
        dirs.extend(d);
    }
    if store.durable() {
        sync_dirs(store, dirs)?;
    }
    retire_record(store, dir, ops)?;
    platform::remove_dir_all(dir).map_err(|e| Error::io("remove", dir, e))?;
    Ok(summary)
}

/// Removes the commit record before the rest of the staging directory, so
/// that a batch whose publication is complete is never rolled forward again.
///
/// Replaying a finished batch's deletes would be wrong: a put of the same
/// key that returned after the commit would be deleted at the next open.
/// `remove_dir_all` removes entries in no particular order, so a crash during
/// it could leave the record behind; removed first, it cannot. Under `Fsync`,
/// a batch with deletes also makes the record's removal durable before the
/// commit returns (a power cut must not bring the record back). Replaying
/// publishes is harmless (they never replace), so a batch of puts alone
/// skips that fsync.
fn retire_record(store: &Store, dir: &Path, ops: &[RecordOp]) -> Result<()> {
    let rec = dir.join(record::RECORD);
    match platform::remove_file(&rec) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("remove", rec, e)),
    }
    let deletes = ops.iter().any(|op| {
        matches!(
            op,
            RecordOp::Delete { .. } | RecordOp::Put { replace: true, .. }
        )
    });
    if store.durable() && deletes {
        platform::sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
    }
    Ok(())
}

fn apply_chunk(
    store: &Store,
    dir: &Path,
    ops: &[RecordOp],
    recovering: bool,
) -> Result<(CommitSummary, HashSet<String>)> {
    let mut summary = CommitSummary::default();
    let mut dirs = HashSet::new();
    let shard = store.shard();
    let mut staged = dir.to_path_buf();
    for op in ops {
        let mut touched = false;
        match op {
            RecordOp::Put {
                seq,
                size,
                key,
                replace,
            } => {
                staged.push(seq.to_string());
                // Recovering: a staged file that is gone was published before the crash.
                let present = !recovering || fs::symlink_metadata(&staged).is_ok();
                if present {
                    let published = if *replace {
                        let (replaced, published) = store.replace_block(&staged, key, *size)?;
                        summary.deleted += u64::from(replaced);
                        published
                    } else {
                        store.publish(&staged, key, *size)?
                    };
                    match published {
                        Published::Written => {
                            summary.written += 1;
                            summary.bytes += size;
                        }
                        Published::AlreadyPresent => summary.already_present += 1,
                    }
                    touched = true;
                }
                staged.pop();
            }
            RecordOp::Delete { key } => {
                if store.delete_unsynced(key)? {
                    summary.deleted += 1;
                    touched = true;
                }
            }
        }
        if touched {
            dirs.insert(shard.dir(op.key()));
        }
    }
    Ok((summary, dirs))
}

/// Fsyncs each shard directory once (in parallel), then the root once if
/// any directory's own entry may be new.
fn sync_dirs(store: &Store, dirs: HashSet<String>) -> Result<()> {
    let dirs: Vec<String> = dirs.into_iter().collect();
    sync_each_dir(store, &dirs)?;
    store.ensure_dir_entries_durable(&dirs)
}

fn sync_each_dir(store: &Store, dirs: &[String]) -> Result<()> {
    if dirs.len() <= 2 {
        return dirs.iter().try_for_each(|d| store.sync_shard_dir_only(d));
    }
    let next = Mutex::new(dirs.iter());
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..dirs.len().min(16) {
            s.spawn(|| loop {
                let Some(d) = next.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                    return;
                };
                if let Err(e) = store.sync_shard_dir_only(d) {
                    first_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    return;
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Recovers staging directory `dir` at open: rolled forward if it holds a
/// complete commit record, removed otherwise.
pub(crate) fn recover(store: &Store, dir: &Path) -> Result<()> {
    let rec = dir.join(record::RECORD);
    let ops = match fs::read(&rec) {
        Ok(bytes) => record::decode(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read", rec, e)),
    };
    match ops {
        Some(ops) => apply(store, dir, &ops, true).map(|_| ()),
        None => platform::remove_dir_all(dir).map_err(|e| Error::io("remove", dir, e)),
    }
}

/// Whether staging directory `dir` holds a complete commit record (for a
/// read-only open, which must not serve half of a committed batch).
///
/// # Errors
/// [`Error::CorruptCommitRecord`] if there is a record this version cannot read.
pub(crate) fn committed(dir: &Path) -> Result<bool> {
    let rec = dir.join(record::RECORD);
    match fs::read(&rec) {
        Ok(bytes) => match record::decode(&bytes) {
            Some(_) => Ok(true),
            None => Err(Error::CorruptCommitRecord {
                path: rec,
                reason: "not a commit record this version can read".into(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("read", rec, e)),
    }
}
