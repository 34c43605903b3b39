//! Streaming CAR reader: frame by frame over any `Read`.

use std::io::{self, BufRead, BufReader, Read};

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::DEFAULT_MAX_FRAME;
use crate::block::actual_cid;
use crate::error::{Error, Result};
use crate::hash::{self, Check};

/// Length of the CARv2 header that follows the pragma.
const V2_HEADER_LEN: usize = 40;
/// Longest unsigned varint accepted (multiformats: at most 9 bytes, 63 bits).
const MAX_VARINT_LEN: usize = 9;

/// One block read from a CAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarBlock {
    /// The block's CID as the CAR gives it.
    pub cid: Cid,
    /// The block's bytes.
    pub data: Vec<u8>,
    /// Byte offset of the block's frame in the input.
    pub offset: u64,
}

/// Reads a CAR (v1, or v2 with its v1 payload) from any [`Read`], one
/// frame at a time.
///
/// # Promises
/// - Streaming, with bounded memory: one frame at a time, each at most the
///   frame cap ([`DEFAULT_MAX_FRAME`] unless set with
///   [`with_max_frame`](CarReader::with_max_frame)); a larger declared
///   length is refused before anything is allocated for it.
/// - Every block's data is checked against its CID's multihash as it is
///   read (turn off with [`set_verify`](CarReader::set_verify)).
/// - Only a clean end of input exactly at a frame boundary ends the stream
///   (for CARv2: exactly at the end of the declared payload, after which the
///   index, if any, is not read). Input that ends inside the header, a
///   varint, a CID or a block's data is an error.
/// - The input is read through a [`BufReader`]; no need to buffer it first.
///
/// # Errors
/// Every failure, including a read error of the underlying reader, is an
/// [`Error::Car`] whose `offset` is where the bad frame (or the header)
/// starts, with a reason saying what is wrong: truncated input, a frame
/// over the cap, an empty frame, an invalid CID, a header that is not
/// `{roots: [CID...], version: 1}`, a block whose data does not hash to its
/// CID (`"hash mismatch: ..."`, naming the CID and what the data hashes to)
/// or whose hash function cannot be checked. After an error the reader
/// yields nothing more.
pub struct CarReader<R> {
    input: BufReader<R>,
    offset: u64,
    /// For CARv2: the offset where the v1 payload ends.
    end: Option<u64>,
    version: u64,
    roots: Vec<Cid>,
    max_frame: usize,
    verify: bool,
    failed: bool,
}

impl<R> std::fmt::Debug for CarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarReader")
            .field("version", &self.version)
            .field("roots", &self.roots)
            .field("offset", &self.offset)
            .finish()
    }
}

fn car(offset: u64, reason: impl Into<String>) -> Error {
    Error::Car {
        offset,
        reason: reason.into(),
    }
}

impl<R: Read> CarReader<R> {
    /// Reads the header, with the default frame cap ([`DEFAULT_MAX_FRAME`]).
    ///
    /// # Errors
    /// [`Error::Car`] if the header is missing, truncated or invalid.
    pub fn new(reader: R) -> Result<CarReader<R>> {
        Self::with_max_frame(reader, DEFAULT_MAX_FRAME)
    }

    /// Reads the header; frames (the header included) longer than
    /// `max_frame` bytes will be refused.
    ///
    /// # Errors
    /// [`Error::Car`] if the header is missing, truncated or invalid.
    pub fn with_max_frame(reader: R, max_frame: usize) -> Result<CarReader<R>> {
        let mut r = CarReader {
            input: BufReader::with_capacity(64 << 10, reader),
            offset: 0,
            end: None,
            version: 1,
            roots: Vec::new(),
            max_frame,
            verify: true,
            failed: false,
        };
        r.read_headers()?;
        Ok(r)
    }

    /// Whether to check each block's data against its CID (default true).
    pub fn set_verify(&mut self, verify: bool) {
        self.verify = verify;
    }

    /// The CAR's version: 1, or 2 for a CARv2 (whose v1 payload is read).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The roots listed in the (v1) header.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// Bytes consumed so far: the offset of the next frame.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// The next block, or `None` at a clean end of the CAR.
    ///
    /// # Errors
    /// [`Error::Car`] naming the offset where the bad frame starts (see
    /// [`CarReader`]).
    pub fn next_block(&mut self) -> Result<Option<CarBlock>> {
        if self.failed {
            return Ok(None);
        }
        let result = self.read_block();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_headers(&mut self) -> Result<()> {
        let (version, roots) = self.read_header(true)?;
        if version == 1 {
            self.roots = roots;
            return Ok(());
        }
        // CARv2: the fixed header, then the v1 payload at `data_offset`.
        let at = self.offset;
        let mut h = [0u8; V2_HEADER_LEN];
        let n = self.read_up_to(&mut h, at)?;
        if n < V2_HEADER_LEN {
            return Err(car(
                at,
                format!("truncated CARv2 header: {n} of {V2_HEADER_LEN} bytes"),
            ));
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (data_offset, data_size) = (field(16), field(24));
        if data_offset < self.offset {
            return Err(car(
                at,
                format!("CARv2 data offset {data_offset} points inside the CARv2 header"),
            ));
        }
        let end = data_offset
            .checked_add(data_size)
            .ok_or_else(|| car(at, "CARv2 data offset + size overflows"))?;
        let gap = data_offset - self.offset;
        let skipped = io::copy(&mut (&mut self.input).take(gap), &mut io::sink())
            .map_err(|e| car(at, format!("read error: {e}")))?;
        self.offset += skipped;
        if skipped < gap {
            return Err(car(
                at,
                format!(
                    "truncated CARv2: input ends at byte {}, before the data payload at byte {data_offset}",
                    self.offset
                ),
            ));
        }
        self.end = Some(end);
        let (inner, roots) = self.read_header(false)?;
        debug_assert_eq!(inner, 1);
        self.version = 2;
        self.roots = roots;
        Ok(())
    }

    /// Reads a header frame: `(1, roots)`, or `(2, [])` for the CARv2 pragma
    /// when `outer`.
    fn read_header(&mut self, outer: bool) -> Result<(u64, Vec<Cid>)> {
        let start = self.offset;
        let Some(len) = self.read_varint(start, "header length")? else {
            return Err(car(
                start,
                if outer {
                    "empty input: no CAR header"
                } else {
                    "empty CARv2 data payload: no CARv1 header"
                },
            ));
        };
        let body = self.read_frame(start, len, "header")?;
        let bad = |reason: String| car(start, reason);
        let ipld: Ipld = serde_ipld_dagcbor::from_slice(&body)
            .map_err(|e| bad(format!("header is not valid dag-cbor: {e}")))?;
        let Ipld::Map(map) = ipld else {
            return Err(bad("header is not a dag-cbor map".into()));
        };
        let version = match map.get("version") {
            Some(Ipld::Integer(v)) => *v,
            _ => return Err(bad("header has no integer `version`".into())),
        };
        match version {
            1 => {}
            2 if outer => return Ok((2, Vec::new())),
            2 => return Err(bad("the CARv2 data payload is itself a CARv2".into())),
            v => return Err(bad(format!("unsupported CAR version {v}"))),
        }
        let Some(Ipld::List(list)) = map.get("roots") else {
            return Err(bad("header has no `roots` list".into()));
        };
        let roots = list
            .iter()
            .map(|r| match r {
                Ipld::Link(cid) => Ok(*cid),
                _ => Err(bad("header `roots` holds something other than a CID".into())),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((1, roots))
    }

    fn read_block(&mut self) -> Result<Option<CarBlock>> {
        let start = self.offset;
        if self.end == Some(start) {
            return Ok(None);
        }
        let Some(len) = self.read_varint(start, "frame length")? else {
            return match self.end {
                Some(end) => Err(car(
                    start,
                    format!("truncated CARv2 data payload: input ends at byte {start}, the header says at byte {end}"),
                )),
                None => Ok(None),
            };
        };
        let mut frame = self.read_frame(start, len, "block frame")?;
        let mut cursor = io::Cursor::new(&frame[..]);
        let cid = match Cid::read_bytes(&mut cursor) {
            Ok(cid) => cid,
            Err(cid::Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(car(
                    start,
                    format!("truncated CID: the frame of {len} bytes ends inside it"),
                ))
            }
            Err(e) => return Err(car(start, format!("invalid CID: {e}"))),
        };
        let cid_len = cursor.position() as usize;
        frame.drain(..cid_len);
        if self.verify {
            match hash::check(cid.hash(), &frame) {
                Check::Match => {}
                Check::Mismatch(actual) => {
                    return Err(car(
                        start,
                        format!(
                            "hash mismatch: the data of block {cid} hashes to {}",
                            actual_cid(&cid, &actual)
                        ),
                    ))
                }
                Check::Unsupported => {
                    return Err(car(
                        start,
                        format!(
                            "block {cid} uses hash function 0x{:x} (or a digest length) flatstore cannot check",
                            cid.hash().code()
                        ),
                    ))
                }
            }
        }
        Ok(Some(CarBlock {
            cid,
            data: frame,
            offset: start,
        }))
    }

    /// Reads the `len` bytes of a frame starting at `start` (its varint read).
    fn read_frame(&mut self, start: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if len == 0 {
            return Err(car(start, format!("{what} has length 0")));
        }
        if len > self.max_frame as u64 {
            return Err(car(
                start,
                format!(
                    "{what} of {len} bytes is larger than the limit of {} bytes",
                    self.max_frame
                ),
            ));
        }
        if let Some(end) = self.end {
            if self.offset + len > end {
                return Err(car(
                    start,
                    format!("{what} of {len} bytes runs past the end of the CARv2 data payload at byte {end}"),
                ));
            }
        }
        // Grow as data arrives: a false length costs no more than the input.
        let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
        let n = (&mut self.input)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| car(start, format!("read error: {e}")))?;
        self.offset += n as u64;
        if (n as u64) < len {
            return Err(car(
                start,
                format!(
                    "truncated {what}: {len} bytes declared, input ends after {n} (at byte {})",
                    self.offset
                ),
            ));
        }
        Ok(buf)
    }

    /// Reads an unsigned varint; `None` at a clean end of input before its
    /// first byte.
    fn read_varint(&mut self, start: u64, what: &str) -> Result<Option<u64>> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let Some(b) = self.read_byte(start)? else {
                if i == 0 {
                    return Ok(None);
                }
                return Err(car(
                    start,
                    format!("truncated {what} varint: input ends after {i} of its bytes"),
                ));
            };
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        Err(car(
            start,
            format!("{what} varint is longer than {MAX_VARINT_LEN} bytes"),
        ))
    }

    fn read_byte(&mut self, start: u64) -> Result<Option<u8>> {
        loop {
            match self.input.fill_buf() {
                Ok([]) => return Ok(None),
                Ok(buf) => {
                    let b = buf[0];
                    self.input.consume(1);
                    self.offset += 1;
                    return Ok(Some(b));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(car(start, format!("read error: {e}"))),
            }
        }
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read_up_to(&mut self, buf: &mut [u8], start: u64) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(car(start, format!("read error: {e}"))),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<CarBlock>;

    fn next(&mut self) -> Option<Result<CarBlock>> {
        self.next_block().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::car::CarWriter;
    use multihash_codetable::{Code, MultihashDigest};

    fn sample() -> (Vec<u8>, Vec<(Cid, Vec<u8>)>) {
        let blocks: Vec<(Cid, Vec<u8>)> = [&b"one"[..], b"two", &[9u8; 300]]
            .iter()
            .map(|d| (Cid::new_v1(0x55, Code::Sha2_256.digest(d)), d.to_vec()))
            .collect();
        let mut w = CarWriter::new(Vec::new(), &[blocks[0].0]).unwrap();
        for (c, d) in &blocks {
            w.write_block(c, d).unwrap();
        }
        (w.finish().unwrap(), blocks)
    }

    #[test]
    fn round_trip() {
        let (car, blocks) = sample();
        let mut r = CarReader::new(&car[..]).unwrap();
        assert_eq!(r.version(), 1);
        assert_eq!(r.roots(), &[blocks[0].0]);
        let read: Vec<_> = r.by_ref().map(|b| b.unwrap()).collect();
        assert_eq!(read.len(), 3);
        for (got, (cid, data)) in read.iter().zip(&blocks) {
            assert_eq!((&got.cid, &got.data), (cid, data));
        }
        assert_eq!(r.position(), car.len() as u64);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (car, _) = sample();
        let mut boundaries = vec![car.len()];
        let r = CarReader::new(&car[..]).unwrap();
        let header_end = r.position() as usize;
        boundaries.push(header_end);
        for b in CarReader::new(&car[..]).unwrap() {
            boundaries.push(b.unwrap().offset as usize);
        }
        for cut in 0..car.len() {
            let result = CarReader::new(&car[..cut]).and_then(|r| r.collect::<Result<Vec<_>>>());
            if boundaries.contains(&cut) && cut >= header_end {
                assert!(result.is_ok(), "cut at {cut}");
            } else {
                assert!(matches!(result, Err(Error::Car { .. })), "cut at {cut}");
            }
        }
    }

    #[test]
    fn frame_cap_and_varints() {
        let (car, _) = sample();
        // The third block's frame is over 300 bytes.
        let err = CarReader::with_max_frame(&car[..], 100)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err();
        let Error::Car { offset, reason } = err else {
            panic!("{err}")
        };
        assert!(reason.contains("larger than"), "{reason}");
        assert!(offset > 0);
        // An overlong varint.
        let err = CarReader::new(&[0xffu8; 12][..]).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
