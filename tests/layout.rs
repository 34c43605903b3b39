//! The on-disk layout, byte for byte as go-ds-flatfs v0.6 writes it.

mod common;

use std::fs;

use common::{block, key_of, tempdir};
use flatstore::cid::Cid;
use flatstore::{Accuracy, Key, Options, Shard, Store};

fn names_for(shard: Shard, key: &str) -> (String, String) {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, Options::default().shard(shard)).unwrap();
    let key = Key::new(key).unwrap();
    store.put(&key, b"x").unwrap();
    let sharding = fs::read_to_string(root.join("SHARDING")).unwrap();
    let files: Vec<_> = common::visible_data_files(&root)
        .into_iter()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    assert_eq!(files.len(), 1);
    (sharding, files[0].clone())
}

#[test]
fn exact_names_for_each_shard_function() {
    let cases = [
        (
            Shard::NextToLast(2),
            "CIQABCDEFGH",
            "/repo/flatfs/shard/v1/next-to-last/2\n",
            "FG/CIQABCDEFGH.data",
        ),
        (
            Shard::NextToLast(2),
            "A",
            "/repo/flatfs/shard/v1/next-to-last/2\n",
            "__/A.data",
        ),
        (
            Shard::NextToLast(2),
            "AB",
            "/repo/flatfs/shard/v1/next-to-last/2\n",
            "_A/AB.data",
        ),
        (
            Shard::Prefix(3),
            "CIQABCDEFGH",
            "/repo/flatfs/shard/v1/prefix/3\n",
            "CIQ/CIQABCDEFGH.data",
        ),
        (
            Shard::Prefix(3),
            "Z",
            "/repo/flatfs/shard/v1/prefix/3\n",
            "Z__/Z.data",
        ),
        (
            Shard::Suffix(2),
            "CIQABCDEFGH",
            "/repo/flatfs/shard/v1/suffix/2\n",
            "GH/CIQABCDEFGH.data",
        ),
        (
            Shard::Suffix(2),
            "Q",
            "/repo/flatfs/shard/v1/suffix/2\n",
            "_Q/Q.data",
        ),
    ];
    for (shard, key, sharding, file) in cases {
        let (s, f) = names_for(shard, key);
        assert_eq!(s, sharding, "{shard} {key}");
        assert_eq!(f, file, "{shard} {key}");
    }
}

#[test]
fn new_store_files() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, Options::default())
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(
        fs::read(root.join("SHARDING")).unwrap(),
        b"/repo/flatfs/shard/v1/next-to-last/2\n"
    );
    let readme = fs::read_to_string(root.join("_README")).unwrap();
    assert!(readme.contains("multihash") && readme.contains("next-to-last/2"));
    assert!(root.join(".temp").is_dir());
    assert_eq!(
        fs::read_to_string(root.join("diskUsage.cache")).unwrap(),
        "{\"diskUsage\":0,\"accuracy\":\"initial-exact\",\"blocks\":0,\"generation\":0}"
    );
    // Nothing else: no temp files left by the atomic writes.
    let names: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, [".temp", "SHARDING", "_README", "diskUsage.cache"]);
}

#[test]
fn real_sha256_key_lands_in_next_to_last_two() {
    let data = b"hello world\n";
    let key = key_of(data);
    let cid: Cid = Cid::new_v1(0x55, key.to_multihash().unwrap());
    assert_eq!(Key::from_cid(&cid), key);
    let s = key.as_str();
    assert!(s.starts_with("CIQ"), "{s}");
    let expected_dir = &s[s.len() - 3..s.len() - 1];
    let dir = tempdir();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    store.put(&key, data).unwrap();
    let path = dir
        .path()
        .join("s")
        .join(expected_dir)
        .join(format!("{s}.data"));
    assert_eq!(fs::read(path).unwrap(), data);
    // The CIDv0 of the same multihash shares the file.
    let v0 = Cid::new_v0(key.to_multihash().unwrap()).unwrap();
    assert_eq!(store.get(&Key::from_cid(&v0)).unwrap().unwrap(), data);
}

/// A store laid out by hand exactly as go-ds-flatfs v0.6 lays one out: its
/// README text, its diskUsage.cache (bytes only), no `.lock`, a leftover temp
/// file. It opens, reads back, and counts its blocks.
#[test]
fn opens_a_go_ds_flatfs_store() {
    let dir = tempdir();
    let root = dir.path().join("blocks");
    fs::create_dir_all(root.join(".temp")).unwrap();
    fs::write(
        root.join("SHARDING"),
        "/repo/flatfs/shard/v1/next-to-last/2\n",
    )
    .unwrap();
    fs::write(
        root.join("_README"),
        "This is a repository of IPLD objects. Each IPLD object is in a single file,\n\
         named <base32 encoding of cid>.data. Where <base32 encoding of cid> is the\n\
         \"base32\" encoding of the CID (as specified in\n\
         https://github.com/multiformats/multibase) without the 'B' prefix.\n",
    )
    .unwrap();
    let mut blocks = Vec::new();
    let mut bytes = 0;
    for i in 0..64u64 {
        let d = block(i, 50 + i as usize * 3);
        let k = key_of(&d);
        let s = k.as_str().to_string();
        let shard_dir = root.join(&s[s.len() - 3..s.len() - 1]);
        fs::create_dir_all(&shard_dir).unwrap();
        fs::write(shard_dir.join(format!("{s}.data")), &d).unwrap();
        bytes += d.len() as u64;
        blocks.push((k, d));
    }
    fs::write(
        root.join("diskUsage.cache"),
        format!("{{\"diskUsage\":{bytes},\"accuracy\":\"initial-exact\"}}"),
    )
    .unwrap();
    fs::write(root.join(".temp/temp-123456"), b"partial").unwrap();

    let store = Store::open(&root, Options::default()).unwrap();
    assert_eq!(store.shard(), Shard::NextToLast(2));
    for (k, d) in &blocks {
        assert_eq!(store.get(k).unwrap().as_ref(), Some(d));
    }
    let mut expect: Vec<Key> = blocks.iter().map(|(k, _)| k.clone()).collect();
    expect.sort();
    assert_eq!(common::keys(&store), expect);
    // go-ds-flatfs's cache has no block count: recounted, then exact.
    let s = common::wait_exact(&store);
    assert_eq!(
        (s.blocks, s.bytes, s.accuracy),
        (64, bytes, Accuracy::Exact)
    );
    assert!(common::temp_entries(&root).is_empty());
    // Its README is kept.
    assert!(fs::read_to_string(root.join("_README"))
        .unwrap()
        .starts_with("This is a repository of IPLD"));
    store.close().unwrap();
    // What it leaves is still go-ds-flatfs's format.
    let cache = fs::read_to_string(root.join("diskUsage.cache")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cache).unwrap();
    assert_eq!(v["diskUsage"], bytes);
    assert_eq!(v["accuracy"], "initial-exact");
}

/// Shard directories named like Windows devices (`prefix/3` of `CONX` is
/// `CON`) work like any other, on every platform.
#[test]
fn device_named_shard_directories_work() {
    for (shard, keys) in [
        (Shard::Prefix(3), &["CONX", "AUXQ", "NULA", "PRN1"][..]),
        (Shard::Prefix(4), &["COM1X", "LPT1A"][..]),
        (Shard::Suffix(3), &["XCON", "QAUX"][..]),
    ] {
        let dir = tempdir();
        let store = Store::open(dir.path().join("s"), Options::default().shard(shard)).unwrap();
        let b = store.batch().unwrap();
        for k in keys {
            let key = Key::new(k).unwrap();
            store.put(&key, k.as_bytes()).unwrap();
            b.put(&Key::new(&format!("{k}B")).unwrap(), b"batch")
                .unwrap();
        }
        b.commit().unwrap();
        for k in keys {
            let key = Key::new(k).unwrap();
            assert_eq!(store.get(&key).unwrap().unwrap(), k.as_bytes());
            assert_eq!(store.size(&key).unwrap(), Some(k.len() as u64));
        }
        assert_eq!(common::keys(&store).len(), keys.len() * 2);
        for k in keys {
            assert!(store.delete(&Key::new(k).unwrap()).unwrap());
        }
        assert_eq!(common::keys(&store).len(), keys.len());
    }
}
