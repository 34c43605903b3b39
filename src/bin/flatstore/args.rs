//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use flatstore::car::DEFAULT_MAX_FRAME;

/// A flat-filesystem block store for content-addressed data,
/// compatible with go-ds-flatfs (Kubo's `blocks/` directory).
///
/// Only `init`, `add` and `import` create a store; the other commands refuse
/// a path that holds none. Exit code 0 on success, 1 on failure with a
/// one-line error on stderr (`has`: 0 present, 1 absent, 2 on error).
#[derive(Parser, Debug)]
#[command(
    name = "flatstore",
    version,
    about,
    long_about,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The store's directory [default: $FLATSTORE_REPO, else ./flatstore]
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Print machine-readable JSON on stdout: one JSON document per command,
    /// except `ls`, which prints JSON Lines (one document per block, nothing
    /// for an empty store). Errors are {"error":{"kind":…,"message":…}}.
    /// `get` without -o still writes the block's bytes.
    #[arg(long, global = true)]
    pub json: bool,

    /// Do not fsync (faster; a power cut may lose the latest writes).
    #[arg(long, global = true)]
    pub no_fsync: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a store (an existing one is left as it is).
    Init {
        /// Shard function, e.g. next-to-last/2, prefix/3, suffix/2.
        #[arg(long, value_name = "SPEC")]
        shard: Option<String>,
    },
    /// Add files and directories as UnixFS DAGs, with the CIDs Kubo's
    /// `ipfs add` gives them, in one atomic batch; prints `added CID NAME`
    /// for every file and directory, the root of each PATH last.
    Add {
        /// Files or directories (directories are added recursively; names
        /// starting with `.` are left out unless --hidden).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print only the root CID of each PATH.
        #[arg(short, long)]
        quiet: bool,
        /// CID version: 0 (Qm…, the default) or 1 (bafy…, raw leaves).
        #[arg(long, value_name = "N", default_value_t = 0)]
        cid_version: u64,
        /// Store file chunks as raw blocks (the default with --cid-version 1).
        #[arg(long)]
        raw_leaves: bool,
        /// Bytes per chunk (at most 1048576).
        #[arg(long, value_name = "BYTES", default_value_t = flatstore::unixfs::DEFAULT_CHUNK_SIZE)]
        chunk_size: usize,
        /// Include files and directories whose name starts with `.`.
        #[arg(long)]
        hidden: bool,
    },
    /// Store a block from FILE (or stdin) under KEY. A CID as KEY checks the
    /// hash, and repairs a stored copy that does not match it.
    Put {
        /// A store key (base32 of a multihash) or a CID.
        key: String,
        /// The block's bytes; `-` or nothing for stdin.
        file: Option<PathBuf>,
        /// Largest block accepted, in bytes (the cap `import` puts on a frame).
        #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME)]
        max_frame: usize,
    },
    /// Write a block to stdout or to FILE.
    Get {
        /// A store key or a CID (a CID's block is hash-checked as it is read).
        key: String,
        /// Write to this file (through a temp file beside it) instead of
        /// stdout; `-` is stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Say whether a block is present: exit code 0 if it is, 1 if not, 2 on error.
    Has {
        /// A store key or a CID.
        key: String,
    },
    /// Delete a block (succeeds if it is already absent).
    Rm {
        /// A store key or a CID.
        key: String,
    },
    /// List the keys of every block.
    Ls {
        /// Also print each block's size.
        #[arg(long)]
        size: bool,
    },
    /// Show the block count, total size and layout.
    Stat,
    /// Import every block of CAR files, each all or nothing.
    Import {
        /// CAR files (v1 or v2); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Largest frame (a block's CID and bytes) accepted, in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME)]
        max_frame: usize,
    },
    /// Export the DAG under ROOT as a CARv1 file.
    Export {
        /// The root: a CID, or a key as `ls` prints it (its codec is then
        /// read from the block: dag-pb, else dag-cbor, else raw).
        #[arg(long)]
        root: String,
        /// The CAR file to write (through a temp file beside it); `-` is stdout.
        file: PathBuf,
    },
    /// Re-hash every block; report damaged, misplaced, foreign and unreadable
    /// entries. Exits 1 while damage remains.
    Verify {
        /// Quarantine damaged, unreadable and non-file entries into
        /// .quarantine/, and move misplaced copies into place.
        #[arg(long)]
        repair: bool,
    },
    /// Move every block to a new shard function, in place. Takes the store
    /// exclusively: fails at once while other writers have it open (naming
    /// their process ids), unless --wait is given.
    Reshard {
        /// The new shard function, e.g. prefix/3.
        spec: String,
        /// Wait up to SECS seconds for other writers to close.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
}
