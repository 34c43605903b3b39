//! Streaming a batch's view of the keys: the store's, minus the batch's
//! deletes, plus its puts.

use super::staging::{self, Entries, Kind, ShardDirs};
use super::{Batch, State};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::Keys;

/// Iterator over the keys a commit would leave, from [`Batch::keys`]: each
/// key once, in no particular order, streamed (neither the store nor the
/// batch is held in memory).
pub struct BatchKeys<'a> {
    batch: &'a Batch,
    failed: Option<Error>,
    /// First the store's keys; then the staged puts, shard directory by
    /// shard directory.
    store: Option<Keys>,
    shards: Option<ShardDirs>,
    entries: Option<Entries>,
    done: bool,
}

impl<'a> BatchKeys<'a> {
    pub(super) fn new(batch: &'a Batch, failed: Option<Error>) -> BatchKeys<'a> {
        BatchKeys {
            store: Some(batch.store.keys()),
            batch,
            failed,
            shards: None,
            entries: None,
            done: false,
        }
    }

    /// The next store key that the batch does not delete.
    fn next_stored(&mut self) -> Option<Result<Key>> {
        let keys = self.store.as_mut()?;
        for k in keys {
            let k = match k {
                Ok(k) => k,
                Err(e) => return Some(Err(e)),
            };
            match self.batch.lookup(&k) {
                Ok(State::Deleted) => continue,
                Ok(_) => return Some(Ok(k)),
                Err(e) => return Some(Err(e)),
            }
        }
        self.store = None;
        None
    }

    /// The next staged put of a key the store does not hold.
    fn next_staged(&mut self) -> Option<Result<Key>> {
        loop {
            if let Some(entries) = self.entries.as_mut() {
                match entries.next() {
                    Some(Ok(e)) if matches!(e.kind, Kind::Put | Kind::Replace) => {
                        match self.batch.store.has(&e.key) {
                            Ok(true) => continue,
                            Ok(false) => return Some(Ok(e.key)),
                            Err(err) => return Some(Err(err)),
                        }
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Some(Err(err)),
                    None => self.entries = None,
                }
            }
            let shards = self.shards.as_mut()?;
            match shards.next()? {
                Ok((_, path)) => match Entries::new(&path) {
                    Ok(e) => self.entries = Some(e),
                    Err(err) => return Some(Err(err)),
                },
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

impl Iterator for BatchKeys<'_> {
    type Item = Result<Key>;

    fn next(&mut self) -> Option<Result<Key>> {
        if self.done {
            return None;
        }
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.store.is_some() {
            if let Some(r) = self.next_stored() {
                return Some(r);
            }
            match ShardDirs::new(&self.batch.dir.join(staging::BLOCKS)) {
                Ok(s) => self.shards = Some(s),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let r = self.next_staged();
        if r.is_none() {
            self.done = true;
        }
        r
    }
}
