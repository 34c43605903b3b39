//! [`fvm_ipld_blockstore::Blockstore`] for [`Store`] (feature `fvm`).

use cid::Cid;
use fvm_ipld_blockstore::Blockstore;

use super::{check_inline, put_all, Slot};
use crate::error::Error;
use crate::key::Key;
use crate::store::Store;

/// The slot of a CID; a `Cid` (at most 64 digest bytes) always has one.
fn slot(cid: &Cid) -> Slot<'_> {
    Slot::of(cid.hash()).unwrap_or_else(|| Slot::Stored(Key::from_cid(cid)))
}

/// The FVM block-store trait, synchronous, on the store itself (also usable
/// as `&Store` and `Arc<Store>` through the trait's blanket impls).
///
/// See [`adapters`](crate::adapters) for the promises: keys are the CID's
/// multihash, identity CIDs are never written, `put_keyed` trusts the CID
/// (no re-hash), and `put_many_keyed` is all or nothing.
///
/// # Errors
/// Every error is a [`crate::Error`] wrapped in an [`anyhow::Error`]; get it
/// back with `err.downcast_ref::<flatstore::Error>()`. For example
/// [`Error::ReadOnly`] for a put on a read-only store, [`Error::HashMismatch`]
/// for an identity CID whose data differs, [`Error::Io`] naming the file.
impl Blockstore for Store {
    /// Reads the block, or `None` if it is absent; the digest itself for an
    /// identity CID.
    fn get(&self, k: &Cid) -> anyhow::Result<Option<Vec<u8>>> {
        match slot(k) {
            Slot::Inline(digest) => Ok(Some(digest.to_vec())),
            Slot::Stored(key) => Ok(Store::get(self, &key)?),
        }
    }

    /// Stores the block under the CID's multihash, without re-hashing it. A
    /// block already present is kept (first writer wins); an identity CID is
    /// only checked against `block`, never written.
    fn put_keyed(&self, k: &Cid, block: &[u8]) -> anyhow::Result<()> {
        match slot(k) {
            Slot::Inline(digest) => Ok(check_inline(k, digest, block)?),
            Slot::Stored(key) => Ok(Store::put(self, &key, block)?),
        }
    }

    /// Whether the block is present (a `stat`, the block is not read); always
    /// true for an identity CID.
    fn has(&self, k: &Cid) -> anyhow::Result<bool> {
        match slot(k) {
            Slot::Inline(_) => Ok(true),
            Slot::Stored(key) => Ok(Store::has(self, &key)?),
        }
    }

    /// Stores every block, all or nothing: two or more blocks go through one
    /// atomic [`Batch`](crate::Batch). If any block is refused, nothing of
    /// the call is visible. (`put_many`, which computes the CIDs, ends here
    /// too.)
    fn put_many_keyed<D, I>(&self, blocks: I) -> anyhow::Result<()>
    where
        Self: Sized,
        D: AsRef<[u8]>,
        I: IntoIterator<Item = (Cid, D)>,
    {
        let items = blocks
            .into_iter()
            .filter_map(|(cid, data)| match slot(&cid) {
                Slot::Inline(digest) => check_inline(&cid, digest, data.as_ref()).err().map(Err),
                Slot::Stored(key) => Some(Ok((key, data))),
            });
        put_all::<Error, D>(self, items)?;
        Ok(())
    }
}
