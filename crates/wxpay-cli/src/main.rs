//! The `wxpay` binary.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod demo;
mod failure;
mod input;
mod process;
mod sandbox;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Unlocked handles: `sim`, `serve` and `demo` log from other threads, which must not wait
    // on a lock this thread would hold for the whole run.
    let result = commands::run(
        &cli.command,
        std::io::stdin().lock(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Nothing more can be done if stderr is closed; the exit code still tells.
            let _ = writeln!(std::io::stderr(), "{failure}");
            failure.exit_code()
        }
    }
}
