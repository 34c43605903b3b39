//! CAR import: every block of a CAR into the store, in one atomic batch.

use std::io::Read;

use cid::Cid;

use super::{CarReader, DEFAULT_MAX_FRAME};
use crate::block::is_identity;
use crate::error::Result;
use crate::key::Key;
use crate::store::Store;

/// Progress of an import, passed to the [`ImportOptions::progress`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportProgress {
    /// Bytes of the CAR read so far.
    pub bytes_read: u64,
    /// Blocks read so far.
    pub blocks: u64,
}

type ProgressFn = dyn Fn(&ImportProgress) + Send + Sync;

/// Options of [`Store::import_car`]. `ImportOptions::default()`: frames up
/// to [`DEFAULT_MAX_FRAME`], no progress callback.
pub struct ImportOptions {
    max_frame: usize,
    progress: Option<Box<ProgressFn>>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            max_frame: DEFAULT_MAX_FRAME,
            progress: None,
        }
    }
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("max_frame", &self.max_frame)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ImportOptions {
    /// Same as `ImportOptions::default()`.
    pub fn new() -> ImportOptions {
        ImportOptions::default()
    }

    /// Cap on the size of one frame (a block's CID plus its data, or the
    /// header); a larger frame fails the import.
    pub fn max_frame(mut self, bytes: usize) -> ImportOptions {
        self.max_frame = bytes;
        self
    }

    /// Called after every block read (and once at the end), from the
    /// importing thread.
    pub fn progress(
        mut self,
        f: impl Fn(&ImportProgress) + Send + Sync + 'static,
    ) -> ImportOptions {
        self.progress = Some(Box::new(f));
        self
    }
}

/// What [`Store::import_car`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportSummary {
    /// The roots listed in the CAR's header (whether or not the CAR holds them).
    pub roots: Vec<Cid>,
    /// Block frames read from the CAR, identity blocks and repeats included.
    pub blocks: u64,
    /// Blocks with identity CIDs: checked, not stored.
    pub identity: u64,
    /// Distinct blocks newly written to the store.
    pub written: u64,
    /// Distinct blocks the store already had (kept, not rewritten).
    pub already_present: u64,
    /// Bytes newly written (sum of the sizes of the `written` blocks).
    pub bytes: u64,
    /// Bytes of the CAR read.
    pub car_bytes: u64,
}

impl Store {
    /// Imports every block of a CAR (v1, or v2's v1 payload) into the store,
    /// all or nothing.
    ///
    /// The CAR is streamed frame by frame ([`CarReader`]) into one
    /// [`Batch`](crate::Batch): memory stays bounded by the frame cap plus the
    /// batch's in-flight cap ([`Options::batch_memory`](crate::Options::batch_memory))
    /// plus a small per-block entry, whatever the CAR's size. Each block is
    /// checked against its CID as it is read; blocks with identity CIDs are
    /// checked and skipped (their data is in the CID). The batch commits
    /// only after the whole CAR has been read and checked, so the store never
    /// holds part of a CAR, even after a crash.
    ///
    /// The roots need not be in the CAR (partial DAGs import as they are);
    /// they are returned in the summary.
    ///
    /// # Errors
    /// - [`Error::Car`](crate::Error::Car): malformed, truncated, over the
    ///   frame cap, or a block that does not match its CID; the offset is
    ///   where the bad frame starts.
    /// - [`Error::ReadOnly`](crate::Error::ReadOnly), [`Error::Io`](crate::Error::Io),
    ///   [`Error::BatchFailed`](crate::Error::BatchFailed).
    ///
    /// On any error before the commit point the batch is discarded and the
    /// store is unchanged (no block, nothing left in `.temp/`); see
    /// [`Batch::commit`](crate::Batch::commit) for an error after it.
    pub fn import_car(&self, reader: impl Read, options: &ImportOptions) -> Result<ImportSummary> {
        self.check_writable()?;
        let mut car = CarReader::with_max_frame(reader, options.max_frame)?;
        let mut summary = ImportSummary {
            roots: car.roots().to_vec(),
            blocks: 0,
            identity: 0,
            written: 0,
            already_present: 0,
            bytes: 0,
            car_bytes: 0,
        };
        let report = |car: &CarReader<_>, blocks| {
            if let Some(f) = &options.progress {
                f(&ImportProgress {
                    bytes_read: car.position(),
                    blocks,
                });
            }
        };
        let batch = self.batch()?;
        let staged = (|| {
            while let Some(block) = car.next_block()? {
                summary.blocks += 1;
                if is_identity(&block.cid) {
                    summary.identity += 1;
                } else {
                    batch.put(&Key::from_cid(&block.cid), &block.data)?;
                }
                report(&car, summary.blocks);
            }
            Ok(())
        })();
        if let Err(e) = staged {
            // The original error matters more than a failed cleanup, which
            // the next open finishes anyway.
            let _ = batch.discard();
            return Err(e);
        }
        summary.car_bytes = car.position();
        report(&car, summary.blocks);
        let commit = batch.commit()?;
        summary.written = commit.written;
        summary.already_present = commit.already_present;
        summary.bytes = commit.bytes;
        Ok(summary)
    }
}
