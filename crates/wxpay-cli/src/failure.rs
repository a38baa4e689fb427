//! How a command fails: bad input (exit 2) or an input judged invalid (exit 1).

use std::fmt;
use std::process::ExitCode;

/// A command's failure, printed as one line on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The arguments or input cannot be used (missing file, bad PEM, malformed JSON/XML, ...).
    Input(String),
    /// The input was well-formed and checked, and it is not valid (bad signature, failed decryption).
    Invalid(String),
    /// The command could not run for a reason outside its input (a runtime, TLS or signal setup).
    Runtime(String),
}

impl Failure {
    /// An input failure.
    pub fn input(message: impl Into<String>) -> Self {
        Failure::Input(message.into())
    }

    /// An "invalid" verdict.
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::Invalid(message.into())
    }

    /// A failure outside the input.
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure::Runtime(message.into())
    }

    /// The process exit code: 2 like a usage error for bad input, 1 for an invalid verdict or a
    /// failure to run.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Input(_) => ExitCode::from(2),
            Failure::Invalid(_) | Failure::Runtime(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Input(message) | Failure::Runtime(message) => write!(f, "error: {message}"),
            Failure::Invalid(message) => write!(f, "invalid: {message}"),
        }
    }
}
