//! Typed requests and responses of the v2 payment calls used by a mini program, one module per
//! call: [`unified_order`], [`order_query`], [`close_order`], [`refund`], [`refund_query`] and
//! [`download_bill`]; what they share (order ids, states, coupons, the map helpers) is in
//! [`shared`].
//!
//! Requests are built from named fields and validated identifiers ([`OutTradeNo`],
//! [`OutRefundNo`], [`OpenId`]), checked again before anything is sent
//! ([`Error::InvalidRequest`](crate::Error::InvalidRequest)) and turned into the unsigned
//! parameter map with [`to_params`](UnifiedOrderRequest::to_params); responses are read from a
//! map whose `return_code`, `sign` and `result_code` the client already checked.

pub mod close_order;
pub mod download_bill;
pub mod order_query;
pub mod refund;
pub mod refund_query;
pub mod shared;
pub mod unified_order;

pub use crate::ids::{OpenId, OutRefundNo, OutTradeNo};
pub use close_order::{CloseOrderRequest, CloseOrderResponse};
pub use download_bill::{BillType, DownloadBillRequest};
pub use order_query::{OrderQueryRequest, OrderQueryResponse};
pub use refund::{RefundFields, RefundRequest, RefundResponse};
pub use refund_query::{RefundQueryId, RefundQueryRequest, RefundQueryResponse, RefundRecord};
pub use shared::{Coupon, CouponRefund, OrderId, RefundAccount, RefundStatus, TradeState};
pub use unified_order::{UnifiedOrderFields, UnifiedOrderRequest, UnifiedOrderResponse};

pub(crate) use shared::{
    coupons, fen, optional, optional_fen, optional_string, optional_time_field, optional_yes_no,
    required, time_field,
};

#[cfg(test)]
mod tests;
