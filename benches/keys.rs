//! Micro-benchmarks of the pure functions on every operation's path: key
//! encoding (`Key::from_multihash`), key validation (`Key::new`) and the
//! block path (`Store::block_path`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flatstore::{Durability, Key, Options, Store};
use multihash_codetable::{Code, MultihashDigest};

fn keys(c: &mut Criterion) {
    let mh = Code::Sha2_256.digest(b"a block");
    let key = Key::from_multihash(&mh);
    let text = key.as_str().to_string();

    let mut g = c.benchmark_group("key");
    g.throughput(Throughput::Elements(1));
    g.bench_function("from_multihash (sha2-256)", |b| {
        b.iter(|| Key::from_multihash(black_box(&mh)))
    });
    g.bench_function("new (validate 59 chars)", |b| {
        b.iter(|| Key::new(black_box(&text)).unwrap())
    });
    g.bench_function("new, invalid (lower case)", |b| {
        let bad = text.to_lowercase();
        b.iter(|| Key::new(black_box(&bad)).unwrap_err())
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("block_path (next-to-last/2)", |b| {
        b.iter(|| store.block_path(black_box(&key)))
    });
    g.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
