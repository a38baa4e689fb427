//! 小程序发货信息管理服务 (order shipping information management), the pure part: the typed
//! requests of `/wxa/sec/order/*` with the checks WeChat documents for their fields, run before
//! anything is sent, and the typed answers. The calls are on [`super::MpClient`].
//!
//! Funds of a managed mini program stay frozen until the shipping information is uploaded and
//! the buyer confirms receipt (or WeChat does after a delay); see `README.md`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::validate::invalid;

/// The most packages in one `shipping_list` (current documentation; older copies said 10).
pub const MAX_SHIPPING_ITEMS: usize = 15;
/// The most characters of an `item_desc`.
pub const ITEM_DESC_MAX_CHARS: usize = 120;
/// The most bytes of a `tracking_no` or `express_company`.
pub const TRACKING_MAX_BYTES: usize = 128;
/// The most bytes of a masked contact.
pub const CONTACT_MAX_BYTES: usize = 1024;
/// The `express_company` (`delivery_id`) of SF Express, whose packages need a masked contact.
pub const SF_EXPRESS: &str = "SF";

/// Which payment a shipping upload is about (`order_key`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OrderKey {
    /// `order_number_type` 2: the WeChat Pay `transaction_id`.
    TransactionId(String),
    /// `order_number_type` 1: the merchant's number and order number.
    OutTradeNo {
        /// `mchid` (the sub-merchant's for a service provider's payment).
        mchid: String,
        /// `out_trade_no`.
        out_trade_no: String,
    },
}

impl OrderKey {
    /// The key of a WeChat Pay `transaction_id`.
    pub fn transaction_id(id: impl Into<String>) -> Self {
        OrderKey::TransactionId(id.into())
    }

    /// The key of a merchant number and `out_trade_no`.
    pub fn out_trade_no(mchid: impl Into<String>, out_trade_no: impl Into<String>) -> Self {
        OrderKey::OutTradeNo {
            mchid: mchid.into(),
            out_trade_no: out_trade_no.into(),
        }
    }

    /// `order_number_type`: 1 for the merchant's number, 2 for the `transaction_id`.
    #[must_use]
    pub fn number_type(&self) -> u8 {
        match self {
            OrderKey::TransactionId(_) => 2,
            OrderKey::OutTradeNo { .. } => 1,
        }
    }

    /// Checks the key's fields.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`].
    pub fn validate(&self) -> Result<()> {
        match self {
            OrderKey::TransactionId(id) => crate::validate::transaction_id(id),
            OrderKey::OutTradeNo {
                mchid,
                out_trade_no,
            } => {
                validate_mchid("order_key.mchid", mchid)?;
                validate_out_trade_no("order_key.out_trade_no", out_trade_no)
            }
        }
    }

    /// The JSON `order_key` object.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            OrderKey::TransactionId(id) => json!({"order_number_type": 2, "transaction_id": id}),
            OrderKey::OutTradeNo {
                mchid,
                out_trade_no,
            } => json!({"order_number_type": 1, "mchid": mchid, "out_trade_no": out_trade_no}),
        }
    }
}

fn validate_mchid(field: &str, mchid: &str) -> Result<()> {
    if mchid.is_empty() || mchid.len() > 32 || !mchid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("{field} must be 1 to 32 digits")));
    }
    Ok(())
}

fn validate_out_trade_no(field: &str, no: &str) -> Result<()> {
    if no.is_empty()
        || no.len() > 32
        || !no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*'))
    {
        return Err(invalid(format!(
            "{field} must be 1 to 32 characters of [0-9A-Za-z_-*]"
        )));
    }
    Ok(())
}

/// How the goods travel (`logistics_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogisticsType {
    /// 1: 实体物流配送 (an express carrier; tracking number and company required).
    Express,
    /// 2: 同城配送 (same-city delivery).
    SameCity,
    /// 3: 虚拟商品 (virtual goods).
    Virtual,
    /// 4: 用户自提 (picked up by the buyer).
    SelfPickup,
}

impl LogisticsType {
    /// The number WeChat uses.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            LogisticsType::Express => 1,
            LogisticsType::SameCity => 2,
            LogisticsType::Virtual => 3,
            LogisticsType::SelfPickup => 4,
        }
    }

    /// The type of a number, if known.
    #[must_use]
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(LogisticsType::Express),
            2 => Some(LogisticsType::SameCity),
            3 => Some(LogisticsType::Virtual),
            4 => Some(LogisticsType::SelfPickup),
            _ => None,
        }
    }
}

/// Whether the order ships at once (`delivery_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// 1 `UNIFIED_DELIVERY`: one shipment of exactly one `shipping_list` item.
    Unified,
    /// 2 `SPLIT_DELIVERY`: several packages (express only), the last upload with
    /// `is_all_delivered: true`.
    Split,
}

impl DeliveryMode {
    /// The number WeChat uses (sent as a number, not the name).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            DeliveryMode::Unified => 1,
            DeliveryMode::Split => 2,
        }
    }

    /// The mode of a number, if known.
    #[must_use]
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(DeliveryMode::Unified),
            2 => Some(DeliveryMode::Split),
            _ => None,
        }
    }
}

/// A masked phone number of the sender or the receiver (required for SF Express): the last 4
/// digits visible, the rest masked, e.g. `189****1234`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// `consignor_contact`: the sender's masked phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consignor_contact: Option<String>,
    /// `receiver_contact`: the receiver's masked phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_contact: Option<String>,
}

fn validate_masked(field: &str, value: &str) -> Result<()> {
    let tail_digits = value.bytes().rev().take_while(u8::is_ascii_digit).count();
    if value.is_empty()
        || value.len() > CONTACT_MAX_BYTES
        || !value.contains('*')
        || tail_digits < 4
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(format!(
            "{field} must be a masked phone number ending in its last 4 digits, like 189****1234"
        )));
    }
    Ok(())
}

/// One package of a `shipping_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShippingItem {
    /// `tracking_no` (express only).
    pub tracking_no: Option<String>,
    /// `express_company`: a `delivery_id` of [`super::MpClient::get_delivery_list`] (express only).
    pub express_company: Option<String>,
    /// `item_desc`: what is in the package (1 to 120 characters).
    pub item_desc: String,
    /// `contact` (required for [`SF_EXPRESS`]).
    pub contact: Option<Contact>,
}

impl ShippingItem {
    /// A package sent by an express carrier.
    pub fn express(
        express_company: impl Into<String>,
        tracking_no: impl Into<String>,
        item_desc: impl Into<String>,
    ) -> Self {
        ShippingItem {
            tracking_no: Some(tracking_no.into()),
            express_company: Some(express_company.into()),
            item_desc: item_desc.into(),
            contact: None,
        }
    }

    /// A package without carrier (same-city, virtual, self-pickup): only a description.
    pub fn described(item_desc: impl Into<String>) -> Self {
        ShippingItem {
            item_desc: item_desc.into(),
            ..ShippingItem::default()
        }
    }

    /// The same package with the receiver's masked phone.
    #[must_use]
    pub fn receiver_contact(mut self, masked: impl Into<String>) -> Self {
        self.contact
            .get_or_insert_with(Contact::default)
            .receiver_contact = Some(masked.into());
        self
    }

    /// The same package with the sender's masked phone.
    #[must_use]
    pub fn consignor_contact(mut self, masked: impl Into<String>) -> Self {
        self.contact
            .get_or_insert_with(Contact::default)
            .consignor_contact = Some(masked.into());
        self
    }

    fn validate(&self, at: &str, logistics: LogisticsType) -> Result<()> {
        let chars = self.item_desc.chars().count();
        if self.item_desc.trim().is_empty() {
            return Err(invalid(format!("{at}.item_desc must not be empty")));
        }
        if chars > ITEM_DESC_MAX_CHARS {
            return Err(invalid(format!(
                "{at}.item_desc has {chars} characters; at most {ITEM_DESC_MAX_CHARS} are allowed"
            )));
        }
        if self.item_desc.chars().any(char::is_control) {
            return Err(invalid(format!(
                "{at}.item_desc must not contain control characters"
            )));
        }
        for (name, value) in [
            ("tracking_no", &self.tracking_no),
            ("express_company", &self.express_company),
        ] {
            match value {
                None if logistics == LogisticsType::Express => {
                    return Err(invalid(format!(
                        "{at}.{name} is required for express delivery (logistics_type 1)"
                    )));
                }
                Some(v)
                    if v.is_empty()
                        || v.len() > TRACKING_MAX_BYTES
                        || !v.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    return Err(invalid(format!(
                        "{at}.{name} must be 1 to {TRACKING_MAX_BYTES} visible ASCII characters"
                    )));
                }
                _ => {}
            }
        }
        if let Some(contact) = &self.contact {
            if let Some(c) = &contact.consignor_contact {
                validate_masked(&format!("{at}.contact.consignor_contact"), c)?;
            }
            if let Some(c) = &contact.receiver_contact {
                validate_masked(&format!("{at}.contact.receiver_contact"), c)?;
            }
        }
        if self.express_company.as_deref() == Some(SF_EXPRESS)
            && self
                .contact
                .as_ref()
                .is_none_or(|c| c.consignor_contact.is_none() && c.receiver_contact.is_none())
        {
            return Err(invalid(format!(
                "{at}.contact needs consignor_contact or receiver_contact for SF Express"
            )));
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        let mut item = Map::new();
        if let Some(v) = &self.tracking_no {
            item.insert("tracking_no".into(), v.clone().into());
        }
        if let Some(v) = &self.express_company {
            item.insert("express_company".into(), v.clone().into());
        }
        item.insert("item_desc".into(), self.item_desc.clone().into());
        if let Some(contact) = &self.contact {
            item.insert(
                "contact".into(),
                serde_json::to_value(contact).unwrap_or(Value::Null),
            );
        }
        Value::Object(item)
    }
}

/// The shipment of one payment (or one sub-order of a combined payment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shipment {
    /// `logistics_type`.
    pub logistics_type: LogisticsType,
    /// `delivery_mode`.
    pub delivery_mode: DeliveryMode,
    /// `is_all_delivered`: required for split delivery; `true` on the last package.
    pub is_all_delivered: Option<bool>,
    /// `shipping_list`: 1 to 15 packages (exactly 1 for unified delivery).
    pub shipping_list: Vec<ShippingItem>,
}

impl Shipment {
    /// A unified shipment of one package.
    #[must_use]
    pub fn unified(logistics_type: LogisticsType, item: ShippingItem) -> Self {
        Shipment {
            logistics_type,
            delivery_mode: DeliveryMode::Unified,
            is_all_delivered: None,
            shipping_list: vec![item],
        }
    }

    /// A split express shipment: these packages, and whether they complete the order.
    #[must_use]
    pub fn split(packages: Vec<ShippingItem>, is_all_delivered: bool) -> Self {
        Shipment {
            logistics_type: LogisticsType::Express,
            delivery_mode: DeliveryMode::Split,
            is_all_delivered: Some(is_all_delivered),
            shipping_list: packages,
        }
    }

    fn validate(&self, at: &str) -> Result<()> {
        let n = self.shipping_list.len();
        if n == 0 || n > MAX_SHIPPING_ITEMS {
            return Err(invalid(format!(
                "{at}shipping_list must have 1 to {MAX_SHIPPING_ITEMS} packages, not {n}"
            )));
        }
        match self.delivery_mode {
            DeliveryMode::Unified if n != 1 => {
                return Err(invalid(format!(
                    "{at}shipping_list must have exactly 1 package for unified delivery, not {n}"
                )));
            }
            DeliveryMode::Split if self.logistics_type != LogisticsType::Express => {
                return Err(invalid(format!(
                    "{at}delivery_mode split is only allowed with express delivery (logistics_type 1)"
                )));
            }
            DeliveryMode::Split if self.is_all_delivered.is_none() => {
                return Err(invalid(format!(
                    "{at}is_all_delivered is required for split delivery"
                )));
            }
            _ => {}
        }
        for (i, item) in self.shipping_list.iter().enumerate() {
            item.validate(&format!("{at}shipping_list[{i}]"), self.logistics_type)?;
        }
        Ok(())
    }

    fn write(&self, out: &mut Map<String, Value>) {
        out.insert("logistics_type".into(), self.logistics_type.code().into());
        out.insert("delivery_mode".into(), self.delivery_mode.code().into());
        if let Some(all) = self.is_all_delivered {
            out.insert("is_all_delivered".into(), all.into());
        }
        out.insert(
            "shipping_list".into(),
            Value::Array(
                self.shipping_list
                    .iter()
                    .map(ShippingItem::to_json)
                    .collect(),
            ),
        );
    }
}

fn validate_openid(openid: &str) -> Result<()> {
    if openid.is_empty() || openid.len() > 128 || !openid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "payer.openid must be 1 to 128 visible ASCII characters",
        ));
    }
    Ok(())
}

/// `upload_shipping_info`: the shipping information of one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadShippingInfo {
    /// The payment.
    pub order_key: OrderKey,
    /// How it ships.
    pub shipment: Shipment,
    /// `upload_time`: when the goods shipped (sent as RFC 3339); a later update must carry a
    /// later time.
    pub upload_time: OffsetDateTime,
    /// `payer.openid`: the payer's openid.
    pub payer_openid: String,
}

impl UploadShippingInfo {
    /// Checks every documented field rule.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.order_key.validate()?;
        self.shipment.validate("")?;
        validate_openid(&self.payer_openid)
    }

    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("order_key".into(), self.order_key.to_json());
        self.shipment.write(&mut body);
        body.insert(
            "upload_time".into(),
            crate::time::format_v3(self.upload_time).into(),
        );
        body.insert("payer".into(), json!({"openid": self.payer_openid}));
        Value::Object(body)
    }
}

/// One sub-order of a combined payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubOrderShipment {
    /// The sub-order (same `order_number_type` as the combined order).
    pub order_key: OrderKey,
    /// How it ships.
    pub shipment: Shipment,
}

/// `upload_combined_shipping_info`: the shipping information of a combined payment (合单).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadCombinedShippingInfo {
    /// The combined payment.
    pub order_key: OrderKey,
    /// Its sub-orders (at least one).
    pub sub_orders: Vec<SubOrderShipment>,
    /// `upload_time`.
    pub upload_time: OffsetDateTime,
    /// `payer.openid`.
    pub payer_openid: String,
}

impl UploadCombinedShippingInfo {
    /// Checks every documented field rule.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.order_key.validate()?;
        if self.sub_orders.is_empty() {
            return Err(invalid("sub_orders must have at least one sub-order"));
        }
        for (i, sub) in self.sub_orders.iter().enumerate() {
            if sub.order_key.number_type() != self.order_key.number_type() {
                return Err(invalid(format!(
                    "sub_orders[{i}].order_key must use the same order_number_type as order_key"
                )));
            }
            sub.order_key.validate()?;
            sub.shipment.validate(&format!("sub_orders[{i}]."))?;
        }
        validate_openid(&self.payer_openid)
    }

    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let sub_orders = self
            .sub_orders
            .iter()
            .map(|sub| {
                let mut out = Map::new();
                out.insert("order_key".into(), sub.order_key.to_json());
                sub.shipment.write(&mut out);
                Value::Object(out)
            })
            .collect();
        json!({
            "order_key": self.order_key.to_json(),
            "sub_orders": Value::Array(sub_orders),
            "upload_time": crate::time::format_v3(self.upload_time),
            "payer": {"openid": self.payer_openid},
        })
    }
}

/// Which payment a query or reminder is about. Note the names differ from [`OrderKey`]'s
/// (`merchant_id`/`merchant_trade_no` here, WeChat answers `47001` to the others).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OrderRef {
    /// `transaction_id`.
    TransactionId(String),
    /// `merchant_id` + `merchant_trade_no` (+ `sub_merchant_id` for a service provider).
    MerchantTradeNo {
        /// `merchant_id`.
        merchant_id: String,
        /// `sub_merchant_id`.
        sub_merchant_id: Option<String>,
        /// `merchant_trade_no`.
        merchant_trade_no: String,
    },
}

impl OrderRef {
    /// Checks the reference's fields.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`].
    pub fn validate(&self) -> Result<()> {
        match self {
            OrderRef::TransactionId(id) => crate::validate::transaction_id(id),
            OrderRef::MerchantTradeNo {
                merchant_id,
                sub_merchant_id,
                merchant_trade_no,
            } => {
                validate_mchid("merchant_id", merchant_id)?;
                if let Some(sub) = sub_merchant_id {
                    validate_mchid("sub_merchant_id", sub)?;
                }
                validate_out_trade_no("merchant_trade_no", merchant_trade_no)
            }
        }
    }

    pub(crate) fn write(&self, out: &mut Map<String, Value>) {
        match self {
            OrderRef::TransactionId(id) => {
                out.insert("transaction_id".into(), id.clone().into());
            }
            OrderRef::MerchantTradeNo {
                merchant_id,
                sub_merchant_id,
                merchant_trade_no,
            } => {
                out.insert("merchant_id".into(), merchant_id.clone().into());
                if let Some(sub) = sub_merchant_id {
                    out.insert("sub_merchant_id".into(), sub.clone().into());
                }
                out.insert("merchant_trade_no".into(), merchant_trade_no.clone().into());
            }
        }
    }
}

/// `order_state` of a managed payment; numbers this crate does not know are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// 1 待发货: awaiting shipment.
    AwaitingShipment,
    /// 2 已发货: shipped.
    Shipped,
    /// 3 确认收货: receipt confirmed.
    ReceiptConfirmed,
    /// 4 交易完成: settled.
    Completed,
    /// 5 已退款: refunded.
    Refunded,
    /// 6 资金待结算: funds awaiting settlement.
    AwaitingSettlement,
    /// Any other number.
    Other(i64),
}

impl OrderState {
    /// The number WeChat uses.
    #[must_use]
    pub fn code(self) -> i64 {
        match self {
            OrderState::AwaitingShipment => 1,
            OrderState::Shipped => 2,
            OrderState::ReceiptConfirmed => 3,
            OrderState::Completed => 4,
            OrderState::Refunded => 5,
            OrderState::AwaitingSettlement => 6,
            OrderState::Other(n) => n,
        }
    }

    /// The state of a number.
    #[must_use]
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => OrderState::AwaitingShipment,
            2 => OrderState::Shipped,
            3 => OrderState::ReceiptConfirmed,
            4 => OrderState::Completed,
            5 => OrderState::Refunded,
            6 => OrderState::AwaitingSettlement,
            n => OrderState::Other(n),
        }
    }
}

impl<'de> Deserialize<'de> for OrderState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(OrderState::from_code)
    }
}

impl Serialize for OrderState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

/// One package as `get_order` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedPackage {
    /// `tracking_no`.
    #[serde(default)]
    pub tracking_no: String,
    /// `express_company`.
    #[serde(default)]
    pub express_company: String,
    /// `goods_desc` (the uploaded `item_desc`).
    #[serde(default)]
    pub goods_desc: String,
    /// `upload_time`, Unix seconds.
    #[serde(default)]
    pub upload_time: i64,
    /// `contact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
}

/// The shipping state of a managed payment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipping {
    /// `delivery_mode` (1 unified, 2 split; 0 or absent before shipping).
    #[serde(default)]
    pub delivery_mode: i64,
    /// `logistics_type` (1–4; 0 or absent before shipping).
    #[serde(default)]
    pub logistics_type: i64,
    /// `finish_shipping`: every package is shipped.
    #[serde(default)]
    pub finish_shipping: bool,
    /// `goods_desc`: the description typed in the admin console.
    #[serde(default)]
    pub goods_desc: String,
    /// `finish_shipping_count`: 0 not finished, 1 finished, 2 re-shipped and finished.
    #[serde(default)]
    pub finish_shipping_count: i64,
    /// `shipping_list`.
    #[serde(default)]
    pub shipping_list: Vec<ShippedPackage>,
}

/// A payment under trade management (`get_order`, `get_order_list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeOrder {
    /// `transaction_id`.
    pub transaction_id: String,
    /// `merchant_id`.
    #[serde(default)]
    pub merchant_id: String,
    /// `sub_merchant_id`.
    #[serde(default)]
    pub sub_merchant_id: String,
    /// `merchant_trade_no`.
    #[serde(default)]
    pub merchant_trade_no: String,
    /// `description`.
    #[serde(default)]
    pub description: String,
    /// `paid_amount`, in fen.
    #[serde(default)]
    pub paid_amount: i64,
    /// `openid` of the payer.
    #[serde(default)]
    pub openid: String,
    /// `trade_create_time`, Unix seconds (0 seen in real answers).
    #[serde(default)]
    pub trade_create_time: i64,
    /// `pay_time`, Unix seconds.
    #[serde(default)]
    pub pay_time: i64,
    /// `order_state`.
    pub order_state: OrderState,
    /// `in_complaint`: an open complaint delays settlement.
    #[serde(default)]
    pub in_complaint: bool,
    /// `shipping`.
    #[serde(default)]
    pub shipping: OrderShipping,
}

/// The query of `get_order_list` (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderListQuery {
    /// `pay_time_range`: begin and end (inclusive), Unix seconds.
    pub pay_time_range: Option<(i64, i64)>,
    /// `order_state`.
    pub order_state: Option<OrderState>,
    /// `openid` of the payer.
    pub openid: Option<String>,
    /// `last_index` of the previous page.
    pub last_index: Option<String>,
    /// `page_size` (WeChat's default 100).
    pub page_size: Option<u32>,
}

/// The largest `page_size` sent (WeChat documents only the default, 100).
pub const MAX_PAGE_SIZE: u32 = 100;

impl OrderListQuery {
    /// Checks the query.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`].
    pub fn validate(&self) -> Result<()> {
        if let Some((begin, end)) = self.pay_time_range
            && (begin < 0 || end < begin || end > i64::from(u32::MAX))
        {
            return Err(invalid(
                "pay_time_range must be 0 <= begin_time <= end_time <= 2^32-1",
            ));
        }
        if let Some(openid) = &self.openid {
            validate_openid(openid)
                .map_err(|_| invalid("openid must be 1 to 128 visible ASCII characters"))?;
        }
        if let Some(size) = self.page_size
            && !(1..=MAX_PAGE_SIZE).contains(&size)
        {
            return Err(invalid(format!(
                "page_size must be 1 to {MAX_PAGE_SIZE}, not {size}"
            )));
        }
        if let Some(index) = &self.last_index
            && (index.is_empty() || index.len() > 1024)
        {
            return Err(invalid("last_index must be 1 to 1024 bytes"));
        }
        Ok(())
    }

    /// The JSON body.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        if let Some((begin, end)) = self.pay_time_range {
            body.insert(
                "pay_time_range".into(),
                json!({"begin_time": begin, "end_time": end}),
            );
        }
        if let Some(state) = self.order_state {
            body.insert("order_state".into(), state.code().into());
        }
        if let Some(openid) = &self.openid {
            body.insert("openid".into(), openid.clone().into());
        }
        if let Some(index) = &self.last_index {
            body.insert("last_index".into(), index.clone().into());
        }
        if let Some(size) = self.page_size {
            body.insert("page_size".into(), size.into());
        }
        Value::Object(body)
    }
}

/// One page of `get_order_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderListPage {
    /// `order_list`.
    #[serde(default)]
    pub order_list: Vec<TradeOrder>,
    /// `last_index`: pass it in the next query.
    #[serde(default)]
    pub last_index: String,
    /// `has_more`.
    #[serde(default)]
    pub has_more: bool,
}

/// A special-order report (`opspecialorder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialOrder {
    /// `type` 1 预售: ships later than usual, by `delay_to` (Unix seconds, 15 to 330 days after
    /// payment).
    PreSale {
        /// `delay_to`.
        delay_to: i64,
    },
    /// `type` 2 测试订单: a test payment that will not ship.
    Test,
}

/// One express company of `get_delivery_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCompany {
    /// `delivery_id`: the `express_company` to upload.
    pub delivery_id: String,
    /// `delivery_name`.
    #[serde(default)]
    pub delivery_name: String,
}

/// Checks a `set_msg_jump_path` path: a page like `pages/order/detail` (no leading `/`, no
/// query: WeChat appends the order's ids).
///
/// # Errors
/// [`Error::InvalidRequest`].
pub fn validate_jump_path(path: &str) -> Result<()> {
    super::validate_page(path).map_err(|e| match e {
        Error::InvalidRequest(m) => Error::InvalidRequest(m.replacen("page", "path", 1)),
        other => other,
    })
}

#[cfg(test)]
mod tests;
