//! API v3: JSON, RSA-SHA256, AES-256-GCM.

pub mod aead;
pub mod auth;
pub mod certificates;
pub mod client;
pub mod models;
pub mod notify;
pub mod transfers;
pub mod verifier;

/// A v3 error `code`. Unknown codes are kept as [`ErrorCode::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `PARAM_ERROR`, 400: a parameter is missing or malformed.
    ParamError,
    /// `INVALID_REQUEST`, 400: the request breaks the APIv3 or business rules (e.g. a refund over the remaining amount).
    InvalidRequest,
    /// `SIGN_ERROR`, 401: the Authorization signature did not verify.
    SignError,
    /// `SYSTEM_ERROR`, 500: retry with the same parameters.
    SystemError,
    /// `USER_PAYING`, 202: the user is paying (micropay).
    UserPaying,
    /// `APPID_MCHID_NOT_MATCH`, 400: the appid is not bound to the mchid.
    AppidMchidNotMatch,
    /// `MCH_NOT_EXISTS`, 400: unknown merchant.
    MchNotExists,
    /// `ORDER_CLOSED`, 400: the order is closed.
    OrderClosed,
    /// `ACCOUNT_ERROR`, 403: the payer's account is abnormal.
    AccountError,
    /// `NO_AUTH`, 403: the merchant lacks the permission.
    NoAuth,
    /// `NOT_ENOUGH`, 403: insufficient balance.
    NotEnough,
    /// `OUT_TRADE_NO_USED`, 403: the out_trade_no was used with other parameters.
    OutTradeNoUsed,
    /// `RULE_LIMIT`, 403: a business rule limit.
    RuleLimit,
    /// `TRADE_ERROR`, 403: the trade state does not allow this.
    TradeError,
    /// `ORDER_NOT_EXIST`, 404: no such order.
    OrderNotExist,
    /// `RESOURCE_NOT_EXISTS`, 404: no such resource (order or refund).
    ResourceNotExists,
    /// `FREQUENCY_LIMITED`, 429: too many requests.
    FrequencyLimited,
    /// `RATELIMIT_EXCEEDED`, 429: rate limit (global status page wording).
    RatelimitExceeded,
    /// `BANK_ERROR`, 500: bank failure; retry.
    BankError,
    /// `SERVICE_UNAVAILABLE`, 502/503: retry later.
    ServiceUnavailable,
    /// `USER_ACCOUNT_ABNORMAL`, 403: the user's account is abnormal (refunds).
    UserAccountAbnormal,
    /// `ORDERPAID`, the order is already paid.
    OrderPaid,
    /// `NOT_FOUND`, 404: no such record (transfer bills).
    NotFound,
    /// Any other code, as sent.
    Unknown(String),
}

impl ErrorCode {
    /// The typed code of a wire value.
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        match code {
            "PARAM_ERROR" => ErrorCode::ParamError,
            "INVALID_REQUEST" => ErrorCode::InvalidRequest,
            "SIGN_ERROR" => ErrorCode::SignError,
            "SYSTEM_ERROR" => ErrorCode::SystemError,
            "USER_PAYING" => ErrorCode::UserPaying,
            "APPID_MCHID_NOT_MATCH" => ErrorCode::AppidMchidNotMatch,
            "MCH_NOT_EXISTS" => ErrorCode::MchNotExists,
            "ORDER_CLOSED" => ErrorCode::OrderClosed,
            "ACCOUNT_ERROR" => ErrorCode::AccountError,
            "NO_AUTH" => ErrorCode::NoAuth,
            "NOT_ENOUGH" => ErrorCode::NotEnough,
            "OUT_TRADE_NO_USED" => ErrorCode::OutTradeNoUsed,
            "RULE_LIMIT" => ErrorCode::RuleLimit,
            "TRADE_ERROR" => ErrorCode::TradeError,
            "ORDER_NOT_EXIST" => ErrorCode::OrderNotExist,
            "RESOURCE_NOT_EXISTS" => ErrorCode::ResourceNotExists,
            "FREQUENCY_LIMITED" => ErrorCode::FrequencyLimited,
            "RATELIMIT_EXCEEDED" => ErrorCode::RatelimitExceeded,
            "BANK_ERROR" => ErrorCode::BankError,
            "SERVICE_UNAVAILABLE" => ErrorCode::ServiceUnavailable,
            "USER_ACCOUNT_ABNORMAL" => ErrorCode::UserAccountAbnormal,
            "ORDERPAID" => ErrorCode::OrderPaid,
            "NOT_FOUND" => ErrorCode::NotFound,
            other => ErrorCode::Unknown(other.to_owned()),
        }
    }

    /// The wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::ParamError => "PARAM_ERROR",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::SignError => "SIGN_ERROR",
            ErrorCode::SystemError => "SYSTEM_ERROR",
            ErrorCode::UserPaying => "USER_PAYING",
            ErrorCode::AppidMchidNotMatch => "APPID_MCHID_NOT_MATCH",
            ErrorCode::MchNotExists => "MCH_NOT_EXISTS",
            ErrorCode::OrderClosed => "ORDER_CLOSED",
            ErrorCode::AccountError => "ACCOUNT_ERROR",
            ErrorCode::NoAuth => "NO_AUTH",
            ErrorCode::NotEnough => "NOT_ENOUGH",
            ErrorCode::OutTradeNoUsed => "OUT_TRADE_NO_USED",
            ErrorCode::RuleLimit => "RULE_LIMIT",
            ErrorCode::TradeError => "TRADE_ERROR",
            ErrorCode::OrderNotExist => "ORDER_NOT_EXIST",
            ErrorCode::ResourceNotExists => "RESOURCE_NOT_EXISTS",
            ErrorCode::FrequencyLimited => "FREQUENCY_LIMITED",
            ErrorCode::RatelimitExceeded => "RATELIMIT_EXCEEDED",
            ErrorCode::BankError => "BANK_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::UserAccountAbnormal => "USER_ACCOUNT_ABNORMAL",
            ErrorCode::OrderPaid => "ORDERPAID",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unknown(s) => s,
        }
    }

    /// Whether the same request may succeed when sent again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::SystemError
                | ErrorCode::BankError
                | ErrorCode::FrequencyLimited
                | ErrorCode::RatelimitExceeded
                | ErrorCode::ServiceUnavailable
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
