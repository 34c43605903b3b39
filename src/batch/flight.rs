//! The bound on a batch's background writes: bytes and jobs handed to the
//! writers and not yet written, and the first error any of them had.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Jobs in flight at most, whatever their size: each costs an entry in the
/// batch's table of pending puts and one in the writers' queue, so tiny
/// blocks must not fill memory by their number.
pub(crate) const MAX_JOBS: usize = 8192;

pub(crate) struct Flight {
    state: Mutex<State>,
    changed: Condvar,
    cap: usize,
}

#[derive(Default)]
struct State {
    bytes: usize,
    jobs: usize,
    /// Jobs finished so far: a thread waiting for one particular job to end
    /// waits for this to move.
    completed: u64,
    error: Option<Arc<Error>>,
    /// Threads waiting in `reserve`, in `wait_idle` and in `wait_completed`:
    /// a writer finishing a block wakes them only when one of them can go
    /// on, so a large import does not pay a wake-up per block.
    reserving: usize,
    idling: usize,
    awaiting: usize,
}

impl Flight {
    pub(crate) fn new(cap: usize) -> Flight {
        Flight {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, s: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(s).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `size` more bytes fit under the cap (a block larger than
    /// the cap waits until nothing else is in flight) and a job slot is
    /// free, then reserves them.
    pub(crate) fn reserve(&self, size: usize) -> Result<()> {
        let mut s = self.lock();
        loop {
            if let Some(e) = &s.error {
                return Err(Error::BatchFailed { source: e.clone() });
            }
            let room = s.bytes == 0 || s.bytes + size <= self.cap;
            if room && s.jobs < MAX_JOBS {
                break;
            }
            s.reserving += 1;
            s = self.wait(s);
            s.reserving -= 1;
        }
        s.bytes += size;
        s.jobs += 1;
        Ok(())
    }

    /// Ends a job of `size` bytes (reserved by [`reserve`](Flight::reserve)),
    /// recording its error if it had one.
    pub(crate) fn release(&self, size: usize, error: Option<Error>) {
        let mut s = self.lock();
        s.bytes -= size;
        s.jobs -= 1;
        s.completed += 1;
        let failed = error.is_some();
        if let Some(e) = error {
            s.error.get_or_insert(Arc::new(e));
        }
        // Wake waiters only when one can proceed: an error, room for a
        // waiting put (half the cap and half the job slots free), the last
        // job, or a job that a thread waits for.
        let wake = failed
            || (s.reserving > 0
                && (s.jobs == 0 || (s.bytes <= self.cap / 2 && s.jobs <= MAX_JOBS / 2)))
            || (s.idling > 0 && s.jobs == 0)
            || s.awaiting > 0;
        drop(s);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Poisons the batch with `error` (kept only if it is the first).
    pub(crate) fn fail(&self, error: Error) {
        self.lock().error.get_or_insert(Arc::new(error));
        self.changed.notify_all();
    }

    /// Whether the batch is poisoned.
    pub(crate) fn failed(&self) -> bool {
        self.lock().error.is_some()
    }

    /// Waits for every job; returns the first error any of them had.
    pub(crate) fn wait_idle(&self) -> Option<Arc<Error>> {
        let mut s = self.lock();
        while s.jobs > 0 {
            s.idling += 1;
            s = self.wait(s);
            s.idling -= 1;
        }
        s.error.clone()
    }

    /// Jobs finished so far (see [`wait_completed`](Flight::wait_completed)).
    pub(crate) fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Waits until a job has finished since [`completed`](Flight::completed)
    /// said `seen` (at once if one has, or if nothing is in flight).
    pub(crate) fn wait_completed(&self, seen: u64) {
        let mut s = self.lock();
        while s.completed == seen && s.jobs > 0 {
            s.awaiting += 1;
            s = self.wait(s);
            s.awaiting -= 1;
        }
    }

    /// `Err(BatchFailed)` if the batch is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.lock().error {
            Some(e) => Err(Error::BatchFailed { source: e.clone() }),
            None => Ok(()),
        }
    }
}
