//! Unpaid orders: asking WeChat about them, and closing the expired ones.

use super::{ExecutionOutcome, JobError, Jobs, ms};
use crate::core::orders::{OrderError, close};
use crate::core::payments::sync_with_wechat;
use crate::store::now_ms;

/// Queries one batch of unpaid orders older than `reconcile_after` (each at most once per
/// `requery_every`) and applies WeChat's answers through the notification's compare-and-set.
///
/// # Errors
/// [`JobError::Store`] when the database fails.
pub async fn reconcile_unpaid(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let o = &jobs.options;
    let now = now_ms();
    let orders = jobs
        .store
        .claim_unpaid_orders(
            now - ms(o.reconcile_after),
            now - ms(o.requery_every),
            o.batch_size,
        )
        .await?;
    if orders.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    for order in &orders {
        let wechat = match jobs.registry.for_order(order) {
            Ok(w) => w,
            Err(err) => {
                tracing::error!(error = %err, "an unpaid order cannot be queried");
                continue;
            }
        };
        let after = sync_with_wechat(&jobs.store, &wechat, order).await?;
        if after.status != order.status {
            tracing::info!(out_trade_no = %order.out_trade_no, from = %order.status, to = %after.status, "reconciled with WeChat");
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}

/// Closes one batch of unpaid orders past their expiry, at WeChat and then here (an
/// `order.closed` webhook each). An order WeChat reports paid meanwhile is marked paid instead.
///
/// # Errors
/// [`JobError::Store`] when the database fails.
pub async fn close_expired(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let o = &jobs.options;
    let orders = jobs
        .store
        .claim_expired_orders(now_ms() - ms(o.close_retry_every), o.batch_size)
        .await?;
    if orders.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    for order in &orders {
        let wechat = match jobs.registry.for_order(order) {
            Ok(w) => w,
            Err(err) => {
                tracing::error!(error = %err, "an expired order cannot be closed");
                continue;
            }
        };
        match close(&jobs.store, &wechat, order, "expiry").await {
            Ok(closed) => {
                tracing::info!(out_trade_no = %closed.out_trade_no, status = %closed.status, "expired order closed")
            }
            Err(OrderError::Paid { .. }) => {
                tracing::info!(out_trade_no = %order.out_trade_no, "expired order was paid meanwhile");
            }
            Err(OrderError::Store(err)) => return Err(err.into()),
            // Retried after `close_retry_every` (the claim recorded the attempt).
            Err(err) => {
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %err, "closing an expired order failed")
            }
        }
    }
    Ok(ExecutionOutcome::TaskCompleted)
}
