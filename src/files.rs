//! Bounded use of file descriptors: a cap on files held open at once, and
//! retry with backoff when the process runs out of them anyway.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::backoff::Backoff;
use crate::platform;

/// A counting semaphore on open files. Taking and giving back a slot is one
/// atomic operation each; the mutex and condition variable are used only
/// when the cap is reached.
#[derive(Debug)]
pub(crate) struct FileGate {
    limit: usize,
    used: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

/// One slot of a [`FileGate`], given back on drop.
pub(crate) struct Permit<'a>(&'a FileGate);

impl FileGate {
    /// A gate for `limit` files, or, by default, half the process limit
    /// (less a few for the caller's own files), between 4 and 1,024.
    pub(crate) fn new(limit: Option<usize>) -> FileGate {
        let limit = limit.unwrap_or_else(|| match platform::open_file_limit() {
            Some(n) => ((n as usize) / 2).saturating_sub(8).clamp(4, 1024),
            None => 1024,
        });
        FileGate {
            limit,
            used: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    fn try_take(&self) -> bool {
        let mut cur = self.used.load(SeqCst);
        while cur < self.limit {
            match self
                .used
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    pub(crate) fn acquire(&self) -> Permit<'_> {
        if self.try_take() {
            return Permit(self);
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Announce the wait before looking again, so a release either sees
        // the waiter or frees the slot this look finds.
        self.waiters.fetch_add(1, SeqCst);
        while !self.try_take() {
            guard = self.freed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.waiters.fetch_sub(1, SeqCst);
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let gate = self.0;
        gate.used.fetch_sub(1, SeqCst);
        if gate.waiters.load(SeqCst) > 0 {
            let _guard = gate.lock.lock().unwrap_or_else(|e| e.into_inner());
            gate.freed.notify_one();
        }
    }
}

/// Runs `op`, retrying with exponential backoff (for up to about 30 s) while
/// it fails because too many files are open.
pub(crate) fn retry_nofile<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(100),
        total: Duration::from_secs(30),
    };
    backoff.run(
        op,
        |r| matches!(r, Err(e) if platform::is_too_many_files(e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn gate_caps_concurrency() {
        let gate = Arc::new(FileGate::new(Some(3)));
        let peak = Arc::new(Mutex::new((0usize, 0usize)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, peak) = (gate.clone(), peak.clone());
                thread::spawn(move || {
                    for _ in 0..50 {
                        let _p = gate.acquire();
                        {
                            let mut p = peak.lock().unwrap();
                            p.0 += 1;
                            p.1 = p.1.max(p.0);
                        }
                        thread::yield_now();
                        peak.lock().unwrap().0 -= 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let p = peak.lock().unwrap();
        assert!(p.1 <= 3 && p.1 >= 1, "peak {}", p.1);
    }
}
