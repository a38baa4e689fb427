//! The transfer job: transfers WeChat has not answered are sent again unchanged (same
//! `out_bill_no`, same encrypted name), the others are asked about until final, and those their
//! user left unconfirmed past the window are cancelled. The rules are in
//! [`crate::core::payouts`].

use super::{ExecutionOutcome, JobError, Jobs, ms};
use crate::core::payouts::{self, PayoutError};

/// Follows one batch of due transfers.
///
/// # Errors
/// [`JobError::Store`].
pub async fn follow_due(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let o = &jobs.options;
    let due = jobs
        .store
        .lease_due_transfers(&o.owner, ms(o.lease), o.batch_size)
        .await?;
    if due.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let ttl_ms = i64::try_from(jobs.settings.transfer_confirm_ttl_secs)
        .unwrap_or(86_400)
        .saturating_mul(1000);
    for transfer in &due {
        match payouts::follow(&jobs.store, &jobs.registry, ttl_ms, transfer).await {
            Ok(_) => {}
            Err(PayoutError::Store(e)) => return Err(e.into()),
            Err(err) => {
                tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %err, "following a transfer failed");
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}
