//! Reconciliation: the day's bill, downloaded from WeChat, compared row by row with the
//! database.
//!
//! Payments are matched by `out_trade_no`, refunds by `out_refund_no`. A line is `matched`, or
//! `missing_in_database` (WeChat has it, we do not), `missing_in_bill` (we recorded a payment or
//! a refund on that day that WeChat does not list), `amount_mismatch` or `state_mismatch`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};
use wxpay::bill::{TradeBill, TradeBillRow, parse_trade_bill};

use crate::store::{Order, Reconciliation, Refund, RefundStatus, Store, StoreError, now_ms};
use crate::wechat::{BillDownload, WeChat};

/// Why a day could not be reconciled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// WeChat has not made the day's bill yet (it is ready after 10:00 GMT+8 the next day).
    #[error("the bill of {0} is not ready yet")]
    BillNotReady(String),
    /// WeChat failed.
    #[error("WeChat: {0}")]
    WeChat(#[from] wxpay::Error),
    /// The bill does not parse.
    #[error("the bill of {date} does not parse: {message}")]
    BadBill {
        /// The day.
        date: String,
        /// What is wrong.
        message: String,
    },
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// China Standard Time, the time zone of WeChat's bills (defined once, in `wxpay::time`).
pub use wxpay::time::BEIJING as CST;

/// `[start, end)` of a GMT+8 day in Unix milliseconds.
#[must_use]
pub fn day_bounds(date: Date) -> (i64, i64) {
    let start = PrimitiveDateTime::new(date, Time::MIDNIGHT)
        .assume_offset(CST)
        .unix_timestamp()
        * 1000;
    (start, start + 86_400_000)
}

/// Today in GMT+8.
#[must_use]
pub fn today_cst() -> Date {
    OffsetDateTime::now_utc().to_offset(CST).date()
}

/// `yyyy-mm-dd`.
#[must_use]
pub fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Parses `yyyy-mm-dd`.
#[must_use]
pub fn parse_date(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    (text.len() == 10)
        .then(|| Date::parse(text, &format).ok())
        .flatten()
}

/// One line of a reconciliation report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReconciliationItem {
    /// `payment` or `refund`.
    pub kind: &'static str,
    /// `matched`, `missing_in_database`, `missing_in_bill`, `amount_mismatch`, `state_mismatch`.
    pub result: &'static str,
    /// The order.
    pub out_trade_no: String,
    /// The refund, for refund lines.
    pub out_refund_no: Option<String>,
    /// WeChat's transaction id (from the bill, else the database).
    pub transaction_id: Option<String>,
    /// The amount in the bill, in fen.
    pub bill_amount_fen: Option<u64>,
    /// The amount in the database, in fen.
    pub db_amount_fen: Option<u64>,
    /// The state in the bill.
    pub bill_state: Option<String>,
    /// The state in the database.
    pub db_state: Option<String>,
}

fn is_refund_line(row: &TradeBillRow) -> bool {
    row.out_refund_no
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != "0")
}

fn payment_amount(row: &TradeBillRow) -> u64 {
    row.total_fee.unwrap_or(row.settlement_total_fee).get()
}

/// Compares a bill with the database's orders and refunds of that day (and those the bill
/// names). Pure: the caller loads the rows.
#[must_use]
pub fn compare(
    bill: Option<&TradeBill>,
    orders: &[Order],
    refunds: &[Refund],
    day: (i64, i64),
) -> Vec<ReconciliationItem> {
    let orders: BTreeMap<&str, &Order> = orders
        .iter()
        .map(|o| (o.out_trade_no.as_str(), o))
        .collect();
    let refunds: BTreeMap<&str, &Refund> = refunds
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let in_day = |t: Option<i64>| t.is_some_and(|t| t >= day.0 && t < day.1);
    let mut items = Vec::new();
    let mut billed_orders = BTreeSet::new();
    let mut billed_refunds = BTreeSet::new();
    for row in bill.map_or(&[][..], |b| b.rows.as_slice()) {
        if is_refund_line(row) {
            let no = row.out_refund_no.clone().unwrap_or_default();
            billed_refunds.insert(no.clone());
            let bill_amount = row.refund_fee.map_or(0, wxpay::Fen::get);
            let bill_state = row.refund_status.clone().unwrap_or_default();
            let db = refunds.get(no.as_str());
            let result = match db {
                None => "missing_in_database",
                Some(r) if r.amount_fen != bill_amount => "amount_mismatch",
                Some(r)
                    if RefundStatus::from_wechat(&bill_state).is_some_and(|s| s != r.status) =>
                {
                    "state_mismatch"
                }
                Some(r) if r.out_trade_no != row.out_trade_no => "state_mismatch",
                Some(_) => "matched",
            };
            items.push(ReconciliationItem {
                kind: "refund",
                result,
                out_trade_no: row.out_trade_no.clone(),
                out_refund_no: Some(no),
                transaction_id: Some(row.transaction_id.clone()),
                bill_amount_fen: Some(bill_amount),
                db_amount_fen: db.map(|r| r.amount_fen),
                bill_state: Some(bill_state),
                db_state: db.map(|r| r.status.as_str().to_owned()),
            });
        } else {
            billed_orders.insert(row.out_trade_no.clone());
            let bill_amount = payment_amount(row);
            let db = orders.get(row.out_trade_no.as_str());
            let result = match db {
                None => "missing_in_database",
                Some(o) if o.amount_fen != bill_amount => "amount_mismatch",
                Some(o) if !o.status.is_paid() => "state_mismatch",
                Some(o) if o.transaction_id.as_deref() != Some(row.transaction_id.as_str()) => {
                    "state_mismatch"
                }
                Some(_) => "matched",
            };
            items.push(ReconciliationItem {
                kind: "payment",
                result,
                out_trade_no: row.out_trade_no.clone(),
                out_refund_no: None,
                transaction_id: Some(row.transaction_id.clone()),
                bill_amount_fen: Some(bill_amount),
                db_amount_fen: db.map(|o| o.amount_fen),
                bill_state: Some(row.trade_state.clone()),
                db_state: db.map(|o| o.status.as_str().to_owned()),
            });
        }
    }
    for o in orders
        .values()
        .filter(|o| in_day(o.paid_at) && !billed_orders.contains(&o.out_trade_no))
    {
        items.push(ReconciliationItem {
            kind: "payment",
            result: "missing_in_bill",
            out_trade_no: o.out_trade_no.clone(),
            out_refund_no: None,
            transaction_id: o.transaction_id.clone(),
            bill_amount_fen: None,
            db_amount_fen: Some(o.amount_fen),
            bill_state: None,
            db_state: Some(o.status.as_str().to_owned()),
        });
    }
    for r in refunds.values().filter(|r| {
        r.status == RefundStatus::Success
            && in_day(r.success_at)
            && !billed_refunds.contains(&r.out_refund_no)
    }) {
        items.push(ReconciliationItem {
            kind: "refund",
            result: "missing_in_bill",
            out_trade_no: r.out_trade_no.clone(),
            out_refund_no: Some(r.out_refund_no.clone()),
            transaction_id: None,
            bill_amount_fen: None,
            db_amount_fen: Some(r.amount_fen),
            bill_state: None,
            db_state: Some(r.status.as_str().to_owned()),
        });
    }
    items
}

/// Downloads the merchant's bill of `date`, compares it with that merchant's orders and refunds
/// and stores the report (replacing an earlier one of the same merchant and date).
///
/// # Errors
/// [`ReconcileError`].
pub async fn reconcile(
    store: &Store,
    wechat: &WeChat,
    date: Date,
) -> Result<Reconciliation, ReconcileError> {
    let bill = match wechat.trade_bill(date).await? {
        BillDownload::NoBill => None,
        BillDownload::NotReady => return Err(ReconcileError::BillNotReady(format_date(date))),
        BillDownload::Text(text) => {
            Some(
                parse_trade_bill(&text).map_err(|e| ReconcileError::BadBill {
                    date: format_date(date),
                    message: e.to_string(),
                })?,
            )
        }
    };
    let day = day_bounds(date);
    let mut numbers = BTreeSet::new();
    let mut refund_numbers = Vec::new();
    for row in bill.as_ref().map_or(&[][..], |b| b.rows.as_slice()) {
        numbers.insert(row.out_trade_no.clone());
        if is_refund_line(row)
            && let Some(no) = &row.out_refund_no
        {
            refund_numbers.push(no.clone());
        }
    }
    let mut orders = store
        .orders_paid_between(&wechat.mchid, day.0, day.1)
        .await?;
    let known: BTreeSet<String> = orders.iter().map(|o| o.out_trade_no.clone()).collect();
    let missing: Vec<String> = numbers.into_iter().filter(|n| !known.contains(n)).collect();
    orders.extend(store.orders_by_numbers(&missing).await?);
    let refunds = store
        .refunds_for_reconciliation(&wechat.mchid, day.0, day.1, &refund_numbers)
        .await?;
    let items = compare(bill.as_ref(), &orders, &refunds, day);
    let matched = items.iter().filter(|i| i.result == "matched").count() as u64;
    let mismatched = items.len() as u64 - matched;
    let sum = |kind: &str, bill: bool| -> u64 {
        items
            .iter()
            .filter(|i| i.kind == kind)
            .filter_map(|i| {
                if bill {
                    i.bill_amount_fen
                } else {
                    i.db_amount_fen
                }
            })
            .sum()
    };
    let status = if bill.is_some() {
        "complete"
    } else {
        "no_bill"
    };
    let report = json!({
        "bill_date": format_date(date),
        "status": status,
        "generated_at": now_ms(),
        "totals": {
            "bill_payments_fen": sum("payment", true),
            "db_payments_fen": sum("payment", false),
            "bill_refunds_fen": sum("refund", true),
            "db_refunds_fen": sum("refund", false),
        },
        "items": items,
    });
    let reconciliation = Reconciliation {
        mchid: wechat.mchid.clone(),
        bill_date: format_date(date),
        api_version: wechat.api_version,
        status: status.to_owned(),
        bill_rows: bill.as_ref().map_or(0, |b| b.rows.len() as u64),
        matched,
        mismatched,
        report,
        created_at: now_ms(),
        updated_at: now_ms(),
    };
    store.save_reconciliation(&reconciliation).await?;
    if mismatched > 0 {
        tracing::warn!(mchid = %reconciliation.mchid, bill_date = %reconciliation.bill_date, mismatched, "the bill does not match the database");
    }
    Ok(store
        .reconciliation(&reconciliation.mchid, &reconciliation.bill_date)
        .await?
        .unwrap_or(reconciliation))
}
