//! The mini-program server API client: `code2session`, the access-token cache, unlimited
//! mini-program codes and phone numbers.
//!
//! The AppSecret travels in the query of `/sns/jscode2session` and `/cgi-bin/token`, and the
//! access token in the query of every call that uses it; neither is ever put in an error or a log
//! line (transport errors drop the URL, and this module never formats one).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ErrCode, validate_code, validate_page, validate_scene};
use crate::error::{ApiError, DecodeError, Error, Result, TransportError};
use crate::http::{
    BaseUrls, HttpClient, HttpConfig, Idempotency, OutgoingRequest, RawResponse, join,
};
use crate::nonce::{Clock, SystemClock};

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

/// An access token and when it expires. Debug output never shows the token.
#[derive(Clone)]
pub struct AccessToken {
    value: SecretString,
    expires_at: i64,
}

impl AccessToken {
    /// A token with its expiry (Unix seconds).
    #[must_use]
    pub fn new(value: impl Into<String>, expires_at: i64) -> Self {
        AccessToken {
            value: SecretString::from(value.into()),
            expires_at,
        }
    }

    /// The token, for the `access_token` query parameter.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        self.value.expose_secret()
    }

    /// When the token expires, Unix seconds (the clock at fetch time plus `expires_in`).
    #[must_use]
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.expires_at == other.expires_at && self.expose_secret() == other.expose_secret()
    }
}

impl Eq for AccessToken {}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

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

/// `env_version` of a mini-program code: which version of the app the code opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvVersion {
    /// The released version.
    #[default]
    Release,
    /// The trial version.
    Trial,
    /// The development version.
    Develop,
}

/// An RGB colour, decimal components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineColor {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

/// The smallest `width` of a mini-program code.
pub const WXACODE_MIN_WIDTH: u32 = 280;
/// The largest `width` of a mini-program code.
pub const WXACODE_MAX_WIDTH: u32 = 1280;

/// The body of `POST /wxa/getwxacodeunlimit`. Codes made this way are permanent and unlimited in
/// number; the page reads `scene` from its launch options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WxaCodeRequest {
    /// Up to 32 characters of `[0-9A-Za-z]` and ``!#$&'()*+,/:;=?@-._~``.
    pub scene: String,
    /// The page to open, like `pages/index/index` (no leading `/`, no query); the home page when
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// When true, WeChat refuses a page that is not in the released version.
    pub check_path: bool,
    /// Which version of the app the code opens.
    pub env_version: EnvVersion,
    /// Width in pixels, 280 to 1280.
    pub width: u32,
    /// Let WeChat choose the line colour.
    pub auto_color: bool,
    /// The line colour when `auto_color` is false.
    pub line_color: LineColor,
    /// Transparent background.
    pub is_hyaline: bool,
}

impl WxaCodeRequest {
    /// A request with WeChat's defaults: home page, `check_path` true, release, 430 px, black.
    pub fn new(scene: impl Into<String>) -> Self {
        WxaCodeRequest {
            scene: scene.into(),
            page: None,
            check_path: true,
            env_version: EnvVersion::Release,
            width: 430,
            auto_color: false,
            line_color: LineColor::default(),
            is_hyaline: false,
        }
    }

    /// The same request for another page.
    #[must_use]
    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.page = Some(page.into());
        self
    }

    /// The same request with another width.
    #[must_use]
    pub fn width(mut self, width: u32) -> Self {
        self.width = width;
        self
    }

    /// Checks the request as WeChat would, so that a bad one is refused before it is sent.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field and the rule.
    pub fn validate(&self) -> Result<()> {
        validate_scene(&self.scene)?;
        if let Some(page) = &self.page {
            validate_page(page)?;
        }
        if !(WXACODE_MIN_WIDTH..=WXACODE_MAX_WIDTH).contains(&self.width) {
            return Err(Error::InvalidRequest(format!(
                "width {} is outside {WXACODE_MIN_WIDTH}..={WXACODE_MAX_WIDTH} pixels",
                self.width
            )));
        }
        Ok(())
    }
}

/// A mini-program code image as WeChat sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WxaCodeImage {
    /// `image/jpeg`, or `image/png` for a transparent background (lowercase, no parameters).
    pub content_type: String,
    /// The image file.
    pub bytes: Bytes,
}

/// The phone number bound to the user's WeChat account.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PhoneInfo {
    /// The number with its country code when outside mainland China.
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    /// The number without country code.
    #[serde(rename = "purePhoneNumber")]
    pub pure_phone_number: String,
    /// The country code, e.g. `86` (WeChat's documentation shows it both as a string and as a
    /// number; both are accepted).
    #[serde(rename = "countryCode", deserialize_with = "string_or_number")]
    pub country_code: String,
    /// Which app the number was issued to, and when.
    pub watermark: PhoneWatermark,
}

/// The `watermark` of a phone number: the app it was issued to, and when.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PhoneWatermark {
    /// Unix seconds.
    pub timestamp: i64,
    /// The AppID.
    pub appid: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(u64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::Text(text) => text,
        Text::Number(number) => number.to_string(),
    })
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

/// The token cache: `state` is read without waiting; `refresh` is held by the one caller that
/// fetches, so that however many callers find the token stale, one request goes out.
#[derive(Default)]
struct TokenCache {
    state: Mutex<CacheState>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct CacheState {
    current: Option<CachedToken>,
    /// Bumped when a fetch ends, so that a caller who waited on `refresh` can tell whether a
    /// fetch happened meanwhile and share its failure instead of sending another request.
    completed_fetches: u64,
    last_failure: Option<Error>,
}

#[derive(Clone)]
struct CachedToken {
    token: AccessToken,
    refresh_at: i64,
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
        reqwest::Url::parse(&urls.mp).map_err(|e| {
            Error::InvalidRequest(format!("the mini-program base URL is not a URL: {e}"))
        })?;
        Ok(MpClient {
            inner: Arc::new(Inner {
                config,
                http: HttpClient::new(http)?,
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

    /// A valid access token: the cached one, or a new one when less than `refresh_before`
    /// remains. However many callers ask at once, at most one request is in flight; callers that
    /// waited for a fetch that failed get its error instead of sending their own. When a refresh
    /// fails while the cached token has not yet expired, the cached token is returned.
    ///
    /// # Errors
    /// [`ApiError::MiniProgram`] from the token endpoint (e.g. [`ErrCode::InvalidCredential`] for a
    /// wrong AppSecret, [`ErrCode::IpNotWhitelisted`]); transport and decode errors.
    pub async fn access_token(&self) -> Result<AccessToken> {
        let seen_fetches = {
            let state = self.cache_state();
            if let Some(token) = self.fresh(&state) {
                return Ok(token);
            }
            state.completed_fetches
        };
        let _refreshing = self.inner.cache.refresh.lock().await;
        {
            let state = self.cache_state();
            if let Some(token) = self.fresh(&state) {
                return Ok(token);
            }
            if state.completed_fetches != seen_fetches
                && let Some(failure) = &state.last_failure
            {
                return self.unexpired(&state).ok_or_else(|| replicate(failure));
            }
        }
        let fetched = self.fetch_token().await;
        let mut state = self.cache_state();
        state.completed_fetches += 1;
        match fetched {
            Ok(token) => {
                let lifetime = token.expires_at - self.inner.clock.now();
                let margin =
                    i64::try_from(self.inner.config.refresh_before.as_secs()).unwrap_or(i64::MAX);
                // A stable token fetched in its last minutes comes back with little left; refreshing
                // at half its remaining life then avoids a request on every call.
                let refresh_at = token.expires_at - margin.min(lifetime / 2);
                state.current = Some(CachedToken {
                    token: token.clone(),
                    refresh_at,
                });
                state.last_failure = None;
                Ok(token)
            }
            Err(err) => {
                tracing::warn!(error = %err, "mini-program access token refresh failed");
                state.last_failure = Some(replicate(&err));
                match self.unexpired(&state) {
                    Some(token) => Ok(token),
                    None => Err(err),
                }
            }
        }
    }

    /// Drops the cached token if it is still `token`, the one the caller was refused with; a
    /// token another caller already replaced is left alone.
    pub fn invalidate(&self, token: &AccessToken) {
        let mut state = self.cache_state();
        if state
            .current
            .as_ref()
            .is_some_and(|cached| cached.token == *token)
        {
            state.current = None;
        }
    }

    /// Creates an unlimited mini-program code (`POST /wxa/getwxacodeunlimit`). The request is
    /// checked first and refused without being sent when WeChat would refuse it. Retried once with
    /// a new token when WeChat says the token is invalid or expired.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a bad scene, page or width (nothing sent);
    /// [`ApiError::MiniProgram`] with e.g. [`ErrCode::InvalidPage`] or [`ErrCode::ApiQuotaReached`];
    /// [`DecodeError`] when the answer is neither an image nor a JSON errcode; token, transport
    /// errors.
    pub async fn get_wxacode_unlimit(&self, request: &WxaCodeRequest) -> Result<WxaCodeImage> {
        request.validate()?;
        let body = Bytes::from(serde_json::to_vec(request).map_err(|e| DecodeError::json(&e))?);
        self.with_token(|token| {
            let body = body.clone();
            async move {
                let url = self.url(
                    "/wxa/getwxacodeunlimit",
                    &[("access_token", token.expose_secret())],
                )?;
                let response = self
                    .inner
                    .http
                    .send(Idempotency::Idempotent, || post_json(&url, body.clone()))
                    .await?;
                decode_wxacode(&response)
            }
        })
        .await
    }

    /// The phone number behind a `getPhoneNumber` button code
    /// (`POST /wxa/business/getuserphonenumber`). The code is single-use and valid 5 minutes.
    /// With `openid`, WeChat also checks that the code was issued to that user. Retried once with
    /// a new token when WeChat says the token is invalid or expired.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an empty or non-printable code or openid (nothing sent);
    /// [`ApiError::MiniProgram`] with e.g. [`ErrCode::InvalidCode`]; [`DecodeError`] when the
    /// watermark names another app; token, transport errors.
    pub async fn get_user_phone_number(
        &self,
        code: &str,
        openid: Option<&str>,
    ) -> Result<PhoneInfo> {
        validate_code("phone number code", code)?;
        if let Some(openid) = openid {
            validate_openid(openid)?;
        }
        let mut body = serde_json::Map::new();
        body.insert("code".into(), code.into());
        if let Some(openid) = openid {
            body.insert("openid".into(), openid.into());
        }
        let body = Bytes::from(serde_json::Value::Object(body).to_string());
        let info = self
            .with_token(|token| {
                let body = body.clone();
                async move {
                    let url = self.url(
                        "/wxa/business/getuserphonenumber",
                        &[("access_token", token.expose_secret())],
                    )?;
                    let response = self
                        .inner
                        .http
                        .send(Idempotency::Once, || post_json(&url, body.clone()))
                        .await?;
                    #[derive(Deserialize)]
                    struct Answer {
                        phone_info: PhoneInfo,
                    }
                    let answer: Answer = decode_answer(&response)?;
                    Ok(answer.phone_info)
                }
            })
            .await?;
        if info.watermark.appid != self.inner.config.appid {
            return Err(
                DecodeError::invalid("phone_info.watermark.appid", "names another AppID").into(),
            );
        }
        Ok(info)
    }

    /// Runs `call` with a token; when WeChat answers 40001/40014/42001, drops that token and
    /// runs `call` once more with a fresh one.
    async fn with_token<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(AccessToken) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let token = self.access_token().await?;
        match call(token.clone()).await {
            Err(Error::Api(ApiError::MiniProgram { errcode, .. })) if errcode.is_token_error() => {
                tracing::info!(
                    errcode = errcode.code(),
                    "access token refused; fetching a new one"
                );
                self.invalidate(&token);
                let fresh = self.access_token().await?;
                call(fresh).await
            }
            other => other,
        }
    }

    async fn fetch_token(&self) -> Result<AccessToken> {
        let config = &self.inner.config;
        let fetched_at = self.inner.clock.now();
        let response = match config.token_source {
            TokenSource::Token => {
                let url = self.url(
                    "/cgi-bin/token",
                    &[
                        ("grant_type", "client_credential"),
                        ("appid", config.appid.as_str()),
                        ("secret", config.app_secret.expose_secret()),
                    ],
                )?;
                self.inner
                    .http
                    .send(Idempotency::Idempotent, || {
                        Ok(OutgoingRequest::new(Method::GET, url.as_str()))
                    })
                    .await?
            }
            TokenSource::StableToken => {
                let url = self.url("/cgi-bin/stable_token", &[])?;
                let body = serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": config.appid,
                    "secret": config.app_secret.expose_secret(),
                    "force_refresh": false,
                });
                let body = Bytes::from(body.to_string());
                self.inner
                    .http
                    .send(Idempotency::Idempotent, || post_json(&url, body.clone()))
                    .await?
            }
        };
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: i64,
        }
        let answer: Answer = decode_secret_answer(&response, "access token")?;
        if answer.access_token.is_empty() {
            return Err(DecodeError::invalid("access_token", "empty").into());
        }
        if answer.expires_in <= 0 {
            return Err(DecodeError::invalid("expires_in", "not positive").into());
        }
        Ok(AccessToken::new(
            answer.access_token,
            fetched_at.saturating_add(answer.expires_in),
        ))
    }

    fn cache_state(&self) -> MutexGuard<'_, CacheState> {
        self.inner
            .cache
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, state: &CacheState) -> Option<AccessToken> {
        let cached = state.current.as_ref()?;
        (self.inner.clock.now() < cached.refresh_at).then(|| cached.token.clone())
    }

    fn unexpired(&self, state: &CacheState) -> Option<AccessToken> {
        let cached = state.current.as_ref()?;
        (self.inner.clock.now() < cached.token.expires_at).then(|| cached.token.clone())
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

fn validate_openid(openid: &str) -> Result<()> {
    if openid.is_empty() || openid.len() > 128 || !openid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(
            "openid must be 1 to 128 visible ASCII characters".into(),
        ));
    }
    Ok(())
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

/// WeChat answers an image on success and a JSON errcode on failure, both with HTTP 200, so the
/// Content-Type decides.
fn decode_wxacode(response: &RawResponse) -> Result<WxaCodeImage> {
    let content_type = response.content_type().unwrap_or_default();
    if content_type.starts_with("image/") && response.status.is_success() {
        if response.body.is_empty() {
            return Err(DecodeError::invalid("body", "empty image").into());
        }
        return Ok(WxaCodeImage {
            content_type,
            bytes: response.body.clone(),
        });
    }
    check_answer(response)?;
    Err(DecodeError::invalid(
        "Content-Type",
        format!("expected an image or a JSON errcode, got {content_type:?}"),
    )
    .into())
}

/// A copy of an error, for the callers that waited on a failed token fetch.
fn replicate(err: &Error) -> Error {
    match err {
        Error::Transport(transport) => Error::Transport(match transport {
            TransportError::Timeout => TransportError::Timeout,
            TransportError::Connect(text) => TransportError::Connect(text.clone()),
            TransportError::Status { status } => TransportError::Status { status: *status },
            TransportError::Body(text) => TransportError::Body(text.clone()),
        }),
        Error::Api(api) => Error::Api(api.clone()),
        Error::Signature(signature) => Error::Signature(signature.clone()),
        Error::Decode(decode) => Error::Decode(decode.clone()),
        Error::Crypto(crypto) => Error::Crypto(crypto.clone()),
        Error::InvalidRequest(text) => Error::InvalidRequest(text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;

    fn answer(content_type: &str, body: &[u8]) -> RawResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        RawResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn wxacode_request_serializes_as_documented() {
        let request = WxaCodeRequest::new("id=42").page("pages/order/detail");
        let json: serde_json::Value = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "scene": "id=42",
                "page": "pages/order/detail",
                "check_path": true,
                "env_version": "release",
                "width": 430,
                "auto_color": false,
                "line_color": {"r": 0, "g": 0, "b": 0},
                "is_hyaline": false,
            })
        );
        let home = serde_json::to_value(WxaCodeRequest::new("x")).unwrap();
        assert!(
            home.get("page").is_none(),
            "page is left out for the home page"
        );
    }

    #[test]
    fn wxacode_request_validation() {
        WxaCodeRequest::new("a").width(280).validate().unwrap();
        WxaCodeRequest::new("a").width(1280).validate().unwrap();
        for width in [0, 279, 1281] {
            let err = WxaCodeRequest::new("a")
                .width(width)
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("width"), "{err}");
        }
        let err = WxaCodeRequest::new("a")
            .page("/pages/index/index")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("'/'"), "{err}");
        let err = WxaCodeRequest::new("a b").validate().unwrap_err();
        assert!(err.to_string().contains("scene"), "{err}");
    }

    #[test]
    fn phone_info_accepts_country_code_as_string_or_number() {
        for country in [r#""86""#, "86"] {
            let body = format!(
                r#"{{"errcode":0,"errmsg":"ok","phone_info":{{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":{country},"watermark":{{"timestamp":1637744274,"appid":"wxabc"}}}}}}"#
            );
            #[derive(Deserialize)]
            struct Answer {
                phone_info: PhoneInfo,
            }
            let answer: Answer =
                decode_answer(&answer("application/json", body.as_bytes())).unwrap();
            assert_eq!(
                answer.phone_info,
                PhoneInfo {
                    phone_number: "13800138000".into(),
                    pure_phone_number: "13800138000".into(),
                    country_code: "86".into(),
                    watermark: PhoneWatermark {
                        timestamp: 1_637_744_274,
                        appid: "wxabc".into()
                    },
                }
            );
        }
    }

    #[test]
    fn errcode_answers_become_typed_api_errors() {
        let response = answer(
            "application/json; encoding=utf-8",
            br#"{"errcode":40029,"errmsg":"invalid code, rid: 1-2-3"}"#,
        );
        let err = decode_answer::<serde_json::Value>(&response).unwrap_err();
        match err {
            Error::Api(ApiError::MiniProgram { errcode, errmsg }) => {
                assert_eq!(errcode, ErrCode::InvalidCode);
                assert_eq!(errmsg, "invalid code, rid: 1-2-3");
            }
            other => panic!("{other:?}"),
        }
        // errcode 0 is success, and a missing errcode too (jscode2session, token).
        let ok = answer("application/json", br#"{"errcode":0,"errmsg":"ok","x":1}"#);
        assert_eq!(decode_answer::<serde_json::Value>(&ok).unwrap()["x"], 1);
    }

    #[test]
    fn wxacode_answer_branches_on_content_type() {
        let png = answer("image/png", b"\x89PNG\r\n\x1a\nrest");
        assert_eq!(decode_wxacode(&png).unwrap().content_type, "image/png");
        let jpeg = answer("image/jpeg", b"\xff\xd8\xff");
        assert_eq!(
            decode_wxacode(&jpeg).unwrap().bytes.as_ref(),
            b"\xff\xd8\xff"
        );
        let error = answer(
            "application/json; encoding=utf-8",
            br#"{"errcode":41030,"errmsg":"invalid page"}"#,
        );
        assert!(matches!(
            decode_wxacode(&error),
            Err(Error::Api(ApiError::MiniProgram {
                errcode: ErrCode::InvalidPage,
                ..
            }))
        ));
        let html = answer("text/html", b"<html></html>");
        assert!(matches!(decode_wxacode(&html), Err(Error::Decode(_))));
        let empty = answer("image/jpeg", b"");
        assert!(matches!(decode_wxacode(&empty), Err(Error::Decode(_))));
    }

    #[test]
    fn secret_answers_do_not_quote_values_in_errors() {
        let response = answer(
            "application/json",
            br#"{"access_token":"SECRET-TOKEN","expires_in":"SECRET-TOKEN"}"#,
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Answer {
            access_token: String,
            expires_in: i64,
        }
        let err = decode_secret_answer::<Answer>(&response, "access token").unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SECRET-TOKEN"), "{text}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = MpConfig::new("wx1234", "app-secret-value");
        assert!(!format!("{config:?}").contains("app-secret-value"));
        let token = AccessToken::new("token-value", 10);
        assert!(!format!("{token:?}").contains("token-value"));
        let session = Session {
            openid: "o1".into(),
            session_key: SecretString::from("session-key-value"),
            unionid: None,
        };
        assert!(!format!("{session:?}").contains("session-key-value"));
    }

    #[test]
    fn config_is_checked() {
        let urls = BaseUrls::single("http://127.0.0.1:9");
        let http = HttpConfig::default();
        assert!(MpClient::new(MpConfig::new("", "s"), &http, &urls).is_err());
        assert!(MpClient::new(MpConfig::new("wx 1", "s"), &http, &urls).is_err());
        assert!(MpClient::new(MpConfig::new("wx1", ""), &http, &urls).is_err());
        let long_margin = MpConfig::new("wx1", "s").refresh_before(Duration::from_secs(3600));
        assert!(MpClient::new(long_margin, &http, &urls).is_err());
        assert!(
            MpClient::new(
                MpConfig::new("wx1", "s"),
                &http,
                &BaseUrls::single("not a url")
            )
            .is_err()
        );
        MpClient::new(MpConfig::new("wx1", "s"), &http, &urls).unwrap();
    }
}
