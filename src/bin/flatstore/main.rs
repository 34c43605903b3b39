//! `flatstore`: the command-line tool for flatstore block stores.
//!
//! Human-readable output by default, `--json` for scripts; exit code 0 on
//! success, 1 with a one-line error on stderr on failure.

mod args;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match args::Cli::try_parse() {
        Ok(args) => args,
        // --help and --version print to stdout and succeed.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // A usage error is a failure like any other: exit code 1, one line.
        Err(e) => return fail(&e.to_string(), wants_json()),
    };
    let json = args.json;
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A command that printed its own --json report prints no second one.
            let json = json && e.downcast_ref::<commands::Reported>().is_none();
            fail(&format!("{e:#}"), json)
        }
    }
}

/// Reports `msg` as one line on stderr (and as `{"error": …}` on stdout
/// with `--json`) and returns exit code 1.
fn fail(msg: &str, json: bool) -> ExitCode {
    // One line: the chain of causes (or clap's usage text), joined.
    let msg = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    if json {
        println!("{}", serde_json::json!({ "error": msg }));
    }
    eprintln!("flatstore: error: {msg}");
    ExitCode::FAILURE
}

/// Whether `--json` was given, for errors found before the arguments parsed.
fn wants_json() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}
