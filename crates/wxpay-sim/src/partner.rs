//! Service-provider (服务商, partner) mode: the simulated merchant acts as a provider whose
//! sub-merchants (特约商户) take mini-program payments through its keys.
//!
//! * Sub-merchants are registered through the control API (`POST /sim/sub-merchants
//!   {sub_mchid, sub_appid?}`), each optionally bound to its own mini program (`sub_appid`);
//!   users of that mini program are minted with `POST /sim/sub-merchants/{sub_mchid}/users`.
//!   Both are kept in the journal (`sub_merchant`, `sub_user` lines).
//! * A partner order is an ordinary order of the store (appid = `sp_appid`, mchid = `sp_mchid`,
//!   openid = the payer's `sp_openid` or `sub_openid`, so `out_trade_no` is unique per
//!   provider) plus its partner facts (`sub_mchid`, `sub_appid`, which openid), kept here and
//!   journalled as `partner_order` lines. The direct endpoints do not see partner orders and the
//!   partner endpoints do not see direct ones.
//! * `wx.requestPayment` of a partner order is signed with the provider's key over `sub_appid`
//!   when the prepay carried one, else over `sp_appid` (`/sim/pay` checks it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::journal::{Entry, Journal, PartnerOrderLine, SubMerchantLine, SubUserLine};
use crate::state::{ApiVersion, NewOrder, Order, OrderError, OrderRef, TradeType, parse_rfc3339};
use crate::v3::{
    V3Error, check_currency, check_notify_url, check_number, opt_str, order_error, parse_body,
    req_amount, req_str,
};

/// What a partner order adds to its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerOrder {
    /// The sub-merchant.
    pub sub_mchid: String,
    /// The `sub_appid` the prepay carried.
    pub sub_appid: Option<String>,
    /// Whether the payer was given as `sub_openid` (else `sp_openid`).
    pub sub_payer: bool,
}

impl PartnerOrder {
    /// The appid the `paySign` of this order covers: `sub_appid` when the prepay carried one,
    /// else the provider's `sp_appid` (the order's appid).
    #[must_use]
    pub fn paying_appid<'a>(&'a self, order: &'a Order) -> &'a str {
        self.sub_appid.as_deref().unwrap_or(&order.appid)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// sub_mchid -> sub_appid.
    sub_merchants: BTreeMap<String, Option<String>>,
    /// openid -> the sub_appid it belongs to.
    sub_users: HashMap<String, String>,
    /// out_trade_no -> partner facts.
    orders: HashMap<String, PartnerOrder>,
}

/// The provider's sub-merchants, their users and the partner facts of orders.
#[derive(Debug, Default)]
pub struct Partner {
    inner: Mutex<Inner>,
    journal: Option<Arc<Journal>>,
}

fn valid_id(text: &str, extra: &[u8]) -> bool {
    (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

impl Partner {
    /// In memory only.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Restored from the journal read at start; later changes are appended to it.
    #[must_use]
    pub fn persistent(journal: Arc<Journal>, entries: &[Entry]) -> Self {
        let mut inner = Inner::default();
        for entry in entries {
            match entry {
                Entry::SubMerchant(line) => {
                    inner
                        .sub_merchants
                        .insert(line.sub_mchid.clone(), line.sub_appid.clone());
                }
                Entry::SubUser(line) => {
                    inner
                        .sub_users
                        .insert(line.openid.clone(), line.sub_appid.clone());
                }
                Entry::PartnerOrder(line) => {
                    inner.orders.insert(
                        line.out_trade_no.clone(),
                        PartnerOrder {
                            sub_mchid: line.sub_mchid.clone(),
                            sub_appid: line.sub_appid.clone(),
                            sub_payer: line.sub_payer,
                        },
                    );
                }
                _ => {}
            }
        }
        Self {
            inner: Mutex::new(inner),
            journal: Some(journal),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn append(&self, entry: &Entry) {
        if let Some(j) = &self.journal {
            j.append(entry);
        }
    }

    /// Registers (or re-binds) a sub-merchant under the provider `sp_mchid`.
    ///
    /// # Errors
    /// When `sub_mchid` is not 1 to 32 characters of `[0-9A-Za-z]` or is the provider itself, or
    /// `sub_appid` is not 1 to 32 characters of `[0-9A-Za-z_-]`.
    pub fn register_sub_merchant(
        &self,
        sp_mchid: &str,
        sub_mchid: &str,
        sub_appid: Option<&str>,
    ) -> Result<(), String> {
        if !valid_id(sub_mchid, b"") {
            return Err("sub_mchid must be 1 to 32 characters of [0-9A-Za-z]".into());
        }
        if sub_mchid == sp_mchid {
            return Err("sub_mchid must differ from the provider's mchid".into());
        }
        if sub_appid.is_some_and(|a| !valid_id(a, b"_-")) {
            return Err("sub_appid must be 1 to 32 characters of [0-9A-Za-z_-]".into());
        }
        self.lock()
            .sub_merchants
            .insert(sub_mchid.to_owned(), sub_appid.map(str::to_owned));
        self.append(&Entry::SubMerchant(SubMerchantLine {
            sub_mchid: sub_mchid.to_owned(),
            sub_appid: sub_appid.map(str::to_owned),
        }));
        Ok(())
    }

    /// The sub-merchant's `sub_appid`: `None` when it is not registered, `Some(None)` when it
    /// has no mini program of its own.
    #[must_use]
    pub fn sub_merchant(&self, sub_mchid: &str) -> Option<Option<String>> {
        self.lock().sub_merchants.get(sub_mchid).cloned()
    }

    /// Every sub-merchant and its `sub_appid`.
    #[must_use]
    pub fn sub_merchants(&self) -> Vec<(String, Option<String>)> {
        self.lock()
            .sub_merchants
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Mints a user of the sub-merchant's mini program and returns `(sub_appid, openid)`.
    ///
    /// # Errors
    /// When the sub-merchant is unknown or has no `sub_appid`.
    pub fn create_sub_user(&self, sub_mchid: &str) -> Result<(String, String), String> {
        let mut inner = self.lock();
        let sub_appid = match inner.sub_merchants.get(sub_mchid) {
            None => return Err(format!("no sub-merchant {sub_mchid}")),
            Some(None) => return Err(format!("sub-merchant {sub_mchid} has no sub_appid")),
            Some(Some(a)) => a.clone(),
        };
        let openid = loop {
            let candidate = crate::mp::generated_openid();
            if !inner.sub_users.contains_key(&candidate) {
                break candidate;
            }
        };
        inner.sub_users.insert(openid.clone(), sub_appid.clone());
        drop(inner);
        self.append(&Entry::SubUser(SubUserLine {
            sub_appid: sub_appid.clone(),
            openid: openid.clone(),
        }));
        Ok((sub_appid, openid))
    }

    /// The mini program a sub-merchant user belongs to.
    #[must_use]
    pub fn sub_user_appid(&self, openid: &str) -> Option<String> {
        self.lock().sub_users.get(openid).cloned()
    }

    /// The partner facts of an order (`None`: a direct order or no order).
    #[must_use]
    pub fn order(&self, out_trade_no: &str) -> Option<PartnerOrder> {
        self.lock().orders.get(out_trade_no).cloned()
    }

    /// Whether an order was made in partner mode.
    #[must_use]
    pub fn is_partner_order(&self, out_trade_no: &str) -> bool {
        self.lock().orders.contains_key(out_trade_no)
    }

    fn record_order(&self, out_trade_no: &str, order: &PartnerOrder) {
        let mut inner = self.lock();
        if inner.orders.get(out_trade_no) == Some(order) {
            return;
        }
        inner.orders.insert(out_trade_no.to_owned(), order.clone());
        drop(inner);
        self.append(&Entry::PartnerOrder(PartnerOrderLine {
            out_trade_no: out_trade_no.to_owned(),
            sub_mchid: order.sub_mchid.clone(),
            sub_appid: order.sub_appid.clone(),
            sub_payer: order.sub_payer,
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// Errors WeChat answers in partner mode (see docs/SIMULATOR.md for the choices)

fn no_relation(sub_mchid: &str) -> V3Error {
    V3Error::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "受理关系不存在")
        .with_detail(json!({"field": "sub_mchid", "value": sub_mchid,
                        "issue": "the sub-merchant is not bound to the service provider"}))
}

fn openid_mismatch(field: &str, openid: &str) -> V3Error {
    V3Error::new(
        StatusCode::BAD_REQUEST,
        "PARAM_ERROR",
        "appid和openid不匹配",
    )
    .with_detail(json!({
        "field": field,
        "location": "body",
        "value": openid,
        "issue": "the openid does not belong to the appid",
    }))
}

fn sp_mismatch(state: &AppState, sp_appid: Option<&str>, sp_mchid: &str) -> Result<(), V3Error> {
    if sp_mchid != state.merchant.mchid || sp_appid.is_some_and(|a| a != state.merchant.appid) {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "sp_appid和sp_mchid不匹配",
        ));
    }
    Ok(())
}

/// The sub-merchant must be registered under the provider.
fn bound_sub(state: &AppState, sub_mchid: &str) -> Result<Option<String>, V3Error> {
    state
        .partner
        .sub_merchant(sub_mchid)
        .ok_or_else(|| no_relation(sub_mchid))
}

/// `sub_mchid` must name a sub-merchant of the provider (`受理关系不存在` otherwise).
pub(crate) fn check_bound(state: &AppState, sub_mchid: &str) -> Result<(), V3Error> {
    bound_sub(state, sub_mchid).map(|_| ())
}

/// The order of `out_trade_no`, if it is a partner order of `sub_mchid`.
fn partner_order_of(
    state: &AppState,
    order: Option<Order>,
    sub_mchid: &str,
) -> Option<(Order, PartnerOrder)> {
    let order = order?;
    let partner = state.partner.order(&order.out_trade_no)?;
    (partner.sub_mchid == sub_mchid).then_some((order, partner))
}

// ---------------------------------------------------------------------------------------------
// Answers

/// The partner `Transaction` (query answers and the decrypted partner payment notification):
/// the direct shape with `sp_appid`/`sp_mchid` for `appid`/`mchid`, plus `sub_mchid`,
/// `sub_appid` (when the prepay carried one) and `payer.sp_openid` or `payer.sub_openid`.
#[must_use]
pub fn transaction_json(order: &Order, partner: &PartnerOrder) -> Value {
    let mut t = crate::v3::transaction_json(order);
    if let Some(obj) = t.as_object_mut() {
        obj.remove("appid");
        obj.remove("mchid");
        obj.insert("sp_appid".into(), json!(order.appid));
        obj.insert("sp_mchid".into(), json!(order.mchid));
        obj.insert("sub_mchid".into(), json!(partner.sub_mchid));
        if let Some(a) = &partner.sub_appid {
            obj.insert("sub_appid".into(), json!(a));
        }
        if obj.contains_key("payer") {
            let key = if partner.sub_payer {
                "sub_openid"
            } else {
                "sp_openid"
            };
            obj.insert("payer".into(), json!({ key: order.openid }));
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// v3 endpoints (mounted inside the v3 router, behind its authentication and answer signing)

/// The partner payment routes (state not applied).
pub(crate) fn v3_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v3/pay/partner/transactions/jsapi", post(jsapi))
        .route(
            "/v3/pay/partner/transactions/id/{transaction_id}",
            get(query_by_transaction_id),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{out_trade_no}",
            get(query_by_out_trade_no),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{out_trade_no}/close",
            post(close),
        )
}

fn object(v: &Value, field: &str, label: &str) -> Result<(), V3Error> {
    if v.get(field).is_some_and(Value::is_object) {
        Ok(())
    } else {
        Err(V3Error::param(
            &format!("/{field}"),
            "body",
            v.get(field),
            label,
            "必填性规则校验失败，此字段为必填项",
        ))
    }
}

async fn jsapi(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let sp_appid = req_str(&v, "/sp_appid", "服务商应用ID", 32)?;
    let sp_mchid = req_str(&v, "/sp_mchid", "服务商户号", 32)?;
    let sub_appid = opt_str(&v, "/sub_appid", "子商户应用ID", 32)?.filter(|s| !s.is_empty());
    let sub_mchid = req_str(&v, "/sub_mchid", "子商户号", 32)?;
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
    object(&v, "amount", "订单金额")?;
    let total = req_amount(&v, "/amount/total", "总金额")?;
    check_currency(&v, "/amount/currency", false)?;
    object(&v, "payer", "支付者")?;
    let sp_openid = opt_str(&v, "/payer/sp_openid", "用户服务标识", 128)?.filter(|s| !s.is_empty());
    let sub_openid = opt_str(&v, "/payer/sub_openid", "用户子标识", 128)?.filter(|s| !s.is_empty());
    let (openid, sub_payer) = match (sp_openid, sub_openid) {
        (Some(o), None) => (o, false),
        (None, Some(o)) => (o, true),
        (None, None) | (Some(_), Some(_)) => {
            return Err(V3Error::param(
                "/payer/sp_openid",
                "body",
                None,
                "用户服务标识",
                "sp_openid和sub_openid必须二选一",
            ));
        }
    };
    if sub_payer && sub_appid.is_none() {
        return Err(V3Error::param(
            "/sub_appid",
            "body",
            None,
            "子商户应用ID",
            "传入sub_openid时sub_appid必填",
        ));
    }
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
            Some(t.max(now + 60))
        }
    };
    sp_mismatch(&state, Some(sp_appid), sp_mchid)?;
    let bound_appid = bound_sub(&state, sub_mchid)?;
    if let Some(a) = sub_appid
        && bound_appid.as_deref() != Some(a)
    {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "sub_appid与sub_mchid不匹配",
        )
        .with_detail(
            json!({"field": "/sub_appid", "location": "body", "value": a,
                            "issue": "the sub_appid is not bound to the sub_mchid"}),
        ));
    }
    // The openid must belong to the appid it is given for.
    if sub_payer {
        if state.partner.sub_user_appid(openid).as_deref() != sub_appid {
            return Err(openid_mismatch("/payer/sub_openid", openid));
        }
    } else if !state.mp.has_user(openid) {
        return Err(openid_mismatch("/payer/sp_openid", openid));
    }
    let facts = PartnerOrder {
        sub_mchid: sub_mchid.to_owned(),
        sub_appid: sub_appid.map(str::to_owned),
        sub_payer,
    };
    // out_trade_no is unique per provider: a direct order or another sub-merchant's order with
    // this number is a reuse.
    if state.store.order(out_trade_no).is_some()
        && state.partner.order(out_trade_no).as_ref() != Some(&facts)
    {
        return Err(order_error(&OrderError::OutTradeNoUsed));
    }
    let (order, _) = state
        .store
        .create_or_reuse_order(&NewOrder {
            appid: sp_appid,
            mchid: sp_mchid,
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
    state.partner.record_order(out_trade_no, &facts);
    Ok(axum::Json(json!({"prepay_id": order.prepay_id})).into_response())
}

fn query_merchants<'a>(
    state: &AppState,
    query: &'a HashMap<String, String>,
) -> Result<&'a str, V3Error> {
    let get = |name: &str, label: &str| match query.get(name).map(String::as_str) {
        None | Some("") => Err(V3Error::param(
            name,
            "query",
            None,
            label,
            "必填性规则校验失败，此字段为必填项",
        )),
        Some(v) => Ok(v),
    };
    let sp_mchid = get("sp_mchid", "服务商户号")?;
    let sub_mchid = get("sub_mchid", "子商户号")?;
    if sp_mchid != state.merchant.mchid {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "sp_mchid与Authorization中的商户号不一致",
        )
        .with_detail(json!({"field": "sp_mchid", "location": "query", "value": sp_mchid})));
    }
    bound_sub(state, sub_mchid)?;
    Ok(sub_mchid)
}

fn answer(state: &AppState, order: Option<Order>, sub_mchid: &str) -> Result<Response, V3Error> {
    let (order, partner) = partner_order_of(state, order, sub_mchid)
        .ok_or_else(|| order_error(&OrderError::OrderNotExist))?;
    Ok(axum::Json(transaction_json(&order, &partner)).into_response())
}

async fn query_by_out_trade_no(
    State(state): State<Arc<AppState>>,
    Path(out_trade_no): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let sub_mchid = query_merchants(&state, &query)?;
    answer(&state, state.store.order(&out_trade_no), sub_mchid)
}

async fn query_by_transaction_id(
    State(state): State<Arc<AppState>>,
    Path(transaction_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let sub_mchid = query_merchants(&state, &query)?;
    answer(
        &state,
        state.store.order_by_transaction_id(&transaction_id),
        sub_mchid,
    )
}

async fn close(
    State(state): State<Arc<AppState>>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let sp_mchid = req_str(&v, "/sp_mchid", "服务商户号", 32)?;
    let sub_mchid = req_str(&v, "/sub_mchid", "子商户号", 32)?;
    sp_mismatch(&state, None, sp_mchid)?;
    bound_sub(&state, sub_mchid)?;
    match state.store.order(&out_trade_no) {
        // Closing an unknown number answers 204, as in direct mode.
        None => return Ok(StatusCode::NO_CONTENT.into_response()),
        Some(order) => {
            if partner_order_of(&state, Some(order), sub_mchid).is_none() {
                return Err(order_error(&OrderError::OrderNotExist));
            }
        }
    }
    match state.store.close_order(&out_trade_no) {
        Ok(_) | Err(OrderError::OrderNotExist) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(order_error(&e)),
    }
}

/// Refunds: `sub_mchid` given means a partner refund. The order must belong to that
/// sub-merchant; a partner order refunded without `sub_mchid` is not found, like a direct order
/// refunded with one. Returns the error to answer, if any.
pub(crate) fn check_refund_order(
    state: &AppState,
    sub_mchid: Option<&str>,
    order: OrderRef<'_>,
) -> Result<(), V3Error> {
    let found = match order {
        OrderRef::TransactionId(tx) => state.store.order_by_transaction_id(tx),
        OrderRef::OutTradeNo(no) => state.store.order(no),
    };
    let Some(found) = found else {
        return Ok(()); // the store answers "not found" itself
    };
    let partner = state.partner.order(&found.out_trade_no);
    let ok = match (sub_mchid, partner) {
        (None, None) => true,
        (Some(sub), Some(p)) => {
            bound_sub(state, sub)?;
            p.sub_mchid == sub
        }
        (Some(sub), None) => {
            bound_sub(state, sub)?;
            false
        }
        (None, Some(_)) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(V3Error::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "订单不存在",
        ))
    }
}

/// A refund query: with `sub_mchid` the refund must be of that sub-merchant's order, without
/// it of a direct order.
pub(crate) fn refund_visible(
    state: &AppState,
    sub_mchid: Option<&str>,
    out_trade_no: &str,
) -> bool {
    match (sub_mchid, state.partner.order(out_trade_no)) {
        (None, None) => true,
        (Some(sub), Some(p)) => p.sub_mchid == sub,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Control API

/// `POST /sim/sub-merchants`, `GET /sim/sub-merchants`,
/// `POST /sim/sub-merchants/{sub_mchid}/users` (state applied).
pub fn control_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/sim/sub-merchants",
            post(register_sub_merchant).get(list_sub_merchants),
        )
        .route(
            "/sim/sub-merchants/{sub_mchid}/users",
            post(create_sub_user),
        )
        .with_state(state)
}

fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubMerchant {
    sub_mchid: String,
    #[serde(default)]
    sub_appid: Option<String>,
}

async fn register_sub_merchant(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: NewSubMerchant = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return control_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
        }
    };
    match state.partner.register_sub_merchant(
        &state.merchant.mchid,
        &request.sub_mchid,
        request.sub_appid.as_deref(),
    ) {
        Ok(()) => axum::Json(json!({
            "sp_mchid": state.merchant.mchid,
            "sp_appid": state.merchant.appid,
            "sub_mchid": request.sub_mchid,
            "sub_appid": request.sub_appid,
        }))
        .into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn list_sub_merchants(State(state): State<Arc<AppState>>) -> Response {
    let subs: Vec<Value> = state
        .partner
        .sub_merchants()
        .into_iter()
        .map(|(sub_mchid, sub_appid)| json!({"sub_mchid": sub_mchid, "sub_appid": sub_appid}))
        .collect();
    axum::Json(json!({
        "sp_mchid": state.merchant.mchid,
        "sp_appid": state.merchant.appid,
        "sub_merchants": subs,
    }))
    .into_response()
}

async fn create_sub_user(
    State(state): State<Arc<AppState>>,
    Path(sub_mchid): Path<String>,
) -> Response {
    match state.partner.create_sub_user(&sub_mchid) {
        Ok((sub_appid, openid)) => {
            axum::Json(json!({"sub_appid": sub_appid, "openid": openid})).into_response()
        }
        Err(e) if state.partner.sub_merchant(&sub_mchid).is_none() => {
            control_error(StatusCode::NOT_FOUND, e)
        }
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}
