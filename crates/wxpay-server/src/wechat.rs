//! WeChat as the server sees it: both payment APIs (each order is handled with the API it was
//! made with) and the mini-program API, behind one type.

use std::time::Duration;

use time::OffsetDateTime;
use wxpay::http::{BaseUrls, HttpClient, HttpConfig};
use wxpay::mp::client::MpClient;
use wxpay::v2::client::V2Client;
use wxpay::v2::models::{
    CloseOrderRequest, OrderId, OrderQueryRequest, RefundFields as V2RefundFields, RefundQueryId,
    RefundQueryRequest, RefundRequest as V2RefundRequest, SubMerchant, UnifiedOrderFields,
    UnifiedOrderRequest,
};
use wxpay::v3::client::V3Client;
use wxpay::v3::models::{
    PrepayFields, PrepayRequest, RefundFields as V3RefundFields, RefundRequest as V3RefundRequest,
    RefundTarget, SceneInfo, TradeState,
};
use wxpay::{ApiError, Error, Fen, OpenId, OutRefundNo, OutTradeNo, RequestPayment};

use crate::merchant::Merchant;
use crate::store::{ApiVersion, Order, Refund, RefundStatus};

/// A prepay_id is valid for 2 hours; a new one is made when less than this remains, so that the
/// buyer has time to pay with the parameters handed out.
pub const PREPAY_RENEW_AFTER_MS: i64 = (2 * 3600 - 10 * 60) * 1000;

/// How a payment report reached us; it names the report in the timeline and makes its
/// dedupe key (a repeat of the same report changes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportSource {
    /// A verified v3 notification, by its event id.
    V3Notification {
        /// The notification's `id`.
        event_id: String,
    },
    /// A verified v2 notification.
    V2Notification {
        /// Its `sign_type`.
        sign_type: String,
    },
    /// The answer of an order query.
    Query,
}

/// A payment as WeChat reports it, whichever way it came: a v3 or v2 notification or an order
/// query. The one input of the payments core's check and transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReport {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's transaction id (empty when WeChat sent none: refused).
    pub transaction_id: String,
    /// The amount in fen.
    pub amount_fen: u64,
    /// The currency, when reported (only `CNY` is accepted).
    pub currency: Option<String>,
    /// The payer, when reported (must be the order's buyer).
    pub payer_openid: Option<String>,
    /// When (Unix milliseconds).
    pub paid_at: Option<i64>,
    /// The appid WeChat reports (v3 always, v2 notifications).
    pub appid: Option<String>,
    /// The merchant WeChat reports (v3 always, v2 notifications); the provider's in
    /// service-provider mode.
    pub mchid: Option<String>,
    /// The sub-merchant WeChat reports (service-provider mode); checked with `mchid`, so that a
    /// direct report of a sub-merchant's order (or the reverse) is refused.
    pub sub_mchid: Option<String>,
    /// Where it came from.
    pub source: ReportSource,
}

impl PaymentReport {
    /// The report of a v3 transaction (a notification's resource or a query's answer).
    #[must_use]
    pub fn from_v3(t: &wxpay::v3::models::Transaction, source: ReportSource) -> Self {
        PaymentReport {
            out_trade_no: t.out_trade_no.clone(),
            transaction_id: t.transaction_id.clone().unwrap_or_default(),
            amount_fen: t.amount.total,
            currency: Some(t.amount.currency.clone()),
            payer_openid: t.payer.as_ref().map(|p| p.openid.clone()),
            paid_at: t.success_time.map(unix_ms),
            appid: Some(t.appid.clone()),
            mchid: Some(t.mchid.clone()),
            sub_mchid: None,
            source,
        }
    }

    /// The report of a v3 transaction of a service provider's sub-merchant (a partner
    /// notification's resource or a partner query's answer). The appid is the one that paid:
    /// `sub_appid` when the order carried one, else `sp_appid`; the payer is the openid under it.
    #[must_use]
    pub fn from_v3_partner(
        t: &wxpay::v3::models::PartnerTransaction,
        source: ReportSource,
    ) -> Self {
        let payer = t.payer.as_ref().and_then(|p| {
            if t.sub_appid.is_some() {
                p.sub_openid.clone().or_else(|| p.sp_openid.clone())
            } else {
                p.sp_openid.clone()
            }
        });
        PaymentReport {
            out_trade_no: t.out_trade_no.clone(),
            transaction_id: t.transaction_id.clone().unwrap_or_default(),
            amount_fen: t.amount.total,
            currency: Some(t.amount.currency.clone()),
            payer_openid: payer,
            paid_at: t.success_time.map(unix_ms),
            appid: Some(t.sub_appid.clone().unwrap_or_else(|| t.sp_appid.clone())),
            mchid: Some(t.sp_mchid.clone()),
            sub_mchid: Some(t.sub_mchid.clone()),
            source,
        }
    }

    /// The report of a verified v2 payment notification.
    #[must_use]
    pub fn from_v2_notification(n: &wxpay::v2::notify::PayNotification) -> Self {
        PaymentReport {
            out_trade_no: n.out_trade_no.clone(),
            transaction_id: n.transaction_id.clone(),
            amount_fen: n.total_fee.get(),
            currency: n.fee_type.clone(),
            // A sub-merchant's own mini program pays as `sub_appid`, its buyer a `sub_openid`.
            payer_openid: Some(match (&n.sub_appid, &n.sub_openid) {
                (Some(_), Some(sub_openid)) => sub_openid.clone(),
                _ => n.openid.clone(),
            }),
            paid_at: Some(n.time_end.unix_timestamp() * 1000),
            appid: Some(n.sub_appid.clone().unwrap_or_else(|| n.appid.clone())),
            mchid: Some(n.mch_id.clone()),
            sub_mchid: n.sub_mch_id.clone(),
            source: ReportSource::V2Notification {
                sign_type: n.sign_type.as_str().to_owned(),
            },
        }
    }

    /// The report of a v2 order query that says paid.
    #[must_use]
    pub fn from_v2_query(r: &wxpay::v2::models::OrderQueryResponse) -> Self {
        PaymentReport {
            out_trade_no: r.out_trade_no.clone(),
            transaction_id: r.transaction_id.clone().unwrap_or_default(),
            amount_fen: r.total_fee.map_or(0, Fen::get),
            currency: r.fee_type.clone(),
            payer_openid: r.openid.clone(),
            paid_at: r.time_end.map(|t| t.unix_timestamp() * 1000),
            appid: None,
            mchid: None,
            sub_mchid: None,
            source: ReportSource::Query,
        }
    }
}

/// What WeChat says about an order when asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TradeReport {
    /// WeChat does not know the order (it never reached WeChat).
    NotFound,
    /// Not paid yet (or still being paid).
    Pending,
    /// Paid (or paid and refunded since).
    Paid(PaymentReport),
    /// Closed.
    Closed,
    /// The payment failed.
    PayError,
    /// A state this server does not act on (e.g. `REVOKED`), as sent.
    Other(String),
}

impl TradeReport {
    /// The state name for the timeline.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            TradeReport::NotFound => "ORDER_NOT_EXIST",
            TradeReport::Pending => "NOTPAY",
            TradeReport::Paid(_) => "SUCCESS",
            TradeReport::Closed => "CLOSED",
            TradeReport::PayError => "PAYERROR",
            TradeReport::Other(s) => s,
        }
    }
}

/// What WeChat says about a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundReport {
    /// WeChat does not have it.
    NotFound,
    /// WeChat has it.
    Found {
        /// WeChat's refund id.
        refund_id: String,
        /// Its state.
        status: RefundStatus,
        /// When it succeeded (Unix ms).
        success_at: Option<i64>,
        /// Its amount in fen.
        amount_fen: u64,
    },
}

/// A day's trade bill at WeChat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillDownload {
    /// No trades that day: no bill.
    NoBill,
    /// Not made yet (after 10:00 GMT+8 the next day).
    NotReady,
    /// The bill's text.
    Text(String),
}

/// How a mini program pays through a service provider (服务商): to which of its sub-merchants,
/// and whether the mini program is the sub-merchant's own (`sub_appid`, buyers are
/// `sub_openid`s) or the provider's (`sp_appid`, buyers are `sp_openid`s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubMerchantRoute {
    /// The sub-merchant (特约商户号).
    pub sub_mchid: String,
    /// The sub-merchant's mini program, when the paying mini program is not the provider's.
    pub sub_appid: Option<String>,
}

/// The clients of one merchant.
#[derive(Clone, Debug)]
pub struct WeChat {
    /// API v3.
    pub v3: V3Client,
    /// API v2.
    pub v2: V2Client,
    /// The mini-program API.
    pub mp: MpClient,
    /// The API new orders use.
    pub api_version: ApiVersion,
    /// The base of the notify URLs (no trailing `/`).
    pub notify_base: String,
    /// The merchant's appid.
    pub appid: String,
    /// The merchant id.
    pub mchid: String,
    /// The API v2 key (notifications).
    pub(crate) api_v2_key: secrecy::SecretString,
    /// A service provider's own appid (`sp_appid`): set on a provider's clients, which are
    /// bound to it (every request is signed as `sp_appid`/`sp_mchid`).
    pub sp_appid: Option<String>,
    /// The sub-merchant a mini program pays to, when its merchant is a service provider.
    pub partner: Option<SubMerchantRoute>,
}

/// Where the clients go and how long they wait, and the HTTP client they share.
#[derive(Clone, Debug)]
pub struct WeChatEndpoints {
    /// WeChat Pay for v3 (and the mini-program API).
    pub urls: BaseUrls,
    /// WeChat Pay for v2: HTTPS to present the client certificate of `/secapi/`.
    pub v2_pay: String,
    /// Timeout of one call.
    pub timeout: Duration,
    /// An extra trusted CA (PEM; a simulator's).
    pub extra_ca_pem: Option<String>,
    /// The one HTTP client (connection pool, TLS set-up) of every merchant's v3, v2 and
    /// mini-program calls; only v2's `/secapi/` calls, which present a merchant's own
    /// certificate, have a client of their own.
    pub http: HttpClient,
}

impl WeChatEndpoints {
    /// The endpoints and their shared client.
    ///
    /// # Errors
    /// [`Error`] when the client cannot be built (an extra CA that is not PEM).
    pub fn new(
        urls: BaseUrls,
        v2_pay: String,
        timeout: Duration,
        extra_ca_pem: Option<String>,
    ) -> Result<Self, Error> {
        let config = http_config(timeout, extra_ca_pem.as_deref());
        Ok(WeChatEndpoints {
            http: HttpClient::new(&config)?,
            urls,
            v2_pay,
            timeout,
            extra_ca_pem,
        })
    }

    fn http_config(&self) -> HttpConfig {
        http_config(self.timeout, self.extra_ca_pem.as_deref())
    }
}

fn http_config(timeout: Duration, extra_ca_pem: Option<&str>) -> HttpConfig {
    let mut http = HttpConfig {
        timeout,
        ..HttpConfig::default()
    };
    if let Some(ca) = extra_ca_pem {
        http.extra_roots_pem.push(ca.to_owned());
    }
    http
}

impl WeChat {
    /// Builds the clients.
    ///
    /// # Errors
    /// [`Error`] when a client cannot be built (TLS set-up, a key the library refuses).
    pub fn new(
        merchant: &Merchant,
        endpoints: &WeChatEndpoints,
        api_version: ApiVersion,
        notify_base: &str,
    ) -> Result<Self, Error> {
        let clock: std::sync::Arc<dyn wxpay::nonce::Clock> =
            std::sync::Arc::new(wxpay::nonce::SystemClock);
        let v3 = V3Client::with_http(
            merchant.v3_config(),
            &endpoints.urls,
            endpoints.http.clone(),
            clock.clone(),
        );
        let v2_urls = BaseUrls {
            pay: endpoints.v2_pay.clone(),
            mp: endpoints.urls.mp.clone(),
        };
        let v2_config = merchant
            .v2_config()
            .map_err(|e| Error::InvalidRequest(e.message))?;
        // Only `/secapi/` presents the merchant's certificate: a client of its own.
        let secapi = v2_config
            .client_identity
            .as_ref()
            .map(|identity| HttpClient::with_identity(&endpoints.http_config(), identity))
            .transpose()?;
        let v2 = V2Client::with_http(v2_config, &v2_urls, endpoints.http.clone(), secapi)?;
        let mp = MpClient::with_http(
            merchant.mp_config(),
            &endpoints.urls,
            endpoints.http.clone(),
            clock,
        )?;
        Ok(WeChat {
            v3,
            v2,
            mp,
            api_version,
            notify_base: notify_base.trim_end_matches('/').to_owned(),
            appid: merchant.appid.clone(),
            mchid: merchant.mchid.clone(),
            api_v2_key: merchant.api_v2_key.clone(),
            sp_appid: None,
            partner: None,
        })
    }

    /// The same clients as a service provider's, bound to its `sp_appid` (the merchant's appid
    /// given to [`WeChat::new`]). Its mini programs are served with
    /// [`WeChat::for_sub_merchant`].
    #[must_use]
    pub fn into_provider(self) -> Self {
        WeChat {
            sp_appid: Some(self.appid.clone()),
            ..self
        }
    }

    /// The mini-program API client of a mini program (its AppSecret), with the HTTP settings of
    /// [`WeChat::new`].
    ///
    /// # Errors
    /// [`Error`] when the client cannot be built.
    pub fn mp_client(
        appid: &str,
        app_secret: &secrecy::SecretString,
        endpoints: &WeChatEndpoints,
    ) -> Result<MpClient, Error> {
        use secrecy::ExposeSecret as _;
        MpClient::with_http(
            wxpay::mp::client::MpConfig::new(appid, app_secret.expose_secret()),
            &endpoints.urls,
            endpoints.http.clone(),
            std::sync::Arc::new(wxpay::nonce::SystemClock),
        )
    }

    /// The same merchant's clients for another mini program bound to it: prepays and
    /// `wx.requestPayment` signatures name `appid`, logins go through `mp`. The payment
    /// clients' HTTP connections, verifier and certificates are shared with `self`.
    #[must_use]
    pub fn for_app(&self, appid: &str, mp: MpClient) -> Self {
        WeChat {
            v3: self.v3.for_app(appid),
            v2: self.v2.for_app(appid),
            mp,
            appid: appid.to_owned(),
            partner: None,
            ..self.clone()
        }
    }

    /// A service provider's clients for a mini program paying to its sub-merchant `sub_mchid`:
    /// requests stay signed as `sp_appid`/`sp_mchid` and name the sub-merchant; the buyer is a
    /// `sub_openid` of `appid` (sent as `sub_appid`) unless `appid` is the provider's own.
    /// `None` when these are not a provider's clients.
    #[must_use]
    pub fn for_sub_merchant(&self, appid: &str, sub_mchid: &str, mp: MpClient) -> Option<Self> {
        let sp_appid = self.sp_appid.clone()?;
        let provider = if self.appid == sp_appid {
            self.clone()
        } else {
            WeChat {
                v3: self.v3.for_app(&sp_appid),
                v2: self.v2.for_app(&sp_appid),
                ..self.clone()
            }
        };
        Some(WeChat {
            mp,
            appid: appid.to_owned(),
            partner: Some(SubMerchantRoute {
                sub_mchid: sub_mchid.to_owned(),
                sub_appid: (appid != sp_appid).then(|| appid.to_owned()),
            }),
            ..provider
        })
    }

    /// The sub-merchant an order is paid to: the order's own (kept when the order was made).
    fn order_sub_mchid(order: &Order) -> Result<Option<wxpay::ids::SubMchid>, Error> {
        Ok(order
            .sub_mchid
            .as_deref()
            .map(wxpay::ids::SubMchid::try_from)
            .transpose()?)
    }

    /// The v2 `sub_mch_id` (and `sub_appid`) of a sub-merchant's order.
    fn v2_sub_merchant(&self, order: &Order) -> Result<Option<SubMerchant>, Error> {
        let Some(sub_mchid) = Self::order_sub_mchid(order)? else {
            return Ok(None);
        };
        let mut sub = SubMerchant::new(sub_mchid);
        if let Some(sub_appid) = self.order_sub_appid(order) {
            sub = sub.with_sub_appid(wxpay::ids::AppId::try_from(sub_appid)?);
        }
        Ok(Some(sub))
    }

    /// The `sub_appid` of a sub-merchant's order: its mini program unless that is the
    /// provider's own.
    fn order_sub_appid(&self, order: &Order) -> Option<String> {
        (self.sp_appid.as_deref() != Some(order.appid.as_str())).then(|| order.appid.clone())
    }

    /// The payment notify URL of an API version: the merchant's own
    /// (`/notify/{mchid}/{v2,v3}/pay`), since a v3 notification can only be decrypted with its
    /// merchant's APIv3 key.
    #[must_use]
    pub fn pay_notify_url(&self, version: ApiVersion) -> String {
        format!(
            "{}/notify/{}/{}/pay",
            self.notify_base,
            self.mchid,
            version.as_str()
        )
    }

    /// The refund notify URL of an API version (the merchant's own, as the payment one).
    #[must_use]
    pub fn refund_notify_url(&self, version: ApiVersion) -> String {
        format!(
            "{}/notify/{}/{}/refund",
            self.notify_base,
            self.mchid,
            version.as_str()
        )
    }

    /// Asks WeChat for a prepay_id for the order, with the order's API. Sending the same order
    /// again gives a prepay for the same out_trade_no (a new one after the old expired).
    ///
    /// # Errors
    /// [`Error`] from WeChat or the transport.
    pub async fn prepay(&self, order: &Order) -> Result<String, Error> {
        let expire = OffsetDateTime::from_unix_timestamp(order.expires_at / 1000)
            .map_err(|e| Error::InvalidRequest(format!("expires_at: {e}")))?;
        let out_trade_no = OutTradeNo::try_from(&order.out_trade_no)?;
        let openid = OpenId::try_from(&order.openid)?;
        let sub_mchid = Self::order_sub_mchid(order)?;
        match (order.api_version, sub_mchid) {
            (ApiVersion::V3, Some(sub_mchid)) => {
                use wxpay::v3::models::{PartnerPayer, PartnerPrepayFields, PartnerPrepayRequest};
                let sub_appid = self
                    .order_sub_appid(order)
                    .map(wxpay::ids::AppId::try_from)
                    .transpose()?;
                let payer = if sub_appid.is_some() {
                    PartnerPayer::SubOpenid(openid)
                } else {
                    PartnerPayer::SpOpenid(openid)
                };
                let mut request = PartnerPrepayRequest::jsapi(PartnerPrepayFields {
                    sub_mchid,
                    sub_appid,
                    description: order.description.clone(),
                    out_trade_no,
                    total: Fen::new(order.amount_fen),
                    payer,
                    notify_url: self.pay_notify_url(ApiVersion::V3),
                });
                request.time_expire = Some(expire);
                request.scene_info = Some(SceneInfo {
                    payer_client_ip: order.client_ip.clone(),
                    device_id: None,
                });
                Ok(self.v3.partner_jsapi_prepay(&request).await?.prepay_id)
            }
            (ApiVersion::V3, None) => {
                let mut request = PrepayRequest::jsapi(PrepayFields {
                    description: order.description.clone(),
                    out_trade_no,
                    total: Fen::new(order.amount_fen),
                    openid,
                    notify_url: self.pay_notify_url(ApiVersion::V3),
                });
                request.time_expire = Some(expire);
                request.scene_info = Some(SceneInfo {
                    payer_client_ip: order.client_ip.clone(),
                    device_id: None,
                });
                Ok(self.v3.jsapi_prepay(&request).await?.prepay_id)
            }
            (ApiVersion::V2, _) => {
                let mut request = UnifiedOrderRequest::jsapi(UnifiedOrderFields {
                    body: order.description.clone(),
                    out_trade_no,
                    total_fee: Fen::new(order.amount_fen),
                    spbill_create_ip: order.client_ip.clone(),
                    notify_url: self.pay_notify_url(ApiVersion::V2),
                    openid,
                });
                request.time_expire = Some(expire);
                if let Some(sub) = self.v2_sub_merchant(order)? {
                    // The sub-merchant's own mini program: its buyer is a `sub_openid`.
                    let own_app = sub.sub_appid.is_some();
                    request = request.with_sub_merchant(sub);
                    if own_app {
                        request = request.with_sub_openid();
                    }
                }
                Ok(self.v2.unified_order(&request).await?.prepay_id)
            }
        }
    }

    /// The `wx.requestPayment` object for a prepay of an order (without `appId`, which the mini
    /// program does not pass), signed for the order's mini program.
    ///
    /// # Errors
    /// [`Error::Crypto`] if signing fails.
    pub fn request_payment(&self, order: &Order, prepay_id: &str) -> Result<RequestPayment, Error> {
        // A sub-merchant's order is signed with the provider's key over the appid that pays
        // (the order's mini program): the provider's clients are bound to `sp_appid`.
        let partner = order.sub_mchid.is_some();
        let mut params = match order.api_version {
            ApiVersion::V3 if partner => {
                use wxpay::v3::models::PayingApp;
                let app = match self.order_sub_appid(order) {
                    Some(sub_appid) => {
                        PayingApp::SubMerchant(wxpay::ids::AppId::try_from(sub_appid)?)
                    }
                    None => PayingApp::Provider,
                };
                self.v3.partner_request_payment(&app, prepay_id)?
            }
            ApiVersion::V3 => self.v3.request_payment(prepay_id)?,
            ApiVersion::V2 if partner => self
                .v2
                .for_app(&order.appid)
                .request_payment(prepay_id, OffsetDateTime::now_utc().unix_timestamp()),
            ApiVersion::V2 => self
                .v2
                .request_payment(prepay_id, OffsetDateTime::now_utc().unix_timestamp()),
        };
        params.app_id = None;
        Ok(params)
    }

    /// Asks WeChat for the order's state, with the order's API.
    ///
    /// # Errors
    /// [`Error`] from WeChat or the transport (an unknown order is [`TradeReport::NotFound`]).
    pub async fn query(&self, order: &Order) -> Result<TradeReport, Error> {
        let out_trade_no = OutTradeNo::try_from(&order.out_trade_no)?;
        let sub_mchid = Self::order_sub_mchid(order)?;
        match order.api_version {
            ApiVersion::V3 => {
                let answer = match &sub_mchid {
                    Some(sub) => self
                        .v3
                        .partner_query_by_out_trade_no(sub, &out_trade_no)
                        .await
                        .map(|t| {
                            let report = PaymentReport::from_v3_partner(&t, ReportSource::Query);
                            (t.trade_state, report)
                        }),
                    None => self.v3.query_by_out_trade_no(&out_trade_no).await.map(|t| {
                        let report = PaymentReport::from_v3(&t, ReportSource::Query);
                        (t.trade_state, report)
                    }),
                };
                match answer {
                    Ok((state, report)) => Ok(match state {
                        TradeState::Success | TradeState::Refund => TradeReport::Paid(report),
                        TradeState::NotPay | TradeState::UserPaying | TradeState::Accept => {
                            TradeReport::Pending
                        }
                        TradeState::Closed => TradeReport::Closed,
                        TradeState::PayError => TradeReport::PayError,
                        other => TradeReport::Other(other.as_str().to_owned()),
                    }),
                    Err(Error::Api(ApiError::V3 { code, .. }))
                        if code.as_str() == "ORDER_NOT_EXIST"
                            || code.as_str() == "RESOURCE_NOT_EXISTS" =>
                    {
                        Ok(TradeReport::NotFound)
                    }
                    Err(e) => Err(e),
                }
            }
            ApiVersion::V2 => {
                let mut request = OrderQueryRequest::by_out_trade_no(out_trade_no);
                if let Some(sub) = self.v2_sub_merchant(order)? {
                    request = request.with_sub_merchant(sub);
                }
                match self.v2.order_query(&request).await {
                    Ok(r) => {
                        use wxpay::v2::models::TradeState as V2;
                        Ok(match r.trade_state {
                            V2::Success | V2::Refund => {
                                TradeReport::Paid(PaymentReport::from_v2_query(&r))
                            }
                            V2::NotPay | V2::UserPaying | V2::Accept => TradeReport::Pending,
                            V2::Closed => TradeReport::Closed,
                            V2::PayError => TradeReport::PayError,
                            other => TradeReport::Other(other.as_str().to_owned()),
                        })
                    }
                    Err(Error::Api(ApiError::V2Business { err_code, .. }))
                        if err_code.as_str() == "ORDERNOTEXIST" =>
                    {
                        Ok(TradeReport::NotFound)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Closes the order at WeChat, with the order's API. An order WeChat never saw counts as
    /// closed.
    ///
    /// # Errors
    /// [`Error`] from WeChat (e.g. the order is paid) or the transport.
    pub async fn close(&self, order: &Order) -> Result<(), Error> {
        let out_trade_no = OutTradeNo::try_from(&order.out_trade_no)?;
        let sub_mchid = Self::order_sub_mchid(order)?;
        match order.api_version {
            ApiVersion::V3 => match match &sub_mchid {
                Some(sub) => self.v3.partner_close(sub, &out_trade_no).await,
                None => self.v3.close(&out_trade_no).await,
            } {
                Err(Error::Api(ApiError::V3 { code, .. }))
                    if code.as_str() == "ORDER_NOT_EXIST" =>
                {
                    Ok(())
                }
                other => other,
            },
            ApiVersion::V2 => match self
                .v2
                .close_order(&match self.v2_sub_merchant(order)? {
                    Some(sub) => CloseOrderRequest::new(out_trade_no).with_sub_merchant(sub),
                    None => CloseOrderRequest::new(out_trade_no),
                })
                .await
            {
                Ok(_) => Ok(()),
                Err(Error::Api(ApiError::V2Business { err_code, .. }))
                    if matches!(err_code.as_str(), "ORDERNOTEXIST" | "ORDERCLOSED") =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Sends the refund to WeChat with the order's API (v2 over mutual TLS).
    ///
    /// # Errors
    /// [`Error`] from WeChat or the transport.
    pub async fn refund(&self, order: &Order, refund: &Refund) -> Result<RefundReport, Error> {
        let wechat = self;
        let sub_mchid = Self::order_sub_mchid(order)?;
        match refund.api_version {
            ApiVersion::V3 => {
                let mut request = V3RefundRequest::new(V3RefundFields {
                    target: RefundTarget::OutTradeNo(OutTradeNo::try_from(&order.out_trade_no)?),
                    out_refund_no: OutRefundNo::try_from(&refund.out_refund_no)?,
                    refund: Fen::new(refund.amount_fen),
                    total: Fen::new(order.amount_fen),
                });
                request.reason.clone_from(&refund.reason);
                request.notify_url = Some(wechat.refund_notify_url(ApiVersion::V3));
                let answer = match sub_mchid {
                    Some(sub_mchid) => {
                        let request = wxpay::v3::models::PartnerRefundRequest {
                            sub_mchid,
                            refund: request,
                        };
                        wechat.v3.partner_refund(&request).await?
                    }
                    None => wechat.v3.refund(&request).await?,
                };
                Ok(RefundReport::Found {
                    status: RefundStatus::from_wechat(answer.status.as_str())
                        .ok_or_else(|| unknown_status(answer.status.as_str()))?,
                    success_at: answer.success_time.map(unix_ms),
                    amount_fen: answer.amount.refund,
                    refund_id: answer.refund_id,
                })
            }
            ApiVersion::V2 => {
                let mut request = V2RefundRequest::new(V2RefundFields {
                    id: OrderId::OutTradeNo(OutTradeNo::try_from(&order.out_trade_no)?),
                    out_refund_no: OutRefundNo::try_from(&refund.out_refund_no)?,
                    total_fee: Fen::new(order.amount_fen),
                    refund_fee: Fen::new(refund.amount_fen),
                });
                request.refund_desc.clone_from(&refund.reason);
                request.notify_url = Some(wechat.refund_notify_url(ApiVersion::V2));
                if let Some(sub) = wechat.v2_sub_merchant(order)? {
                    request = request.with_sub_merchant(sub);
                }
                let answer = wechat.v2.refund(&request).await?;
                // v2 answers "accepted"; the state comes by notification or query.
                Ok(RefundReport::Found {
                    refund_id: answer.refund_id,
                    status: RefundStatus::Processing,
                    success_at: None,
                    amount_fen: answer.refund_fee.get(),
                })
            }
        }
    }

    /// Asks WeChat about a refund, with the refund's API; `self` are the clients of the refund's
    /// order ([`crate::registry::Registry::for_order`]: a sub-merchant's refund is asked for with
    /// its `sub_mchid`).
    ///
    /// # Errors
    /// [`Error`] from WeChat or the transport (an unknown refund is [`RefundReport::NotFound`]).
    pub async fn query_refund(&self, refund: &Refund) -> Result<RefundReport, Error> {
        let wechat = self;
        let out_refund_no = OutRefundNo::try_from(&refund.out_refund_no)?;
        let sub_mchid = self
            .partner
            .as_ref()
            .map(|p| wxpay::ids::SubMchid::try_from(p.sub_mchid.as_str()))
            .transpose()?;
        match refund.api_version {
            ApiVersion::V3 => match match &sub_mchid {
                Some(sub) => wechat.v3.partner_query_refund(sub, &out_refund_no).await,
                None => wechat.v3.query_refund(&out_refund_no).await,
            } {
                Ok(r) => Ok(RefundReport::Found {
                    status: RefundStatus::from_wechat(r.status.as_str())
                        .ok_or_else(|| unknown_status(r.status.as_str()))?,
                    success_at: r.success_time.map(unix_ms),
                    amount_fen: r.amount.refund,
                    refund_id: r.refund_id,
                }),
                Err(Error::Api(ApiError::V3 { code, .. }))
                    if matches!(code.as_str(), "RESOURCE_NOT_EXISTS" | "ORDER_NOT_EXIST") =>
                {
                    Ok(RefundReport::NotFound)
                }
                Err(e) => Err(e),
            },
            ApiVersion::V2 => {
                let mut request =
                    RefundQueryRequest::new(RefundQueryId::OutRefundNo(out_refund_no));
                if let (Some(sub_mchid), Some(route)) = (&sub_mchid, &self.partner) {
                    let mut sub = SubMerchant::new(sub_mchid.clone());
                    if let Some(sub_appid) = &route.sub_appid {
                        sub = sub.with_sub_appid(wxpay::ids::AppId::try_from(sub_appid.as_str())?);
                    }
                    request = request.with_sub_merchant(sub);
                }
                match wechat.v2.refund_query(&request).await {
                    Ok(answer) => {
                        let Some(r) = answer
                            .refunds
                            .into_iter()
                            .find(|r| r.out_refund_no == refund.out_refund_no)
                        else {
                            return Ok(RefundReport::NotFound);
                        };
                        Ok(RefundReport::Found {
                            status: RefundStatus::from_wechat(r.refund_status.as_str())
                                .ok_or_else(|| unknown_status(r.refund_status.as_str()))?,
                            success_at: r.refund_success_time.map(|t| t.unix_timestamp() * 1000),
                            amount_fen: r.refund_fee.get(),
                            refund_id: r.refund_id,
                        })
                    }
                    Err(Error::Api(ApiError::V2Business { err_code, .. }))
                        if err_code.as_str() == "REFUNDNOTEXIST" =>
                    {
                        Ok(RefundReport::NotFound)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Downloads the merchant's `ALL` trade bill of `date` (GMT+8) with the configured API.
    ///
    /// # Errors
    /// [`Error`] from WeChat or the transport.
    pub async fn trade_bill(&self, date: time::Date) -> Result<BillDownload, Error> {
        use wxpay::v2::models::{BillType, DownloadBillRequest};
        use wxpay::v3::models::{TradeBillRequest, TradeBillType};
        match self.api_version {
            ApiVersion::V3 => {
                let request = TradeBillRequest {
                    bill_date: date,
                    bill_type: TradeBillType::All,
                    gzip: true,
                };
                match self.v3.trade_bill(&request).await {
                    Ok(location) => Ok(BillDownload::Text(self.v3.download_bill(&location).await?)),
                    Err(Error::Api(ApiError::V3 { code, .. }))
                        if code.as_str() == "NO_STATEMENT_EXIST" =>
                    {
                        Ok(BillDownload::NoBill)
                    }
                    Err(Error::Api(ApiError::V3 { code, .. }))
                        if code.as_str() == "STATEMENT_CREATING" =>
                    {
                        Ok(BillDownload::NotReady)
                    }
                    Err(e) => Err(e),
                }
            }
            ApiVersion::V2 => {
                let request = DownloadBillRequest {
                    bill_date: date,
                    bill_type: BillType::All,
                    gzip: true,
                };
                match self.v2.download_bill(&request).await {
                    Ok(text) => Ok(BillDownload::Text(text)),
                    Err(e) if wxpay::v2::client::is_no_bill(&e) => Ok(BillDownload::NoBill),
                    Err(Error::Api(ApiError::V2Return { return_msg }))
                        if return_msg.eq_ignore_ascii_case("bill creating") =>
                    {
                        Ok(BillDownload::NotReady)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The API v2 key (to parse v2 notifications).
    pub(crate) fn v2_key(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.api_v2_key.expose_secret()
    }
}

fn unknown_status(name: &str) -> Error {
    Error::Decode(wxpay::DecodeError::invalid(
        "refund status",
        format!("unknown status {name:?}"),
    ))
}

/// Whether WeChat refused the refund for good (it was not created, and sending it again would be
/// refused again). Transport failures, signature or decoding failures of an answer (the refund
/// may exist), system errors, rate limits, an empty balance and our own signing errors are not.
#[must_use]
pub fn is_definitive_refusal(err: &Error) -> bool {
    match err {
        // Refused before anything was sent.
        Error::InvalidRequest(_) => true,
        Error::Api(ApiError::V3 { status, code, .. }) => {
            (400..500).contains(status)
                && *status != 429
                && !matches!(
                    code.as_str(),
                    "SYSTEM_ERROR"
                        | "FREQUENCY_LIMITED"
                        | "RATELIMIT_EXCEEDED"
                        | "NOT_ENOUGH"
                        | "SIGN_ERROR"
                        | "NO_AUTH"
                )
        }
        Error::Api(ApiError::V2Business { err_code, .. }) => !matches!(
            err_code.as_str(),
            "SYSTEMERROR"
                | "BIZERR_NEED_RETRY"
                | "NOTENOUGH"
                | "FREQUENCY_LIMITED"
                | "INVALID_REQ_TOO_MUCH"
                | "SIGNERROR"
        ),
        _ => false,
    }
}

/// A time in Unix milliseconds (whole seconds, as WeChat's times are).
#[must_use]
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    t.unix_timestamp() * 1000
}
