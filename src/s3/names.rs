//! Object keys of a store under its prefix: the layout of a local store,
//! with `/` for the directory separator.
//!
//! ```text
//! PREFIX/SHARDING                      the shard function
//! PREFIX/_README                       explanation of the layout
//! PREFIX/diskUsage.cache               counters (written "initial-approximate")
//! PREFIX/<SHARD>/<KEY>.data            one block
//! PREFIX/.temp/lease-<WRITER>          one writer's lease
//! PREFIX/.temp/probe-<WRITER>          the conditional-create probe (short-lived)
//! PREFIX/.temp/batch-<WRITER>-<N>/<I>  a batch's staged blocks
//! PREFIX/.temp/batch-<WRITER>-<N>/commit  its commit record (the commit point)
//! ```

use object_store::path::Path;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::layout::{DATA_EXT, DISK_USAGE, README, SHARDING, TEMP};
use crate::shard::Shard;

/// Name of a batch's commit record inside its staging prefix.
pub(crate) const COMMIT: &str = "commit";

#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The prefix's parts (empty for a store at the root of the bucket).
    prefix: Vec<String>,
    pub(crate) shard: Shard,
}

impl Names {
    /// Checks a prefix (`a/b`, no empty, `.` or `..` parts; leading and
    /// trailing `/` are dropped).
    pub(crate) fn parse_prefix(prefix: &str) -> Result<Vec<String>> {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Vec::new());
        }
        let bad = |reason: String| Error::InvalidOption {
            option: "prefix",
            reason,
        };
        let parsed = Path::parse(trimmed).map_err(|e| bad(format!("{trimmed:?}: {e}")))?;
        let parts: Vec<String> = parsed.parts().map(|p| p.as_ref().to_string()).collect();
        if parts.iter().any(|p| p == "." || p == "..") {
            return Err(bad(format!("{trimmed:?} has a `.` or `..` part")));
        }
        Ok(parts)
    }

    pub(crate) fn new(prefix: Vec<String>, shard: Shard) -> Names {
        Names { prefix, shard }
    }

    /// The prefix as a string (`""` at the bucket's root).
    pub(crate) fn prefix_str(&self) -> String {
        self.prefix.join("/")
    }

    /// `PREFIX/<rel>` where `rel` is made of safe parts joined by `/`.
    pub(crate) fn object(&self, rel: &str) -> Path {
        let mut parts: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        parts.extend(rel.split('/'));
        Path::from_iter(parts)
    }

    /// The prefix itself, for listing (`None` at the bucket's root).
    pub(crate) fn root(&self) -> Option<Path> {
        if self.prefix.is_empty() {
            None
        } else {
            Some(Path::from_iter(self.prefix.iter().map(String::as_str)))
        }
    }

    pub(crate) fn sharding(&self) -> Path {
        self.object(SHARDING)
    }

    pub(crate) fn readme(&self) -> Path {
        self.object(README)
    }

    pub(crate) fn disk_usage(&self) -> Path {
        self.object(DISK_USAGE)
    }

    pub(crate) fn temp(&self) -> Path {
        self.object(TEMP)
    }

    /// `PREFIX/<SHARD>/<KEY>.data`.
    pub(crate) fn block(&self, key: &Key) -> Path {
        let name = format!("{}/{}{DATA_EXT}", self.shard.dir(key), key.as_str());
        self.object(&name)
    }

    pub(crate) fn lease(&self, writer: &str) -> Path {
        self.object(&format!("{TEMP}/lease-{writer}"))
    }

    pub(crate) fn probe(&self, writer: &str) -> Path {
        self.object(&format!("{TEMP}/probe-{writer}"))
    }

    /// The staging prefix of batch `id` (`batch-<WRITER>-<N>`).
    pub(crate) fn staging(&self, id: &str) -> Path {
        self.object(&format!("{TEMP}/{id}"))
    }

    pub(crate) fn staged(&self, id: &str, n: u64) -> Path {
        self.object(&format!("{TEMP}/{id}/{n}"))
    }

    pub(crate) fn record(&self, id: &str) -> Path {
        self.object(&format!("{TEMP}/{id}/{COMMIT}"))
    }

    /// The parts of `p` below the prefix, or `None` if it is not under it.
    pub(crate) fn relative<'a>(&self, p: &'a Path) -> Option<Vec<&'a str>> {
        let parts: Vec<&str> = p.as_ref().split('/').collect();
        if parts.len() < self.prefix.len() || parts[..self.prefix.len()] != self.prefix[..] {
            return None;
        }
        Some(parts[self.prefix.len()..].to_vec())
    }

    /// The key of a block object (`PREFIX/<SHARD>/<KEY>.data` with the
    /// shard directory the key belongs in), or `None` for anything else
    /// (metadata, `.temp/`, foreign or misplaced objects).
    pub(crate) fn block_key(&self, p: &Path) -> Option<Key> {
        let rel = self.relative(p)?;
        let [dir, file] = rel[..] else { return None };
        let name = file.strip_suffix(DATA_EXT)?;
        if dir.starts_with('.') || name.starts_with('.') {
            return None;
        }
        let key = Key::new(name).ok()?;
        // `Key::new` accepts a leading `/`, which cannot occur here; the
        // key must be spelled as stored.
        if key.as_str() != name || !self.shard.dir_matches(name, dir) {
            return None;
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_round_trip_and_foreign_objects_are_not_blocks() {
        let names = Names::new(Names::parse_prefix("/a/b/").unwrap(), Shard::default());
        let key = Key::new("CIQABCDEFGH").unwrap();
        let p = names.block(&key);
        assert_eq!(p.as_ref(), "a/b/FG/CIQABCDEFGH.data");
        assert_eq!(names.block_key(&p), Some(key));
        for other in [
            "a/b/SHARDING",
            "a/b/.temp/batch-x-1/0",
            "a/b/.temp/lease-x",
            "a/b/XX/CIQABCDEFGH.data",
            "a/b/FG/CIQABCDEFGH",
            "a/c/FG/CIQABCDEFGH.data",
            "a/b/FG/sub/CIQABCDEFGH.data",
        ] {
            assert_eq!(names.block_key(&Path::from(other)), None, "{other}");
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(Names::parse_prefix("a//b").is_err());
        assert!(Names::parse_prefix("a/../b").is_err());
        assert_eq!(Names::parse_prefix("").unwrap(), Vec::<String>::new());
    }
}
