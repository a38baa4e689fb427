//! One module per command family; [`run`] dispatches.

pub mod bench;
pub mod decrypt;
pub mod demo;
pub mod pay_sign;
pub mod serve;
pub mod sign;
pub mod sim;
pub mod verify;

use std::io::{Read, Write};

use crate::cli::{Command, DecryptCommand, PaySignCommand, SignCommand, VerifyCommand};
use crate::failure::Failure;

/// Runs one command against the given standard streams.
///
/// # Errors
/// The command's [`Failure`].
pub fn run(
    command: &Command,
    stdin: impl Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    match command {
        Command::Sign(SignCommand::V2(args)) => sign::v2(args, stdin, out, err),
        Command::Sign(SignCommand::V3(args)) => sign::v3(args, out, err),
        Command::Verify(VerifyCommand::V3(args)) => verify::v3(args, out),
        Command::Decrypt(DecryptCommand::V3(args)) => decrypt::v3(args, out),
        Command::PaySign(PaySignCommand::V3(args)) => pay_sign::v3(args, out),
        Command::PaySign(PaySignCommand::V2(args)) => pay_sign::v2(args, out),
        Command::Sim(args) => sim::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Demo => demo::run(out),
        Command::Bench(args) => bench::run(args, out, err),
    }
}
