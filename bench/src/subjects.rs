//! The implementations measured: flatstore, the floor (bare system calls with
//! `std` alone), and the embedded peers.
//!
//! Every subject stores a block under its store key (`CIQ…`, the same bytes
//! for everyone) and offers the same operations. What "durability off" means
//! for each is in [`Subject::durability_note`] and in BENCHMARKS.md.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use flatstore::{Accuracy, Durability, Key, Options, Store};

use crate::data::Blocks;

/// Fsync on or off, for the subjects that let one choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    Off,
    On,
}

impl Sync {
    pub fn name(self) -> &'static str {
        match self {
            Sync::Off => "off",
            Sync::On => "fsync",
        }
    }

    pub fn parse(s: &str) -> Result<Sync> {
        match s {
            "off" | "none" => Ok(Sync::Off),
            "fsync" | "on" => Ok(Sync::On),
            _ => bail!("unknown durability {s:?} (off, fsync)"),
        }
    }
}

/// Times of an open (W6).
pub struct OpenTimes {
    /// Until `open` returned.
    pub open: Duration,
    /// Until the store's counters were exact, where the subject has such a
    /// notion and it differs from `open` (flatstore after a crash).
    pub exact: Option<Duration>,
}

/// One implementation under test.
pub trait Subject: std::marker::Sync {
    fn name(&self) -> &'static str;

    /// Whether the subject can run with this durability.
    fn supports(&self, sync: Sync) -> bool {
        let _ = sync;
        true
    }

    /// W1/W2: open a fresh store at `dir`, put every block in one batch (or
    /// the closest thing the subject has), commit, close. Timed as a whole by
    /// the caller.
    fn import(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<()>;

    /// W7: open a fresh store (untimed), put every block singly (timed),
    /// close (untimed). Returns the time of the puts.
    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration>;

    /// Opens an existing store for reading (W3–W5).
    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>>;

    /// After a preparing import: make the store look like one that has been
    /// in use (flush memtables), so reads hit the subject's on-disk format.
    fn settle(&self, dir: &Path) -> Result<()> {
        let _ = dir;
        Ok(())
    }

    /// W6: time the open of the existing store at `dir` with default
    /// options. `crashed` says the store was not closed cleanly.
    fn open_time(&self, dir: &Path, crashed: bool) -> Result<Option<OpenTimes>> {
        let _ = (dir, crashed);
        Ok(None)
    }

    /// W6: open the store at `dir` with default options and put one block
    /// durably, leaving the store open; the caller then kills the process.
    fn crash_prepare(&self, dir: &Path, key: &Key, data: &[u8]) -> Result<bool> {
        let _ = (dir, key, data);
        Ok(false)
    }
}

/// An open store, shared by the reading threads.
pub trait Opened: std::marker::Sync {
    /// A reader for one thread (a read transaction, a buffer…).
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
}

/// Reads of one thread.
pub trait Reader {
    /// The block's bytes, as an owned buffer; returns their length.
    fn get(&mut self, key: &Key) -> Result<Option<usize>>;
    fn has(&mut self, key: &Key) -> Result<bool>;
    /// Enumerates the keys; returns how many.
    fn keys(&mut self) -> Result<u64>;
    /// Enumerates the keys with sizes; returns how many and their total size.
    fn entries(&mut self) -> Result<(u64, u64)>;
}

pub fn all() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(Floor(1)),
        Box::new(Floor(2)),
        Box::new(Floor(4)),
        Box::new(Flat(None)),
        Box::new(Flat(Some(1))),
        Box::new(Flat(Some(2))),
        Box::new(Flat(Some(4))),
        Box::new(Flat(Some(8))),
        Box::new(Lmdb),
        Box::new(Redb),
        Box::new(Fjall),
        Box::new(Cacache),
    ]
}

// ---------------------------------------------------------------- flatstore

/// flatstore with the library's default options, or (`Some(n)`) with
/// `Options::writer_threads(n)`: the variants `flatstore-wtN`, only run when
/// named in `--subjects`.
pub struct Flat(pub Option<usize>);

/// Whether a subject runs only when asked for by name.
pub fn on_request(name: &str) -> bool {
    name.starts_with("flatstore-wt")
}

impl Flat {
    fn options(&self, sync: Sync) -> Options {
        let o = Options::default().durability(match sync {
            Sync::Off => Durability::None,
            Sync::On => Durability::Fsync,
        });
        match self.0 {
            Some(n) => o.writer_threads(n),
            None => o,
        }
    }
}

impl Subject for Flat {
    fn name(&self) -> &'static str {
        match self.0 {
            None => "flatstore",
            Some(1) => "flatstore-wt1",
            Some(2) => "flatstore-wt2",
            Some(4) => "flatstore-wt4",
            Some(8) => "flatstore-wt8",
            Some(_) => "flatstore-wt?",
        }
    }

    fn import(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<()> {
        let store = Store::open(dir, self.options(sync))?;
        let batch = store.batch()?;
        for (key, data) in blocks.iter() {
            batch.put(key, data)?;
        }
        batch.commit()?;
        store.close()?;
        Ok(())
    }

    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration> {
        let store = Store::open(dir, self.options(sync))?;
        let start = Instant::now();
        for (key, data) in blocks.iter() {
            store.put(key, data)?;
        }
        let took = start.elapsed();
        store.close()?;
        Ok(took)
    }

    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>> {
        Ok(Box::new(Store::open(
            dir,
            Options::default().durability(Durability::None),
        )?))
    }

    fn open_time(&self, dir: &Path, crashed: bool) -> Result<Option<OpenTimes>> {
        let start = Instant::now();
        let store = Store::open(dir, Options::default())?;
        let open = start.elapsed();
        let mut exact = None;
        if crashed {
            loop {
                match store.stats().accuracy {
                    Accuracy::Exact => break,
                    Accuracy::Recomputing => std::thread::sleep(Duration::from_micros(100)),
                    a => bail!("counters after a crash: {a:?}"),
                }
            }
            exact = Some(start.elapsed());
        } else if store.stats().accuracy != Accuracy::Exact {
            bail!("counters not exact after a clean close");
        }
        store.close()?;
        Ok(Some(OpenTimes { open, exact }))
    }

    fn crash_prepare(&self, dir: &Path, key: &Key, data: &[u8]) -> Result<bool> {
        let store = Store::open(dir, Options::default())?;
        store.put(key, data)?;
        std::mem::forget(store);
        Ok(true)
    }
}

impl Opened for Store {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(FlatReader(self)))
    }
}

struct FlatReader<'a>(&'a Store);

impl Reader for FlatReader<'_> {
    fn get(&mut self, key: &Key) -> Result<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.len()))
    }
    fn has(&mut self, key: &Key) -> Result<bool> {
        Ok(self.0.has(key)?)
    }
    fn keys(&mut self) -> Result<u64> {
        let mut n = 0;
        for k in self.0.keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }
    fn entries(&mut self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for e in self.0.entries() {
            bytes += e?.1;
            n += 1;
        }
        Ok((n, bytes))
    }
}

// ---------------------------------------------------------------- the floor

/// The bare system calls a flat-filesystem store cannot avoid, with `std`
/// alone and no bookkeeping: the same `<root>/<next-to-last/2>/<KEY>.data`
/// layout as flatstore.
/// With `.0` threads (the variants `floor`, `floor-t2`, `floor-t4`).
pub struct Floor(pub usize);

/// `next-to-last/2` of a key of at least three characters.
fn floor_shard(key: &str) -> &str {
    &key[key.len() - 3..key.len() - 1]
}

/// Reused path buffer: `root/shard/KEY.data`.
struct FloorPaths {
    root: String,
    buf: String,
}

impl FloorPaths {
    fn new(root: &Path) -> Result<FloorPaths> {
        let root = root
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?
            .to_string();
        Ok(FloorPaths {
            buf: String::with_capacity(root.len() + 80),
            root,
        })
    }

    fn block(&mut self, key: &str) -> &str {
        self.buf.clear();
        self.buf.push_str(&self.root);
        self.buf.push('/');
        self.buf.push_str(floor_shard(key));
        self.buf.push('/');
        self.buf.push_str(key);
        self.buf.push_str(".data");
        &self.buf
    }

    fn shard(&self, key: &str) -> String {
        format!("{}/{}", self.root, floor_shard(key))
    }
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", path.display()))
}

/// Writes one temp file: create (exclusive) + write (+ fdatasync) + close.
fn floor_write(tmp: &str, data: &[u8], sync: Sync) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("create {tmp}"))?;
    f.write_all(data)?;
    if sync == Sync::On {
        f.sync_data()?;
    }
    Ok(())
}

/// Renames `tmp` into `key`'s place, creating the shard directory when the
/// rename says it is missing. Returns whether the directory was created.
fn floor_rename(paths: &mut FloorPaths, tmp: &str, key: &str) -> Result<bool> {
    match fs::rename(tmp, paths.block(key)) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = paths.shard(key);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("mkdir {dir}")),
            }
            fs::rename(tmp, paths.block(key)).with_context(|| format!("rename {tmp}"))?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("rename {tmp}")),
    }
}

impl Subject for Floor {
    fn name(&self) -> &'static str {
        match self.0 {
            1 => "floor",
            2 => "floor-t2",
            4 => "floor-t4",
            _ => "floor-t?",
        }
    }

    fn import(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<()> {
        let touched = self.per_thread(dir, blocks, |paths, tmp, key, data| {
            floor_write(tmp, data, sync)?;
            floor_rename(paths, tmp, key)
        })?;
        if sync == Sync::On {
            let (dirs, created) = touched;
            for shard in dirs {
                sync_dir(&dir.join(shard))?;
            }
            if created {
                sync_dir(dir)?;
            }
        }
        Ok(())
    }

    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration> {
        let start = Instant::now();
        self.per_thread(dir, blocks, |paths, tmp, key, data| {
            floor_write(tmp, data, sync)?;
            let created = floor_rename(paths, tmp, key)?;
            if sync == Sync::On {
                sync_dir(Path::new(&paths.shard(key)))?;
                if created {
                    sync_dir(dir)?;
                }
            }
            Ok(created)
        })?;
        Ok(start.elapsed())
    }

    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>> {
        Ok(Box::new(FloorOpened(dir.to_path_buf())))
    }
}

impl Floor {
    /// Runs `op(paths, temp name, key, data)` for every block, block `i` on
    /// thread `i % threads`, each thread with its own temp names; returns
    /// the shard directories touched and whether `op` created one.
    fn per_thread(
        &self,
        dir: &Path,
        blocks: &Blocks,
        op: impl Fn(&mut FloorPaths, &str, &str, &[u8]) -> Result<bool> + std::marker::Sync,
    ) -> Result<(HashSet<String>, bool)> {
        let temp = dir.join("tmp");
        fs::create_dir_all(&temp)?;
        let temp = FloorPaths::new(&temp)?.root;
        let threads = self.0.max(1);
        let work = |w: usize| -> Result<(HashSet<String>, bool)> {
            let mut paths = FloorPaths::new(dir)?;
            let mut tmp = String::with_capacity(temp.len() + 24);
            let mut touched = HashSet::new();
            let mut created = false;
            for i in (w..blocks.keys.len()).step_by(threads) {
                let key = blocks.keys[i].as_str();
                tmp.clear();
                tmp.push_str(&temp);
                tmp.push('/');
                tmp.push_str(&i.to_string());
                created |= op(&mut paths, &tmp, key, blocks.block(i))?;
                if !touched.contains(floor_shard(key)) {
                    touched.insert(floor_shard(key).to_string());
                }
            }
            Ok((touched, created))
        };
        let results: Vec<Result<(HashSet<String>, bool)>> = if threads == 1 {
            vec![work(0)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|w| s.spawn(move || work(w))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| bail!("floor thread panicked")))
                    .collect()
            })
        };
        let mut all = (HashSet::new(), false);
        for r in results {
            let (t, c) = r?;
            all.0.extend(t);
            all.1 |= c;
        }
        Ok(all)
    }
}

/// W8's floor plus hashing: streams the CAR at `car`, checks each block's
/// sha2-256, and writes it as the floor's import does (one thread,
/// create + write (+ fdatasync) + close + rename; the touched shard
/// directories fsynced once at the end). Returns the number of blocks.
pub fn floor_import_car(car: &Path, dir: &Path, sync: Sync) -> Result<u64> {
    let temp = dir.join("tmp");
    fs::create_dir_all(&temp)?;
    let mut paths = FloorPaths::new(dir)?;
    let temp = FloorPaths::new(&temp)?.root;
    let mut tmp = String::with_capacity(temp.len() + 24);
    let mut touched = HashSet::new();
    let mut created = false;
    let mut i = 0u64;
    let n = crate::car::for_each_block(car, |key, data| {
        tmp.clear();
        tmp.push_str(&temp);
        tmp.push('/');
        tmp.push_str(&i.to_string());
        i += 1;
        floor_write(&tmp, data, sync)?;
        created |= floor_rename(&mut paths, &tmp, key.as_str())?;
        if sync == Sync::On {
            touched.insert(floor_shard(key.as_str()).to_string());
        }
        Ok(())
    })?;
    for shard in touched {
        sync_dir(&dir.join(shard))?;
    }
    if created && sync == Sync::On {
        sync_dir(dir)?;
    }
    Ok(n)
}

struct FloorOpened(PathBuf);

impl Opened for FloorOpened {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(FloorReader {
            paths: FloorPaths::new(&self.0)?,
            buf: vec![0; 1 << 20],
            root: &self.0,
        }))
    }
}

struct FloorReader<'a> {
    paths: FloorPaths,
    buf: Vec<u8>,
    root: &'a Path,
}

impl Reader for FloorReader<'_> {
    /// open + read (into a reused buffer, until end of file) + close.
    fn get(&mut self, key: &Key) -> Result<Option<usize>> {
        let mut f = match File::open(self.paths.block(key.as_str())) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(len * 2, 0);
            }
            match f.read(&mut self.buf[len..])? {
                0 => return Ok(Some(len)),
                n => len += n,
            }
        }
    }

    /// One stat.
    fn has(&mut self, key: &Key) -> Result<bool> {
        match fs::metadata(self.paths.block(key.as_str())) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn keys(&mut self) -> Result<u64> {
        self.walk(false).map(|(n, _)| n)
    }

    fn entries(&mut self) -> Result<(u64, u64)> {
        self.walk(true)
    }
}

impl FloorReader<'_> {
    /// Reads the root, then every shard directory in it.
    fn walk(&self, sizes: bool) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for shard in fs::read_dir(self.root)? {
            let shard = shard?;
            if shard.file_name().len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                if name.as_encoded_bytes().ends_with(b".data") {
                    n += 1;
                    if sizes {
                        bytes += entry.metadata()?.len();
                    }
                }
            }
        }
        Ok((n, bytes))
    }
}

// ---------------------------------------------------------------- LMDB (heed)

/// LMDB through heed. Off: `MDB_NOSYNC` (a commit reaches the OS but is not
/// flushed: survives a process crash, not a power cut). On: LMDB's default
/// (each commit is flushed).
pub struct Lmdb;

/// Virtual address space reserved for the map (the file grows as needed).
const LMDB_MAP: usize = 64 << 30;

fn lmdb_env(dir: &Path, sync: Sync) -> Result<heed::Env> {
    fs::create_dir_all(dir)?;
    let mut opts = heed::EnvOpenOptions::new();
    opts.map_size(LMDB_MAP);
    if sync == Sync::Off {
        // SAFETY: NO_SYNC only weakens durability across a power cut.
        unsafe {
            opts.flags(heed::EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: each process opens the environment once.
    Ok(unsafe { opts.open(dir)? })
}

type LmdbDb = heed::Database<heed::types::Bytes, heed::types::Bytes>;

fn lmdb_create(env: &heed::Env) -> Result<LmdbDb> {
    let mut wtxn = env.write_txn()?;
    let db = env.create_database(&mut wtxn, None)?;
    wtxn.commit()?;
    Ok(db)
}

fn lmdb_close(env: heed::Env) {
    env.prepare_for_closing().wait();
}

impl Subject for Lmdb {
    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn import(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<()> {
        let env = lmdb_env(dir, sync)?;
        let db = lmdb_create(&env)?;
        let mut wtxn = env.write_txn()?;
        for (key, data) in blocks.iter() {
            db.put(&mut wtxn, key.as_str().as_bytes(), data)?;
        }
        wtxn.commit()?;
        lmdb_close(env);
        Ok(())
    }

    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration> {
        let env = lmdb_env(dir, sync)?;
        let db = lmdb_create(&env)?;
        let start = Instant::now();
        for (key, data) in blocks.iter() {
            let mut wtxn = env.write_txn()?;
            db.put(&mut wtxn, key.as_str().as_bytes(), data)?;
            wtxn.commit()?;
        }
        let took = start.elapsed();
        lmdb_close(env);
        Ok(took)
    }

    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>> {
        let env = lmdb_env(dir, Sync::Off)?;
        let db = lmdb_open_db(&env)?;
        Ok(Box::new(LmdbOpened { env, db }))
    }

    fn open_time(&self, dir: &Path, _crashed: bool) -> Result<Option<OpenTimes>> {
        let start = Instant::now();
        let env = lmdb_env(dir, Sync::On)?;
        lmdb_open_db(&env)?;
        let open = start.elapsed();
        lmdb_close(env);
        Ok(Some(OpenTimes { open, exact: None }))
    }

    fn crash_prepare(&self, dir: &Path, key: &Key, data: &[u8]) -> Result<bool> {
        let env = lmdb_env(dir, Sync::On)?;
        let db = lmdb_open_db(&env)?;
        let mut wtxn = env.write_txn()?;
        db.put(&mut wtxn, key.as_str().as_bytes(), data)?;
        wtxn.commit()?;
        std::mem::forget(env);
        Ok(true)
    }
}

fn lmdb_open_db(env: &heed::Env) -> Result<LmdbDb> {
    let rtxn = env.read_txn()?;
    let db = env
        .open_database(&rtxn, None)?
        .ok_or_else(|| anyhow!("no LMDB database"))?;
    rtxn.commit()?;
    Ok(db)
}

struct LmdbOpened {
    env: heed::Env,
    db: LmdbDb,
}

impl Opened for LmdbOpened {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(LmdbReader {
            txn: self.env.read_txn()?,
            db: self.db,
        }))
    }
}

struct LmdbReader<'a> {
    txn: heed::RoTxn<'a, heed::WithTls>,
    db: LmdbDb,
}

impl Reader for LmdbReader<'_> {
    fn get(&mut self, key: &Key) -> Result<Option<usize>> {
        Ok(self
            .db
            .get(&self.txn, key.as_str().as_bytes())?
            .map(|v| v.to_vec().len()))
    }
    fn has(&mut self, key: &Key) -> Result<bool> {
        Ok(self.db.get(&self.txn, key.as_str().as_bytes())?.is_some())
    }
    fn keys(&mut self) -> Result<u64> {
        let db = self.db.remap_data_type::<heed::types::DecodeIgnore>();
        let mut n = 0;
        for kv in db.iter(&self.txn)? {
            kv?;
            n += 1;
        }
        Ok(n)
    }
    fn entries(&mut self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for kv in self.db.iter(&self.txn)? {
            bytes += kv?.1.len() as u64;
            n += 1;
        }
        Ok((n, bytes))
    }
}

// ---------------------------------------------------------------- redb

/// redb. Off: `Durability::None` (a commit is not even guaranteed to survive
/// a process crash: redb makes it durable only with a later durable commit or
/// a clean close). On: `Durability::Immediate`, redb's default.
pub struct Redb;

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("blocks");

fn redb_durability(sync: Sync) -> redb::Durability {
    match sync {
        Sync::Off => redb::Durability::None,
        Sync::On => redb::Durability::Immediate,
    }
}

fn redb_file(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    Ok(dir.join("blocks.redb"))
}

impl Subject for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn import(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<()> {
        let db = redb::Database::create(redb_file(dir)?)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(redb_durability(sync))?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            for (key, data) in blocks.iter() {
                table.insert(key.as_str().as_bytes(), data)?;
            }
        }
        txn.commit()?;
        db.close()?;
        Ok(())
    }

    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration> {
        let db = redb::Database::create(redb_file(dir)?)?;
        let start = Instant::now();
        for (key, data) in blocks.iter() {
            let mut txn = db.begin_write()?;
            txn.set_durability(redb_durability(sync))?;
            txn.open_table(REDB_TABLE)?
                .insert(key.as_str().as_bytes(), data)?;
            txn.commit()?;
        }
        let took = start.elapsed();
        db.close()?;
        Ok(took)
    }

    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>> {
        Ok(Box::new(redb::Database::open(redb_file(dir)?)?))
    }

    fn open_time(&self, dir: &Path, _crashed: bool) -> Result<Option<OpenTimes>> {
        let path = redb_file(dir)?;
        let start = Instant::now();
        let db = redb::Database::open(path)?;
        let open = start.elapsed();
        db.close()?;
        Ok(Some(OpenTimes { open, exact: None }))
    }

    fn crash_prepare(&self, dir: &Path, key: &Key, data: &[u8]) -> Result<bool> {
        let db = redb::Database::open(redb_file(dir)?)?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?
            .insert(key.as_str().as_bytes(), data)?;
        txn.commit()?;
        std::mem::forget(db);
        Ok(true)
    }
}

impl Opened for redb::Database {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        use redb::ReadableDatabase;
        let txn = self.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        Ok(Box::new(RedbReader { table }))
    }
}

struct RedbReader {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl Reader for RedbReader {
    fn get(&mut self, key: &Key) -> Result<Option<usize>> {
        Ok(self
            .table
            .get(key.as_str().as_bytes())?
            .map(|v| v.value().to_vec().len()))
    }
    fn has(&mut self, key: &Key) -> Result<bool> {
        Ok(self.table.get(key.as_str().as_bytes())?.is_some())
    }
    fn keys(&mut self) -> Result<u64> {
        use redb::ReadableTable;
        let mut n = 0;
        for kv in self.table.iter()? {
            kv?;
            n += 1;
        }
        Ok(n)
    }
    fn entries(&mut self) -> Result<(u64, u64)> {
        use redb::ReadableTable;
        let (mut n, mut bytes) = (0, 0);
        for kv in self.table.iter()? {
            bytes += kv?.1.value().len() as u64;
            n += 1;
        }
        Ok((n, bytes))
    }
}

// ---------------------------------------------------------------- fjall

/// fjall (LSM tree) with key-value separation, so large values go to blob
/// files and are not rewritten by compaction; built without compression
/// (the blocks are random). Off: fjall's default (each write reaches the OS:
/// survives a process crash, not a power cut). On: `PersistMode::SyncAll`
/// after each batch or single write.
pub struct Fjall;

fn fjall_open(dir: &Path) -> Result<(fjall::Database, fjall::Keyspace)> {
    let db = fjall::Database::builder(dir).open()?;
    let ks = db.keyspace("blocks", || {
        fjall::KeyspaceCreateOptions::default()
            .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
    })?;
    Ok((db, ks))
}

impl Subject for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn import(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<()> {
        let (db, ks) = fjall_open(dir)?;
        let mut batch = db.batch().durability(match sync {
            Sync::Off => None,
            Sync::On => Some(fjall::PersistMode::SyncAll),
        });
        for (key, data) in blocks.iter() {
            batch.insert(&ks, key.as_str(), data);
        }
        batch.commit()?;
        drop(ks);
        drop(db);
        Ok(())
    }

    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration> {
        let (db, ks) = fjall_open(dir)?;
        let start = Instant::now();
        for (key, data) in blocks.iter() {
            ks.insert(key.as_str(), data)?;
            if sync == Sync::On {
                db.persist(fjall::PersistMode::SyncAll)?;
            }
        }
        let took = start.elapsed();
        drop(ks);
        drop(db);
        Ok(took)
    }

    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>> {
        let (db, ks) = fjall_open(dir)?;
        Ok(Box::new(FjallOpened { _db: db, ks }))
    }

    fn settle(&self, dir: &Path) -> Result<()> {
        let (db, ks) = fjall_open(dir)?;
        ks.rotate_memtable_and_wait()?;
        db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    fn open_time(&self, dir: &Path, _crashed: bool) -> Result<Option<OpenTimes>> {
        let start = Instant::now();
        let (db, ks) = fjall_open(dir)?;
        let open = start.elapsed();
        drop(ks);
        drop(db);
        Ok(Some(OpenTimes { open, exact: None }))
    }

    fn crash_prepare(&self, dir: &Path, key: &Key, data: &[u8]) -> Result<bool> {
        let (db, ks) = fjall_open(dir)?;
        ks.insert(key.as_str(), data)?;
        db.persist(fjall::PersistMode::SyncAll)?;
        std::mem::forget((db, ks));
        Ok(true)
    }
}

struct FjallOpened {
    _db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Opened for FjallOpened {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader(&self.ks)))
    }
}

struct FjallReader<'a>(&'a fjall::Keyspace);

impl Reader for FjallReader<'_> {
    fn get(&mut self, key: &Key) -> Result<Option<usize>> {
        Ok(self.0.get(key.as_str())?.map(|v| v.len()))
    }
    fn has(&mut self, key: &Key) -> Result<bool> {
        Ok(self.0.contains_key(key.as_str())?)
    }
    fn keys(&mut self) -> Result<u64> {
        let mut n = 0;
        for g in self.0.iter() {
            g.key()?;
            n += 1;
        }
        Ok(n)
    }
    fn entries(&mut self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for g in self.0.iter() {
            bytes += u64::from(g.size()?);
            n += 1;
        }
        Ok((n, bytes))
    }
}

// ---------------------------------------------------------------- cacache

/// cacache's sync API: one content file per value (named by its sha256) plus
/// an append-only index of keys. It never fsyncs (content files are renamed
/// into place, so a process crash is survived, a power cut may not be), has
/// no batch and no open step; `read_sync` re-hashes what it reads. Blocks are
/// written with `WriteOpts::size` so that the index records their sizes.
pub struct Cacache;

impl Subject for Cacache {
    fn name(&self) -> &'static str {
        "cacache"
    }

    fn supports(&self, sync: Sync) -> bool {
        sync == Sync::Off
    }

    fn import(&self, dir: &Path, blocks: &Blocks, _sync: Sync) -> Result<()> {
        for (key, data) in blocks.iter() {
            // `write_sync` would record size 0 in the index; a listing with
            // sizes needs the size given up front.
            let mut w = cacache::WriteOpts::new()
                .size(data.len())
                .open_sync(dir, key.as_str())?;
            w.write_all(data)?;
            w.commit()?;
        }
        Ok(())
    }

    fn put_single(&self, dir: &Path, blocks: &Blocks, sync: Sync) -> Result<Duration> {
        let start = Instant::now();
        self.import(dir, blocks, sync)?;
        Ok(start.elapsed())
    }

    fn open_reads(&self, dir: &Path) -> Result<Box<dyn Opened + '_>> {
        Ok(Box::new(CacacheOpened(dir.to_path_buf())))
    }
}

struct CacacheOpened(PathBuf);

impl Opened for CacacheOpened {
    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(CacacheReader(&self.0)))
    }
}

struct CacacheReader<'a>(&'a Path);

impl Reader for CacacheReader<'_> {
    fn get(&mut self, key: &Key) -> Result<Option<usize>> {
        match cacache::read_sync(self.0, key.as_str()) {
            Ok(v) => Ok(Some(v.len())),
            Err(cacache::Error::EntryNotFound(..)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn has(&mut self, key: &Key) -> Result<bool> {
        Ok(cacache::metadata_sync(self.0, key.as_str())?.is_some())
    }
    fn keys(&mut self) -> Result<u64> {
        let mut n = 0;
        for m in cacache::list_sync(self.0) {
            m?;
            n += 1;
        }
        Ok(n)
    }
    fn entries(&mut self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for m in cacache::list_sync(self.0) {
            bytes += m?.size as u64;
            n += 1;
        }
        Ok((n, bytes))
    }
}
