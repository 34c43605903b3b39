//! Store::verify: corrupt, empty, foreign, misplaced and unverifiable files;
//! repair into .quarantine/ with the counters kept right.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{block, keys, tempdir, wait_exact};
use flatstore::cid::Cid;
use flatstore::{Durability, Error, Key, Options, Store, VerifyOptions};
use multihash_codetable::{Code, MultihashDigest};

fn raw_cid(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, Code::Sha2_256.digest(data))
}

/// A store of 50 blocks of 1..=50 KiB, plus the empty block.
fn filled(dir: &Path, durability: Durability) -> (Store, Vec<(Cid, Vec<u8>)>) {
    let store = Store::open(dir, Options::default().durability(durability)).unwrap();
    let mut blocks: Vec<(Cid, Vec<u8>)> = (1..=50u64)
        .map(|i| block(i, i as usize * 1024))
        .map(|d| (raw_cid(&d), d))
        .collect();
    blocks.push((raw_cid(b""), Vec::new()));
    for (c, d) in &blocks {
        store.put_block(c, d).unwrap();
    }
    (store, blocks)
}

#[test]
fn a_healthy_store_is_clean() {
    let dir = tempdir();
    let (store, blocks) = filled(dir.path(), Durability::None);
    let report = store.verify(&VerifyOptions::new()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.ok, blocks.len() as u64);
    let bytes: u64 = blocks.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(report.ok_bytes, bytes);
}

#[test]
fn finds_and_repairs_damage() {
    for durability in [Durability::None, Durability::Fsync] {
        finds_and_repairs(durability);
    }
}

fn finds_and_repairs(durability: Durability) {
    let dir = tempdir();
    let root = dir.path();
    let (store, blocks) = filled(root, durability);
    let path_of = |c: &Cid| store.block_path(&Key::from_cid(c));

    // Damage done behind the store's back, with the store closed, and the
    // counter cache removed so that the next open recounts what is on disk.
    let (corrupt_cid, corrupt_data) = blocks[10].clone();
    let (empty_cid, _) = blocks[20].clone();
    let (misplaced_cid, misplaced_data) = blocks[30].clone();
    let corrupt_path = path_of(&corrupt_cid);
    let empty_path = path_of(&empty_cid);
    let good_path = path_of(&blocks[0].0);
    let shard_dir = good_path.parent().unwrap().to_path_buf();
    let misplaced_key = Key::from_cid(&misplaced_cid);
    let wrong_dir = ["22", "33", "44"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| *d != path_of(&misplaced_cid).parent().unwrap())
        .unwrap();
    drop(store);

    let mut damaged = corrupt_data.clone();
    damaged[100] ^= 0xff;
    fs::write(&corrupt_path, &damaged).unwrap();
    fs::write(&empty_path, b"").unwrap();
    fs::write(shard_dir.join("notes.txt"), b"someone's file").unwrap();
    fs::create_dir(shard_dir.join("subdir")).unwrap();
    fs::create_dir_all(&wrong_dir).unwrap();
    let misplaced_path = wrong_dir.join(format!("{misplaced_key}.data"));
    fs::write(&misplaced_path, &misplaced_data).unwrap();
    // A valid key that is not a multihash, in its own shard directory.
    let odd = Key::new("ABCDEFGH").unwrap();
    let odd_dir = root.join(flatstore::Shard::NextToLast(2).dir(&odd));
    fs::create_dir_all(&odd_dir).unwrap();
    let odd_path = odd_dir.join("ABCDEFGH.data");
    fs::write(&odd_path, b"not a block").unwrap();
    fs::remove_file(root.join("diskUsage.cache")).unwrap();

    let store = Store::open(root, Options::default().durability(durability)).unwrap();
    let before = wait_exact(&store);
    assert_eq!(before.blocks, blocks.len() as u64 + 1); // + the odd file

    let files = Arc::new(AtomicU64::new(0));
    let (f, dirs) = (files.clone(), Arc::new(AtomicU64::new(0)));
    let d = dirs.clone();
    let report = store
        .verify(&VerifyOptions::new().threads(2).progress(move |p| {
            f.fetch_max(p.files, Ordering::Relaxed);
            d.fetch_max(p.dirs_done * 1000 + p.dirs_total, Ordering::Relaxed);
        }))
        .unwrap();
    // Paths relative to the root: the store may name its root differently
    // (on Windows, in its verbatim `\\?\` form).
    let rel = |p: &Path| {
        p.strip_prefix(store.root())
            .or_else(|_| p.strip_prefix(root))
            .unwrap_or_else(|_| panic!("{p:?} is outside the store"))
            .to_path_buf()
    };
    let paths = |l: &[flatstore::Finding]| l.iter().map(|f| rel(&f.path)).collect::<Vec<_>>();
    assert_eq!(paths(&report.corrupt), vec![rel(&corrupt_path)]);
    assert_eq!(report.corrupt[0].key, Some(Key::from_cid(&corrupt_cid)));
    assert_eq!(paths(&report.empty), vec![rel(&empty_path)]);
    assert_eq!(paths(&report.misplaced), vec![rel(&misplaced_path)]);
    let mut foreign = vec![
        rel(&shard_dir.join("notes.txt")),
        rel(&shard_dir.join("subdir")),
    ];
    foreign.sort();
    assert_eq!(paths(&report.foreign), foreign);
    assert_eq!(paths(&report.unverifiable), vec![rel(&odd_path)]);
    assert!(report.unreadable.is_empty());
    assert_eq!(report.ok, blocks.len() as u64 - 2);
    assert!(report.corrupt[0].quarantined.is_none());
    // Without repair nothing moved.
    assert_eq!(fs::read(&corrupt_path).unwrap(), damaged);
    assert!(!root.join(".quarantine").exists());
    // Progress saw every file and every directory.
    assert_eq!(files.load(Ordering::Relaxed), blocks.len() as u64 + 4);
    let (done, total) = (
        dirs.load(Ordering::Relaxed) / 1000,
        dirs.load(Ordering::Relaxed) % 1000,
    );
    assert_eq!(done, total);

    // Repair: the corrupt and the empty block go to .quarantine/, the rest stays.
    let repaired = store.verify(&VerifyOptions::new().repair(true)).unwrap();
    let q = store.root().join(".quarantine");
    let q_corrupt = q.join(format!("{}.data", Key::from_cid(&corrupt_cid)));
    let q_empty = q.join(format!("{}.data", Key::from_cid(&empty_cid)));
    assert_eq!(repaired.corrupt[0].quarantined.as_ref(), Some(&q_corrupt));
    assert_eq!(repaired.empty[0].quarantined.as_ref(), Some(&q_empty));
    assert_eq!(fs::read(&q_corrupt).unwrap(), damaged);
    assert_eq!(fs::read(&q_empty).unwrap(), b"");
    assert!(!corrupt_path.exists() && !empty_path.exists());
    // The misplaced copy duplicates a stored block: it is quarantined too,
    // and the stored block is untouched.
    let q_misplaced = q.join(format!("{misplaced_key}.data"));
    assert_eq!(
        repaired.misplaced[0].quarantined.as_ref(),
        Some(&q_misplaced)
    );
    assert!(repaired.misplaced[0].repaired);
    assert!(!misplaced_path.exists());
    assert_eq!(fs::read(&q_misplaced).unwrap(), misplaced_data);
    assert_eq!(
        store.get_block(&misplaced_cid).unwrap(),
        Some(misplaced_data.clone())
    );
    assert!(odd_path.exists());
    assert!(shard_dir.join("notes.txt").exists());
    assert!(!store.has_block(&corrupt_cid).unwrap());
    assert!(!store.has_block(&empty_cid).unwrap());
    assert!(!keys(&store).contains(&Key::from_cid(&corrupt_cid)));

    // Counters: the two blocks are gone, and agree with a fresh count.
    let after = store.stats();
    assert_eq!(after.blocks, before.blocks - 2);
    assert_eq!(after.bytes, before.bytes - damaged.len() as u64);
    let listed: Vec<(Key, u64)> = store.entries().map(|e| e.unwrap()).collect();
    assert_eq!(listed.len() as u64, after.blocks);
    assert_eq!(listed.iter().map(|(_, s)| s).sum::<u64>(), after.bytes);

    // A second verify finds nothing damaged; the strays are still reported.
    let again = store.verify(&VerifyOptions::new().repair(true)).unwrap();
    assert!(again.corrupt.is_empty() && again.empty.is_empty());
    assert_eq!(again.ok, blocks.len() as u64 - 2);
    assert_eq!(again.problems(), 3);
    assert_eq!(again.damage().count(), 0);
    // Once they are cleared away by hand, the store is clean, and the
    // damaged blocks can be stored again.
    fs::remove_file(shard_dir.join("notes.txt")).unwrap();
    fs::remove_dir(shard_dir.join("subdir")).unwrap();
    store.delete(&odd).unwrap();
    assert!(store.verify(&VerifyOptions::new()).unwrap().is_clean());
    store.put_block(&corrupt_cid, &corrupt_data).unwrap();
    assert_eq!(
        store.get_block(&corrupt_cid).unwrap(),
        Some(corrupt_data.clone())
    );

    // A store reopened after repair has the same counters.
    let stats = store.stats();
    store.close().unwrap();
    let store = Store::open(root, Options::default()).unwrap();
    assert_eq!(store.stats(), stats);
}

#[test]
fn quarantine_keeps_earlier_copies() {
    let dir = tempdir();
    let (store, blocks) = filled(dir.path(), Durability::None);
    let (c, d) = &blocks[5];
    let path = store.block_path(&Key::from_cid(c));
    for round in 0..2 {
        store.put_block(c, d).unwrap();
        fs::write(&path, format!("damage {round}")).unwrap();
        let r = store.verify(&VerifyOptions::new().repair(true)).unwrap();
        assert_eq!(r.corrupt.len(), 1);
    }
    let q = dir.path().join(".quarantine");
    let name = format!("{}.data", Key::from_cid(c));
    assert_eq!(fs::read(q.join(&name)).unwrap(), b"damage 0");
    assert_eq!(fs::read(q.join(format!("{name}.1"))).unwrap(), b"damage 1");
}

#[test]
fn repair_needs_a_writable_store() {
    let dir = tempdir();
    let (store, _) = filled(dir.path(), Durability::None);
    store.close().unwrap();
    let ro = Store::open(dir.path(), Options::default().read_only(true)).unwrap();
    assert!(ro.verify(&VerifyOptions::new()).unwrap().is_clean());
    assert!(matches!(
        ro.verify(&VerifyOptions::new().repair(true)),
        Err(Error::ReadOnly)
    ));
}
