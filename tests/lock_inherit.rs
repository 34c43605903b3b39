//! The store's lock and processes started by other threads (Unix).
#![cfg(unix)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{opts, tempdir};
use flatstore::{Durability, Error, Store};

/// A store closed while another thread is between fork and exec of a child
/// process can be reopened at once: the lock is a POSIX record lock, which
/// the forked child does not inherit (an `flock`, as std's `File::try_lock`
/// takes on Unix, would be shared with the child until its exec). The forked
/// child is held 300 ms before exec to make the window wide.
#[test]
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
