//! W8 import-car: a CAR made by an independent tool (`ipfs-car pack`, npm)
//! from deterministic pseudo-random files, and a minimal streaming reader of
//! it for the floor.
//!
//! The floor of W8 is "the floor plus hashing": read the CAR in order, check
//! every block's sha2-256 against its CID (an import has to), and write each
//! block with the floor's bare system calls. flatstore's figure is the
//! command-line tool (`flatstore import`), timed and measured (peak RSS) as
//! a whole process.

use std::fs::{self, File};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use flatstore::Key;
use multihash_codetable::{Code, MultihashDigest};

use crate::data::Rng;

/// The `ipfs-car` executable: `$IPFS_CAR`, else `ipfs-car` on `PATH`.
pub fn ipfs_car() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPFS_CAR") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("ipfs-car"))
        .find(|p| p.is_file())
}

/// The `ipfs-car` version (`ipfs-car --version`), for the report.
pub fn ipfs_car_version(tool: &Path) -> String {
    Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .last()
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// Writes the input files of W8 into `dir`: `mib` MiB in files whose sizes
/// are log-uniform between 1 KiB and 32 MiB (so the CAR holds small files,
/// single-chunk files and multi-level DAGs), in 8 sub-directories.
fn write_files(dir: &Path, mib: usize, seed: u64) -> Result<()> {
    let total = mib << 20;
    let mut sizes = Rng::new(seed ^ 0x5743_4152);
    let mut written = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut i = 0usize;
    while written < total {
        let log = 10.0 + 15.0 * (sizes.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let size = (2f64.powf(log) as usize).min(total - written).max(1);
        let sub = dir.join(format!("d{}", i % 8));
        fs::create_dir_all(&sub)?;
        let mut f = File::create(sub.join(format!("f{i:05}.bin")))?;
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9) ^ i as u64);
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n;
        }
        written += size;
        i += 1;
    }
    Ok(())
}

/// The CAR of W8 (`mib` MiB of files, `seed`), made with `ipfs-car pack`
/// once and cached in `cache` (reused by later runs of the harness).
pub fn make_car(cache: &Path, mib: usize, seed: u64, tool: &Path) -> Result<PathBuf> {
    fs::create_dir_all(cache)?;
    let car = cache.join(format!("w8-{mib}MiB-s{seed}.car"));
    if car.is_file() {
        return Ok(car);
    }
    let files = cache.join(format!("w8-{mib}MiB-s{seed}-files"));
    let _ = fs::remove_dir_all(&files);
    let start = Instant::now();
    write_files(&files, mib, seed)?;
    let tmp = car.with_extension("car.tmp");
    let out = Command::new(tool)
        .arg("pack")
        .arg(&files)
        .arg("--output")
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {}", tool.display()))?;
    let _ = fs::remove_dir_all(&files);
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        bail!(
            "ipfs-car pack ended with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::rename(&tmp, &car)?;
    eprintln!(
        "made {} ({} MiB) with ipfs-car pack in {:.1} s",
        car.display(),
        fs::metadata(&car)?.len() >> 20,
        start.elapsed().as_secs_f64()
    );
    Ok(car)
}

/// Reads an unsigned LEB128 varint; `None` at a clean end of input.
fn varint(r: &mut impl Read) -> Result<Option<u64>> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && shift == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    bail!("varint too long")
}

fn varint_at(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).context("truncated CID")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// A streaming reader of a CAR v1: frames of `varint(len) CID data`.
pub struct CarFrames<R> {
    r: R,
    frame: Vec<u8>,
}

impl<R: Read> CarFrames<R> {
    /// Skips the header.
    pub fn new(mut r: R) -> Result<CarFrames<R>> {
        let len = varint(&mut r)?.context("empty CAR")? as usize;
        let mut header = vec![0u8; len];
        r.read_exact(&mut header)?;
        Ok(CarFrames {
            r,
            frame: Vec::new(),
        })
    }

    /// The next block: its multihash bytes (inside the CID) and its data,
    /// both slices of the frame buffer.
    pub fn next_block(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        let Some(len) = varint(&mut self.r)? else {
            return Ok(None);
        };
        self.frame.resize(len as usize, 0);
        self.r.read_exact(&mut self.frame)?;
        let f = &self.frame;
        let mut pos = 0;
        let mh_start = if f.len() >= 34 && f[0] == 0x12 && f[1] == 0x20 {
            // CIDv0: the bare sha2-256 multihash.
            0
        } else {
            ensure!(varint_at(f, &mut pos)? == 1, "unknown CID version");
            varint_at(f, &mut pos)?; // codec
            pos
        };
        pos = mh_start;
        varint_at(f, &mut pos)?; // hash function
        let digest_len = varint_at(f, &mut pos)? as usize;
        let end = pos + digest_len;
        ensure!(end <= f.len(), "truncated multihash");
        Ok(Some((&f[mh_start..end], &f[end..])))
    }
}

/// Streams the CAR at `path`, checks every block's sha2-256 against its CID
/// and hands `(key, data)` to `put`. Returns the number of blocks.
pub fn for_each_block(path: &Path, mut put: impl FnMut(&Key, &[u8]) -> Result<()>) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut car = CarFrames::new(BufReader::with_capacity(1 << 20, file))?;
    let mut n = 0;
    while let Some((mh, data)) = car.next_block()? {
        ensure!(
            mh.len() == 34 && mh[0] == 0x12,
            "block {n}: not a sha2-256 CID"
        );
        let digest = Code::Sha2_256.digest(data);
        ensure!(digest.digest() == &mh[2..], "block {n}: hash mismatch");
        put(&Key::from_multihash(&digest), data)?;
        n += 1;
    }
    Ok(n)
}
