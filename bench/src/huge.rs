//! W9, import-huge: one batch of many tiny blocks (64 B). Timed in child
//! processes: staging (every `put`), commit, and the reopen that finishes a
//! batch killed in the middle of its publish; each with the child's peak RSS
//! (`VmHWM`).
//!
//! `flatstore-bench w9 --dir DIR --blocks N [--durability none|fsync]`
//!
//! Keys are the sha2-256 multihash keys of the blocks. With 10 million
//! blocks the keys alone would take a GiB, so they are made as the blocks
//! are put; a first pass that only makes blocks and keys is timed apart and
//! subtracted from the staging time (both are reported).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flatstore::{Durability, Key, Options, Store};
use multihash_codetable::{Code, MultihashDigest};

use crate::sys;

const SIZE: usize = 64;

fn block(i: u64, buf: &mut [u8; SIZE]) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

fn key(data: &[u8]) -> Key {
    Key::from_multihash(&Code::Sha2_256.digest(data))
}

fn options(durability: &str) -> Result<Options> {
    Ok(Options::default().durability(match durability {
        "none" => Durability::None,
        "fsync" => Durability::Fsync,
        d => bail!("unknown durability {d:?}"),
    }))
}

/// Child: `__w9 stage|killed|reopen ROOT N DURABILITY`.
pub fn child(args: &[String]) -> Result<()> {
    let [task, root, n, durability] = args else {
        bail!("usage: __w9 TASK ROOT N DURABILITY");
    };
    let n: u64 = n.parse()?;
    let opts = options(durability)?;
    let mut buf = [0u8; SIZE];
    match task.as_str() {
        "stage" | "killed" => {
            // Blocks and keys alone, to subtract from the staging time.
            let t = Instant::now();
            let mut sink = 0usize;
            for i in 0..n {
                block(i, &mut buf);
                sink += key(&buf).as_str().len();
            }
            let hashing = t.elapsed();
            let store = Store::open(root, opts)?;
            sys::reset_peak_rss();
            let t = Instant::now();
            let batch = store.batch()?;
            for i in 0..n {
                block(i, &mut buf);
                batch.put(&key(&buf), &buf)?;
            }
            let staged = t.elapsed();
            println!(
                "STAGED ns={} hashing_ns={} hwm_kib={} sink={sink}",
                staged.as_nanos(),
                hashing.as_nanos(),
                sys::status_kib("VmHWM").unwrap_or(0)
            );
            let t = Instant::now();
            let summary = batch.commit()?;
            let commit = t.elapsed();
            anyhow::ensure!(summary.written == n, "wrote {}", summary.written);
            println!(
                "COMMITTED ns={} hwm_kib={}",
                commit.as_nanos(),
                sys::status_kib("VmHWM").unwrap_or(0)
            );
            store.close()?;
        }
        "reopen" => {
            sys::reset_peak_rss();
            let t = Instant::now();
            let store = Store::open(root, opts)?;
            let took = t.elapsed();
            println!(
                "REOPENED ns={} hwm_kib={}",
                took.as_nanos(),
                sys::status_kib("VmHWM").unwrap_or(0)
            );
            block(n - 1, &mut buf);
            anyhow::ensure!(store.has(&key(&buf))?, "last block missing after reopen");
        }
        t => bail!("unknown W9 task {t}"),
    }
    Ok(())
}

/// The value of `name=` in a line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn secs(ns: u64) -> String {
    format!("{:.2} s", Duration::from_nanos(ns).as_secs_f64())
}

fn command(task: &str, root: &Path, n: u64, durability: &str) -> Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("__w9")
        .arg(task)
        .arg(root)
        .arg(n.to_string())
        .arg(durability)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(c)
}

/// Whether a staging directory under `root` holds a commit record.
fn record_present(root: &Path) -> bool {
    std::fs::read_dir(root.join(".temp"))
        .is_ok_and(|rd| rd.flatten().any(|e| e.path().join("COMMIT").exists()))
}

/// Staged entries left under `root/.temp` (blocks still to publish).
fn staged_left(root: &Path) -> u64 {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(root.join(".temp")) else {
        return 0;
    };
    for batch in rd.flatten() {
        let Ok(shards) = std::fs::read_dir(batch.path().join("b")) else {
            continue;
        };
        for s in shards.flatten() {
            n += std::fs::read_dir(s.path()).map_or(0, |r| r.count() as u64);
        }
    }
    n
}

pub fn run(args: &[String]) -> Result<()> {
    let mut dir: Option<PathBuf> = None;
    let mut n: u64 = 1_000_000;
    let mut durability = "none".to_string();
    // Only the killed run, killed this long after its commit point (for
    // sizes where staging twice takes too long): its commit time is then
    // the time until the kill plus the reopen that finishes it.
    let mut kill_after: Option<f64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dir" => dir = Some(value()?.into()),
            "--blocks" => n = value()?.parse()?,
            "--durability" => durability = value()?.clone(),
            "--killed-only" => kill_after = Some(value()?.parse()?),
            other => bail!("unknown W9 argument {other:?}"),
        }
    }
    let dir = dir.context("--dir is required")?;
    let fs_name = sys::filesystem(&dir);
    let run_dir = dir.join(format!("w9-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    eprintln!("W9: {n} blocks of {SIZE} B, durability {durability}, on {fs_name}");

    // 1. Stage and commit, to the end.
    let (mut stage_ns, mut hash_ns, mut commit_ns, mut hwm) = (0, 0, 0, 0);
    if kill_after.is_none() {
        let root = run_dir.join("whole");
        let out = command("stage", &root, n, &durability)?.output()?;
        if !out.status.success() {
            bail!("W9 stage child failed");
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let staged = text
            .lines()
            .find(|l| l.starts_with("STAGED"))
            .context("no STAGED")?;
        let committed = text
            .lines()
            .find(|l| l.starts_with("COMMITTED"))
            .context("no COMMITTED")?;
        (stage_ns, hash_ns) = (
            field(staged, "ns").unwrap(),
            field(staged, "hashing_ns").unwrap(),
        );
        commit_ns = field(committed, "ns").unwrap();
        hwm = field(committed, "hwm_kib").unwrap();
        eprintln!("{staged}\n{committed}");
        let _ = std::fs::remove_dir_all(&root);
        sys::sync_all_filesystems();
    }

    // 2. The same, killed in the middle of its publish; then the reopen.
    let root = run_dir.join("killed");
    let mut child = command("killed", &root, n, &durability)?.spawn()?;
    let t = Instant::now();
    while !record_present(&root) {
        if child.try_wait()?.is_some() {
            bail!("the killed child ended before its commit point");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let at_record = t.elapsed();
    // Half-way through the publish, by the first run's commit time.
    let wait = match kill_after {
        Some(s) => Duration::from_secs_f64(s),
        None => Duration::from_nanos(commit_ns / 2),
    };
    std::thread::sleep(wait);
    child.kill()?;
    let out = child.wait_with_output()?;
    let until_kill = t.elapsed();
    if kill_after.is_some() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let staged = text
            .lines()
            .find(|l| l.starts_with("STAGED"))
            .context("no STAGED")?;
        (stage_ns, hash_ns) = (
            field(staged, "ns").unwrap(),
            field(staged, "hashing_ns").unwrap(),
        );
        hwm = field(staged, "hwm_kib").unwrap();
        eprintln!("{staged}\nkilled {wait:?} after the commit record appeared");
    }
    let _ = at_record;
    let left = staged_left(&root);
    eprintln!("{left} staged blocks left");
    let out = command("reopen", &root, n, &durability)?.output()?;
    if !out.status.success() {
        bail!("W9 reopen child failed");
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let reopened = text
        .lines()
        .find(|l| l.starts_with("REOPENED"))
        .context("no REOPENED")?;
    let reopen_ns = field(reopened, "ns").unwrap();
    let reopen_hwm = field(reopened, "hwm_kib").unwrap();
    eprintln!("{reopened}");
    if kill_after.is_none() {
        let _ = std::fs::remove_dir_all(&run_dir);
    } else {
        eprintln!(
            "store left in {} (remove it, or remake the filesystem)",
            run_dir.display()
        );
    }
    let _ = until_kill;

    let commit = match kill_after {
        None => secs(commit_ns),
        Some(s) => format!("killed {s:.0} s after its commit point"),
    };
    println!(
        "| W9 | {n} × {SIZE} B | {durability} | {fs_name} | {} ({} with making the keys) | {commit} | {} | {} (of {n}, {left} left) | {} MiB |",
        secs(stage_ns.saturating_sub(hash_ns)),
        secs(stage_ns),
        if hwm > 0 { format!("{} MiB", hwm / 1024) } else { "—".into() },
        secs(reopen_ns),
        reopen_hwm / 1024,
    );
    Ok(())
}
