//! Backend-agnostic behaviour every store configuration must show. Each
//! function gets a fresh, empty store.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};

use flatstore::{Accuracy, Key, Store};

use super::{block, key_of, keys};

/// put, get, has, size, delete, and the counters.
pub fn put_get_delete(store: &Store) {
    let data = block(1, 1000);
    let key = key_of(&data);
    assert!(!store.has(&key).unwrap());
    assert_eq!(store.get(&key).unwrap(), None);
    assert_eq!(store.size(&key).unwrap(), None);
    store.put(&key, &data).unwrap();
    assert!(store.has(&key).unwrap());
    assert_eq!(store.get(&key).unwrap().unwrap(), data);
    assert_eq!(store.size(&key).unwrap(), Some(1000));
    // The file is exactly the block's bytes, where the shard function says.
    let path = store
        .root()
        .join(store.shard().dir(&key))
        .join(format!("{key}.data"));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(store.block_path(&key), path);
    let s = store.stats();
    assert_eq!((s.blocks, s.bytes, s.accuracy), (1, 1000, Accuracy::Exact));
    assert!(store.delete(&key).unwrap());
    assert!(!store.delete(&key).unwrap(), "delete is idempotent");
    assert!(!store.has(&key).unwrap());
    assert!(!path.exists());
    let s = store.stats();
    assert_eq!((s.blocks, s.bytes), (0, 0));
}

/// A put of a present key keeps the first block and does not rewrite it.
pub fn first_writer_wins(store: &Store) {
    let key = Key::new("CIQSAMEKEY").unwrap();
    store.put(&key, b"first").unwrap();
    let path = store.block_path(&key);
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    store.put(&key, b"second, longer").unwrap();
    assert_eq!(store.get(&key).unwrap().unwrap(), b"first");
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(store.stats().bytes, 5);
    // To replace, delete first.
    store.delete(&key).unwrap();
    store.put(&key, b"second").unwrap();
    assert_eq!(store.get(&key).unwrap().unwrap(), b"second");
}

/// Ranges, readers, streaming puts, empty blocks.
pub fn ranges_and_readers(store: &Store) {
    let data = block(2, 10_000);
    let key = key_of(&data);
    assert_eq!(store.put_reader(&key, &data[..]).unwrap(), 10_000);
    assert_eq!(
        store.get_range(&key, 100, 50).unwrap().unwrap(),
        &data[100..150]
    );
    assert_eq!(
        store.get_range(&key, 9_990, 50).unwrap().unwrap(),
        &data[9_990..]
    );
    assert_eq!(store.get_range(&key, 20_000, 5).unwrap().unwrap(), b"");
    assert_eq!(store.get_range(&key, 0, 0).unwrap().unwrap(), b"");
    let mut r = store.reader(&key).unwrap().unwrap();
    assert_eq!(r.len(), 10_000);
    r.seek(SeekFrom::Start(5_000)).unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, &data[5_000..]);
    let absent = Key::new("CIQABSENT").unwrap();
    assert!(store.reader(&absent).unwrap().is_none());
    assert!(store.get_range(&absent, 0, 1).unwrap().is_none());
    let empty = Key::new("EMPTY").unwrap();
    store.put(&empty, b"").unwrap();
    assert_eq!(store.get(&empty).unwrap().unwrap(), b"");
    assert_eq!(store.size(&empty).unwrap(), Some(0));
}

/// Listing sees exactly the blocks, with sizes, and skips foreign files.
pub fn listing(store: &Store) {
    let mut expect = Vec::new();
    for i in 0..300u64 {
        let d = block(100 + i, (i * 7 % 500) as usize);
        let k = key_of(&d);
        store.put(&k, &d).unwrap();
        expect.push((k, d.len() as u64));
    }
    // Short keys, padded with `_` by the shard function.
    for k in ["A", "B2", "Z=-+"] {
        let k = Key::new(k).unwrap();
        store.put(&k, k.as_str().as_bytes()).unwrap();
        expect.push((k.clone(), k.as_str().len() as u64));
    }
    expect.sort();
    // Foreign files: in the root, in a shard directory, misplaced, dot-files.
    let root = store.root();
    std::fs::write(root.join("notes.txt"), b"x").unwrap();
    let some_dir = root.join(store.shard().dir(&expect[0].0));
    std::fs::write(some_dir.join("foreign.txt"), b"x").unwrap();
    std::fs::write(some_dir.join(".hidden.data"), b"x").unwrap();
    std::fs::write(some_dir.join("lower.data"), b"x").unwrap();
    // A valid key's file in a directory that is not its shard: not listed.
    let misplaced = Key::new("MISPLACEDKEY").unwrap();
    assert_ne!(
        store.shard().dir(&misplaced),
        store.shard().dir(&expect[0].0)
    );
    std::fs::write(some_dir.join("MISPLACEDKEY.data"), b"x").unwrap();
    assert_eq!(
        keys(store),
        expect.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    let mut entries: Vec<(Key, u64)> = store.entries().map(|e| e.unwrap()).collect();
    entries.sort();
    assert_eq!(entries, expect);
    let s = store.stats();
    assert_eq!(s.blocks, expect.len() as u64);
    assert_eq!(s.bytes, expect.iter().map(|(_, n)| n).sum::<u64>());
}

/// Batches: read-your-writes, invisibility before commit, the summary.
pub fn batch_basics(store: &Store) {
    let old = block(7, 300);
    let old_key = key_of(&old);
    store.put(&old_key, &old).unwrap();
    let batch = store.batch().unwrap();
    let mut staged = Vec::new();
    for i in 0..50u64 {
        let d = block(1000 + i, 100 + i as usize);
        let k = key_of(&d);
        batch.put(&k, &d).unwrap();
        staged.push((k, d));
    }
    batch.put(&old_key, &old).unwrap();
    for (k, d) in &staged {
        assert_eq!(batch.get(k).unwrap().as_ref(), Some(d));
        assert!(batch.has(k).unwrap());
        assert_eq!(batch.size(k).unwrap(), Some(d.len() as u64));
        assert!(!store.has(k).unwrap(), "visible before commit");
    }
    // Streamed: each key once.
    let keys: Vec<Key> = batch.keys().map(|k| k.unwrap()).collect();
    let unique: BTreeSet<&Key> = keys.iter().collect();
    assert_eq!((keys.len(), unique.len()), (51, 51));
    let summary = batch.commit().unwrap();
    assert_eq!(summary.written, 50);
    assert_eq!(summary.already_present, 1);
    assert_eq!(
        summary.bytes,
        staged.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    );
    for (k, d) in &staged {
        assert_eq!(store.get(k).unwrap().as_ref(), Some(d));
    }
    assert!(super::temp_entries(store.root()).is_empty());
    assert_eq!(store.stats().blocks, 51);
}

/// Runs every function of the suite, each on a fresh store from `make`.
pub fn run_all(make: &dyn Fn() -> (Store, Box<dyn std::any::Any>)) {
    type Case = (&'static str, fn(&Store));
    let suite: [Case; 5] = [
        ("put_get_delete", put_get_delete),
        ("first_writer_wins", first_writer_wins),
        ("ranges_and_readers", ranges_and_readers),
        ("listing", listing),
        ("batch_basics", batch_basics),
    ];
    for (name, f) in suite {
        let (store, _guard) = make();
        eprintln!("conformance: {name} on {store:?}");
        f(&store);
        store.close().unwrap();
    }
}
