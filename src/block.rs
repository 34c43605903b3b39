//! The CID level: blocks addressed by [`Cid`], checked against their hash.
//!
//! A block is stored under the key of its CID's multihash
//! ([`Key::from_cid`]), so a CIDv0 and every CIDv1 with the same multihash
//! name one file, as in Kubo.
//!
//! # Identity CIDs
//! A CID whose multihash uses the identity function (code `0x00`) carries
//! its block inside itself. Such blocks are never written to disk:
//! [`Store::put_block`] checks the data and returns, [`Store::get_block`]
//! returns the digest, [`Store::has_block`] is always true and
//! [`Store::delete_block`] always false. CAR import skips them and CAR export
//! does not write them (as go-car and Kubo do by default).

use cid::Cid;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::hash::{self, Check, IDENTITY};
use crate::key::Key;
use crate::store::Store;

/// Whether `cid` is an identity CID (its block is its digest).
pub fn is_identity(cid: &Cid) -> bool {
    cid.hash().code() == IDENTITY
}

/// Checks that `data` is the block `cid` names.
///
/// # Errors
/// - [`Error::HashMismatch`] naming the CID and what the data hashes to.
/// - [`Error::UnsupportedHash`] if the multihash function (or its digest
///   length) is not one flatstore can compute (see [`hash::is_supported`]).
pub fn check_block(cid: &Cid, data: &[u8]) -> Result<()> {
    match hash::check(cid.hash(), data) {
        Check::Match => Ok(()),
        Check::Mismatch(actual) => Err(Error::HashMismatch {
            cid: cid.to_string(),
            actual: actual_cid(cid, &actual),
        }),
        Check::Unsupported => Err(Error::UnsupportedHash {
            code: cid.hash().code(),
            cid: cid.to_string(),
        }),
    }
}

/// `actual` (a base32 multihash key) as a CID of the same version and codec
/// as `cid`, when it can be one; otherwise as it is.
pub(crate) fn actual_cid(cid: &Cid, actual: &str) -> String {
    Key::new(actual)
        .and_then(|k| k.to_multihash())
        .ok()
        .and_then(|mh| Cid::new(cid.version(), cid.codec(), mh).ok())
        .map(|c| c.to_string())
        .unwrap_or_else(|| actual.to_string())
}

impl Store {
    /// Stores the block `data` named by `cid`, after checking that `data`
    /// hashes to the CID's multihash (sha2-256, sha2-512, blake3, identity).
    ///
    /// Same promises as [`Store::put`] (first writer wins, nothing partial is
    /// ever visible, durable on return under
    /// [`Durability::Fsync`](crate::Durability::Fsync)). An identity CID is
    /// checked and nothing is written.
    ///
    /// # Errors
    /// - [`Error::HashMismatch`] or [`Error::UnsupportedHash`]: nothing is written.
    /// - [`Error::ReadOnly`], [`Error::Io`] as for [`Store::put`].
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> Result<()> {
        check_block(cid, data)?;
        if is_identity(cid) {
            return Ok(());
        }
        self.put(&Key::from_cid(cid), data)
    }

    /// Reads the block `cid` names, or `None` if it is absent.
    ///
    /// The data read is checked against the CID's multihash when the hash
    /// function is supported (verify on read: a corrupt file is never served
    /// as the block); blocks with other hash functions, which only a
    /// key-level [`Store::put`] or another program can have written, are
    /// returned unchecked. [`get_block_unchecked`](Store::get_block_unchecked)
    /// skips the check. For an identity CID, returns its digest.
    ///
    /// # Errors
    /// - [`Error::HashMismatch`]: the stored file is corrupt
    ///   ([`Store::verify`] finds and quarantines such files).
    /// - [`Error::Io`] if the file exists but cannot be read.
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        let data = self.get_block_unchecked(cid)?;
        if let Some(d) = &data {
            match check_block(cid, d) {
                Ok(()) | Err(Error::UnsupportedHash { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(data)
    }

    /// Like [`get_block`](Store::get_block), without checking the hash.
    pub fn get_block_unchecked(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        if is_identity(cid) {
            return Ok(Some(cid.hash().digest().to_vec()));
        }
        self.get(&Key::from_cid(cid))
    }

    /// Whether the block `cid` names is present (always true for an identity CID).
    pub fn has_block(&self, cid: &Cid) -> Result<bool> {
        if is_identity(cid) {
            return Ok(true);
        }
        self.has(&Key::from_cid(cid))
    }

    /// Deletes the block `cid` names (and so, every CID with the same
    /// multihash); returns whether it existed. Always `false` for an identity
    /// CID, which has nothing on disk. Same promises as [`Store::delete`].
    pub fn delete_block(&self, cid: &Cid) -> Result<bool> {
        if is_identity(cid) {
            return Ok(false);
        }
        self.delete(&Key::from_cid(cid))
    }
}

impl Batch {
    /// Stages the block `data` named by `cid` in the batch, after checking
    /// that it hashes to the CID's multihash. An identity CID is checked and
    /// nothing is staged. Otherwise the same as [`Batch::put`].
    ///
    /// # Errors
    /// [`Error::HashMismatch`] or [`Error::UnsupportedHash`] (nothing is
    /// staged, the batch stays usable), or [`Error::BatchFailed`].
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> Result<()> {
        check_block(cid, data)?;
        if is_identity(cid) {
            return Ok(());
        }
        self.put(&Key::from_cid(cid), data)
    }
}
