//! CAR (Content Addressable aRchive) files: a streaming reader and writer,
//! and import into / export from a store.
//!
//! # Format
//! CARv1 is a sequence of frames, each an unsigned varint length followed by
//! that many bytes. The first frame is the header, a dag-cbor map
//! `{roots: [CID, ...], version: 1}`; every later frame is one block: its CID
//! in binary form immediately followed by the block's bytes. CARv2 wraps a
//! CARv1 payload: an 11-byte pragma (a header frame `{version: 2}`), a
//! 40-byte header (16 bytes of characteristics, then the payload's offset,
//! the payload's size and the index's offset, little-endian `u64`s), the
//! payload, and an optional index, which this module ignores.
//!
//! # Why our own reader
//! The maintained Rust CAR crates do not meet what import needs all at once
//! (sync, streaming with bounded memory, a cap on the size of a frame, and
//! errors that name the byte offset of the bad frame): `fvm_ipld_car` and
//! `iroh-car` are async (`futures`/`tokio` readers), `rs-car-sync` is sync
//! but reports neither offsets nor a frame cap, and none distinguishes a
//! clean end of file from truncated input in every position. The framing
//! itself is a varint, a CID and bytes, so [`CarReader`] and [`CarWriter`]
//! are small; the dag-cbor header goes through `serde_ipld_dagcbor`.
//!
//! # Fuzzing
//! [`scan`] reads a whole CAR from a byte slice, checking every frame and
//! every block's hash, without keeping the blocks: the entry point for fuzz
//! targets.

mod export;
mod import;
mod reader;
mod writer;

pub use export::{ExportProgress, ExportSummary};
pub use import::{ImportOptions, ImportProgress, ImportSummary};
pub use reader::{CarBlock, CarReader};
pub use writer::CarWriter;

use cid::Cid;

use crate::error::Result;

/// Default cap on the size of one frame (the header, or a block's CID plus
/// its data): 8 MiB, four times the largest block Bitswap transfers.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// What [`scan`] found in a CAR.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CarScan {
    /// 1 or 2.
    pub version: u64,
    /// The roots of the (inner v1) header.
    pub roots: Vec<Cid>,
    /// Number of block frames.
    pub blocks: u64,
    /// Sum of the blocks' data sizes.
    pub block_bytes: u64,
}

/// Reads a whole CAR from `data` with the default frame cap, checking every
/// frame and every block's hash, and keeping nothing but counts.
///
/// # Errors
/// As [`CarReader::next_block`]: [`Error::Car`](crate::Error::Car) naming
/// the offset of the bad frame.
pub fn scan(data: &[u8]) -> Result<CarScan> {
    let mut reader = CarReader::new(data)?;
    let mut scan = CarScan {
        version: reader.version(),
        roots: reader.roots().to_vec(),
        blocks: 0,
        block_bytes: 0,
    };
    while let Some(block) = reader.next_block()? {
        scan.blocks += 1;
        scan.block_bytes += block.data.len() as u64;
    }
    Ok(scan)
}

/// Appends the unsigned LEB128 varint of `n` to `out`.
pub(crate) fn push_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
