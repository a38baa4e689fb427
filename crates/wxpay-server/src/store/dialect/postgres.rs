//! PostgreSQL's statements (see [`super::Dialect`]). Several writers: rows read to be changed
//! are locked (`FOR UPDATE`), rows claimed by a job skip those another instance holds
//! (`SKIP LOCKED`), and the hot paths are one statement of data-modifying `WITH` clauses.

use super::super::orders::order_columns;
use super::super::refund_state::refund_columns;
use super::{Dialect, mark_paid_sql, upsert_user_sql};

pub(in crate::store) const DIALECT: Dialect = Dialect {
    claim_lock: " FOR UPDATE SKIP LOCKED",
    select_order_to_pay: concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE out_trade_no = $1 FOR UPDATE"
    ),
    select_refund_to_settle: concat!(
        "SELECT ",
        refund_columns!(),
        " FROM refunds WHERE out_refund_no = $1 FOR UPDATE"
    ),
    mark_paid: mark_paid_sql!(""),
    paid_event_and_webhook: None,
    // `FOR UPDATE` makes a concurrent payment of the same order wait, then see the new version
    // and write nothing, not even its dedupe row.
    pay_as_read: concat!(
        "WITH locked AS (SELECT out_trade_no FROM orders WHERE out_trade_no = $1 AND version = $8 \
         FOR UPDATE), \
         dedupe AS (INSERT INTO processed_notifications (dedupe_key, kind, out_trade_no, received_at) \
         SELECT $7, 'payment', out_trade_no, $5 FROM locked \
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING out_trade_no), \
         paid AS (",
        mark_paid_sql!("EXISTS (SELECT 1 FROM dedupe) AND version = $8 AND "),
        "), event AS (INSERT INTO order_events (out_trade_no, kind, detail, created_at) \
         SELECT out_trade_no, $9, $10, $5 FROM paid), \
         webhook AS (INSERT INTO outbox (event_id, event_type, dedupe_key, out_trade_no, payload, \
         created_at, attempts, next_attempt_at) SELECT $11, $12, $13, out_trade_no, $14, $5, 0, $5 \
         FROM paid ON CONFLICT (dedupe_key) DO NOTHING) \
         SELECT * FROM paid"
    ),
    create_session: concat!(
        "WITH u AS (",
        upsert_user_sql!(),
        " RETURNING openid) INSERT INTO sessions (token_hash, openid, session_key, \
         created_at, expires_at) SELECT $5, openid, $6, $4, $7 FROM u"
    ),
};
