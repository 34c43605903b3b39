//! # flatstore
//!
//! A flat-filesystem block store for content-addressed data: one file per
//! block in a sharded two-level directory tree, byte-compatible with
//! go-ds-flatfs (the store Kubo uses), with atomic batches that survive a
//! crash at any instant.
//!
//! ```no_run
//! use flatstore::{Key, Options, Store};
//!
//! let store = Store::open("blocks", Options::default())?;
//! let key = Key::new("CIQEXAMPLE")?;
//! store.put(&key, b"hello")?;
//! assert_eq!(store.get(&key)?.as_deref(), Some(&b"hello"[..]));
//!
//! let batch = store.batch()?;
//! batch.put(&Key::new("CIQOTHER")?, b"world")?;
//! batch.commit()?; // all or nothing, even across a crash
//! # Ok::<(), flatstore::Error>(())
//! ```
//!
//! See [`Store`] for the on-disk format and the promises, and [`Batch`] for
//! batches.
//!
//! # Cargo features
//! None is on by default; each adds the ecosystem's block-store trait for
//! [`Store`] (documented in the `adapters` module, present when one is on):
//! - `fvm`: `fvm_ipld_blockstore::Blockstore` (sync; FVM, Forest, the
//!   Filecoin HAMT/AMT/CAR crates).
//! - `blockstore`: `blockstore::Blockstore` (async; beetswap, lumina), with
//!   no async runtime required.
//! - `tokio` (implies `blockstore`): inside a Tokio runtime, that trait runs
//!   its blocking filesystem calls on Tokio's blocking pool.
#![warn(missing_docs, unreachable_pub, rustdoc::broken_intra_doc_links)]

#[cfg(any(feature = "fvm", feature = "blockstore"))]
pub mod adapters;
mod batch;
mod error;
mod files;
mod key;
mod layout;
mod listing;
mod lock;
mod options;
mod platform;
mod pool;
mod recovery;
mod shard;
mod store;
mod usage;

pub use batch::{Batch, CommitSummary};
pub use error::{Error, Result};
pub use key::{Key, MAX_KEY_LEN};
pub use options::{Durability, Options};
pub use shard::Shard;
pub use store::{BlockReader, Entries, Keys, Store};
pub use usage::{Accuracy, Stats};

/// Re-export of the `cid` crate, whose [`Cid`](cid::Cid) type the CID-level API uses.
pub use cid;
/// Re-export of the `multihash` crate.
pub use multihash;
