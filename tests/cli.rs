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

// ---------------------------------------------------------------------------
// The command line as users expect it (one test or more per rough edge).

use std::io::{Read, Write};
use std::process::Stdio;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs with `input` on stdin.
fn run_stdin(repo: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Item 1: output to a closed pipe ends the command quietly.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    let big = dir.path().join("big");
    std::fs::write(&big, common::block(1, 4 << 20)).unwrap();
    ok(&repo, &["put", "CIQBIG", big.to_str().unwrap()]);
    for args in [
        &["--json", "get", "CIQBIG"][..],
        &["get", "CIQBIG"][..],
        &["get", "CIQBIG", "-o", "-"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flatstore"))
            .arg("--repo")
            .arg(&repo)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout); // like `head -c 10`
        let out = child.wait_with_output().unwrap();
        let err = stderr_of(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// Item 2: export through a unique temp file, to stdout with `-`; import from stdin.
#[test]
fn export_uses_a_unique_temp_file_and_stdout() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    // A user's own file named like the old temp file is left alone.
    let keep = dir.path().join("keep.car.partial");
    std::fs::write(&keep, b"mine").unwrap();
    let target = dir.path().join("keep.car");
    ok(&repo, &["export", "--root", ROOT, target.to_str().unwrap()]);
    assert_eq!(std::fs::read(&keep).unwrap(), b"mine");
    let from_file = std::fs::read(&target).unwrap();
    // `-` is stdout: the same bytes.
    let out = run(&repo, &["export", "--root", ROOT, "-"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(out.stdout, from_file);
    assert!(!dir.path().join("-").exists());
    // A failed export (the target is a directory) leaves nothing behind.
    let before = common::tree(dir.path());
    let subdir = dir.path().join("adir");
    std::fs::create_dir(&subdir).unwrap();
    fails(
        &repo,
        &["export", "--root", ROOT, subdir.to_str().unwrap()],
        "is a directory",
    );
    let mut after = common::tree(dir.path());
    after.remove(Path::new("adir"));
    assert_eq!(after, before);
    // `import -` reads stdin, into a new store.
    let repo2 = dir.path().join("repo2");
    let out = run_stdin(&repo2, &["--json", "import", "-"], &from_file);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["written"], 5);
    assert_eq!(v["roots"][0], ROOT);
}

/// Item 2: an interrupted export (SIGINT) removes its temp file.
#[cfg(unix)]
#[test]
fn an_interrupted_export_leaves_no_temp_file() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    // A DAG large enough that the export is still running when interrupted:
    // a big file added as UnixFS, exported to a FIFO nobody reads.
    let big = dir.path().join("big");
    std::fs::write(&big, common::block(7, 8 << 20)).unwrap();
    let root = ok(&repo, &["add", "-q", big.to_str().unwrap()]);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("x.car");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .arg("--repo")
        .arg(&repo)
        .args(["export", "--root", root.trim(), target.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for its temp file to appear, then interrupt it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let seen = std::fs::read_dir(&out_dir).unwrap().count();
        if seen > 0 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no temp file appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: kill sends a signal to our own child; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    // Either it was interrupted (and cleaned up) or it had already finished.
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if status.success() {
        assert_eq!(left, vec![std::ffi::OsString::from("x.car")]);
    } else {
        assert_eq!(status.code(), Some(130));
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Item 3: `has` exits 0 when present, 1 when absent, 2 on error.
#[test]
fn has_exit_codes() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    assert_eq!(run(&repo, &["has", ROOT]).status.code(), Some(0));
    assert_eq!(run(&repo, &["has", "CIQABSENT"]).status.code(), Some(1));
    let out = run(&dir.path().join("missing"), &["has", ROOT]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("no store"));
    assert_eq!(run(&repo, &["has", "../x"]).status.code(), Some(2));
}

/// Item 4: a put of a present key says so; a CID put repairs a corrupt copy.
#[test]
fn put_of_a_present_key_and_repair_of_a_corrupt_copy() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::write(&a, b"abc").unwrap();
    std::fs::write(&b, b"xyz").unwrap();
    let v = json(&repo, &["put", "CIQKEY", a.to_str().unwrap()]);
    assert_eq!(v["written"], true);
    let v = json(&repo, &["put", "CIQKEY", b.to_str().unwrap()]);
    assert_eq!(v["written"], false);
    assert!(ok(&repo, &["put", "CIQKEY", b.to_str().unwrap()]).contains("already present"));
    assert_eq!(ok(&repo, &["get", "CIQKEY"]), "abc");

    // A CID's stored copy damaged behind the store's back.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    ok(&repo, &["put", EMPTY_RAW, empty.to_str().unwrap()]);
    let store = flatstore::Store::open(&repo, flatstore::Options::default()).unwrap();
    let path = store.block_path(&flatstore::Key::from_cid(&EMPTY_RAW.parse().unwrap()));
    store.close().unwrap();
    std::fs::write(&path, b"damaged").unwrap();
    // Wrong data for the CID: refused, the damaged copy stays as it is.
    fails(
        &repo,
        &["put", EMPTY_RAW, a.to_str().unwrap()],
        "hash mismatch",
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"damaged");
    // The right data repairs it.
    let v = json(&repo, &["put", EMPTY_RAW, empty.to_str().unwrap()]);
    assert_eq!(
        (v["written"].as_bool(), v["repaired"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    // CIQKEY is not a multihash (unverifiable); the CID's block is ok.
    assert_eq!(json(&repo, &["verify"])["ok"], 1);
    // Now intact: already present.
    let v = json(&repo, &["put", EMPTY_RAW, empty.to_str().unwrap()]);
    assert_eq!(v["written"], false);
}

/// Item 5: put streams with the same frame cap as import, shown in --help.
#[test]
fn put_has_the_frame_cap_of_import() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    let out = run_stdin(
        &repo,
        &["put", "--max-frame", "1000", "CIQBIG", "-"],
        &[7u8; 1001],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("larger than the limit of 1000 bytes"),
        "{}",
        stderr_of(&out)
    );
    assert!(common::visible_data_files(&repo).is_empty());
    assert!(common::temp_entries(&repo).is_empty());
    let out = run_stdin(
        &repo,
        &["put", "--max-frame", "1000", "CIQOK", "-"],
        &[7u8; 1000],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    // The default cap is the import's, and --help says what it is.
    for cmd in ["put", "import"] {
        let help = ok(&repo, &[cmd, "--help"]);
        assert!(
            help.contains("--max-frame") && help.contains("8388608"),
            "{help}"
        );
    }
    // A block over the default cap is refused before it is all read.
    let out = run_stdin(&repo, &["put", "CIQHUGE", "-"], &vec![1u8; (8 << 20) + 1]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("8388608"));
}

/// Item 6: only init, add and import create a store.
#[test]
fn other_commands_refuse_a_path_with_no_store() {
    let dir = common::tempdir();
    let missing = dir.path().join("typo");
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    for args in [
        &["ls"][..],
        &["stat"],
        &["put", "CIQX", file.to_str().unwrap()],
        &["get", "CIQX"],
        &["rm", "CIQX"],
        &["verify"],
        &["verify", "--repair"],
        &["export", "--root", ROOT, "out.car"],
        &["reshard", "prefix/2"],
    ] {
        fails(&missing, args, "`flatstore init` creates one");
        assert!(!missing.exists(), "{args:?} created {missing:?}");
    }
    let v: Value = serde_json::from_slice(&run(&missing, &["--json", "ls"]).stdout).unwrap();
    assert_eq!(v["error"]["kind"], "no_store");
    // An empty FLATSTORE_REPO is an error naming the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .env("FLATSTORE_REPO", "")
        .current_dir(dir.path())
        .args(["init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("FLATSTORE_REPO"),
        "{}",
        stderr_of(&out)
    );
    assert!(!dir.path().join("flatstore").exists());
}

/// Item 7: an entry named like a block that is not a file is not a block.
#[test]
fn a_directory_named_like_a_block_is_not_listed_and_is_quarantined() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    let key = "CIQBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA";
    let shard = flatstore::Shard::NextToLast(2).dir(&flatstore::Key::new(key).unwrap());
    let fake = repo.join(&shard).join(format!("{key}.data"));
    std::fs::create_dir_all(&fake).unwrap();
    assert_eq!(ok(&repo, &["ls"]).lines().count(), 5);
    assert_eq!(ok(&repo, &["ls", "--size"]).lines().count(), 5);
    let out = run(&repo, &["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["not_regular"].as_array().unwrap().len(), 1, "{v}");
    let v = json(&repo, &["verify", "--repair"]);
    assert_eq!(v["not_regular"][0]["repaired"], true);
    assert!(!fake.exists());
    assert!(repo
        .join(".quarantine")
        .join(format!("{key}.data"))
        .is_dir());
    assert_eq!(json(&repo, &["verify"])["ok"], 5);
}

/// Item 8: misplaced copies are counted and fixed; damage left exits non-zero.
#[test]
fn verify_fixes_misplaced_copies_and_fails_while_damage_remains() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    let first = ok(&repo, &["ls"]).lines().next().unwrap().to_string();
    let store = flatstore::Store::open(&repo, flatstore::Options::default()).unwrap();
    let home = store.block_path(&flatstore::Key::new(&first).unwrap());
    store.close().unwrap();
    let data = std::fs::read(&home).unwrap();
    // The block sits in a wrong shard directory, and not in its own.
    let wrong = repo.join("ZZ");
    std::fs::create_dir_all(&wrong).unwrap();
    let misplaced = wrong.join(format!("{first}.data"));
    std::fs::rename(&home, &misplaced).unwrap();
    // Done behind the store's back: the next open recounts.
    std::fs::remove_file(repo.join("diskUsage.cache")).unwrap();
    let out = run(&repo, &["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["misplaced"].as_array().unwrap().len(), 1, "{v}");
    assert!(stderr_of(&out).contains("--repair"));
    // Repair moves it home, where the store counts and lists it again.
    let v = json(&repo, &["verify", "--repair"]);
    assert_eq!(v["misplaced"][0]["repaired"], true);
    assert_eq!(std::fs::read(&home).unwrap(), data);
    assert!(!misplaced.exists());
    assert_eq!(json(&repo, &["verify"])["ok"], 5);
    assert_eq!(ok(&repo, &["ls"]).lines().count(), 5);
}

/// Item 9: error messages say what is wrong, once.
#[test]
fn error_messages_name_the_real_problem_once() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    // A truncated CID is not "lower case".
    let truncated = &ROOT[..ROOT.len() - 3];
    let out = run(&repo, &["get", truncated]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("not a valid CID") && !err.contains("lower case"),
        "{err}"
    );
    // export --root accepts the keys ls prints.
    let out_car = dir.path().join("k.car");
    let root_key = flatstore::Key::from_cid(&ROOT.parse().unwrap());
    let v = json(
        &repo,
        &[
            "export",
            "--root",
            root_key.as_str(),
            out_car.to_str().unwrap(),
        ],
    );
    let root: flatstore::cid::Cid = v["root"].as_str().unwrap().parse().unwrap();
    assert_eq!(flatstore::Key::from_cid(&root), root_key);
    assert_eq!(root.codec(), 0x70);
    assert_eq!(v["blocks"], 5);
    // A repo path that is a regular file is not "not empty".
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let out = run(&file, &["ls"]);
    let err = stderr_of(&out);
    assert!(
        err.contains("is a file") && !err.contains("not empty"),
        "{err}"
    );
    // put KEY DIR names the directory, not a temp file.
    let out = run(&repo, &["put", "CIQX", dir.path().to_str().unwrap()]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("is a directory") && !err.contains(".temp"),
        "{err}"
    );
    // An I/O error's cause appears once.
    let broken = dir.path().join("broken");
    ok(&broken, &["init"]);
    std::fs::remove_file(broken.join("SHARDING")).unwrap();
    std::fs::create_dir(broken.join("SHARDING")).unwrap();
    let out = run(&broken, &["ls"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.matches("is not a regular file").count(), 1, "{err}");
    // A path under a regular file: the OS error once (Unix: ENOTDIR).
    if cfg!(unix) {
        let under_file = broken.join("_README").join("sub");
        let out = run(&under_file, &["ls"]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(err.matches("os error").count(), 1, "{err}");
    }
    // Bare `flatstore` prints the usage, on several lines.
    let out = Command::new(env!("CARGO_BIN_EXE_flatstore"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("Usage:") && err.lines().count() > 5, "{err}");
}

/// Item 10: --json is one document per command, JSON Lines for ls.
#[test]
fn json_documents_and_error_kinds() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    let out = run(&repo, &["--json", "ls"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "an empty JSON Lines listing");
    let out = run(&repo, &["--json", "get", "CIQABSENT"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not_found", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CIQABSENT"));
    let out = run(&repo, &["--json", "put", "../x", "-"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "invalid_key", "{v}");
    let help = ok(&repo, &["--help"]);
    assert!(help.contains("JSON Lines") && help.contains("one JSON document"));
    // Every command's success output is one document.
    ok(&repo, &["import", fixture().to_str().unwrap()]);
    for args in [&["stat"][..], &["verify"], &["has", ROOT], &["rm", "CIQX"]] {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let text = ok(&repo, &a);
        assert_eq!(text.trim_end().lines().count(), 1, "{args:?}: {text}");
        let _: Value = serde_json::from_str(&text).unwrap();
    }
    for l in ok(&repo, &["--json", "ls", "--size"]).lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["size"].is_u64());
    }
}

/// Item 12: a write that succeeded succeeds, when only the counters cannot
/// be saved (the disk is full after the block is in place).
#[cfg(target_os = "linux")]
#[test]
fn counters_not_saved_is_a_warning() {
    use common::mount::{skip, Mount};
    let m = match Mount::tmpfs_with("size=16m,nr_inodes=64") {
        Ok(m) => m,
        Err(why) => return skip("counters_not_saved_is_a_warning", &why),
    };
    let repo = m.path().join("repo");
    ok(&repo, &["init"]);
    let data = m.path().join("data");
    std::fs::write(&data, b"block").unwrap();
    let filler = m.path().join("filler");
    std::fs::create_dir(&filler).unwrap();
    // Leave 0, 1, 2, 3 free inodes: with few enough, the put fails
    // cleanly; with one more, the block fits and only the counters' temp
    // file finds no inode. Whatever happens, a block that was stored is a
    // success, and a failure stores nothing.
    let mut warned = false;
    for free in 0..4u64 {
        let mut n = 0;
        while m.free_inodes() > free {
            std::fs::write(filler.join(format!("{free}-{n}")), b"").unwrap();
            n += 1;
        }
        let key = format!("CIQFULL{free}");
        let out = run(&repo, &["put", &key, data.to_str().unwrap()]);
        let err = stderr_of(&out);
        let stored = common::visible_data_files(&repo)
            .iter()
            .any(|p| p.ends_with(format!("{key}.data")));
        if stored {
            assert_eq!(out.status.code(), Some(0), "{free} free: {err}");
            assert!(String::from_utf8_lossy(&out.stdout).contains("written"));
            warned |= err.contains("warning");
        } else {
            assert_eq!(out.status.code(), Some(1), "{free} free: {err}");
        }
        std::fs::remove_dir_all(&filler).unwrap();
        std::fs::create_dir(&filler).unwrap();
    }
    assert!(warned, "no case where only the counters could not be saved");
    // With room again, the store opens and counts every stored block.
    let listed = ok(&repo, &["ls"]);
    assert!(listed.lines().count() >= 1);
    for key in listed.lines() {
        assert_eq!(ok(&repo, &["get", key]), "block");
    }
}

/// Item 11: progress on a terminal counts blocks and bytes, and an import
/// from stdin shows no made-up total. Runs the tool under `script`, which
/// gives it a terminal.
#[cfg(target_os = "linux")]
#[test]
fn progress_on_a_terminal_counts_blocks_and_bytes() {
    let dir = common::tempdir();
    let repo = dir.path().join("repo");
    let big = dir.path().join("big");
    std::fs::write(&big, common::block(3, 24 << 20)).unwrap();
    let root = ok(&repo, &["add", "-q", big.to_str().unwrap()]);
    let car = dir.path().join("big.car");
    ok(
        &repo,
        &["export", "--root", root.trim(), car.to_str().unwrap()],
    );
    let fresh = dir.path().join("fresh");
    let cmd = format!(
        "{} --repo {} import - < {}",
        env!("CARGO_BIN_EXE_flatstore"),
        fresh.display(),
        car.display()
    );
    let out = match Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => return eprintln!("SKIPPED progress test: no `script` ({e})"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("imported"), "{text}");
    assert!(
        text.contains("blocks"),
        "no block count in the progress: {text}"
    );
    assert!(!text.contains("/0 B"), "a made-up total: {text}");
}
