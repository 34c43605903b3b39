//! Model-based test: random sequences of store and batch operations (put,
//! put_reader, delete, get, get_range, has, size, listing, counters; batch
//! put/delete/get/has/size/keys, commit, discard, drop; reopen with either
//! durability) on a real store, each result checked against an in-memory
//! model (`tests/common/model.rs`), including the batch rules of DESIGN
//! section 3 and the commit summaries. Every shard function is used.
//!
//! `FLATSTORE_MODEL_CASES` sets the number of cases (default 96, 32 on
//! Windows).

mod common;

use common::model::{Op, Runner, BATCHES, KEY_NAMES, VALUES};
use common::tempdir;
use flatstore::{Durability, Shard};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    // Most operations hit a few keys and the first batch, so that sequences
    // like "put A; batch: delete A, put A; commit" come up often.
    let key = prop_oneof![3 => 0..3u8, 1 => 0..KEY_NAMES.len() as u8];
    let value = 0..VALUES;
    let batch = prop_oneof![3 => Just(0u8), 1 => 0..BATCHES];
    prop_oneof![
        4 => (key.clone(), value.clone()).prop_map(|(key, value)| Op::Put { key, value }),
        1 => (key.clone(), value.clone()).prop_map(|(key, value)| Op::PutReader { key, value }),
        3 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => key.clone().prop_map(|key| Op::Get { key }),
        1 => (key.clone(), 0..70_000u32, 0..70_000u32)
            .prop_map(|(key, offset, len)| Op::GetRange { key, offset, len }),
        1 => key.clone().prop_map(|key| Op::Has { key }),
        1 => key.clone().prop_map(|key| Op::Size { key }),
        1 => Just(Op::Keys),
        1 => Just(Op::Stats),
        6 => (batch.clone(), key.clone(), value.clone())
            .prop_map(|(batch, key, value)| Op::BatchPut { batch, key, value }),
        1 => (batch.clone(), key.clone(), value.clone())
            .prop_map(|(batch, key, value)| Op::BatchPutReader { batch, key, value }),
        4 => (batch.clone(), key.clone()).prop_map(|(batch, key)| Op::BatchDelete { batch, key }),
        2 => (batch.clone(), key.clone()).prop_map(|(batch, key)| Op::BatchGet { batch, key }),
        1 => (batch.clone(), key.clone()).prop_map(|(batch, key)| Op::BatchHas { batch, key }),
        1 => (batch.clone(), key.clone()).prop_map(|(batch, key)| Op::BatchSize { batch, key }),
        1 => batch.clone().prop_map(|batch| Op::BatchKeys { batch }),
        3 => batch.clone().prop_map(|batch| Op::Commit { batch }),
        1 => batch.clone().prop_map(|batch| Op::Discard { batch }),
        1 => batch.prop_map(|batch| Op::DropBatch { batch }),
        1 => any::<bool>().prop_map(|fsync| Op::Reopen { fsync }),
    ]
}

fn shard() -> impl Strategy<Value = Shard> {
    prop_oneof![
        (1..4usize).prop_map(Shard::Prefix),
        (1..4usize).prop_map(Shard::Suffix),
        (1..4usize).prop_map(Shard::NextToLast),
    ]
}

fn cases() -> u32 {
    std::env::var("FLATSTORE_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        // Fewer under Wine, where every file operation is slow.
        .unwrap_or(if cfg!(windows) { 32 } else { 96 })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_and_batches_match_the_model(
        shard in shard(),
        fsync in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let dir = tempdir();
        let durability = if fsync { Durability::Fsync } else { Durability::None };
        let mut runner = Runner::new(&dir.path().join("s"), shard, durability);
        for op in &ops {
            runner.apply(op);
        }
        runner.finish();
    }
}

/// The rules of DESIGN section 3, spelled out as fixed sequences through the
/// same runner (so the model itself is checked against the design).
#[test]
fn model_rules_by_example() {
    use Op::*;
    let sequences: &[&[Op]] = &[
        // A plain put of a present key keeps the old value.
        &[
            Put { key: 0, value: 0 },
            Put { key: 0, value: 1 },
            Get { key: 0 },
        ],
        // First put wins in a batch; delete hides; last op decides.
        &[
            BatchPut {
                batch: 0,
                key: 0,
                value: 0,
            },
            BatchPut {
                batch: 0,
                key: 0,
                value: 1,
            },
            BatchGet { batch: 0, key: 0 },
            BatchDelete { batch: 0, key: 0 },
            BatchGet { batch: 0, key: 0 },
            BatchPut {
                batch: 0,
                key: 0,
                value: 2,
            },
            Commit { batch: 0 },
            Get { key: 0 },
        ],
        // `delete A, put A` in a batch replaces a stored A at commit.
        &[
            Put { key: 1, value: 0 },
            BatchDelete { batch: 1, key: 1 },
            BatchPut {
                batch: 1,
                key: 1,
                value: 3,
            },
            Get { key: 1 },
            Commit { batch: 1 },
            Get { key: 1 },
            Keys,
        ],
        // Two batches interleaved with the store, one committed, one dropped
        // by a reopen.
        &[
            BatchPut {
                batch: 0,
                key: 2,
                value: 0,
            },
            BatchPut {
                batch: 1,
                key: 2,
                value: 1,
            },
            Put { key: 3, value: 0 },
            BatchDelete { batch: 1, key: 3 },
            Commit { batch: 0 },
            BatchKeys { batch: 1 },
            Reopen { fsync: true },
            Keys,
        ],
    ];
    for seq in sequences {
        let dir = tempdir();
        let mut runner = Runner::new(&dir.path().join("s"), Shard::default(), Durability::None);
        for op in seq.iter() {
            runner.apply(op);
        }
        runner.finish();
    }
}
