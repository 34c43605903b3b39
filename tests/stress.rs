//! Concurrency stress against a model: 8 threads do random puts, gets,
//! deletes, listings and batches (puts, deletes and reads, then commit,
//! discard or drop) for a bounded time, on keys of two kinds:
//!
//! - **shared keys**, which every thread writes and deletes: each key has a
//!   small fixed set of candidate contents, so any read (store or batch)
//!   must return nothing or one whole candidate, never a partial or mixed
//!   block, and a listed size must be a candidate's size;
//! - **private keys**, a range per thread that only that thread writes: the
//!   thread keeps an exact model of them (first put wins, deletes, the batch
//!   rules), so every read of its own keys must match the model exactly:
//!   an acknowledged block stays present until deleted.
//!
//! At the end, with the threads stopped: every key is checked again, the
//! counters equal a walk (`stats()` against the sum over `entries()`),
//! `.temp/` is empty, and all of it again after a reopen. The number of
//! operations is printed. `FLATSTORE_STRESS_SECS` sets the time per
//! durability (default 4 s), `FLATSTORE_STRESS_SEED` the random seed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{block, opts, temp_entries, tempdir};
use flatstore::{Durability, Key, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: usize = 8;
const SHARED: usize = 48;
const PRIVATE: usize = 32;
const CANDIDATES: u64 = 3;
/// Operations to reach before stopping, even after the time is up.
const MIN_OPS: u64 = 2000;

fn shared_key(i: usize) -> Key {
    Key::new(&format!("CIQSHARED{i:03}")).unwrap()
}

fn private_key(t: usize, i: usize) -> Key {
    Key::new(&format!("CIQPRIV{t}X{i:03}")).unwrap()
}

/// Candidate `c` of a key numbered `n`: sizes from empty to 96 KiB.
fn content(n: u64, c: u64) -> Vec<u8> {
    let len = match (n * 7 + c * 3) % 8 {
        0 => 0,
        1 => 1,
        2 => 700,
        3 => 4096,
        4 => 10_000,
        5 => 33_333,
        6 => 65_536,
        _ => 96 << 10,
    };
    block(n * 16 + c + 1, len)
}

fn shared_content(i: usize, c: u64) -> Vec<u8> {
    content(i as u64, c)
}

fn private_content(t: usize, i: usize, c: u64) -> Vec<u8> {
    content(1000 + (t * PRIVATE + i) as u64, c)
}

/// A read of a shared key: nothing, or one whole candidate.
fn check_shared(i: usize, got: Option<&Vec<u8>>, what: &str) {
    if let Some(got) = got {
        assert!(
            (0..CANDIDATES).any(|c| &shared_content(i, c) == got),
            "{what}: shared key {i} read as a block that was never written ({} bytes)",
            got.len()
        );
    }
}

/// A key's kind and number, from its name.
enum Which {
    Shared(usize),
    Private(usize, usize),
}

fn which(k: &Key) -> Which {
    let s = k.as_str();
    if let Some(n) = s.strip_prefix("CIQSHARED") {
        return Which::Shared(n.parse().unwrap());
    }
    let rest = s.strip_prefix("CIQPRIV").expect("a key nobody wrote");
    let (t, i) = rest.split_once('X').unwrap();
    Which::Private(t.parse().unwrap(), i.parse().unwrap())
}

/// A listed key and size are plausible: a known key, a candidate's size.
fn check_listed(k: &Key, size: u64) {
    let sizes: Vec<u64> = (0..CANDIDATES)
        .map(|c| match which(k) {
            Which::Shared(i) => shared_content(i, c).len() as u64,
            Which::Private(t, i) => private_content(t, i, c).len() as u64,
        })
        .collect();
    assert!(sizes.contains(&size), "{k} listed with size {size}");
}

/// One batch's operations on this thread's private keys.
enum BOp {
    Put { c: u64, replace: bool },
    Delete,
}

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    batches: AtomicU64,
    commits: AtomicU64,
    reads_present: AtomicU64,
}

fn worker(
    store: &Store,
    t: usize,
    seed: u64,
    stop: &AtomicBool,
    counts: &Counts,
) -> Vec<Option<u64>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (t as u64).wrapping_mul(0x9E37_79B9));
    // The exact state of this thread's private keys: which candidate is stored.
    let mut model: Vec<Option<u64>> = vec![None; PRIVATE];
    let mut present = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut ops = 1;
        let private = rng.random_bool(0.4);
        let i = if private {
            rng.random_range(0..PRIVATE)
        } else {
            rng.random_range(0..SHARED)
        };
        let c = rng.random_range(0..CANDIDATES);
        match rng.random_range(0..100) {
            // put
            0..=29 => {
                if private {
                    store
                        .put(&private_key(t, i), &private_content(t, i, c))
                        .unwrap();
                    model[i].get_or_insert(c);
                } else {
                    store.put(&shared_key(i), &shared_content(i, c)).unwrap();
                }
            }
            // delete
            30..=39 => {
                if private {
                    let existed = store.delete(&private_key(t, i)).unwrap();
                    assert_eq!(existed, model[i].take().is_some(), "thread {t} delete {i}");
                } else {
                    store.delete(&shared_key(i)).unwrap();
                }
            }
            // get
            40..=69 => {
                if private {
                    let got = store.get(&private_key(t, i)).unwrap();
                    let want = model[i].map(|c| private_content(t, i, c));
                    assert_eq!(got, want, "thread {t}: private key {i}");
                    present += got.is_some() as u64;
                } else {
                    let got = store.get(&shared_key(i)).unwrap();
                    check_shared(i, got.as_ref(), "get");
                    present += got.is_some() as u64;
                }
            }
            // size / has
            70..=74 => {
                if private {
                    let want = model[i].map(|c| private_content(t, i, c).len() as u64);
                    assert_eq!(store.size(&private_key(t, i)).unwrap(), want);
                    assert_eq!(store.has(&private_key(t, i)).unwrap(), want.is_some());
                } else if let Some(n) = store.size(&shared_key(i)).unwrap() {
                    check_listed(&shared_key(i), n);
                }
            }
            // a listing, now and then
            75 => {
                for e in store.entries() {
                    let (k, n) = e.unwrap();
                    check_listed(&k, n);
                }
            }
            // a batch
            _ => {
                counts.batches.fetch_add(1, Ordering::Relaxed);
                if run_batch(store, t, &mut rng, &mut model, &mut ops) {
                    counts.commits.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counts.ops.fetch_add(ops, Ordering::Relaxed);
    }
    counts.reads_present.fetch_add(present, Ordering::Relaxed);
    model
}

fn run_batch(
    store: &Store,
    t: usize,
    rng: &mut StdRng,
    model: &mut [Option<u64>],
    ops: &mut u64,
) -> bool {
    let batch = store.batch().unwrap();
    let mut bops: HashMap<usize, BOp> = HashMap::new();
    for _ in 0..rng.random_range(1..24) {
        *ops += 1;
        let private = rng.random_bool(0.5);
        let i = if private {
            rng.random_range(0..PRIVATE)
        } else {
            rng.random_range(0..SHARED)
        };
        let c = rng.random_range(0..CANDIDATES);
        match rng.random_range(0..10) {
            0..=4 => {
                if private {
                    batch
                        .put(&private_key(t, i), &private_content(t, i, c))
                        .unwrap();
                    let replace = match bops.get(&i) {
                        Some(BOp::Put { .. }) => continue,
                        Some(BOp::Delete) => true,
                        None => false,
                    };
                    bops.insert(i, BOp::Put { c, replace });
                } else {
                    batch.put(&shared_key(i), &shared_content(i, c)).unwrap();
                }
            }
            5..=6 => {
                if private {
                    batch.delete(&private_key(t, i)).unwrap();
                    bops.insert(i, BOp::Delete);
                } else {
                    batch.delete(&shared_key(i)).unwrap();
                }
            }
            _ => {
                if private {
                    let got = batch.get(&private_key(t, i)).unwrap();
                    let want = match bops.get(&i) {
                        Some(BOp::Put { c, .. }) => Some(*c),
                        Some(BOp::Delete) => None,
                        None => model[i],
                    }
                    .map(|c| private_content(t, i, c));
                    assert_eq!(got, want, "thread {t}: batch read of private key {i}");
                    // Nothing of the batch is visible in the store yet.
                    let stored = store.get(&private_key(t, i)).unwrap();
                    assert_eq!(stored, model[i].map(|c| private_content(t, i, c)));
                } else {
                    let got = batch.get(&shared_key(i)).unwrap();
                    check_shared(i, got.as_ref(), "batch get");
                }
            }
        }
    }
    match rng.random_range(0..10) {
        0 => {
            batch.discard().unwrap();
            false
        }
        1 => {
            drop(batch);
            false
        }
        _ => {
            batch.commit().unwrap();
            for (i, op) in bops {
                match op {
                    BOp::Put { c, replace } => {
                        if replace {
                            model[i] = Some(c);
                        } else {
                            model[i].get_or_insert(c);
                        }
                    }
                    BOp::Delete => model[i] = None,
                }
            }
            true
        }
    }
}

/// The quiescent store matches the threads' models and the candidates, and
/// its counters match a walk.
fn check_final(store: &Store, models: &[Vec<Option<u64>>], what: &str) {
    for (t, model) in models.iter().enumerate() {
        for (i, c) in model.iter().enumerate() {
            let got = store.get(&private_key(t, i)).unwrap();
            assert_eq!(
                got,
                c.map(|c| private_content(t, i, c)),
                "{what}: thread {t} private key {i}"
            );
        }
    }
    for i in 0..SHARED {
        check_shared(i, store.get(&shared_key(i)).unwrap().as_ref(), what);
    }
    let s = common::wait_exact(store);
    let walked: Vec<(Key, u64)> = store.entries().map(|e| e.unwrap()).collect();
    for (k, n) in &walked {
        check_listed(k, *n);
    }
    assert_eq!(s.blocks, walked.len() as u64, "{what}: block counter");
    assert_eq!(
        s.bytes,
        walked.iter().map(|(_, n)| n).sum::<u64>(),
        "{what}: byte counter"
    );
    assert!(
        temp_entries(store.root()).is_empty(),
        "{what}: {:?}",
        temp_entries(store.root())
    );
}

fn stress(durability: Durability) {
    let secs: f64 = std::env::var("FLATSTORE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let seed: u64 = std::env::var("FLATSTORE_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{durability:?}: seed {seed} (FLATSTORE_STRESS_SEED)");
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, opts(durability)).unwrap();
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let started = Instant::now();
    let models: Vec<Vec<Option<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, stop, counts) = (&store, &stop, &counts);
                s.spawn(move || worker(store, t, seed, stop, counts))
            })
            .collect();
        // Run for the time asked, and on for at least MIN_OPS operations
        // (a slow filesystem under Fsync), up to ten times as long.
        let (min, max) = (
            Duration::from_secs_f64(secs),
            Duration::from_secs_f64(secs * 10.0),
        );
        while started.elapsed() < max
            && (started.elapsed() < min || counts.ops.load(Ordering::Relaxed) < MIN_OPS)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let ops = counts.ops.load(Ordering::Relaxed);
    eprintln!(
        "{durability:?}: {THREADS} threads, {ops} operations ({} batches, {} committed; \
         {} reads of a present block) in {took:.1?}",
        counts.batches.load(Ordering::Relaxed),
        counts.commits.load(Ordering::Relaxed),
        counts.reads_present.load(Ordering::Relaxed),
    );
    assert!(
        ops >= MIN_OPS / 4,
        "too few operations to mean anything: {ops}"
    );
    check_final(&store, &models, "at the end");
    store.close().unwrap();
    let store = Store::open(&root, opts(durability)).unwrap();
    check_final(&store, &models, "after reopen");
}

#[test]
fn eight_threads_against_a_model_no_fsync() {
    stress(Durability::None);
}

#[test]
fn eight_threads_against_a_model_fsync() {
    stress(Durability::Fsync);
}

/// Threads of this process (Linux).
#[cfg(target_os = "linux")]
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Child: opens and drops 50 stores, each with batches (which start the
/// writer threads), and says how many threads are left once they have had
/// a moment to end.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "child process entry point"]
fn child_open_and_drop_stores() {
    let Some(dir) = common::child::arg() else {
        return;
    };
    let before = thread_count();
    for round in 0..50u64 {
        let store = Store::open(
            std::path::Path::new(&dir).join(format!("s{round}")),
            opts(Durability::None).writer_threads(4),
        )
        .unwrap();
        for b in 0..3u64 {
            let batch = store.batch().unwrap();
            for i in 0..20u64 {
                let d = block(round * 1000 + b * 100 + i, 5000);
                batch.put(&common::key_of(&d), &d).unwrap();
            }
            if b == 1 {
                drop(batch);
            } else {
                batch.commit().unwrap();
            }
        }
        drop(store);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while thread_count() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    common::child::say(&format!("threads {before} {}", thread_count()));
}

/// The writer threads of a store end soon after its last handle is dropped:
/// opening and dropping many stores does not pile up threads. (The fuzzer's
/// leak checker sees them still winding down right after a drop.)
#[cfg(target_os = "linux")]
#[test]
fn writer_threads_end_with_the_store() {
    let dir = tempdir();
    let (mut c, lines) = common::child::spawn(common::child::command(
        "child_open_and_drop_stores",
        dir.path().to_str().unwrap(),
    ));
    let line = lines.expect("threads", 300);
    assert!(c.wait().unwrap().success());
    let n: Vec<usize> = line
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(n[1], n[0], "threads before and after 50 stores: {line}");
}
