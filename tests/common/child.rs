//! Running a test binary's own `#[ignore]`d entry points as child processes,
//! for tests that need a second process (locks, kills, resource limits).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Name of the environment variable that carries a child's arguments.
pub const ARG: &str = "FLATSTORE_CHILD_ARG";

/// A command that runs the ignored test `name` of the current test binary,
/// with `arg` in [`ARG`].
pub fn command(name: &str, arg: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ARG, arg)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .stdin(Stdio::piped());
    c
}

/// The argument a child was started with; `None` when the entry point is run
/// by hand without one (it then does nothing).
pub fn arg() -> Option<String> {
    std::env::var(ARG).ok()
}

/// Prints a line for the parent and flushes it at once.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

/// Waits (in the child) until the parent sends a line with [`tell`];
/// returns it.
pub fn hear() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// Sends `line` to the child's [`hear`].
pub fn tell(child: &mut Child, line: &str) {
    use std::io::Write;
    let stdin = child.stdin.as_mut().expect("child stdin piped");
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
}

/// Lines a child says with [`say`], with the instant each arrived.
pub struct Lines(Receiver<(Instant, String)>);

impl Lines {
    pub fn new(stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(l) = line.strip_prefix("@@") {
                    if tx.send((Instant::now(), l.to_string())).is_err() {
                        return;
                    }
                }
            }
        });
        Lines(rx)
    }

    /// Waits up to `secs` for a line starting with `prefix`.
    pub fn expect(&self, prefix: &str, secs: u64) -> String {
        self.expect_at(prefix, secs).1
    }

    /// Like [`expect`](Lines::expect), with the instant the line arrived.
    pub fn expect_at(&self, prefix: &str, secs: u64) -> (Instant, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok((at, l)) if l.starts_with(prefix) => return (at, l),
                Ok(_) => continue,
                Err(e) => panic!("child never said {prefix:?}: {e}"),
            }
        }
    }

    /// Every line still to come, until the child's output closes (it has
    /// exited) or `secs` have passed.
    pub fn rest(&self, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok((_, l)) => out.push(l),
                Err(_) => return out,
            }
        }
    }

    /// Every line the child said, once it has ended (read up to the end of
    /// its output, at most 10 s).
    pub fn drain(&self) -> Vec<String> {
        self.drain_at().into_iter().map(|(_, l)| l).collect()
    }

    /// Like [`drain`](Lines::drain), with the instant each line arrived.
    pub fn drain_at(&self) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(x) => out.push(x),
                Err(_) => return out,
            }
        }
    }
}

/// Starts `cmd`, returning the child and its lines.
pub fn spawn(mut cmd: Command) -> (Child, Lines) {
    let mut child = cmd.spawn().expect("spawn child");
    let lines = Lines::new(child.stdout.take().unwrap());
    (child, lines)
}

/// Kills the child (SIGKILL on Unix, TerminateProcess on Windows) and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
