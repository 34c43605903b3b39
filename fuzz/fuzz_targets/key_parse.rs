//! `Key::new` never panics, and accepts exactly the keys the rules allow:
//! an optional leading `/` (dropped), then 1 to 250 characters of
//! `0-9 A-Z + - _ =`, not a Windows device name. Accepted keys round-trip
//! through `Display`/`FromStr`, and decoding one as a multihash never panics.
#![no_main]

use flatstore::{Key, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

const DEVICES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// The rules, written independently of the crate.
fn allowed(body: &str) -> bool {
    !body.is_empty()
        && body.len() <= 250
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b"+-_=".contains(&b))
        && !DEVICES.contains(&body)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let body = s.strip_prefix('/').unwrap_or(s);
    match Key::new(s) {
        Ok(key) => {
            assert!(allowed(body), "accepted a bad key {s:?}");
            assert_eq!(key.as_str(), body);
            assert!(key.as_str().len() <= MAX_KEY_LEN);
            assert_eq!(key.to_string(), body);
            assert_eq!(key.as_str().parse::<Key>().unwrap(), key);
            let _ = key.to_multihash();
            // The block file name fits in 255 bytes.
            assert!(format!("{key}.data").len() <= 255);
        }
        Err(e) => {
            assert!(!allowed(body), "refused a good key {s:?}: {e}");
            assert!(matches!(e, flatstore::Error::InvalidKey { .. }), "{e}");
            assert!(s.parse::<Key>().is_err());
        }
    }
});
