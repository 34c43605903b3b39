//! UnixFS import: files and directories as a dag-pb DAG with the CIDs Kubo's
//! `ipfs add` gives them.
//!
//! With [`AddOptions::default()`] the DAG is the one `ipfs add` (and
//! `ipfs add -r` for directories) builds with its defaults:
//! - CIDv0 (`Qm…`), sha2-256;
//! - fixed-size chunks of 262,144 bytes;
//! - leaves are dag-pb UnixFS `File` nodes holding their chunk (no raw leaves);
//! - the balanced layout: at most 174 links per node, the tree filled from
//!   the left, as shallow as the number of chunks allows; a file of one chunk
//!   is that leaf alone, and an empty file is one leaf with no data;
//! - inner file nodes are UnixFS `File` nodes with `blocksizes` (the bytes of
//!   file under each link) and `filesize`;
//! - directories are plain UnixFS `Directory` nodes, links sorted by name
//!   (bytewise), each link's `Tsize` the cumulative size of the DAG under it
//!   (the node's encoded size plus its links' `Tsize`s); entries whose name
//!   starts with `.` are left out unless [`AddOptions::hidden`] is set, as
//!   Kubo does without `--hidden`;
//! - symbolic links are UnixFS `Symlink` nodes holding the link's target.
//!
//! [`AddOptions::cid_version`]`(1)` gives CIDv1 and raw leaves, as
//! `ipfs add --cid-version 1` does; [`AddOptions::raw_leaves`] and
//! [`AddOptions::chunk_size`] match `--raw-leaves` and `--chunker=size-N`.
//!
//! # Limits
//! A directory that Kubo would shard as a HAMT (its entries' names and CIDs
//! add up to more than 256 KiB) is refused with [`Error::AddRefused`]
//! rather than encoded differently: this importer writes no HAMT shards.
//! So are names that are not UTF-8 and special files (devices, FIFOs,
//! sockets).
//!
//! # Memory
//! A file is read one chunk at a time; the blocks go into a
//! [`Batch`], whose memory in flight is capped. What stays in memory is one
//! chunk, at most 174 pending links per level of the file's tree, and the
//! entries (name, CID, size) of the directories being built.

mod pb;

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

use crate::batch::Batch;
use crate::dag::{DAG_PB, RAW};
use crate::error::{Error, IoContext, Result};
use crate::key::Key;
use crate::platform;
use crate::store::Store;

/// Kubo's default chunk size: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 256 << 10;
/// The largest chunk size accepted (Kubo's limit): 1 MiB.
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// Links per node of the balanced layout (Kubo's `DefaultLinksPerBlock`).
pub const MAX_LINKS: usize = 174;
/// Kubo shards a directory whose estimated size (the sum of its entries'
/// name lengths and CID lengths) exceeds this many bytes.
pub const HAMT_THRESHOLD: usize = 256 << 10;

/// How [`Importer`] and [`Store::add_paths`] build the DAG.
/// `AddOptions::default()` is `ipfs add` with Kubo's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOptions {
    cid_version: u64,
    raw_leaves: bool,
    chunk_size: usize,
    hidden: bool,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            cid_version: 0,
            raw_leaves: false,
            chunk_size: DEFAULT_CHUNK_SIZE,
            hidden: false,
        }
    }
}

impl AddOptions {
    /// Same as `AddOptions::default()`.
    pub fn new() -> AddOptions {
        AddOptions::default()
    }

    /// CID version 0 (default) or 1. Version 1 also turns raw leaves on, as
    /// Kubo does; call [`raw_leaves`](AddOptions::raw_leaves) after this to
    /// choose otherwise.
    pub fn cid_version(mut self, version: u64) -> AddOptions {
        self.cid_version = version;
        self.raw_leaves = version == 1;
        self
    }

    /// Leaves as raw blocks (CIDv1, codec raw) instead of dag-pb nodes.
    pub fn raw_leaves(mut self, raw: bool) -> AddOptions {
        self.raw_leaves = raw;
        self
    }

    /// Bytes per chunk (default 262,144; 1 to [`MAX_CHUNK_SIZE`]).
    pub fn chunk_size(mut self, bytes: usize) -> AddOptions {
        self.chunk_size = bytes;
        self
    }

    /// Include directory entries whose name starts with `.` (default false).
    pub fn hidden(mut self, hidden: bool) -> AddOptions {
        self.hidden = hidden;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.cid_version > 1 {
            return Err(Error::InvalidOption {
                option: "cid version",
                reason: format!("{} is not 0 or 1", self.cid_version),
            });
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::InvalidOption {
                option: "chunk size",
                reason: format!(
                    "{} is not between 1 and {MAX_CHUNK_SIZE} bytes",
                    self.chunk_size
                ),
            });
        }
        Ok(())
    }
}

/// One file, directory or symbolic link added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Added {
    /// Its path relative to the argument's parent (`dir/sub/file`), with `/`
    /// as separator.
    pub path: String,
    /// The root CID of its DAG.
    pub cid: Cid,
    /// The cumulative size of its DAG (what a parent directory's link to it
    /// records as `Tsize`).
    pub size: u64,
}

/// Progress of an import, passed to [`Importer::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddProgress {
    /// Bytes of file content read so far.
    pub bytes: u64,
    /// Blocks handed to the batch so far (repeats included).
    pub blocks: u64,
}

/// A link to a child: its CID, the DAG's cumulative size, and the bytes of
/// file content under it.
#[derive(Clone)]
struct Child {
    cid: Cid,
    tsize: u64,
    filesize: u64,
}

/// Builds UnixFS DAGs into a [`Batch`]. Nothing reaches the store before the
/// batch commits; see [`Store::add_paths`] for the whole import in one call.
pub struct Importer<'a> {
    batch: &'a Batch,
    options: AddOptions,
    blocks: u64,
    bytes: u64,
    buf: Vec<u8>,
    progress: Option<&'a (dyn Fn(&AddProgress) + 'a)>,
}

impl std::fmt::Debug for Importer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("options", &self.options)
            .field("blocks", &self.blocks)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<'a> Importer<'a> {
    /// An importer writing into `batch`.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a CID version other than 0 or 1, or a
    /// chunk size of 0 or over [`MAX_CHUNK_SIZE`].
    pub fn new(batch: &'a Batch, options: &AddOptions) -> Result<Importer<'a>> {
        options.validate()?;
        Ok(Importer {
            batch,
            options: options.clone(),
            blocks: 0,
            bytes: 0,
            buf: vec![0; options.chunk_size],
            progress: None,
        })
    }

    /// Calls `f` after every block.
    pub fn progress(mut self, f: &'a (dyn Fn(&AddProgress) + 'a)) -> Importer<'a> {
        self.progress = Some(f);
        self
    }

    /// Blocks handed to the batch so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Bytes of file content read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds the bytes of `reader` as one file; returns its root CID and
    /// cumulative size. `name` is only used to name the input in errors.
    ///
    /// # Errors
    /// [`Error::Io`] naming `name` when reading fails; the batch's errors.
    pub fn add_reader(&mut self, mut reader: impl Read, name: &Path) -> Result<(Cid, u64)> {
        let mut levels: Vec<Vec<Child>> = Vec::new();
        let mut leaves = 0u64;
        loop {
            let n = fill(&mut reader, &mut self.buf).ctx("read", name)?;
            if n == 0 && leaves > 0 {
                break;
            }
            let chunk = std::mem::take(&mut self.buf);
            let leaf = self.leaf(&chunk[..n]);
            self.buf = chunk;
            let leaf = leaf?;
            self.bytes += n as u64;
            leaves += 1;
            self.push(&mut levels, 0, leaf)?;
            if n < self.buf.len() {
                break;
            }
        }
        let root = self.finish(levels)?;
        Ok((root.cid, root.tsize))
    }

    /// Adds the file, directory (recursively) or symbolic link at `path`.
    /// `on_entry` is called for every file and directory added, children
    /// before their directory, the argument itself last.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path that could not be read;
    /// [`Error::AddRefused`] for what cannot be encoded as Kubo would (see
    /// the [module](self) documentation); the batch's errors.
    pub fn add_path(&mut self, path: &Path, on_entry: &mut dyn FnMut(&Added)) -> Result<Added> {
        let name = top_name(path)?;
        self.entry(path, name, on_entry)
    }

    fn entry(
        &mut self,
        path: &Path,
        rel: String,
        on_entry: &mut dyn FnMut(&Added),
    ) -> Result<Added> {
        let meta = fs::symlink_metadata(path).ctx("stat", path)?;
        let kind = meta.file_type();
        let (cid, size) = if kind.is_symlink() {
            let target = fs::read_link(path).ctx("read link", path)?;
            let Some(target) = target.to_str() else {
                return Err(refused(path, "the link's target is not UTF-8"));
            };
            let data = pb::Data {
                kind: pb::SYMLINK,
                data: Some(target.as_bytes()),
                ..pb::Data::default()
            };
            self.dag_pb(&[], &data.encode())?
        } else if kind.is_dir() {
            self.directory(path, &rel, on_entry)?
        } else if kind.is_file() {
            let file = platform::open_read(path).ctx("open", path)?;
            self.add_reader(std::io::BufReader::with_capacity(0, file), path)?
        } else {
            return Err(refused(
                path,
                "not a regular file, directory or symbolic link",
            ));
        };
        let added = Added {
            path: rel,
            cid,
            size,
        };
        on_entry(&added);
        Ok(added)
    }

    fn directory(
        &mut self,
        path: &Path,
        rel: &str,
        on_entry: &mut dyn FnMut(&Added),
    ) -> Result<(Cid, u64)> {
        let mut names = Vec::new();
        for entry in platform::read_dir(path).ctx("read directory", path)? {
            let entry = entry.ctx("read directory", path)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(refused(&entry.path(), "the name is not UTF-8"));
            };
            if !self.options.hidden && name.starts_with('.') {
                continue;
            }
            names.push(name.to_string());
        }
        names.sort_unstable();
        let mut links = Vec::with_capacity(names.len());
        let mut estimate = 0usize;
        for name in names {
            let child = self.entry(&path.join(&name), format!("{rel}/{name}"), on_entry)?;
            let hash = child.cid.to_bytes();
            estimate += name.len() + hash.len();
            if estimate > HAMT_THRESHOLD {
                return Err(refused(
                    path,
                    "Kubo would shard this directory as a HAMT (its entries exceed 256 KiB), \
                     which this importer does not write",
                ));
            }
            links.push(pb::Link {
                hash,
                name,
                tsize: child.size,
            });
        }
        let data = pb::Data {
            kind: pb::DIRECTORY,
            ..pb::Data::default()
        };
        self.dag_pb(&links, &data.encode())
    }

    fn leaf(&mut self, chunk: &[u8]) -> Result<Child> {
        let filesize = chunk.len() as u64;
        if self.options.raw_leaves {
            let cid = Cid::new_v1(RAW, Code::Sha2_256.digest(chunk));
            self.put(&cid, chunk)?;
            return Ok(Child {
                cid,
                tsize: filesize,
                filesize,
            });
        }
        let data = pb::Data {
            kind: pb::FILE,
            data: (!chunk.is_empty()).then_some(chunk),
            filesize: Some(filesize),
            blocksizes: &[],
        };
        let (cid, tsize) = self.dag_pb(&[], &data.encode())?;
        Ok(Child {
            cid,
            tsize,
            filesize,
        })
    }

    /// Adds `child` at `level` (0: leaves), first turning a full level into
    /// a node one level up.
    fn push(&mut self, levels: &mut Vec<Vec<Child>>, level: usize, child: Child) -> Result<()> {
        if levels.len() <= level {
            levels.push(Vec::with_capacity(MAX_LINKS));
        }
        if levels[level].len() == MAX_LINKS {
            let full = std::mem::take(&mut levels[level]);
            let node = self.file_node(&full)?;
            self.push(levels, level + 1, node)?;
        }
        levels[level].push(child);
        Ok(())
    }

    /// Closes every level into its parent; returns the root.
    fn finish(&mut self, mut levels: Vec<Vec<Child>>) -> Result<Child> {
        let mut i = 0;
        loop {
            let top = i + 1 == levels.len();
            let pending = std::mem::take(&mut levels[i]);
            if top && pending.len() == 1 {
                // A single leaf is its own root (a file of one chunk).
                return Ok(pending.into_iter().next().expect("one child"));
            }
            let node = self.file_node(&pending)?;
            if top {
                return Ok(node);
            }
            self.push(&mut levels, i + 1, node)?;
            i += 1;
        }
    }

    fn file_node(&mut self, children: &[Child]) -> Result<Child> {
        let blocksizes: Vec<u64> = children.iter().map(|c| c.filesize).collect();
        let filesize = blocksizes.iter().sum();
        let data = pb::Data {
            kind: pb::FILE,
            data: None,
            filesize: Some(filesize),
            blocksizes: &blocksizes,
        };
        let links: Vec<pb::Link> = children
            .iter()
            .map(|c| pb::Link {
                hash: c.cid.to_bytes(),
                name: String::new(),
                tsize: c.tsize,
            })
            .collect();
        let (cid, tsize) = self.dag_pb(&links, &data.encode())?;
        Ok(Child {
            cid,
            tsize,
            filesize,
        })
    }

    /// Encodes and stages a dag-pb node; returns its CID and cumulative size.
    fn dag_pb(&mut self, links: &[pb::Link], data: &[u8]) -> Result<(Cid, u64)> {
        let bytes = pb::node(links, data);
        let mh = Code::Sha2_256.digest(&bytes);
        let cid = if self.options.cid_version == 0 {
            Cid::new_v0(mh).expect("a sha2-256 multihash makes a CIDv0")
        } else {
            Cid::new_v1(DAG_PB, mh)
        };
        self.put(&cid, &bytes)?;
        let tsize = bytes.len() as u64 + links.iter().map(|l| l.tsize).sum::<u64>();
        Ok((cid, tsize))
    }

    fn put(&mut self, cid: &Cid, bytes: &[u8]) -> Result<()> {
        self.batch.put(&Key::from_cid(cid), bytes)?;
        self.blocks += 1;
        if let Some(f) = self.progress {
            f(&AddProgress {
                bytes: self.bytes,
                blocks: self.blocks,
            });
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn refused(path: &Path, reason: &str) -> Error {
    Error::AddRefused {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The name an argument is listed under: its last component (`a/b/dir` is
/// `dir`), or for `.`, `..` or `/`, the last component of its absolute path.
fn top_name(path: &Path) -> Result<String> {
    let resolved: PathBuf;
    let last = match path.file_name() {
        Some(n) => n,
        None => {
            resolved = fs::canonicalize(path).ctx("resolve", path)?;
            resolved.file_name().unwrap_or(resolved.as_os_str())
        }
    };
    last.to_str()
        .map(str::to_string)
        .ok_or_else(|| refused(path, "the name is not UTF-8"))
}

/// What [`Store::add_paths`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddSummary {
    /// One entry per path given, in order.
    pub roots: Vec<Added>,
    /// Blocks built (repeats included).
    pub blocks: u64,
    /// Bytes of file content read.
    pub content_bytes: u64,
    /// Distinct blocks newly written to the store.
    pub written: u64,
    /// Distinct blocks the store already had.
    pub already_present: u64,
    /// Bytes newly written.
    pub bytes: u64,
}

impl Store {
    /// Adds files and directories as UnixFS DAGs with Kubo's CIDs (see
    /// [`unixfs`](crate::unixfs)), all in one atomic batch: after an error,
    /// or a crash before the commit point, the store holds none of it.
    ///
    /// `on_entry` is called for every file and directory added (children
    /// before their directory); `progress` after every block. Files are
    /// streamed one chunk at a time.
    ///
    /// # Errors
    /// [`Error::InvalidOption`], [`Error::AddRefused`], [`Error::Io`] (naming
    /// the path that could not be read, or the store's file that could not
    /// be written), [`Error::ReadOnly`], [`Error::BatchFailed`]; the store
    /// is unchanged, except for an error after the commit point (see
    /// [`Batch::commit`]).
    pub fn add_paths(
        &self,
        paths: &[impl AsRef<Path>],
        options: &AddOptions,
        on_entry: &mut dyn FnMut(&Added),
        progress: &dyn Fn(&AddProgress),
    ) -> Result<AddSummary> {
        options.validate()?;
        let batch = self.batch()?;
        let mut summary = AddSummary::default();
        let staged = (|| {
            let mut importer = Importer::new(&batch, options)?.progress(progress);
            for p in paths {
                let added = importer.add_path(p.as_ref(), on_entry)?;
                summary.roots.push(added);
            }
            summary.blocks = importer.blocks();
            summary.content_bytes = importer.bytes();
            Ok(())
        })();
        if let Err(e) = staged {
            let _ = batch.discard();
            return Err(e);
        }
        let commit = batch.commit()?;
        summary.written = commit.written;
        summary.already_present = commit.already_present;
        summary.bytes = commit.bytes;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    fn file_cid(data: &[u8], options: &AddOptions) -> String {
        let dir = tempfile_dir();
        let store = Store::open(dir.join("s"), Options::default()).unwrap();
        let batch = store.batch().unwrap();
        let mut imp = Importer::new(&batch, options).unwrap();
        let (cid, _) = imp.add_reader(data, Path::new("input")).unwrap();
        batch.discard().unwrap();
        drop(store);
        let _ = fs::remove_dir_all(&dir);
        cid.to_string()
    }

    fn tempfile_dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("flatstore-unixfs-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn kubo_vectors() {
        let o = AddOptions::default();
        assert_eq!(
            file_cid(b"", &o),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        assert_eq!(
            file_cid(b"hello world\n", &o),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        );
        // CIDv1 (raw leaves): the empty file is the empty raw block.
        assert_eq!(
            file_cid(b"", &AddOptions::new().cid_version(1)),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile_dir();
        let store = Store::open(dir.join("s"), Options::default()).unwrap();
        let batch = store.batch().unwrap();
        for o in [
            AddOptions::new().chunk_size(0),
            AddOptions::new().chunk_size(MAX_CHUNK_SIZE + 1),
            AddOptions::new().cid_version(2),
        ] {
            assert!(matches!(
                Importer::new(&batch, &o),
                Err(Error::InvalidOption { .. })
            ));
        }
        batch.discard().unwrap();
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }
}
