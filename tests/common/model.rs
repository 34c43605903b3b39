//! An in-memory model of a store and its batches (DESIGN section 3), and a
//! runner that applies one sequence of operations to a real store and to the
//! model, checking every result against the model.
//!
//! Used by `tests/model.rs` (proptest) and by the fuzz target `store_ops`
//! (which includes this file by path), so it depends on nothing but
//! `flatstore` and `std`.
//!
//! The model's rules:
//! - a plain `put` of a present key keeps the stored value;
//! - in a batch, the first put of a key wins, a delete hides earlier puts,
//!   the last operation decides, and a put after a delete in the same batch
//!   replaces a stored value at commit (`delete A, put A`);
//! - batch reads see the batch's own puts and deletes over the store;
//! - nothing of a batch is visible before commit; discard and drop leave
//!   nothing; a reopen drops the open batches;
//! - the counters equal the sum over the blocks, and `.temp/` holds exactly
//!   one staging directory per open batch.
#![allow(dead_code)]

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flatstore::{Accuracy, Batch, CommitSummary, Durability, Key, Options, Shard, Store};

/// Keys the operations pick from: short ones (padded by the shard
/// functions), ones sharing a shard directory, and every special character.
pub const KEY_NAMES: [&str; 8] = ["A", "B", "AB", "BA", "CIQAAA", "CIQAAB", "Z+-_=", "9"];
/// Candidate values per key.
pub const VALUES: u8 = 4;
/// Batches that may be open at once.
pub const BATCHES: u8 = 2;
const LENS: [usize; 7] = [0, 1, 3, 100, 4096, 10_000, 65_537];

/// One operation. Indices are taken modulo the number of keys, values and
/// batches, so any values are valid.
#[derive(Clone, Debug)]
pub enum Op {
    Put { key: u8, value: u8 },
    PutReader { key: u8, value: u8 },
    Delete { key: u8 },
    Get { key: u8 },
    GetRange { key: u8, offset: u32, len: u32 },
    Has { key: u8 },
    Size { key: u8 },
    Keys,
    Stats,
    BatchPut { batch: u8, key: u8, value: u8 },
    BatchPutReader { batch: u8, key: u8, value: u8 },
    BatchDelete { batch: u8, key: u8 },
    BatchGet { batch: u8, key: u8 },
    BatchHas { batch: u8, key: u8 },
    BatchSize { batch: u8, key: u8 },
    BatchKeys { batch: u8 },
    Commit { batch: u8 },
    Discard { batch: u8 },
    DropBatch { batch: u8 },
    Reopen { fsync: bool },
}

impl Op {
    /// Decodes one operation from three bytes (for fuzzing).
    pub fn decode(b: [u8; 3]) -> Op {
        let (key, value, batch) = (b[1], b[2], b[1] >> 4);
        match b[0] % 20 {
            0 => Op::Put { key, value },
            1 => Op::PutReader { key, value },
            2 => Op::Delete { key },
            3 => Op::Get { key },
            4 => Op::GetRange {
                key,
                offset: u32::from(value) * 997,
                len: u32::from(b[1]) * 131,
            },
            5 => Op::Has { key },
            6 => Op::Size { key },
            7 => Op::Keys,
            8 => Op::Stats,
            9 | 10 => Op::BatchPut { batch, key, value },
            11 => Op::BatchPutReader { batch, key, value },
            12 => Op::BatchDelete { batch, key },
            13 => Op::BatchGet { batch, key },
            14 => Op::BatchHas { batch, key },
            15 => Op::BatchSize { batch, key },
            16 => Op::BatchKeys { batch },
            17 => Op::Commit { batch },
            18 => {
                if value & 1 == 0 {
                    Op::Discard { batch }
                } else {
                    Op::DropBatch { batch }
                }
            }
            _ => Op::Reopen {
                fsync: value & 1 == 1,
            },
        }
    }
}

/// The key with index `i`.
pub fn key(i: u8) -> Key {
    Key::new(KEY_NAMES[i as usize % KEY_NAMES.len()]).unwrap()
}

/// Candidate value `v` of key `k`: deterministic bytes of varied lengths,
/// all distinct.
pub fn value(k: u8, v: u8) -> Vec<u8> {
    let (k, v) = (k as usize % KEY_NAMES.len(), v % VALUES);
    let len = LENS[(k + v as usize * 3) % LENS.len()];
    let mut x = ((k as u64) << 8 | v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Tag short values so that no two candidates are equal.
    if len > 0 && len < 3 {
        out[0] = (k * 16 + v as usize) as u8;
    }
    out
}

/// What a batch says of a key.
#[derive(Clone, Debug)]
enum BOp {
    Put { value: Vec<u8>, replace: bool },
    Delete,
}

/// The model of one open batch: the last word per key.
#[derive(Default)]
struct BatchModel(HashMap<Key, BOp>);

impl BatchModel {
    /// A put: `true` if it is kept (no earlier put of the key wins).
    fn put(&mut self, k: &Key, v: &[u8]) -> bool {
        let replace = match self.0.get(k) {
            Some(BOp::Put { .. }) => return false,
            Some(BOp::Delete) => true,
            None => false,
        };
        self.0.insert(
            k.clone(),
            BOp::Put {
                value: v.to_vec(),
                replace,
            },
        );
        true
    }

    fn get<'a>(&'a self, store: &'a BTreeMap<Key, Vec<u8>>, k: &Key) -> Option<&'a Vec<u8>> {
        match self.0.get(k) {
            Some(BOp::Put { value, .. }) => Some(value),
            Some(BOp::Delete) => None,
            None => store.get(k),
        }
    }

    fn keys(&self, store: &BTreeMap<Key, Vec<u8>>) -> Vec<Key> {
        let mut keys: BTreeSet<Key> = store.keys().cloned().collect();
        for (k, op) in &self.0 {
            match op {
                BOp::Put { .. } => keys.insert(k.clone()),
                BOp::Delete => keys.remove(k),
            };
        }
        keys.into_iter().collect()
    }

    /// Applies the batch to `store`; returns what commit should report.
    fn commit(self, store: &mut BTreeMap<Key, Vec<u8>>) -> CommitSummary {
        let mut s = CommitSummary::default();
        for (k, op) in self.0 {
            match op {
                BOp::Put { value, replace } => {
                    if replace && store.remove(&k).is_some() {
                        s.deleted += 1;
                    }
                    match store.entry(k) {
                        Entry::Occupied(_) => s.already_present += 1,
                        Entry::Vacant(e) => {
                            s.written += 1;
                            s.bytes += value.len() as u64;
                            e.insert(value);
                        }
                    }
                }
                BOp::Delete => {
                    if store.remove(&k).is_some() {
                        s.deleted += 1;
                    }
                }
            }
        }
        s
    }
}

/// A real store and its model, driven by [`Op`]s.
pub struct Runner {
    root: PathBuf,
    shard: Shard,
    store: Option<Store>,
    model: BTreeMap<Key, Vec<u8>>,
    batches: Vec<Option<(Batch, BatchModel)>>,
    /// Operations applied so far (for messages).
    pub step: usize,
}

impl Runner {
    /// A new store at `root` (which must not exist yet) with `shard`.
    pub fn new(root: &Path, shard: Shard, durability: Durability) -> Runner {
        let store = Store::open(root, Options::default().shard(shard).durability(durability))
            .expect("create store");
        Runner {
            root: root.to_path_buf(),
            shard,
            store: Some(store),
            model: BTreeMap::new(),
            batches: (0..BATCHES).map(|_| None).collect(),
            step: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// The open batch `b`, opened now if it is not.
    fn batch(&mut self, b: u8) -> &mut (Batch, BatchModel) {
        let slot = b as usize % self.batches.len();
        if self.batches[slot].is_none() {
            let batch = self.store().batch().expect("open a batch");
            self.batches[slot] = Some((batch, BatchModel::default()));
        }
        self.batches[slot].as_mut().unwrap()
    }

    fn take_batch(&mut self, b: u8) -> Option<(Batch, BatchModel)> {
        let slot = b as usize % self.batches.len();
        self.batches[slot].take()
    }

    /// Applies `op` to the store and the model, checking every result.
    pub fn apply(&mut self, op: &Op) {
        self.step += 1;
        let at = format!("step {} ({op:?})", self.step);
        match *op {
            Op::Put { key: k, value: v } => {
                let (key, val) = (key(k), value(k, v));
                self.store().put(&key, &val).expect(&at);
                self.model.entry(key).or_insert(val);
            }
            Op::PutReader { key: k, value: v } => {
                let (key, val) = (key(k), value(k, v));
                let n = self.store().put_reader(&key, &val[..]).expect(&at);
                assert_eq!(n, val.len() as u64, "{at}: bytes read");
                self.model.entry(key).or_insert(val);
            }
            Op::Delete { key: k } => {
                let key = key(k);
                let existed = self.store().delete(&key).expect(&at);
                assert_eq!(existed, self.model.remove(&key).is_some(), "{at}");
            }
            Op::Get { key: k } => {
                let key = key(k);
                let got = self.store().get(&key).expect(&at);
                assert_eq!(got.as_ref(), self.model.get(&key), "{at}");
            }
            Op::GetRange {
                key: k,
                offset,
                len,
            } => {
                let key = key(k);
                let got = self
                    .store()
                    .get_range(&key, u64::from(offset), u64::from(len))
                    .expect(&at);
                let want = self.model.get(&key).map(|v| {
                    let start = (offset as usize).min(v.len());
                    let end = start.saturating_add(len as usize).min(v.len());
                    v[start..end].to_vec()
                });
                assert_eq!(got, want, "{at}");
            }
            Op::Has { key: k } => {
                let key = key(k);
                let has = self.store().has(&key).expect(&at);
                assert_eq!(has, self.model.contains_key(&key), "{at}");
            }
            Op::Size { key: k } => {
                let key = key(k);
                let size = self.store().size(&key).expect(&at);
                assert_eq!(size, self.model.get(&key).map(|v| v.len() as u64), "{at}");
            }
            Op::Keys => self.check_all(&at),
            Op::Stats => self.check_stats(&at),
            Op::BatchPut {
                batch: b,
                key: k,
                value: v,
            } => {
                let (key, val) = (key(k), value(k, v));
                let (batch, m) = self.batch(b);
                batch.put(&key, &val).expect(&at);
                m.put(&key, &val);
            }
            Op::BatchPutReader {
                batch: b,
                key: k,
                value: v,
            } => {
                let (key, val) = (key(k), value(k, v));
                let (batch, m) = self.batch(b);
                let n = batch.put_reader(&key, &val[..]).expect(&at);
                let kept = m.put(&key, &val);
                let want = if kept { val.len() as u64 } else { 0 };
                assert_eq!(n, want, "{at}: bytes read");
            }
            Op::BatchDelete { batch: b, key: k } => {
                let key = key(k);
                let (batch, m) = self.batch(b);
                batch.delete(&key).expect(&at);
                m.0.insert(key, BOp::Delete);
            }
            Op::BatchGet { batch: b, key: k } => {
                let key = key(k);
                let Some((batch, m)) = &self.batches[b as usize % self.batches.len()] else {
                    return;
                };
                let got = batch.get(&key).expect(&at);
                assert_eq!(got.as_ref(), m.get(&self.model, &key), "{at}");
            }
            Op::BatchHas { batch: b, key: k } => {
                let key = key(k);
                let Some((batch, m)) = &self.batches[b as usize % self.batches.len()] else {
                    return;
                };
                let has = batch.has(&key).expect(&at);
                assert_eq!(has, m.get(&self.model, &key).is_some(), "{at}");
            }
            Op::BatchSize { batch: b, key: k } => {
                let key = key(k);
                let Some((batch, m)) = &self.batches[b as usize % self.batches.len()] else {
                    return;
                };
                let size = batch.size(&key).expect(&at);
                let want = m.get(&self.model, &key).map(|v| v.len() as u64);
                assert_eq!(size, want, "{at}");
            }
            Op::BatchKeys { batch: b } => {
                let Some((batch, m)) = &self.batches[b as usize % self.batches.len()] else {
                    return;
                };
                let mut keys: Vec<Key> = batch.keys().map(|k| k.expect(&at)).collect();
                keys.sort();
                assert_eq!(keys, m.keys(&self.model), "{at}");
            }
            Op::Commit { batch: b } => {
                let Some((batch, m)) = self.take_batch(b) else {
                    return;
                };
                let got = batch.commit().expect(&at);
                let want = m.commit(&mut self.model);
                assert_eq!(got, want, "{at}: commit summary");
                self.check_temp(&at);
            }
            Op::Discard { batch: b } => {
                if let Some((batch, _)) = self.take_batch(b) {
                    batch.discard().expect(&at);
                    self.check_temp(&at);
                }
            }
            Op::DropBatch { batch: b } => {
                if let Some((batch, _)) = self.take_batch(b) {
                    drop(batch);
                    self.check_temp(&at);
                }
            }
            Op::Reopen { fsync } => self.reopen(fsync, &at),
        }
    }

    /// Drops the open batches and the store, and opens it again.
    fn reopen(&mut self, fsync: bool, at: &str) {
        for b in &mut self.batches {
            b.take();
        }
        self.store.take().unwrap().close().expect(at);
        let durability = if fsync {
            Durability::Fsync
        } else {
            Durability::None
        };
        // Alternate between an explicit (matching) shard function and none.
        let mut options = Options::default().durability(durability);
        if fsync {
            options = options.shard(self.shard);
        }
        self.store = Some(Store::open(&self.root, options).expect(at));
        assert_eq!(self.store().shard(), self.shard, "{at}");
        self.check_all(at);
    }

    /// `.temp/` holds one staging directory per open batch and the open
    /// writer's owner file, nothing else.
    fn check_temp(&self, at: &str) {
        let open = self.batches.iter().filter(|b| b.is_some()).count();
        // (Also compiled into the fuzz target alone: no helpers of `common`.)
        let all: Vec<String> = match std::fs::read_dir(self.root.join(".temp")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        let (owners, entries): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|n| n.starts_with("owner-"));
        assert_eq!(owners.len(), 1, "{at}");
        assert_eq!(entries.len(), open, "{at}: .temp holds {entries:?}");
    }

    fn check_stats(&self, at: &str) {
        let start = Instant::now();
        let s = loop {
            let s = self.store().stats();
            if s.accuracy == Accuracy::Exact {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{at}: {s:?}");
            std::thread::sleep(Duration::from_millis(2));
        };
        let bytes: u64 = self.model.values().map(|v| v.len() as u64).sum();
        assert_eq!(
            (s.blocks, s.bytes),
            (self.model.len() as u64, bytes),
            "{at}: counters"
        );
    }

    /// The store holds exactly the model: keys, sizes, contents, counters,
    /// and `.temp/` only the open batches.
    pub fn check_all(&self, at: &str) {
        let store = self.store();
        let mut entries: Vec<(Key, u64)> = store.entries().map(|e| e.expect(at)).collect();
        entries.sort();
        let want: Vec<(Key, u64)> = self
            .model
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect();
        assert_eq!(entries, want, "{at}: entries");
        for (k, v) in &self.model {
            assert_eq!(store.get(k).expect(at).as_ref(), Some(v), "{at}: {k}");
        }
        self.check_stats(at);
        self.check_temp(at);
    }

    /// Ends the run: commits nothing more, checks everything, closes.
    pub fn finish(mut self) {
        let at = format!("end after {} steps", self.step);
        self.check_all(&at);
        self.reopen(false, &at);
        for b in &mut self.batches {
            b.take();
        }
        self.store.take().unwrap().close().expect(&at);
    }
}
