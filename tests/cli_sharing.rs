//! The command-line tool's commands side by side on one store: many `put`s
//! at once all succeed, and `ls`, `stat`, `get`, `has` and `verify` work
//! while an import runs.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{block, key_of, tempdir};

fn flatstore(repo: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flatstore"));
    c.arg("--repo").arg(repo);
    c
}

#[test]
fn eight_puts_at_once_all_succeed() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    assert!(flatstore(&repo).arg("init").status().unwrap().success());
    let files: Vec<_> = (0..48u64)
        .map(|i| {
            // Some blocks twice: two processes putting one key at once.
            let d = block(i % 40, 2000);
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, &d).unwrap();
            (key_of(&d), p, d)
        })
        .collect();
    for wave in files.chunks(8) {
        let children: Vec<_> = wave
            .iter()
            .map(|(k, p, _)| {
                flatstore(&repo)
                    .args(["put", k.as_str()])
                    .arg(p)
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for (k, _, d) in &files {
        let out = flatstore(&repo).args(["get", k.as_str()]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(&out.stdout, d);
    }
    let stat = flatstore(&repo).args(["--json", "stat"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["blocks"], 40);
    assert_eq!(v["accuracy"], "exact");
}

/// A CARv1 of `n` raw blocks, written to `path`.
fn write_car(path: &Path, n: u64) -> Vec<Vec<u8>> {
    use flatstore::cid::Cid;
    let blocks: Vec<Vec<u8>> = (0..n).map(|i| block(1_000_000 + i, 4096)).collect();
    let cid = |d: &[u8]| Cid::new_v1(0x55, key_of(d).to_multihash().unwrap());
    let mut w = flatstore::CarWriter::new(Vec::new(), &[cid(&blocks[0])]).unwrap();
    for d in &blocks {
        w.write_block(&cid(d), d).unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
    blocks
}

// Not under Wine: its `GetExitCodeProcess` fails now and then ("Internal
// error", 1359) on a child polled while it runs.
#[cfg(not(windows))]
#[test]
fn readers_run_while_an_import_runs() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let car = dir.path().join("big.car");
    let blocks = write_car(&car, 20_000);
    let small = block(5, 100);
    let small_file = dir.path().join("small");
    std::fs::write(&small_file, &small).unwrap();
    assert!(flatstore(&repo).arg("init").status().unwrap().success());
    assert!(flatstore(&repo)
        .args(["put", key_of(&small).as_str()])
        .arg(&small_file)
        .status()
        .unwrap()
        .success());
    let mut import = flatstore(&repo)
        .arg("import")
        .arg(&car)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut rounds = 0;
    let mut during = 0;
    while import.try_wait().unwrap().is_none() || rounds == 0 {
        rounds += 1;
        let running = import.try_wait().unwrap().is_none();
        for args in [
            vec!["ls"],
            vec!["stat"],
            vec!["has", key_of(&small).as_str()],
            vec!["get", key_of(&small).as_str()],
            vec!["verify"],
        ] {
            let out = flatstore(&repo).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{args:?} during an import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if running && import.try_wait().unwrap().is_none() {
            during += 1;
        }
    }
    assert!(import.wait().unwrap().success());
    eprintln!("{rounds} rounds of ls/stat/has/get/verify, {during} wholly during the import");
    assert!(
        during > 0,
        "the import ended before any command ran beside it"
    );
    let out = flatstore(&repo)
        .args(["has", key_of(&blocks[19_999]).as_str()])
        .status()
        .unwrap();
    assert!(out.success());
}
