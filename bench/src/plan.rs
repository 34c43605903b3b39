//! The harness process: makes the data sets' keys, runs every measurement in
//! a child process, alternating the implementations run by run, and hands the
//! samples to the report.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::data::{self, Spec};
use crate::report::{self, Row, Sample};
use crate::subjects::{self, Sync};
use crate::{car, sys, Config};

/// Where this harness run keeps its stores and key files.
struct Workspace {
    root: PathBuf,
    keep: bool,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("stores kept in {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

struct Harness<'a> {
    config: &'a Config,
    /// The bench directory (`--dir`), where cached inputs (W8's CAR) live.
    base: PathBuf,
    ws: Workspace,
    subjects: Vec<&'static str>,
    /// Implementations that support each durability.
    supports: HashMap<(&'static str, &'static str), bool>,
    keys: HashMap<Spec, PathBuf>,
    prepared: HashMap<(&'static str, Spec), PathBuf>,
    rows: Vec<Row>,
    seq: usize,
}

pub fn run(config: &Config) -> Result<()> {
    let base = match &config.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?.join("target"),
    };
    fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let root = base.join(format!("flatstore-bench-{}", std::process::id()));
    fs::create_dir_all(&root)?;
    let filesystem = sys::filesystem(&root);
    eprintln!("bench directory {} on {filesystem}", root.display());
    if filesystem.starts_with("tmpfs") {
        eprintln!("note: the bench directory is on tmpfs: fsync costs nothing there");
    }
    let all = subjects::all();
    let wanted = |n: &str| {
        config
            .subjects
            .as_ref()
            .map_or(!subjects::on_request(n), |l| l.iter().any(|s| s == n))
    };
    let mut supports = HashMap::new();
    for s in &all {
        for sync in [Sync::Off, Sync::On] {
            supports.insert((s.name(), sync.name()), s.supports(sync));
        }
    }
    let mut h = Harness {
        config,
        base: base.clone(),
        ws: Workspace {
            root,
            keep: config.keep,
        },
        subjects: all.iter().map(|s| s.name()).filter(|n| wanted(n)).collect(),
        supports,
        keys: HashMap::new(),
        prepared: HashMap::new(),
        rows: Vec::new(),
        seq: 0,
    };
    if h.subjects.is_empty() {
        bail!("no implementation selected");
    }
    let started = Instant::now();
    h.run_all()?;
    let facts = report::Facts {
        command: config.command.clone(),
        date: sys::now_utc(),
        cpu: sys::cpu_model(),
        cores: sys::cores(),
        memory: sys::memory(),
        kernel: sys::kernel(),
        filesystem,
        runs: config.runs,
        write_runs: config.write_runs,
        took: started.elapsed(),
        versions: versions(),
        smoke: config.smoke,
    };
    let text = report::render(&facts, &h.rows, &h.subjects);
    println!("{text}");
    if let Some(path) = &config.write {
        report::write_between_markers(path, &text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn versions() -> Vec<(String, String)> {
    let lock =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap_or_default();
    ["heed", "lmdb-master-sys", "redb", "fjall", "cacache"]
        .iter()
        .map(|n| {
            let v = sys::locked_version(&lock, n).unwrap_or_else(|| "?".into());
            (n.to_string(), v)
        })
        .collect()
}

impl Harness<'_> {
    fn selected(&self, id: &str) -> bool {
        self.config
            .only
            .as_ref()
            .is_none_or(|l| l.iter().any(|w| w == id))
    }

    fn large(&self) -> Spec {
        Spec {
            blocks: self.config.w1.0,
            size: self.config.w1.1,
            seed: self.config.seed,
        }
    }

    fn small(&self) -> Spec {
        Spec {
            blocks: self.config.w2.0,
            size: self.config.w2.1,
            seed: self.config.seed + 1,
        }
    }

    /// W2 with fsync: `--w2-fsync` if given (the floor fdatasyncs every
    /// file in turn, which takes minutes at the full size), else W2's size.
    fn small_fsync(&self) -> Spec {
        match self.config.w2_fsync {
            Some((blocks, size)) => Spec {
                blocks,
                size,
                seed: self.config.seed + 1,
            },
            None => self.small(),
        }
    }

    fn single(&self) -> Spec {
        Spec {
            blocks: self.config.w7.0,
            size: self.config.w7.1,
            seed: self.config.seed + 2,
        }
    }

    fn run_all(&mut self) -> Result<()> {
        let (large, small, single) = (self.large(), self.small(), self.single());
        for sync in [Sync::Off, Sync::On] {
            if self.selected("W1") {
                self.import_row("W1", "import-large", large, sync, "import")?;
            }
        }
        for sync in [Sync::Off, Sync::On] {
            if self.selected("W2") {
                let spec = match sync {
                    Sync::Off => small,
                    Sync::On => self.small_fsync(),
                };
                self.import_row("W2", "import-small", spec, sync, "import")?;
            }
        }
        if self.selected("W3") {
            self.read_row("W3", "get, W1 blocks", large, "get")?;
            self.read_row("W3", "get, W2 blocks", small, "get")?;
        }
        if self.selected("W4") {
            self.read_row("W4", "has", small, "has")?;
        }
        if self.selected("W5") {
            self.read_row("W5", "list keys", small, "keys")?;
            self.read_row("W5", "list keys + sizes", small, "entries")?;
        }
        for sync in [Sync::Off, Sync::On] {
            if self.selected("W7") {
                self.import_row("W7", "put-single", single, sync, "put-single")?;
            }
        }
        if self.selected("W6") {
            self.open_rows(small)?;
        }
        if self.selected("W8") {
            self.w8_rows()?;
        }
        Ok(())
    }

    /// The subjects in the order of run `run`: rotated by one each run, so
    /// that each one runs before and after each other one.
    fn order(&self, names: &[&'static str], run: usize) -> Vec<&'static str> {
        let mut v = names.to_vec();
        if !v.is_empty() {
            let k = run % v.len();
            v.rotate_left(k);
        }
        v
    }

    fn keys_file(&mut self, spec: Spec) -> Result<PathBuf> {
        if let Some(p) = self.keys.get(&spec) {
            return Ok(p.clone());
        }
        let path = self.ws.root.join(format!("keys-{}.txt", spec.tag()));
        let start = Instant::now();
        data::write_keys(spec, &path)?;
        eprintln!(
            "keys of {} blocks x {} bytes in {:.1} s",
            spec.blocks,
            spec.size,
            start.elapsed().as_secs_f64()
        );
        self.keys.insert(spec, path.clone());
        Ok(path)
    }

    fn next_dir(&mut self, label: &str) -> PathBuf {
        self.seq += 1;
        self.ws.root.join(format!("{}-{label}", self.seq))
    }

    /// Runs one child; returns its sample (an error is recorded, not fatal).
    fn child(
        &self,
        task: &str,
        subject: &'static str,
        store: &Path,
        spec: Spec,
        extra: &[(&str, String)],
    ) -> Result<Sample> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("__child")
            .arg(task)
            .arg(format!("subject={subject}"))
            .arg(format!("store={}", store.display()))
            .arg(format!("blocks={}", spec.blocks))
            .arg(format!("size={}", spec.size))
            .arg(format!("seed={}", spec.seed));
        if let Some(k) = self.keys.get(&spec) {
            cmd.arg(format!("keys={}", k.display()));
        }
        for (k, v) in extra {
            cmd.arg(format!("{k}={v}"));
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("start child")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if task == "crash" {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if out.status.signal() == Some(libc::SIGKILL) {
                    return Ok(Sample::new(subject));
                }
            }
            return Ok(Sample::failed(
                subject,
                format!("crash child ended with {}", out.status),
            ));
        }
        if !out.status.success() {
            return Ok(Sample::failed(
                subject,
                format!("{task} child ended with {}", out.status),
            ));
        }
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            return Ok(Sample::failed(subject, "no RESULT line".into()));
        };
        let fields: HashMap<&str, u64> = line
            .split(' ')
            .filter_map(|f| f.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        let mut s = Sample::new(subject);
        s.ns = fields.get("ns").copied();
        s.ns2 = fields.get("ns2").copied();
        if let (Some(h), Some(b)) = (fields.get("hwm_kib"), fields.get("base_kib")) {
            s.extra_kib = Some(h.saturating_sub(*b));
        }
        Ok(s)
    }

    fn log(&self, row: &Row, run: usize, s: &Sample) {
        let runs = if row.runs > 0 {
            row.runs
        } else {
            self.config.runs
        };
        let what = match (&s.error, s.ns) {
            (Some(e), _) => format!("ERROR {e}"),
            (None, Some(ns)) => report::fmt_ns(ns as f64),
            (None, None) => "-".into(),
        };
        eprintln!(
            "[{} {}{}] run {}/{} {:<9} {what}",
            row.id,
            row.title,
            row.sync
                .map(|s| format!(", {}", s.name()))
                .unwrap_or_default(),
            run + 1,
            runs,
            s.subject
        );
    }

    /// W1, W2, W7: a fresh store per run, removed afterwards.
    fn import_row(
        &mut self,
        id: &'static str,
        title: &str,
        spec: Spec,
        sync: Sync,
        task: &str,
    ) -> Result<()> {
        self.keys_file(spec)?;
        let names: Vec<&'static str> = self
            .subjects
            .iter()
            .copied()
            .filter(|n| self.supports[&(*n, sync.name())])
            .collect();
        let mut row = Row::new(id, title, spec, Some(sync));
        row.unsupported = self
            .subjects
            .iter()
            .copied()
            .filter(|n| !names.contains(n))
            .collect();
        row.memory = true;
        let runs = self.config.write_runs.unwrap_or(self.config.runs);
        row.runs = runs;
        for run in 0..runs {
            for subject in self.order(&names, run) {
                let dir = self.next_dir(&format!("{id}-{subject}"));
                let mut s =
                    self.child(task, subject, &dir, spec, &[("sync", sync.name().into())])?;
                s.run = run;
                self.log(&row, run, &s);
                row.samples.push(s);
                let _ = fs::remove_dir_all(&dir);
                sys::sync_all_filesystems();
            }
        }
        self.rows.push(row);
        Ok(())
    }

    /// A store of `spec` written by `subject`, made once and reused.
    fn prepared(&mut self, subject: &'static str, spec: Spec) -> Result<Option<PathBuf>> {
        if let Some(p) = self.prepared.get(&(subject, spec)) {
            return Ok(Some(p.clone()));
        }
        self.keys_file(spec)?;
        let dir = self.next_dir(&format!("prepared-{subject}-{}", spec.tag()));
        let start = Instant::now();
        let s = self.child("prepare", subject, &dir, spec, &[("sync", "off".into())])?;
        sys::sync_all_filesystems();
        if let Some(e) = s.error {
            eprintln!("preparing {subject} store failed: {e}");
            return Ok(None);
        }
        eprintln!(
            "prepared {subject} store of {} blocks x {} bytes in {:.1} s",
            spec.blocks,
            spec.size,
            start.elapsed().as_secs_f64()
        );
        self.prepared.insert((subject, spec), dir.clone());
        Ok(Some(dir))
    }

    /// W3, W4, W5: reads of a prepared store.
    fn read_row(&mut self, id: &'static str, title: &str, spec: Spec, task: &str) -> Result<()> {
        let mut row = Row::new(id, title, spec, None);
        row.memory = task == "get";
        let mut stores = HashMap::new();
        // The floor reads with one thread per reader (W3 has its own
        // count): its threaded variants would only repeat it.
        let names: Vec<&'static str> = self
            .subjects
            .iter()
            .copied()
            .filter(|n| !n.starts_with("floor-t"))
            .collect();
        for &subject in &names {
            if let Some(p) = self.prepared(subject, spec)? {
                stores.insert(subject, p);
            }
        }
        let extra = [
            ("threads", self.config.get_threads.to_string()),
            ("absent", self.config.absent.to_string()),
        ];
        for run in 0..self.config.runs {
            for subject in self.order(&names, run) {
                let mut s = match stores.get(subject) {
                    Some(dir) => {
                        let mut extra = extra.to_vec();
                        extra.push(("run", run.to_string()));
                        self.child(task, subject, dir, spec, &extra)?
                    }
                    None => Sample::failed(subject, "store could not be prepared".into()),
                };
                s.run = run;
                self.log(&row, run, &s);
                row.samples.push(s);
            }
        }
        self.rows.push(row);
        Ok(())
    }

    /// W6: open of the W2 store after a clean close, and after a crash (a
    /// child opens the store, puts one block durably and is killed with
    /// SIGKILL before closing).
    fn open_rows(&mut self, spec: Spec) -> Result<()> {
        let names: Vec<&'static str> = self
            .subjects
            .iter()
            .copied()
            .filter(|n| !n.starts_with("floor") && *n != "cacache")
            .collect();
        let mut clean = Row::new("W6", "open, clean close", spec, None);
        let mut crashed = Row::new("W6", "open after a crash", spec, None);
        let mut exact = Row::new("W6", "after a crash: until counters exact", spec, None);
        for row in [&mut clean, &mut crashed, &mut exact] {
            row.unsupported = self
                .subjects
                .iter()
                .copied()
                .filter(|n| !names.contains(n))
                .collect();
        }
        exact
            .unsupported
            .extend(names.iter().filter(|n| **n != "flatstore"));
        let mut stores = HashMap::new();
        for &subject in &names {
            if let Some(p) = self.prepared(subject, spec)? {
                stores.insert(subject, p);
            }
        }
        for run in 0..self.config.runs {
            let extra = [("run", run.to_string())];
            for subject in self.order(&names, run) {
                let Some(dir) = stores.get(subject).cloned() else {
                    for row in [&mut clean, &mut crashed] {
                        let mut s = Sample::failed(subject, "store could not be prepared".into());
                        s.run = run;
                        row.samples.push(s);
                    }
                    continue;
                };
                let mut s = self.child("open-clean", subject, &dir, spec, &extra)?;
                s.run = run;
                self.log(&clean, run, &s);
                clean.samples.push(s);

                let c = self.child("crash", subject, &dir, spec, &extra)?;
                let mut s = match c.error {
                    Some(e) => Sample::failed(subject, e),
                    None => self.child("open-crashed", subject, &dir, spec, &extra)?,
                };
                s.run = run;
                self.log(&crashed, run, &s);
                if let Some(ns2) = s.ns2 {
                    let mut e = Sample::new(subject);
                    e.ns = Some(ns2);
                    e.run = run;
                    exact.samples.push(e);
                }
                crashed.samples.push(s);
                sys::sync_all_filesystems();
            }
        }
        self.rows.extend([clean, crashed, exact]);
        Ok(())
    }
}

/// A W8 row that could not run, with the reason.
fn w8_skipped(title: &str, why: String) -> Row {
    let mut row = Row::new("W8", title, Spec::default(), None);
    row.skipped = Some(format!("skipped: {why}"));
    row
}

/// Builds the command-line tool (`cargo build --release --features cli`) in
/// the repository; returns its path.
fn build_cli() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--features",
            "cli",
            "--bin",
            "flatstore",
        ])
        .current_dir(&root)
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .context("start cargo")?;
    if !out.status.success() {
        bail!(
            "building the command-line tool failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let bin = root.join("target/release/flatstore");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// One run of `flatstore import` as a process: wall time and peak RSS.
fn cli_import(cli: &Path, car: &Path, dir: &Path, sync: Sync) -> Result<Sample> {
    let log = dir.with_extension("log");
    let mut cmd = Command::new(cli);
    cmd.arg("--repo").arg(dir).arg("--json");
    if sync == Sync::Off {
        cmd.arg("--no-fsync");
    }
    cmd.arg("import")
        .arg(car)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?);
    let (code, took, maxrss_kib) = sys::run_measured(&mut cmd).context("start flatstore")?;
    let err = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    if code != Some(0) {
        return Ok(Sample::failed(
            "flatstore",
            format!("flatstore import ended with {code:?}: {}", err.trim()),
        ));
    }
    let mut s = Sample::new("flatstore");
    s.ns = Some(took.as_nanos() as u64);
    s.extra_kib = Some(maxrss_kib);
    Ok(s)
}

impl Harness<'_> {
    /// W8: the CAR (made once by `ipfs-car pack`, cached under the bench
    /// directory), imported by the command-line tool (a process, timed from
    /// spawn to exit, peak RSS from `wait4`) and by the floor plus hashing
    /// (a child: stream the CAR, sha2-256 of every block, the floor's writes).
    fn w8_rows(&mut self) -> Result<()> {
        let mib = self.config.w8_mib;
        let title = format!("import-car ({} MiB of files)", mib);
        let Some(tool) = car::ipfs_car() else {
            self.rows.push(w8_skipped(
                &title,
                "`ipfs-car` not found (`npm install --global ipfs-car@3.1.0`, or set \
                 IPFS_CAR to its path)"
                    .into(),
            ));
            return Ok(());
        };
        let cli = match build_cli() {
            Ok(p) => p,
            Err(e) => {
                self.rows.push(w8_skipped(&title, format!("{e:#}")));
                return Ok(());
            }
        };
        let cache = self.base.join("flatstore-bench-car");
        let car = match car::make_car(&cache, mib, self.config.seed, &tool) {
            Ok(p) => p,
            Err(e) => {
                self.rows.push(w8_skipped(&title, format!("{e:#}")));
                return Ok(());
            }
        };
        let car_len = fs::metadata(&car)?.len();
        let mut blocks = 0u64;
        car::for_each_block(&car, |_, _| {
            blocks += 1;
            Ok(())
        })?;
        let title = format!(
            "import-car (ipfs-car {}: {} blocks, {} MiB)",
            car::ipfs_car_version(&tool),
            report::thousands(blocks),
            car_len >> 20
        );
        let names: Vec<&'static str> = self
            .subjects
            .iter()
            .copied()
            .filter(|n| matches!(*n, "floor" | "flatstore"))
            .collect();
        let runs = self.config.write_runs.unwrap_or(self.config.runs);
        for sync in [Sync::Off, Sync::On] {
            let mut row = Row::new("W8", &title, Spec::default(), Some(sync));
            row.unsupported = self
                .subjects
                .iter()
                .copied()
                .filter(|n| !names.contains(n))
                .collect();
            row.memory = true;
            row.runs = runs;
            for run in 0..runs {
                for subject in self.order(&names, run) {
                    let dir = self.next_dir(&format!("W8-{subject}"));
                    let mut s = if subject == "floor" {
                        self.child(
                            "car-floor",
                            subject,
                            &dir,
                            Spec::default(),
                            &[
                                ("sync", sync.name().into()),
                                ("car", car.display().to_string()),
                            ],
                        )?
                    } else {
                        cli_import(&cli, &car, &dir, sync)?
                    };
                    s.run = run;
                    self.log(&row, run, &s);
                    row.samples.push(s);
                    let _ = fs::remove_dir_all(&dir);
                    sys::sync_all_filesystems();
                }
            }
            self.rows.push(row);
        }
        Ok(())
    }
}
