//! What an open does with what other writers left in `.temp/`.
//!
//! | found in `.temp/` | read-write open | read-only open |
//! |---|---|---|
//! | a live writer's batch (its lease fresh) | left alone | left alone |
//! | a dead writer's batch without a commit record | its objects removed | ignored |
//! | a dead writer's batch with a commit record | rolled forward (published), then the record removed, then the staged objects | [`Error::NeedsRecovery`] |
//! | a commit record this version cannot read | [`Error::CorruptCommitRecord`], the batch left as it is | same |
//! | a dead writer's lease or probe object | removed (after its batches) | ignored |
//! | anything else (foreign objects) | left alone | left alone |
//!
//! A writer is dead when its lease object is absent, or was last written
//! longer ago than its time to live plus [`SLACK`](super::lease::SLACK). A
//! read-write open compares with the service's time of its own lease write;
//! a read-only open, which writes nothing, with this machine's clock.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::s3::batch;
use crate::s3::lease::{self, LeaseInfo};
use crate::s3::names::Names;
use crate::s3::runtime::{is_not_found, os_err};
use crate::s3::{head, S3Options};

/// What a recovery did ([`S3Store::recovered`](super::S3Store::recovered),
/// [`S3Store::recover`](super::S3Store::recover)).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverySummary {
    /// Dead writers' committed batches finished (published and removed).
    pub rolled_forward: u64,
    /// Dead writers' uncommitted batches removed.
    pub removed: u64,
    /// Live writers' batches left alone.
    pub live: u64,
    /// Dead writers' leases removed.
    pub leases_removed: u64,
}

/// The writer token in a batch id `batch-<WRITER>-<N>`.
pub(crate) fn batch_writer(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("batch-")?;
    let (token, n) = rest.rsplit_once('-')?;
    (!token.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(token)
}

/// `.temp/`'s leases (writer → lease object), probes and batch ids.
struct Temp {
    leases: HashMap<String, Path>,
    probes: Vec<(String, Path)>,
    batches: Vec<String>,
}

async fn list_temp(st: &dyn ObjectStore, names: &Names) -> Result<Temp> {
    let temp = names.temp();
    let listing = st
        .list_with_delimiter(Some(&temp))
        .await
        .map_err(os_err("list", &temp))?;
    let mut t = Temp {
        leases: HashMap::new(),
        probes: Vec::new(),
        batches: Vec::new(),
    };
    for obj in listing.objects {
        let Some(name) = obj.location.filename() else {
            continue;
        };
        if let Some(token) = name.strip_prefix("lease-") {
            t.leases.insert(token.to_string(), obj.location.clone());
        } else if let Some(token) = name.strip_prefix("probe-") {
            t.probes.push((token.to_string(), obj.location.clone()));
        }
    }
    for p in listing.common_prefixes {
        if let Some(id) = p.filename() {
            if batch_writer(id).is_some() {
                t.batches.push(id.to_string());
            }
        }
    }
    Ok(t)
}

/// Liveness of other writers, each lease read once.
struct Liveness<'a> {
    st: &'a dyn ObjectStore,
    leases: &'a HashMap<String, Path>,
    now: SystemTime,
    fallback_ttl: Duration,
    seen: HashMap<String, bool>,
}

impl Liveness<'_> {
    async fn alive(&mut self, token: &str) -> Result<bool> {
        if let Some(&a) = self.seen.get(token) {
            return Ok(a);
        }
        let alive = match self.leases.get(token) {
            None => false,
            Some(path) => match lease::read(self.st, path, self.fallback_ttl).await? {
                None => false,
                Some(info) => !LeaseInfo::expired(&info, self.now),
            },
        };
        self.seen.insert(token.to_string(), alive);
        Ok(alive)
    }
}

/// Recovers dead writers' work (see the module documentation). `own` is
/// this handle's writer token, `active` its batches still open; its other
/// batches count as dead (a commit whose publish failed, a dropped batch
/// whose removal failed).
pub(crate) async fn recover(
    st: &dyn ObjectStore,
    names: &Names,
    options: &S3Options,
    own: &str,
    now: SystemTime,
    active: &[String],
) -> Result<RecoverySummary> {
    let temp = list_temp(st, names).await?;
    let mut live = Liveness {
        st,
        leases: &temp.leases,
        now,
        fallback_ttl: options.lease_ttl,
        seen: HashMap::new(),
    };
    let mut summary = RecoverySummary::default();
    for id in &temp.batches {
        let token = batch_writer(id).expect("listed batches parse");
        let alive = if token == own {
            active.iter().any(|a| a == id)
        } else {
            live.alive(token).await?
        };
        if alive {
            summary.live += 1;
            continue;
        }
        if head(st, &names.record(id)).await?.is_some() {
            batch::replay(st, names, options, id).await?;
            summary.rolled_forward += 1;
        } else {
            batch::remove_staging(st, names, options, id).await?;
            summary.removed += 1;
        }
    }
    for (token, path) in &temp.leases {
        if token != own && !live.alive(token).await? {
            delete_quietly(st, path).await?;
            summary.leases_removed += 1;
        }
    }
    for (token, path) in &temp.probes {
        if token != own && !live.alive(token).await? {
            delete_quietly(st, path).await?;
        }
    }
    Ok(summary)
}

/// A read-only open's check: [`Error::NeedsRecovery`] when a writer that is
/// dead by this machine's clock left a committed batch.
pub(crate) async fn check_read_only(
    st: &dyn ObjectStore,
    names: &Names,
    options: &S3Options,
    location: &str,
) -> Result<()> {
    let temp = list_temp(st, names).await?;
    let mut live = Liveness {
        st,
        leases: &temp.leases,
        now: SystemTime::now(),
        fallback_ttl: options.lease_ttl,
        seen: HashMap::new(),
    };
    for id in &temp.batches {
        let token = batch_writer(id).expect("listed batches parse");
        if !live.alive(token).await? && head(st, &names.record(id)).await?.is_some() {
            // An unreadable record is reported as such.
            batch::read_record(st, names, id).await?;
            return Err(Error::NeedsRecovery {
                path: location.into(),
            });
        }
    }
    Ok(())
}

async fn delete_quietly(st: &dyn ObjectStore, path: &Path) -> Result<()> {
    match st.delete(path).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(os_err("delete", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::batch_writer;

    #[test]
    fn batch_ids_name_their_writer() {
        assert_eq!(batch_writer("batch-0123abcd-7"), Some("0123abcd"));
        assert_eq!(batch_writer("batch-0123abcd-"), None);
        assert_eq!(batch_writer("batch--7"), None);
        assert_eq!(batch_writer("batchx-1-2"), None);
        assert_eq!(batch_writer("batch-a-b"), None);
    }
}
