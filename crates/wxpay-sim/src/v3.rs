//! API v3 as `api.mch.weixin.qq.com` serves it: every request's `Authorization` verified, every
//! answer signed (except bill files), errors in the `{code, message, detail}` shape (§B).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use time::Date;
use wxpay::keys::normalize_serial;
use wxpay::v3::auth::{Authorization, request_message};

use crate::app::{AppState, BILL_URL_TTL_SECS, BillDownload, MerchantAccount};
use crate::bills::{self, TradeBillType};
use crate::server::Tls;
use crate::signer::{KeyMode, request_id};
use crate::state::{
    ApiVersion, NewOrder, NewRefund, Order, OrderError, OrderRef, Refund, TradeType, cst_date,
    parse_rfc3339, rfc3339_cst,
};

/// The largest v3 request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The request timestamp window, in seconds (the SDKs' 5 minutes).
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;
/// How far back bills can be downloaded, in days (3 months).
pub const BILL_HISTORY_DAYS: i64 = 92;

/// The `Content-Type` of error answers, as the service writes it.
pub const ERROR_CONTENT_TYPE: &str = "application/json; charset=utf-8";
const BILL_DOWNLOAD_PATH: &str = "/v3/billdownload/file";
const NO_PLATFORM_CERTIFICATE: &str = "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/doc/v3/merchant/4012153196";

/// The v3 router (state applied).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v3/pay/transactions/jsapi", post(jsapi))
        .route(
            "/v3/pay/transactions/id/{transaction_id}",
            get(query_by_transaction_id),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(query_by_out_trade_no),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(close),
        )
        .route("/v3/refund/domestic/refunds", post(create_refund))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(query_refund),
        )
        .route("/v3/bill/tradebill", get(trade_bill))
        .route("/v3/bill/fundflowbill", get(fund_flow_bill))
        .route(BILL_DOWNLOAD_PATH, get(download_bill))
        .route("/v3/certificates", get(certificates))
        .merge(crate::partner::v3_routes())
        .merge(crate::transfers::v3_routes())
        .route("/v3/{*rest}", any(not_found))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), sign_answers))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A v3 error answer: `{"code","message","detail"?}` with its HTTP status.
#[derive(Debug, Clone)]
pub struct V3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: Option<Value>,
}

impl V3Error {
    /// An error without detail.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub(crate) fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    fn sign_error(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
    }

    pub(crate) fn param(
        field: &str,
        location: &str,
        value: Option<&Value>,
        label: &str,
        issue: &str,
    ) -> Self {
        let message = if location == "body" {
            format!("输入源“/body{field}”映射到值字段“{label}”{issue}")
        } else {
            format!("输入源“/{location}/{field}”映射到值字段“{label}”{issue}")
        };
        let mut detail = json!({"field": field, "location": location, "issue": issue});
        if let Some(v) = value {
            detail["value"] = v.clone();
        }
        Self::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message).with_detail(detail)
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(d) = self.detail {
            body["detail"] = d;
        }
        (
            self.status,
            [(http::header::CONTENT_TYPE, ERROR_CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}

pub(crate) fn order_error(e: &OrderError) -> V3Error {
    use StatusCode as S;
    let msg = e.to_string();
    match e {
        OrderError::OutTradeNoUsed => V3Error::new(S::FORBIDDEN, "OUT_TRADE_NO_USED", msg),
        OrderError::OrderPaid => V3Error::new(S::BAD_REQUEST, "ORDERPAID", msg),
        OrderError::OrderClosed => V3Error::new(S::BAD_REQUEST, "ORDER_CLOSED", msg),
        OrderError::OrderNotExist => V3Error::new(S::NOT_FOUND, "ORDER_NOT_EXIST", msg),
        OrderError::RefundNotExist => V3Error::new(S::NOT_FOUND, "RESOURCE_NOT_EXISTS", msg),
        OrderError::NotPayable(_) => V3Error::new(S::FORBIDDEN, "TRADE_ERROR", msg),
        OrderError::TooManyRefunds => V3Error::new(S::FORBIDDEN, "RULE_LIMIT", msg),
        OrderError::FieldTooLong(_) | OrderError::InvalidAmount => {
            V3Error::new(S::BAD_REQUEST, "PARAM_ERROR", msg)
        }
        _ => V3Error::new(S::BAD_REQUEST, "INVALID_REQUEST", msg),
    }
}

async fn not_found() -> V3Error {
    V3Error::new(StatusCode::NOT_FOUND, "NOT_FOUND", "请求的资源不存在")
}

// ---------------------------------------------------------------------------------------------
// Authentication and answer signing

async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "请求体过大或读取失败",
        )
        .into_response();
    };
    let mut parts = parts;
    let merchant = match verify_request(&state, &parts, &bytes) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(merchant.clone());
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // `sign_answers` signs with this merchant's WeChat Pay key.
    response.extensions_mut().insert(merchant);
    response
}

fn verify_request(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
) -> Result<Arc<MerchantAccount>, V3Error> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| V3Error::sign_error("Http头缺少Authorization"))?
        .to_str()
        .map_err(|_| {
            V3Error::sign_error(
                "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》",
            )
        })?;
    let auth = Authorization::parse(header).map_err(|_| {
        V3Error::sign_error("Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》")
    })?;
    let Some(merchant) = state.merchant_account(&auth.mchid) else {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "MCH_NOT_EXISTS",
            "商户号不存在",
        ));
    };
    if normalize_serial(&auth.serial_no) != normalize_serial(&merchant.credentials.merchant_serial)
    {
        return Err(
            V3Error::sign_error("商户证书序列号有误。请使用签名私钥匹配的证书序列号").with_detail(
                json!({
                    "field": "serial_no",
                    "location": "authorization",
                    "value": auth.serial_no,
                    "issue": "serial_no does not name the merchant API certificate",
                }),
            ),
        );
    }
    let now = AppState::wall_now();
    let skew = now.saturating_sub(auth.timestamp).saturating_abs();
    if skew >= TIMESTAMP_WINDOW_SECS {
        return Err(V3Error::sign_error("Http头Authorization中的timestamp与当前时间相差过大，请检查时钟").with_detail(json!({
            "field": "timestamp",
            "location": "authorization",
            "value": auth.timestamp,
            "issue": format!("the timestamp is {skew} s from the server time; the window is {TIMESTAMP_WINDOW_SECS} s"),
        })));
    }
    // The signed URL is the raw request target, exactly as sent (never decoded).
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let method = parts.method.as_str();
    if auth
        .verify(&merchant.keys.merchant_public_key, method, target, body)
        .is_err()
    {
        let message = request_message(method, target, auth.timestamp, &auth.nonce_str, body);
        let text = String::from_utf8_lossy(&message);
        let truncated: String = text.chars().take(128).collect();
        return Err(
            V3Error::sign_error("签名错误，请检查后再试").with_detail(json!({
                "field": "signature",
                "location": "authorization",
                "detail": {"issue": "sign not match"},
                "sign_information": {
                    "method": method,
                    "url": target,
                    "truncated_sign_message": truncated,
                    "sign_message_length": message.len(),
                }
            })),
        );
    }
    Ok(merchant)
}

async fn sign_answers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let bill_file = request.uri().path() == BILL_DOWNLOAD_PATH;
    let serial = request
        .headers()
        .get("wechatpay-serial")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    if let Ok(id) = http::HeaderValue::from_str(&request_id()) {
        parts.headers.insert("request-id", id);
    }
    // Bill files are not signed (§B.14); an unsuccessful download is answered like any call.
    // A request that failed authentication gets an unsigned answer: the service signs only once
    // it knows the merchant (§B.3).
    if (bill_file && parts.status.is_success()) || parts.status == StatusCode::UNAUTHORIZED {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // Before authentication (an unknown mchid) there is no merchant yet: the first one's keys.
    let merchant = parts
        .extensions
        .get::<Arc<MerchantAccount>>()
        .cloned()
        .unwrap_or_else(|| state.first_merchant());
    let key = merchant.signer.response_key(serial.as_deref());
    match merchant.signer.sign(key, AppState::wall_now(), &bytes) {
        Ok(h) => h.apply(&mut parts.headers),
        Err(e) => tracing::error!(error = %e, "signing an answer failed"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

// ---------------------------------------------------------------------------------------------
// Body validation

pub(crate) fn parse_body(body: &[u8]) -> Result<Value, V3Error> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "请求体不是合法的JSON",
        )
        .with_detail(json!({
            "location": "body",
            "issue": e.to_string(),
        }))
    })?;
    if !value.is_object() {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "请求体必须是JSON对象",
        )
        .with_detail(json!({"location": "body", "field": "", "issue": "not an object"})));
    }
    Ok(value)
}

pub(crate) fn opt_str<'a>(
    v: &'a Value,
    field: &str,
    label: &str,
    max_bytes: usize,
) -> Result<Option<&'a str>, V3Error> {
    match v.pointer(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.len() > max_bytes {
                Err(V3Error::param(
                    field,
                    "body",
                    v.pointer(field),
                    label,
                    &format!(
                        "字符串规则校验失败，字节数 {}，大于最大值 {max_bytes}",
                        s.len()
                    ),
                ))
            } else {
                Ok(Some(s))
            }
        }
        Some(other) => Err(V3Error::param(
            field,
            "body",
            Some(other),
            label,
            "字符串规则校验失败，字段类型错误",
        )),
    }
}

pub(crate) fn req_str<'a>(
    v: &'a Value,
    field: &str,
    label: &str,
    max_bytes: usize,
) -> Result<&'a str, V3Error> {
    match opt_str(v, field, label, max_bytes)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(V3Error::param(
            field,
            "body",
            None,
            label,
            "必填性规则校验失败，此字段为必填项",
        )),
    }
}

pub(crate) fn req_amount(v: &Value, field: &str, label: &str) -> Result<u64, V3Error> {
    match v.pointer(field) {
        None | Some(Value::Null) => Err(V3Error::param(
            field,
            "body",
            None,
            label,
            "必填性规则校验失败，此字段为必填项",
        )),
        Some(n @ Value::Number(_)) => match n.as_u64() {
            Some(x) if x >= 1 && x <= i64::MAX as u64 => Ok(x),
            _ => Err(V3Error::param(
                field,
                "body",
                Some(n),
                label,
                "整型规则校验失败，值必须为正整数",
            )),
        },
        Some(other) => Err(V3Error::param(
            field,
            "body",
            Some(other),
            label,
            "整型规则校验失败，字段类型错误",
        )),
    }
}

pub(crate) fn check_currency(v: &Value, field: &str, required: bool) -> Result<(), V3Error> {
    match opt_str(v, field, "货币类型", 16)? {
        None if required => Err(V3Error::param(
            field,
            "body",
            None,
            "货币类型",
            "必填性规则校验失败，此字段为必填项",
        )),
        None => Ok(()),
        Some("CNY") => Ok(()),
        Some(_) => Err(V3Error::param(
            field,
            "body",
            v.pointer(field),
            "货币类型",
            "Currency code is invalid",
        )),
    }
}

/// `out_trade_no` / `out_refund_no`: `min..=max` characters of `[0-9A-Za-z_\-|*]` (plus `@` for
/// refund numbers).
pub(crate) fn check_number(
    v: &Value,
    field: &str,
    label: &str,
    text: &str,
    min: usize,
    max: usize,
    at_allowed: bool,
) -> Result<(), V3Error> {
    let ok_char = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*') || (at_allowed && c == '@')
    };
    if text.len() < min || text.len() > max || !text.chars().all(ok_char) {
        return Err(V3Error::param(
            field,
            "body",
            v.pointer(field),
            label,
            &format!(
                "字符串规则校验失败，须为{min}-{max}位数字、大小写字母或_-|*{}",
                if at_allowed { "@" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// `notify_url`: an absolute http(s) URL without a query string. (The real service requires
/// HTTPS; the simulator also takes plain HTTP so that local receivers work.)
pub(crate) fn check_notify_url(v: &Value, field: &str, url: &str) -> Result<(), V3Error> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains('?')
        && !url.contains(char::is_whitespace)
        && url
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if ok {
        Ok(())
    } else {
        Err(V3Error::param(
            field,
            "body",
            v.pointer(field),
            "通知地址",
            "字符串规则校验失败，须为不带参数的绝对URL",
        ))
    }
}

fn check_merchant(
    state: &AppState,
    m: &MerchantAccount,
    appid: Option<&str>,
    mchid: &str,
) -> Result<(), V3Error> {
    if mchid != m.mchid() || appid.is_some_and(|a| !state.is_bound(a, mchid)) {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    Ok(())
}

fn query_mchid(m: &MerchantAccount, query: &HashMap<String, String>) -> Result<(), V3Error> {
    match query.get("mchid").map(String::as_str) {
        None | Some("") => Err(V3Error::param(
            "mchid",
            "query",
            None,
            "直连商户号",
            "必填性规则校验失败，此字段为必填项",
        )),
        Some(given) if given == m.mchid() => Ok(()),
        Some(given) => Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "mchid与Authorization中的商户号不一致",
        )
        .with_detail(json!({"field": "mchid", "location": "query", "value": given}))),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

/// The `Transaction` object of §B.10 (query answers and the decrypted payment notification).
#[must_use]
pub fn transaction_json(order: &Order) -> Value {
    // The shape of real answers (captures): before payment `amount` has no `currency`, and
    // `trade_type` and `attach` are absent; `promotion_detail` and `scene_info` are always there.
    let mut t = json!({
        "appid": order.appid,
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_state": order.trade_state.as_str(),
        "trade_state_desc": order.trade_state.description(),
        "amount": {"total": order.total, "payer_currency": "CNY"},
        "promotion_detail": [],
        "scene_info": {"device_id": ""},
    });
    if let (Some(tx), Some(at)) = (&order.transaction_id, order.success_time) {
        t["transaction_id"] = json!(tx);
        t["trade_type"] = json!(order.trade_type.as_str());
        t["bank_type"] = json!("OTHERS");
        t["success_time"] = json!(rfc3339_cst(at));
        t["payer"] = json!({"openid": order.openid});
        t["amount"]["payer_total"] = json!(order.total);
        t["amount"]["currency"] = json!("CNY");
        if let Some(a) = &order.attach {
            t["attach"] = json!(a);
        }
    }
    t
}

/// The `Refund` object of §B.12 / §B.13.
#[must_use]
pub fn refund_json(refund: &Refund) -> Value {
    let mut r = json!({
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": rfc3339_cst(refund.created_at),
        "status": refund.status.as_v3(),
        "funds_account": "UNSETTLED",
        "amount": {
            "total": refund.total,
            "refund": refund.amount,
            "from": [],
            "payer_total": refund.total,
            "payer_refund": refund.amount,
            "settlement_refund": refund.amount,
            "settlement_total": refund.total,
            "discount_refund": 0,
            "currency": "CNY",
            "refund_fee": 0,
        },
        "promotion_detail": [],
    });
    if let Some(t) = refund.success_time {
        r["success_time"] = json!(rfc3339_cst(t));
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn jsapi(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let appid = req_str(&v, "/appid", "应用ID", 32)?;
    let mchid = req_str(&v, "/mchid", "直连商户号", 32)?;
    let description = req_str(&v, "/description", "商品描述", 127)?;
    let out_trade_no = req_str(&v, "/out_trade_no", "商户订单号", 32)?;
    check_number(
        &v,
        "/out_trade_no",
        "商户订单号",
        out_trade_no,
        6,
        32,
        false,
    )?;
    let time_expire = opt_str(&v, "/time_expire", "交易结束时间", 64)?;
    let attach = opt_str(&v, "/attach", "附加数据", 128)?;
    let notify_url = req_str(&v, "/notify_url", "通知地址", 255)?;
    check_notify_url(&v, "/notify_url", notify_url)?;
    if !v.get("amount").is_some_and(Value::is_object) {
        return Err(V3Error::param(
            "/amount",
            "body",
            v.get("amount"),
            "订单金额",
            "必填性规则校验失败，此字段为必填项",
        ));
    }
    let total = req_amount(&v, "/amount/total", "总金额")?;
    check_currency(&v, "/amount/currency", false)?;
    if !v.get("payer").is_some_and(Value::is_object) {
        return Err(V3Error::param(
            "/payer",
            "body",
            v.get("payer"),
            "支付者",
            "必填性规则校验失败，此字段为必填项",
        ));
    }
    let openid = req_str(&v, "/payer/openid", "用户标识", 128)?;
    let now = state.now();
    let time_expire = match time_expire {
        None => None,
        Some(text) => {
            let t = parse_rfc3339(text).ok_or_else(|| {
                V3Error::param(
                    "/time_expire",
                    "body",
                    v.pointer("/time_expire"),
                    "交易结束时间",
                    "时间格式须为RFC3339，如2018-06-08T10:34:56+08:00",
                )
            })?;
            // Earlier than a minute from now is moved up to a minute (§B.9).
            Some(t.max(now + 60))
        }
    };
    check_merchant(&state, &merchant, Some(appid), mchid)?;
    // The number of a partner order is taken for the provider (the same mchid).
    if state.partner.is_partner_order(out_trade_no) {
        return Err(order_error(&OrderError::OutTradeNoUsed));
    }
    // Numbers are kept simulator-wide: another merchant's number is taken too.
    if state
        .store
        .order(out_trade_no)
        .is_some_and(|o| o.mchid != mchid)
    {
        return Err(order_error(&OrderError::OutTradeNoUsed));
    }
    if !state.has_user(appid, openid) {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "appid和openid不匹配",
        )
        .with_detail(json!({
            "field": "/payer/openid",
            "location": "body",
            "value": openid,
            "issue": "the openid does not belong to the appid",
        })));
    }
    let (order, _) = state
        .store
        .create_or_reuse_order(&NewOrder {
            appid,
            mchid,
            out_trade_no,
            openid,
            description,
            attach,
            device_info: None,
            notify_url,
            total,
            version: ApiVersion::V3,
            sign_type: wxpay::v2::SignType::Md5,
            trade_type: TradeType::Jsapi,
            time_expire,
        })
        .map_err(|e| order_error(&e))?;
    Ok(axum::Json(json!({"prepay_id": order.prepay_id})).into_response())
}

async fn query_by_out_trade_no(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_trade_no): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    query_mchid(&merchant, &query)?;
    let order = state
        .store
        .order(&out_trade_no)
        .filter(|o| o.mchid == merchant.mchid())
        .filter(|o| !state.partner.is_partner_order(&o.out_trade_no))
        .ok_or_else(|| order_error(&OrderError::OrderNotExist))?;
    Ok(axum::Json(transaction_json(&order)).into_response())
}

async fn query_by_transaction_id(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(transaction_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    query_mchid(&merchant, &query)?;
    let order = state
        .store
        .order_by_transaction_id(&transaction_id)
        .filter(|o| o.mchid == merchant.mchid())
        .filter(|o| !state.partner.is_partner_order(&o.out_trade_no))
        .ok_or_else(|| order_error(&OrderError::OrderNotExist))?;
    Ok(axum::Json(transaction_json(&order)).into_response())
}

async fn close(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let mchid = req_str(&v, "/mchid", "直连商户号", 32)?;
    check_merchant(&state, &merchant, None, mchid)?;
    if state.partner.is_partner_order(&out_trade_no) {
        return Err(order_error(&OrderError::OrderNotExist));
    }
    // Another merchant's number is unknown to this one: 204 as for any unknown number.
    if state
        .store
        .order(&out_trade_no)
        .is_some_and(|o| o.mchid != merchant.mchid())
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match state.store.close_order(&out_trade_no) {
        // Closing an unknown number answers 204 like closing a closed one (§B.11).
        Ok(_) | Err(OrderError::OrderNotExist) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(order_error(&e)),
    }
}

async fn create_refund(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let transaction_id =
        opt_str(&v, "/transaction_id", "微信支付订单号", 32)?.filter(|s| !s.is_empty());
    let out_trade_no = opt_str(&v, "/out_trade_no", "商户订单号", 32)?.filter(|s| !s.is_empty());
    let order = match (transaction_id, out_trade_no) {
        (Some(tx), _) => OrderRef::TransactionId(tx),
        (None, Some(no)) => OrderRef::OutTradeNo(no),
        (None, None) => {
            return Err(V3Error::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", "transaction_id和out_trade_no必须二选一")
                .with_detail(json!({"field": "/transaction_id", "location": "body", "issue": "one of transaction_id and out_trade_no is required"})));
        }
    };
    let out_refund_no = req_str(&v, "/out_refund_no", "商户退款单号", 64)?;
    check_number(
        &v,
        "/out_refund_no",
        "商户退款单号",
        out_refund_no,
        1,
        64,
        true,
    )?;
    let reason = opt_str(&v, "/reason", "退款原因", 80)?;
    let notify_url = opt_str(&v, "/notify_url", "退款结果回调url", 256)?.filter(|s| !s.is_empty());
    if let Some(url) = notify_url {
        check_notify_url(&v, "/notify_url", url)?;
    }
    if let Some(fa) = opt_str(&v, "/funds_account", "退款资金来源", 32)?
        && fa != "AVAILABLE"
    {
        return Err(V3Error::param(
            "/funds_account",
            "body",
            v.pointer("/funds_account"),
            "退款资金来源",
            "枚举值校验失败，只能为AVAILABLE",
        ));
    }
    if !v.get("amount").is_some_and(Value::is_object) {
        return Err(V3Error::param(
            "/amount",
            "body",
            v.get("amount"),
            "金额信息",
            "必填性规则校验失败，此字段为必填项",
        ));
    }
    let amount = req_amount(&v, "/amount/refund", "退款金额")?;
    let total = req_amount(&v, "/amount/total", "原订单金额")?;
    check_currency(&v, "/amount/currency", true)?;
    let sub_mchid = opt_str(&v, "/sub_mchid", "子商户号", 32)?.filter(|s| !s.is_empty());
    crate::partner::check_refund_order(&state, merchant.mchid(), sub_mchid, order)?;
    let owner = match order {
        OrderRef::TransactionId(tx) => state.store.order_by_transaction_id(tx),
        OrderRef::OutTradeNo(no) => state.store.order(no),
    };
    if owner.is_some_and(|o| o.mchid != merchant.mchid()) {
        return Err(V3Error::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "订单不存在",
        ));
    }
    if state
        .store
        .refund_by_out_refund_no(out_refund_no)
        .and_then(|r| state.store.order(&r.out_trade_no))
        .is_some_and(|o| o.mchid != merchant.mchid())
    {
        // Refund numbers are kept simulator-wide, like order numbers.
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "商户退款单号重复",
        ));
    }
    let (refund, created) = state
        .store
        .refund(&NewRefund {
            order,
            out_refund_no,
            amount,
            total,
            reason,
            notify_url,
            version: ApiVersion::V3,
        })
        .map_err(|e| match e {
            OrderError::OrderNotExist => V3Error::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在"),
            OrderError::RefundExceedsRemaining { .. } => {
                V3Error::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
                    .with_detail(json!({"field": "/amount/refund", "location": "body", "value": amount, "issue": e.to_string()}))
            }
            other => order_error(&other),
        })?;
    if created {
        state.start_refund_processing(&refund);
    }
    Ok(axum::Json(refund_json(&refund)).into_response())
}

async fn query_refund(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_refund_no): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let sub_mchid = query
        .get("sub_mchid")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let refund = state
        .store
        .refund_by_out_refund_no(&out_refund_no)
        .filter(|r| {
            state
                .store
                .order(&r.out_trade_no)
                .is_some_and(|o| o.mchid == merchant.mchid())
        })
        .filter(|r| crate::partner::refund_visible(&state, sub_mchid, &r.out_trade_no))
        .ok_or_else(|| order_error(&OrderError::RefundNotExist))?;
    Ok(axum::Json(refund_json(&refund)).into_response())
}

fn bill_date(state: &AppState, query: &HashMap<String, String>) -> Result<Date, V3Error> {
    let text = query
        .get("bill_date")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            V3Error::param(
                "bill_date",
                "query",
                None,
                "账单日期",
                "必填性规则校验失败，此字段为必填项",
            )
        })?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = Date::parse(text, &format).map_err(|_| {
        V3Error::param(
            "bill_date",
            "query",
            Some(&json!(text)),
            "账单日期",
            "日期格式须为YYYY-MM-DD",
        )
    })?;
    let now = state.now();
    let today = cst_date(now);
    if !bills::bill_ready(date, now) {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "STATEMENT_CREATING",
            "账单生成中，请在次日10点后下载",
        ));
    }
    if (today - date).whole_days() > BILL_HISTORY_DAYS {
        return Err(V3Error::param(
            "bill_date",
            "query",
            Some(&json!(text)),
            "账单日期",
            "只能下载三个月以内的账单",
        ));
    }
    Ok(date)
}

fn gzip_wanted(query: &HashMap<String, String>) -> Result<bool, V3Error> {
    match query.get("tar_type").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("GZIP") => Ok(true),
        Some(other) => Err(V3Error::param(
            "tar_type",
            "query",
            Some(&json!(other)),
            "压缩类型",
            "枚举值校验失败，只能为GZIP",
        )),
    }
}

fn issue_download(
    state: &AppState,
    headers: &HeaderMap,
    tls: Option<Tls>,
    text: String,
    gzip: bool,
) -> Response {
    let hash_value = bills::sha1_hex(text.as_bytes());
    let body = if gzip {
        bills::gzip(text.as_bytes())
    } else {
        text.into_bytes()
    };
    let token = wxpay::nonce::random_string(40);
    let now = state.now();
    {
        let mut downloads = state
            .bill_downloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        downloads.retain(|_, d| d.expires_at > now);
        downloads.insert(
            token.clone(),
            BillDownload {
                body,
                gzip,
                expires_at: now + BILL_URL_TTL_SECS,
            },
        );
    }
    let scheme = if tls.is_some_and(|t| t.0) {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| state.base_url().trim_start_matches("http://").to_owned());
    axum::Json(json!({
        "hash_type": "SHA1",
        "hash_value": hash_value,
        "download_url": format!("{scheme}://{host}{BILL_DOWNLOAD_PATH}?token={token}"),
    }))
    .into_response()
}

fn no_statement() -> V3Error {
    V3Error::new(
        StatusCode::BAD_REQUEST,
        "NO_STATEMENT_EXIST",
        "当日无交易，账单不存在",
    )
}

async fn trade_bill(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    headers: HeaderMap,
    tls: Option<axum::Extension<Tls>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let date = bill_date(&state, &query)?;
    let raw_type = query.get("bill_type").map_or("", String::as_str);
    let bill_type = TradeBillType::parse(raw_type).ok_or_else(|| {
        V3Error::param(
            "bill_type",
            "query",
            Some(&json!(raw_type)),
            "账单类型",
            "枚举值校验失败，只能为ALL、SUCCESS或REFUND",
        )
    })?;
    let gzip = gzip_wanted(&query)?;
    let only = query
        .get("sub_mchid")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    if let Some(sub) = only {
        crate::partner::check_bound(&state, merchant.mchid(), sub)?;
    }
    let sub_mchid_of = |o: &Order| state.partner.order(&o.out_trade_no).map(|p| p.sub_mchid);
    let mine = |o: &Order| o.mchid == merchant.mchid();
    let text = bills::trade_bill_text_of(&state.store, date, bill_type, &sub_mchid_of, only, &mine)
        .map_err(|e| V3Error::new(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", e))?
        .ok_or_else(no_statement)?;
    Ok(issue_download(
        &state,
        &headers,
        tls.map(|t| t.0),
        text,
        gzip,
    ))
}

async fn fund_flow_bill(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    headers: HeaderMap,
    tls: Option<axum::Extension<Tls>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let date = bill_date(&state, &query)?;
    let account = query.get("account_type").map_or("BASIC", String::as_str);
    if !matches!(account, "" | "BASIC" | "OPERATION" | "FEES") {
        return Err(V3Error::param(
            "account_type",
            "query",
            Some(&json!(account)),
            "资金账户类型",
            "枚举值校验失败，只能为BASIC、OPERATION或FEES",
        ));
    }
    let gzip = gzip_wanted(&query)?;
    // Payments, fees and refunds move the basic account only.
    if !matches!(account, "" | "BASIC") {
        return Err(no_statement());
    }
    let mine = |o: &Order| o.mchid == merchant.mchid();
    let text = bills::fund_flow_bill_text_of(&state.store, date, &mine)
        .map_err(|e| V3Error::new(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", e))?
        .ok_or_else(no_statement)?;
    Ok(issue_download(
        &state,
        &headers,
        tls.map(|t| t.0),
        text,
        gzip,
    ))
}

async fn download_bill(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let token = query.get("token").map_or("", String::as_str);
    let now = state.now();
    let download = state
        .bill_downloads
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(token)
        .filter(|d| d.expires_at > now)
        .cloned()
        .ok_or_else(|| {
            V3Error::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "账单下载链接无效或已过期，请重新申请",
            )
        })?;
    let content_type = if download.gzip {
        "application/x-gzip"
    } else {
        "text/plain;charset=utf-8"
    };
    Ok(([(http::header::CONTENT_TYPE, content_type)], download.body).into_response())
}

async fn certificates(
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    if merchant.signer.mode() == KeyMode::PublicKey {
        // New merchants have no platform certificate; WeChat answers exactly this (observed).
        return Err(V3Error::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            NO_PLATFORM_CERTIFICATE,
        ));
    }
    let algorithm = query.get("algorithm_type").map_or("RSA", String::as_str);
    let data = match algorithm {
        "" | "RSA" | "ALL" => {
            let cert = &merchant.keys.platform_cert;
            let nonce = wxpay::nonce::random_string(12);
            let ciphertext = merchant
                .api_v3_key
                .encrypt(&nonce, "certificate", cert.to_pem().as_bytes())
                .map_err(|e| {
                    V3Error::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "SYSTEM_ERROR",
                        e.to_string(),
                    )
                })?;
            vec![json!({
                "serial_no": cert.serial_no,
                "effective_time": rfc3339_cst(cert.not_before.unix_timestamp()),
                "expire_time": rfc3339_cst(cert.not_after.unix_timestamp()),
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM",
                    "nonce": nonce,
                    "associated_data": "certificate",
                    "ciphertext": ciphertext,
                }
            })]
        }
        "SM2" => Vec::new(),
        other => {
            return Err(V3Error::param(
                "algorithm_type",
                "query",
                Some(&json!(other)),
                "证书算法类型",
                "枚举值校验失败，只能为RSA、SM2或ALL",
            ));
        }
    };
    Ok(axum::Json(json!({"data": data})).into_response())
}
