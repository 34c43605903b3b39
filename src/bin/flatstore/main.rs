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
    let args = args::Cli::parse();
    let json = args.json;
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, joined.
            let msg = format!("{e:#}").replace('\n', " ");
            if json {
                println!("{}", serde_json::json!({ "error": msg }));
            }
            eprintln!("flatstore: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
