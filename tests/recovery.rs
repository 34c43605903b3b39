//! The recovery rules (DESIGN 4a), a test per row of the table in the
//! crate's recovery module, with real processes for live and dead writers:
//! a child that is alive holds its store open; a dead one was killed.
#![cfg(feature = "fault-injection")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::child::{self, hear, kill, say, spawn, tell};
use common::{block, key_of, opts, temp_entries, tempdir};
use flatstore::fault::{self, FaultKind};
use flatstore::{Accuracy, Durability, Error, Key, Options, Shard, Store};

const BLOCKS: u64 = 40;

fn batch_blocks(seed: u64) -> Vec<(Key, Vec<u8>)> {
    (0..BLOCKS)
        .map(|i| {
            let d = block(seed * 1000 + i, 300 + i as usize);
            (key_of(&d), d)
        })
        .collect()
}

fn read_only() -> Options {
    Options::default().read_only(true)
}

/// The staging directories in `.temp/`.
fn staging_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = temp_entries(root)
        .into_iter()
        .filter(|n| n.starts_with("batch-"))
        .map(|n| root.join(".temp").join(n))
        .collect();
    v.sort();
    v
}

/// Child: opens the store, stages a batch of `BLOCKS` blocks (seed from the
/// argument), says "staged", then waits: "commit" commits it and says
/// "committed"; a kill leaves it staged, uncommitted.
#[test]
#[ignore = "child process entry point"]
fn child_stage_then_wait() {
    let Some(arg) = child::arg() else { return };
    let (root, seed) = arg.split_once('|').unwrap();
    let store = Store::open(root, opts(Durability::None)).unwrap();
    let batch = store.batch().unwrap();
    let blocks = batch_blocks(seed.parse().unwrap());
    for (k, d) in &blocks {
        batch.put(k, d).unwrap();
    }
    for (k, d) in &blocks {
        assert_eq!(batch.get(k).unwrap().as_deref(), Some(&d[..]));
    }
    say("staged");
    if hear() == "commit" {
        let s = batch.commit().unwrap();
        assert_eq!(s.written, BLOCKS);
        store.close().unwrap();
        say("committed");
    }
}

/// Child: commits a batch whose publish fails right after the commit
/// point (the rename after the record's), says "committed-unpublished",
/// and waits to be killed: a dead writer with a committed batch.
#[test]
#[ignore = "child process entry point"]
fn child_commit_point_then_die() {
    let Some(arg) = child::arg() else { return };
    let (root, seed) = arg.split_once('|').unwrap();
    let store = Store::open(root, opts(Durability::None)).unwrap();
    let batch = store.batch().unwrap();
    for (k, d) in batch_blocks(seed.parse().unwrap()) {
        batch.put(&k, &d).unwrap();
    }
    // The record is renamed into place first; the second rename is the
    // first publish.
    fault::inject(FaultKind::Rename, 2, std::io::ErrorKind::Other);
    assert!(batch.commit().is_err());
    fault::clear();
    say("committed-unpublished");
    hear();
}

fn present(store: &Store, seed: u64) -> usize {
    batch_blocks(seed)
        .iter()
        .filter(|(k, d)| store.get(k).unwrap().as_deref() == Some(&d[..]))
        .count()
}

#[test]
fn staging_directory_of_a_live_writer_is_left_alone() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, opts(Durability::None))
        .unwrap()
        .close()
        .unwrap();
    let arg = format!("{}|1", root.display());
    let (mut c, lines) = spawn(child::command("child_stage_then_wait", &arg));
    lines.expect("staged", 120);
    let staged = staging_dirs(&root);
    assert_eq!(staged.len(), 1);
    let before = common::tree(&staged[0]);
    // Another writer and a reader open and close while the batch is staged.
    let writer = Store::open(&root, opts(Durability::None)).unwrap();
    let reader = Store::open(&root, read_only()).unwrap();
    assert_eq!(present(&reader, 1), 0, "nothing of the batch before commit");
    drop(reader);
    writer.close().unwrap();
    assert_eq!(staging_dirs(&root), staged);
    // The child's writers may still be adding files; nothing was removed.
    let after = common::tree(&staged[0]);
    assert!(before.is_subset(&after), "the live batch was touched");
    // The batch commits afterwards, whole.
    tell(&mut c, "commit");
    lines.expect("committed", 120);
    c.wait().unwrap();
    let store = Store::open(&root, read_only()).unwrap();
    assert_eq!(present(&store, 1), BLOCKS as usize);
    assert!(temp_entries(&root).is_empty());
}

#[test]
fn dead_writers_staging_directory_without_record_is_removed_and_ignored_read_only() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let arg = format!("{}|2", root.display());
    let (mut c, lines) = spawn(child::command("child_stage_then_wait", &arg));
    lines.expect("staged", 120);
    kill(&mut c);
    let staged = staging_dirs(&root);
    assert_eq!(staged.len(), 1);
    // Read-only: ignored, left as it was, nothing of it served.
    let reader = Store::open(&root, read_only()).unwrap();
    assert_eq!(present(&reader, 2), 0);
    drop(reader);
    assert_eq!(staging_dirs(&root), staged);
    // Read-write: removed, never published; the owner file goes too.
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    assert_eq!(present(&store, 2), 0);
    assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
    assert_eq!(common::owner_files(&root).len(), 1, "only this writer's");
}

#[test]
fn dead_writers_staging_directory_with_record_is_rolled_forward_and_needs_recovery_read_only() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let arg = format!("{}|3", root.display());
    let (mut c, lines) = spawn(child::command("child_commit_point_then_die", &arg));
    lines.expect("committed-unpublished", 120);
    kill(&mut c);
    let staged = staging_dirs(&root);
    assert_eq!(staged.len(), 1);
    assert!(staged[0].join("COMMIT").is_file());
    // A read-only open would serve part of the batch: it refuses.
    match Store::open(&root, read_only()) {
        Err(Error::NeedsRecovery { path }) => assert!(path.ends_with("s"), "{path:?}"),
        other => panic!("expected NeedsRecovery, got {other:?}"),
    }
    assert_eq!(staging_dirs(&root), staged, "a read-only open changed it");
    // A read-write open rolls it forward: all of it, staging gone.
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    assert_eq!(present(&store, 3), BLOCKS as usize);
    assert!(temp_entries(&root).is_empty());
    // The dead writer's counts were lost; the recount makes them exact.
    let s = common::wait_exact(&store);
    assert_eq!(s.blocks, BLOCKS);
    drop(store);
    // And now a read-only open is fine.
    Store::open(&root, read_only()).unwrap();
}

#[test]
fn record_this_version_cannot_read_is_refused_and_left_untouched() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let arg = format!("{}|4", root.display());
    let (mut c, lines) = spawn(child::command("child_commit_point_then_die", &arg));
    lines.expect("committed-unpublished", 120);
    kill(&mut c);
    let staged = staging_dirs(&root);
    // A record from a newer format.
    fs::write(
        staged[0].join("COMMIT"),
        b"flatstore-commit 99\nsomething new\n",
    )
    .unwrap();
    let before = common::tree(&root);
    for options in [read_only(), opts(Durability::None)] {
        match Store::open(&root, options) {
            Err(Error::CorruptCommitRecord { path, .. }) => {
                assert!(path.ends_with("COMMIT"), "{path:?}");
                assert!(path
                    .parent()
                    .unwrap()
                    .ends_with(staged[0].file_name().unwrap()));
            }
            other => panic!("expected CorruptCommitRecord, got {other:?}"),
        }
        let mut after = common::tree(&root);
        // A failed read-write open may leave its own owner file; nothing else.
        after.retain(|p| !p.to_string_lossy().contains("owner-") || before.contains(p));
        assert_eq!(after, before, "the refused open changed the store");
    }
}

#[test]
fn dead_writers_single_put_temp_file_is_removed_and_ignored_read_only() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, opts(Durability::None))
        .unwrap()
        .close()
        .unwrap();
    // A dead writer's temp file (its owner file is gone: it died, and its
    // owner file was removed by nobody; or an older version's name).
    for name in [
        "put-4242.00000000deadbeef-0",
        "put-7",
        "del-4242.00000000deadbeef-1",
    ] {
        fs::write(root.join(".temp").join(name), b"partial").unwrap();
    }
    Store::open(&root, read_only()).unwrap();
    assert_eq!(
        temp_entries(&root).len(),
        3,
        "a read-only open removed something"
    );
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
    drop(store);
}

/// Child: reshards the store to `prefix/3`, saying "resharding" after the
/// first blocks and pausing there until told to go on.
#[test]
#[ignore = "child process entry point"]
fn child_reshard_slowly() {
    let Some(root) = child::arg() else { return };
    let mut store = Store::open(&root, opts(Durability::None)).unwrap();
    let mut said = false;
    store
        .reshard("prefix/3".parse().unwrap(), &mut |n| {
            if n == 5 && !said {
                said = true;
                say("resharding");
                hear();
            }
        })
        .unwrap();
    say("resharded");
}

#[test]
fn interrupted_reshard_is_finished_read_write_and_refused_read_only() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    let blocks = batch_blocks(5);
    for (k, d) in &blocks {
        store.put(k, d).unwrap();
    }
    store.close().unwrap();
    let (mut c, lines) = spawn(child::command(
        "child_reshard_slowly",
        root.to_str().unwrap(),
    ));
    lines.expect("resharding", 120);
    // While it runs: a reader is told who holds the store; a writer too.
    for options in [read_only(), opts(Durability::None)] {
        match Store::open(&root, options) {
            Err(Error::Locked { holders, .. }) => assert_eq!(holders, vec![c.id()]),
            other => panic!("expected Locked while resharding, got {other:?}"),
        }
    }
    kill(&mut c);
    // Dead midway: a reader needs recovery; a writer finishes the reshard.
    assert!(matches!(
        Store::open(&root, read_only()),
        Err(Error::NeedsRecovery { .. })
    ));
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    assert_eq!(store.shard(), "prefix/3".parse::<Shard>().unwrap());
    for (k, d) in &blocks {
        assert_eq!(store.get(k).unwrap().as_deref(), Some(&d[..]));
    }
    assert_eq!(common::wait_exact(&store).blocks, BLOCKS);
}

#[cfg(unix)]
mod symlinks {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A store whose `.temp` is a symlink to a directory elsewhere: refused
    /// by both kinds of open, and nothing in the target is removed.
    #[test]
    fn temp_that_is_a_symlink_is_refused_and_its_target_untouched() {
        let dir = tempdir();
        let root = dir.path().join("s");
        Store::open(&root, opts(Durability::None))
            .unwrap()
            .close()
            .unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        for name in ["batch-1.aa-0", "put-1.aa-0", "precious"] {
            fs::write(outside.join(name), b"not the store's").unwrap();
        }
        fs::remove_dir_all(root.join(".temp")).unwrap();
        symlink(&outside, root.join(".temp")).unwrap();
        for options in [read_only(), opts(Durability::None)] {
            match Store::open(&root, options) {
                Err(Error::BadStoreEntry { path, .. }) => assert!(path.ends_with(".temp")),
                other => panic!("expected BadStoreEntry, got {other:?}"),
            }
        }
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 3);
    }

    #[test]
    fn shard_directory_or_temp_entry_that_is_a_symlink_is_refused() {
        let dir = tempdir();
        let root = dir.path().join("s");
        let store = Store::open(&root, opts(Durability::None)).unwrap();
        let (k, d) = &batch_blocks(6)[0];
        store.put(k, d).unwrap();
        store.close().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"x").unwrap();
        // A shard directory name that is a symlink out of the root.
        let shard_link = root.join("ZZ");
        symlink(&outside, &shard_link).unwrap();
        for options in [read_only(), opts(Durability::None)] {
            assert!(
                matches!(Store::open(&root, options), Err(Error::BadStoreEntry { ref path, .. }) if *path == shard_link),
            );
        }
        fs::remove_file(&shard_link).unwrap();
        // A dead writer's staging directory that is a symlink.
        let link = root.join(".temp").join("batch-4242.00000000deadbeef-0");
        symlink(&outside, &link).unwrap();
        for options in [read_only(), opts(Durability::None)] {
            assert!(
                matches!(Store::open(&root, options), Err(Error::BadStoreEntry { ref path, .. }) if *path == link),
            );
        }
        assert!(outside.join("precious").exists());
        fs::remove_file(&link).unwrap();
        let store = Store::open(&root, opts(Durability::None)).unwrap();
        assert_eq!(store.get(k).unwrap().as_deref(), Some(&d[..]));
    }
}

#[test]
fn counters_after_a_dead_writer_are_recounted_not_trusted() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let arg = format!("{}|7", root.display());
    // A writer commits a batch, then a second stages one and dies.
    let (mut c, lines) = spawn(child::command("child_stage_then_wait", &arg));
    lines.expect("staged", 120);
    tell(&mut c, "commit");
    lines.expect("committed", 120);
    c.wait().unwrap();
    let cache = fs::read_to_string(root.join("diskUsage.cache")).unwrap();
    assert!(
        cache.contains("\"initial-exact\"") && cache.contains(&format!("\"blocks\":{BLOCKS}")),
        "{cache}"
    );
    let arg = format!("{}|8", root.display());
    let (mut c, lines) = spawn(child::command("child_stage_then_wait", &arg));
    lines.expect("staged", 120);
    kill(&mut c);
    // The reader cannot know what the dead writer changed... but it did
    // not publish anything, and the file still says exact with no writer
    // open: the reader trusts it only because no owner file is live.
    let reader = Store::open(&root, read_only()).unwrap();
    assert_ne!(
        reader.stats().accuracy,
        Accuracy::Exact,
        "a dead owner file remains"
    );
    drop(reader);
    // A writer's open marks the file stale before cleaning up, recounts,
    // and the file is exact again after its close; never deleted.
    fault::hold_recounts();
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    let cache = fs::read_to_string(root.join("diskUsage.cache")).unwrap();
    assert!(cache.contains("\"initial-approximate\""), "{cache}");
    assert_eq!(store.stats().accuracy, Accuracy::Recomputing);
    fault::release_recounts();
    assert_eq!(common::wait_exact(&store).blocks, BLOCKS);
    store.close().unwrap();
    let cache = fs::read_to_string(root.join("diskUsage.cache")).unwrap();
    assert!(cache.contains("\"initial-exact\""), "{cache}");
    let s = Store::open(&root, read_only()).unwrap().stats();
    assert_eq!((s.blocks, s.accuracy), (BLOCKS, Accuracy::Exact));
}
