//! `POST /pay/closeorder`: closes an unpaid order.

use super::shared::{base_params, optional_string, put};
use crate::error::{DecodeError, Error};
use crate::ids::OutTradeNo;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;

/// `POST /pay/closeorder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOrderRequest {
    /// The merchant's order number.
    pub out_trade_no: OutTradeNo,
}

impl CloseOrderRequest {
    /// Close `out_trade_no`.
    #[must_use]
    pub fn new(out_trade_no: OutTradeNo) -> Self {
        CloseOrderRequest { out_trade_no }
    }

    /// The unsigned parameters.
    ///
    /// # Errors
    /// None today (the order number was checked when it was made); fallible like the others.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        let mut p = base_params(cfg);
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
