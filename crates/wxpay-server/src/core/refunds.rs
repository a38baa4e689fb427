//! Refunds: created with their amount reserved on the order, submitted to WeChat with their
//! own `out_refund_no` (which WeChat treats as the same refund however often it arrives), and
//! finished by a result: a notification, or the answer of a query. When an answer is lost, the
//! refund is looked up at WeChat first and sent again only when WeChat does not have it: never
//! a second refund.

use serde_json::json;

use crate::registry::Registry;
use crate::store::{
    EventKind, NewRefund, Order, Refund, RefundCreation, RefundResult, RefundStatus,
    RefundTransition, Store, StoreError,
};
pub use crate::wechat::RefundReport;
use crate::wechat::is_definitive_refusal;

/// How long a refund created by a person is reserved for that request's own sending (the jobs
/// leave it alone meanwhile).
pub const REFUND_SEND_LEASE_MS: i64 = 60_000;

/// Why a refund was not created or a result not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefundError {
    /// The request is not acceptable (amount, reason, number).
    #[error("{0}")]
    Invalid(String),
    /// No such order.
    #[error("no such order")]
    OrderNotFound,
    /// No such refund (not yet, or not ours).
    #[error("unknown out_refund_no {0}")]
    UnknownRefund(String),
    /// The order is not paid.
    #[error("order {} is {} and cannot be refunded", .0.out_trade_no, .0.status)]
    NotPaid(Box<Order>),
    /// More than what remains refundable.
    #[error("{amount_fen} fen exceeds what order {} can still refund ({refundable_fen} fen of {})", order.out_trade_no, order.amount_fen)]
    ExceedsRefundable {
        /// The order.
        order: Box<Order>,
        /// What was asked.
        amount_fen: u64,
        /// What remains.
        refundable_fen: u64,
    },
    /// The number belongs to another refund.
    #[error("this out_refund_no belongs to another refund")]
    NumberTaken,
    /// A result does not match the refund; recorded in the order's timeline.
    #[error("{0}")]
    Mismatch(String),
    /// The refund names an order that does not exist.
    #[error("refund {0} names an unknown order")]
    Orphan(String),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refund to create.
#[derive(Clone, Debug)]
pub struct RefundRequest {
    /// The order.
    pub out_trade_no: String,
    /// In fen.
    pub amount_fen: u64,
    /// Shown to the payer (at most 80 characters).
    pub reason: Option<String>,
    /// The merchant's own number; one is made up otherwise.
    pub out_refund_no: Option<String>,
}

/// What creating a refund came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// New, and sent to WeChat.
    Submitted(SubmitOutcome),
    /// A repeat of a request already made (same number, order and amount).
    Existing(Refund),
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

/// A new refund number: `RF`, the time and 12 random letters and digits.
#[must_use]
pub fn new_out_refund_no() -> String {
    super::new_merchant_number("RF")
}

/// Creates a refund (its amount reserved on the order, in one transaction) and sends it.
///
/// # Errors
/// [`RefundError`]; WeChat's failures are outcomes ([`SubmitOutcome`]), not errors.
pub async fn create(
    store: &Store,
    registry: &Registry,
    request: RefundRequest,
    via: &str,
) -> Result<Created, RefundError> {
    if request.amount_fen == 0 || request.amount_fen > super::orders::MAX_ORDER_FEN {
        return Err(RefundError::Invalid("amount_fen must be at least 1".into()));
    }
    let reason = request
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(r) = reason
        && (r.chars().count() > 80 || r.chars().any(char::is_control))
    {
        return Err(RefundError::Invalid(
            "reason must be at most 80 characters without control characters".into(),
        ));
    }
    let out_refund_no = match request
        .out_refund_no
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(n) => {
            wxpay::OutRefundNo::try_from(n).map_err(|_| {
                RefundError::Invalid(
                    "out_refund_no must be 1 to 64 of 0-9 A-Z a-z _ - | * @".into(),
                )
            })?;
            n.to_owned()
        }
        None => new_out_refund_no(),
    };
    let creation = store
        .create_refund(&NewRefund {
            out_trade_no: request.out_trade_no,
            out_refund_no,
            amount_fen: request.amount_fen,
            reason: reason.map(str::to_owned),
            lease_owner: format!("{via}-{}", wxpay::nonce::random_string(12)),
            lease_ms: REFUND_SEND_LEASE_MS,
        })
        .await?;
    let refund = match creation {
        RefundCreation::Created(r) => r,
        RefundCreation::Existing(r) => return Ok(Created::Existing(r)),
        RefundCreation::NumberTaken(_) => return Err(RefundError::NumberTaken),
        RefundCreation::OrderNotFound => return Err(RefundError::OrderNotFound),
        RefundCreation::NotPaid(o) => return Err(RefundError::NotPaid(Box::new(o))),
        RefundCreation::ExceedsRefundable {
            order,
            refundable_fen,
        } => {
            return Err(RefundError::ExceedsRefundable {
                order: Box::new(order),
                amount_fen: request.amount_fen,
                refundable_fen,
            });
        }
    };
    Ok(Created::Submitted(
        submit(store, registry, &refund, via).await?,
    ))
}

/// Sends a committed refund with the clients of its order's merchant and records the outcome:
/// accepted, to be retried, or refused for good (closed, amount released).
///
/// # Errors
/// [`RefundError::Store`], [`RefundError::Orphan`]; WeChat's failures are outcomes.
pub async fn submit(
    store: &Store,
    registry: &Registry,
    refund: &Refund,
    via: &str,
) -> Result<SubmitOutcome, RefundError> {
    let Some(order) = store.order(&refund.out_trade_no).await? else {
        return Err(RefundError::Orphan(refund.out_refund_no.clone()));
    };
    let wechat = match registry.for_order(&order) {
        Ok(wechat) => wechat,
        Err(err) => {
            // The order's merchant is not registered here (any more): kept for the jobs, like
            // a failed send, until it is.
            tracing::error!(out_refund_no = %refund.out_refund_no, error = %err, "the refund cannot be sent");
            store
                .refund_attempt_failed(&refund.out_refund_no, &err.to_string())
                .await?;
            let after = store.refund(&refund.out_refund_no).await?;
            return Ok(SubmitOutcome::Retrying(
                after.unwrap_or_else(|| refund.clone()),
            ));
        }
    };
    match wechat.refund(&order, refund).await {
        Ok(report) => Ok(SubmitOutcome::Accepted(
            apply_refund_report(store, refund, &report, via).await?,
        )),
        Err(err) if is_definitive_refusal(&err) => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "WeChat refused the refund");
            let closed = store
                .refund_rejected(&refund.out_refund_no, &err.to_string())
                .await?;
            Ok(SubmitOutcome::Rejected(
                closed.unwrap_or_else(|| refund.clone()),
            ))
        }
        Err(err) => {
            tracing::warn!(out_refund_no = %refund.out_refund_no, error = %err, "sending the refund failed; it will be resolved by query");
            store
                .refund_attempt_failed(&refund.out_refund_no, &err.to_string())
                .await?;
            let after = store.refund(&refund.out_refund_no).await?;
            Ok(SubmitOutcome::Retrying(
                after.unwrap_or_else(|| refund.clone()),
            ))
        }
    }
}

/// Records what WeChat answered about a refund (to a submission or a query): accepted (once),
/// and its state when final or abnormal, through the same transition as the refund
/// notifications. Returns the refund as stored.
///
/// # Errors
/// The database.
pub async fn apply_refund_report(
    store: &Store,
    refund: &Refund,
    report: &RefundReport,
    via: &str,
) -> Result<Refund, StoreError> {
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
        store
            .refund_attempt_failed(&refund.out_refund_no, &error)
            .await?;
        return Ok(store
            .refund(&refund.out_refund_no)
            .await?
            .unwrap_or_else(|| refund.clone()));
    }
    let mut current = if refund.submitted_at.is_none() {
        store
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
        store.apply_refund_result(&result).await?;
        if let Some(after) = store.refund(&refund.out_refund_no).await? {
            current = after;
        }
    }
    Ok(current)
}

/// Applies a verified refund notification's result, checked against the refund (its order
/// and amount). A result that conflicts with a final state is acknowledged and changes
/// nothing.
///
/// # Errors
/// [`RefundError`]: the notification layer answers so that WeChat retries.
pub async fn apply_notified_result(
    store: &Store,
    result: &RefundResult,
    out_trade_no: &str,
    amount_fen: u64,
) -> Result<(), RefundError> {
    let Some(refund) = store.refund(&result.out_refund_no).await? else {
        // Not (yet) known here: WeChat will deliver it again, and the refund job reconciles.
        return Err(RefundError::UnknownRefund(result.out_refund_no.clone()));
    };
    let mismatch = if refund.out_trade_no != out_trade_no {
        Some("refund notification names another order".to_owned())
    } else if refund.amount_fen != amount_fen {
        Some(format!(
            "refund amount {amount_fen} differs from the refund's {}",
            refund.amount_fen
        ))
    } else {
        None
    };
    if let Some(reason) = mismatch {
        tracing::error!(out_trade_no = %refund.out_trade_no, %reason, via = "refund", "verified notification does not match the order: refused");
        let detail = json!({ "via": "refund", "result": "rejected", "reason": reason });
        if let Err(e) = store
            .add_event(
                &refund.out_trade_no,
                EventKind::NotificationRejected,
                &detail,
            )
            .await
        {
            tracing::error!(error = %e, "recording a rejected notification");
        }
        return Err(RefundError::Mismatch(reason));
    }
    match store.apply_refund_result(result).await? {
        RefundTransition::Applied(_) | RefundTransition::Unchanged(_) => Ok(()),
        RefundTransition::Refused(current) => {
            // A final state cannot change; acknowledging stops retries of a stale report.
            tracing::warn!(out_refund_no = %current.out_refund_no, current = current.status.as_str(), reported = result.status.as_str(), "refund result conflicts with a final state");
            Ok(())
        }
        RefundTransition::NotFound => Err(RefundError::UnknownRefund(result.out_refund_no.clone())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refund_numbers_are_valid_for_wechat() {
        let no = super::new_out_refund_no();
        assert!(wxpay::OutRefundNo::try_from(no.as_str()).is_ok(), "{no}");
        assert_ne!(no, super::new_out_refund_no());
    }
}
