//! The API v3 client: signs every request, verifies every answer before decoding it, keeps the
//! platform certificates fresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, CryptoError, DecodeError, Error, SignatureError, TransportError};
use crate::http::{
    BaseUrls, HttpClient, HttpConfig, Idempotency, OutgoingRequest, RawResponse, canonical_url,
    join,
};
use crate::ids::{OutRefundNo, OutTradeNo, SubMchid};
use crate::keys::{RsaPrivateKey, X509Certificate};
use crate::nonce::{Clock, SystemClock, nonce};
use crate::pay_params::{self, RequestPayment};
use crate::v3::ErrorCode;
use crate::v3::aead::ApiV3Key;
use crate::v3::auth::Authorization;
use crate::v3::certificates::{PlatformVerifier, decrypt_certificate_list};
use crate::v3::models::{
    BillLocation, ErrorBody, FundFlowBillRequest, PartnerPrepayRequest, PartnerRefundRequest,
    PartnerTransaction, PayingApp, PrepayRequest, PrepayResponse, Refund, RefundRequest,
    TradeBillRequest, Transaction,
};
use crate::v3::notify::{Notification, NotificationKeys, parse_notification};
use crate::v3::verifier::{DEFAULT_WINDOW_SECS, SignedHeaders, Verifier, verify_signed};

/// The merchant's v3 credentials. `Debug` never shows a key.
#[derive(Clone)]
pub struct V3Config {
    /// Merchant id.
    pub mchid: String,
    /// The mini program's appid (bound to the merchant).
    pub appid: String,
    /// Serial of the merchant API certificate (uppercase hex).
    pub merchant_serial: String,
    /// The merchant API private key (`apiclient_key.pem`).
    pub private_key: RsaPrivateKey,
    /// The APIv3 key.
    pub api_v3_key: ApiV3Key,
    /// How WeChat Pay's signatures are verified.
    pub platform: PlatformVerifier,
}

impl fmt::Debug for V3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V3Config")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial", &self.merchant_serial)
            .field("private_key", &"<redacted>")
            .field("api_v3_key", &"<redacted>")
            .field("platform", &self.platform)
            .finish()
    }
}

/// The API v3 client. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct V3Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpClient,
    base: String,
    config: V3Config,
    clock: Arc<dyn Clock>,
    window_secs: i64,
    // Serializes certificate downloads; holds the time of the last one, so that a burst of
    // answers with an unknown serial causes one download, not one each. Shared by the clients
    // of one merchant for its several mini programs ([`V3Client::for_app`]).
    refresh: Arc<tokio::sync::Mutex<Option<i64>>>,
}

/// The least time between two downloads caused by unknown serials.
const MIN_REFRESH_INTERVAL_SECS: i64 = 60;

impl V3Client {
    /// A client for the production host (or wherever `base` points).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: V3Config, http: &HttpConfig, base: &BaseUrls) -> Result<Self, Error> {
        Self::with_clock(config, http, base, Arc::new(SystemClock))
    }

    /// As [`V3Client::new`], with an injected clock (tests, replays).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn with_clock(
        config: V3Config,
        http: &HttpConfig,
        base: &BaseUrls,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        Ok(Self::with_http(config, base, HttpClient::new(http)?, clock))
    }

    /// A client over your own HTTP client (see [`crate::http::Transport`]) and clock.
    #[must_use]
    pub fn with_http(
        config: V3Config,
        base: &BaseUrls,
        http: HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        V3Client {
            inner: Arc::new(Inner {
                http,
                base: base.pay.trim_end_matches('/').to_owned(),
                config,
                clock,
                window_secs: DEFAULT_WINDOW_SECS,
                refresh: Arc::new(tokio::sync::Mutex::new(None)),
            }),
        }
    }

    /// The same merchant's client for another mini program bound to it (`appid` in prepays and
    /// in the `wx.requestPayment` signature). It shares the HTTP client, the verifier (and its
    /// platform certificates) and the certificate refresh with this one.
    #[must_use]
    pub fn for_app(&self, appid: &str) -> Self {
        let inner = &self.inner;
        V3Client {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                base: inner.base.clone(),
                config: V3Config {
                    appid: appid.to_owned(),
                    ..inner.config.clone()
                },
                clock: inner.clock.clone(),
                window_secs: inner.window_secs,
                refresh: inner.refresh.clone(),
            }),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &V3Config {
        &self.inner.config
    }

    /// The verifier of WeChat Pay's signatures (shared with the certificate refresh).
    #[must_use]
    pub fn verifier(&self) -> &PlatformVerifier {
        &self.inner.config.platform
    }

    /// `POST /v3/pay/transactions/jsapi`: a mini-program prepay. Repeating it with the same
    /// out_trade_no and parameters is harmless at WeChat, so a lost answer is retried.
    ///
    /// # Errors
    /// Invalid input (checked before sending), transport, API or signature errors.
    pub async fn jsapi_prepay(&self, request: &PrepayRequest) -> Result<PrepayResponse, Error> {
        validate_notify_url(&request.notify_url)?;
        if request.amount.total == 0 {
            return Err(Error::InvalidRequest(
                "amount.total must be at least 1 fen".into(),
            ));
        }
        if request.description.is_empty() || request.description.chars().count() > 127 {
            return Err(Error::InvalidRequest(
                "description must be 1 to 127 characters".into(),
            ));
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            appid: &'a str,
            mchid: &'a str,
            #[serde(flatten)]
            request: &'a PrepayRequest,
        }
        let body = serde_json::to_vec(&Wire {
            appid: &self.inner.config.appid,
            mchid: &self.inner.config.mchid,
            request,
        })
        .map_err(|e| DecodeError::json(&e))?;
        self.call_json(
            Method::POST,
            "/v3/pay/transactions/jsapi",
            Some(body),
            Idempotency::Idempotent,
        )
        .await
    }

    /// Prepay, then the signed `wx.requestPayment` parameters for it.
    ///
    /// # Errors
    /// As [`V3Client::jsapi_prepay`].
    pub async fn jsapi_prepay_with_payment(
        &self,
        request: &PrepayRequest,
    ) -> Result<(PrepayResponse, RequestPayment), Error> {
        let prepay = self.jsapi_prepay(request).await?;
        let params = self.request_payment(&prepay.prepay_id)?;
        Ok((prepay, params))
    }

    /// The `wx.requestPayment` parameters for a prepay_id (`signType` `RSA`).
    ///
    /// # Errors
    /// When signing fails.
    pub fn request_payment(&self, prepay_id: &str) -> Result<RequestPayment, Error> {
        let cfg = &self.inner.config;
        Ok(pay_params::v3(
            &cfg.private_key,
            &cfg.appid,
            prepay_id,
            self.inner.clock.now(),
            &nonce(),
        )?)
    }

    /// `GET /v3/pay/transactions/id/{transaction_id}`.
    ///
    /// # Errors
    /// Transport, API (e.g. `ORDER_NOT_EXIST`), signature or decode errors.
    pub async fn query_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Transaction, Error> {
        if transaction_id.is_empty() || transaction_id.len() > 32 {
            return Err(Error::InvalidRequest(
                "transaction_id must be 1 to 32 characters".into(),
            ));
        }
        let path = format!(
            "/v3/pay/transactions/id/{}?mchid={}",
            path_escape(transaction_id),
            path_escape(&self.inner.config.mchid)
        );
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}`.
    ///
    /// # Errors
    /// Transport, API (e.g. `ORDER_NOT_EXIST`), signature or decode errors.
    pub async fn query_by_out_trade_no(
        &self,
        out_trade_no: &OutTradeNo,
    ) -> Result<Transaction, Error> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            path_escape(out_trade_no),
            path_escape(&self.inner.config.mchid)
        );
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` (204).
    ///
    /// # Errors
    /// Transport, API (e.g. a paid order), or signature errors.
    pub async fn close(&self, out_trade_no: &OutTradeNo) -> Result<(), Error> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            path_escape(out_trade_no)
        );
        let body = serde_json::to_vec(&serde_json::json!({ "mchid": self.inner.config.mchid }))
            .map_err(|e| DecodeError::json(&e))?;
        self.call(
            Method::POST,
            &path,
            Some(body),
            Idempotency::Idempotent,
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /v3/refund/domestic/refunds`. Retried on a lost answer: the out_refund_no makes a
    /// repeat the same refund at WeChat.
    ///
    /// # Errors
    /// Invalid input, transport, API (e.g. over the remaining amount), signature errors.
    pub async fn refund(&self, request: &RefundRequest) -> Result<Refund, Error> {
        check_refund(request)?;
        let body = serde_json::to_vec(request).map_err(|e| DecodeError::json(&e))?;
        self.call_json(
            Method::POST,
            "/v3/refund/domestic/refunds",
            Some(body),
            Idempotency::Idempotent,
        )
        .await
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    ///
    /// # Errors
    /// Transport, API (e.g. `RESOURCE_NOT_EXISTS`), signature or decode errors.
    pub async fn query_refund(&self, out_refund_no: &OutRefundNo) -> Result<Refund, Error> {
        let path = format!("/v3/refund/domestic/refunds/{}", path_escape(out_refund_no));
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `GET /v3/bill/tradebill`.
    ///
    /// # Errors
    /// Transport, API, signature or decode errors.
    pub async fn trade_bill(&self, request: &TradeBillRequest) -> Result<BillLocation, Error> {
        let mut path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type={}",
            format_date(request.bill_date)?,
            request.bill_type
        );
        if request.gzip {
            path.push_str("&tar_type=GZIP");
        }
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Service-provider (服务商, partner) mode: this client is the provider's (its `mchid` is
    // `sp_mchid`, its `appid` is `sp_appid`, it signs with the provider's key).

    /// `POST /v3/pay/partner/transactions/jsapi`: a mini-program prepay for a sub-merchant.
    /// Checked with [`PartnerPrepayRequest::validate`] before sending; retried on a lost answer
    /// like [`V3Client::jsapi_prepay`].
    ///
    /// # Errors
    /// Invalid input (checked before sending), transport, API or signature errors.
    pub async fn partner_jsapi_prepay(
        &self,
        request: &PartnerPrepayRequest,
    ) -> Result<PrepayResponse, Error> {
        request.validate()?;
        #[derive(Serialize)]
        struct Wire<'a> {
            sp_appid: &'a str,
            sp_mchid: &'a str,
            #[serde(flatten)]
            request: &'a PartnerPrepayRequest,
        }
        let body = serde_json::to_vec(&Wire {
            sp_appid: &self.inner.config.appid,
            sp_mchid: &self.inner.config.mchid,
            request,
        })
        .map_err(|e| DecodeError::json(&e))?;
        self.call_json(
            Method::POST,
            "/v3/pay/partner/transactions/jsapi",
            Some(body),
            Idempotency::Idempotent,
        )
        .await
    }

    /// Partner prepay, then the `wx.requestPayment` parameters signed for the mini program the
    /// prepay names ([`PartnerPrepayRequest::paying_app`]).
    ///
    /// # Errors
    /// As [`V3Client::partner_jsapi_prepay`].
    pub async fn partner_jsapi_prepay_with_payment(
        &self,
        request: &PartnerPrepayRequest,
    ) -> Result<(PrepayResponse, RequestPayment), Error> {
        let prepay = self.partner_jsapi_prepay(request).await?;
        let params = self.partner_request_payment(&request.paying_app(), &prepay.prepay_id)?;
        Ok((prepay, params))
    }

    /// The `wx.requestPayment` parameters of a partner prepay_id, signed with the provider's key
    /// over the appid of `app` (`sub_appid` or this client's `sp_appid`). Take `app` from the
    /// prepay with [`PartnerPrepayRequest::paying_app`]: WeChat refuses a `paySign` over another
    /// appid.
    ///
    /// # Errors
    /// When signing fails.
    pub fn partner_request_payment(
        &self,
        app: &PayingApp,
        prepay_id: &str,
    ) -> Result<RequestPayment, Error> {
        let cfg = &self.inner.config;
        Ok(pay_params::v3(
            &cfg.private_key,
            app.app_id(&cfg.appid),
            prepay_id,
            self.inner.clock.now(),
            &nonce(),
        )?)
    }

    /// `GET /v3/pay/partner/transactions/out-trade-no/{out_trade_no}?sp_mchid=&sub_mchid=`.
    ///
    /// # Errors
    /// Transport, API (e.g. `ORDER_NOT_EXIST`), signature or decode errors.
    pub async fn partner_query_by_out_trade_no(
        &self,
        sub_mchid: &SubMchid,
        out_trade_no: &OutTradeNo,
    ) -> Result<PartnerTransaction, Error> {
        let path = format!(
            "/v3/pay/partner/transactions/out-trade-no/{}?sp_mchid={}&sub_mchid={}",
            path_escape(out_trade_no),
            path_escape(&self.inner.config.mchid),
            path_escape(sub_mchid)
        );
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `GET /v3/pay/partner/transactions/id/{transaction_id}?sp_mchid=&sub_mchid=`.
    ///
    /// # Errors
    /// Transport, API (e.g. `ORDER_NOT_EXIST`), signature or decode errors.
    pub async fn partner_query_by_transaction_id(
        &self,
        sub_mchid: &SubMchid,
        transaction_id: &str,
    ) -> Result<PartnerTransaction, Error> {
        if transaction_id.is_empty() || transaction_id.len() > 32 {
            return Err(Error::InvalidRequest(
                "transaction_id must be 1 to 32 characters".into(),
            ));
        }
        let path = format!(
            "/v3/pay/partner/transactions/id/{}?sp_mchid={}&sub_mchid={}",
            path_escape(transaction_id),
            path_escape(&self.inner.config.mchid),
            path_escape(sub_mchid)
        );
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `POST /v3/pay/partner/transactions/out-trade-no/{out_trade_no}/close` with
    /// `{sp_mchid, sub_mchid}` (204).
    ///
    /// # Errors
    /// Transport, API (e.g. a paid order), or signature errors.
    pub async fn partner_close(
        &self,
        sub_mchid: &SubMchid,
        out_trade_no: &OutTradeNo,
    ) -> Result<(), Error> {
        let path = format!(
            "/v3/pay/partner/transactions/out-trade-no/{}/close",
            path_escape(out_trade_no)
        );
        let body = serde_json::to_vec(&serde_json::json!({
            "sp_mchid": self.inner.config.mchid,
            "sub_mchid": sub_mchid,
        }))
        .map_err(|e| DecodeError::json(&e))?;
        self.call(
            Method::POST,
            &path,
            Some(body),
            Idempotency::Idempotent,
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /v3/refund/domestic/refunds` with `sub_mchid`.
    ///
    /// # Errors
    /// As [`V3Client::refund`].
    pub async fn partner_refund(&self, request: &PartnerRefundRequest) -> Result<Refund, Error> {
        check_refund(&request.refund)?;
        let body = serde_json::to_vec(request).map_err(|e| DecodeError::json(&e))?;
        self.call_json(
            Method::POST,
            "/v3/refund/domestic/refunds",
            Some(body),
            Idempotency::Idempotent,
        )
        .await
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}?sub_mchid=`.
    ///
    /// # Errors
    /// Transport, API (e.g. `RESOURCE_NOT_EXISTS`), signature or decode errors.
    pub async fn partner_query_refund(
        &self,
        sub_mchid: &SubMchid,
        out_refund_no: &OutRefundNo,
    ) -> Result<Refund, Error> {
        let path = format!(
            "/v3/refund/domestic/refunds/{}?sub_mchid={}",
            path_escape(out_refund_no),
            path_escape(sub_mchid)
        );
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `GET /v3/bill/tradebill?...&sub_mchid=`: one sub-merchant's trade bill.
    ///
    /// # Errors
    /// Transport, API, signature or decode errors.
    pub async fn partner_trade_bill(
        &self,
        sub_mchid: &SubMchid,
        request: &TradeBillRequest,
    ) -> Result<BillLocation, Error> {
        let mut path = format!(
            "/v3/bill/tradebill?bill_date={}&sub_mchid={}&bill_type={}",
            format_date(request.bill_date)?,
            path_escape(sub_mchid),
            request.bill_type
        );
        if request.gzip {
            path.push_str("&tar_type=GZIP");
        }
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `GET /v3/bill/fundflowbill`.
    ///
    /// # Errors
    /// Transport, API, signature or decode errors.
    pub async fn fund_flow_bill(
        &self,
        request: &FundFlowBillRequest,
    ) -> Result<BillLocation, Error> {
        let mut path = format!(
            "/v3/bill/fundflowbill?bill_date={}&account_type={}",
            format_date(request.bill_date)?,
            request.account_type
        );
        if request.gzip {
            path.push_str("&tar_type=GZIP");
        }
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// Downloads a bill from its `download_url` (signed like any GET; the answer is not signed),
    /// gunzips it when compressed, and checks its SHA-1 against `hash_value`.
    ///
    /// # Errors
    /// Transport or API errors, [`DecodeError::Bill`] when the digest does not match or the body
    /// is not UTF-8 text.
    pub async fn download_bill(&self, location: &BillLocation) -> Result<String, Error> {
        if !location.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(DecodeError::invalid("hash_type", "only SHA1 is known").into());
        }
        let url = location.download_url.clone();
        let answer = self
            .inner
            .http
            .send(Idempotency::Idempotent, || {
                let mut request = self.signed_request(Method::GET, url.clone(), None)?;
                request.max_body = crate::http::MAX_BILL_BYTES;
                request = request.header(header::ACCEPT, "*/*")?;
                Ok(request)
            })
            .await?;
        if !answer.status.is_success() {
            return Err(error_answer(&answer));
        }
        let raw = answer.body;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            crate::bill::gunzip_limited(&raw, crate::http::MAX_BILL_BYTES)?
        } else {
            raw.to_vec()
        };
        let digest = crate::bill::sha1_hex(&text);
        if !digest.eq_ignore_ascii_case(location.hash_value.trim()) {
            return Err(DecodeError::Bill(format!(
                "SHA-1 of the downloaded bill is {digest}, expected {}",
                location.hash_value
            ))
            .into());
        }
        String::from_utf8(text).map_err(|_| DecodeError::NotUtf8.into())
    }

    /// `GET /v3/certificates`: downloads and decrypts the platform certificates. The list is
    /// authenticated by its encryption under the APIv3 key; the answer's signature is then
    /// checked with the downloaded certificates (this breaks the bootstrap circle).
    ///
    /// # Errors
    /// Transport, API, decryption, or signature errors.
    pub async fn download_certificates(&self) -> Result<Vec<X509Certificate>, Error> {
        let answer = self
            .inner
            .http
            .send(Idempotency::Idempotent, || {
                self.signed_request(
                    Method::GET,
                    join(&self.inner.base, "/v3/certificates"),
                    None,
                )
            })
            .await?;
        if answer.status == StatusCode::NOT_FOUND && self.verifier().public_key_verifier().is_some()
        {
            // A merchant on the WeChat Pay public key has no platform certificates: WeChat
            // answers 404 RESOURCE_NOT_EXISTS. With the public key configured that is not a fault.
            return Ok(Vec::new());
        }
        if !answer.status.is_success() {
            return Err(error_answer(&answer));
        }
        let certs = decrypt_certificate_list(&answer.body, &self.inner.config.api_v3_key)?;
        let downloaded = PlatformVerifier::certificates(certs.clone());
        let signed = SignedHeaders::from_headers(&answer.headers)?;
        let with_known = self.verifier();
        let verdict = if downloaded.knows(&signed.serial) {
            verify_signed(
                &downloaded,
                &signed,
                &answer.body,
                self.inner.clock.now(),
                self.inner.window_secs,
            )
        } else {
            verify_signed(
                with_known,
                &signed,
                &answer.body,
                self.inner.clock.now(),
                self.inner.window_secs,
            )
        };
        verdict?;
        Ok(certs)
    }

    /// Downloads the platform certificates and adds the new ones to the verifier (all are kept,
    /// a rotation may sign with any). Returns how many were new.
    ///
    /// # Errors
    /// As [`V3Client::download_certificates`].
    pub async fn refresh_certificates(&self) -> Result<usize, Error> {
        let mut last = self.inner.refresh.lock().await;
        let certs = self.download_certificates().await?;
        *last = Some(self.inner.clock.now());
        let added = self.verifier().certificate_store().merge(certs);
        if added > 0 {
            tracing::info!(added, "platform certificates updated");
        }
        Ok(added)
    }

    /// Refreshes the certificates every `every` (the Java SDK does it hourly) until the returned
    /// task is aborted. Failures are logged and retried at the next tick.
    #[must_use]
    pub fn spawn_certificate_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(err) = client.refresh_certificates().await {
                    tracing::warn!(error = %err, "platform certificate refresh failed");
                }
            }
        })
    }

    /// Called when a signature names an unknown serial: download once (unless a download
    /// happened within the last minute, or another caller is already downloading) and report
    /// whether the serial is now known.
    async fn learn_serial(&self, serial: &str) -> bool {
        if !self.verifier().uses_certificates()
            || serial.starts_with(crate::v3::certificates::PUBLIC_KEY_ID_PREFIX)
        {
            return false;
        }
        let mut last = self.inner.refresh.lock().await;
        if self.verifier().knows(serial) {
            return true;
        }
        let now = self.inner.clock.now();
        if last.is_some_and(|t| now - t < MIN_REFRESH_INTERVAL_SECS) {
            return false;
        }
        *last = Some(now);
        drop(last);
        match self.download_certificates().await {
            Ok(certs) => {
                self.verifier().certificate_store().merge(certs);
            }
            Err(err) => tracing::warn!(error = %err, "platform certificate download failed"),
        }
        self.verifier().knows(serial)
    }

    /// Verifies, decrypts and parses a notification with this client's keys and clock; an
    /// unknown platform serial triggers one certificate download.
    ///
    /// # Errors
    /// As [`parse_notification`].
    pub async fn parse_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, Error> {
        let keys = NotificationKeys {
            verifier: self.verifier(),
            api_v3_key: &self.inner.config.api_v3_key,
            window_secs: self.inner.window_secs,
        };
        match parse_notification(keys, headers, body, self.inner.clock.now()) {
            Err(Error::Signature(SignatureError::UnknownSerial(serial)))
                if self.learn_serial(&serial).await =>
            {
                parse_notification(keys, headers, body, self.inner.clock.now())
            }
            other => other,
        }
    }

    /// Encrypts a sensitive field (RSA-OAEP SHA-1) for WeChat Pay, with the public key or the
    /// newest platform certificate. Returns the serial to send as `Wechatpay-Serial` and the
    /// base64 ciphertext.
    ///
    /// # Errors
    /// [`CryptoError::Encrypt`] when no key is known or the text is too long.
    pub fn encrypt_sensitive(&self, plaintext: &str) -> Result<(String, String), Error> {
        let (serial, key) = self.verifier().encryption_key().ok_or_else(|| {
            CryptoError::Encrypt("no WeChat Pay public key or platform certificate known".into())
        })?;
        Ok((serial, key.oaep_encrypt_base64(plaintext.as_bytes())?))
    }

    /// Decrypts a sensitive field of an answer with the merchant private key.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] or [`CryptoError::Base64`].
    pub fn decrypt_sensitive(&self, ciphertext_b64: &str) -> Result<String, Error> {
        let plain = self
            .inner
            .config
            .private_key
            .oaep_decrypt_base64(ciphertext_b64)?;
        String::from_utf8(plain).map_err(|_| DecodeError::NotUtf8.into())
    }

    fn signed_request(
        &self,
        method: Method,
        url: String,
        body: Option<&Bytes>,
    ) -> Result<OutgoingRequest, Error> {
        self.signed_request_with_serial(method, url, body, None)
    }

    /// A signed request whose `Wechatpay-Serial` names `serial` (the key a sensitive field of
    /// the body was encrypted with) instead of the preferred one.
    fn signed_request_with_serial(
        &self,
        method: Method,
        url: String,
        body: Option<&Bytes>,
        serial: Option<&str>,
    ) -> Result<OutgoingRequest, Error> {
        let cfg = &self.inner.config;
        let body_bytes = body.map_or(&[][..], |b| &b[..]);
        let auth = Authorization::sign(
            &cfg.private_key,
            &cfg.mchid,
            &cfg.merchant_serial,
            method.as_str(),
            &canonical_url(&url),
            self.inner.clock.now(),
            &nonce(),
            body_bytes,
        )?;
        let mut request = OutgoingRequest::new(method, url)
            .header(header::AUTHORIZATION, &auth.to_header_value())?
            .header(header::ACCEPT, "application/json")?;
        if let Some(serial) = serial
            .map(str::to_owned)
            .or_else(|| self.verifier().preferred_serial())
        {
            request = request.header(http::HeaderName::from_static("wechatpay-serial"), &serial)?;
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")?
                .body(body.clone());
        }
        Ok(request)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        idem: Idempotency,
        serial: Option<&str>,
    ) -> Result<RawResponse, Error> {
        let url = join(&self.inner.base, path);
        let body = body.map(Bytes::from);
        let answer = self
            .inner
            .http
            .send(idem, || {
                self.signed_request_with_serial(method.clone(), url.clone(), body.as_ref(), serial)
            })
            .await?;
        if !answer.status.is_success() {
            // The official SDKs do not verify error answers either: they carry no signature we
            // could rely on, and nothing in them is acted upon except as a failure.
            return Err(error_answer(&answer));
        }
        self.verify_answer(&answer).await?;
        Ok(answer)
    }

    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        idem: Idempotency,
    ) -> Result<T, Error> {
        self.call_json_with_serial(method, path, body, idem, None)
            .await
    }

    /// As `call_json`, with `Wechatpay-Serial` naming the key an encrypted field used.
    pub(crate) async fn call_json_with_serial<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        idem: Idempotency,
        serial: Option<&str>,
    ) -> Result<T, Error> {
        let answer = self.call(method, path, body, idem, serial).await?;
        serde_json::from_slice(&answer.body).map_err(|e| DecodeError::json(&e).into())
    }

    async fn verify_answer(&self, answer: &RawResponse) -> Result<(), Error> {
        let signed = SignedHeaders::from_headers(&answer.headers)?;
        let now = self.inner.clock.now();
        match verify_signed(
            self.verifier(),
            &signed,
            &answer.body,
            now,
            self.inner.window_secs,
        ) {
            Err(SignatureError::UnknownSerial(serial)) if self.learn_serial(&serial).await => {
                verify_signed(
                    self.verifier(),
                    &signed,
                    &answer.body,
                    now,
                    self.inner.window_secs,
                )?;
                Ok(())
            }
            other => Ok(other?),
        }
    }
}

fn error_answer(answer: &RawResponse) -> Error {
    match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(body) => ApiError::V3 {
            status: answer.status.as_u16(),
            code: ErrorCode::from_code(&body.code),
            message: body.message,
            detail: body.detail.map(|d| d.to_string()),
        }
        .into(),
        Err(_) if answer.status == StatusCode::OK => {
            DecodeError::Json("empty or malformed answer".into()).into()
        }
        Err(_) => TransportError::Status {
            status: answer.status.as_u16(),
        }
        .into(),
    }
}

fn check_refund(request: &RefundRequest) -> Result<(), Error> {
    if request.amount.refund == 0 || request.amount.refund > request.amount.total {
        return Err(Error::InvalidRequest(
            "amount.refund must be at least 1 fen and at most amount.total".into(),
        ));
    }
    if let Some(url) = &request.notify_url {
        validate_notify_url(url)?;
    }
    Ok(())
}

fn format_date(date: time::Date) -> Result<String, Error> {
    if !(0..=9999).contains(&date.year()) {
        return Err(Error::InvalidRequest(
            "bill_date must be a four-digit year".into(),
        ));
    }
    Ok(crate::time::format_dashed_date(date))
}

/// Percent-encodes a path segment: everything but `A-Za-z0-9-._~` (so `|` and `*` in an
/// out_trade_no become `%7C` and `%2A`, as the Go SDK sends them).
#[must_use]
pub fn path_escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a v3 notify_url: the shared rules of [`crate::validate::notify_url`] (absolute
/// http(s), a host, no query string or fragment), at most 255 characters.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the rule.
pub fn validate_notify_url(url: &str) -> Result<(), Error> {
    crate::validate::notify_url(url, crate::validate::V3_NOTIFY_URL_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped_like_go() {
        assert_eq!(path_escape("A|B*C-_.~9"), "A%7CB%2AC-_.~9");
    }

    #[test]
    fn notify_urls_follow_the_v2_rules_with_the_v3_length() {
        assert!(validate_notify_url("https://example.com/notify").is_ok());
        let long = format!("https://example.com/{}", "n".repeat(236));
        assert_eq!(long.len(), 256);
        assert!(crate::validate::notify_url(&long, crate::validate::V2_NOTIFY_URL_MAX).is_ok());
        assert!(validate_notify_url(&long).is_err());
        assert!(validate_notify_url("https://example.com/notify?x=1").is_err());
        assert!(validate_notify_url("/notify").is_err());
    }
}
