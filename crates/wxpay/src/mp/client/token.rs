//! The access token: one cached token per client, refreshed by one caller at a time.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{MpClient, TokenSource, decode_secret_answer, post_json};
use crate::error::{ApiError, DecodeError, Error, Result, TransportError};
use crate::http::{Idempotency, OutgoingRequest};

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

/// The token cache: `state` is read without waiting; `refresh` is held by the one caller that
/// fetches, so that however many callers find the token stale, one request goes out.
#[derive(Default)]
pub(super) struct TokenCache {
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

    /// Runs `call` with a token; when WeChat answers 40001/40014/42001, drops that token and
    /// runs `call` once more with a fresh one.
    pub(super) async fn with_token<T, F, Fut>(&self, mut call: F) -> Result<T>
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
}

/// A copy of an error, for the callers that waited on a failed token fetch.
pub(super) fn replicate(err: &Error) -> Error {
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
