//! One measurement, in its own process: `flatstore-bench __child TASK k=v…`.
//!
//! Prints `RESULT ns=… [ns2=…] hwm_kib=… base_kib=…` on success: the timed
//! section, an optional second time, the peak resident set size during the
//! timed section, and the resident set size just before it (the inputs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::data::{self, Blocks, Spec};
use crate::subjects::{self, Opened, Subject, Sync};
use crate::sys;

struct Args(HashMap<String, String>);

impl Args {
    fn get(&self, k: &str) -> Result<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .with_context(|| format!("child argument {k} missing"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + std::marker::Sync + 'static,
    {
        Ok(self.get(k)?.parse()?)
    }
    fn spec(&self) -> Result<Spec> {
        Ok(Spec {
            blocks: self.num("blocks")?,
            size: self.num("size")?,
            seed: self.num("seed")?,
        })
    }
    fn path(&self, k: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(self.get(k)?))
    }
}

struct Outcome {
    ns: Duration,
    ns2: Option<Duration>,
}

pub fn main(args: &[String]) -> Result<()> {
    let task = args.first().context("child task missing")?.clone();
    let args = Args(
        args[1..]
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let name = args.get("subject")?;
    let all = subjects::all();
    let subject = all
        .iter()
        .find(|s| s.name() == name)
        .with_context(|| format!("unknown subject {name}"))?
        .as_ref();
    let store = args.path("store")?;
    let outcome = match task.as_str() {
        "import" | "prepare" | "put-single" => write_task(&task, subject, &store, &args)?,
        "car-floor" => {
            let sync = Sync::parse(args.get("sync")?)?;
            let car = args.path("car")?;
            start_memory();
            BASE_RSS.store(0, Ordering::Relaxed);
            let start = Instant::now();
            subjects::floor_import_car(&car, &store, sync)?;
            Outcome {
                ns: start.elapsed(),
                ns2: None,
            }
        }
        "get" => get_task(subject, &store, &args)?,
        "has" => has_task(subject, &store, &args)?,
        "keys" | "entries" => list_task(&task, subject, &store, &args)?,
        "open-clean" | "open-crashed" => {
            let Some(t) = subject.open_time(&store, task == "open-crashed")? else {
                bail!("{name} has no open step");
            };
            Outcome {
                ns: t.open,
                ns2: t.exact,
            }
        }
        "crash" => {
            let spec = args.spec()?;
            let run: usize = args.num("run")?;
            let mut block = vec![0u8; spec.size];
            data::fill_block(spec.seed, spec.blocks + run, &mut block);
            let key = data::key_of(&block);
            if !subject.crash_prepare(&store, &key, &block)? {
                bail!("{name} cannot be crashed");
            }
            crash_now();
        }
        other => bail!("unknown child task {other}"),
    };
    let hwm = sys::status_kib("VmHWM").unwrap_or(0);
    let base = BASE_RSS.load(Ordering::Relaxed);
    let mut line = format!("RESULT ns={}", outcome.ns.as_nanos());
    if let Some(t) = outcome.ns2 {
        line.push_str(&format!(" ns2={}", t.as_nanos()));
    }
    line.push_str(&format!(" hwm_kib={hwm} base_kib={base}"));
    println!("{line}");
    Ok(())
}

/// Resident set size (KiB) when the timed section started.
static BASE_RSS: AtomicUsize = AtomicUsize::new(0);

/// Marks the start of the timed section for the memory figures.
fn start_memory() {
    sys::reset_peak_rss();
    BASE_RSS.store(
        sys::status_kib("VmRSS").unwrap_or(0) as usize,
        Ordering::Relaxed,
    );
}

/// Kills this process at once, as a crash would: no destructor, no flush.
fn crash_now() -> ! {
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

fn load_blocks(args: &Args) -> Result<Blocks> {
    let spec = args.spec()?;
    let keys = data::read_keys(&args.path("keys")?)?;
    Blocks::generate(spec, keys)
}

fn write_task(task: &str, subject: &dyn Subject, store: &Path, args: &Args) -> Result<Outcome> {
    let blocks = load_blocks(args)?;
    let sync = Sync::parse(args.get("sync")?)?;
    start_memory();
    let ns = match task {
        "put-single" => subject.put_single(store, &blocks, sync)?,
        _ => {
            let start = Instant::now();
            subject.import(store, &blocks, sync)?;
            start.elapsed()
        }
    };
    if task == "prepare" {
        subject.settle(store)?;
    }
    Ok(Outcome { ns, ns2: None })
}

/// Runs `f` over `items` with `threads` threads pulling the next index.
fn parallel<T: std::marker::Sync>(
    opened: &dyn Opened,
    items: &[T],
    threads: usize,
    f: impl Fn(&mut dyn subjects::Reader, &T) -> Result<()> + std::marker::Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut reader = opened.reader()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        f(reader.as_mut(), item)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| bail!("reader panicked")))
    })
}

/// W3: every block, in a random order, with `threads` threads; the page
/// cache is warmed by one untimed pass first.
fn get_task(subject: &dyn Subject, store: &Path, args: &Args) -> Result<Outcome> {
    let spec = args.spec()?;
    let keys = data::read_keys(&args.path("keys")?)?;
    let threads: usize = args.num("threads")?;
    let run: u64 = args.num("run")?;
    let order: Vec<&flatstore::Key> = data::shuffled(keys.len(), 1000 + run)
        .into_iter()
        .map(|i| &keys[i])
        .collect();
    let opened = subject.open_reads(store)?;
    let check = |r: &mut dyn subjects::Reader, k: &&flatstore::Key| -> Result<()> {
        let len = r.get(k)?;
        ensure!(len == Some(spec.size), "{k}: read {len:?} bytes");
        Ok(())
    };
    parallel(opened.as_ref(), &order, threads, check)?;
    start_memory();
    let start = Instant::now();
    parallel(opened.as_ref(), &order, threads, check)?;
    let ns = start.elapsed();
    drop(opened);
    Ok(Outcome { ns, ns2: None })
}

/// W4: `has` of every key plus as many absent ones, shuffled, one thread.
fn has_task(subject: &dyn Subject, store: &Path, args: &Args) -> Result<Outcome> {
    let keys = data::read_keys(&args.path("keys")?)?;
    let absent = data::absent_keys(args.num("absent")?, args.num("seed")?);
    let all: Vec<(&flatstore::Key, bool)> = keys
        .iter()
        .map(|k| (k, true))
        .chain(absent.iter().map(|k| (k, false)))
        .collect();
    let run: u64 = args.num("run")?;
    let order: Vec<(&flatstore::Key, bool)> = data::shuffled(all.len(), 2000 + run)
        .into_iter()
        .map(|i| all[i])
        .collect();
    let opened = subject.open_reads(store)?;
    let mut reader = opened.reader()?;
    // Warm the metadata caches as W3 warms the data.
    for (k, present) in &order {
        ensure!(reader.has(k)? == *present, "{k}: has() is not {present}");
    }
    start_memory();
    let start = Instant::now();
    let mut found = 0usize;
    for (k, _) in &order {
        found += usize::from(reader.has(k)?);
    }
    let ns = start.elapsed();
    ensure!(found == keys.len(), "found {found} of {}", keys.len());
    drop(reader);
    drop(opened);
    Ok(Outcome { ns, ns2: None })
}

/// W5: enumerate every key, without or with sizes.
fn list_task(task: &str, subject: &dyn Subject, store: &Path, args: &Args) -> Result<Outcome> {
    let spec = args.spec()?;
    let opened = subject.open_reads(store)?;
    let mut reader = opened.reader()?;
    let pass = |r: &mut dyn subjects::Reader| -> Result<()> {
        if task == "keys" {
            let n = r.keys()?;
            ensure!(n as usize == spec.blocks, "listed {n} keys");
        } else {
            let (n, bytes) = r.entries()?;
            ensure!(n as usize == spec.blocks, "listed {n} entries");
            ensure!(
                bytes == (spec.blocks * spec.size) as u64,
                "listed {bytes} bytes"
            );
        }
        Ok(())
    };
    pass(reader.as_mut())?;
    start_memory();
    let start = Instant::now();
    pass(reader.as_mut())?;
    let ns = start.elapsed();
    drop(reader);
    drop(opened);
    Ok(Outcome { ns, ns2: None })
}
