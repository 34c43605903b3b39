//! Batches on object storage: staged objects, a commit record as the commit
//! point, publishing by server-side copy.
//!
//! # The commit record
//! `.temp/batch-<WRITER>-<N>/commit`, text, one operation a line:
//! ```text
//! flatstore-s3-batch 1
//! put KEY I SIZE        publish staged object I as KEY unless KEY is present
//! replace KEY I SIZE    publish staged object I as KEY, replacing it (delete then put)
//! delete KEY            delete KEY
//! end COUNT             COUNT operations above; a record without it is refused
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cid::Cid;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::batch::CommitSummary;
use crate::block::{check_block, is_identity};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::s3::names::Names;
use crate::s3::runtime::{is_not_found, os_err};
use crate::s3::{head, S3Options, S3Store};

const MAGIC: &str = "flatstore-s3-batch 1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Replace,
    Delete,
}

/// One operation of a commit record.
#[derive(Debug, Clone)]
pub(crate) struct RecOp {
    kind: Kind,
    key: Key,
    /// The staged object's number (puts and replaces).
    obj: u64,
    size: u64,
}

/// The final state of one key in a batch.
#[derive(Debug, Clone, Copy)]
enum Op {
    Put { obj: u64, size: u64, replace: bool },
    Delete,
}

#[derive(Debug, Default)]
struct State {
    ops: BTreeMap<Key, Op>,
    next: u64,
    failed: Option<std::sync::Arc<Error>>,
}

/// A batch of puts and deletes on an [`S3Store`], all or nothing.
///
/// `put` uploads the block to a staging object under
/// `.temp/batch-<WRITER>-<N>/` in the background (at most
/// [`S3Options::in_flight_bytes`](super::S3Options::in_flight_bytes) of data
/// and [`S3Options::concurrency`](super::S3Options::concurrency) uploads in
/// flight; `put` waits beyond that). Within a batch the first `put` of a
/// key wins, a `delete` hides earlier puts, and `delete A` then `put A`
/// replaces a stored A at commit. `get`/`has`/`size` see the batch's own
/// writes. Nothing is visible in the store before [`commit`](S3Batch::commit).
///
/// # Atomicity
/// [`commit`](S3Batch::commit) waits for the uploads, checks the writer's
/// lease, then writes the commit record: that single PUT is the commit
/// point. It then publishes every operation by server-side copy (a put whose
/// key is already present is counted `already_present` and not copied),
/// removes the record, then the staged objects. If the process dies at any
/// instant, the next read-write open that finds this writer dead rolls the
/// batch forward when the record exists and removes it when not: all of the
/// batch or none of it. During the publish, readers see it partly, as with
/// a local store.
///
/// # Memory
/// The batch keeps each key's final state (about 100 bytes a key) and the
/// commit record is built in memory, so memory grows with the number of
/// keys, unlike a local batch.
///
/// # Concurrency
/// `Send + Sync`: several threads may put into one batch. Dropping it
/// uncommitted discards it (best effort; a failure leaves objects that the
/// next open removes once this writer is gone).
///
/// # Errors
/// A failed upload fails the batch: later calls give [`Error::BatchFailed`],
/// commit removes the staging and fails with it. Requests that fail for good
/// are [`Error::ObjectStore`] naming the object key.
pub struct S3Batch {
    store: S3Store,
    id: String,
    state: Mutex<State>,
    uploads: Mutex<JoinSet<Result<()>>>,
    /// Bytes in flight, in KiB.
    budget: Arc<Semaphore>,
    budget_kib: u32,
    /// Uploads in flight ([`S3Options::concurrency`](super::S3Options::concurrency)).
    slots: Arc<Semaphore>,
    done: AtomicBool,
}

impl std::fmt::Debug for S3Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Batch").field("id", &self.id).finish()
    }
}

impl S3Batch {
    pub(crate) fn new(store: S3Store, id: String) -> S3Batch {
        let budget_kib =
            (store.inner.options.in_flight_bytes / 1024).clamp(1, u32::MAX as usize >> 4) as u32;
        S3Batch {
            slots: Arc::new(Semaphore::new(store.inner.options.concurrency)),
            store,
            id,
            state: Mutex::new(State::default()),
            uploads: Mutex::new(JoinSet::new()),
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            done: AtomicBool::new(false),
        }
    }

    /// The staging prefix's name, `batch-<WRITER>-<N>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_failed(&self) -> Result<()> {
        match &self.state().failed {
            Some(why) => Err(Error::BatchFailed {
                source: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Adds a put of `data` under `key` (ignored if the batch already puts
    /// `key`). The upload runs in the background.
    ///
    /// # Errors
    /// [`Error::BatchFailed`] after an earlier failure.
    pub fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        self.check_failed()?;
        let obj = {
            let mut st = self.state();
            let replace = match st.ops.get(key) {
                Some(Op::Put { .. }) => return Ok(()),
                Some(Op::Delete) => true,
                None => false,
            };
            let obj = st.next;
            st.next += 1;
            let size = data.len() as u64;
            st.ops.insert(key.clone(), Op::Put { obj, size, replace });
            obj
        };
        let inner = &self.store.inner;
        let kib = ((data.len() / 1024) as u32 + 1).min(self.budget_kib);
        let (bytes, slot) = inner.rt.block_on(async {
            let bytes = self.budget.clone().acquire_many_owned(kib).await;
            let slot = self.slots.clone().acquire_owned().await;
            (bytes, slot)
        });
        let permit = (
            bytes.expect("the semaphore is never closed"),
            slot.expect("the semaphore is never closed"),
        );
        let path = inner.names.staged(&self.id, obj);
        let st = inner.store.clone();
        let payload = PutPayload::from(data.to_vec());
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.spawn_on(
            async move {
                let r = st.put(&path, payload).await;
                drop(permit);
                r.map(|_| ()).map_err(os_err("put staged", &path))
            },
            inner.rt.handle(),
        );
        // Note failures early, so later calls refuse at once.
        while let Some(done) = uploads.try_join_next() {
            if let Err(e) = flatten(done) {
                self.state().failed.get_or_insert(std::sync::Arc::new(e));
            }
        }
        Ok(())
    }

    /// [`put`](S3Batch::put) of a block named by `cid`, after checking that
    /// `data` hashes to it; an identity CID is checked and nothing is staged.
    ///
    /// # Errors
    /// [`Error::HashMismatch`], [`Error::UnsupportedHash`] (the batch is
    /// unchanged); as [`put`](S3Batch::put).
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> Result<()> {
        check_block(cid, data)?;
        if is_identity(cid) {
            return Ok(());
        }
        self.put(&Key::from_cid(cid), data)
    }

    /// Adds a delete of `key` (hiding the batch's earlier put of it).
    ///
    /// # Errors
    /// [`Error::BatchFailed`] after an earlier failure.
    pub fn delete(&self, key: &Key) -> Result<()> {
        self.check_failed()?;
        self.state().ops.insert(key.clone(), Op::Delete);
        Ok(())
    }

    /// The block `key` as the batch would leave it: absent after its
    /// delete; the store's copy where the store has the key and the batch
    /// does not replace it (commit keeps it); else the batch's own put.
    ///
    /// # Errors
    /// [`Error::BatchFailed`], [`Error::ObjectStore`].
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        self.check_failed()?;
        let op = self.state().ops.get(key).copied();
        match op {
            Some(Op::Delete) => Ok(None),
            None => self.store.get(key),
            // A put of a present key keeps the stored block at commit.
            Some(Op::Put { replace: false, .. }) if self.store.has(key)? => self.store.get(key),
            Some(Op::Put { obj, .. }) => {
                self.wait_uploads()?;
                let inner = &self.store.inner;
                let path = inner.names.staged(&self.id, obj);
                inner.rt.block_on(async {
                    let got = inner
                        .store
                        .get(&path)
                        .await
                        .map_err(os_err("get staged", &path))?;
                    let bytes = got.bytes().await.map_err(os_err("get staged", &path))?;
                    Ok(Some(bytes.to_vec()))
                })
            }
        }
    }

    /// Whether the batch would leave `key` present.
    ///
    /// # Errors
    /// [`Error::BatchFailed`], [`Error::ObjectStore`].
    pub fn has(&self, key: &Key) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// The size of `key` as the batch would leave it.
    ///
    /// # Errors
    /// [`Error::BatchFailed`], [`Error::ObjectStore`].
    pub fn size(&self, key: &Key) -> Result<Option<u64>> {
        self.check_failed()?;
        let op = self.state().ops.get(key).copied();
        match op {
            Some(Op::Delete) => Ok(None),
            Some(Op::Put { size, replace, .. }) => match replace {
                true => Ok(Some(size)),
                // A put of a present key keeps the stored block at commit.
                false => Ok(Some(self.store.size(key)?.unwrap_or(size))),
            },
            None => self.store.size(key),
        }
    }

    /// Waits for the uploads in flight; the first failure fails the batch.
    fn wait_uploads(&self) -> Result<()> {
        let mut set = std::mem::take(&mut *self.uploads.lock().unwrap_or_else(|e| e.into_inner()));
        let first = self.store.inner.rt.block_on(async move {
            let mut first = None;
            while let Some(done) = set.join_next().await {
                if let Err(e) = flatten(done) {
                    first.get_or_insert(e);
                }
            }
            first
        });
        if let Some(e) = first {
            let e = std::sync::Arc::new(e);
            self.state().failed.get_or_insert(e.clone());
            return Err(Error::BatchFailed { source: e });
        }
        self.check_failed()
    }

    /// Commits the batch: all of it becomes visible, or (after an error
    /// before the commit point, or a crash) none of it.
    ///
    /// # Atomicity
    /// See [`S3Batch`]. An error *after* the commit point (a publish request
    /// failing for good) leaves the batch committed but partly published:
    /// the error says so, and the next read-write open after this handle
    /// is gone (or [`S3Store::recover`] on it) finishes it.
    ///
    /// # Errors
    /// [`Error::BatchFailed`] or the upload's [`Error::ObjectStore`] (the
    /// staging is removed, nothing is published); [`Error::LeaseLost`] (the
    /// batch is not committed); [`Error::ObjectStore`] from the publish.
    pub fn commit(self) -> Result<CommitSummary> {
        let r = self.commit_inner();
        if r.is_err() {
            // Best effort: a record-less staging is removed, a committed one
            // is left for recovery.
            let _ = self.remove_if_uncommitted();
        }
        self.finish();
        r
    }

    fn commit_inner(&self) -> Result<CommitSummary> {
        self.wait_uploads()?;
        let ops: Vec<RecOp> = {
            let st = self.state();
            st.ops
                .iter()
                .map(|(key, op)| match *op {
                    Op::Put { obj, size, replace } => RecOp {
                        kind: if replace { Kind::Replace } else { Kind::Put },
                        key: key.clone(),
                        obj,
                        size,
                    },
                    Op::Delete => RecOp {
                        kind: Kind::Delete,
                        key: key.clone(),
                        obj: 0,
                        size: 0,
                    },
                })
                .collect()
        };
        let inner = &self.store.inner;
        let writer = self.store.writable()?;
        let st = inner.store.as_ref();
        let names = &inner.names;
        let concurrency = inner.options.concurrency;
        if ops.is_empty() {
            inner
                .rt
                .block_on(remove_staging_objects(st, names, concurrency, &self.id))?;
            return Ok(CommitSummary::default());
        }
        let record = encode(&ops);
        inner.rt.block_on(async {
            writer.lease.ensure_fresh(st).await?;
            let path = names.record(&self.id);
            st.put(&path, PutPayload::from(record.into_bytes()))
                .await
                .map_err(os_err("put commit record", &path))?;
            // Committed.
            let summary = publish(st, names, concurrency, &self.id, ops).await?;
            retire(st, names, concurrency, &self.id).await?;
            Ok(summary)
        })
    }

    /// Discards the batch: its staged objects are removed, nothing is
    /// published.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when the removal fails (the next open removes
    /// what is left once this writer is gone).
    pub fn discard(self) -> Result<()> {
        let r = self.remove_if_uncommitted();
        self.finish();
        r
    }

    fn remove_if_uncommitted(&self) -> Result<()> {
        let _ = self.wait_uploads();
        let inner = &self.store.inner;
        let st = inner.store.as_ref();
        inner.rt.block_on(async {
            if head(st, &inner.names.record(&self.id)).await?.is_some() {
                return Ok(());
            }
            remove_staging_objects(st, &inner.names, inner.options.concurrency, &self.id).await
        })
    }

    /// Marks the batch done: its own store's recovery may now handle
    /// whatever it left.
    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.store.active().remove(&self.id);
    }
}

impl Drop for S3Batch {
    fn drop(&mut self) {
        if !self.done.load(Ordering::SeqCst) {
            let _ = self.remove_if_uncommitted();
            self.finish();
        }
    }
}

fn flatten(done: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    match done {
        Ok(r) => r,
        Err(e) => Err(Error::BatchFailed {
            source: std::sync::Arc::new(Error::io(
                "upload",
                ".temp",
                std::io::Error::other(format!("an upload task failed: {e}")),
            )),
        }),
    }
}

fn encode(ops: &[RecOp]) -> String {
    let mut s = String::with_capacity(32 + ops.len() * 80);
    s.push_str(MAGIC);
    s.push('\n');
    for op in ops {
        let _ = match op.kind {
            Kind::Put => writeln!(s, "put {} {} {}", op.key, op.obj, op.size),
            Kind::Replace => writeln!(s, "replace {} {} {}", op.key, op.obj, op.size),
            Kind::Delete => writeln!(s, "delete {}", op.key),
        };
    }
    let _ = writeln!(s, "end {}", ops.len());
    s
}

fn decode(text: &str) -> std::result::Result<Vec<RecOp>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(MAGIC) => {}
        Some(other) if other.starts_with("flatstore-s3-batch ") => {
            return Err(format!("format {other:?} is newer than this version reads"))
        }
        _ => return Err("not a flatstore S3 commit record".into()),
    }
    let mut ops = Vec::new();
    for (i, line) in lines.by_ref().enumerate() {
        let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 2);
        let f: Vec<&str> = line.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad("not a number"));
        let key = |s: &str| Key::new(s).map_err(|_| bad("invalid key"));
        let op = match f[..] {
            ["end", n] => {
                if num(n)? != ops.len() as u64 {
                    return Err(bad("count does not match"));
                }
                return Ok(ops);
            }
            ["put", k, obj, size] | ["replace", k, obj, size] => RecOp {
                kind: if f[0] == "put" {
                    Kind::Put
                } else {
                    Kind::Replace
                },
                key: key(k)?,
                obj: num(obj)?,
                size: num(size)?,
            },
            ["delete", k] => RecOp {
                kind: Kind::Delete,
                key: key(k)?,
                obj: 0,
                size: 0,
            },
            _ => return Err(bad("unknown operation")),
        };
        ops.push(op);
    }
    Err("truncated (no end line)".into())
}

/// Publishes a committed batch's operations, `concurrency` at a time.
/// Idempotent, so that a roll-forward may repeat what a dead writer did.
async fn publish(
    st: &dyn ObjectStore,
    names: &Names,
    concurrency: usize,
    id: &str,
    ops: Vec<RecOp>,
) -> Result<CommitSummary> {
    let results: Vec<Result<CommitSummary>> = stream::iter(ops)
        .map(|op| publish_one(st, names, id, op))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut total = CommitSummary::default();
    for r in results {
        let s = r?;
        total.written += s.written;
        total.already_present += s.already_present;
        total.deleted += s.deleted;
        total.bytes += s.bytes;
    }
    Ok(total)
}

async fn publish_one(
    st: &dyn ObjectStore,
    names: &Names,
    id: &str,
    op: RecOp,
) -> Result<CommitSummary> {
    let target = names.block(&op.key);
    let mut s = CommitSummary::default();
    match op.kind {
        Kind::Delete => {
            if head(st, &target).await?.is_some() {
                match st.delete(&target).await {
                    Ok(()) => s.deleted = 1,
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(os_err("delete", &target)(e)),
                }
            }
        }
        Kind::Put | Kind::Replace => {
            if op.kind == Kind::Put && head(st, &target).await?.is_some() {
                s.already_present = 1;
                return Ok(s);
            }
            let staged = names.staged(id, op.obj);
            match st.copy(&staged, &target).await {
                Ok(()) => {
                    s.written = 1;
                    s.bytes = op.size;
                }
                // Another recoverer of the same batch finished first and
                // removed the staged object: the block is published.
                Err(e) if is_not_found(&e) && head(st, &target).await?.is_some() => {
                    s.already_present = 1;
                }
                Err(e) => return Err(os_err("copy", &staged)(e)),
            }
        }
    }
    Ok(s)
}

/// Removes a published batch: the record first (so that a half-removed
/// staging can never be replayed as a smaller batch), then the rest.
async fn retire(st: &dyn ObjectStore, names: &Names, concurrency: usize, id: &str) -> Result<()> {
    let record = names.record(id);
    match st.delete(&record).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(os_err("delete commit record", &record)(e)),
    }
    remove_staging_objects(st, names, concurrency, id).await
}

/// Removes every object under a batch's staging prefix (bulk deletes where
/// the service has them).
async fn remove_staging_objects(
    st: &dyn ObjectStore,
    names: &Names,
    _concurrency: usize,
    id: &str,
) -> Result<()> {
    let prefix = names.staging(id);
    let locations = st.list(Some(&prefix)).map_ok(|m| m.location).boxed();
    let mut deleted = st.delete_stream(locations);
    while let Some(r) = deleted.next().await {
        match r {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(os_err("delete staged", &prefix)(e)),
        }
    }
    Ok(())
}

/// Rolls a dead writer's committed batch forward and removes it.
pub(crate) async fn replay(
    st: &dyn ObjectStore,
    names: &Names,
    options: &S3Options,
    id: &str,
) -> Result<()> {
    let ops = read_record(st, names, id).await?;
    publish(st, names, options.concurrency, id, ops).await?;
    retire(st, names, options.concurrency, id).await
}

/// Reads and parses a batch's commit record.
///
/// # Errors
/// [`Error::CorruptCommitRecord`] for a record this version cannot read.
pub(crate) async fn read_record(
    st: &dyn ObjectStore,
    names: &Names,
    id: &str,
) -> Result<Vec<RecOp>> {
    let path = names.record(id);
    let got = st
        .get(&path)
        .await
        .map_err(os_err("get commit record", &path))?;
    let bytes = got
        .bytes()
        .await
        .map_err(os_err("get commit record", &path))?;
    let corrupt = |reason: String| Error::CorruptCommitRecord {
        path: path.to_string().into(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8".into()))?;
    decode(text).map_err(corrupt)
}

/// Removes a dead writer's uncommitted batch.
pub(crate) async fn remove_staging(
    st: &dyn ObjectStore,
    names: &Names,
    options: &S3Options,
    id: &str,
) -> Result<()> {
    remove_staging_objects(st, names, options.concurrency, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let k = |s: &str| Key::new(s).unwrap();
        let ops = vec![
            RecOp {
                kind: Kind::Put,
                key: k("CIQA"),
                obj: 0,
                size: 5,
            },
            RecOp {
                kind: Kind::Replace,
                key: k("CIQB"),
                obj: 3,
                size: 0,
            },
            RecOp {
                kind: Kind::Delete,
                key: k("CIQC"),
                obj: 0,
                size: 0,
            },
        ];
        let text = encode(&ops);
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(
            (back[1].kind, back[1].key.as_str(), back[1].obj),
            (Kind::Replace, "CIQB", 3)
        );
        let truncated = &text[..text.len() - "end 3\n".len()];
        assert!(decode(truncated).unwrap_err().contains("truncated"));
        assert!(decode(&text.replace("end 3", "end 2")).is_err());
        assert!(decode(&text.replace("-batch 1", "-batch 2"))
            .unwrap_err()
            .contains("newer"));
        assert!(decode(&text.replace("put CIQA", "put ciq/a")).is_err());
    }
}
