//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A flat-filesystem block store for content-addressed data,
/// compatible with go-ds-flatfs (Kubo's `blocks/` directory).
#[derive(Parser, Debug)]
#[command(name = "flatstore", version, about)]
pub struct Cli {
    /// The store's directory [default: $FLATSTORE_REPO, else ./flatstore]
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Print machine-readable JSON on stdout.
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
    /// Store a block from FILE (or stdin) under KEY. A CID as KEY checks the hash.
    Put {
        /// A store key (base32 of a multihash) or a CID.
        key: String,
        /// The block's bytes [default: stdin].
        file: Option<PathBuf>,
    },
    /// Write a block to stdout or to FILE.
    Get {
        /// A store key or a CID.
        key: String,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Say whether a block is present.
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
    /// Import every block of a CAR file, all or nothing.
    Import {
        /// The CAR file (v1 or v2).
        file: PathBuf,
        /// Largest block frame accepted, in bytes.
        #[arg(long, value_name = "BYTES")]
        max_frame: Option<usize>,
    },
    /// Export the DAG under ROOT as a CARv1 file.
    Export {
        /// The root CID.
        #[arg(long)]
        root: String,
        /// The CAR file to write.
        file: PathBuf,
    },
    /// Re-hash every block; report corrupt, empty and foreign files.
    Verify {
        /// Move corrupt and empty blocks into .quarantine/.
        #[arg(long)]
        repair: bool,
    },
    /// Move every block to a new shard function, in place.
    Reshard {
        /// The new shard function, e.g. prefix/3.
        spec: String,
    },
}
