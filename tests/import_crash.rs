//! An import killed at a random instant leaves all of the CAR or none of it:
//! the command-line tool (`flatstore import`, one atomic batch) is run as a
//! process on a CAR of a few thousand blocks and killed (SIGKILL on Unix,
//! TerminateProcess on Windows) anywhere from its start to its end; the
//! store is then reopened and checked.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use flatstore::cid::Cid;
use flatstore::{CarWriter, Durability, Key, Options, Store};
use multihash_codetable::{Code, MultihashDigest};
use rand::{Rng, SeedableRng};

const BLOCKS: u64 = 2000;
/// CID codec of raw blocks.
const RAW: u64 = 0x55;

/// Writes a CARv1 of `BLOCKS` raw blocks to `path`; returns their CIDs and bytes.
fn make_car(path: &Path) -> Vec<(Cid, Vec<u8>)> {
    let blocks: Vec<(Cid, Vec<u8>)> = (0..BLOCKS)
        .map(|i| {
            let d = common::block(i, 2000 + (i as usize * 131) % 6000);
            (Cid::new_v1(RAW, Code::Sha2_256.digest(&d)), d)
        })
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let mut w = CarWriter::new(std::io::BufWriter::new(file), &[blocks[0].0]).unwrap();
    for (cid, d) in &blocks {
        w.write_block(cid, d).unwrap();
    }
    use std::io::Write;
    w.finish().unwrap().flush().unwrap();
    blocks
}

/// Returns once a commit record exists in the store's `.temp/` (or the
/// child has exited).
fn wait_for_commit_record(repo: &Path, child: &mut std::process::Child) {
    let temp = repo.join(".temp");
    loop {
        let recorded = std::fs::read_dir(&temp)
            .is_ok_and(|entries| entries.flatten().any(|e| e.path().join("COMMIT").exists()));
        if recorded || child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn import(repo: &Path, car: &Path, fsync: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flatstore"));
    c.arg("--repo").arg(repo);
    if !fsync {
        c.arg("--no-fsync");
    }
    c.arg("import").arg(car);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

#[test]
fn import_killed_anywhere_is_all_or_nothing() {
    let dir = common::tempdir();
    let car = dir.path().join("big.car");
    let blocks = make_car(&car);
    let trials: u64 = std::env::var("FLATSTORE_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|n: u64| n.min(20))
        .unwrap_or(if cfg!(windows) { 6 } else { 16 });
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // How long an import takes here, with and without fsync.
    let span = |fsync: bool| {
        let timing = dir.path().join(format!("timing-{fsync}"));
        let start = Instant::now();
        assert!(import(&timing, &car, fsync).status().unwrap().success());
        std::fs::remove_dir_all(&timing).unwrap();
        start.elapsed()
    };
    let spans = [span(false), span(true)];
    let (mut all, mut none) = (0, 0);
    for t in 0..trials {
        let fsync = t % 2 == 1;
        let repo = dir.path().join(format!("repo-{t}"));
        let mut child = import(&repo, &car, fsync).spawn().unwrap();
        // Half the kills in the first 80% of the import (timed by the runs above),
        // half just after its commit point: once the batch's commit record
        // is seen on disk, within the next 30 ms (during the publication).
        if rng.random_bool(0.5) {
            std::thread::sleep(spans[usize::from(fsync)].mul_f64(rng.random_range(0.0..0.8)));
        } else {
            wait_for_commit_record(&repo, &mut child);
            std::thread::sleep(std::time::Duration::from_micros(
                rng.random_range(0..30_000),
            ));
        }
        let finished = child.try_wait().unwrap();
        common::child::kill(&mut child);
        if let Some(status) = finished {
            assert!(status.success(), "trial {t}: import failed on its own");
        }
        if !repo.join("SHARDING").exists() {
            // Killed before the store was even created.
            none += 1;
            continue;
        }
        let store = Store::open(&repo, Options::default().durability(Durability::None)).unwrap();
        assert!(
            common::temp_entries(&repo).is_empty(),
            "trial {t}: .temp not empty after open"
        );
        let mut present = 0u64;
        for (cid, d) in &blocks {
            if let Some(got) = store.get(&Key::from_cid(cid)).unwrap() {
                assert_eq!(&got, d, "trial {t}: block {cid} has wrong contents");
                present += 1;
            }
        }
        assert!(
            present == 0 || present == BLOCKS,
            "trial {t}: partial import: {present} of {BLOCKS} blocks"
        );
        if finished.is_some() {
            assert_eq!(present, BLOCKS, "trial {t}: import returned, blocks gone");
        }
        let s = common::wait_exact(&store);
        assert_eq!(s.blocks, present, "trial {t}: counters");
        if present == BLOCKS {
            all += 1;
        } else {
            none += 1;
        }
        store.close().unwrap();
        std::fs::remove_dir_all(&repo).unwrap();
    }
    eprintln!("{trials} killed imports: {all} all, {none} none");
    if trials >= 16 {
        // The kills fell on both sides of the commit point: those after the
        // record must find everything, and an early one finds everything
        // only if its import ran faster than the timed runs above.
        assert!(all > 0 && none > 0, "all {all} none {none}");
    }
}
