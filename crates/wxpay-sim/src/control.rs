//! The control API under `/sim/` (JSON): users and wx.login codes, paying as the WeChat client,
//! orders, the notification log, faults, the clock, the public merchant facts.
//!
//! Who may call what:
//! * `POST /sim/users` answers `{openid, code, user_key}`; `user_key` (43 base64url characters)
//!   is the user's own credential, kept by the simulator as a SHA-256 digest in its journal.
//! * `POST /sim/users/{openid}/code` requires the header `X-Sim-User-Key: <user_key>` (absent or
//!   wrong: 403 `{"error"}`), or the control token.
//! * `GET /sim/cashier` (the appid and mchid the WeChat cashier shows) is open.
//! * `POST`/`GET /sim/merchants` and `/sim/apps` add and list merchants and mini programs
//!   (controlled); `POST /sim/users {"appid"}` mints a user of another mini program.
//! * `POST /sim/users {"real_name"}` gives the new user a real name (default
//!   [`crate::transfers::DEFAULT_REAL_NAME`]), which a merchant transfer's `user_name` must match.
//! * With a control token configured ([`crate::SimConfig::control_token`], as the sandbox of
//!   `wxpay serve` does), every other route but `POST /sim/pay` (checked by its paySign),
//!   `POST /sim/transfers/confirm` (its package is the credential), and `POST /sim/users` with a
//!   chosen openid, require `Authorization: Bearer <token>` (else 401 `{"error"}`). Without one
//!   (`wxpay sim`), they are open.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use wxpay::RequestPayment;

use crate::app::AppState;
use crate::faults::Faults;
use crate::state::{Order, OrderError, PayOutcome, Refund, rfc3339_cst};

/// The control router (state applied).
pub fn router(state: Arc<AppState>) -> Router {
    let open = Router::new()
        .route("/sim/users", post(create_user))
        .route("/sim/users/{openid}/code", post(login_code))
        .route("/sim/pay", post(pay))
        .route("/sim/cashier", get(cashier));
    let controlled = Router::new()
        .route("/sim/orders/{out_trade_no}", get(order))
        .route("/sim/notifications", get(notifications))
        .route("/sim/notifications/flush", post(flush))
        .route("/sim/faults", get(get_faults).put(put_faults))
        .route("/sim/clock/advance", post(advance_clock))
        .route("/sim/clock", get(clock))
        .route("/sim/merchant", get(merchant))
        .route("/sim/connection", get(connection))
        .route("/sim/merchants", get(list_merchants).post(create_merchant))
        .route("/sim/apps", get(list_apps).post(create_app))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_control,
        ));
    open.merge(controlled).with_state(state)
}

/// The header carrying a user's key on `POST /sim/users/{openid}/code`.
pub const USER_KEY_HEADER: &str = "x-sim-user-key";

/// Whether the request carries the control token (`Authorization: Bearer`).
fn has_control_token(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| state.is_control_token(t.trim()))
}

/// Whether the caller may use a controlled route: no control token configured, or its token.
fn control_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    !state.has_control_token() || has_control_token(state, headers)
}

fn control_refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "Authorization: Bearer <control token> is required"})),
    )
        .into_response()
}

/// The control token's check (see the module's documentation), also on the partner routes.
pub(crate) async fn require_control(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if control_allowed(&state, request.headers()) {
        next.run(request).await
    } else {
        control_refused()
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    empty_ok: bool,
) -> Result<Option<T>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(None)
        } else {
            Err("a JSON body is required".into())
        };
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| format!("invalid JSON body: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    openid: Option<String>,
    appid: Option<String>,
    /// The user's real name, for merchant transfers' `user_name` check.
    real_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMerchant {
    mchid: Option<String>,
    key_mode: Option<String>,
}

fn tenant_error(e: crate::app::TenantError) -> Response {
    match e {
        crate::app::TenantError::Invalid(m) => bad_request(m),
        crate::app::TenantError::Internal(m) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": m})),
        )
            .into_response(),
    }
}

fn app_json(app: &crate::app::AppEntry) -> Value {
    json!({"appid": app.mp.appid(), "mchid": app.mchid})
}

/// `POST /sim/merchants`: another merchant, with its own keys and mini program.
async fn create_merchant(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match parse_json::<NewMerchant>(&body, true) {
        Ok(r) => r.unwrap_or(NewMerchant {
            mchid: None,
            key_mode: None,
        }),
        Err(e) => return bad_request(e),
    };
    let mode = match request
        .key_mode
        .as_deref()
        .map(str::parse::<crate::KeyMode>)
    {
        None => None,
        Some(Ok(mode)) => Some(mode),
        Some(Err(e)) => return bad_request(e),
    };
    let worker = state.clone();
    let made = tokio::task::spawn_blocking(move || worker.add_merchant(request.mchid, mode)).await;
    match made {
        Ok(Ok((merchant, app))) => {
            let mut answer = merchant.public_json();
            answer["appid"] = json!(app.mp.appid());
            (StatusCode::CREATED, axum::Json(answer)).into_response()
        }
        Ok(Err(e)) => tenant_error(e),
        Err(e) => tenant_error(crate::app::TenantError::Internal(e.to_string())),
    }
}

/// `GET /sim/merchants`: every merchant's public facts (never a key).
async fn list_merchants(State(state): State<Arc<AppState>>) -> Response {
    let merchants: Vec<Value> = state
        .merchant_accounts()
        .iter()
        .map(|m| {
            let mut v = m.public_json();
            v["appids"] = json!(
                state
                    .apps()
                    .iter()
                    .filter(|a| a.mchid == m.mchid())
                    .map(|a| a.mp.appid().to_owned())
                    .collect::<Vec<_>>()
            );
            crate::transfers::annotate_merchant(&state, m.mchid(), &mut v);
            v
        })
        .collect();
    axum::Json(json!({"merchants": merchants})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    appid: Option<String>,
    mchid: String,
}

/// `POST /sim/apps`: another mini program bound to a merchant.
async fn create_app(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match parse_json::<NewApp>(&body, false) {
        Ok(Some(r)) => r,
        Ok(None) => return bad_request("a JSON body is required"),
        Err(e) => return bad_request(e),
    };
    match state.add_app(request.appid, &request.mchid) {
        Ok(app) => (
            StatusCode::CREATED,
            axum::Json(json!({
                "appid": app.mp.appid(),
                "app_secret": app.mp.app_secret(),
                "mchid": app.mchid,
            })),
        )
            .into_response(),
        Err(e) => tenant_error(e),
    }
}

/// `GET /sim/apps`: every mini program and its merchant (never the secret).
async fn list_apps(State(state): State<Arc<AppState>>) -> Response {
    let apps: Vec<Value> = state.apps().iter().map(|a| app_json(a)).collect();
    axum::Json(json!({"apps": apps})).into_response()
}

async fn create_user(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (openid, appid, real_name) = match parse_json::<NewUser>(&body, true) {
        Ok(Some(u)) => (u.openid, u.appid, u.real_name),
        Ok(None) => (None, None, None),
        Err(e) => return bad_request(e),
    };
    if real_name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 64)
    {
        return bad_request("real_name must be 1 to 64 characters");
    }
    let app = match appid {
        None => state.first_app(),
        Some(appid) => match state.app(&appid) {
            Some(app) => app,
            None => return bad_request(format!("no mini program {appid}")),
        },
    };
    // A chosen openid could be a known user's (whose journal was lost): the control's call.
    if openid.is_some() && !control_allowed(&state, &headers) {
        return control_refused();
    }
    match app.mp.new_user(openid) {
        Ok(user) => {
            let mut answer = json!({
                "openid": user.openid,
                "code": user.code,
                "user_key": user.user_key,
            });
            if let Some(name) = real_name {
                state
                    .transfers
                    .set_real_name(app.mp.appid(), &user.openid, &name);
                answer["real_name"] = json!(name);
            }
            axum::Json(answer).into_response()
        }
        Err(e) => bad_request(e),
    }
}

/// A fresh `wx.login` code for an existing user: the same WeChat user logging in again (a new
/// launch, or a session the merchant server let expire) keeps their openid. Requires the user's
/// key (`X-Sim-User-Key`) or the control token.
async fn login_code(
    State(state): State<Arc<AppState>>,
    Path(openid): Path<String>,
    headers: HeaderMap,
) -> Response {
    // The mini program of the user (openids are per mini program).
    let mp = state
        .apps()
        .into_iter()
        .find(|a| a.mp.has_user(&openid))
        .map_or_else(|| state.mp.clone(), |a| a.mp.clone());
    let answer = if has_control_token(&state, &headers) {
        mp.mint_code(&openid)
            .ok_or(crate::mp::MintRefusal::UnknownUser)
    } else {
        let key = headers
            .get(USER_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if key.is_none_or(str::is_empty) {
            return forbidden("X-Sim-User-Key (the user_key POST /sim/users answered) is required");
        }
        mp.mint_code_with_key(&openid, key)
    };
    match answer {
        Ok(code) => axum::Json(json!({"openid": openid, "code": code})).into_response(),
        Err(crate::mp::MintRefusal::UnknownUser) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such user"})),
        )
            .into_response(),
        Err(crate::mp::MintRefusal::WrongKey) => forbidden("the user key is not this user's"),
    }
}

fn forbidden(message: &str) -> Response {
    (StatusCode::FORBIDDEN, axum::Json(json!({"error": message}))).into_response()
}

#[derive(Deserialize)]
struct PayRequest {
    #[serde(flatten)]
    payment: RequestPayment,
    openid: String,
    #[serde(default)]
    result: Option<String>,
}

/// A refusal as the WeChat client reports it: `errMsg` `requestPayment:fail ...`.
fn client_fail(status: StatusCode, reason: &str) -> Response {
    (
        status,
        axum::Json(json!({"errMsg": format!("requestPayment:fail {reason}")})),
    )
        .into_response()
}

async fn pay(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: PayRequest = match parse_json(&body, false) {
        Ok(Some(r)) => r,
        Ok(None) => return bad_request("a JSON body is required"),
        Err(e) => return bad_request(e),
    };
    let outcome = match request.result.as_deref() {
        None | Some("SUCCESS") => PayOutcome::Success,
        Some("PAYERROR") => PayOutcome::PayError,
        Some(other) => {
            return bad_request(format!("result must be SUCCESS or PAYERROR, not {other:?}"));
        }
    };
    let p = &request.payment;
    let Some(prepay_id) = p.package.strip_prefix("prepay_id=") else {
        return client_fail(
            StatusCode::BAD_REQUEST,
            "package参数格式错误，须为prepay_id=***",
        );
    };
    let Some(order) = state.store.order_by_prepay_id(prepay_id) else {
        return client_fail(
            StatusCode::BAD_REQUEST,
            "prepay_id无效或已被替换，请重新下单",
        );
    };
    // The client signs with the appid of the mini program it runs in: the order's appid, or
    // for a partner order the sub_appid when its prepay carried one.
    let partner = state.partner.order(&order.out_trade_no);
    let pay_appid = partner
        .as_ref()
        .map_or(order.appid.as_str(), |p| p.paying_appid(&order));
    let sign_type_matches = match order.version {
        crate::state::ApiVersion::V3 => p.sign_type == "RSA",
        crate::state::ApiVersion::V2 => p.sign_type == order.sign_type.as_str(),
    };
    // Signed by the order's merchant (its v2 key or its merchant API key).
    let merchant = state.account_for(&order.mchid);
    let signature_ok = sign_type_matches
        && wxpay::pay_params::verify(
            p,
            pay_appid,
            &merchant.credentials.api_v2_key,
            &merchant.keys.merchant_public_key,
        )
        .is_ok();
    if !signature_ok {
        return client_fail(StatusCode::BAD_REQUEST, "支付验证签名失败");
    }
    if !state.is_any_user(&request.openid)
        && state.partner.sub_user_appid(&request.openid).is_none()
    {
        return client_fail(StatusCode::BAD_REQUEST, "用户不存在");
    }
    match state.store.pay(prepay_id, &request.openid, outcome) {
        Ok(paid) if outcome == PayOutcome::Success => {
            state.notify_payment(&paid);
            axum::Json(json!({
                "errMsg": "requestPayment:ok",
                "transaction_id": paid.transaction_id,
                "out_trade_no": paid.out_trade_no,
            }))
            .into_response()
        }
        Ok(failed) => axum::Json(json!({
            "errMsg": "requestPayment:fail 支付失败，请稍后再试",
            "out_trade_no": failed.out_trade_no,
            "trade_state": failed.trade_state.as_str(),
        }))
        .into_response(),
        Err(e) => {
            let reason = match e {
                OrderError::OrderPaid => "该订单已支付",
                OrderError::OrderClosed => "订单已关闭",
                OrderError::PrepayExpired => "prepay_id已过期，请重新下单",
                OrderError::PayerMismatch => "下单账号与支付账号不一致，请核实后再支付",
                OrderError::NotPayable(_) => "订单状态不允许支付，请重新下单",
                _ => "prepay_id无效或已被替换，请重新下单",
            };
            client_fail(StatusCode::BAD_REQUEST, reason)
        }
    }
}

fn order_json(order: &Order, refunds: &[Refund]) -> Value {
    json!({
        "out_trade_no": order.out_trade_no,
        "appid": order.appid,
        "mchid": order.mchid,
        "openid": order.openid,
        "description": order.description,
        "attach": order.attach,
        "notify_url": order.notify_url,
        "total": order.total,
        "version": match order.version { crate::state::ApiVersion::V2 => "v2", crate::state::ApiVersion::V3 => "v3" },
        "sign_type": order.sign_type.as_str(),
        "trade_type": order.trade_type.as_str(),
        "trade_state": order.trade_state.as_str(),
        "prepay_id": order.prepay_id,
        "prepay_created_at": rfc3339_cst(order.prepay_created_at),
        "time_expire": rfc3339_cst(order.time_expire),
        "transaction_id": order.transaction_id,
        "success_time": order.success_time.map(rfc3339_cst),
        "refunded": order.refunded,
        "refund_count": order.refund_count,
        "created_at": rfc3339_cst(order.created_at),
        "refunds": refunds.iter().map(|r| json!({
            "out_refund_no": r.out_refund_no,
            "refund_id": r.refund_id,
            "amount": r.amount,
            "status": r.status.as_v3(),
            "reason": r.reason,
            "notify_url": r.notify_url,
            "created_at": rfc3339_cst(r.created_at),
            "success_time": r.success_time.map(rfc3339_cst),
        })).collect::<Vec<_>>(),
    })
}

async fn order(State(state): State<Arc<AppState>>, Path(out_trade_no): Path<String>) -> Response {
    match state.store.order(&out_trade_no) {
        Some(o) => {
            let refunds = state.store.refunds_of_order(&out_trade_no);
            let mut answer = order_json(&o, &refunds);
            crate::trade::annotate(&state, &o, &mut answer);
            axum::Json(answer).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such order"})),
        )
            .into_response(),
    }
}

async fn notifications(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let records = state
        .dispatcher
        .records(query.get("out_trade_no").map(String::as_str));
    axum::Json(json!({"deliveries": records})).into_response()
}

async fn flush(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.dispatcher.flush().await).into_response()
}

async fn get_faults(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.faults.get()).into_response()
}

async fn put_faults(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let faults: Faults = match parse_json(&body, false) {
        Ok(Some(f)) => f,
        Ok(None) => return bad_request("a JSON body is required"),
        Err(e) => return bad_request(e),
    };
    match state.faults.set(faults) {
        Ok(()) => axum::Json(state.faults.get()).into_response(),
        Err(e) => bad_request(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: i64,
}

fn clock_json(state: &AppState) -> Value {
    json!({"now": rfc3339_cst(state.now()), "offset_seconds": state.clock.offset()})
}

async fn advance_clock(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let advance: Advance = match parse_json(&body, false) {
        Ok(Some(a)) => a,
        Ok(None) => return bad_request("a JSON body is required"),
        Err(e) => return bad_request(e),
    };
    // At most ten years either way: enough for any expiry, and far from overflow.
    if advance.seconds.unsigned_abs() > 10 * 366 * 24 * 3600 {
        return bad_request("seconds must be within ten years");
    }
    state.clock.advance(advance.seconds);
    let settled = state.settle_due_refunds();
    let transfers = crate::transfers::tick(&state);
    let mut answer = clock_json(&state);
    answer["refunds_settled"] = json!(settled);
    answer["transfers_changed"] = json!(transfers);
    axum::Json(answer).into_response()
}

async fn clock(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(clock_json(&state)).into_response()
}

/// What WeChat's cashier shows of the merchant (open: nothing secret): the appid and mchid.
async fn cashier(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"appid": state.merchant.appid, "mchid": state.merchant.mchid}))
        .into_response()
}

async fn merchant(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.merchant;
    let mut answer = json!({
        "appid": m.appid,
        "mchid": m.mchid,
        "merchant_serial": m.merchant_serial,
        "platform_serial": m.platform_serial,
        "wechatpay_public_key_id": m.wechatpay_public_key_id,
        "key_mode": state.signer.mode().as_str(),
        "merchant_json": m.merchant_json_path.as_ref().map(|p| p.display().to_string()),
    });
    crate::transfers::annotate_merchant(&state, &m.mchid, &mut answer);
    axum::Json(answer).into_response()
}

/// How the caller is connected: TLS or not, and the client certificate it presented (to debug
/// the mutual TLS of the v2 `/secapi/` calls).
async fn connection(
    State(state): State<Arc<AppState>>,
    tls: Option<axum::Extension<crate::server::Tls>>,
    cert: Option<axum::Extension<crate::server::ClientCertificate>>,
) -> Response {
    let client_certificate = cert.and_then(|c| c.0.0).map(|der| {
        let serial = wxpay::X509Certificate::from_der(&der)
            .map(|c| c.serial_no)
            .ok();
        json!({
            "serial_no": serial,
            "is_merchant_certificate": der == state.keys.merchant_cert_der,
        })
    });
    axum::Json(json!({
        "tls": tls.is_some_and(|t| t.0.0),
        "client_certificate": client_certificate,
    }))
    .into_response()
}
