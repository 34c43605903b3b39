//! Resharding in place: there and back, exclusivity, and a run killed
//! midway that the next open finishes.

mod common;

use std::fs;
use std::path::Path;

use common::child::{self, kill, spawn};
use common::{block, key_of, opts, tempdir};
use flatstore::{Durability, Error, Key, Options, Shard, Store};
use rand::{Rng, SeedableRng};

fn fill(store: &Store, n: u64) -> Vec<(Key, Vec<u8>)> {
    let batch = store.batch().unwrap();
    let blocks: Vec<(Key, Vec<u8>)> = (0..n)
        .map(|i| {
            let d = block(i, 100 + (i as usize % 700));
            (key_of(&d), d)
        })
        .collect();
    for (k, d) in &blocks {
        batch.put(k, d).unwrap();
    }
    batch.commit().unwrap();
    blocks
}

/// Every block is in the directory `shard` gives, and only there.
fn check_layout(root: &Path, shard: Shard, blocks: &[(Key, Vec<u8>)]) {
    assert_eq!(
        fs::read_to_string(root.join("SHARDING")).unwrap(),
        shard.sharding_file()
    );
    for (k, d) in blocks {
        let p = root.join(shard.dir(k)).join(format!("{k}.data"));
        assert_eq!(&fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")), d);
    }
    // Quarantined copies are out of the store; anything else is a stray.
    let files: Vec<_> = common::visible_data_files(root)
        .into_iter()
        .filter(|p| !p.starts_with(".quarantine"))
        .collect();
    assert_eq!(files.len(), blocks.len(), "stray copies left: {files:?}");
}

#[test]
fn reshard_there_and_back() {
    for durability in [Durability::None, Durability::Fsync] {
        let dir = tempdir();
        let root = dir.path().join("s");
        let mut store = Store::open(&root, opts(durability)).unwrap();
        let blocks = fill(&store, 1500);
        let mut calls = 0;
        let s = store
            .reshard(Shard::Prefix(3), &mut |_| calls += 1)
            .unwrap();
        assert_eq!(s.moved, 1500);
        assert_eq!(calls, 1500);
        assert_eq!(store.shard(), Shard::Prefix(3));
        check_layout(&root, Shard::Prefix(3), &blocks);
        // Old two-character directories are gone.
        assert!(fs::read_dir(&root)
            .unwrap()
            .all(|e| e.unwrap().file_name().len() != 2));
        for (k, d) in &blocks {
            assert_eq!(store.get(k).unwrap().as_ref(), Some(d));
        }
        assert_eq!(common::keys(&store).len(), 1500);
        // New writes use the new layout.
        store.put(&Key::new("NEWKEY").unwrap(), b"n").unwrap();
        assert!(root.join("NEW/NEWKEY.data").is_file());
        store.delete(&Key::new("NEWKEY").unwrap()).unwrap();
        let s = store.reshard(Shard::NextToLast(2), &mut |_| {}).unwrap();
        assert_eq!(s.moved, 1500);
        check_layout(&root, Shard::NextToLast(2), &blocks);
        let st = store.stats();
        assert_eq!(st.blocks, 1500);
        store.close().unwrap();
        let store = Store::open(&root, Options::default()).unwrap();
        assert_eq!(store.shard(), Shard::NextToLast(2));
        assert!(common::temp_entries(&root).is_empty());
    }
}

#[test]
fn reshard_needs_the_only_handle() {
    let dir = tempdir();
    let mut store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    let clone = store.clone();
    assert!(matches!(
        store.reshard(Shard::Prefix(2), &mut |_| {}),
        Err(Error::Busy)
    ));
    drop(clone);
    let batch = store.batch().unwrap();
    assert!(matches!(
        store.reshard(Shard::Prefix(2), &mut |_| {}),
        Err(Error::Busy)
    ));
    drop(batch);
    assert!(matches!(
        store.reshard(Shard::Prefix(0), &mut |_| {}),
        Err(Error::InvalidShard { .. })
    ));
    store.reshard(Shard::Prefix(2), &mut |_| {}).unwrap();
    assert_eq!(store.shard(), Shard::Prefix(2));
}

#[test]
fn duplicate_in_old_and_new_place_is_resolved() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let mut store = Store::open(&root, Options::default()).unwrap();
    let blocks = fill(&store, 10);
    // A copy of block 0 already in its prefix/3 place (same bytes), and a
    // different file under block 1's key there.
    let (k0, d0) = &blocks[0];
    let (k1, _) = &blocks[1];
    for (k, bytes) in [(k0, d0.clone()), (k1, b"other".to_vec())] {
        let p = root.join(Shard::Prefix(3).dir(k));
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join(format!("{k}.data")), bytes).unwrap();
    }
    // Block 2: a damaged copy in its old place, a good one in the new.
    let (k2, d2) = &blocks[2];
    fs::write(store.block_path(k2), b"damaged").unwrap();
    let p2 = root.join(Shard::Prefix(3).dir(k2));
    fs::create_dir_all(&p2).unwrap();
    fs::write(p2.join(format!("{k2}.data")), d2).unwrap();
    let s = store.reshard(Shard::Prefix(3), &mut |_| {}).unwrap();
    assert_eq!(
        (s.moved, s.duplicates_removed, s.conflicts_quarantined),
        (7, 1, 2)
    );
    assert_eq!(&store.get(k0).unwrap().unwrap(), d0);
    // The copy that hashes to its key wins, wherever it was; the other one
    // is kept in quarantine.
    assert_eq!(&store.get(k1).unwrap().unwrap(), &blocks[1].1);
    assert_eq!(&store.get(k2).unwrap().unwrap(), d2);
    let quarantined = |k: &Key, suffix: &str| {
        fs::read(root.join(".quarantine").join(format!("{k}.data{suffix}"))).unwrap()
    };
    assert_eq!(quarantined(k1, ""), b"other");
    assert_eq!(quarantined(k2, ""), b"damaged");
    check_layout(&root, Shard::Prefix(3), &blocks);

    // Another conflict on block 1, resharding back: the earlier quarantined
    // copy is kept, the new one goes beside it.
    let back = root.join(Shard::NextToLast(2).dir(k1));
    fs::create_dir_all(&back).unwrap();
    fs::write(back.join(format!("{k1}.data")), b"again").unwrap();
    let s = store.reshard(Shard::NextToLast(2), &mut |_| {}).unwrap();
    assert_eq!((s.moved, s.conflicts_quarantined), (9, 1));
    assert_eq!(&store.get(k1).unwrap().unwrap(), &blocks[1].1);
    assert_eq!(quarantined(k1, ""), b"other");
    assert_eq!(quarantined(k1, ".1"), b"again");
    check_layout(&root, Shard::NextToLast(2), &blocks);
    // Conflicts change the counts: they are recomputed, then exact.
    assert_eq!(common::wait_exact(&store).blocks, 10);
}

/// Child: reshards the store to the given function, saying how far it got.
#[test]
#[ignore = "child process entry point"]
fn child_reshard() {
    let Some(arg) = child::arg() else { return };
    let (root, spec) = arg.split_once('|').unwrap();
    let mut store = Store::open(root, opts(Durability::None)).unwrap();
    child::say("open");
    store
        .reshard(spec.parse().unwrap(), &mut |n| {
            if n % 100 == 0 {
                child::say(&format!("moved {n}"));
            }
        })
        .unwrap();
    child::say("done");
}

#[test]
fn reshard_killed_midway_is_finished_at_open() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    let blocks = fill(&store, 3000);
    drop(store);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let targets = [
        Shard::Prefix(3),
        Shard::NextToLast(2),
        Shard::Suffix(2),
        Shard::NextToLast(2),
    ];
    let mut killed_midway = 0;
    for (i, target) in targets.iter().cycle().take(12).enumerate() {
        let (mut c, lines) = spawn(child::command(
            "child_reshard",
            &format!("{}|{target}", root.to_str().unwrap()),
        ));
        lines.expect("open", 120);
        // Kill after a random number of blocks moved.
        let at = rng.random_range(1..28u64) * 100;
        let said = lines.expect(&format!("moved {at}"), 120);
        assert!(said.starts_with("moved"));
        kill(&mut c);
        if !lines.drain().iter().any(|l| l == "done") {
            killed_midway += 1;
        }
        // Any open finishes the reshard: every block readable, in its new place.
        let store = Store::open(&root, Options::default()).unwrap();
        assert_eq!(store.shard(), *target, "round {i}");
        check_layout(&root, *target, &blocks);
        for (k, d) in blocks.iter().step_by(97) {
            assert_eq!(store.get(k).unwrap().as_ref(), Some(d));
        }
        assert!(common::temp_entries(&root).is_empty());
        let s = common::wait_exact(&store);
        assert_eq!(s.blocks, 3000);
    }
    assert!(killed_midway > 0);
}

#[test]
fn read_only_open_refuses_an_unfinished_reshard() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, Options::default())
        .unwrap()
        .close()
        .unwrap();
    fs::write(
        root.join(".temp/reshard"),
        "flatstore-reshard 1\nfrom /repo/flatfs/shard/v1/next-to-last/2\nto /repo/flatfs/shard/v1/prefix/2\n",
    )
    .unwrap();
    assert!(matches!(
        Store::open(&root, Options::default().read_only(true)),
        Err(Error::NeedsRecovery { .. })
    ));
    let store = Store::open(&root, Options::default()).unwrap();
    assert_eq!(store.shard(), Shard::Prefix(2));
}
