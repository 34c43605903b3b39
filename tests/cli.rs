//! The `flatstore` command-line tool, spawned as a process: outputs, `--json`,
//! exit codes, one-line errors.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const ROOT: &str = "bafybeihpxpfoqegb67d7v3wbsqt7uzyleclkgh3cvghxz6k27cha4ah4jy";
const EMPTY_RAW: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dir.car")
}

fn run(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("run flatstore")
}

fn ok(repo: &Path, args: &[&str]) -> String {
    let out = run(repo, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(repo: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(ok(repo, &a).trim()).unwrap()
}

/// Fails with exit code 1 and exactly one line on stderr naming `what`.
fn fails(repo: &Path, args: &[&str], what: &str) {
    let out = run(repo, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.contains(what),
        "{args:?}: {err:?} does not mention {what:?}"
    );
}

#[test]
fn import_list_get_export_verify() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let car = fixture();
    let v = json(&repo, &["import", car.to_str().unwrap()]);
    assert_eq!(v["roots"][0], ROOT);
    assert_eq!(
        (v["blocks"].as_u64(), v["written"].as_u64()),
        (Some(5), Some(5))
    );
    // Importing again writes nothing new.
    let v = json(&repo, &["import", car.to_str().unwrap()]);
    assert_eq!(
        (v["written"].as_u64(), v["already_present"].as_u64()),
        (Some(0), Some(5))
    );

    let ls = ok(&repo, &["ls", "--size"]);
    assert_eq!(ls.lines().count(), 5);
    assert!(ls
        .lines()
        .all(|l| l.starts_with("CIQ") && l.split(' ').count() == 2));
    let lines: Vec<Value> = ok(&repo, &["--json", "ls"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);

    let stat = json(&repo, &["stat"]);
    assert_eq!(stat["blocks"], 5);
    assert_eq!(stat["shard"], "/repo/flatfs/shard/v1/next-to-last/2");
    assert_eq!(stat["accuracy"], "exact");

    assert_eq!(json(&repo, &["has", EMPTY_RAW])["present"], true);
    let out = run(&repo, &["has", "CIQNOPE"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "absent");
    let out = dir.path().join("empty.bin");
    ok(&repo, &["get", EMPTY_RAW, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"");

    // Export the DAG and compare with the original CAR block by block.
    let exported = dir.path().join("out.car");
    let v = json(
        &repo,
        &["export", "--root", ROOT, exported.to_str().unwrap()],
    );
    assert_eq!(v["blocks"], 5);
    let blocks = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let mut r = flatstore::car::CarReader::new(&bytes[..]).unwrap();
        let roots = r.roots().to_vec();
        let mut set = std::collections::BTreeSet::new();
        while let Some(b) = r.next_block().unwrap() {
            set.insert((b.cid, b.data));
        }
        (roots, set)
    };
    assert_eq!(blocks(&exported), blocks(&car));

    assert_eq!(json(&repo, &["verify"])["ok"], 5);
    assert_eq!(json(&repo, &["rm", EMPTY_RAW])["deleted"], true);
    assert_eq!(json(&repo, &["rm", EMPTY_RAW])["deleted"], false);
    // Exporting now names the missing block, and leaves no file behind.
    let broken = dir.path().join("broken.car");
    fails(
        &repo,
        &["export", "--root", ROOT, broken.to_str().unwrap()],
        EMPTY_RAW,
    );
    assert!(!broken.exists() && !dir.path().join("broken.car.partial").exists());
}

#[test]
fn put_get_with_keys_and_cids() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let file = dir.path().join("data");
    std::fs::write(&file, b"hello").unwrap();
    ok(&repo, &["init"]);
    let v = json(&repo, &["put", "CIQHELLO", file.to_str().unwrap()]);
    assert_eq!(
        (v["key"].as_str(), v["size"].as_u64()),
        (Some("CIQHELLO"), Some(5))
    );
    assert_eq!(ok(&repo, &["get", "CIQHELLO"]), "hello");
    // A CID as the key checks the data's hash.
    fails(
        &repo,
        &["put", EMPTY_RAW, file.to_str().unwrap()],
        "hash mismatch",
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    ok(&repo, &["put", EMPTY_RAW, empty.to_str().unwrap()]);
    assert_eq!(ok(&repo, &["has", EMPTY_RAW]).trim(), "present");
    // Bad input: a clear error, exit 1.
    fails(
        &repo,
        &["put", "../X", file.to_str().unwrap()],
        "neither a key nor a CID",
    );
    fails(&repo, &["get", "CIQABSENT"], "not found");
    let stat = json(&repo, &["stat"]);
    assert_eq!(stat["blocks"], 2);
}

#[test]
fn errors_are_one_line_and_change_nothing() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let car = std::fs::read(fixture()).unwrap();
    let truncated = dir.path().join("truncated.car");
    std::fs::write(&truncated, &car[..car.len() - 100]).unwrap();
    fails(&repo, &["import", truncated.to_str().unwrap()], "offset");
    let out = run(&repo, &["--json", "ls"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "a failed import left blocks");
    // JSON errors for scripts.
    let out = run(&repo, &["--json", "import", truncated.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("offset"));
    assert_eq!(v["error"]["kind"], "bad_car");
    fails(
        &repo,
        &["import", dir.path().join("missing.car").to_str().unwrap()],
        "missing.car",
    );
    fails(&repo, &["reshard", "sideways/2"], "sideways/2");
    fails(&dir.path().join("nothing-here"), &["stat"], "no store");
    // A corrupt SHARDING is refused and left as it was.
    std::fs::write(repo.join("SHARDING"), b"garbage\n").unwrap();
    fails(&repo, &["ls"], "SHARDING");
    assert_eq!(std::fs::read(repo.join("SHARDING")).unwrap(), b"garbage\n");
}

#[test]
fn verify_repair_and_reshard() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init", "--shard", "prefix/3"]);
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    // Corrupt one block by hand.
    let victim = ok(&repo, &["ls", "--size"])
        .lines()
        .find(|l| l.ends_with(" 6000"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let path = repo.join(&victim[..3]).join(format!("{victim}.data"));
    std::fs::write(&path, vec![b'x'; 6000]).unwrap();
    fails(&repo, &["verify"], "damaged");
    let v = json(&repo, &["verify", "--repair"]);
    assert_eq!(v["corrupt"].as_array().unwrap().len(), 1);
    assert!(!path.exists());
    assert!(repo
        .join(".quarantine")
        .join(format!("{victim}.data"))
        .exists());
    assert_eq!(json(&repo, &["verify"])["ok"], 4);
    let v = json(&repo, &["reshard", "next-to-last/2"]);
    assert_eq!(v["moved"], 4);
    assert_eq!(
        json(&repo, &["stat"])["shard"],
        "/repo/flatfs/shard/v1/next-to-last/2"
    );
    assert_eq!(json(&repo, &["verify"])["ok"], 4);
}

#[test]
fn repo_from_environment() {
    let dir = common::tempdir();
    let repo = dir.path().join("envrepo");
    let out = Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .env("FLATSTORE_REPO", &repo)
        .args(["init"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(repo.join("SHARDING").is_file());
}

#[test]
fn usage_errors_exit_1_with_one_line() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    // A missing required option, an unknown command, an unknown flag.
    fails(&repo, &["export", "out.car"], "--root");
    fails(&repo, &["frobnicate"], "frobnicate");
    fails(&repo, &["ls", "--sideways"], "--sideways");
    // With --json, the error is also one JSON document on stdout.
    let out = run(&repo, &["--json", "frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("frobnicate"),
        "{v}"
    );
    assert_eq!(v["error"]["kind"], "usage");
    // --help is not an error.
    let out = run(&repo, &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verify"));
}

#[test]
fn json_verify_of_a_damaged_store_prints_one_document() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    let first = ok(&repo, &["ls"]).lines().next().unwrap().to_string();
    let store = flatstore::Store::open(&repo, flatstore::Options::default()).unwrap();
    let path = store.block_path(&flatstore::Key::new(&first).unwrap());
    store.close().unwrap();
    std::fs::write(&path, b"not the block").unwrap();
    let out = run(&repo, &["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim_end().lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["corrupt"].as_array().unwrap().len(), 1, "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
}

#[test]
fn has_of_an_identity_cid_is_true_without_a_file() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    // CIDv1, raw codec, identity multihash of "hello".
    let cid = flatstore::cid::Cid::new_v1(
        0x55,
        flatstore::multihash::Multihash::<64>::wrap(0x00, b"hello").unwrap(),
    )
    .to_string();
    assert_eq!(json(&repo, &["has", &cid])["present"], true);
    assert_eq!(ok(&repo, &["get", &cid]), "hello");
    assert!(common::visible_data_files(&repo).is_empty());
}

#[test]
fn an_upper_case_cid_is_read_as_the_cid() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    ok(&repo, &["init"]);
    // The upper-case base32 form of a CIDv1 is also a valid key string.
    let upper = EMPTY_RAW.to_ascii_uppercase();
    assert!(flatstore::Key::new(&upper).is_ok());
    let put = json(&repo, &["put", &upper, empty.to_str().unwrap()]);
    let key = flatstore::Key::from_cid(&EMPTY_RAW.parse().unwrap());
    assert_eq!(put["key"].as_str(), Some(key.as_str()));
    assert_eq!(json(&repo, &["has", EMPTY_RAW])["present"], true);
    assert_eq!(json(&repo, &["has", &upper])["present"], true);
    // As a CID, its data is hash-checked.
    let file = dir.path().join("data");
    std::fs::write(&file, b"hello").unwrap();
    fails(
        &repo,
        &["put", &upper, file.to_str().unwrap()],
        "hash mismatch",
    );
    // A key that is a multihash is still a key, not parsed as a CID.
    assert_eq!(json(&repo, &["has", key.as_str()])["present"], true);
    let files = common::visible_data_files(&repo);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(format!("{}.data", key.as_str())));
}

#[test]
fn repo_defaults_to_flatstore_in_the_working_directory() {
    let dir = common::tempdir();
    let out = Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .env_remove("FLATSTORE_REPO")
        .current_dir(dir.path())
        .args(["import", fixture().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("flatstore/SHARDING").is_file());
    assert_eq!(
        common::visible_data_files(&dir.path().join("flatstore")).len(),
        5
    );
}
