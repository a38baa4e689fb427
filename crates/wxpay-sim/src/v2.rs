//! API v2 as `api.mch.weixin.qq.com` serves it (§A): XML in and out, every merchant signature
//! verified in the `sign_type` the request declares, every successful answer signed the same way
//! with a fresh `nonce_str`, protocol failures as unsigned `return_code=FAIL`, business failures
//! as signed `result_code=FAIL` with an `err_code`. `/secapi/pay/refund` requires the merchant's
//! TLS client certificate. `downloadbill` answers the bill as text or gzip, unsigned.
//!
//! The refund notification of v2 refunds (encrypted `req_info`) is registered with the state by
//! [`router`]; the payment notification is sent by the core (`crate::notify`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use time::Date;
use wxpay::v2::models::RefundAccount;
use wxpay::v2::notify::encrypt_req_info;
use wxpay::v2::sign::{constant_time_eq_ignore_case, sign_map};
use wxpay::v2::xml::{self, XmlError};
use wxpay::v2::{ErrCode, SignType, XmlMap};
use wxpay::validate::{V2_NOTIFY_URL_MAX, notify_url as validate_notify_url};
use wxpay::{Fen, OutRefundNo, OutTradeNo};

use crate::app::{AppState, MerchantAccount};
use crate::bills::{self, TradeBillType};
use crate::notify::{DeliveryKind, DeliverySigning, NewDelivery};
use crate::server::ClientCertificate;
use crate::state::{
    ApiVersion, NewOrder, NewRefund, Order, OrderError, OrderRef, Refund, RefundStatus, TradeState,
    TradeType, cst_date, dashed_time, parse_v2_time, v2_time,
};

/// How far back `downloadbill` serves bills, in days (3 months).
pub const BILL_HISTORY_DAYS: i64 = 92;
/// At most this many refunds in one `refundquery` answer; `offset` pages through the rest.
pub const REFUNDS_PER_PAGE: usize = 20;
/// Where a v2 refund sends the money, as `refund_recv_accout` says.
pub const REFUND_RECEIVER: &str = "支付用户零钱";
/// `return_msg` of a refund without the merchant's client certificate.
pub const NO_CLIENT_CERTIFICATE: &str =
    "证书错误：此接口需要双向证书，请使用商户API证书(apiclient_cert.p12)发起请求";
/// `return_msg` of a refund with a certificate that is not this merchant's.
pub const WRONG_CLIENT_CERTIFICATE: &str = "证书错误：请求所用的证书不是该商户号的API证书";

const XML_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The v2 router (state applied). Also registers the v2 refund notification builder.
pub fn router(state: Arc<AppState>) -> Router {
    state.set_v2_refund_notifier(Arc::new(refund_notification));
    Router::new()
        .route("/pay/unifiedorder", endpoint(post(unified_order)))
        .route("/pay/orderquery", endpoint(post(order_query)))
        .route("/pay/closeorder", endpoint(post(close_order)))
        .route("/secapi/pay/refund", endpoint(post(refund)))
        .route("/pay/refundquery", endpoint(post(refund_query)))
        .route("/pay/downloadbill", endpoint(post(download_bill)))
        .with_state(state)
}

fn endpoint(route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    route.fallback(|| async { return_fail("请使用post方法").into_response() })
}

// ---------------------------------------------------------------------------------------------
// Answers

fn xml_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, XML_CONTENT_TYPE)], body).into_response()
}

/// An answer that ends a call early (a failure). Boxed: a `Response` is large.
struct Reject(Box<Response>);

impl From<Response> for Reject {
    fn from(response: Response) -> Self {
        Reject(Box::new(response))
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// A protocol failure: `return_code=FAIL` and the message, unsigned (§A.2).
fn return_fail(msg: &str) -> Reject {
    bill_fail(msg, None)
}

/// A failure with an `error_code` (the `downloadbill` shape).
fn bill_fail(msg: &str, error_code: Option<&str>) -> Reject {
    let mut map = XmlMap::new();
    map.insert("return_code".into(), "FAIL".into());
    map.insert("return_msg".into(), msg.into());
    if let Some(code) = error_code {
        map.insert("error_code".into(), code.into());
    }
    xml_response(xml::encode(&map).unwrap_or_default()).into()
}

/// Which error wording a call uses: the payment calls, or `downloadbill` (whose failures are
/// always unsigned `return_code=FAIL` with short English messages).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Pay,
    Bill,
}

/// The sub-merchant a provider-mode request is for.
#[derive(Clone, Copy)]
struct Sub<'a> {
    sub_mch_id: &'a str,
    sub_appid: Option<&'a str>,
}

/// A request whose signature verified: its parameters and the `sign_type` it declared
/// (answers are signed with it).
struct Call<'a> {
    state: &'a AppState,
    merchant: Arc<MerchantAccount>,
    params: XmlMap,
    sign_type: SignType,
}

type Answer = Result<Response, Reject>;

impl<'a> Call<'a> {
    /// Decodes and verifies a request the way WeChat does, before reading anything else.
    fn verify(state: &'a AppState, body: &[u8], dialect: Dialect) -> Result<Self, Reject> {
        let fail = |pay: &str, bill: &str| match dialect {
            Dialect::Pay => return_fail(pay),
            Dialect::Bill => bill_fail(bill, None),
        };
        if body.trim_ascii().is_empty() {
            return Err(fail("post数据为空", "missing parameter"));
        }
        let params = match xml::decode(body) {
            Ok(params) => params,
            Err(XmlError::NotUtf8) => {
                return Err(fail("编码格式错误，请使用UTF-8编码", "data format error"));
            }
            Err(XmlError::TooLarge(_)) => return Err(fail("post数据过大", "data format error")),
            Err(_) => return Err(fail("XML格式错误", "data format error")),
        };
        let get = |key: &str| {
            params
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        for key in ["appid", "mch_id", "nonce_str", "sign"] {
            if get(key).is_none() {
                return Err(fail(&format!("缺少参数{key}"), "missing parameter"));
            }
        }
        let Ok(sign_type) = get("sign_type").unwrap_or("MD5").parse::<SignType>() else {
            return Err(fail(
                "sign_type参数错误，只能为MD5或HMAC-SHA256",
                "data format error",
            ));
        };
        if get("nonce_str").is_some_and(|n| n.chars().count() > 32) {
            return Err(fail("nonce_str参数长度有误", "data format error"));
        }
        let Some(merchant) = get("mch_id").and_then(|id| state.merchant_account(id)) else {
            return Err(fail("mch_id参数错误，商户号不存在", "invalid mch_id"));
        };
        let m = &merchant.credentials;
        // The declared type decides the algorithm: a signature of the other type is wrong.
        let expected = sign_map(&params, &m.api_v2_key, sign_type);
        if !constant_time_eq_ignore_case(&expected, get("sign").unwrap_or_default()) {
            return Err(fail("签名错误", "SIGN ERROR"));
        }
        let mchid = m.mchid.clone();
        let call = Call {
            state,
            merchant,
            params,
            sign_type,
        };
        if !call
            .get("appid")
            .is_some_and(|appid| state.is_bound(appid, &mchid))
        {
            return Err(match dialect {
                Dialect::Pay => {
                    call.business_error(&ErrCode::AppidMchidNotMatch, "appid和mch_id不匹配")
                }
                Dialect::Bill => bill_fail("appid and mch_id do not match", None),
            });
        }
        Ok(call)
    }

    /// Provider mode (服务商): with `sub_mch_id` the request is the provider's (`appid`/`mch_id`)
    /// for that sub-merchant, which must be registered under it (else `受理关系不存在`), with an
    /// optional `sub_appid` that must be the one bound to it (else `sub_mch_id与sub_appid不匹配`);
    /// both are protocol failures, as WeChat answers them. `sub_appid` or `sub_openid` without
    /// `sub_mch_id` is `受理机构必须传入sub_mch_id`. `None`: a direct request.
    fn sub(&self) -> Result<Option<Sub<'_>>, Reject> {
        let Some(sub_mch_id) = self.get("sub_mch_id") else {
            if self.get("sub_appid").is_some() || self.get("sub_openid").is_some() {
                return Err(return_fail("受理机构必须传入sub_mch_id"));
            }
            return Ok(None);
        };
        let bound = self
            .state
            .partner
            .sub_merchant(self.merchant.mchid(), sub_mch_id)
            .ok_or_else(|| return_fail("受理关系不存在"))?;
        let sub_appid = self.get("sub_appid");
        if let Some(a) = sub_appid
            && bound.as_deref() != Some(a)
        {
            return Err(return_fail("sub_mch_id与sub_appid不匹配"));
        }
        Ok(Some(Sub {
            sub_mch_id,
            sub_appid,
        }))
    }

    /// Whether the order is this request's: the merchant's, and a partner order of the
    /// request's `sub_mch_id` when it has one, else a direct order.
    fn owns(&self, sub: Option<&Sub<'_>>, order: &Order) -> bool {
        order.mchid == self.merchant.mchid()
            && crate::partner::visible_to(
                self.state,
                sub.map(|s| s.sub_mch_id),
                &order.out_trade_no,
            )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, Reject> {
        self.get(key)
            .ok_or_else(|| self.business_error(&ErrCode::LackParams, &format!("缺少参数{key}")))
    }

    fn param_error(&self, des: &str) -> Reject {
        self.business_error(&ErrCode::ParamError, des)
    }

    /// An amount in fen: digits only, at least 1, at most an `Int`.
    fn amount(&self, key: &str) -> Result<u64, Reject> {
        let text = self.require(key)?;
        match text.parse::<Fen>() {
            Ok(fen) if fen.get() >= 1 && fen.get() <= i32::MAX as u64 => Ok(fen.get()),
            _ => Err(self.param_error(&format!("{key}参数格式错误，须为大于0的整数（单位为分）"))),
        }
    }

    /// An optional text of at most `max` characters.
    fn text(&self, key: &str, max: usize) -> Result<Option<&str>, Reject> {
        match self.get(key) {
            Some(v) if v.chars().count() > max => {
                Err(self.param_error(&format!("{key}参数长度有误，最长{max}个字符")))
            }
            other => Ok(other),
        }
    }

    /// A signed answer with `result_code=SUCCESS` and `fields`.
    fn success(&self, fields: XmlMap) -> Response {
        self.signed("SUCCESS", fields)
    }

    /// A signed answer with `result_code=FAIL`, `err_code` and `err_code_des`.
    fn business_error(&self, err_code: &ErrCode, des: &str) -> Reject {
        let mut fields = XmlMap::new();
        fields.insert("err_code".into(), err_code.as_str().to_owned());
        fields.insert("err_code_des".into(), des.to_owned());
        self.signed("FAIL", fields).into()
    }

    fn order_error(&self, e: &OrderError) -> Reject {
        let (code, des) = order_error_code(e);
        self.business_error(&code, &des)
    }

    fn signed(&self, result_code: &str, mut fields: XmlMap) -> Response {
        let m = &self.merchant.credentials;
        fields.insert("return_code".into(), "SUCCESS".into());
        fields.insert("return_msg".into(), "OK".into());
        fields.insert(
            "appid".into(),
            self.get("appid").unwrap_or(&m.appid).to_owned(),
        );
        fields.insert("mch_id".into(), m.mchid.clone());
        // Provider mode: answers echo the sub-merchant and its mini program.
        for key in ["sub_mch_id", "sub_appid"] {
            if let Some(v) = self.get(key) {
                fields.insert(key.into(), v.to_owned());
            }
        }
        fields.insert("nonce_str".into(), wxpay::nonce::nonce());
        fields.insert("result_code".into(), result_code.into());
        let sign = sign_map(&fields, &m.api_v2_key, self.sign_type);
        fields.insert("sign".into(), sign);
        match xml::encode(&fields) {
            Ok(body) => xml_response(body),
            Err(_) => return_fail("系统错误").into_response(),
        }
    }
}

/// The v2 `err_code` and `err_code_des` of a business rule refusal.
fn order_error_code(e: &OrderError) -> (ErrCode, String) {
    let code = match e {
        // Real v2 answers report a reused number as INVALID_REQUEST `201 商户订单号重复` (many
        // captures), not the OUT_TRADE_NO_USED of the API table.
        OrderError::OutTradeNoUsed => ErrCode::InvalidRequest,
        OrderError::OrderPaid => ErrCode::OrderPaid,
        OrderError::OrderClosed => ErrCode::OrderClosed,
        OrderError::OrderNotExist => ErrCode::OrderNotExist,
        OrderError::RefundNotExist => ErrCode::RefundNotExist,
        OrderError::OrderNotPaid => ErrCode::TradeStateError,
        // WeChat reports a refund over what is left as a generic refund ERROR with the reason.
        OrderError::RefundExceedsRemaining { .. } | OrderError::TooManyRefunds => ErrCode::Error,
        OrderError::OutRefundNoUsed => ErrCode::InvalidRequest,
        _ => ErrCode::ParamError,
    };
    let des = match e {
        OrderError::OrderNotExist => "此交易订单号不存在".to_owned(),
        OrderError::OutTradeNoUsed => "201 商户订单号重复".to_owned(),
        OrderError::RefundNotExist => "退款订单查询失败".to_owned(),
        OrderError::RefundExceedsRemaining { remaining: 0 } => "订单已全额退款".to_owned(),
        other => other.to_string(),
    };
    (code, des)
}

fn finish(answer: Answer) -> Response {
    answer.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------------
// unifiedorder

async fn unified_order(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match Call::verify(&state, &body, Dialect::Pay) {
        Ok(call) => finish(unified_order_answer(&call)),
        Err(answer) => answer.into_response(),
    }
}

fn unified_order_answer(call: &Call<'_>) -> Answer {
    let state = call.state;
    let sub = call.sub()?;
    let description = call.require("body")?;
    if description.chars().count() > 128 {
        return Err(call.param_error("body参数长度有误，最长128个字符"));
    }
    let out_trade_no = call.require("out_trade_no")?;
    if let Err(e) = OutTradeNo::try_from(out_trade_no).map_err(wxpay::Error::from) {
        return Err(call.param_error(&format!("out_trade_no参数错误：{}", reason(&e))));
    }
    let total = call.amount("total_fee")?;
    let ip = call.require("spbill_create_ip")?;
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(call.param_error("spbill_create_ip参数格式错误，须为IPv4或IPv6地址"));
    }
    let notify_url = call.require("notify_url")?;
    if let Err(e) = validate_notify_url(notify_url, V2_NOTIFY_URL_MAX) {
        return Err(call.param_error(&format!("notify_url参数错误：{}", reason(&e))));
    }
    let trade_type_text = call.require("trade_type")?;
    let trade_type = TradeType::parse(trade_type_text)
        .ok_or_else(|| call.param_error("trade_type参数错误，只能为JSAPI、NATIVE、APP或MWEB"))?;
    if let Some(fee_type) = call.get("fee_type")
        && fee_type != "CNY"
    {
        return Err(call.param_error("fee_type参数错误，只支持CNY"));
    }
    let attach = call.text("attach", 127)?;
    call.text("detail", 6000)?;
    call.text("device_info", 32)?;
    call.text("goods_tag", 32)?;
    call.text("scene_info", 256)?;
    if let Some(limit_pay) = call.get("limit_pay")
        && limit_pay != "no_credit"
    {
        return Err(call.param_error("limit_pay参数错误，只能为no_credit"));
    }
    let appid = call.get("appid").unwrap_or_default();
    let (openid, sub_payer) = match sub {
        None => match (trade_type, call.get("openid")) {
            (TradeType::Jsapi, None) => {
                return Err(call.business_error(&ErrCode::LackParams, "JSAPI支付必须传openid"));
            }
            (_, openid) => (openid.unwrap_or_default(), false),
        },
        Some(sub) => partner_payer(call, trade_type, sub)?,
    };
    if !sub_payer && !openid.is_empty() && !state.has_user(appid, openid) {
        return Err(call.param_error("appid和openid不匹配"));
    }
    let now = state.now();
    let time_expire = match call.get("time_expire") {
        None => None,
        Some(text) => {
            let t = parse_v2_time(text)
                .ok_or_else(|| call.param_error("time_expire时间格式有误，格式为yyyyMMddHHmmss"))?;
            // Less than a minute is moved up to a minute (§A.4, newer docs).
            Some(t.max(now + 60))
        }
    };
    if let Some(start) = call.get("time_start")
        && parse_v2_time(start).is_none()
    {
        return Err(call.param_error("time_start时间格式有误，格式为yyyyMMddHHmmss"));
    }
    // Numbers are kept simulator-wide: another merchant's number is taken too; a provider's
    // numbers are shared by its own orders and all its sub-merchants' (unique per mch_id).
    let facts = sub.map(|s| crate::partner::PartnerOrder {
        sub_mchid: s.sub_mch_id.to_owned(),
        sub_appid: s.sub_appid.map(str::to_owned),
        sub_payer,
    });
    if state.store.order(out_trade_no).is_some_and(|o| {
        o.mchid != call.merchant.mchid() || state.partner.order(out_trade_no) != facts
    }) {
        return Err(call.order_error(&OrderError::OutTradeNoUsed));
    }
    let (order, _) = state
        .store
        .create_or_reuse_order(&NewOrder {
            appid: call.get("appid").unwrap_or_default(),
            mchid: call.merchant.mchid(),
            out_trade_no,
            openid,
            description,
            attach,
            device_info: call.get("device_info"),
            notify_url,
            total,
            version: ApiVersion::V2,
            sign_type: call.sign_type,
            trade_type,
            time_expire,
        })
        .map_err(|e| call.order_error(&e))?;
    if let Some(facts) = &facts {
        state.partner.record_order(out_trade_no, facts);
    }
    let mut fields = XmlMap::new();
    fields.insert("trade_type".into(), trade_type.as_str().into());
    fields.insert("prepay_id".into(), order.prepay_id.clone());
    if let Some(device_info) = call.get("device_info") {
        fields.insert("device_info".into(), device_info.into());
    }
    match trade_type {
        TradeType::Native => {
            fields.insert(
                "code_url".into(),
                format!("weixin://wxpay/bizpayurl?pr={}", order.prepay_id),
            );
        }
        TradeType::Mweb => {
            fields.insert(
                "mweb_url".into(),
                format!(
                    "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={}",
                    order.prepay_id
                ),
            );
        }
        TradeType::Jsapi | TradeType::App => {}
    }
    Ok(call.success(fields))
}

/// The payer of a provider-mode order: `openid` (a user of `appid`, the provider's mini
/// program) or `sub_openid` (a user of `sub_appid`, which is then required); returns the openid
/// and whether it is a `sub_openid`.
fn partner_payer<'a>(
    call: &'a Call<'_>,
    trade_type: TradeType,
    sub: Sub<'a>,
) -> Result<(&'a str, bool), Reject> {
    match (call.get("openid"), call.get("sub_openid")) {
        (Some(_), Some(_)) => Err(call.param_error("openid和sub_openid只能传其中之一")),
        (None, Some(sub_openid)) => {
            let Some(sub_appid) = sub.sub_appid else {
                return Err(
                    call.business_error(&ErrCode::LackParams, "传入sub_openid时sub_appid必填")
                );
            };
            if !crate::partner::is_user_of(call.state, sub_appid, sub_openid) {
                return Err(call.param_error("sub_appid和sub_openid不匹配"));
            }
            Ok((sub_openid, true))
        }
        (Some(openid), None) => Ok((openid, false)),
        (None, None) if trade_type == TradeType::Jsapi => {
            Err(call.business_error(&ErrCode::LackParams, "JSAPI支付必须传openid或sub_openid"))
        }
        (None, None) => Ok(("", false)),
    }
}

fn reason(e: &wxpay::Error) -> String {
    match e {
        wxpay::Error::InvalidRequest(msg) => msg.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// orderquery, closeorder

async fn order_query(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match Call::verify(&state, &body, Dialect::Pay) {
        Ok(call) => finish(order_query_answer(&call)),
        Err(answer) => answer.into_response(),
    }
}

/// The order named by `transaction_id` (which wins) or `out_trade_no`, if it is the request's
/// (see [`Call::owns`]).
fn find_order(call: &Call<'_>, sub: Option<&Sub<'_>>) -> Result<Order, Reject> {
    let store = &call.state.store;
    let order = match (call.get("transaction_id"), call.get("out_trade_no")) {
        (Some(tx), _) => store.order_by_transaction_id(tx),
        (None, Some(no)) => store.order(no),
        (None, None) => {
            return Err(
                call.business_error(&ErrCode::LackParams, "缺少参数transaction_id或out_trade_no")
            );
        }
    };
    order
        .filter(|o| call.owns(sub, o))
        .ok_or_else(|| call.order_error(&OrderError::OrderNotExist))
}

fn order_query_answer(call: &Call<'_>) -> Answer {
    let sub = call.sub()?;
    let order = find_order(call, sub.as_ref())?;
    let partner = sub.and_then(|_| call.state.partner.order(&order.out_trade_no));
    let mut f = XmlMap::new();
    f.insert("trade_state".into(), order.trade_state.as_str().into());
    f.insert(
        "trade_state_desc".into(),
        order.trade_state.description().into(),
    );
    f.insert("out_trade_no".into(), order.out_trade_no.clone());
    if let Some(attach) = &order.attach {
        f.insert("attach".into(), attach.clone());
    }
    // Real answers carry total_fee (and device_info) before payment too (captures, §A.5).
    let total = order.total.to_string();
    f.insert("total_fee".into(), total.clone());
    if let Some(device_info) = &order.device_info {
        f.insert("device_info".into(), device_info.clone());
    }
    if order.trade_state.is_paid() {
        add_payer(&mut f, &order, partner.as_ref());
        f.insert("trade_type".into(), order.trade_type.as_str().into());
        f.insert("bank_type".into(), "OTHERS".into());
        f.insert("fee_type".into(), "CNY".into());
        f.insert("cash_fee".into(), total);
        f.insert("cash_fee_type".into(), "CNY".into());
        f.insert(
            "transaction_id".into(),
            order.transaction_id.clone().unwrap_or_default(),
        );
        f.insert(
            "time_end".into(),
            order.success_time.map(v2_time).unwrap_or_default(),
        );
    }
    Ok(call.success(f))
}

async fn close_order(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match Call::verify(&state, &body, Dialect::Pay) {
        Ok(call) => finish(close_order_answer(&call)),
        Err(answer) => answer.into_response(),
    }
}

/// The payer fields of a paid order (orderquery and the payment notification): `openid` and
/// `is_subscribe`; for a partner order also `sub_openid` (when the payer was given as one; the
/// `openid` is then the payer's under the provider's appid) and `sub_is_subscribe` (when the
/// order has a `sub_appid`).
pub(crate) fn add_payer(
    f: &mut XmlMap,
    order: &Order,
    partner: Option<&crate::partner::PartnerOrder>,
) {
    match partner {
        Some(p) if p.sub_payer => {
            f.insert(
                "openid".into(),
                crate::partner::provider_openid(&order.appid, &order.openid),
            );
            f.insert("sub_openid".into(), order.openid.clone());
        }
        _ => {
            f.insert("openid".into(), order.openid.clone());
        }
    }
    f.insert("is_subscribe".into(), "N".into());
    if partner.is_some_and(|p| p.sub_appid.is_some()) {
        f.insert("sub_is_subscribe".into(), "N".into());
    }
}

fn close_order_answer(call: &Call<'_>) -> Answer {
    let sub = call.sub()?;
    let out_trade_no = call.require("out_trade_no")?;
    let store = &call.state.store;
    let order = store
        .order(out_trade_no)
        .filter(|o| call.owns(sub.as_ref(), o))
        .ok_or_else(|| call.order_error(&OrderError::OrderNotExist))?;
    // v2 tells the merchant that a closed order needs no further calls.
    if order.trade_state == TradeState::Closed {
        return Err(call.order_error(&OrderError::OrderClosed));
    }
    store
        .close_order(out_trade_no)
        .map_err(|e| call.order_error(&e))?;
    let mut f = XmlMap::new();
    f.insert("result_msg".into(), "OK".into());
    Ok(call.success(f))
}

// ---------------------------------------------------------------------------------------------
// refund, refundquery

async fn refund(
    State(state): State<Arc<AppState>>,
    certificate: Option<Extension<ClientCertificate>>,
    body: Bytes,
) -> Response {
    // The real service refuses the TLS handshake; the simulator says why in the v2 way.
    let Some(der) = certificate.and_then(|Extension(ClientCertificate(der))| der) else {
        return return_fail(NO_CLIENT_CERTIFICATE).into_response();
    };
    // The certificate must be a merchant's; which one is known once `mch_id` is read.
    if !state
        .merchant_accounts()
        .iter()
        .any(|m| m.keys.merchant_cert_der == der)
    {
        return return_fail(WRONG_CLIENT_CERTIFICATE).into_response();
    }
    match Call::verify(&state, &body, Dialect::Pay) {
        Ok(call) if call.merchant.keys.merchant_cert_der != der => {
            return_fail(WRONG_CLIENT_CERTIFICATE).into_response()
        }
        Ok(call) => finish(refund_answer(&call, &state)),
        Err(answer) => answer.into_response(),
    }
}

fn refund_answer(call: &Call<'_>, state: &Arc<AppState>) -> Answer {
    let sub = call.sub()?;
    let order = match (call.get("transaction_id"), call.get("out_trade_no")) {
        (Some(tx), _) => OrderRef::TransactionId(tx),
        (None, Some(no)) => OrderRef::OutTradeNo(no),
        (None, None) => {
            return Err(
                call.business_error(&ErrCode::LackParams, "缺少参数transaction_id或out_trade_no")
            );
        }
    };
    let out_refund_no = call.require("out_refund_no")?;
    if let Err(e) = OutRefundNo::try_from(out_refund_no).map_err(wxpay::Error::from) {
        return Err(call.param_error(&format!("out_refund_no参数错误：{}", reason(&e))));
    }
    let total = call.amount("total_fee")?;
    let amount = call.amount("refund_fee")?;
    if amount > total {
        return Err(call.param_error("refund_fee不能大于total_fee"));
    }
    if let Some(fee_type) = call.get("refund_fee_type")
        && fee_type != "CNY"
    {
        return Err(call.param_error("refund_fee_type参数错误，只支持CNY"));
    }
    let reason_text = call.text("refund_desc", 80)?;
    if let Some(account) = call.get("refund_account")
        && matches!(RefundAccount::from_code(account), RefundAccount::Unknown(_))
    {
        return Err(call.param_error("refund_account参数错误"));
    }
    let notify_url = call.get("notify_url");
    if let Some(url) = notify_url
        && let Err(e) = validate_notify_url(url, V2_NOTIFY_URL_MAX)
    {
        return Err(call.param_error(&format!("notify_url参数错误：{}", reason(&e))));
    }
    let owner = match order {
        OrderRef::TransactionId(tx) => state.store.order_by_transaction_id(tx),
        OrderRef::OutTradeNo(no) => state.store.order(no),
    };
    if owner.is_some_and(|o| !call.owns(sub.as_ref(), &o)) {
        return Err(call.order_error(&OrderError::OrderNotExist));
    }
    let (refund, created) = state
        .store
        .refund(&NewRefund {
            order,
            out_refund_no,
            amount,
            total,
            reason: reason_text,
            notify_url,
            version: ApiVersion::V2,
        })
        .map_err(|e| call.order_error(&e))?;
    if created {
        state.start_refund_processing(&refund);
    }
    let amount = refund.amount.to_string();
    let total = refund.total.to_string();
    let mut f = XmlMap::new();
    f.insert("transaction_id".into(), refund.transaction_id.clone());
    f.insert("out_trade_no".into(), refund.out_trade_no.clone());
    f.insert("out_refund_no".into(), refund.out_refund_no.clone());
    f.insert("refund_id".into(), refund.refund_id.clone());
    f.insert("refund_fee".into(), amount.clone());
    f.insert("settlement_refund_fee".into(), amount.clone());
    f.insert("total_fee".into(), total.clone());
    f.insert("settlement_total_fee".into(), total.clone());
    f.insert("fee_type".into(), "CNY".into());
    f.insert("cash_fee".into(), total);
    f.insert("cash_fee_type".into(), "CNY".into());
    f.insert("cash_refund_fee".into(), amount);
    f.insert("coupon_refund_fee".into(), "0".into());
    f.insert("coupon_refund_count".into(), "0".into());
    Ok(call.success(f))
}

async fn refund_query(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match Call::verify(&state, &body, Dialect::Pay) {
        Ok(call) => finish(refund_query_answer(&call)),
        Err(answer) => answer.into_response(),
    }
}

fn refund_query_answer(call: &Call<'_>) -> Answer {
    let sub = call.sub()?;
    let store = &call.state.store;
    let not_found = || call.order_error(&OrderError::RefundNotExist);
    // One of refund_id > out_refund_no > transaction_id > out_trade_no, in that precedence.
    let (refunds, paged): (Vec<Refund>, bool) = if let Some(id) = call.get("refund_id") {
        (
            vec![store.refund_by_refund_id(id).ok_or_else(not_found)?],
            false,
        )
    } else if let Some(no) = call.get("out_refund_no") {
        (
            vec![store.refund_by_out_refund_no(no).ok_or_else(not_found)?],
            false,
        )
    } else if let Some(tx) = call.get("transaction_id") {
        let order = store.order_by_transaction_id(tx).ok_or_else(not_found)?;
        (store.refunds_of_order(&order.out_trade_no), true)
    } else if let Some(no) = call.get("out_trade_no") {
        (store.refunds_of_order(no), true)
    } else {
        return Err(call.business_error(
            &ErrCode::LackParams,
            "缺少参数refund_id、out_refund_no、transaction_id或out_trade_no",
        ));
    };
    let first = refunds.first().ok_or_else(not_found)?;
    let order = store
        .order(&first.out_trade_no)
        .filter(|o| call.owns(sub.as_ref(), o))
        .ok_or_else(not_found)?;
    let offset = match call.get("offset") {
        None => None,
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| call.param_error("offset参数格式错误，须为非负整数"))?,
        ),
    };
    let start = offset.unwrap_or(0);
    if start >= refunds.len() {
        return Err(not_found());
    }
    let page: Vec<&Refund> = refunds
        .iter()
        .skip(start)
        .take(if paged { REFUNDS_PER_PAGE } else { usize::MAX })
        .collect();
    let mut f = XmlMap::new();
    f.insert("transaction_id".into(), first.transaction_id.clone());
    f.insert("out_trade_no".into(), order.out_trade_no.clone());
    f.insert("total_fee".into(), order.total.to_string());
    f.insert("fee_type".into(), "CNY".into());
    f.insert("cash_fee".into(), order.total.to_string());
    f.insert("refund_count".into(), page.len().to_string());
    if offset.is_some() {
        f.insert("total_refund_count".into(), refunds.len().to_string());
    }
    for (n, r) in page.iter().enumerate() {
        let mut put = |name: &str, value: String| {
            f.insert(format!("{name}_{n}"), value);
        };
        put("out_refund_no", r.out_refund_no.clone());
        put("refund_id", r.refund_id.clone());
        put("refund_channel", "ORIGINAL".into());
        put("refund_fee", r.amount.to_string());
        put("settlement_refund_fee", r.amount.to_string());
        put("coupon_refund_fee", "0".into());
        put("coupon_refund_count", "0".into());
        put("refund_status", r.status.as_v2().into());
        put(
            "refund_account",
            RefundAccount::UnsettledFunds.as_str().into(),
        );
        put("refund_recv_accout", REFUND_RECEIVER.into());
        if let Some(t) = r.success_time {
            put("refund_success_time", dashed_time(t));
        }
    }
    Ok(call.success(f))
}

// ---------------------------------------------------------------------------------------------
// downloadbill

async fn download_bill(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match Call::verify(&state, &body, Dialect::Bill) {
        Ok(call) => finish(bill_answer(&call)),
        Err(answer) => answer.into_response(),
    }
}

fn bill_answer(call: &Call<'_>) -> Answer {
    // With `sub_mch_id`, that sub-merchant's lines only.
    let only = call.sub()?.map(|s| s.sub_mch_id);
    let Some(date_text) = call.get("bill_date") else {
        return Err(bill_fail("missing parameter", None));
    };
    let format = time::macros::format_description!("[year][month][day]");
    let date = Date::parse(date_text, &format).map_err(|_| bill_fail("invalid bill_date", None))?;
    let bill_type = match call.get("bill_type").unwrap_or("ALL") {
        // The simulator has no recharge coupons, so their refund bill is always empty.
        "RECHARGE_REFUND" => return Err(no_bill()),
        other => TradeBillType::parse(other).ok_or_else(|| bill_fail("invalid bill_type", None))?,
    };
    let gzip = match call.get("tar_type") {
        None => false,
        Some("GZIP") => true,
        Some(_) => return Err(bill_fail("invalid tar_type", None)),
    };
    let now = call.state.now();
    let today = cst_date(now);
    if !bills::bill_ready(date, now) {
        return Err(bill_fail("Bill Creating", None));
    }
    if (today - date).whole_days() > BILL_HISTORY_DAYS {
        return Err(no_bill());
    }
    let mine = |o: &Order| o.mchid == call.merchant.mchid();
    // The `特约商户号` column names the sub-merchant of partner lines (`0` for direct ones).
    let sub_mchid_of = |o: &Order| {
        call.state
            .partner
            .order(&o.out_trade_no)
            .map(|p| p.sub_mchid)
    };
    let text = bills::trade_bill_text_of(
        &call.state.store,
        date,
        bill_type,
        &sub_mchid_of,
        only,
        &mine,
    )
    .map_err(|_| bill_fail("System Error", None))?
    .ok_or_else(no_bill)?;
    let answer = if gzip {
        (
            [(header::CONTENT_TYPE, "application/x-gzip")],
            bills::gzip(text.as_bytes()),
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    };
    Ok(answer)
}

fn no_bill() -> Reject {
    bill_fail("No Bill Exist", Some("20002"))
}

// ---------------------------------------------------------------------------------------------
// Refund notification

/// The v2 refund notification (§A.11) of a refund that reached a final state: the details in
/// `req_info` (a `<root>` XML encrypted with the API key), the outer XML naming the merchant
/// (and, for a sub-merchant's refund, `sub_mch_id` and `sub_appid`); `None` without a
/// `notify_url`. Built here field by field (the library's `encrypt_req_info`), so that it does
/// not depend on the library's notification struct.
fn refund_notification(state: &AppState, order: &Order, refund: &Refund) -> Option<NewDelivery> {
    let url = refund.notify_url.clone()?;
    let account = state.account_for(&order.mchid);
    let mut inner = XmlMap::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            inner.insert(k.to_owned(), v);
        }
    };
    put("transaction_id", refund.transaction_id.clone());
    put("out_trade_no", refund.out_trade_no.clone());
    put("refund_id", refund.refund_id.clone());
    put("out_refund_no", refund.out_refund_no.clone());
    put("total_fee", refund.total.to_string());
    put("settlement_total_fee", refund.total.to_string());
    put("refund_fee", refund.amount.to_string());
    let settled = if refund.status == RefundStatus::Success {
        refund.amount
    } else {
        0
    };
    put("settlement_refund_fee", settled.to_string());
    put("refund_status", refund.status.as_v2().to_owned());
    put(
        "success_time",
        refund.success_time.map(dashed_time).unwrap_or_default(),
    );
    put("refund_recv_accout", REFUND_RECEIVER.to_owned());
    put(
        "refund_account",
        RefundAccount::UnsettledFunds.as_str().to_owned(),
    );
    put("refund_request_source", "API".to_owned());
    put("cash_refund_fee", refund.amount.to_string());
    let built = xml::encode_with_root(&inner, "root")
        .map_err(|e| e.to_string())
        .and_then(|plain| {
            encrypt_req_info(&account.credentials.api_v2_key, &plain).map_err(|e| e.to_string())
        });
    let req_info = match built {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, out_refund_no = %refund.out_refund_no, "v2 refund notification not built");
            return None;
        }
    };
    let mut outer = XmlMap::new();
    outer.insert("return_code".into(), "SUCCESS".into());
    outer.insert("appid".into(), order.appid.clone());
    outer.insert("mch_id".into(), order.mchid.clone());
    outer.insert("nonce_str".into(), wxpay::nonce::nonce());
    outer.insert("req_info".into(), req_info);
    // A sub-merchant's refund also names the sub-merchant and its mini program (the outer XML
    // is not signed; `req_info` is encrypted).
    if let Some(partner) = state.partner.order(&order.out_trade_no) {
        outer.insert("sub_mch_id".into(), partner.sub_mchid.clone());
        if let Some(a) = &partner.sub_appid {
            outer.insert("sub_appid".into(), a.clone());
        }
    }
    let body = xml::encode(&outer).ok()?;
    Some(NewDelivery {
        kind: DeliveryKind::Refund,
        version: ApiVersion::V2,
        url,
        body: Bytes::from(body),
        content_type: "text/xml",
        signing: DeliverySigning::None,
        out_trade_no: refund.out_trade_no.clone(),
        out_refund_no: Some(refund.out_refund_no.clone()),
        event_id: None,
    })
}
