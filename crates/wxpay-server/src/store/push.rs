//! What WeChat's message push (消息推送) tells about orders, applied once: the dedupe row, the
//! order's trade-management state, its timeline and webhooks in one transaction; and the alerts
//! a person must see.

use serde::Serialize;

use super::orders::{EventKind, OrderRow, insert_event, order_columns, order_in};
use super::outbox::{NewOutboxEvent, OutboxEventType};
use super::{Order, Store, StoreError, now_ms};

/// What a push (or the trade-management reconcile job) changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TradeChange {
    /// Only a line on the order's timeline (reminded to ship, WeChat saw the shipping).
    Timeline {
        /// The order.
        out_trade_no: String,
        /// What WeChat said (the event and its fields).
        detail: serde_json::Value,
    },
    /// Receipt confirmed and the payment settled: the order's state, its timeline, and the
    /// `order.received` and `order.settled` webhooks.
    Settled {
        /// The order.
        out_trade_no: String,
        /// When receipt was confirmed (Unix ms).
        received_at: i64,
        /// When it settled (Unix ms).
        settled_at: i64,
        /// What WeChat said.
        detail: serde_json::Value,
    },
    /// An alert for a person (e.g. `wxa_trade_controlled`).
    Alert {
        /// The kind (the event's name).
        kind: String,
        /// The mini program.
        appid: String,
        /// What WeChat said.
        message: String,
    },
    /// Nothing but the record that the push was seen.
    Nothing,
}

/// What applying did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushApplied {
    /// Applied now (the order after it, when one changed).
    Applied(Option<Box<Order>>),
    /// Seen before: nothing changed.
    Duplicate,
}

/// An alert (schema `Alert`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Alert {
    /// Its id.
    pub id: String,
    /// The kind: the event's name (`wxa_trade_controlled`).
    pub kind: String,
    /// The mini program concerned.
    pub appid: Option<String>,
    /// What WeChat said.
    pub message: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When a person acknowledged it (Unix ms); null while open.
    pub acknowledged_at: Option<i64>,
}

impl Store {
    /// Applies a push once: `dedupe_key` is recorded with the change in one transaction; a key
    /// seen before changes nothing. A settlement never moves an order back (a late "shipped"
    /// push after "settled" only adds its timeline line, under its own key).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn apply_push(
        &self,
        dedupe_key: &str,
        appid: &str,
        event: &str,
        change: &TradeChange,
    ) -> Result<PushApplied, StoreError> {
        let now = now_ms();
        let out_trade_no = match change {
            TradeChange::Timeline { out_trade_no, .. }
            | TradeChange::Settled { out_trade_no, .. } => Some(out_trade_no.as_str()),
            TradeChange::Alert { .. } | TradeChange::Nothing => None,
        };
        let mut tx = self.begin_write().await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_pushes (dedupe_key, appid, event, out_trade_no, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(dedupe_key)
        .bind(appid)
        .bind(event)
        .bind(out_trade_no)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(PushApplied::Duplicate);
        }
        let mut changed = None;
        match change {
            TradeChange::Timeline {
                out_trade_no,
                detail,
            } => {
                insert_event(
                    &mut tx,
                    out_trade_no,
                    EventKind::TradeManagement,
                    detail,
                    now,
                )
                .await?;
            }
            TradeChange::Settled {
                out_trade_no,
                received_at,
                settled_at,
                detail,
            } => {
                let updated = sqlx::query(
                    "UPDATE orders SET shipping_state = 'settled', \
                     received_at = COALESCE(received_at, $2), settled_at = $3, \
                     updated_at = $4, version = version + 1 \
                     WHERE out_trade_no = $1 AND (shipping_state IS NULL OR shipping_state <> 'settled')",
                )
                .bind(out_trade_no)
                .bind(received_at)
                .bind(settled_at)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 1 {
                    insert_event(&mut tx, out_trade_no, EventKind::Received, detail, now).await?;
                    insert_event(&mut tx, out_trade_no, EventKind::Settled, detail, now).await?;
                    let order = order_in(&mut tx, out_trade_no)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("settled order vanished".into()))?;
                    for kind in [
                        OutboxEventType::OrderReceived,
                        OutboxEventType::OrderSettled,
                    ] {
                        NewOutboxEvent::order(kind, &order)?
                            .insert(&mut tx, now)
                            .await?;
                    }
                    changed = Some(Box::new(order));
                }
            }
            TradeChange::Alert {
                kind,
                appid,
                message,
            } => {
                sqlx::query(
                    "INSERT INTO alerts (id, kind, appid, message, dedupe_key, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
                )
                .bind(format!("alert_{}", wxpay::nonce::random_string(20)))
                .bind(kind)
                .bind(appid)
                .bind(message)
                .bind(dedupe_key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            TradeChange::Nothing => {}
        }
        tx.commit().await?;
        Ok(PushApplied::Applied(changed))
    }

    /// The alerts not acknowledged yet, newest first (at most 100).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn open_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows: Vec<Alert> = sqlx::query_as(
            "SELECT id, kind, appid, message, created_at, acknowledged_at FROM alerts \
             WHERE acknowledged_at IS NULL ORDER BY created_at DESC, id LIMIT 100",
        )
        .fetch_all(&mut *self.reader().await?)
        .await?;
        Ok(rows)
    }

    /// Acknowledges an alert; `false` when there is no such open alert.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn acknowledge_alert(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE alerts SET acknowledged_at = $2 WHERE id = $1 AND acknowledged_at IS NULL",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Paid orders of a mini program WeChat has not settled yet (shipped or not), oldest
    /// payment first: the money the merchant is still waiting for. At most `limit`. Orders of a
    /// mini program outside trade management (upload `not_managed`) are not held by WeChat and
    /// are left out.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn unsettled_orders(
        &self,
        mchid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE status IN (",
            order_status_sql!(Success, Refund),
            ") AND settled_at IS NULL AND NOT EXISTS (SELECT 1 FROM shipping_uploads u \
             WHERE u.out_trade_no = orders.out_trade_no AND u.status = 'not_managed') \
             AND ($1 = '' OR mchid = $1) ORDER BY paid_at, out_trade_no LIMIT $2"
        ))
        .bind(mchid.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }
}

impl Store {
    /// Claims up to `limit` shipped orders WeChat has not settled (as far as this server
    /// knows) and that were not checked since `checked_before` (Unix ms), marking them checked
    /// now: the reconcile job asks WeChat about each, for settlements whose push was lost. An
    /// order is claimed by one instance at a time.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn claim_unsettled_shipped(
        &self,
        checked_before: i64,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            "UPDATE orders SET trade_checked_at = $1 WHERE out_trade_no IN (\
             SELECT out_trade_no FROM orders WHERE shipping_state IN ('shipped', 'received') \
             AND settled_at IS NULL AND COALESCE(trade_checked_at, 0) < $2 \
             AND NOT EXISTS (SELECT 1 FROM shipping_uploads u \
             WHERE u.out_trade_no = orders.out_trade_no AND u.status = 'not_managed') \
             ORDER BY shipped_at, out_trade_no LIMIT $3) \
             AND COALESCE(trade_checked_at, 0) < $2 RETURNING ",
            order_columns!()
        ))
        .bind(now_ms())
        .bind(checked_before)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(Order::try_from).collect()
    }
}
