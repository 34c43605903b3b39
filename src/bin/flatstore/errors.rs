//! How failures are reported: a message with each cause once, a kind for
//! `--json`, and whether the failure is only a closed pipe.

use std::io;

use flatstore::Error;

/// A failure found by the tool itself, with the kind `--json` reports.
#[derive(Debug)]
pub struct Fail {
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// A [`Fail`] as an `anyhow::Error`.
pub fn fail(kind: &'static str, message: impl Into<String>) -> anyhow::Error {
    Fail {
        kind,
        message: message.into(),
    }
    .into()
}

/// The message: the context and each cause, skipping a cause whose text the
/// message already holds (the library's `Error::Io` prints its source).
pub fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// The kind of failure, for `{"error":{"kind":…}}`.
pub fn kind(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Fail>() {
            return f.kind;
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            return library_kind(e);
        }
        // A library error carried inside an io::Error (a checked reader's).
        if let Some(e) = cause
            .downcast_ref::<io::Error>()
            .and_then(|e| e.get_ref())
            .and_then(|e| e.downcast_ref::<Error>())
        {
            return library_kind(e);
        }
    }
    if e.chain().any(|c| c.downcast_ref::<io::Error>().is_some()) {
        return "io";
    }
    "error"
}

fn library_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidKey { .. } => "invalid_key",
        Error::InvalidShard { .. } | Error::InvalidOption { .. } => "invalid_argument",
        Error::CorruptSharding { .. }
        | Error::CorruptCommitRecord { .. }
        | Error::BadStoreEntry { .. } => "corrupt_store",
        Error::ShardingMismatch { .. } => "sharding_mismatch",
        Error::NotAStore { .. } => "not_a_store",
        Error::NoStore { .. } => "no_store",
        Error::Locked { .. } => "locked",
        Error::Busy => "busy",
        Error::ReshardFailed { .. } => "reshard_failed",
        Error::CountersNotSaved { .. } => "counters_not_saved",
        Error::NeedsRecovery { .. } => "needs_recovery",
        Error::ReadOnly => "read_only",
        Error::HashMismatch { .. } => "hash_mismatch",
        Error::UnsupportedHash { .. } => "unsupported_hash",
        Error::Car { .. } => "bad_car",
        Error::Codec { .. } => "codec",
        Error::MissingBlock { .. } => "not_found",
        Error::AddRefused { .. } => "unsupported",
        Error::BlockTooLarge { .. } => "too_large",
        _ => "io",
    }
}

/// Whether the failure is writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .map(|e| e.kind() == io::ErrorKind::BrokenPipe)
            .or_else(|| {
                c.downcast_ref::<Error>()
                    .map(|e| e.io_kind() == Some(io::ErrorKind::BrokenPipe))
            })
            .unwrap_or(false)
    })
}

/// Prints `{"error":{"kind":…,"message":…}}` on stdout (ignoring a closed pipe).
pub fn print_json(kind: &str, message: &str) {
    let _ = crate::out::line(serde_json::json!({ "error": { "kind": kind, "message": message } }));
}
