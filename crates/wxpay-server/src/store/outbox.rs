//! The outbox of merchant webhooks: rows written in the same transaction as the state change
//! they announce, delivered later (by the outbox job) until acknowledged.

use serde::Serialize;
use sqlx::AnyConnection;

use super::StoreError;
use super::fulfilment::{Delivery, ShippingState};
use super::orders::{ApiVersion, Order, OrderItem, OrderStatus};
use super::refund_state::{Refund, RefundStatus};

/// The webhook event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxEventType {
    /// An order was paid.
    OrderPaid,
    /// An order was closed unpaid.
    OrderClosed,
    /// A refund succeeded.
    RefundSucceeded,
    /// A refund was closed or became abnormal.
    RefundFailed,
    /// An order was fully shipped and WeChat has its shipping information.
    OrderShipped,
    /// The buyer (or WeChat, after the delay) confirmed receipt.
    OrderReceived,
    /// WeChat settled the payment to the merchant.
    OrderSettled,
    /// A merchant transfer reached the user.
    TransferSucceeded,
    /// A merchant transfer failed (including unconfirmed ones WeChat closed).
    TransferFailed,
    /// A merchant transfer was cancelled.
    TransferCancelled,
}

impl OutboxEventType {
    /// `order.paid`, `order.closed`, `refund.succeeded`, `refund.failed`, `order.shipped`,
    /// `order.received`, `order.settled`, `transfer.succeeded`, `transfer.failed`,
    /// `transfer.cancelled`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxEventType::OrderPaid => "order.paid",
            OutboxEventType::OrderClosed => "order.closed",
            OutboxEventType::RefundSucceeded => "refund.succeeded",
            OutboxEventType::RefundFailed => "refund.failed",
            OutboxEventType::OrderShipped => "order.shipped",
            OutboxEventType::OrderReceived => "order.received",
            OutboxEventType::OrderSettled => "order.settled",
            OutboxEventType::TransferSucceeded => "transfer.succeeded",
            OutboxEventType::TransferFailed => "transfer.failed",
            OutboxEventType::TransferCancelled => "transfer.cancelled",
        }
    }
}

/// A webhook event to write. `dedupe_key` is unique: the same event is never created twice.
#[derive(Clone, Debug)]
pub struct NewOutboxEvent {
    /// The type.
    pub event_type: OutboxEventType,
    /// Unique per event (e.g. `order.paid:T123`).
    pub dedupe_key: String,
    /// The order it concerns.
    pub out_trade_no: Option<String>,
    /// The `data` of the webhook (the order or the refund), JSON.
    pub payload: String,
}

impl NewOutboxEvent {
    /// An order event; the dedupe key is `TYPE:out_trade_no` (an order is paid once, closed once).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the order cannot be serialized.
    pub fn order(event_type: OutboxEventType, order: &Order) -> Result<Self, StoreError> {
        Ok(NewOutboxEvent {
            event_type,
            dedupe_key: format!("{}:{}", event_type.as_str(), order.out_trade_no),
            out_trade_no: Some(order.out_trade_no.clone()),
            payload: to_json(&OrderPayload::from(order))?,
        })
    }

    /// A transfer event; the dedupe key is `TYPE:out_bill_no` (a transfer ends once).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the transfer cannot be serialized.
    pub fn transfer(
        event_type: OutboxEventType,
        transfer: &super::transfers::Transfer,
    ) -> Result<Self, StoreError> {
        Ok(NewOutboxEvent {
            event_type,
            dedupe_key: format!("{}:{}", event_type.as_str(), transfer.out_bill_no),
            out_trade_no: None,
            payload: to_json(&TransferPayload::from(transfer))?,
        })
    }

    /// Writes the event inside the caller's transaction. Returns false when an event with the
    /// same dedupe key exists (nothing written).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert(&self, conn: &mut AnyConnection, now: i64) -> Result<bool, StoreError> {
        let event_id = new_event_id();
        let done = sqlx::query(
            "INSERT INTO outbox (event_id, event_type, dedupe_key, out_trade_no, payload, created_at, \
             attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $6) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(event_id)
        .bind(self.event_type.as_str())
        .bind(&self.dedupe_key)
        .bind(self.out_trade_no.as_deref())
        .bind(&self.payload)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A new webhook event id, `evt_` and 24 random letters and digits.
pub(crate) fn new_event_id() -> String {
    format!("evt_{}", wxpay::nonce::random_string(24))
}

/// Serializes a webhook `data` value.
///
/// # Errors
/// [`StoreError::Corrupt`] if serialization fails.
pub fn to_json(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The order in a webhook's payload: the public fields, named as in the API.
#[derive(Debug, Serialize)]
pub struct OrderPayload<'a> {
    out_trade_no: &'a str,
    openid: &'a str,
    appid: &'a str,
    mchid: &'a str,
    /// Only for an order paid to a provider's sub-merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_mchid: Option<&'a str>,
    api_version: ApiVersion,
    source: &'a str,
    description: &'a str,
    items: &'a [OrderItem],
    amount_fen: u64,
    status: OrderStatus,
    transaction_id: Option<&'a str>,
    paid_at: Option<i64>,
    closed_at: Option<i64>,
    refunded_fen: u64,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
    version: i64,
    /// Absent only for orders the store cannot date.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<Delivery>,
    /// Absent until paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    shipping_state: Option<ShippingState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shipped_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settled_at: Option<i64>,
}

impl<'a> From<&'a Order> for OrderPayload<'a> {
    fn from(o: &'a Order) -> Self {
        OrderPayload {
            out_trade_no: &o.out_trade_no,
            openid: &o.openid,
            appid: &o.appid,
            mchid: &o.mchid,
            sub_mchid: o.sub_mchid.as_deref(),
            api_version: o.api_version,
            source: &o.source,
            description: &o.description,
            items: &o.items,
            amount_fen: o.amount_fen,
            status: o.status,
            transaction_id: o.transaction_id.as_deref(),
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

/// The refund in a webhook's payload: the fields of the API's `Refund`, named as there.
#[derive(Debug, Serialize)]
pub struct RefundPayload<'a> {
    out_refund_no: &'a str,
    out_trade_no: &'a str,
    api_version: ApiVersion,
    amount_fen: u64,
    reason: Option<&'a str>,
    status: RefundStatus,
    refund_id: Option<&'a str>,
    submitted_at: Option<i64>,
    success_at: Option<i64>,
    last_error: Option<&'a str>,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl<'a> From<&'a Refund> for RefundPayload<'a> {
    fn from(r: &'a Refund) -> Self {
        RefundPayload {
            out_refund_no: &r.out_refund_no,
            out_trade_no: &r.out_trade_no,
            api_version: r.api_version,
            amount_fen: r.amount_fen,
            reason: r.reason.as_deref(),
            status: r.status,
            refund_id: r.refund_id.as_deref(),
            submitted_at: r.submitted_at,
            success_at: r.success_at,
            last_error: r.last_error.as_deref(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        }
    }
}

/// The transfer in a webhook's payload: the fields of the API's `Transfer`, named as there
/// (never the package or the encrypted name).
#[derive(Debug, Serialize)]
pub struct TransferPayload<'a> {
    out_bill_no: &'a str,
    mchid: &'a str,
    appid: &'a str,
    openid: &'a str,
    amount_fen: u64,
    scene_id: &'a str,
    remark: &'a str,
    reason: &'a str,
    status: &'a str,
    transfer_bill_no: Option<&'a str>,
    fail_reason: Option<&'a str>,
    operator: &'a str,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl<'a> From<&'a super::transfers::Transfer> for TransferPayload<'a> {
    fn from(t: &'a super::transfers::Transfer) -> Self {
        TransferPayload {
            out_bill_no: &t.out_bill_no,
            mchid: &t.mchid,
            appid: &t.appid,
            openid: &t.openid,
            amount_fen: t.amount_fen,
            scene_id: &t.scene_id,
            remark: &t.remark,
            reason: &t.reason,
            status: t.status.as_str(),
            transfer_bill_no: t.transfer_bill_no.as_deref(),
            fail_reason: t.fail_reason.as_deref(),
            operator: &t.operator,
            created_at: t.created_at,
            updated_at: t.updated_at,
            finished_at: t.finished_at,
        }
    }
}
