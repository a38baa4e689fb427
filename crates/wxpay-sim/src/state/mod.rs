//! The simulator's in-memory domain: orders, refunds, the business rules of WeChat Pay, and the
//! simulator clock.
//!
//! This module knows nothing about v2 or v3 wire formats. Each protocol side calls the
//! [`Store`] methods and maps an [`OrderError`] to its own codes (v2 `err_code`, v3 `code` +
//! HTTP status). Amounts are integer fen.
//!
//! Memory: an order is one compact record (one heap block for its own strings; appid, mchid and
//! notify_url are interned and shared), kept in sharded vectors with an index by the hash of
//! `out_trade_no`, so that a million orders take a few hundred MiB.
//!
//! Identifiers look like WeChat's and encode the record's position, so that lookups by
//! `prepay_id` or `transaction_id` need no second index:
//! * `prepay_id`: `wx` + 14-digit creation time (GMT+8) + 8 hex digits of the order number + 12
//!   random hex digits (36 characters, like the real ones);
//! * `transaction_id`: `420000` + payment date `yyyyMMdd` + 10-digit order number + 4 random digits
//!   (28 digits);
//! * `refund_id`: `503000` + `yyyyMMdd` + 10-digit refund number + 5 random digits (29 digits).
//!
//! The module is split along its seams: `clock` (the simulator clock and WeChat's time
//! formats), `model` (the business vocabulary: states, errors, snapshots, rules), `ids` (the
//! identifiers and the positions they encode) and `storage` (the compact records and the
//! [`Store`]).

mod clock;
mod ids;
mod model;
mod storage;

pub use clock::*;
pub use model::*;
pub use storage::*;
