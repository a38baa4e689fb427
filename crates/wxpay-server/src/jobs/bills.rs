//! The daily bill job: after 10:00 GMT+8, every merchant's bill of yesterday is reconciled once
//! ([`crate::core::reconciliation`]) and its report stored.

use time::OffsetDateTime;

use super::{ExecutionOutcome, JobError, Jobs, ms};
pub use crate::core::reconciliation::{
    CST, ReconciliationItem, compare, day_bounds, format_date, parse_date, today_cst,
};
use crate::core::reconciliation::{ReconcileError, reconcile};
use crate::store::now_ms;
use crate::wechat::WeChat;

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
    // Every merchant's own bill; the first merchant's job keeps the job's plain name.
    let first = jobs.registry.default_app().mchid.clone();
    let mut merchants = jobs.registry.merchants();
    merchants.sort_by(|a, b| a.mchid.cmp(&b.mchid));
    let mut outcome = ExecutionOutcome::EmptyQueue;
    let mut failed = None;
    for wechat in merchants {
        let name = if wechat.mchid == first {
            super::JobKind::DailyBill.as_str().to_owned()
        } else {
            format!("{}:{}", super::JobKind::DailyBill.as_str(), wechat.mchid)
        };
        match merchant_bill(jobs, &wechat, &name, yesterday).await {
            Ok(ExecutionOutcome::TaskCompleted) => outcome = ExecutionOutcome::TaskCompleted,
            Ok(ExecutionOutcome::EmptyQueue) => {}
            Err(err) => {
                tracing::warn!(mchid = %wechat.mchid, error = %err, "the daily bill failed");
                failed.get_or_insert(err);
            }
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(outcome),
    }
}

/// One merchant's bill of `day`, once (its report is stored per merchant and date; one
/// instance does it at a time).
async fn merchant_bill(
    jobs: &Jobs,
    wechat: &WeChat,
    name: &str,
    day: time::Date,
) -> Result<ExecutionOutcome, JobError> {
    let store = &jobs.store;
    if store
        .reconciliation(&wechat.mchid, &format_date(day))
        .await?
        .is_some()
    {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let owner = &jobs.options.owner;
    if !store.claim_job(name, owner, ms(jobs.options.lease)).await? {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let retry_at = now_ms() + ms(jobs.options.bill_retry_every);
    match reconcile(&jobs.store, wechat, day).await {
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
