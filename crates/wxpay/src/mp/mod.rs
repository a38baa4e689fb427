//! The mini-program server API of `api.weixin.qq.com`.

pub mod client;

/// A mini-program API `errcode`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrCode {
    /// Any code, as sent.
    Other(i64),
}
