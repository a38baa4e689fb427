//! SQLite's statements (see [`super::Dialect`]). One writer connection: its write lock covers
//! the whole transaction, so nothing is locked row by row; the hot paths are scripts of several
//! statements, each guarded by `changes()` of the one before.

use super::super::orders::order_columns;
use super::super::refund_state::refund_columns;
use super::{Dialect, mark_paid_sql, upsert_user_sql};

pub(in crate::store) const DIALECT: Dialect = Dialect {
    claim_lock: "",
    select_order_to_pay: concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE out_trade_no = $1"
    ),
    select_refund_to_settle: concat!(
        "SELECT ",
        refund_columns!(),
        " FROM refunds WHERE out_refund_no = $1"
    ),
    // The dedupe row, then the update only if that row was new (`changes()` counts the rows of
    // the INSERT).
    mark_paid: concat!(
        "INSERT INTO processed_notifications (dedupe_key, kind, out_trade_no, received_at) \
         VALUES ($7, 'payment', $1, $5) ON CONFLICT (dedupe_key) DO NOTHING; ",
        mark_paid_sql!("changes() = 1 AND ")
    ),
    paid_event_and_webhook: Some(
        "INSERT INTO order_events (out_trade_no, kind, detail, created_at) VALUES ($1, $2, $3, $4); \
         INSERT INTO outbox (event_id, event_type, dedupe_key, out_trade_no, payload, created_at, \
         attempts, next_attempt_at) VALUES ($5, $6, $7, $1, $8, $4, 0, $4) \
         ON CONFLICT (dedupe_key) DO NOTHING",
    ),
    pay_as_read: concat!(
        "INSERT INTO processed_notifications (dedupe_key, kind, out_trade_no, received_at) \
         SELECT $7, 'payment', $1, $5 WHERE EXISTS \
         (SELECT 1 FROM orders WHERE out_trade_no = $1 AND version = $8) \
         ON CONFLICT (dedupe_key) DO NOTHING; ",
        mark_paid_sql!("changes() = 1 AND version = $8 AND "),
        "; INSERT INTO order_events (out_trade_no, kind, detail, created_at) \
         SELECT $1, $9, $10, $5 WHERE changes() = 1; \
         INSERT INTO outbox (event_id, event_type, dedupe_key, out_trade_no, payload, created_at, \
         attempts, next_attempt_at) SELECT $11, $12, $13, $1, $14, $5, 0, $5 \
         WHERE changes() = 1 ON CONFLICT (dedupe_key) DO NOTHING"
    ),
    // A script holding its own transaction on the writer connection.
    create_session: concat!(
        "BEGIN IMMEDIATE; ",
        upsert_user_sql!(),
        "; INSERT INTO sessions (token_hash, openid, session_key, created_at, expires_at) \
         VALUES ($5, $1, $6, $4, $7); COMMIT"
    ),
};
