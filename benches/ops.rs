//! Micro-benchmarks of single operations on a warm store (page cache warm,
//! `Durability::None`, so the figures are CPU and system-call cost, not the
//! disk's): put of a new block and of a present one, get, has, and a batch of
//! small blocks. The comparison with the bare system calls and with other
//! stores is the harness in `bench/` (see BENCHMARKS.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flatstore::{Durability, Key, Options, Store};
use multihash_codetable::{Code, MultihashDigest};

/// Block `i` of `size` bytes (distinct content per `i`) and its key.
fn block(i: u64, size: usize) -> (Key, Vec<u8>) {
    let mut data = vec![0u8; size];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = chunk.len();
        chunk.copy_from_slice(&x.to_le_bytes()[..n]);
    }
    (Key::from_multihash(&Code::Sha2_256.digest(&data)), data)
}

fn ops(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let present: Vec<(Key, Vec<u8>)> = (0..1000).map(|i| block(i, 4096)).collect();
    for (k, d) in &present {
        store.put(k, d).unwrap();
    }
    let absent = block(u64::MAX, 16).0;

    let mut g = c.benchmark_group("single");
    g.throughput(Throughput::Elements(1));
    let mut next = 1_000_000u64;
    g.bench_function("put new 4 KiB", |b| {
        b.iter_batched(
            || {
                next += 1;
                block(next, 4096)
            },
            |(k, d)| store.put(&k, &d).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut i = 0;
    g.bench_function("put present 4 KiB", |b| {
        b.iter(|| {
            i = (i + 1) % present.len();
            store.put(&present[i].0, &present[i].1).unwrap()
        })
    });
    g.bench_function("get 4 KiB", |b| {
        b.iter(|| {
            i = (i + 1) % present.len();
            store.get(black_box(&present[i].0)).unwrap().unwrap()
        })
    });
    g.bench_function("has present", |b| {
        b.iter(|| {
            i = (i + 1) % present.len();
            assert!(store.has(black_box(&present[i].0)).unwrap())
        })
    });
    g.bench_function("has absent", |b| {
        b.iter(|| assert!(!store.has(black_box(&absent)).unwrap()))
    });
    g.finish();

    const BATCH: usize = 1000;
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    let mut next = 10_000_000u64;
    g.bench_function("put + commit 1000 x 1 KiB", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        next += 1;
                        block(next, 1024)
                    })
                    .collect::<Vec<_>>()
            },
            |blocks| {
                let batch = store.batch().unwrap();
                for (k, d) in &blocks {
                    batch.put(k, d).unwrap();
                }
                batch.commit().unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, ops);
criterion_main!(benches);
