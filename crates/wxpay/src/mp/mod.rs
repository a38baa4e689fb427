//! The mini-program server API of `api.weixin.qq.com`: `code2session`, the access token (plain or
//! stable, cached and refreshed by one caller at a time), unlimited mini-program codes and phone
//! numbers.
//!
//! The rules in this module are pure: errcode mapping and the checks run on a request before it
//! is sent. The I/O lives in [`client`].

pub mod client;
pub mod push;
pub mod shipping;

pub use client::{
    AccessToken, EnvVersion, LineColor, MpClient, MpConfig, PhoneInfo, PhoneWatermark, Session,
    TokenSource, WxaCodeImage, WxaCodeRequest,
};
/// Re-exported so that callers read [`Session::session_key`] and [`AccessToken`] with the same
/// `secrecy` version this crate uses.
pub use secrecy::{ExposeSecret, SecretString};

/// A mini-program API `errcode` (never `0`: success is not an error). Codes this crate does not
/// know are kept as [`ErrCode::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrCode {
    /// `-1`: system busy; retry later.
    SystemBusy,
    /// `40001`: invalid credential. On a call that carries an access token: the token is invalid
    /// or not the latest. On `/cgi-bin/token`: the AppSecret is wrong.
    InvalidCredential,
    /// `40002`: invalid `grant_type`.
    InvalidGrantType,
    /// `40003`: invalid openid (e.g. not the user the phone-number code was issued to).
    InvalidOpenId,
    /// `40013`: invalid AppID.
    InvalidAppId,
    /// `40014`: invalid access_token (malformed).
    InvalidAccessToken,
    /// `40029`: invalid code (unknown, expired, or for another app).
    InvalidCode,
    /// `40097`: invalid arguments (e.g. a mini-program code width outside 280–1280).
    InvalidArgs,
    /// `40125`: invalid AppSecret.
    InvalidAppSecret,
    /// `40129`: invalid scene (a character outside the allowed set).
    InvalidScene,
    /// `40163`: the `wx.login` code has already been used.
    CodeUsed,
    /// `40164`: the calling IP is not in the AppID's IP whitelist.
    IpNotWhitelisted,
    /// `40169`: invalid length for scene, or the body is not a JSON string.
    InvalidSceneLength,
    /// `40226`: high-risk user; login blocked.
    CodeBlocked,
    /// `40243`: the AppSecret is frozen.
    AppSecretFrozen,
    /// `41001`: the access_token parameter is missing.
    AccessTokenMissing,
    /// `41002`: the appid parameter is missing.
    AppIdMissing,
    /// `41004`: the secret parameter is missing.
    AppSecretMissing,
    /// `41008`: the code parameter is missing.
    CodeMissing,
    /// `41030`: invalid page (malformed, or not in the released version).
    InvalidPage,
    /// `42001`: the access_token has expired.
    AccessTokenExpired,
    /// `43002`: the call requires POST.
    RequirePost,
    /// `45009`: the API quota is reached (e.g. 5000/min for mini-program codes).
    ApiQuotaReached,
    /// `45011`: the per-minute quota is reached ("api minute-quota reach limit").
    MinuteQuotaReached,
    /// `47001`: data format error (the POST body is not the expected JSON).
    DataFormatError,
    /// `85096`: `scancode_time` is a reserved name and not allowed.
    ScancodeTimeNotAllowed,
    /// `89501`: the administrator has not yet confirmed this IP.
    IpConfirmationPending,
    /// `89503`: this call needs the administrator to confirm the IP.
    IpConfirmationRequired,
    /// `89506`: the administrator refused this IP; retry after 24 hours.
    IpRefusedRetryAfterDay,
    /// `89507`: the administrator refused this IP; retry after 1 hour.
    IpRefusedRetryAfterHour,
    /// `44002`: the POST body is empty.
    EmptyPostData,
    /// `44990`: too many requests (trade-management status calls).
    FrequencyLimited,
    /// `48001`: the API is not authorized (e.g. the trade-management service is not enabled).
    ApiUnauthorized,
    /// `61003`: the third-party platform is not authorized for this permission set.
    ComponentNotAuthorized,
    /// `61004`: the calling IP is not in the IP whitelist.
    ClientIpNotRegistered,
    /// `10060001`: 支付单不存在 (wrong key, or not indexed yet: retry a minute later).
    PaymentNotFound,
    /// `10060002`: the payment is fully shipped; no more shipping can be uploaded.
    PaymentFullyShipped,
    /// `10060003`: the one re-shipping chance of the payment is used.
    ReshipUsed,
    /// `10060004`: the payment cannot ship in its state (e.g. refunded).
    NotShippable,
    /// `10060005`: invalid logistics type.
    InvalidLogisticsType,
    /// `10060006`: split delivery is only allowed for express delivery.
    SplitNeedsExpress,
    /// `10060007`: split delivery requires `is_all_delivered`.
    IsAllDeliveredRequired,
    /// `10060008`: `item_desc` is empty.
    ItemDescEmpty,
    /// `10060009`: `item_desc` is too long.
    ItemDescTooLong,
    /// `10060011`: invalid `last_index` (get_order_list).
    InvalidLastIndex,
    /// `10060012`: system busy; retry.
    TradeSystemBusy,
    /// `10060014`: invalid parameter (errmsg says which).
    ShippingParamError,
    /// `10060019`: system busy; retry.
    TradeSystemBusyRetry,
    /// `10060020`: shipping cannot complete without any goods description.
    NoGoodsDescription,
    /// `10060023`: the shipping information did not change (an identical re-upload).
    ShippingUnchanged,
    /// `10060024`: `shipping_list` is too long (over 15).
    ShippingListTooLong,
    /// `10060025`: `express_company` is too long.
    ExpressCompanyTooLong,
    /// `10060026`: `tracking_no` is too long.
    TrackingNoTooLong,
    /// `10060028`: the payment is not shipped (notify_confirm_receive).
    NotShipped,
    /// `10060029`: invalid `received_time` (seconds, after the shipping time).
    InvalidReceivedTime,
    /// `10060030`: the confirm-receipt reminder of this payment was already sent.
    ConfirmReminderUsed,
    /// `10060031`: the payment does not belong to the given openid.
    NotThePayer,
    /// `10060032`: confirm-receipt reminders are only for express delivery.
    ConfirmReminderExpressOnly,
    /// `268485194`: invalid `order_number_type`.
    InvalidOrderNumberType,
    /// `268485195`: `order_number_type` 2 without `transaction_id`.
    TransactionIdMissing,
    /// `268485196`: `order_number_type` 1 without `mchid`.
    MchidMissing,
    /// `268485197`: `order_number_type` 1 without `out_trade_no`.
    OutTradeNoMissing,
    /// `268485216`: `upload_time` is not RFC 3339.
    InvalidUploadTime,
    /// `268485224`: invalid `delivery_mode`.
    InvalidDeliveryMode,
    /// `268485226`: express delivery without `tracking_no`.
    TrackingNoMissing,
    /// `268485227`: express delivery without `express_company`.
    ExpressCompanyMissing,
    /// `268485228`: unified delivery requires exactly one `shipping_list` item.
    UnifiedNeedsOneItem,
    /// `268546000`: invalid special-order `type`.
    InvalidSpecialOrderType,
    /// `268546001`: invalid `delay_to`.
    InvalidDelayTo,
    /// `268546002`: no such payment awaiting shipment.
    SpecialOrderNotFound,
    /// Any other code, as sent.
    Other(i64),
}

/// Every known code with its variant, the single source of both directions of the mapping.
const KNOWN_CODES: &[(i64, ErrCode)] = &[
    (-1, ErrCode::SystemBusy),
    (40001, ErrCode::InvalidCredential),
    (40002, ErrCode::InvalidGrantType),
    (40003, ErrCode::InvalidOpenId),
    (40013, ErrCode::InvalidAppId),
    (40014, ErrCode::InvalidAccessToken),
    (40029, ErrCode::InvalidCode),
    (40097, ErrCode::InvalidArgs),
    (40125, ErrCode::InvalidAppSecret),
    (40129, ErrCode::InvalidScene),
    (40163, ErrCode::CodeUsed),
    (40164, ErrCode::IpNotWhitelisted),
    (40169, ErrCode::InvalidSceneLength),
    (40226, ErrCode::CodeBlocked),
    (40243, ErrCode::AppSecretFrozen),
    (41001, ErrCode::AccessTokenMissing),
    (41002, ErrCode::AppIdMissing),
    (41004, ErrCode::AppSecretMissing),
    (41008, ErrCode::CodeMissing),
    (41030, ErrCode::InvalidPage),
    (42001, ErrCode::AccessTokenExpired),
    (43002, ErrCode::RequirePost),
    (45009, ErrCode::ApiQuotaReached),
    (45011, ErrCode::MinuteQuotaReached),
    (47001, ErrCode::DataFormatError),
    (85096, ErrCode::ScancodeTimeNotAllowed),
    (89501, ErrCode::IpConfirmationPending),
    (89503, ErrCode::IpConfirmationRequired),
    (89506, ErrCode::IpRefusedRetryAfterDay),
    (89507, ErrCode::IpRefusedRetryAfterHour),
    (44002, ErrCode::EmptyPostData),
    (44990, ErrCode::FrequencyLimited),
    (48001, ErrCode::ApiUnauthorized),
    (61003, ErrCode::ComponentNotAuthorized),
    (61004, ErrCode::ClientIpNotRegistered),
    (10060001, ErrCode::PaymentNotFound),
    (10060002, ErrCode::PaymentFullyShipped),
    (10060003, ErrCode::ReshipUsed),
    (10060004, ErrCode::NotShippable),
    (10060005, ErrCode::InvalidLogisticsType),
    (10060006, ErrCode::SplitNeedsExpress),
    (10060007, ErrCode::IsAllDeliveredRequired),
    (10060008, ErrCode::ItemDescEmpty),
    (10060009, ErrCode::ItemDescTooLong),
    (10060011, ErrCode::InvalidLastIndex),
    (10060012, ErrCode::TradeSystemBusy),
    (10060014, ErrCode::ShippingParamError),
    (10060019, ErrCode::TradeSystemBusyRetry),
    (10060020, ErrCode::NoGoodsDescription),
    (10060023, ErrCode::ShippingUnchanged),
    (10060024, ErrCode::ShippingListTooLong),
    (10060025, ErrCode::ExpressCompanyTooLong),
    (10060026, ErrCode::TrackingNoTooLong),
    (10060028, ErrCode::NotShipped),
    (10060029, ErrCode::InvalidReceivedTime),
    (10060030, ErrCode::ConfirmReminderUsed),
    (10060031, ErrCode::NotThePayer),
    (10060032, ErrCode::ConfirmReminderExpressOnly),
    (268485194, ErrCode::InvalidOrderNumberType),
    (268485195, ErrCode::TransactionIdMissing),
    (268485196, ErrCode::MchidMissing),
    (268485197, ErrCode::OutTradeNoMissing),
    (268485216, ErrCode::InvalidUploadTime),
    (268485224, ErrCode::InvalidDeliveryMode),
    (268485226, ErrCode::TrackingNoMissing),
    (268485227, ErrCode::ExpressCompanyMissing),
    (268485228, ErrCode::UnifiedNeedsOneItem),
    (268546000, ErrCode::InvalidSpecialOrderType),
    (268546001, ErrCode::InvalidDelayTo),
    (268546002, ErrCode::SpecialOrderNotFound),
];

impl ErrCode {
    /// The typed code of a numeric `errcode`.
    #[must_use]
    pub fn from_code(code: i64) -> Self {
        KNOWN_CODES
            .iter()
            .find(|(known, _)| *known == code)
            .map_or(ErrCode::Other(code), |(_, variant)| *variant)
    }

    /// The numeric `errcode`.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            ErrCode::Other(code) => *code,
            known => KNOWN_CODES
                .iter()
                .find(|(_, variant)| variant == known)
                .map_or(0, |(code, _)| *code),
        }
    }

    /// Whether the access token used for the call is no longer good, so that a fresh token and
    /// one retry can succeed (`40001`, `40014`, `42001`, as WxJava's `ACCESS_TOKEN_ERROR_CODES`).
    ///
    /// Only meaningful for calls that carry an access token: `/cgi-bin/token` answers `40001` for
    /// a wrong AppSecret, which no new token fixes.
    #[must_use]
    pub fn is_token_error(&self) -> bool {
        matches!(
            self,
            ErrCode::InvalidCredential | ErrCode::InvalidAccessToken | ErrCode::AccessTokenExpired
        )
    }

    /// Whether WeChat refused the call for a quota (`45009`, `45011`, `44990`): retry later, not now.
    #[must_use]
    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            ErrCode::ApiQuotaReached | ErrCode::MinuteQuotaReached | ErrCode::FrequencyLimited
        )
    }

    /// Whether WeChat asks to retry later (`-1`, and `10060012`, `10060019` of the
    /// trade-management calls).
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            ErrCode::SystemBusy | ErrCode::TradeSystemBusy | ErrCode::TradeSystemBusyRetry
        )
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The most characters a `scene` may have.
pub const SCENE_MAX_CHARS: usize = 32;

/// The punctuation a `scene` may hold besides `[0-9A-Za-z]`.
pub const SCENE_PUNCTUATION: &str = "!#$&'()*+,/:;=?@-._~";

/// Whether `c` may appear in a mini-program code `scene`.
#[must_use]
pub fn is_scene_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || SCENE_PUNCTUATION.contains(c)
}

/// Checks a `scene` for `getwxacodeunlimit`: 1 to 32 characters of `[0-9A-Za-z]` and
/// ``!#$&'()*+,/:;=?@-._~``.
///
/// # Errors
/// [`crate::Error::InvalidRequest`] saying what is wrong.
pub fn validate_scene(scene: &str) -> crate::Result<()> {
    if scene.is_empty() {
        return Err(crate::Error::InvalidRequest(
            "scene must not be empty".into(),
        ));
    }
    let count = scene.chars().count();
    if count > SCENE_MAX_CHARS {
        return Err(crate::Error::InvalidRequest(format!(
            "scene has {count} characters; at most {SCENE_MAX_CHARS} are allowed"
        )));
    }
    if let Some((position, c)) = scene.chars().enumerate().find(|(_, c)| !is_scene_char(*c)) {
        return Err(crate::Error::InvalidRequest(format!(
            "scene character {c:?} at position {position} is not allowed; use [0-9A-Za-z] and \
             {SCENE_PUNCTUATION} (no %, so no URL-encoding)"
        )));
    }
    Ok(())
}

/// Checks a `page` for `getwxacodeunlimit`: a path like `pages/index/index`, with no leading `/`,
/// no query and no fragment.
///
/// # Errors
/// [`crate::Error::InvalidRequest`] saying what is wrong.
pub fn validate_page(page: &str) -> crate::Result<()> {
    if page.is_empty() {
        return Err(crate::Error::InvalidRequest(
            "page must not be empty; leave it out for the home page".into(),
        ));
    }
    if page.starts_with('/') {
        return Err(crate::Error::InvalidRequest(
            "page must not start with '/' (write pages/index/index)".into(),
        ));
    }
    if page.contains(['?', '#']) {
        return Err(crate::Error::InvalidRequest(
            "page must not carry a query or fragment; pass parameters in scene".into(),
        ));
    }
    if let Some(c) = page.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(crate::Error::InvalidRequest(format!(
            "page contains {c:?}; only visible ASCII characters are allowed"
        )));
    }
    Ok(())
}

/// Checks a one-time code (`wx.login` code, phone-number code) before it is sent: 1 to 256
/// visible ASCII characters. `what` names it in the error.
pub(crate) fn validate_code(what: &str, code: &str) -> crate::Result<()> {
    if code.is_empty() {
        return Err(crate::Error::InvalidRequest(format!(
            "{what} must not be empty"
        )));
    }
    if code.len() > 256 {
        return Err(crate::Error::InvalidRequest(format!(
            "{what} is {} bytes long; at most 256 are allowed",
            code.len()
        )));
    }
    if !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(crate::Error::InvalidRequest(format!(
            "{what} must be visible ASCII characters only (no spaces or control characters)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_maps_both_ways() {
        for (code, variant) in KNOWN_CODES {
            assert_eq!(ErrCode::from_code(*code), *variant, "from_code({code})");
            assert_eq!(variant.code(), *code, "{variant:?}.code()");
        }
        let distinct: std::collections::HashSet<i64> =
            KNOWN_CODES.iter().map(|(c, _)| *c).collect();
        assert_eq!(distinct.len(), KNOWN_CODES.len(), "a code is listed twice");
    }

    #[test]
    fn section_c_codes_are_typed() {
        let section_c = [
            -1, 40001, 40002, 40013, 40014, 40029, 40125, 40129, 40164, 40169, 40226, 40243, 41002,
            41004, 41008, 41030, 42001, 45009, 45011, 47001, 85096, 40097, 89501, 89503, 89506,
            89507,
        ];
        for code in section_c {
            assert!(
                !matches!(ErrCode::from_code(code), ErrCode::Other(_)),
                "{code} is not typed"
            );
        }
        assert_eq!(ErrCode::from_code(-1), ErrCode::SystemBusy);
        assert_eq!(ErrCode::from_code(40029), ErrCode::InvalidCode);
        assert_eq!(ErrCode::from_code(42001), ErrCode::AccessTokenExpired);
    }

    #[test]
    fn unknown_codes_round_trip_through_other() {
        assert_eq!(ErrCode::from_code(61451), ErrCode::Other(61451));
        assert_eq!(ErrCode::Other(61451).code(), 61451);
        assert_eq!(ErrCode::from_code(61451).to_string(), "61451");
    }

    #[test]
    fn token_errors_are_exactly_40001_40014_42001() {
        let token_codes: Vec<i64> = KNOWN_CODES
            .iter()
            .filter(|(_, v)| v.is_token_error())
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(token_codes, vec![40001, 40014, 42001]);
        assert!(!ErrCode::Other(40002).is_token_error());
    }

    #[test]
    fn rate_limits_are_45009_and_45011() {
        let limited: Vec<i64> = KNOWN_CODES
            .iter()
            .filter(|(_, v)| v.is_rate_limited())
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(limited, vec![45009, 45011, 44990]);
    }

    #[test]
    fn scene_accepts_the_documented_alphabet() {
        validate_scene("a").unwrap();
        validate_scene("id=42&from=poster").unwrap();
        validate_scene("!#$&'()*+,/:;=?@-._~").unwrap();
        validate_scene(&"Z".repeat(32)).unwrap();
    }

    #[test]
    fn scene_refuses_empty_long_and_foreign_characters() {
        for bad in [
            "",
            &"a".repeat(33),
            "a b",
            "100%",
            "a\"b",
            "订单",
            "a<b",
            "a\nb",
            "^",
            "[x]",
            "{}",
            "|",
            "\\",
        ] {
            let err = validate_scene(bad).unwrap_err();
            assert!(matches!(err, crate::Error::InvalidRequest(_)), "{bad:?}");
        }
        let message = validate_scene(&"a".repeat(33)).unwrap_err().to_string();
        assert!(
            message.contains("33") && message.contains("32"),
            "{message}"
        );
        let message = validate_scene("ab%20").unwrap_err().to_string();
        assert!(
            message.contains("'%'") && message.contains("position 2"),
            "{message}"
        );
    }

    #[test]
    fn scene_counts_characters_not_bytes() {
        // 11 Chinese characters are 33 bytes but only 11 characters: refused for the alphabet,
        // not for the length.
        let message = validate_scene(&"码".repeat(11)).unwrap_err().to_string();
        assert!(message.contains("not allowed"), "{message}");
    }

    #[test]
    fn page_rules() {
        validate_page("pages/index/index").unwrap();
        validate_page("packageA/pages/detail/detail").unwrap();
        for bad in [
            "",
            "/pages/index/index",
            "pages/index/index?id=1",
            "pages/a#b",
            "pages/a b",
        ] {
            assert!(validate_page(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn code_rules() {
        validate_code("js_code", "0a3Xyz-_").unwrap();
        assert!(validate_code("js_code", "").is_err());
        assert!(validate_code("js_code", "a b").is_err());
        assert!(validate_code("js_code", "a\u{7f}").is_err());
        assert!(validate_code("js_code", &"a".repeat(257)).is_err());
    }
}
