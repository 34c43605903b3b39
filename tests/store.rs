//! The single-block operations, run as one conformance suite against every
//! durability and shard function, plus open/close/read-only behaviour.

mod common;

use std::fs;

use common::{block, key_of, opts, tempdir};
use flatstore::{Accuracy, Durability, Error, Key, Options, Shard, Store};

#[test]
fn conformance_every_durability_and_shard() {
    for durability in [Durability::None, Durability::Fsync] {
        for shard in [
            Shard::NextToLast(2),
            Shard::Prefix(3),
            Shard::Suffix(1),
            Shard::NextToLast(3),
        ] {
            common::conformance::run_all(&|| {
                let dir = tempdir();
                let store =
                    Store::open(dir.path().join("s"), opts(durability).shard(shard)).unwrap();
                (store, Box::new(dir))
            });
        }
    }
}

#[test]
fn counters_survive_clean_close() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, Options::default()).unwrap();
    let mut bytes = 0;
    for i in 0..40u64 {
        let d = block(i, 10 * i as usize);
        bytes += d.len() as u64;
        store.put(&key_of(&d), &d).unwrap();
    }
    store.delete(&key_of(&block(3, 30))).unwrap();
    bytes -= 30;
    store.close().unwrap();
    let cache = fs::read_to_string(root.join("diskUsage.cache")).unwrap();
    assert_eq!(
        cache,
        format!(
            "{{\"diskUsage\":{bytes},\"accuracy\":\"initial-exact\",\"blocks\":39,\"generation\":0}}"
        )
    );
    let store = Store::open(&root, Options::default()).unwrap();
    let s = store.stats();
    assert_eq!(
        (s.blocks, s.bytes, s.accuracy),
        (39, bytes, Accuracy::Exact)
    );
    // While open read-write the cache stays (a crash is noticed by the
    // writer's owner file instead), and a second writer sees it exact too
    // only while the first is not open.
    assert!(root.join("diskUsage.cache").exists());
    assert_eq!(common::owner_files(&root).len(), 1);
    let second = Store::open(&root, Options::default()).unwrap();
    assert_eq!(second.stats().accuracy, Accuracy::Approximate);
    drop(store);
    assert_eq!(second.stats().accuracy, Accuracy::Exact);
}

#[test]
fn counters_recomputed_without_cache() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, Options::default()).unwrap();
    for i in 0..100u64 {
        let d = block(i, 100);
        store.put(&key_of(&d), &d).unwrap();
    }
    store.close().unwrap();
    fs::remove_file(root.join("diskUsage.cache")).unwrap();
    let store = Store::open(&root, Options::default()).unwrap();
    let s = common::wait_exact(&store);
    assert_eq!((s.blocks, s.bytes), (100, 10_000));
}

#[test]
fn handles_in_one_process_share_and_reshard_needs_the_only_one() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, Options::default()).unwrap();
    // Writers share, in one process as across processes.
    let second = Store::open(&root, Options::default()).unwrap();
    let reader = Store::open(&root, Options::default().read_only(true)).unwrap();
    second.put(&Key::new("CIQSHARED").unwrap(), b"x").unwrap();
    assert_eq!(
        store
            .get(&Key::new("CIQSHARED").unwrap())
            .unwrap()
            .as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        reader
            .get(&Key::new("CIQSHARED").unwrap())
            .unwrap()
            .as_deref(),
        Some(&b"x"[..])
    );
    drop(reader);
    // Exclusive work needs the only read-write handle of the store here.
    let mut store = store;
    let target: Shard = "prefix/2".parse().unwrap();
    assert!(matches!(
        store.reshard(target, &mut |_| {}),
        Err(Error::Busy)
    ));
    let batch = second.batch().unwrap();
    drop(second);
    // The batch keeps its store open.
    assert!(matches!(
        store.reshard(target, &mut |_| {}),
        Err(Error::Busy)
    ));
    drop(batch);
    store.reshard(target, &mut |_| {}).unwrap();
    assert_eq!(store.shard(), target);
}

#[test]
fn read_only_refuses_writes_and_shares() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let key = Key::new("CIQRO").unwrap();
    let store = Store::open(&root, Options::default()).unwrap();
    store.put(&key, b"x").unwrap();
    store.close().unwrap();
    let a = Store::open(&root, Options::default().read_only(true)).unwrap();
    let b = Store::open(&root, Options::default().read_only(true)).unwrap();
    assert_eq!(a.get(&key).unwrap().unwrap(), b"x");
    assert_eq!(b.stats().blocks, 1);
    assert!(matches!(a.put(&key, b"y"), Err(Error::ReadOnly)));
    assert!(matches!(a.delete(&key), Err(Error::ReadOnly)));
    assert!(matches!(a.batch(), Err(Error::ReadOnly)));
    // Readers never keep a writer out.
    let w = Store::open(&root, Options::default()).unwrap();
    w.put(&Key::new("CIQRW").unwrap(), b"y").unwrap();
    assert_eq!(a.get(&Key::new("CIQRW").unwrap()).unwrap().unwrap(), b"y");
    drop((a, b, w));
    assert!(matches!(
        Store::open(
            dir.path().join("missing"),
            Options::default().read_only(true)
        ),
        Err(Error::NoStore { .. })
    ));
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn refuses_what_is_not_a_store() {
    let dir = tempdir();
    // A non-empty directory without SHARDING: refused, and nothing written.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("precious.txt"), b"mine").unwrap();
    let before = common::tree(&other);
    assert!(matches!(
        Store::open(&other, Options::default()),
        Err(Error::NotAStore { .. })
    ));
    assert_eq!(common::tree(&other), before);
    // Names a store uses, but without SHARDING: somebody else's, left alone.
    for (i, name) in ["_README", ".temp"].into_iter().enumerate() {
        let d = dir.path().join(format!("named{i}"));
        fs::create_dir(&d).unwrap();
        if name == ".temp" {
            fs::create_dir(d.join(name)).unwrap();
            fs::write(d.join(name).join("put-1"), b"theirs").unwrap();
        } else {
            fs::write(d.join(name), b"their readme").unwrap();
        }
        let before = common::tree(&d);
        assert!(
            matches!(
                Store::open(&d, Options::default()),
                Err(Error::NotAStore { .. })
            ),
            "{name}"
        );
        assert_eq!(common::tree(&d), before, "{name}");
    }
    // A file, not a directory.
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Store::open(&file, Options::default()),
        Err(Error::NotAStore { .. })
    ));
    // create(false) on a missing store.
    let missing = dir.path().join("missing");
    assert!(matches!(
        Store::open(&missing, Options::default().create(false)),
        Err(Error::NoStore { .. })
    ));
    assert!(!missing.exists());
    // A shard parameter < 1.
    assert!(matches!(
        Store::open(&missing, Options::default().shard(Shard::Prefix(0))),
        Err(Error::InvalidShard { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn corrupt_sharding_is_refused_and_untouched() {
    let dir = tempdir();
    for (i, bad) in [
        &b"/repo/flatfs/shard/v1/next-to-last/0\n"[..],
        b"/repo/flatfs/shard/v1/sideways/2\n",
        b"/repo/flatfs/shard/v2/prefix/2\n",
        b"",
        b"\xff\xfe",
        b"/repo/flatfs/shard/v1/prefix/two\n",
    ]
    .iter()
    .enumerate()
    {
        let root = dir.path().join(format!("s{i}"));
        fs::create_dir(&root).unwrap();
        fs::write(root.join("SHARDING"), bad).unwrap();
        let before = common::tree(&root);
        let r = Store::open(&root, Options::default());
        assert!(
            matches!(r, Err(Error::CorruptSharding { .. })),
            "{bad:?}: {r:?}"
        );
        assert_eq!(
            common::tree(&root),
            before,
            "open wrote into a corrupt store"
        );
    }
}

#[test]
fn sharding_mismatch_and_existing_shard_used() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, Options::default().shard(Shard::Prefix(2)))
        .unwrap()
        .close()
        .unwrap();
    let r = Store::open(&root, Options::default().shard(Shard::NextToLast(2)));
    assert!(matches!(
        r,
        Err(Error::ShardingMismatch {
            existing: Shard::Prefix(2),
            requested: Shard::NextToLast(2)
        })
    ));
    let store = Store::open(&root, Options::default()).unwrap();
    assert_eq!(store.shard(), Shard::Prefix(2));
}

#[test]
fn stale_temp_files_removed_at_open() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, Options::default())
        .unwrap()
        .close()
        .unwrap();
    fs::write(root.join(".temp/put-17"), b"half a blo").unwrap();
    fs::write(root.join(".temp/del-3"), b"deleted").unwrap();
    fs::create_dir(root.join(".temp/batch-1-2-0")).unwrap();
    fs::write(root.join(".temp/batch-1-2-0/0"), b"staged").unwrap();
    let store = Store::open(&root, Options::default()).unwrap();
    assert!(common::temp_entries(&root).is_empty());
    assert!(common::keys(&store).is_empty());
}

#[test]
fn sync_and_close_report_ok() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), opts(Durability::None)).unwrap();
    let d = block(1, 10);
    store.put(&key_of(&d), &d).unwrap();
    store.sync().unwrap();
    let clone = store.clone();
    clone.close().unwrap();
    assert_eq!(store.get(&key_of(&d)).unwrap().unwrap(), d);
    store.close().unwrap();
}
