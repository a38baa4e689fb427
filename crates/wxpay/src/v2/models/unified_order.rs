//! `POST /pay/unifiedorder`: a JSAPI (mini program) order and its `prepay_id`.

use time::OffsetDateTime;

use super::shared::{
    SubMerchant, base_params, optional_string, put, put_opt, put_sub_merchant, required, yes_no,
};
use crate::error::{DecodeError, Error};
use crate::ids::{OpenId, OutTradeNo};
use crate::money::Fen;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;
use crate::validate;

/// Under which appid the payer's `openid` of a [`UnifiedOrderRequest`] was issued, so which
/// parameter carries it. WeChat takes one of the two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OpenIdScope {
    /// The call's `appid` (the merchant's mini program; the provider's in partner mode): sent as
    /// `openid`.
    #[default]
    App,
    /// The sub-merchant's `sub_appid` (partner mode): sent as `sub_openid`, and the request's
    /// [`SubMerchant`] must have a `sub_appid`.
    SubApp,
}

/// The required fields of a JSAPI order, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedOrderFields {
    /// `body`: the product description (at most 128 characters).
    pub body: String,
    /// `out_trade_no`, unique per merchant.
    pub out_trade_no: OutTradeNo,
    /// `total_fee`, at least 1 fen.
    pub total_fee: Fen,
    /// `spbill_create_ip`: the payer's IP address.
    pub spbill_create_ip: String,
    /// `notify_url`: absolute, without a query string.
    pub notify_url: String,
    /// `openid` of the payer under the appid.
    pub openid: OpenId,
}

/// `POST /pay/unifiedorder` for a mini program (`trade_type=JSAPI`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedOrderRequest {
    /// `body`: the product description (at most 128 characters).
    pub body: String,
    /// `out_trade_no`, unique per merchant.
    pub out_trade_no: OutTradeNo,
    /// `total_fee`, at least 1 fen.
    pub total_fee: Fen,
    /// `spbill_create_ip`: the payer's IP address.
    pub spbill_create_ip: String,
    /// `notify_url`: absolute, without a query string.
    pub notify_url: String,
    /// `openid` of the payer under the appid.
    pub openid: OpenId,
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
    /// Partner mode: the sub-merchant the order is for (`sub_mch_id`, `sub_appid`). `None` for
    /// an ordinary merchant.
    pub sub_merchant: Option<SubMerchant>,
    /// Under which appid [`openid`](Self::openid) was issued: [`OpenIdScope::SubApp`] sends it
    /// as `sub_openid` (partner mode, with a `sub_appid`) instead of `openid`.
    pub openid_scope: OpenIdScope,
}

impl UnifiedOrderRequest {
    /// A JSAPI order with the required fields and nothing optional.
    #[must_use]
    pub fn jsapi(fields: UnifiedOrderFields) -> Self {
        let UnifiedOrderFields {
            body,
            out_trade_no,
            total_fee,
            spbill_create_ip,
            notify_url,
            openid,
        } = fields;
        UnifiedOrderRequest {
            body,
            out_trade_no,
            total_fee,
            spbill_create_ip,
            notify_url,
            openid,
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
            sub_merchant: None,
            openid_scope: OpenIdScope::App,
        }
    }

    /// The same order, for a sub-merchant of the service provider whose client sends it.
    #[must_use]
    pub fn with_sub_merchant(mut self, sub_merchant: SubMerchant) -> Self {
        self.sub_merchant = Some(sub_merchant);
        self
    }

    /// The same order, paid by the user whose [`openid`](Self::openid) is under the
    /// sub-merchant's `sub_appid` (sent as `sub_openid`). Needs a sub-merchant with a
    /// `sub_appid` ([`with_sub_merchant`](Self::with_sub_merchant)).
    #[must_use]
    pub fn with_sub_openid(mut self) -> Self {
        self.openid_scope = OpenIdScope::SubApp;
        self
    }

    /// The appid a `wx.requestPayment` `paySign` for this order's prepay covers, given the
    /// client's `appid`: the sub-merchant's `sub_appid` when the order carries one, else
    /// `appid`.
    #[must_use]
    pub fn paying_appid<'a>(&'a self, appid: &'a str) -> &'a str {
        self.sub_merchant
            .as_ref()
            .map_or(appid, |sub| sub.paying_appid(appid))
    }

    /// Checks the fields against the documented limits.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.openid_scope == OpenIdScope::SubApp
            && self
                .sub_merchant
                .as_ref()
                .is_none_or(|sub| sub.sub_appid.is_none())
        {
            return Err(validate::invalid(
                "sub_openid requires a sub-merchant with sub_appid (the sub-merchant's mini program)",
            ));
        }
        validate::text("body", &self.body, 1, 128)?;
        validate::amount("total_fee", self.total_fee)?;
        if self.spbill_create_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(validate::invalid(
                "spbill_create_ip must be an IPv4 or IPv6 address",
            ));
        }
        validate::notify_url(&self.notify_url, validate::V2_NOTIFY_URL_MAX)?;
        validate::opt_text("attach", self.attach.as_deref(), 127)?;
        validate::opt_text("detail", self.detail.as_deref(), 6000)?;
        validate::opt_text("device_info", self.device_info.as_deref(), 32)?;
        validate::opt_text("fee_type", self.fee_type.as_deref(), 16)?;
        validate::opt_text("goods_tag", self.goods_tag.as_deref(), 32)?;
        validate::opt_text("limit_pay", self.limit_pay.as_deref(), 32)?;
        validate::opt_text("scene_info", self.scene_info.as_deref(), 256)?;
        if let (Some(start), Some(expire)) = (self.time_start, self.time_expire)
            && expire <= start
        {
            return Err(validate::invalid("time_expire must be after time_start"));
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
        put_sub_merchant(&mut p, self.sub_merchant.as_ref());
        put(&mut p, "body", &self.body);
        put(&mut p, "out_trade_no", &self.out_trade_no);
        put(&mut p, "total_fee", &self.total_fee.to_string());
        put(&mut p, "spbill_create_ip", &self.spbill_create_ip);
        put(&mut p, "notify_url", &self.notify_url);
        put(&mut p, "trade_type", "JSAPI");
        let openid_key = match self.openid_scope {
            OpenIdScope::App => "openid",
            OpenIdScope::SubApp => "sub_openid",
        };
        put(&mut p, openid_key, self.openid.as_str());
        put_opt(&mut p, "attach", self.attach.as_deref());
        put_opt(&mut p, "detail", self.detail.as_deref());
        put_opt(&mut p, "device_info", self.device_info.as_deref());
        put_opt(&mut p, "fee_type", self.fee_type.as_deref());
        put_opt(
            &mut p,
            "time_start",
            self.time_start.map(crate::time::format_v2).as_deref(),
        );
        put_opt(
            &mut p,
            "time_expire",
            self.time_expire.map(crate::time::format_v2).as_deref(),
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
    /// `sub_appid` (partner mode), as echoed.
    pub sub_appid: Option<String>,
    /// `sub_mch_id` (partner mode), as echoed.
    pub sub_mch_id: Option<String>,
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
            sub_appid: optional_string(map, "sub_appid"),
            sub_mch_id: optional_string(map, "sub_mch_id"),
        })
    }
}
