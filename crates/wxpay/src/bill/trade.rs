//! Trade bills (v2 `downloadbill`, v3 `tradebill`): four layouts told apart by the header.

use time::PrimitiveDateTime;

use super::MilliFen;
use super::skeleton::{
    self, Layout, format_time, parse_count, parse_fen, parse_milli_fen, parse_time,
};
use crate::error::DecodeError;
use crate::money::Fen;

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
pub(super) enum TradeColumn {
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
    pub(super) const KINDS: [TradeBillKind; 4] = [
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
    pub(super) fn has(self, column: TradeColumn) -> bool {
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
        let columns = self.kind.columns();
        let rows = self
            .rows
            .iter()
            .map(|row| columns.iter().map(|c| row.cell(*c)).collect());
        let summary: Vec<String> = self
            .kind
            .summary_columns()
            .iter()
            .map(|c| self.summary.cell(*c))
            .collect();
        skeleton::write(
            &self.kind.header_line(),
            rows,
            &self.kind.summary_header_line(),
            &summary,
        )
    }
}

/// Parses a trade bill, telling its layout from the header line. The names of the pre-2018
/// bills (`总金额`, `企业红包金额`, ...) are accepted for their columns.
///
/// # Errors
/// [`DecodeError::Bill`] naming the line and the problem: an unknown header, a field without its
/// backtick, a wrong field count, a time or amount that does not parse, a missing summary.
pub fn parse_trade_bill(text: &str) -> Result<TradeBill, DecodeError> {
    let parsed = skeleton::parse::<TradeBillKind>(text)?;
    Ok(TradeBill {
        kind: parsed.layout,
        rows: parsed.rows,
        summary: parsed.summary,
    })
}

impl Layout for TradeBillKind {
    type Row = TradeBillRow;
    type Summary = TradeBillSummary;

    fn from_header(names: &[&str]) -> Result<Self, String> {
        let columns: Option<Vec<TradeColumn>> =
            names.iter().map(|n| TradeColumn::from_name(n)).collect();
        columns
            .and_then(|cols| {
                TradeBillKind::KINDS
                    .into_iter()
                    .find(|k| k.columns() == cols.as_slice())
            })
            .ok_or_else(|| {
                format!(
                    "not a known trade bill header ({} columns, starting with {:?})",
                    names.len(),
                    names.first().copied().unwrap_or_default()
                )
            })
    }

    fn column_count(&self) -> usize {
        TradeBillKind::column_count(*self)
    }

    fn parse_row(&self, fields: &[&str], line: usize) -> Result<TradeBillRow, DecodeError> {
        TradeBillRow::parse(*self, fields, line)
    }

    fn is_summary_header(&self, names: &[&str]) -> bool {
        let columns: Option<Vec<SummaryColumn>> =
            names.iter().map(|n| SummaryColumn::from_name(n)).collect();
        columns.as_deref() == Some(self.summary_columns())
    }

    fn summary_header_line(&self) -> String {
        TradeBillKind::summary_header_line(*self)
    }

    fn summary_column_count(&self) -> usize {
        self.summary_columns().len()
    }

    fn parse_summary(&self, fields: &[&str], line: usize) -> Result<TradeBillSummary, DecodeError> {
        TradeBillSummary::parse(*self, fields, line)
    }
}
