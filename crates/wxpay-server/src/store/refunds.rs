//! Creating refunds and taking the ones that need WeChat.
//!
//! A refund is created in one transaction with the reservation of its amount on the order
//! (`refunded_fen`, guarded so that the refunds of an order never add up to more than was paid,
//! however many requests race), and committed before WeChat is called. From then on it is sent
//! with the same `out_refund_no` until WeChat has it: a lost answer is resolved by asking again,
//! which WeChat treats as the same refund, never as a second one.
//!
//! Work is taken with a lease (`lease_owner`, `lease_until`): on PostgreSQL the candidate rows
//! are locked with `FOR UPDATE SKIP LOCKED` and the lease condition is checked again under the
//! row lock by the `UPDATE`, so that one instance takes a refund at a time. Between two attempts
//! `lease_until` holds the time of the next one.

use serde_json::json;

use super::orders::{EventKind, Order, OrderRow, fen_to_db, insert_event, order_columns, order_of};
use super::outbox::{NewOutboxEvent, OutboxEventType, RefundPayload, to_json};
use super::refund_state::{Refund, RefundRow, RefundStatus, refund_columns};
use super::{Backend, Store, StoreError, now_ms};

/// A refund to create.
#[derive(Clone, Debug)]
pub struct NewRefund {
    /// The order.
    pub out_trade_no: String,
    /// The merchant's refund number (1–64 of `[0-9A-Za-z_-|*@]`).
    pub out_refund_no: String,
    /// The refund in fen (≥ 1).
    pub amount_fen: u64,
    /// The reason shown to the payer.
    pub reason: Option<String>,
    /// Who sends it to WeChat now (the lease keeps the jobs off it meanwhile).
    pub lease_owner: String,
    /// How long the creator has to send it before the jobs may.
    pub lease_ms: i64,
}

/// What creating a refund did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundCreation {
    /// Created, and the amount reserved on the order.
    Created(Refund),
    /// A refund with this number exists for the same order and amount: a repeated request.
    Existing(Refund),
    /// The number is used by a refund of another order or amount.
    NumberTaken(Refund),
    /// No such order.
    OrderNotFound,
    /// The order is not paid (or not any more refundable).
    NotPaid(Order),
    /// More than what remains refundable.
    ExceedsRefundable {
        /// The order.
        order: Order,
        /// What can still be refunded, in fen.
        refundable_fen: u64,
    },
}

fn lease_select(backend: Backend, condition: &str) -> String {
    let lock = backend.dialect().claim_lock;
    // $1 owner, $2 lease end, $3 now, $4 limit, $5 untouched since.
    let condition =
        format!("{condition} AND updated_at <= $5 AND (lease_until IS NULL OR lease_until < $3)");
    format!(
        "UPDATE refunds SET lease_owner = $1, lease_until = $2 WHERE out_refund_no IN \
         (SELECT out_refund_no FROM refunds WHERE {condition} ORDER BY created_at LIMIT $4{lock}) \
         AND {condition} RETURNING {}",
        refund_columns!()
    )
}

impl Store {
    /// Creates a `PROCESSING` refund, not yet sent, reserving its amount on the order in the same
    /// transaction, with a `refund_requested` event. The row is leased to `new.lease_owner`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn create_refund(&self, new: &NewRefund) -> Result<RefundCreation, StoreError> {
        let amount = fen_to_db(new.amount_fen)?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if let Some(existing) = refund_in(&mut tx, &new.out_refund_no).await? {
            tx.rollback().await?;
            return Ok(same_or_taken(existing, new));
        }
        let row: Option<OrderRow> = sqlx::query_as(concat!(
            concat!("UPDATE orders SET refunded_fen = refunded_fen + $2, updated_at = $3, version = version + 1 \
             WHERE out_trade_no = $1 AND status IN (", order_status_sql!(Success, Refund), ") AND refunded_fen + $2 <= amount_fen \
             RETURNING "),
            order_columns!()
        ))
        .bind(&new.out_trade_no)
        .bind(amount)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order) = order_of(row)? else {
            // On PostgreSQL the guarded UPDATE may have waited for a concurrent request with the
            // same number, which reserved the amount first: that is a repeat, not an excess.
            if let Some(existing) = refund_in(&mut tx, &new.out_refund_no).await? {
                tx.rollback().await?;
                return Ok(same_or_taken(existing, new));
            }
            let order = super::orders::order_in(&mut tx, &new.out_trade_no).await?;
            tx.rollback().await?;
            return Ok(match order {
                None => RefundCreation::OrderNotFound,
                Some(o) if !o.status.is_paid() => RefundCreation::NotPaid(o),
                Some(o) => RefundCreation::ExceedsRefundable {
                    refundable_fen: o.amount_fen.saturating_sub(o.refunded_fen),
                    order: o,
                },
            });
        };
        let inserted: Result<RefundRow, sqlx::Error> = sqlx::query_as(concat!(
            concat!("INSERT INTO refunds (out_refund_no, out_trade_no, api_version, amount_fen, reason, status, \
             created_at, updated_at, version, lease_owner, lease_until) \
             VALUES ($1, $2, $3, $4, $5, ", refund_status_sql!(Processing), ", $6, $6, 0, $7, $8) RETURNING "),
            refund_columns!()
        ))
        .bind(&new.out_refund_no)
        .bind(&order.out_trade_no)
        .bind(order.api_version.as_str())
        .bind(amount)
        .bind(new.reason.as_deref())
        .bind(now)
        .bind(&new.lease_owner)
        .bind(now.saturating_add(new.lease_ms))
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                // Another request created this number meanwhile (PostgreSQL): answer with it.
                tx.rollback().await?;
                return match self.refund(&new.out_refund_no).await? {
                    Some(existing) => Ok(same_or_taken(existing, new)),
                    None => Err(StoreError::Database(sqlx::Error::Database(e))),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let refund = Refund::try_from(row)?;
        let detail = json!({
            "out_refund_no": refund.out_refund_no,
            "amount_fen": refund.amount_fen,
            "reason": refund.reason,
            "refunded_fen": order.refunded_fen,
        });
        insert_event(
            &mut tx,
            &refund.out_trade_no,
            EventKind::RefundRequested,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(RefundCreation::Created(refund))
    }

    /// The refunds of an order, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn refunds_of_order(&self, out_trade_no: &str) -> Result<Vec<Refund>, StoreError> {
        let rows: Vec<RefundRow> = sqlx::query_as(concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds WHERE out_trade_no = $1 ORDER BY created_at, out_refund_no"
        ))
        .bind(out_trade_no)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(Refund::try_from).collect()
    }

    /// Records that WeChat accepted the refund (its answer, or a query that found it): the time
    /// and WeChat's refund id; the lease is given up.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn refund_accepted(
        &self,
        out_refund_no: &str,
        refund_id: Option<&str>,
    ) -> Result<Option<Refund>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<RefundRow> = sqlx::query_as(concat!(
            "UPDATE refunds SET submitted_at = $2, refund_id = COALESCE(refund_id, $3), last_error = NULL, \
             lease_owner = NULL, lease_until = NULL, updated_at = $2, version = version + 1 \
             WHERE out_refund_no = $1 AND submitted_at IS NULL RETURNING ",
            refund_columns!()
        ))
        .bind(out_refund_no)
        .bind(now)
        .bind(refund_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return self.refund(out_refund_no).await;
        };
        let refund = Refund::try_from(row)?;
        let detail = json!({
            "out_refund_no": refund.out_refund_no,
            "status": refund.status.as_str(),
            "accepted": true,
            "refund_id": refund.refund_id,
        });
        insert_event(
            &mut tx,
            &refund.out_trade_no,
            EventKind::Refund,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(refund))
    }

    /// Records a failed attempt (WeChat unreachable, a lost answer, a retryable error) and gives
    /// the lease up. The refund stays `PROCESSING`, its amount reserved; the job sends it again.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn refund_attempt_failed(
        &self,
        out_refund_no: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refunds SET last_error = $2, lease_owner = NULL, lease_until = NULL, updated_at = $3 \
             WHERE out_refund_no = $1",
        )
        .bind(out_refund_no)
        .bind(truncate(error, 500))
        .bind(now_ms())
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(())
    }

    /// Closes a refund that WeChat refused outright before accepting it (a definitive business
    /// error): `CLOSED`, the reserved amount released, a `refund` event and a `refund.failed`
    /// webhook, once. Returns the refund as it is afterwards.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn refund_rejected(
        &self,
        out_refund_no: &str,
        error: &str,
    ) -> Result<Option<Refund>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<RefundRow> = sqlx::query_as(concat!(
            concat!(
                "UPDATE refunds SET status = ",
                refund_status_sql!(Closed),
                ", last_error = $2, lease_owner = NULL, lease_until = NULL, \
             updated_at = $3, version = version + 1 \
             WHERE out_refund_no = $1 AND status = ",
                refund_status_sql!(Processing),
                " AND submitted_at IS NULL RETURNING "
            ),
            refund_columns!()
        ))
        .bind(out_refund_no)
        .bind(truncate(error, 500))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return self.refund(out_refund_no).await;
        };
        let refund = Refund::try_from(row)?;
        sqlx::query(
            "UPDATE orders SET refunded_fen = refunded_fen - $2, updated_at = $3, version = version + 1 \
             WHERE out_trade_no = $1 AND refunded_fen >= $2",
        )
        .bind(&refund.out_trade_no)
        .bind(fen_to_db(refund.amount_fen)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let detail = json!({
            "out_refund_no": refund.out_refund_no,
            "status": "CLOSED",
            "previous_status": "PROCESSING",
            "via": "refused by WeChat",
            "error": refund.last_error,
        });
        insert_event(
            &mut tx,
            &refund.out_trade_no,
            EventKind::Refund,
            &detail,
            now,
        )
        .await?;
        NewOutboxEvent {
            event_type: OutboxEventType::RefundFailed,
            dedupe_key: format!("refund.failed:{}:CLOSED", refund.out_refund_no),
            out_trade_no: Some(refund.out_trade_no.clone()),
            payload: to_json(&RefundPayload::from(&refund))?,
        }
        .insert(&mut tx, now)
        .await?;
        tx.commit().await?;
        Ok(Some(refund))
    }

    /// Leases up to `limit` refunds that were never accepted by WeChat (a crash or a failure
    /// after the commit), not leased by anyone and untouched since `idle_before`, for `lease_ms`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn lease_unsubmitted_refunds(
        &self,
        owner: &str,
        lease_ms: i64,
        idle_before: i64,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        let sql = lease_select(
            self.backend,
            concat!(
                "status = ",
                refund_status_sql!(Processing),
                " AND submitted_at IS NULL"
            ),
        );
        self.lease_refunds(&sql, owner, lease_ms, idle_before, limit)
            .await
    }

    /// Leases up to `limit` accepted refunds still `PROCESSING`, not leased by anyone and
    /// untouched (not changed nor checked) since `idle_before`, for `lease_ms`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn lease_processing_refunds(
        &self,
        owner: &str,
        lease_ms: i64,
        idle_before: i64,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        let sql = lease_select(
            self.backend,
            concat!(
                "status = ",
                refund_status_sql!(Processing),
                " AND submitted_at IS NOT NULL"
            ),
        );
        self.lease_refunds(&sql, owner, lease_ms, idle_before, limit)
            .await
    }

    async fn lease_refunds(
        &self,
        sql: &str,
        owner: &str,
        lease_ms: i64,
        idle_before: i64,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let rows: Vec<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(i64::from(limit))
            .bind(idle_before)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.into_iter().map(Refund::try_from).collect()
    }

    /// Records that a leased refund was checked and is unchanged (its `updated_at` is the time
    /// of the check), and gives the lease up.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn refund_checked(&self, out_refund_no: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refunds SET lease_owner = NULL, lease_until = NULL, updated_at = $3 \
             WHERE out_refund_no = $1 AND lease_owner = $2",
        )
        .bind(out_refund_no)
        .bind(owner)
        .bind(now_ms())
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(())
    }
}

async fn refund_in(
    conn: &mut sqlx::AnyConnection,
    out_refund_no: &str,
) -> Result<Option<Refund>, StoreError> {
    let row: Option<RefundRow> = sqlx::query_as(concat!(
        "SELECT ",
        refund_columns!(),
        " FROM refunds WHERE out_refund_no = $1"
    ))
    .bind(out_refund_no)
    .fetch_optional(conn)
    .await?;
    row.map(Refund::try_from).transpose()
}

fn same_or_taken(existing: Refund, new: &NewRefund) -> RefundCreation {
    if existing.out_trade_no == new.out_trade_no && existing.amount_fen == new.amount_fen {
        RefundCreation::Existing(existing)
    } else {
        RefundCreation::NumberTaken(existing)
    }
}

/// At most `max` bytes, cut on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl RefundStatus {
    /// The status WeChat reports, in this server's terms (v3 names; v2 `REFUNDCLOSE` is
    /// `CLOSED`, `CHANGE` is `ABNORMAL`). `None` for a name it does not know.
    #[must_use]
    pub fn from_wechat(name: &str) -> Option<Self> {
        Some(match name {
            "PROCESSING" => RefundStatus::Processing,
            "SUCCESS" => RefundStatus::Success,
            "CLOSED" | "REFUNDCLOSE" => RefundStatus::Closed,
            "ABNORMAL" | "CHANGE" => RefundStatus::Abnormal,
            _ => return None,
        })
    }
}
