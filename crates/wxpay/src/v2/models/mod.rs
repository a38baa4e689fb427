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
//!
//! Service-provider (服务商, partner) mode: the client's [`V2Config`](crate::v2::client::V2Config)
//! is the provider's (`appid`, `mch_id`, API key), and each request about a sub-merchant's order
//! carries a [`SubMerchant`] (`sub_mch_id`, optional `sub_appid`), set with `with_sub_merchant`.
//! A payer under the sub-merchant's mini program is sent as `sub_openid`
//! ([`UnifiedOrderRequest::with_sub_openid`], [`OpenIdScope`]). The answers' `sub_*` echoes
//! are read into the responses and checked against the request by the client.

pub mod close_order;
pub mod download_bill;
pub mod order_query;
pub mod refund;
pub mod refund_query;
pub mod shared;
pub mod unified_order;

pub use crate::ids::{AppId, OpenId, OutRefundNo, OutTradeNo, SubMchid};
pub use close_order::{CloseOrderRequest, CloseOrderResponse};
pub use download_bill::{BillType, DownloadBillRequest};
pub use order_query::{OrderQueryRequest, OrderQueryResponse};
pub use refund::{RefundFields, RefundRequest, RefundResponse};
pub use refund_query::{RefundQueryId, RefundQueryRequest, RefundQueryResponse, RefundRecord};
pub use shared::{
    Coupon, CouponRefund, OrderId, RefundAccount, RefundStatus, SubMerchant, TradeState,
};
pub use unified_order::{
    OpenIdScope, UnifiedOrderFields, UnifiedOrderRequest, UnifiedOrderResponse,
};

pub(crate) use shared::{
    coupons, fen, optional, optional_fen, optional_string, optional_time_field, optional_yes_no,
    required, time_field,
};

#[cfg(test)]
mod tests;
