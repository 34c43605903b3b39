//! Retrying with exponential backoff: the one loop behind every retry in
//! the crate (too many open files, Windows sharing conflicts, a lock held
//! by another process).

use std::thread;
use std::time::Duration;

/// How a retry loop waits: the first delay, the longest one, and how long
/// to keep trying in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
    pub(crate) total: Duration,
}

impl Backoff {
    /// Runs `op` until it returns something `again` does not ask to retry,
    /// or until `total` has been spent sleeping; returns the last outcome.
    pub(crate) fn run<T>(self, mut op: impl FnMut() -> T, mut again: impl FnMut(&T) -> bool) -> T {
        let mut delay = self.first;
        let mut waited = Duration::ZERO;
        loop {
            let r = op();
            if waited >= self.total || !again(&r) {
                return r;
            }
            let d = delay.min(self.total - waited);
            thread::sleep(d);
            waited += d;
            delay = (delay * 2).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_done_or_out_of_time() {
        let b = Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
            total: Duration::from_millis(20),
        };
        let mut n = 0;
        assert_eq!(
            b.run(
                || {
                    n += 1;
                    n
                },
                |&n| n < 3
            ),
            3
        );
        let mut tries = 0;
        assert!(!b.run(
            || {
                tries += 1;
                false
            },
            |ok| !ok
        ));
        assert!(tries > 3, "{tries}");
    }
}
