//! WeChat Pay bills: the text format shared by the v2 `downloadbill` and the v3 bill downloads.
//!
//! A bill is a Chinese column header line, data lines whose every field starts with a backtick
//! (so that spreadsheets keep long numbers as text), a summary header line and one summary line.
//! Lines end in CRLF; LF alone is accepted. Amounts are yuan strings, parsed exactly into
//! [`Fen`]; the fee has five decimals and is kept exactly as [`MilliFen`]. Times are GMT+8 wall
//! times (`yyyy-MM-dd HH:mm:ss`), kept as [`PrimitiveDateTime`].
//!
//! The parsers and the writers are inverse: writing a parsed bill reproduces its bytes (with CRLF
//! line ends and the canonical header names).

use std::fmt;
use std::io::Read as _;

use time::PrimitiveDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::error::DecodeError;
use crate::money::Fen;

const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

const CRLF: &str = "\r\n";

/// A fee amount in thousandths of a fen (units of 0.00001 yuan), the precision of the bill's
/// `手续费` column. Signed: refund lines can carry a returned fee.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliFen(i64);

impl MilliFen {
    /// Zero.
    pub const ZERO: MilliFen = MilliFen(0);

    /// An amount of `units` thousandths of a fen.
    #[must_use]
    pub const fn new(units: i64) -> Self {
        MilliFen(units)
    }

    /// The amount in thousandths of a fen.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Parses a yuan string with at most five decimals (`"0.00600"`, `"-1.5"`) exactly.
    ///
    /// # Errors
    /// A message naming the problem: not a number, more than five decimals, or overflow.
    pub fn parse_yuan(text: &str) -> Result<Self, String> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
            return Err(format!("{text:?} is not a yuan amount"));
        }
        if frac.len() > 5 {
            return Err(format!("{text:?} has more than five decimals"));
        }
        let overflow = || format!("{text:?} is too large");
        let mut units: i64 = 0;
        for b in whole
            .bytes()
            .chain(frac.bytes())
            .chain(std::iter::repeat_n(b'0', 5 - frac.len()))
        {
            units = units
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        Ok(MilliFen(if negative { -units } else { units }))
    }

    /// The amount as yuan with exactly five decimals, e.g. `"0.00600"` or `"-1.50000"`.
    #[must_use]
    pub fn to_yuan_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:05}", abs / 100_000, abs % 100_000)
    }

    /// `self + other`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: MilliFen) -> Option<MilliFen> {
        self.0.checked_add(other.0).map(MilliFen)
    }
}

impl fmt::Display for MilliFen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yuan_string())
    }
}

/// The layout of a trade bill, told apart by its header line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TradeBillKind {
    /// `bill_type=ALL` for merchants onboarded after 2018 (the "免充值券后" bill): 27 columns and
    /// a 7-field summary.
    All,
    /// The legacy `ALL` layout: the first 24 columns of [`TradeBillKind::All`] and a 5-field
    /// summary.
    AllLegacy,
    /// `bill_type=SUCCESS`: 20 columns, no refund columns.
    Success,
    /// `bill_type=REFUND`: the `ALL` columns with `退款申请时间,退款成功时间` inserted after
    /// `代金券金额` (29 columns).
    Refund,
}

/// One column of a trade bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TradeColumn {
    TradeTime,
    AppId,
    MchId,
    SubMchId,
    DeviceInfo,
    TransactionId,
    OutTradeNo,
    OpenId,
    TradeType,
    TradeState,
    BankType,
    FeeType,
    SettlementTotalFee,
    CouponFee,
    RefundApplyTime,
    RefundSuccessTime,
    RefundId,
    OutRefundNo,
    RefundFee,
    RechargeRefundFee,
    RefundType,
    RefundStatus,
    Body,
    Attach,
    Fee,
    Rate,
    TotalFee,
    RefundApplyFee,
    RateNote,
}

impl TradeColumn {
    fn name(self) -> &'static str {
        use TradeColumn as C;
        match self {
            C::TradeTime => "交易时间",
            C::AppId => "公众账号ID",
            C::MchId => "商户号",
            C::SubMchId => "特约商户号",
            C::DeviceInfo => "设备号",
            C::TransactionId => "微信订单号",
            C::OutTradeNo => "商户订单号",
            C::OpenId => "用户标识",
            C::TradeType => "交易类型",
            C::TradeState => "交易状态",
            C::BankType => "付款银行",
            C::FeeType => "货币种类",
            C::SettlementTotalFee => "应结订单金额",
            C::CouponFee => "代金券金额",
            C::RefundApplyTime => "退款申请时间",
            C::RefundSuccessTime => "退款成功时间",
            C::RefundId => "微信退款单号",
            C::OutRefundNo => "商户退款单号",
            C::RefundFee => "退款金额",
            C::RechargeRefundFee => "充值券退款金额",
            C::RefundType => "退款类型",
            C::RefundStatus => "退款状态",
            C::Body => "商品名称",
            C::Attach => "商户数据包",
            C::Fee => "手续费",
            C::Rate => "费率",
            C::TotalFee => "订单金额",
            C::RefundApplyFee => "申请退款金额",
            C::RateNote => "费率备注",
        }
    }

    /// The column a header name stands for, including the names of the pre-2018 bills.
    fn from_name(name: &str) -> Option<Self> {
        use TradeColumn as C;
        let name = name.trim();
        // The REFUND layout holds every column there is.
        if let Some(c) = REFUND_COLUMNS.into_iter().find(|c| c.name() == name) {
            return Some(c);
        }
        match name {
            "子商户号" => Some(C::SubMchId),
            "总金额" => Some(C::SettlementTotalFee),
            "企业红包金额" | "代金券或立减优惠金额" => Some(C::CouponFee),
            "企业红包退款金额" | "代金券或立减优惠退款金额" => {
                Some(C::RechargeRefundFee)
            }
            _ => None,
        }
    }
}

const ALL_COLUMNS: [TradeColumn; 27] = {
    use TradeColumn as C;
    [
        C::TradeTime,
        C::AppId,
        C::MchId,
        C::SubMchId,
        C::DeviceInfo,
        C::TransactionId,
        C::OutTradeNo,
        C::OpenId,
        C::TradeType,
        C::TradeState,
        C::BankType,
        C::FeeType,
        C::SettlementTotalFee,
        C::CouponFee,
        C::RefundId,
        C::OutRefundNo,
        C::RefundFee,
        C::RechargeRefundFee,
        C::RefundType,
        C::RefundStatus,
        C::Body,
        C::Attach,
        C::Fee,
        C::Rate,
        C::TotalFee,
        C::RefundApplyFee,
        C::RateNote,
    ]
};

const SUCCESS_COLUMNS: [TradeColumn; 20] = {
    use TradeColumn as C;
    [
        C::TradeTime,
        C::AppId,
        C::MchId,
        C::SubMchId,
        C::DeviceInfo,
        C::TransactionId,
        C::OutTradeNo,
        C::OpenId,
        C::TradeType,
        C::TradeState,
        C::BankType,
        C::FeeType,
        C::SettlementTotalFee,
        C::CouponFee,
        C::Body,
        C::Attach,
        C::Fee,
        C::Rate,
        C::TotalFee,
        C::RateNote,
    ]
};

const REFUND_COLUMNS: [TradeColumn; 29] = {
    use TradeColumn as C;
    [
        C::TradeTime,
        C::AppId,
        C::MchId,
        C::SubMchId,
        C::DeviceInfo,
        C::TransactionId,
        C::OutTradeNo,
        C::OpenId,
        C::TradeType,
        C::TradeState,
        C::BankType,
        C::FeeType,
        C::SettlementTotalFee,
        C::CouponFee,
        C::RefundApplyTime,
        C::RefundSuccessTime,
        C::RefundId,
        C::OutRefundNo,
        C::RefundFee,
        C::RechargeRefundFee,
        C::RefundType,
        C::RefundStatus,
        C::Body,
        C::Attach,
        C::Fee,
        C::Rate,
        C::TotalFee,
        C::RefundApplyFee,
        C::RateNote,
    ]
};

/// One field of a trade bill's summary line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SummaryColumn {
    Count,
    SettlementTotal,
    RefundTotal,
    RechargeRefundTotal,
    FeeTotal,
    OrderTotal,
    RefundApplyTotal,
}

impl SummaryColumn {
    const ALL: [SummaryColumn; 7] = [
        SummaryColumn::Count,
        SummaryColumn::SettlementTotal,
        SummaryColumn::RefundTotal,
        SummaryColumn::RechargeRefundTotal,
        SummaryColumn::FeeTotal,
        SummaryColumn::OrderTotal,
        SummaryColumn::RefundApplyTotal,
    ];

    fn name(self) -> &'static str {
        match self {
            SummaryColumn::Count => "总交易单数",
            SummaryColumn::SettlementTotal => "应结订单总金额",
            SummaryColumn::RefundTotal => "退款总金额",
            SummaryColumn::RechargeRefundTotal => "充值券退款总金额",
            SummaryColumn::FeeTotal => "手续费总金额",
            SummaryColumn::OrderTotal => "订单总金额",
            SummaryColumn::RefundApplyTotal => "申请退款总金额",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        if let Some(c) = Self::ALL.into_iter().find(|c| c.name() == name) {
            return Some(c);
        }
        match name {
            "总交易额" => Some(SummaryColumn::SettlementTotal),
            "总退款金额" => Some(SummaryColumn::RefundTotal),
            "总企业红包退款金额" | "总代金券或立减优惠退款金额" => {
                Some(SummaryColumn::RechargeRefundTotal)
            }
            _ => None,
        }
    }
}

impl TradeBillKind {
    const KINDS: [TradeBillKind; 4] = [
        TradeBillKind::All,
        TradeBillKind::AllLegacy,
        TradeBillKind::Success,
        TradeBillKind::Refund,
    ];

    fn columns(self) -> &'static [TradeColumn] {
        match self {
            TradeBillKind::All => &ALL_COLUMNS,
            TradeBillKind::AllLegacy => &ALL_COLUMNS[..24],
            TradeBillKind::Success => &SUCCESS_COLUMNS,
            TradeBillKind::Refund => &REFUND_COLUMNS,
        }
    }

    fn summary_columns(self) -> &'static [SummaryColumn] {
        match self {
            TradeBillKind::AllLegacy => &SummaryColumn::ALL[..5],
            TradeBillKind::All | TradeBillKind::Success | TradeBillKind::Refund => {
                &SummaryColumn::ALL
            }
        }
    }

    #[cfg(test)]
    fn has(self, column: TradeColumn) -> bool {
        self.columns().contains(&column)
    }

    /// The number of columns of a data line.
    #[must_use]
    pub fn column_count(self) -> usize {
        self.columns().len()
    }

    /// The header line (without its line end), as WeChat writes it.
    #[must_use]
    pub fn header_line(self) -> String {
        join_names(self.columns().iter().map(|c| c.name()))
    }

    /// The summary header line (without its line end).
    #[must_use]
    pub fn summary_header_line(self) -> String {
        join_names(self.summary_columns().iter().map(|c| c.name()))
    }

    /// The `bill_type` that yields this layout.
    #[must_use]
    pub fn bill_type(self) -> &'static str {
        match self {
            TradeBillKind::All | TradeBillKind::AllLegacy => "ALL",
            TradeBillKind::Success => "SUCCESS",
            TradeBillKind::Refund => "REFUND",
        }
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(",")
}

/// One data line of a trade bill. Fields whose column the bill's layout lacks are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeBillRow {
    /// `交易时间`, GMT+8 wall time.
    pub trade_time: PrimitiveDateTime,
    /// `公众账号ID`.
    pub appid: String,
    /// `商户号`.
    pub mch_id: String,
    /// `特约商户号` (`0` for a direct merchant).
    pub sub_mch_id: String,
    /// `设备号`.
    pub device_info: String,
    /// `微信订单号`.
    pub transaction_id: String,
    /// `商户订单号`.
    pub out_trade_no: String,
    /// `用户标识` (openid).
    pub openid: String,
    /// `交易类型` (`JSAPI`, ...).
    pub trade_type: String,
    /// `交易状态` (`SUCCESS`, `REFUND`, `REVOKED`).
    pub trade_state: String,
    /// `付款银行`.
    pub bank_type: String,
    /// `货币种类`.
    pub fee_type: String,
    /// `应结订单金额`.
    pub settlement_total_fee: Fen,
    /// `代金券金额`.
    pub coupon_fee: Fen,
    /// `退款申请时间` (REFUND bills only; `None` when empty).
    pub refund_apply_time: Option<PrimitiveDateTime>,
    /// `退款成功时间` (REFUND bills only; `None` when empty).
    pub refund_success_time: Option<PrimitiveDateTime>,
    /// `微信退款单号` (`0` on payment lines of an ALL bill).
    pub refund_id: Option<String>,
    /// `商户退款单号`.
    pub out_refund_no: Option<String>,
    /// `退款金额`.
    pub refund_fee: Option<Fen>,
    /// `充值券退款金额`.
    pub recharge_refund_fee: Option<Fen>,
    /// `退款类型`.
    pub refund_type: Option<String>,
    /// `退款状态`.
    pub refund_status: Option<String>,
    /// `商品名称`.
    pub body: String,
    /// `商户数据包` (the order's attach).
    pub attach: String,
    /// `手续费`, five decimals.
    pub fee: MilliFen,
    /// `费率`, as written (`0.60%`).
    pub rate: String,
    /// `订单金额` (not in the legacy layout).
    pub total_fee: Option<Fen>,
    /// `申请退款金额` (ALL and REFUND).
    pub refund_apply_fee: Option<Fen>,
    /// `费率备注` (not in the legacy layout).
    pub rate_note: Option<String>,
}

impl TradeBillRow {
    fn cell(&self, column: TradeColumn) -> String {
        use TradeColumn as C;
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let fen = |f: Option<Fen>| f.unwrap_or(Fen::ZERO).to_yuan_string();
        let time = |t: Option<PrimitiveDateTime>| t.map(format_time).unwrap_or_default();
        match column {
            C::TradeTime => format_time(self.trade_time),
            C::AppId => self.appid.clone(),
            C::MchId => self.mch_id.clone(),
            C::SubMchId => self.sub_mch_id.clone(),
            C::DeviceInfo => self.device_info.clone(),
            C::TransactionId => self.transaction_id.clone(),
            C::OutTradeNo => self.out_trade_no.clone(),
            C::OpenId => self.openid.clone(),
            C::TradeType => self.trade_type.clone(),
            C::TradeState => self.trade_state.clone(),
            C::BankType => self.bank_type.clone(),
            C::FeeType => self.fee_type.clone(),
            C::SettlementTotalFee => self.settlement_total_fee.to_yuan_string(),
            C::CouponFee => self.coupon_fee.to_yuan_string(),
            C::RefundApplyTime => time(self.refund_apply_time),
            C::RefundSuccessTime => time(self.refund_success_time),
            C::RefundId => text(&self.refund_id),
            C::OutRefundNo => text(&self.out_refund_no),
            C::RefundFee => fen(self.refund_fee),
            C::RechargeRefundFee => fen(self.recharge_refund_fee),
            C::RefundType => text(&self.refund_type),
            C::RefundStatus => text(&self.refund_status),
            C::Body => self.body.clone(),
            C::Attach => self.attach.clone(),
            C::Fee => self.fee.to_yuan_string(),
            C::Rate => self.rate.clone(),
            C::TotalFee => fen(self.total_fee),
            C::RefundApplyFee => fen(self.refund_apply_fee),
            C::RateNote => text(&self.rate_note),
        }
    }

    fn parse(kind: TradeBillKind, fields: &[&str], line: usize) -> Result<Self, DecodeError> {
        use TradeColumn as C;
        let columns = kind.columns();
        let get = |c: TradeColumn| -> Option<&str> {
            columns.iter().position(|x| *x == c).map(|i| fields[i])
        };
        // Every column read with `req` is in every layout.
        let req = |c: TradeColumn| get(c).unwrap_or_default();
        let text = |c: TradeColumn| req(c).to_owned();
        let opt_text = |c: TradeColumn| get(c).map(str::to_owned);
        let fen = |c: TradeColumn| parse_fen(req(c), c.name(), line);
        let opt_fen = |c: TradeColumn| get(c).map(|t| parse_fen(t, c.name(), line)).transpose();
        let opt_time = |c: TradeColumn| match get(c) {
            None | Some("") => Ok(None),
            Some(t) => parse_time(t, c.name(), line).map(Some),
        };
        Ok(TradeBillRow {
            trade_time: parse_time(req(C::TradeTime), C::TradeTime.name(), line)?,
            appid: text(C::AppId),
            mch_id: text(C::MchId),
            sub_mch_id: text(C::SubMchId),
            device_info: text(C::DeviceInfo),
            transaction_id: text(C::TransactionId),
            out_trade_no: text(C::OutTradeNo),
            openid: text(C::OpenId),
            trade_type: text(C::TradeType),
            trade_state: text(C::TradeState),
            bank_type: text(C::BankType),
            fee_type: text(C::FeeType),
            settlement_total_fee: fen(C::SettlementTotalFee)?,
            coupon_fee: fen(C::CouponFee)?,
            refund_apply_time: opt_time(C::RefundApplyTime)?,
            refund_success_time: opt_time(C::RefundSuccessTime)?,
            refund_id: opt_text(C::RefundId),
            out_refund_no: opt_text(C::OutRefundNo),
            refund_fee: opt_fen(C::RefundFee)?,
            recharge_refund_fee: opt_fen(C::RechargeRefundFee)?,
            refund_type: opt_text(C::RefundType),
            refund_status: opt_text(C::RefundStatus),
            body: text(C::Body),
            attach: text(C::Attach),
            fee: parse_milli_fen(req(C::Fee), C::Fee.name(), line)?,
            rate: text(C::Rate),
            total_fee: opt_fen(C::TotalFee)?,
            refund_apply_fee: opt_fen(C::RefundApplyFee)?,
            rate_note: opt_text(C::RateNote),
        })
    }
}

/// The summary line of a trade bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeBillSummary {
    /// `总交易单数`.
    pub total_count: u64,
    /// `应结订单总金额`.
    pub settlement_total_fee: Fen,
    /// `退款总金额`.
    pub refund_fee: Fen,
    /// `充值券退款总金额`.
    pub recharge_refund_fee: Fen,
    /// `手续费总金额`.
    pub fee: MilliFen,
    /// `订单总金额` (not in the legacy layout).
    pub total_fee: Option<Fen>,
    /// `申请退款总金额` (not in the legacy layout).
    pub refund_apply_fee: Option<Fen>,
}

impl TradeBillSummary {
    /// The summary of `rows` as WeChat computes it: the number of lines and the sum of each
    /// amount column. The optional totals are `Some` exactly when the layout has them.
    ///
    /// # Errors
    /// [`DecodeError::Bill`] when a sum overflows.
    pub fn from_rows(kind: TradeBillKind, rows: &[TradeBillRow]) -> Result<Self, DecodeError> {
        let overflow = || DecodeError::Bill("summary: a total overflows".into());
        let sum = |f: &dyn Fn(&TradeBillRow) -> Fen| {
            rows.iter()
                .try_fold(Fen::ZERO, |acc, r| acc.checked_add(f(r)))
                .ok_or_else(overflow)
        };
        let has_summary = |c: SummaryColumn| kind.summary_columns().contains(&c);
        let fee = rows
            .iter()
            .try_fold(MilliFen::ZERO, |acc, r| acc.checked_add(r.fee))
            .ok_or_else(overflow)?;
        Ok(TradeBillSummary {
            total_count: rows.len() as u64,
            settlement_total_fee: sum(&|r| r.settlement_total_fee)?,
            refund_fee: sum(&|r| r.refund_fee.unwrap_or(Fen::ZERO))?,
            recharge_refund_fee: sum(&|r| r.recharge_refund_fee.unwrap_or(Fen::ZERO))?,
            fee,
            total_fee: if has_summary(SummaryColumn::OrderTotal) {
                Some(sum(&|r| r.total_fee.unwrap_or(Fen::ZERO))?)
            } else {
                None
            },
            refund_apply_fee: if has_summary(SummaryColumn::RefundApplyTotal) {
                Some(sum(&|r| r.refund_apply_fee.unwrap_or(Fen::ZERO))?)
            } else {
                None
            },
        })
    }

    fn cell(&self, column: SummaryColumn) -> String {
        match column {
            SummaryColumn::Count => self.total_count.to_string(),
            SummaryColumn::SettlementTotal => self.settlement_total_fee.to_yuan_string(),
            SummaryColumn::RefundTotal => self.refund_fee.to_yuan_string(),
            SummaryColumn::RechargeRefundTotal => self.recharge_refund_fee.to_yuan_string(),
            SummaryColumn::FeeTotal => self.fee.to_yuan_string(),
            SummaryColumn::OrderTotal => self.total_fee.unwrap_or(Fen::ZERO).to_yuan_string(),
            SummaryColumn::RefundApplyTotal => {
                self.refund_apply_fee.unwrap_or(Fen::ZERO).to_yuan_string()
            }
        }
    }

    fn parse(kind: TradeBillKind, fields: &[&str], line: usize) -> Result<Self, DecodeError> {
        let columns = kind.summary_columns();
        let get = |c: SummaryColumn| columns.iter().position(|x| *x == c).map(|i| fields[i]);
        let fen = |c: SummaryColumn| parse_fen(get(c).unwrap_or_default(), c.name(), line);
        let opt_fen = |c: SummaryColumn| get(c).map(|t| parse_fen(t, c.name(), line)).transpose();
        let count_text = get(SummaryColumn::Count).unwrap_or_default();
        let total_count = parse_count(count_text, SummaryColumn::Count.name(), line)?;
        Ok(TradeBillSummary {
            total_count,
            settlement_total_fee: fen(SummaryColumn::SettlementTotal)?,
            refund_fee: fen(SummaryColumn::RefundTotal)?,
            recharge_refund_fee: fen(SummaryColumn::RechargeRefundTotal)?,
            fee: parse_milli_fen(
                get(SummaryColumn::FeeTotal).unwrap_or_default(),
                SummaryColumn::FeeTotal.name(),
                line,
            )?,
            total_fee: opt_fen(SummaryColumn::OrderTotal)?,
            refund_apply_fee: opt_fen(SummaryColumn::RefundApplyTotal)?,
        })
    }
}

/// A parsed trade bill (`downloadbill`, v3 `tradebill`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeBill {
    /// The layout, from the header line.
    pub kind: TradeBillKind,
    /// The data lines, in bill order.
    pub rows: Vec<TradeBillRow>,
    /// The summary line.
    pub summary: TradeBillSummary,
}

impl TradeBill {
    /// A bill of `rows` with the summary computed from them.
    ///
    /// # Errors
    /// [`DecodeError::Bill`] when a total overflows.
    pub fn from_rows(kind: TradeBillKind, rows: Vec<TradeBillRow>) -> Result<Self, DecodeError> {
        let summary = TradeBillSummary::from_rows(kind, &rows)?;
        Ok(TradeBill {
            kind,
            rows,
            summary,
        })
    }

    /// The bill text exactly as WeChat serves it: CRLF line ends, every data field prefixed
    /// with a backtick, columns the layout lacks left out.
    ///
    /// # Errors
    /// [`DecodeError::Bill`] when a text field cannot be written unambiguously: it holds a line
    /// break or the field separator `` ,` ``.
    pub fn to_text(&self) -> Result<String, DecodeError> {
        let mut out = String::with_capacity(512 + self.rows.len() * 320);
        out.push_str(&self.kind.header_line());
        out.push_str(CRLF);
        for (i, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = self.kind.columns().iter().map(|c| row.cell(*c)).collect();
            write_fields(&mut out, &cells, i + 2)?;
        }
        out.push_str(&self.kind.summary_header_line());
        out.push_str(CRLF);
        let cells: Vec<String> = self
            .kind
            .summary_columns()
            .iter()
            .map(|c| self.summary.cell(*c))
            .collect();
        write_fields(&mut out, &cells, self.rows.len() + 3)?;
        Ok(out)
    }
}

/// Parses a trade bill, telling its layout from the header line. The names of the pre-2018
/// bills (`总金额`, `企业红包金额`, ...) are accepted for their columns.
///
/// # Errors
/// [`DecodeError::Bill`] naming the line and the problem: an unknown header, a field without its
/// backtick, a wrong field count, a time or amount that does not parse, a missing summary.
pub fn parse_trade_bill(text: &str) -> Result<TradeBill, DecodeError> {
    let lines = split_lines(text)?;
    let (header, rest) = lines
        .split_first()
        .ok_or_else(|| DecodeError::Bill("the bill is empty".into()))?;
    let names = split_header(header);
    let columns: Option<Vec<TradeColumn>> =
        names.iter().map(|n| TradeColumn::from_name(n)).collect();
    let kind = columns
        .and_then(|cols| {
            TradeBillKind::KINDS
                .into_iter()
                .find(|k| k.columns() == cols.as_slice())
        })
        .ok_or_else(|| {
            DecodeError::Bill(format!(
                "line 1: not a known trade bill header ({} columns, starting with {:?})",
                names.len(),
                names.first().copied().unwrap_or_default()
            ))
        })?;
    let (data, summary_header, tail) = split_body(rest)?;
    let mut rows = Vec::with_capacity(data.len());
    for (i, line) in data.iter().enumerate() {
        let number = i + 2;
        let fields = split_fields(line, kind.column_count(), number)?;
        rows.push(TradeBillRow::parse(kind, &fields, number)?);
    }
    let summary_number = data.len() + 2;
    let names = split_header(summary_header);
    let summary_columns: Option<Vec<SummaryColumn>> =
        names.iter().map(|n| SummaryColumn::from_name(n)).collect();
    if summary_columns.as_deref() != Some(kind.summary_columns()) {
        return Err(DecodeError::Bill(format!(
            "line {summary_number}: expected the summary header {:?}",
            kind.summary_header_line()
        )));
    }
    let summary = summary_line(tail, summary_number)?;
    let fields = split_fields(summary, kind.summary_columns().len(), summary_number + 1)?;
    let summary = TradeBillSummary::parse(kind, &fields, summary_number + 1)?;
    Ok(TradeBill {
        kind,
        rows,
        summary,
    })
}

/// `收支类型` of a fund-flow line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FundFlowDirection {
    /// `收入`.
    Income,
    /// `支出`.
    Expense,
    /// Any other value, as written.
    Unknown(String),
}

impl FundFlowDirection {
    /// The value of a bill field.
    #[must_use]
    pub fn from_text(text: &str) -> Self {
        match text {
            "收入" => FundFlowDirection::Income,
            "支出" => FundFlowDirection::Expense,
            other => FundFlowDirection::Unknown(other.to_owned()),
        }
    }

    /// The text WeChat writes.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            FundFlowDirection::Income => "收入",
            FundFlowDirection::Expense => "支出",
            FundFlowDirection::Unknown(s) => s,
        }
    }
}

const FUND_FLOW_HEADER: [&str; 11] = [
    "记账时间",
    "微信支付业务单号",
    "资金流水单号",
    "业务名称",
    "业务类型",
    "收支类型",
    "收支金额（元）",
    "账户结余（元）",
    "资金变更提交申请人",
    "备注",
    "业务凭证号",
];

const FUND_FLOW_SUMMARY_HEADER: [&str; 5] = [
    "资金流水总笔数",
    "收入笔数",
    "收入金额",
    "支出笔数",
    "支出金额",
];

/// One line of a fund-flow bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundFlowRow {
    /// `记账时间`, GMT+8 wall time.
    pub booking_time: PrimitiveDateTime,
    /// `微信支付业务单号`.
    pub business_no: String,
    /// `资金流水单号`.
    pub flow_no: String,
    /// `业务名称`.
    pub business_name: String,
    /// `业务类型` (`交易`, `退款`, `扣除交易手续费`, ...).
    pub business_type: String,
    /// `收支类型`.
    pub direction: FundFlowDirection,
    /// `收支金额（元）`.
    pub amount: Fen,
    /// `账户结余（元）`.
    pub balance: Fen,
    /// `资金变更提交申请人`.
    pub applicant: String,
    /// `备注`.
    pub remark: String,
    /// `业务凭证号`.
    pub voucher_no: String,
}

impl FundFlowRow {
    fn cells(&self) -> Vec<String> {
        vec![
            format_time(self.booking_time),
            self.business_no.clone(),
            self.flow_no.clone(),
            self.business_name.clone(),
            self.business_type.clone(),
            self.direction.as_str().to_owned(),
            self.amount.to_yuan_string(),
            self.balance.to_yuan_string(),
            self.applicant.clone(),
            self.remark.clone(),
            self.voucher_no.clone(),
        ]
    }

    fn parse(f: &[&str], line: usize) -> Result<Self, DecodeError> {
        Ok(FundFlowRow {
            booking_time: parse_time(f[0], FUND_FLOW_HEADER[0], line)?,
            business_no: f[1].to_owned(),
            flow_no: f[2].to_owned(),
            business_name: f[3].to_owned(),
            business_type: f[4].to_owned(),
            direction: FundFlowDirection::from_text(f[5]),
            amount: parse_fen(f[6], FUND_FLOW_HEADER[6], line)?,
            balance: parse_fen(f[7], FUND_FLOW_HEADER[7], line)?,
            applicant: f[8].to_owned(),
            remark: f[9].to_owned(),
            voucher_no: f[10].to_owned(),
        })
    }
}

/// The summary line of a fund-flow bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundFlowSummary {
    /// `资金流水总笔数`.
    pub total_count: u64,
    /// `收入笔数`.
    pub income_count: u64,
    /// `收入金额`.
    pub income: Fen,
    /// `支出笔数`.
    pub expense_count: u64,
    /// `支出金额`.
    pub expense: Fen,
}

impl FundFlowSummary {
    /// The summary of `rows`: counts and sums by direction.
    ///
    /// # Errors
    /// [`DecodeError::Bill`] when a sum overflows.
    pub fn from_rows(rows: &[FundFlowRow]) -> Result<Self, DecodeError> {
        let mut summary = FundFlowSummary {
            total_count: rows.len() as u64,
            income_count: 0,
            income: Fen::ZERO,
            expense_count: 0,
            expense: Fen::ZERO,
        };
        let overflow = || DecodeError::Bill("summary: a total overflows".into());
        for row in rows {
            match row.direction {
                FundFlowDirection::Income => {
                    summary.income_count += 1;
                    summary.income = summary
                        .income
                        .checked_add(row.amount)
                        .ok_or_else(overflow)?;
                }
                FundFlowDirection::Expense => {
                    summary.expense_count += 1;
                    summary.expense = summary
                        .expense
                        .checked_add(row.amount)
                        .ok_or_else(overflow)?;
                }
                FundFlowDirection::Unknown(_) => {}
            }
        }
        Ok(summary)
    }
}

/// A parsed fund-flow bill (`downloadfundflow`, v3 `fundflowbill`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundFlowBill {
    /// The lines, in bill order.
    pub rows: Vec<FundFlowRow>,
    /// The summary line.
    pub summary: FundFlowSummary,
}

impl FundFlowBill {
    /// A bill of `rows` with the summary computed from them.
    ///
    /// # Errors
    /// [`DecodeError::Bill`] when a total overflows.
    pub fn from_rows(rows: Vec<FundFlowRow>) -> Result<Self, DecodeError> {
        let summary = FundFlowSummary::from_rows(&rows)?;
        Ok(FundFlowBill { rows, summary })
    }

    /// The bill text as WeChat serves it (CRLF, backtick-prefixed fields).
    ///
    /// # Errors
    /// [`DecodeError::Bill`] when a text field holds a line break or the separator `` ,` ``.
    pub fn to_text(&self) -> Result<String, DecodeError> {
        let mut out = String::with_capacity(256 + self.rows.len() * 200);
        out.push_str(&FUND_FLOW_HEADER.join(","));
        out.push_str(CRLF);
        for (i, row) in self.rows.iter().enumerate() {
            write_fields(&mut out, &row.cells(), i + 2)?;
        }
        out.push_str(&FUND_FLOW_SUMMARY_HEADER.join(","));
        out.push_str(CRLF);
        let s = &self.summary;
        let cells = [
            s.total_count.to_string(),
            s.income_count.to_string(),
            s.income.to_yuan_string(),
            s.expense_count.to_string(),
            s.expense.to_yuan_string(),
        ];
        write_fields(&mut out, &cells, self.rows.len() + 3)?;
        Ok(out)
    }
}

/// Parses a fund-flow bill.
///
/// # Errors
/// [`DecodeError::Bill`] naming the line and the problem.
pub fn parse_fund_flow_bill(text: &str) -> Result<FundFlowBill, DecodeError> {
    let lines = split_lines(text)?;
    let (header, rest) = lines
        .split_first()
        .ok_or_else(|| DecodeError::Bill("the bill is empty".into()))?;
    let normalize = |n: &str| n.trim().replace('(', "（").replace(')', "）");
    let names: Vec<String> = split_header(header).into_iter().map(normalize).collect();
    if names != FUND_FLOW_HEADER {
        return Err(DecodeError::Bill(format!(
            "line 1: not a fund-flow bill header ({} columns, starting with {:?})",
            names.len(),
            names.first().cloned().unwrap_or_default()
        )));
    }
    let (data, summary_header, tail) = split_body(rest)?;
    let mut rows = Vec::with_capacity(data.len());
    for (i, line) in data.iter().enumerate() {
        let fields = split_fields(line, FUND_FLOW_HEADER.len(), i + 2)?;
        rows.push(FundFlowRow::parse(&fields, i + 2)?);
    }
    let number = data.len() + 2;
    let names: Vec<String> = split_header(summary_header)
        .into_iter()
        .map(normalize)
        .collect();
    if names != FUND_FLOW_SUMMARY_HEADER {
        return Err(DecodeError::Bill(format!(
            "line {number}: expected the summary header {:?}",
            FUND_FLOW_SUMMARY_HEADER.join(",")
        )));
    }
    let summary = summary_line(tail, number)?;
    let f = split_fields(summary, FUND_FLOW_SUMMARY_HEADER.len(), number + 1)?;
    let h = FUND_FLOW_SUMMARY_HEADER;
    let summary = FundFlowSummary {
        total_count: parse_count(f[0], h[0], number + 1)?,
        income_count: parse_count(f[1], h[1], number + 1)?,
        income: parse_fen(f[2], h[2], number + 1)?,
        expense_count: parse_count(f[3], h[3], number + 1)?,
        expense: parse_fen(f[4], h[4], number + 1)?,
    };
    Ok(FundFlowBill { rows, summary })
}

/// Decompresses a gzip body, refusing output over `limit` bytes (a small gzip can inflate to
/// gigabytes).
///
/// # Errors
/// [`DecodeError::Bill`] for data that is not gzip or is corrupt, or output over `limit`.
pub fn gunzip_limited(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Bill(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::Bill(format!(
            "gzip: the decompressed bill is over the {limit} byte limit"
        )));
    }
    Ok(out)
}

/// Whether `bytes` start with the gzip magic `1f 8b`.
#[must_use]
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// A downloaded bill body as text: gunzipped (under `limit`) when it is gzip, then UTF-8.
///
/// # Errors
/// As [`gunzip_limited`], or [`DecodeError::NotUtf8`].
pub fn bill_text(bytes: &[u8], limit: usize) -> Result<String, DecodeError> {
    let raw = if is_gzip(bytes) {
        gunzip_limited(bytes, limit)?
    } else if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    } else {
        bytes.to_vec()
    };
    String::from_utf8(raw).map_err(|_| DecodeError::NotUtf8)
}

/// Lowercase hex SHA-1, the `hash_value` of a v3 bill (over the decompressed bill).
#[must_use]
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref(),
    )
}

fn format_time(t: PrimitiveDateTime) -> String {
    // The format has only numeric components, so formatting cannot fail for years 0..=9999;
    // other years have no place in a bill and are written in ISO form.
    t.format(TIME_FORMAT).unwrap_or_else(|_| t.to_string())
}

fn parse_time(text: &str, field: &str, line: usize) -> Result<PrimitiveDateTime, DecodeError> {
    PrimitiveDateTime::parse(text, TIME_FORMAT).map_err(|_| {
        DecodeError::Bill(format!(
            "line {line}: {field} {text:?} is not a yyyy-MM-dd HH:mm:ss time"
        ))
    })
}

fn parse_fen(text: &str, field: &str, line: usize) -> Result<Fen, DecodeError> {
    Fen::parse_yuan(text).map_err(|e| DecodeError::Bill(format!("line {line}: {field}: {e}")))
}

fn parse_milli_fen(text: &str, field: &str, line: usize) -> Result<MilliFen, DecodeError> {
    MilliFen::parse_yuan(text).map_err(|e| DecodeError::Bill(format!("line {line}: {field}: {e}")))
}

fn parse_count(text: &str, field: &str, line: usize) -> Result<u64, DecodeError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::Bill(format!(
            "line {line}: {field} {text:?} is not a count"
        )));
    }
    text.parse()
        .map_err(|_| DecodeError::Bill(format!("line {line}: {field} {text:?} is too large")))
}

/// The lines of a bill without their line ends; a BOM and trailing empty lines are dropped.
fn split_lines(text: &str) -> Result<Vec<&str>, DecodeError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if let Some(i) = lines.iter().position(|l| l.is_empty()) {
        return Err(DecodeError::Bill(format!(
            "line {}: empty line inside the bill",
            i + 1
        )));
    }
    if let Some(i) = lines.iter().position(|l| l.contains('\r')) {
        return Err(DecodeError::Bill(format!(
            "line {}: stray carriage return",
            i + 1
        )));
    }
    Ok(lines)
}

fn split_header(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// Splits the lines after the header into data lines, the summary header and what follows it.
/// Data lines start with a backtick; the summary header is the first line that does not.
fn split_body<'a>(
    rest: &'a [&'a str],
) -> Result<(&'a [&'a str], &'a str, &'a [&'a str]), DecodeError> {
    let at = rest
        .iter()
        .position(|l| !l.starts_with('`'))
        .ok_or_else(|| {
            DecodeError::Bill(format!(
                "line {}: the summary header is missing",
                rest.len() + 2
            ))
        })?;
    Ok((&rest[..at], rest[at], &rest[at + 1..]))
}

/// The one summary line after the summary header at line `header_line`.
fn summary_line<'a>(tail: &[&'a str], header_line: usize) -> Result<&'a str, DecodeError> {
    match tail {
        [summary] => Ok(summary),
        [] => Err(DecodeError::Bill(format!(
            "line {}: the summary line is missing",
            header_line + 1
        ))),
        [_, ..] => Err(DecodeError::Bill(format!(
            "line {}: unexpected content after the summary line",
            header_line + 2
        ))),
    }
}

/// The fields of a data or summary line: each starts with a backtick, and they are separated
/// by `` ,` `` (a plain comma may occur inside a field).
fn split_fields(line: &str, expected: usize, number: usize) -> Result<Vec<&str>, DecodeError> {
    let body = line.strip_prefix('`').ok_or_else(|| {
        DecodeError::Bill(format!(
            "line {number}: the first field does not start with a backtick"
        ))
    })?;
    let fields: Vec<&str> = body.split(",`").collect();
    if fields.len() != expected {
        return Err(DecodeError::Bill(format!(
            "line {number}: expected {expected} backtick-prefixed fields, found {}",
            fields.len()
        )));
    }
    Ok(fields)
}

fn write_fields(out: &mut String, cells: &[String], number: usize) -> Result<(), DecodeError> {
    for (i, cell) in cells.iter().enumerate() {
        if cell.contains(['\r', '\n']) || cell.contains(",`") {
            return Err(DecodeError::Bill(format!(
                "line {number}: field {} holds a line break or \",`\" and cannot be written",
                i + 1
            )));
        }
        // A trailing comma would merge with the next field's backtick into the separator.
        if i + 1 < cells.len() && cell.ends_with(',') {
            return Err(DecodeError::Bill(format!(
                "line {number}: field {} ends with a comma and cannot be written",
                i + 1
            )));
        }
        if i > 0 {
            out.push(',');
        }
        out.push('`');
        out.push_str(cell);
    }
    out.push_str(CRLF);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const D12_ROW: &str = "`2019-06-11 10:00:00,`wxd678efh567hg6787,`1230000109,`0,`,`4200000000000000000000000000,`1217752501201407033233368018,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`test,`,`0.00600,`0.60%,`1.00,`0.00,`";
    const D12_SUMMARY: &str = "`1,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00";

    fn d12_text() -> String {
        [
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",
            D12_ROW,
            "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
            D12_SUMMARY,
        ]
        .iter()
        .map(|l| format!("{l}\r\n"))
        .collect()
    }

    fn d12_row() -> TradeBillRow {
        TradeBillRow {
            trade_time: datetime!(2019-06-11 10:00:00),
            appid: "wxd678efh567hg6787".into(),
            mch_id: "1230000109".into(),
            sub_mch_id: "0".into(),
            device_info: String::new(),
            transaction_id: "4200000000000000000000000000".into(),
            out_trade_no: "1217752501201407033233368018".into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            trade_type: "JSAPI".into(),
            trade_state: "SUCCESS".into(),
            bank_type: "OTHERS".into(),
            fee_type: "CNY".into(),
            settlement_total_fee: Fen::new(100),
            coupon_fee: Fen::ZERO,
            refund_apply_time: None,
            refund_success_time: None,
            refund_id: Some("0".into()),
            out_refund_no: Some("0".into()),
            refund_fee: Some(Fen::ZERO),
            recharge_refund_fee: Some(Fen::ZERO),
            refund_type: Some(String::new()),
            refund_status: Some(String::new()),
            body: "test".into(),
            attach: String::new(),
            fee: MilliFen::new(600),
            rate: "0.60%".into(),
            total_fee: Some(Fen::new(100)),
            refund_apply_fee: Some(Fen::ZERO),
            rate_note: Some(String::new()),
        }
    }

    #[test]
    fn d12_bill_is_written_byte_for_byte() {
        let bill = TradeBill::from_rows(TradeBillKind::All, vec![d12_row()]).unwrap();
        let text = bill.to_text().unwrap();
        assert_eq!(text, d12_text());
        assert_eq!(
            sha1_hex(text.as_bytes()),
            "a4ee42dd6de909f53a607f3c9805e50ca478fc41"
        );
    }

    #[test]
    fn d12_bill_parses_into_typed_rows() {
        let bill = parse_trade_bill(&d12_text()).unwrap();
        assert_eq!(bill.kind, TradeBillKind::All);
        assert_eq!(bill.rows, vec![d12_row()]);
        assert_eq!(bill.summary.total_count, 1);
        assert_eq!(bill.summary.fee, MilliFen::new(600));
        assert_eq!(bill.summary.total_fee, Some(Fen::new(100)));
        // LF line ends are accepted and change nothing.
        let lf = d12_text().replace("\r\n", "\n");
        assert_eq!(parse_trade_bill(&lf).unwrap(), bill);
        // A BOM and trailing blank lines are tolerated.
        assert_eq!(
            parse_trade_bill(&format!("\u{feff}{}\r\n\r\n", d12_text())).unwrap(),
            bill
        );
    }

    #[test]
    fn legacy_success_and_refund_layouts_are_detected() {
        let legacy_header = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,企业红包金额,微信退款单号,商户退款单号,退款金额,企业红包退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率";
        let legacy = format!(
            "{legacy_header}\n`2019-06-11 10:00:00,`wx1,`123,`0,`,`42,`T1,`o1,`JSAPI,`REFUND,`CMB_CREDIT,`CNY,`0.00,`0.00,`5000,`R1,`0.50,`0.00,`ORIGINAL,`SUCCESS,`a,b,`,`-0.00300,`0.60%\n总交易单数,总交易额,总退款金额,总企业红包退款金额,手续费总金额\n`1,`0.00,`0.50,`0.00,`-0.00300\n"
        );
        let bill = parse_trade_bill(&legacy).unwrap();
        assert_eq!(bill.kind, TradeBillKind::AllLegacy);
        let row = &bill.rows[0];
        assert_eq!(row.body, "a,b", "a plain comma inside a field is kept");
        assert_eq!(row.fee, MilliFen::new(-300));
        assert_eq!(row.refund_fee, Some(Fen::new(50)));
        assert_eq!(row.total_fee, None);
        assert_eq!(bill.summary.total_fee, None);
        assert_eq!(
            bill.summary,
            TradeBillSummary::from_rows(bill.kind, &bill.rows).unwrap()
        );
        // Written back with the canonical names, and read again to the same bill.
        let again = parse_trade_bill(&bill.to_text().unwrap()).unwrap();
        assert_eq!(again, bill);

        let mut row = d12_row();
        row.refund_id = None;
        row.out_refund_no = None;
        row.refund_fee = None;
        row.recharge_refund_fee = None;
        row.refund_type = None;
        row.refund_status = None;
        row.refund_apply_fee = None;
        let success = TradeBill::from_rows(TradeBillKind::Success, vec![row]).unwrap();
        let text = success.to_text().unwrap();
        assert!(text.starts_with("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注\r\n"));
        assert_eq!(parse_trade_bill(&text).unwrap(), success);

        let mut row = d12_row();
        row.trade_state = "REFUND".into();
        row.refund_apply_time = Some(datetime!(2019-06-12 08:00:00));
        row.refund_success_time = None;
        row.refund_fee = Some(Fen::new(40));
        let refund = TradeBill::from_rows(TradeBillKind::Refund, vec![row]).unwrap();
        let text = refund.to_text().unwrap();
        assert!(text.contains("`2019-06-12 08:00:00,`,`0,"));
        assert_eq!(parse_trade_bill(&text).unwrap(), refund);
        assert_eq!(refund.summary.refund_fee, Fen::new(40));
    }

    #[test]
    fn bad_bills_name_the_line() {
        let text = d12_text();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("a,b,c\r\n".into(), "line 1: not a known trade bill header"),
            (
                text.replace("`2019-06-11 10:00:00", "`2019-13-11 10:00:00"),
                "line 2: 交易时间",
            ),
            (
                text.replace("`1.00,`0.00,`0,", "`1.001,`0.00,`0,"),
                "line 2: 应结订单金额",
            ),
            (
                text.replace("`0.00600,`0.60%", "`0.000001,`0.60%"),
                "line 2: 手续费",
            ),
            (text.replace(",`test", ",test"), "line 2: expected 27"),
            (
                text.replace("`2019-06-11", "2019-06-11"),
                "line 2: expected the summary header",
            ),
            (
                text.replace(D12_SUMMARY, "`x,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00"),
                "line 4: 总交易单数",
            ),
            (
                text.replace(&format!("{D12_SUMMARY}\r\n"), ""),
                "line 4: the summary line is missing",
            ),
            (format!("{text}`extra\r\n"), "line 5: unexpected content"),
            (
                text.replace(D12_ROW, &format!("{D12_ROW}\r\n")),
                "line 3: empty line",
            ),
        ];
        for (input, expected) in cases {
            match parse_trade_bill(&input) {
                Err(DecodeError::Bill(msg)) => {
                    assert!(msg.contains(expected), "{msg:?} lacks {expected:?}")
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn writer_refuses_ambiguous_fields() {
        let mut row = d12_row();
        row.body = "a\r\nb".into();
        let bill = TradeBill::from_rows(TradeBillKind::All, vec![row.clone()]).unwrap();
        assert!(matches!(bill.to_text(), Err(DecodeError::Bill(m)) if m.contains("line 2")));
        row.body = "a,`b".into();
        let bill = TradeBill::from_rows(TradeBillKind::All, vec![row.clone()]).unwrap();
        assert!(bill.to_text().is_err());
        row.body = "ends,".into();
        let bill = TradeBill::from_rows(TradeBillKind::All, vec![row]).unwrap();
        assert!(bill.to_text().is_err());
    }

    fn fund_flow_text() -> String {
        "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,资金变更提交申请人,备注,业务凭证号\r\n\
         `2019-06-11 10:00:00,`4200000000000000000000000000,`1900000109201906110000000001,`交易,`交易,`收入,`1.00,`1.00,`system,`,`4200000000000000000000000000\r\n\
         `2019-06-11 10:00:00,`4200000000000000000000000000,`1900000109201906110000000002,`扣除交易手续费,`扣除交易手续费,`支出,`0.01,`0.99,`system,`,`4200000000000000000000000000\r\n\
         资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\r\n\
         `2,`1,`1.00,`1,`0.01\r\n"
            .to_owned()
    }

    #[test]
    fn fund_flow_bill_round_trips() {
        let bill = parse_fund_flow_bill(&fund_flow_text()).unwrap();
        assert_eq!(bill.rows.len(), 2);
        assert_eq!(bill.rows[0].direction, FundFlowDirection::Income);
        assert_eq!(bill.rows[1].amount, Fen::new(1));
        assert_eq!(bill.rows[1].balance, Fen::new(99));
        assert_eq!(
            bill.summary,
            FundFlowSummary::from_rows(&bill.rows).unwrap()
        );
        assert_eq!(bill.to_text().unwrap(), fund_flow_text());
        let ascii_parens = fund_flow_text().replace("（元）", "(元)");
        assert_eq!(parse_fund_flow_bill(&ascii_parens).unwrap(), bill);
        let broken = fund_flow_text().replace("`0.01,`0.99", "`0.01,`x");
        assert!(
            matches!(parse_fund_flow_bill(&broken), Err(DecodeError::Bill(m)) if m.starts_with("line 3: 账户结余"))
        );
        assert!(
            matches!(parse_fund_flow_bill(&d12_text()), Err(DecodeError::Bill(m)) if m.starts_with("line 1"))
        );
    }

    #[test]
    fn milli_fen_is_exact() {
        assert_eq!(MilliFen::parse_yuan("0.00600"), Ok(MilliFen(600)));
        assert_eq!(MilliFen::parse_yuan("-1.5"), Ok(MilliFen(-150_000)));
        assert_eq!(MilliFen::parse_yuan("12"), Ok(MilliFen(1_200_000)));
        assert_eq!(MilliFen(-300).to_yuan_string(), "-0.00300");
        assert_eq!(MilliFen(123_456_789).to_yuan_string(), "1234.56789");
        for bad in [
            "",
            "-",
            ".",
            "1.000001",
            "1e3",
            "--1",
            "0x1",
            "99999999999999999999",
        ] {
            assert!(MilliFen::parse_yuan(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gunzip_is_limited_and_bill_text_detects_gzip() {
        use std::io::Write as _;
        let text = d12_text();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        assert!(is_gzip(&gz));
        assert_eq!(gunzip_limited(&gz, text.len()).unwrap(), text.as_bytes());
        assert!(
            matches!(gunzip_limited(&gz, text.len() - 1), Err(DecodeError::Bill(m)) if m.contains("limit"))
        );
        assert_eq!(bill_text(&gz, 1 << 20).unwrap(), text);
        assert_eq!(bill_text(text.as_bytes(), 1 << 20).unwrap(), text);
        assert!(matches!(
            bill_text(text.as_bytes(), 10),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(gunzip_limited(b"\x1f\x8bnot really gzip", 100).is_err());
        assert_eq!(bill_text(&[0xff, 0xfe], 100), Err(DecodeError::NotUtf8));

        // A bomb: 64 MiB of zeros compress to ~64 KiB; only limit + 1 bytes are ever inflated.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        assert!(gunzip_limited(&bomb, 1 << 20).is_err());
    }

    fn text_field() -> impl Strategy<Value = String> {
        // Free text without line breaks; commas and backticks allowed where unambiguous.
        "[a-zA-Z0-9 _,`|*%中文@.-]{0,12}"
            .prop_filter("ambiguous", |s| !s.contains(",`") && !s.ends_with(','))
    }

    fn time_strategy() -> impl Strategy<Value = PrimitiveDateTime> {
        (2000i32..2100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60).prop_map(
            |(y, mo, d, h, mi, s)| {
                let date = time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d)
                    .unwrap();
                PrimitiveDateTime::new(date, time::Time::from_hms(h, mi, s).unwrap())
            },
        )
    }

    fn fen_strategy() -> impl Strategy<Value = Fen> {
        (0u64..10_000_000_000).prop_map(Fen::new)
    }

    fn row_strategy(kind: TradeBillKind) -> impl Strategy<Value = TradeBillRow> {
        let texts = proptest::collection::vec(text_field(), 18);
        let fens = proptest::collection::vec(fen_strategy(), 6);
        let times = proptest::collection::vec(proptest::option::of(time_strategy()), 2);
        (
            time_strategy(),
            texts,
            fens,
            times,
            -10_000_000i64..10_000_000_000,
        )
            .prop_map(move |(trade_time, t, f, times, fee)| {
                let has = |c| kind.has(c);
                let opt = |c, v: &String| has(c).then(|| v.clone());
                let opt_fen = |c, v: Fen| has(c).then_some(v);
                use TradeColumn as C;
                TradeBillRow {
                    trade_time,
                    appid: t[0].clone(),
                    mch_id: t[1].clone(),
                    sub_mch_id: t[2].clone(),
                    device_info: t[3].clone(),
                    transaction_id: t[4].clone(),
                    out_trade_no: t[5].clone(),
                    openid: t[6].clone(),
                    trade_type: t[7].clone(),
                    trade_state: t[8].clone(),
                    bank_type: t[9].clone(),
                    fee_type: t[10].clone(),
                    settlement_total_fee: f[0],
                    coupon_fee: f[1],
                    refund_apply_time: if has(C::RefundApplyTime) {
                        times[0]
                    } else {
                        None
                    },
                    refund_success_time: if has(C::RefundSuccessTime) {
                        times[1]
                    } else {
                        None
                    },
                    refund_id: opt(C::RefundId, &t[11]),
                    out_refund_no: opt(C::OutRefundNo, &t[12]),
                    refund_fee: opt_fen(C::RefundFee, f[2]),
                    recharge_refund_fee: opt_fen(C::RechargeRefundFee, f[3]),
                    refund_type: opt(C::RefundType, &t[13]),
                    refund_status: opt(C::RefundStatus, &t[14]),
                    body: t[15].clone(),
                    attach: t[16].clone(),
                    fee: MilliFen::new(fee),
                    rate: t[17].clone(),
                    total_fee: opt_fen(C::TotalFee, f[4]),
                    refund_apply_fee: opt_fen(C::RefundApplyFee, f[5]),
                    rate_note: opt(C::RateNote, &t[0]),
                }
            })
    }

    fn bill_strategy() -> impl Strategy<Value = TradeBill> {
        proptest::sample::select(TradeBillKind::KINDS.to_vec()).prop_flat_map(|kind| {
            proptest::collection::vec(row_strategy(kind), 0..5)
                .prop_map(move |rows| TradeBill::from_rows(kind, rows).unwrap())
        })
    }

    proptest! {
        #[test]
        fn trade_bill_writer_and_parser_are_inverse(bill in bill_strategy()) {
            let text = bill.to_text().unwrap();
            let parsed = parse_trade_bill(&text).unwrap();
            prop_assert_eq!(&parsed, &bill);
            prop_assert_eq!(parsed.to_text().unwrap(), text);
        }

        #[test]
        fn fund_flow_writer_and_parser_are_inverse(
            rows in proptest::collection::vec(
                (time_strategy(), proptest::collection::vec(text_field(), 7), proptest::bool::ANY, fen_strategy(), fen_strategy()),
                0..5,
            )
        ) {
            let rows: Vec<FundFlowRow> = rows
                .into_iter()
                .map(|(booking_time, t, income, amount, balance)| FundFlowRow {
                    booking_time,
                    business_no: t[0].clone(),
                    flow_no: t[1].clone(),
                    business_name: t[2].clone(),
                    business_type: t[3].clone(),
                    direction: if income { FundFlowDirection::Income } else { FundFlowDirection::Expense },
                    amount,
                    balance,
                    applicant: t[4].clone(),
                    remark: t[5].clone(),
                    voucher_no: t[6].clone(),
                })
                .collect();
            let bill = FundFlowBill::from_rows(rows).unwrap();
            let text = bill.to_text().unwrap();
            prop_assert_eq!(parse_fund_flow_bill(&text).unwrap(), bill);
        }

        #[test]
        fn parser_never_panics(text in "[`,\r\n0-9a-z.: -]{0,200}") {
            let _ = parse_trade_bill(&text);
            let _ = parse_fund_flow_bill(&text);
        }

        #[test]
        fn parser_never_panics_on_mutated_bills(pos in 0usize..700, ch in proptest::char::any()) {
            let mut text = d12_text();
            let mut at = pos.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert(at, ch);
            let _ = parse_trade_bill(&text);
        }
    }
}
