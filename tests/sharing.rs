//! Open handles must not block the store: a block being read can be deleted,
//! a shard directory being read from can be published into, and a staged file
//! held open by someone else (an antivirus scanner, say) delays a commit
//! instead of failing it. On Windows these exercise FILE_SHARE_DELETE opens
//! and the retry on sharing violations; on Linux they hold trivially.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{block, key_of, tempdir};
use flatstore::{Key, Options, Store};

#[test]
fn delete_while_a_reader_holds_the_block() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    let data = block(1, 300_000);
    let key = key_of(&data);
    store.put(&key, &data).unwrap();
    let mut reader = store.reader(&key).unwrap().unwrap();
    let mut head = vec![0u8; 1000];
    reader.read_exact(&mut head).unwrap();
    // Another thread deletes the block while it is open here.
    let deleted = std::thread::scope(|s| s.spawn(|| store.delete(&key).unwrap()).join().unwrap());
    assert!(deleted);
    assert!(!store.has(&key).unwrap());
    // The reader still reads the whole, old data.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    head.extend(rest);
    assert_eq!(head, data);
    drop(reader);
    // And the key can be written again.
    store.put(&key, &data).unwrap();
    assert_eq!(store.get(&key).unwrap().unwrap(), data);
    assert_eq!(store.stats().blocks, 1);
}

#[test]
fn batch_publishes_into_a_directory_whose_blocks_are_being_read() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    // Many blocks in the same shard directory, "DA" (keys ending in "DAZ").
    let held_key = Key::new("HELDAZ").unwrap();
    store.put(&held_key, b"held block").unwrap();
    assert_eq!(store.shard().dir(&held_key), "DA");
    assert_eq!(store.shard().dir(&Key::new("B7DAZ").unwrap()), "DA");
    let mut readers: Vec<_> = (0..5)
        .map(|_| store.reader(&held_key).unwrap().unwrap())
        .collect();
    let batch = store.batch().unwrap();
    for i in 0..200 {
        batch
            .put(&Key::new(&format!("B{i}DAZ")).unwrap(), &block(i, 100))
            .unwrap();
    }
    batch.delete(&held_key).unwrap();
    // A block of the same directory that stays, read over and over while
    // the batch publishes beside it.
    let stays = Key::new("STAYSDAZ").unwrap();
    store.put(&stays, &block(99, 20_000)).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let summary = std::thread::scope(|s| {
        let _done = common::SetOnDrop(&done);
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                assert_eq!(store.get(&stays).unwrap().unwrap(), block(99, 20_000));
                reads += 1;
            }
            reads
        });
        let summary = batch.commit().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        summary
    });
    assert_eq!((summary.written, summary.deleted), (200, 1));
    for r in &mut readers {
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "held block");
    }
    assert_eq!(
        store.get(&Key::new("B7DAZ").unwrap()).unwrap().unwrap(),
        block(7, 100)
    );
    // Where deleting an open file only marks it (Windows without POSIX delete
    // semantics, Wine), the deleted block's name stays in `.temp/` until the
    // last reader closes it; then nothing is left.
    drop(readers);
    assert!(common::temp_entries(store.root()).is_empty());
}

#[test]
fn commit_while_another_handle_holds_a_staged_file() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    let batch = store.batch().unwrap();
    let data = block(3, 5000);
    let key = key_of(&data);
    batch.put(&key, &data).unwrap();
    assert_eq!(batch.get(&key).unwrap().unwrap(), data);
    // Wait for the staged file, then hold it open the way a scanner would.
    // Staged as `b/<shard directory>/<KEY>` in the staging directory.
    let staged = batch
        .staging_dir()
        .join("b")
        .join(store.shard().dir(&key))
        .join(key.as_str());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let holder = loop {
        if let Ok(f) = open_without_share_delete(&staged) {
            if f.metadata().unwrap().len() == 5000 {
                break f;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "staged file never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // On Windows the holder really blocks a rename of the file, so the
    // commit below can only succeed by retrying until it is released.
    #[cfg(windows)]
    {
        let err = std::fs::rename(&staged, staged.with_extension("moved")).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(32),
            "not a sharing violation: {err}"
        );
    }
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
    });
    let summary = batch.commit().unwrap();
    release.join().unwrap();
    assert_eq!(summary.written, 1);
    assert_eq!(store.get(&key).unwrap().unwrap(), data);
    assert!(common::temp_entries(store.root()).is_empty());
}

/// Opens `path` for reading the way most programs do on Windows: sharing
/// read access only, so that the file cannot be renamed or deleted while it
/// is open. Elsewhere, a plain open (nothing blocks a rename there).
fn open_without_share_delete(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_SHARE_READ: u32 = 1;
        options.share_mode(FILE_SHARE_READ);
    }
    options.open(path)
}
