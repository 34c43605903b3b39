//! Where things are in a store directory, and the small metadata files.
//!
//! # On-disk format (byte-compatible with go-ds-flatfs v0.6)
//! ```text
//! ROOT/SHARDING          "/repo/flatfs/shard/v1/next-to-last/2\n"
//! ROOT/_README           explanation of the layout
//! ROOT/<SHARD>/<KEY>.data  one block, exactly its bytes
//! ROOT/.temp/            single-put temp files, batch staging directories
//! ROOT/diskUsage.cache   {"diskUsage":N,"accuracy":"initial-exact",...}
//! ROOT/.lock             held while a process has the store open
//! ```

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::key::Key;
use crate::platform;
use crate::shard::Shard;

/// Extension of block files.
pub(crate) const DATA_EXT: &str = ".data";
/// Name of the shard-function file.
pub(crate) const SHARDING: &str = "SHARDING";
/// Name of the human-readable explanation.
pub(crate) const README: &str = "_README";
/// Directory for temp files and batch staging.
pub(crate) const TEMP: &str = ".temp";
/// Counter file, in go-ds-flatfs's format.
pub(crate) const DISK_USAGE: &str = "diskUsage.cache";
/// Lock file.
pub(crate) const LOCK: &str = ".lock";
/// Where `verify --repair` and `reshard` move damaged or conflicting copies.
pub(crate) const QUARANTINE: &str = ".quarantine";

/// Creates the directory `dir` unless it exists; returns whether it made it.
pub(crate) fn ensure_dir(dir: &Path) -> Result<bool> {
    match platform::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// [`ensure_dir`] for `root/name`, making a new entry durable in `root`
/// when `durable`; returns the directory's path.
pub(crate) fn ensure_dir_in(root: &Path, name: &str, durable: bool) -> Result<PathBuf> {
    let dir = root.join(name);
    if ensure_dir(&dir)? && durable {
        platform::sync_dir(root).ctx("fsync", root)?;
    }
    Ok(dir)
}

/// Creates `ROOT/.quarantine/` if it is missing (making its entry in the
/// root durable when `durable`), and returns its path.
pub(crate) fn ensure_quarantine(root: &Path, durable: bool) -> Result<PathBuf> {
    ensure_dir_in(root, QUARANTINE, durable)
}

/// The `n`-th name tried for a file `name` moved into the quarantine
/// directory `q`: `name` itself, then `name.1`, `name.2`, … so that no
/// earlier quarantined file is ever replaced.
pub(crate) fn quarantine_candidate(q: &Path, name: &str, n: u64) -> PathBuf {
    if n == 0 {
        q.join(name)
    } else {
        q.join(format!("{name}.{n}"))
    }
}

/// Builds the paths of one store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) temp: PathBuf,
    pub(crate) shard: Shard,
}

impl Layout {
    pub(crate) fn new(root: PathBuf, shard: Shard) -> Layout {
        let temp = root.join(TEMP);
        Layout { root, temp, shard }
    }

    /// `ROOT/<SHARD>`.
    pub(crate) fn shard_dir(&self, key: &Key) -> PathBuf {
        self.shard_dir_named(&self.shard.dir(key))
    }

    pub(crate) fn shard_dir_named(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `ROOT/<SHARD>/<KEY>.data`, built with one allocation.
    pub(crate) fn block_path(&self, key: &Key) -> PathBuf {
        let root = self.root.as_os_str();
        let k = key.as_str();
        let (left, mid, right) = self.shard.dir_parts(k);
        let mut s = std::ffi::OsString::with_capacity(
            root.len() + self.shard.param() + k.len() + DATA_EXT.len() + 2,
        );
        const PAD: &str = "________________________________";
        let pad = |s: &mut std::ffi::OsString, mut n: usize| {
            while n > 0 {
                let take = n.min(PAD.len());
                s.push(&PAD[..take]);
                n -= take;
            }
        };
        s.push(root);
        s.push(std::path::MAIN_SEPARATOR_STR);
        pad(&mut s, left);
        s.push(mid);
        pad(&mut s, right);
        s.push(std::path::MAIN_SEPARATOR_STR);
        s.push(k);
        s.push(DATA_EXT);
        PathBuf::from(s)
    }

    pub(crate) fn disk_usage_path(&self) -> PathBuf {
        self.root.join(DISK_USAGE)
    }
}

/// Reads and parses `ROOT/SHARDING`. `Ok(None)` if it does not exist.
pub(crate) fn read_sharding(root: &Path) -> Result<Option<Shard>> {
    let path = root.join(SHARDING);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let corrupt = |reason: String| Error::CorruptSharding {
        path: path.clone(),
        reason,
    };
    if bytes.len() > 1024 {
        return Err(corrupt("larger than 1 KiB".into()));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8".into()))?;
    Shard::parse_file(text).map(Some).map_err(corrupt)
}

/// Writes `dir/name` atomically: a temp file in `dir`, fsynced, renamed into
/// place (no-replace when `replace` is false), then `dir` fsynced.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    data: &[u8],
    replace: bool,
    durable: bool,
) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let dest = dir.join(name);
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = platform::create_new(&tmp).ctx("create", &tmp)?;
        platform::write_all(&mut f, data).ctx("write", &tmp)?;
        if durable {
            platform::sync_file(&f).ctx("fsync", &tmp)?;
        }
        drop(f);
        if replace {
            platform::rename_replace(&tmp, &dest).ctx("rename", &dest)?;
        } else {
            platform::rename_noreplace(&tmp, &dest).ctx("rename", &dest)?;
        }
        if durable {
            platform::sync_dir(dir).ctx("fsync", dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The `_README` written into a new store.
pub(crate) fn readme_text(shard: &Shard) -> String {
    format!(
        "This is a flatstore/flatfs block store.

Every block is one file, `<SHARD>/<KEY>.data`, holding exactly the block's
bytes. KEY is the RFC 4648 base32 encoding (upper case, no padding) of the
block's multihash, so a CIDv0 and every CIDv1 with the same multihash share
one file; keys of sha2-256 blocks start with `CIQ`.

The directory a file lives in is chosen by the shard function recorded in
the SHARDING file, here:

    {shard}

`next-to-last/N` takes the N characters just before the last character of
the key (padded on the left with `_` for short keys); `prefix/N` the first N;
`suffix/N` the last N. With sha2-256 keys, `next-to-last/2` gives 1,024
evenly filled directories.

`.temp/` holds files being written and batches being committed; whatever a
crash leaves there is finished or removed the next time the store is opened.
`diskUsage.cache` caches the total size (and block count) between runs.
`.lock` is locked while a process has the store open.

The layout is the one go-ds-flatfs (used by Kubo) writes, and either can open
a store the other made. Do not edit the files while the store is open.
"
    )
}
