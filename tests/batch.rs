//! Batches: per-key semantics, read-your-writes, invisibility, discard and
//! drop, concurrent batches, and a commit that fails after its commit point.

mod common;

use std::fs;

use common::{block, key_of, opts, temp_entries, tempdir, visible_data_files};
use flatstore::{Durability, Error, Key, Options, Store};

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// `ops` on one key in one batch, over a store where the key holds `before`:
/// the final state after commit.
fn run_sequence(
    before: Option<&[u8]>,
    ops: &[Option<&[u8]>],
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), opts(Durability::None)).unwrap();
    let key = k("A");
    if let Some(b) = before {
        store.put(&key, b).unwrap();
    }
    let batch = store.batch().unwrap();
    for op in ops {
        match op {
            Some(v) => batch.put(&key, v).unwrap(),
            None => batch.delete(&key).unwrap(),
        }
    }
    let in_batch = batch.get(&key).unwrap();
    assert_eq!(batch.has(&key).unwrap(), in_batch.is_some());
    assert_eq!(
        batch.size(&key).unwrap(),
        in_batch.as_ref().map(|v| v.len() as u64)
    );
    let keys: Vec<Key> = batch.keys().map(|k| k.unwrap()).collect();
    assert_eq!(keys.contains(&key), in_batch.is_some());
    // Nothing visible yet.
    assert_eq!(store.get(&key).unwrap().as_deref(), before);
    batch.commit().unwrap();
    let after = store.get(&key).unwrap();
    assert!(temp_entries(store.root()).is_empty());
    let s = store.stats();
    assert_eq!(s.blocks, after.is_some() as u64);
    assert_eq!(s.bytes, after.as_ref().map_or(0, |v| v.len() as u64));
    (in_batch, after)
}

#[test]
fn put_delete_sequence_table() {
    let (one, two): (&[u8], &[u8]) = (b"1", b"22");
    type Value<'a> = Option<&'a [u8]>;
    let table: &[(Value, &[Value], Value)] = &[
        // (stored before, ops, expected after)
        (None, &[Some(one)], Some(one)),
        (None, &[Some(one), Some(two)], Some(one)), // first put wins
        (None, &[Some(one), None], None),           // put, delete: deleted
        (None, &[Some(one), None, Some(two)], Some(two)), // last op decides
        (None, &[None], None),
        (None, &[None, Some(two)], Some(two)),
        (Some(one), &[None], None),           // delete a stored block
        (Some(one), &[Some(two)], Some(one)), // stored block kept
        (Some(one), &[None, Some(two)], Some(two)), // delete then put replaces
        (Some(one), &[None, Some(two), Some(one)], Some(two)),
        (Some(one), &[Some(two), None], None),
        (Some(one), &[None, Some(two), None], None),
    ];
    for (before, ops, after) in table {
        let (in_batch, got) = run_sequence(*before, ops);
        assert_eq!(got.as_deref(), *after, "before {before:?}, ops {ops:?}");
        // Inside the batch, the batch's own last word is what reads see
        // (except a put over a stored block, which the store keeps).
        if before.is_none() || ops.first() == Some(&None) {
            assert_eq!(
                in_batch.as_deref(),
                *after,
                "in batch: before {before:?}, ops {ops:?}"
            );
        }
    }
}

#[test]
fn reads_see_the_store_beneath_and_nothing_leaks_before_commit() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    let base: Vec<_> = (0..20u64).map(|i| block(i, 200)).collect();
    for d in &base {
        store.put(&key_of(d), d).unwrap();
    }
    let files_before = visible_data_files(store.root());
    let batch = store.batch().unwrap();
    let new: Vec<_> = (100..400u64).map(|i| block(i, 3000)).collect();
    for d in &new {
        batch.put(&key_of(d), d).unwrap();
    }
    batch.delete(&key_of(&base[0])).unwrap();
    // The batch sees the store beneath, its puts and its deletes.
    assert_eq!(batch.get(&key_of(&base[1])).unwrap().unwrap(), base[1]);
    assert_eq!(batch.get(&key_of(&base[0])).unwrap(), None);
    assert!(!batch.has(&key_of(&base[0])).unwrap());
    assert_eq!(batch.get(&key_of(&new[7])).unwrap().unwrap(), new[7]);
    let mut keys: Vec<Key> = batch.keys().map(|k| k.unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 19 + 300, "each key once");
    // The store does not see the batch, and nothing is outside .temp/.
    assert!(store.has(&key_of(&base[0])).unwrap());
    assert!(!store.has(&key_of(&new[7])).unwrap());
    assert_eq!(visible_data_files(store.root()), files_before);
    assert_eq!(common::keys(&store).len(), 20);
    let summary = batch.commit().unwrap();
    assert_eq!(
        (summary.written, summary.deleted, summary.already_present),
        (300, 1, 0)
    );
    assert_eq!(common::keys(&store).len(), 319);
    assert!(temp_entries(store.root()).is_empty());
}

#[test]
fn discard_and_drop_remove_everything() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    for how in ["discard", "drop"] {
        let batch = store.batch().unwrap();
        let staging = batch.staging_dir().to_path_buf();
        for i in 0..100u64 {
            let d = block(i, 5000);
            batch.put(&key_of(&d), &d).unwrap();
        }
        batch.put_reader(&k("STREAMED"), &b"streamed"[..]).unwrap();
        assert!(staging.is_dir());
        match how {
            "discard" => batch.discard().unwrap(),
            _ => drop(batch),
        }
        assert!(!staging.exists(), "{how}");
        assert!(temp_entries(store.root()).is_empty(), "{how}");
        assert!(visible_data_files(store.root()).is_empty(), "{how}");
        assert_eq!(store.stats().blocks, 0);
    }
}

#[test]
fn put_reader_streams_into_the_batch() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    let batch = store.batch().unwrap();
    let data = block(9, 300_000);
    assert_eq!(batch.put_reader(&k("BIG"), &data[..]).unwrap(), 300_000);
    assert_eq!(
        batch.put_reader(&k("BIG"), &b"ignored"[..]).unwrap(),
        0,
        "first put wins"
    );
    assert_eq!(batch.get(&k("BIG")).unwrap().unwrap(), data);
    batch.commit().unwrap();
    assert_eq!(store.get(&k("BIG")).unwrap().unwrap(), data);
}

#[test]
fn empty_batch_commits_nothing() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    let s = store.batch().unwrap().commit().unwrap();
    assert_eq!((s.written, s.deleted, s.bytes), (0, 0, 0));
    assert!(temp_entries(store.root()).is_empty());
}

#[test]
fn four_batches_eight_threads_same_keys() {
    for durability in [Durability::None, Durability::Fsync] {
        let dir = tempdir();
        let store = Store::open(
            dir.path().join("s"),
            opts(durability).batch_memory(256 << 10),
        )
        .unwrap();
        let blocks: Vec<Vec<u8>> = (0..500u64)
            .map(|i| block(i, 100 + (i as usize * 37) % 4000))
            .collect();
        let summaries: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|b| {
                    let (store, blocks) = (&store, &blocks);
                    s.spawn(move || {
                        let batch = store.batch().unwrap();
                        std::thread::scope(|s| {
                            for t in 0..8usize {
                                let batch = &batch;
                                s.spawn(move || {
                                    // Each thread walks the keys from its own offset.
                                    for i in 0..blocks.len() {
                                        let d = &blocks[(i + t * 61 + b * 17) % blocks.len()];
                                        batch.put(&key_of(d), d).unwrap();
                                    }
                                });
                            }
                        });
                        batch.commit().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let written: u64 = summaries.iter().map(|s| s.written).sum();
        let present: u64 = summaries.iter().map(|s| s.already_present).sum();
        assert_eq!(written, 500, "each key written exactly once across batches");
        assert_eq!(present, 1500);
        for d in &blocks {
            assert_eq!(store.get(&key_of(d)).unwrap().as_ref(), Some(d));
        }
        let s = store.stats();
        assert_eq!(s.blocks, 500);
        assert_eq!(s.bytes, blocks.iter().map(|d| d.len() as u64).sum::<u64>());
        assert!(temp_entries(store.root()).is_empty());
    }
}

#[test]
fn commit_failing_after_commit_point_is_finished_at_next_open() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, Options::default()).unwrap();
    let blocks: Vec<Vec<u8>> = (0..200u64).map(|i| block(i, 500)).collect();
    let batch = store.batch().unwrap();
    for d in &blocks {
        batch.put(&key_of(d), d).unwrap();
    }
    let old = block(999, 10);
    store.put(&key_of(&old), &old).unwrap();
    batch.delete(&key_of(&old)).unwrap();
    // A file where one block's shard directory should be.
    let victim = key_of(&blocks[0]);
    let obstacle = root.join(store.shard().dir(&victim));
    if obstacle.exists() {
        fs::remove_dir_all(&obstacle).unwrap();
    }
    fs::write(&obstacle, b"in the way").unwrap();
    let err = batch.commit().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // The staging directory with its commit record stays for the next open.
    let staged = temp_entries(&root);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(root.join(".temp").join(&staged[0]).join("COMMIT").is_file());
    drop(store);
    fs::remove_file(&obstacle).unwrap();
    let store = Store::open(&root, Options::default()).unwrap();
    for d in &blocks {
        assert_eq!(store.get(&key_of(d)).unwrap().as_ref(), Some(d));
    }
    assert!(!store.has(&key_of(&old)).unwrap());
    assert!(temp_entries(&root).is_empty());
    let s = common::wait_exact(&store);
    assert_eq!((s.blocks, s.bytes), (200, 200 * 500));
}

#[test]
fn failed_staging_write_poisons_the_batch_and_leaves_nothing() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, opts(Durability::None).writer_threads(1)).unwrap();
    let batch = store.batch().unwrap();
    let first = block(1, 100);
    batch.put(&key_of(&first), &first).unwrap();
    // Make the staging directory disappear under the writers.
    let staging = batch.staging_dir().to_path_buf();
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::remove_dir_all(&staging).unwrap();
    let mut failed = false;
    for i in 2..200u64 {
        let d = block(i, 100);
        if batch.put(&key_of(&d), &d).is_err() {
            failed = true;
            break;
        }
    }
    let err = batch.commit().unwrap_err();
    assert!(failed || matches!(err, Error::BatchFailed { .. }), "{err}");
    // The write's own error is kept: the staging directory was gone.
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound), "{err}");
    assert!(visible_data_files(&root).is_empty());
    assert!(temp_entries(&root).is_empty());
}

/// `delete A, put A` in one batch replaces a stored A. On Linux the new
/// block is swapped in (`renameat2(RENAME_EXCHANGE)`), so a reader of A
/// finds the old block or the new one at every instant, never neither.
/// Elsewhere the old one is deleted first, and only the outcome is checked,
/// without a reader (on Windows the old file, deleted while a reader holds
/// it, would linger in `.temp/` until the reader closes it).
#[test]
fn a_replace_is_never_absent_to_readers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for durability in [Durability::None, Durability::Fsync] {
        let dir = tempdir();
        let store = Store::open(dir.path().join("s"), opts(durability)).unwrap();
        let a = k("CIQREPLACED");
        let copies: Vec<Vec<u8>> = (0..50).map(|i| block(i, 100 + i as usize)).collect();
        store.put(&a, &copies[0]).unwrap();
        let stop = AtomicBool::new(false);
        let watch = cfg!(target_os = "linux");
        let (reads, absent) = std::thread::scope(|s| {
            let _stop = common::SetOnDrop(&stop);
            let reader = watch.then(|| {
                s.spawn(|| {
                    let (mut reads, mut absent) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        match store.get(&a).unwrap() {
                            Some(got) => assert!(copies.contains(&got), "a partial block"),
                            None => absent += 1,
                        }
                        reads += 1;
                    }
                    (reads, absent)
                })
            });
            for copy in &copies[1..] {
                let b = store.batch().unwrap();
                b.delete(&a).unwrap();
                b.put(&a, copy).unwrap();
                let summary = b.commit().unwrap();
                assert_eq!((summary.deleted, summary.written), (1, 1));
                assert_eq!(store.get(&a).unwrap().as_ref(), Some(copy));
                let stats = store.stats();
                assert_eq!((stats.blocks, stats.bytes), (1, copy.len() as u64));
                assert!(temp_entries(store.root()).is_empty(), "staging left");
            }
            stop.store(true, Ordering::Relaxed);
            reader.map_or((0, 0), |r| r.join().unwrap())
        });
        if watch {
            assert!(reads > 0);
            assert_eq!(
                absent, 0,
                "{durability:?}: A absent in {absent} of {reads} reads"
            );
        }
        assert_eq!(visible_data_files(store.root()).len(), 1);
    }
}
