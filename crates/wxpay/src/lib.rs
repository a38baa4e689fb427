//! # wxpay
//!
//! WeChat Pay for the Rust server behind a WeChat Mini Program: API v2 (XML, MD5/HMAC-SHA256) and
//! API v3 (JSON, RSA-SHA256, AES-256-GCM, platform certificates or the WeChat Pay public key), and
//! the mini-program server API (code2session, access token, mini-program codes, phone numbers).
//!
//! The protocol code (signing, verifying, codecs, parsers) is pure: plain functions over bytes and
//! strings. I/O lives in the clients.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bill;
pub mod error;
pub mod http;
pub mod ids;
pub mod keys;
pub mod money;
pub mod mp;
pub mod nonce;
pub mod pay_params;
pub mod time;
pub mod v2;
pub mod v3;
pub mod validate;

pub use error::{
    ApiError, CryptoError, DecodeError, Error, Result, SignatureError, TransportError,
};
pub use ids::{AppId, InvalidId, OpenId, OutBillNo, OutRefundNo, OutTradeNo, SubMchid};
pub use keys::{RsaPrivateKey, RsaPublicKey, X509Certificate};
pub use money::Fen;
pub use pay_params::RequestPayment;

/// The README's Rust examples, compiled by `cargo test --doc` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
