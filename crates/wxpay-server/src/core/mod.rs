//! The payments core: the rules of a payment, between the edges (HTTP handlers, notification
//! endpoints, jobs) and the store. Read in the order of the flow:
//!
//! - [`login`]: a mini-program login code becomes a session.
//! - [`orders`]: one path for mini-program and back-office orders: place (priced, committed),
//!   ensure a prepay, sign `wx.requestPayment`, close.
//! - [`payments`]: one report type ([`payments::PaymentReport`], from a v2 or v3 notification or
//!   a query), one check of the report against the order, then the store's guarded transition.
//! - [`refunds`]: create (amount reserved), submit to WeChat, apply a result (notification or
//!   query).
//! - [`fulfilment`]: parcels, and the one upload of each order's shipping information to
//!   WeChat (funds are held until it is there); [`mp_facts`]: WeChat's express companies and
//!   trade-management answers, cached per mini program.
//! - [`payouts`]: merchant transfers to users (budget and cap reserved, sent once per
//!   `out_bill_no`, confirmed by the user, followed to a final state).
//! - [`reconciliation`]: the day's bill against the orders.
//! - [`tenants`]: the registry of merchants, mini programs, sub-merchants and operators.
//!
//! The core knows no HTTP: its errors are its own enums, which the HTTP layer
//! ([`crate::api`]) and the notification layer turn into their answers. It imports the store,
//! the WeChat clients ([`crate::wechat`]) and the metrics, never the edges.

pub mod fulfilment;
pub mod login;
pub mod mp_facts;
pub mod orders;
pub mod payments;
pub mod payouts;
pub mod push;
pub mod reconciliation;
pub mod refunds;
pub mod tenants;

/// A merchant number: `prefix`, the time (yyyyMMddHHmmss, UTC) and 12 random letters and
/// digits. Valid as WeChat's `out_trade_no` (32 at most) and `out_refund_no` (64 at most).
pub(crate) fn new_merchant_number(prefix: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{prefix}{:04}{:02}{:02}{:02}{:02}{:02}{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        wxpay::nonce::random_string(12)
    )
}
