//! The mini program's API: login, orders, payment parameters, close, mini-program codes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use wxpay::mp::ErrCode;

use secrecy::ExposeSecret as _;

use super::extract::{JsonBody, Path, Query, User};
use crate::app::AppState;
use crate::core::login;
use crate::core::orders::{self, Line, OrderRequest, Priced};
pub use crate::core::orders::{MAX_ORDER_FEN, MAX_ORDER_LINES, MAX_QUANTITY};
use crate::core::payments::sync_with_wechat;
use crate::error::ApiError;
use crate::store::{Order, OrderStatus, now_ms};

/// The caller's address (behind trusted proxies, the forwarded one), sent to WeChat as the
/// payer's IP.
pub use crate::net::client_ip::ClientIp;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    code: String,
}

/// `POST /api/login {"code"}` → `{"token","expires_in"}`.
#[utoipa::path(post, path = "/api/login", tag = "mini program", request_body = LoginRequest,
    responses((status = 200, description = "`{\"token\",\"expires_in\"}`", body = Object), (status = 400, body = crate::api::admin::ErrorBody),
        (status = 401, body = crate::api::admin::ErrorBody, description = "WeChat refused the code"),
        (status = 429, body = crate::api::admin::ErrorBody, description = "Too many logins from this IP (`Retry-After`)"), (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<JsonBody<LoginRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // Counted before the body is read: malformed attempts use the budget too.
    if let Err(limited) = state.rate_limits.login.check(&ip) {
        tracing::warn!(client_ip = %ip, "login rate limit reached");
        return Ok(limited.response("logins"));
    }
    let JsonBody(body) = body?;
    let session = login::login(
        &state.store,
        &state.wechat,
        &body.code,
        state.settings.session_ttl_secs,
    )
    .await?;
    Ok(Json(json!({
        "token": session.token.expose_secret(),
        "expires_in": state.settings.session_ttl_secs
    }))
    .into_response())
}

/// `POST /api/logout` (Bearer token): ends this session on every instance. 204 whether or not
/// the session still existed (logging out twice is fine).
#[utoipa::path(post, path = "/api/logout", tag = "mini program", security(("session_token" = [])),
    responses((status = 204, description = "The session is revoked: the token is refused from now on, by every instance"),
        (status = 401, body = crate::api::admin::ErrorBody, description = "No `Authorization: Bearer TOKEN` header")))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<StatusCode, ApiError> {
    let token = super::extract::bearer(&parts)
        .ok_or_else(|| ApiError::unauthorized("Authorization: Bearer TOKEN is required"))?;
    login::logout(&state.store, token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderLine {
    sku: String,
    quantity: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrder {
    items: Vec<OrderLine>,
}

fn order_answer(order: &Order, payment: Option<&wxpay::RequestPayment>) -> Value {
    let mut v = json!({
        "out_trade_no": order.out_trade_no,
        "amount_fen": order.amount_fen,
        "status": order.status,
        "description": order.description,
        "items": order.items,
        "transaction_id": order.transaction_id,
        "paid_at": order.paid_at,
        "refunded_fen": order.refunded_fen,
        "expires_at": order.expires_at,
        "created_at": order.created_at,
    });
    if let Some(p) = payment {
        v["payment"] = json!(p);
    }
    v
}

/// `POST /api/orders {"items":[{"sku","quantity"}]}`: priced from the catalog, committed, then
/// prepaid at WeChat; answers the `wx.requestPayment` object.
#[utoipa::path(post, path = "/api/orders", tag = "mini program", security(("session_token" = [])), request_body = CreateOrder,
    responses((status = 201, description = "The order with `payment`, the object for `wx.requestPayment`", body = Object),
        (status = 400, body = crate::api::admin::ErrorBody), (status = 401, body = crate::api::admin::ErrorBody),
        (status = 429, body = crate::api::admin::ErrorBody, description = "Too many orders of this user (`Retry-After`)"), (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn create_order(
    State(state): State<AppState>,
    user: User,
    ClientIp(ip): ClientIp,
    body: Result<JsonBody<CreateOrder>, ApiError>,
) -> Result<Response, ApiError> {
    if let Err(limited) = state.rate_limits.orders.check(&user.openid) {
        tracing::warn!(openid = %user.openid, "order rate limit reached");
        return Ok(limited.response("orders"));
    }
    let JsonBody(body) = body?;
    let placed = orders::place(
        &state.store,
        &state.wechat,
        OrderRequest {
            openid: user.openid,
            priced: Priced::Catalog(
                body.items
                    .into_iter()
                    .map(|l| Line {
                        sku: l.sku,
                        quantity: l.quantity,
                    })
                    .collect(),
            ),
            client_ip: ip,
            ttl_secs: state.settings.order_ttl_secs,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(order_answer(&placed.order, Some(&placed.payment))),
    )
        .into_response())
}

async fn own_order(state: &AppState, user: &User, out_trade_no: &str) -> Result<Order, ApiError> {
    if out_trade_no.len() > 32 {
        return Err(ApiError::not_found("no such order"));
    }
    state
        .store
        .order_of_user(out_trade_no, &user.openid)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))
}

/// `GET /api/orders/{no}`: the caller's order; an unpaid one older than `query_after_secs` is
/// first brought up to date with WeChat (at most one query per order per that interval).
#[utoipa::path(get, path = "/api/orders/{out_trade_no}", tag = "mini program", security(("session_token" = [])),
    params(("out_trade_no" = String, Path, description = "The order number")),
    responses((status = 200, description = "The caller's order, brought up to date with WeChat when unpaid", body = Object),
        (status = 401, body = crate::api::admin::ErrorBody), (status = 404, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    user: User,
    Path(no): Path<String>,
) -> Result<Response, ApiError> {
    let mut order = own_order(&state, &user, &no).await?;
    let after_ms = i64::try_from(state.settings.query_after_secs).unwrap_or(5) * 1000;
    if order.status == OrderStatus::NotPay
        && now_ms() - order.created_at >= after_ms
        && state
            .store
            .claim_query(&order.out_trade_no, after_ms)
            .await?
    {
        order = sync_with_wechat(&state.store, &state.wechat, &order).await?;
    }
    Ok(Json(order_answer(&order, None)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
}

/// `GET /api/orders?limit=`: the caller's latest orders.
#[utoipa::path(get, path = "/api/orders", tag = "mini program", security(("session_token" = [])),
    params(("limit" = Option<u32>, Query, description = "1 to 100 (default 20)")),
    responses((status = 200, description = "`{\"orders\":[...]}`, newest first", body = Object), (status = 401, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let orders = state.store.orders_of_user(&user.openid, limit).await?;
    let list: Vec<Value> = orders.iter().map(|o| order_answer(o, None)).collect();
    Ok(Json(json!({ "orders": list })).into_response())
}

/// `POST /api/orders/{no}/payment`: fresh `wx.requestPayment` parameters (a new prepay when
/// there is none or it is about to expire).
#[utoipa::path(post, path = "/api/orders/{out_trade_no}/payment", tag = "mini program", security(("session_token" = [])),
    params(("out_trade_no" = String, Path, description = "The order number")),
    responses((status = 200, description = "The order with fresh `payment` parameters", body = Object),
        (status = 401, body = crate::api::admin::ErrorBody), (status = 404, body = crate::api::admin::ErrorBody), (status = 409, body = crate::api::admin::ErrorBody), (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn payment(
    State(state): State<AppState>,
    user: User,
    Path(no): Path<String>,
) -> Result<Response, ApiError> {
    let order = own_order(&state, &user, &no).await?;
    let payable = orders::payment(&state.store, &state.wechat, &order).await?;
    Ok(Json(order_answer(&payable.order, Some(&payable.payment))).into_response())
}

/// `POST /api/orders/{no}/close`: closes at WeChat, then here.
#[utoipa::path(post, path = "/api/orders/{out_trade_no}/close", tag = "mini program", security(("session_token" = [])),
    params(("out_trade_no" = String, Path, description = "The order number")),
    responses((status = 200, description = "The closed order", body = Object),
        (status = 401, body = crate::api::admin::ErrorBody), (status = 404, body = crate::api::admin::ErrorBody), (status = 409, body = crate::api::admin::ErrorBody), (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn close(
    State(state): State<AppState>,
    user: User,
    Path(no): Path<String>,
) -> Result<Response, ApiError> {
    let order = own_order(&state, &user, &no).await?;
    let order = orders::close(&state.store, &state.wechat, &order, "api").await?;
    Ok(Json(order_answer(&order, None)).into_response())
}

/// `GET /api/products`: the active catalog.
#[utoipa::path(get, path = "/api/products", tag = "mini program",
    responses((status = 200, description = "`{\"products\":[...]}`, the active catalog", body = Object)))]
pub(crate) async fn products(State(state): State<AppState>) -> Result<Response, ApiError> {
    let products = state.store.products(true).await?;
    Ok(Json(json!({ "products": products })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct WxaCodeQuery {
    scene: Option<String>,
    page: Option<String>,
}

/// `GET /api/wxacode?scene=&page=`: the mini-program code image, cached.
#[utoipa::path(get, path = "/api/wxacode", tag = "mini program",
    params(("scene" = String, Query, description = "Up to 32 visible characters"), ("page" = Option<String>, Query, description = "The page to open")),
    responses((status = 200, description = "The mini-program code", content_type = "image/jpeg", body = Vec<u8>),
        (status = 400, body = crate::api::admin::ErrorBody), (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn wxacode(
    State(state): State<AppState>,
    Query(q): Query<WxaCodeQuery>,
) -> Result<Response, ApiError> {
    let scene = q
        .scene
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("scene is required"))?;
    let page = q.page.filter(|p| !p.is_empty());
    let mut request = wxpay::mp::client::WxaCodeRequest::new(scene.clone());
    if let Some(p) = &page {
        request = request.page(p.clone());
    }
    // The page of an unreleased app does not exist for WeChat yet; do not insist.
    request.check_path = false;
    request
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = (scene, page.unwrap_or_default());
    let image = match state.wxacode_cache.get(&key) {
        Some(image) => image,
        None => {
            let image = state
                .wechat
                .mp
                .get_wxacode_unlimit(&request)
                .await
                .map_err(|err| match &err {
                    wxpay::Error::Api(wxpay::ApiError::MiniProgram {
                        errcode:
                            ErrCode::InvalidScene
                            | ErrCode::InvalidSceneLength
                            | ErrCode::InvalidPage
                            | ErrCode::InvalidArgs,
                        ..
                    }) => {
                        tracing::info!(error = %err, "getwxacodeunlimit refused the request");
                        ApiError::bad_request("WeChat refused the scene or the page")
                    }
                    _ => ApiError::upstream("getwxacodeunlimit failed", &err),
                })?;
            state.wxacode_cache.put(key, image.clone());
            image
        }
    };
    Ok((
        [
            (http::header::CONTENT_TYPE, image.content_type.clone()),
            (
                http::header::CACHE_CONTROL,
                "public, max-age=86400".to_owned(),
            ),
        ],
        image.bytes,
    )
        .into_response())
}

/// `GET /healthz`: the database answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\",\"database\"}`", body = Object), (status = 503, description = "The database does not answer")))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok", "database": state.store.backend().as_str() }))
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "code": "unavailable", "message": "the database does not answer" })),
            )
                .into_response()
        }
    }
}
