//! The ecosystem block-store traits (features `fvm` and `blockstore`),
//! exercised through the traits only, with read-back through the plain
//! `Store` API and the other way round.
//!
//! One suite (`suite::*`) runs through a small common facade against the
//! store's own CID-level API (`put_block`, `get_block`, `has_block`, a batch
//! of `Batch::put_block` for many) and against both traits, on every
//! durability and two shard functions; then each trait has tests of its own
//! details (error types, default methods, `remove`, multihash sizes).

mod common;

use common::{opts, temp_entries, tempdir, visible_data_files};
use flatstore::cid::Cid;
use flatstore::multihash::Multihash;
use flatstore::{Durability, Key, Shard, Store};
use multihash_codetable::{Code, MultihashDigest};

const RAW: u64 = 0x55;
const DAG_PB: u64 = 0x70;
const DAG_CBOR: u64 = 0x71;

/// The CIDv1 of `data` with the sha2-256 multihash.
fn sha_cid(codec: u64, data: &[u8]) -> Cid {
    Cid::new_v1(codec, Code::Sha2_256.digest(data))
}

/// An identity CID carrying `data` inline.
fn identity_cid(data: &[u8]) -> Cid {
    Cid::new_v1(RAW, Multihash::wrap(0x00, data).unwrap())
}

/// `n` distinct blocks with their CIDs, from `seed` on.
fn blocks(seed: u64, n: u64) -> Vec<(Cid, Vec<u8>)> {
    (seed..seed + n)
        .map(|i| {
            let d = common::block(i, 100 + i as usize);
            (sha_cid(RAW, &d), d)
        })
        .collect()
}

/// Runs `f` on a fresh store for each durability and two shard functions.
fn each_store(f: impl Fn(&Store)) {
    for durability in [Durability::None, Durability::Fsync] {
        for shard in [Shard::NextToLast(2), Shard::Prefix(3)] {
            let dir = tempdir();
            let store = Store::open(dir.path().join("s"), opts(durability).shard(shard)).unwrap();
            eprintln!("adapter suite on {store:?}");
            f(&store);
            store.close().unwrap();
        }
    }
}

/// What the suite needs of a trait, so that one suite covers both.
trait Api {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String>;
    fn has(&self, cid: &Cid) -> Result<bool, String>;
    fn put_keyed(&self, cid: &Cid, data: &[u8]) -> Result<(), String>;
    fn put_many_keyed(&self, blocks: Vec<(Cid, Vec<u8>)>) -> Result<(), String>;
    /// Whether a put checks the data against its CID (the store's own API
    /// does; the traits trust the CID their caller computed).
    fn checks_hashes(&self) -> bool {
        false
    }
}

/// The store's own CID-level API, which the traits are measured against.
struct Native<'a>(&'a Store);

impl Api for Native<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
        self.0.get_block(cid).map_err(|e| e.to_string())
    }
    fn has(&self, cid: &Cid) -> Result<bool, String> {
        self.0.has_block(cid).map_err(|e| e.to_string())
    }
    fn put_keyed(&self, cid: &Cid, data: &[u8]) -> Result<(), String> {
        self.0.put_block(cid, data).map_err(|e| e.to_string())
    }
    fn put_many_keyed(&self, blocks: Vec<(Cid, Vec<u8>)>) -> Result<(), String> {
        let batch = self.0.batch().map_err(|e| e.to_string())?;
        for (cid, data) in &blocks {
            batch.put_block(cid, data).map_err(|e| e.to_string())?;
        }
        batch.commit().map(|_| ()).map_err(|e| e.to_string())
    }
    fn checks_hashes(&self) -> bool {
        true
    }
}

#[test]
fn native_cid_api_conformance() {
    suite::run_all(&|s| Box::new(Native(s)));
}

#[cfg(feature = "fvm")]
struct Fvm<'a>(&'a Store);

#[cfg(feature = "fvm")]
impl Api for Fvm<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
        fvm_ipld_blockstore::Blockstore::get(self.0, cid).map_err(|e| e.to_string())
    }
    fn has(&self, cid: &Cid) -> Result<bool, String> {
        fvm_ipld_blockstore::Blockstore::has(self.0, cid).map_err(|e| e.to_string())
    }
    fn put_keyed(&self, cid: &Cid, data: &[u8]) -> Result<(), String> {
        fvm_ipld_blockstore::Blockstore::put_keyed(self.0, cid, data).map_err(|e| e.to_string())
    }
    fn put_many_keyed(&self, blocks: Vec<(Cid, Vec<u8>)>) -> Result<(), String> {
        fvm_ipld_blockstore::Blockstore::put_many_keyed(self.0, blocks).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "blockstore")]
struct Async<'a>(&'a Store);

#[cfg(feature = "blockstore")]
impl Api for Async<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
        pollster::block_on(blockstore::Blockstore::get(self.0, cid)).map_err(|e| e.to_string())
    }
    fn has(&self, cid: &Cid) -> Result<bool, String> {
        pollster::block_on(blockstore::Blockstore::has(self.0, cid)).map_err(|e| e.to_string())
    }
    fn put_keyed(&self, cid: &Cid, data: &[u8]) -> Result<(), String> {
        pollster::block_on(blockstore::Blockstore::put_keyed(self.0, cid, data))
            .map_err(|e| e.to_string())
    }
    fn put_many_keyed(&self, blocks: Vec<(Cid, Vec<u8>)>) -> Result<(), String> {
        pollster::block_on(blockstore::Blockstore::put_many_keyed(self.0, blocks))
            .map_err(|e| e.to_string())
    }
}

/// The suite both traits pass. Each function gets a fresh, empty store and
/// the trait's facade over it.
mod suite {
    use super::*;

    /// put, get, has of real CIDs; absent CIDs; the file is where and what
    /// the store says; every CID version and codec of one multihash is one block.
    pub(super) fn put_get_has(api: &dyn Api, store: &Store) {
        let data = common::block(1, 1000);
        let cid = sha_cid(RAW, &data);
        assert_eq!(api.get(&cid).unwrap(), None);
        assert!(!api.has(&cid).unwrap());
        api.put_keyed(&cid, &data).unwrap();
        assert!(api.has(&cid).unwrap());
        assert_eq!(api.get(&cid).unwrap().unwrap(), data);

        // Stored under the key of the multihash, exactly the block's bytes.
        let key = Key::from_cid(&cid);
        assert!(key.as_str().starts_with("CIQ"), "{key}");
        assert_eq!(std::fs::read(store.block_path(&key)).unwrap(), data);
        assert_eq!(store.stats().blocks, 1);
        assert_eq!(store.stats().bytes, 1000);

        // CIDv0 and CIDv1 with other codecs name the same block.
        let v0 = Cid::new_v0(*cid.hash()).unwrap();
        let cbor = sha_cid(DAG_CBOR, &data);
        let pb = sha_cid(DAG_PB, &data);
        for other in [v0, cbor, pb] {
            assert!(api.has(&other).unwrap(), "{other}");
            assert_eq!(api.get(&other).unwrap().unwrap(), data, "{other}");
        }

        // Another multihash of the same data is another block (absent).
        let blake = Cid::new_v1(RAW, Code::Blake3_256.digest(&data));
        assert_eq!(api.get(&blake).unwrap(), None);
        assert!(!api.has(&blake).unwrap());
        assert!(temp_entries(store.root()).is_empty());
    }

    /// What the trait writes the plain API reads, and the other way round.
    pub(super) fn read_back_both_ways(api: &dyn Api, store: &Store) {
        let a = common::block(2, 300);
        let cid_a = sha_cid(DAG_CBOR, &a);
        api.put_keyed(&cid_a, &a).unwrap();
        assert_eq!(store.get(&Key::from_cid(&cid_a)).unwrap().unwrap(), a);
        assert_eq!(store.get(&common::key_of(&a)).unwrap().unwrap(), a);

        let b = common::block(3, 400);
        store.put(&common::key_of(&b), &b).unwrap();
        let cid_b = sha_cid(RAW, &b);
        assert!(api.has(&cid_b).unwrap());
        assert_eq!(api.get(&cid_b).unwrap().unwrap(), b);

        // A delete through the store is seen by the trait.
        assert!(store.delete(&Key::from_cid(&cid_a)).unwrap());
        assert!(!api.has(&cid_a).unwrap());
        assert_eq!(api.get(&cid_a).unwrap(), None);

        // Bulk puts are read back too, and listed.
        let many = blocks(100, 20);
        api.put_many_keyed(many.clone()).unwrap();
        for (cid, d) in &many {
            assert_eq!(&store.get(&Key::from_cid(cid)).unwrap().unwrap(), d);
        }
        assert_eq!(common::keys(store).len(), 21);
    }

    /// Identity CIDs: read from the CID itself, never written.
    pub(super) fn identity(api: &dyn Api, store: &Store) {
        let cid = identity_cid(b"inline block");
        assert!(api.has(&cid).unwrap());
        assert_eq!(api.get(&cid).unwrap().unwrap(), b"inline block");
        api.put_keyed(&cid, b"inline block").unwrap();
        api.put_many_keyed(vec![(cid, b"inline block".to_vec())])
            .unwrap();
        let empty = identity_cid(b"");
        assert_eq!(api.get(&empty).unwrap().unwrap(), b"");
        api.put_keyed(&empty, b"").unwrap();
        assert!(visible_data_files(store.root()).is_empty());
        assert_eq!(store.stats().blocks, 0);

        // Data that is not the digest is refused, and nothing is written.
        let err = api.put_keyed(&cid, b"something else").unwrap_err();
        assert!(err.contains("hash mismatch"), "{err}");
        assert!(visible_data_files(store.root()).is_empty());

        // Identity blocks mixed into a bulk put are skipped; the rest is stored.
        let mut mixed = blocks(200, 3);
        mixed.insert(1, (cid, b"inline block".to_vec()));
        api.put_many_keyed(mixed.clone()).unwrap();
        assert_eq!(store.stats().blocks, 3);
        for (c, d) in &mixed {
            assert_eq!(&api.get(c).unwrap().unwrap(), d);
        }
    }

    /// A put of a present CID keeps the first block, untouched.
    pub(super) fn first_writer_wins(api: &dyn Api, store: &Store) {
        // The trait trusts the CID, so a second put under the same CID with
        // other bytes shows which one is kept.
        let cid = sha_cid(RAW, b"first");
        api.put_keyed(&cid, b"first").unwrap();
        let path = store.block_path(&Key::from_cid(&cid));
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = api.put_keyed(&cid, b"second, longer");
        if api.checks_hashes() {
            assert!(second.unwrap_err().contains("hash mismatch"));
        } else {
            second.unwrap();
        }
        assert_eq!(api.get(&cid).unwrap().unwrap(), b"first");
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );

        // Same in a bulk put: the stored block stays, and within the call the
        // first block of a key wins.
        let other = sha_cid(RAW, b"other");
        let many = |first: &[u8]| {
            vec![
                (cid, first.to_vec()),
                (other, b"other".to_vec()),
                (other, b"not other".to_vec()),
            ]
        };
        if api.checks_hashes() {
            // Data that does not match its CID fails the whole bulk put.
            assert!(api.put_many_keyed(many(b"third")).is_err());
            assert!(!api.has(&other).unwrap());
            api.put_many_keyed(many(b"first")[..2].to_vec()).unwrap();
        } else {
            api.put_many_keyed(many(b"third")).unwrap();
        }
        assert_eq!(api.get(&cid).unwrap().unwrap(), b"first");
        assert_eq!(api.get(&other).unwrap().unwrap(), b"other");
        let s = store.stats();
        assert_eq!((s.blocks, s.bytes), (2, 10));
    }

    /// A bulk put is all or nothing: a block refused midway leaves nothing.
    pub(super) fn put_many_atomic(api: &dyn Api, store: &Store) {
        let bad = (identity_cid(b"inline"), b"not inline".to_vec());
        // Refused as the 2nd item (one block pending, no batch yet), midway
        // through a batch, and as the last item.
        for at in [1, 6, 11] {
            let mut items = blocks(300 + at as u64 * 100, 11);
            items.insert(at, bad.clone());
            let err = api.put_many_keyed(items.clone()).unwrap_err();
            assert!(err.contains("hash mismatch"), "{err}");
            for (cid, _) in &items {
                if cid.hash().code() != 0 {
                    assert!(
                        !api.has(cid).unwrap(),
                        "block {cid} leaked (bad item at {at})"
                    );
                }
            }
            assert!(visible_data_files(store.root()).is_empty());
            assert!(temp_entries(store.root()).is_empty(), "staging left behind");
            assert_eq!(store.stats().blocks, 0);
        }

        // An empty bulk put does nothing; then the good blocks go in whole.
        api.put_many_keyed(Vec::new()).unwrap();
        let good = blocks(2000, 30);
        api.put_many_keyed(good.clone()).unwrap();
        for (cid, d) in &good {
            assert_eq!(&api.get(cid).unwrap().unwrap(), d);
        }
        assert_eq!(store.stats().blocks, 30);
        assert!(temp_entries(store.root()).is_empty());

        // A single block is stored too.
        let one = blocks(3000, 1);
        api.put_many_keyed(one.clone()).unwrap();
        assert_eq!(api.get(&one[0].0).unwrap().unwrap(), one[0].1);
    }

    /// On a read-only store reads work and every write is refused, whole.
    pub(super) fn read_only(make_api: &dyn Fn(&Store) -> Box<dyn Api + '_>) {
        for durability in [Durability::None, Durability::Fsync] {
            let dir = tempdir();
            let root = dir.path().join("s");
            let store = Store::open(&root, opts(durability)).unwrap();
            let present = blocks(4000, 2);
            make_api(&store).put_many_keyed(present.clone()).unwrap();
            store.close().unwrap();

            let ro = Store::open(&root, opts(durability).read_only(true)).unwrap();
            let api = make_api(&ro);
            for (cid, d) in &present {
                assert!(api.has(cid).unwrap());
                assert_eq!(&api.get(cid).unwrap().unwrap(), d);
            }
            let new = blocks(5000, 3);
            let err = api.put_keyed(&new[0].0, &new[0].1).unwrap_err();
            assert!(err.contains("read-only"), "{err}");
            // Refused whole, as one block (a plain put) and as several (a batch).
            for items in [new.clone(), new[..1].to_vec()] {
                let err = api.put_many_keyed(items).unwrap_err();
                assert!(err.contains("read-only"), "{err}");
            }
            for (cid, _) in &new {
                assert!(!api.has(cid).unwrap());
            }
            // Identity blocks need no write, so they are accepted.
            api.put_keyed(&identity_cid(b"x"), b"x").unwrap();
            drop(api);
            assert_eq!(ro.stats().blocks, 2);
            assert_eq!(visible_data_files(&root).len(), 2);
            ro.close().unwrap();
        }
    }

    /// Runs every function of the suite, each on fresh stores of every
    /// durability and two shard functions.
    pub(super) fn run_all(make_api: &dyn Fn(&Store) -> Box<dyn Api + '_>) {
        type Case = (&'static str, fn(&dyn Api, &Store));
        let suite: [Case; 5] = [
            ("put_get_has", put_get_has),
            ("read_back_both_ways", read_back_both_ways),
            ("identity", identity),
            ("first_writer_wins", first_writer_wins),
            ("put_many_atomic", put_many_atomic),
        ];
        for (name, f) in suite {
            eprintln!("adapter suite: {name}");
            each_store(|store| f(&*make_api(store), store));
        }
        read_only(make_api);
    }
}

#[cfg(feature = "fvm")]
mod fvm {
    use std::sync::Arc;

    use fvm_ipld_blockstore::{Block, Blockstore};

    use super::*;

    #[test]
    fn conformance() {
        suite::run_all(&|s| Box::new(Fvm(s)));
    }

    /// Generic code sees the trait through `&Store` and `Arc<Store>` too.
    fn roundtrip(bs: &impl Blockstore, seed: u64) -> Cid {
        let data = common::block(seed, 64);
        let cid = sha_cid(RAW, &data);
        bs.put_keyed(&cid, &data).unwrap();
        assert_eq!(bs.get(&cid).unwrap().unwrap(), data);
        assert!(bs.has(&cid).unwrap());
        cid
    }

    #[test]
    fn generic_and_default_methods() {
        each_store(|store| {
            let a = roundtrip(store, 1);
            let b = roundtrip(&store, 2);
            let c = roundtrip(&Arc::new(store.clone()), 3);
            for cid in [a, b, c] {
                assert!(store.has(&Key::from_cid(&cid)).unwrap());
            }

            // `put` computes the CID from the data.
            let block = Block::new(DAG_CBOR, b"computed".to_vec());
            let cid = Blockstore::put(store, Code::Sha2_256, &block).unwrap();
            assert_eq!(cid, sha_cid(DAG_CBOR, b"computed"));
            assert_eq!(Blockstore::get(store, &cid).unwrap().unwrap(), b"computed");

            // `put_many` (through `put_many_keyed`): several hash functions.
            let blocks: Vec<_> = (10..20u64)
                .map(|i| Block::new(RAW, common::block(i, 50)))
                .collect();
            let codes = [Code::Sha2_256, Code::Blake3_256, Code::Sha2_512];
            store
                .put_many(
                    blocks
                        .iter()
                        .enumerate()
                        .map(|(i, b)| (codes[i % 3], b.into())),
                )
                .unwrap();
            for (i, b) in blocks.iter().enumerate() {
                let cid = b.cid(codes[i % 3]);
                assert_eq!(Blockstore::get(store, &cid).unwrap().unwrap(), b.data);
            }
            assert_eq!(store.stats().blocks, 14);
        });
    }

    /// Errors are `flatstore::Error`s inside `anyhow::Error`.
    #[test]
    fn errors_downcast_to_store_errors() {
        let dir = tempdir();
        let store = Store::open(dir.path().join("s"), flatstore::Options::default()).unwrap();
        let err = store.put_keyed(&identity_cid(b"a"), b"b").unwrap_err();
        assert!(matches!(
            err.downcast_ref::<flatstore::Error>(),
            Some(flatstore::Error::HashMismatch { .. })
        ));
        store.close().unwrap();

        let ro = Store::open(
            dir.path().join("s"),
            flatstore::Options::default().read_only(true),
        )
        .unwrap();
        let err = ro.put_keyed(&sha_cid(RAW, b"x"), b"x").unwrap_err();
        assert!(matches!(
            err.downcast_ref::<flatstore::Error>(),
            Some(flatstore::Error::ReadOnly)
        ));
        let err = ro.put_many_keyed(blocks(1, 3)).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<flatstore::Error>(),
            Some(flatstore::Error::ReadOnly)
        ));
    }
}

#[cfg(feature = "blockstore")]
mod asynchronous {
    use blockstore::block::{Block, CidError};
    use blockstore::Blockstore;
    use flatstore::cid::CidGeneric;
    use pollster::block_on;

    use super::*;

    #[test]
    fn conformance() {
        suite::run_all(&|s| Box::new(Async(s)));
    }

    /// The futures are `Send`, as the trait requires off wasm.
    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let dir = tempdir();
        let store = Store::open(dir.path().join("s"), flatstore::Options::default()).unwrap();
        let cid = sha_cid(RAW, b"x");
        send(&Blockstore::get(&store, &cid));
        send(&Blockstore::put_keyed(&store, &cid, b"x"));
        send(&Blockstore::put_many_keyed(&store, blocks(1, 2)));
    }

    /// CIDs of every multihash size `S` name the same block; digests longer
    /// than 64 bytes are refused with `CidTooLarge`, also midway in a bulk put.
    #[test]
    fn multihash_sizes() {
        each_store(|store| {
            let data = b"sized".to_vec();
            let digest = Code::Sha2_256.digest(&data);
            let c32 =
                CidGeneric::<32>::new_v1(RAW, Multihash::wrap(0x12, digest.digest()).unwrap());
            let c128 =
                CidGeneric::<128>::new_v1(RAW, Multihash::wrap(0x12, digest.digest()).unwrap());
            block_on(store.put_keyed(&c32, &data)).unwrap();
            assert_eq!(
                block_on(Blockstore::get(store, &c128)).unwrap().unwrap(),
                data
            );
            assert!(block_on(Blockstore::has(store, &sha_cid(RAW, &data))).unwrap());

            let big = CidGeneric::<128>::new_v1(RAW, Multihash::wrap(0x12, &[7; 100]).unwrap());
            for r in [
                block_on(store.put_keyed(&big, b"x")).map(|_| ()),
                block_on(Blockstore::get(store, &big)).map(|_| ()),
                block_on(Blockstore::has(store, &big)).map(|_| ()),
                block_on(store.remove(&big)),
            ] {
                assert!(matches!(r, Err(blockstore::Error::CidTooLarge)), "{r:?}");
            }

            let mut items: Vec<(CidGeneric<128>, Vec<u8>)> = (0..6u64)
                .map(|i| {
                    let d = common::block(i, 10);
                    let mh = Code::Sha2_256.digest(&d);
                    let mh = Multihash::wrap(mh.code(), mh.digest()).unwrap();
                    (CidGeneric::new_v1(RAW, mh), d)
                })
                .collect();
            items.insert(3, (big, b"x".to_vec()));
            let r = block_on(store.put_many_keyed(items));
            assert!(matches!(r, Err(blockstore::Error::CidTooLarge)), "{r:?}");
            assert_eq!(store.stats().blocks, 1);
            assert!(temp_entries(store.root()).is_empty());
        });
    }

    #[test]
    fn remove() {
        each_store(|store| {
            let [(a, da), (b, db)]: [_; 2] = blocks(1, 2).try_into().unwrap();
            block_on(store.remove(&a)).unwrap(); // absent: fine
            block_on(store.put_keyed(&a, &da)).unwrap();
            block_on(store.put_keyed(&b, &db)).unwrap();
            block_on(store.remove(&a)).unwrap();
            assert!(!block_on(Blockstore::has(store, &a)).unwrap());
            assert!(!store.has(&Key::from_cid(&a)).unwrap());
            block_on(store.remove(&a)).unwrap(); // idempotent
            assert_eq!(block_on(Blockstore::get(store, &b)).unwrap().unwrap(), db);
            // Identity: nothing to remove, still readable.
            let id = identity_cid(b"id");
            block_on(store.remove(&id)).unwrap();
            assert!(block_on(Blockstore::has(store, &id)).unwrap());
            let s = store.stats();
            assert_eq!((s.blocks, s.bytes), (1, db.len() as u64));
        });
    }

    /// A block type computing its own CID, for `put` and `put_many`.
    struct Sha(Vec<u8>, bool);

    impl Block<64> for Sha {
        fn cid(&self) -> Result<Cid, CidError> {
            if self.1 {
                return Err(CidError::InvalidDataFormat("refused".into()));
            }
            Ok(sha_cid(RAW, &self.0))
        }
        fn data(&self) -> &[u8] {
            &self.0
        }
    }

    #[test]
    fn put_and_put_many_compute_cids_all_or_nothing() {
        each_store(|store| {
            block_on(Blockstore::put(store, Sha(b"one".to_vec(), false))).unwrap();
            assert!(store.has(&Key::from_cid(&sha_cid(RAW, b"one"))).unwrap());

            let good: Vec<Vec<u8>> = (0..8u64).map(|i| common::block(i, 30)).collect();
            let mut items: Vec<Sha> = good.iter().map(|d| Sha(d.clone(), false)).collect();
            items.insert(5, Sha(b"bad".to_vec(), true));
            let r = block_on(store.put_many(items));
            assert!(
                matches!(
                    r,
                    Err(blockstore::Error::CidError(CidError::InvalidDataFormat(_)))
                ),
                "{r:?}"
            );
            assert_eq!(store.stats().blocks, 1);
            assert!(temp_entries(store.root()).is_empty());

            block_on(store.put_many(good.iter().map(|d| Sha(d.clone(), false)))).unwrap();
            for d in &good {
                assert_eq!(&store.get(&common::key_of(d)).unwrap().unwrap(), d);
            }
            assert_eq!(store.stats().blocks, 9);
        });
    }

    /// Store errors map onto the trait's error type, message kept.
    #[test]
    fn error_mapping_and_close() {
        let dir = tempdir();
        let root = dir.path().join("s");
        let store = Store::open(&root, flatstore::Options::default()).unwrap();
        let r = block_on(store.put_keyed(&identity_cid(b"a"), b"b"));
        assert!(
            matches!(&r, Err(blockstore::Error::CidError(CidError::InvalidCid(m))) if m.contains("hash mismatch")),
            "{r:?}"
        );
        block_on(store.put_keyed(&sha_cid(RAW, b"kept"), b"kept")).unwrap();
        // close through the trait releases the lock and persists the counters.
        block_on(Blockstore::close(store)).unwrap();
        assert!(root.join("diskUsage.cache").exists());

        let ro = Store::open(&root, flatstore::Options::default().read_only(true)).unwrap();
        let r = block_on(ro.put_keyed(&sha_cid(RAW, b"x"), b"x"));
        assert!(
            matches!(&r, Err(blockstore::Error::FatalDatabaseError(m)) if m.contains("read-only")),
            "{r:?}"
        );
        let r = block_on(ro.remove(&sha_cid(RAW, b"kept")));
        assert!(
            matches!(r, Err(blockstore::Error::FatalDatabaseError(_))),
            "{r:?}"
        );
        assert!(block_on(Blockstore::has(&ro, &sha_cid(RAW, b"kept"))).unwrap());
    }
}

/// Without a runtime, the async trait does its work inline: the future is
/// ready at its first poll (also with the `tokio` feature, outside a runtime).
#[cfg(feature = "blockstore")]
#[test]
fn without_a_runtime_futures_are_ready_at_first_poll() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), flatstore::Options::default()).unwrap();
    let data = common::block(1, 1 << 20);
    let cid = sha_cid(RAW, &data);
    let mut cx = Context::from_waker(Waker::noop());
    let put = std::pin::pin!(blockstore::Blockstore::put_keyed(&store, &cid, &data));
    assert!(matches!(put.poll(&mut cx), Poll::Ready(Ok(()))));
    let get = std::pin::pin!(blockstore::Blockstore::get(&store, &cid));
    assert!(matches!(get.poll(&mut cx), Poll::Ready(Ok(Some(d))) if d == data));
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use std::future::Future;
    use std::sync::OnceLock;
    use std::task::{Context, Waker};

    use blockstore::Blockstore;

    use super::*;

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        })
    }

    /// The async trait driven by a Tokio runtime (work on its blocking pool).
    struct OnTokio<'a>(&'a Store);

    impl Api for OnTokio<'_> {
        fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
            runtime()
                .block_on(Blockstore::get(self.0, cid))
                .map_err(|e| e.to_string())
        }
        fn has(&self, cid: &Cid) -> Result<bool, String> {
            runtime()
                .block_on(Blockstore::has(self.0, cid))
                .map_err(|e| e.to_string())
        }
        fn put_keyed(&self, cid: &Cid, data: &[u8]) -> Result<(), String> {
            runtime()
                .block_on(self.0.put_keyed(cid, data))
                .map_err(|e| e.to_string())
        }
        fn put_many_keyed(&self, blocks: Vec<(Cid, Vec<u8>)>) -> Result<(), String> {
            runtime()
                .block_on(self.0.put_many_keyed(blocks))
                .map_err(|e| e.to_string())
        }
    }

    #[test]
    fn conformance() {
        suite::run_all(&|s| Box::new(OnTokio(s)));
    }

    /// Inside a runtime, a fsynced 1 MiB put is not done at the first poll:
    /// it runs on the blocking pool while the future waits. Then remove and
    /// close work there too.
    #[test]
    fn inside_a_runtime_the_work_leaves_the_polling_thread() {
        let dir = tempdir();
        let root = dir.path().join("s");
        let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
        let data = common::block(7, 1 << 20);
        let cid = sha_cid(RAW, &data);
        let _guard = runtime().enter();
        {
            let mut put = std::pin::pin!(store.put_keyed(&cid, &data));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(put.as_mut().poll(&mut cx).is_pending());
            runtime().block_on(put).unwrap();
        }
        assert_eq!(store.get(&Key::from_cid(&cid)).unwrap().unwrap(), data);
        runtime().block_on(store.remove(&cid)).unwrap();
        assert!(!store.has(&Key::from_cid(&cid)).unwrap());
        runtime().block_on(Blockstore::close(store)).unwrap();
        // The lock is released: the store opens again.
        Store::open(&root, flatstore::Options::default()).unwrap();
    }
}
