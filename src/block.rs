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

use std::io::{self, Read};

use cid::Cid;
use multihash::Multihash;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::hash::{self, Check, StreamHasher, IDENTITY};
use crate::key::Key;
use crate::platform;
use crate::store::{Published, Store};

/// What a size-capped put did ([`Store::put_reader_capped`],
/// [`Store::put_block_reader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The block was written.
    Written,
    /// The store already held the key; nothing was written (the stored
    /// copy is kept as it is, whatever the new bytes were for a key-level
    /// put; for a CID, the stored copy hashes to the CID).
    AlreadyPresent,
    /// The stored copy did not hash to the CID; the new data, which does,
    /// replaced it atomically.
    Repaired,
}

/// The reader of a capped put: counts and hashes what it passes on, and
/// keeps its own failures (the reader's error, going over the cap) so that
/// they are reported as such rather than as a failed write of a temp file.
struct Input<'a, R> {
    inner: R,
    limit: u64,
    read: u64,
    hasher: Option<&'a mut StreamHasher>,
    too_large: bool,
    error: Option<io::Error>,
}

impl<'a, R: Read> Input<'a, R> {
    fn new(inner: R, limit: u64, hasher: Option<&'a mut StreamHasher>) -> Self {
        Input {
            inner,
            limit,
            read: 0,
            hasher,
            too_large: false,
            error: None,
        }
    }

    /// The error to report for a failed put that read from this input:
    /// its own failure if it had one, else `e`.
    fn explain(&mut self, key: String, e: Error) -> Error {
        if self.too_large {
            Error::BlockTooLarge {
                key,
                limit: self.limit,
            }
        } else if let Some(source) = self.error.take() {
            Error::Input(source)
        } else {
            e
        }
    }
}

impl<R: Read> Read for Input<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the cap is enough to know it is exceeded.
        let room = (self.limit + 1 - self.read.min(self.limit + 1)) as usize;
        let want = buf.len().min(room.max(1));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = e.kind();
                    self.error = Some(e);
                    return Err(io::Error::new(kind, "the input failed"));
                }
            }
        };
        self.read += n as u64;
        if self.read > self.limit {
            self.too_large = true;
            return Err(io::Error::other("the block is over the size cap"));
        }
        if let Some(h) = self.hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A block reader that checks the block against its CID as it streams
/// (see [`Store::block_reader`]).
pub struct CheckedReader {
    inner: Box<dyn Read + Send>,
    hasher: Option<StreamHasher>,
    cid: Cid,
}

impl std::fmt::Debug for CheckedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedReader")
            .field("cid", &self.cid)
            .finish()
    }
}

impl Read for CheckedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(h) = &mut self.hasher {
                h.update(&buf[..n]);
            }
        } else if !buf.is_empty() {
            if let Some(h) = self.hasher.take() {
                if let Err(e) = mismatch(&self.cid, h.finish(self.cid.hash())) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
        Ok(n)
    }
}

/// A hasher for `cid`, or the error saying flatstore cannot check it.
fn hasher_for(cid: &Cid) -> Result<StreamHasher> {
    StreamHasher::new(cid.hash()).ok_or_else(|| Error::UnsupportedHash {
        code: cid.hash().code(),
        cid: cid.to_string(),
    })
}

fn mismatch(cid: &Cid, check: Check) -> Result<()> {
    match check {
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

impl Store {
    /// Streams the bytes of `reader` into the store under `key`, refusing a
    /// block of more than `limit` bytes, and says whether it was written.
    ///
    /// Like [`Store::put_reader`] (the block is never held in memory, first
    /// writer wins, nothing partial is ever visible), with a cap: the put
    /// fails as soon as the reader yields byte `limit + 1`.
    ///
    /// # Errors
    /// - [`Error::BlockTooLarge`]: over the cap; nothing is written.
    /// - [`Error::Input`]: the reader failed; nothing is written.
    /// - [`Error::ReadOnly`], [`Error::Io`] as for [`Store::put`].
    pub fn put_reader_capped(
        &self,
        key: &Key,
        reader: impl Read,
        limit: u64,
    ) -> Result<(u64, PutOutcome)> {
        let mut input = Input::new(reader, limit, None);
        match self.put_with(key, |f| platform::copy_into(&mut input, f)) {
            Ok((n, Published::Written)) => Ok((n, PutOutcome::Written)),
            Ok((n, Published::AlreadyPresent)) => Ok((n, PutOutcome::AlreadyPresent)),
            Err(e) => Err(input.explain(key.to_string(), e)),
        }
    }

    /// Streams the block `cid` names from `reader` into the store, checking
    /// it against the CID's multihash, and repairs a stored copy that does
    /// not hash to it. Refuses a block of more than `limit` bytes.
    ///
    /// - Absent: the block is written when the data checks out.
    /// - Present and intact: nothing is written ([`PutOutcome::AlreadyPresent`]);
    ///   the data is still read and checked, so bad input is an error.
    /// - Present and corrupt (it does not hash to the CID): when the new
    ///   data checks out, it replaces the stored copy through a batch's
    ///   `delete` + `put`, which swaps it in atomically
    ///   ([`PutOutcome::Repaired`]).
    ///
    /// The data is never held in memory. An identity CID is checked and
    /// nothing is written ([`PutOutcome::AlreadyPresent`]).
    ///
    /// # Errors
    /// - [`Error::HashMismatch`], [`Error::UnsupportedHash`],
    ///   [`Error::BlockTooLarge`], [`Error::Input`]: nothing is written and
    ///   a stored copy is left as it was.
    /// - [`Error::ReadOnly`], [`Error::Io`], [`Error::BatchFailed`].
    pub fn put_block_reader(
        &self,
        cid: &Cid,
        reader: impl Read,
        limit: u64,
    ) -> Result<(u64, PutOutcome)> {
        self.check_writable()?;
        let key = Key::from_cid(cid);
        let mut hasher = hasher_for(cid)?;
        let mut input = Input::new(reader, limit, Some(&mut hasher));
        let stored = if is_identity(cid) {
            Some(true)
        } else {
            self.stored_copy_intact(&key, cid.hash())?
        };
        match stored {
            // Nothing to write: read the data only to check it.
            Some(true) => {
                let n = io::copy(&mut input, &mut io::sink())
                    .map_err(|e| input.explain(cid.to_string(), Error::Input(e)))?;
                drop(input);
                mismatch(cid, hasher.finish(cid.hash()))?;
                Ok((n, PutOutcome::AlreadyPresent))
            }
            None => {
                // The check runs inside the write, before the publish: a
                // mismatch removes the temp file and publishes nothing.
                let mut bad = None;
                let result = self.put_with(&key, |f| {
                    let n = platform::copy_into(&mut input, f)?;
                    let check = std::mem::replace(
                        input.hasher.as_deref_mut().expect("a hasher"),
                        hasher_for(cid).map_err(io::Error::other)?,
                    )
                    .finish(cid.hash());
                    if check != Check::Match {
                        bad = Some(check);
                        return Err(io::Error::other("hash mismatch"));
                    }
                    Ok(n)
                });
                if let Some(check) = bad {
                    mismatch(cid, check)?;
                }
                match result {
                    Ok((n, Published::Written)) => Ok((n, PutOutcome::Written)),
                    Ok((n, Published::AlreadyPresent)) => Ok((n, PutOutcome::AlreadyPresent)),
                    Err(e) => Err(input.explain(cid.to_string(), e)),
                }
            }
            Some(false) => {
                let batch = self.batch()?;
                let staged = batch.delete(&key).and_then(|()| {
                    batch
                        .put_reader(&key, &mut input)
                        .map_err(|e| input.explain(cid.to_string(), e))
                });
                drop(input);
                let n = match staged.and_then(|n| {
                    mismatch(cid, hasher.finish(cid.hash()))?;
                    Ok(n)
                }) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = batch.discard();
                        return Err(e);
                    }
                };
                batch.commit()?;
                Ok((n, PutOutcome::Repaired))
            }
        }
    }

    /// A reader of the block `cid` names that checks it as it streams, or
    /// `None` if it is absent: verify on read without holding the block in
    /// memory. The bytes are passed on as they are read; at the end, a block
    /// that does not hash to the CID fails the last read with an
    /// [`io::Error`] of kind [`InvalidData`](io::ErrorKind::InvalidData)
    /// wrapping [`Error::HashMismatch`]. A block whose hash function is not
    /// supported is read unchecked, as [`get_block`](Store::get_block) does.
    /// An identity CID reads as its digest.
    ///
    /// # Errors
    /// [`Error::Io`] if the file exists but cannot be opened.
    pub fn block_reader(&self, cid: &Cid) -> Result<Option<CheckedReader>> {
        let source: Box<dyn Read + Send> = if is_identity(cid) {
            Box::new(io::Cursor::new(cid.hash().digest().to_vec()))
        } else {
            match self.reader(&Key::from_cid(cid))? {
                Some(r) => Box::new(r),
                None => return Ok(None),
            }
        };
        Ok(Some(CheckedReader {
            inner: source,
            hasher: StreamHasher::new(cid.hash()),
            cid: *cid,
        }))
    }

    /// Whether the stored copy of `key` hashes to `mh`: `None` when absent.
    /// The file is streamed through the hasher, never read whole.
    fn stored_copy_intact(&self, key: &Key, mh: &Multihash<64>) -> Result<Option<bool>> {
        let Some(mut reader) = self.reader(key)? else {
            return Ok(None);
        };
        let Some(mut hasher) = StreamHasher::new(mh) else {
            return Ok(Some(true));
        };
        let mut buf = vec![0u8; 64 << 10];
        let path = self.block_path(key);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", path, e)),
            }
        }
        Ok(Some(hasher.finish(mh) == Check::Match))
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
