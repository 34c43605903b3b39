//! Output: lines on stdout that report a closed pipe as an error (never a
//! panic), and files written through a temp file beside their target.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Writes one line on stdout. A closed pipe is an `io::Error` (BrokenPipe),
/// which `main` turns into a quiet exit.
pub fn line(text: impl std::fmt::Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// A warning on stderr (never fails: a closed stderr is ignored).
pub fn warn(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr(), "flatstore: warning: {text}");
}

/// Temp files to remove if the process is interrupted (Ctrl-C).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the Ctrl-C handler that removes the pending temp files and
/// exits with 130 (as a shell reports SIGINT). Called once, before a temp
/// file is created.
pub fn remove_temp_files_on_interrupt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            for p in pending().drain(..) {
                let _ = fs::remove_file(p);
            }
            std::process::exit(130);
        });
    });
}

/// Where a command writes a file it produces.
pub enum Output {
    /// Standard output (`-`).
    Stdout(io::Stdout),
    /// A temp file beside the target, renamed over it by [`Output::finish`]
    /// and removed on every failure (drop) and on Ctrl-C.
    Temp {
        file: tempfile::NamedTempFile,
        target: PathBuf,
    },
    /// An existing non-regular file (a FIFO, a terminal, `/dev/stdout`):
    /// written in place, never replaced.
    Special(File),
}

impl Output {
    /// Opens `target` for writing: `-` is stdout; an existing directory is
    /// an error; a symbolic link is followed (the link stays, its target is
    /// replaced); a device or FIFO is written in place; anything else goes
    /// through a uniquely named temp file in the target's directory.
    pub fn create(target: &Path) -> Result<Output> {
        if target.as_os_str() == "-" {
            return Ok(Output::Stdout(io::stdout()));
        }
        let resolved = match fs::metadata(target) {
            Ok(m) if m.is_dir() => bail!("{} is a directory", target.display()),
            Ok(m) if !m.is_file() => {
                let f = File::create(target)
                    .with_context(|| format!("opening {}", target.display()))?;
                return Ok(Output::Special(f));
            }
            Ok(_) => fs::canonicalize(target)
                .with_context(|| format!("resolving {}", target.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => target.to_path_buf(),
            Err(e) => {
                return Err(e).with_context(|| format!("opening {}", target.display()));
            }
        };
        let dir = match resolved.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = resolved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remove_temp_files_on_interrupt();
        let mut list = pending();
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))?;
        list.push(file.path().to_path_buf());
        Ok(Output::Temp {
            file,
            target: resolved,
        })
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(s) => s,
            Output::Temp { file, .. } => file.as_file_mut(),
            Output::Special(f) => f,
        }
    }

    /// Flushes, and for a temp file, makes it durable and renames it over
    /// the target.
    pub fn finish(self) -> Result<()> {
        match self {
            Output::Stdout(mut s) => Ok(s.flush()?),
            Output::Special(mut f) => Ok(f.flush()?),
            Output::Temp { file, target } => {
                let tmp = file.path().to_path_buf();
                let result = file
                    .as_file()
                    .sync_all()
                    .map_err(anyhow::Error::from)
                    .and_then(|()| file.persist(&target).map_err(|e| e.error.into()))
                    .with_context(|| format!("writing {}", target.display()));
                pending().retain(|p| p != &tmp);
                result.map(|_| ())
            }
        }
    }
}
