//! Trade management (小程序发货信息管理服务) of every simulated mini program: each paid order is
//! managed under the AppID of the mini program that paid it (a partner order with a
//! `sub_appid` under the `sub_appid`, else under the order's AppID). Served on WeChat's paths
//! (`/wxa/sec/order/*`, `/cgi-bin/express/delivery/open_msg/get_delivery_list`): a call acts
//! for the mini program that issued its access token, and sees only that mini program's
//! payments. The buyer's confirmation is on the control API
//! (`POST /sim/orders/{out_trade_no}/confirm-receipt`), and so is whether a mini program is
//! under trade management (`PUT /sim/mp/trade-management {"appid","managed"}`).
//!
//! States (`order_state`): 1 awaiting shipment → 2 shipped (every package uploaded) → receipt
//! confirmed, by the buyer or automatically → 4 settled; 5 refunded (fully refunded before
//! settlement). Rules where WeChat is not documented (each one a rule of this simulator):
//!
//! * Automatic confirmation: 10 days after the shipment for express, 2 days for same-city,
//!   virtual goods and self-pickup, on the simulator's business clock (`/sim/clock/advance`),
//!   evaluated whenever the order is read or changed. No complaint ever delays it.
//! * Settlement happens at once on confirmation, so state 3 is not observable and state 6 is
//!   never used.
//! * Orders are managed from payment (no indexing delay). Every mini program is under trade
//!   management until `PUT /sim/mp/trade-management {"appid","managed":false}` takes it out
//!   (in memory, like the push settings: set it again after a restart); the payments of a mini
//!   program outside it answer `10060001` to every call, `is_trade_managed` answers `false`.
//! * A partner order is found by `order_key.mchid` / `merchant_id` of the provider or of the
//!   sub-merchant, and shows its `sub_merchant_id`.
//! * Re-shipping: an upload on a shipped order replaces its packages once
//!   (`finish_shipping_count` 2); a third time answers `10060003`; an identical upload answers
//!   `10060023` without using the chance. The automatic-confirmation delay still counts from
//!   the first shipment.
//! * An SF Express package without a contact, an `upload_time` not later than the previous
//!   upload's, a missing `payer.openid` or `item_desc` of the wrong type answer `10060014`.
//! * `get_order_list`: `last_index` is the position after the previous page (opaque to
//!   clients); `page_size` 1 to 100 (default 100), others `10060014`.
//! * `opspecialorder`: only before any package is uploaded; the report is recorded (shown by
//!   `GET /sim/orders/{no}`) and changes nothing else (no shipping deadline is simulated).
//! * `upload_combined_shipping_info`: the simulator has no combined payments (合单支付), so the
//!   fields are checked as for `upload_shipping_info` (and every sub-order's `order_key` must
//!   use the parent's `order_number_type`), then any combined order answers `10060001`.
//! * The settlement events are pushed by [`crate::mp_push`] when an order finishes shipping and
//!   when it settles; automatic confirmations are found by [`run_ticker`].
//!
//! Each change appends the whole record to the journal (`trade` lines).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wxpay::nonce::Clock as _;

use crate::app::AppState;
use crate::journal::{Entry, Journal};
use crate::state::{Order, parse_rfc3339};

/// Automatic confirmation of express shipments, in seconds after the shipment (10 days).
pub const EXPRESS_CONFIRM_SECS: i64 = 10 * 86_400;
/// Automatic confirmation of other shipments, in seconds after the shipment (2 days).
pub const OTHER_CONFIRM_SECS: i64 = 2 * 86_400;
/// The most packages of an order.
pub const MAX_PACKAGES: usize = 15;

/// One uploaded package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// `tracking_no`.
    pub tracking_no: String,
    /// `express_company`.
    pub express_company: String,
    /// `item_desc` (shown as `goods_desc`).
    pub item_desc: String,
    /// `contact.consignor_contact`.
    pub consignor_contact: Option<String>,
    /// `contact.receiver_contact`.
    pub receiver_contact: Option<String>,
    /// When it was uploaded (simulated Unix seconds).
    pub upload_time: i64,
}

/// The trade-management record of a paid order (a `trade` journal line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeLine {
    /// The order.
    pub out_trade_no: String,
    /// `logistics_type` of the last upload (0 before).
    pub logistics_type: u8,
    /// `delivery_mode` of the last upload (0 before).
    pub delivery_mode: u8,
    /// Every package is uploaded.
    pub finish_shipping: bool,
    /// 0 not finished, 1 finished, 2 re-shipped.
    pub finish_shipping_count: u8,
    /// The packages.
    pub packages: Vec<Package>,
    /// The `upload_time` of the last upload (Unix seconds).
    pub last_upload_time: Option<i64>,
    /// When shipping finished the first time (simulated clock).
    pub shipped_at: Option<i64>,
    /// When receipt was confirmed.
    pub confirmed_at: Option<i64>,
    /// 1 automatic, 2 by the buyer (the documented mapping).
    pub confirm_method: Option<u8>,
    /// Whether the confirm-receipt reminder was sent.
    pub reminded: bool,
    /// The special-order report (`opspecialorder`): 1 pre-sale, 2 test order.
    #[serde(default)]
    pub special_type: Option<u8>,
    /// The pre-sale's `delay_to` (Unix seconds).
    #[serde(default)]
    pub delay_to: Option<i64>,
}

impl TradeLine {
    fn new(out_trade_no: &str) -> Self {
        TradeLine {
            out_trade_no: out_trade_no.to_owned(),
            ..TradeLine::default()
        }
    }

    /// Confirms automatically when the delay is over at `now`; whether it changed.
    fn advance(&mut self, now: i64) -> bool {
        match (self.shipped_at, self.confirmed_at) {
            (Some(shipped), None) if self.finish_shipping => {
                let delay = if self.logistics_type == 1 {
                    EXPRESS_CONFIRM_SECS
                } else {
                    OTHER_CONFIRM_SECS
                };
                if now >= shipped + delay {
                    self.confirmed_at = Some(shipped + delay);
                    self.confirm_method = Some(1);
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }
}

/// The trade-management records, by `out_trade_no`.
#[derive(Debug, Default)]
pub struct TradeManagement {
    records: Mutex<HashMap<String, TradeLine>>,
    journal: Option<Arc<Journal>>,
    /// The mini programs taken out of trade management (in memory).
    unmanaged: Mutex<HashSet<String>>,
}

impl TradeManagement {
    /// In memory only.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Restored from the journal read at start; later changes are appended to it.
    #[must_use]
    pub fn persistent(journal: Arc<Journal>, entries: &[Entry]) -> Self {
        let mut records = HashMap::new();
        for entry in entries {
            if let Entry::Trade(line) = entry {
                records.insert(line.out_trade_no.clone(), line.clone());
            }
        }
        Self {
            records: Mutex::new(records),
            journal: Some(journal),
            unmanaged: Mutex::default(),
        }
    }

    /// Whether the mini program `appid` is under trade management (every one is, unless taken
    /// out with [`TradeManagement::set_managed`]).
    #[must_use]
    pub fn is_managed(&self, appid: &str) -> bool {
        !self
            .unmanaged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(appid)
    }

    /// Puts the mini program `appid` under trade management, or takes it out.
    pub fn set_managed(&self, appid: &str, managed: bool) {
        let mut unmanaged = self
            .unmanaged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if managed {
            unmanaged.remove(appid);
        } else {
            unmanaged.insert(appid.to_owned());
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TradeLine>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of an order as it is at `now` (automatic confirmation applied and kept), and
    /// whether this call confirmed it (exactly one caller sees `true`).
    pub fn record_at(&self, out_trade_no: &str, now: i64) -> (TradeLine, bool) {
        let mut records = self.lock();
        let Some(record) = records.get_mut(out_trade_no) else {
            return (TradeLine::new(out_trade_no), false);
        };
        let changed = record.advance(now);
        if changed {
            self.append(record);
        }
        (record.clone(), changed)
    }

    /// The orders shipped and not yet confirmed.
    #[must_use]
    pub fn awaiting_receipt(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|r| r.finish_shipping && r.confirmed_at.is_none())
            .map(|r| r.out_trade_no.clone())
            .collect()
    }

    fn store(&self, record: TradeLine) {
        self.append(&record);
        self.lock().insert(record.out_trade_no.clone(), record);
    }

    fn append(&self, record: &TradeLine) {
        if let Some(journal) = &self.journal {
            journal.append(&Entry::Trade(record.clone()));
        }
    }
}

/// The record of an order now; an automatic confirmation this call makes is pushed.
pub fn current(state: &AppState, order: &Order) -> TradeLine {
    let (record, confirmed) = state
        .trade
        .record_at(&order.out_trade_no, state.clock.now());
    if confirmed {
        push_settled(state, order, &record);
    }
    record
}

/// The mini program that paid an order: a partner order's `sub_appid` when its prepay carried
/// one, else the order's AppID. Its trade management holds the order.
#[must_use]
pub fn paying_appid(state: &AppState, order: &Order) -> String {
    state
        .partner
        .order(&order.out_trade_no)
        .and_then(|p| p.sub_appid)
        .unwrap_or_else(|| order.appid.clone())
}

/// Whether a paid order is managed (its paying mini program is under trade management).
#[must_use]
pub fn is_managed_order(state: &AppState, order: &Order) -> bool {
    order.success_time.is_some() && state.trade.is_managed(&paying_appid(state, order))
}

/// Confirms the orders whose delay is over (and pushes their settlement) every 200 ms of real
/// time, until shutdown.
pub async fn run_ticker(state: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
        for out_trade_no in state.trade.awaiting_receipt() {
            if let Some(order) = state.store.order(&out_trade_no) {
                current(&state, &order);
            }
        }
    }
}

fn sub_merchant_id(state: &AppState, order: &Order) -> String {
    state
        .partner
        .order(&order.out_trade_no)
        .map(|p| p.sub_mchid)
        .unwrap_or_default()
}

fn order_ids(state: &AppState, order: &Order) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(
        "transaction_id".into(),
        json!(order.transaction_id.clone().unwrap_or_default()),
    );
    fields.insert("merchant_id".into(), json!(order.mchid));
    let sub = sub_merchant_id(state, order);
    if !sub.is_empty() {
        fields.insert("sub_merchant_id".into(), json!(sub));
    }
    fields.insert("merchant_trade_no".into(), json!(order.out_trade_no));
    fields.insert(
        "pay_time".into(),
        json!(order.success_time.unwrap_or_default()),
    );
    fields
}

fn confirm_delay(record: &TradeLine) -> i64 {
    if record.logistics_type == 1 {
        EXPRESS_CONFIRM_SECS
    } else {
        OTHER_CONFIRM_SECS
    }
}

/// `trade_manage_order_settlement` when shipping completes.
fn push_shipped(state: &AppState, order: &Order, record: &TradeLine) {
    let shipped = record.shipped_at.unwrap_or_default();
    let mut fields = order_ids(state, order);
    fields.insert("shipped_time".into(), json!(shipped));
    fields.insert(
        "estimated_settlement_time".into(),
        json!(shipped + confirm_delay(record)),
    );
    state.mp_push.send(
        state,
        &paying_appid(state, order),
        "trade_manage_order_settlement",
        fields,
    );
}

/// `trade_manage_order_settlement` when the order settles.
fn push_settled(state: &AppState, order: &Order, record: &TradeLine) {
    let mut fields = order_ids(state, order);
    fields.insert(
        "shipped_time".into(),
        json!(record.shipped_at.unwrap_or_default()),
    );
    fields.insert(
        "confirm_receive_method".into(),
        json!(record.confirm_method.unwrap_or(1)),
    );
    fields.insert(
        "confirm_receive_time".into(),
        json!(record.confirmed_at.unwrap_or_default()),
    );
    fields.insert(
        "settlement_time".into(),
        json!(record.confirmed_at.unwrap_or_default()),
    );
    state.mp_push.send(
        state,
        &paying_appid(state, order),
        "trade_manage_order_settlement",
        fields,
    );
}

/// `order_state` of an order and its record.
#[must_use]
pub fn order_state(order: &Order, record: &TradeLine) -> u8 {
    if record.confirmed_at.is_some() {
        4
    } else if order.refunded >= order.total && order.refunded > 0 {
        5
    } else if record.finish_shipping {
        2
    } else {
        1
    }
}

/// The `order` object of `get_order`.
#[must_use]
pub fn order_json(state: &AppState, order: &Order, record: &TradeLine) -> Value {
    let list: Vec<Value> = record
        .packages
        .iter()
        .map(|p| {
            let mut contact = Map::new();
            if let Some(c) = &p.consignor_contact {
                contact.insert("consignor_contact".into(), c.clone().into());
            }
            if let Some(c) = &p.receiver_contact {
                contact.insert("receiver_contact".into(), c.clone().into());
            }
            json!({
                "tracking_no": p.tracking_no,
                "express_company": p.express_company,
                "goods_desc": p.item_desc,
                "upload_time": p.upload_time,
                "contact": contact,
            })
        })
        .collect();
    json!({
        "transaction_id": order.transaction_id.clone().unwrap_or_default(),
        "merchant_id": order.mchid,
        "sub_merchant_id": sub_merchant_id(state, order),
        "merchant_trade_no": order.out_trade_no,
        "description": order.description,
        "paid_amount": order.total,
        "openid": order.openid,
        "trade_create_time": order.created_at,
        "pay_time": order.success_time.unwrap_or_default(),
        "order_state": order_state(order, record),
        "in_complaint": false,
        "shipping": {
            "delivery_mode": record.delivery_mode,
            "logistics_type": record.logistics_type,
            "finish_shipping": record.finish_shipping,
            "goods_desc": "",
            "finish_shipping_count": record.finish_shipping_count,
            "shipping_list": list,
        },
    })
}

/// Adds `trade_management` to the control API's view of an order (`GET /sim/orders/{no}`) when
/// the order is managed: `order_state`, the shipping as `get_order` shows it, and when it
/// shipped, was confirmed (`confirm_method` 1 automatic, 2 buyer) and settled.
pub fn annotate(state: &AppState, order: &Order, answer: &mut Value) {
    if !is_managed_order(state, order) {
        return;
    }
    let record = current(state, order);
    let view = order_json(state, order, &record);
    if let Value::Object(map) = answer {
        map.insert(
            "trade_management".into(),
            json!({
                "order_state": view["order_state"],
                "shipping": view["shipping"],
                "shipped_at": record.shipped_at,
                "confirmed_at": record.confirmed_at,
                "confirm_method": record.confirm_method,
                "settled_at": record.confirmed_at,
                "special_type": record.special_type,
                "delay_to": record.delay_to,
                "appid": paying_appid(state, order),
            }),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// WeChat's side

struct WxError(i64, &'static str);

impl IntoResponse for WxError {
    fn into_response(self) -> Response {
        let rid = format!(
            "{:08x}-{:08x}-{:08x}",
            rand::random::<u32>(),
            rand::random::<u32>(),
            rand::random::<u32>()
        );
        axum::Json(json!({"errcode": self.0, "errmsg": format!("{} rid: {rid}", self.1)}))
            .into_response()
    }
}

const DATA_FORMAT: WxError = WxError(47001, "data format error");
const PARAM: WxError = WxError(10060014, "参数错误");

/// The routes of `api.weixin.qq.com` for trade management (state applied).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/wxa/sec/order/upload_shipping_info", post(upload))
        .route(
            "/wxa/sec/order/upload_combined_shipping_info",
            post(upload_combined),
        )
        .route("/wxa/sec/order/get_order", post(get_order))
        .route("/wxa/sec/order/get_order_list", post(get_order_list))
        .route(
            "/wxa/sec/order/notify_confirm_receive",
            post(notify_confirm),
        )
        .route("/wxa/sec/order/set_msg_jump_path", post(set_jump_path))
        .route("/wxa/sec/order/opspecialorder", post(special_order))
        .route("/wxa/sec/order/is_trade_managed", post(is_managed))
        .route(
            "/wxa/sec/order/is_trade_management_confirmation_completed",
            post(is_completed),
        )
        .route(
            "/cgi-bin/express/delivery/open_msg/get_delivery_list",
            post(delivery_list),
        )
        .with_state(state)
}

/// The control routes (state applied; the caller adds the control token's check):
/// `POST /sim/orders/{out_trade_no}/confirm-receipt`, `PUT /sim/mp/push`, `GET /sim/mp/pushes`,
/// `PUT /sim/mp/trade-management`.
pub fn control_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/sim/orders/{out_trade_no}/confirm-receipt",
            post(confirm_receipt),
        )
        .route(
            "/sim/mp/push",
            axum::routing::put(crate::mp_push::put_settings),
        )
        .route("/sim/mp/pushes", axum::routing::get(crate::mp_push::list))
        .route(
            "/sim/mp/trade-management",
            axum::routing::put(put_trade_management),
        )
        .with_state(state)
}

/// A call's body and the mini program it acts for.
struct Call {
    /// The AppID of the mini program that issued the access token.
    appid: String,
    body: Map<String, Value>,
}

/// The token check and the JSON object body of every call: the call acts for the mini program
/// that issued its access token (an unknown token is refused by the first one, as WeChat does).
fn begin(
    state: &AppState,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: &[u8],
) -> Result<Call, Box<Response>> {
    let query = query
        .map(|Query(q)| q)
        .map_err(|_| Box::new(WxError(40097, "invalid args").into_response()))?;
    let app = query
        .get("access_token")
        .and_then(|t| state.app_by_token(t))
        .unwrap_or_else(|| state.first_app());
    app.mp.authorize(&query)?;
    let appid = app.mp.appid().to_owned();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Box::new(WxError(44002, "empty post data").into_response()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(body)) => Ok(Call { appid, body }),
        _ => Err(Box::new(DATA_FORMAT.into_response())),
    }
}

fn ok() -> Response {
    axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response()
}

fn int(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, WxError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(DATA_FORMAT),
        Some(_) => Err(DATA_FORMAT),
    }
}

fn text<'a>(map: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, WxError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DATA_FORMAT),
    }
}

const NOT_FOUND: WxError = WxError(10060001, "支付单不存在");

/// A paid order of the mini program `appid` under trade management, or `10060001`.
fn managed_order(state: &AppState, appid: &str, order: Option<Order>) -> Result<Order, WxError> {
    order
        .filter(|o| {
            o.success_time.is_some()
                && state.trade.is_managed(appid)
                && paying_appid(state, o) == appid
        })
        .ok_or(NOT_FOUND)
}

/// Whether `mchid` names the order's merchant: the provider or, for a partner order, the
/// sub-merchant.
fn of_merchant(state: &AppState, order: &Order, mchid: &str) -> bool {
    order.mchid == mchid
        || state
            .partner
            .order(&order.out_trade_no)
            .is_some_and(|p| p.sub_mchid == mchid)
}

/// The checked fields of an `order_key`: its `order_number_type` and the ids it names
/// (`transaction_id`, or `mchid` and `out_trade_no`).
enum KeyIds<'a> {
    Transaction(&'a str),
    Merchant(&'a str, &'a str),
}

impl KeyIds<'_> {
    fn number_type(&self) -> u8 {
        match self {
            KeyIds::Merchant(..) => 1,
            KeyIds::Transaction(_) => 2,
        }
    }
}

fn key_ids(key: &Map<String, Value>) -> Result<KeyIds<'_>, WxError> {
    match int(key, "order_number_type")? {
        Some(2) => Ok(KeyIds::Transaction(
            text(key, "transaction_id")?
                .filter(|s| !s.is_empty())
                .ok_or(WxError(268485195, "transaction_id is required"))?,
        )),
        Some(1) => {
            let mchid = text(key, "mchid")?
                .filter(|s| !s.is_empty())
                .ok_or(WxError(268485196, "mchid is required"))?;
            let no = text(key, "out_trade_no")?
                .filter(|s| !s.is_empty())
                .ok_or(WxError(268485197, "out_trade_no is required"))?;
            Ok(KeyIds::Merchant(mchid, no))
        }
        _ => Err(WxError(268485194, "order_number_type 非法")),
    }
}

fn find_by_key(state: &AppState, appid: &str, key: &Map<String, Value>) -> Result<Order, WxError> {
    let order = match key_ids(key)? {
        KeyIds::Transaction(id) => state.store.order_by_transaction_id(id),
        KeyIds::Merchant(mchid, no) => state
            .store
            .order(no)
            .filter(|o| of_merchant(state, o, mchid)),
    };
    managed_order(state, appid, order)
}

fn find_by_ref(state: &AppState, appid: &str, body: &Map<String, Value>) -> Result<Order, WxError> {
    if let Some(id) = text(body, "transaction_id")?.filter(|s| !s.is_empty()) {
        return managed_order(state, appid, state.store.order_by_transaction_id(id));
    }
    let mchid = text(body, "merchant_id")?.filter(|s| !s.is_empty());
    let no = text(body, "merchant_trade_no")?.filter(|s| !s.is_empty());
    match (mchid, no) {
        (Some(mchid), Some(no)) => managed_order(
            state,
            appid,
            state
                .store
                .order(no)
                .filter(|o| of_merchant(state, o, mchid)),
        ),
        _ => Err(PARAM),
    }
}

struct Upload {
    logistics_type: u8,
    delivery_mode: u8,
    is_all_delivered: Option<bool>,
    packages: Vec<Package>,
    upload_time: i64,
}

/// The shipment of `body` (an upload, or a sub-order of a combined upload), with the
/// `upload_time` of `top` (the upload itself).
fn parse_upload(
    body: &Map<String, Value>,
    top: &Map<String, Value>,
    now: i64,
) -> Result<Upload, WxError> {
    let logistics_type = match int(body, "logistics_type")? {
        Some(n @ 1..=4) => u8::try_from(n).map_err(|_| DATA_FORMAT)?,
        _ => return Err(WxError(10060005, "物流类型有误")),
    };
    let delivery_mode = match int(body, "delivery_mode")? {
        Some(n @ 1..=2) => u8::try_from(n).map_err(|_| DATA_FORMAT)?,
        _ => return Err(WxError(268485224, "delivery_mode 非法")),
    };
    let is_all_delivered = match body.get("is_all_delivered") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(DATA_FORMAT),
    };
    if delivery_mode == 2 && logistics_type != 1 {
        return Err(WxError(10060006, "非快递发货时不允许分拆发货"));
    }
    if delivery_mode == 2 && is_all_delivered.is_none() {
        return Err(WxError(10060007, "分拆发货模式下必须填写 is_all_delivered"));
    }
    let list = match body.get("shipping_list") {
        Some(Value::Array(list)) => list,
        None => return Err(PARAM),
        Some(_) => return Err(DATA_FORMAT),
    };
    if list.is_empty() {
        return Err(PARAM);
    }
    if list.len() > MAX_PACKAGES {
        return Err(WxError(10060024, "物流信息列表太长"));
    }
    if delivery_mode == 1 && list.len() != 1 {
        return Err(WxError(268485228, "统一发货模式下物流信息列表长度必须为1"));
    }
    let upload_time = text(top, "upload_time")?
        .and_then(parse_rfc3339)
        .ok_or(WxError(268485216, "upload_time 非法"))?;
    let mut packages = Vec::with_capacity(list.len());
    for item in list {
        let Value::Object(item) = item else {
            return Err(DATA_FORMAT);
        };
        let desc = text(item, "item_desc")?.unwrap_or_default();
        if desc.trim().is_empty() {
            return Err(WxError(10060008, "商品描述为空"));
        }
        if desc.chars().count() > 120 {
            return Err(WxError(10060009, "商品描述过长"));
        }
        let tracking_no = text(item, "tracking_no")?.unwrap_or_default();
        let company = text(item, "express_company")?.unwrap_or_default();
        if logistics_type == 1 {
            if tracking_no.is_empty() {
                return Err(WxError(268485226, "物流单号不能为空"));
            }
            if company.is_empty() {
                return Err(WxError(268485227, "物流公司编码不能为空"));
            }
        }
        if company.len() > 128 {
            return Err(WxError(10060025, "物流公司编码过长"));
        }
        if tracking_no.len() > 128 {
            return Err(WxError(10060026, "物流单号过长"));
        }
        let (consignor, receiver) = match item.get("contact") {
            None => (None, None),
            Some(Value::Object(c)) => (
                text(c, "consignor_contact")?.map(str::to_owned),
                text(c, "receiver_contact")?.map(str::to_owned),
            ),
            Some(_) => return Err(DATA_FORMAT),
        };
        if company == "SF" && consignor.is_none() && receiver.is_none() {
            return Err(PARAM);
        }
        packages.push(Package {
            tracking_no: tracking_no.to_owned(),
            express_company: company.to_owned(),
            item_desc: desc.to_owned(),
            consignor_contact: consignor,
            receiver_contact: receiver,
            upload_time: now,
        });
    }
    Ok(Upload {
        logistics_type,
        delivery_mode,
        is_all_delivered,
        packages,
        upload_time,
    })
}

fn same_packages(a: &[Package], b: &[Package]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.tracking_no == y.tracking_no
                && x.express_company == y.express_company
                && x.item_desc == y.item_desc
                && x.consignor_contact == y.consignor_contact
                && x.receiver_contact == y.receiver_contact
        })
}

fn order_key_of(body: &Map<String, Value>) -> Result<&Map<String, Value>, WxError> {
    match body.get("order_key") {
        Some(Value::Object(key)) => Ok(key),
        None => Err(WxError(268485194, "order_number_type 非法")),
        Some(_) => Err(DATA_FORMAT),
    }
}

fn payer_of(body: &Map<String, Value>) -> Result<&str, WxError> {
    match body.get("payer") {
        Some(Value::Object(p)) => text(p, "openid")?.filter(|s| !s.is_empty()).ok_or(PARAM),
        None => Err(PARAM),
        Some(_) => Err(DATA_FORMAT),
    }
}

fn apply_upload(state: &AppState, appid: &str, body: &Map<String, Value>) -> Result<(), WxError> {
    let now = state.clock.now();
    let order = find_by_key(state, appid, order_key_of(body)?)?;
    let upload = parse_upload(body, body, now)?;
    let payer = payer_of(body)?;
    if payer != order.openid {
        return Err(WxError(10060031, "该笔支付单不属于 openid 所指定的用户"));
    }
    let mut record = current(state, &order);
    match order_state(&order, &record) {
        5 => return Err(WxError(10060004, "支付单处于不可发货的状态")),
        3 | 4 => return Err(WxError(10060002, "支付单已完成发货,无法继续发货")),
        _ => {}
    }
    if record
        .last_upload_time
        .is_some_and(|last| upload.upload_time <= last)
    {
        return Err(PARAM);
    }
    let completes = upload.delivery_mode == 1 || upload.is_all_delivered == Some(true);
    if record.finish_shipping {
        // A re-shipment: one chance.
        if record.logistics_type == upload.logistics_type
            && record.delivery_mode == upload.delivery_mode
            && same_packages(&record.packages, &upload.packages)
        {
            return Err(WxError(10060023, "发货信息未更新"));
        }
        if record.finish_shipping_count >= 2 {
            return Err(WxError(10060003, "支付单已使用重新发货机会"));
        }
        record.finish_shipping_count = 2;
        record.packages = upload.packages;
    } else {
        let mut packages = if record.delivery_mode == 2 && upload.delivery_mode == 2 {
            std::mem::take(&mut record.packages)
        } else {
            Vec::new()
        };
        packages.extend(upload.packages);
        if packages.len() > MAX_PACKAGES {
            return Err(WxError(10060024, "物流信息列表太长"));
        }
        record.packages = packages;
        if completes {
            record.finish_shipping = true;
            record.finish_shipping_count = 1;
            record.shipped_at = Some(now);
        }
    }
    let newly_shipped =
        completes && record.finish_shipping_count == 1 && record.shipped_at == Some(now);
    record.logistics_type = upload.logistics_type;
    record.delivery_mode = upload.delivery_mode;
    record.last_upload_time = Some(upload.upload_time);
    state.trade.store(record.clone());
    if newly_shipped {
        push_shipped(state, &order, &record);
    }
    Ok(())
}

async fn upload(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match apply_upload(&state, &call.appid, &call.body) {
        Ok(()) => ok(),
        Err(e) => e.into_response(),
    }
}

/// `upload_combined_shipping_info`: every field checked as WeChat does, then, the simulator
/// having no combined payments, `10060001` for any combined order.
fn apply_combined(body: &Map<String, Value>, now: i64) -> Result<(), WxError> {
    let parent = key_ids(order_key_of(body)?)?;
    let subs = match body.get("sub_orders") {
        Some(Value::Array(subs)) if !subs.is_empty() => subs,
        None | Some(Value::Array(_)) => return Err(PARAM),
        Some(_) => return Err(DATA_FORMAT),
    };
    for sub in subs {
        let Value::Object(sub) = sub else {
            return Err(DATA_FORMAT);
        };
        if key_ids(order_key_of(sub)?)?.number_type() != parent.number_type() {
            return Err(WxError(268485194, "order_number_type 非法"));
        }
        parse_upload(sub, body, now)?;
    }
    payer_of(body)?;
    Err(NOT_FOUND)
}

async fn upload_combined(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match apply_combined(&call.body, state.clock.now()) {
        Ok(()) => ok(),
        Err(e) => e.into_response(),
    }
}

async fn get_order(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match find_by_ref(&state, &call.appid, &call.body) {
        Ok(order) => {
            let record = current(&state, &order);
            axum::Json(
                json!({"errcode": 0, "errmsg": "ok", "order": order_json(&state, &order, &record)}),
            )
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The default and largest `page_size` of `get_order_list`.
pub const PAGE_SIZE: usize = 100;

/// The paid orders the mini program `appid` manages, paid between `begin` and `end`, in
/// payment order.
fn managed_orders(state: &AppState, appid: &str, begin: i64, end: i64) -> Vec<Order> {
    if !state.trade.is_managed(appid) {
        return Vec::new();
    }
    let mut orders: Vec<Order> = state
        .store
        .paid_orders(appid, begin, end)
        .into_iter()
        .filter(|o| paying_appid(state, o) == appid)
        .collect();
    orders.extend(
        state
            .partner
            .orders_of_sub_appid(appid)
            .iter()
            .filter_map(|no| state.store.order(no))
            .filter(|o| o.success_time.is_some_and(|t| (begin..=end).contains(&t))),
    );
    orders.sort_by_key(|o| (o.success_time, o.out_trade_no.clone()));
    orders
}

fn order_list(state: &AppState, appid: &str, body: &Map<String, Value>) -> Result<Value, WxError> {
    let (begin, end) = match body.get("pay_time_range") {
        None => (0, i64::from(u32::MAX)),
        Some(Value::Object(range)) => (
            int(range, "begin_time")?.unwrap_or(0),
            int(range, "end_time")?.unwrap_or(i64::from(u32::MAX)),
        ),
        Some(_) => return Err(DATA_FORMAT),
    };
    let wanted_state = int(body, "order_state")?;
    let openid = text(body, "openid")?.filter(|s| !s.is_empty());
    let page_size = match int(body, "page_size")? {
        None => PAGE_SIZE,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=PAGE_SIZE).contains(n))
            .ok_or(PARAM)?,
    };
    // `last_index`: opaque to clients; here the position after the previous page.
    let start = match text(body, "last_index")? {
        None | Some("") => 0,
        Some(index) => index
            .parse::<usize>()
            .map_err(|_| WxError(10060011, "last_index 不合法"))?,
    };
    let matching: Vec<Value> = managed_orders(state, appid, begin, end)
        .into_iter()
        .filter(|o| openid.is_none_or(|id| o.openid == id))
        .filter_map(|o| {
            let record = current(state, &o);
            let order_state = i64::from(order_state(&o, &record));
            wanted_state
                .is_none_or(|s| s == order_state)
                .then(|| order_json(state, &o, &record))
        })
        .collect();
    if start > matching.len() {
        return Err(WxError(10060011, "last_index 不合法"));
    }
    let end_at = (start + page_size).min(matching.len());
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "order_list": matching[start..end_at],
        "last_index": end_at.to_string(),
        "has_more": end_at < matching.len(),
    }))
}

async fn get_order_list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match order_list(&state, &call.appid, &call.body) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

fn apply_notify(state: &AppState, appid: &str, body: &Map<String, Value>) -> Result<(), WxError> {
    let order = find_by_ref(state, appid, body)?;
    let received = int(body, "received_time")?.ok_or(PARAM)?;
    let now = state.clock.now();
    let mut record = current(state, &order);
    if order_state(&order, &record) != 2 {
        return Err(WxError(10060028, "支付单不是已发货状态"));
    }
    if record.logistics_type != 1 {
        return Err(WxError(10060032, "只有物流快递发货时允许提醒确认收货"));
    }
    if record.reminded {
        return Err(WxError(10060030, "已使用提醒收货机会"));
    }
    if record.shipped_at.is_none_or(|shipped| received <= shipped) || received > now + 86_400 {
        return Err(WxError(10060029, "签收时间非法"));
    }
    record.reminded = true;
    state.trade.store(record);
    Ok(())
}

async fn notify_confirm(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match apply_notify(&state, &call.appid, &call.body) {
        Ok(()) => ok(),
        Err(e) => e.into_response(),
    }
}

/// The earliest and latest `delay_to` of a pre-sale, in days after payment.
pub const PRESALE_DAYS: (i64, i64) = (15, 330);

fn apply_special(state: &AppState, appid: &str, body: &Map<String, Value>) -> Result<(), WxError> {
    let order_id = text(body, "order_id")?
        .filter(|s| !s.is_empty())
        .ok_or(PARAM)?;
    let kind = match int(body, "type")? {
        Some(n @ 1..=2) => u8::try_from(n).map_err(|_| DATA_FORMAT)?,
        _ => return Err(WxError(268546000, "type 不合法")),
    };
    let not_found = WxError(268546002, "待发货的支付单不存在");
    let order = managed_order(
        state,
        appid,
        state
            .store
            .order_by_transaction_id(order_id)
            .or_else(|| state.store.order(order_id)),
    )
    .map_err(|_| not_found)?;
    let mut record = current(state, &order);
    if order_state(&order, &record) != 1 || !record.packages.is_empty() {
        return Err(WxError(268546002, "待发货的支付单不存在"));
    }
    let delay_to = if kind == 1 {
        let paid = order.success_time.unwrap_or_default();
        let delay_to = int(body, "delay_to")?.ok_or(WxError(268546001, "delay_to 不合法"))?;
        if delay_to < paid + PRESALE_DAYS.0 * 86_400 || delay_to > paid + PRESALE_DAYS.1 * 86_400 {
            return Err(WxError(268546001, "delay_to 不合法"));
        }
        Some(delay_to)
    } else {
        None
    };
    record.special_type = Some(kind);
    record.delay_to = delay_to;
    state.trade.store(record);
    Ok(())
}

async fn special_order(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match apply_special(&state, &call.appid, &call.body) {
        Ok(()) => ok(),
        Err(e) => e.into_response(),
    }
}

async fn set_jump_path(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let call = match begin(&state, query, &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match text(&call.body, "path") {
        Ok(_) => ok(),
        Err(e) => e.into_response(),
    }
}

/// The `appid` of the body, which must be the caller's own.
fn own_appid(call: &Call) -> Result<(), WxError> {
    match text(&call.body, "appid")? {
        None | Some("") => Err(WxError(40097, "invalid args")),
        Some(appid) if appid == call.appid => Ok(()),
        Some(_) => Err(WxError(40013, "invalid appid")),
    }
}

async fn is_managed(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    match begin(&state, query, &body).and_then(|call| {
        own_appid(&call)
            .map(|()| call.appid)
            .map_err(|e| Box::new(e.into_response()))
    }) {
        Ok(appid) => axum::Json(json!({
            "errcode": 0,
            "errmsg": "ok",
            "is_trade_managed": state.trade.is_managed(&appid),
        }))
        .into_response(),
        Err(r) => *r,
    }
}

async fn is_completed(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    match begin(&state, query, &body)
        .and_then(|call| own_appid(&call).map_err(|e| Box::new(e.into_response())))
    {
        Ok(()) => {
            axum::Json(json!({"errcode": 0, "errmsg": "ok", "completed": true})).into_response()
        }
        Err(r) => *r,
    }
}

/// The express companies the simulator lists (a few of WeChat's 1379), the same for every
/// mini program.
pub const DELIVERY_COMPANIES: &[(&str, &str)] = &[
    ("SF", "顺丰速运"),
    ("ZTO", "中通快递"),
    ("YTO", "圆通速递"),
    ("STO", "申通快递"),
    ("YD", "韵达速递"),
    ("JD", "京东物流"),
    ("EMS", "EMS"),
    ("JTSDEXPRESS", "极兔速递"),
    ("BDT", "八达通"),
    ("OTHER", "其他"),
];

async fn delivery_list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    if let Err(r) = begin(&state, query, &body) {
        return *r;
    }
    let list: Vec<Value> = DELIVERY_COMPANIES
        .iter()
        .map(|(id, name)| json!({"delivery_id": id, "delivery_name": name}))
        .collect();
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "count": list.len(), "delivery_list": list}))
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Control API

fn control_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// `POST /sim/orders/{out_trade_no}/confirm-receipt`: the buyer confirms receipt (WeChat's
/// confirm-receipt component); the order settles. Only a shipped order can be confirmed (409
/// otherwise, as the component answers `cancel`).
async fn confirm_receipt(
    State(state): State<Arc<AppState>>,
    Path(out_trade_no): Path<String>,
) -> Response {
    let Some(order) = state
        .store
        .order(&out_trade_no)
        .filter(|o| is_managed_order(&state, o))
    else {
        return control_error(
            StatusCode::NOT_FOUND,
            "no paid order of the mini program has this out_trade_no",
        );
    };
    let now = state.clock.now();
    let mut record = current(&state, &order);
    if order_state(&order, &record) != 2 {
        return control_error(
            StatusCode::CONFLICT,
            "the order is not shipped and awaiting receipt",
        );
    }
    record.confirmed_at = Some(now);
    record.confirm_method = Some(2);
    state.trade.store(record.clone());
    push_settled(&state, &order, &record);
    axum::Json(json!({
        "out_trade_no": out_trade_no,
        "order_state": order_state(&order, &record),
        "confirmed_at": now,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TradeManagementSetting {
    #[serde(default)]
    appid: Option<String>,
    managed: bool,
}

/// `PUT /sim/mp/trade-management {"appid","managed"}`: puts a mini program of the simulator
/// (without `appid`: the first one) under trade management or takes it out; answers
/// `{"appid","managed"}`. 404 for an AppID the simulator does not host.
async fn put_trade_management(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let setting: TradeManagementSetting = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return control_error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"));
        }
    };
    let appid = setting.appid.unwrap_or_else(|| state.mp.appid().to_owned());
    if state.app(&appid).is_none() {
        return control_error(StatusCode::NOT_FOUND, "no mini program has this appid");
    }
    state.trade.set_managed(&appid, setting.managed);
    axum::Json(json!({"appid": appid, "managed": setting.managed})).into_response()
}
