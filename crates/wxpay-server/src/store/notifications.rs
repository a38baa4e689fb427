//! Applying a payment exactly once, whoever reports it: a v2 or v3 notification, or a query.

use super::orders::{
    EventKind, OrderRow, OrderStatus, Transition, insert_event, order_columns, order_of,
};
use super::outbox::{NewOutboxEvent, OutboxEventType};
use super::{Backend, Store, StoreError, now_ms};

pub use super::refund_state::RefundResult;

/// A payment WeChat confirmed, already checked against the order (merchant, appid, amount).
#[derive(Clone, Debug)]
pub struct PaymentConfirmation {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's transaction id.
    pub transaction_id: String,
    /// The amount WeChat reports, in fen; the update is refused unless it equals the order's.
    pub amount_fen: u64,
    /// The payer's openid, as WeChat reports it.
    pub payer_openid: Option<String>,
    /// When it was paid (Unix milliseconds).
    pub paid_at: i64,
    /// Unique per notification (`v3:EVENT_ID`, `v2:pay:TRANSACTION_ID`) or per query result
    /// (`query:TRANSACTION_ID`): a repeat of the same report changes nothing.
    pub dedupe_key: String,
    /// The timeline entry: [`EventKind::Notification`] or [`EventKind::Query`].
    pub event: EventKind,
    /// Its details (how it arrived, what it said).
    pub detail: serde_json::Value,
}

impl Store {
    /// Marks an order paid, once: from `NOTPAY`, `PAYERROR`, or `CLOSED` (WeChat's word wins: money
    /// taken for an order closed here is recorded, and the event says so). The dedupe row, the
    /// state change, the event and the `order.paid` webhook are one transaction.
    ///
    /// Returns `Unchanged` for a repeated report or an order already paid, `Refused` when the
    /// amount differs from the order's, `NotFound` for an unknown order.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_paid(&self, p: &PaymentConfirmation) -> Result<Transition, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let select = match self.backend {
            Backend::Sqlite => concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE out_trade_no = $1"
            ),
            Backend::Postgres => concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE out_trade_no = $1 FOR UPDATE"
            ),
        };
        let row: Option<OrderRow> = sqlx::query_as(select)
            .bind(&p.out_trade_no)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = order_of(row)? else {
            tx.rollback().await?;
            return Ok(Transition::NotFound);
        };
        if current.status.is_paid() {
            tx.rollback().await?;
            return Ok(Transition::Unchanged(current));
        }
        if current.amount_fen != p.amount_fen {
            tx.rollback().await?;
            return Ok(Transition::Refused(current));
        }
        let fresh = sqlx::query(
            "INSERT INTO processed_notifications (dedupe_key, kind, out_trade_no, received_at) \
             VALUES ($1, 'payment', $2, $3) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&p.dedupe_key)
        .bind(&p.out_trade_no)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(Transition::Unchanged(current));
        }
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            "UPDATE orders SET status = 'SUCCESS', transaction_id = $2, payer_openid = $3, paid_at = $4, \
             updated_at = $5, version = version + 1 \
             WHERE out_trade_no = $1 AND status IN ('NOTPAY', 'PAYERROR', 'CLOSED') AND amount_fen = $6 RETURNING ",
            order_columns!()
        ))
        .bind(&p.out_trade_no)
        .bind(&p.transaction_id)
        .bind(p.payer_openid.as_deref())
        .bind(p.paid_at)
        .bind(now)
        .bind(super::orders::fen_to_db(p.amount_fen)?)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order) = order_of(row)? else {
            // Only reachable if the row changed under us, which the write lock (SQLite) or the
            // row lock (PostgreSQL) prevents; report what is there.
            let outcome = super::orders::not_applied(
                &mut tx,
                &p.out_trade_no,
                &[OrderStatus::Success, OrderStatus::Refund],
            )
            .await?;
            tx.rollback().await?;
            return Ok(outcome);
        };
        let mut detail = p.detail.clone();
        if let Some(map) = detail.as_object_mut() {
            map.insert("result".into(), "paid".into());
            map.insert("transaction_id".into(), p.transaction_id.clone().into());
            map.insert("previous_status".into(), current.status.as_str().into());
            if current.status == OrderStatus::Closed {
                map.insert(
                    "anomaly".into(),
                    "paid at WeChat after it was closed here".into(),
                );
            }
        }
        insert_event(&mut tx, &p.out_trade_no, p.event, &detail, now).await?;
        NewOutboxEvent::order(OutboxEventType::OrderPaid, &order)?
            .insert(&mut tx, now)
            .await?;
        tx.commit().await?;
        if current.status == OrderStatus::Closed {
            tracing::error!(out_trade_no = %order.out_trade_no, "order paid at WeChat after it was closed here");
        }
        crate::api::metrics::order_paid(p.event.as_str());
        Ok(Transition::Applied(order))
    }
}
