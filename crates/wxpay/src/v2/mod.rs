//! API v2: XML, MD5 / HMAC-SHA256.

pub mod client;
pub mod models;
pub mod notify;
pub mod sign;
pub mod xml;

pub use sign::SignType;
pub use xml::XmlMap;

/// A v2 `err_code` (the business error of `result_code=FAIL`). Unknown codes are kept as
/// [`ErrCode::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrCode {
    /// `SYSTEMERROR`: system error at WeChat; retry with the same parameters.
    SystemError,
    /// `NOAUTH`: the merchant lacks the permission for this call.
    NoAuth,
    /// `NOTENOUGH`: insufficient balance (the payer's, or the merchant's for a refund).
    NotEnough,
    /// `ORDERPAID`: the order is already paid.
    OrderPaid,
    /// `ORDERCLOSED`: the order is closed.
    OrderClosed,
    /// `ORDERNOTEXIST`: no such order.
    OrderNotExist,
    /// `APPID_NOT_EXIST`: unknown appid.
    AppidNotExist,
    /// `MCHID_NOT_EXIST`: unknown mch_id.
    MchidNotExist,
    /// `APPID_MCHID_NOT_MATCH`: the appid is not bound to the mch_id.
    AppidMchidNotMatch,
    /// `LACK_PARAMS`: a required parameter is missing.
    LackParams,
    /// `OUT_TRADE_NO_USED`: the out_trade_no was used with other parameters.
    OutTradeNoUsed,
    /// `SIGNERROR`: the request's signature is wrong.
    SignError,
    /// `XML_FORMAT_ERROR`: the request is not well-formed XML.
    XmlFormatError,
    /// `REQUIRE_POST_METHOD`: the call must be a POST.
    RequirePostMethod,
    /// `POST_DATA_EMPTY`: the request body is empty.
    PostDataEmpty,
    /// `NOT_UTF8`: the request is not UTF-8.
    NotUtf8,
    /// `PARAM_ERROR`: a parameter is invalid (e.g. `appid和openid不匹配`).
    ParamError,
    /// `FREQUENCY_LIMITED`: too many requests; retry later.
    FrequencyLimited,
    /// `TRADE_STATE_ERROR`: the order's state does not allow this (close).
    TradeStateError,
    /// `BIZERR_NEED_RETRY`: refund business error; retry with the same out_refund_no.
    BizerrNeedRetry,
    /// `TRADE_OVERDUE`: the order is too old to refund (over one year).
    TradeOverdue,
    /// `ERROR`: refund business error; see err_code_des.
    Error,
    /// `USER_ACCOUNT_ABNORMAL`: the payer's account is abnormal (refunds).
    UserAccountAbnormal,
    /// `INVALID_REQ_TOO_MUCH`: too many invalid requests.
    InvalidReqTooMuch,
    /// `INVALID_TRANSACTIONID`: the transaction_id is invalid.
    InvalidTransactionId,
    /// `REFUNDNOTEXIST`: no such refund.
    RefundNotExist,
    /// `INVALID_REQUEST`: the request breaks a business rule (e.g. `201 商户订单号重复`).
    InvalidRequest,
    /// Any other code, as sent.
    Unknown(String),
}

impl ErrCode {
    /// Every known code, for tables and tests.
    pub const KNOWN: &'static [ErrCode] = &[
        ErrCode::SystemError,
        ErrCode::NoAuth,
        ErrCode::NotEnough,
        ErrCode::OrderPaid,
        ErrCode::OrderClosed,
        ErrCode::OrderNotExist,
        ErrCode::AppidNotExist,
        ErrCode::MchidNotExist,
        ErrCode::AppidMchidNotMatch,
        ErrCode::LackParams,
        ErrCode::OutTradeNoUsed,
        ErrCode::SignError,
        ErrCode::XmlFormatError,
        ErrCode::RequirePostMethod,
        ErrCode::PostDataEmpty,
        ErrCode::NotUtf8,
        ErrCode::ParamError,
        ErrCode::FrequencyLimited,
        ErrCode::TradeStateError,
        ErrCode::BizerrNeedRetry,
        ErrCode::TradeOverdue,
        ErrCode::Error,
        ErrCode::UserAccountAbnormal,
        ErrCode::InvalidReqTooMuch,
        ErrCode::InvalidTransactionId,
        ErrCode::RefundNotExist,
        ErrCode::InvalidRequest,
    ];

    /// The typed code of a wire value.
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        match code {
            "SYSTEMERROR" => ErrCode::SystemError,
            "NOAUTH" => ErrCode::NoAuth,
            "NOTENOUGH" => ErrCode::NotEnough,
            "ORDERPAID" => ErrCode::OrderPaid,
            "ORDERCLOSED" => ErrCode::OrderClosed,
            "ORDERNOTEXIST" => ErrCode::OrderNotExist,
            "APPID_NOT_EXIST" => ErrCode::AppidNotExist,
            "MCHID_NOT_EXIST" => ErrCode::MchidNotExist,
            "APPID_MCHID_NOT_MATCH" => ErrCode::AppidMchidNotMatch,
            "LACK_PARAMS" => ErrCode::LackParams,
            "OUT_TRADE_NO_USED" => ErrCode::OutTradeNoUsed,
            "SIGNERROR" => ErrCode::SignError,
            "XML_FORMAT_ERROR" => ErrCode::XmlFormatError,
            "REQUIRE_POST_METHOD" => ErrCode::RequirePostMethod,
            "POST_DATA_EMPTY" => ErrCode::PostDataEmpty,
            "NOT_UTF8" => ErrCode::NotUtf8,
            "PARAM_ERROR" => ErrCode::ParamError,
            "FREQUENCY_LIMITED" => ErrCode::FrequencyLimited,
            "TRADE_STATE_ERROR" => ErrCode::TradeStateError,
            "BIZERR_NEED_RETRY" => ErrCode::BizerrNeedRetry,
            "TRADE_OVERDUE" => ErrCode::TradeOverdue,
            "ERROR" => ErrCode::Error,
            "USER_ACCOUNT_ABNORMAL" => ErrCode::UserAccountAbnormal,
            "INVALID_REQ_TOO_MUCH" => ErrCode::InvalidReqTooMuch,
            "INVALID_TRANSACTIONID" => ErrCode::InvalidTransactionId,
            "REFUNDNOTEXIST" => ErrCode::RefundNotExist,
            "INVALID_REQUEST" => ErrCode::InvalidRequest,
            other => ErrCode::Unknown(other.to_owned()),
        }
    }

    /// The wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            ErrCode::SystemError => "SYSTEMERROR",
            ErrCode::NoAuth => "NOAUTH",
            ErrCode::NotEnough => "NOTENOUGH",
            ErrCode::OrderPaid => "ORDERPAID",
            ErrCode::OrderClosed => "ORDERCLOSED",
            ErrCode::OrderNotExist => "ORDERNOTEXIST",
            ErrCode::AppidNotExist => "APPID_NOT_EXIST",
            ErrCode::MchidNotExist => "MCHID_NOT_EXIST",
            ErrCode::AppidMchidNotMatch => "APPID_MCHID_NOT_MATCH",
            ErrCode::LackParams => "LACK_PARAMS",
            ErrCode::OutTradeNoUsed => "OUT_TRADE_NO_USED",
            ErrCode::SignError => "SIGNERROR",
            ErrCode::XmlFormatError => "XML_FORMAT_ERROR",
            ErrCode::RequirePostMethod => "REQUIRE_POST_METHOD",
            ErrCode::PostDataEmpty => "POST_DATA_EMPTY",
            ErrCode::NotUtf8 => "NOT_UTF8",
            ErrCode::ParamError => "PARAM_ERROR",
            ErrCode::FrequencyLimited => "FREQUENCY_LIMITED",
            ErrCode::TradeStateError => "TRADE_STATE_ERROR",
            ErrCode::BizerrNeedRetry => "BIZERR_NEED_RETRY",
            ErrCode::TradeOverdue => "TRADE_OVERDUE",
            ErrCode::Error => "ERROR",
            ErrCode::UserAccountAbnormal => "USER_ACCOUNT_ABNORMAL",
            ErrCode::InvalidReqTooMuch => "INVALID_REQ_TOO_MUCH",
            ErrCode::InvalidTransactionId => "INVALID_TRANSACTIONID",
            ErrCode::RefundNotExist => "REFUNDNOTEXIST",
            ErrCode::InvalidRequest => "INVALID_REQUEST",
            ErrCode::Unknown(s) => s,
        }
    }

    /// Whether the same request may succeed when sent again unchanged.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrCode::SystemError | ErrCode::BizerrNeedRetry | ErrCode::FrequencyLimited
        )
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrCode;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for code in ErrCode::KNOWN {
            assert_eq!(&ErrCode::from_code(code.as_str()), code);
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(ErrCode::KNOWN.len(), 27);
        assert_eq!(ErrCode::from_code("ORDERPAID"), ErrCode::OrderPaid);
        assert_eq!(
            ErrCode::from_code("NEW_CODE"),
            ErrCode::Unknown("NEW_CODE".into())
        );
        assert_eq!(ErrCode::from_code("NEW_CODE").as_str(), "NEW_CODE");
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        let retryable: Vec<&str> = ErrCode::KNOWN
            .iter()
            .filter(|c| c.is_retryable())
            .map(ErrCode::as_str)
            .collect();
        assert_eq!(
            retryable,
            ["SYSTEMERROR", "FREQUENCY_LIMITED", "BIZERR_NEED_RETRY"]
        );
        assert!(!ErrCode::Unknown("X".into()).is_retryable());
    }
}
