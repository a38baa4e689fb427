//! WeChat's notifications: verify and decrypt (the library), turn into the core's report, let
//! the core check it against the order and change it once ([`crate::core::payments`],
//! [`crate::core::refunds`]), acknowledge
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
use crate::core::payments::{PaymentError, PaymentReport, ReportSource, apply_notified_payment};
use crate::core::refunds::{RefundError, apply_notified_result};
use crate::store::{RefundResult, RefundStatus};
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
        let report = PaymentReport::from_v3(
            t,
            ReportSource::V3Notification {
                event_id: n.id.clone(),
            },
        );
        apply_notified_payment(&state.store, &report)
            .await
            .map_err(payment_refusal)
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
        apply_notified_result(&state.store, &result, &r.out_trade_no, r.amount.refund)
            .await
            .map_err(refund_refusal)
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
        let n = wxpay::v2::notify::parse_pay_notification(&body, state.wechat.v2_key())
            .map_err(|e| signature_refusal(&e))?;
        apply_notified_payment(&state.store, &PaymentReport::from_v2_notification(&n))
            .await
            .map_err(payment_refusal)
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
        apply_notified_result(&state.store, &result, &n.out_trade_no, n.refund_fee.get())
            .await
            .map_err(refund_refusal)
    }
    .await;
    v2_answer("v2 refund", result)
}
