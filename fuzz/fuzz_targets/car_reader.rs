//! The CAR reader on arbitrary bytes: it never panics, an error names an
//! offset inside the input, and what it accepts is consistent: frame
//! offsets increase and lie inside the input, every block matches its CID,
//! the counts agree with `car::scan`, and writing the blocks out again with
//! `CarWriter` reads back to the same roots and blocks.
#![no_main]

use flatstore::car::{scan, CarReader, CarWriter};
use flatstore::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scanned = scan(data);
    if let Err(Error::Car { offset, .. }) = &scanned {
        assert!(*offset <= data.len() as u64, "offset {offset} past the end ({})", data.len());
    }
    let Ok(mut reader) = CarReader::with_max_frame(data, 1 << 16) else {
        return;
    };
    let roots = reader.roots().to_vec();
    let mut blocks = Vec::new();
    let mut last = None;
    loop {
        match reader.next_block() {
            Ok(Some(b)) => {
                assert!(b.offset < data.len() as u64);
                assert!(last.is_none_or(|l| b.offset > l), "offsets go backwards");
                last = Some(b.offset);
                flatstore::check_block(&b.cid, &b.data).expect("reader let a bad block through");
                blocks.push((b.cid, b.data));
            }
            Ok(None) => break,
            Err(Error::Car { offset, .. }) => {
                assert!(offset <= data.len() as u64);
                return;
            }
            Err(e) => panic!("a CAR error that is not Error::Car: {e}"),
        }
    }
    if let Ok(s) = &scanned {
        assert_eq!(s.blocks, blocks.len() as u64);
        assert_eq!(s.block_bytes, blocks.iter().map(|(_, d)| d.len() as u64).sum::<u64>());
        assert_eq!(s.roots, roots);
    }
    // Round trip through the writer.
    let Ok(mut w) = CarWriter::new(Vec::new(), &roots) else { return };
    for (cid, d) in &blocks {
        w.write_block(cid, d).unwrap();
    }
    let out = w.finish().unwrap();
    let mut again = CarReader::new(&out[..]).unwrap();
    assert_eq!(again.roots(), &roots[..]);
    for (cid, d) in &blocks {
        let b = again.next_block().unwrap().unwrap();
        assert_eq!((&b.cid, &b.data), (cid, d));
    }
    assert!(again.next_block().unwrap().is_none());
});
