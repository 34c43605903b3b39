//! Block count and byte counters, `diskUsage.cache`, and the background
//! recount after an unclean shutdown.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::error::Result;
use crate::layout::{self, Layout, DISK_USAGE};
use crate::listing;

/// How far [`Stats`] can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Accuracy {
    /// The counters are exact.
    Exact,
    /// The store was not closed cleanly (or was written by another program);
    /// the counters are being recomputed by a walk in the background and will
    /// be exact when it ends.
    Recomputing,
    /// The store kept changing during every recount; the counters are close
    /// but may be off by the operations that raced the walk.
    Approximate,
}

/// Counters of a store, from [`Store::stats`](crate::Store::stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of blocks.
    pub blocks: u64,
    /// Sum of the block sizes in bytes.
    pub bytes: u64,
    /// Whether the figures are exact.
    pub accuracy: Accuracy,
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    blocks: i64,
    bytes: i64,
    /// Bumped by every change, so a recount can tell whether it raced one.
    changes: u64,
    accuracy: Accuracy,
}

/// The shared counters of one store.
#[derive(Debug)]
pub(crate) struct Usage {
    counts: Mutex<Counts>,
}

impl Usage {
    fn new(blocks: i64, bytes: i64, accuracy: Accuracy) -> Usage {
        Usage {
            counts: Mutex::new(Counts {
                blocks,
                bytes,
                changes: 0,
                accuracy,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a change of `blocks` blocks and `bytes` bytes.
    pub(crate) fn add(&self, blocks: i64, bytes: i64) {
        let mut c = self.lock();
        c.blocks += blocks;
        c.bytes += bytes;
        c.changes += 1;
    }

    /// Marks the counters as being recomputed (a recount is about to start).
    pub(crate) fn reset_stale(&self) {
        self.lock().accuracy = Accuracy::Recomputing;
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = self.lock();
        Stats {
            blocks: c.blocks.max(0) as u64,
            bytes: c.bytes.max(0) as u64,
            accuracy: c.accuracy,
        }
    }
}

/// Reads `diskUsage.cache`. Returns counters only if the file is ours, exact,
/// and carries a block count (go-ds-flatfs's has bytes only).
fn read_cache(path: &Path) -> Option<(i64, i64)> {
    let text = fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v.get("accuracy")?.as_str()? != "initial-exact" {
        return None;
    }
    let bytes = v.get("diskUsage")?.as_i64()?;
    let blocks = v.get("blocks")?.as_i64()?;
    (bytes >= 0 && blocks >= 0).then_some((blocks, bytes))
}

/// Counters loaded at open.
pub(crate) struct Loaded {
    pub(crate) usage: Arc<Usage>,
    /// Whether the counters must be recomputed ([`start_recount`]).
    pub(crate) stale: bool,
}

/// A background recount, stopped and joined on drop.
pub(crate) struct Recount {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Recount {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loads the counters at open. For a read-write open the cache file is then
/// removed, so that a crash before the next clean close is noticed (the next
/// open finds no cache and recounts). Removal is made durable when
/// `durable` is set.
///
/// A store created by this open (`created`) starts with exact zero counters.
pub(crate) fn load(
    layout: &Layout,
    read_only: bool,
    durable: bool,
    created: bool,
) -> Result<Loaded> {
    let path = layout.disk_usage_path();
    let cached = if created {
        Some((0, 0))
    } else {
        read_cache(&path)
    };
    if !read_only {
        // A cache that cannot be removed would be trusted after a crash:
        // the open fails instead.
        match crate::platform::remove_file(&path) {
            Ok(()) if durable => crate::platform::sync_dir(&layout.root)
                .map_err(|e| crate::Error::io("fsync", &layout.root, e))?,
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::Error::io("remove", &path, e)),
        }
    }
    Ok(match cached {
        Some((blocks, bytes)) => Loaded {
            usage: Arc::new(Usage::new(blocks, bytes, Accuracy::Exact)),
            stale: false,
        },
        None => Loaded {
            usage: Arc::new(Usage::new(0, 0, Accuracy::Recomputing)),
            stale: true,
        },
    })
}

/// Starts recomputing the counters in a background thread.
pub(crate) fn start_recount(layout: &Layout, usage: &Arc<Usage>) -> Result<Recount> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (usage, stop, walk) = (usage.clone(), stop.clone(), layout.clone());
        thread::Builder::new()
            .name("flatstore-recount".into())
            .spawn(move || recount(&walk, &usage, &stop))
            .map_err(|e| crate::Error::io("spawn recount thread", &layout.root, e))?
    };
    Ok(Recount {
        stop,
        thread: Some(thread),
    })
}

/// Walks the store (in parallel) until a walk completes without a change
/// racing it, then installs its figures as exact. After three raced walks it
/// installs the last one's figures adjusted by the changes seen, as approximate.
fn recount(layout: &Layout, usage: &Usage, stop: &AtomicBool) {
    crate::fault::recount_gate();
    for _attempt in 0..3 {
        let (before, start_blocks, start_bytes) = {
            let c = usage.lock();
            (c.changes, c.blocks, c.bytes)
        };
        let Some((blocks, bytes)) = listing::walk_totals(layout, stop) else {
            return;
        };
        let mut c = usage.lock();
        if c.changes == before {
            c.blocks = blocks;
            c.bytes = bytes;
            c.accuracy = Accuracy::Exact;
            return;
        }
        // Changes raced the walk: apply what they did to the walk's figures
        // (some may be counted twice), and try again.
        c.blocks = blocks + (c.blocks - start_blocks);
        c.bytes = bytes + (c.bytes - start_bytes);
        c.accuracy = Accuracy::Approximate;
        drop(c);
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
    let mut c = usage.lock();
    if c.accuracy == Accuracy::Recomputing {
        c.accuracy = Accuracy::Approximate;
    }
}

/// Writes the counters to `diskUsage.cache` (only when they are exact), in
/// go-ds-flatfs's format plus a `blocks` field.
pub(crate) fn persist(layout: &Layout, usage: &Usage, durable: bool) -> Result<()> {
    let s = usage.stats();
    if s.accuracy != Accuracy::Exact {
        return Ok(());
    }
    let json = format!(
        "{{\"diskUsage\":{},\"accuracy\":\"initial-exact\",\"blocks\":{}}}",
        s.bytes, s.blocks
    );
    layout::write_atomic(&layout.root, DISK_USAGE, json.as_bytes(), true, durable)
}
