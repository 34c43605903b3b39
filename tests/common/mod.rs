//! Helpers shared by the behaviour tests.
#![allow(dead_code)]

pub mod child;
pub mod conformance;
pub mod model;
#[cfg(target_os = "linux")]
pub mod mount;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use flatstore::multihash::Multihash;
use flatstore::{Durability, Key, Options, Store};
use sha2::{Digest, Sha256};

/// A fresh directory for one test, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("flatstore-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Options with the given durability.
pub fn opts(d: Durability) -> Options {
    Options::default().durability(d)
}

/// Deterministic pseudo-random bytes (xorshift), so nothing dedups by accident.
pub fn block(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The store key of `data`'s sha2-256 multihash (`CIQ…`).
pub fn key_of(data: &[u8]) -> Key {
    let digest = Sha256::digest(data);
    let mh = Multihash::<64>::wrap(0x12, &digest).unwrap();
    Key::from_multihash(&mh)
}

/// Every file under `dir`, relative, sorted (for comparing trees).
pub fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(base).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Entries of `ROOT/.temp/`, without the owner files that mark open
/// writers alive (`owner-<token>`; see [`owner_files`]).
pub fn temp_entries(root: &Path) -> Vec<String> {
    match fs::read_dir(root.join(".temp")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("owner-"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The owner files in `ROOT/.temp/`: one per open writer (or dead one not
/// yet recovered).
pub fn owner_files(root: &Path) -> Vec<String> {
    match fs::read_dir(root.join(".temp")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("owner-"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `.data` files anywhere outside `.temp/`.
pub fn visible_data_files(root: &Path) -> Vec<PathBuf> {
    tree(root)
        .into_iter()
        .filter(|p| !p.starts_with(".temp") && p.extension().is_some_and(|e| e == "data"))
        .collect()
}

/// Keys in the store, sorted.
pub fn keys(store: &Store) -> Vec<Key> {
    let mut k: Vec<Key> = store.keys().map(|k| k.unwrap()).collect();
    k.sort();
    k
}

/// Waits (up to 60 s) until the counters are exact again.
pub fn wait_exact(store: &Store) -> flatstore::Stats {
    let start = std::time::Instant::now();
    loop {
        let s = store.stats();
        if s.accuracy == flatstore::Accuracy::Exact {
            return s;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "counters never became exact: {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Sets its flag when dropped, also while a panic unwinds: a test that
/// stops a looping thread with the flag says so however it ends, so that a
/// failed assertion is reported instead of leaving a scope waiting forever.
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
