//! The Tokio runtime behind the sync API, and the one helper that turns an
//! object store result into this crate's error.

use std::future::Future;

use crate::error::{Error, Result};

/// A multi-threaded Tokio runtime owned by one store (all its clones and
/// batches share it).
#[derive(Debug)]
pub(crate) struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    pub(crate) fn new() -> Result<Runtime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flatstore-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start runtime", "tokio", e))?;
        Ok(Runtime { rt: Some(rt) })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime present until drop")
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.rt().handle()
    }

    /// Runs `fut` to completion on this runtime and returns its output.
    ///
    /// Called from inside another Tokio runtime (where `block_on` would
    /// panic), the future runs on a scoped helper thread instead, so the sync
    /// API works from async code too (blocking that caller's thread, as any
    /// sync call does).
    pub(crate) fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.rt().block_on(fut))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.rt().block_on(fut)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Dropping a runtime inside an async context panics; this does not,
        // and leaves nothing running (the lease task is stopped before).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Wraps an object store error with the operation and the object key.
pub(crate) fn os_err<'a>(
    op: &'static str,
    key: &'a object_store::path::Path,
) -> impl FnOnce(object_store::Error) -> Error + 'a {
    move |source| Error::ObjectStore {
        op,
        key: key.to_string(),
        source: Box::new(source),
    }
}

/// Whether an object store error says the object is absent.
pub(crate) fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}
