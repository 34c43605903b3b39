//! Progress on stderr, hidden when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn styled(pb: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

fn visible() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar of `total` bytes (a file of known size) with `{msg}` in front, or a
/// spinner counting bytes when the total is unknown (stdin). The message
/// carries the counts that are not bytes (blocks).
pub fn bytes(total: Option<u64>) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    match total {
        Some(t) => styled(
            ProgressBar::new(t),
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ),
        None => {
            let pb = styled(
                ProgressBar::new_spinner(),
                "{msg} {spinner} {bytes} ({bytes_per_sec})",
            );
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }
    }
}

/// A bar of `total` units named `unit`, with `{msg}` in front.
pub fn counted(total: u64, unit: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    styled(
        ProgressBar::new(total),
        &format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"),
    )
}

/// Turns `pb` into the commit phase: a spinner with the elapsed time, so a
/// long commit is seen as its own step rather than a frozen bar.
pub fn committing(pb: &ProgressBar, what: String) {
    if pb.is_hidden() {
        return;
    }
    if let Ok(style) = ProgressStyle::with_template("{msg} {spinner} {elapsed}") {
        pb.set_style(style);
    }
    pb.set_message(what);
    pb.enable_steady_tick(Duration::from_millis(200));
}

/// `n` bytes for people (KiB, MiB, …).
pub fn size(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
