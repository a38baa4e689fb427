//! The one HTTP client every call goes through: retry with backoff for idempotent calls only,
//! a body-size limit, per-host base URLs (production by default, a simulator in tests).
//!
//! The bytes travel through a [`Transport`]: a plain request in ([`OutgoingRequest`]: method,
//! URL, headers, body), a plain answer out ([`RawResponse`]: status, headers, body). The
//! default is [`ReqwestTransport`] (timeouts, extra roots, the TLS client certificate of the v2
//! `/secapi/` calls); bring your own with [`HttpClient::from_transport`] and the clients'
//! `with_http` constructors, e.g. to use another HTTP stack or to record requests in tests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::error::TransportError;

/// Production host of WeChat Pay.
pub const PAY_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// Production host of the mini-program server API.
pub const MP_BASE_URL: &str = "https://api.weixin.qq.com";
/// The `User-Agent` sent on every request (v3 requires one).
pub const USER_AGENT: &str = concat!("wxpay-rs/", env!("CARGO_PKG_VERSION"));
/// Answers larger than this are refused (bills have their own, larger limit).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Bills can be large; this is the limit for a bill download.
pub const MAX_BILL_BYTES: usize = 256 * 1024 * 1024;

/// Whether a call may be sent again when its answer was lost.
///
/// Queries are idempotent. A v2 refund carries its `out_refund_no` and a v3 refund its
/// `out_refund_no`, which makes a repeat harmless at WeChat; everything that creates state without
/// such a key is sent once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat (queries, close, refund with its out_refund_no, prepay with the same
    /// out_trade_no and parameters).
    Idempotent,
    /// Sent exactly once.
    Once,
}

/// Retry policy for idempotent calls: exponential backoff from `base_delay`, capped.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, including the first. 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    #[must_use]
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Where WeChat is. Production hosts by default; point them at a simulator for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrls {
    /// WeChat Pay (`https://api.mch.weixin.qq.com`).
    pub pay: String,
    /// Mini-program server API (`https://api.weixin.qq.com`).
    pub mp: String,
}

impl Default for BaseUrls {
    fn default() -> Self {
        BaseUrls {
            pay: PAY_BASE_URL.to_owned(),
            mp: MP_BASE_URL.to_owned(),
        }
    }
}

impl BaseUrls {
    /// Both hosts served by one server, e.g. the simulator at `http://127.0.0.1:9090`.
    #[must_use]
    pub fn single(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        BaseUrls {
            pay: base.clone(),
            mp: base,
        }
    }
}

/// Settings of the default [`HttpClient`] (a [`ReqwestTransport`] and a retry policy).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for the whole request, answer included.
    pub timeout: Duration,
    /// Retry policy of idempotent calls.
    pub retry: RetryPolicy,
    /// Extra trusted root certificates (PEM), e.g. the simulator's CA for its TLS port.
    pub extra_roots_pem: Vec<String>,
    /// `User-Agent`.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            extra_roots_pem: Vec::new(),
            user_agent: USER_AGENT.to_owned(),
        }
    }
}

/// A TLS client identity (certificate chain + private key, PEM), for the v2 `/secapi/` calls.
#[derive(Clone)]
pub struct ClientIdentity {
    pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

impl ClientIdentity {
    /// From a PEM bundle holding the private key and the certificate(s).
    #[must_use]
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Self {
        ClientIdentity { pem: pem.into() }
    }

    /// From the merchant's `apiclient_cert.p12` (its password is the mch_id).
    ///
    /// # Errors
    /// When the file is not a PKCS#12 store, the password is wrong, or it holds no key.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, crate::CryptoError> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| crate::CryptoError::InvalidKey(format!("PKCS#12: {e}")))?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| crate::CryptoError::InvalidKey("PKCS#12 holds no private key".into()))?;
        let mut pem = pem_rfc7468::encode_string(
            "PRIVATE KEY",
            pem_rfc7468::LineEnding::LF,
            chain.key().as_der(),
        )
        .map_err(|e| crate::CryptoError::InvalidKey(e.to_string()))?;
        for cert in chain.certs() {
            let text = pem_rfc7468::encode_string(
                "CERTIFICATE",
                pem_rfc7468::LineEnding::LF,
                cert.as_der(),
            )
            .map_err(|e| crate::CryptoError::InvalidCertificate(e.to_string()))?;
            pem.push_str(&text);
        }
        Ok(ClientIdentity {
            pem: pem.into_bytes(),
        })
    }
}

/// A complete answer: status, headers and the body, read in full under a size limit.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Answer headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl RawResponse {
    /// The `Content-Type` header, lowercase, without parameters.
    #[must_use]
    pub fn content_type(&self) -> Option<String> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
    }
}

/// One outgoing request, as plain data, so that it can be sent again on retry.
#[derive(Clone, Debug)]
pub struct OutgoingRequest {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Headers (Authorization, Content-Type, ...).
    pub headers: HeaderMap,
    /// Body bytes (empty for GET).
    pub body: Bytes,
    /// Largest acceptable answer body.
    pub max_body: usize,
}

impl OutgoingRequest {
    /// A request with no headers and an empty body.
    #[must_use]
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        OutgoingRequest {
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            max_body: MAX_RESPONSE_BYTES,
        }
    }

    /// Sets a header. Values that are not valid header text are refused.
    ///
    /// # Errors
    /// When the value contains characters not allowed in a header.
    pub fn header(
        mut self,
        name: http::header::HeaderName,
        value: &str,
    ) -> Result<Self, crate::Error> {
        let value = http::HeaderValue::from_str(value).map_err(|_| {
            crate::Error::InvalidRequest(format!("invalid value for header {name}"))
        })?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A boxed future that can cross threads, as [`Transport::send`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What carries a request to WeChat and brings the answer back.
///
/// An implementation sends the request as given (it is already signed: it must not add, drop
/// or change a header that is part of it, nor touch the body) and returns the whole answer.
/// Any HTTP status is an `Ok` answer; only a failure to get one is an error. It should stop
/// reading a body longer than `request.max_body` ([`HttpClient`] refuses one anyway).
/// Retries are the [`HttpClient`]'s job, not the transport's.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends one request and reads its answer.
    fn send<'a>(
        &'a self,
        request: &'a OutgoingRequest,
    ) -> BoxFuture<'a, Result<RawResponse, TransportError>>;
}

/// The default [`Transport`]: reqwest with rustls, one connection pool per instance.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    inner: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport with the given settings and no client certificate.
    ///
    /// # Errors
    /// When an extra root certificate is not valid PEM or TLS cannot be set up.
    pub fn new(config: &HttpConfig) -> Result<Self, crate::Error> {
        Self::build(config, None)
    }

    /// A transport that presents a TLS client certificate (the merchant's `apiclient_cert.p12`,
    /// for the v2 `/secapi/` calls).
    ///
    /// # Errors
    /// When the identity or a root certificate cannot be loaded.
    pub fn with_identity(
        config: &HttpConfig,
        identity: &ClientIdentity,
    ) -> Result<Self, crate::Error> {
        Self::build(config, Some(identity))
    }

    fn build(config: &HttpConfig, identity: Option<&ClientIdentity>) -> Result<Self, crate::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(60))
            .no_proxy();
        for pem in &config.extra_roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| crate::CryptoError::InvalidCertificate(e.without_url().to_string()))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(identity) = identity {
            let identity = reqwest::Identity::from_pem(&identity.pem)
                .map_err(|_| crate::CryptoError::InvalidKey("TLS client identity".into()))?;
            builder = builder.identity(identity);
        }
        let inner = builder
            .build()
            .map_err(|e| TransportError::Connect(e.without_url().to_string()))?;
        Ok(ReqwestTransport { inner })
    }

    async fn send_request(&self, request: &OutgoingRequest) -> Result<RawResponse, TransportError> {
        let mut builder = self
            .inner
            .request(request.method.clone(), &request.url)
            .headers(request.headers.clone());
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let mut response = builder.send().await.map_err(TransportError::from_reqwest)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        if let Some(len) = response.content_length()
            && len > request.max_body as u64
        {
            return Err(TransportError::Body(format!(
                "answer of {len} bytes is over the {} byte limit",
                request.max_body
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(TransportError::from_reqwest)?
        {
            if body.len() + chunk.len() > request.max_body {
                return Err(TransportError::Body(format!(
                    "answer is over the {} byte limit",
                    request.max_body
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawResponse {
            status,
            headers,
            body: Bytes::from(body),
        })
    }
}

impl Transport for ReqwestTransport {
    fn send<'a>(
        &'a self,
        request: &'a OutgoingRequest,
    ) -> BoxFuture<'a, Result<RawResponse, TransportError>> {
        Box::pin(self.send_request(request))
    }
}

/// The HTTP client of the WeChat clients: a [`Transport`] and a retry policy. Cheap to clone
/// (the transport is shared).
#[derive(Clone, Debug)]
pub struct HttpClient {
    transport: Arc<dyn Transport>,
    retry: RetryPolicy,
}

impl HttpClient {
    /// The default client: a [`ReqwestTransport`] with the given settings, no client
    /// certificate.
    ///
    /// # Errors
    /// When an extra root certificate is not valid PEM or TLS cannot be set up.
    pub fn new(config: &HttpConfig) -> Result<Self, crate::Error> {
        Ok(Self::from_transport(
            Arc::new(ReqwestTransport::new(config)?),
            config.retry,
        ))
    }

    /// The default client presenting a TLS client certificate (v2 `/secapi/` calls).
    ///
    /// # Errors
    /// When the identity or a root certificate cannot be loaded.
    pub fn with_identity(
        config: &HttpConfig,
        identity: &ClientIdentity,
    ) -> Result<Self, crate::Error> {
        Ok(Self::from_transport(
            Arc::new(ReqwestTransport::with_identity(config, identity)?),
            config.retry,
        ))
    }

    /// A client over your own transport.
    #[must_use]
    pub fn from_transport(transport: Arc<dyn Transport>, retry: RetryPolicy) -> Self {
        HttpClient { transport, retry }
    }

    /// The transport.
    #[must_use]
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Sends once through the transport; an answer over `max_body` is refused whatever the
    /// transport did.
    ///
    /// # Errors
    /// Transport failures; any HTTP status is an `Ok` answer.
    pub async fn send_once(
        &self,
        request: &OutgoingRequest,
    ) -> Result<RawResponse, TransportError> {
        let answer = self.transport.send(request).await?;
        if answer.body.len() > request.max_body {
            return Err(TransportError::Body(format!(
                "answer is over the {} byte limit",
                request.max_body
            )));
        }
        Ok(answer)
    }

    /// Sends, retrying transport failures and 5xx/429 answers with backoff when the call is
    /// idempotent. `prepare` is called before every attempt, so a signed request gets a fresh
    /// timestamp and nonce each time.
    ///
    /// # Errors
    /// The last transport failure, or whatever `prepare` returns.
    pub async fn send<F>(
        &self,
        idempotency: Idempotency,
        mut prepare: F,
    ) -> Result<RawResponse, crate::Error>
    where
        F: FnMut() -> Result<OutgoingRequest, crate::Error>,
    {
        let attempts = match idempotency {
            Idempotency::Idempotent => self.retry.max_attempts.max(1),
            Idempotency::Once => 1,
        };
        let mut attempt = 0;
        loop {
            let request = prepare()?;
            attempt += 1;
            let result = self.send_once(&request).await;
            let retry = match &result {
                Ok(answer) => {
                    answer.status.is_server_error()
                        || answer.status == StatusCode::TOO_MANY_REQUESTS
                }
                Err(err) => err.is_retryable(),
            };
            if !retry || attempt >= attempts {
                return result.map_err(crate::Error::from);
            }
            tracing::debug!(attempt, "retrying idempotent call to WeChat");
            tokio::time::sleep(self.retry.delay(attempt - 1)).await;
        }
    }
}

/// Joins a base URL and a path that starts with `/`.
#[must_use]
pub fn join(base: &str, path: &str) -> String {
    let mut url = String::with_capacity(base.len() + path.len());
    url.push_str(base.trim_end_matches('/'));
    url.push_str(path);
    url
}

/// The canonical URL of a v3 request: the raw path and query as put on the wire.
#[must_use]
pub fn canonical_url(url: &str) -> String {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..].to_owned(),
        None => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_url_is_raw_path_and_query() {
        assert_eq!(
            canonical_url(
                "https://api.mch.weixin.qq.com/v3/pay/transactions/out-trade-no/A%7CB?mchid=1"
            ),
            "/v3/pay/transactions/out-trade-no/A%7CB?mchid=1"
        );
        assert_eq!(canonical_url("http://127.0.0.1:9090"), "/");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        assert_eq!(policy.delay(0), Duration::from_millis(100));
        assert_eq!(policy.delay(1), Duration::from_millis(200));
        assert_eq!(policy.delay(2), Duration::from_millis(300));
    }

    #[test]
    fn join_handles_trailing_slash() {
        assert_eq!(join("http://a/", "/x"), "http://a/x");
        assert_eq!(join("http://a", "/x"), "http://a/x");
    }
}
