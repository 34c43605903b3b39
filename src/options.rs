//! How a store is opened.

use crate::shard::Shard;

/// When data reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// No fsync at all. A crash of the process loses nothing that returned
    /// (the kernel has it); a power cut or kernel crash may lose recent writes,
    /// but never tears a block or half-applies a batch that was committed
    /// before the last [`Store::sync`](crate::Store::sync).
    None,
    /// The default. When `put`, `delete` or `commit` returns, the data and the
    /// directory entries are on disk: the file is fsynced, then its shard
    /// directory, and the root when a shard directory was created.
    ///
    /// On Windows a directory cannot be fsynced: the file's data is flushed
    /// (`FlushFileBuffers`) before it is renamed into place, and the rename
    /// itself is made durable by NTFS's metadata journal, which commits it
    /// shortly after the call returns rather than before. A power cut in
    /// that moment can lose the newest renames. Blocks are never torn (data
    /// is flushed before its rename), and batches stay whole on the
    /// assumption that the journal keeps metadata changes in order (the
    /// commit record is renamed into place before any block is published).
    /// This is not tested: the Windows suite runs under Wine, on Linux
    /// filesystems.
    #[default]
    Fsync,
}

/// Options for [`Store::open`](crate::Store::open). `Options::default()`
/// creates a store sharded by `next-to-last/2` with [`Durability::Fsync`].
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) shard: Option<Shard>,
    pub(crate) durability: Durability,
    pub(crate) create: bool,
    pub(crate) read_only: bool,
    pub(crate) batch_memory: usize,
    pub(crate) writer_threads: usize,
    pub(crate) max_open_files: Option<usize>,
    pub(crate) lock_wait: Option<std::time::Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shard: None,
            durability: Durability::Fsync,
            create: true,
            read_only: false,
            batch_memory: 32 << 20,
            writer_threads: 0,
            max_open_files: None,
            lock_wait: None,
        }
    }
}

impl Options {
    /// Same as `Options::default()`.
    pub fn new() -> Options {
        Options::default()
    }

    /// The shard function for a new store. For an existing store, asking for a
    /// different one than its `SHARDING` file records is refused with
    /// [`Error::ShardingMismatch`](crate::Error::ShardingMismatch); without
    /// this option an existing store opens with whatever it records.
    pub fn shard(mut self, shard: Shard) -> Options {
        self.shard = Some(shard);
        self
    }

    /// When data reaches the disk (default [`Durability::Fsync`]).
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Whether `open` creates a missing store (default true).
    pub fn create(mut self, create: bool) -> Options {
        self.create = create;
        self
    }

    /// Open read-only: a shared lock, no recovery, every write refused with
    /// [`Error::ReadOnly`](crate::Error::ReadOnly). Never creates a store.
    pub fn read_only(mut self, read_only: bool) -> Options {
        self.read_only = read_only;
        self
    }

    /// Cap on the bytes a batch holds in memory while its writers catch up
    /// (default 32 MiB); `Batch::put` waits when it is reached.
    pub fn batch_memory(mut self, bytes: usize) -> Options {
        self.batch_memory = bytes.max(1);
        self
    }

    /// Number of background threads writing batch blocks (default: 8 with
    /// [`Durability::Fsync`], where threads wait on the disk; 4 otherwise).
    pub fn writer_threads(mut self, threads: usize) -> Options {
        self.writer_threads = threads;
        self
    }

    /// Cap on the files the store holds open at once (default: half of the
    /// process's open-file limit, at most 1,024). Operations wait for a slot
    /// when the cap is reached. Handles returned by
    /// [`Store::reader`](crate::Store::reader) are the caller's and are not
    /// counted (counting them could leave a caller holding many readers
    /// waiting on itself); the default leaves half of the limit for them.
    pub fn max_open_files(mut self, files: usize) -> Options {
        self.max_open_files = Some(files.max(1));
        self
    }

    /// How long to wait when the store is held in a conflicting way: an
    /// open while a reshard runs, or a reshard while other writers are open.
    /// By default nothing waits: the call fails at once with
    /// [`Error::Locked`](crate::Error::Locked). Readers never wait for anything.
    pub fn lock_wait(mut self, wait: std::time::Duration) -> Options {
        self.lock_wait = Some(wait);
        self
    }

    pub(crate) fn effective_writer_threads(&self) -> usize {
        if self.writer_threads > 0 {
            return self.writer_threads;
        }
        match self.durability {
            Durability::Fsync => 8,
            // Measured (BENCHMARKS.md): 1 is clearly slowest; 2, 4 and 8
            // overlap within noise, 4 had the best median.
            Durability::None => 4,
        }
    }
}
