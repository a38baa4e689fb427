//! WeChat as the server sees it: both payment APIs (each order is handled with the API it was
//! made with) and the mini-program API, behind one type.

use std::time::Duration;

use time::OffsetDateTime;
use wxpay::http::{BaseUrls, HttpConfig};
use wxpay::mp::client::MpClient;
use wxpay::v2::client::V2Client;
use wxpay::v2::models::{
    CloseOrderRequest, OrderQueryRequest, UnifiedOrderFields, UnifiedOrderRequest,
};
use wxpay::v3::client::V3Client;
use wxpay::v3::models::{PrepayFields, PrepayRequest, SceneInfo, TradeState};
use wxpay::{ApiError, Error, Fen, OpenId, OutTradeNo, RequestPayment};

use crate::merchant::Merchant;
use crate::store::{ApiVersion, Order};

/// A prepay_id is valid for 2 hours; a new one is made when less than this remains, so that the
/// buyer has time to pay with the parameters handed out.
pub const PREPAY_RENEW_AFTER_MS: i64 = (2 * 3600 - 10 * 60) * 1000;

/// What WeChat says about an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TradeReport {
    /// WeChat does not know the order (it never reached WeChat).
    NotFound,
    /// Not paid yet (or still being paid).
    Pending,
    /// Paid (or paid and refunded since).
    Paid {
        /// WeChat's transaction id.
        transaction_id: String,
        /// The amount in fen.
        amount_fen: u64,
        /// The payer.
        payer_openid: Option<String>,
        /// When (Unix milliseconds).
        paid_at: Option<i64>,
        /// The appid WeChat reports (v3 always, v2 when present).
        appid: Option<String>,
        /// The merchant WeChat reports.
        mchid: Option<String>,
    },
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
            TradeReport::Paid { .. } => "SUCCESS",
            TradeReport::Closed => "CLOSED",
            TradeReport::PayError => "PAYERROR",
            TradeReport::Other(s) => s,
        }
    }
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
}

/// Where the clients go and how long they wait.
#[derive(Clone, Debug)]
pub struct WeChatEndpoints {
    /// WeChat Pay for v3 (and the mini-program API).
    pub urls: BaseUrls,
    /// WeChat Pay for v2: HTTPS to present the client certificate of `/secapi/`.
    pub v2_pay: String,
    /// Timeout of one call.
    pub timeout: Duration,
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
        let mut http = HttpConfig {
            timeout: endpoints.timeout,
            ..HttpConfig::default()
        };
        if let Some(ca) = &merchant.extra_ca_pem {
            http.extra_roots_pem.push(ca.clone());
        }
        let v3 = V3Client::new(merchant.v3_config(), &http, &endpoints.urls)?;
        let v2_urls = BaseUrls {
            pay: endpoints.v2_pay.clone(),
            mp: endpoints.urls.mp.clone(),
        };
        let v2_config = merchant
            .v2_config()
            .map_err(|e| Error::InvalidRequest(e.message))?;
        let v2 = V2Client::new(v2_config, &http, &v2_urls)?;
        let mp = MpClient::new(merchant.mp_config(), &http, &endpoints.urls)?;
        Ok(WeChat {
            v3,
            v2,
            mp,
            api_version,
            notify_base: notify_base.trim_end_matches('/').to_owned(),
            appid: merchant.appid.clone(),
            mchid: merchant.mchid.clone(),
            api_v2_key: merchant.api_v2_key.clone(),
        })
    }

    /// The payment notify URL of an API version.
    #[must_use]
    pub fn pay_notify_url(&self, version: ApiVersion) -> String {
        format!("{}/notify/{}/pay", self.notify_base, version.as_str())
    }

    /// The refund notify URL of an API version.
    #[must_use]
    pub fn refund_notify_url(&self, version: ApiVersion) -> String {
        format!("{}/notify/{}/refund", self.notify_base, version.as_str())
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
        match order.api_version {
            ApiVersion::V3 => {
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
            ApiVersion::V2 => {
                let mut request = UnifiedOrderRequest::jsapi(UnifiedOrderFields {
                    body: order.description.clone(),
                    out_trade_no,
                    total_fee: Fen::new(order.amount_fen),
                    spbill_create_ip: order.client_ip.clone(),
                    notify_url: self.pay_notify_url(ApiVersion::V2),
                    openid,
                });
                request.time_expire = Some(expire);
                Ok(self.v2.unified_order(&request).await?.prepay_id)
            }
        }
    }

    /// The `wx.requestPayment` object for a prepay of an order (without `appId`, which the mini
    /// program does not pass).
    ///
    /// # Errors
    /// [`Error::Crypto`] if signing fails.
    pub fn request_payment(
        &self,
        version: ApiVersion,
        prepay_id: &str,
    ) -> Result<RequestPayment, Error> {
        let mut params = match version {
            ApiVersion::V3 => self.v3.request_payment(prepay_id)?,
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
        match order.api_version {
            ApiVersion::V3 => match self.v3.query_by_out_trade_no(&out_trade_no).await {
                Ok(t) => Ok(match t.trade_state {
                    TradeState::Success | TradeState::Refund => TradeReport::Paid {
                        transaction_id: t.transaction_id.unwrap_or_default(),
                        amount_fen: t.amount.total,
                        payer_openid: t.payer.map(|p| p.openid),
                        paid_at: t.success_time.map(unix_ms),
                        appid: Some(t.appid),
                        mchid: Some(t.mchid),
                    },
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
            },
            ApiVersion::V2 => {
                match self
                    .v2
                    .order_query(&OrderQueryRequest::by_out_trade_no(out_trade_no))
                    .await
                {
                    Ok(r) => {
                        use wxpay::v2::models::TradeState as V2;
                        Ok(match r.trade_state {
                            V2::Success | V2::Refund => TradeReport::Paid {
                                transaction_id: r.transaction_id.unwrap_or_default(),
                                amount_fen: r.total_fee.map_or(0, Fen::get),
                                payer_openid: r.openid,
                                paid_at: r.time_end.map(|t| t.unix_timestamp() * 1000),
                                appid: None,
                                mchid: None,
                            },
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
        match order.api_version {
            ApiVersion::V3 => match self.v3.close(&out_trade_no).await {
                Err(Error::Api(ApiError::V3 { code, .. }))
                    if code.as_str() == "ORDER_NOT_EXIST" =>
                {
                    Ok(())
                }
                other => other,
            },
            ApiVersion::V2 => match self
                .v2
                .close_order(&CloseOrderRequest::new(out_trade_no))
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

    /// The API v2 key (to parse v2 notifications).
    pub(crate) fn v2_key(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.api_v2_key.expose_secret()
    }
}

/// A time in Unix milliseconds (whole seconds, as WeChat's times are).
#[must_use]
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    t.unix_timestamp() * 1000
}
