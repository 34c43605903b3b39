//! `flatstore-bench`: flatstore against the floor (the bare system calls) and
//! embedded peers on the standard workloads W1–W8 (see BENCHMARKS.md).
//!
//! The harness process plans and alternates the runs; every measurement runs
//! in a child process (this same binary with `__child`), which loads its
//! inputs, resets its peak-RSS counter, times the workload, and prints one
//! `RESULT` line with the time and its peak RSS. Children isolate memory
//! figures and leave no state (open handles, caches inside a library) from
//! one run to the next; the page cache is shared, and the harness calls
//! `sync` after each run that wrote, so write-back of one run does not land
//! in the next.

mod car;
mod child;
mod data;
mod huge;
mod plan;
mod report;
mod subjects;
mod sys;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Every setting of a harness run.
#[derive(Clone, Debug)]
pub struct Config {
    pub smoke: bool,
    pub runs: usize,
    /// Runs of the writing workloads (W1, W2, W7), which take longest.
    pub write_runs: Option<usize>,
    pub dir: Option<PathBuf>,
    pub keep: bool,
    pub write: Option<PathBuf>,
    pub only: Option<Vec<String>>,
    pub subjects: Option<Vec<String>>,
    pub w1: (usize, usize),
    pub w2: (usize, usize),
    /// W2 with fsync, when it should be smaller than W2 without.
    pub w2_fsync: Option<(usize, usize)>,
    pub w7: (usize, usize),
    /// W8: MiB of file data packed into the CAR.
    pub w8_mib: usize,
    pub absent: usize,
    pub get_threads: usize,
    pub seed: u64,
    pub command: String,
}

const USAGE: &str = "\
flatstore-bench: flatstore against the bare system calls (the floor) and
embedded peers (LMDB via heed, redb, fjall, cacache) on workloads W1-W8
(W8: the command-line tool importing a CAR made by ipfs-car).

USAGE (from the repository root):
    cargo run --release --manifest-path bench/Cargo.toml -- [OPTIONS]
    cargo run --release --manifest-path bench/Cargo.toml -- w9 --dir DIR \
        --blocks N [--durability none|fsync]
                       W9: one batch of N blocks of 64 B in DIR (a tmpfs with
                       enough inodes, or ext4): staging, commit, and the
                       reopen after a kill mid-publish, timed, with peak RSS

OPTIONS:
    --smoke            tiny sizes, 2 runs, writes nothing (a few seconds)
    --runs N           runs per implementation and workload (default 5)
    --write-runs N     runs of the writing workloads W1, W2, W7 (default: --runs)
    --dir DIR          where stores are made (default: ./target/ of the
                       current directory; keep it off tmpfs)
    --keep             keep the stores afterwards
    --write FILE       write the results between the markers of FILE
                       (default in full mode: BENCHMARKS.md of the repository)
    --no-write         print the results only
    --only LIST        workloads to run, e.g. W1,W3 (default: all)
    --subjects LIST    implementations, e.g. floor,flatstore (default: all
                       but flatstore-wt1/-wt2/-wt4/-wt8, flatstore with
                       Options::writer_threads(N), run only when named)
    --w1 NxSIZE        W1 blocks x bytes (default 4096x262144)
    --w2 NxSIZE        W2 blocks x bytes (default 100000x1024)
    --w2-fsync NxSIZE  W2 with fsync only (default: same as --w2)
    --w7 NxSIZE        W7 blocks x bytes (default 10000x4096)
    --w8 MIB           W8: MiB of files packed into the CAR (default 1024);
                       needs `ipfs-car` (npm) on PATH or in $IPFS_CAR
    --absent N         absent keys in W4 (default 100000)
    --seed N           data seed (default 1)
";

fn parse_nxs(s: &str) -> Result<(usize, usize)> {
    let (n, size) = s
        .split_once('x')
        .with_context(|| format!("expected NxSIZE, got {s:?}"))?;
    Ok((n.parse()?, size.parse()?))
}

fn parse_args(args: Vec<String>) -> Result<Option<Config>> {
    let smoke = args.iter().any(|a| a == "--smoke");
    let mut c = Config {
        smoke,
        runs: if smoke { 2 } else { 5 },
        write_runs: None,
        dir: None,
        keep: false,
        write: (!smoke)
            .then(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md"))),
        only: None,
        subjects: None,
        w1: if smoke {
            (64, 64 << 10)
        } else {
            (4096, 256 << 10)
        },
        w2: if smoke { (64, 1024) } else { (100_000, 1024) },
        w2_fsync: None,
        w7: if smoke { (64, 4096) } else { (10_000, 4096) },
        w8_mib: if smoke { 4 } else { 1024 },
        absent: if smoke { 64 } else { 100_000 },
        get_threads: 2,
        seed: 1,
        command: std::iter::once("flatstore-bench".to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--smoke" => {}
            "--runs" => c.runs = value()?.parse()?,
            "--write-runs" => c.write_runs = Some(value()?.parse()?),
            "--dir" => c.dir = Some(value()?.into()),
            "--keep" => c.keep = true,
            "--write" => c.write = Some(value()?.into()),
            "--no-write" => c.write = None,
            "--only" => {
                c.only = Some(
                    value()?
                        .split(',')
                        .map(|s| s.trim().to_uppercase())
                        .collect(),
                )
            }
            "--subjects" => {
                c.subjects = Some(value()?.split(',').map(|s| s.trim().into()).collect())
            }
            "--w1" => c.w1 = parse_nxs(&value()?)?,
            "--w2" => c.w2 = parse_nxs(&value()?)?,
            "--w2-fsync" => c.w2_fsync = Some(parse_nxs(&value()?)?),
            "--w7" => c.w7 = parse_nxs(&value()?)?,
            "--w8" => c.w8_mib = value()?.parse()?,
            "--absent" => c.absent = value()?.parse()?,
            "--seed" => c.seed = value()?.parse()?,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if c.runs == 0 || c.write_runs == Some(0) {
        bail!("--runs must be at least 1");
    }
    Ok(Some(c))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        return child::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("__w9") {
        return huge::child(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("w9") {
        return huge::run(&args[1..]);
    }
    let Some(config) = parse_args(args)? else {
        return Ok(());
    };
    plan::run(&config)
}
