//! Behaviour across processes: the lock, a killed process, open-file limits.
//! Child processes are this binary's own `#[ignore]`d entry points.

mod common;

use common::child::{self, kill, spawn};
use common::{block, key_of, opts, tempdir};
use flatstore::{Accuracy, Durability, Error, Options, Store};

/// Child: opens the store at the given path, puts 500 blocks (reports
/// "opened"), then waits until killed.
#[test]
#[ignore = "child process entry point"]
fn child_hold_store() {
    let Some(root) = child::arg() else { return };
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    for i in 0..500u64 {
        let d = block(i, 1000 + i as usize);
        store.put(&key_of(&d), &d).unwrap();
    }
    store.delete(&key_of(&block(0, 1000))).unwrap();
    child::say("opened");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

#[test]
fn a_second_process_shares_the_store_and_a_kill_releases_exclusive_work() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let (mut c, lines) = spawn(child::command("child_hold_store", root.to_str().unwrap()));
    lines.expect("opened", 120);
    // Writers and readers share the store with the live child.
    let reader = Store::open(&root, Options::default().read_only(true)).unwrap();
    let d = block(1, 1001);
    assert_eq!(reader.get(&key_of(&d)).unwrap(), Some(d.clone()));
    let mut writer = Store::open(&root, Options::default()).unwrap();
    // Exclusive work is refused while the child lives, naming it.
    match writer.reshard("prefix/2".parse().unwrap(), &mut |_| {}) {
        Err(Error::Locked { path, holders }) => {
            assert!(path.ends_with(".lock"), "{path:?}");
            assert_eq!(holders, vec![c.id()]);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop((reader, writer));
    kill(&mut c);
    // The kill released its hold; its counts died with it, so the next
    // open recomputes them from the files, and they come out exact.
    let store = Store::open(&root, Options::default()).unwrap();
    let s = common::wait_exact(&store);
    let expect_bytes: u64 = (1..500u64).map(|i| 1000 + i).sum();
    assert_eq!(
        (s.blocks, s.bytes, s.accuracy),
        (499, expect_bytes, Accuracy::Exact)
    );
    assert!(common::temp_entries(&root).is_empty());
}

/// Child: 32 threads × 200 puts under a low open-file limit.
#[test]
#[ignore = "child process entry point"]
fn child_many_threads_few_files() {
    let Some(arg) = child::arg() else { return };
    let (root, gate) = arg.split_once('|').unwrap();
    // Without the store's own cap, only the retry on EMFILE saves the puts.
    let options = match gate {
        "gate" => opts(Durability::Fsync),
        _ => opts(Durability::Fsync).max_open_files(10_000),
    };
    let store = Store::open(root, options).unwrap();
    // The application holds many files itself, leaving the store about 20.
    let hog: Vec<std::fs::File> = (0..40)
        .map(|_| std::fs::File::open(root).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..32u64 {
            let store = &store;
            s.spawn(move || {
                for i in 0..200u64 {
                    let d = block(t * 1000 + i, 512);
                    store.put(&key_of(&d), &d).unwrap();
                }
            });
        }
    });
    assert_eq!(store.stats().blocks, 6400);
    drop(hog);
    child::say("done");
}

#[cfg(unix)]
#[test]
fn too_many_open_files_is_handled() {
    for gate in ["gate", "nogate"] {
        too_many_open_files(gate);
    }
}

#[cfg(unix)]
fn too_many_open_files(gate: &str) {
    use std::os::unix::process::CommandExt;
    let dir = tempdir();
    let root = dir.path().join("s");
    let arg = format!("{}|{gate}", root.to_str().unwrap());
    let mut cmd = child::command("child_many_threads_few_files", &arg);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut c, lines) = spawn(cmd);
    lines.expect("done", 600);
    assert!(c.wait().unwrap().success());
    let store = Store::open(&root, Options::default()).unwrap();
    assert_eq!(common::keys(&store).len(), 6400);
    for t in [0u64, 17, 31] {
        let d = block(t * 1000 + 199, 512);
        assert_eq!(store.get(&key_of(&d)).unwrap().unwrap(), d);
    }
}
