//! The two protobuf messages a UnixFS import writes, encoded exactly as
//! Kubo (boxo) encodes them: dag-pb's `PBNode` (links first, then data; every
//! link with its `Hash`, `Name` and `Tsize`, the name written even when
//! empty) and UnixFS's `Data` (fields in field-number order, `blocksizes`
//! unpacked as proto2 writes a repeated `uint64`).

/// Wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// UnixFS `Data.Type` values.
pub(crate) const DIRECTORY: u64 = 1;
pub(crate) const FILE: u64 = 2;
pub(crate) const SYMLINK: u64 = 4;

pub(crate) fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn tag(field: u64, wire: u64, out: &mut Vec<u8>) {
    varint((field << 3) | wire, out);
}

fn bytes_field(field: u64, data: &[u8], out: &mut Vec<u8>) {
    tag(field, LEN, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn varint_field(field: u64, n: u64, out: &mut Vec<u8>) {
    tag(field, VARINT, out);
    varint(n, out);
}

/// A UnixFS `Data` message.
#[derive(Debug, Default)]
pub(crate) struct Data<'a> {
    pub(crate) kind: u64,
    pub(crate) data: Option<&'a [u8]>,
    pub(crate) filesize: Option<u64>,
    pub(crate) blocksizes: &'a [u64],
}

impl Data<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.map_or(0, <[u8]>::len) + 16);
        varint_field(1, self.kind, &mut out);
        if let Some(d) = self.data {
            bytes_field(2, d, &mut out);
        }
        if let Some(size) = self.filesize {
            varint_field(3, size, &mut out);
        }
        for &b in self.blocksizes {
            varint_field(4, b, &mut out);
        }
        out
    }
}

/// One `PBLink`.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) hash: Vec<u8>,
    pub(crate) name: String,
    pub(crate) tsize: u64,
}

/// Encodes a `PBNode` with `links` (in the order given) and `data`.
pub(crate) fn node(links: &[Link], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + links.len() * 48 + 8);
    let mut link = Vec::new();
    for l in links {
        link.clear();
        bytes_field(1, &l.hash, &mut link);
        bytes_field(2, l.name.as_bytes(), &mut link);
        varint_field(3, l.tsize, &mut link);
        bytes_field(2, &link, &mut out);
    }
    bytes_field(1, data, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_and_directory_bytes() {
        let file = Data {
            kind: FILE,
            filesize: Some(0),
            ..Data::default()
        };
        assert_eq!(node(&[], &file.encode()), [0x0a, 4, 0x08, 2, 0x18, 0]);
        let dir = Data {
            kind: DIRECTORY,
            ..Data::default()
        };
        assert_eq!(node(&[], &dir.encode()), [0x0a, 2, 0x08, 1]);
    }

    #[test]
    fn varints() {
        for (n, bytes) in [
            (0u64, &[0u8][..]),
            (127, &[0x7f]),
            (128, &[0x80, 1]),
            (262144, &[0x80, 0x80, 0x10]),
        ] {
            let mut out = Vec::new();
            varint(n, &mut out);
            assert_eq!(out, bytes, "{n}");
        }
    }
}
