//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::shard::Shard;

/// The result type of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, as a small matchable enum.
///
/// Outcomes that are not failures (a block that is absent, a key already
/// present) are not errors: they are `Option`s, `bool`s or counts in the
/// return values. Every variant that touches the filesystem names the path
/// involved and carries the underlying [`io::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key is not a valid store key (see [`Key`](crate::Key) for the rules).
    /// Nothing was written.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given (possibly shortened for display).
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A shard function specification could not be parsed or has a parameter < 1.
    #[error("invalid shard function {spec:?}: {reason}")]
    InvalidShard {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The store's `SHARDING` file is missing, unreadable as text, or does not
    /// name a known shard function. The store is not opened and nothing is written.
    #[error("corrupt SHARDING file {path}: {reason}")]
    CorruptSharding {
        /// Path of the `SHARDING` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The store exists with one shard function and another was requested explicitly.
    #[error("store is sharded by {existing}, but {requested} was requested")]
    ShardingMismatch {
        /// The shard function recorded in the store's `SHARDING` file.
        existing: Shard,
        /// The one given in [`Options::shard`](crate::Options::shard).
        requested: Shard,
    },

    /// The directory is not empty and is not a store (it has no `SHARDING` file).
    /// Nothing was written into it.
    #[error("{path} is not a flatstore/flatfs store (no SHARDING file) and is not empty")]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },

    /// The store does not exist and [`Options::create`](crate::Options::create) is off
    /// (or the store was opened read-only).
    #[error("no store at {path}")]
    NoStore {
        /// The directory.
        path: PathBuf,
    },

    /// The store is held in a way that conflicts: exclusive work (a
    /// reshard) runs while a writer tries to open, or writers are open while
    /// exclusive work tries to start, or a read-only open meets a live
    /// reshard. Nothing was changed.
    #[error("store {path} is locked by another process{}", pids(holders))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The process ids of the other holders, where the platform tells
        /// them (empty otherwise).
        holders: Vec<u32>,
    },

    /// A reshard failed on this handle, which no longer knows where blocks
    /// are: every call on it fails until the store is opened again (the
    /// next read-write open finishes the reshard).
    #[error("store {path}: a reshard failed on this handle; open the store again to finish it")]
    ReshardFailed {
        /// The store's root.
        path: PathBuf,
    },

    /// The operation needs the only handle to the store (no clones, no open
    /// batches), and there are others.
    #[error("the store has other open handles or batches")]
    Busy,

    /// A read-only open found what only a read-write open can finish: a
    /// batch that a dead writer committed but did not finish publishing, or
    /// an interrupted reshard. A read-only open never changes the store, and
    /// serving half a batch would break its atomicity.
    #[error("store {path} needs recovery: open it read-write once")]
    NeedsRecovery {
        /// The store's root.
        path: PathBuf,
    },

    /// A write was attempted on a store opened read-only.
    #[error("store is open read-only")]
    ReadOnly,

    /// A batch was used after an earlier operation on it failed (a
    /// background write, for example); it can only be discarded (or
    /// dropped), and its commit fails without making anything visible.
    /// [`io_kind`](Error::io_kind) sees through to the first failure's kind.
    #[error("batch failed earlier: {source}")]
    BatchFailed {
        /// The first failure (shared by every later call that reports it).
        #[source]
        source: std::sync::Arc<Error>,
    },

    /// The data does not hash to the multihash of the CID (or key) it was given for.
    #[error("hash mismatch for {cid}: the data hashes to {actual}")]
    HashMismatch {
        /// The CID (or key) the data was supposed to match.
        cid: String,
        /// What the data actually hashes to, as a CID/multihash string.
        actual: String,
    },

    /// The multihash function is not one this crate can compute.
    #[error("unsupported hash function 0x{code:x} in {cid}")]
    UnsupportedHash {
        /// The multihash code.
        code: u64,
        /// The CID that uses it.
        cid: String,
    },

    /// A CAR file is malformed or truncated at the given byte offset.
    #[error("bad CAR at byte offset {offset}: {reason}")]
    Car {
        /// Byte offset in the CAR stream where the problem starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// Writing a CAR to its output failed (the output is incomplete).
    #[error("writing CAR output at byte offset {offset}: {source}")]
    CarWrite {
        /// Byte offset in the output where the frame being written starts.
        offset: u64,
        /// The writer's error.
        #[source]
        source: io::Error,
    },

    /// A block could not be decoded to find its links.
    #[error("cannot decode block {cid}: {reason}")]
    Codec {
        /// The block's CID.
        cid: String,
        /// What went wrong.
        reason: String,
    },

    /// A block needed (e.g. by a DAG export) is not in the store.
    #[error("block {cid} is missing from the store")]
    MissingBlock {
        /// The missing block's CID.
        cid: String,
    },

    /// A batch commit record in `.temp/` could not be parsed. The staging
    /// directory is left in place for inspection.
    #[error("corrupt commit record {path}: {reason}")]
    CorruptCommitRecord {
        /// Path of the record.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An entry of the store (`.temp`, a shard directory, a staged file, the
    /// lock file, ...) is a symbolic link or not of the type the store needs.
    /// The store refuses it rather than follow it: nothing outside the root
    /// is ever read, written or removed through it.
    #[error("{path}: {reason}")]
    BadStoreEntry {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it ("is a symbolic link", "is not a directory", ...).
        reason: &'static str,
    },

    /// Everything the operation promised was done, but the counters could
    /// not be saved to `diskUsage.cache` (a full disk, for example). Nothing
    /// is lost: the next read-write open finds the counters stale and
    /// recomputes them. Callers may treat this as a warning.
    #[error("counters not saved to {path}: {source}")]
    CountersNotSaved {
        /// The counter file.
        path: PathBuf,
        /// Why it could not be written.
        #[source]
        source: Box<Error>,
    },

    /// An option has a value outside what it accepts. Nothing was written.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// Which option.
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// A UnixFS import met something it cannot encode as Kubo would (a name
    /// that is not UTF-8, a special file, a directory Kubo would shard).
    /// Nothing of the import was written.
    #[error("cannot add {path}: {reason}")]
    AddRefused {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A block given to a size-capped put is larger than the cap. Nothing
    /// was written.
    #[error("block {key} is larger than the limit of {limit} bytes")]
    BlockTooLarge {
        /// The block's key or CID.
        key: String,
        /// The cap, in bytes.
        limit: u64,
    },

    /// Reading the data given to a put failed (the reader's error, not the
    /// store's). Nothing was written.
    #[error("reading the block's data: {0}")]
    Input(#[source] io::Error),

    /// A request to the object store (feature `s3`) failed for good, after
    /// the retries with backoff that throttling, 5xx answers and dropped
    /// connections get. `key` is the object key the request was for.
    #[cfg(feature = "s3")]
    #[error("{op} {key}: {source}")]
    ObjectStore {
        /// What was being done ("put", "get", "head", "copy", "delete", "list").
        op: &'static str,
        /// The object key (inside the bucket, prefix included).
        key: String,
        /// The object store client's error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// This writer's lease on an S3 store (feature `s3`) expired or was
    /// removed by another writer that took it for dead (the process was
    /// paused, or could not reach the service, for longer than the lease's
    /// time to live). A batch refuses to commit: the other writer may
    /// already have removed its staged blocks. Open the store again.
    #[cfg(feature = "s3")]
    #[error("lease {lease} lost: open the store again")]
    LeaseLost {
        /// The lease object's key.
        lease: String,
    },

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create", "rename", "fsync", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// " (process 12, 34)" for a non-empty list of process ids.
fn pids(holders: &[u32]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> = holders.iter().map(|p| p.to_string()).collect();
    let s = if holders.len() == 1 { "" } else { "es" };
    format!(" (process{s} {})", list.join(", "))
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The underlying I/O error kind, if this is an I/O error ([`Error::Io`]
    /// or [`Error::CarWrite`]) or reports one ([`Error::BatchFailed`] and
    /// [`Error::CountersNotSaved`], through their source).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::CarWrite { source, .. } => Some(source.kind()),
            Error::BatchFailed { source } => source.io_kind(),
            Error::CountersNotSaved { source, .. } => source.io_kind(),
            _ => None,
        }
    }
}

/// Adds path context to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
