//! API v2: XML, MD5 / HMAC-SHA256.

pub mod client;
pub mod models;
pub mod notify;
pub mod sign;
pub mod xml;

pub use sign::SignType;
pub use xml::XmlMap;

/// A v2 `err_code`. Unknown codes are kept as [`ErrCode::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrCode {
    /// `SYSTEMERROR`: retry with the same parameters.
    SystemError,
    /// Any other code, as sent.
    Unknown(String),
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrCode::SystemError => f.write_str("SYSTEMERROR"),
            ErrCode::Unknown(s) => f.write_str(s),
        }
    }
}
