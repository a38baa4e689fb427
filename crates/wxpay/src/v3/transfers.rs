//! Merchant transfers (商家转账), the version every merchant account opened since 2025-01-15 must
//! use: the merchant creates a transfer bill, the user confirms it in the mini program with
//! `wx.requestMerchantTransfer`, and `MCHTRANSFER.BILL.FINISHED` tells the final state.
//!
//! Also the authorization (免确认) mode: the user authorizes once, later transfers need no
//! confirmation. The service-provider twins (`/v3/fund-app/mch-transfer/partner/...`) are still
//! in limited release at WeChat and are not here.
//!
//! A bill is created exactly once per `out_bill_no`: a lost answer, `ACCEPTED`, `SYSTEM_ERROR` or
//! any non-200 is retried with the same number and parameters, and a new number is used only after
//! a query shows `FAIL` (WeChat's own rule). [`V3Client::create_transfer_bill`] retries within one
//! call; a caller that loses the answer altogether asks [`V3Client::query_transfer_by_out_bill_no`].

use http::Method;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{DecodeError, Error};
use crate::http::Idempotency;
use crate::ids::{OpenId, OutBillNo};
use crate::v3::client::{V3Client, path_escape, validate_notify_url};
use crate::v3::models::wire_enum;

/// From this amount (2,000 yuan) the user's real name is required (`user_name`).
pub const USER_NAME_REQUIRED_FROM_FEN: u64 = 200_000;
/// The smallest transfer WeChat takes: 0.1 yuan.
pub const MIN_TRANSFER_FEN: u64 = 10;

wire_enum! {
    /// `state` of a transfer bill. Final: `SUCCESS`, `FAIL`, `CANCELLED`.
    TransferState {
        /// Accepted, not yet processed: retry the create with the same number.
        Accepted = "ACCEPTED",
        /// Locking funds (stays here while the operating account is short).
        Processing = "PROCESSING",
        /// Waiting for the user to confirm in the mini program.
        WaitUserConfirm = "WAIT_USER_CONFIRM",
        /// Confirmed, being paid (the confirm page may be reopened).
        Transfering = "TRANSFERING",
        /// Paid to the user's balance.
        Success = "SUCCESS",
        /// Failed (see `fail_reason`); the funds return to the operating account.
        Fail = "FAIL",
        /// Being cancelled by the merchant.
        Canceling = "CANCELING",
        /// Cancelled by the merchant.
        Cancelled = "CANCELLED",
    }
}

impl TransferState {
    /// Whether the bill can no longer change.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TransferState::Success | TransferState::Fail | TransferState::Cancelled
        )
    }

    /// Whether the merchant may still cancel it (before the user confirmed).
    #[must_use]
    pub fn is_cancellable(&self) -> bool {
        matches!(
            self,
            TransferState::Accepted | TransferState::Processing | TransferState::WaitUserConfirm
        )
    }
}

wire_enum! {
    /// `fail_reason` of a failed transfer (the documented list).
    TransferFailReason {
        /// The user's account is frozen.
        AccountFrozen = "ACCOUNT_FROZEN",
        /// The user's account does not exist.
        AccountNotExist = "ACCOUNT_NOT_EXIST",
        /// The user received too many transfers today.
        DayReceivedCountExceed = "DAY_RECEIVED_COUNT_EXCEED",
        /// The user received too much today.
        DayReceivedQuotaExceed = "DAY_RECEIVED_QUOTA_EXCEED",
        /// Over the estimated amount.
        ExceededEstimatedAmount = "EXCEEDED_ESTIMATED_AMOUNT",
        /// The merchant cancelled it.
        MchCancel = "MCH_CANCEL",
        /// The merchant rejected it.
        MerchantReject = "MERCHANT_REJECT",
        /// The merchant did not confirm it.
        MerchantNotConfirm = "MERCHANT_NOT_CONFIRM",
        /// The real name does not match the user.
        NameNotCorrect = "NAME_NOT_CORRECT",
        /// The openid is not valid.
        OpenidInvalid = "OPENID_INVALID",
        /// Another reason.
        OtherFailReasonType = "OTHER_FAIL_REASON_TYPE",
        /// Not confirmed or not processed in time: closed by WeChat.
        OverdueClose = "OVERDUE_CLOSE",
        /// The payee's account is abnormal.
        PayeeAccountAbnormal = "PAYEE_ACCOUNT_ABNORMAL",
        /// The payer's account is abnormal.
        PayerAccountAbnormal = "PAYER_ACCOUNT_ABNORMAL",
        /// The product's authorization check failed.
        ProductAuthCheckFail = "PRODUCT_AUTH_CHECK_FAIL",
        /// The user's real-name account received too much.
        RealnameAccountReceivedQuotaExceed = "REALNAME_ACCOUNT_RECEIVED_QUOTA_EXCEED",
        /// The real-name check failed.
        RealNameCheckFail = "REAL_NAME_CHECK_FAIL",
        /// Over the merchant's transfer quota.
        TransferQuotaExceed = "TRANSFER_QUOTA_EXCEED",
        /// Refused by risk control.
        TransferRisk = "TRANSFER_RISK",
        /// The scene is not valid.
        TransferSceneInvalid = "TRANSFER_SCENE_INVALID",
        /// The scene is not available.
        TransferSceneUnavailable = "TRANSFER_SCENE_UNAVAILABLE",
        /// Over the budget.
        BudgetNotEnough = "BUDGET_NOT_ENOUGH",
    }
}

/// One of the scene's report infos (`transfer_scene_report_infos`), e.g. for scene `1000`
/// exactly `活动名称` and `奖励说明`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSceneReportInfo {
    /// The info's name, 1–15 characters.
    pub info_type: String,
    /// Its content, 1–32 characters.
    pub info_content: String,
}

impl TransferSceneReportInfo {
    /// One info.
    #[must_use]
    pub fn new(info_type: impl Into<String>, info_content: impl Into<String>) -> Self {
        Self {
            info_type: info_type.into(),
            info_content: info_content.into(),
        }
    }
}

/// The payee's real name (`user_name`), as given or already encrypted.
#[derive(Clone, PartialEq, Eq)]
pub enum UserName {
    /// The plaintext: the client encrypts it (RSA-OAEP) and names the key it used.
    Plain(String),
    /// Encrypted earlier with [`V3Client::encrypt_sensitive`]: sent as it is, so that a retry
    /// sends exactly the same body (and the plaintext need not be kept).
    Encrypted {
        /// The key's id (`Wechatpay-Serial`).
        serial: String,
        /// The base64 ciphertext.
        ciphertext: String,
    },
}

impl std::fmt::Debug for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserName::Plain(_) => f.write_str("UserName::Plain(..)"),
            UserName::Encrypted { serial, .. } => write!(f, "UserName::Encrypted({serial})"),
        }
    }
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills`. The `appid` is the client's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferBillRequest {
    /// The merchant's bill number.
    pub out_bill_no: OutBillNo,
    /// The transfer scene, e.g. `1000` (现金营销), `1005` (佣金报酬), `1011` (企业赔付).
    pub transfer_scene_id: String,
    /// The payee under the client's appid.
    pub openid: OpenId,
    /// The payee's real name; required from [`USER_NAME_REQUIRED_FROM_FEN`].
    pub user_name: Option<UserName>,
    /// Amount in fen, at least [`MIN_TRANSFER_FEN`].
    pub transfer_amount: u64,
    /// Shown to the user, 1–32 characters.
    pub transfer_remark: String,
    /// Where `MCHTRANSFER.BILL.FINISHED` goes.
    pub notify_url: Option<String>,
    /// What the user is told the money is (scene-specific list, e.g. `活动奖励`).
    pub user_recv_perception: Option<String>,
    /// The scene's report infos.
    pub transfer_scene_report_infos: Vec<TransferSceneReportInfo>,
}

impl TransferBillRequest {
    /// Checks the rules WeChat applies to every scene, before anything is sent.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        check_transfer_fields(
            &self.transfer_scene_id,
            self.transfer_amount,
            &self.transfer_remark,
            self.notify_url.as_deref(),
            &self.transfer_scene_report_infos,
        )?;
        check_user_name(self.transfer_amount, self.user_name.as_ref())
    }
}

fn check_user_name(amount: u64, user_name: Option<&UserName>) -> Result<(), Error> {
    if amount >= USER_NAME_REQUIRED_FROM_FEN && user_name.is_none() {
        return Err(Error::InvalidRequest(format!(
            "user_name is required from {USER_NAME_REQUIRED_FROM_FEN} fen"
        )));
    }
    if let Some(UserName::Plain(name)) = user_name
        && (name.trim().is_empty() || name.len() > 214)
    {
        return Err(Error::InvalidRequest(
            "user_name must be 1 to 214 bytes".into(),
        ));
    }
    Ok(())
}

fn check_display_name(name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    if chars == 0 || chars > 32 {
        return Err(Error::InvalidRequest(
            "user_display_name must be 1 to 32 characters".into(),
        ));
    }
    Ok(())
}

/// `authorization_info` of [`PreTransferWithAuthorizationRequest`]: the authorization the user
/// grants by confirming the bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationInfo {
    /// The name the user is shown as, 1–32 characters.
    pub user_display_name: String,
    /// The merchant's authorization number (as for
    /// [`V3Client::request_transfer_authorization`]).
    pub out_authorization_no: OutBillNo,
    /// Where `MCHTRANSFER.AUTHORIZATION.*` goes.
    pub authorization_notify_url: String,
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills/pre-transfer-with-authorization`: a transfer
/// bill the user confirms as any other, and by the same confirmation authorizes later transfers
/// without confirmation ([`V3Client::create_authorized_transfer`]). The fields are those of
/// [`TransferBillRequest`] plus `authorization_info` and `sponsor_mchid`; the `appid` is the
/// client's. (WeChat also takes the call without `authorization_info`, which is then a plain
/// create: use [`V3Client::create_transfer_bill`] for that.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreTransferWithAuthorizationRequest {
    /// The merchant's bill number.
    pub out_bill_no: OutBillNo,
    /// The transfer scene, which the authorization is for too.
    pub transfer_scene_id: String,
    /// The payee under the client's appid, who is also the authorizing user.
    pub openid: OpenId,
    /// The payee's real name; required from [`USER_NAME_REQUIRED_FROM_FEN`].
    pub user_name: Option<UserName>,
    /// Amount in fen, at least [`MIN_TRANSFER_FEN`].
    pub transfer_amount: u64,
    /// Shown to the user, 1–32 characters.
    pub transfer_remark: String,
    /// Where `MCHTRANSFER.BILL.FINISHED` goes.
    pub notify_url: Option<String>,
    /// What the user is told the money is.
    pub user_recv_perception: Option<String>,
    /// The scene's report infos.
    pub transfer_scene_report_infos: Vec<TransferSceneReportInfo>,
    /// The authorization the confirmation grants.
    pub authorization_info: AuthorizationInfo,
    /// The merchant that funds the transfer (出资商户号), when not the caller.
    pub sponsor_mchid: Option<String>,
}

impl PreTransferWithAuthorizationRequest {
    /// The checks of [`TransferBillRequest::validate`] plus those of `authorization_info`
    /// (`user_display_name` 1–32 characters, `authorization_notify_url` as any notify URL) and
    /// `sponsor_mchid` (1–32 digits).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        check_transfer_fields(
            &self.transfer_scene_id,
            self.transfer_amount,
            &self.transfer_remark,
            self.notify_url.as_deref(),
            &self.transfer_scene_report_infos,
        )?;
        check_user_name(self.transfer_amount, self.user_name.as_ref())?;
        check_display_name(&self.authorization_info.user_display_name)?;
        validate_notify_url(&self.authorization_info.authorization_notify_url).map_err(
            |e| match e {
                Error::InvalidRequest(m) => Error::InvalidRequest(format!(
                    "authorization_info.authorization_notify_url: {m}"
                )),
                other => other,
            },
        )?;
        if let Some(sponsor) = &self.sponsor_mchid
            && (sponsor.is_empty()
                || sponsor.len() > 32
                || !sponsor.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::InvalidRequest(
                "sponsor_mchid must be 1 to 32 digits".into(),
            ));
        }
        Ok(())
    }

    /// The request body, with `user_name` already encrypted.
    fn body(&self, appid: &str, user_name: Option<&str>) -> Result<Vec<u8>, Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(flatten)]
            bill: BillWire<'a>,
            authorization_info: &'a AuthorizationInfo,
            #[serde(skip_serializing_if = "Option::is_none")]
            sponsor_mchid: Option<&'a str>,
        }
        serde_json::to_vec(&Wire {
            bill: BillWire {
                appid,
                out_bill_no: self.out_bill_no.as_str(),
                transfer_scene_id: &self.transfer_scene_id,
                openid: self.openid.as_str(),
                user_name,
                transfer_amount: self.transfer_amount,
                transfer_remark: &self.transfer_remark,
                notify_url: self.notify_url.as_deref(),
                user_recv_perception: self.user_recv_perception.as_deref(),
                transfer_scene_report_infos: &self.transfer_scene_report_infos,
            },
            authorization_info: &self.authorization_info,
            sponsor_mchid: self.sponsor_mchid.as_deref(),
        })
        .map_err(|e| DecodeError::json(&e).into())
    }
}

/// The body of a bill create (the fields the user-confirm creates share).
#[derive(Serialize)]
struct BillWire<'a> {
    appid: &'a str,
    out_bill_no: &'a str,
    transfer_scene_id: &'a str,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
    transfer_amount: u64,
    transfer_remark: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_recv_perception: Option<&'a str>,
    transfer_scene_report_infos: &'a [TransferSceneReportInfo],
}

impl TransferBillRequest {
    /// The request body, with `user_name` already encrypted.
    fn body(&self, appid: &str, user_name: Option<&str>) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&BillWire {
            appid,
            out_bill_no: self.out_bill_no.as_str(),
            transfer_scene_id: &self.transfer_scene_id,
            openid: self.openid.as_str(),
            user_name,
            transfer_amount: self.transfer_amount,
            transfer_remark: &self.transfer_remark,
            notify_url: self.notify_url.as_deref(),
            user_recv_perception: self.user_recv_perception.as_deref(),
            transfer_scene_report_infos: &self.transfer_scene_report_infos,
        })
        .map_err(|e| DecodeError::json(&e).into())
    }
}

fn check_transfer_fields(
    scene: &str,
    amount: u64,
    remark: &str,
    notify_url: Option<&str>,
    infos: &[TransferSceneReportInfo],
) -> Result<(), Error> {
    if scene.is_empty() || scene.len() > 36 {
        return Err(Error::InvalidRequest(
            "transfer_scene_id must be 1 to 36 characters".into(),
        ));
    }
    if amount < MIN_TRANSFER_FEN {
        return Err(Error::InvalidRequest(format!(
            "transfer_amount must be at least {MIN_TRANSFER_FEN} fen"
        )));
    }
    let remark_len = remark.chars().count();
    if remark_len == 0 || remark_len > 32 {
        return Err(Error::InvalidRequest(
            "transfer_remark must be 1 to 32 characters".into(),
        ));
    }
    if let Some(url) = notify_url {
        validate_notify_url(url)?;
    }
    if infos.is_empty() {
        return Err(Error::InvalidRequest(
            "transfer_scene_report_infos must name the scene's infos".into(),
        ));
    }
    for info in infos {
        let t = info.info_type.chars().count();
        let c = info.info_content.chars().count();
        if !(1..=15).contains(&t) || !(1..=32).contains(&c) {
            return Err(Error::InvalidRequest(
                "transfer_scene_report_infos: info_type must be 1 to 15 and info_content 1 to 32 characters".into(),
            ));
        }
    }
    Ok(())
}

/// The answer to a create: the bill's state and, while it waits for the user, the `package_info`
/// that `wx.requestMerchantTransfer` needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBillCreated {
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number.
    pub transfer_bill_no: String,
    /// When WeChat took it.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
    /// Usually `WAIT_USER_CONFIRM`; `ACCEPTED` means retry the create.
    pub state: TransferState,
    /// Why it failed, when `FAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<TransferFailReason>,
    /// Only in `WAIT_USER_CONFIRM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_info: Option<String>,
}

/// The answer to [`V3Client::pre_transfer_with_authorization`]: the create answer plus the
/// authorization's `user_display_name` and `out_authorization_no`. The user confirms the bill's
/// `package_info` (there is no separate authorization package); the authorization's state is
/// then told by `MCHTRANSFER.AUTHORIZATION.CONFIRMED` or
/// [`V3Client::query_transfer_authorization`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreTransferWithAuthorizationCreated {
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number.
    pub transfer_bill_no: String,
    /// When WeChat took it.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
    /// Usually `WAIT_USER_CONFIRM`; `ACCEPTED` means retry the call.
    pub state: TransferState,
    /// Why it failed, when `FAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<TransferFailReason>,
    /// Only in `WAIT_USER_CONFIRM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_info: Option<String>,
    /// The authorization's display name, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_display_name: Option<String>,
    /// The authorization's number, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_authorization_no: Option<String>,
}

/// A transfer bill as a query shows it (no `package_info`; `mch_id`, not `mchid`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBill {
    /// The merchant.
    pub mch_id: String,
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number.
    pub transfer_bill_no: String,
    /// The appid the bill was made for.
    pub appid: String,
    /// Its state.
    pub state: TransferState,
    /// Amount in fen.
    pub transfer_amount: u64,
    /// The remark shown to the user.
    pub transfer_remark: String,
    /// Why it failed, when `FAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<TransferFailReason>,
    /// The payee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// The name as sent (ciphertext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// When it was made.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "crate::time::v3")]
    pub update_time: OffsetDateTime,
}

/// The answer to a cancel: accepted, not yet final.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCancelled {
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number.
    pub transfer_bill_no: String,
    /// `CANCELING` or `CANCELLED`.
    pub state: TransferState,
    /// When it changed.
    #[serde(with = "crate::time::v3")]
    pub update_time: OffsetDateTime,
}

/// The decrypted resource of `MCHTRANSFER.BILL.FINISHED` (original type `mch_payment`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBillResource {
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number.
    pub transfer_bill_no: String,
    /// `SUCCESS`, `FAIL` or `CANCELLED`.
    pub state: TransferState,
    /// The merchant.
    pub mch_id: String,
    /// Amount in fen.
    pub transfer_amount: u64,
    /// The payee.
    #[serde(default)]
    pub openid: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<TransferFailReason>,
    /// When it was made.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
    /// When it became final.
    #[serde(with = "crate::time::v3")]
    pub update_time: OffsetDateTime,
}

wire_enum! {
    /// `state` of a transfer authorization (免确认 mode).
    AuthorizationState {
        /// Waiting for the user.
        WaitUserConfirm = "WAIT_USER_CONFIRM",
        /// In force: transfers need no confirmation.
        TakingEffect = "TAKING_EFFECT",
        /// Closed (see `close_info`).
        Closed = "CLOSED",
    }
}

/// `scene_info` of an authorization request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationSceneInfo {
    /// The user's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `IOS`, `ANDROID`, `HARMONY`, `OTHER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
}

/// `POST /v3/fund-app/mch-transfer/user-confirm-authorization`: ask the user to authorize
/// transfers without confirmation. The `appid` is the client's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The merchant's authorization number.
    pub out_authorization_no: OutBillNo,
    /// The user.
    pub openid: OpenId,
    /// The scene the authorization is for.
    pub transfer_scene_id: String,
    /// The name the user is shown as, at most 32 characters.
    pub user_display_name: String,
    /// What the user is told the money is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_recv_perception: Option<String>,
    /// Where `MCHTRANSFER.AUTHORIZATION.*` goes.
    pub authorization_notify_url: String,
    /// The user's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<AuthorizationSceneInfo>,
}

/// The answer to an authorization request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCreated {
    /// The merchant's number.
    pub out_authorization_no: String,
    /// `WAIT_USER_CONFIRM`.
    pub state: AuthorizationState,
    /// When it was made.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
    /// For `wx.requestMerchantTransfer`.
    pub package_info: String,
}

/// `close_info` of a closed authorization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCloseInfo {
    /// When it closed.
    #[serde(default, with = "crate::time::v3::option")]
    pub close_time: Option<OffsetDateTime>,
    /// `CLOSE_VIA_MCH_API`, `USER_CLOSE`, `USER_OVERDUE_UNCONFIRMED`, `TRANSFER_RISK`,
    /// `USER_ACCOUNT_ABNORMAL`.
    #[serde(default)]
    pub close_reason: String,
}

/// An authorization as a query shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The merchant's number.
    pub out_authorization_no: String,
    /// Its state.
    pub state: AuthorizationState,
    /// WeChat's id once in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_id: Option<String>,
    /// When the user authorized.
    #[serde(
        default,
        with = "crate::time::v3::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub authorize_time: Option<OffsetDateTime>,
    /// Why it closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_info: Option<AuthorizationCloseInfo>,
    /// The user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// The scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_scene_id: Option<String>,
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills/transfer`: a transfer under an authorization,
/// paid without the user's confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedTransferRequest {
    /// The merchant's bill number.
    pub out_bill_no: OutBillNo,
    /// The authorization, by the merchant's number.
    pub out_authorization_no: OutBillNo,
    /// The scene (the authorization's).
    pub transfer_scene_id: String,
    /// Amount in fen.
    pub transfer_amount: u64,
    /// Shown to the user.
    pub transfer_remark: String,
    /// Where `MCHTRANSFER.BILL.FINISHED` goes.
    pub notify_url: Option<String>,
    /// What the user is told the money is.
    pub user_recv_perception: Option<String>,
    /// The scene's report infos.
    pub transfer_scene_report_infos: Vec<TransferSceneReportInfo>,
}

/// The answer to an authorized transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedTransfer {
    /// The merchant.
    #[serde(default)]
    pub mch_id: String,
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number.
    pub transfer_bill_no: String,
    /// `ACCEPTED`, `PROCESSING`, `TRANSFERING` or `SUCCESS`.
    pub state: TransferState,
    /// When it was made.
    #[serde(with = "crate::time::v3")]
    pub create_time: OffsetDateTime,
}

/// The object the mini program passes to `wx.requestMerchantTransfer` (besides its callbacks).
/// Nothing in it is signed: `package` is WeChat's `package_info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMerchantTransfer {
    /// The merchant that made the bill.
    #[serde(rename = "mchId")]
    pub mch_id: String,
    /// The mini program the bill was made for.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// `package_info` of the bill (or of the authorization).
    pub package: String,
    /// The payee, so that another user's WeChat refuses the page.
    #[serde(rename = "openId", default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
}

const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";
const AUTHORIZATIONS: &str = "/v3/fund-app/mch-transfer/user-confirm-authorization";

impl V3Client {
    /// `POST /v3/fund-app/mch-transfer/transfer-bills`. The name is encrypted here with the
    /// WeChat Pay public key (or newest platform certificate) and its id sent as
    /// `Wechatpay-Serial`. Retried with the same number on a lost answer or a system error.
    ///
    /// # Errors
    /// Invalid input (checked before sending), encryption, transport, API (e.g. `NOT_ENOUGH`,
    /// `INVALID_REQUEST` for amount bounds or scene infos), signature or decode errors.
    pub async fn create_transfer_bill(
        &self,
        request: &TransferBillRequest,
    ) -> Result<TransferBillCreated, Error> {
        request.validate()?;
        let (serial, user_name) = self.wire_user_name(request.user_name.as_ref())?;
        let body = request.body(&self.config().appid, user_name.as_deref())?;
        self.call_json_with_serial(
            Method::POST,
            BILLS,
            Some(body),
            Idempotency::Idempotent,
            serial.as_deref(),
        )
        .await
    }

    /// `user_name` as sent, with the id of the key that encrypted it (`Wechatpay-Serial`).
    fn wire_user_name(
        &self,
        user_name: Option<&UserName>,
    ) -> Result<(Option<String>, Option<String>), Error> {
        Ok(match user_name {
            Some(UserName::Plain(name)) => {
                let (serial, cipher) = self.encrypt_sensitive(name)?;
                (Some(serial), Some(cipher))
            }
            Some(UserName::Encrypted { serial, ciphertext }) => {
                (Some(serial.clone()), Some(ciphertext.clone()))
            }
            None => (None, None),
        })
    }

    /// `POST .../transfer-bills/pre-transfer-with-authorization`: a bill the user confirms with
    /// `wx.requestMerchantTransfer` and its `package_info`, which at the same time authorizes
    /// later transfers without confirmation under `authorization_info.out_authorization_no`
    /// ([`V3Client::create_authorized_transfer`] once it is `TAKING_EFFECT`). The name is
    /// encrypted and `Wechatpay-Serial` sent as in [`V3Client::create_transfer_bill`]; retried
    /// with the same number on a lost answer or a system error (use [`UserName::Encrypted`] to
    /// resend the same ciphertext across calls).
    ///
    /// # Errors
    /// Invalid input (checked before sending), encryption, transport, API (e.g. `NOT_ENOUGH`,
    /// `INVALID_REQUEST` for an authorization number already used or an authorization already in
    /// force for this user and scene), signature or decode errors.
    pub async fn pre_transfer_with_authorization(
        &self,
        request: &PreTransferWithAuthorizationRequest,
    ) -> Result<PreTransferWithAuthorizationCreated, Error> {
        request.validate()?;
        let (serial, user_name) = self.wire_user_name(request.user_name.as_ref())?;
        let body = request.body(&self.config().appid, user_name.as_deref())?;
        self.call_json_with_serial(
            Method::POST,
            &format!("{BILLS}/pre-transfer-with-authorization"),
            Some(body),
            Idempotency::Idempotent,
            serial.as_deref(),
        )
        .await
    }

    /// `GET .../transfer-bills/out-bill-no/{out_bill_no}` (bills of the last 30 days).
    ///
    /// # Errors
    /// Transport, API (`NOT_FOUND` for an unknown bill), signature or decode errors.
    pub async fn query_transfer_by_out_bill_no(
        &self,
        out_bill_no: &OutBillNo,
    ) -> Result<TransferBill, Error> {
        let path = format!("{BILLS}/out-bill-no/{}", path_escape(out_bill_no));
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `GET .../transfer-bills/transfer-bill-no/{transfer_bill_no}`.
    ///
    /// # Errors
    /// As [`V3Client::query_transfer_by_out_bill_no`].
    pub async fn query_transfer_by_transfer_bill_no(
        &self,
        transfer_bill_no: &str,
    ) -> Result<TransferBill, Error> {
        if transfer_bill_no.is_empty()
            || transfer_bill_no.len() > 64
            || !transfer_bill_no.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Error::InvalidRequest(
                "transfer_bill_no must be 1 to 64 letters or digits".into(),
            ));
        }
        let path = format!("{BILLS}/transfer-bill-no/{transfer_bill_no}");
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `POST .../transfer-bills/out-bill-no/{out_bill_no}/cancel`: accepted only; the final
    /// `CANCELLED` comes by notification or query.
    ///
    /// # Errors
    /// Transport, API (e.g. the bill is final or confirmed), signature or decode errors.
    pub async fn cancel_transfer(
        &self,
        out_bill_no: &OutBillNo,
    ) -> Result<TransferCancelled, Error> {
        let path = format!("{BILLS}/out-bill-no/{}/cancel", path_escape(out_bill_no));
        self.call_json(Method::POST, &path, None, Idempotency::Idempotent)
            .await
    }

    /// The `wx.requestMerchantTransfer` object for a bill waiting for its user.
    #[must_use]
    pub fn request_merchant_transfer(
        &self,
        package_info: &str,
        openid: Option<&str>,
    ) -> RequestMerchantTransfer {
        RequestMerchantTransfer {
            mch_id: self.config().mchid.clone(),
            app_id: self.config().appid.clone(),
            package: package_info.to_owned(),
            open_id: openid.map(str::to_owned),
        }
    }

    /// `POST /v3/fund-app/mch-transfer/user-confirm-authorization`: the user confirms with
    /// `wx.requestMerchantTransfer` and the answer's `package_info` within 24 hours.
    ///
    /// # Errors
    /// Invalid input, transport, API, signature or decode errors.
    pub async fn request_transfer_authorization(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<AuthorizationCreated, Error> {
        validate_notify_url(&request.authorization_notify_url)?;
        check_display_name(&request.user_display_name)?;
        #[derive(Serialize)]
        struct Wire<'a> {
            appid: &'a str,
            #[serde(flatten)]
            request: &'a AuthorizationRequest,
        }
        let body = serde_json::to_vec(&Wire {
            appid: &self.config().appid,
            request,
        })
        .map_err(|e| DecodeError::json(&e))?;
        self.call_json(
            Method::POST,
            AUTHORIZATIONS,
            Some(body),
            Idempotency::Idempotent,
        )
        .await
    }

    /// `GET .../user-confirm-authorization/out-authorization-no/{no}`.
    ///
    /// # Errors
    /// Transport, API, signature or decode errors.
    pub async fn query_transfer_authorization(
        &self,
        out_authorization_no: &OutBillNo,
    ) -> Result<Authorization, Error> {
        let path = format!(
            "{AUTHORIZATIONS}/out-authorization-no/{}",
            path_escape(out_authorization_no)
        );
        self.call_json(Method::GET, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `POST .../user-confirm-authorization/out-authorization-no/{no}/close`: revokes it.
    ///
    /// # Errors
    /// Transport, API, signature or decode errors.
    pub async fn close_transfer_authorization(
        &self,
        out_authorization_no: &OutBillNo,
    ) -> Result<Authorization, Error> {
        let path = format!(
            "{AUTHORIZATIONS}/out-authorization-no/{}/close",
            path_escape(out_authorization_no)
        );
        self.call_json(Method::POST, &path, None, Idempotency::Idempotent)
            .await
    }

    /// `POST .../transfer-bills/transfer`: a transfer under an authorization in force.
    ///
    /// # Errors
    /// Invalid input, transport, API, signature or decode errors.
    pub async fn create_authorized_transfer(
        &self,
        request: &AuthorizedTransferRequest,
    ) -> Result<AuthorizedTransfer, Error> {
        check_transfer_fields(
            &request.transfer_scene_id,
            request.transfer_amount,
            &request.transfer_remark,
            request.notify_url.as_deref(),
            &request.transfer_scene_report_infos,
        )?;
        #[derive(Serialize)]
        struct Wire<'a> {
            appid: &'a str,
            out_bill_no: &'a str,
            out_authorization_no: &'a str,
            transfer_scene_id: &'a str,
            transfer_amount: u64,
            transfer_remark: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            notify_url: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_recv_perception: Option<&'a str>,
            transfer_scene_report_infos: &'a [TransferSceneReportInfo],
        }
        let body = serde_json::to_vec(&Wire {
            appid: &self.config().appid,
            out_bill_no: request.out_bill_no.as_str(),
            out_authorization_no: request.out_authorization_no.as_str(),
            transfer_scene_id: &request.transfer_scene_id,
            transfer_amount: request.transfer_amount,
            transfer_remark: &request.transfer_remark,
            notify_url: request.notify_url.as_deref(),
            user_recv_perception: request.user_recv_perception.as_deref(),
            transfer_scene_report_infos: &request.transfer_scene_report_infos,
        })
        .map_err(|e| DecodeError::json(&e))?;
        self.call_json(
            Method::POST,
            &format!("{BILLS}/transfer"),
            Some(body),
            Idempotency::Idempotent,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(amount: u64) -> TransferBillRequest {
        TransferBillRequest {
            out_bill_no: OutBillNo::parse("PAYOUT1").unwrap(),
            transfer_scene_id: "1000".into(),
            openid: OpenId::parse("o-user").unwrap(),
            user_name: None,
            transfer_amount: amount,
            transfer_remark: "新会员开通有礼".into(),
            notify_url: Some("https://shop.example.com/notify/transfer".into()),
            user_recv_perception: Some("现金奖励".into()),
            transfer_scene_report_infos: vec![
                TransferSceneReportInfo::new("活动名称", "新会员有礼"),
                TransferSceneReportInfo::new("奖励说明", "注册会员抽奖一等奖"),
            ],
        }
    }

    #[test]
    fn a_transfer_request_is_checked_before_it_is_sent() {
        request(10).validate().unwrap();
        assert!(request(9).validate().is_err());
        let mut long = request(100);
        long.transfer_remark = "备".repeat(33);
        assert!(long.validate().is_err());
        let mut no_infos = request(100);
        no_infos.transfer_scene_report_infos.clear();
        assert!(no_infos.validate().is_err());
        let mut query = request(100);
        query.notify_url = Some("https://shop.example.com/n?x=1".into());
        assert!(query.validate().is_err());
    }

    #[test]
    fn the_name_is_required_from_two_thousand_yuan() {
        assert!(request(USER_NAME_REQUIRED_FROM_FEN - 1).validate().is_ok());
        let err = request(USER_NAME_REQUIRED_FROM_FEN).validate().unwrap_err();
        assert!(err.to_string().contains("user_name"));
        let mut named = request(USER_NAME_REQUIRED_FROM_FEN);
        named.user_name = Some(UserName::Plain("张三".into()));
        named.validate().unwrap();
    }

    #[test]
    fn out_bill_numbers_are_letters_and_digits() {
        assert!(OutBillNo::parse("abcXYZ0123456789").is_ok());
        assert!(OutBillNo::parse("A-1").is_err());
        assert!(OutBillNo::parse("").is_err());
        assert!(OutBillNo::parse("A".repeat(33)).is_err());
    }

    #[test]
    fn states_and_reasons_read_unknown_values() {
        let bill: TransferBillResource = serde_json::from_str(
            r#"{"out_bill_no":"P1","transfer_bill_no":"1330000114850082502050044930362032",
                "state":"FAIL","mch_id":"1900001109","transfer_amount":2000,"openid":"o1",
                "fail_reason":"SOMETHING_NEW","create_time":"2025-01-01T12:00:00+08:00",
                "update_time":"2025-01-02T12:00:00+08:00"}"#,
        )
        .unwrap();
        assert_eq!(bill.state, TransferState::Fail);
        assert!(bill.state.is_final());
        assert_eq!(
            bill.fail_reason,
            Some(TransferFailReason::Unknown("SOMETHING_NEW".into()))
        );
        assert_eq!(
            TransferState::from_wire("WAIT_USER_CONFIRM"),
            TransferState::WaitUserConfirm
        );
        assert!(TransferState::WaitUserConfirm.is_cancellable());
        assert!(!TransferState::Transfering.is_cancellable());
        assert!(!TransferState::Transfering.is_final());
    }

    fn pre_transfer(amount: u64) -> PreTransferWithAuthorizationRequest {
        let bill = request(amount);
        PreTransferWithAuthorizationRequest {
            out_bill_no: bill.out_bill_no,
            transfer_scene_id: bill.transfer_scene_id,
            openid: bill.openid,
            user_name: bill.user_name,
            transfer_amount: bill.transfer_amount,
            transfer_remark: bill.transfer_remark,
            notify_url: bill.notify_url,
            user_recv_perception: bill.user_recv_perception,
            transfer_scene_report_infos: bill.transfer_scene_report_infos,
            authorization_info: AuthorizationInfo {
                user_display_name: "好物商城".into(),
                out_authorization_no: OutBillNo::parse("AUTH1").unwrap(),
                authorization_notify_url: "https://shop.example.com/notify/authorization".into(),
            },
            sponsor_mchid: None,
        }
    }

    #[test]
    fn a_pre_transfer_is_checked_like_a_bill_and_its_authorization() {
        pre_transfer(10).validate().unwrap();
        // The bill's rules.
        assert!(pre_transfer(9).validate().is_err());
        let mut long = pre_transfer(100);
        long.transfer_remark = "备".repeat(33);
        assert!(long.validate().is_err());
        let mut no_infos = pre_transfer(100);
        no_infos.transfer_scene_report_infos.clear();
        assert!(no_infos.validate().is_err());
        let mut query = pre_transfer(100);
        query.notify_url = Some("https://shop.example.com/n?x=1".into());
        assert!(query.validate().is_err());
        let err = pre_transfer(USER_NAME_REQUIRED_FROM_FEN)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("user_name"), "{err}");
        let mut named = pre_transfer(USER_NAME_REQUIRED_FROM_FEN);
        named.user_name = Some(UserName::Plain("张三".into()));
        named.validate().unwrap();
        // The authorization's: 1 to 32 characters of display name.
        let mut display = pre_transfer(100);
        display.authorization_info.user_display_name = "商".repeat(32);
        display.validate().unwrap();
        display.authorization_info.user_display_name = "商".repeat(33);
        let err = display.validate().unwrap_err();
        assert!(err.to_string().contains("user_display_name"), "{err}");
        display.authorization_info.user_display_name = String::new();
        assert!(display.validate().is_err());
        // Its notify URL as any other.
        for bad in [
            "https://shop.example.com/n?x=1",
            "/notify/authorization",
            "ftp://shop.example.com/n",
        ] {
            let mut url = pre_transfer(100);
            url.authorization_info.authorization_notify_url = bad.into();
            let err = url.validate().unwrap_err();
            assert!(
                err.to_string().contains("authorization_notify_url"),
                "{bad}: {err}"
            );
        }
        // The sponsor is a merchant id.
        let mut sponsor = pre_transfer(100);
        sponsor.sponsor_mchid = Some("1900001109".into());
        sponsor.validate().unwrap();
        for bad in ["", "19000x1109", &"1".repeat(33)] {
            sponsor.sponsor_mchid = Some(bad.into());
            assert!(sponsor.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pre_transfer_body_has_the_protocol_names() {
        let mut pre = pre_transfer(300);
        let body = pre.body("wxapp", None).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({
                "appid": "wxapp",
                "out_bill_no": "PAYOUT1",
                "transfer_scene_id": "1000",
                "openid": "o-user",
                "transfer_amount": 300,
                "transfer_remark": "新会员开通有礼",
                "notify_url": "https://shop.example.com/notify/transfer",
                "user_recv_perception": "现金奖励",
                "transfer_scene_report_infos": [
                    {"info_type": "活动名称", "info_content": "新会员有礼"},
                    {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"},
                ],
                "authorization_info": {
                    "user_display_name": "好物商城",
                    "out_authorization_no": "AUTH1",
                    "authorization_notify_url": "https://shop.example.com/notify/authorization",
                },
            })
        );
        pre.notify_url = None;
        pre.user_recv_perception = None;
        pre.sponsor_mchid = Some("1900001109".into());
        let v: serde_json::Value =
            serde_json::from_slice(&pre.body("wxapp", Some("CIPHER")).unwrap()).unwrap();
        assert_eq!(v["user_name"], "CIPHER");
        assert_eq!(v["sponsor_mchid"], "1900001109");
        assert!(v.get("notify_url").is_none() && v.get("user_recv_perception").is_none());
        // The plain create has the same bill fields, without the authorization's.
        let plain: serde_json::Value =
            serde_json::from_slice(&request(300).body("wxapp", None).unwrap()).unwrap();
        let mut expected: serde_json::Value =
            serde_json::from_slice(&pre_transfer(300).body("wxapp", None).unwrap()).unwrap();
        expected
            .as_object_mut()
            .unwrap()
            .remove("authorization_info");
        assert_eq!(plain, expected);
    }

    #[test]
    fn a_pre_transfer_answer_reads_the_authorization_fields() {
        let answer: PreTransferWithAuthorizationCreated = serde_json::from_str(
            r#"{"out_bill_no":"PAYOUT1","transfer_bill_no":"1330000114850082502050044930362032",
                "create_time":"2025-05-20T13:29:35.120+08:00","state":"WAIT_USER_CONFIRM",
                "package_info":"ABBQ==","user_display_name":"好物商城",
                "out_authorization_no":"AUTH1"}"#,
        )
        .unwrap();
        assert_eq!(answer.state, TransferState::WaitUserConfirm);
        assert_eq!(answer.package_info.as_deref(), Some("ABBQ=="));
        assert_eq!(answer.user_display_name.as_deref(), Some("好物商城"));
        assert_eq!(answer.out_authorization_no.as_deref(), Some("AUTH1"));
        // The official table marks only the bill fields as always present.
        let bare: PreTransferWithAuthorizationCreated = serde_json::from_str(
            r#"{"out_bill_no":"P","transfer_bill_no":"1","create_time":"2025-05-20T13:29:35+08:00",
                "state":"ACCEPTED"}"#,
        )
        .unwrap();
        assert_eq!(bare.state, TransferState::Accepted);
        assert!(bare.out_authorization_no.is_none() && bare.package_info.is_none());
    }

    #[test]
    fn the_confirm_object_uses_the_mini_program_names() {
        let object = RequestMerchantTransfer {
            mch_id: "1900001109".into(),
            app_id: "wxapp".into(),
            package: "ABBQ".into(),
            open_id: Some("o1".into()),
        };
        assert_eq!(
            serde_json::to_value(&object).unwrap(),
            serde_json::json!({"mchId":"1900001109","appId":"wxapp","package":"ABBQ","openId":"o1"})
        );
    }
}
