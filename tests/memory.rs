//! A batch of 2 GiB runs in bounded memory (Linux: peak RSS from /proc).

mod common;

use common::child::{self, spawn};
use flatstore::{Durability, Key, Options, Store};

#[cfg(target_os = "linux")]
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
    #[cfg(target_os = "linux")]
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

#[cfg(target_os = "linux")]
#[test]
fn two_gib_batch_stays_under_100_mib() {
    let dir = common::tempdir();
    let root = dir.path().join("s");
    let (mut c, lines) = spawn(child::command("child_big_batch", root.to_str().unwrap()));
    let line = lines.expect("rss ", 900);
    assert!(c.wait().unwrap().success());
    let kib: u64 = line["rss ".len()..].parse().unwrap();
    eprintln!("peak RSS of a 2 GiB batch: {} MiB", kib / 1024);
    assert!(kib < 100 * 1024, "peak RSS {kib} KiB");
    // And the data is really there.
    let store = Store::open(&root, Options::default()).unwrap();
    let got = store.get(&Key::new("BIG2047").unwrap()).unwrap().unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert_eq!(&got[..4], &2047u32.to_le_bytes());
    assert_eq!(store.stats().bytes, 2048 << 20);
}
