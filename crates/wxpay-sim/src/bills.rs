//! The daily bills the simulator serves (v3 `tradebill`/`fundflowbill`, and v2 `downloadbill`
//! through the v2 code): rows made from the day's payments and refunds, written with the
//! library's bill writer so both sides share one format (§A.9).

use std::io::Write as _;

use time::{Date, PrimitiveDateTime};
use wxpay::Fen;
use wxpay::bill::{
    FundFlowBill, FundFlowDirection, FundFlowRow, MilliFen, TradeBill, TradeBillKind, TradeBillRow,
};

use crate::state::{CST, Order, Refund, Store};

/// The fee rate the simulator charges: 0.6 %, the usual rate for mini-program payments.
pub const FEE_RATE_TEXT: &str = "0.60%";

/// Which trade bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TradeBillType {
    /// `ALL`: payments and refunds.
    All,
    /// `SUCCESS`: payments only.
    Success,
    /// `REFUND`: refunds only.
    Refund,
}

impl TradeBillType {
    /// Parses `bill_type` (`ALL` when empty).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "ALL" => Some(TradeBillType::All),
            "SUCCESS" => Some(TradeBillType::Success),
            "REFUND" => Some(TradeBillType::Refund),
            _ => None,
        }
    }

    fn kind(self) -> TradeBillKind {
        match self {
            TradeBillType::All => TradeBillKind::All,
            TradeBillType::Success => TradeBillKind::Success,
            TradeBillType::Refund => TradeBillKind::Refund,
        }
    }
}

fn wall(unix: i64) -> PrimitiveDateTime {
    let t = time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(CST);
    PrimitiveDateTime::new(t.date(), t.time())
}

/// The fee of `fen` at 0.6 %, in thousandths of a fen (exact: 0.6 % of a fen is 6 milli-fen).
fn fee(fen: u64) -> MilliFen {
    MilliFen::new(i64::try_from(fen.saturating_mul(6)).unwrap_or(i64::MAX))
}

fn payment_row(order: &Order, kind: TradeBillKind) -> TradeBillRow {
    let all = kind == TradeBillKind::All;
    TradeBillRow {
        trade_time: wall(order.success_time.unwrap_or(order.created_at)),
        appid: order.appid.clone(),
        mch_id: order.mchid.clone(),
        sub_mch_id: "0".into(),
        device_info: String::new(),
        transaction_id: order.transaction_id.clone().unwrap_or_default(),
        out_trade_no: order.out_trade_no.clone(),
        openid: order.openid.clone(),
        trade_type: order.trade_type.as_str().into(),
        trade_state: "SUCCESS".into(),
        bank_type: "OTHERS".into(),
        fee_type: "CNY".into(),
        settlement_total_fee: Fen::new(order.total),
        coupon_fee: Fen::ZERO,
        refund_apply_time: None,
        refund_success_time: None,
        refund_id: all.then(|| "0".into()),
        out_refund_no: all.then(|| "0".into()),
        refund_fee: all.then_some(Fen::ZERO),
        recharge_refund_fee: all.then_some(Fen::ZERO),
        refund_type: all.then(String::new),
        refund_status: all.then(String::new),
        body: order.description.clone(),
        attach: order.attach.clone().unwrap_or_default(),
        fee: fee(order.total),
        rate: FEE_RATE_TEXT.into(),
        total_fee: Some(Fen::new(order.total)),
        refund_apply_fee: all.then_some(Fen::ZERO),
        rate_note: Some(String::new()),
    }
}

fn refund_row(refund: &Refund, order: &Order, kind: TradeBillKind) -> TradeBillRow {
    let success = refund.success_time.unwrap_or(refund.created_at);
    let refund_bill = kind == TradeBillKind::Refund;
    TradeBillRow {
        trade_time: wall(order.success_time.unwrap_or(order.created_at)),
        appid: order.appid.clone(),
        mch_id: order.mchid.clone(),
        sub_mch_id: "0".into(),
        device_info: String::new(),
        transaction_id: refund.transaction_id.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        openid: order.openid.clone(),
        trade_type: order.trade_type.as_str().into(),
        trade_state: "REFUND".into(),
        bank_type: "OTHERS".into(),
        fee_type: "CNY".into(),
        settlement_total_fee: Fen::ZERO,
        coupon_fee: Fen::ZERO,
        refund_apply_time: refund_bill.then(|| wall(refund.created_at)),
        refund_success_time: refund_bill.then(|| wall(success)),
        refund_id: Some(refund.refund_id.clone()),
        out_refund_no: Some(refund.out_refund_no.clone()),
        refund_fee: Some(Fen::new(refund.amount)),
        recharge_refund_fee: Some(Fen::ZERO),
        refund_type: Some("ORIGINAL".into()),
        refund_status: Some(refund.status.as_v2().into()),
        body: order.description.clone(),
        attach: order.attach.clone().unwrap_or_default(),
        fee: MilliFen::new(-fee(refund.amount).get()),
        rate: FEE_RATE_TEXT.into(),
        total_fee: Some(Fen::ZERO),
        refund_apply_fee: Some(Fen::new(refund.amount)),
        rate_note: Some(String::new()),
    }
}

/// The trade bill of `date` (GMT+8), or `None` when the day has no line of this type (WeChat
/// then answers "no bill").
///
/// # Errors
/// When a text field cannot be written into a bill (a line break or the field separator in a
/// description or attach).
pub fn trade_bill_text(
    store: &Store,
    date: Date,
    bill_type: TradeBillType,
) -> Result<Option<String>, String> {
    trade_bill_text_with(store, date, bill_type, &|_| None, None)
}

/// As [`trade_bill_text`] for a service provider: `sub_mchid_of` names the sub-merchant of an
/// order (its `特约商户号` column; `0` for the provider's own orders), and `only` keeps one
/// sub-merchant's lines (`GET /v3/bill/tradebill?sub_mchid=`).
///
/// # Errors
/// As [`trade_bill_text`].
pub fn trade_bill_text_with(
    store: &Store,
    date: Date,
    bill_type: TradeBillType,
    sub_mchid_of: &dyn Fn(&Order) -> Option<String>,
    only: Option<&str>,
) -> Result<Option<String>, String> {
    trade_bill_text_of(store, date, bill_type, sub_mchid_of, only, &|_| true)
}

/// As [`trade_bill_text_with`], keeping only the orders `mine` accepts (one merchant's).
///
/// # Errors
/// As [`trade_bill_text`].
pub fn trade_bill_text_of(
    store: &Store,
    date: Date,
    bill_type: TradeBillType,
    sub_mchid_of: &dyn Fn(&Order) -> Option<String>,
    only: Option<&str>,
    mine: &dyn Fn(&Order) -> bool,
) -> Result<Option<String>, String> {
    let mut day = store.bill_day(date);
    day.payments.retain(|o| mine(o));
    day.refunds.retain(|(_, o)| mine(o));
    let kind = bill_type.kind();
    let keep = |o: &Order| -> Option<String> {
        let sub = sub_mchid_of(o);
        match only {
            Some(wanted) if sub.as_deref() != Some(wanted) => None,
            _ => Some(sub.unwrap_or_else(|| "0".into())),
        }
    };
    let mut rows = Vec::new();
    if bill_type != TradeBillType::Refund {
        rows.extend(day.payments.iter().filter_map(|o| {
            keep(o).map(|sub| TradeBillRow {
                sub_mch_id: sub,
                ..payment_row(o, kind)
            })
        }));
    }
    if bill_type != TradeBillType::Success {
        rows.extend(day.refunds.iter().filter_map(|(r, o)| {
            keep(o).map(|sub| TradeBillRow {
                sub_mch_id: sub,
                ..refund_row(r, o, kind)
            })
        }));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let bill = TradeBill::from_rows(kind, rows).map_err(|e| e.to_string())?;
    bill.to_text()
        .map(|t| Some(with_bom(t)))
        .map_err(|e| e.to_string())
}

/// The fund-flow bill of the basic account for `date`: payments in, fees and refunds out, with
/// the balance running from zero at the start of the day. `None` when nothing moved.
///
/// # Errors
/// When a total overflows or a field cannot be written.
pub fn fund_flow_bill_text(store: &Store, date: Date) -> Result<Option<String>, String> {
    fund_flow_bill_text_of(store, date, &|_| true)
}

/// As [`fund_flow_bill_text`], with only the orders `mine` accepts (one merchant's).
///
/// # Errors
/// As [`fund_flow_bill_text`].
pub fn fund_flow_bill_text_of(
    store: &Store,
    date: Date,
    mine: &dyn Fn(&Order) -> bool,
) -> Result<Option<String>, String> {
    let mut day = store.bill_day(date);
    day.payments.retain(|o| mine(o));
    day.refunds.retain(|(_, o)| mine(o));
    let mut events: Vec<(i64, FundFlowRow)> = Vec::new();
    let row = |t: i64,
               no: &str,
               name: &str,
               ty: &str,
               dir: FundFlowDirection,
               amount: u64,
               voucher: &str| FundFlowRow {
        booking_time: wall(t),
        business_no: no.to_owned(),
        flow_no: format!(
            "{}{}",
            crate::state::v2_time(t),
            &no[no.len().saturating_sub(14)..]
        ),
        business_name: name.to_owned(),
        business_type: ty.to_owned(),
        direction: dir,
        amount: Fen::new(amount),
        balance: Fen::ZERO,
        applicant: "system".into(),
        remark: String::new(),
        voucher_no: voucher.to_owned(),
    };
    for o in &day.payments {
        let t = o.success_time.unwrap_or(o.created_at);
        let tx = o.transaction_id.clone().unwrap_or_default();
        events.push((
            t,
            row(
                t,
                &tx,
                "交易收款",
                "交易",
                FundFlowDirection::Income,
                o.total,
                &o.out_trade_no,
            ),
        ));
        // The fee is booked in whole fen, rounded half up.
        let fee_fen = (o.total.saturating_mul(6) + 500) / 1000;
        if fee_fen > 0 {
            events.push((
                t,
                row(
                    t,
                    &tx,
                    "交易收款",
                    "扣除交易手续费",
                    FundFlowDirection::Expense,
                    fee_fen,
                    &o.out_trade_no,
                ),
            ));
        }
    }
    for (r, _) in &day.refunds {
        let t = r.success_time.unwrap_or(r.created_at);
        events.push((
            t,
            row(
                t,
                &r.refund_id,
                "退款",
                "退款",
                FundFlowDirection::Expense,
                r.amount,
                &r.out_refund_no,
            ),
        ));
    }
    if events.is_empty() {
        return Ok(None);
    }
    events.sort_by_key(|(t, _)| *t);
    let mut balance: i128 = 0;
    let mut rows = Vec::with_capacity(events.len());
    for (_, mut r) in events {
        match r.direction {
            FundFlowDirection::Income => balance += i128::from(r.amount.get()),
            _ => balance -= i128::from(r.amount.get()),
        }
        // A day that refunds more than it takes in shows zero rather than a negative balance:
        // the simulated account has no earlier days to draw on.
        r.balance = Fen::new(u64::try_from(balance.max(0)).unwrap_or(u64::MAX));
        rows.push(r);
    }
    let bill = FundFlowBill::from_rows(rows).map_err(|e| e.to_string())?;
    bill.to_text()
        .map(|t| Some(with_bom(t)))
        .map_err(|e| e.to_string())
}

/// The UTF-8 byte-order mark real bills start with: merchants' reconciliation code matches the
/// first header as `\u{feff}交易时间`, and wechatpay-axios-plugin's bill formatter drops the
/// first three bytes (its fixture of a real bill starts with `EF BB BF`).
pub const BOM: char = '\u{feff}';

fn with_bom(text: String) -> String {
    let mut out = String::with_capacity(text.len() + BOM.len_utf8());
    out.push(BOM);
    out.push_str(&text);
    out
}

/// The hour (GMT+8) from which yesterday's bills exist: "每日10点后生成昨日账单" (the bill APIs'
/// docs).
pub const BILL_READY_HOUR: i64 = 10;

/// Whether the bills of `date` exist at `now` (Unix seconds): from 10:00 GMT+8 the next day.
#[must_use]
pub fn bill_ready(date: Date, now: i64) -> bool {
    let Some(next) = date.next_day() else {
        return false;
    };
    let ready_at = next.midnight().assume_offset(CST).unix_timestamp() + BILL_READY_HOUR * 3600;
    now >= ready_at
}

/// Gzip of a bill text (`tar_type=GZIP`).
#[must_use]
pub fn gzip(text: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    encoder.finish().unwrap_or_default()
}

/// The lowercase hex SHA-1 of the uncompressed bill (`hash_value`).
#[must_use]
pub fn sha1_hex(text: &[u8]) -> String {
    wxpay::bill::sha1_hex(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ApiVersion, TradeState, TradeType};

    #[test]
    fn a_days_bills_exist_from_ten_the_next_morning_beijing_time() {
        let day = time::macros::date!(2026 - 12 - 01);
        let at = |t: time::PrimitiveDateTime| t.assume_offset(CST).unix_timestamp();
        use time::macros::datetime;
        assert!(!bill_ready(day, at(datetime!(2026-12-01 23:59:59))));
        assert!(!bill_ready(day, at(datetime!(2026-12-02 09:59:59))));
        assert!(bill_ready(day, at(datetime!(2026-12-02 10:00:00))));
        assert!(bill_ready(day, at(datetime!(2026-12-05 03:00:00))));
    }

    /// §D.12: the one-row ALL bill and its SHA-1.
    #[test]
    fn d12_bill_digest() {
        let paid = time::macros::datetime!(2019-06-11 10:00:00 +8).unix_timestamp();
        let order = Order {
            out_trade_no: "1217752501201407033233368018".into(),
            appid: "wxd678efh567hg6787".into(),
            mchid: "1230000109".into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "test".into(),
            attach: None,
            device_info: None,
            notify_url: "https://example.com/n".into(),
            total: 100,
            version: ApiVersion::V3,
            sign_type: wxpay::v2::SignType::Md5,
            trade_type: TradeType::Jsapi,
            trade_state: TradeState::Success,
            prepay_id: String::new(),
            prepay_created_at: paid,
            time_expire: paid,
            transaction_id: Some("4200000000000000000000000000".into()),
            success_time: Some(paid),
            refunded: 0,
            refund_count: 0,
            created_at: paid,
        };
        let bill = TradeBill::from_rows(
            TradeBillKind::All,
            vec![payment_row(&order, TradeBillKind::All)],
        )
        .unwrap();
        let text = bill.to_text().unwrap();
        assert_eq!(
            sha1_hex(text.as_bytes()),
            "a4ee42dd6de909f53a607f3c9805e50ca478fc41",
            "{text}"
        );
    }
}
