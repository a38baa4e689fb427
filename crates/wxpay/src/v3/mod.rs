//! API v3: JSON, RSA-SHA256, AES-256-GCM.

pub mod aead;
pub mod auth;
pub mod certificates;
pub mod client;
pub mod models;
pub mod notify;
pub mod verifier;

/// A v3 error `code`. Unknown codes are kept as [`ErrorCode::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `SYSTEM_ERROR`.
    SystemError,
    /// Any other code, as sent.
    Unknown(String),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::SystemError => f.write_str("SYSTEM_ERROR"),
            ErrorCode::Unknown(s) => f.write_str(s),
        }
    }
}
