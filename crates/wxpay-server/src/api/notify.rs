//! WeChat's notifications: verify and decrypt (the library), turn into the core's report, let
//! the core check it against the order and change it once ([`crate::core::payments`],
//! [`crate::core::refunds`]), acknowledge
//! exactly as the protocol wants (v3: 204, or 4xx/5xx with `{"code":"FAIL","message":"失败"}`;
//! v2: the SUCCESS XML, or the FAIL XML so that WeChat retries).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wxpay::v3::notify::{FAIL_ACK, Notification};

use crate::app::AppState;
use crate::core::payments::{PaymentError, PaymentReport, ReportSource, apply_notified_payment};
use crate::core::refunds::{RefundError, apply_notified_result};
use crate::store::{RefundResult, RefundStatus};
use crate::wechat::{WeChat, unix_ms};

/// Why a notification was not acknowledged; its status tells WeChat to retry.
struct Refusal {
    status: StatusCode,
    reason: String,
    /// Already logged where it was found (with the order), so that each refusal is logged once.
    logged: bool,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            logged: false,
        }
    }

    fn store(err: &crate::store::StoreError) -> Self {
        tracing::error!(error = %err, "database error while applying a notification");
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
    }
}

fn v3_answer(kind: &str, result: Result<(), Refusal>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => {
            if !r.logged {
                tracing::warn!(kind, status = r.status.as_u16(), reason = %r.reason, "v3 notification refused");
            }
            (
                r.status,
                [(http::header::CONTENT_TYPE, "application/json")],
                FAIL_ACK,
            )
                .into_response()
        }
    }
}

fn v2_answer(kind: &str, result: Result<(), Refusal>) -> Response {
    let xml = [(http::header::CONTENT_TYPE, "text/xml; charset=utf-8")];
    match result {
        Ok(()) => (StatusCode::OK, xml, wxpay::v2::notify::ack_success()).into_response(),
        Err(r) => {
            if !r.logged {
                tracing::warn!(kind, status = r.status.as_u16(), reason = %r.reason, "v2 notification refused");
            }
            (r.status, xml, wxpay::v2::notify::ack_fail(&r.reason)).into_response()
        }
    }
}

/// The merchant whose notify URL was called: `/notify/{mchid}/...`, or the first one for the
/// paths of one-merchant deployments (`/notify/v3/pay`...). An unknown mchid is 404 (nothing
/// is read).
fn merchant_of(state: &AppState, mchid: Option<&str>) -> Result<Arc<WeChat>, Refusal> {
    match mchid {
        Some(mchid) => state
            .registry
            .merchant(mchid)
            .map_err(|e| Refusal::new(StatusCode::NOT_FOUND, e.to_string())),
        None => Ok(state.registry.default_app()),
    }
}

/// A verified report of a payment must be of the merchant whose URL received it.
fn same_merchant(wechat: &WeChat, reported: Option<&str>) -> Result<(), Refusal> {
    match reported {
        Some(m) if m != wechat.mchid => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "mchid differs from the merchant of this notify URL",
        )),
        _ => Ok(()),
    }
}

/// A verified report of a refund must name its order's sub-merchant (none for a direct order):
/// a provider's notification of one sub-merchant does not settle another's refund.
async fn same_sub_merchant(
    state: &AppState,
    out_trade_no: &str,
    reported: Option<&str>,
) -> Result<(), Refusal> {
    let order = state
        .store
        .order(out_trade_no)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match order {
        Some(order) if order.sub_mchid.as_deref() != reported => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "sub_mchid differs from the order's",
        )),
        _ => Ok(()),
    }
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Refusal> {
    body.map_err(|rejection| Refusal::new(rejection.status(), format!("body: {rejection}")))
}

fn signature_refusal(err: &wxpay::Error) -> Refusal {
    let status = match err {
        wxpay::Error::Signature(_) | wxpay::Error::Crypto(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    Refusal::new(status, format!("verification failed: {err}"))
}

/// The answer to a payment the core did not apply.
fn payment_refusal(err: PaymentError) -> Refusal {
    match err {
        PaymentError::UnknownOrder(_) => Refusal::new(StatusCode::NOT_FOUND, err.to_string()),
        // Logged and recorded by the core, with the order.
        PaymentError::Mismatch(reason) => Refusal {
            logged: true,
            ..Refusal::new(StatusCode::BAD_REQUEST, reason)
        },
        PaymentError::Conflict(_) => Refusal::new(StatusCode::CONFLICT, err.to_string()),
        PaymentError::Store(e) => Refusal::store(&e),
    }
}

/// The answer to a refund result the core did not apply.
fn refund_refusal(err: RefundError) -> Refusal {
    match err {
        RefundError::UnknownRefund(_) => Refusal::new(StatusCode::NOT_FOUND, err.to_string()),
        RefundError::Mismatch(reason) => Refusal {
            logged: true,
            ..Refusal::new(StatusCode::BAD_REQUEST, reason)
        },
        RefundError::Store(e) => Refusal::store(&e),
        _ => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// The body of a v3 notification, verified and decrypted.
async fn verified_v3(
    wechat: &WeChat,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Notification, Refusal> {
    let body = body_of(body)?;
    wechat
        .v3
        .parse_notification(headers, &body)
        .await
        .map_err(|e| signature_refusal(&e))
}

/// `POST /notify/{mchid}/v3/pay`.
#[utoipa::path(post, path = "/notify/{mchid}/v3/pay", tag = "notifications",
    params(("mchid" = String, Path, description = "The merchant (its own URL: its APIv3 key decrypts)")),
    request_body(content = String, description = "The v3 payment notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v3_pay(
    State(state): State<AppState>,
    axum::extract::Path(mchid): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v3_pay_of(&state, Some(&mchid), &headers, body).await
}

/// `POST /notify/v3/pay`: the first merchant's.
#[utoipa::path(post, path = "/notify/v3/pay", operation_id = "v3_pay_first_merchant", tag = "notifications",
    request_body(content = String, description = "The v3 payment notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v3_pay_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v3_pay_of(&state, None, &headers, body).await
}

async fn v3_pay_of(
    state: &AppState,
    mchid: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let wechat = merchant_of(state, mchid)?;
        let n = verified_v3(&wechat, headers, body).await?;
        let (trade_state, report) = match n {
            Notification::Payment(n) => {
                let source = ReportSource::V3Notification { event_id: n.id };
                let t = &n.transaction;
                (t.trade_state.clone(), PaymentReport::from_v3(t, source))
            }
            // A service provider's sub-merchant order: the provider's URL and key.
            Notification::PartnerPayment(n) => {
                let source = ReportSource::V3Notification { event_id: n.id };
                let t = &n.transaction;
                (
                    t.trade_state.clone(),
                    PaymentReport::from_v3_partner(t, source),
                )
            }
            _ => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "a refund notification sent to the payment URL",
                ));
            }
        };
        if trade_state != wxpay::v3::models::TradeState::Success {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("trade_state {trade_state}"),
            ));
        }
        same_merchant(&wechat, report.mchid.as_deref())?;
        apply_notified_payment(&state.store, &report)
            .await
            .map_err(payment_refusal)
    }
    .await;
    v3_answer("v3 pay", result)
}

/// `POST /notify/{mchid}/v3/refund`.
#[utoipa::path(post, path = "/notify/{mchid}/v3/refund", tag = "notifications",
    params(("mchid" = String, Path, description = "The merchant (its own URL: its APIv3 key decrypts)")),
    request_body(content = String, description = "The v3 refund notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v3_refund(
    State(state): State<AppState>,
    axum::extract::Path(mchid): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v3_refund_of(&state, Some(&mchid), &headers, body).await
}

/// `POST /notify/v3/refund`: the first merchant's.
#[utoipa::path(post, path = "/notify/v3/refund", operation_id = "v3_refund_first_merchant", tag = "notifications",
    request_body(content = String, description = "The v3 refund notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v3_refund_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v3_refund_of(&state, None, &headers, body).await
}

async fn v3_refund_of(
    state: &AppState,
    mchid: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let wechat = merchant_of(state, mchid)?;
        let n = verified_v3(&wechat, headers, body).await?;
        // (event id, its merchant, refund facts); a sub-merchant's refund comes in the partner
        // shape, to its provider's URL.
        let (
            id,
            mchid,
            sub_mchid,
            out_refund_no,
            refund_id,
            refund_status,
            success_time,
            out_trade_no,
            refund_fen,
        ) = match n {
            Notification::Refund(n) => {
                let r = n.refund;
                (
                    n.id,
                    r.mchid,
                    None,
                    r.out_refund_no,
                    r.refund_id,
                    r.refund_status,
                    r.success_time,
                    r.out_trade_no,
                    r.amount.refund,
                )
            }
            Notification::PartnerRefund(n) => {
                let r = n.refund;
                (
                    n.id,
                    Some(r.sp_mchid),
                    Some(r.sub_mchid),
                    r.out_refund_no,
                    r.refund_id,
                    r.refund_status,
                    r.success_time,
                    r.out_trade_no,
                    r.amount.refund,
                )
            }
            _ => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "a payment notification sent to the refund URL",
                ));
            }
        };
        same_merchant(&wechat, mchid.as_deref())?;
        same_sub_merchant(state, &out_trade_no, sub_mchid.as_deref()).await?;
        use wxpay::v3::models::RefundStatus as W;
        let status = match &refund_status {
            W::Success => RefundStatus::Success,
            W::Closed => RefundStatus::Closed,
            W::Abnormal => RefundStatus::Abnormal,
            other => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("refund_status {other}"),
                ));
            }
        };
        let result = RefundResult {
            out_refund_no,
            refund_id,
            status,
            success_at: success_time.map(unix_ms),
            dedupe_key: format!("v3:{id}"),
            detail: json!({ "via": "v3 notification", "event_id": id, "verified": true }),
        };
        apply_notified_result(&state.store, &result, &out_trade_no, refund_fen)
            .await
            .map_err(refund_refusal)
    }
    .await;
    v3_answer("v3 refund", result)
}

/// `POST /notify/{mchid}/v2/pay`.
#[utoipa::path(post, path = "/notify/{mchid}/v2/pay", tag = "notifications",
    params(("mchid" = String, Path, description = "The merchant (its own URL: its API v2 key verifies)")),
    request_body(content = String, description = "The v2 payment notification (signed XML), exactly as WeChat Pay sends it", content_type = "text/xml"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v2_pay(
    State(state): State<AppState>,
    axum::extract::Path(mchid): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v2_pay_of(&state, Some(&mchid), body).await
}

/// `POST /notify/v2/pay`: the first merchant's.
#[utoipa::path(post, path = "/notify/v2/pay", operation_id = "v2_pay_first_merchant", tag = "notifications",
    request_body(content = String, description = "The v2 payment notification (signed XML), exactly as WeChat Pay sends it", content_type = "text/xml"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v2_pay_default(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v2_pay_of(&state, None, body).await
}

async fn v2_pay_of(
    state: &AppState,
    mchid: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let wechat = merchant_of(state, mchid)?;
        let body = body_of(body)?;
        let n = wxpay::v2::notify::parse_pay_notification(&body, wechat.v2_key())
            .map_err(|e| signature_refusal(&e))?;
        same_merchant(&wechat, Some(&n.mch_id))?;
        apply_notified_payment(&state.store, &PaymentReport::from_v2_notification(&n))
            .await
            .map_err(payment_refusal)
    }
    .await;
    v2_answer("v2 pay", result)
}

/// `POST /notify/{mchid}/v2/refund`.
#[utoipa::path(post, path = "/notify/{mchid}/v2/refund", tag = "notifications",
    params(("mchid" = String, Path, description = "The merchant (its own URL: its API v2 key decrypts)")),
    request_body(content = String, description = "The v2 refund notification (XML with the encrypted req_info), exactly as WeChat Pay sends it", content_type = "text/xml"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v2_refund(
    State(state): State<AppState>,
    axum::extract::Path(mchid): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v2_refund_of(&state, Some(&mchid), body).await
}

/// `POST /notify/v2/refund`: the first merchant's.
#[utoipa::path(post, path = "/notify/v2/refund", operation_id = "v2_refund_first_merchant", tag = "notifications",
    request_body(content = String, description = "The v2 refund notification (XML with the encrypted req_info), exactly as WeChat Pay sends it", content_type = "text/xml"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v2_refund_default(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    v2_refund_of(&state, None, body).await
}

async fn v2_refund_of(
    state: &AppState,
    mchid: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let wechat = merchant_of(state, mchid)?;
        let body = body_of(body)?;
        let n = wxpay::v2::notify::parse_refund_notification(&body, wechat.v2_key())
            .map_err(|e| signature_refusal(&e))?;
        // The appid must be one of this merchant's mini programs (a mini program of another
        // merchant does not count), the mch_id this merchant's; the refund is then checked
        // against its order by the core.
        let ours = state
            .registry
            .app(&n.appid)
            .ok()
            .filter(|app| app.mchid == wechat.mchid)
            .map_or_else(|| wechat.appid.clone(), |app| app.appid.clone());
        n.ensure_merchant(&ours, &wechat.mchid)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        same_sub_merchant(state, &n.out_trade_no, n.sub_mch_id.as_deref()).await?;
        use wxpay::v2::models::RefundStatus as W;
        let status = match &n.refund_status {
            W::Success => RefundStatus::Success,
            W::RefundClose => RefundStatus::Closed,
            W::Change => RefundStatus::Abnormal,
            other => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("refund_status {other}"),
                ));
            }
        };
        let result = RefundResult {
            out_refund_no: n.out_refund_no.clone(),
            refund_id: n.refund_id.clone(),
            status,
            success_at: n.success_time.map(|t| t.unix_timestamp() * 1000),
            dedupe_key: format!("v2:refund:{}:{}", n.refund_id, status.as_str()),
            detail: json!({ "via": "v2 notification", "verified": true }),
        };
        apply_notified_result(&state.store, &result, &n.out_trade_no, n.refund_fee.get())
            .await
            .map_err(refund_refusal)
    }
    .await;
    v2_answer("v2 refund", result)
}
