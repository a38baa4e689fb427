//! Orders and their timeline.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use super::fulfilment::{Delivery, ShippingState};
use super::outbox::{NewOutboxEvent, OutboxEventType};
use super::{Store, StoreError, now_ms};

/// The columns of `orders`, in [`OrderRow`]'s order.
macro_rules! order_columns {
    () => {
        "out_trade_no, openid, appid, mchid, api_version, source, description, items, amount_fen, \
         status, client_ip, prepay_id, prepay_created_at, transaction_id, payer_openid, paid_at, \
         closed_at, refunded_fen, expires_at, last_queried_at, created_at, updated_at, version, \
         sub_mchid, delivery, shipping_state, shipped_at, received_at, settled_at"
    };
}
pub(crate) use order_columns;

/// An order's state, named as WeChat names trade states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum OrderStatus {
    /// Not paid yet.
    #[serde(rename = "NOTPAY")]
    NotPay,
    /// Paid.
    #[serde(rename = "SUCCESS")]
    Success,
    /// Paid, then (partly) refunded.
    #[serde(rename = "REFUND")]
    Refund,
    /// Closed unpaid.
    #[serde(rename = "CLOSED")]
    Closed,
    /// The payment failed at the bank.
    #[serde(rename = "PAYERROR")]
    PayError,
}

impl OrderStatus {
    /// The stored (and WeChat) name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::NotPay => order_status_name!(NotPay),
            OrderStatus::Success => order_status_name!(Success),
            OrderStatus::Refund => order_status_name!(Refund),
            OrderStatus::Closed => order_status_name!(Closed),
            OrderStatus::PayError => order_status_name!(PayError),
        }
    }

    /// The status of a stored name.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for any other text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            order_status_name!(NotPay) => OrderStatus::NotPay,
            order_status_name!(Success) => OrderStatus::Success,
            order_status_name!(Refund) => OrderStatus::Refund,
            order_status_name!(Closed) => OrderStatus::Closed,
            order_status_name!(PayError) => OrderStatus::PayError,
            other => return Err(StoreError::Corrupt(format!("order status {other:?}"))),
        })
    }

    /// Whether money was received (`SUCCESS`, or `REFUND` which follows it).
    #[must_use]
    pub fn is_paid(self) -> bool {
        matches!(self, OrderStatus::Success | OrderStatus::Refund)
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which WeChat Pay API an order was made with (and is queried, closed and refunded with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// XML, MD5/HMAC-SHA256.
    V2,
    /// JSON, RSA.
    V3,
}

impl ApiVersion {
    /// `v2` or `v3`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2 => "v2",
            ApiVersion::V3 => "v3",
        }
    }

    /// The version of a stored name.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for any other text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "v2" => Ok(ApiVersion::V2),
            "v3" => Ok(ApiVersion::V3),
            other => Err(StoreError::Corrupt(format!("api_version {other:?}"))),
        }
    }
}

/// One line of an order, priced when the order was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    /// The product.
    pub sku: String,
    /// Its name at the time.
    pub name: String,
    /// How many.
    pub quantity: u32,
    /// Unit price in fen at the time.
    pub unit_price_fen: u64,
}

/// An order as stored. Times are Unix milliseconds. Not serialized: what leaves the server is
/// a view made field by field (the API's `admin::OrderView`, the webhook's
/// `outbox::OrderPayload`), so that a new column is published only where someone adds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The merchant's order number.
    pub out_trade_no: String,
    /// The buyer.
    pub openid: String,
    /// The mini program.
    pub appid: String,
    /// The merchant (the service provider, for an order paid through a sub-merchant).
    pub mchid: String,
    /// The provider's sub-merchant the order is paid to (service-provider mode), else `None`.
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
    /// The payer's IP, sent as `spbill_create_ip`/`payer_client_ip`.
    pub client_ip: String,
    /// The current prepay (valid 2 hours from `prepay_created_at`).
    pub prepay_id: Option<String>,
    /// When the current prepay was made.
    pub prepay_created_at: Option<i64>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// The openid WeChat reports as payer.
    pub payer_openid: Option<String>,
    /// When it was paid.
    pub paid_at: Option<i64>,
    /// When it was closed.
    pub closed_at: Option<i64>,
    /// Refunds not closed, in fen (reserved at creation of a refund).
    pub refunded_fen: u64,
    /// After this the order cannot be paid.
    pub expires_at: i64,
    /// When WeChat was last asked about it.
    pub last_queried_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Incremented by every change.
    pub version: i64,
    /// How it is delivered (fixed at creation; `None` only for rows the store cannot date).
    pub delivery: Option<Delivery>,
    /// Where its fulfilment is; `None` until paid.
    pub shipping_state: Option<ShippingState>,
    /// When it was fully shipped (the last parcel, or the upload of a virtual or pickup order).
    pub shipped_at: Option<i64>,
    /// When the buyer (or WeChat) confirmed receipt.
    pub received_at: Option<i64>,
    /// When WeChat settled the payment.
    pub settled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    out_trade_no: String,
    openid: String,
    appid: String,
    mchid: String,
    api_version: String,
    source: String,
    description: String,
    items: String,
    amount_fen: i64,
    status: String,
    client_ip: String,
    prepay_id: Option<String>,
    prepay_created_at: Option<i64>,
    transaction_id: Option<String>,
    payer_openid: Option<String>,
    paid_at: Option<i64>,
    closed_at: Option<i64>,
    refunded_fen: i64,
    expires_at: i64,
    last_queried_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    version: i64,
    sub_mchid: Option<String>,
    delivery: Option<String>,
    shipping_state: Option<String>,
    shipped_at: Option<i64>,
    received_at: Option<i64>,
    settled_at: Option<i64>,
}

pub(crate) fn fen_from_db(field: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{field} is negative")))
}

pub(crate) fn fen_to_db(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt("amount out of range".into()))
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(r: OrderRow) -> Result<Self, StoreError> {
        Ok(Order {
            items: serde_json::from_str(&r.items)
                .map_err(|e| StoreError::Corrupt(format!("orders.items: {e}")))?,
            amount_fen: fen_from_db("amount_fen", r.amount_fen)?,
            refunded_fen: fen_from_db("refunded_fen", r.refunded_fen)?,
            status: OrderStatus::parse(&r.status)?,
            api_version: ApiVersion::parse(&r.api_version)?,
            delivery: r.delivery.as_deref().map(Delivery::parse).transpose()?,
            shipping_state: r
                .shipping_state
                .as_deref()
                .map(ShippingState::parse)
                .transpose()?,
            shipped_at: r.shipped_at,
            received_at: r.received_at,
            settled_at: r.settled_at,
            out_trade_no: r.out_trade_no,
            openid: r.openid,
            appid: r.appid,
            mchid: r.mchid,
            sub_mchid: r.sub_mchid,
            source: r.source,
            description: r.description,
            client_ip: r.client_ip,
            prepay_id: r.prepay_id,
            prepay_created_at: r.prepay_created_at,
            transaction_id: r.transaction_id,
            payer_openid: r.payer_openid,
            paid_at: r.paid_at,
            closed_at: r.closed_at,
            expires_at: r.expires_at,
            last_queried_at: r.last_queried_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

pub(crate) fn order_of(row: Option<OrderRow>) -> Result<Option<Order>, StoreError> {
    row.map(Order::try_from).transpose()
}

/// A new order, before anything was sent to WeChat.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// The merchant's order number (6–32 of `[0-9A-Za-z_-|*]`).
    pub out_trade_no: String,
    /// The buyer.
    pub openid: String,
    /// The mini program.
    pub appid: String,
    /// The merchant (the service provider in service-provider mode).
    pub mchid: String,
    /// The sub-merchant paid (service-provider mode).
    pub sub_mchid: Option<String>,
    /// Which API pays it.
    pub api_version: ApiVersion,
    /// `api` or `admin`.
    pub source: &'static str,
    /// What the buyer sees.
    pub description: String,
    /// The lines.
    pub items: Vec<OrderItem>,
    /// Total in fen (≥ 1).
    pub amount_fen: u64,
    /// The payer's IP.
    pub client_ip: String,
    /// Unix milliseconds after which it cannot be paid.
    pub expires_at: i64,
}

/// What a guarded state change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The change was made (the order after it).
    Applied(Order),
    /// Nothing to do: the order is already in the target state, or this exact notification was
    /// applied before.
    Unchanged(Order),
    /// The order's state does not allow the change.
    Refused(Order),
    /// No such order.
    NotFound,
}

impl Transition {
    /// The order, when there is one.
    #[must_use]
    pub fn order(&self) -> Option<&Order> {
        match self {
            Transition::Applied(o) | Transition::Unchanged(o) | Transition::Refused(o) => Some(o),
            Transition::NotFound => None,
        }
    }
}

/// What happened to an order, for its timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// Committed locally.
    Created,
    /// A prepay_id was obtained.
    Prepay,
    /// The prepay call failed (the order stays, `POST /payment` retries).
    PrepayFailed,
    /// A notification was verified and applied.
    Notification,
    /// A notification passed verification but did not match the order.
    NotificationRejected,
    /// WeChat was asked for the order's state.
    Query,
    /// The query failed.
    QueryFailed,
    /// Closed (locally, after WeChat).
    Closed,
    /// The payment failed at the bank.
    PayError,
    /// A refund was requested.
    RefundRequested,
    /// A refund's state changed.
    Refund,
    /// A webhook was delivered.
    WebhookDelivered,
    /// A webhook attempt failed.
    WebhookFailed,
    /// Found by reconciliation with the bill.
    Reconciliation,
    /// A trade-management message from WeChat's message push about the order (reminded to
    /// ship, shipping seen by WeChat).
    TradeManagement,
    /// The buyer (or WeChat, after the delay) confirmed receipt.
    Received,
    /// WeChat settled the payment to the merchant.
    Settled,
    /// A parcel was shipped (recorded by the back office).
    Shipment,
    /// WeChat has the order's shipping information (uploaded, or found there).
    ShippingUploaded,
    /// An upload of the shipping information failed (retried, or given up when WeChat refused).
    ShippingUploadFailed,
    /// No upload needed: the order's mini program is not under trade management.
    ShippingNotManaged,
}

impl EventKind {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Prepay => "prepay",
            EventKind::PrepayFailed => "prepay_failed",
            EventKind::Notification => "notification",
            EventKind::NotificationRejected => "notification_rejected",
            EventKind::Query => "query",
            EventKind::QueryFailed => "query_failed",
            EventKind::Closed => "closed",
            EventKind::PayError => "pay_error",
            EventKind::RefundRequested => "refund_requested",
            EventKind::Refund => "refund",
            EventKind::WebhookDelivered => "webhook_delivered",
            EventKind::WebhookFailed => "webhook_failed",
            EventKind::Reconciliation => "reconciliation",
            EventKind::TradeManagement => "trade_management",
            EventKind::Received => "received",
            EventKind::Settled => "settled",
            EventKind::Shipment => "shipment",
            EventKind::ShippingUploaded => "shipping_uploaded",
            EventKind::ShippingUploadFailed => "shipping_upload_failed",
            EventKind::ShippingNotManaged => "shipping_not_managed",
        }
    }
}

/// One entry of an order's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderEvent {
    /// Increasing id.
    pub id: i64,
    /// The kind (`created`, `prepay`, `notification`, ...).
    pub kind: String,
    /// Details (JSON object).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Appends an event inside a transaction.
///
/// # Errors
/// [`StoreError::Database`].
pub async fn insert_event(
    conn: &mut AnyConnection,
    out_trade_no: &str,
    kind: EventKind,
    detail: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO order_events (out_trade_no, kind, detail, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(out_trade_no)
    .bind(kind.as_str())
    .bind(detail.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn order_in(
    conn: &mut AnyConnection,
    out_trade_no: &str,
) -> Result<Option<Order>, StoreError> {
    let row: Option<OrderRow> = sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE out_trade_no = $1"
    ))
    .bind(out_trade_no)
    .fetch_optional(conn)
    .await?;
    order_of(row)
}

/// After a guarded UPDATE matched nothing: the order as it is, `Unchanged` when it is already in
/// one of `done`, `Refused` otherwise.
pub(crate) async fn not_applied(
    conn: &mut AnyConnection,
    out_trade_no: &str,
    done: &[OrderStatus],
) -> Result<Transition, StoreError> {
    Ok(match order_in(conn, out_trade_no).await? {
        None => Transition::NotFound,
        Some(o) if done.contains(&o.status) => Transition::Unchanged(o),
        Some(o) => Transition::Refused(o),
    })
}

/// The INSERT of a new order, `$1`..`$12`, `$14` (sub_mchid) and `$15` (delivery; `$13` is the
/// event's detail), answering the row.
macro_rules! insert_order_sql {
    () => {
        concat!(
            concat!("INSERT INTO orders (out_trade_no, openid, appid, mchid, api_version, source, description, \
             items, amount_fen, status, client_ip, refunded_fen, expires_at, created_at, updated_at, version, sub_mchid, delivery) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ", order_status_sql!(NotPay), ", $10, 0, $11, $12, $12, 0, $14, $15) RETURNING "),
            order_columns!()
        )
    };
}

/// The guarded UPDATE that stores a prepay (`$1` order, `$2` prepay_id, `$3` now).
macro_rules! store_prepay_sql {
    () => {
        concat!(
            concat!("UPDATE orders SET prepay_id = $2, prepay_created_at = $3, updated_at = $3, version = version + 1 \
             WHERE out_trade_no = $1 AND status = ", order_status_sql!(NotPay), " RETURNING "),
            order_columns!()
        )
    };
}

/// Binds `$1`..`$12` of `insert_order_sql!`.
fn bind_new_order<'q>(
    q: sqlx::query::QueryAs<'q, sqlx::Any, OrderRow, sqlx::any::AnyArguments>,
    new: &NewOrder,
    items: &str,
    amount_fen: i64,
    now: i64,
) -> sqlx::query::QueryAs<'q, sqlx::Any, OrderRow, sqlx::any::AnyArguments> {
    q.bind(new.out_trade_no.clone())
        .bind(new.openid.clone())
        .bind(new.appid.clone())
        .bind(new.mchid.clone())
        .bind(new.api_version.as_str())
        .bind(new.source)
        .bind(new.description.clone())
        .bind(items.to_owned())
        .bind(amount_fen)
        .bind(new.client_ip.clone())
        .bind(new.expires_at)
        .bind(now)
}

impl Store {
    /// Commits a new `NOTPAY` order without a prepay, with its `created` event. This happens
    /// before WeChat is called, so that a crash before the prepay is stored leaves an order that
    /// `POST /payment` completes.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a duplicate out_trade_no is a unique violation).
    pub async fn insert_order(&self, new: &NewOrder) -> Result<Order, StoreError> {
        self.insert_order_delivered(new, Delivery::Express).await
    }

    /// [`insert_order`](Self::insert_order) with how the order is delivered.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a duplicate out_trade_no is a unique violation).
    pub async fn insert_order_delivered(
        &self,
        new: &NewOrder,
        delivery: Delivery,
    ) -> Result<Order, StoreError> {
        let now = now_ms();
        let items =
            serde_json::to_string(&new.items).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let detail = serde_json::json!({
            "amount_fen": new.amount_fen,
            "api_version": new.api_version.as_str(),
            "source": new.source,
        });
        let amount_fen = fen_to_db(new.amount_fen)?;
        let bind = |q| bind_new_order(q, new, &items, amount_fen, now);
        if let Some(mut turn) = self.script_turn().await {
            // SQLite: the order and its event in one command.
            let rows = bind(sqlx::query_as(concat!(
                "BEGIN IMMEDIATE; ",
                insert_order_sql!(),
                "; INSERT INTO order_events (out_trade_no, kind, detail, created_at) \
                 VALUES ($1, 'created', $13, $12); COMMIT"
            )))
            .bind(detail.to_string())
            .bind(new.sub_mchid.clone())
            .bind(delivery.as_str())
            .fetch_all(&mut *turn)
            .await;
            turn.end_script(rows.is_ok()).await;
            let row = rows?.into_iter().next().ok_or(sqlx::Error::RowNotFound)?;
            return Order::try_from(row);
        }
        // PostgreSQL: one statement, the event written by a data-modifying WITH.
        let row: OrderRow = bind(sqlx::query_as(concat!(
            "WITH o AS (",
            insert_order_sql!(),
            "), e AS (INSERT INTO order_events (out_trade_no, kind, detail, created_at) \
             SELECT out_trade_no, 'created', $13, $12 FROM o) SELECT ",
            order_columns!(),
            " FROM o"
        )))
        .bind(detail.to_string())
        .bind(new.sub_mchid.clone())
        .bind(delivery.as_str())
        .fetch_one(&mut *self.reader().await?)
        .await?;
        Order::try_from(row)
    }

    /// An order by number.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE out_trade_no = $1"
        ))
        .bind(out_trade_no)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        order_of(row)
    }

    /// An order by number, only when it belongs to `openid`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn order_of_user(
        &self,
        out_trade_no: &str,
        openid: &str,
    ) -> Result<Option<Order>, StoreError> {
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE out_trade_no = $1 AND openid = $2"
        ))
        .bind(out_trade_no)
        .bind(openid)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        order_of(row)
    }

    /// A user's latest orders, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn orders_of_user(&self, openid: &str, limit: u32) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE openid = $1 ORDER BY created_at DESC, out_trade_no DESC LIMIT $2"
        ))
        .bind(openid)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// Stores a new prepay for a `NOTPAY` order, with a `prepay` event.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn store_prepay(
        &self,
        out_trade_no: &str,
        prepay_id: &str,
        renewed: bool,
    ) -> Result<Transition, StoreError> {
        let now = now_ms();
        let detail = serde_json::json!({ "renewed": renewed });
        if let Some(mut turn) = self.script_turn().await {
            // SQLite: the update and, when it matched (`changes()` counts the rows of the
            // statement before), its event, in one command.
            let rows: Result<Vec<OrderRow>, sqlx::Error> = sqlx::query_as(concat!(
                "BEGIN IMMEDIATE; ",
                store_prepay_sql!(),
                "; INSERT INTO order_events (out_trade_no, kind, detail, created_at) \
                 SELECT $1, 'prepay', $4, $3 WHERE changes() = 1; COMMIT"
            ))
            .bind(out_trade_no)
            .bind(prepay_id)
            .bind(now)
            .bind(detail.to_string())
            .fetch_all(&mut *turn)
            .await;
            turn.end_script(rows.is_ok()).await;
            return match order_of(rows?.into_iter().next())? {
                Some(order) => Ok(Transition::Applied(order)),
                None => not_applied(&mut *self.reader().await?, out_trade_no, &[]).await,
            };
        }
        // PostgreSQL: one statement, the event written by a data-modifying WITH when the
        // update matched.
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            "WITH u AS (",
            store_prepay_sql!(),
            "), e AS (INSERT INTO order_events (out_trade_no, kind, detail, created_at) \
             SELECT out_trade_no, 'prepay', $4, $3 FROM u) SELECT ",
            order_columns!(),
            " FROM u"
        ))
        .bind(out_trade_no)
        .bind(prepay_id)
        .bind(now)
        .bind(detail.to_string())
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        match order_of(row)? {
            Some(order) => Ok(Transition::Applied(order)),
            None => not_applied(&mut *self.reader().await?, out_trade_no, &[]).await,
        }
    }

    /// Takes the right to query WeChat about an order now: true when nobody did within
    /// `min_interval_ms`. Polling clients and concurrent requests then cause one query, not many.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn claim_query(
        &self,
        out_trade_no: &str,
        min_interval_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE orders SET last_queried_at = $2 WHERE out_trade_no = $1 \
             AND (last_queried_at IS NULL OR last_queried_at <= $3)",
        )
        .bind(out_trade_no)
        .bind(now)
        .bind(now.saturating_sub(min_interval_ms))
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends an event to an order's timeline in a transaction of its own.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a foreign-key violation for an unknown order).
    pub async fn add_event(
        &self,
        out_trade_no: &str,
        kind: EventKind,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_event(&mut tx, out_trade_no, kind, detail, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An order's timeline, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn events(&self, out_trade_no: &str) -> Result<Vec<OrderEvent>, StoreError> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, kind, detail, created_at FROM order_events WHERE out_trade_no = $1 ORDER BY id",
        )
        .bind(out_trade_no)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter()
            .map(|(id, kind, detail, created_at)| {
                Ok(OrderEvent {
                    id,
                    kind,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| StoreError::Corrupt(format!("order_events.detail: {e}")))?,
                    created_at,
                })
            })
            .collect()
    }

    /// Closes an unpaid order (`NOTPAY` or `PAYERROR`) after WeChat closed it: `closed` event and
    /// an `order.closed` webhook, once.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_closed(
        &self,
        out_trade_no: &str,
        detail: &serde_json::Value,
    ) -> Result<Transition, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            concat!(
                "UPDATE orders SET status = ",
                order_status_sql!(Closed),
                ", closed_at = $2, updated_at = $2, version = version + 1 \
             WHERE out_trade_no = $1 AND status IN (",
                order_status_sql!(NotPay, PayError),
                ") RETURNING "
            ),
            order_columns!()
        ))
        .bind(out_trade_no)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order) = order_of(row)? else {
            let outcome = not_applied(&mut tx, out_trade_no, &[OrderStatus::Closed]).await?;
            tx.rollback().await?;
            return Ok(outcome);
        };
        insert_event(&mut tx, out_trade_no, EventKind::Closed, detail, now).await?;
        NewOutboxEvent::order(OutboxEventType::OrderClosed, &order)?
            .insert(&mut tx, now)
            .await?;
        tx.commit().await?;
        self.notices.outbox_written();
        Ok(Transition::Applied(order))
    }

    /// Records that WeChat reports the payment failed (`NOTPAY` → `PAYERROR`).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_pay_error(
        &self,
        out_trade_no: &str,
        detail: &serde_json::Value,
    ) -> Result<Transition, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            concat!(
                "UPDATE orders SET status = ",
                order_status_sql!(PayError),
                ", updated_at = $2, version = version + 1 \
             WHERE out_trade_no = $1 AND status = ",
                order_status_sql!(NotPay),
                " RETURNING "
            ),
            order_columns!()
        ))
        .bind(out_trade_no)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order) = order_of(row)? else {
            let outcome = not_applied(&mut tx, out_trade_no, &[OrderStatus::PayError]).await?;
            tx.rollback().await?;
            return Ok(outcome);
        };
        insert_event(&mut tx, out_trade_no, EventKind::PayError, detail, now).await?;
        tx.commit().await?;
        Ok(Transition::Applied(order))
    }
}
