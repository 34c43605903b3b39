//! What each command does.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use flatstore::cid::Cid;
use flatstore::dag::{DAG_CBOR, DAG_PB, RAW};
use flatstore::unixfs::{AddOptions, Importer};
use flatstore::{
    Durability, Error, ImportOptions, Key, Options, PutOutcome, Shard, Store, VerifyOptions,
};
use serde_json::json;

use crate::args::{Cli, Command};
use crate::errors::fail;
use crate::out::{self, line, Output};
use crate::progress;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let repo = match cli.repo.clone() {
        Some(r) => r,
        None => match std::env::var_os("FLATSTORE_REPO") {
            Some(r) if r.is_empty() => {
                return Err(fail(
                    "invalid_argument",
                    "FLATSTORE_REPO is set but empty (unset it, or name the store's directory)",
                ))
            }
            Some(r) => PathBuf::from(r),
            None => PathBuf::from("flatstore"),
        },
    };
    let durability = if cli.no_fsync {
        Durability::None
    } else {
        Durability::Fsync
    };
    let ctx = Ctx {
        repo,
        durability,
        json: cli.json,
    };
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Init { shard } => done(ctx.init(shard)),
        Command::Add {
            paths,
            quiet,
            cid_version,
            raw_leaves,
            chunk_size,
            hidden,
        } => {
            let mut options = AddOptions::new()
                .cid_version(cid_version)
                .chunk_size(chunk_size)
                .hidden(hidden);
            if raw_leaves {
                options = options.raw_leaves(true);
            }
            done(ctx.add(&paths, &options, quiet))
        }
        Command::Put {
            key,
            file,
            max_frame,
        } => done(ctx.put(&key, file, max_frame)),
        Command::Get { key, output } => done(ctx.get(&key, output)),
        Command::Has { key } => ctx.has(&key),
        Command::Rm { key } => done(ctx.rm(&key)),
        Command::Ls { size } => done(ctx.ls(size)),
        Command::Stat => done(ctx.stat()),
        Command::Import { files, max_frame } => done(ctx.import(&files, max_frame)),
        Command::Export { root, file } => done(ctx.export(&root, &file)),
        Command::Verify { repair } => done(ctx.verify(repair)),
        Command::Reshard { spec, wait } => done(ctx.reshard(&spec, wait)),
    }
}

/// A failure whose details the command already printed (with `--json`, as
/// its JSON document): the tool still exits with 1 and names it on stderr,
/// but prints no second JSON document.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

struct Ctx {
    repo: PathBuf,
    durability: Durability,
    json: bool,
}

/// A key given on the command line: a store key, or a CID.
enum Target {
    Key(Key),
    Cid(Cid, Key),
}

impl Target {
    /// A store key that is the base32 of a multihash is taken as a key; else
    /// a CID (so an upper-case base32 CIDv1, `BAFY…`, which is also a valid
    /// key string, is taken as the CID it is); else any valid key. A string
    /// with lower case in it can only be a CID, and is reported as one.
    fn parse(s: &str) -> Result<Target> {
        let key = Key::new(s);
        if let Ok(k) = &key {
            if k.to_multihash().is_ok() {
                return Ok(Target::Key(k.clone()));
            }
        }
        let cid = s.parse::<Cid>();
        if let Ok(cid) = cid {
            return Ok(Target::Cid(cid, Key::from_cid(&cid)));
        }
        match (key, cid) {
            (Ok(k), _) => Ok(Target::Key(k)),
            (Err(_), Err(e))
                if s.bytes().all(|b| b.is_ascii_alphanumeric())
                    && s.bytes().any(|b| b.is_ascii_lowercase()) =>
            {
                Err(fail(
                    "invalid_argument",
                    format!("{s:?} is not a valid CID ({e}), nor a key (keys are upper case)"),
                ))
            }
            (Err(e), _) => Err(fail(
                "invalid_key",
                format!("{s:?} is neither a key nor a CID: {e}"),
            )),
        }
    }

    fn key(&self) -> &Key {
        match self {
            Target::Key(k) | Target::Cid(_, k) => k,
        }
    }
}

impl Ctx {
    /// Refuses a repo path that exists and is not a directory.
    fn check_repo_path(&self) -> Result<()> {
        match fs::metadata(&self.repo) {
            Ok(m) if !m.is_dir() => Err(fail(
                "not_a_store",
                format!(
                    "{} is a file, not a store (a store is a directory)",
                    self.repo.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn opened(&self, result: flatstore::Result<Store>) -> Result<Store> {
        result.map_err(|e| match e {
            Error::NoStore { .. } => fail(
                "no_store",
                format!(
                    "no store at {}; `flatstore init` creates one",
                    self.repo.display()
                ),
            ),
            e => anyhow::Error::new(e).context(format!("opening store {}", self.repo.display())),
        })
    }

    /// Opens the store read-write, creating it if `create` (init, add, import).
    fn open(&self, create: bool) -> Result<Store> {
        self.check_repo_path()?;
        let options = Options::default()
            .durability(self.durability)
            .create(create);
        self.opened(Store::open(&self.repo, options))
    }

    /// Opens the store read-only (sharing it with writers); when a dead
    /// writer left work that only a read-write open finishes, opens it
    /// read-write once instead, which recovers it.
    fn open_read(&self) -> Result<Store> {
        self.check_repo_path()?;
        match Store::open(&self.repo, Options::default().read_only(true)) {
            Err(Error::NeedsRecovery { .. }) => self.open(false),
            r => self.opened(r),
        }
    }

    /// Closes the store. Closing only saves the counters (and releases the
    /// lock), after the command's work is done and durable: a failure here
    /// (typically `Error::CountersNotSaved` on a full disk) is a warning,
    /// not a failure of the command; the next read-write open recounts.
    fn close(&self, store: Store) -> Result<()> {
        if let Err(e) = store.close() {
            match e {
                Error::CountersNotSaved { .. } => out::warn(format!("{e}; the next open recounts")),
                e => out::warn(format!(
                    "the work is done, but closing the store failed: {e}; the next open recounts"
                )),
            }
        }
        Ok(())
    }

    /// Prints `human` normally, `value` with --json.
    fn say(&self, human: impl std::fmt::Display, value: serde_json::Value) -> Result<()> {
        if self.json {
            line(value)?;
        } else {
            line(human)?;
        }
        Ok(())
    }

    fn init(&self, shard: Option<String>) -> Result<()> {
        self.check_repo_path()?;
        let mut options = Options::default().durability(self.durability);
        if let Some(spec) = shard {
            options = options.shard(spec.parse::<Shard>()?);
        }
        let store = Store::open(&self.repo, options)
            .with_context(|| format!("creating store {}", self.repo.display()))?;
        let shard = store.shard();
        self.close(store)?;
        self.say(
            format_args!("store at {} ({shard})", self.repo.display()),
            json!({ "repo": self.repo, "shard": shard.to_string() }),
        )
    }

    fn add(&self, paths: &[PathBuf], options: &AddOptions, quiet: bool) -> Result<()> {
        let store = self.open(true)?;
        let pb = progress::bytes(None);
        pb.set_message("adding");
        let batch = store.batch()?;
        let mut entries = Vec::new();
        let mut roots = Vec::new();
        let bar = pb.clone();
        let report = move |p: &flatstore::unixfs::AddProgress| {
            bar.set_position(p.bytes);
            bar.set_message(format!("adding: {} blocks", p.blocks));
        };
        let staged = (|| -> Result<(u64, u64)> {
            let mut importer = Importer::new(&batch, options)?.progress(&report);
            for p in paths {
                let root = importer.add_path(p, &mut |a| {
                    entries.push(a.clone());
                })?;
                roots.push(root);
            }
            Ok((importer.blocks(), importer.bytes()))
        })();
        let (blocks, content) = match staged {
            Ok(n) => n,
            Err(e) => {
                pb.finish_and_clear();
                let _ = batch.discard();
                return Err(e);
            }
        };
        progress::committing(&pb, format!("committing {blocks} blocks"));
        let commit = batch.commit();
        pb.finish_and_clear();
        let commit = commit?;
        self.close(store)?;
        if self.json {
            let list = |v: &[flatstore::unixfs::Added]| -> Vec<serde_json::Value> {
                v.iter()
                    .map(|a| json!({ "cid": a.cid.to_string(), "name": a.path, "size": a.size }))
                    .collect()
            };
            line(json!({
                "roots": list(&roots),
                "entries": list(&entries),
                "blocks": blocks,
                "content_bytes": content,
                "written": commit.written,
                "already_present": commit.already_present,
                "bytes": commit.bytes,
            }))?;
        } else if quiet {
            for r in &roots {
                line(r.cid)?;
            }
        } else {
            let mut out = BufWriter::new(io::stdout().lock());
            for e in &entries {
                writeln!(out, "added {} {}", e.cid, e.path)?;
            }
            out.flush()?;
        }
        Ok(())
    }

    fn put(&self, key: &str, file: Option<PathBuf>, max_frame: usize) -> Result<()> {
        let target = Target::parse(key)?;
        let file = file.filter(|f| f.as_os_str() != "-");
        let input: Box<dyn Read> = match &file {
            Some(path) => {
                let m =
                    fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
                if m.is_dir() {
                    return Err(fail(
                        "invalid_argument",
                        format!(
                            "{} is a directory; put stores the bytes of one file (add stores directories)",
                            path.display()
                        ),
                    ));
                }
                Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
            }
            None => Box::new(io::stdin().lock()),
        };
        let name = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "stdin".to_string());
        let store = self.open(false)?;
        let limit = max_frame as u64;
        let result = match &target {
            Target::Cid(cid, _) => store.put_block_reader(cid, input, limit),
            Target::Key(k) => store.put_reader_capped(k, input, limit),
        };
        let (size, outcome) = result.map_err(|e| match e {
            Error::Input(source) => anyhow::Error::new(source).context(format!("reading {name}")),
            Error::BlockTooLarge { .. } => {
                anyhow::Error::new(e).context(format!("{name} is over the --max-frame cap"))
            }
            e => e.into(),
        })?;
        self.close(store)?;
        let k = target.key();
        let human = match outcome {
            PutOutcome::Written => format!("{k}: written ({size} bytes)"),
            PutOutcome::Repaired => {
                format!("{k}: repaired ({size} bytes; the stored copy did not match its CID)")
            }
            _ => format!("{k}: already present (nothing written)"),
        };
        self.say(
            human,
            json!({
                "key": k.as_str(),
                "size": size,
                "written": outcome != PutOutcome::AlreadyPresent,
                "repaired": outcome == PutOutcome::Repaired,
            }),
        )
    }

    fn get(&self, key: &str, output: Option<PathBuf>) -> Result<()> {
        let target = Target::parse(key)?;
        let store = self.open_read()?;
        let to_file = output.as_ref().filter(|p| p.as_os_str() != "-").cloned();
        if let Target::Cid(cid, _) = &target {
            if flatstore::is_identity(cid) {
                let data = cid.hash().digest();
                let mut out = Output::create(output.as_deref().unwrap_or(Path::new("-")))?;
                out.writer().write_all(data)?;
                out.finish()?;
                return self.report_get(&target, data.len() as u64, to_file);
            }
        }
        // A CID's block is checked as it streams: the reader fails at the
        // end if it does not hash to the CID (and a file target is then not
        // replaced: the error drops the temp file).
        let reader: Option<Box<dyn Read>> = match &target {
            Target::Cid(cid, _) => store
                .block_reader(cid)?
                .map(|r| Box::new(r) as Box<dyn Read>),
            Target::Key(k) => store.reader(k)?.map(|r| Box::new(r) as Box<dyn Read>),
        };
        let Some(mut reader) = reader else {
            return Err(fail(
                "not_found",
                format!("block {} not found", target.key()),
            ));
        };
        let mut out = Output::create(output.as_deref().unwrap_or(Path::new("-")))?;
        let path = store.block_path(target.key());
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(e).context(format!(
                        "the stored copy of {} is corrupt (verify --repair quarantines it)",
                        target.key()
                    ));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", path.display()));
                }
            };
            out.writer().write_all(&buf[..n])?;
            size += n as u64;
        }
        out.finish()?;
        self.report_get(&target, size, to_file)
    }

    fn report_get(&self, target: &Target, size: u64, file: Option<PathBuf>) -> Result<()> {
        // Written to stdout: the bytes are the output.
        let Some(file) = file else { return Ok(()) };
        self.say(
            format_args!(
                "{}: {size} bytes written to {}",
                target.key(),
                file.display()
            ),
            json!({ "key": target.key().as_str(), "size": size, "file": file }),
        )
    }

    fn has(&self, key: &str) -> Result<ExitCode> {
        let target = Target::parse(key)?;
        let store = self.open_read()?;
        // A CID is asked at the CID level: an identity CID is always present.
        let present = match &target {
            Target::Cid(cid, _) => store.has_block(cid)?,
            Target::Key(key) => store.has(key)?,
        };
        self.say(
            if present { "present" } else { "absent" },
            json!({ "key": target.key().as_str(), "present": present }),
        )?;
        Ok(if present {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    fn rm(&self, key: &str) -> Result<()> {
        let target = Target::parse(key)?;
        let store = self.open(false)?;
        let existed = store.delete(target.key())?;
        self.close(store)?;
        self.say(
            if existed { "deleted" } else { "not present" },
            json!({ "key": target.key().as_str(), "deleted": existed }),
        )
    }

    fn ls(&self, size: bool) -> Result<()> {
        let store = self.open_read()?;
        let mut out = BufWriter::new(io::stdout().lock());
        let entries: Box<dyn Iterator<Item = flatstore::Result<(Key, u64)>>> = if size {
            Box::new(store.entries())
        } else {
            Box::new(store.keys().map(|k| k.map(|k| (k, 0))))
        };
        for entry in entries {
            let (key, n) = entry?;
            match (self.json, size) {
                (true, true) => writeln!(out, "{}", json!({ "key": key.as_str(), "size": n }))?,
                (true, false) => writeln!(out, "{}", json!({ "key": key.as_str() }))?,
                (false, true) => writeln!(out, "{key} {n}")?,
                (false, false) => writeln!(out, "{key}")?,
            }
        }
        Ok(out.flush()?)
    }

    fn stat(&self) -> Result<()> {
        let store = self.open_read()?;
        let mut s = store.stats();
        if s.accuracy != flatstore::Accuracy::Exact {
            // After a crash (or for a store another program wrote) the
            // figures are the last known ones: count the blocks now, so
            // `stat` says what is there (still approximate while other
            // writers are open).
            s = store.recount()?;
        }
        self.say(
            format_args!(
                "repo      {}\nshard     {}\nblocks    {}\nbytes     {}\naccuracy  {:?}",
                self.repo.display(),
                store.shard(),
                s.blocks,
                s.bytes,
                s.accuracy
            ),
            json!({
                "repo": self.repo,
                "shard": store.shard().to_string(),
                "blocks": s.blocks,
                "bytes": s.bytes,
                "accuracy": format!("{:?}", s.accuracy).to_lowercase(),
            }),
        )
    }

    fn import(&self, files: &[PathBuf], max_frame: usize) -> Result<()> {
        // Every input is opened before the store is touched.
        let mut inputs = Vec::new();
        for file in files {
            if file.as_os_str() == "-" {
                inputs.push((file.clone(), None, None));
                continue;
            }
            let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let m = f
                .metadata()
                .with_context(|| format!("opening {}", file.display()))?;
            if m.is_dir() {
                return Err(fail(
                    "invalid_argument",
                    format!("{} is a directory, not a CAR file", file.display()),
                ));
            }
            let len = m.is_file().then_some(m.len());
            inputs.push((file.clone(), Some(f), len));
        }
        let store = self.open(true)?;
        let mut summaries = Vec::new();
        for (file, f, len) in inputs {
            let name = if f.is_none() {
                "stdin".to_string()
            } else {
                file.display().to_string()
            };
            let reader: Box<dyn Read> = match f {
                Some(f) => Box::new(f),
                None => Box::new(io::stdin().lock()),
            };
            let pb = progress::bytes(len);
            pb.set_message(format!("importing {name}"));
            let bar = pb.clone();
            let blocks = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counted = blocks.clone();
            let options = ImportOptions::new()
                .max_frame(max_frame)
                .progress(move |p| {
                    bar.set_position(p.bytes_read);
                    bar.set_message(format!("importing {name}: {} blocks", p.blocks));
                    counted.store(p.blocks, Ordering::Relaxed);
                });
            // The end of the input is the start of the commit phase.
            let bar = pb.clone();
            let watched = EndWatch::new(reader, move || {
                progress::committing(
                    &bar,
                    format!("committing {} blocks", blocks.load(Ordering::Relaxed)),
                );
            });
            let result = store.import_car(BufReader::with_capacity(1 << 20, watched), &options);
            pb.finish_and_clear();
            let s = result.with_context(|| format!("importing {}", file.display()))?;
            summaries.push(s);
        }
        self.close(store)?;
        let roots: Vec<String> = summaries
            .iter()
            .flat_map(|s| s.roots.iter().map(|c| c.to_string()))
            .collect();
        let sum = |f: fn(&flatstore::ImportSummary) -> u64| summaries.iter().map(f).sum::<u64>();
        let (blocks, written, present, bytes) = (
            sum(|s| s.blocks),
            sum(|s| s.written),
            sum(|s| s.already_present),
            sum(|s| s.bytes),
        );
        self.say(
            format_args!(
                "imported {blocks} blocks ({written} new, {present} already present, {bytes} bytes written); roots: {}",
                roots.join(" ")
            ),
            json!({
                "roots": roots,
                "blocks": blocks,
                "written": written,
                "already_present": present,
                "bytes": bytes,
            }),
        )
    }

    /// The CID to export from: a CID as given, or for a key (as `ls` prints
    /// it), the CID of its multihash with the codec its block decodes as.
    fn root_cid(&self, store: &Store, root: &str) -> Result<Cid> {
        let key = match Target::parse(root).with_context(|| format!("--root {root:?}"))? {
            Target::Cid(cid, _) => return Ok(cid),
            Target::Key(key) => key,
        };
        let mh = key.to_multihash().map_err(|_| {
            fail(
                "invalid_argument",
                format!("--root {root:?}: the key is not a multihash, so it names no CID"),
            )
        })?;
        let Some(data) = store.get(&key)? else {
            return Err(fail("not_found", format!("block {key} not found")));
        };
        if data.is_empty() {
            return Ok(Cid::new_v1(RAW, mh));
        }
        for codec in [DAG_PB, DAG_CBOR] {
            let cid = Cid::new_v1(codec, mh);
            if flatstore::dag::links(&cid, &data).is_ok() {
                if codec == DAG_PB && mh.code() == flatstore::hash::SHA2_256 {
                    return Ok(Cid::new_v0(mh)?);
                }
                return Ok(cid);
            }
        }
        Ok(Cid::new_v1(RAW, mh))
    }

    fn export(&self, root: &str, file: &Path) -> Result<()> {
        let store = self.open_read()?;
        let cid = self.root_cid(&store, root)?;
        let mut out = Output::create(file)?;
        let pb = progress::bytes(None);
        pb.set_message(format!("exporting {cid}"));
        let s = {
            let mut w = BufWriter::with_capacity(1 << 20, out.writer());
            let r = store.export_car(&cid, &mut w, |p| {
                pb.set_position(p.bytes_written);
                pb.set_message(format!("exporting {cid}: {} blocks", p.blocks));
            });
            let r = r.and_then(|s| {
                w.flush()
                    .map_err(|e| flatstore::Error::CarWrite {
                        offset: s.car_bytes,
                        source: e,
                    })
                    .map(|()| s)
            });
            pb.finish_and_clear();
            r.with_context(|| format!("exporting {cid}"))?
        };
        out.finish()?;
        if file.as_os_str() == "-" {
            return Ok(());
        }
        self.say(
            format_args!(
                "exported {} blocks ({} bytes) under {} to {}",
                s.blocks,
                s.car_bytes,
                cid,
                file.display()
            ),
            json!({ "root": cid.to_string(), "blocks": s.blocks, "bytes": s.car_bytes, "file": file }),
        )
    }

    fn verify(&self, repair: bool) -> Result<()> {
        let store = if repair {
            self.open(false)?
        } else {
            self.open_read()?
        };
        let pb = progress::counted(0, "shard directories");
        let what = if repair {
            "verifying and repairing"
        } else {
            "verifying"
        };
        pb.set_message(what);
        let bar = pb.clone();
        let options = VerifyOptions::new().repair(repair).progress(move |p| {
            bar.set_length(p.dirs_total);
            bar.set_position(p.dirs_done);
            bar.set_message(format!(
                "{what}: {} files, {}",
                p.files,
                progress::size(p.bytes)
            ));
        });
        let result = store.verify(&options);
        pb.finish_and_clear();
        let r = result?;
        if repair {
            self.close(store)?;
        }
        let list = |v: &[flatstore::Finding]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|f| {
                    json!({
                        "path": f.path,
                        "detail": f.detail,
                        "quarantined": f.quarantined,
                        "repaired": f.repaired,
                    })
                })
                .collect()
        };
        let kinds = [
            ("corrupt", &r.corrupt),
            ("empty", &r.empty),
            ("misplaced", &r.misplaced),
            ("not_regular", &r.not_regular),
            ("unreadable", &r.unreadable),
            ("foreign", &r.foreign),
            ("unverifiable", &r.unverifiable),
        ];
        if self.json {
            let mut doc = serde_json::Map::new();
            doc.insert("ok".into(), json!(r.ok));
            doc.insert("ok_bytes".into(), json!(r.ok_bytes));
            for (name, v) in kinds {
                doc.insert(name.into(), json!(list(v)));
            }
            line(serde_json::Value::Object(doc))?;
        } else {
            let mut out = BufWriter::new(io::stdout().lock());
            writeln!(out, "{} blocks ok ({})", r.ok, progress::size(r.ok_bytes))?;
            for (name, v) in kinds {
                for f in v.iter() {
                    let q = f
                        .quarantined
                        .as_ref()
                        .map(|q| format!(" -> {}", q.display()))
                        .unwrap_or_default();
                    writeln!(out, "{name}: {} ({}){q}", f.path.display(), f.detail)?;
                }
            }
            out.flush()?;
        }
        let remaining: Vec<_> = r.damage().filter(|f| !f.repaired).collect();
        if remaining.is_empty() {
            return Ok(());
        }
        let fixable = remaining.iter().filter(|f| f.repairable()).count();
        let unfixable = remaining.len() - fixable;
        let mut msg = format!("{} damaged entries", remaining.len());
        if repair {
            msg.push_str(" remain after repair");
        } else if fixable > 0 {
            msg.push_str(&format!(
                " ({fixable} fixed by verify --repair, which quarantines damaged copies)"
            ));
        }
        if unfixable > 0 {
            msg.push_str(&format!(
                "; {unfixable} unreadable directories that repair cannot fix (check their permissions)"
            ));
        }
        Err(Reported(msg).into())
    }

    fn reshard(&self, spec: &str, wait: Option<u64>) -> Result<()> {
        let shard: Shard = spec.parse()?;
        self.check_repo_path()?;
        let mut options = Options::default().durability(self.durability).create(false);
        if let Some(secs) = wait {
            options = options.lock_wait(std::time::Duration::from_secs(secs));
        }
        let mut store = self.opened(Store::open(&self.repo, options))?;
        let total = store.stats().blocks;
        let pb = progress::counted(total, "blocks");
        pb.set_message(format!("resharding to {shard}"));
        let result = store.reshard(shard, &mut |n| pb.set_position(n));
        pb.finish_and_clear();
        let s = result?;
        self.close(store)?;
        self.say(
            format_args!("resharded to {shard}: {} blocks moved", s.moved),
            json!({ "shard": shard.to_string(), "moved": s.moved, "duplicates_removed": s.duplicates_removed, "conflicts_quarantined": s.conflicts_quarantined }),
        )
    }
}

/// A reader that calls `on_end` once, when its input ends.
struct EndWatch<R, F: FnMut()> {
    inner: R,
    on_end: Option<F>,
    ended: AtomicBool,
}

impl<R, F: FnMut()> EndWatch<R, F> {
    fn new(inner: R, on_end: F) -> Self {
        EndWatch {
            inner,
            on_end: Some(on_end),
            ended: AtomicBool::new(false),
        }
    }
}

impl<R: Read, F: FnMut()> Read for EndWatch<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.ended.swap(true, Ordering::Relaxed) {
            if let Some(mut f) = self.on_end.take() {
                f();
            }
        }
        Ok(n)
    }
}
