//! The refund jobs: refunds a crash or a failure left unaccepted are looked up at WeChat and
//! sent again only when WeChat does not have them; refunds still `PROCESSING` are followed to
//! their final state. The rules are in [`crate::core::refunds`]; the calls in
//! [`crate::wechat`].

use std::sync::Arc;

use super::{ExecutionOutcome, JobError, Jobs, ms};
use crate::core::refunds::{RefundReport, apply_refund_report, submit};
use crate::store::{Refund, RefundStatus, now_ms};
use crate::wechat::WeChat;

/// The clients of the refund's order's merchant; `None` (logged, the refund left for a person)
/// when that merchant is no longer registered.
async fn clients_of(jobs: &Jobs, refund: &Refund) -> Result<Option<Arc<WeChat>>, JobError> {
    let Some(order) = jobs.store.order(&refund.out_trade_no).await? else {
        tracing::error!(out_refund_no = %refund.out_refund_no, "the order of a refund is missing");
        return Ok(None);
    };
    match jobs.registry.for_order(&order) {
        Ok(w) => Ok(Some(w)),
        Err(err) => {
            tracing::error!(out_refund_no = %refund.out_refund_no, error = %err, "a refund cannot be followed");
            Ok(None)
        }
    }
}

/// Resolves one batch of refunds that WeChat never acknowledged: asks WeChat for each first
/// (the answer may have been lost after WeChat created it) and sends it again, with the same
/// `out_refund_no`, only when WeChat does not have it.
///
/// # Errors
/// [`JobError::Store`].
pub async fn submit_unaccepted(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let o = &jobs.options;
    let refunds = jobs
        .store
        .lease_unsubmitted_refunds(
            &o.owner,
            ms(o.lease),
            now_ms() - ms(o.refund_retry_every),
            o.batch_size,
        )
        .await?;
    if refunds.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    for refund in &refunds {
        let Some(wechat) = clients_of(jobs, refund).await? else {
            continue;
        };
        match wechat.query_refund(refund).await {
            Ok(report @ RefundReport::Found { .. }) => {
                tracing::info!(out_refund_no = %refund.out_refund_no, "WeChat already had the refund");
                apply_refund_report(&jobs.store, refund, &report, "query").await?;
            }
            Ok(RefundReport::NotFound) => {
                submit(&jobs.store, &jobs.registry, refund, "resent").await?;
            }
            Err(err) => {
                tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "refund query failed");
                jobs.store
                    .refund_attempt_failed(&refund.out_refund_no, &err.to_string())
                    .await?;
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}

/// Asks WeChat about one batch of accepted refunds still `PROCESSING` and applies their final
/// state (`refund.succeeded` / `refund.failed` webhooks).
///
/// # Errors
/// [`JobError::Store`].
pub async fn follow_processing(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let o = &jobs.options;
    let refunds = jobs
        .store
        .lease_processing_refunds(
            &o.owner,
            ms(o.lease),
            now_ms() - ms(o.refund_check_every),
            o.batch_size,
        )
        .await?;
    if refunds.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    for refund in &refunds {
        let Some(wechat) = clients_of(jobs, refund).await? else {
            continue;
        };
        match wechat.query_refund(refund).await {
            Ok(RefundReport::Found {
                status: RefundStatus::Processing,
                ..
            }) => {
                jobs.store
                    .refund_checked(&refund.out_refund_no, &o.owner)
                    .await?;
            }
            Ok(report @ RefundReport::Found { .. }) => {
                apply_refund_report(&jobs.store, refund, &report, "query").await?;
            }
            Ok(RefundReport::NotFound) => {
                // Accepted earlier, unknown now: a different merchant or a wiped simulator. Keep
                // the refund as it is and say so; a person must look.
                tracing::error!(out_refund_no = %refund.out_refund_no, "WeChat no longer knows an accepted refund");
                jobs.store
                    .refund_attempt_failed(
                        &refund.out_refund_no,
                        "WeChat does not know this refund",
                    )
                    .await?;
            }
            Err(err) => {
                tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "refund query failed");
                jobs.store
                    .refund_attempt_failed(&refund.out_refund_no, &err.to_string())
                    .await?;
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}
