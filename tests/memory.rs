//! A batch of 2 GiB, a batch of a million tiny blocks, and the import of a
//! 1 GiB CAR, run in bounded memory (Linux: peak RSS from /proc).
#![cfg(target_os = "linux")]

mod common;

use common::child::{self, spawn};
use flatstore::cid::Cid;
use flatstore::{CarWriter, Durability, ImportOptions, Key, Options, Store};
use multihash_codetable::{Code, MultihashDigest};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Child: pushes 2 GiB (2,048 blocks of 1 MiB) through one batch, commits,
/// and reports its peak RSS.
#[test]
#[ignore = "child process entry point"]
fn child_big_batch() {
    let Some(root) = child::arg() else { return };
    {
        let store = Store::open(&root, Options::default().durability(Durability::None)).unwrap();
        let batch = store.batch().unwrap();
        let mut buf = common::block(1, 1 << 20);
        for i in 0..2048u32 {
            buf[..4].copy_from_slice(&i.to_le_bytes());
            batch
                .put(&Key::new(&format!("BIG{i}")).unwrap(), &buf)
                .unwrap();
        }
        let s = batch.commit().unwrap();
        assert_eq!(s.written, 2048);
        assert_eq!(s.bytes, 2048 << 20);
        child::say(&format!("rss {}", peak_rss_kib()));
    }
}

/// Runs the child entry point `name` on the store at `root`; returns the
/// peak RSS (KiB) it reported after a successful run.
fn child_peak_rss_kib(name: &str, root: &std::path::Path) -> u64 {
    let (mut c, lines) = spawn(child::command(name, root.to_str().unwrap()));
    let line = lines.expect("rss ", 900);
    assert!(c.wait().unwrap().success());
    line["rss ".len()..].parse().unwrap()
}

#[test]
fn two_gib_batch_stays_under_100_mib() {
    let dir = common::tempdir();
    let root = dir.path().join("s");
    let kib = child_peak_rss_kib("child_big_batch", &root);
    eprintln!("peak RSS of a 2 GiB batch: {} MiB", kib / 1024);
    assert!(kib < 100 * 1024, "peak RSS {kib} KiB");
    // And the data is really there.
    let store = Store::open(&root, Options::default()).unwrap();
    let got = store.get(&Key::new("BIG2047").unwrap()).unwrap().unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert_eq!(&got[..4], &2047u32.to_le_bytes());
    assert_eq!(store.stats().bytes, 2048 << 20);
}

/// Blocks of the tiny-block batch.
const TINY: u64 = 1_000_000;

/// The `i`-th tiny block: 64 bytes.
fn tiny(i: u64) -> Vec<u8> {
    let mut d = common::block(i, 64);
    d[..8].copy_from_slice(&i.to_le_bytes());
    d
}

/// Child: stages and commits one batch of [`TINY`] blocks of 64 B, and
/// reports its peak RSS.
#[test]
#[ignore = "child process entry point"]
fn child_tiny_batch() {
    let Some(root) = child::arg() else { return };
    let store = Store::open(&root, Options::default().durability(Durability::None)).unwrap();
    let batch = store.batch().unwrap();
    for i in 0..TINY {
        let d = tiny(i);
        batch.put(&common::key_of(&d), &d).unwrap();
    }
    // Read-your-writes and the streamed listing, at this size too.
    let d = tiny(TINY / 2);
    assert_eq!(batch.get(&common::key_of(&d)).unwrap(), Some(d));
    let listed = batch
        .keys()
        .try_fold(0u64, |n, k| k.map(|_| n + 1))
        .unwrap();
    assert_eq!(listed, TINY);
    let s = batch.commit().unwrap();
    assert_eq!((s.written, s.bytes), (TINY, TINY * 64));
    child::say(&format!("rss {}", peak_rss_kib()));
}

/// A directory for `files` small files: a tmpfs (`/dev/shm`) if it has the
/// inodes and a page per file, else the default temp directory if it has
/// the inodes (removing a million files is much faster on a tmpfs than on a
/// disk mounted with `discard`).
fn roomy_tempdir(files: u64) -> tempfile::TempDir {
    // (free inodes, free bytes) of the filesystem holding `p`.
    let room = |p: &std::path::Path| -> (u64, u64) {
        let Ok(c) = std::ffi::CString::new(p.to_string_lossy().as_bytes()) else {
            return (0, 0);
        };
        // SAFETY: a valid C string, and a zeroed struct for the call to fill.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut s) != 0 {
                return (0, 0);
            }
            (s.f_favail as u64, s.f_bavail as u64 * s.f_frsize as u64)
        }
    };
    let want = files + files / 4;
    let shm = std::path::Path::new("/dev/shm");
    let (inodes, bytes) = room(shm);
    if inodes >= want && bytes >= want * 4096 {
        return tempfile::Builder::new()
            .prefix("flatstore-test-")
            .tempdir_in(shm)
            .unwrap();
    }
    let default = std::env::temp_dir();
    assert!(
        room(&default).0 >= want,
        "neither /dev/shm nor {} has {want} free inodes",
        default.display()
    );
    common::tempdir()
}

#[test]
fn million_block_batch_stays_under_64_mib() {
    let dir = roomy_tempdir(TINY);
    let root = dir.path().join("s");
    let kib = child_peak_rss_kib("child_tiny_batch", &root);
    eprintln!(
        "peak RSS of a batch of {TINY} blocks of 64 B: {} MiB",
        kib / 1024
    );
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    let store = Store::open(&root, Options::default()).unwrap();
    assert_eq!(store.stats().blocks, TINY);
    for i in [0, TINY / 3, TINY - 1] {
        let d = tiny(i);
        assert_eq!(store.get(&common::key_of(&d)).unwrap(), Some(d));
    }
    assert!(common::temp_entries(&root).is_empty());
}

/// Blocks of the generated CAR: 1,024 raw blocks of 1 MiB.
const CAR_BLOCKS: u32 = 1024;

fn car_block(i: u32) -> Vec<u8> {
    let mut d = common::block(7, 1 << 20);
    d[..4].copy_from_slice(&i.to_le_bytes());
    d
}

fn raw_cid(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, Code::Sha2_256.digest(data))
}

/// A CARv1 of [`CAR_BLOCKS`] blocks, made frame by frame as it is read (so
/// the CAR itself is never in memory or on disk).
struct GeneratedCar {
    next: u32,
    frame: Vec<u8>,
    pos: usize,
}

impl GeneratedCar {
    fn new() -> GeneratedCar {
        let header = CarWriter::new(Vec::new(), &[raw_cid(&car_block(0))])
            .unwrap()
            .finish()
            .unwrap();
        GeneratedCar {
            next: 0,
            frame: header,
            pos: 0,
        }
    }
}

impl std::io::Read for GeneratedCar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.frame.len() {
            if self.next == CAR_BLOCKS {
                return Ok(0);
            }
            let data = car_block(self.next);
            self.next += 1;
            let cid = raw_cid(&data).to_bytes();
            self.frame.clear();
            let mut len = (cid.len() + data.len()) as u64;
            while len >= 0x80 {
                self.frame.push((len as u8) | 0x80);
                len >>= 7;
            }
            self.frame.push(len as u8);
            self.frame.extend_from_slice(&cid);
            self.frame.extend_from_slice(&data);
            self.pos = 0;
        }
        let n = buf.len().min(self.frame.len() - self.pos);
        buf[..n].copy_from_slice(&self.frame[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Child: imports the generated 1 GiB CAR and reports its peak RSS.
#[test]
#[ignore = "child process entry point"]
fn child_big_import() {
    let Some(root) = child::arg() else { return };
    let store = Store::open(&root, Options::default().durability(Durability::None)).unwrap();
    let s = store
        .import_car(GeneratedCar::new(), &ImportOptions::new())
        .unwrap();
    assert_eq!((s.written, s.bytes), (CAR_BLOCKS as u64, 1 << 30));
    child::say(&format!("rss {}", peak_rss_kib()));
}

#[test]
fn one_gib_car_import_stays_under_100_mib() {
    let dir = common::tempdir();
    let root = dir.path().join("s");
    let kib = child_peak_rss_kib("child_big_import", &root);
    eprintln!("peak RSS of a 1 GiB CAR import: {} MiB", kib / 1024);
    assert!(kib < 100 * 1024, "peak RSS {kib} KiB");
    let store = Store::open(&root, Options::default()).unwrap();
    let last = car_block(CAR_BLOCKS - 1);
    assert_eq!(store.get_block(&raw_cid(&last)).unwrap(), Some(last));
    assert_eq!(store.stats().blocks, CAR_BLOCKS as u64);
}
