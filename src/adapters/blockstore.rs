//! [`blockstore::Blockstore`] for [`Store`] (feature `blockstore`).

use ::blockstore::block::{Block, CidError};
use ::blockstore::cond_send::{CondSend, CondSync};
use ::blockstore::Blockstore;
use cid::CidGeneric;

use super::{check_inline, stage_all, Slot, Staged};
use crate::error::Error;
use crate::key::Key;
use crate::store::Store;

type BsResult<T> = ::blockstore::Result<T>;

/// The slot of a CID; [`CidTooLarge`](::blockstore::Error::CidTooLarge) if its
/// digest is longer than 64 bytes.
fn slot<const S: usize>(cid: &CidGeneric<S>) -> BsResult<Slot<'_>> {
    Slot::of(cid.hash()).ok_or(::blockstore::Error::CidTooLarge)
}

/// Runs a blocking store call: on Tokio's blocking pool when the `tokio`
/// feature is on and the caller is inside a Tokio runtime; inline otherwise.
async fn offload<T, F>(f: F) -> BsResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> crate::Result<T> + Send + 'static,
{
    #[cfg(feature = "tokio")]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return match handle.spawn_blocking(f).await {
            Ok(r) => r.map_err(Into::into),
            Err(e) => Err(::blockstore::Error::ExecutorError(e.to_string())),
        };
    }
    Ok(f()?)
}

/// Whether [`offload`] would leave the calling thread (so borrowed data must
/// be copied first).
fn offloads() -> bool {
    #[cfg(feature = "tokio")]
    {
        tokio::runtime::Handle::try_current().is_ok()
    }
    #[cfg(not(feature = "tokio"))]
    {
        false
    }
}

/// Stores one block (already known not to be an identity block).
async fn put_one(store: &Store, key: Key, data: &[u8]) -> BsResult<()> {
    if offloads() {
        let (store, data) = (store.clone(), data.to_vec());
        offload(move || store.put(&key, &data)).await
    } else {
        Ok(store.put(&key, data)?)
    }
}

/// Makes the staged writes of a bulk put visible.
async fn finish<D: AsRef<[u8]>>(store: &Store, staged: Staged<D>) -> BsResult<()> {
    match staged {
        Staged::Nothing => Ok(()),
        Staged::One(key, data) => put_one(store, key, data.as_ref()).await,
        Staged::Batch(batch) => offload(move || batch.commit().map(|_| ())).await,
    }
}

/// The data of a block, as a byte slice.
struct Data<const S: usize, B>(B);

impl<const S: usize, B: Block<S>> AsRef<[u8]> for Data<S, B> {
    fn as_ref(&self) -> &[u8] {
        self.0.data()
    }
}

/// The stored items of a bulk put: identity blocks are checked and dropped.
fn stored<const S: usize, D: AsRef<[u8]>>(
    items: impl Iterator<Item = BsResult<(CidGeneric<S>, D)>>,
) -> impl Iterator<Item = BsResult<(Key, D)>> {
    items.filter_map(|item| {
        let (cid, data) = match item {
            Ok(pair) => pair,
            Err(e) => return Some(Err(e)),
        };
        match slot(&cid) {
            Err(e) => Some(Err(e)),
            Ok(Slot::Inline(digest)) => check_inline(&cid, digest, data.as_ref())
                .err()
                .map(|e| Err(e.into())),
            Ok(Slot::Stored(key)) => Some(Ok((key, data))),
        }
    })
}

/// The async block-store trait of beetswap and lumina, on the store itself.
///
/// # Async
/// No runtime is needed and none is started. By default each method does
/// its work — short blocking filesystem calls, like [`Store::get`] or
/// [`Store::put`] — inline when its future is first polled, and is then
/// ready. This is the same trade-off as calling `std::fs` from async code: a
/// read or a put blocks the polling thread for the time of a few system calls
/// (under [`Durability::Fsync`](crate::Durability::Fsync) a put also waits for
/// its fsyncs, and a bulk put for its batch commit).
///
/// With the `tokio` feature, a call made inside a Tokio runtime runs its
/// blocking part on Tokio's blocking pool (`spawn_blocking`) instead, so the
/// executor's threads stay free; the data of a put is then copied once. A
/// call made outside a runtime still runs inline. Either way the promises
/// below hold; a future dropped while its work runs on the pool does not
/// stop that work (a put still completes, whole or not at all). A panic on
/// the pool is reported as
/// [`ExecutorError`](::blockstore::Error::ExecutorError).
///
/// A bulk put stages its blocks on the calling thread (the batch's writers
/// run in the background; staging waits only when the batch's memory cap is
/// reached) and commits on the pool.
///
/// # Semantics
/// See [`adapters`](crate::adapters): keys are the CID's multihash (CIDs of
/// any `S` name the same block), identity CIDs are never written,
/// `put_keyed` trusts the CID (no re-hash), and `put_many_keyed` and
/// `put_many` are all or nothing.
///
/// # Errors
/// - [`CidTooLarge`](::blockstore::Error::CidTooLarge): the multihash digest
///   is longer than 64 bytes.
/// - Any [`crate::Error`], converted with its `From` impl (see there).
impl Blockstore for Store {
    /// Reads the block, or `None` if it is absent; the digest itself for an
    /// identity CID.
    async fn get<const S: usize>(&self, cid: &CidGeneric<S>) -> BsResult<Option<Vec<u8>>> {
        match slot(cid)? {
            Slot::Inline(digest) => Ok(Some(digest.to_vec())),
            Slot::Stored(key) => {
                let store = self.clone();
                offload(move || store.get(&key)).await
            }
        }
    }

    /// Stores the block under the CID's multihash, without re-hashing it. A
    /// block already present is kept (first writer wins); an identity CID is
    /// only checked against `data`, never written.
    async fn put_keyed<const S: usize>(&self, cid: &CidGeneric<S>, data: &[u8]) -> BsResult<()> {
        match slot(cid)? {
            Slot::Inline(digest) => Ok(check_inline(cid, digest, data)?),
            Slot::Stored(key) => put_one(self, key, data).await,
        }
    }

    /// Deletes the block, if present (like [`Store::delete`]); nothing to do
    /// for an identity CID.
    async fn remove<const S: usize>(&self, cid: &CidGeneric<S>) -> BsResult<()> {
        match slot(cid)? {
            Slot::Inline(_) => Ok(()),
            Slot::Stored(key) => {
                let store = self.clone();
                offload(move || store.delete(&key).map(|_| ())).await
            }
        }
    }

    /// Whether the block is present (a `stat`, the block is not read); always
    /// true for an identity CID.
    async fn has<const S: usize>(&self, cid: &CidGeneric<S>) -> BsResult<bool> {
        match slot(cid)? {
            Slot::Inline(_) => Ok(true),
            Slot::Stored(key) => {
                let store = self.clone();
                offload(move || store.has(&key)).await
            }
        }
    }

    /// Computes each block's CID and stores them all, all or nothing (one
    /// atomic batch). A block whose CID cannot be computed abandons the call
    /// and nothing of it is visible.
    async fn put_many<const S: usize, B, I>(&self, blocks: I) -> BsResult<()>
    where
        B: Block<S>,
        I: IntoIterator<Item = B> + CondSend,
        <I as IntoIterator>::IntoIter: Send,
    {
        let items = blocks.into_iter().map(|b| {
            let cid = b.cid()?;
            Ok((cid, Data::<S, B>(b)))
        });
        let staged = stage_all(self, stored(items))?;
        finish(self, staged).await
    }

    /// Stores every block, all or nothing: two or more blocks go through one
    /// atomic [`Batch`](crate::Batch). If any block is refused midway (an
    /// identity mismatch, a digest over 64 bytes, a failed write), nothing of
    /// the call is visible.
    async fn put_many_keyed<const S: usize, D, I>(&self, blocks: I) -> BsResult<()>
    where
        D: AsRef<[u8]> + CondSync,
        I: IntoIterator<Item = (CidGeneric<S>, D)> + CondSend,
        <I as IntoIterator>::IntoIter: Send,
    {
        let staged = stage_all(self, stored(blocks.into_iter().map(Ok)))?;
        finish(self, staged).await
    }

    /// Closes this handle, like [`Store::close`]: when it is the last one,
    /// the counters are persisted and the lock is released.
    async fn close(self) -> BsResult<()> {
        offload(move || Store::close(self)).await
    }
}

/// Converts a store error for the `blockstore` trait, whose error type has
/// no room for the details: the message (which names the key or path and the
/// operating system's error) is kept.
///
/// - [`Error::HashMismatch`] (an identity CID whose data differs) becomes
///   [`CidError::InvalidCid`] inside
///   [`blockstore::Error::CidError`];
/// - [`Error::CorruptCommitRecord`] becomes
///   [`StoredDataError`](::blockstore::Error::StoredDataError);
/// - everything else ([`Error::ReadOnly`], [`Error::Io`], ...) becomes
///   [`FatalDatabaseError`](::blockstore::Error::FatalDatabaseError).
impl From<Error> for ::blockstore::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::HashMismatch { .. } => {
                ::blockstore::Error::CidError(CidError::InvalidCid(e.to_string()))
            }
            Error::CorruptCommitRecord { .. } => {
                ::blockstore::Error::StoredDataError(e.to_string())
            }
            e => ::blockstore::Error::FatalDatabaseError(e.to_string()),
        }
    }
}
