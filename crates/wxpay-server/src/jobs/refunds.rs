//! Refunds and WeChat: sending a committed refund, asking about it, applying the answer.
//!
//! A refund is always sent with its own `out_refund_no`, which WeChat treats as the same refund
//! however often it arrives. When an answer is lost, the refund is first looked up at WeChat and
//! only sent again when WeChat does not have it: never a second refund.

use serde_json::json;
use wxpay::v2::models::{
    OrderId, RefundFields as V2RefundFields, RefundQueryId, RefundQueryRequest,
    RefundRequest as V2RefundRequest,
};
use wxpay::v3::models::{
    RefundFields as V3RefundFields, RefundRequest as V3RefundRequest, RefundTarget,
};
use wxpay::{ApiError as WxApiError, Error, Fen, OutRefundNo, OutTradeNo};

use super::{ExecutionOutcome, JobError, Jobs, ms};
use crate::app::AppState;
use crate::store::{ApiVersion, Order, Refund, RefundResult, RefundStatus, now_ms};
use crate::wechat::unix_ms;

/// What WeChat says about a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundReport {
    /// WeChat does not have it.
    NotFound,
    /// WeChat has it.
    Found {
        /// WeChat's refund id.
        refund_id: String,
        /// Its state.
        status: RefundStatus,
        /// When it succeeded (Unix ms).
        success_at: Option<i64>,
        /// Its amount in fen.
        amount_fen: u64,
    },
}

/// What sending a refund came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// WeChat has it (the refund as stored afterwards; its state may already be final).
    Accepted(Refund),
    /// Sending failed in a way that may be retried; the job sends it again.
    Retrying(Refund),
    /// WeChat refused it outright: closed, its amount released.
    Rejected(Refund),
}

impl SubmitOutcome {
    /// The refund.
    #[must_use]
    pub fn refund(&self) -> &Refund {
        match self {
            SubmitOutcome::Accepted(r)
            | SubmitOutcome::Retrying(r)
            | SubmitOutcome::Rejected(r) => r,
        }
    }
}

fn unknown_status(name: &str) -> Error {
    Error::Decode(wxpay::DecodeError::invalid(
        "refund status",
        format!("unknown status {name:?}"),
    ))
}

/// Sends the refund to WeChat with the order's API (v2 over mutual TLS).
///
/// # Errors
/// [`Error`] from WeChat or the transport.
pub async fn send_refund(
    state: &AppState,
    order: &Order,
    refund: &Refund,
) -> Result<RefundReport, Error> {
    let wechat = &state.wechat;
    match refund.api_version {
        ApiVersion::V3 => {
            let mut request = V3RefundRequest::new(V3RefundFields {
                target: RefundTarget::OutTradeNo(OutTradeNo::try_from(&order.out_trade_no)?),
                out_refund_no: OutRefundNo::try_from(&refund.out_refund_no)?,
                refund: Fen::new(refund.amount_fen),
                total: Fen::new(order.amount_fen),
            });
            request.reason.clone_from(&refund.reason);
            request.notify_url = Some(wechat.refund_notify_url(ApiVersion::V3));
            let answer = wechat.v3.refund(&request).await?;
            Ok(RefundReport::Found {
                status: RefundStatus::from_wechat(answer.status.as_str())
                    .ok_or_else(|| unknown_status(answer.status.as_str()))?,
                success_at: answer.success_time.map(unix_ms),
                amount_fen: answer.amount.refund,
                refund_id: answer.refund_id,
            })
        }
        ApiVersion::V2 => {
            let mut request = V2RefundRequest::new(V2RefundFields {
                id: OrderId::OutTradeNo(OutTradeNo::try_from(&order.out_trade_no)?),
                out_refund_no: OutRefundNo::try_from(&refund.out_refund_no)?,
                total_fee: Fen::new(order.amount_fen),
                refund_fee: Fen::new(refund.amount_fen),
            });
            request.refund_desc.clone_from(&refund.reason);
            request.notify_url = Some(wechat.refund_notify_url(ApiVersion::V2));
            let answer = wechat.v2.refund(&request).await?;
            // v2 answers "accepted"; the state comes by notification or query.
            Ok(RefundReport::Found {
                refund_id: answer.refund_id,
                status: RefundStatus::Processing,
                success_at: None,
                amount_fen: answer.refund_fee.get(),
            })
        }
    }
}

/// Asks WeChat about a refund, with the refund's API.
///
/// # Errors
/// [`Error`] from WeChat or the transport (an unknown refund is [`RefundReport::NotFound`]).
pub async fn query_refund(state: &AppState, refund: &Refund) -> Result<RefundReport, Error> {
    let wechat = &state.wechat;
    let out_refund_no = OutRefundNo::try_from(&refund.out_refund_no)?;
    match refund.api_version {
        ApiVersion::V3 => match wechat.v3.query_refund(&out_refund_no).await {
            Ok(r) => Ok(RefundReport::Found {
                status: RefundStatus::from_wechat(r.status.as_str())
                    .ok_or_else(|| unknown_status(r.status.as_str()))?,
                success_at: r.success_time.map(unix_ms),
                amount_fen: r.amount.refund,
                refund_id: r.refund_id,
            }),
            Err(Error::Api(WxApiError::V3 { code, .. }))
                if matches!(code.as_str(), "RESOURCE_NOT_EXISTS" | "ORDER_NOT_EXIST") =>
            {
                Ok(RefundReport::NotFound)
            }
            Err(e) => Err(e),
        },
        ApiVersion::V2 => {
            let request = RefundQueryRequest::new(RefundQueryId::OutRefundNo(out_refund_no));
            match wechat.v2.refund_query(&request).await {
                Ok(answer) => {
                    let Some(r) = answer
                        .refunds
                        .into_iter()
                        .find(|r| r.out_refund_no == refund.out_refund_no)
                    else {
                        return Ok(RefundReport::NotFound);
                    };
                    Ok(RefundReport::Found {
                        status: RefundStatus::from_wechat(r.refund_status.as_str())
                            .ok_or_else(|| unknown_status(r.refund_status.as_str()))?,
                        success_at: r.refund_success_time.map(|t| t.unix_timestamp() * 1000),
                        amount_fen: r.refund_fee.get(),
                        refund_id: r.refund_id,
                    })
                }
                Err(Error::Api(WxApiError::V2Business { err_code, .. }))
                    if err_code.as_str() == "REFUNDNOTEXIST" =>
                {
                    Ok(RefundReport::NotFound)
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Whether WeChat refused the refund for good (it was not created, and sending it again would be
/// refused again). Transport failures, signature or decoding failures of an answer (the refund
/// may exist), system errors, rate limits, an empty balance and our own signing errors are not.
#[must_use]
pub fn is_definitive_refusal(err: &Error) -> bool {
    match err {
        // Refused before anything was sent.
        Error::InvalidRequest(_) => true,
        Error::Api(WxApiError::V3 { status, code, .. }) => {
            (400..500).contains(status)
                && *status != 429
                && !matches!(
                    code.as_str(),
                    "SYSTEM_ERROR"
                        | "FREQUENCY_LIMITED"
                        | "RATELIMIT_EXCEEDED"
                        | "NOT_ENOUGH"
                        | "SIGN_ERROR"
                        | "NO_AUTH"
                )
        }
        Error::Api(WxApiError::V2Business { err_code, .. }) => !matches!(
            err_code.as_str(),
            "SYSTEMERROR"
                | "BIZERR_NEED_RETRY"
                | "NOTENOUGH"
                | "FREQUENCY_LIMITED"
                | "INVALID_REQ_TOO_MUCH"
                | "SIGNERROR"
        ),
        _ => false,
    }
}

/// Records what WeChat reported about a refund: accepted (once), and its state when final or
/// abnormal, through the same path as the refund notifications. Returns the refund as stored.
///
/// # Errors
/// [`JobError::Store`].
pub async fn apply_report(
    state: &AppState,
    refund: &Refund,
    report: &RefundReport,
    via: &str,
) -> Result<Refund, JobError> {
    let RefundReport::Found {
        refund_id,
        status,
        success_at,
        amount_fen,
    } = report
    else {
        return Ok(refund.clone());
    };
    if *amount_fen != refund.amount_fen {
        let error = format!(
            "WeChat reports {amount_fen} fen for this refund, not {}",
            refund.amount_fen
        );
        tracing::error!(out_refund_no = %refund.out_refund_no, %error, "refund does not match WeChat's");
        state
            .store
            .refund_attempt_failed(&refund.out_refund_no, &error)
            .await?;
        return Ok(state
            .store
            .refund(&refund.out_refund_no)
            .await?
            .unwrap_or_else(|| refund.clone()));
    }
    let mut current = if refund.submitted_at.is_none() {
        state
            .store
            .refund_accepted(&refund.out_refund_no, Some(refund_id))
            .await?
            .unwrap_or_else(|| refund.clone())
    } else {
        refund.clone()
    };
    if *status != RefundStatus::Processing && *status != current.status {
        let result = RefundResult {
            out_refund_no: refund.out_refund_no.clone(),
            refund_id: refund_id.clone(),
            status: *status,
            success_at: *success_at,
            dedupe_key: format!("query:{refund_id}:{}", status.as_str()),
            detail: json!({ "via": via }),
        };
        state.store.apply_refund_result(&result).await?;
        if let Some(after) = state.store.refund(&refund.out_refund_no).await? {
            current = after;
        }
    }
    Ok(current)
}

/// Sends a committed refund and records the outcome: accepted, to be retried, or refused for
/// good (closed, amount released).
///
/// # Errors
/// [`JobError::Store`]; WeChat's failures are outcomes, not errors.
pub async fn submit(
    state: &AppState,
    refund: &Refund,
    via: &str,
) -> Result<SubmitOutcome, JobError> {
    let Some(order) = state.store.order(&refund.out_trade_no).await? else {
        return Err(JobError::Other(format!(
            "refund {} names an unknown order",
            refund.out_refund_no
        )));
    };
    match send_refund(state, &order, refund).await {
        Ok(report) => Ok(SubmitOutcome::Accepted(
            apply_report(state, refund, &report, via).await?,
        )),
        Err(err) if is_definitive_refusal(&err) => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "WeChat refused the refund");
            let closed = state
                .store
                .refund_rejected(&refund.out_refund_no, &err.to_string())
                .await?;
            Ok(SubmitOutcome::Rejected(
                closed.unwrap_or_else(|| refund.clone()),
            ))
        }
        Err(err) => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "sending the refund failed; it will be resolved by query");
            state
                .store
                .refund_attempt_failed(&refund.out_refund_no, &err.to_string())
                .await?;
            let after = state.store.refund(&refund.out_refund_no).await?;
            Ok(SubmitOutcome::Retrying(
                after.unwrap_or_else(|| refund.clone()),
            ))
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
    let state = &jobs.state;
    let refunds = state
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
        match query_refund(state, refund).await {
            Ok(report @ RefundReport::Found { .. }) => {
                tracing::info!(out_refund_no = %refund.out_refund_no, "WeChat already had the refund");
                apply_report(state, refund, &report, "query").await?;
            }
            Ok(RefundReport::NotFound) => {
                submit(state, refund, "resent").await?;
            }
            Err(err) => {
                tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "refund query failed");
                state
                    .store
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
    let state = &jobs.state;
    let refunds = state
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
        match query_refund(state, refund).await {
            Ok(RefundReport::Found {
                status: RefundStatus::Processing,
                ..
            }) => {
                state
                    .store
                    .refund_checked(&refund.out_refund_no, &o.owner)
                    .await?;
            }
            Ok(report @ RefundReport::Found { .. }) => {
                apply_report(state, refund, &report, "query").await?;
            }
            Ok(RefundReport::NotFound) => {
                // Accepted earlier, unknown now: a different merchant or a wiped simulator. Keep
                // the refund as it is and say so; a person must look.
                tracing::error!(out_refund_no = %refund.out_refund_no, "WeChat no longer knows an accepted refund");
                state
                    .store
                    .refund_attempt_failed(
                        &refund.out_refund_no,
                        "WeChat does not know this refund",
                    )
                    .await?;
            }
            Err(err) => {
                tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "refund query failed");
                state
                    .store
                    .refund_attempt_failed(&refund.out_refund_no, &err.to_string())
                    .await?;
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}
