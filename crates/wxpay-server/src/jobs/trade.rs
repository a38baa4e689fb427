//! The trade-management reconcile job: shipped orders whose settlement this server has not
//! heard of (the push was dropped, or the URL was not set yet) are looked up at WeChat
//! (`/wxa/sec/order/get_order`), and a settlement found there is applied under the same dedupe
//! key as its push ([`crate::core::push::settled_key`]): whichever comes second changes nothing.

use serde_json::json;
use wxpay::mp::shipping::{OrderRef, OrderState};

use super::{ExecutionOutcome, JobError, Jobs};
use crate::core::push::settled_key;
use crate::store::{PushApplied, TradeChange, now_ms};

/// Asks WeChat about one batch of shipped, unsettled orders, each at most once per
/// `recheck_ms` (`JobOptions::trade_recheck`, 30 minutes by default).
///
/// # Errors
/// [`JobError::Store`].
pub async fn reconcile_trade(jobs: &Jobs, recheck_ms: i64) -> Result<ExecutionOutcome, JobError> {
    let orders = jobs
        .store
        .claim_unsettled_shipped(now_ms() - recheck_ms, jobs.options.batch_size)
        .await?;
    if orders.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    for order in &orders {
        let Some(transaction_id) = order.transaction_id.clone() else {
            continue;
        };
        let wechat = match jobs.registry.for_order(order) {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %err, "trade state not checked");
                continue;
            }
        };
        let answer = wechat
            .mp
            .get_order(&OrderRef::TransactionId(transaction_id.clone()))
            .await;
        match answer {
            Ok(t) if t.order_state == OrderState::Completed => {
                let now = now_ms();
                let change = TradeChange::Settled {
                    out_trade_no: order.out_trade_no.clone(),
                    received_at: now,
                    settled_at: now,
                    detail: json!({
                        "via": "trade-management query",
                        "order_state": t.order_state.code(),
                    }),
                };
                let applied = jobs
                    .store
                    .apply_push(
                        &settled_key(&transaction_id),
                        &order.appid,
                        "trade_manage_order_settlement",
                        &change,
                    )
                    .await?;
                if matches!(applied, PushApplied::Applied(Some(_))) {
                    tracing::info!(out_trade_no = %order.out_trade_no, "settled at WeChat (no push received): applied");
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %err, "trade-management query failed");
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}
