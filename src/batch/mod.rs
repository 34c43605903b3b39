//! Atomic batches: staged concurrently in `.temp/batch-…/`, whose listing is
//! the batch's put-set (read-your-writes), published all-or-nothing across
//! crashes. Memory does not grow with the number of blocks: see `staging`
//! for the on-disk put-set, `record` for the commit record, `publish` for
//! commit and recovery.

mod flight;
mod keys;
mod publish;
mod record;
mod staging;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flight::Flight;
pub use keys::BatchKeys;
pub(crate) use publish::recover;
// For read-only opens (recovery's rule table): does a staging directory
// hold a complete commit record.
pub(crate) use record::committed;
use staging::Kind;

use crate::error::{Error, IoContext, Result};
use crate::key::Key;
use crate::layout;
use crate::platform;
use crate::store::{write_file, Store};

/// What a commit did, from [`Batch::commit`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitSummary {
    /// Blocks newly written to the store.
    pub written: u64,
    /// Blocks the batch put that the store already had (kept, not rewritten).
    pub already_present: u64,
    /// Blocks deleted from the store (deletes of absent keys are not counted).
    pub deleted: u64,
    /// Bytes newly written (the sum of the sizes of the `written` blocks).
    pub bytes: u64,
}

impl CommitSummary {
    fn merge(&mut self, o: &CommitSummary) {
        self.written += o.written;
        self.already_present += o.already_present;
        self.deleted += o.deleted;
        self.bytes += o.bytes;
    }
}

/// Stripes of the table of pending puts: operations on keys of one stripe
/// take its lock, so each key's operations are decided in a total order.
const STRIPES: usize = 64;
/// Words of one stripe's key filter: 64 stripes × 8,192 words × 64 bits =
/// 2^25 bits (4 MiB), allocated when a stripe is first used.
const FILTER_WORDS: usize = 8192;

/// An atomic set of puts and deletes, from [`Store::batch`].
///
/// # On-disk format
/// Each batch stages in its own directory `ROOT/.temp/batch-…/`: every
/// staged block is a file named by its key, in a subdirectory named like
/// its shard directory in the store (so no directory holds more entries
/// than a shard directory does), and a delete is an empty marker file
/// beside it. That listing *is* the batch's put-set. At commit a small
/// commit record (`COMMIT`, a format version and nothing else) is written
/// there, then the staged files are renamed into their shard directories.
///
/// # Memory
/// A batch's memory does not grow with its number of blocks: the put-set
/// is on disk, the record lists nothing, and commit, recovery and
/// [`keys`](Batch::keys) stream the listing. What a batch holds in memory is
/// the blocks in flight to the writers (capped in bytes by
/// [`Options::batch_memory`](crate::Options::batch_memory) and in number),
/// and a fixed-size filter of the keys it has touched (at most 4 MiB) that
/// spares most operations a look at the staging directory.
///
/// # Semantics
/// - `put` hands the block to background writers and returns; when the
///   memory in flight reaches its cap, `put` waits.
/// - Per key, the first `put` wins and later puts of that key are dropped
///   without writing; a `delete` hides earlier puts; the last operation
///   decides (`put A=1, delete A, put A=2` ends with A=2, and `delete A,
///   put A` replaces a stored A at commit: on Linux by an atomic swap of
///   names, so readers see the old A or the new one throughout; elsewhere
///   the old A is deleted first, and a reader can find A absent meanwhile).
/// - [`get`](Batch::get), [`has`](Batch::has), [`size`](Batch::size) and
///   [`keys`](Batch::keys) see the batch's own puts and deletes over the store.
/// - Nothing of the batch is visible in the store before [`commit`](Batch::commit).
///   A key the store already holds is kept (content-addressed: never rewritten).
///
/// # Durability
/// Commit is atomic across crashes: once the commit record is durable (the
/// commit point), a crash at any later instant is finished by the next open;
/// before it, the batch is removed by the next open. Under
/// [`Durability::Fsync`](crate::Durability::Fsync) every block and directory
/// entry is on disk when `commit` returns, and so is the removal of the
/// record: a power cut after `commit` returned never replays the batch.
///
/// # Concurrency
/// `Batch` is `Send + Sync`: several threads may `put` into one batch. Several
/// batches may be open and commit at once, also with overlapping keys. A batch
/// keeps its store open until it is committed, discarded or dropped.
///
/// # Errors
/// A failure of a background write poisons the batch: later calls return
/// [`Error::BatchFailed`] (which keeps the write's error as its source),
/// and `commit` fails without making anything visible. An error after the
/// commit point is returned by `commit`, and the batch is finished at the
/// next open. Dropping an uncommitted batch discards it.
pub struct Batch {
    store: Store,
    /// The staging directory, and its `b/` subdirectory of staged entries.
    dir: PathBuf,
    blocks: PathBuf,
    /// Names of `put_reader`'s temp files.
    seq: AtomicU64,
    /// Staged entries made (puts and delete markers), for commit's choice
    /// of threads, and to skip the record of a batch that did nothing.
    entries: AtomicU64,
    stripes: Arc<[Mutex<Stripe>]>,
    flight: Arc<Flight>,
    /// Whether each staged file is fsynced as it is written: under Fsync
    /// where the platform cannot flush the filesystem at commit instead.
    fsync_each: bool,
    finished: AtomicBool,
}

/// One stripe of the batch's in-memory state.
#[derive(Default)]
struct Stripe {
    /// Puts handed to the writers and not written yet, with their bytes.
    pending: HashMap<Key, Arc<[u8]>>,
    /// Keys this batch has staged or marked (a Bloom filter, two bits per
    /// key): a key whose bits are not both set has nothing on disk.
    bits: Vec<u64>,
}

impl Stripe {
    fn positions(h: u64) -> [usize; 2] {
        let n = (FILTER_WORDS * 64) as u64;
        [((h >> 6) % n) as usize, ((h >> 32) % n) as usize]
    }

    fn maybe(&self, h: u64) -> bool {
        !self.bits.is_empty()
            && Self::positions(h)
                .iter()
                .all(|&b| self.bits[b / 64] & (1 << (b % 64)) != 0)
    }

    fn mark(&mut self, h: u64) {
        if self.bits.is_empty() {
            self.bits = vec![0; FILTER_WORDS];
        }
        for b in Self::positions(h) {
            self.bits[b / 64] |= 1 << (b % 64);
        }
    }
}

/// What the batch says of a key.
enum State {
    /// Nothing: the store decides.
    Absent,
    /// A put in flight, with its bytes.
    Pending(Arc<[u8]>),
    /// A staged put, in this file.
    Staged(PathBuf),
    /// A delete.
    Deleted,
}

/// A key's hash (stripe and filter bits), and its staging shard directory.
struct Place {
    hash: u64,
    shard: String,
}

fn exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match platform::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

impl Batch {
    pub(crate) fn new(store: Store) -> Result<Batch> {
        let dir = loop {
            let dir = store.temp_path("batch");
            match platform::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create directory", dir, e)),
            }
        };
        let blocks = dir.join(staging::BLOCKS);
        if let Err(e) = platform::create_dir(&blocks) {
            let _ = platform::remove_dir_all(&dir);
            return Err(Error::io("create directory", blocks, e));
        }
        let cap = store.inner.options.batch_memory;
        let fsync_each = store.durable() && !platform::can_sync_filesystem();
        Ok(Batch {
            store,
            dir,
            blocks,
            seq: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            flight: Arc::new(Flight::new(cap)),
            fsync_each,
            finished: AtomicBool::new(false),
        })
    }

    /// The staging directory (`ROOT/.temp/batch-…`).
    pub fn staging_dir(&self) -> &Path {
        &self.dir
    }

    fn place(&self, key: &Key) -> Place {
        Place {
            hash: hash_of(key),
            shard: self.store.shard().dir(key),
        }
    }

    fn stripe(&self, p: &Place) -> MutexGuard<'_, Stripe> {
        lock_stripe(&self.stripes, p.hash)
    }

    fn entry(&self, p: &Place, key: &Key, kind: Kind) -> PathBuf {
        staging::entry_path(&self.blocks, &p.shard, key, kind)
    }

    /// What the batch says of `key`; `s` is its stripe, locked.
    fn state(&self, s: &Stripe, p: &Place, key: &Key) -> Result<State> {
        if let Some(bytes) = s.pending.get(key) {
            return Ok(State::Pending(bytes.clone()));
        }
        if !s.maybe(p.hash) {
            return Ok(State::Absent);
        }
        for kind in [Kind::Put, Kind::Replace] {
            let path = self.entry(p, key, kind);
            if exists(&path)? {
                return Ok(State::Staged(path));
            }
        }
        if exists(&self.entry(p, key, Kind::Delete))? {
            return Ok(State::Deleted);
        }
        Ok(State::Absent)
    }

    /// Stages `data` under `key`: the block is copied and written in the
    /// background. Returns once the copy is queued (waiting first if the
    /// memory cap is reached). A later put of the same key is dropped.
    ///
    /// # Errors
    /// [`Error::BatchFailed`] if an earlier background write failed;
    /// [`Error::Io`] if the staging directory cannot be read.
    pub fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        self.flight.check()?;
        let p = self.place(key);
        {
            let s = self.stripe(&p);
            if matches!(
                self.state(&s, &p, key)?,
                State::Pending(_) | State::Staged(_)
            ) {
                return Ok(());
            }
        }
        self.flight.reserve(data.len())?;
        let bytes: Arc<[u8]> = Arc::from(data);
        let decided = (|| {
            let mut s = self.stripe(&p);
            let kind = match self.state(&s, &p, key)? {
                State::Pending(_) | State::Staged(_) => return Ok(None),
                State::Absent => Kind::Put,
                State::Deleted => {
                    // The marker goes; the staged `.r` file says both things.
                    remove_if_present(&self.entry(&p, key, Kind::Delete))?;
                    Kind::Replace
                }
            };
            s.pending.insert(key.clone(), bytes.clone());
            s.mark(p.hash);
            Ok(Some(kind))
        })();
        let kind = match decided {
            Ok(Some(kind)) => kind,
            other => {
                self.flight.release(data.len(), None);
                return other.map(|_| ());
            }
        };
        self.entries.fetch_add(1, Ordering::Relaxed);
        let path = self.entry(&p, key, kind);
        let (flight, stripes, key) = (self.flight.clone(), self.stripes.clone(), key.clone());
        let fsync = self.fsync_each;
        self.store.pool().submit(move || {
            let size = bytes.len();
            let result = if flight.failed() {
                // Poisoned (or discarded): the batch will never commit.
                Ok(0)
            } else {
                staging::in_shard_dir(&path, || {
                    write_file(&path, |f| platform::write_all(f, &bytes).map(|()| 0), fsync)
                })
            };
            lock_stripe(&stripes, hash_of(&key)).pending.remove(&key);
            drop(bytes);
            flight.release(size, result.err());
        });
        Ok(())
    }

    /// Stages the bytes of `reader` under `key`, streaming them to the
    /// staging directory on the calling thread (never held in memory).
    /// Returns the bytes read; 0, without reading, when an earlier put of
    /// `key` in this batch wins.
    ///
    /// # Errors
    /// The reader's error or a write error; the batch stays usable.
    pub fn put_reader(&self, key: &Key, mut reader: impl Read) -> Result<u64> {
        self.flight.check()?;
        let p = self.place(key);
        {
            let s = self.stripe(&p);
            if matches!(
                self.state(&s, &p, key)?,
                State::Pending(_) | State::Staged(_)
            ) {
                return Ok(0);
            }
        }
        let tmp = self
            .dir
            .join(format!(".r{}", self.seq.fetch_add(1, Ordering::Relaxed)));
        let size = write_file(
            &tmp,
            |f| platform::copy_into(&mut reader, f),
            self.fsync_each,
        )?;
        let result = (|| {
            let mut s = self.stripe(&p);
            let kind = match self.state(&s, &p, key)? {
                State::Pending(_) | State::Staged(_) => return Ok(false),
                State::Absent => Kind::Put,
                State::Deleted => Kind::Replace,
            };
            let dest = self.entry(&p, key, kind);
            staging::in_shard_dir(&dest, || {
                platform::rename_noreplace(&tmp, &dest).ctx("rename", &dest)
            })?;
            s.mark(p.hash);
            self.entries.fetch_add(1, Ordering::Relaxed);
            if kind == Kind::Replace {
                let marker = self.entry(&p, key, Kind::Delete);
                if let Err(e) = remove_if_present(&marker) {
                    // Both a marker and a file for one key: no longer one
                    // decision per key, so the batch cannot commit.
                    self.flight.fail(Error::io(
                        "remove",
                        &marker,
                        std::io::Error::other(e.to_string()),
                    ));
                    return Err(e);
                }
            }
            Ok(true)
        })();
        match result {
            Ok(true) => Ok(size),
            Ok(false) => {
                let _ = platform::remove_file(&tmp);
                Ok(0)
            }
            Err(e) => {
                let _ = platform::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Deletes `key` at commit, and hides earlier puts of it in this batch.
    ///
    /// # Errors
    /// [`Error::BatchFailed`] if an earlier background write failed. A
    /// failure to write the delete marker ([`Error::Io`]) poisons the batch.
    pub fn delete(&self, key: &Key) -> Result<()> {
        self.flight.check()?;
        let p = self.place(key);
        loop {
            let seen = self.flight.completed();
            let mut s = self.stripe(&p);
            if s.pending.contains_key(key) {
                // Wait for that write to land, then undo it on disk.
                drop(s);
                self.flight.wait_completed(seen);
                continue;
            }
            let touched = s.maybe(p.hash);
            let result = (|| {
                if touched {
                    remove_if_present(&self.entry(&p, key, Kind::Put))?;
                    remove_if_present(&self.entry(&p, key, Kind::Replace))?;
                }
                let marker = self.entry(&p, key, Kind::Delete);
                staging::in_shard_dir(&marker, || match platform::create_new(&marker) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(Error::io("create", &marker, e)),
                })
            })();
            s.mark(p.hash);
            drop(s);
            self.entries.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = &result {
                // The key's staged state may be half changed: poison.
                self.flight.fail(Error::io(
                    "delete",
                    &self.dir,
                    std::io::Error::other(e.to_string()),
                ));
            }
            return result;
        }
    }

    /// What the batch says of `key`, or the store.
    fn lookup(&self, key: &Key) -> Result<State> {
        let p = self.place(key);
        let s = self.stripe(&p);
        self.state(&s, &p, key)
    }

    /// Reads `key` through the batch: this batch's own put (read-your-writes),
    /// `None` after its delete, else the store's block. (For content-addressed
    /// keys a put of a key the store already holds has the same bytes; the
    /// store's copy is what stays after commit.)
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        loop {
            match self.lookup(key)? {
                State::Absent => return self.store.get(key),
                State::Deleted => return Ok(None),
                State::Pending(bytes) => return Ok(Some(bytes.to_vec())),
                State::Staged(path) => match std::fs::read(&path) {
                    Ok(data) => return Ok(Some(data)),
                    // Deleted meanwhile by another thread: ask again.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("read", path, e)),
                },
            }
        }
    }

    /// Whether `key` would be present after a commit now.
    pub fn has(&self, key: &Key) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// The size of `key` as [`get`](Batch::get) would read it.
    pub fn size(&self, key: &Key) -> Result<Option<u64>> {
        loop {
            match self.lookup(key)? {
                State::Absent => return self.store.size(key),
                State::Deleted => return Ok(None),
                State::Pending(bytes) => return Ok(Some(bytes.len() as u64)),
                State::Staged(path) => match std::fs::symlink_metadata(&path) {
                    Ok(m) => return Ok(Some(m.len())),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("stat", path, e)),
                },
            }
        }
    }

    /// Streams the keys that would be present after a commit now: the
    /// store's (minus this batch's deletes), then this batch's puts of keys
    /// the store does not hold. Each key once, in no particular order; the
    /// batch is never held in memory. Waits first for the background
    /// writes of earlier puts. Puts, deletes or store changes made while the
    /// iterator runs may or may not be seen.
    ///
    /// # Errors
    /// Items are [`Error::BatchFailed`] (first, for a poisoned batch) or
    /// [`Error::Io`] for a directory that cannot be read.
    pub fn keys(&self) -> BatchKeys<'_> {
        let failed = self
            .flight
            .wait_idle()
            .map(|source| Error::BatchFailed { source });
        BatchKeys::new(self, failed)
    }

    /// Makes the whole batch visible in the store, atomically across crashes.
    ///
    /// Steps: wait for the writers; create the shard directories the batch
    /// needs; under Fsync, make the staged files and their directory
    /// entries durable (on Linux one `syncfs` of the store's filesystem;
    /// elsewhere each staged file is fsynced as it is written, and the
    /// staging directories here); write and fsync the commit record (the
    /// commit point); rename every staged file into place (without
    /// replacing, or by a swap for `delete A, put A`) and apply the deletes,
    /// streaming the staging directory; fsync each touched shard directory
    /// once; remove the record (durably under Fsync), then the staging
    /// directory.
    ///
    /// # Errors
    /// Before the commit point: nothing is visible and the staging directory
    /// is removed (its record first, if one was written). After it: the
    /// error is returned and the next open of the store finishes the batch.
    pub fn commit(self) -> Result<CommitSummary> {
        self.finished.store(true, Ordering::SeqCst);
        let durable = self.store.durable();
        if let Some(source) = self.flight.wait_idle() {
            let _ = staging::remove(&self.dir, durable);
            return Err(Error::BatchFailed { source });
        }
        let entries = self.entries.load(Ordering::Relaxed);
        if entries == 0 {
            // Nothing to make atomic: no record, no fsync.
            staging::remove(&self.dir, durable)?;
            return Ok(CommitSummary::default());
        }
        if let Err(e) = self.prepare() {
            // A record may be in place (its fsync failed): it goes first.
            let _ = staging::remove(&self.dir, durable);
            return Err(e);
        }
        publish::apply(&self.store, &self.dir, Some(entries))
    }

    /// Everything up to and including the commit point.
    fn prepare(&self) -> Result<()> {
        publish::ensure_shard_dirs(&self.store, &self.dir)?;
        let durable = self.store.durable();
        if durable {
            let synced = platform::can_sync_filesystem()
                && platform::sync_filesystem(&self.dir).ctx("sync", &self.dir)?;
            // Where the filesystem could not be flushed at once, each
            // staged file (unless its writer fsynced it) and each staging
            // directory is made durable on its own.
            if !synced && (platform::dirs_need_sync() || !self.fsync_each) {
                publish::sync_tree(&self.dir, !self.fsync_each)?;
            }
        }
        layout::write_atomic(&self.dir, record::RECORD, &record::encode(), false, durable)
    }

    /// Drops the batch: nothing of it reaches the store, and its staging
    /// directory is removed.
    ///
    /// # Errors
    /// [`Error::Io`] if the staging directory cannot be removed (the next open
    /// removes it).
    pub fn discard(self) -> Result<()> {
        self.finished.store(true, Ordering::SeqCst);
        self.abandon()
    }

    fn abandon(&self) -> Result<()> {
        self.flight.fail(Error::io(
            "discard",
            &self.dir,
            std::io::Error::other("the batch was discarded"),
        ));
        self.flight.wait_idle();
        staging::remove(&self.dir, self.store.durable())
    }
}

fn hash_of(key: &Key) -> u64 {
    let mut h = DefaultHasher::new();
    key.as_str().hash(&mut h);
    h.finish()
}

fn lock_stripe(stripes: &[Mutex<Stripe>], hash: u64) -> MutexGuard<'_, Stripe> {
    stripes[(hash % STRIPES as u64) as usize]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            let _ = self.abandon();
        }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("dir", &self.dir).finish()
    }
}
