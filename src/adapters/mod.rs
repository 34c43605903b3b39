//! The ecosystem's block-store traits, implemented for [`Store`], each behind
//! a cargo feature.
//!
//! | feature | trait | style | used by |
//! |---|---|---|---|
//! | `fvm` | [`fvm_ipld_blockstore::Blockstore`](https://docs.rs/fvm_ipld_blockstore/0.3/fvm_ipld_blockstore/trait.Blockstore.html) (0.3) | sync, `anyhow` errors | FVM, Forest, the Filecoin HAMT/AMT/CAR crates |
//! | `blockstore` | [`blockstore::Blockstore`](https://docs.rs/blockstore/0.8/blockstore/trait.Blockstore.html) (0.8) | async, [`blockstore::Error`](https://docs.rs/blockstore/0.8/blockstore/enum.Error.html) | beetswap, lumina |
//!
//! The `tokio` feature (which implies `blockstore`) runs the async trait's
//! blocking filesystem calls on Tokio's blocking pool when called inside a
//! Tokio runtime; without it they run inline and no runtime is needed.
//!
//! None of these features is on by default; a plain build of the crate compiles
//! none of these dependencies. This module holds no items of its own: it
//! documents what both implementations promise.
//!
//! # Keys
//! A CID is stored under the key of its **multihash**
//! ([`Key::from_cid`]), as Kubo does: the CID's version
//! and codec are not part of the key, so a CIDv0 and every CIDv1 with the same
//! multihash name one block, and a block written through a trait is read by
//! [`Store::get`] with that key (and the other way round). Multihash digests
//! of up to 64 bytes are supported (every common hash function).
//!
//! # Identity CIDs
//! A CID whose multihash code is `0x00` (identity) carries its block inline.
//! Such a block is never written: `get` returns the digest, `has` is always
//! true, a delete does nothing, and a put succeeds without touching the disk
//! (so also on a read-only store) when the data equals the digest. A put
//! whose data differs from the digest fails with [`Error::HashMismatch`]:
//! the block could never be read back as written.
//!
//! # Hash verification
//! `put_keyed` and `put_many_keyed` trust the CID they are given and do not
//! re-hash the data, as the traits allow ("put a block with a pre-computed
//! CID") and as Kubo's block store does: the callers (an FVM, a HAMT, a
//! Bitswap client that has already checked the block) computed the CID from
//! the data, and hashing every block a second time would cost a hash per put
//! on the hottest path. The traits' `put` and `put_many` compute the CID from
//! the data themselves, so they are correct by construction. For data from an
//! untrusted source, use the crate's verifying CID-level API instead, or check
//! a store afterwards with its verification pass. Reads do not re-hash either.
//!
//! # Atomic bulk puts
//! `put_many_keyed` (and `put_many`) puts all of its blocks or none of them:
//! two or more blocks go through one [`Batch`], committed at the
//! end, atomically across crashes; a single block is a plain
//! [`Store::put`], which is atomic by itself. If any item is refused midway
//! (an identity CID whose data does not match, a multihash too large, a
//! failed write), the batch is discarded and nothing of the call is visible.
//! Within one call the first block of a key wins, and blocks the store
//! already holds are kept, not rewritten (first writer wins, as for
//! [`Store::put`]).
//!
//! # Durability
//! Every write has the store's [`Durability`](crate::Durability): under
//! `Fsync`, when a put returns, the block is on disk.
//!
//! # Calling the trait methods on a `Store`
//! `Store` has inherent methods of the same names (`get`, `has`, `put`,
//! `close`) that take a [`Key`]; method-call syntax picks those
//! first. Generic code (`fn f(bs: &impl Blockstore)`) is unaffected; on a
//! concrete `Store`, call the trait's method by path, e.g.
//! `Blockstore::get(&store, &cid)`.

#[cfg(feature = "blockstore")]
mod blockstore;
#[cfg(feature = "fvm")]
mod fvm;

use multihash::Multihash;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::Store;

/// The multihash code of the identity "hash": the digest is the data itself.
const IDENTITY: u64 = 0x00;

/// Where the block a multihash names lives.
pub(crate) enum Slot<'a> {
    /// Inline in the CID: the digest of an identity multihash.
    Inline(&'a [u8]),
    /// In the store, under this key.
    Stored(Key),
}

impl<'a> Slot<'a> {
    /// The slot of `mh`, or `None` if its digest is longer than 64 bytes.
    pub(crate) fn of<const S: usize>(mh: &'a Multihash<S>) -> Option<Slot<'a>> {
        if mh.code() == IDENTITY {
            return Some(Slot::Inline(mh.digest()));
        }
        let mh = Multihash::<64>::wrap(mh.code(), mh.digest()).ok()?;
        Some(Slot::Stored(Key::from_multihash(&mh)))
    }
}

/// Checks that `data` is what the identity CID `cid` carries inline.
pub(crate) fn check_inline(cid: &dyn std::fmt::Display, digest: &[u8], data: &[u8]) -> Result<()> {
    if digest == data {
        return Ok(());
    }
    let actual = match Multihash::<64>::wrap(IDENTITY, data) {
        Ok(mh) => {
            let bytes = mh.to_bytes();
            format!("identity multihash {}", hex(&bytes))
        }
        Err(_) => format!(
            "an identity multihash of {} bytes (longer than 64)",
            data.len()
        ),
    };
    Err(Error::HashMismatch {
        cid: cid.to_string(),
        actual,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Puts every block of `items` into `store`, all or nothing (see the module
/// documentation): identity blocks are checked and skipped (by the caller),
/// one stored block is a plain put, two or more go through one batch. An
/// `Err` item, or a refused block, abandons the batch.
#[cfg(feature = "fvm")]
pub(crate) fn put_all<E, D>(
    store: &Store,
    items: impl IntoIterator<Item = std::result::Result<(Key, D), E>>,
) -> std::result::Result<(), E>
where
    E: From<Error>,
    D: AsRef<[u8]>,
{
    match stage_all(store, items)? {
        Staged::Nothing => Ok(()),
        Staged::One(key, data) => store.put(&key, data.as_ref()).map_err(E::from),
        Staged::Batch(batch) => batch.commit().map(|_| ()).map_err(E::from),
    }
}

/// The writes of a bulk put once every block has been staged.
pub(crate) enum Staged<D> {
    /// No block to store (none, or only identity blocks).
    Nothing,
    /// One block: a plain put does it atomically.
    One(Key, D),
    /// Two or more, staged in a batch that still has to be committed.
    Batch(Batch),
}

/// Stages every block of `items`: nothing is visible until the caller puts
/// the one block or commits the batch. On an error the batch is dropped, which discards it.
pub(crate) fn stage_all<E, D>(
    store: &Store,
    items: impl IntoIterator<Item = std::result::Result<(Key, D), E>>,
) -> std::result::Result<Staged<D>, E>
where
    E: From<Error>,
    D: AsRef<[u8]>,
{
    let mut staged = Staged::Nothing;
    for item in items {
        let (key, data) = item?;
        staged = match staged {
            Staged::Nothing => Staged::One(key, data),
            Staged::One(k0, d0) => {
                let batch = store.batch()?;
                batch.put(&k0, d0.as_ref())?;
                batch.put(&key, data.as_ref())?;
                Staged::Batch(batch)
            }
            Staged::Batch(batch) => {
                batch.put(&key, data.as_ref())?;
                Staged::Batch(batch)
            }
        };
    }
    Ok(staged)
}
