//! The shipping-information job: paid virtual and pickup orders get their upload intent, and
//! pending uploads (those, and express orders whose first attempt failed or never finished)
//! are tried through [`crate::core::fulfilment::attempt_upload`], which asks WeChat first
//! whenever an earlier call may have reached it.

use super::{ExecutionOutcome, JobError, Jobs, ms};
use crate::core::fulfilment::{UploadOutcome, attempt_upload};

/// One batch: new intents for virtual and pickup orders, then the due uploads.
///
/// # Errors
/// [`JobError::Store`].
pub async fn upload_due(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let o = &jobs.options;
    let enqueued = jobs.store.enqueue_automatic_uploads(o.batch_size).await?;
    let uploads = jobs
        .store
        .lease_shipping_uploads(&o.owner, ms(o.lease), o.batch_size)
        .await?;
    if uploads.is_empty() && enqueued == 0 {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    for upload in &uploads {
        match attempt_upload(
            &jobs.store,
            &jobs.registry,
            upload,
            &o.owner,
            o.shipping_retry,
        )
        .await
        {
            Ok(UploadOutcome::Retrying(error)) => {
                tracing::warn!(out_trade_no = %upload.out_trade_no, error = %error, "shipping upload failed; retrying later");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(out_trade_no = %upload.out_trade_no, error = %err, "shipping upload");
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}
