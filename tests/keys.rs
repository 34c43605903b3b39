//! Every class of bad key is refused with `Error::InvalidKey`, and nothing is
//! ever written outside the store's root.

mod common;

use common::tempdir;
use flatstore::{Error, Key, Options, Store, MAX_KEY_LEN};

#[test]
fn bad_key_classes_are_refused() {
    let long = "A".repeat(MAX_KEY_LEN + 1);
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("/", "empty"),
        ("A/B", "path separator"),
        ("../ETC", "."),
        ("..", "."),
        ("A\\B", "path separator"),
        ("\\..\\X", "path separator"),
        ("ABC.data", "'.'"),
        ("abc", "lower case"),
        ("CIQa", "lower case"),
        ("A\0B", "NUL"),
        (&long, "longer than 250"),
        ("A B", "outside"),
        ("ÄB", "outside"),
        ("A:B", "outside"),
        ("CON", "device"),
        ("PRN", "device"),
        ("AUX", "device"),
        ("NUL", "device"),
        ("COM1", "device"),
        ("LPT9", "device"),
        ("/COM5", "device"),
    ];
    for (bad, reason) in cases {
        match Key::new(bad) {
            Err(Error::InvalidKey { reason: r, .. }) => {
                assert!(
                    r.contains(reason),
                    "{bad:?}: reason {r:?}, expected {reason:?}"
                )
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
        assert!(bad.parse::<Key>().is_err());
    }
}

#[test]
fn good_keys_are_accepted() {
    for good in [
        "A",
        "/CIQA",
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+-_=",
        "CON1",
        "COM0",
        "LPT10",
        "NULL",
    ] {
        let k = Key::new(good).unwrap();
        assert_eq!(k.as_str(), good.trim_start_matches('/'));
        assert_eq!(k.to_string(), k.as_str());
    }
    assert_eq!(
        Key::new(&"Z".repeat(MAX_KEY_LEN)).unwrap().as_str().len(),
        250
    );
}

/// A key of 250 characters makes a 255-byte file name, which every common
/// filesystem accepts; all operations stay under the root.
#[test]
fn nothing_is_written_outside_the_root() {
    let dir = tempdir();
    let root = dir.path().join("s");
    let store = Store::open(&root, Options::default()).unwrap();
    let long = Key::new(&"Q".repeat(MAX_KEY_LEN)).unwrap();
    store.put(&long, b"long").unwrap();
    assert_eq!(store.get(&long).unwrap().unwrap(), b"long");
    for k in ["A", "_", "=", "-", "+", "__"] {
        let k = Key::new(k).unwrap();
        store.put(&k, b"short").unwrap();
        let b = store.batch().unwrap();
        b.put(&Key::new(&format!("{k}B")).unwrap(), b"b").unwrap();
        b.delete(&k).unwrap();
        b.commit().unwrap();
    }
    store.close().unwrap();
    // The only thing in the parent is the root itself.
    let parent: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(parent, ["s"]);
    for p in common::tree(&root) {
        assert!(!p.to_string_lossy().contains(".."), "{p:?}");
    }
}
