//! Putting complete files into the store and taking them out: the
//! no-replace publish, the atomic replace (swap), the delete that counts
//! once, and the directory fsyncs that make each durable. Single puts,
//! batches, verify and reshard all go through these, so every path counts
//! the same way and syncs the same directories.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::files::retry_nofile;
use crate::key::Key;
use crate::layout;
use crate::platform;
use crate::store::Store;

/// Whether a publish wrote the block or found it already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    Written,
    AlreadyPresent,
}

impl Store {
    /// Renames a complete file at `from` into `key`'s place without replacing,
    /// creating the shard directory if needed, and counts it. The caller
    /// fsyncs the shard directory when durability asks for it. When the key
    /// is already present, `from` is removed.
    pub(crate) fn publish(&self, from: &Path, key: &Key, size: u64) -> Result<Published> {
        let dest = self.inner.layout.block_path(key);
        let mut created_dir = false;
        loop {
            match platform::rename_noreplace(from, &dest) {
                Ok(()) => {
                    self.inner.usage.add(1, size as i64);
                    return Ok(Published::Written);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    platform::remove_file(from).ctx("remove", from)?;
                    return Ok(Published::AlreadyPresent);
                }
                Err(e) if e.kind() == ErrorKind::NotFound && !created_dir => {
                    self.create_shard_dir(key)?;
                    created_dir = true;
                }
                Err(e) => return Err(Error::io("rename", dest, e)),
            }
        }
    }

    /// Publishes the staged file `from` as `key` in place of a stored block
    /// (a batch's `delete A, put A`). Returns whether a block was replaced,
    /// and how `from` was published.
    ///
    /// Where names can be swapped atomically (Linux), readers of `key` see
    /// the old block or the new one, never neither: `from` gets a second
    /// name beside it, that name is swapped with the block's, and the old
    /// block, now under the second name, is removed. `from` itself is
    /// removed only once the new block is in place, so a crash at any step
    /// leaves `from` for the batch's recovery to publish again (swapping two
    /// names of one file changes nothing). Elsewhere, the old block is
    /// deleted and `from` published, and a reader can find the key absent
    /// in between.
    pub(crate) fn replace_block(
        &self,
        from: &Path,
        key: &Key,
        size: u64,
    ) -> Result<(bool, Published)> {
        if platform::exchange_supported() {
            if let Some(done) = self.swap_in(from, key, size)? {
                return Ok(done);
            }
        }
        let replaced = self.delete_unsynced(key)?;
        Ok((replaced, self.publish(from, key, size)?))
    }

    /// [`replace_block`](Store::replace_block) by a swap of names; `None`
    /// if this filesystem cannot (nothing changed).
    fn swap_in(&self, from: &Path, key: &Key, size: u64) -> Result<Option<(bool, Published)>> {
        let dest = self.inner.layout.block_path(key);
        let second = from.with_extension("swap");
        let remove_second = || match platform::remove_file(&second) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", &second, e)),
            _ => Ok(()),
        };
        // Left by an interrupted try (recovery); it may hold an old block.
        remove_second()?;
        // A filesystem without hard links (or any failure to make one):
        // the other way is as correct, only not atomic for readers.
        if platform::hard_link(from, &second).is_err() {
            return Ok(None);
        }
        match platform::exchange(&second, &dest) {
            Ok(true) => {
                // `second` now holds the replaced block.
                let old = fs::metadata(&second).map(|m| m.len()).unwrap_or(0);
                self.inner.usage.add(0, size as i64 - old as i64);
                platform::remove_file(from).ctx("remove", from)?;
                remove_second()?;
                Ok(Some((true, Published::Written)))
            }
            Ok(false) => {
                remove_second()?;
                Ok(None)
            }
            // No stored block (or no shard directory) to replace.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                remove_second()?;
                Ok(Some((false, self.publish(from, key, size)?)))
            }
            Err(e) => Err(Error::io("swap", dest, e)),
        }
    }

    /// Creates `key`'s shard directory if missing; under Fsync, makes its
    /// entry in the root durable.
    fn create_shard_dir(&self, key: &Key) -> Result<()> {
        layout::ensure_dir(&self.inner.layout.shard_dir(key)).map(|_| ())
    }

    /// Creates the named shard directories that are missing; under Fsync,
    /// makes the root durable once if any was created.
    pub(crate) fn create_shard_dirs(&self, names: impl IntoIterator<Item = String>) -> Result<()> {
        let names: Vec<String> = names.into_iter().collect();
        let mut created = false;
        for name in &names {
            created |= layout::ensure_dir(&self.inner.layout.shard_dir_named(name))?;
        }
        if created && self.durable() {
            self.sync_root_for(&names)?;
        }
        Ok(())
    }

    /// Fsyncs `key`'s shard directory, and the root the first time this
    /// handle touches that directory (its entry in the root may be new).
    pub(crate) fn sync_shard_dir(&self, key: &Key) -> Result<()> {
        let name = self.inner.layout.shard.dir(key);
        self.sync_shard_dir_named(&name)
    }

    pub(crate) fn sync_shard_dir_named(&self, name: &str) -> Result<()> {
        self.sync_shard_dir_only(name)?;
        self.ensure_dir_entries_durable(std::slice::from_ref(&name))
    }

    /// Fsyncs the named shard directory, and nothing else.
    pub(crate) fn sync_shard_dir_only(&self, name: &str) -> Result<()> {
        let dir = self.inner.layout.shard_dir_named(name);
        retry_nofile(|| platform::sync_dir(&dir)).ctx("fsync", &dir)
    }

    /// Fsyncs the root once if any of the named shard directories is one
    /// this handle has not made durable yet: its entry in the root may be
    /// new (created by another thread that has not fsynced the root yet, or
    /// by an earlier process without fsync).
    pub(crate) fn ensure_dir_entries_durable<S: AsRef<str>>(&self, names: &[S]) -> Result<()> {
        let unknown = {
            let known = self
                .inner
                .durable_dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            names.iter().any(|n| !known.contains(n.as_ref()))
        };
        if unknown {
            self.sync_root_for(names)?;
        }
        Ok(())
    }

    /// Fsyncs the root, after which the named shard directories' entries in
    /// it are durable, and remembers them so.
    fn sync_root_for<S: AsRef<str>>(&self, names: &[S]) -> Result<()> {
        let root = &self.inner.layout.root;
        retry_nofile(|| platform::sync_dir(root)).ctx("fsync", root)?;
        let mut known = self
            .inner
            .durable_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        known.extend(names.iter().map(|n| n.as_ref().to_string()));
        Ok(())
    }

    /// Deletes without fsync; returns whether the block existed.
    ///
    /// The block is first renamed into `.temp/` (only one of several racing
    /// deleters succeeds), so its size is counted exactly once.
    pub(crate) fn delete_unsynced(&self, key: &Key) -> Result<bool> {
        let path = self.inner.layout.block_path(key);
        let trash = self.temp_path("del");
        let _permit = self.inner.gate.acquire();
        match platform::rename_replace(&path, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("delete", path, e)),
        }
        let size = fs::metadata(&trash).map(|m| m.len()).unwrap_or(0);
        self.inner.usage.add(-1, -(size as i64));
        platform::remove_file(&trash).ctx("remove", &trash)?;
        Ok(true)
    }

    /// Moves `key`'s block file out of the store to `dest` (a path inside
    /// the root, on the same filesystem) without replacing anything there,
    /// and counts it out of the counters. Returns the size moved, or `None`
    /// if the block is absent. Under Fsync both directories are fsynced.
    /// For `verify --repair`, which quarantines damaged blocks.
    pub(crate) fn move_block_out(&self, key: &Key, dest: &Path) -> Result<Option<u64>> {
        self.check_writable()?;
        let path = self.inner.layout.block_path(key);
        let _permit = self.inner.gate.acquire();
        match platform::rename_noreplace(&path, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("rename", path, e)),
        }
        let size = fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        self.inner.usage.add(-1, -(size as i64));
        if self.durable() {
            self.sync_shard_dir(key)?;
            if let Some(dir) = dest.parent() {
                platform::sync_dir(dir).ctx("fsync", dir)?;
            }
        }
        Ok(Some(size))
    }
}

/// Writes a new file at `path` with `fill`, fsyncing it when `durable`.
/// On failure the file is removed.
pub(crate) fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<u64>,
    durable: bool,
) -> Result<u64> {
    let mut f = retry_nofile(|| platform::create_new(path)).ctx("create", path)?;
    let result = fill(&mut f).ctx("write", path).and_then(|n| {
        if durable {
            platform::sync_file(&f).ctx("fsync", path)?;
        }
        Ok(n)
    });
    drop(f);
    if result.is_err() {
        let _ = platform::remove_file(path);
    }
    result
}
