//! The API v2 client: signs every request, and believes an answer only after checking
//! `return_code`, the signature and the merchant identity, in that order.

use std::fmt;

use http::Method;
use secrecy::{ExposeSecret as _, SecretString};

use super::models::{
    CloseOrderRequest, CloseOrderResponse, DownloadBillRequest, OrderQueryRequest,
    OrderQueryResponse, RefundQueryRequest, RefundQueryResponse, RefundRequest, RefundResponse,
    SubMerchant, UnifiedOrderRequest, UnifiedOrderResponse,
};
use super::{ErrCode, SignType, XmlMap, sign, xml};
use crate::bill::{TradeBill, bill_text, parse_trade_bill};
use crate::error::{ApiError, CryptoError, DecodeError, Error, Result, TransportError};
use crate::http::{
    BaseUrls, ClientIdentity, HttpClient, HttpConfig, Idempotency, MAX_BILL_BYTES,
    MAX_RESPONSE_BYTES, OutgoingRequest, RawResponse, join,
};
use crate::ids::SubMchid;
use crate::pay_params::RequestPayment;

/// The `Content-Type` of every v2 request.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// A merchant's API v2 settings.
#[derive(Clone)]
pub struct V2Config {
    /// The mini program's appid, bound to `mch_id`.
    pub appid: String,
    /// The merchant number.
    pub mch_id: String,
    /// The API v2 key (32 characters; not the APIv3 key).
    pub api_key: SecretString,
    /// How requests are signed; `wx.requestPayment` must use the same type.
    pub sign_type: SignType,
    /// The merchant API certificate, needed only for refunds (`/secapi/`).
    pub client_identity: Option<ClientIdentity>,
}

impl fmt::Debug for V2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Config")
            .field("appid", &self.appid)
            .field("mch_id", &self.mch_id)
            .field("api_key", &"<redacted>")
            .field("sign_type", &self.sign_type)
            .field(
                "client_identity",
                &self.client_identity.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl V2Config {
    /// Settings with MD5 signing and no client certificate.
    #[must_use]
    pub fn new(
        appid: impl Into<String>,
        mch_id: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        V2Config {
            appid: appid.into(),
            mch_id: mch_id.into(),
            api_key: SecretString::from(api_key.into()),
            sign_type: SignType::Md5,
            client_identity: None,
        }
    }

    /// The same settings, signing with `sign_type`.
    #[must_use]
    pub fn with_sign_type(mut self, sign_type: SignType) -> Self {
        self.sign_type = sign_type;
        self
    }

    /// The same settings, with the merchant API certificate for refunds.
    #[must_use]
    pub fn with_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.client_identity = Some(identity);
        self
    }

    fn key(&self) -> &str {
        self.api_key.expose_secret()
    }

    fn validate(&self) -> Result<()> {
        if self.appid.is_empty() || self.mch_id.is_empty() {
            return Err(Error::InvalidRequest(
                "appid and mch_id must not be empty".into(),
            ));
        }
        let key = self.key();
        if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CryptoError::InvalidKey(
                "the API v2 key must be 32 printable ASCII characters".into(),
            )
            .into());
        }
        Ok(())
    }
}

/// Checks an answer the way the official SDKs do, before anything in it is used:
///
/// 1. `return_code` must be `SUCCESS`; otherwise the (unsigned) `return_msg` is the error.
/// 2. `sign` must verify with the API key (the type is told by its length).
/// 3. `appid` and `mch_id`, when present, must be ours.
/// 4. `result_code` must be `SUCCESS`; otherwise `err_code` + `err_code_des` are the error.
///
/// # Errors
/// [`ApiError::V2Return`], [`Error::Signature`], [`DecodeError::InvalidField`] for another
/// merchant's answer, [`ApiError::V2Business`].
pub fn check_answer(map: &XmlMap, config: &V2Config) -> Result<()> {
    check_return_code(map)?;
    sign::verify_map(map, config.key())?;
    check_merchant(map, &config.appid, &config.mch_id)?;
    check_result_code(map)
}

/// Step 1 of [`check_answer`]: `return_code=SUCCESS`.
///
/// # Errors
/// [`ApiError::V2Return`] with the `return_msg`, or [`DecodeError::MissingField`].
pub fn check_return_code(map: &XmlMap) -> Result<()> {
    match map.get("return_code").map(String::as_str) {
        Some("SUCCESS") => Ok(()),
        Some(_) => Err(ApiError::V2Return {
            return_msg: map.get("return_msg").cloned().unwrap_or_default(),
        }
        .into()),
        None => Err(DecodeError::MissingField("return_code".into()).into()),
    }
}

/// `appid` and `mch_id` of a verified message, when present, must be the merchant's.
///
/// # Errors
/// [`DecodeError::InvalidField`] naming the field that differs.
pub fn check_merchant(map: &XmlMap, appid: &str, mch_id: &str) -> Result<()> {
    for (field, ours) in [("appid", appid), ("mch_id", mch_id)] {
        if let Some(theirs) = map.get(field)
            && theirs != ours
        {
            return Err(DecodeError::invalid(field, "the answer is for another merchant").into());
        }
    }
    Ok(())
}

/// In partner mode, after [`check_answer`]: the answer's `sub_mch_id`, when present, must be the
/// sub-merchant asked about, and so must its `sub_appid` when both the request and the answer
/// carry one. (WeChat echoes these; a missing echo is not an error.)
///
/// # Errors
/// [`DecodeError::InvalidField`] naming the field that differs.
pub fn check_sub_merchant(map: &XmlMap, sub_merchant: &SubMerchant) -> Result<()> {
    if let Some(theirs) = map.get("sub_mch_id")
        && theirs != sub_merchant.sub_mch_id.as_str()
    {
        return Err(
            DecodeError::invalid("sub_mch_id", "the answer is for another sub-merchant").into(),
        );
    }
    if let (Some(theirs), Some(ours)) = (map.get("sub_appid"), &sub_merchant.sub_appid)
        && theirs != ours.as_str()
    {
        return Err(
            DecodeError::invalid("sub_appid", "the answer is for another sub_appid").into(),
        );
    }
    Ok(())
}

/// Step 4 of [`check_answer`]: `result_code=SUCCESS`.
///
/// # Errors
/// [`ApiError::V2Business`] with the typed `err_code`, or [`DecodeError::MissingField`].
pub fn check_result_code(map: &XmlMap) -> Result<()> {
    match map.get("result_code").map(String::as_str) {
        Some("SUCCESS") => Ok(()),
        Some(_) => Err(ApiError::V2Business {
            err_code: ErrCode::from_code(map.get("err_code").map_or("", String::as_str)),
            err_code_des: map.get("err_code_des").cloned().unwrap_or_default(),
        }
        .into()),
        None => Err(DecodeError::MissingField("result_code".into()).into()),
    }
}

/// Whether an error is `downloadbill`'s "No Bill Exist" (no trades that day, or not yet).
#[must_use]
pub fn is_no_bill(err: &Error) -> bool {
    matches!(err, Error::Api(ApiError::V2Return { return_msg }) if return_msg.eq_ignore_ascii_case("no bill exist"))
}

/// The API v2 client of one merchant.
#[derive(Clone, Debug)]
pub struct V2Client {
    config: V2Config,
    http: HttpClient,
    /// The client that presents the merchant certificate; `None` without one.
    tls_http: Option<HttpClient>,
    base: String,
}

impl V2Client {
    /// A client for `config`, talking to `urls.pay`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] for an API key that is not 32 characters or a client identity
    /// that does not load; [`Error::InvalidRequest`] for an empty appid or mch_id; TLS set-up
    /// failures.
    pub fn new(config: V2Config, http: &HttpConfig, urls: &BaseUrls) -> Result<Self> {
        config.validate()?;
        let tls_http = config
            .client_identity
            .as_ref()
            .map(|identity| HttpClient::with_identity(http, identity))
            .transpose()?;
        Self::with_http(config, urls, HttpClient::new(http)?, tls_http)
    }

    /// A client over your own HTTP clients (see [`crate::http::Transport`]): `http` for every
    /// call, `secapi` for the refund, which must present the merchant certificate (e.g.
    /// [`HttpClient::with_identity`], or a transport of yours that does). Without `secapi`,
    /// refunds are refused before sending; `config.client_identity` is not used here.
    ///
    /// # Errors
    /// As [`V2Client::new`] for the configuration.
    pub fn with_http(
        config: V2Config,
        urls: &BaseUrls,
        http: HttpClient,
        secapi: Option<HttpClient>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(V2Client {
            http,
            tls_http: secapi,
            base: urls.pay.trim_end_matches('/').to_owned(),
            config,
        })
    }

    /// The same merchant's client for another mini program bound to it (`appid` in every call
    /// and in the `wx.requestPayment` signature); the HTTP clients are shared. In partner mode
    /// the `appid` stays the provider's; a sub-merchant's mini program is its `sub_appid`
    /// ([`SubMerchant`], [`partner_request_payment`](Self::partner_request_payment)).
    #[must_use]
    pub fn for_app(&self, appid: &str) -> Self {
        V2Client {
            config: V2Config {
                appid: appid.to_owned(),
                ..self.config.clone()
            },
            ..self.clone()
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &V2Config {
        &self.config
    }

    /// `POST /pay/unifiedorder`: creates the order and returns its `prepay_id`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] before sending; transport, [`ApiError`], signature and decode
    /// errors after.
    pub async fn unified_order(
        &self,
        request: &UnifiedOrderRequest,
    ) -> Result<UnifiedOrderResponse> {
        let params = request.to_params(&self.config)?;
        // WeChat answers a repeat with the same out_trade_no and identical parameters with the
        // same prepay; only different parameters are OUT_TRADE_NO_USED. Resending is safe.
        let map = self
            .call(
                &self.http,
                "/pay/unifiedorder",
                Idempotency::Idempotent,
                params,
                request.sub_merchant.as_ref(),
            )
            .await?;
        Ok(UnifiedOrderResponse::from_map(&map)?)
    }

    /// `POST /pay/orderquery`.
    ///
    /// # Errors
    /// As [`unified_order`](Self::unified_order); `ORDERNOTEXIST` is an [`ApiError::V2Business`].
    pub async fn order_query(&self, request: &OrderQueryRequest) -> Result<OrderQueryResponse> {
        let params = request.to_params(&self.config)?;
        let map = self
            .call(
                &self.http,
                "/pay/orderquery",
                Idempotency::Idempotent,
                params,
                request.sub_merchant.as_ref(),
            )
            .await?;
        Ok(OrderQueryResponse::from_map(&map)?)
    }

    /// `POST /pay/closeorder`.
    ///
    /// # Errors
    /// As [`unified_order`](Self::unified_order); a paid order gives `ORDERPAID`.
    pub async fn close_order(&self, request: &CloseOrderRequest) -> Result<CloseOrderResponse> {
        let params = request.to_params(&self.config)?;
        let map = self
            .call(
                &self.http,
                "/pay/closeorder",
                Idempotency::Idempotent,
                params,
                request.sub_merchant.as_ref(),
            )
            .await?;
        Ok(CloseOrderResponse::from_map(&map)?)
    }

    /// `POST /secapi/pay/refund` over mutual TLS with the merchant certificate. Success means
    /// the refund was accepted; its result comes by notification or [`refund_query`](Self::refund_query).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] without a client identity in the config or for invalid fields;
    /// otherwise as [`unified_order`](Self::unified_order).
    pub async fn refund(&self, request: &RefundRequest) -> Result<RefundResponse> {
        let http = self.tls_http.as_ref().ok_or_else(|| {
            Error::InvalidRequest(
                "a v2 refund needs the merchant API certificate: set V2Config::client_identity"
                    .into(),
            )
        })?;
        let params = request.to_params(&self.config)?;
        // The out_refund_no makes a repeat harmless: WeChat asks to retry with the same one.
        let map = self
            .call(
                http,
                "/secapi/pay/refund",
                Idempotency::Idempotent,
                params,
                request.sub_merchant.as_ref(),
            )
            .await?;
        Ok(RefundResponse::from_map(&map)?)
    }

    /// `POST /pay/refundquery`.
    ///
    /// # Errors
    /// As [`unified_order`](Self::unified_order); `REFUNDNOTEXIST` is an [`ApiError::V2Business`].
    pub async fn refund_query(&self, request: &RefundQueryRequest) -> Result<RefundQueryResponse> {
        let params = request.to_params(&self.config)?;
        let map = self
            .call(
                &self.http,
                "/pay/refundquery",
                Idempotency::Idempotent,
                params,
                request.sub_merchant.as_ref(),
            )
            .await?;
        Ok(RefundQueryResponse::from_map(&map)?)
    }

    /// `POST /pay/downloadbill`: the bill text, gunzipped when it came compressed. The bill is
    /// not signed (WeChat does not sign it); an XML body is an error answer.
    ///
    /// # Errors
    /// [`ApiError::V2Return`] with WeChat's message (see [`is_no_bill`]); decode errors for a
    /// body that is neither text nor gzip, or too large.
    pub async fn download_bill(&self, request: &DownloadBillRequest) -> Result<String> {
        let params = request.to_params(&self.config)?;
        self.download(params).await
    }

    /// A service provider's [`download_bill`](Self::download_bill) of one sub-merchant's bill
    /// (`sub_mch_id`); the provider's own bill, with every sub-merchant, is
    /// [`download_bill`](Self::download_bill).
    ///
    /// # Errors
    /// As [`download_bill`](Self::download_bill).
    pub async fn partner_download_bill(
        &self,
        request: &DownloadBillRequest,
        sub_mch_id: &SubMchid,
    ) -> Result<String> {
        let params = request.to_partner_params(&self.config, sub_mch_id)?;
        self.download(params).await
    }

    /// [`partner_download_bill`](Self::partner_download_bill), parsed.
    ///
    /// # Errors
    /// As [`download_bill`](Self::download_bill), and [`DecodeError::Bill`].
    pub async fn partner_download_trade_bill(
        &self,
        request: &DownloadBillRequest,
        sub_mch_id: &SubMchid,
    ) -> Result<TradeBill> {
        let text = self.partner_download_bill(request, sub_mch_id).await?;
        Ok(parse_trade_bill(&text)?)
    }

    async fn download(&self, params: XmlMap) -> Result<String> {
        let answer = self
            .send(
                &self.http,
                "/pay/downloadbill",
                Idempotency::Idempotent,
                params,
                MAX_BILL_BYTES,
            )
            .await?;
        bill_answer(&answer)
    }

    /// [`download_bill`](Self::download_bill), parsed.
    ///
    /// # Errors
    /// As [`download_bill`](Self::download_bill), and [`DecodeError::Bill`].
    pub async fn download_trade_bill(&self, request: &DownloadBillRequest) -> Result<TradeBill> {
        let text = self.download_bill(request).await?;
        Ok(parse_trade_bill(&text)?)
    }

    /// The `wx.requestPayment` parameters for a prepay, signed with this merchant's key and
    /// sign type (the ones used for `unifiedorder`).
    #[must_use]
    pub fn request_payment(&self, prepay_id: &str, time_stamp: i64) -> RequestPayment {
        crate::pay_params::v2(
            self.config.key(),
            &self.config.appid,
            prepay_id,
            time_stamp,
            &crate::nonce::nonce(),
            self.config.sign_type,
        )
    }

    /// The `wx.requestPayment` parameters for a partner prepay of `sub_merchant`, signed with
    /// the provider's key and sign type over `appId` = its `sub_appid` when it has one (the
    /// prepay must have carried the same), else the provider's appid. Pass the sub-merchant the
    /// order was made with ([`UnifiedOrderRequest::paying_appid`] tells the same appid).
    #[must_use]
    pub fn partner_request_payment(
        &self,
        sub_merchant: &SubMerchant,
        prepay_id: &str,
        time_stamp: i64,
    ) -> RequestPayment {
        crate::pay_params::v2(
            self.config.key(),
            sub_merchant.paying_appid(&self.config.appid),
            prepay_id,
            time_stamp,
            &crate::nonce::nonce(),
            self.config.sign_type,
        )
    }

    async fn call(
        &self,
        http: &HttpClient,
        path: &str,
        idempotency: Idempotency,
        params: XmlMap,
        sub_merchant: Option<&SubMerchant>,
    ) -> Result<XmlMap> {
        let answer = self
            .send(http, path, idempotency, params, MAX_RESPONSE_BYTES)
            .await?;
        let map = match xml::decode(&answer.body) {
            Ok(map) => map,
            Err(_) if !answer.status.is_success() => {
                return Err(TransportError::Status {
                    status: answer.status.as_u16(),
                }
                .into());
            }
            Err(err) => return Err(DecodeError::Xml(err).into()),
        };
        if !answer.status.is_success() && map.get("return_code").is_some_and(|c| c == "SUCCESS") {
            return Err(TransportError::Status {
                status: answer.status.as_u16(),
            }
            .into());
        }
        check_answer(&map, &self.config)?;
        if let Some(sub) = sub_merchant {
            check_sub_merchant(&map, sub)?;
        }
        Ok(map)
    }

    async fn send(
        &self,
        http: &HttpClient,
        path: &str,
        idempotency: Idempotency,
        params: XmlMap,
        max_body: usize,
    ) -> Result<RawResponse> {
        let url = join(&self.base, path);
        tracing::debug!(path, "WeChat Pay v2 call");
        http.send(idempotency, || {
            // A fresh nonce for every attempt, as the official SDKs do.
            let mut params = params.clone();
            params.insert("nonce_str".into(), crate::nonce::nonce());
            let signature = sign::sign_map(&params, self.config.key(), self.config.sign_type);
            params.insert("sign".into(), signature);
            let body = xml::encode(&params).map_err(DecodeError::Xml)?;
            let mut request = OutgoingRequest::new(Method::POST, url.clone())
                .header(http::header::CONTENT_TYPE, CONTENT_TYPE)?
                .body(body);
            request.max_body = max_body;
            Ok(request)
        })
        .await
    }
}

/// Reads a `downloadbill` answer: an XML error, or the bill as text or gzip.
fn bill_answer(answer: &RawResponse) -> Result<String> {
    let body = answer.body.as_ref();
    if body.trim_ascii_start().starts_with(b"<") {
        let map = xml::decode(body).map_err(DecodeError::Xml)?;
        check_return_code(&map)?;
        return Err(DecodeError::Bill(
            "downloadbill answered XML with return_code SUCCESS instead of a bill".into(),
        )
        .into());
    }
    if !answer.status.is_success() {
        return Err(TransportError::Status {
            status: answer.status.as_u16(),
        }
        .into());
    }
    Ok(bill_text(body, MAX_BILL_BYTES)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SignatureError;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn config() -> V2Config {
        V2Config::new("wxd930ea5d5a258f4f", "10000100", KEY)
    }

    fn signed_success(extra: &[(&str, &str)], key: &str) -> XmlMap {
        let mut map: XmlMap = [
            ("return_code", "SUCCESS"),
            ("return_msg", "OK"),
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("nonce_str", "IITRi8Iabbblz1Jc"),
            ("result_code", "SUCCESS"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let s = sign::sign_map(&map, key, SignType::HmacSha256);
        map.insert("sign".into(), s);
        map
    }

    #[test]
    fn debug_redacts_the_key() {
        let text = format!("{:?}", config());
        assert!(!text.contains(KEY));
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn a_good_answer_passes() {
        assert!(check_answer(&signed_success(&[], KEY), &config()).is_ok());
    }

    #[test]
    fn return_fail_is_believed_without_a_signature() {
        let mut map = XmlMap::new();
        map.insert("return_code".into(), "FAIL".into());
        map.insert("return_msg".into(), "签名错误".into());
        assert!(matches!(
            check_answer(&map, &config()),
            Err(Error::Api(ApiError::V2Return { return_msg })) if return_msg == "签名错误"
        ));
        assert!(
            matches!(check_answer(&XmlMap::new(), &config()), Err(Error::Decode(DecodeError::MissingField(f))) if f == "return_code")
        );
    }

    #[test]
    fn the_signature_is_checked_before_the_business_result() {
        // A forged business error must not be believed either.
        let forged = signed_success(
            &[("result_code", "FAIL"), ("err_code", "ORDERPAID")],
            "0".repeat(32).as_str(),
        );
        assert!(matches!(
            check_answer(&forged, &config()),
            Err(Error::Signature(SignatureError::Mismatch))
        ));
        let mut tampered = signed_success(&[("prepay_id", "wx1")], KEY);
        tampered.insert("prepay_id".into(), "wx2".into());
        assert!(matches!(
            check_answer(&tampered, &config()),
            Err(Error::Signature(SignatureError::Mismatch))
        ));
        let mut unsigned = signed_success(&[], KEY);
        unsigned.remove("sign");
        assert!(matches!(
            check_answer(&unsigned, &config()),
            Err(Error::Signature(SignatureError::Missing(_)))
        ));
    }

    #[test]
    fn business_errors_are_typed() {
        let map = signed_success(
            &[
                ("result_code", "FAIL"),
                ("err_code", "ORDERPAID"),
                ("err_code_des", "该订单已支付"),
            ],
            KEY,
        );
        match check_answer(&map, &config()) {
            Err(Error::Api(ApiError::V2Business {
                err_code,
                err_code_des,
            })) => {
                assert_eq!(err_code, ErrCode::OrderPaid);
                assert_eq!(err_code_des, "该订单已支付");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_merchants_answer_is_refused() {
        let map = signed_success(&[("mch_id", "10000101")], KEY);
        assert!(matches!(
            check_answer(&map, &config()),
            Err(Error::Decode(DecodeError::InvalidField { field, .. })) if field == "mch_id"
        ));
        let map = signed_success(&[("appid", "wx0")], KEY);
        assert!(check_answer(&map, &config()).is_err());
    }

    #[test]
    fn config_is_validated() {
        let http = HttpConfig::default();
        let urls = BaseUrls::single("http://127.0.0.1:9");
        assert!(matches!(
            V2Client::new(V2Config::new("wx", "1", "short"), &http, &urls),
            Err(Error::Crypto(CryptoError::InvalidKey(_)))
        ));
        assert!(matches!(
            V2Client::new(V2Config::new("", "1", KEY), &http, &urls),
            Err(Error::InvalidRequest(_))
        ));
        assert!(V2Client::new(config(), &http, &urls).is_ok());
    }

    #[tokio::test]
    async fn refund_without_a_certificate_is_refused_before_sending() {
        let client = V2Client::new(
            config(),
            &HttpConfig::default(),
            &BaseUrls::single("http://127.0.0.1:9"),
        )
        .unwrap();
        let request = RefundRequest::new(super::super::models::RefundFields {
            id: super::super::models::OrderId::OutTradeNo("20150806125346".parse().unwrap()),
            out_refund_no: "R1".parse().unwrap(),
            total_fee: crate::Fen::new(100),
            refund_fee: crate::Fen::new(1),
        });
        assert!(
            matches!(client.refund(&request).await, Err(Error::InvalidRequest(m)) if m.contains("certificate"))
        );
    }

    fn partner_sub(sub_appid: Option<&str>) -> SubMerchant {
        let sub = SubMerchant::new("1900000109".parse().unwrap());
        match sub_appid {
            Some(a) => sub.with_sub_appid(a.parse().unwrap()),
            None => sub,
        }
    }

    #[test]
    fn sub_merchant_echoes_are_checked() {
        let sub = partner_sub(Some("wxsub"));
        let ok = signed_success(&[("sub_mch_id", "1900000109"), ("sub_appid", "wxsub")], KEY);
        assert!(check_sub_merchant(&ok, &sub).is_ok());
        // No echo is no error; an order made without sub_appid may echo none.
        assert!(check_sub_merchant(&signed_success(&[], KEY), &sub).is_ok());
        let other = signed_success(&[("sub_mch_id", "1900000110")], KEY);
        assert!(matches!(
            check_sub_merchant(&other, &sub),
            Err(Error::Decode(DecodeError::InvalidField { field, .. })) if field == "sub_mch_id"
        ));
        let other_app = signed_success(&[("sub_mch_id", "1900000109"), ("sub_appid", "wxx")], KEY);
        assert!(matches!(
            check_sub_merchant(&other_app, &sub),
            Err(Error::Decode(DecodeError::InvalidField { field, .. })) if field == "sub_appid"
        ));
        // Without a sub_appid of ours, the echoed one is not compared.
        assert!(check_sub_merchant(&other_app, &partner_sub(None)).is_ok());
    }

    /// A WeChat stand-in: verifies each request's signature, records its parameters, and
    /// answers with a signed success that echoes `sub_mch_id` as `echo_sub_mch_id`.
    #[derive(Debug)]
    struct FakeWeChat {
        seen: std::sync::Mutex<Vec<XmlMap>>,
        echo_sub_mch_id: &'static str,
    }

    impl crate::http::Transport for FakeWeChat {
        fn send<'a>(
            &'a self,
            request: &'a OutgoingRequest,
        ) -> crate::http::BoxFuture<'a, std::result::Result<RawResponse, TransportError>> {
            let params = xml::decode(&request.body).unwrap();
            assert_eq!(sign::verify_map(&params, KEY), Ok(SignType::Md5));
            let mut answer = vec![
                ("prepay_id", "wx201410272009395522657a690389285100"),
                ("trade_type", "JSAPI"),
                ("trade_state", "NOTPAY"),
                ("out_trade_no", "20150806125346"),
            ];
            if !self.echo_sub_mch_id.is_empty() {
                answer.push(("sub_mch_id", self.echo_sub_mch_id));
            }
            let body = xml::encode(&signed_success(&answer, KEY)).unwrap();
            self.seen.lock().unwrap().push(params);
            Box::pin(std::future::ready(Ok(raw(200, body.as_bytes()))))
        }
    }

    fn fake_client(echo_sub_mch_id: &'static str) -> (V2Client, std::sync::Arc<FakeWeChat>) {
        let fake = std::sync::Arc::new(FakeWeChat {
            seen: std::sync::Mutex::default(),
            echo_sub_mch_id,
        });
        let http = HttpClient::from_transport(fake.clone(), crate::http::RetryPolicy::none());
        let client = V2Client::with_http(
            config(),
            &BaseUrls::single("http://wechat.invalid"),
            http,
            None,
        )
        .unwrap();
        (client, fake)
    }

    #[tokio::test]
    async fn partner_calls_send_and_check_the_sub_merchant() {
        let (client, fake) = fake_client("1900000109");
        let sub = partner_sub(Some("wxsub"));
        let order = super::super::models::UnifiedOrderRequest::jsapi(
            super::super::models::UnifiedOrderFields {
                body: "body".into(),
                out_trade_no: "20150806125346".parse().unwrap(),
                total_fee: crate::Fen::new(1),
                spbill_create_ip: "127.0.0.1".into(),
                notify_url: "https://example.com/n".into(),
                openid: "o_sub".parse().unwrap(),
            },
        )
        .with_sub_merchant(sub.clone())
        .with_sub_openid();
        let prepay = client.unified_order(&order).await.unwrap();
        assert_eq!(prepay.sub_mch_id.as_deref(), Some("1900000109"));
        let query = OrderQueryRequest::by_out_trade_no("20150806125346".parse().unwrap())
            .with_sub_merchant(sub.clone());
        assert!(client.order_query(&query).await.is_ok());
        {
            let seen = fake.seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            for params in seen.iter() {
                assert_eq!(params["sub_mch_id"], "1900000109");
                assert_eq!(params["sub_appid"], "wxsub");
                assert_eq!(params["appid"], "wxd930ea5d5a258f4f");
            }
            assert_eq!(seen[0]["sub_openid"], "o_sub");
            assert!(!seen[0].contains_key("openid"));
        }

        // An answer about another sub-merchant is refused.
        let (client, _) = fake_client("1900000110");
        assert!(matches!(
            client.order_query(&query).await,
            Err(Error::Decode(DecodeError::InvalidField { field, .. })) if field == "sub_mch_id"
        ));
        // A sub_openid without sub_appid is refused before anything is sent.
        let (client, fake) = fake_client("");
        let mut bad = order.clone();
        bad.sub_merchant = Some(partner_sub(None));
        assert!(matches!(
            client.unified_order(&bad).await,
            Err(Error::InvalidRequest(m)) if m.contains("sub_openid requires")
        ));
        assert!(fake.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn partner_request_payment_signs_the_paying_app() {
        let (client, _) = fake_client("");
        let with_app =
            client.partner_request_payment(&partner_sub(Some("wxsub")), "wx2", 1_414_561_699);
        let expected = crate::pay_params::v2(
            KEY,
            "wxsub",
            "wx2",
            1_414_561_699,
            &with_app.nonce_str,
            SignType::Md5,
        );
        assert_eq!(with_app.pay_sign, expected.pay_sign);
        assert_eq!(with_app.package, "prepay_id=wx2");
        let without = client.partner_request_payment(&partner_sub(None), "wx2", 1_414_561_699);
        let provider = crate::pay_params::v2(
            KEY,
            "wxd930ea5d5a258f4f",
            "wx2",
            1_414_561_699,
            &without.nonce_str,
            SignType::Md5,
        );
        assert_eq!(without.pay_sign, provider.pay_sign);
        // for_app(sub_appid) gives the same signature, as the docs say.
        let via_for_app = client
            .for_app("wxsub")
            .request_payment("wx2", 1_414_561_699);
        let again = crate::pay_params::v2(
            KEY,
            "wxsub",
            "wx2",
            1_414_561_699,
            &via_for_app.nonce_str,
            SignType::Md5,
        );
        assert_eq!(via_for_app.pay_sign, again.pay_sign);
    }

    fn raw(status: u16, body: &[u8]) -> RawResponse {
        RawResponse {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn bill_answers_are_told_apart() {
        let no_bill = b"<xml><return_code>FAIL</return_code><return_msg>No Bill Exist</return_msg><error_code>20002</error_code></xml>";
        let err = bill_answer(&raw(200, no_bill)).unwrap_err();
        assert!(is_no_bill(&err), "{err:?}");
        assert_eq!(
            bill_answer(&raw(200, "交易时间\r\n".as_bytes())).unwrap(),
            "交易时间\r\n"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, "交易时间\r\n".as_bytes()).unwrap();
        assert_eq!(
            bill_answer(&raw(200, &gz.finish().unwrap())).unwrap(),
            "交易时间\r\n"
        );
        assert!(matches!(
            bill_answer(&raw(502, b"bad gateway")),
            Err(Error::Transport(TransportError::Status { status: 502 }))
        ));
        assert!(bill_answer(&raw(200, b"<!DOCTYPE x><xml/>")).is_err());
    }
}
