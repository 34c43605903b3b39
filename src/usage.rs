//! Block count and byte counters, `diskUsage.cache`, and the recount.
//!
//! # The counters across processes
//! `diskUsage.cache` holds the totals as of the last recount plus the
//! changes of every writer that has closed cleanly since. Each read-write
//! handle counts its own changes exactly (each publish and each delete is
//! one rename that exactly one writer wins), and folds them into the file
//! when it closes, under the lock's counters byte. So after the last writer
//! closes cleanly, the file is exact, provided no writer died since the last
//! recount: a dead writer's changes are lost with it, and the open that
//! finds it marks the file approximate, which makes that open recount.
//!
//! The file is never deleted (Kubo's included): a stale one is rewritten
//! with `"accuracy":"initial-approximate"` and its last figures, so nobody
//! ever reads zeros for a full store. A `generation` field, bumped by every
//! rewrite that is not a fold, lets a recount tell whether a writer came and
//! went during its walk.
//!
//! A recount's figures are installed as exact only if no other writer was
//! open at the start or the end of its walk and none closed meanwhile;
//! otherwise they are installed as approximate (and the next open that finds
//! itself alone recounts again). `Exact` is never said of figures that are
//! not.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::error::Result;
use crate::layout::{self, Layout, DISK_USAGE};
use crate::listing;
use crate::lock::WriterLock;
use crate::owner;

/// How far [`Stats`] can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Accuracy {
    /// The counters are exact.
    Exact,
    /// The counters are being recomputed by a walk in the background (after
    /// a writer died, or for a store written by another program); the
    /// figures meanwhile are the last known ones plus this handle's changes.
    Recomputing,
    /// The figures may be off: other writers are open (their changes are
    /// not in this handle's figures until they close), a writer died since
    /// the last recount, or the store changed during every recount.
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

impl Stats {
    fn new(blocks: i64, bytes: i64, accuracy: Accuracy) -> Stats {
        Stats {
            blocks: blocks.max(0) as u64,
            bytes: bytes.max(0) as u64,
            accuracy,
        }
    }
}

/// The contents of `diskUsage.cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cache {
    bytes: i64,
    /// Absent in go-ds-flatfs's files.
    blocks: Option<i64>,
    exact: bool,
    generation: u64,
}

impl Cache {
    fn exact_counts(&self) -> Option<(i64, i64)> {
        match (self.exact, self.blocks) {
            (true, Some(blocks)) => Some((blocks, self.bytes)),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        let accuracy = if self.exact {
            "initial-exact"
        } else {
            "initial-approximate"
        };
        let mut s = format!(
            "{{\"diskUsage\":{},\"accuracy\":\"{accuracy}\"",
            self.bytes.max(0)
        );
        if let Some(b) = self.blocks {
            s.push_str(&format!(",\"blocks\":{}", b.max(0)));
        }
        s.push_str(&format!(",\"generation\":{}}}", self.generation));
        s
    }

    fn decode(text: &str) -> Option<Cache> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let bytes = v.get("diskUsage")?.as_i64()?;
        let blocks = v.get("blocks").and_then(|b| b.as_i64()).filter(|&b| b >= 0);
        Some(Cache {
            bytes: bytes.max(0),
            blocks,
            exact: v.get("accuracy").and_then(|a| a.as_str()) == Some("initial-exact")
                && blocks.is_some(),
            generation: v.get("generation").and_then(|g| g.as_u64()).unwrap_or(0),
        })
    }
}

/// Reads `diskUsage.cache`; `None` if it is absent or unreadable (which
/// counts as stale).
pub(crate) fn read_cache(layout: &Layout) -> Option<Cache> {
    let text = std::fs::read_to_string(layout.disk_usage_path()).ok()?;
    Cache::decode(&text)
}

fn write_cache(root: &Path, cache: &Cache, durable: bool) -> Result<()> {
    layout::write_atomic(root, DISK_USAGE, cache.encode().as_bytes(), true, durable)
}

/// The exact zero counters of a store being created.
pub(crate) fn create_cache(root: &Path, durable: bool) -> Result<()> {
    let zero = Cache {
        bytes: 0,
        blocks: Some(0),
        exact: true,
        generation: 0,
    };
    write_cache(root, &zero, durable)
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    /// This handle's figures: `base` plus its own changes.
    blocks: i64,
    bytes: i64,
    /// The figures at open (from the cache), or of this handle's last recount.
    base_blocks: i64,
    base_bytes: i64,
    /// Whether `base` is exact.
    base_exact: bool,
    /// Bumped by every change, so a recount can tell whether it raced one.
    changes: u64,
    recounting: bool,
}

/// One handle's counters.
#[derive(Debug)]
pub(crate) struct Usage {
    counts: Mutex<Counts>,
}

impl Usage {
    /// Counters starting from what `diskUsage.cache` held at open.
    pub(crate) fn from_cache(cache: Option<Cache>) -> Usage {
        let (blocks, bytes, exact) = match cache {
            Some(c) => match c.exact_counts() {
                Some((b, n)) => (b, n, true),
                None => (c.blocks.unwrap_or(0), c.bytes, false),
            },
            None => (0, 0, false),
        };
        Usage {
            counts: Mutex::new(Counts {
                blocks,
                bytes,
                base_blocks: blocks,
                base_bytes: bytes,
                base_exact: exact,
                changes: 0,
                recounting: false,
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

    /// Whether the figures this handle started from are exact.
    pub(crate) fn exact(&self) -> bool {
        self.lock().base_exact
    }

    /// Marks the figures as not exact (a writer died, or blocks changed in
    /// a way that was not counted); a recount makes them exact again.
    pub(crate) fn mark_inexact(&self) {
        self.lock().base_exact = false;
    }

    /// This handle's own figures, without asking the file.
    fn own(&self) -> (Counts, Accuracy) {
        let c = *self.lock();
        let accuracy = if c.recounting {
            Accuracy::Recomputing
        } else if c.base_exact {
            Accuracy::Exact
        } else {
            Accuracy::Approximate
        };
        (c, accuracy)
    }
}

/// The store's figures as seen by one handle: the file's (which includes
/// the writers that closed since this handle opened) plus this handle's own
/// changes. Exact only if both are and no other writer is open.
pub(crate) fn stats(layout: &Layout, usage: &Usage, own_token: Option<&str>) -> Stats {
    let (c, own_accuracy) = usage.own();
    if own_accuracy == Accuracy::Recomputing {
        return Stats::new(c.blocks, c.bytes, own_accuracy);
    }
    let alone = owner::other_tokens(&layout.temp, own_token).is_ok_and(|t| t.is_empty());
    let (db, dn) = (c.blocks - c.base_blocks, c.bytes - c.base_bytes);
    match read_cache(layout) {
        Some(file) => {
            let exact = file.exact && (own_token.is_none() || c.base_exact) && alone;
            let accuracy = if exact {
                Accuracy::Exact
            } else {
                Accuracy::Approximate
            };
            Stats::new(
                file.blocks.unwrap_or(c.base_blocks) + db,
                file.bytes + dn,
                accuracy,
            )
        }
        None => Stats::new(c.blocks, c.bytes, Accuracy::Approximate),
    }
}

/// Marks `diskUsage.cache` approximate (a dead writer's changes are lost),
/// keeping its figures. Where it cannot be rewritten (a full disk) it is
/// removed instead, which says the same: an exact file with wrong figures
/// must never stay behind. The next clean close writes it again.
pub(crate) fn mark_stale(layout: &Layout, lock: &WriterLock, durable: bool) -> Result<()> {
    lock.with_counters(|| match read_cache(layout) {
        Some(c) if c.exact => {
            let stale = Cache {
                exact: false,
                generation: c.generation + 1,
                ..c
            };
            write_cache(&layout.root, &stale, durable).or_else(|_| {
                let path = layout.disk_usage_path();
                crate::platform::remove_file(&path)
                    .map_err(|e| crate::Error::io("remove", &path, e))?;
                if durable {
                    crate::platform::sync_dir(&layout.root)
                        .map_err(|e| crate::Error::io("fsync", &layout.root, e))?;
                }
                Ok(())
            })
        }
        _ => Ok(()),
    })?
}

/// Folds this handle's changes into `diskUsage.cache` at a clean close:
/// exact if the file and this handle's figures were exact, approximate
/// (with the best figures known) otherwise.
pub(crate) fn persist(
    layout: &Layout,
    lock: &WriterLock,
    usage: &Usage,
    durable: bool,
) -> Result<()> {
    let (c, _) = usage.own();
    let (db, dn) = (c.blocks - c.base_blocks, c.bytes - c.base_bytes);
    lock.with_counters(|| {
        let file = read_cache(layout);
        if file.is_some() && db == 0 && dn == 0 && c.base_exact && file.is_some_and(|f| f.exact) {
            // Nothing to fold: leave the file as it is (no write, no fsync).
            return Ok(());
        }
        let next = match file {
            Some(f) if f.exact && c.base_exact => Cache {
                bytes: f.bytes + dn,
                blocks: f.blocks.map(|b| b + db),
                ..f
            },
            Some(f) => Cache {
                bytes: f.bytes + dn,
                blocks: Some(f.blocks.unwrap_or(c.base_blocks) + db),
                exact: false,
                generation: f.generation + 1,
            },
            None => Cache {
                bytes: c.bytes,
                blocks: Some(c.blocks),
                exact: false,
                generation: 1,
            },
        };
        write_cache(&layout.root, &next, durable)
    })?
}

/// A background recount, stopped (or waited for) and joined.
pub(crate) struct Recount {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recount {
    /// Waits for the recount to end.
    pub(crate) fn finish(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recount {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a recount needs: where to walk, whose counters to set, and (for a
/// writer) the lock under which to rewrite the file.
pub(crate) struct RecountJob {
    pub(crate) layout: Layout,
    pub(crate) usage: Arc<Usage>,
    pub(crate) writer: Option<(Arc<WriterLock>, String)>,
    pub(crate) durable: bool,
}

/// Starts recomputing the counters in a background thread.
pub(crate) fn start_recount(job: RecountJob) -> Result<Recount> {
    let stop = Arc::new(AtomicBool::new(false));
    job.usage.lock().recounting = true;
    let root = job.layout.root.clone();
    let usage = job.usage.clone();
    let thread = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("flatstore-recount".into())
            .spawn(move || {
                crate::fault::recount_gate();
                let _ = recount(&job, &stop);
                job.usage.lock().recounting = false;
            })
            .map_err(|e| {
                usage.lock().recounting = false;
                crate::Error::io("spawn recount thread", &root, e)
            })?
    };
    Ok(Recount {
        stop,
        thread: Some(thread),
    })
}

/// Walks the store until a walk completes with nothing racing it, then
/// installs its figures as exact; after three raced walks, or when another
/// writer is open, installs the last figures as approximate. A walk that
/// could not read every directory installs nothing (the figures stay
/// approximate).
pub(crate) fn recount(job: &RecountJob, stop: &AtomicBool) -> Result<()> {
    let own = job.writer.as_ref().map(|(_, t)| t.as_str());
    for attempt in 0..3 {
        let start = *job.usage.lock();
        let generation = read_cache(&job.layout).map_or(0, |c| c.generation);
        let others_before = !owner::other_tokens(&job.layout.temp, own)?.is_empty();
        let walked = listing::walk_totals(&job.layout, stop);
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(totals) = walked else {
            return Ok(());
        };
        let alone = !others_before && owner::other_tokens(&job.layout.temp, own)?.is_empty();
        let raced = job.usage.lock().changes != start.changes;
        if !raced || !alone || attempt == 2 {
            return install(job, &start, generation, alone, totals);
        }
    }
    Ok(())
}

/// Installs a walk's figures in the handle and, for a writer, in the file.
fn install(
    job: &RecountJob,
    start: &Counts,
    generation: u64,
    alone: bool,
    (blocks, bytes): (i64, i64),
) -> Result<()> {
    // The handle's counts are held still (its mutex) while the file is
    // rewritten, so no change or fold slips in between.
    let mut c = job.usage.lock();
    let raced = c.changes != start.changes;
    let mut exact = alone && !raced;
    let unchanged = || read_cache(&job.layout).map_or(0, |f| f.generation) == generation;
    match &job.writer {
        Some((lock, _)) => lock.with_counters(|| {
            exact = exact && unchanged();
            let next = Cache {
                bytes,
                blocks: Some(blocks),
                exact,
                generation: generation + 1,
            };
            write_cache(&job.layout.root, &next, job.durable)
        })??,
        // A reader keeps the figures to itself.
        None => exact = exact && unchanged(),
    }
    // Changes made during the walk may or may not be in its figures: keep
    // them on top, and say approximate.
    c.blocks = blocks + (c.blocks - start.blocks);
    c.bytes = bytes + (c.bytes - start.bytes);
    c.base_blocks = blocks;
    c.base_bytes = bytes;
    c.base_exact = exact;
    Ok(())
}
