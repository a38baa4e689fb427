//! The mini program's API: login, orders, payment parameters, close, mini-program codes.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
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
use crate::store::{
    Delivery, Order, OrderItem, OrderStatus, Refund, RefundStatus, ShippingState, now_ms,
};

/// The caller's address (behind trusted proxies, the forwarded one), sent to WeChat as the
/// payer's IP.
pub use crate::net::client_ip::ClientIp;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// From `wx.login`.
    code: String,
    /// The mini program logging in. Without it: the one named by the `Referer` the WeChat
    /// client sends (`https://servicewechat.com/{appid}/{version}/page-frame.html`), or the only
    /// one registered.
    #[serde(default)]
    appid: Option<String>,
}

/// The appid in the `Referer` the WeChat client sends with every `wx.request`
/// (`https://servicewechat.com/{appid}/{version}/page-frame.html`).
fn referer_appid(headers: &axum::http::HeaderMap) -> Option<String> {
    let referer = headers.get(axum::http::header::REFERER)?.to_str().ok()?;
    let rest = referer.strip_prefix("https://servicewechat.com/")?;
    let appid = rest.split('/').next()?;
    (appid.starts_with("wx")
        && appid.len() <= 32
        && appid.bytes().all(|b| b.is_ascii_alphanumeric()))
    .then(|| appid.to_owned())
}

/// `POST /api/login {"code","appid"?}` → `{"token","expires_in"}`.
#[utoipa::path(post, path = "/api/login", tag = "mini program", request_body = LoginRequest,
    responses((status = 200, description = "`{\"token\",\"expires_in\"}`", body = Object), (status = 400, body = crate::api::admin::ErrorBody),
        (status = 401, body = crate::api::admin::ErrorBody, description = "WeChat refused the code"),
        (status = 429, body = crate::api::admin::ErrorBody, description = "Too many logins from this IP (`Retry-After`)"), (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    body: Result<JsonBody<LoginRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // Counted before the body is read: malformed attempts use the budget too.
    if let Err(limited) = state.rate_limits.login.check(&ip) {
        tracing::warn!(client_ip = %ip, "login rate limit reached");
        return Ok(limited.response("logins"));
    }
    let JsonBody(body) = body?;
    let appid = body.appid.or_else(|| referer_appid(&headers));
    let wechat = state.registry.app_or_only(appid.as_deref())?;
    let session = login::login(
        &state.store,
        &wechat,
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

/// An order as its buyer sees it (schema `BuyerOrder`): never the merchant's internal fields
/// (prepay, client IP, payer, source, versions). A new column appears here only when added here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BuyerOrder {
    /// The merchant's order number.
    out_trade_no: String,
    /// Total in fen.
    amount_fen: u64,
    /// The state.
    status: OrderStatus,
    /// What WeChat shows the buyer.
    description: String,
    /// The lines.
    items: Vec<OrderItem>,
    /// WeChat's transaction id, once paid.
    transaction_id: Option<String>,
    /// When it was paid (Unix ms).
    paid_at: Option<i64>,
    /// Refunds not closed, in fen.
    refunded_fen: u64,
    /// After this the order cannot be paid (Unix ms).
    expires_at: i64,
    /// Creation time (Unix ms).
    created_at: i64,
    /// How it is delivered: `express`, `same_city`, `virtual` or `pickup`.
    delivery: Option<Delivery>,
    /// `awaiting_shipment`, `partially_shipped`, `shipped`, `received`, `settled`; null until
    /// paid.
    shipping_state: Option<ShippingState>,
    /// The order's refunds, oldest first (`GET /api/orders/{no}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    refunds: Option<Vec<BuyerRefund>>,
}

impl BuyerOrder {
    fn new(order: &Order) -> Self {
        BuyerOrder {
            out_trade_no: order.out_trade_no.clone(),
            amount_fen: order.amount_fen,
            status: order.status,
            description: order.description.clone(),
            items: order.items.clone(),
            transaction_id: order.transaction_id.clone(),
            paid_at: order.paid_at,
            refunded_fen: order.refunded_fen,
            expires_at: order.expires_at,
            created_at: order.created_at,
            delivery: order.delivery,
            shipping_state: order.shipping_state,
            refunds: None,
        }
    }
}

/// A refund as the buyer sees it (schema `BuyerRefund`): never WeChat's refund id, the errors
/// met while sending it or its bookkeeping.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BuyerRefund {
    /// The merchant's refund number.
    out_refund_no: String,
    /// The refund in fen.
    amount_fen: u64,
    /// `PROCESSING`, `SUCCESS`, `CLOSED` or `ABNORMAL`.
    status: RefundStatus,
    /// The reason the merchant gave, if any.
    reason: Option<String>,
    /// When it was made (Unix ms).
    created_at: i64,
    /// When the money was back with the payer (Unix ms), once `SUCCESS`.
    succeeded_at: Option<i64>,
}

impl From<&Refund> for BuyerRefund {
    fn from(r: &Refund) -> Self {
        BuyerRefund {
            out_refund_no: r.out_refund_no.clone(),
            amount_fen: r.amount_fen,
            status: r.status,
            reason: r.reason.clone(),
            created_at: r.created_at,
            succeeded_at: r.success_at,
        }
    }
}

fn order_answer(order: &Order, payment: Option<&wxpay::RequestPayment>) -> Value {
    let mut v = json!(BuyerOrder::new(order));
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
    let wechat = state.registry.for_new_order(&user.appid)?;
    let placed = orders::place(
        &state.store,
        &wechat,
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
    responses((status = 200, description = "The caller's order with its refunds, brought up to date with WeChat when unpaid", body = BuyerOrder),
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
        let wechat = state.registry.for_order(&order)?;
        order = sync_with_wechat(&state.store, &wechat, &order).await?;
    }
    // Only a paid order can have refunds: the polls of an unpaid order cost no second query.
    let refunds = if order.status.is_paid() {
        state.store.refunds_of_order(&order.out_trade_no).await?
    } else {
        Vec::new()
    };
    let mut answer = BuyerOrder::new(&order);
    answer.refunds = Some(refunds.iter().map(BuyerRefund::from).collect());
    Ok(Json(answer).into_response())
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
    let wechat = state.registry.for_order(&order)?;
    let payable = orders::payment(&state.store, &wechat, &order).await?;
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
    let wechat = state.registry.for_order(&order)?;
    let order = orders::close(&state.store, &wechat, &order, "api").await?;
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
    /// The mini program (back office only: a user's is their session's).
    appid: Option<String>,
}

/// Who may have mini-program codes made: a mini-program user (session token) or the back office
/// (admin token). Each is one key of the `wxacode` rate limit.
#[derive(Debug, Clone)]
pub(crate) enum CodeCaller {
    /// A mini-program user: openid and mini program.
    User(String, String),
    /// The holder of the admin token.
    Admin,
}

impl CodeCaller {
    /// The rate limit's key (openids never contain `:`).
    fn key(&self) -> &str {
        match self {
            CodeCaller::User(openid, _) => openid,
            CodeCaller::Admin => "admin:",
        }
    }
}

impl FromRequestParts<AppState> for CodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        if super::extract::bearer(parts).is_none() {
            return Err(ApiError::unauthorized(
                "Authorization: Bearer TOKEN (a mini-program session or the admin token) is required",
            ));
        }
        if super::admin::Admin::from_request_parts(parts, state)
            .await
            .is_ok()
        {
            return Ok(CodeCaller::Admin);
        }
        User::from_request_parts(parts, state)
            .await
            .map(|user| CodeCaller::User(user.openid, user.appid))
    }
}

/// Checks a `GET /api/wxacode` request as WeChat would, before anything is sent: the scene is 1
/// to 32 characters of `[0-9A-Za-z]` and ``!#$&'()*+,/:;=?@-._~``; the page is one of
/// `WXPAY_WXACODE_PAGES` (the first when none is given). Answers (scene, page).
fn wxacode_request(state: &AppState, q: &WxaCodeQuery) -> Result<(String, String), ApiError> {
    let scene = q
        .scene
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("scene is required (1 to 32 characters)"))?;
    wxpay::mp::validate_scene(&scene).map_err(|e| match e {
        wxpay::Error::InvalidRequest(message) => ApiError::bad_request(message),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let pages = &state.settings.wxacode_pages;
    let page = match q.page.clone().filter(|p| !p.is_empty()) {
        None => pages
            .first()
            .cloned()
            .ok_or_else(|| ApiError::bad_request("no page is configured (WXPAY_WXACODE_PAGES)"))?,
        Some(page) if pages.contains(&page) => page,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "page must be one of WXPAY_WXACODE_PAGES: {}",
                pages.join(", ")
            )));
        }
    };
    Ok((scene, page))
}

/// `GET /api/wxacode?scene=&page=`: the mini-program code image, cached. For a mini-program
/// session or the admin token, rate limited per user; the page must be one of
/// `WXPAY_WXACODE_PAGES`.
#[utoipa::path(get, path = "/api/wxacode", tag = "mini program",
    security(("session_token" = []), ("admin_token" = [])),
    params(("scene" = String, Query, description = "1 to 32 characters of `0-9A-Za-z` and `!#$&'()*+,/:;=?@-._~`"),
        ("page" = Option<String>, Query, description = "One of `WXPAY_WXACODE_PAGES` (default: its first, `pages/catalog/catalog`)"),
        ("appid" = Option<String>, Query, description = "With the admin token: the mini program (default: the only one registered). A user's codes are their mini program's")),
    responses((status = 200, description = "The mini-program code", content_type = "image/jpeg", body = Vec<u8>),
        (status = 400, body = crate::api::admin::ErrorBody, description = "A bad scene, or a page not in `WXPAY_WXACODE_PAGES` (WeChat is not called)"),
        (status = 401, body = crate::api::admin::ErrorBody, description = "No valid session or admin token"),
        (status = 429, body = crate::api::admin::ErrorBody, description = "Too many codes for this user (`Retry-After`)"),
        (status = 502, body = crate::api::admin::ErrorBody)))]
pub(crate) async fn wxacode(
    State(state): State<AppState>,
    caller: CodeCaller,
    Query(q): Query<WxaCodeQuery>,
) -> Result<Response, ApiError> {
    let (scene, page) = wxacode_request(&state, &q)?;
    let wechat = match &caller {
        CodeCaller::User(_, appid) => state.registry.app(appid)?,
        CodeCaller::Admin => state.registry.app_or_only(q.appid.as_deref())?,
    };
    if let Err(limited) = state.rate_limits.wxacode.check(caller.key()) {
        tracing::warn!(caller = %caller.key(), "wxacode rate limit reached");
        return Ok(limited.response("mini-program codes"));
    }
    let mut request = wxpay::mp::client::WxaCodeRequest::new(scene.clone()).page(page.clone());
    // The page of an unreleased app does not exist for WeChat yet; do not insist.
    request.check_path = false;
    request
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = (wechat.appid.clone(), scene, page);
    let image =
        match state.wxacode_cache.get(&key) {
            Some(image) => image,
            None => {
                let image = wechat.mp.get_wxacode_unlimit(&request).await.map_err(
                    |err| match &err {
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
                    },
                )?;
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
