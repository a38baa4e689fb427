//! What the v2 calls share: which order a call is about, the states, coupons, and the helpers
//! that write parameter maps and read answer maps.

use std::collections::BTreeSet;
use std::fmt;

use time::OffsetDateTime;

use crate::error::{DecodeError, Error};
use crate::ids::{AppId, OutTradeNo, SubMchid};
use crate::money::Fen;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;

/// Which order a call is about. WeChat prefers `transaction_id` when both are known, so only
/// one is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderId {
    /// WeChat's `transaction_id`.
    TransactionId(String),
    /// The merchant's `out_trade_no`.
    OutTradeNo(OutTradeNo),
}

impl OrderId {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            OrderId::TransactionId(id) => crate::validate::transaction_id(id),
            // Checked when it was made.
            OrderId::OutTradeNo(_) => Ok(()),
        }
    }

    pub(crate) fn put(&self, params: &mut XmlMap) {
        match self {
            OrderId::TransactionId(id) => put(params, "transaction_id", id),
            OrderId::OutTradeNo(no) => put(params, "out_trade_no", no),
        }
    }
}

/// The sub-merchant (特约商户) a service provider (服务商, partner) calls for. In API v2 partner
/// mode `appid`, `mch_id` and the API key are the provider's (the client's [`V2Config`]), and
/// every call about the sub-merchant's orders adds `sub_mch_id`, plus `sub_appid` when the
/// sub-merchant's own mini program is involved.
///
/// `wx.requestPayment` for a partner order is signed with the provider's key over `sub_appid`
/// when the order carried one, else over the provider's appid
/// ([`V2Client::partner_request_payment`](crate::v2::client::V2Client::partner_request_payment)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubMerchant {
    /// `sub_mch_id`: the sub-merchant's merchant number.
    pub sub_mch_id: SubMchid,
    /// `sub_appid`: the sub-merchant's mini program, bound to `sub_mch_id`. Needed when the payer
    /// is identified by `sub_openid`; send it with the later calls about an order that had one.
    pub sub_appid: Option<AppId>,
}

impl SubMerchant {
    /// The sub-merchant `sub_mch_id`, without a `sub_appid`.
    #[must_use]
    pub fn new(sub_mch_id: SubMchid) -> Self {
        SubMerchant {
            sub_mch_id,
            sub_appid: None,
        }
    }

    /// The same sub-merchant, with its mini program `sub_appid`.
    #[must_use]
    pub fn with_sub_appid(mut self, sub_appid: AppId) -> Self {
        self.sub_appid = Some(sub_appid);
        self
    }

    /// The appid a `wx.requestPayment` `paySign` covers for this sub-merchant's orders:
    /// `sub_appid` when present, else the provider's `sp_appid`.
    #[must_use]
    pub fn paying_appid<'a>(&'a self, sp_appid: &'a str) -> &'a str {
        self.sub_appid.as_ref().map_or(sp_appid, AppId::as_str)
    }

    /// Adds `sub_mch_id` and, when present, `sub_appid`.
    pub(crate) fn put(&self, params: &mut XmlMap) {
        put(params, "sub_mch_id", &self.sub_mch_id);
        put_opt(params, "sub_appid", self.sub_appid.as_deref());
    }
}

/// Adds the sub-merchant's parameters when there is one.
pub(crate) fn put_sub_merchant(params: &mut XmlMap, sub_merchant: Option<&SubMerchant>) {
    if let Some(sub) = sub_merchant {
        sub.put(params);
    }
}

/// `trade_state` of an order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TradeState {
    /// `SUCCESS`: paid.
    Success,
    /// `REFUND`: paid, then (partly) refunded.
    Refund,
    /// `NOTPAY`: not paid yet.
    NotPay,
    /// `CLOSED`: closed unpaid.
    Closed,
    /// `REVOKED`: a micropay that was reversed.
    Revoked,
    /// `USERPAYING`: a micropay waiting for the user's password.
    UserPaying,
    /// `PAYERROR`: the bank failed the payment.
    PayError,
    /// `ACCEPT`: accepted, waiting for the debit.
    Accept,
    /// Any other value, as sent.
    Unknown(String),
}

impl TradeState {
    /// The typed state of a wire value.
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        match code {
            "SUCCESS" => TradeState::Success,
            "REFUND" => TradeState::Refund,
            "NOTPAY" => TradeState::NotPay,
            "CLOSED" => TradeState::Closed,
            "REVOKED" => TradeState::Revoked,
            "USERPAYING" => TradeState::UserPaying,
            "PAYERROR" => TradeState::PayError,
            "ACCEPT" => TradeState::Accept,
            other => TradeState::Unknown(other.to_owned()),
        }
    }

    /// The wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::NotPay => "NOTPAY",
            TradeState::Closed => "CLOSED",
            TradeState::Revoked => "REVOKED",
            TradeState::UserPaying => "USERPAYING",
            TradeState::PayError => "PAYERROR",
            TradeState::Accept => "ACCEPT",
            TradeState::Unknown(s) => s,
        }
    }

    /// Whether the money was received (`SUCCESS`, or `REFUND` which follows it).
    #[must_use]
    pub fn is_paid(&self) -> bool {
        matches!(self, TradeState::Success | TradeState::Refund)
    }

    /// Whether the state can still change on its own (`NOTPAY`, `USERPAYING`, `ACCEPT`).
    /// Unknown states count as intermediate so that callers keep querying.
    #[must_use]
    pub fn is_intermediate(&self) -> bool {
        matches!(
            self,
            TradeState::NotPay
                | TradeState::UserPaying
                | TradeState::Accept
                | TradeState::Unknown(_)
        )
    }
}

impl fmt::Display for TradeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `refund_status` of one refund.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefundStatus {
    /// `SUCCESS`: the money is back with the payer.
    Success,
    /// `REFUNDCLOSE`: the refund was closed.
    RefundClose,
    /// `PROCESSING`: in progress.
    Processing,
    /// `CHANGE`: abnormal (the payer's card is gone, for example); needs manual handling.
    Change,
    /// Any other value, as sent.
    Unknown(String),
}

impl RefundStatus {
    /// The typed status of a wire value.
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        match code {
            "SUCCESS" => RefundStatus::Success,
            "REFUNDCLOSE" => RefundStatus::RefundClose,
            "PROCESSING" => RefundStatus::Processing,
            "CHANGE" => RefundStatus::Change,
            other => RefundStatus::Unknown(other.to_owned()),
        }
    }

    /// The wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            RefundStatus::Success => "SUCCESS",
            RefundStatus::RefundClose => "REFUNDCLOSE",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Change => "CHANGE",
            RefundStatus::Unknown(s) => s,
        }
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `refund_account`: which funds a refund is paid from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefundAccount {
    /// `REFUND_SOURCE_UNSETTLED_FUNDS`, the default.
    UnsettledFunds,
    /// `REFUND_SOURCE_RECHARGE_FUNDS`.
    RechargeFunds,
    /// Any other value, as sent.
    Unknown(String),
}

impl RefundAccount {
    /// The typed account of a wire value.
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        match code {
            "REFUND_SOURCE_UNSETTLED_FUNDS" => RefundAccount::UnsettledFunds,
            "REFUND_SOURCE_RECHARGE_FUNDS" => RefundAccount::RechargeFunds,
            other => RefundAccount::Unknown(other.to_owned()),
        }
    }

    /// The wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            RefundAccount::UnsettledFunds => "REFUND_SOURCE_UNSETTLED_FUNDS",
            RefundAccount::RechargeFunds => "REFUND_SOURCE_RECHARGE_FUNDS",
            RefundAccount::Unknown(s) => s,
        }
    }
}

/// One coupon used in a payment (`coupon_type_$n`, `coupon_id_$n`, `coupon_fee_$n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coupon {
    /// `coupon_type_$n` (`CASH` or `NO_CASH`), when sent.
    pub coupon_type: Option<String>,
    /// `coupon_id_$n`.
    pub coupon_id: String,
    /// `coupon_fee_$n`.
    pub coupon_fee: Fen,
}

/// One coupon refunded (`coupon_refund_id_$n`, `coupon_refund_fee_$n`, `coupon_type_$n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CouponRefund {
    /// `coupon_type`, when sent.
    pub coupon_type: Option<String>,
    /// `coupon_refund_id`.
    pub coupon_refund_id: String,
    /// `coupon_refund_fee`.
    pub coupon_refund_fee: Fen,
}

// ---- parameter building -------------------------------------------------------------------

pub(crate) fn base_params(cfg: &V2Config) -> XmlMap {
    let mut p = XmlMap::new();
    put(&mut p, "appid", &cfg.appid);
    put(&mut p, "mch_id", &cfg.mch_id);
    put(&mut p, "nonce_str", &crate::nonce::nonce());
    put(&mut p, "sign_type", cfg.sign_type.as_str());
    p
}

pub(crate) fn put(p: &mut XmlMap, key: &str, value: &str) {
    p.insert(key.to_owned(), value.to_owned());
}

pub(crate) fn put_opt(p: &mut XmlMap, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        put(p, key, v);
    }
}

pub(crate) fn yes_no(b: bool) -> &'static str {
    if b { "Y" } else { "N" }
}

// ---- answer reading ------------------------------------------------------------------------

/// A field that must be present and non-empty.
pub(crate) fn required<'a>(map: &'a XmlMap, key: &str) -> Result<&'a str, DecodeError> {
    optional(map, key).ok_or_else(|| DecodeError::MissingField(key.to_owned()))
}

/// A field, treating an empty value as absent (as the signing rules do).
pub(crate) fn optional<'a>(map: &'a XmlMap, key: &str) -> Option<&'a str> {
    map.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

pub(crate) fn optional_string(map: &XmlMap, key: &str) -> Option<String> {
    optional(map, key).map(str::to_owned)
}

pub(crate) fn fen(map: &XmlMap, key: &str) -> Result<Fen, DecodeError> {
    required(map, key)?
        .parse()
        .map_err(|e| DecodeError::invalid(key, e))
}

pub(crate) fn optional_fen(map: &XmlMap, key: &str) -> Result<Option<Fen>, DecodeError> {
    optional(map, key)
        .map(|v| v.parse().map_err(|e| DecodeError::invalid(key, e)))
        .transpose()
}

pub(crate) fn optional_yes_no(map: &XmlMap, key: &str) -> Result<Option<bool>, DecodeError> {
    match optional(map, key) {
        None => Ok(None),
        Some("Y") => Ok(Some(true)),
        Some("N") => Ok(Some(false)),
        Some(other) => Err(DecodeError::invalid(
            key,
            format!("{other:?} is not Y or N"),
        )),
    }
}

/// A time field in the v2 shape `yyyyMMddHHmmss`.
pub(crate) fn time_field(map: &XmlMap, key: &str) -> Result<OffsetDateTime, DecodeError> {
    crate::time::parse_v2(required(map, key)?).map_err(|e| DecodeError::invalid(key, e))
}

/// An optional time field: `yyyyMMddHHmmss`, or `yyyy-MM-dd HH:mm:ss` when `dashed` (refund
/// success times).
pub(crate) fn optional_time_field(
    map: &XmlMap,
    key: &str,
    dashed: bool,
) -> Result<Option<OffsetDateTime>, DecodeError> {
    optional(map, key)
        .map(|t| {
            let parsed = if dashed {
                crate::time::parse_dashed(t)
            } else {
                crate::time::parse_v2(t)
            };
            parsed.map_err(|e| DecodeError::invalid(key, e))
        })
        .transpose()
}

pub(crate) fn count(map: &XmlMap, key: &str) -> Result<u32, DecodeError> {
    let text = required(map, key)?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::invalid(
            key,
            format!("{text:?} is not a count"),
        ));
    }
    text.parse()
        .map_err(|_| DecodeError::invalid(key, "too large"))
}

/// The `n` of every `{prefix}{n}` key, ascending. Keys with more after the number (the
/// `_$n_$m` fields) are not counted.
pub(crate) fn indexes(map: &XmlMap, prefix: &str) -> BTreeSet<u32> {
    map.keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|rest| {
            !rest.is_empty() && rest.len() <= 4 && rest.bytes().all(|b| b.is_ascii_digit())
        })
        .filter_map(|rest| rest.parse().ok())
        .collect()
}

/// The payment coupons (`coupon_id_$n` and friends).
pub(crate) fn coupons(map: &XmlMap) -> Result<Vec<Coupon>, DecodeError> {
    let present = indexes(map, "coupon_id_");
    if optional(map, "coupon_count").is_some() {
        let expected = count(map, "coupon_count")?;
        if usize::try_from(expected).ok() != Some(present.len()) {
            return Err(DecodeError::invalid(
                "coupon_count",
                format!("says {expected}, but {} coupons are present", present.len()),
            ));
        }
    }
    present
        .into_iter()
        .map(|n| {
            Ok(Coupon {
                coupon_type: optional_string(map, &format!("coupon_type_{n}")),
                coupon_id: required(map, &format!("coupon_id_{n}"))?.to_owned(),
                coupon_fee: fen(map, &format!("coupon_fee_{n}"))?,
            })
        })
        .collect()
}
