//! The business vocabulary the protocol sides share: states, refusals, snapshots of orders and
//! refunds, what creating them takes, and WeChat's limits.

use wxpay::v2::SignType;

/// How long a `prepay_id` can be paid: 2 hours.
pub const PREPAY_TTL_SECS: i64 = 2 * 3600;
/// How long an unpaid order stays payable without an explicit `time_expire`: 7 days (§B.9).
pub const DEFAULT_ORDER_TTL_SECS: i64 = 7 * 24 * 3600;
/// At most this many refunds per order (§A.7).
pub const MAX_REFUNDS_PER_ORDER: u32 = 50;
/// Simulated seconds a refund stays `PROCESSING` before it succeeds (divided by the time scale
/// for the wall-clock timer).
pub const REFUND_PROCESSING_SECS: i64 = 5;

// ---------------------------------------------------------------------------------------------
// Enums

/// Which API created an order or refund: it decides the notification format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// API v2 (XML, MD5/HMAC-SHA256).
    V2,
    /// API v3 (JSON, RSA).
    V3,
}

/// The trade state of an order (`trade_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TradeState {
    /// `NOTPAY`: created, not paid.
    NotPay,
    /// `SUCCESS`: paid.
    Success,
    /// `REFUND`: paid, and at least one refund was made.
    Refund,
    /// `CLOSED`: closed by the merchant or expired.
    Closed,
    /// `PAYERROR`: the payment failed (bank failure); final.
    PayError,
}

impl TradeState {
    /// The wire value, the same in v2 and v3.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TradeState::NotPay => "NOTPAY",
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::Closed => "CLOSED",
            TradeState::PayError => "PAYERROR",
        }
    }

    /// `trade_state_desc` as WeChat writes it.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            TradeState::NotPay => "订单未支付",
            TradeState::Success => "支付成功",
            TradeState::Refund => "订单发生过退款，退款详情请查询退款单",
            TradeState::Closed => "订单已关闭",
            TradeState::PayError => "支付失败，请重新下单支付",
        }
    }

    /// Whether the order was paid (SUCCESS or REFUND).
    #[must_use]
    pub const fn is_paid(self) -> bool {
        matches!(self, TradeState::Success | TradeState::Refund)
    }

    pub(super) const fn to_u8(self) -> u8 {
        self as u8
    }

    pub(super) const fn from_u8(v: u8) -> Self {
        match v {
            0 => TradeState::NotPay,
            1 => TradeState::Success,
            2 => TradeState::Refund,
            3 => TradeState::Closed,
            _ => TradeState::PayError,
        }
    }
}

/// The trade type (`trade_type`). Mini programs use JSAPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TradeType {
    /// `JSAPI`: mini programs and official accounts.
    Jsapi,
    /// `NATIVE`: QR code payments (v2 `code_url`).
    Native,
    /// `APP`.
    App,
    /// `MWEB`: H5.
    Mweb,
}

impl TradeType {
    /// The wire value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TradeType::Jsapi => "JSAPI",
            TradeType::Native => "NATIVE",
            TradeType::App => "APP",
            TradeType::Mweb => "MWEB",
        }
    }

    /// Parses a wire value.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "JSAPI" => Some(TradeType::Jsapi),
            "NATIVE" => Some(TradeType::Native),
            "APP" => Some(TradeType::App),
            "MWEB" => Some(TradeType::Mweb),
            _ => None,
        }
    }
}

/// The state of a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Accepted, in progress.
    Processing,
    /// Refunded.
    Success,
    /// Closed.
    Closed,
    /// Abnormal (the user's account cannot receive it).
    Abnormal,
}

impl RefundStatus {
    /// The v3 value: `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`.
    #[must_use]
    pub const fn as_v3(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }

    /// The v2 value: `PROCESSING`, `SUCCESS`, `REFUNDCLOSE`, `CHANGE`.
    #[must_use]
    pub const fn as_v2(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "REFUNDCLOSE",
            RefundStatus::Abnormal => "CHANGE",
        }
    }
}

/// What the payer's client reports in `/sim/pay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayOutcome {
    /// The payment succeeds.
    Success,
    /// The bank fails the payment: the order becomes `PAYERROR`.
    PayError,
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A business rule refused the operation. Each protocol side maps these to its own codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The `out_trade_no` exists with other parameters, or names a closed order (v2
    /// `INVALID_REQUEST` `201 商户订单号重复`, v3 403 `OUT_TRADE_NO_USED`).
    #[error("商户订单号重复")]
    OutTradeNoUsed,
    /// The order is paid (v2 `ORDERPAID`).
    #[error("该订单已支付")]
    OrderPaid,
    /// The order is closed (v2 `ORDERCLOSED`, v3 400 `ORDER_CLOSED`).
    #[error("订单已关闭")]
    OrderClosed,
    /// No such order (v2 `ORDERNOTEXIST`, v3 404 `ORDER_NOT_EXIST`).
    #[error("订单不存在")]
    OrderNotExist,
    /// The `prepay_id` is unknown or was replaced.
    #[error("prepay_id无效")]
    PrepayIdInvalid,
    /// The `prepay_id` is older than 2 hours.
    #[error("prepay_id已过期")]
    PrepayExpired,
    /// The payer is not the openid the order was made for.
    #[error("支付用户与下单用户不一致")]
    PayerMismatch,
    /// The order is in a state that cannot be paid (PAYERROR).
    #[error("订单状态{0:?}不允许支付")]
    NotPayable(TradeState),
    /// A refund of an order that is not paid.
    #[error("订单未支付，不能退款")]
    OrderNotPaid,
    /// No such refund (v2 `REFUNDNOTEXIST`, v3 404 `RESOURCE_NOT_EXISTS`).
    #[error("退款单不存在")]
    RefundNotExist,
    /// The refund is over what is left to refund.
    #[error("退款金额大于可退金额，可退金额为{remaining}分")]
    RefundExceedsRemaining {
        /// What is left, in fen.
        remaining: u64,
    },
    /// The `total` given with a refund is not the order total.
    #[error("订单金额与原订单金额{total}分不一致")]
    RefundTotalMismatch {
        /// The order total, in fen.
        total: u64,
    },
    /// More than 50 refunds.
    #[error("退款次数超过上限50次")]
    TooManyRefunds,
    /// The `out_refund_no` was used for another order or amount.
    #[error("商户退款单号已被使用，且退款参数不一致")]
    OutRefundNoUsed,
    /// An amount of zero.
    #[error("金额必须大于0")]
    InvalidAmount,
    /// A text field too long to store.
    #[error("字段{0}过长")]
    FieldTooLong(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Public snapshots

/// An order as the protocol sides see it (an owned snapshot; the store keeps a compact record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The merchant's order number.
    pub out_trade_no: String,
    /// The appid the order was made for.
    pub appid: String,
    /// The merchant id.
    pub mchid: String,
    /// The payer's openid (empty for NATIVE orders until paid).
    pub openid: String,
    /// `description` (v3) / `body` (v2).
    pub description: String,
    /// `attach`, echoed back.
    pub attach: Option<String>,
    /// v2 `device_info`, echoed back by orderquery.
    pub device_info: Option<String>,
    /// Where the payment notification goes.
    pub notify_url: String,
    /// The order amount in fen.
    pub total: u64,
    /// The API that created the order.
    pub version: ApiVersion,
    /// v2: the `sign_type` of unifiedorder (the `paySign` must use it). MD5 for v3 orders.
    pub sign_type: SignType,
    /// The trade type.
    pub trade_type: TradeType,
    /// The current state.
    pub trade_state: TradeState,
    /// The current `prepay_id`.
    pub prepay_id: String,
    /// When the current `prepay_id` was made (Unix seconds).
    pub prepay_created_at: i64,
    /// When the order stops being payable (Unix seconds).
    pub time_expire: i64,
    /// WeChat's order number, once paid.
    pub transaction_id: Option<String>,
    /// When it was paid (Unix seconds).
    pub success_time: Option<i64>,
    /// The sum of accepted refunds, in fen.
    pub refunded: u64,
    /// How many refunds were accepted.
    pub refund_count: u32,
    /// When the order was created (Unix seconds).
    pub created_at: i64,
}

impl Order {
    /// What can still be refunded, in fen.
    #[must_use]
    pub fn refundable(&self) -> u64 {
        self.total.saturating_sub(self.refunded)
    }

    /// Whether the prepay id is older than 2 hours at `now`.
    #[must_use]
    pub fn prepay_expired(&self, now: i64) -> bool {
        now >= self.prepay_created_at + PREPAY_TTL_SECS
    }
}

/// A refund, as the protocol sides see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat's refund number.
    pub refund_id: String,
    /// The refunded order.
    pub out_trade_no: String,
    /// The refunded order's WeChat number.
    pub transaction_id: String,
    /// The refund amount in fen.
    pub amount: u64,
    /// The order total in fen.
    pub total: u64,
    /// The state.
    pub status: RefundStatus,
    /// `reason` / `refund_desc`.
    pub reason: Option<String>,
    /// Where the refund notification goes (none: no notification).
    pub notify_url: Option<String>,
    /// The API that created the refund.
    pub version: ApiVersion,
    /// When it was accepted (Unix seconds).
    pub created_at: i64,
    /// When it succeeded (Unix seconds).
    pub success_time: Option<i64>,
    /// When the simulator completes it (Unix seconds, simulated clock).
    pub due_at: i64,
}

/// Everything needed to create (or re-issue) an order.
#[derive(Clone, Debug)]
pub struct NewOrder<'a> {
    /// appid (already checked against the merchant by the caller).
    pub appid: &'a str,
    /// mchid.
    pub mchid: &'a str,
    /// out_trade_no (already validated by the caller: 6–32 chars of `[0-9A-Za-z_\-|*]`).
    pub out_trade_no: &'a str,
    /// The payer (empty for NATIVE).
    pub openid: &'a str,
    /// description / body.
    pub description: &'a str,
    /// attach.
    pub attach: Option<&'a str>,
    /// v2 `device_info`.
    pub device_info: Option<&'a str>,
    /// notify_url.
    pub notify_url: &'a str,
    /// Amount in fen, ≥ 1.
    pub total: u64,
    /// The API.
    pub version: ApiVersion,
    /// v2 sign_type (MD5 for v3).
    pub sign_type: SignType,
    /// The trade type.
    pub trade_type: TradeType,
    /// Explicit `time_expire` (Unix seconds); none means 7 days.
    pub time_expire: Option<i64>,
}

/// What [`Store::create_or_reuse_order`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderCreation {
    /// A new order.
    Created,
    /// The same order and its still valid prepay id.
    Reused,
    /// The same order with a fresh prepay id (the old one had expired).
    PrepayRenewed,
}

/// The target of a refund: v2 and v3 let the merchant name the order either way;
/// `transaction_id` wins when both are given.
#[derive(Clone, Copy, Debug)]
pub enum OrderRef<'a> {
    /// By WeChat's order number.
    TransactionId(&'a str),
    /// By the merchant's order number.
    OutTradeNo(&'a str),
}

/// Everything needed to ask for a refund.
#[derive(Clone, Debug)]
pub struct NewRefund<'a> {
    /// The order.
    pub order: OrderRef<'a>,
    /// The merchant's refund number.
    pub out_refund_no: &'a str,
    /// Refund amount in fen.
    pub amount: u64,
    /// The order total the merchant states, in fen (must equal the order's).
    pub total: u64,
    /// The reason.
    pub reason: Option<&'a str>,
    /// Where the refund notification goes.
    pub notify_url: Option<&'a str>,
    /// The API.
    pub version: ApiVersion,
}

/// The rows of one GMT+8 day, for bills.
#[derive(Clone, Debug, Default)]
pub struct BillDay {
    /// Orders paid that day (state SUCCESS or REFUND), by payment time.
    pub payments: Vec<Order>,
    /// Refunds that succeeded that day, with their order.
    pub refunds: Vec<(Refund, Order)>,
}

pub(super) fn trade_state_of(text: &str) -> Option<TradeState> {
    [
        TradeState::NotPay,
        TradeState::Success,
        TradeState::Refund,
        TradeState::Closed,
        TradeState::PayError,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

pub(super) fn refund_status_of(text: &str) -> Option<RefundStatus> {
    [
        RefundStatus::Processing,
        RefundStatus::Success,
        RefundStatus::Closed,
        RefundStatus::Abnormal,
    ]
    .into_iter()
    .find(|s| s.as_v3() == text)
}

pub(super) const fn api_version_str(v: ApiVersion) -> &'static str {
    match v {
        ApiVersion::V2 => "v2",
        ApiVersion::V3 => "v3",
    }
}

pub(super) fn api_version_of(text: &str) -> Option<ApiVersion> {
    match text {
        "v2" => Some(ApiVersion::V2),
        "v3" => Some(ApiVersion::V3),
        _ => None,
    }
}
