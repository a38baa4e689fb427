//! What the background jobs take from the database: orders to query or close, and the leases of
//! the singleton jobs (daily bill, certificate refresh).
//!
//! Orders are claimed through `last_queried_at`: the `UPDATE` sets it only where it is older than
//! the interval, so each order is taken by one instance once per interval (on PostgreSQL the
//! candidates are locked with `FOR UPDATE SKIP LOCKED` and the condition checked again under the
//! row lock).

use serde::Serialize;

use super::orders::{Order, OrderRow, order_columns};
use super::refunds::truncate;
use super::{Backend, Store, StoreError, now_ms};

/// The state of a singleton job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobState {
    /// The job's name.
    pub name: String,
    /// Who holds it (or last held it).
    pub lease_owner: Option<String>,
    /// Until when (Unix ms): the end of a run in progress, or the earliest next run.
    pub lease_until: Option<i64>,
    /// When it last finished.
    pub last_run_at: Option<i64>,
    /// How that went.
    pub last_outcome: Option<String>,
}

type JobRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// `$1` is now, the last parameter the limit.
fn claim_orders_sql(backend: Backend, condition: &str, limit_param: usize) -> String {
    let lock = backend.dialect().claim_lock;
    format!(
        "UPDATE orders SET last_queried_at = $1 WHERE out_trade_no IN \
         (SELECT out_trade_no FROM orders WHERE {condition} ORDER BY created_at LIMIT ${limit_param}{lock}) \
         AND {condition} RETURNING {}",
        order_columns!()
    )
}

impl Store {
    /// Claims up to `limit` unpaid orders created before `created_before` and not past their
    /// expiry, that nobody asked WeChat about since `queried_before`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn claim_unpaid_orders(
        &self,
        created_before: i64,
        queried_before: i64,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = claim_orders_sql(
            self.backend,
            concat!(
                "status = ",
                order_status_sql!(NotPay),
                " AND created_at <= $2 AND expires_at > $1 \
             AND (last_queried_at IS NULL OR last_queried_at <= $3)"
            ),
            4,
        );
        self.claim_orders(&sql, &[created_before, queried_before], limit)
            .await
    }

    /// Claims up to `limit` unpaid orders (`NOTPAY`, `PAYERROR`) past their expiry that nobody
    /// tried to close since `tried_before`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn claim_expired_orders(
        &self,
        tried_before: i64,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = claim_orders_sql(
            self.backend,
            concat!(
                "status IN (",
                order_status_sql!(NotPay, PayError),
                ") AND expires_at <= $1 \
             AND (last_queried_at IS NULL OR last_queried_at <= $2)"
            ),
            3,
        );
        self.claim_orders(&sql, &[tried_before], limit).await
    }

    async fn claim_orders(
        &self,
        sql: &str,
        params: &[i64],
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut query =
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql.to_owned())).bind(now_ms());
        for p in params {
            query = query.bind(*p);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// Takes the singleton job `name` for `lease_ms` if nobody holds it and it is due (its
    /// `lease_until` passed). Returns whether this caller has it now.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn claim_job(
        &self,
        name: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO job_leases (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "UPDATE job_leases SET lease_owner = $2, lease_until = $3 \
             WHERE name = $1 AND (lease_until IS NULL OR lease_until <= $4)",
        )
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the end of a run of a job this caller holds, and when it is next due.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn finish_job(
        &self,
        name: &str,
        owner: &str,
        outcome: &str,
        next_due_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE job_leases SET lease_until = $3, last_run_at = $4, last_outcome = $5 \
             WHERE name = $1 AND lease_owner = $2",
        )
        .bind(name)
        .bind(owner)
        .bind(next_due_at)
        .bind(now_ms())
        .bind(truncate(outcome, 500))
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(())
    }

    /// The singleton jobs, by name.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn job_states(&self) -> Result<Vec<JobState>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(
            "SELECT name, lease_owner, lease_until, last_run_at, last_outcome FROM job_leases ORDER BY name",
        )
        .fetch_all(&mut *self.reader().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, lease_owner, lease_until, last_run_at, last_outcome)| JobState {
                    name,
                    lease_owner,
                    lease_until,
                    last_run_at,
                    last_outcome,
                },
            )
            .collect())
    }
}
