//! Delivering the outbox: leasing the events that are due, recording each attempt.
//!
//! An event is leased by one instance at a time (PostgreSQL: `FOR UPDATE SKIP LOCKED` on the
//! candidates, and the lease checked again under the row lock), delivered, and then marked
//! delivered or given its next attempt time. A crash during delivery lets the lease run out and
//! the event is sent again: receivers dedupe on the event id.

use serde::Serialize;
use serde_json::json;

use super::orders::{EventKind, insert_event};
use super::refunds::truncate;
use super::{Store, StoreError, now_ms};

/// An outbox event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OutboxEvent {
    /// Row id (delivery order).
    pub id: i64,
    /// The webhook's `id` (`evt_...`), stable across attempts.
    pub event_id: String,
    /// `order.paid`, `order.closed`, `refund.succeeded`, `refund.failed`.
    pub event_type: String,
    /// The order it concerns.
    pub out_trade_no: Option<String>,
    /// The webhook's `data`, JSON text.
    #[serde(skip)]
    pub payload: String,
    /// When it was written (Unix ms).
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_at: i64,
    /// When it was acknowledged.
    pub delivered_at: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
}

type OutboxRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

const OUTBOX_COLUMNS: &str = "id, event_id, event_type, out_trade_no, payload, created_at, attempts, \
                              next_attempt_at, delivered_at, last_error";

fn event_of(r: OutboxRow) -> OutboxEvent {
    OutboxEvent {
        id: r.0,
        event_id: r.1,
        event_type: r.2,
        out_trade_no: r.3,
        payload: r.4,
        created_at: r.5,
        attempts: r.6,
        next_attempt_at: r.7,
        delivered_at: r.8,
        last_error: r.9,
    }
}

/// The outcome of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookAttempt {
    /// The receiver answered 2xx.
    Delivered {
        /// The HTTP status.
        status: u16,
    },
    /// It did not; try again at `retry_at`.
    Failed {
        /// What went wrong (status or transport error).
        error: String,
        /// When to try again (Unix ms).
        retry_at: i64,
    },
}

impl Store {
    /// Leases up to `limit` undelivered events that are due, oldest first, for `lease_ms`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn lease_due_webhooks(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let lock = self.backend.dialect().claim_lock;
        let condition = "delivered_at IS NULL AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3)";
        let sql = format!(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id IN \
             (SELECT id FROM outbox WHERE {condition} ORDER BY id LIMIT $4{lock}) AND {condition} \
             RETURNING {OUTBOX_COLUMNS}"
        );
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.sort_by_key(|r| r.0);
        Ok(rows.into_iter().map(event_of).collect())
    }

    /// Records an attempt on an event this caller leased: delivered (once), or failed with its
    /// next attempt time; with a `webhook_delivered` / `webhook_failed` entry in the order's
    /// timeline. Returns false when the lease was lost meanwhile (nothing recorded).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_webhook_attempt(
        &self,
        event: &OutboxEvent,
        owner: &str,
        attempt: &WebhookAttempt,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let (done, kind, detail) = match attempt {
            WebhookAttempt::Delivered { status } => {
                let done = sqlx::query(
                    "UPDATE outbox SET delivered_at = $3, attempts = attempts + 1, last_error = NULL, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND delivered_at IS NULL",
                )
                .bind(event.id)
                .bind(owner)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let detail = json!({
                    "event_id": event.event_id,
                    "type": event.event_type,
                    "attempt": event.attempts + 1,
                    "status": status,
                });
                (
                    done.rows_affected() == 1,
                    EventKind::WebhookDelivered,
                    detail,
                )
            }
            WebhookAttempt::Failed { error, retry_at } => {
                let error = truncate(error, 500);
                let done = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND delivered_at IS NULL",
                )
                .bind(event.id)
                .bind(owner)
                .bind(error)
                .bind(*retry_at)
                .execute(&mut *tx)
                .await?;
                let detail = json!({
                    "event_id": event.event_id,
                    "type": event.event_type,
                    "attempt": event.attempts + 1,
                    "error": error,
                    "next_attempt_at": retry_at,
                });
                (done.rows_affected() == 1, EventKind::WebhookFailed, detail)
            }
        };
        if !done {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(no) = &event.out_trade_no {
            insert_event(&mut tx, no, kind, &detail, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The latest events, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn recent_webhooks(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT $1");
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        Ok(rows.into_iter().map(event_of).collect())
    }

    /// The events of an order, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn webhooks_of_order(
        &self,
        out_trade_no: &str,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql =
            format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE out_trade_no = $1 ORDER BY id");
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(out_trade_no)
            .fetch_all(&mut *self.reader().await?)
            .await?;
        Ok(rows.into_iter().map(event_of).collect())
    }
}
