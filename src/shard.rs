//! Shard functions: which directory a key's file lives in.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::key::{is_key_byte, Key};

const PREFIX: &str = "/repo/flatfs/shard/v1/";

/// A go-ds-flatfs v1 shard function, which picks a key's directory.
///
/// All three pad short keys with `_`, exactly as go-ds-flatfs does:
/// - `Prefix(n)`: the first `n` characters of `KEY + "_"×n`;
/// - `Suffix(n)`: the last `n` characters of `"_"×n + KEY`;
/// - `NextToLast(n)` (the default, `n` = 2): the `n` characters just before
///   the last one of `"_"×(n+1) + KEY`. For sha2-256 keys this fills 1,024
///   directories evenly.
///
/// `Display` and `FromStr` use the `SHARDING` file form,
/// `/repo/flatfs/shard/v1/next-to-last/2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shard {
    /// First `n` characters.
    Prefix(usize),
    /// Last `n` characters.
    Suffix(usize),
    /// The `n` characters before the last one.
    NextToLast(usize),
}

impl Default for Shard {
    fn default() -> Self {
        Shard::NextToLast(2)
    }
}

impl Shard {
    /// The shard parameter `n`.
    pub fn param(&self) -> usize {
        match *self {
            Shard::Prefix(n) | Shard::Suffix(n) | Shard::NextToLast(n) => n,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Shard::Prefix(_) => "prefix",
            Shard::Suffix(_) => "suffix",
            Shard::NextToLast(_) => "next-to-last",
        }
    }

    /// Checks that the parameter is at least 1 and small enough for a file name.
    pub fn validate(&self) -> Result<()> {
        let n = self.param();
        if n == 0 {
            return Err(self.invalid("parameter must be at least 1"));
        }
        if n > 200 {
            return Err(self.invalid("parameter too large"));
        }
        Ok(())
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidShard {
            spec: format!("{PREFIX}{}/{}", self.name(), self.param()),
            reason,
        }
    }

    /// The directory name for `key` as (left padding, a slice of the key,
    /// right padding): no allocation.
    pub(crate) fn dir_parts<'k>(&self, key: &'k str) -> (usize, &'k str, usize) {
        let len = key.len();
        match *self {
            Shard::Prefix(n) => {
                let take = n.min(len);
                (0, &key[..take], n - take)
            }
            Shard::Suffix(n) => {
                let take = n.min(len);
                (n - take, &key[len - take..], 0)
            }
            Shard::NextToLast(n) => {
                // The window [len-1-n, len-1) of the key, padded on the left.
                let end = len - 1;
                let start = end.saturating_sub(n);
                (n - (end - start), &key[start..end], 0)
            }
        }
    }

    /// Appends the directory name for `key` to `out` (no allocation on the hot path).
    pub(crate) fn push_dir(&self, key: &str, out: &mut String) {
        let (left, mid, right) = self.dir_parts(key);
        out.extend(std::iter::repeat_n('_', left));
        out.push_str(mid);
        out.extend(std::iter::repeat_n('_', right));
    }

    /// Whether `dir` is the directory this function gives `key`, without
    /// allocating (the listing's hot path).
    pub(crate) fn dir_matches(&self, key: &str, dir: &str) -> bool {
        let (k, d) = (key.as_bytes(), dir.as_bytes());
        let n = self.param();
        if d.len() != n {
            return false;
        }
        let at = |i: isize| {
            if i < 0 || i as usize >= k.len() {
                b'_'
            } else {
                k[i as usize]
            }
        };
        let start: isize = match *self {
            Shard::Prefix(_) => 0,
            Shard::Suffix(_) => k.len() as isize - n as isize,
            Shard::NextToLast(_) => k.len() as isize - 1 - n as isize,
        };
        d.iter()
            .enumerate()
            .all(|(j, &c)| at(start + j as isize) == c)
    }

    /// The directory name for `key`.
    pub fn dir(&self, key: &Key) -> String {
        let mut s = String::with_capacity(self.param());
        self.push_dir(key.as_str(), &mut s);
        s
    }

    /// Whether `name` could be a directory made by this shard function.
    pub(crate) fn is_dir_name(&self, name: &str) -> bool {
        name.len() == self.param() && name.bytes().all(is_key_byte)
    }

    /// The exact contents of a `SHARDING` file for this function.
    pub fn sharding_file(&self) -> String {
        format!("{self}\n")
    }

    /// Parses the contents of a `SHARDING` file (one trailing newline allowed).
    pub(crate) fn parse_file(text: &str) -> std::result::Result<Shard, String> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        line.parse::<Shard>().map_err(|e| e.to_string())
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.name(), self.param())
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Accepts the full form `/repo/flatfs/shard/v1/next-to-last/2` and the
    /// short form `next-to-last/2`.
    fn from_str(s: &str) -> Result<Shard> {
        let bad = |reason| Error::InvalidShard {
            spec: s.chars().take(100).collect(),
            reason,
        };
        let rest = s.strip_prefix(PREFIX).unwrap_or(s);
        let (name, param) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected NAME/N, e.g. next-to-last/2"))?;
        if param.is_empty() || !param.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("parameter is not a number"));
        }
        let n: usize = param.parse().map_err(|_| bad("parameter too large"))?;
        let shard = match name {
            "prefix" => Shard::Prefix(n),
            "suffix" => Shard::Suffix(n),
            "next-to-last" => Shard::NextToLast(n),
            _ => return Err(bad("unknown shard function")),
        };
        shard
            .validate()
            .map_err(|_| bad("parameter must be between 1 and 200"))?;
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(s: Shard, k: &str) -> String {
        s.dir(&Key::new(k).unwrap())
    }

    #[test]
    fn shard_functions_match_go_ds_flatfs() {
        assert_eq!(dir(Shard::Prefix(2), "ABCDEF"), "AB");
        assert_eq!(dir(Shard::Prefix(3), "A"), "A__");
        assert_eq!(dir(Shard::Suffix(2), "ABCDEF"), "EF");
        assert_eq!(dir(Shard::Suffix(3), "A"), "__A");
        assert_eq!(dir(Shard::NextToLast(2), "ABCDEF"), "DE");
        assert_eq!(dir(Shard::NextToLast(2), "AB"), "_A");
        assert_eq!(dir(Shard::NextToLast(2), "A"), "__");
        assert_eq!(dir(Shard::NextToLast(3), "ABC"), "_AB");
    }

    #[test]
    fn dir_matches_agrees_with_dir() {
        for s in [
            Shard::Prefix(1),
            Shard::Prefix(3),
            Shard::Suffix(2),
            Shard::NextToLast(2),
            Shard::NextToLast(4),
        ] {
            for k in ["A", "AB", "ABC", "CIQABCDEFGHIJ", "Z=-+_"] {
                let d = dir(s, k);
                assert!(s.dir_matches(k, &d), "{s} {k}");
                let (l, m, r) = s.dir_parts(k);
                assert_eq!(
                    format!("{}{m}{}", "_".repeat(l), "_".repeat(r)),
                    d,
                    "{s} {k}"
                );
                assert!(!s.dir_matches(k, "%%"), "{s} {k}");
                let mut other = d.clone().into_bytes();
                other[0] = if other[0] == b'Q' { b'R' } else { b'Q' };
                assert!(
                    !s.dir_matches(k, std::str::from_utf8(&other).unwrap()),
                    "{s} {k}"
                );
            }
        }
    }

    #[test]
    fn parse_and_display() {
        let s: Shard = "/repo/flatfs/shard/v1/next-to-last/2".parse().unwrap();
        assert_eq!(s, Shard::NextToLast(2));
        assert_eq!(s.sharding_file(), "/repo/flatfs/shard/v1/next-to-last/2\n");
        assert_eq!("prefix/3".parse::<Shard>().unwrap(), Shard::Prefix(3));
        for bad in [
            "prefix/0",
            "prefix/",
            "x/2",
            "prefix/-1",
            "/repo/flatfs/shard/v2/prefix/2",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!(Shard::parse_file("/repo/flatfs/shard/v1/suffix/2\n").is_ok());
        assert!(Shard::parse_file("/repo/flatfs/shard/v1/suffix/2\n\n").is_err());
    }
}
