//! The daily bill job: after 10:00 GMT+8, yesterday's bill is reconciled once
//! ([`crate::core::reconciliation`]) and the report stored.

use time::OffsetDateTime;

use super::{ExecutionOutcome, JobError, Jobs, ms};
pub use crate::core::reconciliation::{
    CST, ReconciliationItem, compare, day_bounds, format_date, parse_date, today_cst,
};
use crate::core::reconciliation::{ReconcileError, reconcile};
use crate::store::now_ms;

/// After `bill_after_hour` GMT+8, reconciles yesterday's bill once (the report is stored per
/// date; one instance does it at a time).
///
/// # Errors
/// [`JobError`] when the download or the database fails (retried after `bill_retry_every`).
pub async fn daily_bill(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let now = OffsetDateTime::now_utc().to_offset(CST);
    if now.hour() < jobs.options.bill_after_hour {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let Some(yesterday) = now.date().previous_day() else {
        return Ok(ExecutionOutcome::EmptyQueue);
    };
    let store = &jobs.store;
    if store
        .reconciliation(&format_date(yesterday))
        .await?
        .is_some()
    {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let name = super::JobKind::DailyBill.as_str();
    let owner = &jobs.options.owner;
    if !store.claim_job(name, owner, ms(jobs.options.lease)).await? {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let retry_at = now_ms() + ms(jobs.options.bill_retry_every);
    // The reports are kept per date: the first merchant's bill (per-merchant reconciliation
    // comes with the registry's merchants).
    match reconcile(&jobs.store, &jobs.registry.default_app(), yesterday).await {
        Ok(r) => {
            let outcome = format!(
                "{}: {} matched, {} mismatched",
                r.bill_date, r.matched, r.mismatched
            );
            store.finish_job(name, owner, &outcome, now_ms()).await?;
            Ok(ExecutionOutcome::TaskCompleted)
        }
        Err(ReconcileError::BillNotReady(date)) => {
            store
                .finish_job(name, owner, &format!("{date}: not ready"), retry_at)
                .await?;
            Ok(ExecutionOutcome::EmptyQueue)
        }
        Err(err) => {
            store
                .finish_job(name, owner, &format!("failed: {err}"), retry_at)
                .await?;
            Err(err.into())
        }
    }
}
