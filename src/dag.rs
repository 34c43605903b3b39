//! Link extraction: which blocks a block points to, by codec.
//!
//! - raw (`0x55`): no links.
//! - dag-pb (`0x70`): the `Hash` of every `PBLink` in the node's `Links`,
//!   in order. Decoded by a small hand-written protobuf reader that looks at
//!   nothing but the links: the `ipld-dagpb` crate would decode the whole
//!   node (copying its `Data`) into its own types for a result we would
//!   immediately walk again, and the wire format involved (two field numbers,
//!   varints and length-delimited fields) is small enough to check fully
//!   here, strictly as the dag-pb spec asks (unknown fields are an error).
//! - dag-cbor (`0x71`): every CID (tag 42) in the document, decoded with
//!   `serde_ipld_dagcbor` into `ipld-core`'s `Ipld` (strict dag-cbor, depth
//!   limited by the decoder). Links inside maps come in key order.
//! - any other codec: [`links`] returns `None`; callers treat such blocks
//!   as leaves.

use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::error::{Error, Result};

/// Multicodec code of raw bytes.
pub const RAW: u64 = 0x55;
/// Multicodec code of dag-pb (UnixFS).
pub const DAG_PB: u64 = 0x70;
/// Multicodec code of dag-cbor.
pub const DAG_CBOR: u64 = 0x71;

/// The CIDs the block `data` (named by `cid`) links to, in the order they
/// appear, duplicates included; `None` when `cid`'s codec is not one of
/// raw, dag-pb or dag-cbor.
///
/// # Errors
/// [`Error::Codec`] naming `cid` when the data is not valid for its codec.
pub fn links(cid: &Cid, data: &[u8]) -> Result<Option<Vec<Cid>>> {
    let codec_error = |reason: String| Error::Codec {
        cid: cid.to_string(),
        reason,
    };
    match cid.codec() {
        RAW => Ok(Some(Vec::new())),
        DAG_PB => dag_pb_links(data).map(Some).map_err(codec_error),
        DAG_CBOR => dag_cbor_links(data).map(Some).map_err(codec_error),
        _ => Ok(None),
    }
}

fn dag_cbor_links(data: &[u8]) -> std::result::Result<Vec<Cid>, String> {
    let ipld: Ipld =
        serde_ipld_dagcbor::from_slice(data).map_err(|e| format!("invalid dag-cbor: {e}"))?;
    Ok(ipld
        .iter()
        .filter_map(|node| match node {
            Ipld::Link(cid) => Some(*cid),
            _ => None,
        })
        .collect())
}

/// Protobuf wire types used by dag-pb.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// A cursor over protobuf bytes.
struct Pb<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Pb<'a> {
    fn new(data: &'a [u8]) -> Pb<'a> {
        Pb { data, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(format!("truncated varint at byte {}", self.pos));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(format!("varint overflows 64 bits at byte {}", self.pos - 1));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> std::result::Result<(u64, u64), String> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let start = self.pos;
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("field at byte {start} runs past the end"))?;
        let b = &self.data[self.pos..end];
        self.pos = end;
        Ok(b)
    }
}

/// `PBNode { Links (2): repeated PBLink; Data (1): optional bytes }`,
/// `PBLink { Hash (1): bytes; Name (2): string; Tsize (3): uint64 }`.
fn dag_pb_links(data: &[u8]) -> std::result::Result<Vec<Cid>, String> {
    let mut node = Pb::new(data);
    let mut links = Vec::new();
    while !node.done() {
        let at = node.pos;
        match node.key()? {
            (1, LEN) => {
                node.bytes()?;
            }
            (2, LEN) => {
                let link = node.bytes()?;
                links.push(dag_pb_link(link).map_err(|e| format!("link at byte {at}: {e}"))?);
            }
            (field, wire) => {
                return Err(format!(
                    "unexpected field {field} (wire type {wire}) at byte {at} in PBNode"
                ))
            }
        }
    }
    Ok(links)
}

fn dag_pb_link(data: &[u8]) -> std::result::Result<Cid, String> {
    let mut link = Pb::new(data);
    let mut hash = None;
    while !link.done() {
        let at = link.pos;
        match link.key()? {
            (1, LEN) => {
                let bytes = link.bytes()?;
                let cid = Cid::try_from(bytes).map_err(|e| format!("invalid Hash: {e}"))?;
                if hash.replace(cid).is_some() {
                    return Err("two Hash fields".into());
                }
            }
            (2, LEN) => {
                let name = link.bytes()?;
                std::str::from_utf8(name).map_err(|_| "Name is not UTF-8".to_string())?;
            }
            (3, VARINT) => {
                link.varint()?;
            }
            (field, wire) => {
                return Err(format!(
                    "unexpected field {field} (wire type {wire}) at byte {at}"
                ))
            }
        }
    }
    hash.ok_or_else(|| "no Hash".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use multihash_codetable::{Code, MultihashDigest};

    fn raw_cid(data: &[u8]) -> Cid {
        Cid::new_v1(RAW, Code::Sha2_256.digest(data))
    }

    fn pb_link(cid: &Cid, name: &str, size: u8) -> Vec<u8> {
        let h = cid.to_bytes();
        let mut l = vec![0x0a, h.len() as u8];
        l.extend_from_slice(&h);
        l.extend_from_slice(&[0x12, name.len() as u8]);
        l.extend_from_slice(name.as_bytes());
        l.extend_from_slice(&[0x18, size]);
        l
    }

    #[test]
    fn dag_pb_links_in_order() {
        let (a, b) = (raw_cid(b"a"), raw_cid(b"b"));
        let mut node = Vec::new();
        for (cid, name) in [(&a, "a"), (&b, "bb")] {
            let l = pb_link(cid, name, 1);
            node.push(0x12);
            node.push(l.len() as u8);
            node.extend_from_slice(&l);
        }
        node.extend_from_slice(&[0x0a, 0x02, 0x08, 0x01]);
        let cid = Cid::new_v1(DAG_PB, Code::Sha2_256.digest(&node));
        assert_eq!(links(&cid, &node).unwrap(), Some(vec![a, b]));
        // Empty node: no links.
        assert_eq!(links(&cid, &[]).unwrap(), Some(vec![]));
        // Truncated, unknown field, link without hash.
        for bad in [
            &node[..node.len() - 1],
            &[0x1a, 0x00][..],
            &[0x12, 0x02, 0x18, 0x01][..],
        ] {
            assert!(
                matches!(links(&cid, bad), Err(Error::Codec { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dag_cbor_and_others() {
        let a = raw_cid(b"a");
        let doc = Ipld::List(vec![Ipld::Link(a), Ipld::Integer(3), Ipld::Link(a)]);
        let bytes = serde_ipld_dagcbor::to_vec(&doc).unwrap();
        let cid = Cid::new_v1(DAG_CBOR, Code::Sha2_256.digest(&bytes));
        assert_eq!(links(&cid, &bytes).unwrap(), Some(vec![a, a]));
        assert!(matches!(links(&cid, &[0xff]), Err(Error::Codec { .. })));
        assert_eq!(links(&a, b"anything").unwrap(), Some(vec![]));
        let json = Cid::new_v1(0x0129, Code::Sha2_256.digest(b"{}"));
        assert_eq!(links(&json, b"{}").unwrap(), None);
    }
}
