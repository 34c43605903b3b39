//! Fault injection: for each operation, and for each kind of filesystem call
//! it makes, fail its 1st, 2nd, … N-th such call until the operation no
//! longer reaches N. After every failure the store must reopen, every batch
//! must be all or nothing, nothing acknowledged may be lost, and nothing may
//! be left outside `.temp/` but whole blocks.
//!
//! The fault plan is process-wide, so this file holds one test.
#![cfg(feature = "fault-injection")]

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use common::{block, key_of, tempdir};
use flatstore::fault::{self, FaultKind};
use flatstore::{Durability, Key, Options, Shard, Store};

const KINDS: [FaultKind; 8] = [
    FaultKind::Create,
    FaultKind::Write,
    FaultKind::Fsync,
    FaultKind::SyncDir,
    FaultKind::Rename,
    FaultKind::Unlink,
    FaultKind::Mkdir,
    FaultKind::Readdir,
];

fn opts() -> Options {
    Options::default().durability(Durability::Fsync)
}

type Blocks = BTreeMap<Key, Vec<u8>>;

fn blocks(seed: u64, n: u64) -> Blocks {
    (0..n)
        .map(|i| {
            let d = block(seed * 1000 + i, 50 + (i as usize * 37) % 400);
            (key_of(&d), d)
        })
        .collect()
}

/// A store holding `base`, closed.
fn base_store(root: &Path, base: &Blocks) {
    let store = Store::open(root, opts()).unwrap();
    let b = store.batch().unwrap();
    for (k, d) in base {
        b.put(k, d).unwrap();
    }
    b.commit().unwrap();
    store.close().unwrap();
}

/// A new store holding `base` in a fresh directory, closed: the directory
/// guard and the store's root.
fn base_dir(base: &Blocks) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let root = dir.path().join("s");
    base_store(&root, base);
    (dir, root)
}

/// Opens the store at `root` with `options`, its counters exact.
fn reopen(root: &Path, options: Options) -> Store {
    let store = Store::open(root, options).unwrap();
    common::wait_exact(&store);
    store
}

/// Reopens without faults and checks the invariants: `must` present with
/// their bytes, `gone` absent, `group` all present or all absent, `.temp/`
/// empty, only whole blocks outside it, counters equal to a walk.
fn check(root: &Path, must: &Blocks, gone: &[Key], group: &Blocks, what: &str) -> bool {
    let store = Store::open(root, opts()).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    // A recount after the fault rewrites diskUsage.cache in the background:
    // let it finish before the tree is inspected for stray files.
    common::wait_exact(&store);
    for (k, d) in must {
        assert_eq!(
            store.get(k).unwrap().as_ref(),
            Some(d),
            "{what}: lost acknowledged block {k}"
        );
    }
    for k in gone {
        assert!(!store.has(k).unwrap(), "{what}: deleted block {k} is back");
    }
    let present = group.iter().filter(|(k, _)| store.has(k).unwrap()).count();
    assert!(
        present == 0 || present == group.len(),
        "{what}: {present} of {} blocks of a batch",
        group.len()
    );
    for (k, d) in group {
        if let Some(got) = store.get(k).unwrap() {
            assert_eq!(&got, d, "{what}: wrong bytes for {k}");
        }
    }
    assert!(
        common::temp_entries(root).is_empty(),
        "{what}: .temp not empty: {:?}",
        common::temp_entries(root)
    );
    let listed = common::keys(&store).len();
    assert_eq!(
        common::visible_data_files(root).len(),
        listed,
        "{what}: stray .data files"
    );
    // Nothing else either: outside `.temp/`, only the store's own files and
    // shard directories holding blocks.
    for p in common::tree(root) {
        let top = p.iter().next().unwrap().to_string_lossy().into_owned();
        let allowed = match p.components().count() {
            1 => {
                ["SHARDING", "_README", ".lock", "diskUsage.cache", ".temp"].contains(&top.as_str())
                    || root.join(&p).is_dir()
            }
            2 => top == ".temp" || p.extension().is_some_and(|e| e == "data"),
            _ => top == ".temp",
        };
        assert!(allowed, "{what}: stray entry {p:?}");
    }
    let s = common::wait_exact(&store);
    let walked: u64 = store.entries().map(|e| e.unwrap().1).sum();
    assert_eq!(
        (s.blocks, s.bytes),
        (listed as u64, walked),
        "{what}: counters"
    );
    store.close().unwrap();
    present == group.len()
}

/// [`check`] of a store that must hold exactly `base`, as before the fault.
fn check_unchanged(root: &Path, base: &Blocks, what: &str) {
    check(root, base, &[], &BTreeMap::new(), what);
}

/// Runs `op` with the `n`-th call of `kind` failing; returns (whether the
/// fault fired, whether the operation returned Ok).
fn with_fault(kind: FaultKind, n: u64, op: impl FnOnce() -> bool) -> (bool, bool) {
    fault::inject(kind, n, error_for(kind, n));
    let ok = op();
    (fault::clear(), ok)
}

/// The error the `n`-th call of `kind` fails with: every other N a generic
/// I/O error, and in between what that call really meets when things go
/// wrong (a full disk for writes, a refusal for removals and listings).
fn error_for(kind: FaultKind, n: u64) -> ErrorKind {
    if n % 2 == 1 {
        return ErrorKind::Other;
    }
    match kind {
        FaultKind::Unlink | FaultKind::Readdir => ErrorKind::PermissionDenied,
        _ => ErrorKind::StorageFull,
    }
}

/// Commits a batch of `new` puts and 3 deletes of `base` blocks with the
/// fault `first` (and `second` after it), then checks the store: the puts
/// and the deletes all or nothing, nothing acknowledged lost. Returns
/// whether each fault fired.
fn batch_trial(
    base: &Blocks,
    new: Blocks,
    first: (FaultKind, u64),
    second: Option<(FaultKind, u64)>,
) -> (bool, bool) {
    let (_dir, root) = base_dir(base);
    let store = reopen(&root, opts());
    let deleted: Vec<Key> = base.keys().take(3).cloned().collect();
    let (kind, n) = first;
    fault::inject(kind, n, error_for(kind, n));
    if let Some((k2, m)) = second {
        fault::then_inject(k2, m, error_for(k2, m));
    }
    let ok = (|| {
        let Ok(b) = store.batch() else { return false };
        for (k, d) in &new {
            if b.put(k, d).is_err() {
                return false;
            }
        }
        for k in &deleted {
            // A staged write that failed in the background fails the
            // batch's later calls too.
            if b.delete(k).is_err() {
                return false;
            }
        }
        b.commit().is_ok()
    })();
    let fired = fault::clear_both();
    drop(store);
    let what = match second {
        None => format!("batch {kind:?}#{n}"),
        Some((k2, m)) => format!("batch {kind:?}#{n} then {k2:?}#{m}"),
    };
    let mut must: Blocks = base
        .iter()
        .filter(|(k, _)| !deleted.contains(k))
        .map(|(k, d)| (k.clone(), d.clone()))
        .collect();
    if ok {
        must.extend(new.clone());
    }
    let gone = if ok { deleted.clone() } else { vec![] };
    let all = check(&root, &must, &gone, &new, &what);
    // The deletes went with the puts.
    let store = Store::open(&root, opts()).unwrap();
    for k in &deleted {
        assert_eq!(
            store.has(k).unwrap(),
            !all,
            "{what}: deletes not applied with the puts"
        );
    }
    fired
}

struct Tally {
    faults: u64,
}

impl Tally {
    /// For each kind, N = 1, 2, … until the fault no longer fires.
    fn enumerate(&mut self, name: &str, mut trial: impl FnMut(FaultKind, u64) -> bool) {
        for kind in KINDS {
            for n in 1.. {
                if !trial(kind, n) {
                    break;
                }
                self.faults += 1;
                assert!(n < 500, "{name}: {kind:?} never stops firing");
            }
        }
    }
}

#[test]
fn every_failing_call_leaves_a_consistent_store() {
    let base = blocks(1, 12);
    let mut tally = Tally { faults: 0 };

    // put
    tally.enumerate("put", |kind, n| {
        let (_dir, root) = base_dir(&base);
        let store = reopen(&root, opts());
        let new = blocks(2, 1);
        let (k, d) = new.iter().next().unwrap();
        let (fired, ok) = with_fault(kind, n, || store.put(k, d).is_ok());
        drop(store);
        let mut must = base.clone();
        if ok {
            must.extend(new.clone());
        }
        check(&root, &must, &[], &new, &format!("put {kind:?}#{n}"));
        fired
    });

    // delete
    tally.enumerate("delete", |kind, n| {
        let (_dir, root) = base_dir(&base);
        let store = reopen(&root, opts());
        let victim = base.keys().next().unwrap().clone();
        let (fired, ok) = with_fault(kind, n, || store.delete(&victim).is_ok());
        drop(store);
        let mut must = base.clone();
        must.remove(&victim);
        let gone = if ok { vec![victim.clone()] } else { vec![] };
        check(
            &root,
            &must,
            &gone,
            &BTreeMap::new(),
            &format!("delete {kind:?}#{n}"),
        );
        fired
    });

    // batch: puts and deletes, committed under a fault.
    tally.enumerate("batch", |kind, n| {
        batch_trial(&base, blocks(3, 20), (kind, n), None).0
    });

    // batch, two faults: the first fails the commit (after its commit
    // record, among others), the second hits what follows it, the cleanup
    // of the staging directory in particular: its record must go first and
    // durably, so that a cleanup cut short never leaves a record with only
    // part of its batch. Every pair ends all or nothing.
    let mut pairs = 0;
    tally.enumerate("batch-cleanup", |kind, n| {
        let mut fired = false;
        // The cleanup removes the record (Unlink #1), makes that durable
        // (SyncDir #1), then the staging shard directories and the rest.
        for (second, most) in [(FaultKind::Unlink, 4), (FaultKind::SyncDir, 2)] {
            for m in 1..=most {
                let (first, then) = batch_trial(&base, blocks(8, 6), (kind, n), Some((second, m)));
                fired |= first;
                if !then {
                    break;
                }
                pairs += 1;
            }
        }
        fired
    });
    eprintln!("two-fault trials: {pairs}");
    assert!(pairs > 50, "only {pairs} two-fault trials");

    // replace: `delete A, put A` in a batch swaps in the new A. A is stored
    // damaged; after any fault and a reopen, A is the damaged copy if the
    // batch did not happen and the new copy if it did, never absent.
    tally.enumerate("replace", |kind, n| {
        let (_dir, root) = base_dir(&base);
        let (victim, good) = base
            .iter()
            .next()
            .map(|(k, d)| (k.clone(), d.clone()))
            .unwrap();
        let damaged = b"damaged".to_vec();
        let path = Store::open(&root, opts()).unwrap().block_path(&victim);
        std::fs::write(&path, &damaged).unwrap();
        // The counters are recomputed from the files, damaged copy included.
        std::fs::remove_file(root.join("diskUsage.cache")).unwrap();
        let store = reopen(&root, opts());
        let new = blocks(7, 5);
        let (fired, ok) = with_fault(kind, n, || {
            let Ok(b) = store.batch() else { return false };
            for (k, d) in &new {
                if b.put(k, d).is_err() {
                    return false;
                }
            }
            if b.delete(&victim).is_err() || b.put(&victim, &good).is_err() {
                return false;
            }
            b.commit().is_ok()
        });
        drop(store);
        let mut must: Blocks = base
            .iter()
            .filter(|(k, _)| **k != victim)
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        if ok {
            must.extend(new.clone());
        }
        let all = check(&root, &must, &[], &new, &format!("replace {kind:?}#{n}"));
        let store = Store::open(&root, opts()).unwrap();
        let want = if all { &good } else { &damaged };
        assert_eq!(
            store.get(&victim).unwrap().as_ref(),
            Some(want),
            "replace {kind:?}#{n}: A not replaced with the batch"
        );
        fired
    });

    // open: recovery of a batch whose commit failed after its commit point.
    tally.enumerate("open", |kind, n| {
        let (_dir, root) = base_dir(&base);
        let new = blocks(4, 20);
        {
            let store = reopen(&root, opts());
            let b = store.batch().unwrap();
            for (k, d) in &new {
                b.put(k, d).unwrap();
            }
            // The 5th publish fails: the commit record is there, the batch half published.
            fault::inject(FaultKind::Rename, 8, ErrorKind::Other);
            assert!(b.commit().is_err());
            fault::clear();
        }
        std::fs::write(root.join(".temp/put-99"), b"stale").unwrap();
        let (fired, _) = with_fault(kind, n, || Store::open(&root, opts()).is_ok());
        let mut must = base.clone();
        must.extend(new.clone());
        check(&root, &must, &[], &new, &format!("open {kind:?}#{n}"));
        fired
    });

    // open: finishing a reshard that a failure interrupted.
    tally.enumerate("open-reshard", |kind, n| {
        let (_dir, root) = base_dir(&base);
        {
            let mut store = reopen(&root, opts());
            // The 5th move fails: the reshard record is there, blocks in both layouts.
            fault::inject(FaultKind::Rename, 5, ErrorKind::Other);
            assert!(store.reshard(Shard::Prefix(4), &mut |_| {}).is_err());
            assert!(fault::clear());
        }
        assert!(root.join(".temp/reshard").is_file());
        let (fired, _) = with_fault(kind, n, || Store::open(&root, opts()).is_ok());
        check_unchanged(&root, &base, &format!("open-reshard {kind:?}#{n}"));
        let store = Store::open(&root, opts()).unwrap();
        assert_eq!(store.shard(), Shard::Prefix(4), "open-reshard {kind:?}#{n}");
        fired
    });

    // sync: a failing Store::sync is an error, and loses nothing.
    tally.enumerate("sync", |kind, n| {
        let (_dir, root) = base_dir(&base);
        let store = reopen(&root, opts().durability(Durability::None));
        let new = blocks(6, 3);
        for (k, d) in &new {
            store.put(k, d).unwrap();
        }
        let (fired, ok) = with_fault(kind, n, || store.sync().is_ok());
        assert_eq!(
            ok, !fired,
            "sync {kind:?}#{n}: a fault that fired must be reported"
        );
        drop(store);
        let mut must = base.clone();
        must.extend(new.clone());
        check(&root, &must, &[], &new, &format!("sync {kind:?}#{n}"));
        fired
    });

    // reshard
    tally.enumerate("reshard", |kind, n| {
        let (_dir, root) = base_dir(&base);
        let mut store = reopen(&root, opts());
        let (fired, ok) = with_fault(kind, n, || {
            store.reshard(Shard::Prefix(4), &mut |_| {}).is_ok()
        });
        drop(store);
        check_unchanged(&root, &base, &format!("reshard {kind:?}#{n}"));
        let store = Store::open(&root, opts()).unwrap();
        // Whatever happened, the next open finished (or never started) the reshard.
        assert!(ok <= (store.shard() == Shard::Prefix(4)));
        fired
    });

    // A batch whose publication finished is never replayed: once its commit
    // record is gone, a put that returns after the commit survives reopening,
    // even if the batch deleted that key and its staging directory was left
    // behind by a failure.
    let mut retired = 0;
    tally.enumerate("replay", |kind, n| {
        if kind != FaultKind::Unlink {
            return false;
        }
        let (_dir, root) = base_dir(&base);
        let store = reopen(&root, opts());
        let victim = base.keys().next().unwrap().clone();
        let new = blocks(5, 4);
        let (fired, _) = with_fault(kind, n, || {
            let b = store.batch().unwrap();
            for (k, d) in &new {
                b.put(k, d).unwrap();
            }
            b.delete(&victim).unwrap();
            b.commit().is_ok()
        });
        let staging: Vec<_> = common::temp_entries(&root)
            .into_iter()
            .filter(|e| e.starts_with("batch-"))
            .collect();
        let record_left = staging
            .iter()
            .any(|e| root.join(".temp").join(e).join("COMMIT").exists());
        if !record_left {
            // Counted where the staging directory outlived its record.
            retired += u32::from(!staging.is_empty());
            store.put(&victim, &base[&victim]).unwrap();
            drop(store);
            let mut must = base.clone();
            must.extend(new.clone());
            check(&root, &must, &[], &new, &format!("replay Unlink#{n}"));
        }
        fired
    });
    assert!(
        retired > 0,
        "no trial left a batch without its commit record"
    );

    eprintln!("faults injected: {}", tally.faults);
    assert!(tally.faults > 100);
}
