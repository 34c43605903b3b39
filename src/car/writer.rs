//! CARv1 writer.

use std::collections::BTreeMap;
use std::io::Write;

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::push_varint;
use crate::error::{Error, Result};

/// Writes a CARv1: the header at creation, then one frame per
/// [`write_block`](CarWriter::write_block).
///
/// Writes go straight to the writer, three per block (length, CID, data):
/// wrap a file or socket in a [`std::io::BufWriter`].
/// [`Store::export_car`](crate::Store::export_car) does so itself.
///
/// # Errors
/// A failed write is an [`Error::CarWrite`] naming the byte offset in the
/// output where the failed frame starts.
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    out: W,
    offset: u64,
    scratch: Vec<u8>,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header `{roots: [...], version: 1}` (dag-cbor, as every
    /// CAR implementation writes it).
    ///
    /// # Errors
    /// [`Error::CarWrite`] at offset 0.
    pub fn new(out: W, roots: &[Cid]) -> Result<CarWriter<W>> {
        let header = Ipld::Map(BTreeMap::from([
            (
                "roots".to_string(),
                Ipld::List(roots.iter().map(|c| Ipld::Link(*c)).collect()),
            ),
            ("version".to_string(), Ipld::Integer(1)),
        ]));
        let body = serde_ipld_dagcbor::to_vec(&header).expect("a CAR header always encodes");
        let mut frame = Vec::with_capacity(body.len() + 2);
        push_varint(body.len() as u64, &mut frame);
        frame.extend_from_slice(&body);
        let mut w = CarWriter {
            out,
            offset: 0,
            scratch: Vec::with_capacity(96),
        };
        w.write_all(&[&frame])?;
        Ok(w)
    }

    /// Writes one block frame: length, `cid`'s binary form, `data`. The data
    /// is not checked against the CID.
    ///
    /// # Errors
    /// [`Error::CarWrite`] naming the offset of this frame.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<()> {
        let mut head = std::mem::take(&mut self.scratch);
        head.clear();
        let cid_bytes = cid.to_bytes();
        push_varint((cid_bytes.len() + data.len()) as u64, &mut head);
        head.extend_from_slice(&cid_bytes);
        let result = self.write_all(&[&head, data]);
        self.scratch = head;
        result
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Flushes and returns the writer.
    ///
    /// # Errors
    /// [`Error::CarWrite`] if the flush fails.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush().map_err(|source| Error::CarWrite {
            offset: self.offset,
            source,
        })?;
        Ok(self.out)
    }

    fn write_all(&mut self, parts: &[&[u8]]) -> Result<()> {
        let start = self.offset;
        for part in parts {
            self.out.write_all(part).map_err(|source| Error::CarWrite {
                offset: start,
                source,
            })?;
            self.offset += part.len() as u64;
        }
        Ok(())
    }
}
