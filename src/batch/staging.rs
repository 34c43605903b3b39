//! The staging directory of a batch: the batch's put-set, on disk.
//!
//! # On-disk format
//! ```text
//! .temp/batch-…/                 the staging directory (named by the store)
//!   COMMIT                       the commit record (see `record`), once committed
//!   .COMMIT.tmp-…                the record being written
//!   .r<n>                        a block being streamed by `put_reader`
//!   b/<SHARD>/<KEY>              put KEY: publish without replacing
//!   b/<SHARD>/<KEY>.r            put KEY after a delete of KEY: replace a stored KEY
//!   b/<SHARD>/<KEY>.d            delete KEY (an empty marker)
//!   b/<SHARD>/<KEY>.swap         left by an interrupted replace (the old block)
//! ```
//! `<SHARD>` is the store's shard directory for KEY, so no staging directory
//! holds more entries than a shard directory of the store will. Keys never
//! contain `.`, so the names cannot collide, and at most one of `KEY`,
//! `KEY.r`, `KEY.d` exists at a time: the entry says what the batch's last
//! operation on KEY decided. The operations of a committed batch are
//! derived by listing `b/`; each is idempotent, so they can be applied in
//! any order and applied again after a crash.

use std::fs::{self, FileType, ReadDir};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::record;
use crate::error::{Error, IoContext, Result};
use crate::key::Key;
use crate::platform;

/// The subdirectory holding the staged entries.
pub(crate) const BLOCKS: &str = "b";

/// What a staged entry asks for at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `KEY`: publish, keeping a stored block.
    Put,
    /// `KEY.r`: publish in place of a stored block.
    Replace,
    /// `KEY.d`: delete.
    Delete,
    /// `KEY.swap`: an interrupted replace's second name; nothing to do.
    Swap,
}

impl Kind {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Kind::Put => "",
            Kind::Replace => ".r",
            Kind::Delete => ".d",
            Kind::Swap => ".swap",
        }
    }
}

/// Parses a staged entry's file name.
pub(crate) fn parse(name: &str) -> Option<(Key, Kind)> {
    let (key, kind) = match name.split_once('.') {
        None => (name, Kind::Put),
        Some((k, "r")) => (k, Kind::Replace),
        Some((k, "d")) => (k, Kind::Delete),
        Some((k, "swap")) => (k, Kind::Swap),
        Some(_) => return None,
    };
    Key::new(key).ok().map(|k| (k, kind))
}

/// `dir/b/<shard>/<KEY><suffix>`.
pub(crate) fn entry_path(blocks: &Path, shard: &str, key: &Key, kind: Kind) -> PathBuf {
    let mut name = String::with_capacity(key.as_str().len() + 5);
    name.push_str(key.as_str());
    name.push_str(kind.suffix());
    let mut p = blocks.join(shard);
    p.push(name);
    p
}

/// Creates the file `path` with `create` (which must refuse an existing
/// file), creating its staging shard directory first if it is missing.
pub(crate) fn in_shard_dir<T>(path: &Path, mut create: impl FnMut() -> Result<T>) -> Result<T> {
    match create() {
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(path);
            match platform::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create directory", dir, e)),
            }
            create()
        }
        r => r,
    }
}

fn bad(path: PathBuf, ft: FileType) -> Error {
    Error::BadStoreEntry {
        path,
        reason: if ft.is_symlink() {
            "is a symbolic link"
        } else if ft.is_dir() {
            "is a directory, not a staged block"
        } else {
            "is not a regular file"
        },
    }
}

/// The staging shard directories of `dir/b`, one at a time: their names
/// and paths. A missing `b/` lists as empty.
pub(crate) struct ShardDirs {
    blocks: PathBuf,
    rd: Option<ReadDir>,
}

impl ShardDirs {
    pub(crate) fn new(blocks: &Path) -> Result<ShardDirs> {
        let rd = match platform::read_dir(blocks) {
            Ok(rd) => Some(rd),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read directory", blocks, e)),
        };
        Ok(ShardDirs {
            blocks: blocks.to_path_buf(),
            rd,
        })
    }
}

impl Iterator for ShardDirs {
    type Item = Result<(String, PathBuf)>;
    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.rd.as_mut()?.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(Error::io("read directory", &self.blocks, e))),
        };
        let path = entry.path();
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(e) => return Some(Err(Error::io("stat", path, e))),
        };
        if !ft.is_dir() || ft.is_symlink() {
            return Some(Err(Error::BadStoreEntry {
                path,
                reason: if ft.is_symlink() {
                    "is a symbolic link"
                } else {
                    "is not a directory"
                },
            }));
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        Some(Ok((name, path)))
    }
}

/// One staged entry, as listed.
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    pub(crate) key: Key,
    pub(crate) kind: Kind,
}

/// The entries of one staging shard directory, one at a time. An entry
/// that is not a regular file, or whose name is not a staged entry's, is an
/// [`Error::BadStoreEntry`].
pub(crate) struct Entries {
    dir: PathBuf,
    rd: Option<ReadDir>,
}

impl Entries {
    pub(crate) fn new(dir: &Path) -> Result<Entries> {
        let rd = match platform::read_dir(dir) {
            Ok(rd) => Some(rd),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read directory", dir, e)),
        };
        Ok(Entries {
            dir: dir.to_path_buf(),
            rd,
        })
    }
}

impl Iterator for Entries {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.rd.as_mut()?.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(Error::io("read directory", &self.dir, e))),
        };
        let path = entry.path();
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(e) => return Some(Err(Error::io("stat", path, e))),
        };
        if !ft.is_file() {
            return Some(Err(bad(path, ft)));
        }
        let name = entry.file_name();
        match name.to_str().and_then(parse) {
            Some((key, kind)) => Some(Ok(Entry { path, key, kind })),
            None => Some(Err(Error::BadStoreEntry {
                path,
                reason: "is not a staged block (unknown name)",
            })),
        }
    }
}

/// Checks, without changing anything, that the committed staging directory
/// `dir` holds only what a batch writes: regular files with staged names in
/// real directories, no symbolic link anywhere. Recovery runs this before
/// publishing anything, so a foreign entry stops it with nothing done.
pub(crate) fn validate(dir: &Path) -> Result<()> {
    for entry in platform::read_dir(dir).ctx("read directory", dir)? {
        let entry = entry.ctx("read directory", dir)?;
        let path = entry.path();
        let ft = entry.file_type().ctx("stat", &path)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ok = if name == BLOCKS {
            ft.is_dir() && !ft.is_symlink()
        } else if name == record::RECORD || name.starts_with('.') {
            ft.is_file()
        } else {
            return Err(Error::BadStoreEntry {
                path,
                reason: "is not part of a staging directory",
            });
        };
        if !ok {
            return Err(bad(path, ft));
        }
    }
    for shard in ShardDirs::new(&dir.join(BLOCKS))? {
        let (_, path) = shard?;
        for e in Entries::new(&path)? {
            e?;
        }
    }
    Ok(())
}

/// Removes the staging directory `dir`: its commit record first (made
/// durable under `durable` before anything else goes), then each staging
/// shard directory, then the rest. If the record cannot be removed, or its
/// removal cannot be made durable, nothing else is removed: a staging
/// directory that holds a record always holds all of its batch, so a
/// removal cut short can never be replayed as a smaller batch.
pub(crate) fn remove(dir: &Path, durable: bool) -> Result<()> {
    let rec = dir.join(record::RECORD);
    match platform::remove_file(&rec) {
        Ok(()) => {
            if durable {
                platform::sync_dir(dir).ctx("fsync", dir)?;
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", rec, e)),
    }
    let blocks = dir.join(BLOCKS);
    if let Ok(rd) = fs::read_dir(&blocks) {
        for entry in rd.flatten() {
            let p = entry.path();
            platform::remove_dir_all(&p).ctx("remove", &p)?;
        }
    }
    platform::remove_dir_all(dir).ctx("remove", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_refused() {
        let k = Key::new("CIQABC").unwrap();
        for kind in [Kind::Put, Kind::Replace, Kind::Delete, Kind::Swap] {
            let p = entry_path(Path::new("b"), "AB", &k, kind);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse(name), Some((k.clone(), kind)));
        }
        for name in ["CIQABC.x", "ciq", "", ".d", "A.r.d", "CIQ.data"] {
            assert_eq!(parse(name), None, "{name}");
        }
    }
}
