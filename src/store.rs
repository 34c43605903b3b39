//! The store: opening, single-block operations, listing, counters.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::batch::Batch;
use crate::error::{Error, IoContext, Result};
use crate::files::{retry_nofile, FileGate};
use crate::key::Key;
use crate::layout::{self, Layout, LOCK, README, SHARDING};
use crate::listing::Listing;
use crate::lock::WriterLock;
use crate::options::{Durability, Options};
use crate::owner::Owner;
use crate::platform;
use crate::pool::WriterPool;
pub(crate) use crate::publish::{write_file, Published};
use crate::recovery;
use crate::reshard::{self, ReshardSummary};
use crate::shard::Shard;
use crate::usage::{self, Recount, Stats, Usage};

/// A flat-filesystem block store: one file per block in a sharded directory tree.
///
/// # On-disk format
/// `ROOT/<SHARD>/<KEY>.data` per block, `ROOT/SHARDING` naming the shard
/// function, `ROOT/.temp/` for writes in progress, `ROOT/diskUsage.cache`
/// for the counters: byte-compatible with go-ds-flatfs v0.6, so a Kubo
/// `blocks/` directory opens as it is, and a store made here opens in Kubo.
///
/// # Durability
/// With [`Durability::Fsync`] (the default), when [`put`](Store::put),
/// [`delete`](Store::delete) or [`Batch::commit`] returns, the change is on
/// disk. With [`Durability::None`] a process crash loses nothing that
/// returned, a power cut may; [`sync`](Store::sync) makes everything durable.
/// In either mode a reader never sees a partial block, and a batch is all or
/// nothing across crashes.
///
/// # Concurrency
/// `Store` is a cheap `Clone + Send + Sync` handle; any number of threads may
/// use it at once. Writes are content-addressed: the first writer of a key
/// wins and an existing block is never rewritten (delete it first to replace
/// it).
///
/// Any number of processes may open one store at once, read-write or
/// read-only, and behave towards each other as threads do: two writers of
/// one key, in two processes, leave one whole block. Each read-write open
/// is a writer with an owner file in `.temp/` that it holds locked; an open
/// recovers only what *dead* writers left, never a live writer's batch.
/// Read-only opens take no lock and never wait. Only [`reshard`](Store::reshard)
/// takes the store exclusively. A writer's hold is released when its last
/// handle (store clone or batch) is dropped; no close of another handle, in
/// this process or a forked child, can release it early.
///
/// # Errors
/// Every failure is an [`Error`] naming the key or path involved. Bad input
/// (an invalid key, a corrupt `SHARDING`) changes nothing on disk, and nothing
/// is ever written outside the root.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) options: Options,
    pub(crate) usage: Arc<Usage>,
    pub(crate) gate: FileGate,
    temp_seq: AtomicU64,
    /// Shard directories whose own entry in the root is known to be durable.
    pub(crate) durable_dirs: Mutex<HashSet<String>>,
    pool: OnceLock<WriterPool>,
    recount: Mutex<Option<Recount>>,
    closed: AtomicBool,
    /// Set when a reshard failed on this handle (see [`Error::ReshardFailed`]).
    poisoned: AtomicBool,
    /// `None` for a read-only handle.
    writer: Option<Writer>,
}

/// What makes a read-write handle a writer: its share of the store lock and
/// its owner file, whose token names everything it makes in `.temp/`.
struct Writer {
    token: String,
    lock: Arc<WriterLock>,
    /// Taken at close (retired) or left to drop (the file stays: a crash).
    owner: Mutex<Option<Owner>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.layout.root)
            .field("shard", &self.inner.layout.shard)
            .field("durability", &self.inner.options.durability)
            .field("read_only", &self.inner.options.read_only)
            .finish()
    }
}

/// A block being read, from [`Store::reader`]: a file handle that can still
/// be renamed or deleted by others while open.
#[derive(Debug)]
pub struct BlockReader {
    file: File,
    len: u64,
}

impl BlockReader {
    /// The block's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for BlockReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Store {
    /// Opens the store at `root`, creating it if it is missing or an empty
    /// directory (unless [`Options::create`] is off).
    ///
    /// A read-write open registers this handle as a writer (any number of
    /// processes may write one store at once), checks `SHARDING` and the
    /// store's entries, and finishes or removes what *dead* writers left in
    /// `.temp/` (their committed batches are rolled forward, uncommitted
    /// ones removed; a live writer's work is never touched). A read-only open
    /// takes no lock and changes nothing. Neither walks the tree when
    /// `diskUsage.cache` is trustworthy; after a writer died the counters are
    /// recomputed in the background and [`Stats::accuracy`] says so. The
    /// rules are the table in the crate's recovery module (DESIGN 4a).
    ///
    /// # Errors
    /// - [`Error::Locked`]: exclusive work (a reshard) holds the store.
    /// - [`Error::NeedsRecovery`]: read-only, and a dead writer left a
    ///   committed batch or a reshard unfinished (a read-write open fixes it).
    /// - [`Error::CorruptCommitRecord`]: a batch record this version cannot
    ///   read; the staging directory is left as it is.
    /// - [`Error::BadStoreEntry`]: `.temp`, a shard directory or another
    ///   entry of the store is a symbolic link or of the wrong type.
    /// - [`Error::CorruptSharding`]: `SHARDING` is unreadable or unknown.
    /// - [`Error::ShardingMismatch`]: [`Options::shard`] differs from `SHARDING`.
    /// - [`Error::NotAStore`]: a non-empty directory without `SHARDING`
    ///   (nothing is written into it).
    /// - [`Error::NoStore`]: missing, and creation is off or read-only.
    /// - [`Error::InvalidShard`]: the requested shard parameter is < 1.
    /// - [`Error::Io`]: the filesystem failed.
    pub fn open(root: impl AsRef<Path>, options: Options) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if let Some(s) = &options.shard {
            s.validate()?;
        }
        let durable = options.durability == Durability::Fsync;
        let exists = match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {
                recovery::check_entries(&root)?;
                layout::read_sharding(&root)?.is_some()
            }
            Ok(_) => return Err(Error::NotAStore { path: root }),
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("stat", &root, e)),
        };
        if !exists {
            if !options.create || options.read_only {
                return Err(Error::NoStore { path: root });
            }
            check_creatable(&root)?;
            fs::create_dir_all(&root).ctx("create directory", &root)?;
            create_files(&root, &options.shard.unwrap_or_default(), durable)?;
        }
        let root = platform::store_root(&root).ctx("resolve", &root)?;
        recovery::check_entries(&root)?;
        if options.read_only {
            let layout = Layout::new(root.clone(), read_shard(&root, &options)?);
            recovery::check_shard_dirs(&layout.root, &layout.shard)?;
            recovery::check_read_only(&layout)?;
            let usage = Arc::new(Usage::from_cache(usage::read_cache(&layout)));
            return Ok(Store::from_parts(layout, options, usage, None));
        }
        let temp = layout::ensure_dir_in(&root, layout::TEMP, durable)?;
        let lock = Arc::new(crate::lock::acquire_writer(&root, options.lock_wait)?);
        let owner = Owner::register(&temp)?;
        let resharded = recovery::finish_reshard(&root, &lock, durable)?;
        let shard = read_shard(&root, &options)?;
        let layout = Layout::new(root, shard);
        recovery::check_shard_dirs(&layout.root, &layout.shard)?;
        let usage = Arc::new(Usage::from_cache(usage::read_cache(&layout)));
        let writer = Writer {
            token: owner.token().to_string(),
            lock: lock.clone(),
            owner: Mutex::new(Some(owner)),
        };
        let store = Store::from_parts(layout, options, usage, Some(writer));
        // The dead writers' changes to the counters died with them.
        let lost_counts = || {
            store.inner.usage.mark_inexact();
            usage::mark_stale(&store.inner.layout, &lock, durable)
        };
        if resharded {
            lost_counts()?;
        }
        recovery::recover(&store, &lock, &lost_counts)?;
        // Start the recount only after recovery has finished its changes.
        if !store.inner.usage.exact() {
            store.start_recount()?;
        }
        Ok(store)
    }

    fn from_parts(
        layout: Layout,
        options: Options,
        usage: Arc<Usage>,
        writer: Option<Writer>,
    ) -> Store {
        Store {
            inner: Arc::new(Inner {
                gate: FileGate::new(options.max_open_files),
                layout,
                options,
                usage,
                temp_seq: AtomicU64::new(0),
                durable_dirs: Mutex::new(HashSet::new()),
                pool: OnceLock::new(),
                recount: Mutex::new(None),
                closed: AtomicBool::new(false),
                poisoned: AtomicBool::new(false),
                writer,
            }),
        }
    }

    fn recount_job(&self) -> usage::RecountJob {
        usage::RecountJob {
            layout: self.inner.layout.clone(),
            usage: self.inner.usage.clone(),
            writer: self
                .inner
                .writer
                .as_ref()
                .map(|w| (w.lock.clone(), w.token.clone())),
            durable: self.durable(),
        }
    }

    /// Starts the background recount (replacing a running one).
    fn start_recount(&self) -> Result<()> {
        let recount = usage::start_recount(self.recount_job())?;
        *self.inner.recount.lock().unwrap_or_else(|e| e.into_inner()) = Some(recount);
        Ok(())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// The store's shard function.
    pub fn shard(&self) -> Shard {
        self.inner.layout.shard
    }

    /// The durability the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.options.durability
    }

    /// The path of `key`'s block file (whether or not it exists).
    pub fn block_path(&self, key: &Key) -> PathBuf {
        self.inner.layout.block_path(key)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub(crate) fn durable(&self) -> bool {
        self.inner.options.durability == Durability::Fsync
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.inner.options.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Fails once a reshard failed on this handle.
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Relaxed) {
            return Err(Error::ReshardFailed {
                path: self.inner.layout.root.clone(),
            });
        }
        Ok(())
    }

    /// Stores `data` under `key`.
    ///
    /// If `key` is already present, the existing block is kept and this
    /// succeeds at once, writing nothing. Otherwise the block is written to
    /// a temp file and renamed into place with a rename that never replaces:
    /// if another writer wins the race, its block is kept and this succeeds
    /// likewise. Readers never see a partial block.
    ///
    /// # Durability
    /// Under [`Durability::Fsync`] the block under `key` (this put's, or the
    /// one already present, which another writer may not have made durable
    /// yet, or which was written under [`Durability::None`]), its shard
    /// directory and (for a shard directory new to this handle) the root
    /// are fsynced before this returns.
    ///
    /// # Errors
    /// [`Error::ReadOnly`], or [`Error::Io`] naming the file (a full disk, for
    /// example). An error before the block is renamed into place leaves the
    /// store unchanged and no temp file behind; an error after it (an fsync
    /// of the shard directory) leaves the block present, and counted, but
    /// perhaps not durable.
    pub fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        if self.size(key)?.is_some() {
            return self.make_present_durable(key);
        }
        self.put_with(key, |f| {
            platform::write_all(f, data).map(|()| data.len() as u64)
        })
        .map(|_| ())
    }

    /// Stores the bytes of `reader` under `key`, streaming them to disk: the
    /// block is never held in memory. Returns the number of bytes read.
    /// Same promises as [`put`](Store::put), except that a stored key is not
    /// looked for first: the bytes are read into a temp file, which is
    /// dropped when the rename finds the key present.
    pub fn put_reader(&self, key: &Key, mut reader: impl Read) -> Result<u64> {
        self.put_with(key, |f| platform::copy_into(&mut reader, f))
            .map(|(n, _)| n)
    }

    /// Writes a temp file with `fill`, then publishes it under `key`.
    pub(crate) fn put_with(
        &self,
        key: &Key,
        fill: impl FnOnce(&mut File) -> io::Result<u64>,
    ) -> Result<(u64, Published)> {
        self.check_writable()?;
        let _permit = self.inner.gate.acquire();
        let tmp = self.temp_path("put");
        let size = write_file(&tmp, fill, self.durable())?;
        match self.publish(&tmp, key, size) {
            Ok(p) => {
                match p {
                    Published::Written if self.durable() => self.sync_shard_dir(key)?,
                    Published::AlreadyPresent => self.make_present_durable(key)?,
                    Published::Written => {}
                }
                Ok((size, p))
            }
            Err(e) => {
                let _ = platform::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Under Fsync, makes a block found present durable: its file and its
    /// directory entry (another writer may have renamed it in without its
    /// fsync yet, or written it under `Durability::None`). A block deleted
    /// meanwhile needs nothing.
    fn make_present_durable(&self, key: &Key) -> Result<()> {
        if !self.durable() {
            return Ok(());
        }
        let path = self.inner.layout.block_path(key);
        let synced = {
            let _permit = self.inner.gate.acquire();
            retry_nofile(|| platform::sync_existing(&path)).ctx("fsync", &path)?
        };
        if synced {
            self.sync_shard_dir(key)?;
        }
        Ok(())
    }

    /// A fresh path in `.temp/` for a single operation.
    ///
    /// The name, `<kind>-<token>-<n>`, is unique across processes and tells
    /// recovery whose it is (see the crate's owner module).
    pub(crate) fn temp_path(&self, kind: &str) -> PathBuf {
        let n = self.inner.temp_seq.fetch_add(1, Ordering::Relaxed);
        let token = self.inner.writer.as_ref().map_or("0.0", |w| &w.token);
        self.inner.layout.temp.join(format!("{kind}-{token}-{n}"))
    }

    /// Reads the whole block, or `None` if it is absent.
    ///
    /// # Errors
    /// [`Error::Io`] if the file exists but cannot be read.
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        self.check_usable()?;
        let path = self.inner.layout.block_path(key);
        let _permit = self.inner.gate.acquire();
        let Some(f) = self.open_block(&path)? else {
            return Ok(None);
        };
        let len = f.metadata().ctx("stat", &path)?.len();
        // Blocks never change in place: read exactly `len` bytes, in one read
        // call where the page cache has them.
        let mut buf = Vec::new();
        platform::read_up_to(&f, &mut buf, len as usize).ctx("read", &path)?;
        Ok(Some(buf))
    }

    fn open_block(&self, path: &Path) -> Result<Option<File>> {
        match retry_nofile(|| platform::open_read(path)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", path, e)),
        }
    }

    /// Reads up to `len` bytes from `offset`; the range is clipped to the end
    /// of the block (a range past the end reads as empty). `None` if absent.
    pub fn get_range(&self, key: &Key, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        self.check_usable()?;
        let path = self.inner.layout.block_path(key);
        let _permit = self.inner.gate.acquire();
        let Some(mut f) = self.open_block(&path)? else {
            return Ok(None);
        };
        let size = f.metadata().ctx("stat", &path)?.len();
        let start = offset.min(size);
        let want = len.min(size - start);
        f.seek(SeekFrom::Start(start)).ctx("seek", &path)?;
        let mut buf = Vec::new();
        platform::read_up_to(&f, &mut buf, want as usize).ctx("read", &path)?;
        Ok(Some(buf))
    }

    /// Opens the block for streaming reads, or `None` if it is absent. The
    /// handle does not stop others from deleting the block meanwhile (the
    /// reader keeps reading the whole, old data). It is the caller's open
    /// file, not counted against
    /// [`Options::max_open_files`](crate::Options::max_open_files).
    pub fn reader(&self, key: &Key) -> Result<Option<BlockReader>> {
        self.check_usable()?;
        let path = self.inner.layout.block_path(key);
        let Some(file) = self.open_block(&path)? else {
            return Ok(None);
        };
        let len = file.metadata().ctx("stat", &path)?.len();
        Ok(Some(BlockReader { file, len }))
    }

    /// Whether the block is present.
    pub fn has(&self, key: &Key) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// The block's size in bytes, or `None` if it is absent.
    pub fn size(&self, key: &Key) -> Result<Option<u64>> {
        self.check_usable()?;
        let path = self.inner.layout.block_path(key);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Deletes the block; returns whether it existed. Idempotent.
    ///
    /// # Durability
    /// Under [`Durability::Fsync`] the shard directory is fsynced before this
    /// returns, so the block stays deleted across a power cut.
    pub fn delete(&self, key: &Key) -> Result<bool> {
        self.check_writable()?;
        let deleted = self.delete_unsynced(key)?;
        if deleted && self.durable() {
            self.sync_shard_dir(key)?;
        }
        Ok(deleted)
    }

    /// Streams the keys of every block, one shard directory at a time (the
    /// whole store is never held in memory). Foreign files, dot-files, temp
    /// files and files in the wrong shard directory are skipped. Blocks added
    /// or deleted during the listing may or may not be seen.
    pub fn keys(&self) -> Keys {
        Keys(Listing::new(self.inner.layout.clone(), false))
    }

    /// Like [`keys`](Store::keys), with each block's size.
    pub fn entries(&self) -> Entries {
        Entries(Listing::new(self.inner.layout.clone(), true))
    }

    /// Starts an atomic batch (see [`Batch`]).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], or [`Error::Io`] if the staging directory cannot be made.
    pub fn batch(&self) -> Result<Batch> {
        self.check_writable()?;
        Batch::new(self.clone())
    }

    /// The block count and total size, as this handle sees them: the figures
    /// in `diskUsage.cache` (which include every writer that closed since
    /// this handle opened) plus this handle's own changes.
    ///
    /// [`Stats::accuracy`] is [`Exact`](crate::Accuracy::Exact) only when
    /// that is true: no other writer is open (their changes reach the
    /// figures when they close), and no writer died since the last recount.
    /// After a writer died it is `Recomputing` until the background walk
    /// ends; `Approximate` otherwise. Reads one small file and lists `.temp/`.
    pub fn stats(&self) -> Stats {
        let token = self.inner.writer.as_ref().map(|w| w.token.as_str());
        usage::stats(&self.inner.layout, &self.inner.usage, token)
    }

    /// Makes the counters exact if they can be, and returns them: waits for
    /// a running recount, or walks the store now if the figures are not
    /// exact. A read-write handle saves the result to `diskUsage.cache`.
    /// The figures stay [`Approximate`](crate::Accuracy::Approximate) while
    /// other writers are open.
    ///
    /// # Errors
    /// [`Error::Io`] if `diskUsage.cache` cannot be rewritten.
    pub fn recount(&self) -> Result<Stats> {
        self.check_usable()?;
        let running = self
            .inner
            .recount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match running {
            Some(r) => r.finish(),
            None if self.stats().accuracy != crate::Accuracy::Exact => {
                usage::recount(&self.recount_job(), &AtomicBool::new(false))?
            }
            None => {}
        }
        Ok(self.stats())
    }

    /// Marks the counters inexact and recounts them in the background: for
    /// changes to the blocks that were not counted one by one.
    pub(crate) fn counters_changed(&self) -> Result<()> {
        self.inner.usage.mark_inexact();
        if let Some(w) = &self.inner.writer {
            usage::mark_stale(&self.inner.layout, &w.lock, self.durable())?;
        }
        self.start_recount()
    }

    /// Makes everything written so far durable, whatever the durability
    /// option: `syncfs` on Linux; elsewhere every block file and directory is
    /// fsynced.
    pub fn sync(&self) -> Result<()> {
        let root = &self.inner.layout.root;
        if platform::sync_filesystem(root).ctx("sync", root)? {
            return Ok(());
        }
        for dir in crate::listing::shard_dirs(&self.inner.layout)? {
            let path = self.inner.layout.shard_dir_named(&dir);
            for entry in platform::read_dir(&path).ctx("read directory", &path)? {
                let entry = entry.ctx("read directory", &path)?;
                let p = entry.path();
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    let f = retry_nofile(|| fs::OpenOptions::new().write(true).open(&p));
                    if let Ok(f) = f {
                        platform::sync_file(&f).ctx("fsync", &p)?;
                    }
                }
            }
            platform::sync_dir(&path).ctx("fsync", &path)?;
        }
        platform::sync_dir(root).ctx("fsync", root)
    }

    /// Converts the store to the shard function `new` in place: every block
    /// is moved to its new directory and `SHARDING` is rewritten.
    ///
    /// # Concurrency
    /// A reshard takes the store exclusively: no other writer may be open,
    /// in any process, and none can open until it ends (readers that open
    /// meanwhile get [`Error::Locked`]). It waits for the others to close up
    /// to [`Options::lock_wait`], and fails at once by default.
    ///
    /// # Durability
    /// A crash at any instant is finished by the next read-write open (a
    /// record in `.temp/` says what was under way), so every block stays
    /// readable. Under [`Durability::Fsync`] the moves are durable when this
    /// returns. `on_block` is called with the number of blocks moved so far.
    ///
    /// # Errors
    /// [`Error::Busy`] unless this is the only handle in this process (no
    /// clones, no open batches, no other read-write handle of the store);
    /// [`Error::Locked`] naming the other writers' process ids;
    /// [`Error::ReadOnly`]; [`Error::InvalidShard`]; [`Error::Io`]. After a
    /// failure midway the handle is unusable ([`Error::ReshardFailed`]) and
    /// the next read-write open finishes the reshard.
    pub fn reshard(&mut self, new: Shard, on_block: &mut dyn FnMut(u64)) -> Result<ReshardSummary> {
        self.check_writable()?;
        new.validate()?;
        let inner = Arc::get_mut(&mut self.inner).ok_or(Error::Busy)?;
        let old = inner.layout.shard;
        if old == new {
            return Ok(ReshardSummary::default());
        }
        let writer = inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        writer.lock.upgrade(inner.options.lock_wait)?;
        // A running recount walks the old layout: stop it, and start again after.
        let recount = inner
            .recount
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let durable = inner.options.durability == Durability::Fsync;
        let result = reshard::run(
            &inner.layout.root,
            old,
            new,
            durable,
            Some(&writer.token),
            on_block,
        );
        let downgraded = writer.lock.downgrade();
        match &result {
            Ok(_) => {
                inner.layout.shard = new;
                inner
                    .durable_dirs
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                downgraded?;
                // Duplicates that went away, conflicts quarantined, a recount
                // stopped: recount (in the background) rather than trust.
                drop(recount);
                self.counters_changed()?;
            }
            Err(_) => {
                inner.poisoned.store(true, Ordering::Relaxed);
                inner.usage.mark_inexact();
            }
        }
        result
    }

    /// Closes this handle. When it is the last one (no clones, no open
    /// batches), a running recount is finished, this writer's changes to the
    /// counters are folded into `diskUsage.cache`, and its hold on the store
    /// is released; errors that dropping would have to swallow are reported.
    ///
    /// # Errors
    /// [`Error::CountersNotSaved`] if the counters could not be written (a
    /// full disk): everything else was done, and the next read-write open
    /// recounts. [`Error::Io`] if this writer's owner file cannot be removed.
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.shutdown(),
            Err(_) => Ok(()),
        }
    }

    /// The writer pool shared by this store's batches.
    pub(crate) fn pool(&self) -> &WriterPool {
        self.inner
            .pool
            .get_or_init(|| WriterPool::new(self.inner.options.effective_writer_threads()))
    }
}

impl Inner {
    fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let recount = self
            .recount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(writer) = &self.writer else {
            // A reader's recount is its own: stop it.
            drop(recount);
            return Ok(());
        };
        // A close finishes a running recount, so even a short-lived process
        // leaves the counters no worse than it found them.
        if let Some(r) = recount {
            r.finish();
        }
        let durable = self.options.durability == Durability::Fsync;
        let persisted = usage::persist(&self.layout, &writer.lock, &self.usage, durable);
        let owner = writer
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match persisted {
            Ok(()) => owner.map_or(Ok(()), Owner::retire),
            // The owner file stays, so the next open takes this writer for a
            // dead one and recounts.
            Err(e) => Err(Error::CountersNotSaved {
                path: self.layout.disk_usage_path(),
                source: Box::new(e),
            }),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Refuses to create a store in a non-empty directory that is not one. The
/// lock file and `SHARDING`'s temp file from an interrupted creation are
/// allowed: nothing else of ours exists before `SHARDING` does (`_README`
/// and `.temp/` are made after it), so a `_README` or `.temp/` here is
/// somebody else's and is neither overwritten nor emptied.
fn check_creatable(root: &Path) -> Result<()> {
    let rd = match platform::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read directory", root, e)),
    };
    for entry in rd {
        let entry = entry.ctx("read directory", root)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == SHARDING {
            // Created by another process meanwhile.
            return Ok(());
        }
        let ours = name == LOCK || name.starts_with(".SHARDING.tmp");
        if !ours {
            return Err(Error::NotAStore {
                path: root.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Writes `SHARDING` (atomically, first: once it exists the directory is a
/// store), `_README` and the exact zero counters into a new store. Another
/// process creating the same store at once is no error: its `SHARDING`
/// stands (and a different shard function is refused by the open).
fn create_files(root: &Path, shard: &Shard, durable: bool) -> Result<()> {
    let sharding = shard.sharding_file();
    match layout::write_atomic(root, SHARDING, sharding.as_bytes(), false, durable) {
        Err(e) if e.io_kind() == Some(ErrorKind::AlreadyExists) => return Ok(()),
        r => r?,
    }
    layout::write_atomic(
        root,
        README,
        layout::readme_text(shard).as_bytes(),
        true,
        durable,
    )?;
    usage::create_cache(root, durable)
}

/// Reads `SHARDING` of an existing store and checks it against the options.
fn read_shard(root: &Path, options: &Options) -> Result<Shard> {
    let shard = layout::read_sharding(root)?.ok_or_else(|| Error::NoStore {
        path: root.to_path_buf(),
    })?;
    match options.shard {
        Some(requested) if requested != shard => Err(Error::ShardingMismatch {
            existing: shard,
            requested,
        }),
        _ => Ok(shard),
    }
}

/// Iterator over a store's keys, from [`Store::keys`].
pub struct Keys(Listing);

impl Iterator for Keys {
    type Item = Result<Key>;
    fn next(&mut self) -> Option<Result<Key>> {
        self.0.next().map(|r| r.map(|(k, _)| k))
    }
}

/// Iterator over a store's keys and block sizes, from [`Store::entries`].
pub struct Entries(Listing);

impl Iterator for Entries {
    type Item = Result<(Key, u64)>;
    fn next(&mut self) -> Option<Result<(Key, u64)>> {
        self.0.next()
    }
}
