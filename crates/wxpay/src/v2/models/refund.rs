//! `POST /secapi/pay/refund`: a refund, over mutual TLS with the merchant certificate.

use super::shared::{
    CouponRefund, OrderId, RefundAccount, SubMerchant, base_params, fen, indexes, optional_fen,
    optional_string, put, put_opt, put_sub_merchant, required,
};
use crate::error::{DecodeError, Error};
use crate::ids::OutRefundNo;
use crate::money::Fen;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;
use crate::validate;

/// The required fields of a refund, by name (two amounts side by side cannot be swapped by
/// position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundFields {
    /// The order to refund.
    pub id: OrderId,
    /// `out_refund_no`. Retry a failed refund with the same one.
    pub out_refund_no: OutRefundNo,
    /// `total_fee`: the order's total.
    pub total_fee: Fen,
    /// `refund_fee`: this refund, at most `total_fee`.
    pub refund_fee: Fen,
}

/// `POST /secapi/pay/refund` (needs the merchant's API certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The order to refund.
    pub id: OrderId,
    /// `out_refund_no`: the merchant's refund number. Retry a failed refund with the same one.
    pub out_refund_no: OutRefundNo,
    /// `total_fee`: the order's total.
    pub total_fee: Fen,
    /// `refund_fee`: this refund, at most `total_fee`.
    pub refund_fee: Fen,
    /// `refund_fee_type` (`CNY`).
    pub refund_fee_type: Option<String>,
    /// `refund_desc` (at most 80 characters), shown to the payer.
    pub refund_desc: Option<String>,
    /// `refund_account`.
    pub refund_account: Option<RefundAccount>,
    /// `notify_url` for the refund notification; the console's URL when absent.
    pub notify_url: Option<String>,
    /// Partner mode: the sub-merchant (`sub_mch_id`, `sub_appid`). `None` for an ordinary
    /// merchant.
    pub sub_merchant: Option<SubMerchant>,
}

impl RefundRequest {
    /// A refund of `refund_fee` out of the order's `total_fee`, nothing optional.
    #[must_use]
    pub fn new(fields: RefundFields) -> Self {
        let RefundFields {
            id,
            out_refund_no,
            total_fee,
            refund_fee,
        } = fields;
        RefundRequest {
            id,
            out_refund_no,
            total_fee,
            refund_fee,
            refund_fee_type: None,
            refund_desc: None,
            refund_account: None,
            notify_url: None,
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

    /// Checks the fields against the documented limits.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.id.validate()?;
        validate::amount("total_fee", self.total_fee)?;
        validate::amount("refund_fee", self.refund_fee)?;
        if self.refund_fee > self.total_fee {
            return Err(validate::invalid("refund_fee must not exceed total_fee"));
        }
        validate::opt_text("refund_fee_type", self.refund_fee_type.as_deref(), 8)?;
        validate::opt_text("refund_desc", self.refund_desc.as_deref(), 80)?;
        if let Some(url) = &self.notify_url {
            validate::notify_url(url, validate::V2_NOTIFY_URL_MAX)?;
        }
        Ok(())
    }

    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when [`validate`](Self::validate) fails.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        self.validate()?;
        let mut p = base_params(cfg);
        put_sub_merchant(&mut p, self.sub_merchant.as_ref());
        self.id.put(&mut p);
        put(&mut p, "out_refund_no", &self.out_refund_no);
        put(&mut p, "total_fee", &self.total_fee.to_string());
        put(&mut p, "refund_fee", &self.refund_fee.to_string());
        put_opt(&mut p, "refund_fee_type", self.refund_fee_type.as_deref());
        put_opt(&mut p, "refund_desc", self.refund_desc.as_deref());
        put_opt(
            &mut p,
            "refund_account",
            self.refund_account.as_ref().map(RefundAccount::as_str),
        );
        put_opt(&mut p, "notify_url", self.notify_url.as_deref());
        Ok(p)
    }
}

/// The answer to `refund`: the refund was **accepted**; its result comes by notification or
/// `refundquery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundResponse {
    /// `transaction_id`.
    pub transaction_id: String,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `out_refund_no`.
    pub out_refund_no: String,
    /// `refund_id`: WeChat's refund number.
    pub refund_id: String,
    /// `refund_fee`.
    pub refund_fee: Fen,
    /// `settlement_refund_fee`.
    pub settlement_refund_fee: Option<Fen>,
    /// `total_fee`.
    pub total_fee: Fen,
    /// `settlement_total_fee`.
    pub settlement_total_fee: Option<Fen>,
    /// `fee_type`.
    pub fee_type: Option<String>,
    /// `cash_fee`.
    pub cash_fee: Fen,
    /// `cash_fee_type`.
    pub cash_fee_type: Option<String>,
    /// `cash_refund_fee`.
    pub cash_refund_fee: Option<Fen>,
    /// `coupon_refund_fee`.
    pub coupon_refund_fee: Option<Fen>,
    /// The refunded coupons, from `coupon_*_$n`.
    pub coupon_refunds: Vec<CouponRefund>,
    /// `sub_appid` (partner mode), as echoed.
    pub sub_appid: Option<String>,
    /// `sub_mch_id` (partner mode), as echoed.
    pub sub_mch_id: Option<String>,
}

impl RefundResponse {
    /// Reads a verified, successful answer.
    ///
    /// # Errors
    /// [`DecodeError`] for a missing or malformed field.
    pub fn from_map(map: &XmlMap) -> Result<Self, DecodeError> {
        let mut coupon_refunds = Vec::new();
        for n in indexes(map, "coupon_refund_id_") {
            coupon_refunds.push(CouponRefund {
                coupon_type: optional_string(map, &format!("coupon_type_{n}")),
                coupon_refund_id: required(map, &format!("coupon_refund_id_{n}"))?.to_owned(),
                coupon_refund_fee: fen(map, &format!("coupon_refund_fee_{n}"))?,
            });
        }
        Ok(RefundResponse {
            transaction_id: required(map, "transaction_id")?.to_owned(),
            out_trade_no: required(map, "out_trade_no")?.to_owned(),
            out_refund_no: required(map, "out_refund_no")?.to_owned(),
            refund_id: required(map, "refund_id")?.to_owned(),
            refund_fee: fen(map, "refund_fee")?,
            settlement_refund_fee: optional_fen(map, "settlement_refund_fee")?,
            total_fee: fen(map, "total_fee")?,
            settlement_total_fee: optional_fen(map, "settlement_total_fee")?,
            fee_type: optional_string(map, "fee_type"),
            cash_fee: fen(map, "cash_fee")?,
            cash_fee_type: optional_string(map, "cash_fee_type"),
            cash_refund_fee: optional_fen(map, "cash_refund_fee")?,
            coupon_refund_fee: optional_fen(map, "coupon_refund_fee")?,
            coupon_refunds,
            sub_appid: optional_string(map, "sub_appid"),
            sub_mch_id: optional_string(map, "sub_mch_id"),
        })
    }
}
