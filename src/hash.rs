//! Multihash checking: which hash functions the store can compute, and a
//! streaming hasher that checks data against an expected multihash.
//!
//! The hashers are `multihash-codetable`'s (the same code table as
//! `Code::try_from(code)` + `MultihashDigest::digest`), used through their
//! streaming interface so that [`Store::verify`](crate::Store::verify) can
//! hash a block file without reading it into memory.

use std::io;

use multihash::Multihash;
use multihash_codetable::{Blake3Hasher, Sha2_256, Sha2_512};
use multihash_derive::Hasher as _;

use crate::key::Key;

/// Multihash code of the identity "hash": the digest is the data itself.
pub const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256 (CIDv0 and most IPFS data).
pub const SHA2_256: u64 = 0x12;
/// Multihash code of sha2-512.
pub const SHA2_512: u64 = 0x13;
/// Multihash code of blake3 (any digest length up to 64 bytes).
pub const BLAKE3: u64 = 0x1e;

/// Whether flatstore can check data against a multihash with this code:
/// identity, sha2-256, sha2-512 and blake3.
pub fn is_supported(code: u64) -> bool {
    matches!(code, IDENTITY | SHA2_256 | SHA2_512 | BLAKE3)
}

/// The outcome of checking data against a multihash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// The data hashes to the expected multihash.
    Match,
    /// It does not; the string is what it hashes to (a multihash in base32,
    /// the form of a store key, or a description for identity data too long
    /// to be a multihash).
    Mismatch(String),
    /// The hash function (or the digest length asked for) is not one we can compute.
    Unsupported,
}

/// Checks `data` against `expected` in one call.
pub(crate) fn check(expected: &Multihash<64>, data: &[u8]) -> Check {
    match StreamHasher::new(expected) {
        Some(mut h) => {
            h.update(data);
            h.finish(expected)
        }
        None => Check::Unsupported,
    }
}

/// A hasher for the function (and digest length) of one expected multihash.
/// Implements [`io::Write`], so a file can be `io::copy`'d into it.
pub(crate) struct StreamHasher {
    kind: Kind,
}

enum Kind {
    Sha256(Sha2_256),
    Sha512(Sha2_512),
    Blake3(Box<Blake3Hasher<64>>),
    /// The data seen so far, up to one byte more than the digest (enough to
    /// tell that it is too long).
    Identity(Vec<u8>, u64),
}

impl StreamHasher {
    /// A hasher able to produce `expected`'s kind of digest, or `None` if the
    /// function is unsupported or the digest is longer than it can produce.
    pub(crate) fn new(expected: &Multihash<64>) -> Option<StreamHasher> {
        let size = expected.size() as usize;
        let kind = match expected.code() {
            SHA2_256 if (1..=32).contains(&size) => Kind::Sha256(Sha2_256::default()),
            SHA2_512 if (1..=64).contains(&size) => Kind::Sha512(Sha2_512::default()),
            BLAKE3 if (1..=64).contains(&size) => Kind::Blake3(Box::default()),
            IDENTITY => Kind::Identity(Vec::with_capacity(size + 1), 0),
            _ => return None,
        };
        Some(StreamHasher { kind })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match &mut self.kind {
            Kind::Sha256(h) => h.update(data),
            Kind::Sha512(h) => h.update(data),
            Kind::Blake3(h) => h.update(data),
            Kind::Identity(seen, total) => {
                let room = (65usize).saturating_sub(seen.len());
                seen.extend_from_slice(&data[..data.len().min(room)]);
                *total += data.len() as u64;
            }
        }
    }

    /// Compares the digest of everything written with `expected` (same
    /// function, same digest length; shorter lengths are truncated digests,
    /// as go-multihash computes them).
    pub(crate) fn finish(self, expected: &Multihash<64>) -> Check {
        let size = expected.size() as usize;
        let mut buf = [0u8; 64];
        match self.kind {
            Kind::Sha256(mut h) => buf[..size].copy_from_slice(&h.finalize()[..size]),
            Kind::Sha512(mut h) => buf[..size].copy_from_slice(&h.finalize()[..size]),
            Kind::Blake3(mut h) => h.finalize_xof_fill(&mut buf[..size]),
            Kind::Identity(seen, total) => {
                if seen == expected.digest() {
                    return Check::Match;
                }
                return Check::Mismatch(match Multihash::<64>::wrap(IDENTITY, &seen) {
                    Ok(mh) if total as usize == seen.len() => Key::from_multihash(&mh).to_string(),
                    _ => format!("identity data of {total} bytes"),
                });
            }
        }
        let digest = &buf[..size];
        if digest == expected.digest() {
            Check::Match
        } else {
            match Multihash::<64>::wrap(expected.code(), digest) {
                Ok(mh) => Check::Mismatch(Key::from_multihash(&mh).to_string()),
                Err(_) => Check::Mismatch("an unrepresentable multihash".into()),
            }
        }
    }
}

impl io::Write for StreamHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multihash_codetable::{Code, MultihashDigest};

    #[test]
    fn matches_the_code_table() {
        for code in [Code::Sha2_256, Code::Sha2_512, Code::Blake3_256] {
            let mh = code.digest(b"hello");
            assert_eq!(check(&mh, b"hello"), Check::Match, "{code:?}");
            let Check::Mismatch(actual) = check(&mh, b"hellp") else {
                panic!("{code:?}: no mismatch");
            };
            let actual_mh = Key::new(&actual).unwrap().to_multihash().unwrap();
            assert_eq!(actual_mh, code.digest(b"hellp"));
        }
    }

    #[test]
    fn truncated_and_long_digests() {
        let full = Code::Sha2_256.digest(b"x");
        let short = Multihash::<64>::wrap(SHA2_256, &full.digest()[..20]).unwrap();
        assert_eq!(check(&short, b"x"), Check::Match);
        // blake3 is an XOF: a 64-byte digest extends the 32-byte one.
        let mut out = [0u8; 64];
        let mut h = Blake3Hasher::<64>::default();
        h.update(b"x");
        h.finalize_xof_fill(&mut out);
        let long = Multihash::<64>::wrap(BLAKE3, &out).unwrap();
        assert_eq!(check(&long, b"x"), Check::Match);
        assert_eq!(&out[..32], Code::Blake3_256.digest(b"x").digest());
    }

    #[test]
    fn identity_and_unsupported() {
        let id = Multihash::<64>::wrap(IDENTITY, b"abc").unwrap();
        assert_eq!(check(&id, b"abc"), Check::Match);
        assert!(matches!(check(&id, b"abd"), Check::Mismatch(_)));
        assert!(matches!(check(&id, &[7u8; 100]), Check::Mismatch(s) if s.contains("100 bytes")));
        let mut h = StreamHasher::new(&id).unwrap();
        h.update(b"ab");
        assert!(matches!(h.finish(&id), Check::Mismatch(_)));
        let sha3 = Multihash::<64>::wrap(0x16, &[0; 32]).unwrap();
        assert_eq!(check(&sha3, b""), Check::Unsupported);
        let too_long = Multihash::<64>::wrap(SHA2_256, &[0; 40]).unwrap();
        assert_eq!(check(&too_long, b""), Check::Unsupported);
    }
}
