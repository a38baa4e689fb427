//! WeChat's notifications: verify, decrypt, check against the order, change it once, acknowledge
//! exactly as the protocol wants (v3: 204, or 4xx/5xx with `{"code":"FAIL","message":"失败"}`;
//! v2: the SUCCESS XML, or the FAIL XML so that WeChat retries).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wxpay::v3::notify::{FAIL_ACK, Notification};

use crate::app::AppState;
use crate::store::{
    EventKind, PaymentConfirmation, RefundResult, RefundStatus, RefundTransition, Transition,
};
use crate::wechat::unix_ms;

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

/// Records a verified notification that does not match its order, then refuses it.
async fn mismatch(state: &AppState, out_trade_no: &str, reason: String, via: &str) -> Refusal {
    let detail = json!({ "via": via, "result": "rejected", "reason": reason });
    if let Err(e) = state
        .store
        .add_event(out_trade_no, EventKind::NotificationRejected, &detail)
        .await
    {
        tracing::error!(error = %e, "recording a rejected notification");
    }
    tracing::error!(out_trade_no, %reason, via, "verified notification does not match the order: refused");
    Refusal {
        logged: true,
        ..Refusal::new(StatusCode::BAD_REQUEST, reason)
    }
}

/// Checks a verified payment against the order and applies it once.
async fn apply_payment(
    state: &AppState,
    p: PaymentConfirmation,
    appid: &str,
    mchid: &str,
) -> Result<(), Refusal> {
    let via = p.detail["via"]
        .as_str()
        .unwrap_or("notification")
        .to_owned();
    let Some(order) = state
        .store
        .order(&p.out_trade_no)
        .await
        .map_err(|e| Refusal::store(&e))?
    else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("unknown out_trade_no {}", p.out_trade_no),
        ));
    };
    if mchid != order.mchid {
        return Err(mismatch(
            state,
            &order.out_trade_no,
            "mchid differs from the order's".into(),
            &via,
        )
        .await);
    }
    if appid != order.appid {
        return Err(mismatch(
            state,
            &order.out_trade_no,
            "appid differs from the order's".into(),
            &via,
        )
        .await);
    }
    if p.amount_fen != order.amount_fen {
        let reason = format!(
            "amount {} differs from the order's {}",
            p.amount_fen, order.amount_fen
        );
        return Err(mismatch(state, &order.out_trade_no, reason, &via).await);
    }
    if order.status.is_paid() {
        // A repeat (WeChat redelivers until acknowledged, often concurrently). A paid order never
        // becomes unpaid again, so this read settles it and `mark_paid` would change nothing:
        // acknowledging without taking SQLite's single write lock keeps repeats off the queue
        // of the writes that matter.
        return Ok(());
    }
    match state
        .store
        .mark_paid_as_read(&p, &order)
        .await
        .map_err(|e| Refusal::store(&e))?
    {
        Transition::Applied(_) | Transition::Unchanged(_) => Ok(()),
        Transition::Refused(o) => Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("order is {}", o.status),
        )),
        Transition::NotFound => Err(Refusal::new(StatusCode::NOT_FOUND, "unknown out_trade_no")),
    }
}

/// Checks a verified refund result against the refund and applies it once.
async fn apply_refund(
    state: &AppState,
    r: RefundResult,
    out_trade_no: &str,
    amount_fen: u64,
) -> Result<(), Refusal> {
    let Some(refund) = state
        .store
        .refund(&r.out_refund_no)
        .await
        .map_err(|e| Refusal::store(&e))?
    else {
        // Not (yet) known here: WeChat will deliver it again, and the refund job reconciles.
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("unknown out_refund_no {}", r.out_refund_no),
        ));
    };
    if refund.out_trade_no != out_trade_no {
        return Err(mismatch(
            state,
            &refund.out_trade_no,
            "refund notification names another order".into(),
            "refund",
        )
        .await);
    }
    if refund.amount_fen != amount_fen {
        let reason = format!(
            "refund amount {amount_fen} differs from the refund's {}",
            refund.amount_fen
        );
        return Err(mismatch(state, &refund.out_trade_no, reason, "refund").await);
    }
    match state
        .store
        .apply_refund_result(&r)
        .await
        .map_err(|e| Refusal::store(&e))?
    {
        RefundTransition::Applied(_) | RefundTransition::Unchanged(_) => Ok(()),
        RefundTransition::Refused(current) => {
            // A final state cannot change; acknowledging stops retries of a stale report.
            tracing::warn!(out_refund_no = %current.out_refund_no, current = current.status.as_str(), reported = r.status.as_str(), "refund result conflicts with a final state");
            Ok(())
        }
        RefundTransition::NotFound => {
            Err(Refusal::new(StatusCode::NOT_FOUND, "unknown out_refund_no"))
        }
    }
}

/// The body of a v3 notification, verified and decrypted.
async fn verified_v3(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Notification, Refusal> {
    let body = body_of(body)?;
    state
        .wechat
        .v3
        .parse_notification(headers, &body)
        .await
        .map_err(|e| signature_refusal(&e))
}

/// `POST /notify/v3/pay`.
#[utoipa::path(post, path = "/notify/v3/pay", tag = "notifications",
    request_body(content = String, description = "The v3 payment notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v3_pay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let n = verified_v3(&state, &headers, body).await?;
        let Notification::Payment(n) = n else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "a refund notification sent to the payment URL",
            ));
        };
        let t = &n.transaction;
        if t.trade_state != wxpay::v3::models::TradeState::Success {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("trade_state {}", t.trade_state),
            ));
        }
        let transaction_id = t
            .transaction_id
            .clone()
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no transaction_id"))?;
        let confirmation = PaymentConfirmation {
            out_trade_no: t.out_trade_no.clone(),
            transaction_id,
            amount_fen: t.amount.total,
            payer_openid: t.payer.as_ref().map(|p| p.openid.clone()),
            paid_at: t
                .success_time
                .map(unix_ms)
                .unwrap_or_else(crate::store::now_ms),
            dedupe_key: format!("v3:{}", n.id),
            event: EventKind::Notification,
            detail: json!({ "via": "v3 notification", "event_id": n.id, "verified": true }),
        };
        apply_payment(&state, confirmation, &t.appid, &t.mchid).await
    }
    .await;
    v3_answer("v3 pay", result)
}

/// `POST /notify/v3/refund`.
#[utoipa::path(post, path = "/notify/v3/refund", tag = "notifications",
    request_body(content = String, description = "The v3 refund notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v3_refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let n = verified_v3(&state, &headers, body).await?;
        let Notification::Refund(n) = n else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "a payment notification sent to the refund URL",
            ));
        };
        let r = &n.refund;
        if r.mchid.as_deref().is_some_and(|m| m != state.wechat.mchid) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "mchid differs from the merchant's",
            ));
        }
        use wxpay::v3::models::RefundStatus as W;
        let status = match &r.refund_status {
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
            out_refund_no: r.out_refund_no.clone(),
            refund_id: r.refund_id.clone(),
            status,
            success_at: r.success_time.map(unix_ms),
            dedupe_key: format!("v3:{}", n.id),
            detail: json!({ "via": "v3 notification", "event_id": n.id, "verified": true }),
        };
        apply_refund(&state, result, &r.out_trade_no, r.amount.refund).await
    }
    .await;
    v3_answer("v3 refund", result)
}

/// `POST /notify/v2/pay`.
#[utoipa::path(post, path = "/notify/v2/pay", tag = "notifications",
    request_body(content = String, description = "The v2 payment notification (signed XML), exactly as WeChat Pay sends it", content_type = "text/xml"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v2_pay(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body_of(body)?;
        let n = wxpay::v2::notify::parse_pay_notification(&body, state.wechat.v2_key()).map_err(|e| signature_refusal(&e))?;
        let confirmation = PaymentConfirmation {
            out_trade_no: n.out_trade_no.clone(),
            transaction_id: n.transaction_id.clone(),
            amount_fen: n.total_fee.get(),
            payer_openid: Some(n.openid.clone()),
            paid_at: n.time_end.unix_timestamp() * 1000,
            dedupe_key: format!("v2:pay:{}", n.transaction_id),
            event: EventKind::Notification,
            detail: json!({ "via": "v2 notification", "sign_type": n.sign_type.as_str(), "verified": true }),
        };
        apply_payment(&state, confirmation, &n.appid, &n.mch_id).await
    }
    .await;
    v2_answer("v2 pay", result)
}

/// `POST /notify/v2/refund`.
#[utoipa::path(post, path = "/notify/v2/refund", tag = "notifications",
    request_body(content = String, description = "The v2 refund notification (XML with the encrypted req_info), exactly as WeChat Pay sends it", content_type = "text/xml"),
    responses((status = 200, description = "Acknowledged"), (status = 204, description = "Acknowledged (v3)"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn v2_refund(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body_of(body)?;
        let n = wxpay::v2::notify::parse_refund_notification(&body, state.wechat.v2_key())
            .map_err(|e| signature_refusal(&e))?;
        n.ensure_merchant(&state.wechat.appid, &state.wechat.mchid)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
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
        apply_refund(&state, result, &n.out_trade_no, n.refund_fee.get()).await
    }
    .await;
    v2_answer("v2 refund", result)
}
