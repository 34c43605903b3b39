//! How many fsyncs each operation makes, checked against the design
//! (DESIGN section 3). Under `Durability::Fsync`: a put syncs its file and
//! its shard directory, and the root for a new shard directory; a put of a
//! stored key writes nothing but syncs that block and its directory (it may
//! have been published by a writer that has not synced it yet). A delete
//! syncs its shard directory. A commit
//! makes its staged files and their entries durable (on Linux one `syncfs`
//! for all of them; elsewhere one fsync per staged file, the directories
//! being journaled by the filesystem on Windows), then the commit record and
//! its entry (the commit point), each touched shard directory once, the root
//! once if it created one, and the record's removal. Nothing is synced
//! twice, and nothing at all under `Durability::None`.
//!
//! The calls are counted through the fault-injection seam, which is
//! process-wide, so this file holds one test.
#![cfg(feature = "fault-injection")]

mod common;

use flatstore::fault::{self, FaultKind};
use flatstore::{Durability, Key, Store};

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// File fsyncs and directory fsyncs made by `op`.
fn syncs(op: impl FnOnce()) -> (u64, u64) {
    fault::count_calls();
    op();
    let counted = (
        fault::calls(FaultKind::Fsync),
        fault::calls(FaultKind::SyncDir),
    );
    fault::clear();
    counted
}

fn batch(store: &Store, puts: &[&str], deletes: &[&str]) {
    let b = store.batch().unwrap();
    for d in deletes {
        b.delete(&k(d)).unwrap();
    }
    for p in puts {
        b.put(&k(p), p.as_bytes()).unwrap();
    }
    b.commit().unwrap();
}

/// File fsyncs that make `n` staged files durable: one `syncfs` on Linux,
/// one fsync per file elsewhere.
fn staged(n: u64) -> u64 {
    if cfg!(target_os = "linux") {
        1
    } else {
        n
    }
}

#[test]
fn fsyncs_per_operation_match_the_design() {
    for durability in [Durability::Fsync, Durability::None] {
        let dir = common::tempdir();
        let root = dir.path().join("s");
        // Keys under next-to-last/2: CIQ1AB2 is in shard directory AB.
        let store = Store::open(&root, common::opts(durability)).unwrap();
        type Op<'a> = Box<dyn FnOnce() + 'a>;
        let s = &store;
        // (what, operation, expected (file, directory) fsyncs under Fsync)
        let table: Vec<(&str, Op, (u64, u64))> = vec![
            (
                "put, new shard directory",
                Box::new(|| s.put(&k("CIQ1AB2"), b"1").unwrap()),
                (1, 2),
            ),
            (
                "put, known shard directory",
                Box::new(|| s.put(&k("CIQ2AB3"), b"2").unwrap()),
                (1, 1),
            ),
            (
                "put of a stored key",
                Box::new(|| s.put(&k("CIQ2AB3"), b"2").unwrap()),
                (1, 1),
            ),
            (
                "delete",
                Box::new(|| assert!(s.delete(&k("CIQ2AB3")).unwrap())),
                (0, 1),
            ),
            (
                "delete of an absent key",
                Box::new(|| assert!(!s.delete(&k("CIQ2AB3")).unwrap())),
                (0, 0),
            ),
            (
                // Staged files (syncfs on Linux, 3 fsyncs elsewhere) +
                // record; record entry, the root once for CD (created
                // before the commit point), AB and CD, the record's removal.
                "batch of 3 puts, one new shard directory",
                Box::new(|| batch(s, &["CIQ5AB2", "CIQ6AB3", "CIQ7CD4"], &[])),
                (staged(3) + 1, 5),
            ),
            (
                // Staged (syncfs, or 2) + record; record entry, AB and CD,
                // the record's removal.
                "batch of 2 puts and a delete",
                Box::new(|| batch(s, &["CIQ8AB2", "CIQ9CD3"], &["CIQ5AB2"])),
                (staged(2) + 1, 4),
            ),
            (
                // Staged (syncfs, or 1) + record; record entry, AB, the
                // record's removal.
                "batch replacing a block",
                Box::new(|| batch(s, &["CIQ8AB2"], &["CIQ8AB2"])),
                (staged(1) + 1, 3),
            ),
            ("empty batch", Box::new(|| batch(s, &[], &[])), (0, 0)),
        ];
        let mut wrong = Vec::new();
        for (what, op, fsync) in table {
            let want = if durability == Durability::Fsync {
                fsync
            } else {
                (0, 0)
            };
            let got = syncs(op);
            if got != want {
                wrong.push(format!(
                    "{durability:?}, {what}: (file, directory) fsyncs {got:?}, expected {want:?}"
                ));
            }
        }
        // Close persists the counters: the cache file and its entry in the root.
        let got = syncs(|| store.close().unwrap());
        let want = if durability == Durability::Fsync {
            (1, 1)
        } else {
            (0, 0)
        };
        if got != want {
            wrong.push(format!(
                "{durability:?}, close: fsyncs {got:?}, expected {want:?}"
            ));
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // And the operations did what they say.
        let store = Store::open(&root, common::opts(durability)).unwrap();
        assert_eq!(
            common::keys(&store),
            ["CIQ1AB2", "CIQ6AB3", "CIQ7CD4", "CIQ8AB2", "CIQ9CD3"].map(k)
        );
    }
}
