//! `flatstore add`: UnixFS DAGs with Kubo's CIDs. Checked against Kubo's
//! published vectors, and against an independent implementation, the npm
//! `ipfs-unixfs-importer` configured as `ipfs add` (run by node through
//! `tests/support/unixfs-import.mjs`) when it is installed; the DAG added is
//! exported and unpacked by `ipfs-car` and compared byte for byte.
//!
//! Without node or those packages the cross-checks print SKIPPED; with
//! `FLATSTORE_REQUIRE_TOOLS=1` (as CI runs) their absence fails instead.
#![cfg(feature = "cli")]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn flatstore(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("run flatstore")
}

fn ok(repo: &Path, args: &[&str]) -> String {
    let out = flatstore(repo, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `flatstore add` of `paths`: every entry's CID by name.
fn add(repo: &Path, extra: &[&str], paths: &[PathBuf]) -> BTreeMap<String, String> {
    let mut args = vec!["--json", "add"];
    args.extend_from_slice(extra);
    let owned: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(owned.iter().map(String::as_str));
    let v: Value = serde_json::from_str(ok(repo, &args).trim()).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["cid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Says why a cross-check cannot run: fails under FLATSTORE_REQUIRE_TOOLS=1,
/// else prints SKIPPED.
fn missing(test: &str, why: &str) {
    // Under Wine there is no node to run: the cross-checks run on Linux.
    if cfg!(not(windows)) && std::env::var_os("FLATSTORE_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("{test}: {why} (FLATSTORE_REQUIRE_TOOLS=1 requires it)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The installed `ipfs-unixfs-importer` package directory:
/// `$FLATSTORE_UNIXFS_IMPORTER`, else under `npm root --global`.
fn importer(test: &str) -> Option<PathBuf> {
    let hint = "install it with `npm install --global ipfs-unixfs-importer@17.1.1` \
                or set FLATSTORE_UNIXFS_IMPORTER to its package directory";
    if Command::new("node").arg("--version").output().is_err() {
        missing(test, &format!("node not found; {hint}"));
        return None;
    }
    let dir = match std::env::var_os("FLATSTORE_UNIXFS_IMPORTER") {
        Some(d) => PathBuf::from(d),
        None => {
            let root = Command::new("npm").args(["root", "--global"]).output();
            match root {
                Ok(o) if o.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                        .join("ipfs-unixfs-importer")
                }
                _ => {
                    missing(test, &format!("npm not found; {hint}"));
                    return None;
                }
            }
        }
    };
    if !dir.join("package.json").is_file() {
        missing(
            test,
            &format!("no ipfs-unixfs-importer at {}; {hint}", dir.display()),
        );
        return None;
    }
    Some(dir)
}

/// The independent importer's CIDs for `paths`, by name.
fn reference(module: &Path, extra: &[&str], paths: &[PathBuf]) -> BTreeMap<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/unixfs-import.mjs");
    let out = Command::new("node")
        .arg(script)
        .arg(module)
        .args(extra)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["cid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    path.to_path_buf()
}

#[test]
fn kubo_vectors() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let empty = write(&dir.path().join("in/empty"), b"");
    let hello = write(&dir.path().join("in/hello"), b"hello world\n");
    let empty_dir = dir.path().join("in/emptydir");
    fs::create_dir_all(&empty_dir).unwrap();
    let cids = add(&repo, &[], &[empty, hello, empty_dir]);
    assert_eq!(
        cids["empty"],
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    );
    assert_eq!(
        cids["hello"],
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    );
    assert_eq!(
        cids["emptydir"],
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    );
    // The blocks are in the store: a single-chunk file is its own leaf.
    let out = ok(
        &repo,
        &["get", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"],
    );
    assert!(out.contains("hello world\n"));
    assert!(flatstore(
        &repo,
        &["has", "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"]
    )
    .status
    .success());
    // --quiet prints the roots only; the human form is Kubo's.
    let again = dir.path().join("in/hello");
    let q = ok(&repo, &["add", "-q", again.to_str().unwrap()]);
    assert_eq!(q, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\n");
    let human = ok(&repo, &["add", again.to_str().unwrap()]);
    assert_eq!(
        human,
        "added QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o hello\n"
    );
}

#[test]
fn files_of_every_shape_match_the_independent_importer() {
    let test = "files_of_every_shape_match_the_independent_importer";
    let Some(module) = importer(test) else { return };
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let c = 262_144usize;
    // Kubo's default chunker: 0 B, 1 B, one chunk, one chunk + 1, 3 MiB + a bit.
    let default_files = vec![
        write(&dir.path().join("a/zero"), b""),
        write(&dir.path().join("a/one"), b"x"),
        write(&dir.path().join("a/chunk"), &common::block(1, c)),
        write(&dir.path().join("a/chunk1"), &common::block(2, c + 1)),
        write(
            &dir.path().join("a/multi"),
            &common::block(3, 3 * c + 12_345),
        ),
    ];
    assert_eq!(
        add(&repo, &[], &default_files),
        reference(&module, &[], &default_files)
    );
    // The balanced layout's edges, with small chunks: 174 and 175 chunks
    // (one and two levels), 174*174 and 174*174 + 1 (two and three levels).
    let k = 16usize;
    let small = vec![
        write(&dir.path().join("b/n174"), &common::block(4, 174 * k)),
        write(&dir.path().join("b/n175"), &common::block(5, 175 * k)),
        write(
            &dir.path().join("b/n30276"),
            &common::block(6, 174 * 174 * k),
        ),
        write(
            &dir.path().join("b/n30277"),
            &common::block(7, 174 * 174 * k + 1),
        ),
    ];
    let opts = ["--chunk-size", "16"];
    assert_eq!(add(&repo, &opts, &small), reference(&module, &opts, &small));
    // CIDv1 (raw leaves), and raw leaves with CIDv0, as Kubo does them.
    for opts in [&["--cid-version", "1"][..], &["--raw-leaves"]] {
        assert_eq!(
            add(&repo, opts, &default_files),
            reference(&module, opts, &default_files),
            "{opts:?}"
        );
    }
    // 174 chunks of Kubo's default size: one node over 174 leaves.
    let big = vec![write(
        &dir.path().join("c/n174"),
        &common::block(8, 174 * c),
    )];
    let big175 = vec![write(
        &dir.path().join("c/n175"),
        &common::block(9, 175 * c),
    )];
    for files in [big, big175] {
        assert_eq!(add(&repo, &[], &files), reference(&module, &[], &files));
    }
    assert_eq!(ok(&repo, &["verify"]).lines().count(), 1, "a clean store");
}

#[test]
fn directories_match_the_independent_importer_and_round_trip() {
    let test = "directories_match_the_independent_importer_and_round_trip";
    let Some(module) = importer(test) else { return };
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let tree = dir.path().join("tree");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("README", b"read me\n".to_vec()),
        ("b.bin", common::block(11, 700_000)),
        ("sub/a", b"a".to_vec()),
        ("sub/deeper/z", common::block(12, 262_145)),
        ("sub/deeper/\u{e9}t\u{e9}", b"utf-8 name".to_vec()),
        ("Upper", b"sorted bytewise: before lower case".to_vec()),
    ];
    for (name, data) in &files {
        write(&tree.join(name), data);
    }
    fs::create_dir_all(tree.join("empty")).unwrap();
    fs::create_dir_all(tree.join("sub/empty2")).unwrap();
    // Hidden entries are left out, as Kubo does without --hidden.
    write(&tree.join(".hidden"), b"not added");
    let ours = add(&repo, &[], std::slice::from_ref(&tree));
    let theirs = reference(&module, &[], std::slice::from_ref(&tree));
    // The reference lists no empty directories as entries; every entry it
    // lists, and the root, must match.
    for (name, cid) in &theirs {
        assert_eq!(ours.get(name), Some(cid), "{name}");
    }
    assert_eq!(ours["tree"], theirs["tree"]);
    assert!(!ours.contains_key("tree/.hidden"));

    // add, export, ipfs-car unpack: the same tree, byte for byte.
    let Some(ipfs_car) = ipfs_car(test) else {
        return;
    };
    let car = dir.path().join("tree.car");
    ok(
        &repo,
        &["export", "--root", &ours["tree"], car.to_str().unwrap()],
    );
    let out_dir = dir.path().join("unpacked");
    let out = Command::new(ipfs_car)
        .arg("unpack")
        .arg(&car)
        .arg("--output")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, data) in &files {
        let got = fs::read(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *data, "{name} differs after the round trip");
    }
    assert!(out_dir.join("empty").is_dir() && out_dir.join("sub/empty2").is_dir());
    assert!(!out_dir.join(".hidden").exists());
}

fn ipfs_car(test: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os("FLATSTORE_IPFS_CAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ipfs-car"));
    match Command::new(&candidate).arg("--version").output() {
        Ok(o) if o.status.success() => Some(candidate),
        _ => {
            missing(
                test,
                "ipfs-car not found; install it with `npm install --global ipfs-car@3.1.0`",
            );
            None
        }
    }
}

#[test]
fn add_is_one_atomic_batch() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    let tree = dir.path().join("tree");
    write(&tree.join("a"), &common::block(1, 600_000));
    write(&tree.join("b"), b"b");
    // A name that is not what Kubo can encode stops the whole add: nothing
    // of the tree reaches the store.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = tree.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
        fs::write(bad, b"x").unwrap();
        let out = flatstore(&repo, &["add", tree.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
        assert!(common::visible_data_files(&repo).is_empty());
        assert!(common::temp_entries(&repo)
            .iter()
            .all(|e| !e.starts_with("batch-")));
    }
    // A missing path: the same.
    let out = flatstore(
        &repo,
        &[
            "add",
            tree.join("a").to_str().unwrap(),
            dir.path().join("nope").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    assert!(common::visible_data_files(&repo).is_empty());
}

#[test]
fn a_directory_kubo_would_shard_is_refused() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let tree = dir.path().join("wide");
    fs::create_dir_all(&tree).unwrap();
    // 34-byte CIDs + 100-byte names: 2,000 entries exceed 256 KiB.
    for i in 0..2000 {
        fs::write(tree.join(format!("{i:0100}")), b"").unwrap();
    }
    let out = flatstore(&repo, &["add", tree.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HAMT"), "{err}");
    assert!(common::visible_data_files(&repo).is_empty());
}

#[test]
fn the_library_api_adds_in_one_batch() {
    use flatstore::unixfs::AddOptions;
    let dir = common::tempdir();
    let store =
        flatstore::Store::open(dir.path().join("s"), flatstore::Options::default()).unwrap();
    let input = write(&dir.path().join("hello"), b"hello world\n");
    let mut seen = Vec::new();
    let summary = store
        .add_paths(
            &[&input],
            &AddOptions::default(),
            &mut |a| seen.push(a.path.clone()),
            &|_| {},
        )
        .unwrap();
    assert_eq!(
        summary.roots[0].cid.to_string(),
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    );
    assert_eq!(summary.roots[0].size, 20);
    assert_eq!((summary.written, summary.content_bytes), (1, 12));
    assert_eq!(seen, vec!["hello".to_string()]);
    let cid = summary.roots[0].cid;
    assert!(store.get_block(&cid).unwrap().is_some());
}
