//! Copying every block between a local store and an S3 store, each way in
//! one atomic batch.

use std::sync::Mutex;

use crate::batch::CommitSummary;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::s3::S3Store;
use crate::store::Store;

/// Reads fetched in parallel by [`copy_from_s3`].
const READERS: usize = 8;

/// Copies every block of the local store `src` into `dst`, in one
/// [`S3Batch`](super::S3Batch): blocks stream from the local listing into
/// the batch's bounded uploads, never the whole store in memory (the batch
/// keeps about 100 bytes a key).
///
/// # Atomicity
/// All or nothing: an error before the commit point, or a crash, leaves
/// `dst` as it was (after its next open's recovery). Blocks `dst` already
/// has are kept, counted in `already_present`.
///
/// # Concurrency
/// Blocks written to `src` during the copy may or may not be copied.
///
/// # Errors
/// Any error of reading `src` or of the batch; `dst` is then unchanged.
pub fn copy_to_s3(src: &Store, dst: &S3Store) -> Result<CommitSummary> {
    let batch = dst.batch()?;
    for key in src.keys() {
        let key = key?;
        // A block deleted since the listing is not copied.
        if let Some(data) = src.get(&key)? {
            batch.put(&key, &data)?;
        }
    }
    batch.commit()
}

/// Copies every block of `src` into the local store `dst`, in one
/// [`Batch`](crate::Batch), with the S3 listing streamed and the blocks read
/// by 8 parallel GETs.
///
/// # Atomicity
/// As [`Batch::commit`](crate::Batch::commit): all or nothing across crashes.
///
/// # Errors
/// Any error of listing or reading `src`, or of the batch; `dst` is then
/// unchanged.
pub fn copy_from_s3(src: &S3Store, dst: &Store) -> Result<CommitSummary> {
    let batch = dst.batch()?;
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    let has_failed = || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    let (tx, rx) = crossbeam_channel::bounded::<Key>(READERS * 4);
    std::thread::scope(|s| {
        for _ in 0..READERS {
            let rx = rx.clone();
            let (batch, fail, has_failed) = (&batch, &fail, &has_failed);
            s.spawn(move || {
                for key in rx {
                    if has_failed() {
                        continue; // drain
                    }
                    match src.get(&key) {
                        Ok(Some(data)) => {
                            if let Err(e) = batch.put(&key, &data) {
                                fail(e);
                            }
                        }
                        Ok(None) => {} // deleted since the listing
                        Err(e) => fail(e),
                    }
                }
            });
        }
        drop(rx);
        for key in src.keys() {
            match key {
                Ok(k) if !has_failed() => {
                    if tx.send(k).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    fail(e);
                    break;
                }
            }
        }
        drop(tx);
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let _ = batch.discard();
        return Err(e);
    }
    batch.commit()
}
