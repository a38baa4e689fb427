//! `code2session`: a `wx.login` code for the user's openid and session key.

use http::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::super::validate_code;
use super::{MpClient, decode_secret_answer};
use crate::error::{DecodeError, Result};
use crate::http::{Idempotency, OutgoingRequest};

/// The answer of `code2session`. Debug output never shows the session key.
#[derive(Clone, Debug)]
pub struct Session {
    /// The user's openid in this mini program.
    pub openid: String,
    /// The session key (decrypts `wx.getUserInfo` data; never send it to the client).
    pub session_key: SecretString,
    /// The unionid, present only when the app is bound to an Open Platform account.
    pub unionid: Option<String>,
}

impl MpClient {
    /// Exchanges a `wx.login` code for the user's openid and session key
    /// (`GET /sns/jscode2session`). The code is single-use, so the call is never repeated.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an empty or non-printable code (nothing sent);
    /// [`ApiError::MiniProgram`] with e.g. [`ErrCode::InvalidCode`], [`ErrCode::CodeUsed`],
    /// [`ErrCode::MinuteQuotaReached`], [`ErrCode::CodeBlocked`]; transport and decode errors.
    pub async fn code2session(&self, js_code: &str) -> Result<Session> {
        validate_code("js_code", js_code)?;
        let config = &self.inner.config;
        let url = self.url(
            "/sns/jscode2session",
            &[
                ("appid", config.appid.as_str()),
                ("secret", config.app_secret.expose_secret()),
                ("js_code", js_code),
                ("grant_type", "authorization_code"),
            ],
        )?;
        let response = self
            .inner
            .http
            .send(Idempotency::Once, || {
                Ok(OutgoingRequest::new(Method::GET, url.as_str()))
            })
            .await?;
        #[derive(Deserialize)]
        struct Answer {
            openid: String,
            session_key: String,
            #[serde(default)]
            unionid: Option<String>,
        }
        let answer: Answer = decode_secret_answer(&response, "jscode2session")?;
        if answer.openid.is_empty() {
            return Err(DecodeError::invalid("openid", "empty").into());
        }
        if answer.session_key.is_empty() {
            return Err(DecodeError::invalid("session_key", "empty").into());
        }
        Ok(Session {
            openid: answer.openid,
            session_key: SecretString::from(answer.session_key),
            unionid: answer.unionid.filter(|u| !u.is_empty()),
        })
    }
}
