//! Platform certificate refresh (v3 certificate and migrating modes).
//!
//! The certificates live in each instance's memory (the verifier), so every instance refreshes
//! its own; this is not a cluster-wide job. In public-key mode there is nothing to refresh.

use std::sync::PoisonError;
use std::time::Instant;

use super::{ExecutionOutcome, JobError, Jobs};

/// Downloads the platform certificates when the last refresh is older than
/// `certificate_refresh_every` (or never happened), adding new ones to the verifier.
///
/// # Errors
/// [`JobError::WeChat`] when the download or its verification fails (retried at the next
/// interval).
pub async fn refresh(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let merchants: Vec<_> = jobs
        .registry
        .merchants()
        .into_iter()
        .filter(|m| m.v3.verifier().uses_certificates())
        .collect();
    if merchants.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    {
        let mut last = jobs
            .certificates_refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < jobs.options.certificate_refresh_every) {
            return Ok(ExecutionOutcome::EmptyQueue);
        }
        // Counted as an attempt even if it fails: the next one waits an interval.
        *last = Some(Instant::now());
    }
    let mut failed = None;
    for merchant in &merchants {
        match merchant.v3.refresh_certificates().await {
            Ok(added) => {
                tracing::info!(mchid = %merchant.mchid, added, "platform certificates refreshed");
            }
            Err(err) => {
                tracing::warn!(mchid = %merchant.mchid, error = %err, "platform certificate refresh failed");
                failed = Some(err);
            }
        }
    }
    match failed {
        // Every merchant was tried; the next attempt is an interval away.
        Some(err) => Err(err.into()),
        None => Ok(ExecutionOutcome::TaskCompleted),
    }
}
