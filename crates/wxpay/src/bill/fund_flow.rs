//! Fund-flow bills (v3 `fundflowbill`): one layout.

use time::PrimitiveDateTime;

use super::skeleton::{self, Layout, format_time, parse_count, parse_fen, parse_time};
use crate::error::DecodeError;
use crate::money::Fen;

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
        let s = &self.summary;
        let summary = [
            s.total_count.to_string(),
            s.income_count.to_string(),
            s.income.to_yuan_string(),
            s.expense_count.to_string(),
            s.expense.to_yuan_string(),
        ];
        skeleton::write(
            &FUND_FLOW_HEADER.join(","),
            self.rows.iter().map(|row| row.cells().to_vec()),
            &FUND_FLOW_SUMMARY_HEADER.join(","),
            &summary,
        )
    }
}

/// Parses a fund-flow bill.
///
/// # Errors
/// [`DecodeError::Bill`] naming the line and the problem.
pub fn parse_fund_flow_bill(text: &str) -> Result<FundFlowBill, DecodeError> {
    let parsed = skeleton::parse::<FundFlowLayout>(text)?;
    Ok(FundFlowBill {
        rows: parsed.rows,
        summary: parsed.summary,
    })
}

/// The one fund-flow layout, for the skeleton.
struct FundFlowLayout;

/// Header names are compared with full-width parentheses, whichever WeChat wrote.
fn normalize(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| n.trim().replace('(', "（").replace(')', "）"))
        .collect()
}

impl Layout for FundFlowLayout {
    type Row = FundFlowRow;
    type Summary = FundFlowSummary;

    fn from_header(names: &[&str]) -> Result<Self, String> {
        let names = normalize(names);
        if names == FUND_FLOW_HEADER {
            Ok(FundFlowLayout)
        } else {
            Err(format!(
                "not a fund-flow bill header ({} columns, starting with {:?})",
                names.len(),
                names.first().cloned().unwrap_or_default()
            ))
        }
    }

    fn column_count(&self) -> usize {
        FUND_FLOW_HEADER.len()
    }

    fn parse_row(&self, fields: &[&str], line: usize) -> Result<FundFlowRow, DecodeError> {
        FundFlowRow::parse(fields, line)
    }

    fn is_summary_header(&self, names: &[&str]) -> bool {
        normalize(names) == FUND_FLOW_SUMMARY_HEADER
    }

    fn summary_header_line(&self) -> String {
        FUND_FLOW_SUMMARY_HEADER.join(",")
    }

    fn summary_column_count(&self) -> usize {
        FUND_FLOW_SUMMARY_HEADER.len()
    }

    fn parse_summary(&self, f: &[&str], line: usize) -> Result<FundFlowSummary, DecodeError> {
        let h = FUND_FLOW_SUMMARY_HEADER;
        Ok(FundFlowSummary {
            total_count: parse_count(f[0], h[0], line)?,
            income_count: parse_count(f[1], h[1], line)?,
            income: parse_fen(f[2], h[2], line)?,
            expense_count: parse_count(f[3], h[3], line)?,
            expense: parse_fen(f[4], h[4], line)?,
        })
    }
}
