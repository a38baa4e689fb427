//! `POST /pay/orderquery`: the state of an order.

use time::OffsetDateTime;

use super::shared::{
    Coupon, OrderId, SubMerchant, TradeState, base_params, coupons, optional_fen, optional_string,
    optional_time_field, optional_yes_no, put_sub_merchant, required,
};
use crate::error::{DecodeError, Error};
use crate::ids::OutTradeNo;
use crate::money::Fen;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;

/// `POST /pay/orderquery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderQueryRequest {
    /// The order.
    pub id: OrderId,
    /// Partner mode: the sub-merchant (`sub_mch_id`, `sub_appid`). `None` for an ordinary
    /// merchant.
    pub sub_merchant: Option<SubMerchant>,
}

impl OrderQueryRequest {
    /// Query by the merchant's order number.
    #[must_use]
    pub fn by_out_trade_no(out_trade_no: OutTradeNo) -> Self {
        OrderQueryRequest {
            id: OrderId::OutTradeNo(out_trade_no),
            sub_merchant: None,
        }
    }

    /// Query by WeChat's transaction id.
    #[must_use]
    pub fn by_transaction_id(transaction_id: impl Into<String>) -> Self {
        OrderQueryRequest {
            id: OrderId::TransactionId(transaction_id.into()),
            sub_merchant: None,
        }
    }

    /// The same request, for a sub-merchant of the service provider whose client sends it
    /// (`sub_mch_id`, and `sub_appid` when the order had one).
    #[must_use]
    pub fn with_sub_merchant(mut self, sub_merchant: SubMerchant) -> Self {
        self.sub_merchant = Some(sub_merchant);
        self
    }

    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed order number.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        self.id.validate()?;
        let mut p = base_params(cfg);
        put_sub_merchant(&mut p, self.sub_merchant.as_ref());
        self.id.put(&mut p);
        Ok(p)
    }
}

/// The answer to `orderquery`. When the order is not paid, WeChat guarantees only
/// `trade_state`, `out_trade_no` and `attach`; the rest is then usually absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderQueryResponse {
    /// `trade_state`.
    pub trade_state: TradeState,
    /// `trade_state_desc`.
    pub trade_state_desc: Option<String>,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `transaction_id`.
    pub transaction_id: Option<String>,
    /// `openid` of the payer (under `appid`, the provider's in partner mode).
    pub openid: Option<String>,
    /// `is_subscribe`.
    pub is_subscribe: Option<bool>,
    /// `sub_appid` (partner mode).
    pub sub_appid: Option<String>,
    /// `sub_mch_id` (partner mode).
    pub sub_mch_id: Option<String>,
    /// `sub_openid`: the payer under `sub_appid` (partner mode).
    pub sub_openid: Option<String>,
    /// `sub_is_subscribe` (partner mode).
    pub sub_is_subscribe: Option<bool>,
    /// `trade_type`.
    pub trade_type: Option<String>,
    /// `bank_type`.
    pub bank_type: Option<String>,
    /// `total_fee`.
    pub total_fee: Option<Fen>,
    /// `settlement_total_fee`.
    pub settlement_total_fee: Option<Fen>,
    /// `fee_type`.
    pub fee_type: Option<String>,
    /// `cash_fee`: what the payer paid in cash.
    pub cash_fee: Option<Fen>,
    /// `cash_fee_type`.
    pub cash_fee_type: Option<String>,
    /// `coupon_fee`.
    pub coupon_fee: Option<Fen>,
    /// The coupons, from `coupon_*_$n`.
    pub coupons: Vec<Coupon>,
    /// `attach`, as sent with the order.
    pub attach: Option<String>,
    /// `time_end`: when it was paid.
    pub time_end: Option<OffsetDateTime>,
    /// `device_info`.
    pub device_info: Option<String>,
}

impl OrderQueryResponse {
    /// Reads a verified, successful answer.
    ///
    /// # Errors
    /// [`DecodeError`] for a missing `trade_state`/`out_trade_no` or a malformed value.
    pub fn from_map(map: &XmlMap) -> Result<Self, DecodeError> {
        Ok(OrderQueryResponse {
            trade_state: TradeState::from_code(required(map, "trade_state")?),
            trade_state_desc: optional_string(map, "trade_state_desc"),
            out_trade_no: required(map, "out_trade_no")?.to_owned(),
            transaction_id: optional_string(map, "transaction_id"),
            openid: optional_string(map, "openid"),
            is_subscribe: optional_yes_no(map, "is_subscribe")?,
            sub_appid: optional_string(map, "sub_appid"),
            sub_mch_id: optional_string(map, "sub_mch_id"),
            sub_openid: optional_string(map, "sub_openid"),
            sub_is_subscribe: optional_yes_no(map, "sub_is_subscribe")?,
            trade_type: optional_string(map, "trade_type"),
            bank_type: optional_string(map, "bank_type"),
            total_fee: optional_fen(map, "total_fee")?,
            settlement_total_fee: optional_fen(map, "settlement_total_fee")?,
            fee_type: optional_string(map, "fee_type"),
            cash_fee: optional_fen(map, "cash_fee")?,
            cash_fee_type: optional_string(map, "cash_fee_type"),
            coupon_fee: optional_fen(map, "coupon_fee")?,
            coupons: coupons(map)?,
            attach: optional_string(map, "attach"),
            time_end: optional_time_field(map, "time_end", false)?,
            device_info: optional_string(map, "device_info"),
        })
    }
}
