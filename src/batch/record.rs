//! The commit record: the list of a batch's final operations, written into
//! its staging directory at the commit point.
//!
//! ```text
//! flatstore-commit 1
//! P <staged-file> <size> <KEY>     publish the staged file as KEY (no replace)
//! R <staged-file> <size> <KEY>     publish the staged file as KEY in place of a stored KEY
//! D <KEY>                          delete KEY
//! end <number of operation lines>
//! ```
//! The record is written to a temp name, fsynced and renamed into place, so
//! it is either absent or whole; the `end` line guards against anything else.

use crate::key::Key;

/// Name of the record inside a staging directory.
pub(crate) const RECORD: &str = "COMMIT";
const HEADER: &str = "flatstore-commit 1";

/// One operation of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordOp {
    /// Publish staged file `seq` (of `size` bytes) as `key`; with `replace`,
    /// in place of a stored `key` (see `Store::replace_block`).
    Put {
        seq: u64,
        size: u64,
        key: Key,
        replace: bool,
    },
    /// Delete `key`.
    Delete { key: Key },
}

impl RecordOp {
    pub(crate) fn key(&self) -> &Key {
        match self {
            RecordOp::Put { key, .. } | RecordOp::Delete { key } => key,
        }
    }
}

pub(crate) fn encode(ops: &[RecordOp]) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::with_capacity(32 + ops.len() * 80);
    s.push_str(HEADER);
    s.push('\n');
    for op in ops {
        let _ = match op {
            RecordOp::Put {
                seq,
                size,
                key,
                replace,
            } => writeln!(s, "{} {seq} {size} {key}", if *replace { 'R' } else { 'P' }),
            RecordOp::Delete { key } => writeln!(s, "D {key}"),
        };
    }
    let _ = writeln!(s, "end {}", ops.len());
    s.into_bytes()
}

/// Parses a record; `None` if it is not complete and well-formed.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<RecordOp>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split_terminator('\n');
    if lines.next()? != HEADER {
        return None;
    }
    let mut ops = Vec::new();
    for line in lines {
        let mut f = line.split(' ');
        match (f.next()?, f.next(), f.next(), f.next(), f.next()) {
            (kind @ ("P" | "R"), Some(seq), Some(size), Some(key), None) => {
                ops.push(RecordOp::Put {
                    seq: seq.parse().ok()?,
                    size: size.parse().ok()?,
                    key: Key::new(key).ok()?,
                    replace: kind == "R",
                })
            }
            ("D", Some(key), None, None, None) => ops.push(RecordOp::Delete {
                key: Key::new(key).ok()?,
            }),
            ("end", Some(n), None, None, None) => {
                return (n.parse::<usize>().ok()? == ops.len() && text.ends_with('\n'))
                    .then_some(ops);
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let k = |s: &str| Key::new(s).unwrap();
        let ops = vec![
            RecordOp::Put {
                seq: 3,
                size: 10,
                key: k("AA"),
                replace: false,
            },
            RecordOp::Put {
                seq: 4,
                size: 0,
                key: k("BB"),
                replace: true,
            },
            RecordOp::Delete { key: k("CC") },
        ];
        let bytes = encode(&ops);
        assert_eq!(decode(&bytes).unwrap(), ops);
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_none(),
                "prefix of {cut} bytes accepted"
            );
        }
        assert!(decode(b"flatstore-commit 1\nend 0\n").unwrap().is_empty());
        assert!(decode(b"flatstore-commit 1\nP 1 2 a\nend 1\n").is_none());
    }
}
