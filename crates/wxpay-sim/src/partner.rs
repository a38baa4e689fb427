//! Service-provider (服务商, partner) mode: any simulated merchant can act as a provider whose
//! sub-merchants (特约商户) take mini-program payments through its keys.
//!
//! * Sub-merchants are registered through the control API (`POST /sim/sub-merchants
//!   {sp_mchid?, sub_mchid, sub_appid?}`; no `sp_mchid`: the first merchant), each relation
//!   (provider, sub-merchant) optionally bound to the sub-merchant's own mini program
//!   (`sub_appid`). A `sub_appid` may name a mini program of the simulator (`POST /sim/apps`),
//!   whose users (`POST /sim/users {"appid"}`) then pay as `sub_openid`; users of a `sub_appid`
//!   the simulator does not host are minted with `POST /sim/sub-merchants/{sub_mchid}/users`.
//!   Both are kept in the journal (`sub_merchant` lines with `sp_mchid`, absent in old lines
//!   for the first merchant; `sub_user` lines).
//! * A partner order (v3 `/v3/pay/partner/...`, or v2 with `sub_mch_id`) is an ordinary order of
//!   the store (appid = `sp_appid`, mchid = `sp_mchid`,
//!   openid = the payer's `sp_openid` or `sub_openid`, so `out_trade_no` is unique per
//!   provider) plus its partner facts (`sub_mchid`, `sub_appid`, which openid), kept here and
//!   journalled as `partner_order` lines. The direct endpoints do not see partner orders and the
//!   partner endpoints do not see direct ones.
//! * `wx.requestPayment` of a partner order is signed with the provider's key (its merchant API
//!   key for v3, its v2 key for v2) over `sub_appid` when the prepay carried one, else over
//!   `sp_appid` (`/sim/pay` checks it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, MerchantAccount};
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
    /// (sp_mchid, sub_mchid) -> sub_appid.
    sub_merchants: BTreeMap<(String, String), Option<String>>,
    /// openid -> the sub_appid it belongs to.
    sub_users: HashMap<String, String>,
    /// out_trade_no -> partner facts.
    orders: HashMap<String, PartnerOrder>,
}

/// The providers' sub-merchants, their users and the partner facts of orders.
#[derive(Debug, Default)]
pub struct Partner {
    inner: Mutex<Inner>,
    journal: Option<Arc<Journal>>,
    /// The first merchant: the provider of journal lines written before `sp_mchid` existed.
    first_mchid: String,
}

fn valid_id(text: &str, extra: &[u8]) -> bool {
    (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

impl Partner {
    /// In memory only; `first_mchid` is the first merchant's mchid.
    #[must_use]
    pub fn new(first_mchid: &str) -> Self {
        Self {
            first_mchid: first_mchid.to_owned(),
            ..Self::default()
        }
    }

    /// Restored from the journal read at start; later changes are appended to it. A
    /// `sub_merchant` line without `sp_mchid` is the first merchant's (`first_mchid`).
    #[must_use]
    pub fn persistent(first_mchid: &str, journal: Arc<Journal>, entries: &[Entry]) -> Self {
        let mut inner = Inner::default();
        for entry in entries {
            match entry {
                Entry::SubMerchant(line) => {
                    let sp = line
                        .sp_mchid
                        .clone()
                        .unwrap_or_else(|| first_mchid.to_owned());
                    inner
                        .sub_merchants
                        .insert((sp, line.sub_mchid.clone()), line.sub_appid.clone());
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
            first_mchid: first_mchid.to_owned(),
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
        self.lock().sub_merchants.insert(
            (sp_mchid.to_owned(), sub_mchid.to_owned()),
            sub_appid.map(str::to_owned),
        );
        // The first merchant's lines keep the old shape (no `sp_mchid`), so that they read the
        // same in any version.
        self.append(&Entry::SubMerchant(SubMerchantLine {
            sp_mchid: (sp_mchid != self.first_mchid).then(|| sp_mchid.to_owned()),
            sub_mchid: sub_mchid.to_owned(),
            sub_appid: sub_appid.map(str::to_owned),
        }));
        Ok(())
    }

    /// The `sub_appid` of the sub-merchant of the provider `sp_mchid`: `None` when it is not
    /// registered under that provider, `Some(None)` when it has no mini program of its own.
    #[must_use]
    pub fn sub_merchant(&self, sp_mchid: &str, sub_mchid: &str) -> Option<Option<String>> {
        self.lock()
            .sub_merchants
            .get(&(sp_mchid.to_owned(), sub_mchid.to_owned()))
            .cloned()
    }

    /// Every sub-merchant of the provider `sp_mchid` and its `sub_appid`.
    #[must_use]
    pub fn sub_merchants(&self, sp_mchid: &str) -> Vec<(String, Option<String>)> {
        self.lock()
            .sub_merchants
            .iter()
            .filter(|((sp, _), _)| sp == sp_mchid)
            .map(|((_, sub), v)| (sub.clone(), v.clone()))
            .collect()
    }

    /// Mints a user of the mini program of the sub-merchant `sub_mchid` of the provider
    /// `sp_mchid` (one the simulator does not host) and returns `(sub_appid, openid)`.
    ///
    /// # Errors
    /// When the sub-merchant is unknown or has no `sub_appid`.
    pub fn create_sub_user(
        &self,
        sp_mchid: &str,
        sub_mchid: &str,
    ) -> Result<(String, String), String> {
        let mut inner = self.lock();
        let key = (sp_mchid.to_owned(), sub_mchid.to_owned());
        let sub_appid = match inner.sub_merchants.get(&key) {
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

    /// The partner orders whose prepay carried `sub_appid` (paid or not), by `out_trade_no`.
    #[must_use]
    pub fn orders_of_sub_appid(&self, sub_appid: &str) -> Vec<String> {
        self.lock()
            .orders
            .iter()
            .filter(|(_, o)| o.sub_appid.as_deref() == Some(sub_appid))
            .map(|(no, _)| no.clone())
            .collect()
    }

    /// Whether an order was made in partner mode.
    #[must_use]
    pub fn is_partner_order(&self, out_trade_no: &str) -> bool {
        self.lock().orders.contains_key(out_trade_no)
    }

    /// Keeps the partner facts of an order (journalled when they change).
    pub(crate) fn record_order(&self, out_trade_no: &str, order: &PartnerOrder) {
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

/// The request's provider must be the authenticated merchant (the one whose key signed it),
/// and `sp_appid` a mini program bound to it.
fn sp_mismatch(
    state: &AppState,
    merchant: &MerchantAccount,
    sp_appid: Option<&str>,
    sp_mchid: &str,
    location: &str,
) -> Result<(), V3Error> {
    if sp_mchid != merchant.mchid() {
        return Err(header_mismatch(sp_mchid, location));
    }
    if sp_appid.is_some_and(|a| !state.is_bound(a, sp_mchid)) {
        return Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "sp_appid和sp_mchid不匹配",
        ));
    }
    Ok(())
}

/// `sp_mchid` other than the `Authorization` mchid: the message WeChat answers (a capture in
/// fudiwei/DotNetCore.SKIT.FlurlHttpClient.Wechat#205, on a partner query).
fn header_mismatch(sp_mchid: &str, location: &str) -> V3Error {
    V3Error::new(
        StatusCode::BAD_REQUEST,
        "PARAM_ERROR",
        "http header中的mchid与post payload中的mchid不匹配",
    )
    .with_detail(json!({"field": "sp_mchid", "location": location, "value": sp_mchid}))
}

/// The sub-merchant must be registered under the provider `sp_mchid`.
fn bound_sub(state: &AppState, sp_mchid: &str, sub_mchid: &str) -> Result<Option<String>, V3Error> {
    state
        .partner
        .sub_merchant(sp_mchid, sub_mchid)
        .ok_or_else(|| no_relation(sub_mchid))
}

/// `sub_mchid` must name a sub-merchant of the provider `sp_mchid` (`受理关系不存在` otherwise).
pub(crate) fn check_bound(
    state: &AppState,
    sp_mchid: &str,
    sub_mchid: &str,
) -> Result<(), V3Error> {
    bound_sub(state, sp_mchid, sub_mchid).map(|_| ())
}

/// Whether `openid` is a user of the mini program `appid`: a user of a mini program the
/// simulator hosts (`POST /sim/users {"appid"}`), or one minted for a sub-merchant's
/// `sub_appid` (`POST /sim/sub-merchants/{sub_mchid}/users`).
#[must_use]
pub fn is_user_of(state: &AppState, appid: &str, openid: &str) -> bool {
    state.has_user(appid, openid) || state.partner.sub_user_appid(openid).as_deref() == Some(appid)
}

/// The openid a `sub_openid` payer has under the provider's `sp_appid`, as the v2 answers and
/// notifications carry it (`openid` is always there in v2). The simulator knows the user only
/// under `sub_appid`, so it derives a stable openid of WeChat's shape from both.
#[must_use]
pub fn provider_openid(sp_appid: &str, sub_openid: &str) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{sp_appid}\n{sub_openid}").as_bytes(),
    );
    let mut openid = String::from("o");
    openid
        .push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..20]));
    openid
}

/// Whether an order is visible to a request: with `sub_mchid` only that sub-merchant's partner
/// orders are, without it only direct orders (the provider's own).
#[must_use]
pub fn visible_to(state: &AppState, sub_mchid: Option<&str>, out_trade_no: &str) -> bool {
    match (sub_mchid, state.partner.order(out_trade_no)) {
        (None, None) => true,
        (Some(sub), Some(p)) => p.sub_mchid == sub,
        _ => false,
    }
}

/// The order, if it is a partner order of the sub-merchant `sub_mchid` of `sp_mchid`.
fn partner_order_of(
    state: &AppState,
    order: Option<Order>,
    sp_mchid: &str,
    sub_mchid: &str,
) -> Option<(Order, PartnerOrder)> {
    let order = order?;
    if order.mchid != sp_mchid {
        return None;
    }
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

async fn jsapi(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    body: Bytes,
) -> Result<Response, V3Error> {
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
    sp_mismatch(&state, &merchant, Some(sp_appid), sp_mchid, "body")?;
    let bound_appid = bound_sub(&state, sp_mchid, sub_mchid)?;
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
        if !sub_appid.is_some_and(|a| is_user_of(&state, a, openid)) {
            return Err(openid_mismatch("/payer/sub_openid", openid));
        }
    } else if !is_user_of(&state, sp_appid, openid) {
        return Err(openid_mismatch("/payer/sp_openid", openid));
    }
    let facts = PartnerOrder {
        sub_mchid: sub_mchid.to_owned(),
        sub_appid: sub_appid.map(str::to_owned),
        sub_payer,
    };
    // out_trade_no is unique per provider (and, in the simulator, across merchants): a direct
    // order, another sub-merchant's order or another merchant's order with this number is a
    // reuse.
    if state.store.order(out_trade_no).is_some_and(|o| {
        o.mchid != sp_mchid || state.partner.order(out_trade_no).as_ref() != Some(&facts)
    }) {
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
    merchant: &MerchantAccount,
    query: &'a HashMap<String, String>,
) -> Result<(&'a str, &'a str), V3Error> {
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
    if sp_mchid != merchant.mchid() {
        return Err(header_mismatch(sp_mchid, "query"));
    }
    bound_sub(state, sp_mchid, sub_mchid)?;
    Ok((sp_mchid, sub_mchid))
}

fn answer(
    state: &AppState,
    order: Option<Order>,
    (sp_mchid, sub_mchid): (&str, &str),
) -> Result<Response, V3Error> {
    let (order, partner) = partner_order_of(state, order, sp_mchid, sub_mchid)
        .ok_or_else(|| order_error(&OrderError::OrderNotExist))?;
    Ok(axum::Json(transaction_json(&order, &partner)).into_response())
}

async fn query_by_out_trade_no(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_trade_no): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let ids = query_merchants(&state, &merchant, &query)?;
    answer(&state, state.store.order(&out_trade_no), ids)
}

async fn query_by_transaction_id(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(transaction_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    let ids = query_merchants(&state, &merchant, &query)?;
    answer(
        &state,
        state.store.order_by_transaction_id(&transaction_id),
        ids,
    )
}

async fn close(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let sp_mchid = req_str(&v, "/sp_mchid", "服务商户号", 32)?;
    let sub_mchid = req_str(&v, "/sub_mchid", "子商户号", 32)?;
    sp_mismatch(&state, &merchant, None, sp_mchid, "body")?;
    bound_sub(&state, sp_mchid, sub_mchid)?;
    match state.store.order(&out_trade_no) {
        // Closing an unknown number (or another merchant's) answers 204, as in direct mode.
        None => return Ok(StatusCode::NO_CONTENT.into_response()),
        Some(order) if order.mchid != sp_mchid => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(order) => {
            if partner_order_of(&state, Some(order), sp_mchid, sub_mchid).is_none() {
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
    sp_mchid: &str,
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
            bound_sub(state, sp_mchid, sub)?;
            p.sub_mchid == sub
        }
        (Some(sub), None) => {
            bound_sub(state, sp_mchid, sub)?;
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
    visible_to(state, sub_mchid, out_trade_no)
}

// ---------------------------------------------------------------------------------------------
// Control API

/// `POST /sim/sub-merchants`, `GET /sim/sub-merchants?sp_mchid=`,
/// `POST /sim/sub-merchants/{sub_mchid}/users?sp_mchid=` (state applied). Without `sp_mchid`
/// the provider is the first merchant.
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
    #[serde(default)]
    sp_mchid: Option<String>,
    sub_mchid: String,
    #[serde(default)]
    sub_appid: Option<String>,
}

/// The provider named by `sp_mchid` (none: the first merchant); an unknown one is a 400.
fn provider(state: &AppState, sp_mchid: Option<&str>) -> Result<Arc<MerchantAccount>, String> {
    match sp_mchid.filter(|m| !m.is_empty()) {
        None => Ok(state.first_merchant()),
        Some(m) => state
            .merchant_account(m)
            .ok_or_else(|| format!("no merchant {m}")),
    }
}

async fn register_sub_merchant(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: NewSubMerchant = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return control_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
        }
    };
    let sp = match provider(&state, request.sp_mchid.as_deref()) {
        Ok(sp) => sp,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match state.partner.register_sub_merchant(
        sp.mchid(),
        &request.sub_mchid,
        request.sub_appid.as_deref(),
    ) {
        Ok(()) => axum::Json(json!({
            "sp_mchid": sp.mchid(),
            "sp_appid": sp.credentials.appid,
            "sub_mchid": request.sub_mchid,
            "sub_appid": request.sub_appid,
            // Whether sub_appid is a mini program the simulator hosts (its users come from
            // `POST /sim/users {"appid"}` and log in through its `jscode2session`).
            "sub_app_hosted": request.sub_appid.as_deref().is_some_and(|a| state.app(a).is_some()),
        }))
        .into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn list_sub_merchants(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let sp = match provider(&state, query.get("sp_mchid").map(String::as_str)) {
        Ok(sp) => sp,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let subs: Vec<Value> = state
        .partner
        .sub_merchants(sp.mchid())
        .into_iter()
        .map(|(sub_mchid, sub_appid)| json!({"sub_mchid": sub_mchid, "sub_appid": sub_appid}))
        .collect();
    axum::Json(json!({
        "sp_mchid": sp.mchid(),
        "sp_appid": sp.credentials.appid,
        "sub_merchants": subs,
    }))
    .into_response()
}

/// A user of the sub-merchant's mini program: for a `sub_appid` the simulator hosts, a user of
/// that mini program (with its `wx.login` code and user key, as `POST /sim/users` answers);
/// else an openid kept for the sub-merchant.
async fn create_sub_user(
    State(state): State<Arc<AppState>>,
    Path(sub_mchid): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let sp = match provider(&state, query.get("sp_mchid").map(String::as_str)) {
        Ok(sp) => sp,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let hosted = state
        .partner
        .sub_merchant(sp.mchid(), &sub_mchid)
        .flatten()
        .and_then(|a| state.app(&a));
    if let Some(app) = hosted {
        return match app.mp.new_user(None) {
            Ok(user) => axum::Json(json!({
                "sub_appid": app.mp.appid(),
                "openid": user.openid,
                "code": user.code,
                "user_key": user.user_key,
            }))
            .into_response(),
            Err(e) => control_error(StatusCode::BAD_REQUEST, e),
        };
    }
    match state.partner.create_sub_user(sp.mchid(), &sub_mchid) {
        Ok((sub_appid, openid)) => {
            axum::Json(json!({"sub_appid": sub_appid, "openid": openid})).into_response()
        }
        Err(e) if state.partner.sub_merchant(sp.mchid(), &sub_mchid).is_none() => {
            control_error(StatusCode::NOT_FOUND, e)
        }
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}
