//! Deterministic block contents and their keys.
//!
//! Block `i` of a data set is `size` pseudo-random bytes from a generator
//! seeded by `(seed, i)`: nothing compresses or de-duplicates by accident,
//! and every process that asks for block `i` gets the same bytes. Its key is
//! the store key (`CIQ…`) of the sha2-256 multihash of those bytes.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flatstore::Key;
use multihash_codetable::{Code, MultihashDigest};

/// What a data set is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Spec {
    pub blocks: usize,
    pub size: usize,
    pub seed: u64,
}

impl Spec {
    /// A short name for files belonging to this data set.
    pub fn tag(&self) -> String {
        format!("{}x{}-s{}", self.blocks, self.size, self.seed)
    }
}

/// A small, fast generator (SplitMix64): good enough to make bytes that no
/// compressor can shrink, and cheap enough to fill a GiB in well under a second.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// Fills `buf` with the bytes of block `index` of a data set with `seed`.
pub fn fill_block(seed: u64, index: usize, buf: &mut [u8]) {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    // Warm the state up so that neighbouring seeds do not start alike.
    rng.next_u64();
    rng.fill(buf);
}

/// The store key of `data`'s sha2-256 multihash.
pub fn key_of(data: &[u8]) -> Key {
    Key::from_multihash(&Code::Sha2_256.digest(data))
}

/// Every block of a data set, in one allocation, with its keys.
pub struct Blocks {
    pub spec: Spec,
    data: Vec<u8>,
    pub keys: Vec<Key>,
}

impl Blocks {
    /// Generates the bytes and takes the keys from `keys` (computed earlier by
    /// [`write_keys`]). In debug builds the first and last keys are checked.
    pub fn generate(spec: Spec, keys: Vec<Key>) -> Result<Blocks> {
        if keys.len() != spec.blocks {
            bail!("{} keys for {} blocks", keys.len(), spec.blocks);
        }
        let mut data = vec![0u8; spec.blocks * spec.size];
        if spec.size > 0 {
            for (i, chunk) in data.chunks_exact_mut(spec.size).enumerate() {
                fill_block(spec.seed, i, chunk);
            }
        }
        let blocks = Blocks { spec, data, keys };
        if cfg!(debug_assertions) && spec.blocks > 0 {
            for i in [0, spec.blocks - 1] {
                if key_of(blocks.block(i)) != blocks.keys[i] {
                    bail!("key file does not match block {i}");
                }
            }
        }
        Ok(blocks)
    }

    pub fn block(&self, i: usize) -> &[u8] {
        &self.data[i * self.spec.size..(i + 1) * self.spec.size]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &[u8])> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k, self.block(i)))
    }
}

/// Computes the keys of a data set and writes them to `path`, one a line.
pub fn write_keys(spec: Spec, path: &Path) -> Result<()> {
    let mut buf = vec![0u8; spec.size];
    let mut out = String::with_capacity(spec.blocks * 60);
    for i in 0..spec.blocks {
        fill_block(spec.seed, i, &mut buf);
        out.push_str(key_of(&buf).as_str());
        out.push('\n');
    }
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(out.as_bytes())?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Reads keys written by [`write_keys`].
pub fn read_keys(path: &Path) -> Result<Vec<Key>> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .map(|l| Key::new(l).with_context(|| format!("bad key {l:?} in {}", path.display())))
        .collect()
}

/// `n` keys that no data set holds: keys of the sha2-256 of short strings.
pub fn absent_keys(n: usize, seed: u64) -> Vec<Key> {
    (0..n)
        .map(|i| key_of(format!("absent {seed} {i}").as_bytes()))
        .collect()
}

/// A deterministic permutation of `0..n`.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_deterministic_and_distinct() {
        let mut a = vec![0u8; 1000];
        let mut b = vec![0u8; 1000];
        fill_block(1, 5, &mut a);
        fill_block(1, 5, &mut b);
        assert_eq!(a, b);
        fill_block(1, 6, &mut b);
        assert_ne!(a, b);
        assert!(key_of(&a).as_str().starts_with("CIQ"));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v = shuffled(1000, 3);
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }
}
