//! `POST /pay/closeorder`: closes an unpaid order.

use super::shared::{SubMerchant, base_params, optional_string, put, put_sub_merchant};
use crate::error::{DecodeError, Error};
use crate::ids::OutTradeNo;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;

/// `POST /pay/closeorder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOrderRequest {
    /// The merchant's order number.
    pub out_trade_no: OutTradeNo,
    /// Partner mode: the sub-merchant (`sub_mch_id`, `sub_appid`). `None` for an ordinary
    /// merchant.
    pub sub_merchant: Option<SubMerchant>,
}

impl CloseOrderRequest {
    /// Close `out_trade_no`.
    #[must_use]
    pub fn new(out_trade_no: OutTradeNo) -> Self {
        CloseOrderRequest {
            out_trade_no,
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
    /// None today (the order number was checked when it was made); fallible like the others.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        let mut p = base_params(cfg);
        put_sub_merchant(&mut p, self.sub_merchant.as_ref());
        put(&mut p, "out_trade_no", &self.out_trade_no);
        Ok(p)
    }
}

/// The answer to `closeorder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOrderResponse {
    /// `result_msg`, when sent.
    pub result_msg: Option<String>,
}

impl CloseOrderResponse {
    /// Reads a verified, successful answer.
    ///
    /// # Errors
    /// None today; fallible like the other answers.
    pub fn from_map(map: &XmlMap) -> Result<Self, DecodeError> {
        Ok(CloseOrderResponse {
            result_msg: optional_string(map, "result_msg"),
        })
    }
}
