//! Runs the whole harness with tiny sizes, so that it cannot rot: every
//! workload against every implementation, in a few seconds.

use std::process::Command;

#[test]
fn smoke_run_measures_everything() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smoke");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flatstore-bench"))
        .args(["--smoke", "--no-write", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "harness failed:\n{stderr}");
    for row in [
        "W1 import-large",
        "W2 import-small",
        "W3 get, W1 blocks",
        "W3 get, W2 blocks",
        "W4 has",
        "W5 list keys",
        "W5 list keys + sizes",
        "W6 open, clean close",
        "W6 open after a crash",
        "W7 put-single",
        "W8 import-car",
    ] {
        assert!(stdout.contains(row), "no row {row:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("failed"),
        "a measurement failed:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "a measurement failed:\n{stderr}");
    // The stores are removed afterwards. The one thing kept is W8's CAR
    // cache (made by `ipfs-car pack` once, reused by later runs), and it
    // holds finished CAR files only: no packed input files, no partial CAR.
    let mut left = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "flatstore-bench-car" {
            for cached in std::fs::read_dir(entry.path()).unwrap() {
                let cached = cached.unwrap().path();
                let is_car = cached.is_file() && cached.extension().is_some_and(|e| e == "car");
                assert!(is_car, "not a finished CAR in the W8 cache: {cached:?}");
            }
        } else {
            left.push(entry.path());
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}
