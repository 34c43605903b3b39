//! A sequence of store and batch operations (three input bytes each) on a
//! real store in a temporary directory, every result checked against the
//! in-memory model shared with `tests/model.rs`. The first input byte picks
//! the shard function and the durability. Point `TMPDIR` at a tmpfs for
//! speed.
#![no_main]

use flatstore::{Durability, Shard};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/model.rs"]
mod model;

/// Operations per input, at most (longer inputs are cut).
const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = 1 + (first as usize >> 2) % 3;
    let shard = match first % 3 {
        0 => Shard::Prefix(n),
        1 => Shard::Suffix(n),
        _ => Shard::NextToLast(n),
    };
    let durability = if first & 0x80 != 0 {
        Durability::Fsync
    } else {
        Durability::None
    };
    let dir = tempfile::Builder::new()
        .prefix("flatstore-fuzz-")
        .tempdir()
        .unwrap();
    let mut runner = model::Runner::new(&dir.path().join("s"), shard, durability);
    for chunk in rest.chunks_exact(3).take(MAX_OPS) {
        runner.apply(&model::Op::decode([chunk[0], chunk[1], chunk[2]]));
    }
    runner.finish();
});
