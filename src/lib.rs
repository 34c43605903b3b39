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
//! # CIDs, CAR files, verify
//! [`Store::put_block`] and [`Store::get_block`] address blocks by
//! [`Cid`](cid::Cid) and check the data against the CID's multihash
//! (sha2-256, sha2-512, blake3; identity CIDs are never written).
//! [`Store::import_car`] streams a CAR into one atomic batch,
//! [`Store::export_car`] writes the DAG under a root as a CAR, and
//! [`Store::verify`] re-hashes every block and can quarantine damaged ones.
//!
//! ```no_run
//! use flatstore::{ImportOptions, Options, Store, VerifyOptions};
//!
//! let store = Store::open("blocks", Options::default())?;
//! let car = std::fs::File::open("dag.car")?;
//! let summary = store.import_car(car, &ImportOptions::new())?; // all or nothing
//! let mut out = Vec::new();
//! store.export_car(&summary.roots[0], &mut out, |_| {})?;
//! let report = store.verify(&VerifyOptions::new().repair(true))?;
//! println!("{} blocks ok, {} problems", report.ok, report.problems());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! - `cli`: the `flatstore` command-line tool.
//! - `s3`: [`s3::S3Store`], the same store on S3-compatible object storage
//!   (through the `object_store` crate, with an internal Tokio runtime).
//! - `fault-injection`: a test-only seam that makes chosen filesystem calls fail.
#![warn(missing_docs, unreachable_pub, rustdoc::broken_intra_doc_links)]

#[cfg(any(feature = "fvm", feature = "blockstore"))]
pub mod adapters;
mod backoff;
mod batch;
mod block;
pub mod car;
pub mod dag;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod files;
pub mod hash;
mod key;
mod layout;
mod listing;
mod lock;
mod options;
mod owner;
mod platform;
mod pool;
mod publish;
mod recovery;
mod reshard;
#[cfg(feature = "s3")]
pub mod s3;
mod shard;
mod store;
pub mod unixfs;
mod usage;
mod verify;

pub use batch::{Batch, BatchKeys, CommitSummary};
pub use block::{check_block, is_identity, CheckedReader, PutOutcome};
pub use car::{
    CarReader, CarWriter, ExportProgress, ExportSummary, ImportOptions, ImportProgress,
    ImportSummary,
};
pub use error::{Error, Result};
pub use key::{Key, MAX_KEY_LEN};
pub use options::{Durability, Options};
pub use reshard::ReshardSummary;
pub use shard::Shard;
pub use store::{BlockReader, Entries, Keys, Store};
pub use usage::{Accuracy, Stats};
pub use verify::{Finding, VerifyOptions, VerifyProgress, VerifyReport};

/// Re-export of the `cid` crate, whose [`Cid`](cid::Cid) type the CID-level API uses.
pub use cid;
/// Re-export of the `multihash` crate.
pub use multihash;
