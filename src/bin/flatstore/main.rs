//! `flatstore`: the command-line tool for flatstore block stores.
//!
//! Human-readable output by default, `--json` for scripts; exit code 0 on
//! success, 1 with a one-line error on stderr on failure (`has`: 0 present,
//! 1 absent, 2 on error). Output to a closed pipe ends the command quietly.

mod args;
mod commands;
mod errors;
mod out;
mod progress;

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    let args = match args::Cli::try_parse() {
        Ok(args) => args,
        // --help and --version print to stdout and succeed.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // No command at all: the usage, as clap formats it, on stderr.
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if wants_json() {
                errors::print_json("usage", "a command is required");
            }
            return ExitCode::FAILURE;
        }
        // A usage error is a failure like any other: exit code 1, one line.
        Err(e) => {
            let msg = e.to_string();
            let msg = one_line(&msg);
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            return fail("usage", msg, wants_json(), ExitCode::FAILURE);
        }
    };
    let json = args.json;
    let error_code = if matches!(args.command, args::Command::Has { .. }) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    };
    match commands::run(args) {
        Ok(code) => code,
        // The reader went away: nothing more to say to anyone.
        Err(e) if errors::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // A command that printed its own --json report prints no second one.
            let json = json && e.downcast_ref::<commands::Reported>().is_none();
            fail(errors::kind(&e), &errors::message(&e), json, error_code)
        }
    }
}

/// Reports `msg` as one line on stderr (and as `{"error": …}` on stdout
/// with `--json`) and returns `code`.
fn fail(kind: &str, msg: &str, json: bool, code: ExitCode) -> ExitCode {
    let msg = one_line(msg);
    if json {
        errors::print_json(kind, &msg);
    }
    let _ = writeln!(std::io::stderr(), "flatstore: error: {msg}");
    code
}

/// The lines of `msg`, trimmed and joined by spaces.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `--json` was given, for errors found before the arguments parsed.
fn wants_json() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}
