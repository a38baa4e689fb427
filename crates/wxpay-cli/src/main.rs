//! The `wxpay` binary.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod failure;
mod input;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let result = commands::run(
        &cli.command,
        std::io::stdin().lock(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Nothing more can be done if stderr is closed; the exit code still tells.
            let _ = writeln!(stderr.lock(), "{failure}");
            failure.exit_code()
        }
    }
}
