//! CAR import and export against fixtures made by ipfs-car and @ipld/car
//! (see tests/data/README.md), truncated and corrupt CARs, and a round trip
//! through the real ipfs-car CLI when it is installed.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{keys, temp_entries, tempdir};
use flatstore::car::{self, CarReader};
use flatstore::cid::Cid;
use flatstore::{dag, Durability, Error, ImportOptions, Key, Options, Store};
use sha2::{Digest, Sha256};

const DIR_ROOT: &str = "bafybeihpxpfoqegb67d7v3wbsqt7uzyleclkgh3cvghxz6k27cha4ah4jy";
const CHUNKED_ROOT: &str = "bafybeihldu4nyfuen22epubreya2rjnjhpjm6gebgmzsygu2zlkjpttm3u";
const CBOR_ROOT: &str = "bafyreid6t2n6umqs3lewfbj2xrnmvrxsu7cfle2z34ysrs2oe4eqa6k4em";

/// (file, root, frames, blocks stored: frames minus identity ones)
const FIXTURES: [(&str, &str, usize, usize); 3] = [
    ("dir.car", DIR_ROOT, 5, 5),
    ("chunked.car", CHUNKED_ROOT, 28, 28),
    ("dagcbor.car", CBOR_ROOT, 7, 5),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn open(dir: &Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::None)).unwrap()
}

/// One frame of a CAR: where it starts and ends, and its block.
struct Frame {
    start: u64,
    end: u64,
    cid: Cid,
    data: Vec<u8>,
}

/// The header's end and every frame, read without hash checks.
fn frames(car: &[u8]) -> (u64, Vec<Frame>) {
    let mut r = CarReader::new(car).unwrap();
    r.set_verify(false);
    let header_end = r.position();
    let mut out = Vec::new();
    while let Some(b) = r.next_block().unwrap() {
        out.push(Frame {
            start: b.offset,
            end: r.position(),
            cid: b.cid,
            data: b.data,
        });
    }
    (header_end, out)
}

/// The distinct non-identity blocks of a CAR.
fn stored_set(car: &[u8]) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    frames(car)
        .1
        .into_iter()
        .filter(|f| !flatstore::is_identity(&f.cid))
        .map(|f| (f.cid.to_bytes(), f.data))
        .collect()
}

/// What must not change when an import fails.
fn snapshot(store: &Store) -> (Vec<Key>, u64, u64) {
    let s = store.stats();
    (keys(store), s.blocks, s.bytes)
}

fn assert_unchanged(store: &Store, before: &(Vec<Key>, u64, u64), what: &str) {
    assert_eq!(&snapshot(store), before, "{what}: store changed");
    assert!(
        temp_entries(store.root()).is_empty(),
        "{what}: left in .temp: {:?}",
        temp_entries(store.root())
    );
}

#[test]
fn import_fixtures() {
    for (name, root, nframes, nstored) in FIXTURES {
        let car = fixture(name);
        let dir = tempdir();
        let store = open(dir.path());
        let summary = store.import_car(&car[..], &ImportOptions::new()).unwrap();
        assert_eq!(summary.roots, vec![root.parse::<Cid>().unwrap()], "{name}");
        assert_eq!(summary.blocks, nframes as u64, "{name}");
        assert_eq!(summary.identity, (nframes - nstored) as u64, "{name}");
        assert_eq!(summary.written, nstored as u64, "{name}");
        assert_eq!(summary.already_present, 0, "{name}");
        assert_eq!(summary.car_bytes, car.len() as u64, "{name}");

        let blocks = stored_set(&car);
        assert_eq!(blocks.len(), nstored, "{name}");
        let mut bytes = 0;
        for (cid, data) in &blocks {
            let cid = Cid::try_from(&cid[..]).unwrap();
            let file = fs::read(store.block_path(&Key::from_cid(&cid))).unwrap();
            assert_eq!(&file, data, "{name}: {cid}");
            flatstore::check_block(&cid, &file).unwrap();
            bytes += data.len() as u64;
        }
        assert_eq!(summary.bytes, bytes, "{name}");
        assert_eq!(keys(&store).len(), nstored, "{name}");
        let stats = store.stats();
        assert_eq!(
            (stats.blocks, stats.bytes),
            (nstored as u64, bytes),
            "{name}"
        );
        assert!(temp_entries(dir.path()).is_empty());

        // Importing again writes nothing new.
        let again = store.import_car(&car[..], &ImportOptions::new()).unwrap();
        assert_eq!((again.written, again.already_present), (0, nstored as u64));
        assert_eq!(store.stats().blocks, nstored as u64);
    }
}

#[test]
fn export_writes_the_same_blocks_root_first() {
    for (name, root, _, nstored) in FIXTURES {
        let car = fixture(name);
        let dir = tempdir();
        let store = open(dir.path());
        store.import_car(&car[..], &ImportOptions::new()).unwrap();
        let root: Cid = root.parse().unwrap();
        let mut out = Vec::new();
        let mut calls = 0;
        let summary = store
            .export_car(&root, &mut out, |p| {
                calls += 1;
                assert_eq!(p.blocks, calls);
            })
            .unwrap();
        assert_eq!(summary.blocks, nstored as u64, "{name}");
        assert_eq!(summary.car_bytes, out.len() as u64, "{name}");
        assert_eq!(calls, nstored as u64);

        let r = CarReader::new(&out[..]).unwrap();
        assert_eq!(r.roots(), &[root], "{name}");
        let (_, exported) = frames(&out);
        assert_eq!(exported[0].cid, root, "{name}: root first");
        assert_eq!(stored_set(&out), stored_set(&car), "{name}: block sets");
        // Every block after the root follows a block that links to it.
        let mut seen: BTreeSet<Cid> = BTreeSet::new();
        let mut linked: BTreeSet<Cid> = BTreeSet::new();
        for f in &exported {
            assert!(seen.insert(f.cid), "{name}: {} written twice", f.cid);
            assert!(
                f.cid == root || linked.contains(&f.cid),
                "{name}: {} before its parent",
                f.cid
            );
            for l in dag::links(&f.cid, &f.data).unwrap().unwrap_or_default() {
                linked.insert(l);
                // Links of identity blocks count as links of their parent.
                if flatstore::is_identity(&l) {
                    let inner = l.hash().digest();
                    for l2 in dag::links(&l, inner).unwrap().unwrap_or_default() {
                        linked.insert(l2);
                    }
                }
            }
        }
        if name == "dagcbor.car" {
            assert_eq!(summary.identity, 2);
        }
    }
}

/// The chunked fixture's input: sha256(str(i)) for i in 0..625.
fn chunked_input() -> Vec<u8> {
    (0..625)
        .flat_map(|i: u32| Sha256::digest(i.to_string().as_bytes()).to_vec())
        .collect()
}

#[test]
fn export_is_depth_first_in_link_order() {
    // The raw leaves of a UnixFS file, in export order, are the file.
    let car = fixture("chunked.car");
    let dir = tempdir();
    let store = open(dir.path());
    store.import_car(&car[..], &ImportOptions::new()).unwrap();
    let mut out = Vec::new();
    store
        .export_car(&CHUNKED_ROOT.parse().unwrap(), &mut out, |_| {})
        .unwrap();
    let content: Vec<u8> = frames(&out)
        .1
        .into_iter()
        .filter(|f| f.cid.codec() == dag::RAW)
        .flat_map(|f| f.data)
        .collect();
    assert_eq!(content.len(), 20_000);
    assert!(content == chunked_input(), "leaves out of order");
}

#[test]
fn export_of_a_missing_block_fails_naming_it() {
    let car = fixture("chunked.car");
    let dir = tempdir();
    let store = open(dir.path());
    store.import_car(&car[..], &ImportOptions::new()).unwrap();
    let (_, fr) = frames(&car);
    let leaf = fr[3].cid;
    assert!(store.delete_block(&leaf).unwrap());
    let err = store
        .export_car(&CHUNKED_ROOT.parse().unwrap(), Vec::new(), |_| {})
        .unwrap_err();
    assert!(
        matches!(&err, Error::MissingBlock { cid } if *cid == leaf.to_string()),
        "{err}"
    );
    // A root that is not there at all.
    let absent: Cid = DIR_ROOT.parse().unwrap();
    assert!(matches!(
        store.export_car(&absent, Vec::new(), |_| {}),
        Err(Error::MissingBlock { .. })
    ));
}

/// A store holding dir.car, for failure tests to check it stays as it is.
fn populated() -> (tempfile::TempDir, Store) {
    let dir = tempdir();
    let store = open(dir.path());
    store
        .import_car(&fixture("dir.car")[..], &ImportOptions::new())
        .unwrap();
    (dir, store)
}

#[test]
fn truncated_cars_fail_at_the_frame_and_change_nothing() {
    let car = fixture("chunked.car");
    let (header_end, fr) = frames(&car);
    let (_dir, store) = populated();
    let before = snapshot(&store);

    let mut cuts: Vec<(u64, u64)> = [0, 1, header_end / 2, header_end - 1]
        .into_iter()
        .map(|c| (c, 0))
        .collect();
    for f in &fr {
        let cid_len = f.cid.to_bytes().len() as u64;
        let varint_len = f.end - f.start - cid_len - f.data.len() as u64;
        for cut in [
            f.start + 1,                        // in the varint if it has 2 bytes
            f.start + varint_len + 1,           // in the CID (version byte read)
            f.start + varint_len + cid_len / 2, // in the CID's digest
            f.start + varint_len + cid_len + 1, // in the data
            f.end - 1,                          // one byte short
        ] {
            cuts.push((cut, f.start));
        }
    }
    for (cut, expect) in cuts {
        let err = store
            .import_car(&car[..cut as usize], &ImportOptions::new())
            .unwrap_err();
        match &err {
            Error::Car { offset, reason } => {
                assert_eq!(*offset, expect, "cut at {cut}: {reason}");
                assert!(
                    reason.contains("truncated") || reason.contains("empty input"),
                    "cut at {cut}: {reason}"
                );
            }
            other => panic!("cut at {cut}: {other}"),
        }
        assert!(err.to_string().contains(&format!("offset {expect}")));
        assert_unchanged(&store, &before, &format!("cut at {cut}"));
    }
    // Cuts exactly at frame boundaries are complete (shorter) CARs.
    let s = store
        .import_car(&car[..fr[3].start as usize], &ImportOptions::new())
        .unwrap();
    assert_eq!(s.blocks, 3);
}

#[test]
fn a_corrupt_block_fails_the_whole_import() {
    let mut car = fixture("chunked.car");
    let (_, fr) = frames(&car);
    let bad = &fr[5];
    let pos = bad.end as usize - 10;
    car[pos] ^= 0x01;
    let (_dir, store) = populated();
    let before = snapshot(&store);
    let err = store
        .import_car(&car[..], &ImportOptions::new())
        .unwrap_err();
    match &err {
        Error::Car { offset, reason } => {
            assert_eq!(*offset, bad.start);
            assert!(reason.contains("hash mismatch"), "{reason}");
            assert!(reason.contains(&bad.cid.to_string()), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert_unchanged(&store, &before, "corrupt block");
    // None of the five good blocks before it made it in.
    for f in &fr[..5] {
        assert!(!store.has_block(&f.cid).unwrap());
    }
}

#[test]
fn a_frame_over_the_cap_fails() {
    let car = fixture("chunked.car");
    let (_, fr) = frames(&car);
    let (_dir, store) = populated();
    let before = snapshot(&store);
    // ipfs-car writes the 1 KiB leaves first: the very first frame is too big.
    let err = store
        .import_car(&car[..], &ImportOptions::new().max_frame(1000))
        .unwrap_err();
    match &err {
        Error::Car { offset, reason } => {
            assert_eq!(*offset, fr[0].start);
            assert!(reason.contains("larger than"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert_unchanged(&store, &before, "frame cap");
    // A header over the cap.
    assert!(matches!(
        store.import_car(&car[..], &ImportOptions::new().max_frame(20)),
        Err(Error::Car { offset: 0, .. })
    ));
    assert_unchanged(&store, &before, "header cap");
}

#[test]
fn garbage_and_bad_headers() {
    let (_dir, store) = populated();
    let before = snapshot(&store);
    let cases: [&[u8]; 5] = [
        b"",
        b"\x05hello",                                // not dag-cbor
        b"\x01\xa0",                                 // a map without version
        b"\x0b\xa1\x67version\x03",                  // version 3
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", // overlong varint
    ];
    for c in cases {
        let err = store.import_car(c, &ImportOptions::new()).unwrap_err();
        assert!(matches!(err, Error::Car { offset: 0, .. }), "{c:?}: {err}");
    }
    assert_unchanged(&store, &before, "garbage");
    assert!(car::scan(b"\x05hello").is_err());
}

/// Wraps a CARv1 in a CARv2: pragma, header, `pad` bytes, payload, then
/// junk standing in for an index.
fn carv2(v1: &[u8], pad: usize) -> Vec<u8> {
    let mut out = vec![0x0a, 0xa1, 0x67];
    out.extend_from_slice(b"version");
    out.push(0x02);
    let data_offset = (11 + 40 + pad) as u64;
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data_offset.to_le_bytes());
    out.extend_from_slice(&(v1.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data_offset + v1.len() as u64).to_le_bytes());
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend_from_slice(v1);
    out.extend_from_slice(b"an index flatstore does not read");
    out
}

#[test]
fn carv2_payload_is_imported() {
    let v1 = fixture("dir.car");
    let v2 = carv2(&v1, 9);
    let scan = car::scan(&v2).unwrap();
    assert_eq!((scan.version, scan.blocks), (2, 5));
    let dir = tempdir();
    let store = open(dir.path());
    let s = store.import_car(&v2[..], &ImportOptions::new()).unwrap();
    assert_eq!(s.roots, vec![DIR_ROOT.parse::<Cid>().unwrap()]);
    assert_eq!(s.written, 5);
    // Truncated inside the payload: an error naming the frame.
    let (_, fr) = frames(&v1);
    let cut = 60 + fr[2].start as usize + 3;
    let err = car::scan(&v2[..cut]).unwrap_err();
    assert!(
        matches!(err, Error::Car { offset, .. } if offset == 60 + fr[2].start),
        "{err}"
    );
    // Ending exactly at a frame boundary before the declared end is truncation too.
    let err = car::scan(&v2[..60 + fr[2].start as usize]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn import_reports_progress() {
    let car = fixture("chunked.car");
    let dir = tempdir();
    let store = open(dir.path());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let opts = ImportOptions::new().progress(move |p| log.lock().unwrap().push(*p));
    store.import_car(&car[..], &opts).unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 28);
    for w in seen.windows(2) {
        assert!(w[0].bytes_read <= w[1].bytes_read && w[0].blocks <= w[1].blocks);
    }
    let last = seen.last().unwrap();
    assert_eq!((last.bytes_read, last.blocks), (car.len() as u64, 28));
}

/// The ipfs-car CLI: `$FLATSTORE_IPFS_CAR`, else `ipfs-car` on PATH.
fn ipfs_car() -> Option<PathBuf> {
    let candidate = std::env::var_os("FLATSTORE_IPFS_CAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ipfs-car"));
    match Command::new(&candidate).arg("--version").output() {
        Ok(o) if o.status.success() => Some(candidate),
        Ok(o) => {
            eprintln!(
                "skipped: `{} --version` failed: {}",
                candidate.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!(
                "skipped: ipfs-car not found ({}: {e}); install it with \
                 `npm install --global ipfs-car@3.1.0` or set FLATSTORE_IPFS_CAR",
                candidate.display()
            );
            None
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ipfs_car_round_trip() {
    let Some(ipfs_car) = ipfs_car() else { return };
    let work = tempdir();
    let input = work.path().join("input");
    let files: HashMap<&str, Vec<u8>> = HashMap::from([
        // Chunked by ipfs-car's default 1 MiB chunker into 4 leaves.
        ("big.bin", common::block(1, 3 * 1024 * 1024 + 100_000)),
        ("small.txt", b"small file\n".to_vec()),
        ("sub/nested.bin", common::block(2, 70_000)),
        ("sub/deeper/empty", Vec::new()),
    ]);
    for (name, data) in &files {
        let p = input.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let in_car = work.path().join("in.car");
    run(Command::new(&ipfs_car)
        .arg("pack")
        .arg(&input)
        .arg("--output")
        .arg(&in_car));
    let in_bytes = fs::read(&in_car).unwrap();

    let store_dir = work.path().join("store");
    let store = open(&store_dir);
    let summary = store
        .import_car(fs::File::open(&in_car).unwrap(), &ImportOptions::new())
        .unwrap();
    assert_eq!(summary.roots.len(), 1);
    let root = summary.roots[0];

    let out_car = work.path().join("out.car");
    store
        .export_car(&root, fs::File::create(&out_car).unwrap(), |_| {})
        .unwrap();
    assert_eq!(
        stored_set(&fs::read(&out_car).unwrap()),
        stored_set(&in_bytes)
    );

    let unpacked = work.path().join("unpacked");
    run(Command::new(&ipfs_car)
        .arg("unpack")
        .arg(&out_car)
        .arg("--output")
        .arg(&unpacked));
    for (name, data) in &files {
        let got = fs::read(unpacked.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *data, "{name} differs after the round trip");
    }
}

#[test]
fn export_of_a_deep_chain_does_not_recurse() {
    // 5,000 dag-cbor blocks, each linking to the next, exported on a thread
    // with a 256 KiB stack: a recursive walk would overflow it.
    use ipld_core::ipld::Ipld;
    let dir = tempdir();
    let store = open(dir.path());
    let batch = store.batch().unwrap();
    let mut next: Option<Cid> = None;
    for i in 0..5_000i64 {
        let mut node = std::collections::BTreeMap::new();
        node.insert("i".to_string(), Ipld::Integer(i.into()));
        if let Some(n) = next {
            node.insert("next".to_string(), Ipld::Link(n));
        }
        let bytes = serde_ipld_dagcbor::to_vec(&Ipld::Map(node)).unwrap();
        let cid = Cid::new_v1(
            dag::DAG_CBOR,
            multihash_codetable::MultihashDigest::digest(
                &multihash_codetable::Code::Sha2_256,
                &bytes,
            ),
        );
        batch.put_block(&cid, &bytes).unwrap();
        next = Some(cid);
    }
    batch.commit().unwrap();
    let root = next.unwrap();
    let exporter = store.clone();
    let out = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let mut out = Vec::new();
            let s = exporter.export_car(&root, &mut out, |_| {}).unwrap();
            assert_eq!(s.blocks, 5_000);
            out
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(car::scan(&out).unwrap().blocks, 5_000);
}

#[test]
fn identity_frames_are_checked_too() {
    // An identity CID whose frame data differs from its digest.
    let id = Cid::new_v1(
        dag::RAW,
        flatstore::multihash::Multihash::<64>::wrap(0, b"abc").unwrap(),
    );
    let mut w = flatstore::CarWriter::new(Vec::new(), &[id]).unwrap();
    w.write_block(&id, b"abd").unwrap();
    let bytes = w.finish().unwrap();
    let dir = tempdir();
    let store = open(dir.path());
    let err = store
        .import_car(&bytes[..], &ImportOptions::new())
        .unwrap_err();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    // With the right data it imports, storing nothing.
    let mut w = flatstore::CarWriter::new(Vec::new(), &[id]).unwrap();
    w.write_block(&id, b"abc").unwrap();
    let bytes = w.finish().unwrap();
    let s = store.import_car(&bytes[..], &ImportOptions::new()).unwrap();
    assert_eq!((s.blocks, s.identity, s.written), (1, 1, 0));
    assert!(keys(&store).is_empty());
}
