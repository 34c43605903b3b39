//! The store's lock and processes started by other threads (Unix).
#![cfg(unix)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{opts, tempdir};
use flatstore::{Durability, Error, Store};

/// Known bug: the lock is a `flock` on `.lock`, which a process forked by
/// any thread shares until it calls exec. A store closed while another
/// thread is between fork and exec stays locked until that exec, so a
/// reopen right after the close fails with `Error::Locked` (probably what
/// made a crash-test child, started while the other crash test's thread
/// was spawning, fail its open on a loaded machine). Here the forked child
/// is held 300 ms before exec to make the window wide. POSIX record locks
/// (`fcntl(F_SETLK)`) are not inherited by fork; with them, the in-process
/// "another handle" check would need a registry of open roots.
#[test]
#[ignore = "known bug: the flock on .lock is shared with processes forked by other threads until they exec, so a store closed meanwhile cannot be reopened (Error::Locked)"]
fn reopen_after_close_while_another_thread_spawns_a_process() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    let spawner = std::thread::spawn(|| {
        let mut cmd = Command::new("true");
        // SAFETY: only an async-signal-safe sleep between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::usleep(300_000);
                Ok(())
            });
        }
        cmd.status().unwrap()
    });
    // Let the fork happen while the store is open, then close it.
    std::thread::sleep(Duration::from_millis(100));
    store.close().unwrap();
    let reopened = Store::open(&root, opts(Durability::None));
    spawner.join().unwrap();
    match reopened {
        Ok(_) => {}
        Err(Error::Locked { .. }) => panic!("store closed in this process is still locked"),
        Err(e) => panic!("{e}"),
    }
}
