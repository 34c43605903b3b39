//! Verify: re-hash every block, find damaged and stray files, optionally
//! quarantine the damaged ones.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::files::retry_nofile;
use crate::hash::{Check, StreamHasher};
use crate::key::Key;
use crate::layout::{self, QUARANTINE};
use crate::listing::shard_dirs;
use crate::platform;
use crate::store::{Published, Store};

/// Progress of a verify, passed to the [`VerifyOptions::progress`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// Shard directories finished.
    pub dirs_done: u64,
    /// Shard directories in the store.
    pub dirs_total: u64,
    /// Files looked at so far.
    pub files: u64,
    /// Bytes hashed so far.
    pub bytes: u64,
}

type ProgressFn = dyn Fn(&VerifyProgress) + Send + Sync;

/// Options of [`Store::verify`]. `VerifyOptions::default()`: report only,
/// one thread per CPU, no progress callback.
#[derive(Default)]
pub struct VerifyOptions {
    repair: bool,
    threads: usize,
    progress: Option<Box<ProgressFn>>,
}

impl std::fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("repair", &self.repair)
            .field("threads", &self.threads)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl VerifyOptions {
    /// Same as `VerifyOptions::default()`.
    pub fn new() -> VerifyOptions {
        VerifyOptions::default()
    }

    /// Repair what can be repaired (default false): move corrupt, empty and
    /// unreadable blocks and entries named like blocks that are not regular
    /// files into `ROOT/.quarantine/`, and move misplaced copies into their
    /// shard directory (or into the quarantine when the block is already
    /// there or the copy is damaged). See [`Store::verify`].
    pub fn repair(mut self, repair: bool) -> VerifyOptions {
        self.repair = repair;
        self
    }

    /// Number of hashing threads (default 0: one per CPU).
    pub fn threads(mut self, threads: usize) -> VerifyOptions {
        self.threads = threads;
        self
    }

    /// Called after every file and every shard directory, from the hashing
    /// threads (so it must be `Sync`).
    pub fn progress(
        mut self,
        f: impl Fn(&VerifyProgress) + Send + Sync + 'static,
    ) -> VerifyOptions {
        self.progress = Some(Box::new(f));
        self
    }
}

/// One file [`Store::verify`] has something to say about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// Where the file was found.
    pub path: PathBuf,
    /// Its key, when its name is `<valid KEY>.data`.
    pub key: Option<Key>,
    /// What is wrong, in words (for a corrupt block: what it hashes to).
    pub detail: String,
    /// Where `repair` moved it into the quarantine, if it did.
    pub quarantined: Option<PathBuf>,
    /// Whether `repair` dealt with it: quarantined, or (a misplaced copy)
    /// moved into its shard directory. A finding that repair leaves alone
    /// (foreign, unverifiable, an unreadable directory) is never repaired.
    pub repaired: bool,
}

impl Finding {
    /// Whether `repair` could deal with this finding (so whether a verify
    /// without repair should suggest it): true for block files and entries
    /// named like blocks, false for a directory that could not be read.
    pub fn repairable(&self) -> bool {
        self.key.is_some()
    }
}

/// What [`Store::verify`] found. Findings are sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Blocks whose content hashes to the multihash their key names.
    pub ok: u64,
    /// Sum of the sizes of the `ok` blocks.
    pub ok_bytes: u64,
    /// Non-empty block files whose content does not hash to their key's multihash.
    pub corrupt: Vec<Finding>,
    /// Empty block files whose key does not name the empty block.
    pub empty: Vec<Finding>,
    /// `<valid KEY>.data` files in a shard directory other than their key's.
    /// Not counted in the store's counters, not listed; left in place.
    pub misplaced: Vec<Finding>,
    /// Anything in a shard directory that is not a `<valid KEY>.data` file
    /// (other names, subdirectories, temp files of other programs); left in place.
    pub foreign: Vec<Finding>,
    /// Block files whose key is not a multihash, or uses a hash function
    /// flatstore cannot compute; left in place.
    pub unverifiable: Vec<Finding>,
    /// Files or shard directories that could not be read. Repair quarantines
    /// unreadable block files (those with a [`Finding::key`]); a directory
    /// that cannot be read is only reported.
    pub unreadable: Vec<Finding>,
    /// Entries named like blocks (`<valid KEY>.data`) that are not regular
    /// files: directories, symbolic links (never followed), devices. Not
    /// listed nor counted as blocks; repair quarantines them.
    pub not_regular: Vec<Finding>,
}

impl VerifyReport {
    /// The findings that are damage: corrupt, empty, misplaced, unreadable
    /// and not-regular entries (not foreign files of other programs, nor
    /// blocks flatstore cannot check), repaired or not.
    pub fn damage(&self) -> impl Iterator<Item = &Finding> {
        self.corrupt
            .iter()
            .chain(&self.empty)
            .chain(&self.misplaced)
            .chain(&self.unreadable)
            .chain(&self.not_regular)
    }

    /// Whether nothing at all was found wrong or unverifiable.
    pub fn is_clean(&self) -> bool {
        self.problems() == 0
    }

    /// Number of findings of every kind.
    pub fn problems(&self) -> usize {
        self.corrupt.len()
            + self.empty.len()
            + self.misplaced.len()
            + self.foreign.len()
            + self.unverifiable.len()
            + self.unreadable.len()
            + self.not_regular.len()
    }

    fn merge(mut self, other: VerifyReport) -> VerifyReport {
        self.ok += other.ok;
        self.ok_bytes += other.ok_bytes;
        self.corrupt.extend(other.corrupt);
        self.empty.extend(other.empty);
        self.misplaced.extend(other.misplaced);
        self.foreign.extend(other.foreign);
        self.unverifiable.extend(other.unverifiable);
        self.unreadable.extend(other.unreadable);
        self.not_regular.extend(other.not_regular);
        self
    }

    fn sort(&mut self) {
        for list in [
            &mut self.corrupt,
            &mut self.empty,
            &mut self.misplaced,
            &mut self.foreign,
            &mut self.unverifiable,
            &mut self.unreadable,
            &mut self.not_regular,
        ] {
            list.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
}

fn finding(path: PathBuf, key: Option<Key>, detail: impl Into<String>) -> Finding {
    Finding {
        path,
        key,
        detail: detail.into(),
        quarantined: None,
        repaired: false,
    }
}

/// What one block file turned out to be.
enum Verdict {
    Ok(u64),
    Corrupt(String, u64),
    Empty(String),
    Unverifiable(String),
}

struct Run<'a> {
    store: &'a Store,
    options: &'a VerifyOptions,
    quarantine: PathBuf,
    dirs_total: u64,
    dirs_done: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Store {
    /// Re-hashes every block in parallel and looks for damaged and stray
    /// files in the shard directories.
    ///
    /// Walks one shard directory at a time per thread (`rayon`), streaming
    /// each file through its hash function: neither the list of blocks nor a
    /// block is ever held in memory whole. Reports (see [`VerifyReport`])
    /// corrupt and empty blocks, misplaced, foreign and unverifiable files.
    /// Only shard directories are looked at (entries in the root such as
    /// `.temp/` are not).
    ///
    /// # Repair
    /// With [`VerifyOptions::repair`], corrupt, empty and unreadable blocks
    /// and entries named like blocks that are not regular files are moved
    /// (renamed, keeping their file name; `.1`, `.2`, ... appended if that
    /// name is taken) into `ROOT/.quarantine/`, so that they can be fetched
    /// again, and the store's counters ([`Store::stats`]) drop them. A block
    /// that another thread deleted and stored again meanwhile is checked
    /// after the move and put back if it is now intact. A misplaced copy
    /// that hashes to its key is moved into its shard directory when the
    /// block is not there yet (and counted), and quarantined otherwise.
    /// Foreign and unverifiable files, and directories that cannot be read,
    /// are left alone. Each repaired finding has [`Finding::repaired`] set.
    ///
    /// # Errors
    /// [`Error::ReadOnly`] when repairing a read-only store; [`Error::Io`] if
    /// the root cannot be listed or a quarantine move fails. Files that cannot
    /// be read are reported in [`VerifyReport::unreadable`], not as errors.
    pub fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport> {
        if options.repair {
            self.check_writable()?;
        }
        let layout = self.layout();
        let dirs = shard_dirs(layout)?;
        let quarantine = if options.repair {
            layout::ensure_quarantine(&layout.root, self.durable())?
        } else {
            layout.root.join(QUARANTINE)
        };
        let run = Run {
            store: self,
            options,
            quarantine,
            dirs_total: dirs.len() as u64,
            dirs_done: AtomicU64::new(0),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .thread_name(|i| format!("flatstore-verify-{i}"))
            .build()
            .map_err(|e| Error::io("start threads", &layout.root, std::io::Error::other(e)))?;
        let mut report = pool.install(|| {
            dirs.par_iter()
                .map(|dir| run.dir(dir))
                .try_reduce(VerifyReport::default, |a, b| Ok(a.merge(b)))
        })?;
        report.sort();
        if report.damage().any(|f| f.repaired) {
            // A damaged copy's size on disk need not be the size it was
            // counted with (a truncated block), and misplaced copies moved
            // home were never counted: recount rather than claim Exact.
            self.counters_changed()?;
        }
        Ok(report)
    }
}

impl Run<'_> {
    fn progress(&self) {
        if let Some(f) = &self.options.progress {
            f(&VerifyProgress {
                dirs_done: self.dirs_done.load(Ordering::Relaxed),
                dirs_total: self.dirs_total,
                files: self.files.load(Ordering::Relaxed),
                bytes: self.bytes.load(Ordering::Relaxed),
            });
        }
    }

    fn dir(&self, dir: &str) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let path = self.store.layout().shard_dir_named(dir);
        let entries = match platform::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(report),
            Err(e) => {
                report.unreadable.push(finding(path, None, e.to_string()));
                return Ok(report);
            }
        };
        let mut buf = vec![0u8; 256 << 10];
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report
                        .unreadable
                        .push(finding(path.clone(), None, e.to_string()));
                    break;
                }
            };
            self.entry(dir, &entry, &mut buf, &mut report)?;
            self.files.fetch_add(1, Ordering::Relaxed);
            self.progress();
        }
        self.dirs_done.fetch_add(1, Ordering::Relaxed);
        self.progress();
        Ok(report)
    }

    fn entry(
        &self,
        dir: &str,
        entry: &fs::DirEntry,
        buf: &mut [u8],
        report: &mut VerifyReport,
    ) -> Result<()> {
        let path = entry.path();
        let is_file = match entry.file_type() {
            Ok(t) => t.is_file(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                report.unreadable.push(finding(path, None, e.to_string()));
                return Ok(());
            }
        };
        let name = entry.file_name();
        let key = name.to_str().and_then(Key::from_file_name);
        let Some(key) = key else {
            let what = if is_file {
                "not a <KEY>.data file"
            } else {
                "not a regular file"
            };
            report.foreign.push(finding(path, None, what));
            return Ok(());
        };
        if !is_file {
            let mut f = finding(
                path.clone(),
                Some(key),
                "named like a block but not a regular file",
            );
            if self.options.repair {
                f.quarantined = Some(self.quarantine_entry(&path)?);
                f.repaired = true;
            }
            report.not_regular.push(f);
            return Ok(());
        }
        let home = self.store.shard().dir(&key);
        if home != dir {
            let detail = format!("belongs in shard directory {home}");
            let mut f = finding(path, Some(key), detail);
            if self.options.repair {
                self.place_misplaced(&mut f, buf)?;
            }
            report.misplaced.push(f);
            return Ok(());
        }
        let verdict = match self.hash_file(&key, &path, buf) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(()), // deleted meanwhile
            Err(e) => {
                let mut f = finding(path, Some(key.clone()), e.to_string());
                if self.options.repair {
                    f.quarantined = self.quarantine(&key, buf)?;
                    f.repaired = f.quarantined.is_some();
                }
                report.unreadable.push(f);
                return Ok(());
            }
        };
        let (list, detail) = match verdict {
            Verdict::Ok(size) => {
                report.ok += 1;
                report.ok_bytes += size;
                return Ok(());
            }
            Verdict::Unverifiable(why) => {
                report.unverifiable.push(finding(path, Some(key), why));
                return Ok(());
            }
            Verdict::Corrupt(actual, size) => (
                &mut report.corrupt,
                format!("{size} bytes hashing to {actual}"),
            ),
            Verdict::Empty(actual) => (
                &mut report.empty,
                format!("empty file (hashes to {actual})"),
            ),
        };
        let mut f = finding(path, Some(key.clone()), detail);
        if self.options.repair {
            f.quarantined = self.quarantine(&key, buf)?;
            f.repaired = f.quarantined.is_some();
        }
        list.push(f);
        Ok(())
    }

    /// Hashes the file; `None` if it no longer exists.
    fn hash_file(
        &self,
        key: &Key,
        path: &Path,
        buf: &mut [u8],
    ) -> std::io::Result<Option<Verdict>> {
        let mh = match key.to_multihash() {
            Ok(mh) => mh,
            Err(_) => {
                return Ok(Some(Verdict::Unverifiable(
                    "the key is not the base32 of a multihash".into(),
                )))
            }
        };
        let Some(mut hasher) = StreamHasher::new(&mh) else {
            return Ok(Some(Verdict::Unverifiable(format!(
                "hash function 0x{:x} with a {}-byte digest cannot be computed",
                mh.code(),
                mh.size()
            ))));
        };
        let _permit = self.store.inner.gate.acquire();
        let mut file = match retry_nofile(|| platform::open_read(path)) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut size = 0u64;
        loop {
            let n = match file.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(Some(match hasher.finish(&mh) {
            Check::Match => Verdict::Ok(size),
            Check::Mismatch(actual) if size == 0 => Verdict::Empty(actual),
            Check::Mismatch(actual) => Verdict::Corrupt(actual, size),
            Check::Unsupported => Verdict::Unverifiable("unsupported hash function".into()),
        }))
    }

    /// Moves the entry at `path` (not a counted block: a misplaced copy, or
    /// something named like a block that is not a file) into the
    /// quarantine under its own name; returns where it went.
    fn quarantine_entry(&self, path: &Path) -> Result<PathBuf> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut n = 0u64;
        loop {
            let dest = layout::quarantine_candidate(&self.quarantine, &name, n);
            match platform::rename_noreplace(path, &dest) {
                Ok(()) => {
                    if self.store.durable() {
                        for dir in [path.parent(), Some(self.quarantine.as_path())]
                            .into_iter()
                            .flatten()
                        {
                            platform::sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
                        }
                    }
                    return Ok(dest);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(Error::io("rename", path, e)),
            }
        }
    }

    /// Repairs a misplaced copy: an intact copy of a block its shard
    /// directory lacks is moved there; any other copy is quarantined.
    fn place_misplaced(&self, f: &mut Finding, buf: &mut [u8]) -> Result<()> {
        let key = f.key.clone().expect("a misplaced file has a key");
        let verdict = self.hash_file(&key, &f.path, buf);
        let intact = match verdict {
            Ok(None) => return Ok(()), // gone meanwhile
            Ok(Some(Verdict::Ok(size))) => Some(size),
            Ok(Some(Verdict::Unverifiable(_))) => return Ok(()),
            _ => None,
        };
        if let Some(size) = intact {
            if self.store.size(&key)?.is_none() {
                if self.store.publish(&f.path, &key, size)? == Published::Written {
                    if self.store.durable() {
                        self.store.sync_shard_dir(&key)?;
                        if let Some(dir) = f.path.parent() {
                            platform::sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
                        }
                    }
                    f.detail = format!("{}; moved into it", f.detail);
                }
                // Else the block appeared meanwhile and the copy was removed.
                f.repaired = true;
                return Ok(());
            }
            f.detail = format!("{}; a duplicate of the stored block", f.detail);
        } else {
            f.detail = format!("{}; damaged or unreadable", f.detail);
        }
        f.quarantined = Some(self.quarantine_entry(&f.path)?);
        f.repaired = true;
        Ok(())
    }

    /// Moves the damaged block into the quarantine; returns where it went.
    fn quarantine(&self, key: &Key, buf: &mut [u8]) -> Result<Option<PathBuf>> {
        let name = format!("{key}{}", crate::layout::DATA_EXT);
        let mut n = 0u64;
        let dest = loop {
            let dest = layout::quarantine_candidate(&self.quarantine, &name, n);
            match self.store.move_block_out(key, &dest) {
                Ok(Some(_)) => break dest,
                Ok(None) => return Ok(None),
                Err(e) if e.io_kind() == Some(ErrorKind::AlreadyExists) => n += 1,
                Err(e) => return Err(e),
            }
        };
        // Between hashing and the move, the block may have been deleted and
        // stored again, intact: if so, put it back.
        if let Ok(Some(Verdict::Ok(size))) = self.hash_file(key, &dest, buf) {
            if self.store.publish(&dest, key, size)? == Published::Written && self.store.durable() {
                self.store.sync_shard_dir(key)?;
            }
            return Ok(None);
        }
        Ok(Some(dest))
    }
}
