//! The metrics recorded below the HTTP edge (the core, the store, the jobs): plain calls into
//! the `metrics` facade, which the edge's Prometheus recorder ([`crate::api::metrics`]) exports.
//! Without a recorder they cost nothing.

/// Counts an order that became paid, by how the payment was learned.
pub fn order_paid(via: &str) {
    metrics::counter!("wxpay_orders_paid_total", "via" => via.to_owned()).increment(1);
}

/// Counts a webhook delivery attempt.
pub fn webhook_delivery(event_type: &str, result: &'static str) {
    metrics::counter!("wxpay_webhook_deliveries_total", "type" => event_type.to_owned(), "result" => result).increment(1);
}

/// Counts a job call.
pub fn job_run(job: &'static str, result: &'static str) {
    metrics::counter!("wxpay_job_runs_total", "job" => job, "result" => result).increment(1);
}

/// Counts a verified message push by its event (a bounded set of names) and result.
pub fn push(event: &str, result: &'static str) {
    metrics::counter!("wxpay_mp_pushes_total", "event" => event.to_owned(), "result" => result)
        .increment(1);
}

/// Counts a `wxa_trade_controlled` event: WeChat restricted a mini program's payments.
pub fn trade_controlled() {
    metrics::counter!("wxpay_trade_controlled_total").increment(1);
}

/// A merchant transfer reached a final state (`SUCCESS`, `FAIL`, `CANCELLED`).
pub fn transfer_finished(state: &str) {
    metrics::counter!("wxpay_transfers_finished_total", "state" => state.to_owned()).increment(1);
}

/// A merchant transfer was refused before WeChat was asked (`budget`, `user_cap`).
pub fn transfer_refused(limit: &'static str) {
    metrics::counter!("wxpay_transfers_refused_total", "limit" => limit).increment(1);
}
