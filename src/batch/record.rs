//! The commit record: the file whose presence is a batch's commit point.
//!
//! ```text
//! flatstore-commit 2
//! end
//! ```
//! It lists no operation: the operations are the staged entries beside it
//! (see `staging`), so its size does not grow with the batch. It is written
//! to a temp name, fsynced and renamed into place, so it is either absent or
//! whole; anything else (another format version, a truncated or damaged
//! file) is a record this version cannot read, and recovery refuses it.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Name of the record inside a staging directory.
pub(crate) const RECORD: &str = "COMMIT";
/// The format version this code writes and reads.
pub(crate) const VERSION: u32 = 2;
const MAGIC: &str = "flatstore-commit ";

/// The record's bytes.
pub(crate) fn encode() -> Vec<u8> {
    format!("{MAGIC}{VERSION}\nend\n").into_bytes()
}

/// Checks a record's bytes; the error says why this version cannot read it.
pub(crate) fn decode(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a commit record (not UTF-8)")?;
    let (first, rest) = text
        .split_once('\n')
        .ok_or("damaged: no complete first line")?;
    let version = first
        .strip_prefix(MAGIC)
        .ok_or("not a commit record (no flatstore-commit header)")?;
    let version: u32 = version
        .parse()
        .map_err(|_| format!("damaged: format version {version:?} is not a number"))?;
    if version != VERSION {
        return Err(format!(
            "format version {version}, and this version of flatstore reads only version {VERSION}"
        ));
    }
    if rest != "end\n" {
        return Err("damaged: incomplete or extra content".into());
    }
    Ok(())
}

/// Whether the staging directory `dir` holds a complete commit record.
///
/// # Errors
/// [`Error::CorruptCommitRecord`] for a record this version cannot read,
/// [`Error::BadStoreEntry`] if the record is a symbolic link or not a file.
pub(crate) fn committed(dir: &Path) -> Result<bool> {
    let path = dir.join(RECORD);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if !meta.file_type().is_file() {
        return Err(Error::BadStoreEntry {
            path,
            reason: if meta.file_type().is_symlink() {
                "is a symbolic link"
            } else {
                "is not a regular file"
            },
        });
    }
    // A record is a few bytes: read at most a little more than that.
    let mut bytes = Vec::new();
    fs::File::open(&path)
        .and_then(|f| f.take(4096).read_to_end(&mut bytes))
        .ctx("read", &path)?;
    decode(&bytes).map_err(|reason| Error::CorruptCommitRecord { path, reason })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_truncation_and_other_versions() {
        let bytes = encode();
        assert_eq!(decode(&bytes), Ok(()));
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let newer = decode(b"flatstore-commit 3\nend\n").unwrap_err();
        assert!(newer.contains("version 3"), "{newer}");
        // The previous format, which listed every operation.
        assert!(decode(b"flatstore-commit 1\nP 0 1 A\nend 1\n").is_err());
        assert!(decode(b"flatstore-commit 2\nend\nmore\n").is_err());
        assert!(decode(b"\xff\xfe").is_err());
    }
}
