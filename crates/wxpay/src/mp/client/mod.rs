//! The mini-program server API client: `code2session`, the access-token cache, unlimited
//! mini-program codes and phone numbers.
//!
//! The AppSecret travels in the query of `/sns/jscode2session` and `/cgi-bin/token`, and the
//! access token in the query of every call that uses it; neither is ever put in an error or a log
//! line (transport errors drop the URL, and this module never formats one).

//!
//! One module per area: [`session`] (`code2session`), [`token`] (the access-token cache),
//! [`wxacode`] (mini-program codes), [`phone`] (phone numbers).

mod phone;
mod session;
mod shipping;
mod token;
mod wxacode;

pub use phone::{PhoneInfo, PhoneWatermark};
pub use session::Session;
pub use token::AccessToken;
pub use wxacode::{
    EnvVersion, LineColor, WXACODE_MAX_WIDTH, WXACODE_MIN_WIDTH, WxaCodeImage, WxaCodeRequest,
};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ErrCode;
use crate::error::{ApiError, DecodeError, Error, Result, TransportError};
use crate::http::{BaseUrls, HttpClient, HttpConfig, OutgoingRequest, RawResponse, join};
use crate::nonce::{Clock, SystemClock};
use token::TokenCache;

/// The default margin before expiry at which a cached access token is replaced.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The largest `refresh_before` accepted: beyond it a token (valid 2 hours) would be refreshed
/// most of the time.
pub const MAX_REFRESH_BEFORE: Duration = Duration::from_secs(30 * 60);

/// Which endpoint issues the access token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// `GET /cgi-bin/token`: each call issues a new token and invalidates the previous one after
    /// a 5-minute overlap, so two servers fetching tokens for one AppID undo each other.
    Token,
    /// `POST /cgi-bin/stable_token`: the same token is returned until 5 minutes before expiry, so
    /// several servers can share an AppID. Recommended by WeChat.
    #[default]
    StableToken,
}

/// Settings of an [`MpClient`].
#[derive(Clone)]
pub struct MpConfig {
    /// The mini program's AppID (`wx…`).
    pub appid: String,
    /// The AppSecret.
    pub app_secret: SecretString,
    /// Where access tokens come from.
    pub token_source: TokenSource,
    /// A cached token is replaced when less than this remains before it expires (default 5 min).
    pub refresh_before: Duration,
}

impl MpConfig {
    /// A configuration with the stable token and the default refresh margin.
    pub fn new(appid: impl Into<String>, app_secret: impl Into<String>) -> Self {
        MpConfig {
            appid: appid.into(),
            app_secret: SecretString::from(app_secret.into()),
            token_source: TokenSource::default(),
            refresh_before: DEFAULT_REFRESH_BEFORE,
        }
    }

    /// The same configuration with another token source.
    #[must_use]
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.token_source = source;
        self
    }

    /// The same configuration with another refresh margin.
    #[must_use]
    pub fn refresh_before(mut self, margin: Duration) -> Self {
        self.refresh_before = margin;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.appid.is_empty()
            || self.appid.len() > 64
            || !self.appid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Error::InvalidRequest(
                "appid must be 1 to 64 ASCII letters and digits (like wx1234567890abcdef)".into(),
            ));
        }
        let secret = self.app_secret.expose_secret();
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidRequest(
                "app_secret must be non-empty visible ASCII characters".into(),
            ));
        }
        if self.refresh_before > MAX_REFRESH_BEFORE {
            return Err(Error::InvalidRequest(format!(
                "refresh_before of {} s is over the {} s maximum",
                self.refresh_before.as_secs(),
                MAX_REFRESH_BEFORE.as_secs()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for MpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpConfig")
            .field("appid", &self.appid)
            .field("app_secret", &"<redacted>")
            .field("token_source", &self.token_source)
            .field("refresh_before", &self.refresh_before)
            .finish()
    }
}

/// The client of the mini-program server API. Cheap to clone: clones share the HTTP pool and the
/// token cache.
#[derive(Clone)]
pub struct MpClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: MpConfig,
    http: HttpClient,
    base: String,
    clock: Arc<dyn Clock>,
    cache: TokenCache,
}

impl std::fmt::Debug for MpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpClient")
            .field("config", &self.inner.config)
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl MpClient {
    /// A client on the system clock.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the configuration is invalid; errors of [`HttpClient::new`].
    pub fn new(config: MpConfig, http: &HttpConfig, urls: &BaseUrls) -> Result<Self> {
        Self::with_clock(config, http, urls, Arc::new(SystemClock))
    }

    /// A client whose token expiry follows `clock` (tests move it to expire tokens).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the configuration is invalid; errors of [`HttpClient::new`].
    pub fn with_clock(
        config: MpConfig,
        http: &HttpConfig,
        urls: &BaseUrls,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        Self::with_http(config, urls, HttpClient::new(http)?, clock)
    }

    /// A client over your own HTTP client (see [`crate::http::Transport`]) and clock.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the configuration or the base URL is invalid.
    pub fn with_http(
        config: MpConfig,
        urls: &BaseUrls,
        http: HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        reqwest::Url::parse(&urls.mp).map_err(|e| {
            Error::InvalidRequest(format!("the mini-program base URL is not a URL: {e}"))
        })?;
        Ok(MpClient {
            inner: Arc::new(Inner {
                config,
                http,
                base: urls.mp.trim_end_matches('/').to_owned(),
                clock,
                cache: TokenCache::default(),
            }),
        })
    }

    /// The AppID this client serves.
    #[must_use]
    pub fn appid(&self) -> &str {
        &self.inner.config.appid
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url> {
        let base = join(&self.inner.base, path);
        if query.is_empty() {
            reqwest::Url::parse(&base)
        } else {
            reqwest::Url::parse_with_params(&base, query)
        }
        .map_err(|e| Error::InvalidRequest(format!("the mini-program base URL is not a URL: {e}")))
    }
}

fn post_json(url: &reqwest::Url, body: Bytes) -> Result<OutgoingRequest> {
    Ok(OutgoingRequest::new(Method::POST, url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")?
        .body(body))
}

/// An error answer: a JSON object whose `errcode` is present and not 0.
fn errcode_of(response: &RawResponse) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        errcode: Option<i64>,
        #[serde(default)]
        errmsg: Option<String>,
    }
    let envelope: Envelope = serde_json::from_slice(&response.body).ok()?;
    match envelope.errcode {
        Some(code) if code != 0 => Some(ApiError::MiniProgram {
            errcode: ErrCode::from_code(code),
            errmsg: envelope.errmsg.unwrap_or_default(),
        }),
        _ => None,
    }
}

fn check_answer(response: &RawResponse) -> Result<()> {
    if let Some(err) = errcode_of(response) {
        return Err(err.into());
    }
    if !response.status.is_success() {
        return Err(TransportError::Status {
            status: response.status.as_u16(),
        }
        .into());
    }
    Ok(())
}

fn decode_answer<T: DeserializeOwned>(response: &RawResponse) -> Result<T> {
    check_answer(response)?;
    serde_json::from_slice(&response.body).map_err(|e| DecodeError::json(&e).into())
}

/// Like [`decode_answer`] for answers holding a secret (a session key, a token): serde's message
/// can quote a value, so only the position is kept.
fn decode_secret_answer<T: DeserializeOwned>(response: &RawResponse, what: &str) -> Result<T> {
    check_answer(response)?;
    serde_json::from_slice(&response.body).map_err(|e| {
        DecodeError::Json(format!(
            "{what} answer is not the expected JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
        .into()
    })
}

#[cfg(test)]
mod tests;
