//! Streaming enumeration of a store's blocks, directory by directory.
//!
//! Only `<SHARD>/<KEY>.data` files whose key is valid and whose shard
//! directory is the one the store's shard function gives are listed; foreign
//! files, dot-files, temp files, misplaced files and anything that is not a
//! regular file (a directory or a symbolic link named like a block) are
//! skipped.

use std::fs::ReadDir;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::key::Key;
use crate::layout::Layout;
use crate::platform;

/// Names of the shard directories in the root, in sorted order.
pub(crate) fn shard_dirs(layout: &Layout) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in platform::read_dir(&layout.root).ctx("read directory", &layout.root)? {
        let entry = entry.ctx("read directory", &layout.root)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if layout.shard.is_dir_name(&name) && entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
        {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Whether `name` (a file in shard directory `dir`) is a block of this store.
fn block_key(layout: &Layout, dir: &str, name: &str) -> Option<Key> {
    let body = name.strip_suffix(crate::layout::DATA_EXT)?;
    if !layout.shard.dir_matches(body, dir) {
        return None;
    }
    Key::from_file_name(name)
}

/// Iterator over a store's blocks, with sizes when asked for.
pub(crate) struct Listing {
    layout: Layout,
    sizes: bool,
    dirs: std::vec::IntoIter<String>,
    current: Option<(String, PathBuf, ReadDir)>,
    pending_error: Option<Error>,
}

impl Listing {
    pub(crate) fn new(layout: Layout, sizes: bool) -> Listing {
        let (dirs, pending_error) = match shard_dirs(&layout) {
            Ok(d) => (d, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Listing {
            layout,
            sizes,
            dirs: dirs.into_iter(),
            current: None,
            pending_error,
        }
    }
}

impl Iterator for Listing {
    type Item = Result<(Key, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending_error.take() {
            return Some(Err(e));
        }
        loop {
            if let Some((dir, path, rd)) = &mut self.current {
                match rd.next() {
                    Some(Ok(entry)) => {
                        let name = entry.file_name();
                        let Some(key) = name.to_str().and_then(|n| block_key(&self.layout, dir, n))
                        else {
                            continue;
                        };
                        // A directory, symbolic link or other entry named
                        // like a block is not one (verify reports it).
                        match entry.file_type() {
                            Ok(t) if !t.is_file() => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            _ => {}
                        }
                        if !self.sizes {
                            return Some(Ok((key, 0)));
                        }
                        match entry.metadata() {
                            Ok(m) if m.is_file() => return Some(Ok((key, m.len()))),
                            Ok(_) => continue,
                            // Deleted since the directory was read.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(e) => return Some(Err(Error::io("stat", path.join(name), e))),
                        }
                    }
                    Some(Err(e)) => {
                        let path = path.clone();
                        self.current = None;
                        return Some(Err(Error::io("read directory", path, e)));
                    }
                    None => self.current = None,
                }
            }
            let dir = self.dirs.next()?;
            let path = self.layout.shard_dir_named(&dir);
            match platform::read_dir(&path) {
                Ok(rd) => self.current = Some((dir, path, rd)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Some(Err(Error::io("read directory", path, e))),
            }
        }
    }
}

/// Counts blocks and bytes with a few threads, one shard directory at a time.
/// Returns `None` if `stop` was set before the walk finished, or a directory
/// could not be read.
pub(crate) fn walk_totals(layout: &Layout, stop: &AtomicBool) -> Option<(i64, i64)> {
    let dirs = shard_dirs(layout).ok()?;
    let next = AtomicUsize::new(0);
    let totals = Mutex::new((0i64, 0i64));
    let failed = AtomicBool::new(false);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(dir) = dirs.get(i) else { return };
                let Ok(rd) = platform::read_dir(&layout.shard_dir_named(dir)) else {
                    failed.store(true, Ordering::Relaxed);
                    return;
                };
                let (mut blocks, mut bytes) = (0i64, 0i64);
                for entry in rd {
                    // An entry that cannot be read makes the totals inexact.
                    let Ok(entry) = entry else {
                        failed.store(true, Ordering::Relaxed);
                        return;
                    };
                    let name = entry.file_name();
                    if name
                        .to_str()
                        .and_then(|n| block_key(layout, dir, n))
                        .is_none()
                    {
                        continue;
                    }
                    match entry.metadata() {
                        Ok(m) if m.is_file() => {
                            blocks += 1;
                            bytes += m.len() as i64;
                        }
                        Ok(_) => {}
                        // Deleted during the walk: a change the recount sees.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                t.0 += blocks;
                t.1 += bytes;
            });
        }
    });
    if stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
        return None;
    }
    Some(totals.into_inner().unwrap_or_else(|e| e.into_inner()))
}
