//! Errors, one enum per layer. None of them ever carries a key, a signature input that contains
//! a key, or a session_key.

use std::fmt;

/// The top-level error of every client call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request did not get an HTTP answer (connect, TLS, timeout, body read).
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),
    /// WeChat answered, but with an error (v2 `return_code`/`result_code`, v3 `{code,message}`,
    /// mini-program `errcode`).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The answer's signature could not be verified; nothing in it was believed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The answer could not be decoded (XML, JSON, bill text, encoding).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A cryptographic operation failed (bad key, failed decryption).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The request was refused before it was sent because an argument is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// What went wrong below HTTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer within the configured timeout.
    #[error("timed out")]
    Timeout,
    /// Connection refused, reset, TLS failure, DNS.
    #[error("connection failed: {0}")]
    Connect(String),
    /// An answer status the protocol does not expect, with no usable error body.
    #[error("unexpected HTTP status {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// The body could not be read, or was larger than allowed.
    #[error("body: {0}")]
    Body(String),
}

impl TransportError {
    /// Maps a reqwest error, dropping the URL (it can hold an access_token in its query).
    #[must_use]
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return TransportError::Timeout;
        }
        let err = err.without_url();
        if err.is_body() || err.is_decode() {
            TransportError::Body(err.to_string())
        } else if let Some(status) = err.status() {
            TransportError::Status {
                status: status.as_u16(),
            }
        } else {
            TransportError::Connect(error_chain(&err))
        }
    }

    /// Whether retrying the same idempotent request may help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Timeout | TransportError::Connect(_) => true,
            TransportError::Status { status } => *status >= 500,
            TransportError::Body(_) => false,
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error answer from WeChat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// v2 `return_code=FAIL`: the protocol-level failure (bad signature, bad XML, ...).
    #[error("v2 return_code FAIL: {return_msg}")]
    V2Return {
        /// `return_msg`, e.g. `签名错误`.
        return_msg: String,
    },
    /// v2 `result_code=FAIL`: a business failure.
    #[error("v2 business error {err_code}: {err_code_des}")]
    V2Business {
        /// The typed `err_code`.
        err_code: crate::v2::ErrCode,
        /// `err_code_des`.
        err_code_des: String,
    },
    /// v3 non-2xx answer with the `{code, message, detail}` body.
    #[error("v3 error {status} {code}: {message}")]
    V3 {
        /// HTTP status.
        status: u16,
        /// The typed `code`.
        code: crate::v3::ErrorCode,
        /// `message`.
        message: String,
        /// `detail`, as JSON text, when present.
        detail: Option<String>,
    },
    /// Mini-program API `errcode != 0`.
    #[error("mini-program API errcode {errcode:?}: {errmsg}")]
    MiniProgram {
        /// The typed `errcode`.
        errcode: crate::mp::ErrCode,
        /// `errmsg`.
        errmsg: String,
    },
}

/// A signature that did not verify, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A signature header or field is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A header or field is present but malformed (not base64, not a number, ...).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A `WECHATPAY/SIGNTEST/` probe: deliberately invalid, must be refused.
    #[error("WECHATPAY/SIGNTEST probe signature refused")]
    Probe,
    /// The timestamp is outside the allowed window.
    #[error("timestamp {timestamp} is {skew} s away from now, outside the {window} s window")]
    Stale {
        /// The signed timestamp.
        timestamp: i64,
        /// |now - timestamp| in seconds.
        skew: i64,
        /// The allowed window in seconds.
        window: i64,
    },
    /// No certificate or public key with this serial / ID is known.
    #[error("unknown platform serial {0}")]
    UnknownSerial(String),
    /// The signature type is not the one this library handles.
    #[error("unsupported signature type {0}")]
    UnsupportedType(String),
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// Input that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// XML refused by the safe codec.
    #[error(transparent)]
    Xml(#[from] crate::v2::xml::XmlError),
    /// JSON that is not valid or has the wrong shape.
    #[error("JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(String),
    /// A field has a value that cannot be parsed.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field name.
        field: String,
        /// Why (never the value when the field is secret).
        reason: String,
    },
    /// A bill that does not follow the documented layout.
    #[error("bill: {0}")]
    Bill(String),
    /// A body over the allowed size.
    #[error("body of {size} bytes is over the {limit} byte limit")]
    TooLarge {
        /// Actual size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Bytes that are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
}

impl DecodeError {
    /// A JSON decoding error; the message of serde_json names the field and position only.
    #[must_use]
    pub fn json(err: &serde_json::Error) -> Self {
        DecodeError::Json(err.to_string())
    }

    /// A field that could not be parsed.
    pub fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        DecodeError::InvalidField {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// A cryptographic failure. Deliberately vague: it never says which byte was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A key could not be parsed or is not acceptable (wrong type, wrong size).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// Authenticated decryption failed: wrong key, nonce, associated data, or tampered data.
    #[error("decryption failed (authentication tag mismatch or wrong key)")]
    Decrypt,
    /// Encryption failed (e.g. plaintext too long for RSA-OAEP).
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// Base64 that does not decode.
    #[error("invalid base64 in {0}")]
    Base64(&'static str),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
