//! The API's one error type: `{"code","message"}` with the right status. Messages never carry a
//! secret; internal causes are logged, not returned.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
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

    /// 502 `wechat_error`: WeChat failed or refused. WeChat's own text (errcode, message, rid)
    /// goes to the log for the operator, not to the caller (a mini-program user has no use for
    /// it, and it tells an attacker how the merchant is set up); the caller gets what kind of
    /// failure it was.
    pub fn upstream(context: &str, err: &wxpay::Error) -> Self {
        tracing::warn!(error = %err, "{context}");
        let (status, what) = match err {
            wxpay::Error::Transport(wxpay::TransportError::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, "WeChat did not answer in time")
            }
            wxpay::Error::Transport(_) => (StatusCode::BAD_GATEWAY, "WeChat could not be reached"),
            wxpay::Error::Api(_) => (StatusCode::BAD_GATEWAY, "WeChat refused the request"),
            _ => (StatusCode::BAD_GATEWAY, "WeChat's answer could not be used"),
        };
        Self::new(status, "wechat_error", format!("{context}: {what}"))
    }

    /// 500 `internal_error`; the cause is logged, not returned.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let status = match &err {
            StoreError::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::error!(error = %err, "database");
        Self::new(status, "internal_error", "database error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
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
