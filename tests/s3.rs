//! The S3 backend (feature `s3`) against a real three-node Garage cluster on
//! loopback (`tests/support/garage.rs`), and against object_store's
//! in-memory store, which honours conditional creates where Garage does not.
//!
//! Without a garage binary the Garage tests print SKIPPED; with
//! `FLATSTORE_REQUIRE_GARAGE=1` (as CI runs them) they fail instead.
//! The Garage tests run one at a time (each starts its own cluster).
#![cfg(feature = "s3")]

mod common;
#[path = "support/garage.rs"]
mod garage;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use flatstore::cid::Cid;
use flatstore::s3::object_store::memory::InMemory;
use flatstore::s3::object_store::path::Path as ObjPath;
use flatstore::s3::object_store::{
    self as os, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use flatstore::s3::{S3Options, S3Store};
use flatstore::{Error, Key, Options, PutOutcome, Store};
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};

use common::{block, child, key_of};
use garage::Cluster;

/// One Garage cluster at a time: each takes both cores while it starts.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// --- a request-counting object store ---------------------------------------------

/// Counts the requests made through it, by kind.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    pending_deletes: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Counting {
    fn new(inner: Arc<dyn ObjectStore>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            counts: Mutex::new(BTreeMap::new()),
            pending_deletes: Mutex::new(Vec::new()),
        })
    }
    fn count(&self, kind: &'static str) {
        *self.counts.lock().unwrap().entry(kind).or_default() += 1;
    }
    /// Requests so far, by kind (`delete_stream` calls, and the objects they deleted).
    fn take(&self) -> BTreeMap<&'static str, u64> {
        let mut c = std::mem::take(&mut *self.counts.lock().unwrap());
        let d: u64 = std::mem::take(&mut *self.pending_deletes.lock().unwrap())
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum();
        if d > 0 {
            c.insert("deleted objects", d);
        }
        c
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> os::Result<PutResult> {
        self.count("put");
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> os::Result<Box<dyn MultipartUpload>> {
        self.count("multipart");
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> os::Result<GetResult> {
        self.count(if options.head { "head" } else { "get" });
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, os::Result<ObjPath>>,
    ) -> BoxStream<'static, os::Result<ObjPath>> {
        // Counted per object deleted (S3 deletes up to 1,000 in one request).
        self.count("delete_stream");
        let n = Arc::new(AtomicU64::new(0));
        let counted = n.clone();
        let out = self.inner.delete_stream(
            locations
                .inspect(move |_| {
                    counted.fetch_add(1, Ordering::SeqCst);
                })
                .boxed(),
        );
        self.pending_deletes.lock().unwrap().push(n);
        out
    }
    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, os::Result<ObjectMeta>> {
        self.count("list");
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> os::Result<ListResult> {
        self.count("list");
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: os::CopyOptions,
    ) -> os::Result<()> {
        self.count("copy");
        self.inner.copy_opts(from, to, options).await
    }
}

// --- helpers ---------------------------------------------------------------------

/// Every object key under `prefix/`, relative to it.
fn objects(client: &dyn ObjectStore, prefix: &str) -> BTreeSet<String> {
    let p = ObjPath::from(prefix);
    rt().block_on(async {
        client
            .list(Some(&p))
            .map_ok(|m| m.location.as_ref()[prefix.len() + 1..].to_string())
            .try_collect()
            .await
            .unwrap()
    })
}

fn temp_batches(client: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    objects(client, prefix)
        .into_iter()
        .filter(|o| o.starts_with(".temp/batch-"))
        .collect()
}

fn put_raw(client: &dyn ObjectStore, path: &str, data: &[u8]) {
    rt().block_on(client.put(&ObjPath::from(path), PutPayload::from(data.to_vec())))
        .unwrap();
}

fn sha256_cid(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, key_of(data).to_multihash().unwrap())
}

/// `n` blocks of batch `i` (distinct across batches).
fn batch_blocks(i: u64, n: u64) -> Vec<(Key, Vec<u8>)> {
    (0..n)
        .map(|j| {
            let data = block(i * 1000 + j + 1, 512 + (j as usize * 97) % 3000);
            (key_of(&data), data)
        })
        .collect()
}

fn all_keys(store: &S3Store) -> BTreeSet<Key> {
    store.keys().map(|k| k.unwrap()).collect()
}

// --- behaviour, on any object store -----------------------------------------------

/// Single operations; `client` is the store under test.
fn single_operations(client: Arc<dyn ObjectStore>, prefix: &str) {
    let counting = Counting::new(client.clone());
    let store = S3Store::open_with(counting.clone(), prefix, S3Options::new()).unwrap();
    let caps = store.capabilities();
    assert!(caps.conditional_create.is_some());
    // The layout: the metadata objects of a new store, no probe left.
    let objs = objects(client.as_ref(), prefix);
    for o in ["SHARDING", "_README", "diskUsage.cache"] {
        assert!(objs.contains(o), "{o} missing: {objs:?}");
    }
    assert!(!objs.iter().any(|o| o.contains("probe-")), "{objs:?}");
    assert!(
        objs.iter().any(|o| o.starts_with(".temp/lease-")),
        "{objs:?}"
    );

    let data = block(1, 5000);
    let key = key_of(&data);
    counting.take();
    assert_eq!(store.put(&key, &data).unwrap(), PutOutcome::Written);
    let put_requests = counting.take();
    assert!(objs_contains(
        client.as_ref(),
        prefix,
        &format!("{}/{key}.data", store.shard().dir(&key))
    ));
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&data[..]));
    assert!(store.has(&key).unwrap());
    assert_eq!(store.size(&key).unwrap(), Some(5000));
    // Ranges: inside, clipped at the end, past the end, empty.
    assert_eq!(
        store.get_range(&key, 10, 20).unwrap().unwrap(),
        &data[10..30]
    );
    assert_eq!(
        store.get_range(&key, 4990, 100).unwrap().unwrap(),
        &data[4990..]
    );
    assert_eq!(store.get_range(&key, 5000, 10).unwrap().unwrap(), b"");
    assert_eq!(store.get_range(&key, 9000, 10).unwrap().unwrap(), b"");
    assert_eq!(store.get_range(&key, 3, 0).unwrap().unwrap(), b"");
    let absent = key_of(b"absent");
    assert_eq!(store.get(&absent).unwrap(), None);
    assert_eq!(store.get_range(&absent, 0, 10).unwrap(), None);
    assert!(!store.has(&absent).unwrap());
    assert_eq!(store.size(&absent).unwrap(), None);

    // First writer wins for sequential writers on every service: the
    // second put finds the key and keeps the first bytes.
    assert_eq!(
        store.put(&key, b"other bytes").unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(store.get(&key).unwrap().as_deref(), Some(&data[..]));

    // An empty block.
    let empty = key_of(b"");
    store.put(&empty, b"").unwrap();
    assert_eq!(store.get(&empty).unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(store.get_range(&empty, 0, 10).unwrap().unwrap(), b"");

    // CID level: checked on the way in and out.
    let raw = block(2, 300);
    let cid = sha256_cid(&raw);
    assert!(matches!(
        store.put_block(&cid, b"not it"),
        Err(Error::HashMismatch { .. })
    ));
    assert!(!store.has_block(&cid).unwrap());
    store.put_block(&cid, &raw).unwrap();
    assert_eq!(store.get_block(&cid).unwrap().as_deref(), Some(&raw[..]));
    // A corrupt object under a CID's key is never served as the block.
    let bad = block(3, 100);
    let bad_cid = sha256_cid(&bad);
    store.put(&Key::from_cid(&bad_cid), b"corrupt").unwrap();
    assert!(matches!(
        store.get_block(&bad_cid),
        Err(Error::HashMismatch { .. })
    ));

    // Listing: blocks only, foreign objects and .temp skipped.
    put_raw(
        client.as_ref(),
        &format!("{prefix}/XX/not-a-block.txt"),
        b"x",
    );
    put_raw(
        client.as_ref(),
        &format!("{prefix}/ZZ/{key}.data"),
        b"misplaced",
    );
    let keys = all_keys(&store);
    let expect: BTreeSet<Key> = [
        key.clone(),
        empty.clone(),
        Key::from_cid(&cid),
        Key::from_cid(&bad_cid),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expect);
    let sizes: BTreeMap<Key, u64> = store.entries().map(|e| e.unwrap()).collect();
    assert_eq!(sizes[&key], 5000);
    let stats = store.stats().unwrap();
    assert_eq!((stats.blocks, stats.bytes), (4, 5000 + 300 + 7));

    // Delete: reports presence, idempotent.
    assert!(store.delete(&key).unwrap());
    assert!(!store.delete(&key).unwrap());
    assert_eq!(store.get(&key).unwrap(), None);

    // Bad input is a typed error.
    assert!(matches!(
        Key::new("lower/case"),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        S3Store::open_with(client.clone(), "a//b", S3Options::new()),
        Err(Error::InvalidOption { .. })
    ));
    assert!(matches!(
        S3Store::open_with(
            client.clone(),
            prefix,
            S3Options::new().shard(flatstore::Shard::Prefix(3))
        ),
        Err(Error::ShardingMismatch { .. })
    ));
    assert!(matches!(
        S3Store::open_with(
            client.clone(),
            &format!("{prefix}-none"),
            S3Options::new().create(false)
        ),
        Err(Error::NoStore { .. })
    ));
    put_raw(client.as_ref(), &format!("{prefix}-foreign/file"), b"x");
    assert!(matches!(
        S3Store::open_with(
            client.clone(),
            &format!("{prefix}-foreign"),
            S3Options::new()
        ),
        Err(Error::NotAStore { .. })
    ));
    assert_eq!(
        objects(client.as_ref(), &format!("{prefix}-foreign")).len(),
        1
    );

    // Read-only: reads work, writes are refused.
    let ro = S3Store::open_with(client.clone(), prefix, S3Options::new().read_only(true)).unwrap();
    assert_eq!(ro.get(&empty).unwrap().as_deref(), Some(&b""[..]));
    assert!(matches!(ro.put(&absent, b"x"), Err(Error::ReadOnly)));
    assert!(matches!(ro.batch(), Err(Error::ReadOnly)));
    ro.close().unwrap();

    // Closing removes the lease.
    store.close().unwrap();
    let objs = objects(client.as_ref(), prefix);
    assert!(!objs.iter().any(|o| o.starts_with(".temp/")), "{objs:?}");
    eprintln!("requests for one new block's put: {put_requests:?}");
}

fn objs_contains(client: &dyn ObjectStore, prefix: &str, rel: &str) -> bool {
    objects(client, prefix).contains(rel)
}

/// A batch: invisible before commit, all visible after, nothing staged left.
fn batch_semantics(client: Arc<dyn ObjectStore>, prefix: &str) {
    let counting = Counting::new(client.clone());
    let store = S3Store::open_with(counting.clone(), prefix, S3Options::new()).unwrap();
    let kept = block(10, 100);
    let kept_key = key_of(&kept);
    let doomed = block(11, 100);
    let doomed_key = key_of(&doomed);
    store.put(&kept_key, &kept).unwrap();
    store.put(&doomed_key, &doomed).unwrap();

    let blocks = batch_blocks(1, 50);
    counting.take();
    let batch = store.batch().unwrap();
    for (k, d) in &blocks {
        batch.put(k, d).unwrap();
    }
    batch
        .put(&kept_key, b"ignored: already in the store")
        .unwrap();
    batch.delete(&doomed_key).unwrap();
    // put A, delete A, put A=2 ends with A=2; the first put of a key wins.
    let a = Key::new("CIQAAAA").unwrap();
    batch.put(&a, b"one").unwrap();
    batch.put(&a, b"ignored").unwrap();
    batch.delete(&a).unwrap();
    batch.put(&a, b"two").unwrap();
    // The batch sees its own writes; the store does not.
    assert_eq!(
        batch.get(&blocks[0].0).unwrap().as_deref(),
        Some(&blocks[0].1[..])
    );
    assert_eq!(batch.get(&a).unwrap().as_deref(), Some(&b"two"[..]));
    assert!(!batch.has(&doomed_key).unwrap());
    assert_eq!(batch.size(&kept_key).unwrap(), Some(100));
    assert_eq!(store.get(&blocks[0].0).unwrap(), None);
    assert!(store.has(&doomed_key).unwrap());
    let before_commit = counting.take();
    assert_eq!(all_keys(&store).len(), 2);
    counting.take();
    let summary = batch.commit().unwrap();
    let requests = counting.take();
    assert_eq!(summary.written, 51);
    assert_eq!(summary.already_present, 1);
    assert_eq!(summary.deleted, 1);
    for (k, d) in &blocks {
        assert_eq!(store.get(k).unwrap().as_deref(), Some(&d[..]));
    }
    assert_eq!(store.get(&a).unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(store.get(&kept_key).unwrap().as_deref(), Some(&kept[..]));
    assert!(!store.has(&doomed_key).unwrap());
    assert!(temp_batches(client.as_ref(), prefix).is_empty());

    // A replace of a stored block: delete then put in one batch.
    let batch = store.batch().unwrap();
    batch.delete(&a).unwrap();
    batch.put(&a, b"three").unwrap();
    batch.commit().unwrap();
    assert_eq!(store.get(&a).unwrap().as_deref(), Some(&b"three"[..]));

    // Discard and drop publish nothing and leave nothing staged.
    let more = batch_blocks(2, 10);
    let batch = store.batch().unwrap();
    for (k, d) in &more {
        batch.put(k, d).unwrap();
    }
    batch.discard().unwrap();
    let batch = store.batch().unwrap();
    for (k, d) in &more {
        batch.put(k, d).unwrap();
    }
    drop(batch);
    for (k, _) in &more {
        assert!(!store.has(k).unwrap());
    }
    assert!(temp_batches(client.as_ref(), prefix).is_empty());
    // A hash-checked batch put refuses bad data and changes nothing.
    let batch = store.batch().unwrap();
    let raw = block(12, 64);
    assert!(matches!(
        batch.put_block(&sha256_cid(&raw), b"bad"),
        Err(Error::HashMismatch { .. })
    ));
    batch.put_block(&sha256_cid(&raw), &raw).unwrap();
    assert_eq!(batch.commit().unwrap().written, 1);
    store.close().unwrap();
    eprintln!(
        "requests for a batch of 51 new blocks, 1 present, 1 delete: \
         before commit (staging, the batch's reads) {before_commit:?}; commit {requests:?}"
    );
}

/// What an open does with each kind of leftover in `.temp/` (the table in
/// the recovery module): built by hand, as a dead writer leaves them.
fn recovery_rules(client: Arc<dyn ObjectStore>, prefix: &str) {
    let store = S3Store::open_with(client.clone(), prefix, S3Options::new()).unwrap();
    let shard = store.shard();
    store.close().unwrap();
    let c = client.as_ref();
    let committed = block(20, 700);
    let uncommitted = block(21, 700);
    let live = block(22, 700);
    let (ck, uk, lk) = (key_of(&committed), key_of(&uncommitted), key_of(&live));
    // A dead writer (no lease) with a committed batch, one block published already.
    let published = block(23, 10);
    let pk = key_of(&published);
    put_raw(c, &format!("{prefix}/.temp/batch-dead1-0/0"), &committed);
    put_raw(c, &format!("{prefix}/.temp/batch-dead1-0/1"), &published);
    put_raw(
        c,
        &format!("{prefix}/{}/{pk}.data", shard.dir(&pk)),
        &published,
    );
    put_raw(
        c,
        &format!("{prefix}/.temp/batch-dead1-0/commit"),
        format!("flatstore-s3-batch 1\nput {ck} 0 700\nput {pk} 1 10\nend 2\n").as_bytes(),
    );
    // A dead writer with an uncommitted batch and an expired... absent lease.
    put_raw(c, &format!("{prefix}/.temp/batch-dead2-0/0"), &uncommitted);
    // A live writer: a fresh lease and a committed batch, left alone.
    put_raw(
        c,
        &format!("{prefix}/.temp/lease-live1"),
        b"{\"ttl_ms\":600000}",
    );
    put_raw(c, &format!("{prefix}/.temp/batch-live1-0/0"), &live);
    put_raw(
        c,
        &format!("{prefix}/.temp/batch-live1-0/commit"),
        format!("flatstore-s3-batch 1\nput {lk} 0 700\nend 1\n").as_bytes(),
    );

    // A read-only open refuses to serve half a committed batch.
    assert!(matches!(
        S3Store::open_with(client.clone(), prefix, S3Options::new().read_only(true)),
        Err(Error::NeedsRecovery { .. })
    ));
    let store = S3Store::open_with(client.clone(), prefix, S3Options::new()).unwrap();
    let r = store.recovered();
    assert_eq!((r.rolled_forward, r.removed, r.live), (1, 1, 1), "{r:?}");
    assert_eq!(store.get(&ck).unwrap().as_deref(), Some(&committed[..]));
    assert_eq!(store.get(&pk).unwrap().as_deref(), Some(&published[..]));
    assert!(!store.has(&uk).unwrap());
    assert!(!store.has(&lk).unwrap());
    let left = temp_batches(c, prefix);
    assert_eq!(
        left,
        vec![
            ".temp/batch-live1-0/0".to_string(),
            ".temp/batch-live1-0/commit".to_string()
        ]
    );
    store.close().unwrap();

    // A record this version cannot read: refused, left as it is.
    put_raw(c, &format!("{prefix}/.temp/batch-dead3-0/0"), &uncommitted);
    put_raw(
        c,
        &format!("{prefix}/.temp/batch-dead3-0/commit"),
        b"flatstore-s3-batch 2\n",
    );
    assert!(matches!(
        S3Store::open_with(client.clone(), prefix, S3Options::new()),
        Err(Error::CorruptCommitRecord { .. })
    ));
    assert!(objs_contains(c, prefix, ".temp/batch-dead3-0/commit"));
    assert!(matches!(
        S3Store::open_with(client.clone(), prefix, S3Options::new().read_only(true)),
        Err(Error::CorruptCommitRecord { .. })
    ));
}

/// A handle whose lease was taken (its object removed, as another writer's
/// recovery does for a writer it takes for dead) commits nothing.
fn lease_lost(client: Arc<dyn ObjectStore>, prefix: &str) {
    let store = S3Store::open_with(client.clone(), prefix, S3Options::new()).unwrap();
    let blocks = batch_blocks(30, 5);
    let batch = store.batch().unwrap();
    for (k, d) in &blocks {
        batch.put(k, d).unwrap();
    }
    let lease = objects(client.as_ref(), prefix)
        .into_iter()
        .find(|o| o.starts_with(".temp/lease-"))
        .unwrap();
    rt().block_on(client.delete(&ObjPath::from(format!("{prefix}/{lease}"))))
        .unwrap();
    assert!(matches!(batch.commit(), Err(Error::LeaseLost { .. })));
    for (k, _) in &blocks {
        assert!(!store.has(k).unwrap());
    }
    assert!(temp_batches(client.as_ref(), prefix).is_empty());
    // Lost for good: no new batch either.
    assert!(matches!(store.batch(), Err(Error::LeaseLost { .. })));
    // A new open works.
    let again = S3Store::open_with(client.clone(), prefix, S3Options::new()).unwrap();
    let batch = again.batch().unwrap();
    batch.put(&blocks[0].0, &blocks[0].1).unwrap();
    assert_eq!(batch.commit().unwrap().written, 1);
}

// --- in memory (always runs: conditional creates are honoured there) -------------

#[test]
fn in_memory_lease_lost() {
    lease_lost(Arc::new(InMemory::new()), "l");
}

#[test]
fn in_memory_single_operations_with_conditional_create() {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = S3Store::open_with(mem.clone(), "p", S3Options::new()).unwrap();
    assert_eq!(store.capabilities().conditional_create, Some(true));
    store.close().unwrap();
    single_operations(mem, "p");
}

#[test]
fn in_memory_batches() {
    batch_semantics(Arc::new(InMemory::new()), "b");
}

#[test]
fn in_memory_recovery_rules() {
    recovery_rules(Arc::new(InMemory::new()), "r");
}

#[test]
fn in_memory_concurrent_writers_of_one_key_exactly_one_writes() {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = S3Store::open_with(mem, "", S3Options::new()).unwrap();
    let key = Key::new("CIQSAMEKEY").unwrap();
    let outcomes: Vec<PutOutcome> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8u8)
            .map(|i| {
                let store = store.clone();
                let key = key.clone();
                s.spawn(move || store.put(&key, &[i; 100]).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let written = outcomes
        .iter()
        .filter(|o| **o == PutOutcome::Written)
        .count();
    assert_eq!(written, 1, "{outcomes:?}");
    let got = store.get(&key).unwrap().unwrap();
    assert!(got.iter().all(|b| *b == got[0]) && got.len() == 100);
}

// --- against Garage ------------------------------------------------------------------

#[test]
fn garage_single_operations_and_first_writer_as_detected() {
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_single_operations") else {
        return;
    };
    let store = cluster.open("caps", S3Options::new()).unwrap();
    let caps = store.capabilities();
    eprintln!("Garage capabilities: {caps:?}");
    // Whatever the probe found must be what the service does: a second
    // conditional create of one object either fails (supported) or
    // overwrites (not).
    let client = cluster.client();
    let probe = ObjPath::from("caps-check");
    let honoured = rt().block_on(async {
        let create = || PutOptions::from(os::PutMode::Create);
        client
            .put_opts(&probe, PutPayload::from_static(b"1"), create())
            .await
            .unwrap();
        client
            .put_opts(&probe, PutPayload::from_static(b"2"), create())
            .await
            .is_err()
    });
    assert_eq!(caps.conditional_create, Some(honoured));
    store.close().unwrap();
    single_operations(cluster.client(), "single");
}

#[test]
fn garage_batches() {
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_batches") else {
        return;
    };
    batch_semantics(cluster.client(), "batches");
}

#[test]
fn garage_lease_lost() {
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_lease_lost") else {
        return;
    };
    lease_lost(cluster.client(), "lease");
}

#[test]
fn garage_recovery_rules() {
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_recovery_rules") else {
        return;
    };
    recovery_rules(cluster.client(), "recovery");
}

/// Blocks per batch in the kill test.
const KILL_BATCH: u64 = 20;

/// Child: opens `s3://flatstore/PREFIX` from the AWS_* environment and
/// commits batches until killed, saying before and after each commit.
#[test]
#[ignore]
fn child_commit_batches() {
    let Some(prefix) = child::arg() else { return };
    let store = S3Store::open(
        &format!("s3://{}/{prefix}", garage::BUCKET),
        S3Options::new().lease_ttl(Duration::from_secs(3)),
    )
    .unwrap();
    child::say("ready");
    for i in 0.. {
        let batch = store.batch().unwrap();
        for (k, d) in batch_blocks(i, KILL_BATCH) {
            batch.put(&k, &d).unwrap();
        }
        child::say(&format!("committing {i}"));
        batch.commit().unwrap();
        child::say(&format!("committed {i}"));
    }
}

#[test]
fn garage_batches_all_or_nothing_when_the_writer_is_killed() {
    use rand::Rng;
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_kill_writer") else {
        return;
    };
    const ROUNDS: usize = 8;
    let mut rng = rand::rng();
    let mut said = Vec::new();
    for round in 0..ROUNDS {
        let prefix = format!("kill-{round}");
        let mut cmd = child::command("child_commit_batches", &prefix);
        for (k, v) in cluster.env() {
            cmd.env(k, v);
        }
        let (mut c, lines) = child::spawn(cmd);
        lines.expect("ready", 60);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2500)));
        child::kill(&mut c);
        said.push(lines.drain());
    }
    // Every child is dead; once their leases (3 s) expire, an open recovers.
    // (3 s, plus the 2 s of slack, plus 2 s for the service's one-second
    // timestamps and the opens' own time).
    std::thread::sleep(Duration::from_secs(7));
    let (mut whole, mut none, mut in_flight_whole, mut in_flight_none) = (0, 0, 0, 0);
    let mut recovered = flatstore::s3::RecoverySummary::default();
    for (round, lines) in said.iter().enumerate() {
        let prefix = format!("kill-{round}");
        let committed: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("committed ")?.parse().ok())
            .collect();
        let committing: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("committing ")?.parse().ok())
            .collect();
        let store = cluster.open(&prefix, S3Options::new()).unwrap();
        // This handle's own lease (the child's was just removed).
        let own_lease: Vec<String> = objects(cluster.client().as_ref(), &prefix)
            .into_iter()
            .filter(|o| o.starts_with(".temp/lease-"))
            .collect();
        let r = store.recovered();
        recovered.rolled_forward += r.rolled_forward;
        recovered.removed += r.removed;
        recovered.leases_removed += r.leases_removed;
        // The killed child's batch (if it had staged anything) and its lease.
        assert_eq!(r.live, 0, "round {round}: {r:?}");
        assert!(r.rolled_forward + r.removed <= 1, "round {round}: {r:?}");
        assert_eq!(r.leases_removed, 1, "round {round}: {r:?}");
        let in_flight = committing
            .last()
            .copied()
            .filter(|i| !committed.contains(i));
        let last = committing.last().copied().unwrap_or(0);
        for i in 0..=last + 1 {
            let present = batch_blocks(i, KILL_BATCH)
                .iter()
                .filter(|(k, d)| match store.get(k).unwrap() {
                    Some(got) => {
                        assert_eq!(&got, d, "round {round} batch {i}: wrong bytes");
                        true
                    }
                    None => false,
                })
                .count() as u64;
            assert!(
                present == 0 || present == KILL_BATCH,
                "round {round}: batch {i} is partly there ({present} of {KILL_BATCH})"
            );
            if committed.contains(&i) {
                assert_eq!(
                    present, KILL_BATCH,
                    "round {round}: committed batch {i} missing"
                );
            } else if Some(i) == in_flight {
                if present == KILL_BATCH {
                    in_flight_whole += 1;
                } else {
                    in_flight_none += 1;
                }
            } else {
                assert_eq!(
                    present, 0,
                    "round {round}: batch {i} never committed but present"
                );
            }
            if present == KILL_BATCH {
                whole += 1;
            } else {
                none += 1;
            }
        }
        assert!(temp_batches(cluster.client().as_ref(), &prefix).is_empty());
        store.close().unwrap();
        let left = objects(cluster.client().as_ref(), &prefix);
        let left_temp: Vec<&String> = left.iter().filter(|o| o.starts_with(".temp/")).collect();
        assert!(
            left_temp.is_empty(),
            "round {round}: left in .temp/ after close: {left_temp:?} (this handle's lease \
             was {own_lease:?})"
        );
    }
    eprintln!(
        "{ROUNDS} kills: {whole} batches whole, {none} absent; killed inside commit: \
         {in_flight_whole} rolled forward whole, {in_flight_none} absent; recovery: {recovered:?}"
    );
}

#[test]
fn garage_batch_commits_with_a_node_killed() {
    let _g = serial();
    let Some(mut cluster) = Cluster::start("garage_node_killed") else {
        return;
    };
    let store = cluster.open("nodekill", S3Options::new()).unwrap();
    let blocks = batch_blocks(7, 200);
    let batch = store.batch().unwrap();
    for (i, (k, d)) in blocks.iter().enumerate() {
        if i == 100 {
            cluster.kill(3);
        }
        batch.put(k, d).unwrap();
    }
    let summary = batch.commit().unwrap();
    assert_eq!(summary.written, 200);
    for (k, d) in &blocks {
        let cid = Cid::new_v1(0x55, k.to_multihash().unwrap());
        assert_eq!(store.get_block(&cid).unwrap().as_deref(), Some(&d[..]));
    }
    assert_eq!(store.stats().unwrap().blocks, 200);
    // Single operations too, with two nodes of three.
    let extra = block(99, 1000);
    store.put(&key_of(&extra), &extra).unwrap();
    assert_eq!(
        store.get(&key_of(&extra)).unwrap().as_deref(),
        Some(&extra[..])
    );
    store.close().unwrap();
    // The node comes back and the data is still all there.
    cluster.restart(3);
    let store = cluster.open("nodekill", S3Options::new()).unwrap();
    assert_eq!(all_keys(&store).len(), 201);
    store.close().unwrap();
}

/// Every file of a local store uploaded as `prefix/<relative path>`, as
/// an S3 copy tool would.
fn upload_dir(client: &dyn ObjectStore, dir: &std::path::Path, prefix: &str) -> usize {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    for rel in &files {
        let rel_s = rel.to_str().unwrap().replace('\\', "/");
        put_raw(
            client,
            &format!("{prefix}/{rel_s}"),
            &std::fs::read(dir.join(rel)).unwrap(),
        );
    }
    files.len()
}

fn local_store_round_trip(client: Arc<dyn ObjectStore>) {
    let dir = common::tempdir();
    let local = Store::open(dir.path(), Options::default()).unwrap();
    let blocks = batch_blocks(40, 60);
    for (k, d) in &blocks[..30] {
        local.put(k, d).unwrap();
    }
    let batch = local.batch().unwrap();
    for (k, d) in &blocks[30..] {
        batch.put(k, d).unwrap();
    }
    batch.commit().unwrap();
    local.close().unwrap();
    let files = upload_dir(client.as_ref(), dir.path(), "copied");
    assert!(files > 60);

    let store = S3Store::open_with(client.clone(), "copied", S3Options::new()).unwrap();
    assert_eq!(store.shard(), flatstore::Shard::default());
    let want: BTreeSet<Key> = blocks.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(all_keys(&store), want);
    for (k, d) in &blocks {
        assert_eq!(store.get(k).unwrap().as_deref(), Some(&d[..]));
    }
    let more = block(41, 2000);
    store.put(&key_of(&more), &more).unwrap();
    store.close().unwrap();

    // And back: every object but .temp/ downloaded opens as a local store
    // that recounts (the S3 store marked the counters approximate).
    let back = common::tempdir();
    let objs = objects(client.as_ref(), "copied");
    let rt = rt();
    for rel in objs.iter().filter(|o| !o.starts_with(".temp/")) {
        let data = rt
            .block_on(async {
                client
                    .get(&ObjPath::from(format!("copied/{rel}")))
                    .await
                    .unwrap()
                    .bytes()
                    .await
            })
            .unwrap();
        let path = back.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let local = Store::open(back.path(), Options::default()).unwrap();
    let keys: BTreeSet<Key> = local.keys().map(|k| k.unwrap()).collect();
    assert_eq!(keys.len(), 61);
    assert_eq!(
        local.get(&key_of(&more)).unwrap().as_deref(),
        Some(&more[..])
    );
    let stats = common::wait_exact(&local);
    assert_eq!(stats.blocks, 61);
}

#[test]
fn in_memory_local_store_copied_to_object_storage_and_back() {
    local_store_round_trip(Arc::new(InMemory::new()));
}

#[test]
fn garage_local_store_copied_to_s3_and_back() {
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_local_copy") else {
        return;
    };
    local_store_round_trip(cluster.client());
}

/// `n` small blocks through a local store, into `client` under `prefix` and
/// back into a second local store: the same keys and bytes at each step.
fn copy_round_trip(client: Arc<dyn ObjectStore>, prefix: &str, n: u64) {
    let a = common::tempdir();
    let src = Store::open(a.path(), Options::default()).unwrap();
    let batch = src.batch().unwrap();
    let mut want = BTreeMap::new();
    for i in 0..n {
        let data = block(500_000 + i, 64 + (i as usize % 200));
        let key = key_of(&data);
        batch.put(&key, &data).unwrap();
        want.insert(key, data);
    }
    batch.commit().unwrap();

    let counting = Counting::new(client.clone());
    let s3 = S3Store::open_with(counting.clone(), prefix, S3Options::new()).unwrap();
    counting.take();
    let started = std::time::Instant::now();
    let up = flatstore::s3::copy_to_s3(&src, &s3).unwrap();
    let up_time = started.elapsed();
    let up_requests = counting.take();
    assert_eq!((up.written, up.already_present), (n, 0));
    assert_eq!(s3.stats().unwrap().blocks, n);
    counting.take();

    let b = common::tempdir();
    let dst = Store::open(b.path(), Options::default()).unwrap();
    let started = std::time::Instant::now();
    let down = flatstore::s3::copy_from_s3(&s3, &dst).unwrap();
    let down_time = started.elapsed();
    let down_requests = counting.take();
    assert_eq!(down.written, n);
    let got: BTreeSet<Key> = dst.keys().map(|k| k.unwrap()).collect();
    assert_eq!(got, want.keys().cloned().collect::<BTreeSet<_>>());
    for (k, d) in &want {
        assert_eq!(dst.get(k).unwrap().as_deref(), Some(&d[..]), "{k}");
    }
    // Copying again writes nothing new.
    let again = flatstore::s3::copy_to_s3(&src, &s3).unwrap();
    assert_eq!((again.written, again.already_present), (0, n));
    s3.close().unwrap();
    eprintln!(
        "copy of {n} blocks: to S3 in {up_time:?} with {up_requests:?}; \
         back in {down_time:?} with {down_requests:?}"
    );
}

#[test]
fn in_memory_copy_to_object_storage_and_back() {
    copy_round_trip(Arc::new(InMemory::new()), "copy", 1000);
}

#[test]
fn garage_copy_10000_blocks_to_s3_and_back() {
    let _g = serial();
    let Some(cluster) = Cluster::start("garage_copy") else {
        return;
    };
    copy_round_trip(cluster.client(), "copy", 10_000);
}

/// W1–W5 (shared/bench/WORKLOADS.md) at reduced sizes, against Garage and
/// against a local store in a temp directory, one run each, with the S3
/// requests per block. Prints a Markdown table; run by hand:
/// `FLATSTORE_GARAGE=… cargo test --release --all-features --test s3 bench_garage -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_garage_w1_to_w5() {
    use rand::seq::SliceRandom;
    use std::time::Instant;
    let _g = serial();
    let Some(cluster) = Cluster::start("bench_garage") else {
        return;
    };
    let w1: Vec<(Key, Vec<u8>)> = (0..256)
        .map(|i| {
            let d = block(1_000_000 + i, 256 << 10);
            (key_of(&d), d)
        })
        .collect();
    let w2: Vec<(Key, Vec<u8>)> = (0..5_000)
        .map(|i| {
            let d = block(2_000_000 + i, 1024);
            (key_of(&d), d)
        })
        .collect();
    let absent: Vec<Key> = (0..5_000)
        .map(|i| key_of(&block(3_000_000 + i, 8)))
        .collect();
    let mut rows = Vec::new();
    let per = |c: &BTreeMap<&'static str, u64>, n: usize| {
        let total: u64 = c
            .iter()
            .filter(|(k, _)| **k != "deleted objects")
            .map(|(_, v)| v)
            .sum();
        format!("{:.2}", total as f64 / n as f64)
    };
    let tmp = common::tempdir();
    for (name, blocks) in [
        ("W1 import-large (256 × 256 KiB)", &w1),
        ("W2 import-small (5,000 × 1 KiB)", &w2),
    ] {
        let counting = Counting::new(cluster.client());
        let prefix = if blocks.len() == 256 { "w1" } else { "w2" };
        let t = Instant::now();
        let s3 = S3Store::open_with(counting.clone(), prefix, S3Options::new()).unwrap();
        let b = s3.batch().unwrap();
        for (k, d) in blocks.iter() {
            b.put(k, d).unwrap();
        }
        b.commit().unwrap();
        s3.close().unwrap();
        let s3_time = t.elapsed();
        let reqs = counting.take();
        let t = Instant::now();
        let local = Store::open(tmp.path().join(prefix), Options::default()).unwrap();
        let b = local.batch().unwrap();
        for (k, d) in blocks.iter() {
            b.put(k, d).unwrap();
        }
        b.commit().unwrap();
        local.close().unwrap();
        rows.push((
            name.to_string(),
            s3_time,
            t.elapsed(),
            per(&reqs, blocks.len()),
        ));
    }
    for (name, blocks, prefix) in [
        ("W3 get, W1 blocks (2 threads)", &w1, "w1"),
        ("W3 get, W2 blocks (2 threads)", &w2, "w2"),
    ] {
        let counting = Counting::new(cluster.client());
        let s3 = S3Store::open_with(counting.clone(), prefix, S3Options::new()).unwrap();
        let local = Store::open(tmp.path().join(prefix), Options::default()).unwrap();
        let mut order: Vec<usize> = (0..blocks.len()).collect();
        order.shuffle(&mut rand::rng());
        let run = |get: &(dyn Fn(&Key) -> usize + Sync)| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for half in order.chunks(order.len().div_ceil(2)) {
                    s.spawn(move || {
                        for &i in half {
                            assert_eq!(get(&blocks[i].0), blocks[i].1.len());
                        }
                    });
                }
            });
            t.elapsed()
        };
        counting.take();
        let s3_time = run(&|k| s3.get(k).unwrap().unwrap().len());
        let reqs = counting.take();
        let local_time = run(&|k| local.get(k).unwrap().unwrap().len());
        rows.push((
            name.to_string(),
            s3_time,
            local_time,
            per(&reqs, blocks.len()),
        ));
        s3.close().unwrap();
        local.close().unwrap();
    }
    let counting = Counting::new(cluster.client());
    let s3 = S3Store::open_with(counting.clone(), "w2", S3Options::new()).unwrap();
    let local = Store::open(tmp.path().join("w2"), Options::default()).unwrap();
    counting.take();
    let t = Instant::now();
    for (k, _) in &w2 {
        assert!(s3.has(k).unwrap());
    }
    for k in &absent {
        assert!(!s3.has(k).unwrap());
    }
    let s3_time = t.elapsed();
    let reqs = counting.take();
    let t = Instant::now();
    for (k, _) in &w2 {
        assert!(local.has(k).unwrap());
    }
    for k in &absent {
        assert!(!local.has(k).unwrap());
    }
    rows.push((
        "W4 has (5,000 present + 5,000 absent)".into(),
        s3_time,
        t.elapsed(),
        per(&reqs, 10_000),
    ));
    for sizes in [false, true] {
        counting.take();
        let t = Instant::now();
        let n = if sizes {
            s3.entries().count()
        } else {
            s3.keys().count()
        };
        let s3_time = t.elapsed();
        let reqs = counting.take();
        assert_eq!(n, 5_000);
        let t = Instant::now();
        let m = if sizes {
            local.entries().count()
        } else {
            local.keys().count()
        };
        assert_eq!(m, 5_000);
        let name = if sizes {
            "W5 list W2, keys + sizes"
        } else {
            "W5 list W2, keys"
        };
        rows.push((name.into(), s3_time, t.elapsed(), per(&reqs, 5_000)));
    }
    s3.close().unwrap();
    local.close().unwrap();
    println!("| workload | Garage (3 nodes, RF 3) | local store | ratio | S3 requests per block |");
    println!("|---|---|---|---|---|");
    for (name, s3_t, local_t, reqs) in rows {
        println!(
            "| {name} | {:.3} s | {:.3} s | {:.0}× | {reqs} |",
            s3_t.as_secs_f64(),
            local_t.as_secs_f64(),
            s3_t.as_secs_f64() / local_t.as_secs_f64()
        );
    }
}
