//! The SQL that differs between SQLite and PostgreSQL, in one place per backend:
//! [`sqlite::DIALECT`] and [`postgres::DIALECT`], two values of one [`Dialect`] struct, so that
//! a statement added for one backend does not compile until the other has it too. Every other
//! statement of the store is portable and lives with its table group.
//!
//! What differs, and why:
//! - row locks: PostgreSQL locks the rows a transaction reads to change (`FOR UPDATE`) and skips
//!   those another instance holds (`SKIP LOCKED`); SQLite has one writer, whose write lock
//!   already covers the whole transaction;
//! - the hot paths (a payment, a session) are one command either way: on SQLite a script that
//!   holds its own statements guarded by `changes()`, on PostgreSQL one statement whose other
//!   rows are written by data-modifying `WITH` clauses.

pub(super) mod postgres;
pub(super) mod sqlite;

/// The statements of one backend. Parameters are `$N` on both.
pub(super) struct Dialect {
    /// Appended to the inner `SELECT .. LIMIT $n` that picks rows to claim (jobs, refund
    /// leases, webhook leases), so that two instances never claim the same row.
    pub claim_lock: &'static str,
    /// An order read to apply a payment, locked until the transaction ends. `$1` order.
    pub select_order_to_pay: &'static str,
    /// A refund read to apply its result, locked until the transaction ends. `$1` refund.
    pub select_refund_to_settle: &'static str,
    /// The order marked paid, once: `$1` order, `$2` transaction, `$3` payer, `$4` paid at, `$5`
    /// now, `$6` amount. SQLite writes the dedupe row too (`$7` dedupe key) and changes the order
    /// only if that row is new; PostgreSQL's caller writes the dedupe row first.
    pub mark_paid: &'static str,
    /// SQLite only: the timeline event and the webhook of a payment in one script (`$1` order,
    /// `$2` kind, `$3` detail, `$4` now, `$5` event id, `$6` event type, `$7` dedupe key, `$8`
    /// payload). PostgreSQL writes them with the portable inserts.
    pub paid_event_and_webhook: Option<&'static str>,
    /// A payment of an order as it was read (its `version`), in one command: the dedupe row, the
    /// update, the event and the webhook. Parameters as [`Dialect::mark_paid`] and `$7` dedupe
    /// key, `$8` version read, `$9` event kind, `$10` detail, `$11` event id, `$12` event type,
    /// `$13` webhook dedupe key, `$14` payload. Returns the order's columns.
    pub pay_as_read: &'static str,
    /// A user (created or its last login updated) and a new session, in one command: `$1`
    /// openid, `$2` appid, `$3` unionid, `$4` now, `$5` token hash, `$6` session key, `$7`
    /// expiry.
    pub create_session: &'static str,
}

/// The user's row of a login: created, or its last login (and a newly known unionid) updated.
macro_rules! upsert_user_sql {
    () => {
        "INSERT INTO users (openid, appid, unionid, created_at, last_login_at) \
         VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (openid) DO UPDATE SET last_login_at = excluded.last_login_at, \
         unionid = COALESCE(excluded.unionid, users.unionid)"
    };
}
pub(super) use upsert_user_sql;

/// The guarded UPDATE that marks an order paid (and awaiting shipment): `$1` order, `$2` transaction, `$3` payer, `$4`
/// paid at, `$5` now, `$6` amount; `$extra` is a further condition (with its `AND`).
macro_rules! mark_paid_sql {
    ($extra:literal) => {
        concat!(
            concat!(
                "UPDATE orders SET status = ",
                order_status_sql!(Success),
                ", transaction_id = $2, payer_openid = $3, paid_at = $4, \
             shipping_state = COALESCE(shipping_state, 'awaiting_shipment'), \
             updated_at = $5, version = version + 1 WHERE "
            ),
            $extra,
            concat!(
                "out_trade_no = $1 AND status IN (",
                order_status_sql!(NotPay, PayError, Closed),
                ") AND amount_fen = $6 RETURNING "
            ),
            order_columns!()
        )
    };
}
pub(super) use mark_paid_sql;

#[cfg(test)]
mod tests {
    use super::{Dialect, postgres, sqlite};

    fn statements(d: &Dialect) -> Vec<&'static str> {
        let mut all = vec![
            d.select_order_to_pay,
            d.select_refund_to_settle,
            d.mark_paid,
            d.pay_as_read,
            d.create_session,
        ];
        all.extend(d.paid_event_and_webhook);
        all
    }

    #[test]
    fn only_postgres_locks_rows() {
        assert_eq!(sqlite::DIALECT.claim_lock, "");
        assert_eq!(postgres::DIALECT.claim_lock, " FOR UPDATE SKIP LOCKED");
        for s in statements(&sqlite::DIALECT) {
            assert!(!s.contains("FOR UPDATE"), "{s}");
        }
        assert!(
            postgres::DIALECT
                .select_order_to_pay
                .ends_with(" FOR UPDATE")
        );
        assert!(
            postgres::DIALECT
                .select_refund_to_settle
                .ends_with(" FOR UPDATE")
        );
    }

    #[test]
    fn sqlite_scripts_are_guarded_by_changes_and_postgres_uses_no_scripts() {
        assert!(sqlite::DIALECT.mark_paid.contains("changes() = 1"));
        assert!(sqlite::DIALECT.pay_as_read.contains("changes() = 1"));
        assert!(
            sqlite::DIALECT
                .create_session
                .starts_with("BEGIN IMMEDIATE; ")
        );
        for s in statements(&postgres::DIALECT) {
            assert!(!s.contains("changes()"), "{s}");
            assert!(!s.contains("; "), "one statement each: {s}");
        }
    }
}
