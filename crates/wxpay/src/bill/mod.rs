//! WeChat Pay bills: the text format shared by the v2 `downloadbill` and the v3 bill downloads.
//!
//! A bill is a Chinese column header line, data lines whose every field starts with a backtick
//! (so that spreadsheets keep long numbers as text), a summary header line and one summary line.
//! Lines end in CRLF; LF alone is accepted. Amounts are yuan strings, parsed exactly into
//! [`Fen`](crate::Fen); the fee has five decimals and is kept exactly as [`MilliFen`]. Times
//! are GMT+8 wall times (`yyyy-MM-dd HH:mm:ss`), kept as
//! [`PrimitiveDateTime`](time::PrimitiveDateTime).
//!
//! The parsers and the writers are inverse: writing a parsed bill reproduces its bytes (with CRLF
//! line ends and the canonical header names).
//!
//! The skeleton (lines, header, data lines, summary) is written once, in `skeleton`; [`trade`]
//! and [`fund_flow`] add their columns. [`text`] turns a downloaded body into bill text.

pub mod fund_flow;
mod milli_fen;
mod skeleton;
pub mod text;
pub mod trade;

pub use fund_flow::{
    FundFlowBill, FundFlowDirection, FundFlowRow, FundFlowSummary, parse_fund_flow_bill,
};
pub use milli_fen::MilliFen;
pub use text::{bill_text, gunzip_limited, is_gzip, sha1_hex};
pub use trade::{TradeBill, TradeBillKind, TradeBillRow, TradeBillSummary, parse_trade_bill};

#[cfg(test)]
mod tests;
