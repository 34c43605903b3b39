//! CAR export: the DAG under one root, from the store into a CARv1.

use std::collections::HashSet;
use std::io::{BufWriter, Write};

use cid::Cid;

use super::CarWriter;
use crate::block::is_identity;
use crate::dag;
use crate::error::{Error, Result};
use crate::store::Store;

/// Progress of an export, passed to the callback of [`Store::export_car`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportProgress {
    /// Blocks written so far.
    pub blocks: u64,
    /// Bytes of CAR written so far (before the output's own buffering).
    pub bytes_written: u64,
}

/// What [`Store::export_car`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportSummary {
    /// The root (the header's only root).
    pub root: Cid,
    /// Blocks written.
    pub blocks: u64,
    /// Sum of the data sizes of the blocks written.
    pub block_bytes: u64,
    /// Bytes of CAR written, header included.
    pub car_bytes: u64,
    /// Identity CIDs met in the DAG: not written as blocks (their data is
    /// in the CID), though their own links were followed.
    pub identity: u64,
    /// Blocks written whose codec is not raw, dag-pb or dag-cbor: exported
    /// as leaves, links (if they have any) not followed.
    pub unknown_codec: u64,
}

impl Store {
    /// Writes the DAG under `root` as a CARv1 whose header names `root` as
    /// its only root.
    ///
    /// # Order and contents
    /// Blocks are written depth-first, in pre-order: `root` first, then each
    /// link's subtree in the order the links appear in the block (the order
    /// a streaming reader of a UnixFS file needs). Each block is written once,
    /// however many times it is linked (a set of the CIDs seen, the only
    /// part of the walk whose memory grows with the DAG). The walk is
    /// iterative, so a deep DAG cannot overflow the stack.
    ///
    /// Links are followed in dag-pb (`0x70`) and dag-cbor (`0x71`) blocks;
    /// raw (`0x55`) blocks are leaves, and so are blocks of any other codec
    /// (written, links not followed, counted in
    /// [`ExportSummary::unknown_codec`]). Identity CIDs are not written as
    /// blocks, as go-car and Kubo do by default and as
    /// [`import_car`](Store::import_car) skips them; links inside an identity
    /// dag-pb or dag-cbor block are followed. Each block read is checked
    /// against its CID ([`Store::get_block`]).
    ///
    /// The output is wrapped in a [`BufWriter`] and flushed at the end.
    /// `progress` is called after every block written.
    ///
    /// # Errors
    /// - [`Error::MissingBlock`]: a block of the DAG is not in the store.
    /// - [`Error::HashMismatch`]: a stored block is corrupt.
    /// - [`Error::Codec`]: a dag-pb or dag-cbor block cannot be decoded.
    /// - [`Error::CarWrite`]: the output failed; [`Error::Io`]: the store did.
    ///
    /// After an error the output holds an incomplete CAR and should be discarded.
    pub fn export_car<W: Write>(
        &self,
        root: &Cid,
        writer: W,
        mut progress: impl FnMut(&ExportProgress),
    ) -> Result<ExportSummary> {
        let mut car = CarWriter::new(BufWriter::with_capacity(256 << 10, writer), &[*root])?;
        let mut summary = ExportSummary {
            root: *root,
            blocks: 0,
            block_bytes: 0,
            car_bytes: 0,
            identity: 0,
            unknown_codec: 0,
        };
        let mut seen: HashSet<Cid> = HashSet::new();
        let mut stack = vec![*root];
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let data = self.get_block(&cid)?.ok_or_else(|| Error::MissingBlock {
                cid: cid.to_string(),
            })?;
            if is_identity(&cid) {
                summary.identity += 1;
            } else {
                car.write_block(&cid, &data)?;
                summary.blocks += 1;
                summary.block_bytes += data.len() as u64;
                progress(&ExportProgress {
                    blocks: summary.blocks,
                    bytes_written: car.bytes_written(),
                });
            }
            match dag::links(&cid, &data)? {
                Some(links) => stack.extend(links.into_iter().rev().filter(|l| !seen.contains(l))),
                None if !is_identity(&cid) => summary.unknown_codec += 1,
                None => {}
            }
        }
        summary.car_bytes = car.bytes_written();
        car.finish()?;
        Ok(summary)
    }
}
