//! Payments: whoever reports a payment (a v3 or v2 notification, or the answer of an order
//! query), it becomes one [`PaymentReport`], is checked once against the order ([`check`]:
//! merchant, appid, amount, currency, payer, transaction id) and goes through the store's one
//! guarded transition, which writes the order, its timeline and the `order.paid` webhook in one
//! transaction, once.

use serde_json::{Value, json};

use crate::store::{
    EventKind, Order, OrderStatus, PaymentConfirmation, Store, StoreError, Transition, now_ms,
};
use crate::wechat::WeChat;
pub use crate::wechat::{PaymentReport, ReportSource, TradeReport};

/// The only currency an order is priced in.
pub const CURRENCY: &str = "CNY";

/// Why a reported payment was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// No order has this number (not yet, or not ours).
    #[error("unknown out_trade_no {0}")]
    UnknownOrder(String),
    /// The report does not match its order; recorded in the order's timeline.
    #[error("{0}")]
    Mismatch(String),
    /// The order is in a state a payment cannot change.
    #[error("order is {0}")]
    Conflict(OrderStatus),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a report says that does not fit the order, if anything.
#[must_use]
pub fn check(report: &PaymentReport, order: &Order) -> Option<String> {
    if report.mchid.as_deref().is_some_and(|m| m != order.mchid) {
        Some("mchid differs from the order's".to_owned())
    } else if report.mchid.is_some() && report.sub_mchid != order.sub_mchid {
        // A report that names its merchant names its sub-merchant too (none when direct).
        Some("sub_mchid differs from the order's".to_owned())
    } else if report.appid.as_deref().is_some_and(|a| a != order.appid) {
        Some("appid differs from the order's".to_owned())
    } else if report.amount_fen != order.amount_fen {
        Some(format!(
            "amount {} differs from the order's {}",
            report.amount_fen, order.amount_fen
        ))
    } else if let Some(currency) = report.currency.as_deref().filter(|c| *c != CURRENCY) {
        Some(format!(
            "currency {currency} differs from the order's {CURRENCY}"
        ))
    } else if report
        .payer_openid
        .as_deref()
        .is_some_and(|p| p != order.openid)
    {
        Some("payer differs from the order's buyer".to_owned())
    } else if report.transaction_id.is_empty() {
        Some("no transaction_id".to_owned())
    } else {
        None
    }
}

/// The timeline's name of the report's channel.
fn via(report: &PaymentReport) -> &'static str {
    match report.source {
        ReportSource::V3Notification { .. } => "v3 notification",
        ReportSource::V2Notification { .. } => "v2 notification",
        ReportSource::Query => "query",
    }
}

/// The guarded transition's input: the report, its dedupe key and timeline entry.
fn confirmation(report: &PaymentReport, order: &Order) -> PaymentConfirmation {
    let (dedupe_key, event, detail) = match &report.source {
        ReportSource::V3Notification { event_id } => (
            format!("v3:{event_id}"),
            EventKind::Notification,
            json!({ "via": "v3 notification", "event_id": event_id, "verified": true }),
        ),
        ReportSource::V2Notification { sign_type } => (
            format!("v2:pay:{}", report.transaction_id),
            EventKind::Notification,
            json!({ "via": "v2 notification", "sign_type": sign_type, "verified": true }),
        ),
        ReportSource::Query => (
            format!("query:{}", report.transaction_id),
            EventKind::Query,
            json!({ "trade_state": "SUCCESS", "api_version": order.api_version.as_str() }),
        ),
    };
    PaymentConfirmation {
        out_trade_no: report.out_trade_no.clone(),
        transaction_id: report.transaction_id.clone(),
        amount_fen: report.amount_fen,
        payer_openid: report.payer_openid.clone(),
        paid_at: report.paid_at.unwrap_or_else(now_ms),
        dedupe_key,
        event,
        detail,
    }
}

/// Records a report that does not match its order in the order's timeline.
async fn record_mismatch(
    store: &Store,
    order: &Order,
    report: &PaymentReport,
    reason: &str,
) -> Result<(), StoreError> {
    let via = via(report);
    tracing::error!(out_trade_no = %order.out_trade_no, %reason, via, "WeChat reports a payment that does not match the order: refused");
    let (kind, detail): (EventKind, Value) = match report.source {
        ReportSource::Query => (
            EventKind::Query,
            json!({ "trade_state": "SUCCESS", "result": "rejected", "reason": reason }),
        ),
        _ => (
            EventKind::NotificationRejected,
            json!({ "via": via, "result": "rejected", "reason": reason }),
        ),
    };
    store.add_event(&order.out_trade_no, kind, &detail).await
}

/// Applies a verified notification's payment: checked against its order, then the guarded
/// transition. A repeat of an applied payment is `Ok` and changes nothing.
///
/// # Errors
/// [`PaymentError`]: the notification layer answers so that WeChat retries.
pub async fn apply_notified_payment(
    store: &Store,
    report: &PaymentReport,
) -> Result<(), PaymentError> {
    let Some(order) = store.order(&report.out_trade_no).await? else {
        return Err(PaymentError::UnknownOrder(report.out_trade_no.clone()));
    };
    if let Some(reason) = check(report, &order) {
        if let Err(e) = record_mismatch(store, &order, report, &reason).await {
            tracing::error!(error = %e, "recording a rejected notification");
        }
        return Err(PaymentError::Mismatch(reason));
    }
    if order.status.is_paid() {
        // A repeat (WeChat redelivers until acknowledged, often concurrently). A paid order never
        // becomes unpaid again, so this read settles it and the transition would change nothing:
        // acknowledging without taking SQLite's single write lock keeps repeats off the queue
        // of the writes that matter.
        return Ok(());
    }
    match store
        .mark_paid_as_read(&confirmation(report, &order), &order)
        .await?
    {
        Transition::Applied(_) | Transition::Unchanged(_) => Ok(()),
        Transition::Refused(o) => Err(PaymentError::Conflict(o.status)),
        Transition::NotFound => Err(PaymentError::UnknownOrder(report.out_trade_no.clone())),
    }
}

/// Applies what an order query says through the guarded transitions, and records the query
/// in the timeline. Returns the order as it is afterwards (unchanged when the report does not
/// match it).
///
/// # Errors
/// The database.
pub async fn apply_trade_report(
    store: &Store,
    order: &Order,
    report: &TradeReport,
) -> Result<Order, StoreError> {
    let transition = match report {
        TradeReport::Paid(paid) => {
            if let Some(reason) = check(paid, order) {
                record_mismatch(store, order, paid, &reason).await?;
                return Ok(order.clone());
            }
            store.mark_paid(&confirmation(paid, order)).await?
        }
        TradeReport::Closed => {
            store
                .mark_closed(&order.out_trade_no, &json!({ "via": "query" }))
                .await?
        }
        TradeReport::PayError => {
            store
                .mark_pay_error(&order.out_trade_no, &json!({ "via": "query" }))
                .await?
        }
        TradeReport::NotFound | TradeReport::Pending | TradeReport::Other(_) => {
            let detail =
                json!({ "trade_state": report.name(), "api_version": order.api_version.as_str() });
            store
                .add_event(&order.out_trade_no, EventKind::Query, &detail)
                .await?;
            return Ok(store
                .order(&order.out_trade_no)
                .await?
                .unwrap_or_else(|| order.clone()));
        }
    };
    Ok(match transition {
        Transition::Applied(o) | Transition::Unchanged(o) | Transition::Refused(o) => o,
        Transition::NotFound => order.clone(),
    })
}

/// Queries WeChat about an unpaid order and applies the answer. A failed query is recorded and
/// the order returned as it is (the caller can still answer).
///
/// # Errors
/// The database.
pub async fn sync_with_wechat(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
) -> Result<Order, StoreError> {
    match wechat.query(order).await {
        Ok(report) => apply_trade_report(store, order, &report).await,
        Err(err) => {
            tracing::warn!(out_trade_no = %order.out_trade_no, error = %err, "order query failed");
            store
                .add_event(
                    &order.out_trade_no,
                    EventKind::QueryFailed,
                    &json!({ "error": err.to_string() }),
                )
                .await?;
            Ok(order.clone())
        }
    }
}
