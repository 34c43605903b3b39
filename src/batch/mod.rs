//! Atomic batches: staged concurrently in `.temp/batch-…/`, read-your-writes
//! through a put-set, published all-or-nothing across crashes.

mod publish;
mod record;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(crate) use publish::{committed, recover};
use record::RecordOp;

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

/// An atomic set of puts and deletes, from [`Store::batch`].
///
/// # On-disk format
/// Each batch stages its blocks in its own directory `ROOT/.temp/batch-…/`.
/// At commit it writes a commit record there listing its final operations,
/// then renames every staged file into its shard directory.
///
/// # Semantics
/// - `put` hands the block to background writers and returns; memory in
///   flight is capped ([`Options::batch_memory`](crate::Options::batch_memory)),
///   and `put` waits while the cap is reached.
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
/// entry is on disk when `commit` returns.
///
/// # Concurrency
/// `Batch` is `Send + Sync`: several threads may `put` into one batch. Several
/// batches may be open and commit at once, also with overlapping keys. A batch
/// keeps its store open (and locked) until it is committed, discarded or dropped.
///
/// # Errors
/// A failure of a background write poisons the batch: later calls return
/// [`Error::BatchFailed`], and `commit` fails without making anything
/// visible. An error after the commit point is returned by `commit`, and the
/// batch is finished at the next open. Dropping an uncommitted batch discards it.
pub struct Batch {
    store: Store,
    dir: PathBuf,
    seq: AtomicU64,
    ops: Mutex<HashMap<Key, Op>>,
    flight: Arc<Flight>,
    finished: AtomicBool,
}

enum Op {
    Put { staged: Arc<Staged>, replace: bool },
    Delete,
}

/// One staged block: its file number, size, and its bytes while they are
/// still being written.
struct Staged {
    seq: u64,
    size: u64,
    pending: Mutex<Option<Arc<[u8]>>>,
}

/// Bytes and jobs handed to the writers and not yet written.
struct Flight {
    state: Mutex<FlightState>,
    changed: Condvar,
    cap: usize,
}

#[derive(Default)]
struct FlightState {
    bytes: usize,
    jobs: usize,
    error: Option<String>,
    /// Threads waiting in `reserve` and in `wait_idle`: a writer finishing a
    /// block wakes them only when one of them can go on, so a large import
    /// does not pay a wake-up (a futex call and a context switch) per block.
    reserving: usize,
    idling: usize,
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `size` more bytes fit under the cap (a block larger than
    /// the cap waits until nothing else is in flight), then reserves them.
    fn reserve(&self, size: usize) -> Result<()> {
        let mut s = self.lock();
        loop {
            if let Some(e) = &s.error {
                return Err(Error::BatchFailed(e.clone()));
            }
            if s.bytes == 0 || s.bytes + size <= self.cap {
                break;
            }
            s.reserving += 1;
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            s.reserving -= 1;
        }
        s.bytes += size;
        s.jobs += 1;
        Ok(())
    }

    fn release(&self, size: usize, error: Option<String>) {
        let mut s = self.lock();
        s.bytes -= size;
        s.jobs -= 1;
        let failed = error.is_some();
        if let Some(e) = error {
            s.error.get_or_insert(e);
        }
        // Wake waiters only when one can proceed: an error, room for a
        // waiting put (half the cap free, or nothing in flight), or the last job.
        let wake = failed
            || (s.reserving > 0 && (s.bytes <= self.cap / 2 || s.bytes == 0))
            || (s.idling > 0 && s.jobs == 0);
        drop(s);
        if wake {
            self.changed.notify_all();
        }
    }

    fn fail(&self, error: String) {
        self.lock().error.get_or_insert(error);
        self.changed.notify_all();
    }

    /// Waits for every job; returns the first error any of them had.
    fn wait_idle(&self) -> Option<String> {
        let mut s = self.lock();
        while s.jobs > 0 {
            s.idling += 1;
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            s.idling -= 1;
        }
        s.error.clone()
    }

    fn check(&self) -> Result<()> {
        match &self.lock().error {
            Some(e) => Err(Error::BatchFailed(e.clone())),
            None => Ok(()),
        }
    }
}

impl Batch {
    pub(crate) fn new(store: Store) -> Result<Batch> {
        let dir = store.temp_path("batch");
        platform::create_dir(&dir).ctx("create directory", &dir)?;
        let cap = store.inner.options.batch_memory;
        Ok(Batch {
            store,
            dir,
            seq: AtomicU64::new(0),
            ops: Mutex::new(HashMap::new()),
            flight: Arc::new(Flight {
                state: Mutex::new(FlightState::default()),
                changed: Condvar::new(),
                cap,
            }),
            finished: AtomicBool::new(false),
        })
    }

    fn ops(&self) -> MutexGuard<'_, HashMap<Key, Op>> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The staging directory (`ROOT/.temp/batch-…`).
    pub fn staging_dir(&self) -> &Path {
        &self.dir
    }

    fn staged_path(&self, seq: u64) -> PathBuf {
        self.dir.join(seq.to_string())
    }

    /// Whether a put of `key` now would be dropped (an earlier put wins), and
    /// whether it would replace a stored block (an earlier delete).
    fn put_state(ops: &HashMap<Key, Op>, key: &Key) -> Option<bool> {
        match ops.get(key) {
            Some(Op::Put { .. }) => None,
            Some(Op::Delete) => Some(true),
            None => Some(false),
        }
    }

    /// Stages `data` under `key`: the block is copied and written in the
    /// background. Returns once the copy is queued (waiting first if the
    /// memory cap is reached). A later put of the same key is dropped.
    ///
    /// # Errors
    /// [`Error::BatchFailed`] if an earlier background write failed.
    pub fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        self.flight.check()?;
        if Self::put_state(&self.ops(), key).is_none() {
            return Ok(());
        }
        self.flight.reserve(data.len())?;
        let bytes: Arc<[u8]> = Arc::from(data);
        let staged = {
            let mut ops = self.ops();
            let Some(replace) = Self::put_state(&ops, key) else {
                drop(ops);
                self.flight.release(data.len(), None);
                return Ok(());
            };
            let staged = Arc::new(Staged {
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                size: data.len() as u64,
                pending: Mutex::new(Some(bytes.clone())),
            });
            ops.insert(
                key.clone(),
                Op::Put {
                    staged: staged.clone(),
                    replace,
                },
            );
            staged
        };
        let path = self.staged_path(staged.seq);
        let flight = self.flight.clone();
        let durable = self.store.durable();
        self.store.pool().submit(move || {
            let result = write_file(
                &path,
                |f| platform::write_all(f, &bytes).map(|()| 0),
                durable,
            );
            let error = match result {
                Ok(_) => {
                    *staged.pending.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            drop(bytes);
            flight.release(staged.size as usize, error);
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
        if Self::put_state(&self.ops(), key).is_none() {
            return Ok(0);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.staged_path(seq);
        let size = write_file(
            &path,
            |f| platform::copy_into(&mut reader, f),
            self.store.durable(),
        )?;
        let mut ops = self.ops();
        match Self::put_state(&ops, key) {
            Some(replace) => {
                let staged = Arc::new(Staged {
                    seq,
                    size,
                    pending: Mutex::new(None),
                });
                ops.insert(key.clone(), Op::Put { staged, replace });
            }
            None => {
                drop(ops);
                let _ = platform::remove_file(&path);
            }
        }
        Ok(size)
    }

    /// Deletes `key` at commit, and hides earlier puts of it in this batch.
    pub fn delete(&self, key: &Key) -> Result<()> {
        self.flight.check()?;
        self.ops().insert(key.clone(), Op::Delete);
        Ok(())
    }

    /// What the batch says of `key`: `Some(Some(staged))` for a put,
    /// `Some(None)` for a delete, `None` to ask the store.
    fn lookup(&self, key: &Key) -> Option<Option<Arc<Staged>>> {
        match self.ops().get(key)? {
            Op::Put { staged, .. } => Some(Some(staged.clone())),
            Op::Delete => Some(None),
        }
    }

    /// Reads `key` through the batch: this batch's own put (read-your-writes),
    /// `None` after its delete, else the store's block. (For content-addressed
    /// keys a put of a key the store already holds has the same bytes; the
    /// store's copy is what stays after commit.)
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        match self.lookup(key) {
            None => self.store.get(key),
            Some(None) => Ok(None),
            Some(Some(staged)) => {
                if let Some(bytes) = staged
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    return Ok(Some(bytes.to_vec()));
                }
                let path = self.staged_path(staged.seq);
                fs::read(&path).ctx("read", &path).map(Some)
            }
        }
    }

    /// Whether `key` would be present after a commit now.
    pub fn has(&self, key: &Key) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// The size of `key` as [`get`](Batch::get) would read it.
    pub fn size(&self, key: &Key) -> Result<Option<u64>> {
        match self.lookup(key) {
            None => self.store.size(key),
            Some(None) => Ok(None),
            Some(Some(staged)) => Ok(Some(staged.size)),
        }
    }

    /// The keys that would be present after a commit now: the store's, plus
    /// this batch's puts, minus its deletes; sorted.
    pub fn keys(&self) -> Result<Vec<Key>> {
        let mut keys = BTreeSet::new();
        for k in self.store.keys() {
            keys.insert(k?);
        }
        for (k, op) in self.ops().iter() {
            match op {
                Op::Put { .. } => keys.insert(k.clone()),
                Op::Delete => keys.remove(k),
            };
        }
        Ok(keys.into_iter().collect())
    }

    /// Makes the whole batch visible in the store, atomically across crashes.
    ///
    /// Steps: wait for the writers; under Fsync, make the staged files and
    /// the staging directory durable; write and fsync the commit record (the
    /// commit point); rename every staged file into place without replacing
    /// and apply the deletes; fsync each touched shard directory once (and
    /// the root for new ones); remove the staging directory.
    ///
    /// # Errors
    /// Before the commit point: nothing is visible and the staging directory
    /// is removed. After it: the error is returned and the next open of the
    /// store finishes the batch.
    pub fn commit(self) -> Result<CommitSummary> {
        self.finished.store(true, Ordering::SeqCst);
        let ops = match self.prepare() {
            Ok(ops) => ops,
            Err(e) => {
                let _ = platform::remove_dir_all(&self.dir);
                return Err(e);
            }
        };
        if ops.is_empty() {
            platform::remove_dir_all(&self.dir).ctx("remove", &self.dir)?;
            return Ok(CommitSummary::default());
        }
        publish::apply(&self.store, &self.dir, &ops, false)
    }

    /// Everything up to and including the commit point.
    fn prepare(&self) -> Result<Vec<RecordOp>> {
        if let Some(e) = self.flight.wait_idle() {
            return Err(Error::BatchFailed(e));
        }
        let ops: Vec<RecordOp> = std::mem::take(&mut *self.ops())
            .into_iter()
            .map(|(key, op)| match op {
                Op::Put { staged, replace } => RecordOp::Put {
                    seq: staged.seq,
                    size: staged.size,
                    key,
                    replace,
                },
                Op::Delete => RecordOp::Delete { key },
            })
            .collect();
        if ops.is_empty() {
            // Nothing to make atomic: no record, no fsync.
            return Ok(ops);
        }
        let durable = self.store.durable();
        // Every shard directory the puts need exists before the commit point,
        // so that what follows it only renames and unlinks: running out of
        // inodes (or a directory in the way) fails the commit cleanly here.
        let dirs: HashSet<String> = ops
            .iter()
            .filter(|op| matches!(op, RecordOp::Put { .. }))
            .map(|op| self.store.shard().dir(op.key()))
            .collect();
        self.store.create_shard_dirs(dirs)?;
        if durable {
            platform::sync_dir(&self.dir).ctx("fsync", &self.dir)?;
            let temp = &self.store.layout().temp;
            platform::sync_dir(temp).ctx("fsync", temp)?;
        }
        layout::write_atomic(
            &self.dir,
            record::RECORD,
            &record::encode(&ops),
            false,
            durable,
        )?;
        Ok(ops)
    }

    /// Drops the batch: nothing of it reaches the store, and its staging
    /// directory is removed.
    ///
    /// # Errors
    /// [`Error::Io`] if the staging directory cannot be removed (the next open
    /// removes it).
    pub fn discard(self) -> Result<()> {
        self.finished.store(true, Ordering::SeqCst);
        self.flight.fail("batch discarded".into());
        self.flight.wait_idle();
        platform::remove_dir_all(&self.dir).ctx("remove", &self.dir)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            self.flight.fail("batch dropped".into());
            self.flight.wait_idle();
            let _ = platform::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("dir", &self.dir).finish()
    }
}
