//! Store keys: validation and conversion from and to multihashes and CIDs.

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use data_encoding::BASE32_NOPAD;
use multihash::Multihash;

use crate::error::{Error, Result};

/// Longest key accepted, so that `KEY.data` fits in a 255-byte file name.
pub const MAX_KEY_LEN: usize = 250;

/// Names Windows reserves for devices; refused as keys on every platform so
/// that a store stays portable.
const DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A validated store key: the name of one block's file, without `.data`.
///
/// # Rules
/// - 1 to [`MAX_KEY_LEN`] (250) characters, each one of `0-9 A-Z + - _ =`;
/// - one leading `/` is accepted and dropped (go-datastore style);
/// - the Windows device names (`CON`, `PRN`, `AUX`, `NUL`, `COM1`–`COM9`,
///   `LPT1`–`LPT9`) are refused on every platform.
///
/// So a key can never name a path outside its shard directory: no separators,
/// no `.`, no NUL, no lower case. A block's key is the upper-case, unpadded
/// RFC 4648 base32 of its multihash, as Kubo stores it
/// ([`Key::from_multihash`], [`Key::from_cid`]).
///
/// # Errors
/// Construction fails with [`Error::InvalidKey`] naming the rule broken.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Box<str>);

impl Key {
    /// Validates `s` as a key (see the rules on [`Key`]).
    pub fn new(s: &str) -> Result<Key> {
        let body = s.strip_prefix('/').unwrap_or(s);
        validate(body).map_err(|reason| Error::InvalidKey {
            key: shorten(s),
            reason,
        })?;
        Ok(Key(body.into()))
    }

    /// The key of a block with this multihash: base32 (upper case, no padding)
    /// of the multihash bytes.
    pub fn from_multihash(mh: &Multihash<64>) -> Key {
        Self::from_multihash_bytes(&mh.to_bytes())
    }

    /// The key of the block a CID names: the key of its multihash, so CIDv0 and
    /// every CIDv1 with the same multihash share one key.
    pub fn from_cid(cid: &Cid) -> Key {
        Self::from_multihash(cid.hash())
    }

    fn from_multihash_bytes(bytes: &[u8]) -> Key {
        // Multihash<64> is at most ~75 bytes, so the key is at most ~120 characters
        // of the base32 alphabet: always valid.
        Key(BASE32_NOPAD.encode(bytes).into())
    }

    /// Decodes the key as the base32 of a multihash.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the key is not base32 of a valid multihash
    /// (a key written by another application, for example).
    pub fn to_multihash(&self) -> Result<Multihash<64>> {
        let bytes = BASE32_NOPAD
            .decode(self.0.as_bytes())
            .map_err(|_| self.invalid("not base32"))?;
        Multihash::from_bytes(&bytes).map_err(|_| self.invalid("not a multihash"))
    }

    /// The key as a string (without any leading `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidKey {
            key: self.0.to_string(),
            reason,
        }
    }

    /// Whether `name` is a file name `KEY.data` with a valid key; returns the key.
    pub(crate) fn from_file_name(name: &str) -> Option<Key> {
        let body = name.strip_suffix(crate::layout::DATA_EXT)?;
        validate(body).ok()?;
        Some(Key(body.into()))
    }
}

fn validate(body: &str) -> std::result::Result<(), &'static str> {
    if body.is_empty() {
        return Err("empty");
    }
    if body.len() > MAX_KEY_LEN {
        return Err("longer than 250 characters");
    }
    if let Some(b) = body.bytes().find(|b| !is_key_byte(*b)) {
        return Err(match b {
            b'/' | b'\\' => "contains a path separator",
            b'.' => "contains '.'",
            0 => "contains NUL",
            b'a'..=b'z' => "contains lower case",
            _ => "contains a character outside 0-9 A-Z + - _ =",
        });
    }
    if DEVICE_NAMES.contains(&body) {
        return Err("is a Windows device name");
    }
    Ok(())
}

/// Whether `b` may appear in a key (and, with `_` padding, in a shard name).
pub(crate) fn is_key_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'Z' | b'+' | b'-' | b'_' | b'=')
}

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 77;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Key> {
        Key::new(s)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&Cid> for Key {
    fn from(cid: &Cid) -> Key {
        Key::from_cid(cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_strips_slash() {
        assert_eq!(Key::new("/ABC").unwrap().as_str(), "ABC");
        assert_eq!(Key::new("A+-_=9").unwrap().as_str(), "A+-_=9");
        assert!(Key::new(&"A".repeat(250)).is_ok());
    }

    #[test]
    fn refuses_bad_keys() {
        for bad in [
            "", "/", "//A", "a", "A/B", "A\\B", "..", "A.B", "A\0B", "CON", "/NUL", "LPT9",
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Key::new(&"A".repeat(251)).is_err());
        // Device names only as whole keys.
        assert!(Key::new("CONX").is_ok());
    }

    #[test]
    fn multihash_round_trip() {
        let cid: Cid = "QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB"
            .parse()
            .unwrap();
        let key = Key::from_cid(&cid);
        assert!(key.as_str().starts_with("CIQ"), "{key}");
        assert_eq!(&key.to_multihash().unwrap(), cid.hash());
        let v1 = Cid::new_v1(0x55, *cid.hash());
        assert_eq!(Key::from_cid(&v1), key);
    }
}
