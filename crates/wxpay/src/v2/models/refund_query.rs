//! `POST /pay/refundquery`: the refunds of an order, or one refund.

use time::OffsetDateTime;

use super::shared::{
    CouponRefund, RefundAccount, RefundStatus, SubMerchant, base_params, count, fen, indexes,
    optional, optional_fen, optional_string, optional_time_field, put, put_opt, put_sub_merchant,
    required,
};
use crate::error::{DecodeError, Error};
use crate::ids::{OutRefundNo, OutTradeNo};
use crate::money::Fen;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;
use crate::validate;

/// Which refunds `refundquery` asks about, in WeChat's order of precedence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundQueryId {
    /// One refund by WeChat's `refund_id`.
    RefundId(String),
    /// One refund by the merchant's `out_refund_no`.
    OutRefundNo(OutRefundNo),
    /// Every refund of an order, by `transaction_id`.
    TransactionId(String),
    /// Every refund of an order, by `out_trade_no`.
    OutTradeNo(OutTradeNo),
}

/// `POST /pay/refundquery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundQueryRequest {
    /// What to query.
    pub id: RefundQueryId,
    /// `offset`: the first refund to return, for orders with more than 20 refunds.
    pub offset: Option<u32>,
    /// Partner mode: the sub-merchant (`sub_mch_id`, `sub_appid`). `None` for an ordinary
    /// merchant.
    pub sub_merchant: Option<SubMerchant>,
}

impl RefundQueryRequest {
    /// A query of `id` from the first refund.
    #[must_use]
    pub fn new(id: RefundQueryId) -> Self {
        RefundQueryRequest {
            id,
            offset: None,
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
    /// [`Error::InvalidRequest`] for a malformed number.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        let mut p = base_params(cfg);
        put_sub_merchant(&mut p, self.sub_merchant.as_ref());
        match &self.id {
            RefundQueryId::RefundId(id) => {
                validate::text("refund_id", id, 1, 32)?;
                put(&mut p, "refund_id", id);
            }
            RefundQueryId::OutRefundNo(no) => {
                put(&mut p, "out_refund_no", no);
            }
            RefundQueryId::TransactionId(id) => {
                validate::transaction_id(id)?;
                put(&mut p, "transaction_id", id);
            }
            RefundQueryId::OutTradeNo(no) => {
                put(&mut p, "out_trade_no", no);
            }
        }
        put_opt(
            &mut p,
            "offset",
            self.offset.map(|o| o.to_string()).as_deref(),
        );
        Ok(p)
    }
}

/// One refund in a `refundquery` answer (the `_$n` fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRecord {
    /// `out_refund_no_$n`.
    pub out_refund_no: String,
    /// `refund_id_$n`.
    pub refund_id: String,
    /// `refund_channel_$n` (`ORIGINAL`, `BALANCE`, ...).
    pub refund_channel: Option<String>,
    /// `refund_fee_$n`.
    pub refund_fee: Fen,
    /// `settlement_refund_fee_$n`.
    pub settlement_refund_fee: Option<Fen>,
    /// `coupon_refund_fee_$n`.
    pub coupon_refund_fee: Option<Fen>,
    /// The refunded coupons, from `coupon_*_$n_$m`.
    pub coupon_refunds: Vec<CouponRefund>,
    /// `refund_status_$n`.
    pub refund_status: RefundStatus,
    /// `refund_account_$n`.
    pub refund_account: Option<RefundAccount>,
    /// `refund_recv_accout_$n` (sic): where the money went, e.g. `支付用户零钱`.
    pub refund_recv_accout: Option<String>,
    /// `refund_success_time_$n`.
    pub refund_success_time: Option<OffsetDateTime>,
}

/// The answer to `refundquery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundQueryResponse {
    /// `total_refund_count`: refunds of the order in all (with `offset`).
    pub total_refund_count: Option<u32>,
    /// `transaction_id`.
    pub transaction_id: String,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `total_fee`.
    pub total_fee: Fen,
    /// `settlement_total_fee`.
    pub settlement_total_fee: Option<Fen>,
    /// `fee_type`.
    pub fee_type: Option<String>,
    /// `cash_fee`.
    pub cash_fee: Fen,
    /// `refund_count`: refunds in this answer.
    pub refund_count: u32,
    /// The refunds, in index order.
    pub refunds: Vec<RefundRecord>,
    /// `sub_appid` (partner mode), as echoed.
    pub sub_appid: Option<String>,
    /// `sub_mch_id` (partner mode), as echoed.
    pub sub_mch_id: Option<String>,
}

impl RefundQueryResponse {
    /// Reads a verified, successful answer.
    ///
    /// # Errors
    /// [`DecodeError`] for a missing or malformed field, or a `refund_count` that does not match
    /// the refunds present.
    pub fn from_map(map: &XmlMap) -> Result<Self, DecodeError> {
        let mut refunds = Vec::new();
        for n in indexes(map, "out_refund_no_") {
            let key = |name: &str| format!("{name}_{n}");
            let mut coupon_refunds = Vec::new();
            for m in indexes(map, &format!("coupon_refund_id_{n}_")) {
                let key = |name: &str| format!("{name}_{n}_{m}");
                coupon_refunds.push(CouponRefund {
                    coupon_type: optional_string(map, &key("coupon_type")),
                    coupon_refund_id: required(map, &key("coupon_refund_id"))?.to_owned(),
                    coupon_refund_fee: fen(map, &key("coupon_refund_fee"))?,
                });
            }
            refunds.push(RefundRecord {
                out_refund_no: required(map, &key("out_refund_no"))?.to_owned(),
                refund_id: required(map, &key("refund_id"))?.to_owned(),
                refund_channel: optional_string(map, &key("refund_channel")),
                refund_fee: fen(map, &key("refund_fee"))?,
                settlement_refund_fee: optional_fen(map, &key("settlement_refund_fee"))?,
                coupon_refund_fee: optional_fen(map, &key("coupon_refund_fee"))?,
                coupon_refunds,
                refund_status: RefundStatus::from_code(required(map, &key("refund_status"))?),
                refund_account: optional(map, &key("refund_account")).map(RefundAccount::from_code),
                refund_recv_accout: optional_string(map, &key("refund_recv_accout")),
                refund_success_time: optional_time_field(map, &key("refund_success_time"), true)?,
            });
        }
        let refund_count = count(map, "refund_count")?;
        if usize::try_from(refund_count).ok() != Some(refunds.len()) {
            return Err(DecodeError::invalid(
                "refund_count",
                format!(
                    "says {refund_count}, but {} refunds are present",
                    refunds.len()
                ),
            ));
        }
        Ok(RefundQueryResponse {
            total_refund_count: optional(map, "total_refund_count")
                .map(|_| count(map, "total_refund_count"))
                .transpose()?,
            transaction_id: required(map, "transaction_id")?.to_owned(),
            out_trade_no: required(map, "out_trade_no")?.to_owned(),
            total_fee: fen(map, "total_fee")?,
            settlement_total_fee: optional_fen(map, "settlement_total_fee")?,
            fee_type: optional_string(map, "fee_type"),
            cash_fee: fen(map, "cash_fee")?,
            refund_count,
            refunds,
            sub_appid: optional_string(map, "sub_appid"),
            sub_mch_id: optional_string(map, "sub_mch_id"),
        })
    }
}
