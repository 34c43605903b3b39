//! What each command does.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use flatstore::cid::Cid;
use flatstore::{Durability, ImportOptions, Key, Options, Shard, Store, VerifyOptions};
use serde_json::json;

use crate::args::{Cli, Command};
use crate::progress;

pub fn run(cli: Cli) -> Result<()> {
    let repo = cli
        .repo
        .clone()
        .or_else(|| std::env::var_os("FLATSTORE_REPO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("flatstore"));
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
    match cli.command {
        Command::Init { shard } => ctx.init(shard),
        Command::Put { key, file } => ctx.put(&key, file),
        Command::Get { key, output } => ctx.get(&key, output),
        Command::Has { key } => ctx.has(&key),
        Command::Rm { key } => ctx.rm(&key),
        Command::Ls { size } => ctx.ls(size),
        Command::Stat => ctx.stat(),
        Command::Import { file, max_frame } => ctx.import(file, max_frame),
        Command::Export { root, file } => ctx.export(&root, file),
        Command::Verify { repair } => ctx.verify(repair),
        Command::Reshard { spec } => ctx.reshard(&spec),
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
    /// key string, is taken as the CID it is); else any valid key.
    fn parse(s: &str) -> Result<Target> {
        let key = Key::new(s);
        if let Ok(k) = &key {
            if k.to_multihash().is_ok() {
                return Ok(Target::Key(k.clone()));
            }
        }
        if let Ok(cid) = s.parse::<Cid>() {
            return Ok(Target::Cid(cid, Key::from_cid(&cid)));
        }
        Ok(Target::Key(key.with_context(|| {
            format!("{s:?} is neither a key nor a CID")
        })?))
    }

    fn key(&self) -> &Key {
        match self {
            Target::Key(k) | Target::Cid(_, k) => k,
        }
    }
}

impl Ctx {
    fn open(&self, create: bool) -> Result<Store> {
        let options = Options::default()
            .durability(self.durability)
            .create(create);
        Store::open(&self.repo, options)
            .with_context(|| format!("opening store {}", self.repo.display()))
    }

    fn open_read(&self) -> Result<Store> {
        let options = Options::default().read_only(true);
        Store::open(&self.repo, options)
            .with_context(|| format!("opening store {}", self.repo.display()))
    }

    /// Prints `human` normally, `value` with --json.
    fn say(&self, human: impl std::fmt::Display, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    }

    fn init(&self, shard: Option<String>) -> Result<()> {
        let mut options = Options::default().durability(self.durability);
        if let Some(spec) = shard {
            options = options.shard(spec.parse::<Shard>()?);
        }
        let store = Store::open(&self.repo, options)
            .with_context(|| format!("creating store {}", self.repo.display()))?;
        self.say(
            format_args!("store at {} ({})", self.repo.display(), store.shard()),
            json!({ "repo": self.repo, "shard": store.shard().to_string() }),
        );
        Ok(store.close()?)
    }

    fn put(&self, key: &str, file: Option<PathBuf>) -> Result<()> {
        let target = Target::parse(key)?;
        let store = self.open(true)?;
        let size = match (&target, &file) {
            (Target::Cid(cid, _), _) => {
                let data = read_input(file.as_ref())?;
                store.put_block(cid, &data)?;
                data.len() as u64
            }
            (Target::Key(k), Some(path)) => {
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                store.put_reader(k, BufReader::new(f))?
            }
            (Target::Key(k), None) => store.put_reader(k, io::stdin().lock())?,
        };
        self.say(
            format_args!("{} ({size} bytes)", target.key()),
            json!({ "key": target.key().as_str(), "size": size }),
        );
        Ok(store.close()?)
    }

    fn get(&self, key: &str, output: Option<PathBuf>) -> Result<()> {
        let target = Target::parse(key)?;
        let store = self.open_read()?;
        let data = match &target {
            Target::Cid(cid, _) => store.get_block(cid)?,
            Target::Key(k) => store.get(k)?,
        };
        let Some(data) = data else {
            bail!("block {} not found", target.key())
        };
        match output {
            Some(path) => std::fs::write(&path, &data)
                .with_context(|| format!("writing {}", path.display()))?,
            None => {
                let mut out = io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
        }
        Ok(())
    }

    fn has(&self, key: &str) -> Result<()> {
        let target = Target::parse(key)?;
        let store = self.open_read()?;
        // A CID is asked at the CID level: an identity CID is always present.
        let present = match &target {
            Target::Cid(cid, _) => store.has_block(cid)?,
            Target::Key(key) => store.has(key)?,
        };
        self.say(
            present,
            json!({ "key": target.key().as_str(), "present": present }),
        );
        Ok(())
    }

    fn rm(&self, key: &str) -> Result<()> {
        let target = Target::parse(key)?;
        let store = self.open(false)?;
        let existed = store.delete(target.key())?;
        self.say(
            if existed { "deleted" } else { "not present" },
            json!({ "key": target.key().as_str(), "deleted": existed }),
        );
        Ok(store.close()?)
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
        let s = store.stats();
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
        );
        Ok(())
    }

    fn import(&self, file: PathBuf, max_frame: Option<usize>) -> Result<()> {
        let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().map(|m| m.len()).ok();
        let store = self.open(true)?;
        let pb = progress::bar(len, true, "importing");
        let bar = pb.clone();
        let mut options = ImportOptions::new().progress(move |p| bar.set_position(p.bytes_read));
        if let Some(m) = max_frame {
            options = options.max_frame(m);
        }
        let result = store.import_car(BufReader::with_capacity(1 << 20, f), &options);
        pb.finish_and_clear();
        let s = result.with_context(|| format!("importing {}", file.display()))?;
        let roots: Vec<String> = s.roots.iter().map(|c| c.to_string()).collect();
        self.say(
            format_args!(
                "imported {} blocks ({} new, {} already present, {} bytes written); roots: {}",
                s.blocks,
                s.written,
                s.already_present,
                s.bytes,
                roots.join(" ")
            ),
            json!({
                "roots": roots,
                "blocks": s.blocks,
                "written": s.written,
                "already_present": s.already_present,
                "bytes": s.bytes,
            }),
        );
        Ok(store.close()?)
    }

    fn export(&self, root: &str, file: PathBuf) -> Result<()> {
        let cid: Cid = root
            .parse()
            .with_context(|| format!("{root:?} is not a CID"))?;
        let store = self.open_read()?;
        // Write beside the target and rename, so a failed export leaves no partial file.
        let tmp = file.with_extension("car.partial");
        let out = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let pb = progress::bar(None, false, "exporting");
        let result = store.export_car(&cid, out, |p| pb.set_position(p.blocks));
        pb.finish_and_clear();
        let s = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("exporting {cid}"));
            }
        };
        std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
        self.say(
            format_args!("exported {} blocks ({} bytes) under {} to {}", s.blocks, s.car_bytes, cid, file.display()),
            json!({ "root": cid.to_string(), "blocks": s.blocks, "bytes": s.car_bytes, "file": file }),
        );
        Ok(())
    }

    fn verify(&self, repair: bool) -> Result<()> {
        let store = if repair {
            self.open(false)?
        } else {
            self.open_read()?
        };
        let pb = progress::bar(
            None,
            false,
            if repair {
                "verifying and repairing"
            } else {
                "verifying"
            },
        );
        let bar = pb.clone();
        let options = VerifyOptions::new().repair(repair).progress(move |p| {
            bar.set_length(p.dirs_total);
            bar.set_position(p.dirs_done);
        });
        let result = store.verify(&options);
        pb.finish_and_clear();
        let r = result?;
        let list = |v: &[flatstore::Finding]| -> Vec<serde_json::Value> {
            v.iter()
                .map(
                    |f| json!({ "path": f.path, "detail": f.detail, "quarantined": f.quarantined }),
                )
                .collect()
        };
        if self.json {
            println!(
                "{}",
                json!({
                    "ok": r.ok,
                    "corrupt": list(&r.corrupt),
                    "empty": list(&r.empty),
                    "misplaced": list(&r.misplaced),
                    "foreign": list(&r.foreign),
                    "unverifiable": list(&r.unverifiable),
                    "unreadable": list(&r.unreadable),
                })
            );
        } else {
            println!("{} blocks ok", r.ok);
            for (name, v) in [
                ("corrupt", &r.corrupt),
                ("empty", &r.empty),
                ("misplaced", &r.misplaced),
                ("foreign", &r.foreign),
                ("unverifiable", &r.unverifiable),
                ("unreadable", &r.unreadable),
            ] {
                for f in v.iter() {
                    let q = f
                        .quarantined
                        .as_ref()
                        .map(|q| format!(" -> {}", q.display()))
                        .unwrap_or_default();
                    println!("{name}: {} ({}){q}", f.path.display(), f.detail);
                }
            }
        }
        let damaged = r.corrupt.len() + r.empty.len() + r.unreadable.len();
        if damaged > 0 && !repair {
            return Err(Reported(format!(
                "{damaged} damaged blocks (run verify --repair to quarantine them)"
            ))
            .into());
        }
        Ok(())
    }

    fn reshard(&self, spec: &str) -> Result<()> {
        let shard: Shard = spec.parse()?;
        let mut store = self.open(false)?;
        let total = store.stats().blocks;
        let pb = progress::bar(Some(total), false, "resharding");
        let result = store.reshard(shard, &mut |n| pb.set_position(n));
        pb.finish_and_clear();
        let s = result?;
        self.say(
            format_args!("resharded to {shard}: {} blocks moved", s.moved),
            json!({ "shard": shard.to_string(), "moved": s.moved, "duplicates_removed": s.duplicates_removed, "conflicts_quarantined": s.conflicts_quarantined }),
        );
        Ok(store.close()?)
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    match file {
        Some(p) => {
            File::open(p)
                .with_context(|| format!("opening {}", p.display()))?
                .read_to_end(&mut data)?;
        }
        None => {
            io::stdin().lock().read_to_end(&mut data)?;
        }
    }
    Ok(data)
}
