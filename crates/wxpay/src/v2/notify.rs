//! v2 notifications: the payment result (signed like an answer) and the refund result (not
//! signed; its `req_info` is AES-256-ECB encrypted with a key derived from the API key), the
//! acknowledgements the merchant sends back, and builders the simulator uses to send them.

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest as _, Md5};
use time::OffsetDateTime;

use super::client::{check_result_code, check_return_code};
use super::models::{
    Coupon, RefundAccount, RefundStatus, coupons, fen, optional, optional_fen, optional_string,
    optional_time_field, optional_yes_no, required, time_field,
};
use super::{SignType, XmlMap, sign, xml};
use crate::error::{CryptoError, DecodeError, Result};
use crate::ids::SubMchid;
use crate::money::Fen;

/// The acknowledgement that stops WeChat's retries (§A.10), byte for byte.
#[must_use]
pub fn ack_success() -> &'static str {
    "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
}

/// A failure acknowledgement: WeChat will send the notification again later. Characters XML
/// cannot carry are dropped from `msg`.
#[must_use]
pub fn ack_fail(msg: &str) -> String {
    let msg: String = msg
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect::<String>()
        .replace("]]>", "]]]]><![CDATA[>");
    format!(
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{msg}]]></return_msg></xml>"
    )
}

/// Whether a merchant's answer to a notification is a success acknowledgement: an `<xml>`
/// document with `return_code` `SUCCESS`. Plain `success`, JSON or HTML are failures.
#[must_use]
pub fn is_success_ack(body: &[u8]) -> bool {
    xml::decode(body).is_ok_and(|map| map.get("return_code").is_some_and(|c| c == "SUCCESS"))
}

/// A verified payment result notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayNotification {
    /// `appid`; compare it with yours ([`PayNotification::ensure_merchant`]).
    pub appid: String,
    /// `mch_id`.
    pub mch_id: String,
    /// `nonce_str`.
    pub nonce_str: String,
    /// The algorithm the notification was signed with (told by the signature's length).
    pub sign_type: SignType,
    /// `device_info`.
    pub device_info: Option<String>,
    /// `openid` of the payer (under `appid`, the provider's in partner mode).
    pub openid: String,
    /// `is_subscribe`.
    pub is_subscribe: Option<bool>,
    /// `sub_appid` (partner mode): the sub-merchant's mini program, when the order had one.
    pub sub_appid: Option<String>,
    /// `sub_mch_id` (partner mode): the sub-merchant paid; check it with
    /// [`PayNotification::ensure_sub_merchant`].
    pub sub_mch_id: Option<String>,
    /// `sub_openid` (partner mode): the payer under `sub_appid`.
    pub sub_openid: Option<String>,
    /// `sub_is_subscribe` (partner mode).
    pub sub_is_subscribe: Option<bool>,
    /// `trade_type`.
    pub trade_type: String,
    /// `bank_type`.
    pub bank_type: String,
    /// `total_fee`: compare it with your order's amount.
    pub total_fee: Fen,
    /// `settlement_total_fee`.
    pub settlement_total_fee: Option<Fen>,
    /// `fee_type`.
    pub fee_type: Option<String>,
    /// `cash_fee`.
    pub cash_fee: Fen,
    /// `cash_fee_type`.
    pub cash_fee_type: Option<String>,
    /// `coupon_fee`.
    pub coupon_fee: Option<Fen>,
    /// The coupons, from `coupon_*_$n`.
    pub coupons: Vec<Coupon>,
    /// `transaction_id`.
    pub transaction_id: String,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `attach`, as sent with the order.
    pub attach: Option<String>,
    /// `time_end`: when it was paid.
    pub time_end: OffsetDateTime,
}

impl PayNotification {
    /// Checks that the notification is for this merchant.
    ///
    /// # Errors
    /// [`DecodeError::InvalidField`] naming `appid` or `mch_id`.
    pub fn ensure_merchant(&self, appid: &str, mch_id: &str) -> Result<()> {
        ensure_merchant(&self.appid, &self.mch_id, appid, mch_id)
    }

    /// Partner mode, after [`ensure_merchant`](Self::ensure_merchant) with the provider's
    /// appid and mch_id: checks that the payment is for the sub-merchant `sub_mch_id`.
    ///
    /// # Errors
    /// [`DecodeError::MissingField`] without `sub_mch_id`; [`DecodeError::InvalidField`] for
    /// another sub-merchant.
    pub fn ensure_sub_merchant(&self, sub_mch_id: &SubMchid) -> Result<()> {
        ensure_sub_merchant(self.sub_mch_id.as_deref(), sub_mch_id)
    }
}

/// Parses and verifies a payment notification: the safe XML codec, `return_code`, the
/// signature (before anything else is read), `result_code`, then the typed fields.
///
/// # Errors
/// [`Error::Decode`](crate::Error::Decode) for XML that is refused (DTDs, entities, size) or a missing/malformed
/// field; [`crate::ApiError::V2Return`]/[`crate::ApiError::V2Business`] for a failure
/// notification; [`Error::Signature`](crate::Error::Signature) when the signature does not verify.
pub fn parse_pay_notification(body: &[u8], api_key: &str) -> Result<PayNotification> {
    let map = xml::decode(body).map_err(DecodeError::Xml)?;
    check_return_code(&map)?;
    let sign_type = sign::verify_map(&map, api_key)?;
    check_result_code(&map)?;
    Ok(PayNotification {
        appid: required(&map, "appid")?.to_owned(),
        mch_id: required(&map, "mch_id")?.to_owned(),
        nonce_str: required(&map, "nonce_str")?.to_owned(),
        sign_type,
        device_info: optional_string(&map, "device_info"),
        openid: required(&map, "openid")?.to_owned(),
        is_subscribe: optional_yes_no(&map, "is_subscribe")?,
        sub_appid: optional_string(&map, "sub_appid"),
        sub_mch_id: optional_string(&map, "sub_mch_id"),
        sub_openid: optional_string(&map, "sub_openid"),
        sub_is_subscribe: optional_yes_no(&map, "sub_is_subscribe")?,
        trade_type: required(&map, "trade_type")?.to_owned(),
        bank_type: required(&map, "bank_type")?.to_owned(),
        total_fee: fen(&map, "total_fee")?,
        settlement_total_fee: optional_fen(&map, "settlement_total_fee")?,
        fee_type: optional_string(&map, "fee_type"),
        cash_fee: fen(&map, "cash_fee")?,
        cash_fee_type: optional_string(&map, "cash_fee_type"),
        coupon_fee: optional_fen(&map, "coupon_fee")?,
        coupons: coupons(&map)?,
        transaction_id: required(&map, "transaction_id")?.to_owned(),
        out_trade_no: required(&map, "out_trade_no")?.to_owned(),
        attach: optional_string(&map, "attach"),
        time_end: time_field(&map, "time_end")?,
    })
}

/// The signed XML of a payment notification, as WeChat sends it (used by the simulator and by
/// tests). `notification.sign_type` is ignored; `sign_type` chooses the algorithm.
///
/// # Errors
/// [`DecodeError::Xml`] when a field holds a character XML cannot carry.
pub fn build_pay_notification(
    notification: &PayNotification,
    api_key: &str,
    sign_type: SignType,
) -> Result<String> {
    let n = notification;
    let mut map = XmlMap::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            map.insert(k.to_owned(), v.to_owned());
        }
    };
    put("return_code", "SUCCESS");
    put("result_code", "SUCCESS");
    put("appid", &n.appid);
    put("mch_id", &n.mch_id);
    put("nonce_str", &n.nonce_str);
    put("device_info", n.device_info.as_deref().unwrap_or_default());
    put("openid", &n.openid);
    put(
        "is_subscribe",
        n.is_subscribe.map_or("", |b| if b { "Y" } else { "N" }),
    );
    put("sub_appid", n.sub_appid.as_deref().unwrap_or_default());
    put("sub_mch_id", n.sub_mch_id.as_deref().unwrap_or_default());
    put("sub_openid", n.sub_openid.as_deref().unwrap_or_default());
    put(
        "sub_is_subscribe",
        n.sub_is_subscribe.map_or("", |b| if b { "Y" } else { "N" }),
    );
    put("trade_type", &n.trade_type);
    put("bank_type", &n.bank_type);
    put("total_fee", &n.total_fee.to_string());
    put(
        "settlement_total_fee",
        &n.settlement_total_fee
            .map(|f| f.to_string())
            .unwrap_or_default(),
    );
    put("fee_type", n.fee_type.as_deref().unwrap_or_default());
    put("cash_fee", &n.cash_fee.to_string());
    put(
        "cash_fee_type",
        n.cash_fee_type.as_deref().unwrap_or_default(),
    );
    put(
        "coupon_fee",
        &n.coupon_fee.map(|f| f.to_string()).unwrap_or_default(),
    );
    if !n.coupons.is_empty() {
        put("coupon_count", &n.coupons.len().to_string());
    }
    for (i, c) in n.coupons.iter().enumerate() {
        put(
            &format!("coupon_type_{i}"),
            c.coupon_type.as_deref().unwrap_or_default(),
        );
        put(&format!("coupon_id_{i}"), &c.coupon_id);
        put(&format!("coupon_fee_{i}"), &c.coupon_fee.to_string());
    }
    put("transaction_id", &n.transaction_id);
    put("out_trade_no", &n.out_trade_no);
    put("attach", n.attach.as_deref().unwrap_or_default());
    put("time_end", &crate::time::format_v2(n.time_end));
    let signature = sign::sign_map(&map, api_key, sign_type);
    map.insert("sign".into(), signature);
    Ok(xml::encode(&map).map_err(DecodeError::Xml)?)
}

/// A decrypted refund result notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundNotification {
    /// `appid` of the outer message; compare it with yours ([`RefundNotification::ensure_merchant`]).
    pub appid: String,
    /// `mch_id` of the outer message.
    pub mch_id: String,
    /// `nonce_str` of the outer message.
    pub nonce_str: String,
    /// `sub_appid` of the outer message (partner mode), when the order had one.
    pub sub_appid: Option<String>,
    /// `sub_mch_id` of the outer message (partner mode); check it with
    /// [`RefundNotification::ensure_sub_merchant`].
    pub sub_mch_id: Option<String>,
    /// `transaction_id`.
    pub transaction_id: String,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `refund_id`.
    pub refund_id: String,
    /// `out_refund_no`.
    pub out_refund_no: String,
    /// `total_fee` of the order.
    pub total_fee: Fen,
    /// `settlement_total_fee`.
    pub settlement_total_fee: Option<Fen>,
    /// `refund_fee` requested.
    pub refund_fee: Fen,
    /// `settlement_refund_fee`: what was refunded.
    pub settlement_refund_fee: Fen,
    /// `refund_status` (`SUCCESS`, `CHANGE`, `REFUNDCLOSE`).
    pub refund_status: RefundStatus,
    /// `success_time`.
    pub success_time: Option<OffsetDateTime>,
    /// `refund_recv_accout` (sic), e.g. `支付用户零钱`.
    pub refund_recv_accout: Option<String>,
    /// `refund_account`.
    pub refund_account: Option<RefundAccount>,
    /// `refund_request_source` (`API`, `VENDOR_PLATFORM`).
    pub refund_request_source: Option<String>,
    /// `cash_refund_fee`.
    pub cash_refund_fee: Option<Fen>,
}

impl RefundNotification {
    /// Checks that the notification is for this merchant.
    ///
    /// # Errors
    /// [`DecodeError::InvalidField`] naming `appid` or `mch_id`.
    pub fn ensure_merchant(&self, appid: &str, mch_id: &str) -> Result<()> {
        ensure_merchant(&self.appid, &self.mch_id, appid, mch_id)
    }

    /// Partner mode, after [`ensure_merchant`](Self::ensure_merchant) with the provider's
    /// appid and mch_id: checks that the refund is of the sub-merchant `sub_mch_id`.
    ///
    /// # Errors
    /// [`DecodeError::MissingField`] without `sub_mch_id`; [`DecodeError::InvalidField`] for
    /// another sub-merchant.
    pub fn ensure_sub_merchant(&self, sub_mch_id: &SubMchid) -> Result<()> {
        ensure_sub_merchant(self.sub_mch_id.as_deref(), sub_mch_id)
    }
}

/// Parses a refund notification: the safe XML codec, `return_code`, `appid`/`mch_id`, then
/// `req_info` decrypted with the API key and decoded as a flat `<root>` document. There is no
/// signature: only the holder of the API key can produce a `req_info` that decrypts.
///
/// # Errors
/// [`Error::Decode`](crate::Error::Decode) for refused XML (outer or inner) or a missing/malformed field;
/// [`crate::ApiError::V2Return`] for `return_code=FAIL`; [`Error::Crypto`](crate::Error::Crypto) when `req_info` is not
/// base64 or does not decrypt with this key.
pub fn parse_refund_notification(body: &[u8], api_key: &str) -> Result<RefundNotification> {
    let outer = xml::decode(body).map_err(DecodeError::Xml)?;
    check_return_code(&outer)?;
    let appid = required(&outer, "appid")?.to_owned();
    let mch_id = required(&outer, "mch_id")?.to_owned();
    let nonce_str = optional_string(&outer, "nonce_str").unwrap_or_default();
    let sub_appid = optional_string(&outer, "sub_appid");
    let sub_mch_id = optional_string(&outer, "sub_mch_id");
    let plain = decrypt_req_info(api_key, required(&outer, "req_info")?)?;
    let m = xml::decode_with_root(plain.as_bytes(), "root").map_err(DecodeError::Xml)?;
    Ok(RefundNotification {
        appid,
        mch_id,
        nonce_str,
        sub_appid,
        sub_mch_id,
        transaction_id: required(&m, "transaction_id")?.to_owned(),
        out_trade_no: required(&m, "out_trade_no")?.to_owned(),
        refund_id: required(&m, "refund_id")?.to_owned(),
        out_refund_no: required(&m, "out_refund_no")?.to_owned(),
        total_fee: fen(&m, "total_fee")?,
        settlement_total_fee: optional_fen(&m, "settlement_total_fee")?,
        refund_fee: fen(&m, "refund_fee")?,
        settlement_refund_fee: fen(&m, "settlement_refund_fee")?,
        refund_status: RefundStatus::from_code(required(&m, "refund_status")?),
        success_time: optional_time_field(&m, "success_time", true)?,
        refund_recv_accout: optional_string(&m, "refund_recv_accout"),
        refund_account: optional(&m, "refund_account").map(RefundAccount::from_code),
        refund_request_source: optional_string(&m, "refund_request_source"),
        cash_refund_fee: optional_fen(&m, "cash_refund_fee")?,
    })
}

/// The XML of a refund notification with its encrypted `req_info`, as WeChat sends it (used by
/// the simulator and by tests).
///
/// # Errors
/// [`DecodeError::Xml`] when a field holds a character XML cannot carry; [`Error::Crypto`](crate::Error::Crypto) if
/// encryption fails.
pub fn build_refund_notification(
    notification: &RefundNotification,
    api_key: &str,
) -> Result<String> {
    let n = notification;
    let mut inner = XmlMap::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            inner.insert(k.to_owned(), v.to_owned());
        }
    };
    put("transaction_id", &n.transaction_id);
    put("out_trade_no", &n.out_trade_no);
    put("refund_id", &n.refund_id);
    put("out_refund_no", &n.out_refund_no);
    put("total_fee", &n.total_fee.to_string());
    put(
        "settlement_total_fee",
        &n.settlement_total_fee
            .map(|f| f.to_string())
            .unwrap_or_default(),
    );
    put("refund_fee", &n.refund_fee.to_string());
    put(
        "settlement_refund_fee",
        &n.settlement_refund_fee.to_string(),
    );
    put("refund_status", n.refund_status.as_str());
    put(
        "success_time",
        &n.success_time
            .map(crate::time::format_dashed)
            .unwrap_or_default(),
    );
    put(
        "refund_recv_accout",
        n.refund_recv_accout.as_deref().unwrap_or_default(),
    );
    put(
        "refund_account",
        n.refund_account.as_ref().map_or("", RefundAccount::as_str),
    );
    put(
        "refund_request_source",
        n.refund_request_source.as_deref().unwrap_or_default(),
    );
    put(
        "cash_refund_fee",
        &n.cash_refund_fee.map(|f| f.to_string()).unwrap_or_default(),
    );
    let plain = xml::encode_with_root(&inner, "root").map_err(DecodeError::Xml)?;
    let req_info = encrypt_req_info(api_key, &plain)?;
    let mut outer = XmlMap::new();
    outer.insert("return_code".into(), "SUCCESS".into());
    outer.insert("appid".into(), n.appid.clone());
    outer.insert("mch_id".into(), n.mch_id.clone());
    outer.insert("nonce_str".into(), n.nonce_str.clone());
    for (key, value) in [("sub_appid", &n.sub_appid), ("sub_mch_id", &n.sub_mch_id)] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            outer.insert(key.into(), value.clone());
        }
    }
    outer.insert("req_info".into(), req_info);
    Ok(xml::encode(&outer).map_err(DecodeError::Xml)?)
}

/// The AES-256 key of `req_info`: the 32 ASCII bytes of the lowercase hex MD5 of the API key.
fn req_info_key(api_key: &str) -> Result<UnboundCipherKey, CryptoError> {
    let hex_key = hex::encode(Md5::digest(api_key.as_bytes()));
    UnboundCipherKey::new(&AES_256, hex_key.as_bytes())
        .map_err(|_| CryptoError::InvalidKey("req_info AES-256 key".into()))
}

/// Decrypts a refund notification's `req_info` (base64, AES-256-ECB, PKCS#7) to its XML text.
///
/// # Errors
/// [`CryptoError::Base64`] for bad base64; [`CryptoError::Decrypt`] when the data does not
/// decrypt with this key (bad length, bad padding, not UTF-8).
pub fn decrypt_req_info(api_key: &str, req_info_b64: &str) -> Result<String, CryptoError> {
    let mut data = BASE64
        .decode(req_info_b64.trim())
        .map_err(|_| CryptoError::Base64("req_info"))?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(CryptoError::Decrypt);
    }
    let key = PaddedBlockDecryptingKey::ecb_pkcs7(req_info_key(api_key)?)
        .map_err(|_| CryptoError::Decrypt)?;
    let plain = key
        .decrypt(&mut data, DecryptionContext::None)
        .map_err(|_| CryptoError::Decrypt)?;
    String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Decrypt)
}

/// Encrypts XML text as a refund notification's `req_info` (AES-256-ECB, PKCS#7, base64).
///
/// # Errors
/// [`CryptoError::Encrypt`] if the cipher fails.
pub fn encrypt_req_info(api_key: &str, plaintext_xml: &str) -> Result<String, CryptoError> {
    let key = PaddedBlockEncryptingKey::ecb_pkcs7(req_info_key(api_key)?)
        .map_err(|_| CryptoError::Encrypt("req_info key".into()))?;
    let mut data = plaintext_xml.as_bytes().to_vec();
    key.encrypt(&mut data)
        .map_err(|_| CryptoError::Encrypt("AES-256-ECB".into()))?;
    Ok(BASE64.encode(&data))
}

fn ensure_sub_merchant(got: Option<&str>, sub_mch_id: &SubMchid) -> Result<()> {
    match got {
        None => Err(DecodeError::MissingField("sub_mch_id".into()).into()),
        Some(got) if got != sub_mch_id.as_str() => Err(DecodeError::invalid(
            "sub_mch_id",
            "the notification is for another sub-merchant",
        )
        .into()),
        Some(_) => Ok(()),
    }
}

fn ensure_merchant(got_appid: &str, got_mch_id: &str, appid: &str, mch_id: &str) -> Result<()> {
    if got_appid != appid {
        return Err(DecodeError::invalid("appid", "the notification is for another appid").into());
    }
    if got_mch_id != mch_id {
        return Err(
            DecodeError::invalid("mch_id", "the notification is for another merchant").into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, Error, SignatureError};
    use crate::v2::xml::XmlError;
    use time::macros::datetime;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
    const D4_REQ_INFO: &str = "WBzGpzQuNpcFxIlFjUUD9BZv+lpBMzd2SHiKCkwfALVsIWKHUagYW7heGPL+G1Y4oaiQ5Q8MhXXu4uOZ9BwNiXzclJ9PUmK8v5LA1IWB/CqwPzkUPquYEP55QX+YNFu32Y4/ZiZXz/w8Z0apdn6a0Ra1fj+Eorgndx3fNxf3KAYa3LPgsjvZgxaeYyrhV05Kbjkj6ywg27cEyTTaPZFYNg==";
    const D4_PLAIN: &str = "<root><out_refund_no><![CDATA[R1217752501]]></out_refund_no><refund_fee><![CDATA[88]]></refund_fee><refund_status><![CDATA[SUCCESS]]></refund_status></root>";

    fn d3() -> PayNotification {
        PayNotification {
            appid: "wxd930ea5d5a258f4f".into(),
            mch_id: "10000100".into(),
            nonce_str: "5d2b6c2a8db53831f7eda20af46e531c".into(),
            sign_type: SignType::Md5,
            device_info: None,
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            is_subscribe: Some(false),
            sub_appid: None,
            sub_mch_id: None,
            sub_openid: None,
            sub_is_subscribe: None,
            trade_type: "JSAPI".into(),
            bank_type: "OTHERS".into(),
            total_fee: Fen::new(1),
            settlement_total_fee: None,
            fee_type: Some("CNY".into()),
            cash_fee: Fen::new(1),
            cash_fee_type: None,
            coupon_fee: None,
            coupons: Vec::new(),
            transaction_id: "1004400740201409030005092168".into(),
            out_trade_no: "1409811653".into(),
            attach: None,
            time_end: datetime!(2014-09-03 13:15:40 +08:00),
        }
    }

    #[test]
    fn d3_vector_is_built_and_parsed() {
        let xml_md5 = build_pay_notification(&d3(), KEY, SignType::Md5).unwrap();
        assert!(
            xml_md5.contains("<sign><![CDATA[B9C97CC90F7FDD884DBD7DC718C9DF9C]]></sign>"),
            "{xml_md5}"
        );
        let xml_hmac = build_pay_notification(&d3(), KEY, SignType::HmacSha256).unwrap();
        assert!(
            xml_hmac.contains("32CBCB5B172178CF1940A74273862353E9BA56A155F8C3C3AE384E6E4D2265FD")
        );
        assert_eq!(
            parse_pay_notification(xml_md5.as_bytes(), KEY).unwrap(),
            d3()
        );
        let parsed = parse_pay_notification(xml_hmac.as_bytes(), KEY).unwrap();
        assert_eq!(parsed.sign_type, SignType::HmacSha256);
        assert_eq!(parsed.total_fee, Fen::new(1));
        assert!(
            parsed
                .ensure_merchant("wxd930ea5d5a258f4f", "10000100")
                .is_ok()
        );
        assert!(
            parsed
                .ensure_merchant("wxd930ea5d5a258f4f", "10000101")
                .is_err()
        );
    }

    #[test]
    fn the_official_shape_with_plain_numbers_parses() {
        let body = "<xml>\n<appid><![CDATA[wxd930ea5d5a258f4f]]></appid>\n<bank_type><![CDATA[OTHERS]]></bank_type>\n<cash_fee>1</cash_fee>\n<fee_type><![CDATA[CNY]]></fee_type>\n<is_subscribe><![CDATA[N]]></is_subscribe>\n<mch_id><![CDATA[10000100]]></mch_id>\n<nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str>\n<openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></openid>\n<out_trade_no><![CDATA[1409811653]]></out_trade_no>\n<result_code><![CDATA[SUCCESS]]></result_code>\n<return_code><![CDATA[SUCCESS]]></return_code>\n<sign><![CDATA[B9C97CC90F7FDD884DBD7DC718C9DF9C]]></sign>\n<time_end><![CDATA[20140903131540]]></time_end>\n<total_fee>1</total_fee>\n<trade_type><![CDATA[JSAPI]]></trade_type>\n<transaction_id><![CDATA[1004400740201409030005092168]]></transaction_id>\n</xml>";
        assert_eq!(parse_pay_notification(body.as_bytes(), KEY).unwrap(), d3());
    }

    #[test]
    fn tampered_or_wrongly_keyed_notifications_are_refused() {
        let xml_text = build_pay_notification(&d3(), KEY, SignType::HmacSha256).unwrap();
        let tampered = xml_text.replace("<total_fee>1</total_fee>", "<total_fee>100</total_fee>");
        assert_ne!(tampered, xml_text);
        assert!(matches!(
            parse_pay_notification(tampered.as_bytes(), KEY),
            Err(Error::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            parse_pay_notification(xml_text.as_bytes(), &"0".repeat(32)),
            Err(Error::Signature(SignatureError::Mismatch))
        ));
        // An added field is covered by the signature as well.
        let added = xml_text.replace("</xml>", "<attach><![CDATA[x]]></attach></xml>");
        assert!(parse_pay_notification(added.as_bytes(), KEY).is_err());
        // A failure notification is reported as such, without believing anything else.
        let fail = b"<xml><return_code>FAIL</return_code><return_msg>boom</return_msg></xml>";
        assert!(matches!(
            parse_pay_notification(fail, KEY),
            Err(Error::Api(ApiError::V2Return { .. }))
        ));
    }

    #[test]
    fn xxe_bodies_are_refused() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><return_code>&x;</return_code></xml>"#;
        assert!(matches!(
            parse_pay_notification(xxe, KEY),
            Err(Error::Decode(DecodeError::Xml(XmlError::Doctype)))
        ));
        assert!(matches!(
            parse_refund_notification(xxe, KEY),
            Err(Error::Decode(DecodeError::Xml(XmlError::Doctype)))
        ));
        // An entity smuggled inside the encrypted req_info is refused too.
        let inner = r#"<!DOCTYPE root [<!ENTITY x SYSTEM "file:///etc/passwd">]><root><out_refund_no>&x;</out_refund_no></root>"#;
        let outer = format!(
            "<xml><return_code>SUCCESS</return_code><appid>wx</appid><mch_id>1</mch_id><req_info>{}</req_info></xml>",
            encrypt_req_info(KEY, inner).unwrap()
        );
        assert!(matches!(
            parse_refund_notification(outer.as_bytes(), KEY),
            Err(Error::Decode(DecodeError::Xml(XmlError::Doctype)))
        ));
    }

    #[test]
    fn d4_vector_decrypts_and_encrypts() {
        assert_eq!(decrypt_req_info(KEY, D4_REQ_INFO).unwrap(), D4_PLAIN);
        assert_eq!(encrypt_req_info(KEY, D4_PLAIN).unwrap(), D4_REQ_INFO);
        assert_eq!(
            hex::encode(Md5::digest(KEY.as_bytes())),
            "d96eb16afdd491fa1e705096edbc2205"
        );
        assert_eq!(
            decrypt_req_info(KEY, "not base64!"),
            Err(CryptoError::Base64("req_info"))
        );
        assert_eq!(decrypt_req_info(KEY, "AAAA"), Err(CryptoError::Decrypt));
        assert_eq!(
            decrypt_req_info(&"0".repeat(32), D4_REQ_INFO),
            Err(CryptoError::Decrypt)
        );
    }

    fn refund() -> RefundNotification {
        RefundNotification {
            appid: "wxd930ea5d5a258f4f".into(),
            mch_id: "10000100".into(),
            nonce_str: "TeqClE3i0mvn3DrK".into(),
            sub_appid: None,
            sub_mch_id: None,
            transaction_id: "4200000000000000000000000000".into(),
            out_trade_no: "1409811653".into(),
            refund_id: "50000000000000000000000000".into(),
            out_refund_no: "R1217752501".into(),
            total_fee: Fen::new(100),
            settlement_total_fee: None,
            refund_fee: Fen::new(88),
            settlement_refund_fee: Fen::new(88),
            refund_status: RefundStatus::Success,
            success_time: Some(datetime!(2024-01-02 03:04:05 +08:00)),
            refund_recv_accout: Some("支付用户零钱".into()),
            refund_account: Some(RefundAccount::UnsettledFunds),
            refund_request_source: Some("API".into()),
            cash_refund_fee: Some(Fen::new(88)),
        }
    }

    #[test]
    fn refund_notification_round_trips_and_needs_the_key() {
        let body = build_refund_notification(&refund(), KEY).unwrap();
        assert!(!body.contains("R1217752501"), "the details are encrypted");
        assert!(!body.contains("<sign>"));
        let parsed = parse_refund_notification(body.as_bytes(), KEY).unwrap();
        assert_eq!(parsed, refund());
        assert!(
            parsed
                .ensure_merchant("wxd930ea5d5a258f4f", "10000100")
                .is_ok()
        );
        assert!(matches!(
            parse_refund_notification(body.as_bytes(), &"1".repeat(32)),
            Err(Error::Crypto(CryptoError::Decrypt))
        ));
        // Flipping one ciphertext character breaks the padding or the XML.
        let map = xml::decode(body.as_bytes()).unwrap();
        let mut req_info = map["req_info"].clone().into_bytes();
        req_info[10] = if req_info[10] == b'A' { b'B' } else { b'A' };
        let tampered = body.replace(&map["req_info"], std::str::from_utf8(&req_info).unwrap());
        assert!(parse_refund_notification(tampered.as_bytes(), KEY).is_err());
        // The D.4 plaintext lacks required fields: a clear decode error, not a panic.
        let d4 = format!(
            "<xml><return_code>SUCCESS</return_code><appid>wx</appid><mch_id>1</mch_id><req_info>{D4_REQ_INFO}</req_info></xml>"
        );
        assert!(
            matches!(parse_refund_notification(d4.as_bytes(), KEY), Err(Error::Decode(DecodeError::MissingField(f))) if f == "transaction_id")
        );
        let no_mch = body.replace("<mch_id>10000100</mch_id>", "");
        assert!(
            matches!(parse_refund_notification(no_mch.as_bytes(), KEY), Err(Error::Decode(DecodeError::MissingField(f))) if f == "mch_id")
        );
    }

    fn partner_d3() -> PayNotification {
        PayNotification {
            sub_appid: Some("wx8888888888888888".into()),
            sub_mch_id: Some("1900000109".into()),
            sub_openid: Some("oSubOpenid_0000000000000001".into()),
            sub_is_subscribe: Some(true),
            ..d3()
        }
    }

    /// The signatures of [`partner_d3`], computed apart from this crate with Python's `hashlib`
    /// and `hmac` over the non-empty fields (with `return_code` and `result_code` `SUCCESS`)
    /// sorted by key, joined as `k=v` with `&`, then `&key=` + the D.3 key:
    /// `md5(s).hexdigest().upper()` and `hmac.new(key, s, sha256).hexdigest().upper()`. The
    /// same procedure gives D.3's `B9C97CC90F7FDD884DBD7DC718C9DF9C` without the partner fields.
    const PARTNER_D3_MD5: &str = "17163A4BA2BF4DF2881CF7B7D7979B27";
    const PARTNER_D3_HMAC: &str =
        "DD5B6D5CC582D14A2B9BABA2CB36B87E47C46A942B31EE526420AE34793EDBB7";

    #[test]
    fn partner_pay_notification_is_built_parsed_and_checked() {
        let md5 = build_pay_notification(&partner_d3(), KEY, SignType::Md5).unwrap();
        assert!(
            md5.contains(&format!("<sign><![CDATA[{PARTNER_D3_MD5}]]></sign>")),
            "{md5}"
        );
        assert!(md5.contains("<sub_mch_id>1900000109</sub_mch_id>"), "{md5}");
        let hmac = build_pay_notification(&partner_d3(), KEY, SignType::HmacSha256).unwrap();
        assert!(hmac.contains(PARTNER_D3_HMAC), "{hmac}");
        let parsed = parse_pay_notification(md5.as_bytes(), KEY).unwrap();
        assert_eq!(parsed, partner_d3());
        assert_eq!(
            parsed.openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "the provider's openid stays"
        );
        assert!(
            parsed
                .ensure_merchant("wxd930ea5d5a258f4f", "10000100")
                .is_ok()
        );
        assert!(
            parsed
                .ensure_sub_merchant(&"1900000109".parse().unwrap())
                .is_ok()
        );
        assert!(matches!(
            parsed.ensure_sub_merchant(&"1900000110".parse().unwrap()),
            Err(Error::Decode(DecodeError::InvalidField { field, .. })) if field == "sub_mch_id"
        ));
        // The partner fields are signed: changing the sub-merchant breaks the signature.
        let moved = md5.replace("1900000109", "1900000110");
        assert!(matches!(
            parse_pay_notification(moved.as_bytes(), KEY),
            Err(Error::Signature(SignatureError::Mismatch))
        ));
        // An ordinary notification has no sub-merchant to match.
        let plain = parse_pay_notification(
            build_pay_notification(&d3(), KEY, SignType::Md5)
                .unwrap()
                .as_bytes(),
            KEY,
        )
        .unwrap();
        assert_eq!(plain.sub_mch_id, None);
        assert!(matches!(
            plain.ensure_sub_merchant(&"1900000109".parse().unwrap()),
            Err(Error::Decode(DecodeError::MissingField(f))) if f == "sub_mch_id"
        ));
    }

    #[test]
    fn partner_refund_notification_carries_the_sub_merchant_outside() {
        let n = RefundNotification {
            sub_appid: Some("wx8888888888888888".into()),
            sub_mch_id: Some("1900000109".into()),
            ..refund()
        };
        let body = build_refund_notification(&n, KEY).unwrap();
        let outer = xml::decode(body.as_bytes()).unwrap();
        assert_eq!(outer["sub_mch_id"], "1900000109");
        assert_eq!(outer["sub_appid"], "wx8888888888888888");
        let parsed = parse_refund_notification(body.as_bytes(), KEY).unwrap();
        assert_eq!(parsed, n);
        assert!(
            parsed
                .ensure_sub_merchant(&"1900000109".parse().unwrap())
                .is_ok()
        );
        assert!(
            parsed
                .ensure_sub_merchant(&"1900000110".parse().unwrap())
                .is_err()
        );
        // The shape WeChat sends a provider, with plain text values.
        let wire = format!(
            "<xml><return_code>SUCCESS</return_code><appid><![CDATA[wxd930ea5d5a258f4f]]></appid><mch_id><![CDATA[10000100]]></mch_id><sub_appid><![CDATA[wx8888888888888888]]></sub_appid><sub_mch_id><![CDATA[1900000109]]></sub_mch_id><nonce_str><![CDATA[TeqClE3i0mvn3DrK]]></nonce_str><req_info><![CDATA[{}]]></req_info></xml>",
            outer["req_info"]
        );
        assert_eq!(parse_refund_notification(wire.as_bytes(), KEY).unwrap(), n);
        // Without them (an ordinary merchant) they are None.
        let plain = build_refund_notification(&refund(), KEY).unwrap();
        assert!(!plain.contains("sub_mch_id"));
        assert_eq!(
            parse_refund_notification(plain.as_bytes(), KEY)
                .unwrap()
                .sub_mch_id,
            None
        );
    }

    #[test]
    fn acknowledgements() {
        assert_eq!(
            ack_success(),
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
        assert!(is_success_ack(ack_success().as_bytes()));
        let fail = ack_fail("amount ]]> mismatch\u{0}");
        let map = xml::decode(fail.as_bytes()).unwrap();
        assert_eq!(map["return_code"], "FAIL");
        assert_eq!(map["return_msg"], "amount ]]> mismatch");
        assert!(!is_success_ack(fail.as_bytes()));
        for not_ack in [
            &b"success"[..],
            b"{\"code\":\"SUCCESS\"}",
            b"<html>SUCCESS</html>",
            b"",
        ] {
            assert!(!is_success_ack(not_ack));
        }
    }
}
