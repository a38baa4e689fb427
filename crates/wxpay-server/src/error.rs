//! The HTTP API's one error type: `{"code","message"}` with the right status. Messages never
//! carry a secret; internal causes are logged when the answer is sent, not returned.
//!
//! The core's errors ([`OrderError`], [`RefundError`], [`LoginError`], [`ReconcileError`],
//! [`TenantError`]) and the store's become answers here, in one place per error type.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::fulfilment::FulfilmentError;
use crate::core::login::LoginError;
use crate::core::orders::OrderError;
use crate::core::payouts::PayoutError;
use crate::core::reconciliation::ReconcileError;
use crate::core::refunds::RefundError;
use crate::core::tenants::TenantError;
use crate::registry::RouteError;
use crate::store::StoreError;

/// An error answer of the JSON API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (`invalid_request`, `not_found`, ...).
    pub code: &'static str,
    /// Human text.
    pub message: String,
    /// What went wrong inside, for the log line written when the answer is sent; never
    /// returned.
    cause: Option<String>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            cause: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 502 `wechat_error` (504 on a timeout): WeChat failed or refused. WeChat's own text
    /// (errcode, message, rid) goes to the log for the operator when the answer is sent, not to
    /// the caller (a mini-program user has no use for it, and it tells an attacker how the
    /// merchant is set up); the caller gets what kind of failure it was.
    pub fn upstream(context: &str, err: &wxpay::Error) -> Self {
        let (status, what) = match err {
            wxpay::Error::Transport(wxpay::TransportError::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, "WeChat did not answer in time")
            }
            wxpay::Error::Transport(_) => (StatusCode::BAD_GATEWAY, "WeChat could not be reached"),
            wxpay::Error::Api(_) => (StatusCode::BAD_GATEWAY, "WeChat refused the request"),
            _ => (StatusCode::BAD_GATEWAY, "WeChat's answer could not be used"),
        };
        ApiError {
            cause: Some(format!("{context}: {err}")),
            ..Self::new(status, "wechat_error", format!("{context}: {what}"))
        }
    }

    /// 500 `internal_error`; the cause is logged when the answer is sent, not returned.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        ApiError {
            cause: Some(format!("{context}: {err}")),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(err: RouteError) -> Self {
        let message = err.to_string();
        match err {
            RouteError::UnknownApp(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_app", message)
            }
            RouteError::AppRequired => {
                ApiError::new(StatusCode::BAD_REQUEST, "appid_required", message)
            }
            RouteError::UnknownMerchant(_) => ApiError::not_found(message),
            RouteError::MerchantDisabled(_) => ApiError::conflict("merchant_disabled", message),
            RouteError::OrderUnroutable { .. } => {
                tracing::error!(error = %message, "an order's merchant is not registered");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "merchant_unavailable",
                    "the order's merchant is not available here",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let status = match &err {
            StoreError::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            cause: Some(format!("database: {err}")),
            ..Self::new(status, "internal_error", "database error")
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::Invalid(m) => ApiError::bad_request(m),
            e @ OrderError::UnknownSku(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_sku", e.to_string())
            }
            OrderError::NotFound => ApiError::not_found("no such order"),
            e @ OrderError::NotPayable { .. } => {
                ApiError::conflict("order_not_payable", e.to_string())
            }
            e @ OrderError::Expired(_) => ApiError::conflict("order_expired", e.to_string()),
            e @ OrderError::Paid { .. } => ApiError::conflict("order_paid", e.to_string()),
            OrderError::Prepay {
                out_trade_no,
                source,
            } => ApiError::upstream(
                &format!(
                    "prepay of order {out_trade_no} failed; POST /api/orders/{out_trade_no}/payment retries"
                ),
                &source,
            ),
            OrderError::Close {
                out_trade_no,
                source,
            } => ApiError::upstream(
                &format!("closing order {out_trade_no} at WeChat failed"),
                &source,
            ),
            OrderError::Signing(e) => ApiError::internal("signing wx.requestPayment", &e),
            OrderError::Store(e) => e.into(),
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(err: RefundError) -> Self {
        match err {
            RefundError::Invalid(m) => ApiError::bad_request(m),
            RefundError::OrderNotFound => ApiError::not_found("no such order"),
            RefundError::UnknownRefund(_) => ApiError::not_found("no such refund"),
            e @ RefundError::NotPaid(_) => ApiError::conflict("order_not_paid", e.to_string()),
            e @ RefundError::ExceedsRefundable { .. } => {
                ApiError::conflict("refund_exceeds_paid", e.to_string())
            }
            e @ RefundError::NumberTaken => ApiError::conflict("out_refund_no_used", e.to_string()),
            e @ (RefundError::Mismatch(_) | RefundError::Orphan(_)) => {
                ApiError::internal("sending a refund", &e)
            }
            RefundError::Store(e) => e.into(),
        }
    }
}

impl From<PayoutError> for ApiError {
    fn from(err: PayoutError) -> Self {
        let message = err.to_string();
        match err {
            PayoutError::Invalid(m) => ApiError::bad_request(m),
            PayoutError::UnknownUser(..) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_user", message)
            }
            PayoutError::NotAvailable(_) => ApiError::conflict("transfers_unavailable", message),
            PayoutError::OverBudget { .. } => ApiError::conflict("over_daily_budget", message),
            PayoutError::OverUserCap { .. } => ApiError::conflict("over_user_daily_cap", message),
            PayoutError::NumberTaken => ApiError::conflict("out_bill_no_used", message),
            PayoutError::NotFound => ApiError::not_found("no such transfer"),
            PayoutError::WrongState { .. } => ApiError::conflict("transfer_state", message),
            PayoutError::WeChat(e) => ApiError::upstream("transfer", &e),
            PayoutError::Route(e) => e.into(),
            PayoutError::Store(e) => e.into(),
        }
    }
}

impl From<FulfilmentError> for ApiError {
    fn from(err: FulfilmentError) -> Self {
        match err {
            FulfilmentError::Invalid(m) => ApiError::bad_request(m),
            FulfilmentError::OrderNotFound => ApiError::not_found("no such order"),
            FulfilmentError::WrongState(m) => ApiError::conflict("order_not_shippable", m),
            FulfilmentError::Route(e) => e.into(),
            FulfilmentError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wechat_unavailable", m)
            }
            FulfilmentError::Store(e) => e.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(err: LoginError) -> Self {
        match err {
            LoginError::InvalidCode(m) => ApiError::bad_request(m),
            // errcode and rid are for the log, not for the user.
            e @ LoginError::Refused(_) => ApiError {
                cause: Some(e.to_string()),
                ..ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_code",
                    "WeChat refused the login code",
                )
            },
            e @ LoginError::Quota => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            }
            LoginError::WeChat(e) => ApiError::upstream("code2session failed", &e),
            LoginError::Token(e) => ApiError::internal("token", &e),
            LoginError::Store(e) => e.into(),
        }
    }
}

impl From<ReconcileError> for ApiError {
    fn from(err: ReconcileError) -> Self {
        match err {
            ReconcileError::BillNotReady(d) => ApiError::conflict(
                "bill_not_ready",
                format!(
                    "WeChat has not made the bill of {d} yet (it is ready after 10:00 GMT+8 the next day)"
                ),
            ),
            ReconcileError::WeChat(e) => ApiError::upstream("downloading the bill failed", &e),
            ReconcileError::Store(e) => e.into(),
            e @ ReconcileError::BadBill { .. } => ApiError::internal("reconciliation", &e),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(err: TenantError) -> Self {
        match err {
            TenantError::Invalid(m) => ApiError::bad_request(m),
            TenantError::NotFound(m) => ApiError::not_found(m),
            TenantError::Exists(m) => ApiError::conflict("already_exists", m),
            e @ TenantError::MasterKeyRequired => {
                ApiError::conflict("master_key_required", e.to_string())
            }
            TenantError::FromFile(m) => ApiError::conflict("from_merchant_file", m),
            TenantError::NotProvider(m) => ApiError::conflict("not_a_provider", m),
            e @ TenantError::Changed => ApiError::conflict("changed_meanwhile", e.to_string()),
            TenantError::Unreadable(m) => ApiError::conflict("credentials_unreadable", m),
            TenantError::Seal(e) => ApiError::internal("sealing", &e),
            TenantError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The one place an error answer is decided: its cause is logged here, once.
        if let Some(cause) = &self.cause {
            if self.status.is_server_error() && self.code == "internal_error" {
                tracing::error!(status = self.status.as_u16(), error = %cause, "answering an error");
            } else {
                tracing::warn!(status = self.status.as_u16(), error = %cause, "answering an error");
            }
        }
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}
