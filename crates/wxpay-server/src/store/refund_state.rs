//! The refund model and the path that applies a refund's result (from a notification or a
//! query) exactly once. Creating and following refunds lives in `refunds.rs`.

use serde::Serialize;

use super::orders::{EventKind, fen_from_db, insert_event};
use super::outbox::{NewOutboxEvent, OutboxEventType, RefundPayload, to_json};
use super::{Store, StoreError, now_ms};

/// The columns of `refunds`, in [`RefundRow`]'s order.
macro_rules! refund_columns {
    () => {
        "out_refund_no, out_trade_no, api_version, amount_fen, reason, status, refund_id, \
         submitted_at, success_at, last_error, created_at, updated_at, version"
    };
}
#[allow(unused_imports)] // for refunds.rs
pub(crate) use refund_columns;

/// A refund's state, named as WeChat v3 names them (v2 `REFUNDCLOSE` is `CLOSED`, `CHANGE` is
/// `ABNORMAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub enum RefundStatus {
    /// Accepted, in progress.
    #[serde(rename = "PROCESSING")]
    Processing,
    /// The money is back with the payer.
    #[serde(rename = "SUCCESS")]
    Success,
    /// Closed without refunding.
    #[serde(rename = "CLOSED")]
    Closed,
    /// Abnormal (the payer's card is gone, ...): needs the merchant's action.
    #[serde(rename = "ABNORMAL")]
    Abnormal,
}

impl RefundStatus {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => refund_status_name!(Processing),
            RefundStatus::Success => refund_status_name!(Success),
            RefundStatus::Closed => refund_status_name!(Closed),
            RefundStatus::Abnormal => refund_status_name!(Abnormal),
        }
    }

    /// The status of a stored name.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for any other text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            refund_status_name!(Processing) => RefundStatus::Processing,
            refund_status_name!(Success) => RefundStatus::Success,
            refund_status_name!(Closed) => RefundStatus::Closed,
            refund_status_name!(Abnormal) => RefundStatus::Abnormal,
            other => return Err(StoreError::Corrupt(format!("refund status {other:?}"))),
        })
    }

    /// Whether the state can change no more.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, RefundStatus::Success | RefundStatus::Closed)
    }
}

/// A refund, as stored. Times are Unix milliseconds. Not serializable: the API shows
/// `api::admin::RefundView`, webhooks carry `outbox::RefundPayload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The order.
    pub out_trade_no: String,
    /// The API it was sent with.
    pub api_version: super::ApiVersion,
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

#[derive(sqlx::FromRow)]
pub(crate) struct RefundRow {
    out_refund_no: String,
    out_trade_no: String,
    api_version: String,
    amount_fen: i64,
    reason: Option<String>,
    status: String,
    refund_id: Option<String>,
    submitted_at: Option<i64>,
    success_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl TryFrom<RefundRow> for Refund {
    type Error = StoreError;

    fn try_from(r: RefundRow) -> Result<Self, StoreError> {
        Ok(Refund {
            api_version: super::ApiVersion::parse(&r.api_version)?,
            amount_fen: fen_from_db("amount_fen", r.amount_fen)?,
            status: RefundStatus::parse(&r.status)?,
            out_refund_no: r.out_refund_no,
            out_trade_no: r.out_trade_no,
            reason: r.reason,
            refund_id: r.refund_id,
            submitted_at: r.submitted_at,
            success_at: r.success_at,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

/// A refund's result as WeChat reported it (a notification or a query).
#[derive(Clone, Debug)]
pub struct RefundResult {
    /// The refund.
    pub out_refund_no: String,
    /// WeChat's refund id.
    pub refund_id: String,
    /// The new state (not `PROCESSING`).
    pub status: RefundStatus,
    /// When it succeeded, for `SUCCESS`.
    pub success_at: Option<i64>,
    /// Unique per notification (or per query result): a repeat changes nothing.
    pub dedupe_key: String,
    /// For the timeline: how it arrived and what it said.
    pub detail: serde_json::Value,
}

/// What applying a refund result did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundTransition {
    /// The change was made (the refund after it).
    Applied(Refund),
    /// Already in that state, or this exact result was applied before.
    Unchanged(Refund),
    /// The refund's state does not allow the change (e.g. `CLOSED` after `SUCCESS`).
    Refused(Refund),
    /// No such refund.
    NotFound,
}

impl Store {
    /// A refund by number.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn refund(&self, out_refund_no: &str) -> Result<Option<Refund>, StoreError> {
        let row: Option<RefundRow> = sqlx::query_as(concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds WHERE out_refund_no = $1"
        ))
        .bind(out_refund_no)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(Refund::try_from).transpose()
    }

    /// Applies a refund's final (or abnormal) state once: the refund row, the order (`REFUND`
    /// on success; the reserved amount released when closed), a `refund` event and a
    /// `refund.succeeded` / `refund.failed` webhook, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn apply_refund_result(
        &self,
        r: &RefundResult,
    ) -> Result<RefundTransition, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let select = self.backend.dialect().select_refund_to_settle;
        let current: Option<RefundRow> = sqlx::query_as(select)
            .bind(&r.out_refund_no)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current.map(Refund::try_from).transpose()? else {
            tx.rollback().await?;
            return Ok(RefundTransition::NotFound);
        };
        let fresh = sqlx::query(
            "INSERT INTO processed_notifications (dedupe_key, kind, out_trade_no, received_at) \
             VALUES ($1, 'refund', $2, $3) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&r.dedupe_key)
        .bind(&current.out_trade_no)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh || current.status == r.status {
            tx.rollback().await?;
            return Ok(RefundTransition::Unchanged(current));
        }
        let allowed = match current.status {
            RefundStatus::Processing => r.status != RefundStatus::Processing,
            RefundStatus::Abnormal => r.status.is_final(),
            RefundStatus::Success | RefundStatus::Closed => false,
        };
        if !allowed {
            tx.rollback().await?;
            return Ok(RefundTransition::Refused(current));
        }
        let success_at = if r.status == RefundStatus::Success {
            Some(r.success_at.unwrap_or(now))
        } else {
            None
        };
        // WeChat reports only refunds it accepted: a result that arrives before WeChat's answer
        // to the submission (a notification overtaking it, a lost answer) also records that.
        let row: RefundRow = sqlx::query_as(concat!(
            "UPDATE refunds SET status = $2, refund_id = $3, success_at = $4, updated_at = $5, \
             submitted_at = COALESCE(submitted_at, $5), version = version + 1 \
             WHERE out_refund_no = $1 AND status = $6 RETURNING ",
            refund_columns!()
        ))
        .bind(&r.out_refund_no)
        .bind(r.status.as_str())
        .bind(&r.refund_id)
        .bind(success_at)
        .bind(now)
        .bind(current.status.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let refund = Refund::try_from(row)?;
        match r.status {
            RefundStatus::Success => {
                sqlx::query(concat!(
                    "UPDATE orders SET status = ",
                    order_status_sql!(Refund),
                    ", updated_at = $2, version = version + 1 \
                     WHERE out_trade_no = $1 AND status IN (",
                    order_status_sql!(Success, Refund),
                    ")"
                ))
                .bind(&refund.out_trade_no)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            RefundStatus::Closed => {
                sqlx::query(
                    "UPDATE orders SET refunded_fen = refunded_fen - $2, updated_at = $3, version = version + 1 \
                     WHERE out_trade_no = $1 AND refunded_fen >= $2",
                )
                .bind(&refund.out_trade_no)
                .bind(super::orders::fen_to_db(refund.amount_fen)?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            RefundStatus::Abnormal | RefundStatus::Processing => {}
        }
        let mut detail = r.detail.clone();
        if let Some(map) = detail.as_object_mut() {
            map.insert("out_refund_no".into(), refund.out_refund_no.clone().into());
            map.insert("status".into(), refund.status.as_str().into());
            map.insert("previous_status".into(), current.status.as_str().into());
        }
        insert_event(
            &mut tx,
            &refund.out_trade_no,
            EventKind::Refund,
            &detail,
            now,
        )
        .await?;
        let (event_type, dedupe_key) = if r.status == RefundStatus::Success {
            (
                OutboxEventType::RefundSucceeded,
                format!("refund.succeeded:{}", refund.out_refund_no),
            )
        } else {
            (
                OutboxEventType::RefundFailed,
                format!(
                    "refund.failed:{}:{}",
                    refund.out_refund_no,
                    refund.status.as_str()
                ),
            )
        };
        NewOutboxEvent {
            event_type,
            dedupe_key,
            out_trade_no: Some(refund.out_trade_no.clone()),
            payload: to_json(&RefundPayload::from(&refund))?,
        }
        .insert(&mut tx, now)
        .await?;
        tx.commit().await?;
        Ok(RefundTransition::Applied(refund))
    }
}
