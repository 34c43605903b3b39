//! A full disk: on a small tmpfs mounted by the test (Linux, root; skipped
//! with a printed reason where mounting is impossible), puts and batches
//! that do not fit fail with an error that says so (`ENOSPC`), leave nothing
//! visible and nothing in `.temp/`, keep every older block intact, and the
//! store works again, also after a reopen, once space is freed.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use common::mount::{skip, Mount};
use common::{block, key_of, opts, temp_entries, visible_data_files};
use flatstore::{Durability, Error, ImportOptions, Key, Store};

const FS_SIZE: u64 = 24 << 20;

/// Whether `e` is (or reports) a full disk.
fn is_enospc(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
        Error::CountersNotSaved { source, .. } => is_enospc(source),
        // A failed background write keeps its error as the source.
        Error::BatchFailed { source } => is_enospc(source),
        _ => false,
    }
}

fn mount(test: &str) -> Option<Mount> {
    match Mount::tmpfs(FS_SIZE) {
        Ok(m) => Some(m),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

type Model = BTreeMap<Key, Vec<u8>>;

/// The store holds exactly `model`: keys, contents, files and counters.
fn assert_holds(store: &Store, model: &Model, what: &str) {
    assert_eq!(
        common::keys(store),
        model.keys().cloned().collect::<Vec<_>>(),
        "{what}: keys"
    );
    for (k, d) in model {
        assert_eq!(
            store.get(k).unwrap().as_ref(),
            Some(d),
            "{what}: block {k} changed"
        );
    }
    assert_eq!(
        visible_data_files(store.root()).len(),
        model.len(),
        "{what}: block files"
    );
    let s = common::wait_exact(store);
    assert_eq!(s.blocks, model.len() as u64, "{what}: block counter");
    assert_eq!(
        s.bytes,
        model.values().map(|d| d.len() as u64).sum::<u64>(),
        "{what}: byte counter"
    );
}

/// Stages `blocks` and a delete of `delete` in one batch and commits it. A
/// failing put ends the batch with an explicit discard, which must succeed.
fn commit_batch(store: &Store, blocks: &[Vec<u8>], delete: &Key) -> Result<(), Error> {
    let batch = store.batch()?;
    batch.delete(delete)?;
    for d in blocks {
        if let Err(e) = batch.put(&key_of(d), d) {
            batch
                .discard()
                .expect("discard a failed batch on a full disk");
            return Err(e);
        }
    }
    batch.commit().map(|_| ())
}

/// Writes a file of zeros of (about) `len` bytes at `path`, or until the disk
/// is full; returns the bytes written.
fn fill(path: &Path, len: u64) -> u64 {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0;
    while written < len {
        let n = chunk.len().min((len - written) as usize);
        match f.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    written
}

#[test]
fn batch_that_does_not_fit_fails_and_leaves_nothing() {
    let Some(mnt) = mount("batch_that_does_not_fit_fails_and_leaves_nothing") else {
        return;
    };
    for (round, durability) in [Durability::None, Durability::Fsync]
        .into_iter()
        .enumerate()
    {
        let root = mnt.path().join(format!("s{round}"));
        let store = Store::open(&root, opts(durability)).unwrap();
        let mut model = Model::new();
        // 4 MiB of older blocks.
        for i in 0..64u64 {
            let d = block(round as u64 * 10_000 + i, 64 << 10);
            store.put(&key_of(&d), &d).unwrap();
            model.insert(key_of(&d), d);
        }
        let files_before = visible_data_files(&root);
        // A batch of 25 MiB cannot fit in what is left of 24 MiB.
        let big: Vec<Vec<u8>> = (0..400u64)
            .map(|i| block(round as u64 * 10_000 + 1000 + i, 64 << 10))
            .collect();
        let victim = model.keys().next().unwrap().clone();
        let err = commit_batch(&store, &big, &victim).expect_err("a 25 MiB batch fit in 24 MiB");
        assert!(is_enospc(&err), "not reported as a full disk: {err}");
        eprintln!("{durability:?}: batch failed with: {err}");
        // Nothing of it is visible, the delete was not applied, the older
        // blocks are intact, and the staging directory is gone.
        assert_eq!(visible_data_files(&root), files_before);
        for d in &big {
            assert!(!store.has(&key_of(d)).unwrap());
        }
        assert_holds(&store, &model, "after the failed batch");
        assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));

        // Free space by deleting some blocks: a batch that fits now commits,
        // including its delete.
        for k in model.keys().skip(1).take(16).cloned().collect::<Vec<_>>() {
            assert!(store.delete(&k).unwrap());
            model.remove(&k);
        }
        let fits = &big[..100];
        commit_batch(&store, fits, &victim).unwrap();
        model.remove(&victim);
        for d in fits {
            model.insert(key_of(d), d.clone());
        }
        assert_holds(&store, &model, "after a batch that fits");
        assert!(temp_entries(&root).is_empty());

        // And after a reopen.
        store.close().unwrap();
        let store = Store::open(&root, opts(durability)).unwrap();
        assert!(temp_entries(&root).is_empty());
        assert_holds(&store, &model, "after reopen");
        let d = block(round as u64 * 10_000 + 9999, 1000);
        store.put(&key_of(&d), &d).unwrap();
        model.insert(key_of(&d), d);
        assert_holds(&store, &model, "after a put following reopen");
        // Leave room for the next round.
        drop(store);
        fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn put_on_a_full_disk_fails_and_leaves_nothing() {
    let Some(mnt) = mount("put_on_a_full_disk_fails_and_leaves_nothing") else {
        return;
    };
    for (round, durability) in [Durability::None, Durability::Fsync]
        .into_iter()
        .enumerate()
    {
        let seed = round as u64 * 100_000;
        let root = mnt.path().join(format!("s{round}"));
        let store = Store::open(&root, opts(durability)).unwrap();
        let mut model = Model::new();

        // A block larger than the whole filesystem.
        let huge = block(seed + 1, 30 << 20);
        let err = store.put(&key_of(&huge), &huge).unwrap_err();
        assert!(is_enospc(&err), "{err}");
        assert!(!store.block_path(&key_of(&huge)).exists());
        assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
        assert_holds(&store, &model, "after a huge put");

        // The same through put_reader.
        let err = store
            .put_reader(&key_of(&huge), &huge[..])
            .expect_err("30 MiB fit in 24 MiB");
        assert!(is_enospc(&err), "{err}");
        assert!(temp_entries(&root).is_empty());

        // Fill with 256 KiB blocks until a put fails.
        let mut failed = None;
        for i in 0..200u64 {
            let d = block(seed + 100 + i, 256 << 10);
            match store.put(&key_of(&d), &d) {
                Ok(()) => {
                    model.insert(key_of(&d), d);
                }
                Err(e) => {
                    assert!(is_enospc(&e), "{e}");
                    failed = Some(d);
                    break;
                }
            }
        }
        let failed = failed.expect("a 24 MiB tmpfs never filled up");
        eprintln!(
            "{durability:?}: full after {} blocks of 256 KiB",
            model.len()
        );
        let fk = key_of(&failed);
        assert!(!store.has(&fk).unwrap());
        assert!(!store.block_path(&fk).exists(), "partial block file");
        assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
        assert_holds(&store, &model, "when full");
        // Reads work on a full disk, and so does deleting.
        let gone: Vec<Key> = model.keys().take(4).cloned().collect();
        for k in &gone {
            assert!(store.delete(k).unwrap());
            model.remove(k);
        }
        // The put that failed succeeds now.
        store.put(&fk, &failed).unwrap();
        model.insert(fk, failed);
        assert_holds(&store, &model, "after freeing space");

        store.close().unwrap();
        let store = Store::open(&root, opts(durability)).unwrap();
        assert_holds(&store, &model, "after reopen");
        drop(store);
        fs::remove_dir_all(&root).unwrap();
    }
}

/// Batches whose size sweeps across the free space left by a filler file:
/// each commits whole or fails with ENOSPC leaving nothing, whichever step
/// ran out of space (a staged block or the commit record).
#[test]
fn batch_at_the_edge_of_full_is_all_or_nothing() {
    let Some(mnt) = mount("batch_at_the_edge_of_full_is_all_or_nothing") else {
        return;
    };
    let root = mnt.path().join("s");
    let filler = mnt.path().join("filler");
    let mut model = Model::new();
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    for i in 0..32u64 {
        let d = block(i, 4096 + i as usize);
        store.put(&key_of(&d), &d).unwrap();
        model.insert(key_of(&d), d);
    }
    let (mut whole, mut none) = (0, 0);
    let mut failed_at = std::collections::BTreeSet::new();
    let block_len = 16 << 10;
    let count = 64usize;
    for trial in 0..24u64 {
        // Leave room for the staged blocks plus -4 ... +19 pages, so that
        // the space runs out at each step in turn: the staged writes, the
        // commit record, or nowhere.
        let pages = trial as i64 - 4;
        let want = (count * block_len) as i64 + pages * 4096;
        let free = mnt.free_bytes() as i64;
        fill(&filler, (free - want) as u64);
        let blocks: Vec<Vec<u8>> = (0..count as u64)
            .map(|i| block(1_000_000 * (trial + 1) + i, block_len))
            .collect();
        let victim = model
            .keys()
            .nth(trial as usize % model.len())
            .unwrap()
            .clone();
        match commit_batch(&store, &blocks, &victim) {
            Ok(()) => {
                whole += 1;
                model.remove(&victim);
                for d in &blocks {
                    model.insert(key_of(d), d.clone());
                }
            }
            Err(e) => {
                assert!(is_enospc(&e), "trial {trial}: {e}");
                let msg = e.to_string();
                failed_at.insert(if msg.contains("COMMIT") {
                    "commit record"
                } else if msg.contains("/.temp/batch-") {
                    "staged block"
                } else {
                    "elsewhere"
                });
                none += 1;
            }
        }
        assert!(
            temp_entries(&root).is_empty(),
            "trial {trial}: {:?}",
            temp_entries(&root)
        );
        assert_holds(&store, &model, &format!("trial {trial}"));
        // Reset: drop this trial's blocks (if committed) and the filler.
        fs::remove_file(&filler).unwrap();
        for d in &blocks {
            if model.remove(&key_of(d)).is_some() {
                assert!(store.delete(&key_of(d)).unwrap());
            }
        }
        if !model.contains_key(&victim) {
            let d = block(7_000_000 + trial, 4096);
            store.put(&key_of(&d), &d).unwrap();
            model.insert(key_of(&d), d);
        }
    }
    eprintln!(
        "{whole} batches committed whole, {none} failed with nothing visible \
         (out of space writing: {failed_at:?})"
    );
    assert!(
        whole > 0 && none > 0,
        "the sweep missed the edge: {whole} whole, {none} failed"
    );
    store.close().unwrap();
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    assert_holds(&store, &model, "after reopen");
}

/// Closing on a full disk (the counters cannot be written) reports the
/// failure or succeeds; a reopen on the still-full disk works for reads and
/// refuses puts with ENOSPC, and the counters come out exact.
#[test]
fn close_and_reopen_on_a_full_disk() {
    let Some(mnt) = mount("close_and_reopen_on_a_full_disk") else {
        return;
    };
    let root = mnt.path().join("s");
    let filler = mnt.path().join("filler");
    let mut model = Model::new();
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    for i in 0..100u64 {
        let d = block(i, 10_000 + i as usize);
        store.put(&key_of(&d), &d).unwrap();
        model.insert(key_of(&d), d);
    }
    fill(&filler, u64::MAX);
    assert!(mnt.free_bytes() < 4096, "{}", mnt.free_bytes());
    match store.close() {
        Ok(()) => eprintln!("close on a full disk succeeded"),
        Err(e) => {
            assert!(is_enospc(&e), "{e}");
            eprintln!("close on a full disk failed: {e}");
        }
    }
    let leftovers: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files in the root: {leftovers:?}"
    );

    let store = Store::open(&root, opts(Durability::Fsync)).expect("open on a full disk");
    assert_holds(&store, &model, "reopened on a full disk");
    let d = block(999, 50_000);
    let err = store.put(&key_of(&d), &d).unwrap_err();
    assert!(is_enospc(&err), "{err}");
    assert!(temp_entries(&root).is_empty());
    fs::remove_file(&filler).unwrap();
    store.put(&key_of(&d), &d).unwrap();
    model.insert(key_of(&d), d);
    assert_holds(&store, &model, "after freeing space");
    store.close().unwrap();
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    assert_holds(&store, &model, "after a clean reopen");
}

/// A CAR v1 holding `blocks` as raw sha2-256 blocks (in memory).
fn car_of(blocks: &[Vec<u8>]) -> Vec<u8> {
    use flatstore::car::CarWriter;
    use flatstore::cid::Cid;
    let cid = |d: &[u8]| Cid::new_v1(0x55, key_of(d).to_multihash().unwrap());
    let mut w = CarWriter::new(Vec::new(), &[cid(&blocks[0])]).unwrap();
    for d in blocks {
        w.write_block(&cid(d), d).unwrap();
    }
    w.finish().unwrap()
}

/// A CAR import that does not fit fails with ENOSPC, leaves nothing of the
/// CAR visible and nothing in `.temp/`, keeps the older blocks; once space
/// is freed an import works, also after a reopen.
#[test]
fn car_import_on_a_full_disk_fails_and_leaves_nothing() {
    let Some(mnt) = mount("car_import_on_a_full_disk_fails_and_leaves_nothing") else {
        return;
    };
    let root = mnt.path().join("s");
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    let mut model = Model::new();
    for i in 0..64u64 {
        let d = block(500_000 + i, 64 << 10);
        store.put(&key_of(&d), &d).unwrap();
        model.insert(key_of(&d), d);
    }
    let files_before = visible_data_files(&root);
    // 25 MiB of blocks cannot fit in what is left of 24 MiB.
    let big: Vec<Vec<u8>> = (0..400u64).map(|i| block(600_000 + i, 64 << 10)).collect();
    let err = store
        .import_car(&car_of(&big)[..], &ImportOptions::default())
        .expect_err("a 25 MiB CAR fit in 24 MiB");
    assert!(is_enospc(&err), "not reported as a full disk: {err}");
    eprintln!("CAR import failed with: {err}");
    assert_eq!(visible_data_files(&root), files_before);
    for d in &big {
        assert!(!store.has(&key_of(d)).unwrap());
    }
    assert_holds(&store, &model, "after the failed import");
    assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));

    for k in model.keys().take(16).cloned().collect::<Vec<_>>() {
        assert!(store.delete(&k).unwrap());
        model.remove(&k);
    }
    let fits = &big[..100];
    let summary = store
        .import_car(&car_of(fits)[..], &ImportOptions::default())
        .unwrap();
    assert_eq!((summary.blocks, summary.written), (100, 100));
    for d in fits {
        model.insert(key_of(d), d.clone());
    }
    assert_holds(&store, &model, "after an import that fits");
    assert!(temp_entries(&root).is_empty());
    store.close().unwrap();
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    assert_holds(&store, &model, "after reopen");
}

/// Out of inodes rather than bytes (a tmpfs with few inodes): batches whose
/// last free inodes run out at each step in turn (the staged files, the
/// commit record, a new shard directory after the commit point). Each
/// commits whole, or fails with ENOSPC; a failure before the commit point
/// leaves nothing, one after it is finished by the next open once inodes
/// are free again. Either way the older blocks are intact and `.temp/` ends
/// empty.
#[test]
fn batch_running_out_of_inodes_is_all_or_nothing_after_reopen() {
    let Some(mnt) = (match Mount::tmpfs_with("size=24m,nr_inodes=400") {
        Ok(m) => Some(m),
        Err(reason) => {
            skip(
                "batch_running_out_of_inodes_is_all_or_nothing_after_reopen",
                &reason,
            );
            None
        }
    }) else {
        return;
    };
    const M: u64 = 10;
    let mut outcomes = BTreeMap::<&str, u32>::new();
    let trials = 3 * M + 4;
    for k in 0..trials {
        let root = mnt.path().join(format!("s{k}"));
        let filler = mnt.path().join("filler");
        let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
        let mut model = Model::new();
        for i in 0..8u64 {
            let d = block(k * 1000 + i, 1000);
            store.put(&key_of(&d), &d).unwrap();
            model.insert(key_of(&d), d);
        }
        let blocks: Vec<Vec<u8>> = (0..M).map(|i| block(k * 1000 + 100 + i, 1000)).collect();
        let batch = store.batch().unwrap();
        // Leave exactly k inodes free.
        fs::create_dir(&filler).unwrap();
        let mut n = 0;
        while mnt.free_inodes() > k {
            fs::File::create(filler.join(n.to_string())).unwrap();
            n += 1;
        }
        let mut result = Ok(());
        for d in &blocks {
            if let Err(e) = batch.put(&key_of(d), d) {
                result = Err(e);
                break;
            }
        }
        let result = match result {
            Ok(()) => batch.commit().map(|_| ()),
            Err(e) => {
                drop(batch);
                Err(e)
            }
        };
        let outcome = match &result {
            Ok(()) => "whole",
            Err(e) => {
                assert!(is_enospc(e), "{k} free inodes: {e}");
                let pending = temp_entries(&root)
                    .iter()
                    .any(|e| root.join(".temp").join(e).join("COMMIT").exists());
                if pending {
                    "failed after the commit point"
                } else {
                    "failed before the commit point"
                }
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
        let committed = outcome != "failed before the commit point";
        if outcome == "failed before the commit point" {
            assert!(
                temp_entries(&root).is_empty(),
                "{k}: {:?}",
                temp_entries(&root)
            );
            assert_holds(&store, &model, &format!("{k} free inodes, {outcome}"));
        }
        if committed {
            for d in &blocks {
                model.insert(key_of(d), d.clone());
            }
        }
        if outcome == "failed after the commit point" {
            // Until the next open, the batch may be partly visible.
            let visible = blocks
                .iter()
                .filter(|d| store.has(&key_of(d)).unwrap())
                .count();
            drop(store);
            // Reopening while still out of inodes: recovery cannot finish.
            let early = Store::open(&root, opts(Durability::Fsync)).map(drop);
            eprintln!(
                "{k} free inodes: failed after the commit point, {visible} of {M} blocks \
                 visible before reopen; reopen while still full: {early:?}"
            );
        } else {
            drop(store);
        }
        // Free the inodes, reopen: the batch is all there or not at all.
        fs::remove_dir_all(&filler).unwrap();
        let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
        assert!(
            temp_entries(&root).is_empty(),
            "{k}: {:?}",
            temp_entries(&root)
        );
        assert_holds(
            &store,
            &model,
            &format!("{k} free inodes, {outcome}, reopened"),
        );
        drop(store);
        fs::remove_dir_all(&root).unwrap();
    }
    eprintln!("outcomes over {trials} trials: {outcomes:?}");
    assert!(outcomes.contains_key("whole"), "{outcomes:?}");
}

/// A commit whose new shard directories cannot all be made (out of inodes)
/// fails before its commit point: the commit creates every directory its
/// puts need before writing the commit record, so nothing of the batch is
/// visible, and the store reopens. (Before that ordering, the failure came
/// after the commit record: a partial batch was visible and recovery could
/// not finish until inodes were freed by other means.)
#[test]
fn commit_out_of_inodes_for_shard_directories_fails_cleanly() {
    let test = "commit_out_of_inodes_for_shard_directories_fails_cleanly";
    let Some(mnt) = (match Mount::tmpfs_with("size=24m,nr_inodes=400") {
        Ok(m) => Some(m),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }) else {
        return;
    };
    let root = mnt.path().join("s");
    let filler = mnt.path().join("filler");
    let store = Store::open(&root, opts(Durability::Fsync)).unwrap();
    let mut model = Model::new();
    for i in 0..4u64 {
        let d = block(i, 1000);
        store.put(&key_of(&d), &d).unwrap();
        model.insert(key_of(&d), d);
    }
    // Ten blocks, each in a shard directory of its own that does not exist yet.
    let mut dirs = std::collections::BTreeSet::new();
    let blocks: Vec<Vec<u8>> = (100..)
        .map(|i| block(i, 1000))
        .filter(|d| {
            let dir = store.shard().dir(&key_of(d));
            !root.join(&dir).exists() && dirs.insert(dir)
        })
        .take(10)
        .collect();
    let batch = store.batch().unwrap();
    for d in &blocks {
        // put_reader writes on the calling thread: staged when it returns.
        batch.put_reader(&key_of(d), &d[..]).unwrap();
    }
    // Inodes for the commit record and three of the ten directories.
    fs::create_dir(&filler).unwrap();
    let mut n = 0;
    while mnt.free_inodes() > 4 {
        fs::File::create(filler.join(n.to_string())).unwrap();
        n += 1;
    }
    let err = batch
        .commit()
        .expect_err("ten directories made with three inodes");
    assert!(is_enospc(&err), "{err}");
    let visible = blocks
        .iter()
        .filter(|d| store.has(&key_of(d)).unwrap())
        .count();
    assert_eq!(visible, 0, "the failed batch is partly visible");
    assert_holds(&store, &model, "after the failed commit");
    drop(store);
    // Still out of inodes: the store opens, and deleting makes room.
    let store = Store::open(&root, opts(Durability::Fsync)).expect("reopen while out of inodes");
    assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
    assert_holds(&store, &model, "reopened while out of inodes");
}
