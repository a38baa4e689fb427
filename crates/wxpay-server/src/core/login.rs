//! Login: a `wx.login` code, exchanged at WeChat (code2session), becomes a session of ours.

use secrecy::SecretString;
use wxpay::mp::ErrCode;

use crate::store::{NewSession, Store, StoreError, now_ms};
use crate::wechat::WeChat;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The code is malformed (refused before calling WeChat).
    #[error("{0}")]
    InvalidCode(String),
    /// WeChat refused the code (invalid, used, blocked).
    #[error("WeChat refused the login code: {0}")]
    Refused(wxpay::Error),
    /// WeChat's per-minute quota of this mini program is used up.
    #[error("too many logins: retry in a minute")]
    Quota,
    /// WeChat failed.
    #[error("code2session failed: {0}")]
    WeChat(wxpay::Error),
    /// No randomness for the token.
    #[error("session token: {0}")]
    Token(String),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new session: the bearer token (only its hash is stored) and its buyer.
#[derive(Debug)]
pub struct Session {
    /// The bearer token, handed to the mini program once.
    pub token: SecretString,
    /// The buyer.
    pub openid: String,
}

/// Exchanges the code at WeChat and stores a session of `ttl_secs`.
///
/// # Errors
/// [`LoginError`].
pub async fn login(
    store: &Store,
    wechat: &WeChat,
    code: &str,
    ttl_secs: u64,
) -> Result<Session, LoginError> {
    let session = wechat
        .mp
        .code2session(code.trim())
        .await
        .map_err(|err| match &err {
            wxpay::Error::InvalidRequest(m) => LoginError::InvalidCode(m.clone()),
            wxpay::Error::Api(wxpay::ApiError::MiniProgram { errcode, .. }) => match errcode {
                ErrCode::InvalidCode | ErrCode::CodeUsed | ErrCode::CodeBlocked => {
                    LoginError::Refused(err)
                }
                ErrCode::MinuteQuotaReached => LoginError::Quota,
                _ => LoginError::WeChat(err),
            },
            _ => LoginError::WeChat(err),
        })?;
    let token = new_token().map_err(|e| LoginError::Token(e.to_owned()))?;
    let ttl_ms = i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2000) * 1000;
    store
        .create_session(&NewSession {
            token_hash: &token_hash(&token),
            openid: &session.openid,
            appid: &wechat.appid,
            unionid: session.unionid.as_deref(),
            session_key: &session.session_key,
            expires_at: now_ms() + ttl_ms,
        })
        .await?;
    Ok(Session {
        token: SecretString::from(token),
        openid: session.openid,
    })
}

/// Ends the session of `token` (logout): it is deleted, and every instance refuses it from now
/// on (see [`crate::store::notices`]). Returns whether there was such a session; logging out
/// twice is not an error.
///
/// # Errors
/// [`StoreError::Database`].
pub async fn logout(store: &Store, token: &str) -> Result<bool, StoreError> {
    store.revoke_session(&token_hash(token)).await
}

/// The stored form of a session token: its SHA-256, hex (a leaked table holds no usable token).
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// A fresh bearer token: 32 random bytes, base64url without padding.
///
/// # Errors
/// When the system random source fails.
pub fn new_token() -> Result<String, &'static str> {
    use aws_lc_rs::rand::SecureRandom as _;
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the random source failed")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
