//! Background threads that write batch blocks.

use crossbeam_channel::{unbounded, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads running jobs from one queue. The threads end when
/// the pool is dropped and the queue is empty; they hold no reference to the
/// store, so dropping the last store handle is never delayed by them.
pub(crate) struct WriterPool {
    tx: Sender<Job>,
}

impl WriterPool {
    pub(crate) fn new(threads: usize) -> WriterPool {
        let (tx, rx) = unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("flatstore-writer-{i}"))
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                });
            // With no thread at all, jobs run on the caller (see `submit`).
            if spawned.is_err() {
                break;
            }
        }
        WriterPool { tx }
    }

    /// Runs `job` on a pool thread (or on the caller if none could be started).
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(e) = self.tx.send(Box::new(job)) {
            (e.into_inner())();
        }
    }
}
