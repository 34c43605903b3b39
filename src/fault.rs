//! A test-only seam under the store's filesystem calls: makes the N-th call
//! of a given kind fail with a chosen error.
//!
//! Compiled in only with the `fault-injection` feature; otherwise
//! `hit` is an empty inline function. The plan is process-wide (batch
//! writers and publishers run on other threads), so a test that uses it must
//! be the only one running in its process.

use std::io;

/// The kinds of filesystem call that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(not(feature = "fault-injection"), allow(unreachable_pub))]
pub enum FaultKind {
    /// Creating a file.
    Create,
    /// Writing a file's contents.
    Write,
    /// fsync of a file, or a sync of the whole filesystem.
    Fsync,
    /// fsync of a directory (making its entries durable).
    SyncDir,
    /// Renaming (publishing, deleting into `.temp/`, metadata files).
    Rename,
    /// Removing a file or a directory tree.
    Unlink,
    /// Creating a directory.
    Mkdir,
    /// Reading a directory.
    Readdir,
}

#[cfg(feature = "fault-injection")]
mod plan {
    use super::FaultKind;
    use std::collections::HashMap;
    use std::io;
    use std::sync::Mutex;

    struct Plan {
        kind: FaultKind,
        /// 0: never fail, only count.
        nth: u64,
        /// Calls of each kind since the plan was made.
        seen: HashMap<FaultKind, u64>,
        error: io::ErrorKind,
        fired: bool,
        /// A second fault, counted from the instant the first one fired.
        then: Option<Then>,
    }

    struct Then {
        kind: FaultKind,
        nth: u64,
        seen: u64,
        error: io::ErrorKind,
        fired: bool,
    }

    static PLAN: Mutex<Option<Plan>> = Mutex::new(None);

    fn plan() -> std::sync::MutexGuard<'static, Option<Plan>> {
        PLAN.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, the `nth` call (1-based) of `kind` fails with `error`.
    pub fn inject(kind: FaultKind, nth: u64, error: io::ErrorKind) {
        *plan() = Some(Plan {
            kind,
            nth,
            seen: HashMap::new(),
            error,
            fired: false,
            then: None,
        });
    }

    /// Adds a second fault to the plan made by [`inject`]: once the first
    /// fault has fired, the `nth` call of `kind` after it fails with
    /// `error` (for example, in the cleanup that follows the first failure).
    pub fn then_inject(kind: FaultKind, nth: u64, error: io::ErrorKind) {
        if let Some(p) = plan().as_mut() {
            p.then = Some(Then {
                kind,
                nth,
                seen: 0,
                error,
                fired: false,
            });
        }
    }

    /// From now on, count the calls of every kind, failing none.
    pub fn count_calls() {
        inject(FaultKind::Create, 0, io::ErrorKind::Other);
    }

    /// How many calls of `kind` were made since [`inject`] or
    /// [`count_calls`] (0 without a plan): a test can check, for example,
    /// how many fsyncs an operation makes.
    pub fn calls(kind: FaultKind) -> u64 {
        plan()
            .as_ref()
            .and_then(|p| p.seen.get(&kind).copied())
            .unwrap_or(0)
    }

    /// Removes the plan; returns whether its (first) fault fired.
    pub fn clear() -> bool {
        clear_both().0
    }

    /// Removes the plan; returns whether its first fault fired, and
    /// whether the second one ([`then_inject`]) did.
    pub fn clear_both() -> (bool, bool) {
        plan().take().map_or((false, false), |p| {
            (p.fired, p.then.is_some_and(|t| t.fired))
        })
    }

    pub(crate) fn hit(kind: FaultKind) -> io::Result<()> {
        let mut guard = plan();
        let Some(p) = guard.as_mut() else {
            return Ok(());
        };
        let seen = p.seen.entry(kind).or_insert(0);
        *seen += 1;
        if p.fired {
            if let Some(t) = p.then.as_mut().filter(|t| t.kind == kind) {
                t.seen += 1;
                if t.seen == t.nth {
                    t.fired = true;
                    return Err(io::Error::new(
                        t.error,
                        format!("injected second {kind:?} fault #{}", t.nth),
                    ));
                }
            }
            return Ok(());
        }
        if p.kind == kind && *seen == p.nth {
            p.fired = true;
            return Err(io::Error::new(
                p.error,
                format!("injected {kind:?} fault #{}", p.nth),
            ));
        }
        Ok(())
    }
}

#[cfg(feature = "fault-injection")]
pub use plan::{calls, clear, clear_both, count_calls, inject, then_inject};

#[cfg(feature = "fault-injection")]
mod recount_hold {
    use std::sync::{Condvar, Mutex};

    static HELD: Mutex<bool> = Mutex::new(false);
    static RELEASED: Condvar = Condvar::new();

    /// From now on, background recounts of the counters wait before they
    /// walk the store, until [`release_recounts`]: a test can then observe
    /// [`Accuracy::Recomputing`](crate::Accuracy::Recomputing) and use the
    /// store meanwhile. Process-wide, like the fault plan.
    pub fn hold_recounts() {
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Lets held and future recounts run.
    pub fn release_recounts() {
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = false;
        RELEASED.notify_all();
    }

    pub(crate) fn recount_gate() {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = RELEASED.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use recount_hold::{hold_recounts, release_recounts};

/// Waits while a test holds recounts ([`hold_recounts`]); nothing otherwise.
#[inline]
pub(crate) fn recount_gate() {
    #[cfg(feature = "fault-injection")]
    recount_hold::recount_gate();
}

/// Fails if the fault plan says this call of `kind` must fail.
#[inline]
pub(crate) fn hit(kind: FaultKind) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    {
        plan::hit(kind)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = kind;
        Ok(())
    }
}
