//! The merchant's back office, behind `Authorization: Bearer WXPAY_ADMIN_TOKEN`: orders (with
//! their timeline, refunds and webhooks), merchant-priced orders, the catalog, refunds, the
//! daily reconciliation, payments per hour, recent webhooks, the jobs.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, Path, Query, bearer};
use super::tenants::Principal;
use crate::app::AppState;
use crate::core::fulfilment::{self, ShipRequest, Shipped};
use crate::core::orders::{self, MAX_ORDER_FEN, OrderRequest, Priced};
use crate::core::reconciliation;
use crate::core::refunds::{self, Created, RefundRequest, SubmitOutcome};
use crate::error::ApiError;
use crate::store::{
    ApiVersion, Delivery, HourlyPayments, JobState, NewProduct, Order, OrderCursor, OrderEvent,
    OrderItem, OrderStatus, OutboxEvent, Product, Reconciliation, Refund, RefundStatus, Shipment,
    ShipmentItem, ShippingState, ShippingUpload, WebhookStatus,
};

/// The back office's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/orders", get(list_orders).post(create_order))
        .route("/admin/orders/{out_trade_no}", get(order_detail))
        .route("/admin/orders/{out_trade_no}/refunds", post(create_refund))
        .route(
            "/admin/orders/{out_trade_no}/shipments",
            post(create_shipment),
        )
        .route("/admin/fulfilment/overdue", get(overdue))
        .route(
            "/admin/apps/{appid}/delivery-companies",
            get(delivery_companies),
        )
        .route("/admin/refunds/{out_refund_no}", get(refund))
        .route("/admin/products", get(products))
        .route("/admin/products/{sku}", put(put_product))
        .route("/admin/reconciliation/{date}", get(reconciliation))
        .route("/admin/stats/hourly", get(hourly))
        .route("/admin/webhooks", get(webhooks))
        .route("/admin/jobs", get(jobs))
        .route(
            "/admin/users/{openid}/sessions/revoke",
            post(revoke_sessions),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::app::MAX_API_BODY,
        ))
}

/// A caller holding the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.admin_token else {
            return Err(ApiError::unauthorized(
                "the admin API is closed: set WXPAY_ADMIN_TOKEN",
            ));
        };
        let given = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("Authorization: Bearer ADMIN_TOKEN is required")
        })?;
        // Digests first, so that neither the content nor the length leaks through timing.
        let digest = |t: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
        let (a, b) = (digest(given), digest(expected.expose_secret()));
        #[allow(deprecated)]
        let same =
            aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok();
        if same {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("the admin token is wrong"))
        }
    }
}

/// `?status=&limit=&cursor=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersQuery {
    /// `NOTPAY`, `SUCCESS`, `REFUND`, `CLOSED` or `PAYERROR`.
    pub status: Option<String>,
    /// One merchant's orders (an operator sees only its merchant's, whatever this says).
    pub mchid: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An order as the back office sees it (schema `Order`): the public fields, never the
/// prepay, the client IP or the payer (a new column appears here only when added here).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    /// The merchant's order number.
    pub out_trade_no: String,
    /// The buyer.
    pub openid: String,
    /// The mini program.
    pub appid: String,
    /// The merchant (the service provider, for an order paid to a sub-merchant).
    pub mchid: String,
    /// The provider's sub-merchant the order is paid to; null for a direct merchant's order.
    pub sub_mchid: Option<String>,
    /// The API the order was made with.
    pub api_version: ApiVersion,
    /// `api` (mini program) or `admin` (priced by the merchant's own system).
    pub source: String,
    /// What WeChat shows the buyer.
    pub description: String,
    /// The lines (empty for admin orders).
    pub items: Vec<OrderItem>,
    /// Total in fen.
    pub amount_fen: u64,
    /// The state.
    pub status: OrderStatus,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// When it was paid.
    pub paid_at: Option<i64>,
    /// When it was closed.
    pub closed_at: Option<i64>,
    /// Refunds not closed, in fen (reserved at creation of a refund).
    pub refunded_fen: u64,
    /// After this the order cannot be paid.
    pub expires_at: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Incremented by every change.
    pub version: i64,
    /// How it is delivered: `express`, `same_city`, `virtual` or `pickup` (null only for orders
    /// the store cannot date).
    pub delivery: Option<Delivery>,
    /// `awaiting_shipment`, `partially_shipped`, `shipped`, `received`, `settled`; null until
    /// paid.
    pub shipping_state: Option<ShippingState>,
    /// When it was fully shipped.
    pub shipped_at: Option<i64>,
    /// When the buyer (or WeChat) confirmed receipt.
    pub received_at: Option<i64>,
    /// When WeChat settled the payment.
    pub settled_at: Option<i64>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            out_trade_no: o.out_trade_no.clone(),
            openid: o.openid.clone(),
            appid: o.appid.clone(),
            mchid: o.mchid.clone(),
            sub_mchid: o.sub_mchid.clone(),
            api_version: o.api_version,
            source: o.source.clone(),
            description: o.description.clone(),
            items: o.items.clone(),
            amount_fen: o.amount_fen,
            status: o.status,
            transaction_id: o.transaction_id.clone(),
            paid_at: o.paid_at,
            closed_at: o.closed_at,
            refunded_fen: o.refunded_fen,
            expires_at: o.expires_at,
            created_at: o.created_at,
            updated_at: o.updated_at,
            version: o.version,
            delivery: o.delivery,
            shipping_state: o.shipping_state,
            shipped_at: o.shipped_at,
            received_at: o.received_at,
            settled_at: o.settled_at,
        }
    }
}

/// A refund as the back office sees it (the API's `Refund` schema; a new column of `refunds`
/// appears here only when added here).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The order.
    pub out_trade_no: String,
    /// The API it was sent with.
    pub api_version: ApiVersion,
    /// The refund in fen.
    pub amount_fen: u64,
    /// The reason shown to the payer.
    pub reason: Option<String>,
    /// The state.
    pub status: RefundStatus,
    /// WeChat's refund id, once known.
    pub refund_id: Option<String>,
    /// When WeChat accepted it (`None`: not yet sent, or the answer was lost).
    pub submitted_at: Option<i64>,
    /// When it succeeded.
    pub success_at: Option<i64>,
    /// The last error met while sending or following it.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Incremented by every change.
    pub version: i64,
}

impl From<Refund> for RefundView {
    fn from(r: Refund) -> Self {
        RefundView {
            out_refund_no: r.out_refund_no,
            out_trade_no: r.out_trade_no,
            api_version: r.api_version,
            amount_fen: r.amount_fen,
            reason: r.reason,
            status: r.status,
            refund_id: r.refund_id,
            submitted_at: r.submitted_at,
            success_at: r.success_at,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        }
    }
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn parse_status(text: &str) -> Result<OrderStatus, ApiError> {
    OrderStatus::parse(text).map_err(|_| {
        ApiError::bad_request("status must be NOTPAY, SUCCESS, REFUND, CLOSED or PAYERROR")
    })
}

/// `GET /admin/orders`: orders, newest first, keyset-paginated.
#[utoipa::path(get, path = "/admin/orders", tag = "admin", params(ListOrdersQuery),
    security(("admin_token" = []), ("operator_token" = [])),
    responses((status = 200, body = OrderList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_orders(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<ListOrdersQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_status)
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let cursor = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            OrderCursor::decode(c)
                .ok_or_else(|| ApiError::bad_request("cursor is not one this API made"))?,
        ),
        None => None,
    };
    let page = state
        .store
        .orders_page(
            status,
            principal
                .merchant()
                .or(q.mchid.as_deref().filter(|m| !m.is_empty())),
            limit,
            cursor.as_ref(),
        )
        .await?;
    Ok(Json(OrderList {
        orders: page.orders.iter().map(OrderView::from).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// An order with everything that happened to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetail {
    /// The order.
    pub order: OrderView,
    /// What can still be refunded, in fen.
    pub refundable_fen: u64,
    /// Its timeline, oldest first.
    pub events: Vec<OrderEvent>,
    /// Its refunds, oldest first.
    pub refunds: Vec<RefundView>,
    /// Its webhook events, oldest first.
    pub webhooks: Vec<OutboxEvent>,
    /// Its parcels, oldest first.
    pub shipments: Vec<Shipment>,
    /// The upload of its shipping information to WeChat, once there is one.
    pub shipping_upload: Option<ShippingUpload>,
}

fn valid_out_trade_no(no: &str) -> bool {
    (1..=32).contains(&no.len())
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

/// `GET /admin/orders/{out_trade_no}`.
#[utoipa::path(get, path = "/admin/orders/{out_trade_no}", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("out_trade_no" = String, Path, description = "The merchant's order number")),
    responses((status = 200, body = OrderDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn order_detail(
    principal: Principal,
    State(state): State<AppState>,
    Path(no): Path<String>,
) -> Result<Json<OrderDetail>, ApiError> {
    let order = visible_order(&state, &principal, &no).await?;
    Ok(Json(OrderDetail {
        refundable_fen: refundable(&order),
        events: state.store.events(&no).await?,
        refunds: state
            .store
            .refunds_of_order(&no)
            .await?
            .into_iter()
            .map(RefundView::from)
            .collect(),
        webhooks: with_status(&state, state.store.webhooks_of_order(&no).await?),
        shipments: state.store.shipments_of_order(&no).await?,
        shipping_upload: state.store.shipping_upload(&no).await?,
        order: OrderView::from(&order),
    }))
}

fn refundable(order: &Order) -> u64 {
    if order.status.is_paid() {
        order.amount_fen.saturating_sub(order.refunded_fen)
    } else {
        0
    }
}

/// `POST /admin/orders`: an order priced by the merchant's own system.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminOrder {
    /// The buyer's openid under this mini program.
    pub openid: String,
    /// The total in fen (≥ 1).
    pub amount_fen: u64,
    /// What WeChat shows the buyer (1–127 characters).
    pub description: String,
    /// The buyer's mini program (default: the only one registered).
    #[serde(default)]
    pub appid: Option<String>,
    /// How it is delivered (default `express`).
    #[serde(default)]
    pub delivery: Delivery,
}

/// An order with the `wx.requestPayment` object to pay it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderWithPayment {
    /// The order.
    #[serde(flatten)]
    pub order: OrderView,
    /// Exactly the object to pass to `wx.requestPayment`.
    #[schema(value_type = Object)]
    pub payment: Value,
}

/// `POST /admin/orders`.
#[utoipa::path(post, path = "/admin/orders", tag = "admin", security(("admin_token" = []), ("operator_token" = [])), request_body = CreateAdminOrder,
    responses((status = 201, body = OrderWithPayment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "WeChat failed; POST /api/orders/{no}/payment retries")))]
pub(crate) async fn create_order(
    principal: Principal,
    State(state): State<AppState>,
    // The operator is not the payer: WeChat gets this server's address, as for orders a
    // server makes on its own.
    crate::net::client_ip::ServerIp(ip): crate::net::client_ip::ServerIp,
    JsonBody(body): JsonBody<CreateAdminOrder>,
) -> Result<Response, ApiError> {
    let openid = body.openid.trim();
    if openid.is_empty()
        || openid.len() > 128
        || !openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad_request(
            "openid must be 1 to 128 letters, digits, _ or -",
        ));
    }
    let description = body.description.trim();
    if description.is_empty()
        || description.chars().count() > 127
        || description.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "description must be 1 to 127 characters without control characters",
        ));
    }
    let wechat = state.registry.app_or_only(body.appid.as_deref())?;
    if !principal.may_act_for(&wechat.mchid) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this mini program does not pay through your merchant",
        ));
    }
    let wechat = state.registry.for_new_order(&wechat.appid)?;
    let placed = orders::place(
        &state.store,
        &wechat,
        OrderRequest {
            openid: openid.to_owned(),
            priced: Priced::Merchant {
                amount_fen: body.amount_fen,
                description: description.to_owned(),
                delivery: body.delivery,
            },
            client_ip: ip,
            ttl_secs: state.settings.order_ttl_secs,
        },
    )
    .await?;
    let payment = serde_json::to_value(&placed.payment)
        .map_err(|e| ApiError::internal("payment parameters", &e))?;
    Ok((
        StatusCode::CREATED,
        Json(OrderWithPayment {
            order: OrderView::from(&placed.order),
            payment,
        }),
    )
        .into_response())
}

/// `POST /admin/orders/{no}/refunds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// The refund in fen (≥ 1, at most what remains refundable).
    pub amount_fen: u64,
    /// Shown to the payer (at most 80 characters).
    #[serde(default)]
    pub reason: Option<String>,
    /// Your own refund number, to make retries of this request safe; one is made up otherwise.
    #[serde(default)]
    pub out_refund_no: Option<String>,
}

/// `POST /admin/orders/{out_trade_no}/refunds`: a (partial) refund, committed with its amount
/// reserved, then sent to WeChat. 201 when WeChat accepted it, 202 when sending failed and the
/// jobs resolve it (by query, with the same `out_refund_no`), 200 for a repeated
/// `out_refund_no`.
#[utoipa::path(post, path = "/admin/orders/{out_trade_no}/refunds", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("out_trade_no" = String, Path, description = "The merchant's order number")),
    request_body = CreateRefund,
    responses((status = 201, body = RefundView, description = "Accepted by WeChat"),
        (status = 202, body = RefundView, description = "Committed; WeChat's answer is pending and the jobs resolve it"),
        (status = 200, body = RefundView, description = "This out_refund_no exists already for this order and amount"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not paid, more than refundable, number taken, or refused by WeChat")))]
pub(crate) async fn create_refund(
    principal: Principal,
    State(state): State<AppState>,
    Path(no): Path<String>,
    JsonBody(body): JsonBody<CreateRefund>,
) -> Result<Response, ApiError> {
    if principal.merchant().is_some() {
        visible_order(&state, &principal, &no).await?;
    } else if !valid_out_trade_no(&no) {
        return Err(ApiError::not_found("no such order"));
    }
    let created = refunds::create(
        &state.store,
        &state.registry,
        RefundRequest {
            out_trade_no: no,
            amount_fen: body.amount_fen,
            reason: body.reason,
            out_refund_no: body.out_refund_no,
        },
        "admin",
    )
    .await?;
    match created {
        Created::Existing(r) => Ok((StatusCode::OK, Json(RefundView::from(r))).into_response()),
        Created::Submitted(SubmitOutcome::Accepted(r)) => {
            Ok((StatusCode::CREATED, Json(RefundView::from(r))).into_response())
        }
        Created::Submitted(SubmitOutcome::Retrying(r)) => {
            Ok((StatusCode::ACCEPTED, Json(RefundView::from(r))).into_response())
        }
        Created::Submitted(SubmitOutcome::Rejected(r)) => Err(ApiError::conflict(
            "refund_rejected",
            format!(
                "WeChat refused refund {}: {}",
                r.out_refund_no,
                r.last_error.as_deref().unwrap_or("no reason given")
            ),
        )),
    }
}

/// `POST /admin/orders/{no}/shipments`: a parcel of a paid express or same-city order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShipment {
    /// WeChat's `delivery_id` of the express company, 1 to 128 visible ASCII characters. For an
    /// express order it must be one of the mini program's
    /// (`GET /admin/apps/{appid}/delivery-companies`: `SF`, `ZTO`, `YTO`, `STO`, `JD`, ...);
    /// same-city parcels name their courier freely.
    pub express_company: String,
    /// The tracking number, 1 to 128 visible ASCII characters.
    pub tracking_no: String,
    /// The order's lines in this parcel (default: not said; the parcel is described by the
    /// order's description). Summed over the order's parcels, never more of a product than
    /// ordered; a last parcel that lists items must cover what the others left.
    #[serde(default)]
    pub items: Vec<ShipmentItem>,
    /// Whether this is the last parcel (default false). The only parcel of a same-city order,
    /// and a 15th parcel, are always the last.
    #[serde(default)]
    pub last: bool,
    /// SF Express only, and then required: the receiver's phone number masked but for its last
    /// 4 digits, like `189****1234`.
    #[serde(default)]
    pub receiver_contact: Option<String>,
}

/// A parcel recorded, and the order after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentRecorded {
    /// The parcel.
    pub shipment: Shipment,
    /// The order (its `shipping_state` is `shipped` once the last parcel is recorded).
    pub order: OrderView,
    /// The upload of the shipping information to WeChat, once the order is fully shipped:
    /// `uploaded`, or `pending` (the job retries, asking WeChat first), or `failed`.
    pub shipping_upload: Option<ShippingUpload>,
}

/// `POST /admin/orders/{out_trade_no}/shipments`: records a parcel. The last one marks the
/// order fully shipped and uploads its shipping information to WeChat (once: a lost answer is
/// followed by a question to WeChat, never by a second upload). 201 for a new parcel, 200 for
/// a parcel (express company and tracking number) recorded before.
#[utoipa::path(post, path = "/admin/orders/{out_trade_no}/shipments", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("out_trade_no" = String, Path, description = "The merchant's order number")),
    request_body = CreateShipment,
    responses((status = 201, body = ShipmentRecorded, description = "Recorded (and uploaded when it was the last)"),
        (status = 200, body = ShipmentRecorded, description = "This parcel was recorded before; nothing changed"),
        (status = 400, body = ErrorBody, description = "Invalid fields (naming the field): an express company not in WeChat's list for the mini program, more of a product than ordered over the parcels, a last parcel listing items that leaves some unshipped, ..."),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not paid, fully refunded, not delivered in parcels (virtual, pickup), already shipped, or 15 parcels"),
        (status = 503, body = ErrorBody, description = "`wechat_unavailable`: WeChat's express companies could not be had (and none are cached); nothing changed")))]
pub(crate) async fn create_shipment(
    principal: Principal,
    State(state): State<AppState>,
    Path(no): Path<String>,
    JsonBody(body): JsonBody<CreateShipment>,
) -> Result<Response, ApiError> {
    visible_order(&state, &principal, &no).await?;
    let shipped = fulfilment::ship(
        &state.store,
        &state.registry,
        ShipRequest {
            out_trade_no: no,
            express_company: body.express_company,
            tracking_no: body.tracking_no,
            items: body.items,
            last: body.last,
            receiver_contact: body.receiver_contact,
        },
        &format!("api-{}", wxpay::nonce::random_string(12)),
    )
    .await?;
    let (status, shipment, order) = match shipped {
        Shipped::New {
            shipment, order, ..
        } => (StatusCode::CREATED, shipment, order),
        Shipped::Repeated { shipment, order } => (StatusCode::OK, shipment, order),
    };
    let shipping_upload = state.store.shipping_upload(&order.out_trade_no).await?;
    Ok((
        status,
        Json(ShipmentRecorded {
            shipment,
            order: OrderView::from(&order),
            shipping_upload,
        }),
    )
        .into_response())
}

/// An express company WeChat takes (`get_delivery_list`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryCompany {
    /// `delivery_id`: what a shipment's `express_company` says (e.g. `SF`, `ZTO`).
    pub delivery_id: String,
    /// Its name (e.g. `顺丰速运`).
    pub delivery_name: String,
}

/// The express companies of a mini program.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryCompanies {
    /// The mini program.
    pub appid: String,
    /// WeChat's list, as cached here (asked again every 12 hours).
    pub companies: Vec<DeliveryCompany>,
}

/// `GET /admin/apps/{appid}/delivery-companies`: the express companies WeChat takes from the
/// mini program (for the ship form), cached 12 hours.
#[utoipa::path(get, path = "/admin/apps/{appid}/delivery-companies", tag = "admin",
    security(("admin_token" = []), ("operator_token" = [])),
    params(("appid" = String, Path, description = "The mini program")),
    responses((status = 200, body = DeliveryCompanies), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such mini program (or not the operator's merchant's)"),
        (status = 503, body = ErrorBody, description = "`wechat_unavailable`: WeChat could not be asked and no list is cached")))]
pub(crate) async fn delivery_companies(
    principal: Principal,
    State(state): State<AppState>,
    Path(appid): Path<String>,
) -> Result<Json<DeliveryCompanies>, ApiError> {
    let wechat = state
        .registry
        .app(&appid)
        .ok()
        .filter(|w| principal.may_act_for(&w.mchid))
        .ok_or_else(|| ApiError::not_found("no such mini program"))?;
    let list = fulfilment::companies_of(&state.registry, &wechat.mp).await?;
    Ok(Json(DeliveryCompanies {
        appid,
        companies: list
            .iter()
            .map(|c| DeliveryCompany {
                delivery_id: c.delivery_id.clone(),
                delivery_name: c.delivery_name.clone(),
            })
            .collect(),
    }))
}

/// `?hours=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverdueQuery {
    /// Paid at least this many hours ago, 0 to 720 (default 48: WeChat's deadline to ship
    /// ordinary goods).
    pub hours: Option<u32>,
    /// One merchant's orders (an operator sees only its merchant's, whatever this says).
    pub mchid: Option<String>,
}

/// Orders to ship.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverdueOrders {
    /// The threshold used, in hours after payment.
    pub hours: u32,
    /// Paid express and same-city orders not fully shipped, paid at least `hours` ago, oldest
    /// payment first (at most 200).
    pub orders: Vec<OrderView>,
}

/// `GET /admin/fulfilment/overdue?hours=`: paid express and same-city orders not fully shipped
/// `hours` (default 48, WeChat's deadline) after payment, oldest first.
#[utoipa::path(get, path = "/admin/fulfilment/overdue", tag = "admin", params(OverdueQuery),
    security(("admin_token" = []), ("operator_token" = [])),
    responses((status = 200, body = OverdueOrders), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn overdue(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<OverdueQuery>,
) -> Result<Json<OverdueOrders>, ApiError> {
    let hours = q.hours.unwrap_or(fulfilment::SHIPPING_DEADLINE_HOURS);
    if hours > 720 {
        return Err(ApiError::bad_request("hours must be between 0 and 720"));
    }
    let paid_before = crate::store::now_ms() - i64::from(hours) * 3_600_000;
    let orders = state
        .store
        .overdue_shipments(
            paid_before,
            principal
                .merchant()
                .or(q.mchid.as_deref().filter(|m| !m.is_empty())),
            200,
        )
        .await?;
    Ok(Json(OverdueOrders {
        hours,
        orders: orders.iter().map(OrderView::from).collect(),
    }))
}

/// `GET /admin/refunds/{out_refund_no}`.
#[utoipa::path(get, path = "/admin/refunds/{out_refund_no}", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("out_refund_no" = String, Path, description = "The merchant's refund number")),
    responses((status = 200, body = RefundView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn refund(
    principal: Principal,
    State(state): State<AppState>,
    Path(no): Path<String>,
) -> Result<Json<RefundView>, ApiError> {
    if no.len() > 64 {
        return Err(ApiError::not_found("no such refund"));
    }
    let refund = state
        .store
        .refund(&no)
        .await?
        .ok_or_else(|| ApiError::not_found("no such refund"))?;
    if principal.merchant().is_some() {
        visible_order(&state, &principal, &refund.out_trade_no)
            .await
            .map_err(|_| ApiError::not_found("no such refund"))?;
    }
    Ok(Json(RefundView::from(refund)))
}

/// An order the caller may see: any for the admin token, its merchant's for an operator
/// (another merchant's is "not found", as if it did not exist).
async fn visible_order(
    state: &AppState,
    principal: &Principal,
    no: &str,
) -> Result<Order, ApiError> {
    if !valid_out_trade_no(no) {
        return Err(ApiError::not_found("no such order"));
    }
    state
        .store
        .order(no)
        .await?
        .filter(|o| principal.may_act_for(&o.mchid))
        .ok_or_else(|| ApiError::not_found("no such order"))
}

/// The catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    /// Every product, inactive ones included, by sku.
    pub products: Vec<Product>,
}

/// `GET /admin/products`.
#[utoipa::path(get, path = "/admin/products", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = ProductList), (status = 401, body = ErrorBody)))]
pub(crate) async fn products(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<ProductList>, ApiError> {
    Ok(Json(ProductList {
        products: state.store.products(false).await?,
    }))
}

/// `PUT /admin/products/{sku}`: creates or replaces a product.
#[utoipa::path(put, path = "/admin/products/{sku}", tag = "admin", security(("admin_token" = [])),
    params(("sku" = String, Path, description = "1 to 32 of A-Z a-z 0-9 _ -")),
    request_body = NewProduct,
    responses((status = 200, body = Product), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn put_product(
    _: Admin,
    State(state): State<AppState>,
    Path(sku): Path<String>,
    JsonBody(body): JsonBody<NewProduct>,
) -> Result<Json<Product>, ApiError> {
    if !(1..=32).contains(&sku.len())
        || !sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad_request(
            "sku must be 1 to 32 of A-Z a-z 0-9 _ -",
        ));
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 64 characters without control characters",
        ));
    }
    if body.description.chars().count() > 512 {
        return Err(ApiError::bad_request(
            "description must be at most 512 characters",
        ));
    }
    if !(1..=MAX_ORDER_FEN).contains(&body.price_fen) {
        return Err(ApiError::bad_request(format!(
            "price_fen must be between 1 and {MAX_ORDER_FEN}"
        )));
    }
    let product = NewProduct {
        name: name.to_owned(),
        ..body
    };
    Ok(Json(state.store.upsert_product(&sku, &product).await?))
}

/// `?refresh=true`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReconciliationQuery {
    /// Download and compare again even if a report is stored.
    pub refresh: Option<bool>,
    /// The merchant (default: the first; an operator's is always its own).
    pub mchid: Option<String>,
}

/// `GET /admin/reconciliation/{yyyy-mm-dd}?mchid=`: the stored report of a merchant's day, or
/// its bill downloaded and compared now (then stored).
#[utoipa::path(get, path = "/admin/reconciliation/{date}", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("date" = String, Path, description = "yyyy-mm-dd (GMT+8)"), ReconciliationQuery),
    responses((status = 200, body = Reconciliation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "WeChat has not made the bill yet"), (status = 502, body = ErrorBody)))]
pub(crate) async fn reconciliation(
    principal: Principal,
    State(state): State<AppState>,
    Path(date): Path<String>,
    Query(q): Query<ReconciliationQuery>,
) -> Result<Json<Reconciliation>, ApiError> {
    let day = reconciliation::parse_date(&date)
        .ok_or_else(|| ApiError::bad_request("the date must be yyyy-mm-dd"))?;
    let wechat = match principal
        .merchant()
        .or(q.mchid.as_deref().filter(|m| !m.is_empty()))
    {
        Some(mchid) => state.registry.merchant(mchid)?,
        None => state.registry.default_app(),
    };
    if !q.refresh.unwrap_or(false)
        && let Some(stored) = state
            .store
            .reconciliation(&wechat.mchid, &reconciliation::format_date(day))
            .await?
    {
        return Ok(Json(stored));
    }
    Ok(Json(
        reconciliation::reconcile(&state.store, &wechat, day).await?,
    ))
}

/// Payments per hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourlyStats {
    /// The last 24 hours, oldest first, empty hours included.
    pub hours: Vec<HourlyPayments>,
}

/// `GET /admin/stats/hourly`: payments and their amount per hour over the last 24 hours.
#[utoipa::path(get, path = "/admin/stats/hourly", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = HourlyStats), (status = 401, body = ErrorBody)))]
pub(crate) async fn hourly(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<HourlyStats>, ApiError> {
    Ok(Json(HourlyStats {
        hours: state.store.hourly_payments(24).await?,
    }))
}

/// `?limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// Recent webhook events.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Newest first.
    pub webhooks: Vec<OutboxEvent>,
}

/// `GET /admin/webhooks?limit=`: the latest webhook events and their delivery state.
#[utoipa::path(get, path = "/admin/webhooks", tag = "admin", security(("admin_token" = [])), params(LimitQuery),
    responses((status = 200, body = WebhookList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn webhooks(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<WebhookList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    Ok(Json(WebhookList {
        webhooks: with_status(&state, state.store.recent_webhooks(limit).await?),
    }))
}

/// The answer of a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedSessions {
    /// The user.
    pub openid: String,
    /// How many sessions were revoked (0 when the user had none, or is unknown).
    pub revoked: u64,
}

/// `POST /admin/users/{openid}/sessions/revoke`: logs a user out everywhere. Every session of
/// the user is deleted and refused from now on by every instance (the others are told through
/// PostgreSQL's `NOTIFY`); the mini program has to log in again.
#[utoipa::path(post, path = "/admin/users/{openid}/sessions/revoke", tag = "admin", security(("admin_token" = [])),
    params(("openid" = String, Path, description = "The user's openid")),
    responses((status = 200, body = RevokedSessions), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn revoke_sessions(
    _: Admin,
    State(state): State<AppState>,
    Path(openid): Path<String>,
) -> Result<Json<RevokedSessions>, ApiError> {
    let valid = (1..=128).contains(&openid.len())
        && openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ApiError::bad_request(
            "openid must be 1 to 128 letters, digits, '_' or '-'",
        ));
    }
    let revoked = state.store.revoke_user_sessions(&openid).await?;
    tracing::info!(openid = %openid, revoked, "sessions revoked by the back office");
    Ok(Json(RevokedSessions { openid, revoked }))
}

/// Events not delivered are `not_configured` while no webhook URL is configured (they would
/// otherwise look pending forever).
fn with_status(state: &AppState, mut events: Vec<OutboxEvent>) -> Vec<OutboxEvent> {
    let s = &state.settings;
    if s.webhook_url.is_none() || s.webhook_secret.is_none() {
        for e in &mut events {
            if e.status != WebhookStatus::Delivered {
                e.status = WebhookStatus::NotConfigured;
            }
        }
    }
    events
}

/// The singleton jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// By name.
    pub jobs: Vec<JobState>,
}

/// `GET /admin/jobs`: the state of the singleton jobs (daily bill).
#[utoipa::path(get, path = "/admin/jobs", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = JobList), (status = 401, body = ErrorBody)))]
pub(crate) async fn jobs(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<JobList>, ApiError> {
    Ok(Json(JobList {
        jobs: state.store.job_states().await?,
    }))
}

/// The error body of every JSON endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable (`invalid_request`, `unauthorized`, `not_found`, ...).
    pub code: String,
    /// For people.
    pub message: String,
}
