//! Writer leases: how writers in different processes (or machines) tell a
//! live writer's staged batches from a dead one's, with no OS lock.
//!
//! Each read-write handle writes `.temp/lease-<WRITER>` when it opens and
//! rewrites it every third of its time to live from a background task.
//! Another writer's open takes a lease for dead when the lease object is
//! absent, or when its last write (the object's `Last-Modified`, the
//! service's clock) is older than its time to live plus [`SLACK`], measured
//! against the `Last-Modified` of the opener's own freshly written lease: both
//! times come from the service, so the writers' clocks never matter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::s3::runtime::{is_not_found, os_err};

/// Added to a lease's time to live before it counts as expired: the
/// service's `Last-Modified` has a resolution of one second.
pub(crate) const SLACK: Duration = Duration::from_secs(2);

/// What a lease object says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseInfo {
    /// When it was last written, by the service's clock.
    pub(crate) written: SystemTime,
    pub(crate) ttl: Duration,
}

impl LeaseInfo {
    /// Whether the lease had expired at `now` (the service's clock).
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        self.written + self.ttl + SLACK < now
    }
}

fn body(ttl: Duration) -> PutPayload {
    let text = format!(
        "{{\"ttl_ms\":{},\"pid\":{}}}\n",
        ttl.as_millis(),
        std::process::id()
    );
    PutPayload::from(text.into_bytes())
}

/// Reads another writer's lease: `None` if absent. A lease whose body cannot
/// be parsed counts with `fallback_ttl`.
pub(crate) async fn read(
    store: &dyn ObjectStore,
    path: &Path,
    fallback_ttl: Duration,
) -> Result<Option<LeaseInfo>> {
    let got = match store.get(path).await {
        Ok(g) => g,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(os_err("get lease", path)(e)),
    };
    let written = SystemTime::from(got.meta.last_modified);
    let bytes = got.bytes().await.map_err(os_err("get lease", path))?;
    let ttl = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("ttl_ms")?.as_u64())
        .map(Duration::from_millis)
        .unwrap_or(fallback_ttl);
    Ok(Some(LeaseInfo { written, ttl }))
}

/// This handle's own lease.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) path: Path,
    ttl: Duration,
    /// When the last refresh succeeded (this machine's monotonic clock).
    last_ok: Mutex<Instant>,
    /// Set when a refresh found the lease object gone: another writer took
    /// this one for dead.
    lost: AtomicBool,
}

impl Lease {
    /// Writes the lease and returns it with the service's time of that write.
    pub(crate) async fn acquire(
        store: &dyn ObjectStore,
        path: Path,
        ttl: Duration,
    ) -> Result<(Arc<Lease>, SystemTime)> {
        let started = Instant::now();
        store
            .put(&path, body(ttl))
            .await
            .map_err(os_err("put lease", &path))?;
        let meta = store
            .head(&path)
            .await
            .map_err(os_err("head lease", &path))?;
        let lease = Lease {
            path,
            ttl,
            last_ok: Mutex::new(started),
            lost: AtomicBool::new(false),
        };
        Ok((Arc::new(lease), SystemTime::from(meta.last_modified)))
    }

    /// Rewrites the lease, unless it is gone (then it is marked lost and
    /// stays so).
    ///
    /// A lease whose last successful refresh is a whole time to live old is
    /// lost too, even if its object is still there: another writer may
    /// already have taken this one for dead and be removing its batches, so
    /// rewriting the lease would hide that.
    pub(crate) async fn refresh(&self, store: &dyn ObjectStore) -> Result<()> {
        if self.age() >= self.ttl {
            self.lost.store(true, Ordering::SeqCst);
        }
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error());
        }
        let started = Instant::now();
        match store.head(&self.path).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                self.lost.store(true, Ordering::SeqCst);
                return Err(self.lost_error());
            }
            Err(e) => return Err(os_err("head lease", &self.path)(e)),
        }
        store
            .put(&self.path, body(self.ttl))
            .await
            .map_err(os_err("put lease", &self.path))?;
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = started;
        Ok(())
    }

    /// The check a batch makes just before its commit point: refreshes the
    /// lease now (a HEAD and a PUT) and fails with [`Error::LeaseLost`] if
    /// its object is gone, or if its last successful refresh was a whole
    /// time to live ago (see [`refresh`](Lease::refresh)). Any other failure
    /// to refresh is returned as it is.
    pub(crate) async fn ensure_fresh(&self, store: &dyn ObjectStore) -> Result<()> {
        self.refresh(store).await
    }

    fn age(&self) -> Duration {
        self.last_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn lost_error(&self) -> Error {
        Error::LeaseLost {
            lease: self.path.to_string(),
        }
    }
}

/// Refreshes `lease` every third of its time to live until `stop` is
/// notified or the lease is lost. A failed refresh is retried at the next
/// tick (the client has already retried with backoff). A stop never cuts a
/// refresh short: the handle that closes waits for this task to end, so no
/// refresh still in flight can write the lease again after its removal.
pub(crate) async fn refresh_loop(
    store: Arc<dyn ObjectStore>,
    lease: Arc<Lease>,
    stop: Arc<tokio::sync::Notify>,
) {
    use futures_util::future::{select, Either};
    let period = (lease.ttl() / 3).max(Duration::from_millis(100));
    loop {
        let tick = Box::pin(tokio::time::sleep(period));
        let stopped = Box::pin(stop.notified());
        if let Either::Right(_) = select(tick, stopped).await {
            return;
        }
        if lease.refresh(store.as_ref()).await.is_err() && lease.is_lost() {
            return;
        }
    }
}

/// A token unique to one writer: 16 hex digits from the time, the process
/// id, a counter and the standard library's per-process random hash keys.
pub(crate) fn unique_token() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}
