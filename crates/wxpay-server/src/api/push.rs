//! `/notify/mp/{appid}`: the message push (消息推送) of each mini program. `GET` is the
//! URL-verification handshake the admin console makes when the URL is saved; `POST` carries
//! the events (trade management), in plaintext, compatible or safe mode, JSON or XML, verified
//! and decrypted with the mini program's own Token and EncodingAESKey before anything is read.
//! And the alerts those events raise (`GET /admin/alerts`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use wxpay::mp::push::{PushError, PushFormat, PushQuery, open_push, verify_url};

use crate::api::admin::{Admin, ErrorBody};
use crate::app::AppState;
use crate::core::push::{PushSetupError, apply, push_config};
use crate::error::ApiError;
use crate::store::Alert;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The answer when a mini program has no push here: nothing is read.
fn setup_refusal(appid: &str, err: &PushSetupError) -> Response {
    match err {
        PushSetupError::NotConfigured(_) => text(StatusCode::NOT_FOUND, "not found"),
        PushSetupError::Unreadable(_) => {
            tracing::error!(appid = %appid, error = %err, "message push refused");
            text(StatusCode::SERVICE_UNAVAILABLE, "push settings unreadable")
        }
        PushSetupError::Store(e) => {
            tracing::error!(appid = %appid, error = %e, "database error while reading push settings");
            text(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

/// How a refused push is answered: 401 for what fails verification, 400 for a body that is
/// not a push (WeChat retries either; neither is read further).
fn push_refusal(appid: &str, err: &PushError) -> Response {
    let status = match err {
        PushError::BadSignature
        | PushError::BadMsgSignature
        | PushError::PlaintextRefused
        | PushError::AppIdMismatch
        | PushError::Base64
        | PushError::CipherLength(_)
        | PushError::Padding
        | PushError::Length
        | PushError::NoAesKey => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    tracing::warn!(appid = %appid, status = status.as_u16(), error = %err, "message push refused");
    text(status, "refused")
}

/// `GET /notify/mp/{appid}`: WeChat's URL verification (`signature`, `timestamp`, `nonce`,
/// `echostr`): answers `echostr` when the signature is the mini program's Token's.
#[utoipa::path(get, path = "/notify/mp/{appid}", tag = "notifications",
    params(("appid" = String, Path, description = "The mini program (its own Token verifies)"),
        ("signature" = String, Query, description = "SHA-1 over the sorted Token, timestamp and nonce"),
        ("timestamp" = String, Query), ("nonce" = String, Query),
        ("echostr" = String, Query, description = "Echoed when the signature verifies")),
    responses((status = 200, description = "The echostr, as text", content_type = "text/plain"),
        (status = 401, description = "Signature refused"),
        (status = 404, description = "No push settings for this mini program")))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let config = match push_config(&state.store, state.master_key.as_ref(), &appid).await {
        Ok(c) => c,
        Err(e) => return setup_refusal(&appid, &e),
    };
    let query = PushQuery::parse(query.as_deref().unwrap_or(""));
    let token = secrecy::ExposeSecret::expose_secret(&config.token).to_owned();
    match verify_url(&token, &query) {
        Ok(echo) => text(StatusCode::OK, echo.to_owned()),
        Err(e) => push_refusal(&appid, &e),
    }
}

/// The format of a push body: JSON when it says so (or starts like JSON), else XML.
fn format_of(headers: &HeaderMap, body: &[u8]) -> PushFormat {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if declared.contains("json") {
        return PushFormat::Json;
    }
    if declared.contains("xml") {
        return PushFormat::Xml;
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => PushFormat::Json,
        _ => PushFormat::Xml,
    }
}

/// `POST /notify/mp/{appid}`: a pushed event, verified (`signature`, or `msg_signature` with
/// `encrypt_type=aes`), decrypted, then applied once: a settlement settles the order (timeline,
/// `order.received` and `order.settled` webhooks), a reminder goes on the timeline,
/// `wxa_trade_controlled` raises an alert. Answers `success`.
#[utoipa::path(post, path = "/notify/mp/{appid}", tag = "notifications",
    params(("appid" = String, Path, description = "The mini program (its own Token and EncodingAESKey)")),
    request_body(content = String, description = "The pushed message as WeChat sends it (JSON or XML; `Encrypt` in compatible and safe mode)", content_type = "application/json"),
    responses((status = 200, description = "`success`", content_type = "text/plain"),
        (status = 400, description = "Not a push: WeChat retries"),
        (status = 401, description = "Signature or decryption refused"),
        (status = 404, description = "No push settings for this mini program"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn receive(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return text(rejection.status(), "body refused"),
    };
    let config = match push_config(&state.store, state.master_key.as_ref(), &appid).await {
        Ok(c) => c,
        Err(e) => return setup_refusal(&appid, &e),
    };
    let query = PushQuery::parse(query.as_deref().unwrap_or(""));
    let message = match open_push(&config, &query, format_of(&headers, &body), &body) {
        Ok(m) => m,
        Err(e) => return push_refusal(&appid, &e),
    };
    match apply(&state.store, &appid, &message).await {
        Ok(_) => text(StatusCode::OK, "success"),
        Err(e) => {
            tracing::error!(appid = %appid, error = %e, "database error while applying a push");
            text(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

/// The open alerts (schema `AlertList`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first.
    pub alerts: Vec<Alert>,
}

/// `GET /admin/alerts`: what WeChat raised that a person must see (e.g. a mini program whose
/// payments are restricted, `wxa_trade_controlled`), until acknowledged.
#[utoipa::path(get, path = "/admin/alerts", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = AlertList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_alerts(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<AlertList>, ApiError> {
    Ok(Json(AlertList {
        alerts: state.store.open_alerts().await?,
    }))
}

/// `POST /admin/alerts/{id}/acknowledge`: the alert leaves the console's banner.
#[utoipa::path(post, path = "/admin/alerts/{id}/acknowledge", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The alert")),
    responses((status = 204, description = "Acknowledged"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn acknowledge_alert(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.acknowledge_alert(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such open alert",
        ))
    }
}

/// `GET /admin/fulfilment/unsettled?mchid=`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnsettledQuery {
    /// One merchant's (an operator sees only its own, whatever this says).
    pub mchid: Option<String>,
}

/// The paid orders WeChat has not settled (schema `Unsettled`): the money the merchant is still
/// waiting for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unsettled {
    /// How many orders (at most 500 are listed).
    pub count: usize,
    /// Their amounts in fen, less what was refunded.
    pub total_fen: u64,
    /// The orders, oldest payment first.
    pub orders: Vec<crate::api::admin::OrderView>,
}

/// `GET /admin/fulfilment/unsettled`: paid orders not settled yet, with their total (what
/// WeChat still holds until shipping is uploaded and receipt confirmed).
#[utoipa::path(get, path = "/admin/fulfilment/unsettled", tag = "admin", params(UnsettledQuery),
    security(("admin_token" = []), ("operator_token" = [])),
    responses((status = 200, body = Unsettled), (status = 401, body = ErrorBody)))]
pub(crate) async fn unsettled(
    principal: crate::api::tenants::Principal,
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<UnsettledQuery>,
) -> Result<Json<Unsettled>, ApiError> {
    let mchid = principal
        .merchant()
        .or(q.mchid.as_deref().filter(|m| !m.is_empty()));
    let orders = state.store.unsettled_orders(mchid, 500).await?;
    let total_fen = orders
        .iter()
        .map(|o| o.amount_fen.saturating_sub(o.refunded_fen))
        .sum();
    Ok(Json(Unsettled {
        count: orders.len(),
        total_fen,
        orders: orders
            .iter()
            .map(crate::api::admin::OrderView::from)
            .collect(),
    }))
}
