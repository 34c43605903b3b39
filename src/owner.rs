//! Which writers are alive.
//!
//! Every read-write handle is a writer with a token `<pid>.<nonce>`, unique
//! across processes and time, and holds an exclusive lock on byte 0 of its
//! own file `.temp/owner-<token>`. Everything it makes under `.temp/` is
//! named `<kind>-<token>-<n>` (`batch-…`, `put-…`, `del-…`), so recovery can
//! tell whose an entry is. The operating system releases the lock when the
//! process dies, however it dies; so an owner file that can be locked, or an
//! entry whose owner file is gone, belongs to a dead writer.
//!
//! The owner file is created before any entry of its token and removed only
//! after all of them (at a clean close, or by the recovery of a dead
//! writer), so an entry whose owner file is absent is never a live one's.
//! Entries whose name carries no token (left by an older version, which
//! held the whole store exclusively, or by go-ds-flatfs) are dead whenever a
//! writer of this version is open.
//!
//! # Locks within one process
//! On Unix the locks are POSIX record locks, which belong to the process and
//! are dropped when the process closes *any* descriptor of the file. So this
//! process never opens its own owner files (it knows its tokens) and never
//! opens an owner file that one of its threads is cleaning up; one mutex
//! covers every open and close of owner files here.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, IoContext, Result};
use crate::platform;

/// Prefix of owner files in `.temp/`.
const OWNER: &str = "owner-";
/// Prefix of an owner file being made: created and locked under this name,
/// then renamed, so a probe never meets an owner file not yet locked.
const PENDING: &str = "newowner-";

#[derive(Default)]
struct State {
    /// Tokens of this process's live writers.
    own: HashSet<String>,
    /// Tokens of dead writers that a thread of this process is cleaning up.
    cleaning: HashSet<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut g = state();
    f(g.get_or_insert_with(State::default))
}

/// A fresh token: this process's id and a random nonce.
fn new_token() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h.write_u64(nanos);
    format!("{}.{:016x}", std::process::id(), h.finish())
}

/// The process id in a token.
fn token_pid(token: &str) -> Option<u32> {
    token.split_once('.')?.0.parse().ok()
}

/// What an entry of `.temp/` is, by its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TempName<'a> {
    /// `owner-<token>`: a writer's liveness file.
    Owner(&'a str),
    /// `<kind>-<token>-<rest>`: something a writer made.
    Owned { kind: &'a str, token: &'a str },
    /// Anything else: made by an older version or by another program.
    Untagged,
}

/// Classifies the name of an entry of `.temp/`.
pub(crate) fn parse_name(name: &str) -> TempName<'_> {
    if let Some(token) = name.strip_prefix(OWNER) {
        if token_pid(token).is_some() && !token.contains('-') {
            return TempName::Owner(token);
        }
    }
    let mut parts = name.splitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(token), Some(_)) if token_pid(token).is_some() => {
            TempName::Owned { kind, token }
        }
        _ => TempName::Untagged,
    }
}

fn owner_path(temp: &Path, token: &str) -> PathBuf {
    temp.join(format!("{OWNER}{token}"))
}

/// This handle's liveness: its token and the locked owner file.
#[derive(Debug)]
pub(crate) struct Owner {
    token: String,
    path: PathBuf,
    file: Option<File>,
}

impl Owner {
    /// Creates and locks a new owner file in `temp`.
    pub(crate) fn register(temp: &Path) -> Result<Owner> {
        with_state(|st| {
            for _ in 0..16 {
                let token = new_token();
                let path = owner_path(temp, &token);
                let pending = temp.join(format!("{PENDING}{token}"));
                let file = platform::create_new(&pending).ctx("create", &pending)?;
                // Another open's cleanup may take a pending file for a dead
                // one between the create and the lock (and remove it): then
                // the rename fails and another token is tried.
                let locked = platform::lock_byte(&file, 0, true, false).ctx("lock", &pending)?;
                if !locked {
                    continue;
                }
                match platform::rename_noreplace(&pending, &path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("rename", &pending, e)),
                }
                // Renamed while locked: no cleaner removes a locked owner
                // file, so the name is ours until this writer retires it.
                st.own.insert(token.clone());
                return Ok(Owner {
                    token,
                    path,
                    file: Some(file),
                });
            }
            Err(Error::io(
                "lock",
                temp,
                std::io::Error::other("could not register a writer (owner file lost 16 times)"),
            ))
        })
    }

    /// The token this writer's `.temp/` entries are named with.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Removes the owner file and releases its lock: a clean close, after
    /// every entry of this token is gone.
    pub(crate) fn retire(mut self) -> Result<()> {
        let removed = match platform::remove_file(&self.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", &self.path, e)),
            _ => Ok(()),
        };
        self.release();
        removed
    }

    fn release(&mut self) {
        with_state(|st| {
            drop(self.file.take());
            st.own.remove(&self.token);
        });
    }
}

impl Drop for Owner {
    /// Without [`retire`](Owner::retire) the owner file stays: the next
    /// read-write open takes this writer for a dead one (and recounts).
    fn drop(&mut self) {
        if self.file.is_some() {
            self.release();
        }
    }
}

/// What [`probe`] found of a token.
#[derive(Debug)]
pub(crate) enum Liveness {
    /// A writer of this process.
    Own,
    /// A live writer (or a dead one that somebody is cleaning up now).
    Live,
    /// A dead writer. With `claim`, the caller holds its owner file locked
    /// (if there is one) and is the one to clean up after it.
    Dead(Option<DeadOwner>),
}

/// A dead writer's owner file, locked by the thread cleaning up after it.
#[derive(Debug)]
pub(crate) struct DeadOwner {
    token: String,
    path: PathBuf,
    file: Option<File>,
}

impl DeadOwner {
    /// Removes the owner file, once everything of the token is gone.
    pub(crate) fn finish(mut self) -> Result<()> {
        let removed = match platform::remove_file(&self.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", &self.path, e)),
            _ => Ok(()),
        };
        self.release();
        removed
    }

    fn release(&mut self) {
        with_state(|st| {
            drop(self.file.take());
            st.cleaning.remove(&self.token);
        });
    }
}

impl Drop for DeadOwner {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.release();
        }
    }
}

/// Whether the writer `token` is alive. With `claim` (a read-write open),
/// a dead writer's owner file is locked exclusively and handed back, so that
/// exactly one cleaner works on it; without (a read-only open), the probe
/// takes a shared lock for an instant and keeps nothing.
pub(crate) fn probe(temp: &Path, token: &str, claim: bool) -> Result<Liveness> {
    with_state(|st| {
        if st.own.contains(token) {
            return Ok(Liveness::Own);
        }
        if st.cleaning.contains(token) {
            return Ok(Liveness::Live);
        }
        let path = owner_path(temp, token);
        let opened = if claim {
            OpenOptions::new().read(true).write(true).open(&path)
        } else {
            platform::open_read(&path)
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Liveness::Dead(None)),
            // Being removed (Windows), or not ours to open: leave it alone.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => return Ok(Liveness::Live),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        if !platform::lock_byte(&file, 0, claim, false).ctx("lock", &path)? {
            return Ok(Liveness::Live);
        }
        if !claim {
            return Ok(Liveness::Dead(None));
        }
        st.cleaning.insert(token.to_string());
        Ok(Liveness::Dead(Some(DeadOwner {
            token: token.to_string(),
            path,
            file: Some(file),
        })))
    })
}

/// Whether `path`, an owner file still being made (`newowner-…`), was
/// left by a writer that died making it (nobody holds its lock).
pub(crate) fn pending_is_dead(path: &Path) -> Result<bool> {
    let is_pending = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(PENDING));
    if !is_pending {
        return Ok(true);
    }
    with_state(|_| {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => return Ok(false),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        platform::lock_byte(&file, 0, true, false).ctx("lock", path)
    })
}

/// The owner tokens found in `temp` (live or dead), except `own`.
pub(crate) fn other_tokens(temp: &Path, own: Option<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match platform::read_dir(temp) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read directory", temp, e)),
    };
    for entry in rd {
        let entry = entry.ctx("read directory", temp)?;
        let name = entry.file_name();
        if let TempName::Owner(token) = parse_name(&name.to_string_lossy()) {
            if Some(token) != own {
                out.push(token.to_string());
            }
        }
    }
    Ok(out)
}

/// The process ids of the live writers of the store whose `.temp/` is
/// `temp`, other than this process's own (best effort, for error messages).
pub(crate) fn live_pids(temp: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = other_tokens(temp, None)
        .unwrap_or_default()
        .iter()
        .filter(|t| matches!(probe(temp, t, false), Ok(Liveness::Live)))
        .filter_map(|t| token_pid(t))
        .filter(|&p| p != std::process::id())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(parse_name("owner-12.00ff"), TempName::Owner("12.00ff"));
        assert_eq!(
            parse_name("batch-12.00ff-3"),
            TempName::Owned {
                kind: "batch",
                token: "12.00ff"
            }
        );
        assert_eq!(
            parse_name("put-7.ab-0"),
            TempName::Owned {
                kind: "put",
                token: "7.ab"
            }
        );
        // Older versions' names and other programs' files carry no token.
        for n in [
            "put-0",
            "batch-123-18a2f-0",
            "temp-123456",
            "reshard",
            "owner-x",
        ] {
            assert_eq!(parse_name(n), TempName::Untagged, "{n}");
        }
    }

    #[test]
    fn tokens_are_unique_and_carry_the_pid() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(token_pid(&a), Some(std::process::id()));
    }

    #[test]
    fn own_live_and_dead_owners() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path();
        let owner = Owner::register(temp).unwrap();
        let token = owner.token().to_string();
        assert!(matches!(probe(temp, &token, true).unwrap(), Liveness::Own));
        // Dropped without retiring: the file stays and is dead.
        drop(owner);
        assert!(owner_path(temp, &token).exists());
        assert!(matches!(
            probe(temp, &token, false).unwrap(),
            Liveness::Dead(None)
        ));
        let Liveness::Dead(Some(dead)) = probe(temp, &token, true).unwrap() else {
            panic!("not claimed");
        };
        // While claimed, this process sees it as somebody's live work.
        assert!(matches!(probe(temp, &token, true).unwrap(), Liveness::Live));
        dead.finish().unwrap();
        assert!(!owner_path(temp, &token).exists());
        assert!(matches!(
            probe(temp, &token, true).unwrap(),
            Liveness::Dead(None)
        ));
    }
}
