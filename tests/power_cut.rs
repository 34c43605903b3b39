//! Power cut (Linux, root; skipped with a printed reason otherwise): on a
//! loop-mounted ext4 image, a child process with `Durability::Fsync` commits
//! batches in a loop (each puts `BLOCKS` blocks and deletes one block of the
//! previous batch), and after each commit also does one single `put`,
//! printing (flushed) the number of every batch and put that returned. The
//! parent SIGKILLs it at a random instant and at once copies the image file
//! (`cp --sparse=always`: no unmount, no sync), repairs the copy with
//! `e2fsck -fy` (journal replay), mounts the copy read-write (the store's
//! recovery at open needs to write), opens the store and checks:
//!
//! - every batch whose commit returned is present and whole (contents
//!   compared), and so is every single put that returned;
//! - no batch is partial: each batch is all there or not at all, its delete
//!   applied exactly when its puts are;
//! - `.temp/` is empty after the open, and the counters match a walk.
//!
//! # How faithful this is
//! The copy holds what the loop device had *received* when it was read: the
//! writes the filesystem had submitted, not what was still dirty in the
//! mounted filesystem's page cache. So it shows whether the store asked for
//! durability at the right moments (an `fsync` that was missing, or came
//! after the acknowledgement, shows up as a lost or partial batch), and that
//! the on-disk state at such an instant is recoverable. It does not model a
//! disk's volatile write cache: the loop device behaves like a disk that
//! never reorders or drops writes it received, so a missing cache flush or
//! a torn sector cannot show up here. And the copy is not instantaneous: the
//! kernel's writeback of the killed child's earlier writes can land while
//! it is being read, mixing a slightly later state into parts of the copy
//! (`e2fsck` repairs what that breaks in the filesystem; the store must
//! still be consistent, which is a stricter test, not a weaker one).
//!
//! `FLATSTORE_POWER_CUT_TRIALS` sets the number of trials (default 8).
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{self, spawn};
use common::mount::{skip, Mount};
use common::{block, key_of, opts, temp_entries};
use flatstore::{Durability, Key, Store};
use rand::{Rng, SeedableRng};

/// Blocks per batch.
const BLOCKS: u64 = 24;

fn batch_block(trial: u64, n: u64, i: u64) -> Vec<u8> {
    block(
        (trial << 40) | (n << 12) | i,
        1000 + ((n * 31 + i * 977) % 9000) as usize,
    )
}

fn single_block(trial: u64, n: u64) -> Vec<u8> {
    block(
        (trial << 40) | (n << 12) | 0xfff,
        3000 + (n % 5000) as usize,
    )
}

/// Child: opens the store, then commits batches (and single puts) until it
/// is killed, saying the number of each one that returned.
#[test]
#[ignore = "child process entry point"]
fn child_commit_until_killed() {
    let Some(arg) = child::arg() else { return };
    let (root, trial) = arg.split_once('|').unwrap();
    let trial: u64 = trial.parse().unwrap();
    let store = Store::open(root, opts(Durability::Fsync)).unwrap();
    child::say("open");
    for n in 0.. {
        let batch = store.batch().unwrap();
        for i in 0..BLOCKS {
            let d = batch_block(trial, n, i);
            batch.put(&key_of(&d), &d).unwrap();
        }
        if n > 0 {
            batch
                .delete(&key_of(&batch_block(trial, n - 1, 0)))
                .unwrap();
        }
        batch.commit().unwrap();
        child::say(&format!("batch {n}"));
        let d = single_block(trial, n);
        store.put(&key_of(&d), &d).unwrap();
        child::say(&format!("put {n}"));
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is e2fsprogs installed?): {e}"))
}

fn check_ok(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Trial {
    acked_batches: u64,
    acked_puts: u64,
    present_batches: u64,
    fsck_code: i32,
    rolled_forward: usize,
}

/// What the cut left in `.temp/`: staging directories, and how many of
/// them hold a commit record (to be rolled forward by the open).
fn staged(root: &Path) -> (usize, usize) {
    let entries = temp_entries(root);
    let committed = entries
        .iter()
        .filter(|e| root.join(".temp").join(e).join("COMMIT").exists())
        .count();
    (entries.len(), committed)
}

/// Checks the store at `root` (on the repaired copy) after trial `trial`.
fn check_copy(root: &Path, trial: u64, acked: &BTreeSet<u64>, puts: &BTreeSet<u64>) -> u64 {
    let store = Store::open(root, opts(Durability::None)).unwrap();
    assert!(
        temp_entries(root).is_empty(),
        "trial {trial}: .temp not empty after open: {:?}",
        temp_entries(root)
    );
    let last = acked.iter().max().map_or(0, |n| n + 1);
    // Batches past the last acknowledged one may have committed (killed
    // before saying so) or be partly staged: each must be all or nothing.
    let mut whole: Vec<bool> = Vec::new();
    for n in 0..last + 3 {
        let present = (1..BLOCKS)
            .filter(|&i| {
                let d = batch_block(trial, n, i);
                match store.get(&key_of(&d)).unwrap() {
                    Some(got) => {
                        assert_eq!(got, d, "trial {trial}: batch {n} block {i} corrupt");
                        true
                    }
                    None => false,
                }
            })
            .count() as u64;
        assert!(
            present == 0 || present == BLOCKS - 1,
            "trial {trial}: batch {n} is partial: {present} of {} blocks",
            BLOCKS - 1
        );
        if acked.contains(&n) {
            assert_eq!(
                present,
                BLOCKS - 1,
                "trial {trial}: batch {n} was acknowledged but is gone"
            );
        }
        whole.push(present > 0);
    }
    // Batches commit in order, so the present ones are a prefix.
    let count = whole.iter().take_while(|&&w| w).count();
    assert!(
        whole[count..].iter().all(|&w| !w),
        "trial {trial}: a later batch without an earlier one: {whole:?}"
    );
    // Block 0 of batch n is there exactly when batch n is and n+1 (which
    // deletes it) is not.
    for n in 0..whole.len() - 1 {
        let d = batch_block(trial, n as u64, 0);
        let want = whole[n] && !whole[n + 1];
        match store.get(&key_of(&d)).unwrap() {
            Some(got) => {
                assert!(want, "trial {trial}: batch {} delete not applied", n + 1);
                assert_eq!(got, d, "trial {trial}: batch {n} block 0 corrupt");
            }
            None => assert!(!want, "trial {trial}: batch {n} block 0 missing"),
        }
    }
    for &n in puts {
        let d = single_block(trial, n);
        assert_eq!(
            store.get(&key_of(&d)).unwrap().as_ref(),
            Some(&d),
            "trial {trial}: acknowledged put {n} lost"
        );
    }
    // A single put is whole or absent, acknowledged or not (a put under way
    // at the cut must not leave a torn block).
    for n in 0..=whole.len() as u64 {
        let d = single_block(trial, n);
        if let Some(got) = store.get(&key_of(&d)).unwrap() {
            assert_eq!(got, d, "trial {trial}: put {n} is torn");
        }
    }
    let s = common::wait_exact(&store);
    let walked: Vec<(Key, u64)> = store.entries().map(|e| e.unwrap()).collect();
    assert_eq!(
        s.blocks,
        walked.len() as u64,
        "trial {trial}: block counter"
    );
    assert_eq!(
        s.bytes,
        walked.iter().map(|(_, n)| n).sum::<u64>(),
        "trial {trial}: byte counter"
    );
    count as u64
}

#[test]
fn power_cut_during_commits_loses_no_acknowledged_batch() {
    power_cut(
        "power_cut_during_commits_loses_no_acknowledged_batch",
        Fs::Ext4,
    );
}

/// The same on btrfs, which orders its metadata by its own log tree, not
/// by one journal: a record removal that was not fsynced can come back.
#[test]
fn power_cut_on_btrfs_loses_no_acknowledged_batch() {
    power_cut("power_cut_on_btrfs_loses_no_acknowledged_batch", Fs::Btrfs);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fs {
    Ext4,
    Btrfs,
}

fn power_cut(test: &str, fs: Fs) {
    if let Some(reason) = common::mount::cannot_mount() {
        skip(test, &reason);
        return;
    }
    let trials: u64 = std::env::var("FLATSTORE_POWER_CUT_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("FLATSTORE_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("seed {seed} (FLATSTORE_POWER_CUT_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let dir = common::tempdir();
    let image = dir.path().join("fs.img");
    let copy = dir.path().join("copy.img");
    check_ok(Command::new("truncate").arg("-s").arg("384M").arg(&image));
    match fs {
        Fs::Ext4 => check_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image)),
        Fs::Btrfs => check_ok(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image)),
    }
    let live = match Mount::loop_image(&image, &dir.path().join("live"), "") {
        Ok(m) => m,
        Err(reason) => {
            skip(test, &reason);
            return;
        }
    };

    let started = Instant::now();
    let mut results = Vec::new();
    for trial in 0..trials {
        let root = live.path().join(format!("s{trial}"));
        let arg = format!("{}|{trial}", root.to_str().unwrap());
        let (mut c, lines) = spawn(child::command("child_commit_until_killed", &arg));
        lines.expect("open", 120);
        let wait = Duration::from_millis(rng.random_range(200..2500));
        std::thread::sleep(wait);
        // The power cut: kill, then copy the image at once.
        c.kill().unwrap();
        check_ok(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(&image)
                .arg(&copy),
        );
        c.wait().unwrap();
        let said = lines.rest(30);
        let pick = |what: &str| -> BTreeSet<u64> {
            said.iter()
                .filter_map(|l| l.strip_prefix(what)?.parse().ok())
                .collect()
        };
        let (acked, puts) = (pick("batch "), pick("put "));

        // ext4: e2fsck replays the journal; btrfs replays its log tree when
        // the copy is mounted (the kernel mounts a copy beside its original).
        let code = match fs {
            Fs::Ext4 => {
                let fsck = run(Command::new("e2fsck").arg("-fy").arg(&copy));
                let code = fsck.status.code().unwrap_or(-1);
                assert!(
                    code == 0 || code == 1,
                    "trial {trial}: e2fsck could not repair the copy (exit {code}): {}",
                    String::from_utf8_lossy(&fsck.stdout)
                );
                code
            }
            Fs::Btrfs => 0,
        };
        let (present, (temp, committed)) = {
            let m = Mount::loop_image(&copy, &dir.path().join("copy"), "").expect("mount the copy");
            let root = m.path().join(format!("s{trial}"));
            let left = staged(&root);
            (check_copy(&root, trial, &acked, &puts), left)
        };
        std::fs::remove_file(&copy).unwrap();
        eprintln!(
            "trial {trial}: killed after {wait:?}: {} batches and {} puts acknowledged, \
             {present} batches present, fsck exit {code}, {temp} entries in .temp \
             ({committed} with a commit record)",
            acked.len(),
            puts.len()
        );
        results.push(Trial {
            acked_batches: acked.len() as u64,
            acked_puts: puts.len() as u64,
            present_batches: present,
            fsck_code: code,
            rolled_forward: committed,
        });
    }
    let acked: u64 = results.iter().map(|t| t.acked_batches).sum();
    let present: u64 = results.iter().map(|t| t.present_batches).sum();
    let puts: u64 = results.iter().map(|t| t.acked_puts).sum();
    let replayed = results.iter().filter(|t| t.fsck_code == 1).count();
    let rolled: usize = results.iter().map(|t| t.rolled_forward).sum();
    eprintln!(
        "{fs:?}: {trials} power cuts in {:.0?}: {acked} acknowledged batches (all present, whole), \
         {present} present in total, {puts} acknowledged puts; fsck repaired {replayed} copies; \
         {rolled} committed batches rolled forward at open",
        started.elapsed()
    );
    assert!(
        acked > 0,
        "no batch was ever acknowledged: the test tested nothing"
    );
}
