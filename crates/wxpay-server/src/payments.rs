//! The order operations shared by the API and the background jobs: getting a valid prepay,
//! bringing an order up to date with WeChat, closing it. Each state change goes through the
//! store's guarded transitions, like notifications do.

use serde_json::json;

use crate::error::ApiError;
use crate::store::{EventKind, Order, OrderStatus, PaymentConfirmation, Store, Transition, now_ms};
use crate::wechat::{PREPAY_RENEW_AFTER_MS, TradeReport, WeChat};

/// Why an order cannot get payment parameters.
fn not_payable(order: &Order) -> ApiError {
    ApiError::conflict(
        "order_not_payable",
        format!(
            "order {} is {} and cannot be paid",
            order.out_trade_no, order.status
        ),
    )
}

/// A prepay_id valid for a while yet: the stored one, or a new one from WeChat (when there is
/// none, after a crash between commit and prepay or a failed call, or when it is about to
/// expire), stored before it is returned.
///
/// # Errors
/// 409 when the order is not `NOTPAY` or has expired; 502 when WeChat fails; 500 for the database.
pub async fn ensure_prepay(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
) -> Result<(Order, String), ApiError> {
    if order.status != OrderStatus::NotPay {
        return Err(not_payable(order));
    }
    let now = now_ms();
    if let (Some(prepay_id), Some(at)) = (&order.prepay_id, order.prepay_created_at)
        && now - at < PREPAY_RENEW_AFTER_MS
    {
        return Ok((order.clone(), prepay_id.clone()));
    }
    // WeChat needs at least a minute before time_expire.
    if order.expires_at - now < 60_000 {
        return Err(ApiError::conflict(
            "order_expired",
            format!("order {} has expired: make a new one", order.out_trade_no),
        ));
    }
    let renewed = order.prepay_id.is_some();
    let prepay_id = match wechat.prepay(order).await {
        Ok(id) => id,
        Err(err) => {
            let detail = json!({ "error": err.to_string(), "renewed": renewed });
            if let Err(e) = store
                .add_event(&order.out_trade_no, EventKind::PrepayFailed, &detail)
                .await
            {
                tracing::error!(error = %e, "recording a failed prepay");
            }
            return Err(ApiError::upstream(
                &format!(
                    "prepay of order {} failed; POST /api/orders/{}/payment retries",
                    order.out_trade_no, order.out_trade_no
                ),
                &err,
            ));
        }
    };
    match store
        .store_prepay(&order.out_trade_no, &prepay_id, renewed)
        .await?
    {
        Transition::Applied(updated) => Ok((updated, prepay_id)),
        Transition::Unchanged(o) | Transition::Refused(o) => Err(not_payable(&o)),
        Transition::NotFound => Err(ApiError::not_found("no such order")),
    }
}

/// Applies what WeChat says about an order through the guarded transitions, and records the
/// query in the timeline. Returns the order as it is afterwards.
///
/// # Errors
/// 500 for the database.
pub async fn apply_report(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
    report: &TradeReport,
) -> Result<Order, ApiError> {
    let detail = json!({ "trade_state": report.name(), "api_version": order.api_version.as_str() });
    let transition = match report {
        TradeReport::Paid {
            transaction_id,
            amount_fen,
            payer_openid,
            paid_at,
            appid,
            mchid,
        } => {
            let mismatch = if *amount_fen != order.amount_fen {
                Some(format!(
                    "amount {amount_fen} differs from the order's {}",
                    order.amount_fen
                ))
            } else if appid.as_deref().is_some_and(|a| a != wechat.appid) {
                Some("appid differs from the merchant's".to_owned())
            } else if mchid.as_deref().is_some_and(|m| m != wechat.mchid) {
                Some("mchid differs from the merchant's".to_owned())
            } else if transaction_id.is_empty() {
                Some("no transaction_id".to_owned())
            } else {
                None
            };
            if let Some(reason) = mismatch {
                tracing::error!(out_trade_no = %order.out_trade_no, %reason, "WeChat reports a payment that does not match the order");
                let detail =
                    json!({ "trade_state": "SUCCESS", "result": "rejected", "reason": reason });
                store
                    .add_event(&order.out_trade_no, EventKind::Query, &detail)
                    .await?;
                return Ok(order.clone());
            }
            store
                .mark_paid(&PaymentConfirmation {
                    out_trade_no: order.out_trade_no.clone(),
                    transaction_id: transaction_id.clone(),
                    amount_fen: *amount_fen,
                    payer_openid: payer_openid.clone(),
                    paid_at: paid_at.unwrap_or_else(now_ms),
                    dedupe_key: format!("query:{transaction_id}"),
                    event: EventKind::Query,
                    detail,
                })
                .await?
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
/// 500 for the database.
pub async fn sync_with_wechat(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
) -> Result<Order, ApiError> {
    match wechat.query(order).await {
        Ok(report) => apply_report(store, wechat, order, &report).await,
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

/// Closes an unpaid order at WeChat, then here (`order.closed` webhook). A closed order is
/// returned as it is. If WeChat refuses because the order was paid meanwhile, the payment is
/// applied and 409 `order_paid` returned.
///
/// # Errors
/// 409 for a paid order, 502 when WeChat fails, 500 for the database.
pub async fn close_order(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
    via: &str,
) -> Result<Order, ApiError> {
    match order.status {
        OrderStatus::Closed => return Ok(order.clone()),
        OrderStatus::Success | OrderStatus::Refund => {
            return Err(ApiError::conflict(
                "order_paid",
                format!("order {} is paid", order.out_trade_no),
            ));
        }
        OrderStatus::NotPay | OrderStatus::PayError => {}
    }
    if let Err(err) = wechat.close(order).await {
        // The usual reason is a payment that arrived meanwhile: find out, and apply it.
        let synced = sync_with_wechat(store, wechat, order).await?;
        if synced.status.is_paid() {
            return Err(ApiError::conflict(
                "order_paid",
                format!("order {} was paid", order.out_trade_no),
            ));
        }
        if synced.status == OrderStatus::Closed {
            return Ok(synced);
        }
        return Err(ApiError::upstream(
            &format!("closing order {} at WeChat failed", order.out_trade_no),
            &err,
        ));
    }
    let detail = json!({ "via": via, "api_version": order.api_version.as_str() });
    match store.mark_closed(&order.out_trade_no, &detail).await? {
        Transition::Applied(o) | Transition::Unchanged(o) => Ok(o),
        Transition::Refused(o) if o.status.is_paid() => Err(ApiError::conflict(
            "order_paid",
            format!("order {} was paid", o.out_trade_no),
        )),
        Transition::Refused(o) => Ok(o),
        Transition::NotFound => Err(ApiError::not_found("no such order")),
    }
}

/// A new order number: `WX`, the time (yyyyMMddHHmmss, UTC) and 12 random letters and digits.
#[must_use]
pub fn new_out_trade_no() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "WX{:04}{:02}{:02}{:02}{:02}{:02}{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        wxpay::nonce::random_string(12)
    )
}
