//! `Shard::from_str` never panics; what it accepts is `NAME/N` (optionally
//! after `/repo/flatfs/shard/v1/`) with a known name and 1 <= N <= 200; an
//! accepted spec round-trips through `Display` and the `SHARDING` file form;
//! and the directory it gives a key matches a plain re-implementation of
//! go-ds-flatfs's shard functions.
#![no_main]

use flatstore::{Key, Shard};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "/repo/flatfs/shard/v1/";

/// The accepted grammar, written independently of the crate.
fn expected(spec: &str) -> Option<Shard> {
    let rest = spec.strip_prefix(PREFIX).unwrap_or(spec);
    let (name, n) = rest.split_once('/')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = n.parse().ok()?;
    if !(1..=200).contains(&n) {
        return None;
    }
    match name {
        "prefix" => Some(Shard::Prefix(n)),
        "suffix" => Some(Shard::Suffix(n)),
        "next-to-last" => Some(Shard::NextToLast(n)),
        _ => None,
    }
}

/// go-ds-flatfs's shard functions, literally.
fn go_dir(shard: Shard, key: &str) -> String {
    match shard {
        Shard::Prefix(n) => format!("{key}{}", "_".repeat(n))[..n].to_string(),
        Shard::Suffix(n) => {
            let s = format!("{}{key}", "_".repeat(n));
            s[s.len() - n..].to_string()
        }
        Shard::NextToLast(n) => {
            let s = format!("{}{key}", "_".repeat(n + 1));
            s[s.len() - n - 1..s.len() - 1].to_string()
        }
    }
}

fuzz_target!(|input: (&str, &str)| {
    let (spec, key) = input;
    let parsed = spec.parse::<Shard>();
    assert_eq!(parsed.as_ref().ok(), expected(spec).as_ref(), "{spec:?}");
    let Ok(shard) = parsed else {
        return;
    };
    let shown = shard.to_string();
    assert!(shown.starts_with(PREFIX));
    assert_eq!(shown.parse::<Shard>().unwrap(), shard);
    assert_eq!(shard.sharding_file(), format!("{shown}\n"));
    assert!(shard.validate().is_ok());
    if let Ok(key) = Key::new(key) {
        let dir = shard.dir(&key);
        assert_eq!(dir, go_dir(shard, key.as_str()), "{shard} {key}");
        assert_eq!(dir.len(), shard.param());
    }
});
