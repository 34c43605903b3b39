//! Converting a store to another shard function in place, surviving a crash
//! at any instant.
//!
//! A record `.temp/reshard` ("from" and "to" functions) is written first. Then
//! every block is renamed (no-replace) from wherever it is into the directory
//! the new function gives; a block already in its new place is left alone, so
//! the walk can be run again from the start at any time. When every block has
//! moved, `SHARDING` is rewritten, emptied directories are removed, and the
//! record is deleted. An open that finds the record runs the walk again
//! before anything else: an interrupted reshard is always finished.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::hash::{Check, StreamHasher};
use crate::key::Key;
use crate::layout::{self, SHARDING, TEMP};
use crate::platform;
use crate::shard::Shard;

/// Name of the reshard record inside `.temp/`.
pub(crate) const RECORD: &str = "reshard";

/// What a reshard did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReshardSummary {
    /// Blocks moved to their new directory.
    pub moved: u64,
    /// Blocks found twice (in the old and the new place) whose extra copy was
    /// removed because it had the same bytes.
    pub duplicates_removed: u64,
    /// Blocks found twice with different bytes: the extra copy was moved to
    /// `.quarantine/` instead of being deleted.
    pub conflicts_quarantined: u64,
}

fn encode(from: &Shard, to: &Shard, owner: &str) -> String {
    format!("flatstore-reshard 1\nfrom {from}\nto {to}\nowner {owner}\n")
}

/// An interrupted or running reshard, as its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) from: Shard,
    pub(crate) to: Shard,
    /// The token of the writer running it (absent in older records).
    pub(crate) owner: Option<String>,
}

/// Reads the record; `Ok(None)` if there is none. The record is written
/// atomically before any block moves, so it is whole or absent; anything
/// else is [`Error::CorruptCommitRecord`].
pub(crate) fn read_record(root: &Path) -> Result<Option<Record>> {
    let path = root.join(TEMP).join(RECORD);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let bad = || Error::CorruptCommitRecord {
        path: path.clone(),
        reason: "not a reshard record this version can read".into(),
    };
    let mut lines = text.lines();
    if lines.next() != Some("flatstore-reshard 1") {
        return Err(bad());
    }
    let mut field = |name: &str| -> Result<Shard> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let from = field("from ")?;
    let to = field("to ")?;
    let owner = match lines.next() {
        None => None,
        Some(l) => Some(l.strip_prefix("owner ").ok_or_else(bad)?.to_string()),
    };
    Ok(Some(Record { from, to, owner }))
}

/// Runs a whole reshard of the store at `root` from `from` to `to`: writes
/// the record naming writer `start` (`None` when resuming one), moves every block, rewrites `SHARDING`,
/// removes emptied directories and the record. `on_block` is called with the
/// number of blocks handled so far (moved, or resolved as duplicates).
pub(crate) fn run(
    root: &Path,
    from: Shard,
    to: Shard,
    durable: bool,
    start: Option<&str>,
    on_block: &mut dyn FnMut(u64),
) -> Result<ReshardSummary> {
    let temp = root.join(TEMP);
    if let Some(owner) = start {
        let record = encode(&from, &to, owner);
        layout::write_atomic(&temp, RECORD, record.as_bytes(), true, durable)?;
    }
    let mut summary = ReshardSummary::default();
    let mut touched: HashSet<String> = HashSet::new();
    let mut seen = 0u64;
    let mut dirs: Vec<String> = Vec::new();
    for entry in platform::read_dir(root).ctx("read directory", root)? {
        let entry = entry.ctx("read directory", root)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // Only directories of the old function can hold blocks to move.
        if from.is_dir_name(&name) && entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dirs.push(name);
        }
    }
    dirs.sort();
    for dir in &dirs {
        let dir_path = root.join(dir);
        let names: Vec<String> = platform::read_dir(&dir_path)
            .ctx("read directory", &dir_path)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        for name in names {
            let Some(key) = Key::from_file_name(&name) else {
                continue;
            };
            // Only blocks placed by one of the two functions; anything else is foreign.
            let (old_dir, new_dir) = (from.dir(&key), to.dir(&key));
            if *dir != old_dir && *dir != new_dir {
                continue;
            }
            if *dir == new_dir {
                // Already in place (or moved here earlier in this run).
                continue;
            }
            seen += 1;
            let src = dir_path.join(&name);
            let dest_dir = root.join(&new_dir);
            let dest = dest_dir.join(&name);
            if layout::ensure_dir(&dest_dir)? {
                touched.insert(String::new()); // the root gained an entry
            }
            match platform::rename_noreplace(&src, &dest) {
                Ok(()) => summary.moved += 1,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if resolve_twice_stored(root, &key, &src, &dest, durable)? {
                        summary.duplicates_removed += 1;
                    } else {
                        summary.conflicts_quarantined += 1;
                    }
                }
                Err(e) => return Err(Error::io("rename", src, e)),
            }
            touched.insert(dir.clone());
            touched.insert(new_dir);
            on_block(seen);
        }
    }
    if durable {
        for d in &touched {
            let p = root.join(d);
            platform::sync_dir(&p).ctx("fsync", &p)?;
        }
    }
    // Every block is in place: the new function becomes the store's.
    layout::write_atomic(root, SHARDING, to.sharding_file().as_bytes(), true, durable)?;
    for dir in &dirs {
        // Removes only directories left empty; an error means "not empty".
        let _ = fs::remove_dir(root.join(dir));
    }
    let rec = temp.join(RECORD);
    platform::remove_file(&rec).ctx("remove", &rec)?;
    if durable {
        platform::sync_dir(root).ctx("fsync", root)?;
        platform::sync_dir(&temp).ctx("fsync", &temp)?;
    }
    Ok(summary)
}

/// A block found both in its old place `src` and its new place `dest`.
/// Same bytes: the old copy is removed (returns `true`). Different bytes:
/// the copy that hashes to its key stays in the new place (the one already
/// there when both or neither do, or when the hash cannot be computed), and
/// the other goes to `.quarantine/` under a name no earlier quarantined
/// file has (returns `false`). Each step leaves one copy in the old or the
/// new place, so a crash midway is finished by running the walk again.
fn resolve_twice_stored(
    root: &Path,
    key: &Key,
    src: &Path,
    dest: &Path,
    durable: bool,
) -> Result<bool> {
    if same_contents(src, dest)? {
        platform::remove_file(src).ctx("remove", src)?;
        return Ok(true);
    }
    let displaced_is_good = hashes_to(key, src)? == Some(true);
    let in_place_is_good = hashes_to(key, dest)? == Some(true);
    if displaced_is_good && !in_place_is_good {
        quarantine(root, dest, durable)?;
        platform::rename_noreplace(src, dest).ctx("rename", src)?;
    } else {
        quarantine(root, src, durable)?;
    }
    Ok(false)
}

/// Whether two files hold the same bytes, read in chunks (blocks stored
/// with `put_reader` can be of any size).
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = platform::open_read(a).ctx("open", a)?;
    let mut fb = platform::open_read(b).ctx("open", b)?;
    let len = |f: &File, p: &Path| f.metadata().map(|m| m.len()).ctx("stat", p);
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba).ctx("read", a)?;
        let m = read_full(&mut fb, &mut bb).ctx("read", b)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether the file at `path` hashes to `key`'s multihash; `None` when the
/// key is not a multihash or its hash function is not one we compute.
fn hashes_to(key: &Key, path: &Path) -> Result<Option<bool>> {
    let Ok(expected) = key.to_multihash() else {
        return Ok(None);
    };
    let Some(mut hasher) = StreamHasher::new(&expected) else {
        return Ok(None);
    };
    let mut f = platform::open_read(path).ctx("open", path)?;
    std::io::copy(&mut f, &mut hasher).ctx("read", path)?;
    Ok(match hasher.finish(&expected) {
        Check::Match => Some(true),
        Check::Mismatch(_) => Some(false),
        Check::Unsupported => None,
    })
}

/// Moves `path` into `ROOT/.quarantine/` under its own name, or with a
/// `.1`, `.2`, … suffix if a file of that name is already there (never
/// replacing one). Returns where it went.
fn quarantine(root: &Path, path: &Path, durable: bool) -> Result<PathBuf> {
    let q = layout::ensure_quarantine(root, durable)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut n = 0u64;
    loop {
        let dest = layout::quarantine_candidate(&q, &name, n);
        match platform::rename_noreplace(path, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(Error::io("rename", path, e)),
        }
    }
}
