//! A three-node Garage cluster on loopback for the S3 tests: replication
//! factor 3, the sqlite metadata engine, one bucket and one key, in a
//! temporary directory; stopped (every node killed and reaped, the directory
//! removed) when the [`Cluster`] is dropped.
//!
//! The binary is `$FLATSTORE_GARAGE`, else `garage` on `PATH`. Without it,
//! [`Cluster::start`] prints `SKIPPED` and returns `None`, unless
//! `FLATSTORE_REQUIRE_GARAGE=1`, which makes it panic instead.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flatstore::s3::object_store::aws::AmazonS3Builder;
use flatstore::s3::object_store::{BackoffConfig, RetryConfig};
use flatstore::s3::{S3Options, S3Store};

/// The bucket every cluster has.
pub const BUCKET: &str = "flatstore";

/// The garage binary, if there is one.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLATSTORE_GARAGE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
}

/// Says why the S3 tests cannot run: panics under FLATSTORE_REQUIRE_GARAGE=1,
/// else prints SKIPPED.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("FLATSTORE_REQUIRE_GARAGE").is_some_and(|v| v == "1") {
        panic!("{test}: {why} (FLATSTORE_REQUIRE_GARAGE=1 requires it)");
    }
    // Straight to stderr, past the test harness's capture, so that a plain
    // `cargo test` shows it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

struct Node {
    config: PathBuf,
    child: Option<Child>,
}

/// A running cluster.
pub struct Cluster {
    garage: PathBuf,
    nodes: Vec<Node>,
    /// S3 API ports, node by node.
    s3_ports: Vec<u16>,
    pub key_id: String,
    pub secret: String,
    dir: tempfile::TempDir,
}

/// `n` distinct free loopback ports (bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

impl Cluster {
    /// Starts a cluster, or returns `None` (after [`skip`]) when there is no
    /// garage binary.
    pub fn start(test: &str) -> Option<Cluster> {
        let Some(garage) = binary() else {
            skip(
                test,
                "no garage binary (set FLATSTORE_GARAGE or put garage on PATH)",
            );
            return None;
        };
        Some(Cluster::start_with(garage))
    }

    fn start_with(garage: PathBuf) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("flatstore-garage-")
            .tempdir()
            .expect("temp dir");
        let secret: String = {
            let mut s = String::new();
            let mut x = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id()) << 32;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(&format!("{x:016x}"));
            }
            s
        };
        let ports = free_ports(6);
        let mut nodes = Vec::new();
        let mut s3_ports = Vec::new();
        for n in 0..3 {
            let (rpc, s3) = (ports[2 * n], ports[2 * n + 1]);
            s3_ports.push(s3);
            let base = dir.path().join(format!("n{}", n + 1));
            std::fs::create_dir_all(base.join("meta")).unwrap();
            std::fs::create_dir_all(base.join("data")).unwrap();
            let config = dir.path().join(format!("n{}.toml", n + 1));
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = {meta:?}\n\
                     data_dir = {data:?}\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\
                     \n\
                     [s3_api]\n\
                     s3_region = \"garage\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n",
                    meta = base.join("meta"),
                    data = base.join("data"),
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                child: None,
            });
        }
        let mut cluster = Cluster {
            garage,
            nodes,
            s3_ports,
            key_id: String::new(),
            secret: String::new(),
            dir,
        };
        for n in 0..3 {
            cluster.spawn_node(n);
        }
        cluster.configure();
        cluster
    }

    fn spawn_node(&mut self, n: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("n{}.log", n + 1))).unwrap();
        let mut cmd = Command::new(&self.garage);
        cmd.arg("-c")
            .arg(&self.nodes[n].config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd);
        self.nodes[n].child = Some(cmd.spawn().expect("start garage server"));
    }

    /// Runs the admin CLI against node `n` (0-based) and returns its stdout;
    /// panics with its output on failure.
    fn admin_on(&self, n: usize, args: &[&str]) -> String {
        let out = run(Command::new(&self.garage)
            .arg("-c")
            .arg(&self.nodes[n].config)
            .args(args));
        if !out.status.success() {
            panic!(
                "garage {args:?} failed: {}{}\nnode logs in {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.dir.path().display()
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    /// Retries an admin command until it succeeds (the servers are starting).
    fn admin_when_ready(&self, n: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run(Command::new(&self.garage)
                .arg("-c")
                .arg(&self.nodes[n].config)
                .args(args));
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} never succeeded: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn configure(&mut self) {
        self.admin_when_ready(0, &["status"]);
        let mut ids = Vec::new();
        for n in 0..3 {
            let id = self.admin_when_ready(n, &["node", "id", "-q"]);
            ids.push(id.trim().to_string());
        }
        for id in &ids[1..] {
            self.admin_on(0, &["node", "connect", id]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .admin_on(0, &["status"])
            .matches("NO ROLE ASSIGNED")
            .count()
            < 3
        {
            assert!(Instant::now() < deadline, "the nodes never saw each other");
            std::thread::sleep(Duration::from_millis(200));
        }
        for id in &ids {
            let short = &id.split('@').next().unwrap()[..16];
            self.admin_on(0, &["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        self.admin_on(0, &["layout", "apply", "--version", "1"]);
        self.admin_on(0, &["bucket", "create", BUCKET]);
        let key = self.admin_on(0, &["key", "create", "flatstore-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name:?} in `garage key create`'s output:\n{key}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");
        self.admin_on(
            0,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                BUCKET,
                "--key",
                "flatstore-key",
            ],
        );
        self.wait_s3_ready();
    }

    /// Waits until the S3 API serves the bucket (the layout propagates).
    fn wait_s3_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = self.client();
        let rt = tokio_rt();
        loop {
            use flatstore::s3::object_store::{ObjectStoreExt, PutPayload};
            let path = "ready-probe".into();
            let ok = rt.block_on(async {
                client
                    .put(&path, PutPayload::from_static(b"1"))
                    .await
                    .is_ok()
                    && client.delete(&path).await.is_ok()
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the S3 API never became ready");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `http://127.0.0.1:PORT` of node 1's S3 API.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_ports[0])
    }

    /// An S3 client of the bucket through node 1, with short retries (a
    /// test should fail in seconds, not minutes).
    pub fn client(&self) -> Arc<dyn flatstore::s3::object_store::ObjectStore> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 8,
            retry_timeout: Duration::from_secs(60),
        };
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_access_key_id(&self.key_id)
                .with_secret_access_key(&self.secret)
                .with_region("garage")
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_retry(retry)
                .build()
                .expect("build S3 client"),
        )
    }

    /// Opens the store under `prefix` through node 1.
    pub fn open(&self, prefix: &str, options: S3Options) -> flatstore::Result<S3Store> {
        S3Store::open_with(self.client(), prefix, options)
    }

    /// The `AWS_*` variables that point a client at this cluster (for a
    /// child process, which opens `s3://flatstore/PREFIX`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", "garage".into()),
            ("AWS_DEFAULT_REGION", "garage".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// SIGKILLs node `n` (1..=3) and reaps it.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.nodes[n - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `n` (1..=3) again on its data.
    pub fn restart(&mut self, n: usize) {
        self.kill(n);
        self.spawn_node(n - 1);
    }

    /// The cluster's directory (node data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in 1..=3 {
            self.kill(n);
        }
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// On Linux, the server gets SIGKILL if the test thread that started it
/// dies (a test binary killed by a timeout leaves no server behind).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}
