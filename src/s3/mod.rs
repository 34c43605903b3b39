//! The same store on S3-compatible object storage (feature `s3`).
//!
//! [`S3Store`] keeps a store's layout as object keys under a prefix of a
//! bucket, so a local store copied into a bucket with any S3 copy tool opens
//! here, and a bucket copied back to a directory opens as a [`Store`]:
//!
//! ```text
//! PREFIX/SHARDING               the shard function, as in a local store
//! PREFIX/_README                explanation of the layout
//! PREFIX/diskUsage.cache        go-ds-flatfs's counters (see "Counters" below)
//! PREFIX/<SHARD>/<KEY>.data     one block, exactly its bytes
//! PREFIX/.temp/                 leases, batch staging, the capability probe
//! ```
//!
//! ```no_run
//! use flatstore::s3::{S3Options, S3Store};
//! use flatstore::Key;
//!
//! // Endpoint, keys and region come from the usual AWS_* variables
//! // (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//! // AWS_REGION, AWS_ALLOW_HTTP=true for a plain-HTTP local cluster).
//! let store = S3Store::open("s3://my-bucket/blocks", S3Options::default())?;
//! store.put(&Key::new("CIQEXAMPLE")?, b"bytes")?;
//! let batch = store.batch()?;
//! batch.put(&Key::new("CIQOTHER")?, b"more")?;
//! batch.commit()?; // all or nothing, even if this process is killed
//! store.close()?;
//! # Ok::<(), flatstore::Error>(())
//! ```
//!
//! The API is synchronous: each store runs a small Tokio runtime of its own
//! (two worker threads) and blocks on it. It may be called from inside
//! another Tokio runtime too (the request then runs on a helper thread).
//!
//! [`Store`]: crate::Store

mod batch;
mod copy;
mod lease;
mod names;
mod recover;
mod runtime;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cid::Cid;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::block::{check_block, is_identity, PutOutcome};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::layout::readme_text;
use crate::shard::Shard;
use crate::usage::{Accuracy, Stats};

pub use batch::S3Batch;
pub use copy::{copy_from_s3, copy_to_s3};
pub use recover::RecoverySummary;

/// Re-export of the `object_store` crate, whose types
/// [`S3Store::open_with`] and [`S3Options::retry`] take.
pub use object_store;

use lease::Lease;
use names::Names;
use runtime::{is_not_found, os_err, Runtime};

/// How to open an [`S3Store`]. `Default` opens (or creates) a store with the
/// default shard function, a lease of 30 seconds, 16 requests in flight per
/// operation and 64 MiB of batch data in flight.
#[derive(Debug, Clone)]
pub struct S3Options {
    shard: Option<Shard>,
    create: bool,
    read_only: bool,
    lease_ttl: Duration,
    retry: Option<RetryConfig>,
    concurrency: usize,
    in_flight_bytes: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            shard: None,
            create: true,
            read_only: false,
            lease_ttl: Duration::from_secs(30),
            retry: None,
            concurrency: 16,
            in_flight_bytes: 64 << 20,
        }
    }
}

impl S3Options {
    /// The default options.
    pub fn new() -> S3Options {
        S3Options::default()
    }

    /// The shard function of a store being created; for an existing store,
    /// a different one is refused with [`Error::ShardingMismatch`].
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Whether an empty prefix becomes a store (default true).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Open read-only: no lease, no recovery, no writes (default false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The writer lease's time to live (default 30 s, at least 3 s). Another
    /// writer takes this one for dead when its lease has not been rewritten
    /// for this long (plus 2 s): see [`S3Store`], "Concurrency".
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The client's retries with backoff (for [`S3Store::open`]; a store
    /// given to [`S3Store::open_with`] keeps its own). Default: object_store's
    /// (10 retries within 3 minutes, backoff from 100 ms to 15 s), applied to
    /// throttling (429, 503), other 5xx answers and dropped connections.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Requests in flight at once when a batch uploads, publishes or is
    /// cleaned up (default 16, at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Bytes of block data a batch keeps in flight at most (default 64 MiB):
    /// a batch's `put` waits when that much is still being uploaded.
    pub fn in_flight_bytes(mut self, bytes: usize) -> Self {
        self.in_flight_bytes = bytes;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |option, reason: &str| {
            Err(Error::InvalidOption {
                option,
                reason: reason.to_string(),
            })
        };
        if self.lease_ttl < Duration::from_secs(3) {
            return bad("lease_ttl", "must be at least 3 seconds");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.in_flight_bytes < 1024 {
            return bad("in_flight_bytes", "must be at least 1024");
        }
        if let Some(s) = &self.shard {
            s.validate()?;
        }
        Ok(())
    }
}

/// What the object store behind an [`S3Store`] lets it promise, found at
/// open ([`S3Store::capabilities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The service honours a conditional create (`If-None-Match: *`,
    /// object_store's [`PutMode::Create`]): at open, a probe object created
    /// twice was refused the second time. Then a put is one request and
    /// **first writer wins** exactly, as in a local store: among concurrent
    /// writers of a key, one writes and the others find it present.
    ///
    /// Without it (Garage 2.5.0 ignores the condition and overwrites), a put
    /// asks first whether the key is present (a HEAD) and writes only if
    /// not: a present block is never rewritten, but two writers racing on a
    /// key that is absent may both write, and the last write stays. For
    /// content-addressed data written through [`S3Store::put_block`] (hash
    /// checked) both writes carry identical bytes, so the race is harmless;
    /// a key-level [`S3Store::put`] of *different* bytes under one key may
    /// end with either. `None` for a read-only store, which never probes.
    pub conditional_create: Option<bool>,
    /// The store was opened read-only.
    pub read_only: bool,
}

/// A block store on S3-compatible object storage, with the layout and the
/// promises of [`Store`](crate::Store) where the medium allows.
///
/// # Layout
/// See the [module documentation](self): a local store copied into a bucket
/// opens here, and back.
///
/// # Atomicity and durability
/// Every object write is atomic (S3's PUT and server-side copy publish
/// whole objects), so a reader never sees a partial block, and a write
/// that returned is as durable as the service makes it (Garage: on a quorum
/// of its replicas). A [`S3Batch`] is all or nothing across crashes: staged
/// under `.temp/batch-…/`, committed by writing one commit record object,
/// published by server-side copies; an open finishes a dead writer's
/// committed batch and removes an uncommitted one.
///
/// # Concurrency
/// `S3Store` is a cheap `Clone + Send + Sync` handle. Any number of handles,
/// in any number of processes or machines, may open one prefix read-write at
/// once. There is no OS lock on object storage: each read-write handle holds
/// a **lease**, `.temp/lease-<WRITER>`, rewritten every third of its time to
/// live ([`S3Options::lease_ttl`], 30 s by default). An open takes a writer
/// whose lease is absent, or older than its time to live plus 2 seconds (by
/// the service's clock), for dead, and recovers its batches.
///
/// **What a paused writer risks.** A writer stopped (SIGSTOP, a long GC or
/// swap pause, a network partition) for longer than its time to live is
/// taken for dead: another open may remove its uncommitted batch's staged
/// objects, or finish its committed batch (which is harmless: publishing is
/// idempotent). The paused handle finds out: a handle that could not
/// refresh its lease within its time to live, or finds its lease object
/// gone, counts its lease lost for good, and every later `batch` and
/// `commit` fails with [`Error::LeaseLost`]. A commit refreshes the lease
/// just before its commit point, so a batch whose staging may have been
/// removed is never committed. What remains is the window between that
/// refresh and the commit record's write: a pause of a whole time to live
/// inside it can commit a batch whose staged objects are being removed; the
/// publish then fails with a "not found" on a staged object, leaving that
/// batch partly published. Choose a time to live far longer than any pause
/// you expect.
///
/// # First writer wins
/// Depends on the service: see [`Capabilities::conditional_create`].
///
/// # Counters
/// Block count and bytes are not kept as counters: [`stats`](S3Store::stats)
/// lists the store. A read-write open marks `diskUsage.cache`
/// `"initial-approximate"` (keeping its figures), so a store copied back to
/// a directory recounts at its first open instead of trusting figures this
/// backend does not maintain.
///
/// # Errors
/// A request that fails for good, after the client's retries with backoff,
/// is [`Error::ObjectStore`] naming the operation and the object key. Bad
/// input ([`Error::InvalidKey`], [`Error::HashMismatch`]) changes nothing.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Writer {
    token: String,
    lease: Arc<Lease>,
    /// Stops the refresh task, which `refresh` then waits for.
    stop: Arc<tokio::sync::Notify>,
    refresh: tokio::task::JoinHandle<()>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    names: Names,
    location: String,
    options: S3Options,
    caps: Capabilities,
    writer: Option<Writer>,
    /// Numbers this handle's batches.
    batches: AtomicU64,
    /// The ids of this handle's batches that are open (neither committed
    /// nor discarded), which its own [`S3Store::recover`] leaves alone.
    active: Mutex<std::collections::HashSet<String>>,
    recovered: RecoverySummary,
    /// Declared last: dropped after everything that may still use it.
    rt: Runtime,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.inner.location)
            .field("shard", &self.inner.names.shard)
            .field("capabilities", &self.inner.caps)
            .finish()
    }
}

impl S3Store {
    /// Opens the store at `url`, `s3://BUCKET` or `s3://BUCKET/PREFIX`,
    /// with the endpoint, credentials and region of the `AWS_*`
    /// environment variables (object_store's `AmazonS3Builder::from_env`:
    /// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ALLOW_HTTP`, …).
    ///
    /// See [`open_with`](S3Store::open_with) for what an open does.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a URL that is not `s3://BUCKET[/PREFIX]`
    /// or a client that cannot be built from the environment; otherwise as
    /// [`open_with`](S3Store::open_with).
    pub fn open(url: &str, options: S3Options) -> Result<S3Store> {
        let (bucket, prefix) = parse_url(url)?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(retry) = &options.retry {
            builder = builder.with_retry(retry.clone());
        }
        let client = builder.build().map_err(|e| Error::InvalidOption {
            option: "s3 client",
            reason: e.to_string(),
        })?;
        Self::open_at(Arc::new(client), prefix, format!("s3://{bucket}"), options)
    }

    /// Opens the store under `prefix` of any object store (S3, or
    /// object_store's in-memory store, local files, GCS, Azure, …).
    ///
    /// An open reads `SHARDING`. When the prefix holds no object at all
    /// and [`S3Options::create`] is on, it creates the store (`SHARDING`,
    /// `_README`, `diskUsage.cache`). A read-write open then writes its
    /// lease, probes whether the service honours a conditional create
    /// ([`Capabilities`]; two small requests on a probe object, then its
    /// removal) and recovers what dead writers left in `.temp/`
    /// ([`RecoverySummary`], [`S3Store::recovered`]).
    ///
    /// # Errors
    /// - [`Error::NoStore`]: no `SHARDING` and creation is off (or read-only).
    /// - [`Error::NotAStore`]: no `SHARDING`, and the prefix holds objects.
    /// - [`Error::CorruptSharding`], [`Error::ShardingMismatch`].
    /// - [`Error::NeedsRecovery`]: a read-only open found a committed batch
    ///   of a writer whose lease is gone or expired by this machine's clock.
    /// - [`Error::CorruptCommitRecord`]: a dead writer's commit record
    ///   cannot be read; it is left as it is.
    /// - [`Error::InvalidOption`], [`Error::ObjectStore`].
    pub fn open_with(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        options: S3Options,
    ) -> Result<S3Store> {
        let location = store.to_string();
        Self::open_at(store, prefix, location, options)
    }

    fn open_at(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        base: String,
        options: S3Options,
    ) -> Result<S3Store> {
        options.validate()?;
        let parts = Names::parse_prefix(prefix)?;
        let location = if parts.is_empty() {
            base
        } else {
            format!("{base}/{}", parts.join("/"))
        };
        let rt = Runtime::new()?;
        let names = Names::new(parts, options.shard.unwrap_or_default());
        let opened = rt.block_on(open_async(
            store.clone(),
            names.clone(),
            location.clone(),
            options.clone(),
        ))?;
        let writer = opened.lease.map(|(token, lease)| {
            let stop = Arc::new(tokio::sync::Notify::new());
            let refresh = rt.handle().spawn(lease::refresh_loop(
                store.clone(),
                lease.clone(),
                stop.clone(),
            ));
            Writer {
                token,
                lease,
                stop,
                refresh,
            }
        });
        Ok(S3Store {
            inner: Arc::new(Inner {
                store,
                names: Names::new(names_prefix(&names), opened.shard),
                location,
                caps: Capabilities {
                    conditional_create: opened.conditional,
                    read_only: options.read_only,
                },
                options,
                writer,
                batches: AtomicU64::new(0),
                active: Mutex::new(Default::default()),
                recovered: opened.recovered,
                rt,
            }),
        })
    }

    /// `s3://BUCKET/PREFIX` (or the object store's name and the prefix).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The store's shard function (from its `SHARDING`).
    pub fn shard(&self) -> Shard {
        self.inner.names.shard
    }

    /// What the service lets this store promise (found at open).
    pub fn capabilities(&self) -> Capabilities {
        self.inner.caps
    }

    /// What the open's recovery did.
    pub fn recovered(&self) -> RecoverySummary {
        self.inner.recovered
    }

    /// Stores `data` under `key`; says whether it wrote or found the key
    /// present.
    ///
    /// A present key is never rewritten. With a conditional create
    /// ([`Capabilities::conditional_create`]) this is one request and
    /// exactly one of several concurrent writers writes; without, it is a
    /// HEAD then a PUT, and concurrent writers of an absent key may both
    /// write (harmless for identical bytes, see [`Capabilities`]).
    ///
    /// # Atomicity and durability
    /// Readers see the whole block or nothing. On return the block is stored
    /// as durably as the service stores objects.
    ///
    /// # Errors
    /// [`Error::ReadOnly`]; [`Error::ObjectStore`] naming the block's object
    /// key (nothing was written, or the whole block was).
    pub fn put(&self, key: &Key, data: &[u8]) -> Result<PutOutcome> {
        self.writable()?;
        let path = self.inner.names.block(key);
        let payload = PutPayload::from(data.to_vec());
        let inner = &self.inner;
        inner.rt.block_on(put_object(inner, &path, payload))
    }

    /// Reads the block `key`, or `None` if it is absent.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] naming the object key.
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let path = self.inner.names.block(key);
        let store = &self.inner.store;
        self.inner.rt.block_on(async {
            match store.get(&path).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(os_err("get", &path))?;
                    Ok(Some(bytes.to_vec()))
                }
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(os_err("get", &path)(e)),
            }
        })
    }

    /// Reads up to `len` bytes of the block `key` from `offset` with one
    /// ranged GET, clipped to the end of the block (a range past the end
    /// reads as empty); `None` if the block is absent. An empty range, or
    /// one the service refuses as past the end, costs a HEAD instead.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] naming the object key.
    pub fn get_range(&self, key: &Key, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let path = self.inner.names.block(key);
        let store = &self.inner.store;
        self.inner.rt.block_on(async {
            let end = offset.saturating_add(len);
            let first = if len == 0 {
                None
            } else {
                match store.get_range(&path, offset..end).await {
                    Ok(bytes) => return Ok(Some(bytes.to_vec())),
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => Some(e),
                }
            };
            // Empty, or refused (a range starting at or past the end): the
            // block's size tells which.
            match store.head(&path).await {
                Ok(meta) if meta.size <= offset || len == 0 => Ok(Some(Vec::new())),
                Ok(_) => Err(os_err("get range", &path)(first.expect("len > 0"))),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(os_err("head", &path)(e)),
            }
        })
    }

    /// Whether the block `key` is present (one HEAD).
    ///
    /// # Errors
    /// [`Error::ObjectStore`] naming the object key.
    pub fn has(&self, key: &Key) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// The size of the block `key`, or `None` if it is absent (one HEAD).
    ///
    /// # Errors
    /// [`Error::ObjectStore`] naming the object key.
    pub fn size(&self, key: &Key) -> Result<Option<u64>> {
        let path = self.inner.names.block(key);
        let store = &self.inner.store;
        self.inner
            .rt
            .block_on(async { head(store.as_ref(), &path).await })
            .map(|m| m.map(|m| m.size))
    }

    /// Deletes the block `key`; says whether it was present (a HEAD, then a
    /// DELETE if it was). Deleting an absent key succeeds.
    ///
    /// # Errors
    /// [`Error::ReadOnly`]; [`Error::ObjectStore`] naming the object key.
    pub fn delete(&self, key: &Key) -> Result<bool> {
        self.writable()?;
        let path = self.inner.names.block(key);
        let store = &self.inner.store;
        self.inner.rt.block_on(async {
            if head(store.as_ref(), &path).await?.is_none() {
                return Ok(false);
            }
            match store.delete(&path).await {
                Ok(()) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(os_err("delete", &path)(e)),
            }
        })
    }

    /// Every block's key, streamed from the service's listing one page
    /// (1,000 objects) at a time, never the whole store in memory. Objects
    /// that are not blocks (metadata, `.temp/`, foreign or misplaced
    /// objects) are skipped.
    ///
    /// # Errors
    /// An item is [`Error::ObjectStore`] when a listing request fails for
    /// good; the iteration ends after it.
    pub fn keys(&self) -> S3Keys {
        S3Keys(self.entries())
    }

    /// Every block's key and size, streamed like [`keys`](S3Store::keys).
    pub fn entries(&self) -> S3Entries {
        let root = self.inner.names.root();
        let stream = self.inner.store.list(root.as_ref());
        S3Entries {
            inner: self.inner.clone(),
            stream: Some(stream),
        }
    }

    /// Block count and bytes, counted by listing the store (a request per
    /// 1,000 objects). `accuracy` is `Exact` for a listing that met no
    /// concurrent change; changes made during it may or may not be counted.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when a listing request fails for good.
    pub fn stats(&self) -> Result<Stats> {
        let (mut blocks, mut bytes) = (0u64, 0u64);
        for entry in self.entries() {
            let (_, size) = entry?;
            blocks += 1;
            bytes += size;
        }
        Ok(Stats {
            blocks,
            bytes,
            accuracy: Accuracy::Exact,
        })
    }

    /// Starts a batch (see [`S3Batch`]).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], or [`Error::LeaseLost`] when this handle's lease
    /// is gone.
    pub fn batch(&self) -> Result<S3Batch> {
        let writer = self.writable()?;
        if writer.lease.is_lost() {
            return Err(Error::LeaseLost {
                lease: writer.lease.path.to_string(),
            });
        }
        let n = self.inner.batches.fetch_add(1, Ordering::Relaxed);
        let id = format!("batch-{}-{n}", writer.token);
        self.active().insert(id.clone());
        Ok(S3Batch::new(self.clone(), id))
    }

    /// Recovers what dead writers (and this handle's own batches that are
    /// no longer open) left in `.temp/`, as an open does: finishes committed
    /// batches, removes uncommitted ones, removes dead writers' leases.
    /// Live writers' work is left alone.
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::LeaseLost`], [`Error::CorruptCommitRecord`]
    /// (that batch is left as it is), [`Error::ObjectStore`].
    pub fn recover(&self) -> Result<RecoverySummary> {
        let writer = self.writable()?;
        let inner = &self.inner;
        let active: Vec<String> = self.active().iter().cloned().collect();
        inner.rt.block_on(async {
            // The service's time, from this handle's freshly written lease.
            writer.lease.refresh(inner.store.as_ref()).await?;
            let meta = inner
                .store
                .head(&writer.lease.path)
                .await
                .map_err(os_err("head lease", &writer.lease.path))?;
            let now = SystemTime::from(meta.last_modified);
            recover::recover(
                inner.store.as_ref(),
                &inner.names,
                &inner.options,
                &writer.token,
                now,
                &active,
            )
            .await
        })
    }

    // --- CID level ---------------------------------------------------------

    /// Stores the block `data` named by `cid`, after checking that it hashes
    /// to the CID's multihash; an identity CID is checked and nothing is
    /// written. Otherwise as [`put`](S3Store::put).
    ///
    /// # Errors
    /// [`Error::HashMismatch`], [`Error::UnsupportedHash`] (nothing is
    /// written); as [`put`](S3Store::put).
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome> {
        check_block(cid, data)?;
        if is_identity(cid) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        self.put(&Key::from_cid(cid), data)
    }

    /// Reads the block `cid` names, checked against the CID's multihash when
    /// the function is supported (a corrupt object is never served as the
    /// block); `None` if absent. An identity CID gives its digest.
    ///
    /// # Errors
    /// [`Error::HashMismatch`] for a corrupt object; [`Error::ObjectStore`].
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        if is_identity(cid) {
            return Ok(Some(cid.hash().digest().to_vec()));
        }
        let data = self.get(&Key::from_cid(cid))?;
        if let Some(d) = &data {
            match check_block(cid, d) {
                Ok(()) | Err(Error::UnsupportedHash { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(data)
    }

    /// Whether the block `cid` names is present (always, for identity).
    ///
    /// # Errors
    /// [`Error::ObjectStore`].
    pub fn has_block(&self, cid: &Cid) -> Result<bool> {
        if is_identity(cid) {
            return Ok(true);
        }
        self.has(&Key::from_cid(cid))
    }

    /// Deletes the block `cid` names (never, for identity).
    ///
    /// # Errors
    /// As [`delete`](S3Store::delete).
    pub fn delete_block(&self, cid: &Cid) -> Result<bool> {
        if is_identity(cid) {
            return Ok(false);
        }
        self.delete(&Key::from_cid(cid))
    }

    /// Closes this handle. The last handle (no clones, no batches left)
    /// stops the lease refresh and removes the lease, so other writers need
    /// not wait for it to expire; dropping does the same, best effort.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when the lease cannot be removed (it then
    /// expires after its time to live).
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => inner.release(),
            Err(_) => Ok(()),
        }
    }

    // --- internals ---------------------------------------------------------

    fn writable(&self) -> Result<&Writer> {
        self.inner.writer.as_ref().ok_or(Error::ReadOnly)
    }

    fn active(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Stops the lease and removes it (once).
    fn release(&mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        // Let a refresh in flight finish first, so it cannot write the
        // lease again after its removal.
        w.stop.notify_one();
        let store = &self.store;
        self.rt.block_on(async {
            let _ = w.refresh.await;
            // Checked with a HEAD and repeated while the lease is still
            // listed: against Garage, a lease was seen listed after a
            // DELETE of it had returned.
            for _ in 0..3 {
                match store.delete(&w.lease.path).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(os_err("delete lease", &w.lease.path)(e)),
                }
                if head(store.as_ref(), &w.lease.path).await?.is_none() {
                    return Ok(());
                }
            }
            Ok(())
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Iterator of [`S3Store::keys`].
pub struct S3Keys(S3Entries);

impl Iterator for S3Keys {
    type Item = Result<Key>;
    fn next(&mut self) -> Option<Result<Key>> {
        self.0.next().map(|r| r.map(|(k, _)| k))
    }
}

impl fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Keys")
    }
}

/// Iterator of [`S3Store::entries`]: keys with sizes.
pub struct S3Entries {
    inner: Arc<Inner>,
    stream: Option<BoxStream<'static, object_store::Result<ObjectMeta>>>,
}

impl fmt::Debug for S3Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Entries")
    }
}

impl Iterator for S3Entries {
    type Item = Result<(Key, u64)>;
    fn next(&mut self) -> Option<Result<(Key, u64)>> {
        loop {
            let stream = self.stream.as_mut()?;
            match self.inner.rt.block_on(stream.next()) {
                None => {
                    self.stream = None;
                    return None;
                }
                Some(Err(e)) => {
                    self.stream = None;
                    let at = self.inner.names.root().unwrap_or_default();
                    return Some(Err(os_err("list", &at)(e)));
                }
                Some(Ok(meta)) => {
                    if let Some(key) = self.inner.names.block_key(&meta.location) {
                        return Some(Ok((key, meta.size)));
                    }
                }
            }
        }
    }
}

// --- helpers shared by the store, its batches and recovery ---------------------

/// HEAD: the object's metadata, or `None` if absent.
async fn head(store: &dyn ObjectStore, path: &Path) -> Result<Option<ObjectMeta>> {
    match store.head(path).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(os_err("head", path)(e)),
    }
}

/// A first-writer-wins put of one object, with the store's capability.
async fn put_object(inner: &Inner, path: &Path, payload: PutPayload) -> Result<PutOutcome> {
    let store = inner.store.as_ref();
    if inner.caps.conditional_create == Some(true) {
        return match store
            .put_opts(path, payload, PutOptions::from(PutMode::Create))
            .await
        {
            Ok(_) => Ok(PutOutcome::Written),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::AlreadyPresent),
            Err(e) => Err(os_err("put", path)(e)),
        };
    }
    if head(store, path).await?.is_some() {
        return Ok(PutOutcome::AlreadyPresent);
    }
    store
        .put(path, payload)
        .await
        .map_err(os_err("put", path))?;
    Ok(PutOutcome::Written)
}

fn names_prefix(names: &Names) -> Vec<String> {
    let p = names.prefix_str();
    if p.is_empty() {
        Vec::new()
    } else {
        p.split('/').map(str::to_string).collect()
    }
}

/// `s3://BUCKET[/PREFIX]` → (BUCKET, PREFIX).
fn parse_url(url: &str) -> Result<(&str, &str)> {
    let bad = |reason: &str| Error::InvalidOption {
        option: "s3 url",
        reason: format!("{url:?}: {reason}"),
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("expected s3://BUCKET or s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        return Err(bad("a bucket name is 3 to 63 of a-z 0-9 - ."));
    }
    Ok((bucket, prefix))
}

struct Opened {
    shard: Shard,
    conditional: Option<bool>,
    lease: Option<(String, Arc<Lease>)>,
    recovered: RecoverySummary,
}

async fn open_async(
    store: Arc<dyn ObjectStore>,
    names: Names,
    location: String,
    options: S3Options,
) -> Result<Opened> {
    let st = store.as_ref();
    let shard = match read_sharding(st, &names, &location).await? {
        Some(existing) => {
            if let Some(requested) = options.shard {
                if requested != existing {
                    return Err(Error::ShardingMismatch {
                        existing,
                        requested,
                    });
                }
            }
            existing
        }
        None => {
            if options.read_only || !options.create {
                return Err(Error::NoStore {
                    path: location.clone().into(),
                });
            }
            let root = names.root();
            if let Some(first) = st.list(root.as_ref()).next().await {
                first.map_err(os_err("list", &root.unwrap_or_default()))?;
                return Err(Error::NotAStore {
                    path: location.clone().into(),
                });
            }
            create(st, &names).await?;
            // Another creator may have raced this one: what is stored wins.
            read_sharding(st, &names, &location)
                .await?
                .ok_or_else(|| Error::NoStore {
                    path: location.clone().into(),
                })?
        }
    };
    let names = Names::new(names_prefix(&names), shard);
    if options.read_only {
        recover::check_read_only(st, &names, &options, &location).await?;
        return Ok(Opened {
            shard,
            conditional: None,
            lease: None,
            recovered: RecoverySummary::default(),
        });
    }
    let token = lease::unique_token();
    let (lease, now) = Lease::acquire(st, names.lease(&token), options.lease_ttl).await?;
    let conditional = probe(st, &names.probe(&token)).await?;
    mark_counters_approximate(st, &names).await?;
    let recovered = recover::recover(st, &names, &options, &token, now, &[]).await?;
    Ok(Opened {
        shard,
        conditional: Some(conditional),
        lease: Some((token, lease)),
        recovered,
    })
}

async fn read_sharding(
    st: &dyn ObjectStore,
    names: &Names,
    location: &str,
) -> Result<Option<Shard>> {
    let path = names.sharding();
    let bytes = match st.get(&path).await {
        Ok(got) => got.bytes().await.map_err(os_err("get", &path))?,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(os_err("get", &path)(e)),
    };
    let corrupt = |reason: String| Error::CorruptSharding {
        path: format!("{location}/SHARDING").into(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8".into()))?;
    Shard::parse_file(text).map(Some).map_err(corrupt)
}

async fn create(st: &dyn ObjectStore, names: &Names) -> Result<()> {
    let shard = names.shard;
    let files = [
        (names.sharding(), shard.sharding_file()),
        (names.readme(), readme_text(&shard)),
        (
            names.disk_usage(),
            "{\"diskUsage\":0,\"accuracy\":\"initial-approximate\"}".to_string(),
        ),
    ];
    for (path, text) in files {
        // The shard function is created if absent, never replaced, where
        // the service honours it; elsewhere the race is between creators
        // asking for the same prefix at the same instant.
        match st
            .put_opts(
                &path,
                PutPayload::from(text.into_bytes()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(object_store::Error::NotImplemented { .. })
            | Err(object_store::Error::NotSupported { .. }) => {
                return Err(Error::InvalidOption {
                    option: "object store",
                    reason: "it implements no create-if-absent put (PutMode::Create) at all".into(),
                })
            }
            Err(e) => return Err(os_err("put", &path)(e)),
        }
    }
    Ok(())
}

/// Whether the service refuses a second conditional create of one object.
async fn probe(st: &dyn ObjectStore, path: &Path) -> Result<bool> {
    let create = || PutOptions::from(PutMode::Create);
    let first = st
        .put_opts(path, PutPayload::from_static(b"1"), create())
        .await;
    let supported = match first {
        Err(object_store::Error::NotImplemented { .. })
        | Err(object_store::Error::NotSupported { .. }) => return Ok(false),
        Err(object_store::Error::AlreadyExists { .. }) => true,
        Err(e) => return Err(os_err("put probe", path)(e)),
        Ok(_) => match st
            .put_opts(path, PutPayload::from_static(b"2"), create())
            .await
        {
            Ok(_) => false,
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => true,
            Err(e) => return Err(os_err("put probe", path)(e)),
        },
    };
    match st.delete(path).await {
        Ok(()) => Ok(supported),
        Err(e) if is_not_found(&e) => Ok(supported),
        Err(e) => Err(os_err("delete probe", path)(e)),
    }
}

/// Rewrites an "initial-exact" `diskUsage.cache` as "initial-approximate",
/// keeping its figures (see [`S3Store`], "Counters").
async fn mark_counters_approximate(st: &dyn ObjectStore, names: &Names) -> Result<()> {
    let path = names.disk_usage();
    let bytes = match st.get(&path).await {
        Ok(got) => got.bytes().await.map_err(os_err("get", &path))?,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(os_err("get", &path)(e)),
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(()); // unreadable counts as stale already
    };
    if v.get("accuracy").and_then(|a| a.as_str()) != Some("initial-exact") {
        return Ok(());
    }
    v["accuracy"] = serde_json::Value::from("initial-approximate");
    st.put(&path, PutPayload::from(v.to_string().into_bytes()))
        .await
        .map_err(os_err("put", &path))?;
    Ok(())
}
