//! Many processes, one store (DESIGN 4): readers never wait, writers share,
//! recovery touches only the dead, exclusive work is refused while others
//! write, and the lock cannot be lost by closing and reopening. Every test
//! runs real processes (this binary's `#[ignore]`d entry points).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::child::{self, hear, kill, say, spawn, tell};
use common::{block, key_of, opts, temp_entries, tempdir};
use flatstore::{Accuracy, Durability, Error, Key, Options, Shard, Store};
use rand::{Rng, SeedableRng};

/// Blocks every writer puts (so keys are shared between processes).
const SHARED: u64 = 150;
/// Blocks each writer puts alone; every tenth it deletes again.
const OWN: u64 = 80;

fn shared_block(i: u64) -> Vec<u8> {
    block(7_000_000 + i, 100 + (i as usize * 37) % 900)
}

fn own_block(writer: u64, i: u64) -> Vec<u8> {
    block(writer * 100_000 + i, 200 + (i as usize * 53) % 700)
}

/// Child: a writer. Puts the shared blocks (alternating single puts and
/// batches of 10, in an order of its own) and its own blocks, deletes its
/// own blocks whose index is a multiple of ten, closes, says "done".
#[test]
#[ignore = "child process entry point"]
fn child_writer() {
    let Some(arg) = child::arg() else { return };
    let (root, id) = arg.split_once('|').unwrap();
    let id: u64 = id.parse().unwrap();
    let store = Store::open(root, opts(Durability::None)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut work: Vec<Vec<u8>> = (0..SHARED).map(shared_block).collect();
    work.extend((0..OWN).map(|i| own_block(id, i)));
    for i in (1..work.len()).rev() {
        work.swap(i, rng.random_range(0..=i));
    }
    for (n, chunk) in work.chunks(10).enumerate() {
        if n % 2 == 0 {
            for d in chunk {
                store.put(&key_of(d), d).unwrap();
            }
        } else {
            let batch = store.batch().unwrap();
            for d in chunk {
                batch.put(&key_of(d), d).unwrap();
            }
            batch.commit().unwrap();
        }
    }
    for i in (0..OWN).step_by(10) {
        assert!(store.delete(&key_of(&own_block(id, i))).unwrap());
    }
    store.close().unwrap();
    say("done");
}

/// Child: a reader. Opens read-only over and over until told to stop;
/// every block it finds has the right bytes; says how many opens it made.
#[test]
#[ignore = "child process entry point"]
fn child_reader() {
    let Some(root) = child::arg() else { return };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        hear();
        s2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut opens = 0u64;
    let mut seen = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let store = Store::open(&root, Options::default().read_only(true)).unwrap();
        opens += 1;
        for i in 0..SHARED {
            let d = shared_block(i);
            if let Some(got) = store.get(&key_of(&d)).unwrap() {
                assert_eq!(got, d, "a reader saw a wrong or partial block");
                seen += 1;
            }
        }
    }
    say(&format!("opens {opens} seen {seen}"));
}

#[test]
fn four_writers_and_a_reader_share_one_store() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, opts(Durability::None))
        .unwrap()
        .close()
        .unwrap();
    let (mut reader, reader_lines) = spawn(child::command("child_reader", root.to_str().unwrap()));
    let writers: Vec<_> = (1..=4u64)
        .map(|id| {
            spawn(child::command(
                "child_writer",
                &format!("{}|{id}", root.display()),
            ))
        })
        .collect();
    for (mut c, lines) in writers {
        lines.expect("done", 300);
        assert!(c.wait().unwrap().success());
    }
    tell(&mut reader, "stop");
    let said = reader_lines.expect("opens ", 120);
    assert!(reader.wait().unwrap().success(), "the reader failed");
    let opens: u64 = said.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(opens > 0, "{said}");
    eprintln!("reader: {said}");

    let store = Store::open(&root, Options::default().read_only(true)).unwrap();
    let mut expect: Vec<Vec<u8>> = (0..SHARED).map(shared_block).collect();
    for id in 1..=4 {
        expect.extend((0..OWN).filter(|i| i % 10 != 0).map(|i| own_block(id, i)));
    }
    for d in &expect {
        assert_eq!(store.get(&key_of(d)).unwrap().as_deref(), Some(&d[..]));
    }
    for id in 1..=4 {
        for i in (0..OWN).step_by(10) {
            assert!(!store.has(&key_of(&own_block(id, i))).unwrap());
        }
    }
    // Exact after the last clean close, with no recount: each writer folded
    // its own changes into diskUsage.cache.
    let s = store.stats();
    let bytes: u64 = expect.iter().map(|d| d.len() as u64).sum();
    assert_eq!(
        (s.blocks, s.bytes, s.accuracy),
        (expect.len() as u64, bytes, Accuracy::Exact)
    );
    assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
    assert!(common::owner_files(&root).is_empty());
}

fn batch_block(n: u64, i: u64) -> Vec<u8> {
    block(900_000_000 + n * 1000 + i, 300 + (i as usize * 7) % 500)
}

/// Child: commits batches of 100 blocks in a loop, saying "batch N" after
/// each commit returned, until killed.
#[test]
#[ignore = "child process entry point"]
fn child_batches_until_killed() {
    let Some(root) = child::arg() else { return };
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    say("open");
    for n in 0.. {
        let batch = store.batch().unwrap();
        for i in 0..100 {
            let d = batch_block(n, i);
            batch.put(&key_of(&d), &d).unwrap();
        }
        batch.commit().unwrap();
        say(&format!("batch {n}"));
    }
}

/// Child: single puts in a loop, saying "put N" after each returned, until
/// told to stop; then closes cleanly and says "closed".
#[test]
#[ignore = "child process entry point"]
fn child_puts_until_told() {
    let Some(root) = child::arg() else { return };
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        hear();
        s2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    say("open");
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let d = block(500_000_000 + n, 64 + (n as usize % 300));
        store.put(&key_of(&d), &d).unwrap();
        say(&format!("put {n}"));
        n += 1;
    }
    store.close().unwrap();
    say("closed");
}

#[test]
fn a_writer_killed_mid_batch_while_another_writes_loses_only_its_uncommitted_batch() {
    let dir = tempdir();
    let root = dir.path().join("s");
    Store::open(&root, opts(Durability::None))
        .unwrap()
        .close()
        .unwrap();
    let mut rng = rand::rng();
    let (mut total_kills, mut partial) = (0, 0);
    for trial in 0..4 {
        let (mut b, b_lines) = spawn(child::command(
            "child_batches_until_killed",
            root.to_str().unwrap(),
        ));
        let (mut p, p_lines) = spawn(child::command(
            "child_puts_until_told",
            root.to_str().unwrap(),
        ));
        b_lines.expect("open", 120);
        p_lines.expect("open", 120);
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        kill(&mut b);
        total_kills += 1;
        // The other writer goes on after the kill, and its open files and
        // temp names are untouched by what follows.
        std::thread::sleep(Duration::from_millis(100));
        let newcomer = Store::open(&root, opts(Durability::None)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        tell(&mut p, "stop");
        let rest = p_lines.rest(60);
        assert!(
            rest.iter().any(|l| l == "closed"),
            "the live writer failed: {rest:?}"
        );
        assert!(p.wait().unwrap().success());
        let puts: BTreeSet<u64> = rest
            .iter()
            .filter_map(|l| l.strip_prefix("put ")?.parse().ok())
            .collect();
        let batches: BTreeSet<u64> = b_lines
            .drain()
            .iter()
            .filter_map(|l| l.strip_prefix("batch ")?.parse().ok())
            .collect();
        drop(newcomer);
        let store = Store::open(&root, opts(Durability::None)).unwrap();
        for n in &puts {
            let d = block(500_000_000 + n, 64 + (*n as usize % 300));
            assert_eq!(
                store.get(&key_of(&d)).unwrap().as_deref(),
                Some(&d[..]),
                "trial {trial}: put {n} lost"
            );
        }
        for n in 0..=batches.iter().max().map_or(0, |m| m + 1) {
            let present = (0..100)
                .filter(|&i| store.has(&key_of(&batch_block(n, i))).unwrap())
                .count();
            if batches.contains(&n) {
                assert_eq!(
                    present, 100,
                    "trial {trial}: acknowledged batch {n} incomplete"
                );
            } else if present != 0 && present != 100 {
                partial += 1;
            }
        }
        assert!(temp_entries(&root).is_empty(), "{:?}", temp_entries(&root));
        let s = common::wait_exact(&store);
        assert_eq!(s.blocks, store.keys().count() as u64);
        store.close().unwrap();
        // The batches of the next trial start again from 0: clear them.
        let store = Store::open(&root, opts(Durability::None)).unwrap();
        for k in store.keys().map(|k| k.unwrap()).collect::<Vec<Key>>() {
            store.delete(&k).unwrap();
        }
        store.close().unwrap();
    }
    eprintln!(
        "{total_kills} writers killed mid-batch beside a live one: {partial} partial batches"
    );
    assert_eq!(partial, 0, "a batch was left partial");
}

/// Child: holds the store open read-write until told, then closes.
#[test]
#[ignore = "child process entry point"]
fn child_hold_open() {
    let Some(root) = child::arg() else { return };
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    say("open");
    hear();
    store.close().unwrap();
}

#[test]
fn reshard_is_refused_while_another_writer_is_open_and_can_wait_for_it() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, opts(Durability::None)).unwrap();
    let d = block(1, 1000);
    store.put(&key_of(&d), &d).unwrap();
    store.close().unwrap();
    let (mut c, lines) = spawn(child::command("child_hold_open", root.to_str().unwrap()));
    lines.expect("open", 120);
    let target: Shard = "prefix/3".parse().unwrap();
    let mut store = Store::open(&root, opts(Durability::None)).unwrap();
    match store.reshard(target, &mut |_| {}) {
        Err(Error::Locked { holders, .. }) => assert_eq!(holders, vec![c.id()]),
        other => panic!("expected Locked, got {other:?}"),
    }
    // Nothing moved, and the handle is still usable.
    assert_eq!(store.get(&key_of(&d)).unwrap().as_deref(), Some(&d[..]));
    drop(store);
    // With a wait, the reshard goes ahead once the other writer closes.
    let mut store = Store::open(
        &root,
        opts(Durability::None).lock_wait(Duration::from_secs(60)),
    )
    .unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        tell(&mut c, "close");
        c.wait().unwrap()
    });
    store.reshard(target, &mut |_| {}).unwrap();
    assert!(closer.join().unwrap().success());
    assert_eq!(store.shard(), target);
    assert_eq!(store.get(&key_of(&d)).unwrap().as_deref(), Some(&d[..]));
}

/// Child: for `secs` seconds, opens the store and tries to take it
/// exclusively (a reshard) without waiting; says how often it tried and
/// whether it ever got in.
#[test]
#[ignore = "child process entry point"]
fn child_try_exclusive() {
    let Some(arg) = child::arg() else { return };
    let (root, secs) = arg.split_once('|').unwrap();
    let until = Instant::now() + Duration::from_secs(secs.parse().unwrap());
    let (mut tries, mut got_in) = (0u64, 0u64);
    while Instant::now() < until {
        let mut store = Store::open(root, opts(Durability::None)).unwrap();
        tries += 1;
        match store.reshard("prefix/3".parse().unwrap(), &mut |_| {}) {
            Err(Error::Locked { .. }) => {}
            Ok(_) => {
                got_in += 1;
                store
                    .reshard("next-to-last/2".parse().unwrap(), &mut |_| {})
                    .unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    say(&format!("tries {tries} got_in {got_in}"));
}

/// Threads of this process close and reopen the store in a loop, some
/// through a symlinked path to the root, while one handle stays open
/// throughout; a child process tries all the while to take the store
/// exclusively. It never gets in: no close in this process releases the
/// lock that another handle still holds.
#[cfg(unix)]
#[test]
fn closing_and_reopening_never_releases_a_held_lock() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let link = dir.path().join("link");
    Store::open(&root, opts(Durability::None))
        .unwrap()
        .close()
        .unwrap();
    std::os::unix::fs::symlink(&root, &link).unwrap();
    let anchor = Store::open(&link, opts(Durability::None)).unwrap();
    let (mut c, lines) = spawn(child::command(
        "child_try_exclusive",
        &format!("{}|4", root.display()),
    ));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let cycles = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (root, link, stop, cycles) = (&root, &link, &stop, &cycles);
            s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = if t % 2 == 0 { root } else { link };
                    let store = Store::open(path, opts(Durability::None)).unwrap();
                    let d = block(t, 100);
                    store.put(&key_of(&d), &d).unwrap();
                    if t == 3 {
                        drop(store);
                    } else {
                        store.close().unwrap();
                    }
                    cycles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let said = lines.expect("tries ", 120);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut f = said.split(' ');
        let tries: u64 = f.nth(1).unwrap().parse().unwrap();
        let got_in: u64 = f.nth(1).unwrap().parse().unwrap();
        eprintln!(
            "child: {tries} tries, got in {got_in} times; {} reopen cycles here",
            cycles.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(tries > 0);
        assert_eq!(got_in, 0, "another process took a store this process holds");
    });
    assert!(c.wait().unwrap().success());
    drop(anchor);
}
