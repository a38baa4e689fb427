//! Merchant transfers (payouts): the bills, their reservations against the merchant's day budget
//! and the user's day cap, their timeline, and the leases of the job that follows them.
//!
//! A transfer is created in one transaction with both reservations (guarded increments, so that
//! racing requests never exceed a limit) and committed before WeChat is called. Its state only
//! moves forward (`ACCEPTED` < `PROCESSING` < `WAIT_USER_CONFIRM` < `TRANSFERING`/`CANCELING` <
//! final), by compare-and-set on `version`; reaching `FAIL` or `CANCELLED` releases the
//! reservations, and every final state writes its webhook, in the same transaction: a duplicate
//! or late report changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::AnyConnection;
use wxpay::v3::transfers::TransferState;

use super::orders::{fen_from_db, fen_to_db};
use super::outbox::{NewOutboxEvent, OutboxEventType, to_json};
use super::{Store, StoreError, now_ms};

/// One of a scene's report infos (`transfer_scene_report_infos`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportInfo {
    /// The info's name, e.g. `活动名称`.
    pub info_type: String,
    /// Its content.
    pub info_content: String,
}

/// A transfer as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The merchant's bill number.
    pub out_bill_no: String,
    /// The paying merchant.
    pub mchid: String,
    /// The mini program the user confirms in.
    pub appid: String,
    /// The payee.
    pub openid: String,
    /// In fen.
    pub amount_fen: u64,
    /// WeChat's transfer scene (`1000`, `1005`, `1011`, ...).
    pub scene_id: String,
    /// The scene's report infos.
    pub report_infos: Vec<ReportInfo>,
    /// What the user is told the money is.
    pub perception: Option<String>,
    /// Shown to the user.
    pub remark: String,
    /// Why it was made (internal, for the audit).
    pub reason: String,
    /// Where WeChat notifies it (fixed at creation: every send is the same).
    pub notify_url: String,
    /// The payee's name, encrypted for WeChat, and the key's id.
    pub user_name: Option<(String, String)>,
    /// WeChat's state (`ACCEPTED` until WeChat answered).
    pub status: TransferState,
    /// WeChat's bill number.
    pub transfer_bill_no: Option<String>,
    /// For `wx.requestMerchantTransfer`, while waiting for the user.
    pub package_info: Option<String>,
    /// Why it failed.
    pub fail_reason: Option<String>,
    /// Who made it (`admin` or `operator:ID`).
    pub operator: String,
    /// The day (GMT+8) its amount counts against.
    pub day: String,
    /// Sends and checks that failed.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the job looks at it next (Unix ms).
    pub next_check_at: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// When it became final (Unix ms).
    pub finished_at: Option<i64>,
    /// Bumped by every change.
    pub version: i64,
}

#[derive(sqlx::FromRow)]
struct TransferRow {
    out_bill_no: String,
    mchid: String,
    appid: String,
    openid: String,
    amount_fen: i64,
    scene_id: String,
    report_infos: String,
    perception: Option<String>,
    remark: String,
    reason: String,
    notify_url: String,
    user_name_cipher: Option<String>,
    user_name_serial: Option<String>,
    status: String,
    transfer_bill_no: Option<String>,
    package_info: Option<String>,
    fail_reason: Option<String>,
    operator: String,
    day: String,
    attempts: i64,
    last_error: Option<String>,
    next_check_at: i64,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    version: i64,
}

const COLUMNS: &str = "out_bill_no, mchid, appid, openid, amount_fen, scene_id, report_infos, \
    perception, remark, reason, notify_url, user_name_cipher, user_name_serial, status, transfer_bill_no, \
    package_info, fail_reason, operator, day, attempts, last_error, next_check_at, created_at, \
    updated_at, finished_at, version";

impl TryFrom<TransferRow> for Transfer {
    type Error = StoreError;

    fn try_from(r: TransferRow) -> Result<Self, StoreError> {
        let status = TransferState::from_wire(&r.status);
        if matches!(status, TransferState::Unknown(_)) {
            return Err(StoreError::Corrupt(format!(
                "unknown transfer status {}",
                r.status
            )));
        }
        Ok(Transfer {
            report_infos: serde_json::from_str(&r.report_infos)
                .map_err(|e| StoreError::Corrupt(format!("report_infos: {e}")))?,
            amount_fen: fen_from_db("amount_fen", r.amount_fen)?,
            user_name: r.user_name_cipher.zip(r.user_name_serial),
            out_bill_no: r.out_bill_no,
            mchid: r.mchid,
            appid: r.appid,
            openid: r.openid,
            scene_id: r.scene_id,
            perception: r.perception,
            remark: r.remark,
            reason: r.reason,
            notify_url: r.notify_url,
            status,
            transfer_bill_no: r.transfer_bill_no,
            package_info: r.package_info,
            fail_reason: r.fail_reason,
            operator: r.operator,
            day: r.day,
            attempts: r.attempts,
            last_error: r.last_error,
            next_check_at: r.next_check_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            version: r.version,
        })
    }
}

/// How far along a state is: a report never moves a transfer back.
#[must_use]
pub fn state_rank(state: &TransferState) -> u8 {
    match state {
        TransferState::Accepted => 0,
        TransferState::Processing => 1,
        TransferState::WaitUserConfirm => 2,
        TransferState::Transfering | TransferState::Canceling => 3,
        TransferState::Success | TransferState::Fail | TransferState::Cancelled => 4,
        // Not stored; a report in a state this server does not know changes nothing.
        _ => 0,
    }
}

/// A transfer to create.
#[derive(Clone, Debug)]
pub struct NewTransfer {
    /// The bill number.
    pub out_bill_no: String,
    /// The merchant.
    pub mchid: String,
    /// The mini program.
    pub appid: String,
    /// The payee.
    pub openid: String,
    /// In fen.
    pub amount_fen: u64,
    /// The scene.
    pub scene_id: String,
    /// Its infos.
    pub report_infos: Vec<ReportInfo>,
    /// What the user is told.
    pub perception: Option<String>,
    /// Shown to the user.
    pub remark: String,
    /// The internal reason.
    pub reason: String,
    /// Where WeChat notifies it.
    pub notify_url: String,
    /// The encrypted name and its key id.
    pub user_name: Option<(String, String)>,
    /// Who made it.
    pub operator: String,
    /// The day (GMT+8).
    pub day: String,
    /// The merchant's day budget in fen.
    pub daily_budget_fen: u64,
    /// The user's day cap in fen.
    pub user_daily_cap_fen: u64,
    /// Who sends it now (the job leaves it alone meanwhile).
    pub lease_owner: String,
    /// How long the creator has.
    pub lease_ms: i64,
    /// When the job looks at it if the creator does not finish.
    pub next_check_at: i64,
}

/// What creating a transfer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferCreation {
    /// Created, its amount reserved.
    Created(Transfer),
    /// The same request again (same number, merchant, user, amount, scene).
    Existing(Transfer),
    /// The number belongs to another transfer.
    NumberTaken(Transfer),
    /// Over the merchant's day budget.
    OverBudget {
        /// What is left today, in fen.
        left_fen: u64,
    },
    /// Over the user's day cap.
    OverUserCap {
        /// What the user can still receive today, in fen.
        left_fen: u64,
    },
}

/// A report of WeChat's about a transfer (an answer, a query or a notification).
#[derive(Clone, Debug)]
pub struct TransferReport {
    /// Its state.
    pub state: TransferState,
    /// WeChat's bill number.
    pub transfer_bill_no: Option<String>,
    /// The confirm package, when waiting for the user.
    pub package_info: Option<String>,
    /// Why it failed.
    pub fail_reason: Option<String>,
    /// The timeline's line: what said it (`answer`, `query`, `notification`, `cancel`...).
    pub via: String,
}

/// What a report did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferApplied {
    /// The transfer moved on (as stored after it).
    Applied(Transfer),
    /// Nothing new (same state, or older than what is stored).
    Unchanged(Transfer),
    /// No such transfer.
    NotFound,
}

/// A line of a transfer's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct TransferEvent {
    /// `requested`, `answered`, `notified`, `queried`, `cancel_requested`, `failed_attempt`...
    pub kind: String,
    /// What was said (JSON).
    #[schema(value_type = Object)]
    #[sqlx(try_from = "String")]
    pub detail: JsonText,
    /// Unix ms.
    pub created_at: i64,
}

/// A JSON column read back as a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct JsonText(pub serde_json::Value);

impl TryFrom<String> for JsonText {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s).map(JsonText)
    }
}

/// A filter of the transfer list.
#[derive(Clone, Debug, Default)]
pub struct TransferFilter {
    /// One merchant's.
    pub mchid: Option<String>,
    /// One mini program's.
    pub appid: Option<String>,
    /// One user's.
    pub openid: Option<String>,
    /// One state.
    pub status: Option<TransferState>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// A merchant's limits and what is used today.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// The merchant's day budget in fen.
    pub daily_budget_fen: u64,
    /// Each user's day cap in fen.
    pub user_daily_cap_fen: u64,
    /// Whether these are the merchant's own (else the configured defaults).
    pub own: bool,
}

async fn insert_transfer_event(
    conn: &mut AnyConnection,
    out_bill_no: &str,
    kind: &str,
    detail: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO transfer_events (out_bill_no, kind, detail, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(out_bill_no)
    .bind(kind)
    .bind(detail.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

async fn transfer_in(
    conn: &mut AnyConnection,
    out_bill_no: &str,
) -> Result<Option<Transfer>, StoreError> {
    let row: Option<TransferRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transfers WHERE out_bill_no = $1"
    )))
    .bind(out_bill_no)
    .fetch_optional(conn)
    .await?;
    row.map(Transfer::try_from).transpose()
}

/// Reserves `amount` under a guarded upsert: false when it would exceed `limit`.
async fn reserve(
    conn: &mut AnyConnection,
    sql: &str,
    keys: &[&str],
    amount: i64,
    limit: i64,
) -> Result<bool, StoreError> {
    if amount > limit {
        return Ok(false);
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for key in keys {
        query = query.bind(*key);
    }
    let done = query.bind(amount).bind(limit).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

const RESERVE_BUDGET: &str = "INSERT INTO transfer_budget_days (mchid, day, reserved_fen) VALUES ($1, $2, $3) \
     ON CONFLICT (mchid, day) DO UPDATE SET reserved_fen = transfer_budget_days.reserved_fen + excluded.reserved_fen \
     WHERE transfer_budget_days.reserved_fen + excluded.reserved_fen <= $4";
const RESERVE_USER: &str = "INSERT INTO transfer_user_days (appid, openid, day, reserved_fen) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (appid, openid, day) DO UPDATE SET reserved_fen = transfer_user_days.reserved_fen + excluded.reserved_fen \
     WHERE transfer_user_days.reserved_fen + excluded.reserved_fen <= $5";

async fn used(conn: &mut AnyConnection, sql: &str, keys: &[&str]) -> Result<u64, StoreError> {
    let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()));
    for key in keys {
        query = query.bind(*key);
    }
    let value = query.fetch_optional(conn).await?.unwrap_or(0);
    fen_from_db("reserved_fen", value)
}

const BUDGET_USED: &str =
    "SELECT reserved_fen FROM transfer_budget_days WHERE mchid = $1 AND day = $2";
const USER_USED: &str =
    "SELECT reserved_fen FROM transfer_user_days WHERE appid = $1 AND openid = $2 AND day = $3";

/// Whether a request with a number already used is the same request again. The name is
/// compared by its presence only (each encryption differs); everything else exactly.
fn same_request(existing: &Transfer, new: &NewTransfer) -> bool {
    existing.mchid == new.mchid
        && existing.appid == new.appid
        && existing.openid == new.openid
        && existing.amount_fen == new.amount_fen
        && existing.scene_id == new.scene_id
        && existing.report_infos == new.report_infos
        && existing.perception == new.perception
        && existing.remark == new.remark
        && existing.reason == new.reason
        && existing.user_name.is_some() == new.user_name.is_some()
}

impl Store {
    /// Creates an `ACCEPTED` transfer, not yet sent, with its amount reserved in the merchant's
    /// day budget and the user's day cap, and a `requested` line naming the operator, in one
    /// transaction. The row is leased to `new.lease_owner`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn create_transfer(&self, new: &NewTransfer) -> Result<TransferCreation, StoreError> {
        let amount = fen_to_db(new.amount_fen)?;
        let budget = fen_to_db(new.daily_budget_fen)?;
        let cap = fen_to_db(new.user_daily_cap_fen)?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if let Some(existing) = transfer_in(&mut tx, &new.out_bill_no).await? {
            tx.rollback().await?;
            return Ok(if same_request(&existing, new) {
                TransferCreation::Existing(existing)
            } else {
                TransferCreation::NumberTaken(existing)
            });
        }
        if !reserve(
            &mut tx,
            RESERVE_BUDGET,
            &[&new.mchid, &new.day],
            amount,
            budget,
        )
        .await?
        {
            let used = used(&mut tx, BUDGET_USED, &[&new.mchid, &new.day]).await?;
            tx.rollback().await?;
            return Ok(TransferCreation::OverBudget {
                left_fen: new.daily_budget_fen.saturating_sub(used),
            });
        }
        if !reserve(
            &mut tx,
            RESERVE_USER,
            &[&new.appid, &new.openid, &new.day],
            amount,
            cap,
        )
        .await?
        {
            let used = used(&mut tx, USER_USED, &[&new.appid, &new.openid, &new.day]).await?;
            tx.rollback().await?;
            return Ok(TransferCreation::OverUserCap {
                left_fen: new.user_daily_cap_fen.saturating_sub(used),
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO transfers (out_bill_no, mchid, appid, openid, amount_fen, scene_id, \
             report_infos, perception, remark, reason, user_name_cipher, user_name_serial, status, \
             operator, day, attempts, next_check_at, lease_owner, lease_until, created_at, \
             updated_at, version, notify_url) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, 'ACCEPTED', $13, $14, 0, $15, $16, $17, $18, $18, 0, $19) \
             ON CONFLICT (out_bill_no) DO NOTHING",
        )
        .bind(&new.out_bill_no)
        .bind(&new.mchid)
        .bind(&new.appid)
        .bind(&new.openid)
        .bind(amount)
        .bind(&new.scene_id)
        .bind(to_json(&new.report_infos)?)
        .bind(new.perception.as_deref())
        .bind(&new.remark)
        .bind(&new.reason)
        .bind(new.user_name.as_ref().map(|(c, _)| c.as_str()))
        .bind(new.user_name.as_ref().map(|(_, s)| s.as_str()))
        .bind(&new.operator)
        .bind(&new.day)
        .bind(new.next_check_at)
        .bind(&new.lease_owner)
        .bind(now.saturating_add(new.lease_ms))
        .bind(now)
        .bind(&new.notify_url)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // A concurrent request with the same number committed first (PostgreSQL): that is
            // a repeat or a clash, told by what it holds.
            tx.rollback().await?;
            let existing = self
                .transfer(&new.out_bill_no)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a transfer vanished".into()))?;
            return Ok(if same_request(&existing, new) {
                TransferCreation::Existing(existing)
            } else {
                TransferCreation::NumberTaken(existing)
            });
        }
        insert_transfer_event(
            &mut tx,
            &new.out_bill_no,
            "requested",
            &json!({
                "operator": new.operator,
                "reason": new.reason,
                "amount_fen": new.amount_fen,
                "openid": new.openid,
                "scene_id": new.scene_id,
            }),
            now,
        )
        .await?;
        let created = transfer_in(&mut tx, &new.out_bill_no)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a new transfer vanished".into()))?;
        tx.commit().await?;
        Ok(TransferCreation::Created(created))
    }

    /// A transfer by its number.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn transfer(&self, out_bill_no: &str) -> Result<Option<Transfer>, StoreError> {
        transfer_in(&mut *self.reader().await?, out_bill_no).await
    }

    /// A transfer's timeline, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_events(
        &self,
        out_bill_no: &str,
    ) -> Result<Vec<TransferEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT kind, detail, created_at FROM transfer_events WHERE out_bill_no = $1 ORDER BY id",
        )
        .bind(out_bill_no)
        .fetch_all(&mut *self.reader().await?)
        .await?)
    }

    /// Transfers, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn list_transfers(
        &self,
        filter: &TransferFilter,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        for (column, value) in [
            ("mchid", filter.mchid.as_deref()),
            ("appid", filter.appid.as_deref()),
            ("openid", filter.openid.as_deref()),
            ("status", filter.status.as_ref().map(TransferState::as_str)),
        ] {
            if let Some(value) = value {
                values.push(value);
                conditions.push(format!("{column} = ${}", values.len()));
            }
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM transfers {filter_sql} ORDER BY created_at DESC, out_bill_no LIMIT ${}",
            values.len() + 1
        );
        let mut query = sqlx::query_as::<_, TransferRow>(sqlx::AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        let rows = query
            .bind(i64::from(filter.limit.clamp(1, 500)))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.into_iter().map(Transfer::try_from).collect()
    }

    /// Applies what WeChat said about a transfer: forward only, by compare-and-set; a final
    /// state releases the reservations (`FAIL`, `CANCELLED`) and writes its webhook, all in one
    /// transaction. `next_check_at` is when the job looks again (if not final).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn apply_transfer_report(
        &self,
        out_bill_no: &str,
        report: &TransferReport,
        next_check_at: i64,
    ) -> Result<TransferApplied, StoreError> {
        for _ in 0..5 {
            let now = now_ms();
            let mut tx = self.begin_write().await?;
            let Some(current) = transfer_in(&mut tx, out_bill_no).await? else {
                tx.rollback().await?;
                return Ok(TransferApplied::NotFound);
            };
            let forward = state_rank(&report.state) > state_rank(&current.status);
            let new_package = report.state == TransferState::WaitUserConfirm
                && current.status == TransferState::WaitUserConfirm
                && report.package_info.is_some()
                && current.package_info.is_none();
            if current.status.is_final() || !(forward || new_package) {
                tx.rollback().await?;
                return Ok(TransferApplied::Unchanged(current));
            }
            let is_final = report.state.is_final();
            let package = if report.state == TransferState::WaitUserConfirm {
                report.package_info.clone().or(current.package_info.clone())
            } else {
                None
            };
            let updated = sqlx::query(
                "UPDATE transfers SET status = $3, transfer_bill_no = COALESCE($4, transfer_bill_no), \
                 package_info = $5, fail_reason = COALESCE($6, fail_reason), finished_at = $7, \
                 next_check_at = $8, lease_owner = NULL, lease_until = NULL, last_error = NULL, \
                 updated_at = $9, version = version + 1 WHERE out_bill_no = $1 AND version = $2",
            )
            .bind(out_bill_no)
            .bind(current.version)
            .bind(report.state.as_str())
            .bind(report.transfer_bill_no.as_deref())
            .bind(package.as_deref())
            .bind(report.fail_reason.as_deref())
            .bind(is_final.then_some(now))
            .bind(next_check_at)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                tx.rollback().await?;
                continue;
            }
            let mut detail = json!({ "via": report.via, "state": report.state.as_str() });
            if let Some(reason) = &report.fail_reason {
                detail["fail_reason"] = json!(reason);
            }
            if let Some(no) = &report.transfer_bill_no {
                detail["transfer_bill_no"] = json!(no);
            }
            insert_transfer_event(&mut tx, out_bill_no, "state", &detail, now).await?;
            let after = transfer_in(&mut tx, out_bill_no)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a transfer vanished".into()))?;
            if matches!(report.state, TransferState::Fail | TransferState::Cancelled) {
                release(&mut tx, &after).await?;
            }
            if is_final {
                let kind = match report.state {
                    TransferState::Success => OutboxEventType::TransferSucceeded,
                    TransferState::Fail => OutboxEventType::TransferFailed,
                    _ => OutboxEventType::TransferCancelled,
                };
                NewOutboxEvent::transfer(kind, &after)?
                    .insert(&mut tx, now)
                    .await?;
            }
            tx.commit().await?;
            if is_final {
                self.notices.outbox_written();
            }
            return Ok(TransferApplied::Applied(after));
        }
        Err(StoreError::Corrupt(format!(
            "transfer {out_bill_no} kept changing under the update"
        )))
    }

    /// Records a failed send or check: counted, the error kept, the lease given up, the next
    /// look at `next_check_at`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_attempt_failed(
        &self,
        out_bill_no: &str,
        error: &str,
        next_check_at: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE transfers SET attempts = attempts + 1, last_error = $2, next_check_at = $3, \
             lease_owner = NULL, lease_until = NULL, updated_at = $4, version = version + 1 \
             WHERE out_bill_no = $1 AND status NOT IN ('SUCCESS', 'FAIL', 'CANCELLED')",
        )
        .bind(out_bill_no)
        .bind(error)
        .bind(next_check_at)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            insert_transfer_event(
                &mut tx,
                out_bill_no,
                "failed_attempt",
                &json!({ "error": error }),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that a transfer was checked and is unchanged; the next look at `next_check_at`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_checked(
        &self,
        out_bill_no: &str,
        next_check_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE transfers SET next_check_at = $2, lease_owner = NULL, lease_until = NULL, \
             updated_at = $3 WHERE out_bill_no = $1",
        )
        .bind(out_bill_no)
        .bind(next_check_at)
        .bind(now_ms())
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(())
    }

    /// Adds a line to a transfer's timeline.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn add_transfer_event(
        &self,
        out_bill_no: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        insert_transfer_event(
            &mut *self.reader().await?,
            out_bill_no,
            kind,
            detail,
            now_ms(),
        )
        .await
    }

    /// Takes up to `limit` transfers that are not final and due (`next_check_at` passed, no
    /// live lease), leased to `owner` for `lease_ms`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn lease_due_transfers(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Transfer>, StoreError> {
        let lock = self.backend().dialect().claim_lock;
        let condition = "status NOT IN ('SUCCESS', 'FAIL', 'CANCELLED') AND next_check_at <= $3 \
                         AND (lease_until IS NULL OR lease_until < $3)";
        let sql = format!(
            "UPDATE transfers SET lease_owner = $1, lease_until = $2 WHERE out_bill_no IN \
             (SELECT out_bill_no FROM transfers WHERE {condition} ORDER BY next_check_at LIMIT $4{lock}) \
             AND {condition} RETURNING {COLUMNS}"
        );
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let rows: Vec<TransferRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.into_iter().map(Transfer::try_from).collect()
    }

    /// A merchant's own limits, if set.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_limits(&self, mchid: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT daily_budget_fen, user_daily_cap_fen FROM transfer_limits WHERE mchid = $1",
        )
        .bind(mchid)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(|(b, c)| {
            Ok((
                fen_from_db("daily_budget_fen", b)?,
                fen_from_db("user_daily_cap_fen", c)?,
            ))
        })
        .transpose()
    }

    /// Sets a merchant's limits.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn set_transfer_limits(
        &self,
        mchid: &str,
        daily_budget_fen: u64,
        user_daily_cap_fen: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO transfer_limits (mchid, daily_budget_fen, user_daily_cap_fen, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (mchid) DO UPDATE SET \
             daily_budget_fen = excluded.daily_budget_fen, \
             user_daily_cap_fen = excluded.user_daily_cap_fen, updated_at = excluded.updated_at",
        )
        .bind(mchid)
        .bind(fen_to_db(daily_budget_fen)?)
        .bind(fen_to_db(user_daily_cap_fen)?)
        .bind(now_ms())
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(())
    }

    /// What a merchant has reserved on a day, in fen.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_budget_used(&self, mchid: &str, day: &str) -> Result<u64, StoreError> {
        used(&mut *self.reader().await?, BUDGET_USED, &[mchid, day]).await
    }

    /// What a user has reserved on a day, in fen.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_user_used(
        &self,
        appid: &str,
        openid: &str,
        day: &str,
    ) -> Result<u64, StoreError> {
        used(&mut *self.reader().await?, USER_USED, &[appid, openid, day]).await
    }
}

/// Gives a failed or cancelled transfer's amount back to its day's budget and cap.
async fn release(conn: &mut AnyConnection, t: &Transfer) -> Result<(), StoreError> {
    let amount = fen_to_db(t.amount_fen)?;
    sqlx::query(
        "UPDATE transfer_budget_days SET reserved_fen = reserved_fen - $3 \
         WHERE mchid = $1 AND day = $2 AND reserved_fen >= $3",
    )
    .bind(&t.mchid)
    .bind(&t.day)
    .bind(amount)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE transfer_user_days SET reserved_fen = reserved_fen - $4 \
         WHERE appid = $1 AND openid = $2 AND day = $3 AND reserved_fen >= $4",
    )
    .bind(&t.appid)
    .bind(&t.openid)
    .bind(&t.day)
    .bind(amount)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Whether `openid` is a user who logged in to mini program `appid` here.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn is_user_of(&self, appid: &str, openid: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM users WHERE openid = $1 AND appid = $2")
                .bind(openid)
                .bind(appid)
                .fetch_optional(&mut *self.reader().await?)
                .await?;
        Ok(found.is_some())
    }

    /// When the transfer began waiting for its user (its first `WAIT_USER_CONFIRM` line).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn transfer_waiting_since(
        &self,
        out_bill_no: &str,
    ) -> Result<Option<i64>, StoreError> {
        let since: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(created_at) FROM transfer_events WHERE out_bill_no = $1 AND kind = 'state' \
             AND detail LIKE '%\"state\":\"WAIT_USER_CONFIRM\"%'",
        )
        .bind(out_bill_no)
        .fetch_one(&mut *self.reader().await?)
        .await?;
        Ok(since)
    }
}
