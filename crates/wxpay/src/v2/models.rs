//! Typed requests and responses of the v2 payment calls used by a mini program: `unifiedorder`,
//! `orderquery`, `closeorder`, `refund`, `refundquery` and `downloadbill`.
//!
//! Requests are validated before anything is sent ([`Error::InvalidRequest`]) and turned into
//! the unsigned parameter map with [`to_params`](UnifiedOrderRequest::to_params); responses are
//! read from a map whose `return_code`, `sign` and `result_code` the client already checked.

use std::collections::BTreeSet;
use std::fmt;

use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::XmlMap;
use super::client::V2Config;
use crate::error::{DecodeError, Error};
use crate::money::Fen;

/// The offset of every v2 time: China Standard Time.
pub const WIRE_OFFSET: UtcOffset = offset!(+8);

const COMPACT_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day][hour][minute][second]");
const DASHED_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const BILL_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day]");

/// Formats a time as v2 sends it: `yyyyMMddHHmmss` in GMT+8.
#[must_use]
pub fn format_wire_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(WIRE_OFFSET);
    t.format(COMPACT_TIME).unwrap_or_else(|_| t.to_string())
}

/// Formats a time as v2 writes refund success times: `yyyy-MM-dd HH:mm:ss` in GMT+8.
#[must_use]
pub fn format_dashed_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(WIRE_OFFSET);
    t.format(DASHED_TIME).unwrap_or_else(|_| t.to_string())
}

/// Parses a `yyyyMMddHHmmss` GMT+8 time.
///
/// # Errors
/// [`DecodeError::InvalidField`] naming `field`.
pub fn parse_wire_time(field: &str, text: &str) -> Result<OffsetDateTime, DecodeError> {
    PrimitiveDateTime::parse(text, COMPACT_TIME)
        .map(|t| t.assume_offset(WIRE_OFFSET))
        .map_err(|_| DecodeError::invalid(field, format!("{text:?} is not a yyyyMMddHHmmss time")))
}

/// Parses a `yyyy-MM-dd HH:mm:ss` GMT+8 time (refund `success_time`).
///
/// # Errors
/// [`DecodeError::InvalidField`] naming `field`.
pub fn parse_dashed_time(field: &str, text: &str) -> Result<OffsetDateTime, DecodeError> {
    PrimitiveDateTime::parse(text, DASHED_TIME)
        .map(|t| t.assume_offset(WIRE_OFFSET))
        .map_err(|_| {
            DecodeError::invalid(field, format!("{text:?} is not a yyyy-MM-dd HH:mm:ss time"))
        })
}

/// Which order a call is about. WeChat prefers `transaction_id` when both are known, so only
/// one is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderId {
    /// WeChat's `transaction_id`.
    TransactionId(String),
    /// The merchant's `out_trade_no`.
    OutTradeNo(String),
}

impl OrderId {
    fn validate(&self) -> Result<(), Error> {
        match self {
            OrderId::TransactionId(id) => validate_transaction_id(id),
            OrderId::OutTradeNo(no) => validate_out_trade_no(no),
        }
    }

    fn put(&self, params: &mut XmlMap) {
        match self {
            OrderId::TransactionId(id) => put(params, "transaction_id", id),
            OrderId::OutTradeNo(no) => put(params, "out_trade_no", no),
        }
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

/// `POST /pay/unifiedorder` for a mini program (`trade_type=JSAPI`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedOrderRequest {
    /// `body`: the product description (at most 128 characters).
    pub body: String,
    /// `out_trade_no`: 6–32 characters of `[0-9A-Za-z_-|*]`, unique per merchant.
    pub out_trade_no: String,
    /// `total_fee`, at least 1 fen.
    pub total_fee: Fen,
    /// `spbill_create_ip`: the payer's IP address.
    pub spbill_create_ip: String,
    /// `notify_url`: absolute, without a query string.
    pub notify_url: String,
    /// `openid` of the payer under the appid.
    pub openid: String,
    /// `attach`: echoed back in queries and notifications (at most 127 characters).
    pub attach: Option<String>,
    /// `detail`: a JSON string with the goods detail.
    pub detail: Option<String>,
    /// `device_info`.
    pub device_info: Option<String>,
    /// `fee_type` (`CNY`).
    pub fee_type: Option<String>,
    /// `time_start`.
    pub time_start: Option<OffsetDateTime>,
    /// `time_expire`: after this the order cannot be paid.
    pub time_expire: Option<OffsetDateTime>,
    /// `goods_tag`.
    pub goods_tag: Option<String>,
    /// `limit_pay` (`no_credit` forbids credit cards).
    pub limit_pay: Option<String>,
    /// `receipt` (`Y` to offer an electronic invoice).
    pub receipt: bool,
    /// `profit_sharing` (`Y`/`N`); `None` leaves it out.
    pub profit_sharing: Option<bool>,
    /// `scene_info`: a JSON string.
    pub scene_info: Option<String>,
}

impl UnifiedOrderRequest {
    /// A JSAPI order with the required fields and nothing optional.
    #[must_use]
    pub fn jsapi(
        body: impl Into<String>,
        out_trade_no: impl Into<String>,
        total_fee: Fen,
        spbill_create_ip: impl Into<String>,
        notify_url: impl Into<String>,
        openid: impl Into<String>,
    ) -> Self {
        UnifiedOrderRequest {
            body: body.into(),
            out_trade_no: out_trade_no.into(),
            total_fee,
            spbill_create_ip: spbill_create_ip.into(),
            notify_url: notify_url.into(),
            openid: openid.into(),
            attach: None,
            detail: None,
            device_info: None,
            fee_type: None,
            time_start: None,
            time_expire: None,
            goods_tag: None,
            limit_pay: None,
            receipt: false,
            profit_sharing: None,
            scene_info: None,
        }
    }

    /// Checks the fields against the documented limits.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        validate_text("body", &self.body, 1, 128)?;
        validate_out_trade_no(&self.out_trade_no)?;
        validate_amount("total_fee", self.total_fee)?;
        if self.spbill_create_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid("spbill_create_ip must be an IPv4 or IPv6 address"));
        }
        validate_notify_url(&self.notify_url)?;
        validate_text("openid", &self.openid, 1, 128)?;
        validate_opt_text("attach", self.attach.as_deref(), 127)?;
        validate_opt_text("detail", self.detail.as_deref(), 6000)?;
        validate_opt_text("device_info", self.device_info.as_deref(), 32)?;
        validate_opt_text("fee_type", self.fee_type.as_deref(), 16)?;
        validate_opt_text("goods_tag", self.goods_tag.as_deref(), 32)?;
        validate_opt_text("limit_pay", self.limit_pay.as_deref(), 32)?;
        validate_opt_text("scene_info", self.scene_info.as_deref(), 256)?;
        if let (Some(start), Some(expire)) = (self.time_start, self.time_expire)
            && expire <= start
        {
            return Err(invalid("time_expire must be after time_start"));
        }
        Ok(())
    }

    /// The unsigned parameters, with `appid`, `mch_id`, a fresh `nonce_str` and `sign_type`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when [`validate`](Self::validate) fails.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        self.validate()?;
        let mut p = base_params(cfg);
        put(&mut p, "body", &self.body);
        put(&mut p, "out_trade_no", &self.out_trade_no);
        put(&mut p, "total_fee", &self.total_fee.to_string());
        put(&mut p, "spbill_create_ip", &self.spbill_create_ip);
        put(&mut p, "notify_url", &self.notify_url);
        put(&mut p, "trade_type", "JSAPI");
        put(&mut p, "openid", &self.openid);
        put_opt(&mut p, "attach", self.attach.as_deref());
        put_opt(&mut p, "detail", self.detail.as_deref());
        put_opt(&mut p, "device_info", self.device_info.as_deref());
        put_opt(&mut p, "fee_type", self.fee_type.as_deref());
        put_opt(
            &mut p,
            "time_start",
            self.time_start.map(format_wire_time).as_deref(),
        );
        put_opt(
            &mut p,
            "time_expire",
            self.time_expire.map(format_wire_time).as_deref(),
        );
        put_opt(&mut p, "goods_tag", self.goods_tag.as_deref());
        put_opt(&mut p, "limit_pay", self.limit_pay.as_deref());
        if self.receipt {
            put(&mut p, "receipt", "Y");
        }
        put_opt(&mut p, "profit_sharing", self.profit_sharing.map(yes_no));
        put_opt(&mut p, "scene_info", self.scene_info.as_deref());
        Ok(p)
    }
}

/// The answer to `unifiedorder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedOrderResponse {
    /// `prepay_id`, valid for two hours.
    pub prepay_id: String,
    /// `trade_type` (`JSAPI`).
    pub trade_type: String,
    /// `code_url` (NATIVE only).
    pub code_url: Option<String>,
    /// `device_info`.
    pub device_info: Option<String>,
}

impl UnifiedOrderResponse {
    /// Reads a verified, successful answer.
    ///
    /// # Errors
    /// [`DecodeError::MissingField`] without `prepay_id` or `trade_type`.
    pub fn from_map(map: &XmlMap) -> Result<Self, DecodeError> {
        Ok(UnifiedOrderResponse {
            prepay_id: required(map, "prepay_id")?.to_owned(),
            trade_type: required(map, "trade_type")?.to_owned(),
            code_url: optional_string(map, "code_url"),
            device_info: optional_string(map, "device_info"),
        })
    }
}

/// `POST /pay/orderquery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderQueryRequest {
    /// The order.
    pub id: OrderId,
}

impl OrderQueryRequest {
    /// Query by the merchant's order number.
    #[must_use]
    pub fn by_out_trade_no(out_trade_no: impl Into<String>) -> Self {
        OrderQueryRequest {
            id: OrderId::OutTradeNo(out_trade_no.into()),
        }
    }

    /// Query by WeChat's transaction id.
    #[must_use]
    pub fn by_transaction_id(transaction_id: impl Into<String>) -> Self {
        OrderQueryRequest {
            id: OrderId::TransactionId(transaction_id.into()),
        }
    }

    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed order number.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        self.id.validate()?;
        let mut p = base_params(cfg);
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
    /// `openid` of the payer.
    pub openid: Option<String>,
    /// `is_subscribe`.
    pub is_subscribe: Option<bool>,
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
            time_end: optional(map, "time_end")
                .map(|t| parse_wire_time("time_end", t))
                .transpose()?,
            device_info: optional_string(map, "device_info"),
        })
    }
}

/// `POST /pay/closeorder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOrderRequest {
    /// The merchant's order number.
    pub out_trade_no: String,
}

impl CloseOrderRequest {
    /// Close `out_trade_no`.
    #[must_use]
    pub fn new(out_trade_no: impl Into<String>) -> Self {
        CloseOrderRequest {
            out_trade_no: out_trade_no.into(),
        }
    }

    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed order number.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        validate_out_trade_no(&self.out_trade_no)?;
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

/// `POST /secapi/pay/refund` (needs the merchant's API certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The order to refund.
    pub id: OrderId,
    /// `out_refund_no`: the merchant's refund number. Retry a failed refund with the same one.
    pub out_refund_no: String,
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
}

impl RefundRequest {
    /// A refund of `refund_fee` out of the order's `total_fee`, nothing optional.
    #[must_use]
    pub fn new(
        id: OrderId,
        out_refund_no: impl Into<String>,
        total_fee: Fen,
        refund_fee: Fen,
    ) -> Self {
        RefundRequest {
            id,
            out_refund_no: out_refund_no.into(),
            total_fee,
            refund_fee,
            refund_fee_type: None,
            refund_desc: None,
            refund_account: None,
            notify_url: None,
        }
    }

    /// Checks the fields against the documented limits.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.id.validate()?;
        validate_out_refund_no(&self.out_refund_no)?;
        validate_amount("total_fee", self.total_fee)?;
        validate_amount("refund_fee", self.refund_fee)?;
        if self.refund_fee > self.total_fee {
            return Err(invalid("refund_fee must not exceed total_fee"));
        }
        validate_opt_text("refund_fee_type", self.refund_fee_type.as_deref(), 8)?;
        validate_opt_text("refund_desc", self.refund_desc.as_deref(), 80)?;
        if let Some(url) = &self.notify_url {
            validate_notify_url(url)?;
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
        })
    }
}

/// Which refunds `refundquery` asks about, in WeChat's order of precedence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundQueryId {
    /// One refund by WeChat's `refund_id`.
    RefundId(String),
    /// One refund by the merchant's `out_refund_no`.
    OutRefundNo(String),
    /// Every refund of an order, by `transaction_id`.
    TransactionId(String),
    /// Every refund of an order, by `out_trade_no`.
    OutTradeNo(String),
}

/// `POST /pay/refundquery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundQueryRequest {
    /// What to query.
    pub id: RefundQueryId,
    /// `offset`: the first refund to return, for orders with more than 20 refunds.
    pub offset: Option<u32>,
}

impl RefundQueryRequest {
    /// A query of `id` from the first refund.
    #[must_use]
    pub fn new(id: RefundQueryId) -> Self {
        RefundQueryRequest { id, offset: None }
    }

    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed number.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        let mut p = base_params(cfg);
        match &self.id {
            RefundQueryId::RefundId(id) => {
                validate_text("refund_id", id, 1, 32)?;
                put(&mut p, "refund_id", id);
            }
            RefundQueryId::OutRefundNo(no) => {
                validate_out_refund_no(no)?;
                put(&mut p, "out_refund_no", no);
            }
            RefundQueryId::TransactionId(id) => {
                validate_transaction_id(id)?;
                put(&mut p, "transaction_id", id);
            }
            RefundQueryId::OutTradeNo(no) => {
                validate_out_trade_no(no)?;
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
            let success_time = key("refund_success_time");
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
                refund_success_time: optional(map, &success_time)
                    .map(|t| parse_dashed_time(&success_time, t))
                    .transpose()?,
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
        })
    }
}

/// `bill_type` of `downloadbill`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BillType {
    /// `ALL`: payments and refunds.
    #[default]
    All,
    /// `SUCCESS`: successful payments.
    Success,
    /// `REFUND`: refunds.
    Refund,
    /// `RECHARGE_REFUND`: refunds of recharge coupons.
    RechargeRefund,
}

impl BillType {
    /// The wire value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            BillType::All => "ALL",
            BillType::Success => "SUCCESS",
            BillType::Refund => "REFUND",
            BillType::RechargeRefund => "RECHARGE_REFUND",
        }
    }
}

/// `POST /pay/downloadbill`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadBillRequest {
    /// The day (GMT+8) of the bill; it exists after about 09:00 the next day.
    pub bill_date: Date,
    /// Which trades.
    pub bill_type: BillType,
    /// Ask for a gzip body (`tar_type=GZIP`).
    pub gzip: bool,
}

impl DownloadBillRequest {
    /// The unsigned parameters.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a date that cannot be written as `yyyyMMdd`.
    pub fn to_params(&self, cfg: &V2Config) -> Result<XmlMap, Error> {
        let date = self
            .bill_date
            .format(BILL_DATE)
            .ok()
            .filter(|d| d.len() == 8)
            .ok_or_else(|| invalid("bill_date must be a four-digit year"))?;
        let mut p = base_params(cfg);
        put(&mut p, "bill_date", &date);
        put(&mut p, "bill_type", self.bill_type.as_str());
        if self.gzip {
            put(&mut p, "tar_type", "GZIP");
        }
        Ok(p)
    }
}

// ---- parameter building -------------------------------------------------------------------

fn base_params(cfg: &V2Config) -> XmlMap {
    let mut p = XmlMap::new();
    put(&mut p, "appid", &cfg.appid);
    put(&mut p, "mch_id", &cfg.mch_id);
    put(&mut p, "nonce_str", &crate::nonce::nonce());
    put(&mut p, "sign_type", cfg.sign_type.as_str());
    p
}

fn put(p: &mut XmlMap, key: &str, value: &str) {
    p.insert(key.to_owned(), value.to_owned());
}

fn put_opt(p: &mut XmlMap, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        put(p, key, v);
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Y" } else { "N" }
}

// ---- validation ---------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest(message.into())
}

fn validate_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), Error> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(invalid(format!(
            "{field} must have {min} to {max} characters, not {len}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

fn validate_opt_text(field: &str, value: Option<&str>, max: usize) -> Result<(), Error> {
    value.map_or(Ok(()), |v| validate_text(field, v, 1, max))
}

fn validate_amount(field: &str, amount: Fen) -> Result<(), Error> {
    if amount.get() == 0 {
        return Err(invalid(format!("{field} must be at least 1 fen")));
    }
    // total_fee is an Int on the wire.
    if amount.get() > i32::MAX as u64 {
        return Err(invalid(format!(
            "{field} is over the largest amount WeChat accepts"
        )));
    }
    Ok(())
}

/// Checks an `out_trade_no`: 6–32 characters of `[0-9A-Za-z_-|*]`.
///
/// # Errors
/// [`Error::InvalidRequest`] saying what is wrong.
pub fn validate_out_trade_no(no: &str) -> Result<(), Error> {
    if !(6..=32).contains(&no.len()) {
        return Err(invalid(format!(
            "out_trade_no must have 6 to 32 characters, not {}",
            no.len()
        )));
    }
    if !no
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
    {
        return Err(invalid("out_trade_no may contain only 0-9 A-Z a-z _ - | *"));
    }
    Ok(())
}

/// Checks an `out_refund_no`: 1–64 characters of `[0-9A-Za-z_-|*@]`.
///
/// # Errors
/// [`Error::InvalidRequest`] saying what is wrong.
pub fn validate_out_refund_no(no: &str) -> Result<(), Error> {
    if !(1..=64).contains(&no.len()) {
        return Err(invalid(format!(
            "out_refund_no must have 1 to 64 characters, not {}",
            no.len()
        )));
    }
    if !no
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'))
    {
        return Err(invalid(
            "out_refund_no may contain only 0-9 A-Z a-z _ - | * @",
        ));
    }
    Ok(())
}

fn validate_transaction_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("transaction_id must be 1 to 32 letters or digits"));
    }
    Ok(())
}

/// Checks a `notify_url`: an absolute `http(s)` URL with a host, no query string, no fragment,
/// at most 256 characters.
///
/// # Errors
/// [`Error::InvalidRequest`] saying what is wrong.
pub fn validate_notify_url(url: &str) -> Result<(), Error> {
    if url.len() > 256 {
        return Err(invalid("notify_url must have at most 256 characters"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("notify_url must be an absolute http:// or https:// URL"))?;
    if url.contains('?') {
        return Err(invalid("notify_url must not have a query string"));
    }
    if url.contains('#') {
        return Err(invalid("notify_url must not have a fragment"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "notify_url must not contain spaces or control characters",
        ));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Err(invalid("notify_url must name a host (and no user info)"));
    }
    Ok(())
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

fn count(map: &XmlMap, key: &str) -> Result<u32, DecodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::SignType;
    use time::macros::{date, datetime};

    fn cfg() -> V2Config {
        V2Config::new(
            "wxd930ea5d5a258f4f",
            "10000100",
            "192006250b4c09247ec02edce69f6a2d",
        )
        .with_sign_type(SignType::HmacSha256)
    }

    fn map(pairs: &[(&str, &str)]) -> XmlMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn order() -> UnifiedOrderRequest {
        UnifiedOrderRequest::jsapi(
            "腾讯充值中心-QQ会员充值",
            "20150806125346",
            Fen::new(88),
            "123.12.12.123",
            "https://example.com/wxpay/notify",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        )
    }

    #[test]
    fn unified_order_params_carry_identity_and_fields() {
        let mut req = order();
        req.attach = Some("深圳分店".into());
        req.time_start = Some(datetime!(2024-01-02 03:04:05 UTC));
        req.time_expire = Some(datetime!(2024-01-02 13:04:05 +08:00));
        req.profit_sharing = Some(false);
        let p = req.to_params(&cfg()).unwrap();
        assert_eq!(p["appid"], "wxd930ea5d5a258f4f");
        assert_eq!(p["mch_id"], "10000100");
        assert_eq!(p["sign_type"], "HMAC-SHA256");
        assert_eq!(p["nonce_str"].len(), 32);
        assert_eq!(p["trade_type"], "JSAPI");
        assert_eq!(p["total_fee"], "88");
        assert_eq!(p["time_start"], "20240102110405", "UTC is written as GMT+8");
        assert_eq!(p["time_expire"], "20240102130405");
        assert_eq!(p["profit_sharing"], "N");
        assert_eq!(p["attach"], "深圳分店");
        assert!(!p.contains_key("sign"));
        assert!(!p.contains_key("detail"));
        assert_ne!(req.to_params(&cfg()).unwrap()["nonce_str"], p["nonce_str"]);
    }

    #[test]
    fn unified_order_validation_refuses_bad_input() {
        type Mutation = Box<dyn Fn(&mut UnifiedOrderRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.out_trade_no = "12345".into()),
                "out_trade_no must have 6 to 32",
            ),
            (
                Box::new(|r| r.out_trade_no = "x".repeat(33)),
                "out_trade_no must have 6 to 32",
            ),
            (
                Box::new(|r| r.out_trade_no = "order#123".into()),
                "out_trade_no may contain only",
            ),
            (
                Box::new(|r| r.total_fee = Fen::ZERO),
                "total_fee must be at least 1 fen",
            ),
            (
                Box::new(|r| r.notify_url = "https://a.com/n?x=1".into()),
                "query string",
            ),
            (Box::new(|r| r.notify_url = "/notify".into()), "absolute"),
            (
                Box::new(|r| r.notify_url = "ftp://a.com/n".into()),
                "absolute",
            ),
            (Box::new(|r| r.notify_url = "https:///n".into()), "host"),
            (
                Box::new(|r| r.spbill_create_ip = "localhost".into()),
                "spbill_create_ip",
            ),
            (
                Box::new(|r| r.body = String::new()),
                "body must have 1 to 128",
            ),
            (Box::new(|r| r.openid = String::new()), "openid"),
            (Box::new(|r| r.attach = Some("a".repeat(128))), "attach"),
            (Box::new(|r| r.body = "a\u{0}b".into()), "control"),
            (
                Box::new(|r| {
                    r.time_start = Some(datetime!(2024-01-02 03:04:05 UTC));
                    r.time_expire = Some(datetime!(2024-01-02 03:04:05 UTC));
                }),
                "time_expire",
            ),
        ];
        for (mutate, expected) in cases {
            let mut req = order();
            mutate(&mut req);
            match req.to_params(&cfg()) {
                Err(Error::InvalidRequest(msg)) => {
                    assert!(msg.contains(expected), "{msg} / {expected}")
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
        let mut ok = order();
        ok.out_trade_no = "A-b_c|d*9".into();
        ok.spbill_create_ip = "::1".into();
        ok.notify_url = "http://127.0.0.1:8080/notify/v2".into();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn query_close_and_bill_params() {
        let p = OrderQueryRequest::by_transaction_id("4200000000000000000000000000")
            .to_params(&cfg())
            .unwrap();
        assert_eq!(p["transaction_id"], "4200000000000000000000000000");
        assert!(!p.contains_key("out_trade_no"));
        assert!(
            OrderQueryRequest::by_transaction_id("42-00")
                .to_params(&cfg())
                .is_err()
        );
        let p = CloseOrderRequest::new("20150806125346")
            .to_params(&cfg())
            .unwrap();
        assert_eq!(p["out_trade_no"], "20150806125346");
        let p = DownloadBillRequest {
            bill_date: date!(2024 - 03 - 05),
            bill_type: BillType::Success,
            gzip: true,
        }
        .to_params(&cfg())
        .unwrap();
        assert_eq!(
            (
                p["bill_date"].as_str(),
                p["bill_type"].as_str(),
                p["tar_type"].as_str()
            ),
            ("20240305", "SUCCESS", "GZIP")
        );
        let mut q = RefundQueryRequest::new(RefundQueryId::OutRefundNo("R@1".into()));
        q.offset = Some(20);
        let p = q.to_params(&cfg()).unwrap();
        assert_eq!(
            (p["out_refund_no"].as_str(), p["offset"].as_str()),
            ("R@1", "20")
        );
    }

    #[test]
    fn refund_validation() {
        let id = OrderId::OutTradeNo("20150806125346".into());
        let ok = RefundRequest::new(id.clone(), "R1217752501", Fen::new(100), Fen::new(100));
        let p = ok.to_params(&cfg()).unwrap();
        assert_eq!(
            (p["total_fee"].as_str(), p["refund_fee"].as_str()),
            ("100", "100")
        );
        let over = RefundRequest::new(id.clone(), "R1", Fen::new(100), Fen::new(101));
        assert!(matches!(over.validate(), Err(Error::InvalidRequest(m)) if m.contains("exceed")));
        let zero = RefundRequest::new(id.clone(), "R1", Fen::new(100), Fen::ZERO);
        assert!(zero.validate().is_err());
        let bad_no = RefundRequest::new(id.clone(), "R 1", Fen::new(100), Fen::new(1));
        assert!(bad_no.validate().is_err());
        let mut bad_url = RefundRequest::new(id, "R1", Fen::new(100), Fen::new(1));
        bad_url.notify_url = Some("https://a.com/?q".into());
        assert!(bad_url.validate().is_err());
    }

    #[test]
    fn order_query_answer_with_coupons() {
        let m = map(&[
            ("trade_state", "SUCCESS"),
            ("trade_state_desc", "支付成功"),
            ("out_trade_no", "1409811653"),
            ("transaction_id", "1004400740201409030005092168"),
            ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            ("is_subscribe", "N"),
            ("trade_type", "JSAPI"),
            ("bank_type", "CMC"),
            ("total_fee", "100"),
            ("cash_fee", "70"),
            ("coupon_fee", "30"),
            ("coupon_count", "2"),
            ("coupon_id_0", "C0"),
            ("coupon_fee_0", "10"),
            ("coupon_type_0", "CASH"),
            ("coupon_id_1", "C1"),
            ("coupon_fee_1", "20"),
            ("time_end", "20140903131540"),
            ("attach", ""),
        ]);
        let r = OrderQueryResponse::from_map(&m).unwrap();
        assert_eq!(r.trade_state, TradeState::Success);
        assert!(r.trade_state.is_paid());
        assert_eq!(r.total_fee, Some(Fen::new(100)));
        assert_eq!(r.is_subscribe, Some(false));
        assert_eq!(r.attach, None, "an empty value counts as absent");
        assert_eq!(r.time_end, Some(datetime!(2014-09-03 13:15:40 +08:00)));
        assert_eq!(
            r.coupons,
            vec![
                Coupon {
                    coupon_type: Some("CASH".into()),
                    coupon_id: "C0".into(),
                    coupon_fee: Fen::new(10)
                },
                Coupon {
                    coupon_type: None,
                    coupon_id: "C1".into(),
                    coupon_fee: Fen::new(20)
                },
            ]
        );

        let mut bad = m.clone();
        bad.insert("coupon_count".into(), "3".into());
        assert!(
            matches!(OrderQueryResponse::from_map(&bad), Err(DecodeError::InvalidField { field, .. }) if field == "coupon_count")
        );
        let mut bad = m.clone();
        bad.remove("coupon_fee_1");
        assert_eq!(
            OrderQueryResponse::from_map(&bad),
            Err(DecodeError::MissingField("coupon_fee_1".into()))
        );
        let mut bad = m.clone();
        bad.insert("total_fee".into(), "1.00".into());
        assert!(OrderQueryResponse::from_map(&bad).is_err());
        let mut bad = m;
        bad.insert("time_end".into(), "2014-09-03".into());
        assert!(OrderQueryResponse::from_map(&bad).is_err());

        let unpaid = OrderQueryResponse::from_map(&map(&[
            ("trade_state", "NOTPAY"),
            ("out_trade_no", "1409811653"),
        ]))
        .unwrap();
        assert_eq!(unpaid.trade_state, TradeState::NotPay);
        assert!(unpaid.trade_state.is_intermediate());
        assert_eq!(unpaid.total_fee, None);
        assert_eq!(
            TradeState::from_code("NEW"),
            TradeState::Unknown("NEW".into())
        );
    }

    #[test]
    fn refund_query_answer_with_indexed_refunds() {
        let m = map(&[
            ("transaction_id", "4200000000000000000000000000"),
            ("out_trade_no", "20150806125346"),
            ("total_fee", "100"),
            ("cash_fee", "100"),
            ("refund_count", "2"),
            ("out_refund_no_0", "R0"),
            ("refund_id_0", "500000"),
            ("refund_fee_0", "30"),
            ("refund_status_0", "SUCCESS"),
            ("refund_recv_accout_0", "支付用户的零钱"),
            ("refund_success_time_0", "2024-01-02 03:04:05"),
            ("refund_account_0", "REFUND_SOURCE_UNSETTLED_FUNDS"),
            ("coupon_refund_count_0", "1"),
            ("coupon_refund_id_0_0", "CR"),
            ("coupon_refund_fee_0_0", "5"),
            ("out_refund_no_1", "R1"),
            ("refund_id_1", "500001"),
            ("refund_fee_1", "20"),
            ("refund_status_1", "PROCESSING"),
        ]);
        let r = RefundQueryResponse::from_map(&m).unwrap();
        assert_eq!(r.refund_count, 2);
        assert_eq!(r.refunds.len(), 2);
        let first = &r.refunds[0];
        assert_eq!(first.refund_status, RefundStatus::Success);
        assert_eq!(first.refund_fee, Fen::new(30));
        assert_eq!(first.refund_recv_accout.as_deref(), Some("支付用户的零钱"));
        assert_eq!(
            first.refund_success_time,
            Some(datetime!(2024-01-02 03:04:05 +08:00))
        );
        assert_eq!(first.refund_account, Some(RefundAccount::UnsettledFunds));
        assert_eq!(first.coupon_refunds.len(), 1);
        assert_eq!(first.coupon_refunds[0].coupon_refund_fee, Fen::new(5));
        assert_eq!(r.refunds[1].refund_status, RefundStatus::Processing);
        assert_eq!(r.refunds[1].refund_success_time, None);

        let mut bad = m.clone();
        bad.insert("refund_count".into(), "3".into());
        assert!(RefundQueryResponse::from_map(&bad).is_err());
        let mut bad = m;
        bad.remove("refund_id_1");
        assert_eq!(
            RefundQueryResponse::from_map(&bad),
            Err(DecodeError::MissingField("refund_id_1".into()))
        );
    }

    #[test]
    fn refund_answer() {
        let m = map(&[
            ("transaction_id", "4200000000000000000000000000"),
            ("out_trade_no", "20150806125346"),
            ("out_refund_no", "R1"),
            ("refund_id", "500000"),
            ("refund_fee", "50"),
            ("total_fee", "100"),
            ("cash_fee", "100"),
            ("coupon_refund_id_0", "CR0"),
            ("coupon_refund_fee_0", "3"),
        ]);
        let r = RefundResponse::from_map(&m).unwrap();
        assert_eq!(r.refund_fee, Fen::new(50));
        assert_eq!(r.coupon_refunds.len(), 1);
        let mut bad = m;
        bad.remove("refund_id");
        assert_eq!(
            RefundResponse::from_map(&bad),
            Err(DecodeError::MissingField("refund_id".into()))
        );
    }

    #[test]
    fn wire_times() {
        let t = parse_wire_time("time_end", "20091225091010").unwrap();
        assert_eq!(t, datetime!(2009-12-25 09:10:10 +08:00));
        assert_eq!(
            format_wire_time(t.to_offset(time::UtcOffset::UTC)),
            "20091225091010"
        );
        assert_eq!(format_dashed_time(t), "2009-12-25 09:10:10");
        assert!(parse_wire_time("t", "2009122509101").is_err());
        assert!(parse_dashed_time("t", "20091225091010").is_err());
    }
}
