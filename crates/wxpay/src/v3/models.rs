//! The JSON bodies of API v3: transactions, refunds, bills, certificates, notifications.
//!
//! Amounts are integer fen (`u64`). Absent, null and omitted fields are equivalent, and fields
//! this library does not know are ignored, as the protocol asks. Times are
//! [`OffsetDateTime`], read from and written as RFC 3339 with `+08:00` by
//! [`crate::time::v3`]. Requests are made from named fields and validated identifiers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AppId, OpenId, OutRefundNo, OutTradeNo, SubMchid};
use crate::money::Fen;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this library does not know, as sent.
            Unknown(String),
        }

        impl $name {
            /// The typed value of a wire string.
            #[must_use]
            pub fn from_wire(value: &str) -> Self {
                match value {
                    $($wire => $name::$variant,)*
                    other => $name::Unknown(other.to_owned()),
                }
            }

            /// The wire string.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)*
                    $name::Unknown(s) => s,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <String as serde::Deserialize>::deserialize(deserializer)?;
                Ok($name::from_wire(&value))
            }
        }
    };
}

pub(crate) use wire_enum;

wire_enum! {
    /// `trade_state` of a transaction.
    TradeState {
        /// Paid.
        Success = "SUCCESS",
        /// A refund was made.
        Refund = "REFUND",
        /// Not paid yet.
        NotPay = "NOTPAY",
        /// Closed.
        Closed = "CLOSED",
        /// Reversed (micropay).
        Revoked = "REVOKED",
        /// The user is entering the password (micropay).
        UserPaying = "USERPAYING",
        /// The payment failed at the bank.
        PayError = "PAYERROR",
        /// Accepted, awaiting debit.
        Accept = "ACCEPT",
    }
}

impl TradeState {
    /// Whether the state can still change by itself (payment may still arrive).
    #[must_use]
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            TradeState::NotPay | TradeState::UserPaying | TradeState::Accept
        )
    }
}

wire_enum! {
    /// `status` of a refund.
    RefundStatus {
        /// Refunded.
        Success = "SUCCESS",
        /// Closed.
        Closed = "CLOSED",
        /// Being processed.
        Processing = "PROCESSING",
        /// Abnormal: needs the merchant's action.
        Abnormal = "ABNORMAL",
    }
}

wire_enum! {
    /// `channel` of a refund.
    RefundChannel {
        /// Back to the original payment method.
        Original = "ORIGINAL",
        /// To the balance.
        Balance = "BALANCE",
        /// To another balance.
        OtherBalance = "OTHER_BALANCE",
        /// To another bank card.
        OtherBankcard = "OTHER_BANKCARD",
    }
}

wire_enum! {
    /// `bill_type` of a trade bill.
    TradeBillType {
        /// Every trade.
        All = "ALL",
        /// Successful payments.
        Success = "SUCCESS",
        /// Refunds.
        Refund = "REFUND",
        /// Recharge refunds.
        RechargeRefund = "RECHARGE_REFUND",
    }
}

wire_enum! {
    /// `account_type` of a fund-flow bill.
    FundFlowAccountType {
        /// The basic account.
        Basic = "BASIC",
        /// The operation account.
        Operation = "OPERATION",
        /// The fees account.
        Fees = "FEES",
    }
}

/// `amount` of a prepay request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayAmount {
    /// Total in fen, ≥ 1.
    pub total: u64,
    /// `CNY`.
    #[serde(default = "cny")]
    pub currency: String,
}

fn cny() -> String {
    "CNY".to_owned()
}

/// `payer` of a transaction, as WeChat reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    /// The user's openid under the appid.
    pub openid: String,
}

/// `payer` of a prepay request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayPayer {
    /// The user's openid under the appid.
    pub openid: OpenId,
}

/// One item of `detail.goods_detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsDetail {
    /// The merchant's item id.
    pub merchant_goods_id: String,
    /// WeChat's item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_goods_id: Option<String>,
    /// Item name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_name: Option<String>,
    /// Quantity.
    pub quantity: u32,
    /// Unit price in fen.
    pub unit_price: u64,
}

/// `detail` of a prepay request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetail {
    /// Original price in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_price: Option<u64>,
    /// Invoice id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    /// Items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goods_detail: Vec<GoodsDetail>,
}

/// `scene_info` of a prepay request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    /// The payer's IP.
    pub payer_client_ip: String,
    /// Device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// A JSAPI (mini program) prepay: `POST /v3/pay/transactions/jsapi`, without `appid` and `mchid`,
/// which the client adds from its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayRequest {
    /// Product description (≤ 127 characters).
    pub description: String,
    /// The merchant's order number.
    pub out_trade_no: OutTradeNo,
    /// Expiry time, sent as `2018-06-08T10:34:56+08:00`.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_expire: Option<OffsetDateTime>,
    /// Echoed back in query and notification (≤ 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// Absolute URL without a query string.
    pub notify_url: String,
    /// Goods tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    /// The amount.
    pub amount: PrepayAmount,
    /// The payer.
    pub payer: PrepayPayer,
    /// Items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<OrderDetail>,
    /// Scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
}

/// The required fields of a JSAPI prepay, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepayFields {
    /// Product description (≤ 127 characters).
    pub description: String,
    /// The merchant's order number.
    pub out_trade_no: OutTradeNo,
    /// The total.
    pub total: Fen,
    /// The payer.
    pub openid: OpenId,
    /// Absolute URL without a query string.
    pub notify_url: String,
}

impl PrepayRequest {
    /// The minimal mini-program prepay; set the optional fields on the result.
    #[must_use]
    pub fn jsapi(fields: PrepayFields) -> Self {
        let PrepayFields {
            description,
            out_trade_no,
            total,
            openid,
            notify_url,
        } = fields;
        PrepayRequest {
            description,
            out_trade_no,
            time_expire: None,
            attach: None,
            notify_url,
            goods_tag: None,
            amount: PrepayAmount {
                total: total.get(),
                currency: cny(),
            },
            payer: PrepayPayer { openid },
            detail: None,
            scene_info: None,
        }
    }
}

/// The prepay answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayResponse {
    /// Valid for 2 hours.
    pub prepay_id: String,
}

/// `amount` of a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// Order total in fen.
    #[serde(default)]
    pub total: u64,
    /// What the payer paid in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<u64>,
    /// Currency.
    #[serde(default = "cny")]
    pub currency: String,
    /// The payer's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// One entry of `promotion_detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionDetail {
    /// Coupon id.
    pub coupon_id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `GLOBAL` or `SINGLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `CASH` or `NOCASH`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    /// Coupon amount in fen.
    pub amount: u64,
    /// Stock id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_id: Option<String>,
    /// WeChat's contribution in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_contribute: Option<u64>,
    /// The merchant's contribution in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_contribute: Option<u64>,
    /// Others' contribution in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_contribute: Option<u64>,
    /// Currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A transaction (`GET /v3/pay/transactions/...`, and the payment notification's resource).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The appid of the order.
    pub appid: String,
    /// The merchant.
    pub mchid: String,
    /// The merchant's order number.
    pub out_trade_no: String,
    /// WeChat's transaction id (absent before payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `JSAPI`, `NATIVE`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// The state.
    pub trade_state: TradeState,
    /// The state in words, e.g. `支付成功`.
    #[serde(default)]
    pub trade_state_desc: String,
    /// Bank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    /// Echoed attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// Payment time.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_time: Option<OffsetDateTime>,
    /// The payer (absent before payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    /// The amount.
    #[serde(default)]
    pub amount: TransactionAmount,
    /// Coupons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_detail: Vec<PromotionDetail>,
}

/// Which order a refund is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundTarget {
    /// By WeChat's transaction id (preferred by the docs).
    TransactionId(String),
    /// By the merchant's order number.
    OutTradeNo(OutTradeNo),
}

/// `amount` of a refund request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestAmount {
    /// Refund in fen.
    pub refund: u64,
    /// The original order total in fen.
    pub total: u64,
    /// `CNY`.
    #[serde(default = "cny")]
    pub currency: String,
}

/// `POST /v3/refund/domestic/refunds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The order.
    #[serde(flatten)]
    pub target: RefundTarget,
    /// The merchant's refund number: retry a failed refund with the same one.
    pub out_refund_no: OutRefundNo,
    /// Reason shown to the user (≤ 80 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the refund notification goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// `AVAILABLE` to refund from the available balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    /// The amounts.
    pub amount: RefundRequestAmount,
}

/// The required fields of a refund, by name (the two amounts cannot be swapped by position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundFields {
    /// The order.
    pub target: RefundTarget,
    /// The merchant's refund number.
    pub out_refund_no: OutRefundNo,
    /// This refund.
    pub refund: Fen,
    /// The order's total.
    pub total: Fen,
}

impl RefundRequest {
    /// A refund of `refund` out of an order of `total`; set the optional fields on the result.
    #[must_use]
    pub fn new(fields: RefundFields) -> Self {
        let RefundFields {
            target,
            out_refund_no,
            refund,
            total,
        } = fields;
        RefundRequest {
            target,
            out_refund_no,
            reason: None,
            notify_url: None,
            funds_account: None,
            amount: RefundRequestAmount {
                refund: refund.get(),
                total: total.get(),
                currency: cny(),
            },
        }
    }
}

/// `amount` of a refund.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    /// Order total in fen.
    #[serde(default)]
    pub total: u64,
    /// Refund in fen.
    #[serde(default)]
    pub refund: u64,
    /// What the payer paid.
    #[serde(default)]
    pub payer_total: u64,
    /// What the payer gets back.
    #[serde(default)]
    pub payer_refund: u64,
    /// Settlement refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_refund: Option<u64>,
    /// Settlement total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_total: Option<u64>,
    /// Discount refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_refund: Option<u64>,
    /// Currency.
    #[serde(default = "cny")]
    pub currency: String,
    /// Refund fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<u64>,
}

/// A refund (answer of create and query).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// WeChat's refund id.
    pub refund_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The transaction.
    pub transaction_id: String,
    /// The order.
    pub out_trade_no: String,
    /// Where the money goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<RefundChannel>,
    /// E.g. `支付用户零钱`.
    #[serde(default)]
    pub user_received_account: String,
    /// Success time.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_time: Option<OffsetDateTime>,
    /// Creation time.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub create_time: Option<OffsetDateTime>,
    /// The status; usually `PROCESSING` at creation.
    pub status: RefundStatus,
    /// The funds account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    /// The amounts.
    pub amount: RefundAmount,
}

/// `GET /v3/bill/tradebill`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeBillRequest {
    /// The day.
    pub bill_date: time::Date,
    /// Which trades.
    pub bill_type: TradeBillType,
    /// Ask for a gzip body.
    pub gzip: bool,
}

/// `GET /v3/bill/fundflowbill`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundFlowBillRequest {
    /// The day.
    pub bill_date: time::Date,
    /// Which account.
    pub account_type: FundFlowAccountType,
    /// Ask for a gzip body.
    pub gzip: bool,
}

/// Where a bill can be downloaded, and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillLocation {
    /// `SHA1`.
    pub hash_type: String,
    /// Lowercase hex SHA-1 of the decompressed bill.
    pub hash_value: String,
    /// Valid for a few minutes.
    pub download_url: String,
}

/// An encrypted resource: a notification's `resource` or a certificate's `encrypt_certificate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// base64 of ciphertext || tag.
    pub ciphertext: String,
    /// The AAD; absent means empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    /// The 12-character nonce.
    pub nonce: String,
    /// `transaction`, `refund` (notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

/// The name of the only resource algorithm.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// One entry of `GET /v3/certificates`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedCertificate {
    /// Serial, uppercase hex.
    pub serial_no: String,
    /// From when it is valid.
    #[serde(with = "crate::time::v3")]
    pub effective_time: OffsetDateTime,
    /// Until when it is valid.
    #[serde(with = "crate::time::v3")]
    pub expire_time: OffsetDateTime,
    /// The PEM, encrypted with the APIv3 key.
    pub encrypt_certificate: EncryptedResource,
}

/// `GET /v3/certificates`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateList {
    /// The certificates.
    pub data: Vec<EncryptedCertificate>,
}

/// The envelope of a notification, before decryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    /// Event id, e.g. `EV-2018022511223320873`.
    pub id: String,
    /// When WeChat made the event.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
    /// `encrypt-resource`.
    pub resource_type: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`.
    pub event_type: String,
    /// E.g. `支付成功`.
    #[serde(default)]
    pub summary: String,
    /// The encrypted resource.
    pub resource: EncryptedResource,
}

/// `amount` of a refund notification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotificationAmount {
    /// Order total in fen.
    #[serde(default)]
    pub total: u64,
    /// Refund in fen.
    #[serde(default)]
    pub refund: u64,
    /// What the payer paid.
    #[serde(default)]
    pub payer_total: u64,
    /// What the payer gets back.
    #[serde(default)]
    pub payer_refund: u64,
}

/// The decrypted resource of a refund notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResource {
    /// The merchant (absent in some models; checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    /// The order.
    pub out_trade_no: String,
    /// The transaction.
    pub transaction_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat's refund id.
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub refund_status: RefundStatus,
    /// Success time.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_time: Option<OffsetDateTime>,
    /// E.g. `支付用户零钱`.
    #[serde(default)]
    pub user_received_account: String,
    /// The amounts.
    #[serde(default)]
    pub amount: RefundNotificationAmount,
}

// ---------------------------------------------------------------------------------------------
// Service-provider (服务商, partner) mode

/// `payer` of a partner prepay: the user under the provider's mini program (`sp_openid`, under
/// `sp_appid`) or under the sub-merchant's (`sub_openid`, under `sub_appid`), exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerPayer {
    /// `{"sp_openid": ...}`: the user of the provider's mini program (`sp_appid`).
    SpOpenid(OpenId),
    /// `{"sub_openid": ...}`: the user of the sub-merchant's mini program; the prepay must carry
    /// `sub_appid`.
    SubOpenid(OpenId),
}

/// `settle_info` of a partner prepay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleInfo {
    /// Whether the order will be shared (分账).
    pub profit_sharing: bool,
}

/// A partner JSAPI (mini program) prepay: `POST /v3/pay/partner/transactions/jsapi`, without
/// `sp_appid` and `sp_mchid`, which the client adds from its configuration (the provider's appid
/// and mchid). Checked by [`PartnerPrepayRequest::validate`] before it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPrepayRequest {
    /// The sub-merchant's mini program, bound to `sub_mchid`; required with
    /// [`PartnerPayer::SubOpenid`]. When present, `wx.requestPayment` is signed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<AppId>,
    /// The sub-merchant (特约商户号).
    pub sub_mchid: SubMchid,
    /// Product description (≤ 127 characters).
    pub description: String,
    /// The order number, unique per provider (`sp_mchid`).
    pub out_trade_no: OutTradeNo,
    /// Expiry time, sent as `2018-06-08T10:34:56+08:00`.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_expire: Option<OffsetDateTime>,
    /// Echoed back in query and notification (≤ 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// Absolute URL without a query string.
    pub notify_url: String,
    /// Goods tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    /// Profit sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<SettleInfo>,
    /// The amount.
    pub amount: PrepayAmount,
    /// The payer.
    pub payer: PartnerPayer,
    /// Items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<OrderDetail>,
    /// Scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
}

/// The required fields of a partner JSAPI prepay, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerPrepayFields {
    /// The sub-merchant.
    pub sub_mchid: SubMchid,
    /// The sub-merchant's mini program (required with [`PartnerPayer::SubOpenid`]).
    pub sub_appid: Option<AppId>,
    /// Product description (≤ 127 characters).
    pub description: String,
    /// The order number.
    pub out_trade_no: OutTradeNo,
    /// The total.
    pub total: Fen,
    /// The payer.
    pub payer: PartnerPayer,
    /// Absolute URL without a query string.
    pub notify_url: String,
}

/// Which mini program calls `wx.requestPayment` for a partner order, so which appid its
/// `paySign` covers. Taken from the prepay by [`PartnerPrepayRequest::paying_app`]: the
/// sub-merchant's `sub_appid` when the prepay carried one, else the provider's `sp_appid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayingApp {
    /// The provider's mini program (`sp_appid`, the client's configured appid).
    Provider,
    /// The sub-merchant's mini program (`sub_appid`).
    SubMerchant(AppId),
}

impl PayingApp {
    /// The appid to sign, given the provider's `sp_appid`.
    #[must_use]
    pub fn app_id<'a>(&'a self, sp_appid: &'a str) -> &'a str {
        match self {
            PayingApp::Provider => sp_appid,
            PayingApp::SubMerchant(sub_appid) => sub_appid.as_str(),
        }
    }
}

impl PartnerPrepayRequest {
    /// The minimal partner mini-program prepay; set the optional fields on the result.
    #[must_use]
    pub fn jsapi(fields: PartnerPrepayFields) -> Self {
        let PartnerPrepayFields {
            sub_mchid,
            sub_appid,
            description,
            out_trade_no,
            total,
            payer,
            notify_url,
        } = fields;
        PartnerPrepayRequest {
            sub_appid,
            sub_mchid,
            description,
            out_trade_no,
            time_expire: None,
            attach: None,
            notify_url,
            goods_tag: None,
            settle_info: None,
            amount: PrepayAmount {
                total: total.get(),
                currency: cny(),
            },
            payer,
            detail: None,
            scene_info: None,
        }
    }

    /// The mini program whose appid the `paySign` covers: `sub_appid` when present, else the
    /// provider's `sp_appid`.
    #[must_use]
    pub fn paying_app(&self) -> PayingApp {
        match &self.sub_appid {
            Some(sub_appid) => PayingApp::SubMerchant(sub_appid.clone()),
            None => PayingApp::Provider,
        }
    }

    /// The rules WeChat checks that can be checked here: a `sub_openid` needs `sub_appid`,
    /// description 1–127 characters, total ≥ 1 fen, a valid notify_url, attach ≤ 128 bytes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRequest`] naming the rule.
    pub fn validate(&self) -> Result<(), crate::Error> {
        use crate::Error::InvalidRequest;
        if matches!(self.payer, PartnerPayer::SubOpenid(_)) && self.sub_appid.is_none() {
            return Err(InvalidRequest(
                "payer.sub_openid requires sub_appid (the sub-merchant's mini program)".into(),
            ));
        }
        crate::validate::notify_url(&self.notify_url, crate::validate::V3_NOTIFY_URL_MAX)?;
        if self.amount.total == 0 {
            return Err(InvalidRequest("amount.total must be at least 1 fen".into()));
        }
        if self.description.is_empty() || self.description.chars().count() > 127 {
            return Err(InvalidRequest(
                "description must be 1 to 127 characters".into(),
            ));
        }
        if self.attach.as_ref().is_some_and(|a| a.len() > 128) {
            return Err(InvalidRequest("attach must be at most 128 bytes".into()));
        }
        Ok(())
    }
}

/// `payer` of a partner transaction: the openid under whichever appid the order was made for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPayerInfo {
    /// The openid under `sp_appid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_openid: Option<String>,
    /// The openid under `sub_appid` (absent when the order had no `sub_appid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<String>,
}

/// A partner transaction (`GET /v3/pay/partner/transactions/...`, and the partner payment
/// notification's resource).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerTransaction {
    /// The provider's appid.
    pub sp_appid: String,
    /// The provider.
    pub sp_mchid: String,
    /// The sub-merchant's appid, when the order carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    /// The sub-merchant.
    pub sub_mchid: String,
    /// The order number.
    pub out_trade_no: String,
    /// WeChat's transaction id (absent before payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `JSAPI`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// The state.
    pub trade_state: TradeState,
    /// The state in words.
    #[serde(default)]
    pub trade_state_desc: String,
    /// Bank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    /// Echoed attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// Payment time.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_time: Option<OffsetDateTime>,
    /// The payer (absent before payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<PartnerPayerInfo>,
    /// The amount.
    #[serde(default)]
    pub amount: TransactionAmount,
    /// Coupons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_detail: Vec<PromotionDetail>,
}

/// `POST /v3/refund/domestic/refunds` for a sub-merchant's order: a refund plus `sub_mchid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRefundRequest {
    /// The sub-merchant.
    pub sub_mchid: SubMchid,
    /// The refund.
    #[serde(flatten)]
    pub refund: RefundRequest,
}

/// The decrypted resource of a partner refund notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRefundResource {
    /// The provider.
    pub sp_mchid: String,
    /// The sub-merchant.
    pub sub_mchid: String,
    /// The order.
    pub out_trade_no: String,
    /// The transaction.
    pub transaction_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat's refund id.
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub refund_status: RefundStatus,
    /// Success time.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_time: Option<OffsetDateTime>,
    /// E.g. `支付用户零钱`.
    #[serde(default)]
    pub user_received_account: String,
    /// The amounts.
    #[serde(default)]
    pub amount: RefundNotificationAmount,
}

/// A v3 error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// E.g. `PARAM_ERROR`.
    pub code: String,
    /// Human text.
    #[serde(default)]
    pub message: String,
    /// Optional detail object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner_fields(payer: PartnerPayer, sub_appid: Option<&str>) -> PartnerPrepayRequest {
        PartnerPrepayRequest::jsapi(PartnerPrepayFields {
            sub_mchid: "1900000109".parse().unwrap(),
            sub_appid: sub_appid.map(|a| a.parse().unwrap()),
            description: "Tea".into(),
            out_trade_no: "P1234567".parse().unwrap(),
            total: Fen::new(100),
            payer,
            notify_url: "https://a.example/n".into(),
        })
    }

    #[test]
    fn partner_prepay_payer_and_paying_app() {
        let sub = partner_fields(
            PartnerPayer::SubOpenid("o_sub".parse().unwrap()),
            Some("wxsub"),
        );
        assert!(sub.validate().is_ok());
        assert_eq!(
            sub.paying_app(),
            PayingApp::SubMerchant("wxsub".parse().unwrap())
        );
        assert_eq!(sub.paying_app().app_id("wxsp"), "wxsub");
        let json = serde_json::to_value(&sub).unwrap();
        assert_eq!(json["payer"], serde_json::json!({"sub_openid": "o_sub"}));
        assert_eq!(json["sub_mchid"], "1900000109");
        assert_eq!(json["sub_appid"], "wxsub");
        assert_eq!(
            serde_json::from_value::<PartnerPrepayRequest>(json).unwrap(),
            sub
        );

        let sp = partner_fields(PartnerPayer::SpOpenid("o_sp".parse().unwrap()), None);
        assert!(sp.validate().is_ok());
        assert_eq!(sp.paying_app(), PayingApp::Provider);
        assert_eq!(sp.paying_app().app_id("wxsp"), "wxsp");
        let json = serde_json::to_value(&sp).unwrap();
        assert_eq!(json["payer"], serde_json::json!({"sp_openid": "o_sp"}));
        assert!(json.get("sub_appid").is_none());
    }

    #[test]
    fn partner_pay_sign_covers_the_paying_apps_appid() {
        let key = crate::keys::RsaPrivateKey::generate().unwrap();
        let sub = partner_fields(
            PartnerPayer::SubOpenid("o_sub".parse().unwrap()),
            Some("wxsub"),
        );
        let app = sub.paying_app();
        let p =
            crate::pay_params::v3(&key, app.app_id("wxsp"), "wx123", 1_700_000_000, "n1").unwrap();
        assert_eq!(
            crate::pay_params::v3_message("wxsub", "1700000000", "n1", "prepay_id=wx123"),
            "wxsub\n1700000000\nn1\nprepay_id=wx123\n"
        );
        assert_eq!(p.app_id.as_deref(), Some("wxsub"));
        assert!(crate::pay_params::verify(&p, "wxsub", "", key.public_key()).is_ok());
        assert!(crate::pay_params::verify(&p, "wxsp", "", key.public_key()).is_err());
    }

    #[test]
    fn partner_prepay_is_checked_before_sending() {
        let no_sub_appid = partner_fields(PartnerPayer::SubOpenid("o_sub".parse().unwrap()), None);
        assert!(matches!(
            no_sub_appid.validate(),
            Err(crate::Error::InvalidRequest(m)) if m.contains("sub_appid")
        ));
        let mut empty = partner_fields(PartnerPayer::SpOpenid("o".parse().unwrap()), None);
        empty.description.clear();
        assert!(empty.validate().is_err());
        let mut zero = partner_fields(PartnerPayer::SpOpenid("o".parse().unwrap()), None);
        zero.amount.total = 0;
        assert!(zero.validate().is_err());
        let mut query = partner_fields(PartnerPayer::SpOpenid("o".parse().unwrap()), None);
        query.notify_url = "https://a.example/n?x=1".into();
        assert!(query.validate().is_err());
        assert!("".parse::<SubMchid>().is_err());
        assert!("19 00".parse::<SubMchid>().is_err());
        assert!("wx\n".parse::<AppId>().is_err());
    }

    #[test]
    fn partner_transaction_and_refund_shapes_decode() {
        let t: PartnerTransaction = serde_json::from_str(
            r#"{"sp_appid":"wxsp","sp_mchid":"1","sub_appid":"wxsub","sub_mchid":"2","out_trade_no":"P1","transaction_id":"42","trade_state":"SUCCESS","trade_state_desc":"支付成功","success_time":"2026-11-24T10:00:00+08:00","payer":{"sub_openid":"o1"},"amount":{"total":100,"payer_total":100,"currency":"CNY"}}"#,
        )
        .unwrap();
        assert_eq!(t.sub_mchid, "2");
        assert_eq!(t.payer.unwrap().sub_openid.as_deref(), Some("o1"));
        let r = PartnerRefundRequest {
            sub_mchid: "2".parse().unwrap(),
            refund: RefundRequest::new(RefundFields {
                target: RefundTarget::OutTradeNo("P123456".parse().unwrap()),
                out_refund_no: "R1".parse().unwrap(),
                refund: Fen::new(10),
                total: Fen::new(100),
            }),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["sub_mchid"], "2");
        assert_eq!(json["out_trade_no"], "P123456");
        assert_eq!(json["amount"]["refund"], 10);
    }

    #[test]
    fn unknown_trade_states_are_kept() {
        let t: TradeState = serde_json::from_str("\"SOMETHING_NEW\"").unwrap();
        assert_eq!(t, TradeState::Unknown("SOMETHING_NEW".into()));
        assert_eq!(
            serde_json::to_string(&TradeState::NotPay).unwrap(),
            "\"NOTPAY\""
        );
    }

    #[test]
    fn refund_target_flattens_to_one_field() {
        let r = RefundRequest::new(RefundFields {
            target: RefundTarget::OutTradeNo("T123456".parse().unwrap()),
            out_refund_no: "R1".parse().unwrap(),
            refund: Fen::new(50),
            total: Fen::new(100),
        });
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["out_trade_no"], "T123456");
        assert!(json.get("transaction_id").is_none());
        assert_eq!(json["amount"]["refund"], 50);
        let back: RefundRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unpaid_transaction_without_optional_fields_decodes() {
        let t: Transaction = serde_json::from_str(
            r#"{"appid":"wx1","mchid":"1","out_trade_no":"T1","trade_state":"NOTPAY","trade_state_desc":"未支付","amount":{"total":100,"currency":"CNY"},"new_field":1}"#,
        )
        .unwrap();
        assert_eq!(t.trade_state, TradeState::NotPay);
        assert!(t.transaction_id.is_none() && t.payer.is_none());
    }

    #[test]
    fn times_are_typed_and_written_back_unchanged() {
        let json = r#"{"appid":"wx1","mchid":"1","out_trade_no":"T1","trade_state":"SUCCESS","trade_state_desc":"","success_time":"2026-11-24T10:00:00+08:00","amount":{"total":100,"currency":"CNY"}}"#;
        let t: Transaction = serde_json::from_str(json).unwrap();
        assert_eq!(
            t.success_time,
            Some(time::macros::datetime!(2026-11-24 02:00:00 UTC))
        );
        assert!(
            serde_json::to_string(&t)
                .unwrap()
                .contains(r#""success_time":"2026-11-24T10:00:00+08:00""#)
        );
        let bad = json.replace("2026-11-24T10:00:00+08:00", "2026-11-24 10:00:00");
        assert!(serde_json::from_str::<Transaction>(&bad).is_err());

        let mut prepay = PrepayRequest::jsapi(PrepayFields {
            description: "Coffee".into(),
            out_trade_no: "T1234567".parse().unwrap(),
            total: Fen::new(1),
            openid: "o1".parse().unwrap(),
            notify_url: "https://a.example/n".into(),
        });
        prepay.time_expire = Some(time::macros::datetime!(2018-06-08 02:34:56 UTC));
        let json = serde_json::to_value(&prepay).unwrap();
        assert_eq!(json["time_expire"], "2018-06-08T10:34:56+08:00");
        assert_eq!(json["out_trade_no"], "T1234567");
        assert_eq!(json["payer"]["openid"], "o1");
    }
}
