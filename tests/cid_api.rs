//! The CID level: put_block / get_block / has_block / delete_block and
//! Batch::put_block, with hash checks.

mod common;

use std::fs;

use common::{keys, temp_entries, tempdir, visible_data_files};
use flatstore::cid::Cid;
use flatstore::multihash::Multihash;
use flatstore::{Durability, Error, Key, Options, Store};
use multihash_codetable::{Code, MultihashDigest};

const RAW: u64 = 0x55;
const DAG_PB: u64 = 0x70;

fn cid(code: Code, data: &[u8]) -> Cid {
    Cid::new_v1(RAW, code.digest(data))
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::None)).unwrap()
}

#[test]
fn put_get_has_delete_sha256_v0_and_v1_share_a_file() {
    let dir = tempdir();
    let store = open(dir.path());
    let data = b"hello blocks";
    let v1 = cid(Code::Sha2_256, data);
    store.put_block(&v1, data).unwrap();

    let path = store.block_path(&Key::from_cid(&v1));
    assert_eq!(fs::read(&path).unwrap(), data);
    assert!(Key::from_cid(&v1).as_str().starts_with("CIQ"));

    // CIDv0 (dag-pb) and a v1 of another codec name the same multihash.
    let v0 = Cid::new_v0(*v1.hash()).unwrap();
    let pb = Cid::new_v1(DAG_PB, *v1.hash());
    for c in [&v1, &v0, &pb] {
        assert_eq!(
            store.get_block(c).unwrap().as_deref(),
            Some(&data[..]),
            "{c}"
        );
        assert!(store.has_block(c).unwrap());
    }
    assert_eq!(visible_data_files(dir.path()).len(), 1);
    assert_eq!(store.stats().blocks, 1);

    assert!(store.delete_block(&v0).unwrap());
    assert!(!store.has_block(&v1).unwrap());
    assert_eq!(store.get_block(&v1).unwrap(), None);
    assert!(!store.delete_block(&v1).unwrap());
    assert!(!path.exists());
}

#[test]
fn wrong_data_is_refused_and_nothing_is_written() {
    let dir = tempdir();
    let store = open(dir.path());
    for code in [Code::Sha2_256, Code::Sha2_512, Code::Blake3_256] {
        let c = cid(code, b"the real data");
        let err = store.put_block(&c, b"other data").unwrap_err();
        let Error::HashMismatch { cid, actual } = &err else {
            panic!("{code:?}: {err}");
        };
        assert_eq!(cid, &c.to_string());
        assert_eq!(
            actual,
            &Cid::new_v1(RAW, code.digest(b"other data")).to_string()
        );
        assert!(err.to_string().contains(&c.to_string()));
    }
    assert!(keys(&store).is_empty());
    assert!(visible_data_files(dir.path()).is_empty());
    assert!(temp_entries(dir.path()).is_empty());
    assert_eq!(store.stats().blocks, 0);
}

#[test]
fn sha2_512_and_blake3_blocks() {
    let dir = tempdir();
    let store = open(dir.path());
    let data = vec![7u8; 5000];
    for code in [Code::Sha2_512, Code::Blake3_256] {
        let c = cid(code, &data);
        store.put_block(&c, &data).unwrap();
        assert_eq!(
            fs::read(store.block_path(&Key::from_cid(&c))).unwrap(),
            data
        );
        assert_eq!(store.get_block(&c).unwrap(), Some(data.clone()));
    }
    // A blake3 digest of 64 bytes (blake3 is extendable) works too.
    let long = {
        let mut out = [0u8; 64];
        let mut h = multihash_codetable::Blake3Hasher::<64>::default();
        multihash_derive::Hasher::update(&mut h, &data);
        h.finalize_xof_fill(&mut out);
        Cid::new_v1(RAW, Multihash::<64>::wrap(0x1e, &out).unwrap())
    };
    store.put_block(&long, &data).unwrap();
    assert!(store.has_block(&long).unwrap());
    assert_eq!(store.stats().blocks, 3);
}

#[test]
fn unsupported_hash_is_refused() {
    let dir = tempdir();
    let store = open(dir.path());
    // sha3-256 (0x16): a valid multihash flatstore cannot compute.
    let c = Cid::new_v1(RAW, Multihash::<64>::wrap(0x16, &[1; 32]).unwrap());
    match store.put_block(&c, b"x") {
        Err(Error::UnsupportedHash { code: 0x16, cid }) => assert_eq!(cid, c.to_string()),
        other => panic!("{other:?}"),
    }
    assert!(visible_data_files(dir.path()).is_empty());
}

#[test]
fn identity_cids_are_never_written() {
    let dir = tempdir();
    let store = open(dir.path());
    let data = b"tiny";
    let id = Cid::new_v1(RAW, Multihash::<64>::wrap(0, data).unwrap());
    store.put_block(&id, data).unwrap();
    assert!(visible_data_files(dir.path()).is_empty());
    assert_eq!(store.stats().blocks, 0);
    assert_eq!(store.get_block(&id).unwrap().as_deref(), Some(&data[..]));
    assert!(store.has_block(&id).unwrap());
    assert!(!store.delete_block(&id).unwrap());
    assert!(matches!(
        store.put_block(&id, b"tinz"),
        Err(Error::HashMismatch { .. })
    ));
    assert!(flatstore::is_identity(&id));
}

#[test]
fn get_block_checks_what_it_reads() {
    let dir = tempdir();
    let store = open(dir.path());
    let data = b"will be damaged";
    let c = cid(Code::Sha2_256, data);
    store.put_block(&c, data).unwrap();
    fs::write(store.block_path(&Key::from_cid(&c)), b"will be damageD").unwrap();
    assert!(matches!(
        store.get_block(&c),
        Err(Error::HashMismatch { cid, .. }) if cid == c.to_string()
    ));
    assert_eq!(
        store.get_block_unchecked(&c).unwrap().as_deref(),
        Some(&b"will be damageD"[..])
    );
}

#[test]
fn batch_put_block() {
    let dir = tempdir();
    let store = open(dir.path());
    let good = cid(Code::Sha2_256, b"good");
    let id = Cid::new_v1(RAW, Multihash::<64>::wrap(0, b"id").unwrap());
    let batch = store.batch().unwrap();
    assert!(matches!(
        batch.put_block(&good, b"bad"),
        Err(Error::HashMismatch { .. })
    ));
    // The batch stays usable after a refused block.
    batch.put_block(&good, b"good").unwrap();
    batch.put_block(&id, b"id").unwrap();
    assert!(batch.has(&Key::from_cid(&good)).unwrap());
    assert!(!store.has_block(&good).unwrap());
    let summary = batch.commit().unwrap();
    assert_eq!(summary.written, 1);
    assert_eq!(
        store.get_block(&good).unwrap().as_deref(),
        Some(&b"good"[..])
    );
    assert_eq!(visible_data_files(dir.path()).len(), 1);
    assert!(temp_entries(dir.path()).is_empty());
}
