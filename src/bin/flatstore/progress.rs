//! Progress bars on stderr, hidden when stderr is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` units (`bytes` formats them as sizes), or a spinner
/// when `total` is unknown. Hidden unless stderr is a terminal.
pub fn bar(total: Option<u64>, bytes: bool, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    let template = match (total.is_some(), bytes) {
        (true, true) => "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        (true, false) => "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})",
        (false, _) => "{msg} {spinner} {pos} blocks",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}
