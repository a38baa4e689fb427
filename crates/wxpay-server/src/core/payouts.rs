//! Payouts: merchant transfers (商家转账) to a mini-program user's WeChat balance.
//!
//! A transfer is created here first (its amount reserved in the merchant's day budget and the
//! user's day cap, its operator and reason on its timeline), then sent to WeChat with its own
//! `out_bill_no`, which WeChat treats as the same bill however often it arrives: a lost answer,
//! `ACCEPTED` or a system error is sent again unchanged (the name was encrypted once, at
//! creation). The user confirms it in the mini program (`wx.requestMerchantTransfer` with the
//! bill's `package_info`); the final state comes by notification, or by the job's query; a bill
//! its user leaves unconfirmed past the confirmation window is cancelled.

use std::sync::Arc;

use serde_json::json;
use wxpay::v3::transfers::{
    RequestMerchantTransfer, TransferBill, TransferBillCreated, TransferBillRequest,
    TransferSceneReportInfo, TransferState, UserName,
};
use wxpay::{OpenId, OutBillNo};

use crate::config::Settings;
use crate::registry::{Registry, RouteError};
use crate::store::{
    NewTransfer, ReportInfo, Store, StoreError, Transfer, TransferApplied, TransferCreation,
    TransferLimits, TransferReport, now_ms,
};
use crate::wechat::{WeChat, is_definitive_refusal};

/// How long a transfer created by a person is left to that request's own sending.
pub const SEND_LEASE_MS: i64 = 60_000;
/// The first retry delay of a failed send or check; doubled per attempt up to an hour.
pub const RETRY_MS: i64 = 30_000;
/// A transfer waiting for its user is asked about at WeChat once per this (notifications are
/// the normal path; this heals lost ones).
pub const CHECK_WAITING_MS: i64 = 10 * 60_000;
/// From this amount WeChat may be given the payee's name (below it, it is refused).
pub const NAME_FROM_FEN: u64 = 30;

/// Why a transfer was not made or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayoutError {
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The user never logged in to that mini program here.
    #[error("{0} is not a user of mini program {1}")]
    UnknownUser(String, String),
    /// The mini program cannot pay out.
    #[error("{0}")]
    NotAvailable(String),
    /// Over the merchant's day budget.
    #[error("over the merchant's daily transfer budget: {left_fen} fen left today")]
    OverBudget {
        /// What is left today.
        left_fen: u64,
    },
    /// Over the user's day cap.
    #[error("over the user's daily cap: {left_fen} fen left today for this user")]
    OverUserCap {
        /// What the user may still receive today.
        left_fen: u64,
    },
    /// The number belongs to another transfer.
    #[error("this out_bill_no belongs to another transfer")]
    NumberTaken,
    /// No such transfer (or not the caller's).
    #[error("no such transfer")]
    NotFound,
    /// The transfer is not in a state that allows this.
    #[error("transfer {out_bill_no} is {state}: {what}")]
    WrongState {
        /// The transfer.
        out_bill_no: String,
        /// Its state.
        state: String,
        /// What was refused.
        what: &'static str,
    },
    /// WeChat refused or could not be asked.
    #[error("WeChat: {0}")]
    WeChat(#[from] wxpay::Error),
    /// No merchant here handles it.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A transfer to make (`POST /admin/transfers`).
#[derive(Clone, Debug)]
pub struct PayoutRequest {
    /// The mini program; the only one when absent.
    pub appid: Option<String>,
    /// The payee: a user of that mini program.
    pub openid: String,
    /// In fen, at least 10.
    pub amount_fen: u64,
    /// WeChat's transfer scene.
    pub scene_id: String,
    /// The scene's report infos.
    pub report_infos: Vec<ReportInfo>,
    /// What the user is told the money is.
    pub perception: Option<String>,
    /// Shown to the user, 1–32 characters.
    pub remark: String,
    /// Why (kept for the audit), 1–200 characters.
    pub reason: String,
    /// The payee's real name (required from 2,000 yuan).
    pub user_name: Option<String>,
    /// The merchant's own number; one is made up otherwise.
    pub out_bill_no: Option<String>,
}

/// What creating a transfer came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutCreated {
    /// New, and sent (its state tells how far WeChat took it).
    New(Transfer),
    /// A repeat of a request already made.
    Existing(Transfer),
}

/// A new transfer number: `TB`, the time and 12 random letters and digits.
#[must_use]
pub fn new_out_bill_no() -> String {
    super::new_merchant_number("TB")
}

/// Today's date in GMT+8 (`YYYY-MM-DD`): the day a transfer counts against.
#[must_use]
pub fn today() -> String {
    let date = wxpay::time::beijing_date(time::OffsetDateTime::now_utc());
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// A merchant's limits: its own, else the configured defaults.
///
/// # Errors
/// The database.
pub async fn limits(
    store: &Store,
    settings: &Settings,
    mchid: &str,
) -> Result<TransferLimits, StoreError> {
    Ok(match store.transfer_limits(mchid).await? {
        Some((daily_budget_fen, user_daily_cap_fen)) => TransferLimits {
            daily_budget_fen,
            user_daily_cap_fen,
            own: true,
        },
        None => TransferLimits {
            daily_budget_fen: settings.transfer_daily_budget_fen,
            user_daily_cap_fen: settings.transfer_user_daily_cap_fen,
            own: false,
        },
    })
}

fn check_text(field: &str, value: &str, max: usize) -> Result<String, PayoutError> {
    let value = value.trim();
    let n = value.chars().count();
    if n == 0 || n > max || value.chars().any(char::is_control) {
        return Err(PayoutError::Invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(value.to_owned())
}

/// The scene rules WeChat documents (its report infos, what the user may be told); other
/// scenes are sent as given and WeChat judges them.
fn check_scene(
    scene: &str,
    infos: &[ReportInfo],
    perception: Option<&str>,
) -> Result<(), PayoutError> {
    let (needed, perceptions): (&[&str], &[&str]) = match scene {
        "1000" => (&["活动名称", "奖励说明"], &["现金奖励", "活动奖励"]),
        "1005" => (&["岗位类型", "报酬说明"], &[]),
        "1011" => (&["赔付原因"], &["退款", "商家赔付"]),
        _ => {
            if infos.is_empty() {
                return Err(PayoutError::Invalid(format!(
                    "scene {scene} needs its report_infos"
                )));
            }
            return Ok(());
        }
    };
    let mut given: Vec<&str> = infos.iter().map(|i| i.info_type.as_str()).collect();
    given.sort_unstable();
    let mut want = needed.to_vec();
    want.sort_unstable();
    if given != want {
        return Err(PayoutError::Invalid(format!(
            "scene {scene} needs exactly these report_infos: {}",
            needed.join(", ")
        )));
    }
    if let Some(p) = perception
        && !perceptions.is_empty()
        && !perceptions.contains(&p)
    {
        return Err(PayoutError::Invalid(format!(
            "scene {scene} allows the perception {}",
            perceptions.join(" or ")
        )));
    }
    Ok(())
}

/// Checks a request, records it (with its reservations), and sends it.
///
/// `operator` is who asks (`admin` or `operator:ID`); `merchant` confines an operator to its
/// merchant's mini programs.
///
/// # Errors
/// [`PayoutError`]; WeChat's failures after the transfer is recorded are on the transfer (its
/// state and `last_error`), not errors.
pub async fn create(
    store: &Store,
    registry: &Registry,
    settings: &Settings,
    request: PayoutRequest,
    operator: &str,
    merchant: Option<&str>,
) -> Result<PayoutCreated, PayoutError> {
    let wechat = registry.app_or_only(request.appid.as_deref())?;
    if merchant.is_some_and(|m| m != wechat.mchid) {
        return Err(RouteError::UnknownApp(wechat.appid.clone()).into());
    }
    if wechat.partner.is_some() || wechat.sp_appid.is_some() {
        return Err(PayoutError::NotAvailable(format!(
            "mini program {} pays through a service provider: WeChat's partner transfers are not generally available, so it cannot pay out here",
            wechat.appid
        )));
    }
    let appid = wechat.appid.clone();
    OpenId::try_from(request.openid.as_str())
        .map_err(|_| PayoutError::Invalid("openid is not valid".into()))?;
    if !store.is_user_of(&appid, &request.openid).await? {
        return Err(PayoutError::UnknownUser(request.openid, appid));
    }
    if request.amount_fen < wxpay::v3::transfers::MIN_TRANSFER_FEN
        || request.amount_fen > super::orders::MAX_ORDER_FEN
    {
        return Err(PayoutError::Invalid(format!(
            "amount_fen must be at least {} (0.1 yuan)",
            wxpay::v3::transfers::MIN_TRANSFER_FEN
        )));
    }
    let scene_id = request.scene_id.trim().to_owned();
    if scene_id.is_empty() || scene_id.len() > 36 || !scene_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PayoutError::Invalid(
            "scene must be WeChat's transfer scene id, e.g. 1000".into(),
        ));
    }
    let remark = check_text("remark", &request.remark, 32)?;
    let reason = check_text("reason", &request.reason, 200)?;
    let perception = request
        .perception
        .as_deref()
        .map(|p| check_text("perception", p, 32))
        .transpose()?;
    let mut infos = Vec::with_capacity(request.report_infos.len());
    for info in &request.report_infos {
        infos.push(ReportInfo {
            info_type: check_text("report_infos.info_type", &info.info_type, 15)?,
            info_content: check_text("report_infos.info_content", &info.info_content, 32)?,
        });
    }
    check_scene(&scene_id, &infos, perception.as_deref())?;
    let out_bill_no = match request
        .out_bill_no
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(n) => {
            OutBillNo::try_from(n).map_err(|_| {
                PayoutError::Invalid("out_bill_no must be 1 to 32 letters or digits".into())
            })?;
            n.to_owned()
        }
        None => new_out_bill_no(),
    };
    let user_name = match request.user_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => {
            if request.amount_fen < NAME_FROM_FEN {
                return Err(PayoutError::Invalid(format!(
                    "a name can only be given from {NAME_FROM_FEN} fen"
                )));
            }
            if name.chars().count() > 64 || name.chars().any(char::is_control) {
                return Err(PayoutError::Invalid(
                    "user_name must be at most 64 characters".into(),
                ));
            }
            // Encrypted now, for WeChat only: the same ciphertext goes with every retry, and
            // the name itself is not kept.
            let (serial, cipher) = wechat.v3.encrypt_sensitive(name)?;
            Some((cipher, serial))
        }
        _ => None,
    };
    if request.amount_fen >= wxpay::v3::transfers::USER_NAME_REQUIRED_FROM_FEN
        && user_name.is_none()
    {
        return Err(PayoutError::Invalid(
            "user_name is required from 200000 fen (2,000 yuan)".into(),
        ));
    }
    let limits = limits(store, settings, &wechat.mchid).await?;
    let now = now_ms();
    let creation = store
        .create_transfer(&NewTransfer {
            out_bill_no,
            mchid: wechat.mchid.clone(),
            appid,
            openid: request.openid,
            amount_fen: request.amount_fen,
            scene_id,
            report_infos: infos,
            perception,
            remark,
            reason,
            notify_url: transfer_notify_url(&wechat),
            user_name,
            operator: operator.to_owned(),
            day: today(),
            daily_budget_fen: limits.daily_budget_fen,
            user_daily_cap_fen: limits.user_daily_cap_fen,
            lease_owner: format!("{operator}-{}", wxpay::nonce::random_string(12)),
            lease_ms: SEND_LEASE_MS,
            next_check_at: now + SEND_LEASE_MS,
        })
        .await?;
    let transfer = match creation {
        TransferCreation::Created(t) => t,
        TransferCreation::Existing(t) => return Ok(PayoutCreated::Existing(t)),
        TransferCreation::NumberTaken(_) => return Err(PayoutError::NumberTaken),
        TransferCreation::OverBudget { left_fen } => {
            crate::metrics::transfer_refused("budget");
            return Err(PayoutError::OverBudget { left_fen });
        }
        TransferCreation::OverUserCap { left_fen } => {
            crate::metrics::transfer_refused("user_cap");
            return Err(PayoutError::OverUserCap { left_fen });
        }
    };
    tracing::info!(out_bill_no = %transfer.out_bill_no, mchid = %transfer.mchid, amount_fen = transfer.amount_fen, operator, "transfer created");
    Ok(PayoutCreated::New(
        submit(store, registry, &transfer, "answer").await?,
    ))
}

/// The clients a transfer is handled with: its merchant's, bound to its mini program.
///
/// # Errors
/// [`RouteError::UnknownMerchant`].
pub fn clients_of(registry: &Registry, transfer: &Transfer) -> Result<Arc<WeChat>, RouteError> {
    let merchant = registry.merchant(&transfer.mchid)?;
    if merchant.appid == transfer.appid {
        return Ok(merchant);
    }
    let mut bound = (*merchant).clone();
    bound.v3 = merchant.v3.for_app(&transfer.appid);
    bound.appid.clone_from(&transfer.appid);
    Ok(Arc::new(bound))
}

fn backoff(attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 7)).unwrap_or(7);
    (RETRY_MS << shift).min(3_600_000)
}

/// The create request of a recorded transfer: the same every time it is sent (its notify URL
/// and encrypted name were fixed at creation).
///
/// # Errors
/// [`PayoutError::Invalid`] for a stored number or openid WeChat would refuse.
pub fn wire_request(t: &Transfer) -> Result<TransferBillRequest, PayoutError> {
    Ok(TransferBillRequest {
        out_bill_no: OutBillNo::try_from(t.out_bill_no.as_str())
            .map_err(|e| PayoutError::Invalid(e.to_string()))?,
        transfer_scene_id: t.scene_id.clone(),
        openid: OpenId::try_from(t.openid.as_str())
            .map_err(|e| PayoutError::Invalid(e.to_string()))?,
        user_name: t
            .user_name
            .as_ref()
            .map(|(cipher, serial)| UserName::Encrypted {
                serial: serial.clone(),
                ciphertext: cipher.clone(),
            }),
        transfer_amount: t.amount_fen,
        transfer_remark: t.remark.clone(),
        notify_url: Some(t.notify_url.clone()),
        user_recv_perception: t.perception.clone(),
        transfer_scene_report_infos: t
            .report_infos
            .iter()
            .map(|i| TransferSceneReportInfo::new(&i.info_type, &i.info_content))
            .collect(),
    })
}

/// Where WeChat sends a merchant's transfer notifications.
#[must_use]
pub fn transfer_notify_url(wechat: &WeChat) -> String {
    format!("{}/notify/{}/v3/transfer", wechat.notify_base, wechat.mchid)
}

/// When the job should look at a transfer in `state` next; `expiry`: when a transfer waiting
/// for its user is to be cancelled here.
fn next_check(expiry: Option<i64>, state: &TransferState) -> i64 {
    let now = now_ms();
    match state {
        TransferState::WaitUserConfirm => {
            (now + CHECK_WAITING_MS).min(expiry.unwrap_or(i64::MAX).max(now))
        }
        // Waiting for the merchant to top up its operating account: a person's time.
        TransferState::Processing => now + CHECK_WAITING_MS,
        _ => now + RETRY_MS,
    }
}

fn report_of_created(created: &TransferBillCreated) -> TransferReport {
    TransferReport {
        state: created.state.clone(),
        transfer_bill_no: Some(created.transfer_bill_no.clone()),
        package_info: created.package_info.clone(),
        fail_reason: created.fail_reason.as_ref().map(|r| r.as_str().to_owned()),
        via: "answer".into(),
    }
}

/// The report of a query's answer.
#[must_use]
pub fn report_of_bill(bill: &TransferBill, via: &str) -> TransferReport {
    TransferReport {
        state: bill.state.clone(),
        transfer_bill_no: Some(bill.transfer_bill_no.clone()),
        package_info: None,
        fail_reason: bill.fail_reason.as_ref().map(|r| r.as_str().to_owned()),
        via: via.into(),
    }
}

/// Sends a recorded transfer (again, unchanged) and records WeChat's answer: its state (with
/// the confirm package), to be retried, or refused for good (`FAIL`, reservations released).
///
/// # Errors
/// [`PayoutError::Store`]; WeChat's failures are recorded on the transfer.
pub async fn submit(
    store: &Store,
    registry: &Registry,
    transfer: &Transfer,
    via: &str,
) -> Result<Transfer, PayoutError> {
    let wechat = match clients_of(registry, transfer) {
        Ok(w) => w,
        Err(err) => {
            tracing::error!(out_bill_no = %transfer.out_bill_no, error = %err, "the transfer cannot be sent");
            return retry_later(store, transfer, &err.to_string()).await;
        }
    };
    let request = wire_request(transfer)?;
    match wechat.v3.create_transfer_bill(&request).await {
        Ok(created) => {
            let mut report = report_of_created(&created);
            report.via = via.to_owned();
            let next = next_check(None, &created.state);
            let after = apply(store, transfer, &report, next).await?;
            if after.status == TransferState::Cancelled && created.state.is_cancellable() {
                // Cancelled here while this send was on its way (WeChat did not have it then):
                // the bill it made is cancelled too, so that no one can confirm it.
                tracing::warn!(out_bill_no = %after.out_bill_no, "a transfer cancelled here reached WeChat: cancelling it there");
                if let Err(err) = wechat.v3.cancel_transfer(&request.out_bill_no).await {
                    tracing::error!(out_bill_no = %after.out_bill_no, error = %err, "cancelling the late bill at WeChat failed; WeChat closes it after a day");
                }
                store
                    .add_transfer_event(
                        &after.out_bill_no,
                        "late_bill_cancelled",
                        &json!({ "transfer_bill_no": created.transfer_bill_no }),
                    )
                    .await?;
            }
            Ok(after)
        }
        Err(err) if is_definitive_refusal(&err) && transfer.attempts > 0 => {
            // A resend refused: an earlier send may have made the bill (WeChat refuses a number
            // it has with other parameters). Ask before ending anything.
            tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %err, "WeChat refused a resent transfer; asking whether it has it");
            match wechat
                .v3
                .query_transfer_by_out_bill_no(&request.out_bill_no)
                .await
            {
                Ok(bill) => {
                    let next = next_check(None, &bill.state);
                    let after =
                        apply(store, transfer, &report_of_bill(&bill, "query"), next).await?;
                    if after.status == TransferState::WaitUserConfirm
                        && after.package_info.is_none()
                    {
                        // WeChat has it but will not give its package again: the user could
                        // never confirm it, so it is cancelled rather than left for a day.
                        return cancel(store, registry, &after, "unconfirmable").await;
                    }
                    Ok(after)
                }
                Err(wxpay::Error::Api(wxpay::error::ApiError::V3 { status: 404, .. })) => {
                    refuse(store, transfer, &err).await
                }
                Err(query_err) => retry_later(store, transfer, &query_err.to_string()).await,
            }
        }
        Err(err) if is_definitive_refusal(&err) => refuse(store, transfer, &err).await,
        Err(err) => {
            tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %err, "sending the transfer failed; it will be sent again unchanged");
            retry_later(store, transfer, &err.to_string()).await
        }
    }
}

/// WeChat did not make the bill and would refuse it again: it ends here (`FAIL` with WeChat's
/// code), its amount given back to the budget and the cap.
async fn refuse(
    store: &Store,
    transfer: &Transfer,
    err: &wxpay::Error,
) -> Result<Transfer, PayoutError> {
    tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %err, "WeChat refused the transfer");
    store
        .add_transfer_event(
            &transfer.out_bill_no,
            "refused",
            &json!({ "error": err.to_string() }),
        )
        .await?;
    apply(
        store,
        transfer,
        &TransferReport {
            state: TransferState::Fail,
            transfer_bill_no: None,
            package_info: None,
            fail_reason: Some(refusal_code(err)),
            via: "refused".into(),
        },
        now_ms(),
    )
    .await
}

fn refusal_code(err: &wxpay::Error) -> String {
    match err {
        wxpay::Error::Api(wxpay::error::ApiError::V3 { code, .. }) => code.as_str().to_owned(),
        _ => "INVALID_REQUEST".to_owned(),
    }
}

/// Records a failed send or check (counted, the error kept) and when to look again (backoff);
/// the transfer as stored after it.
async fn retry_later(
    store: &Store,
    transfer: &Transfer,
    error: &str,
) -> Result<Transfer, PayoutError> {
    store
        .transfer_attempt_failed(
            &transfer.out_bill_no,
            error,
            now_ms() + backoff(transfer.attempts),
        )
        .await?;
    reread(store, transfer).await
}

async fn reread(store: &Store, transfer: &Transfer) -> Result<Transfer, PayoutError> {
    Ok(store
        .transfer(&transfer.out_bill_no)
        .await?
        .unwrap_or_else(|| transfer.clone()))
}

async fn apply(
    store: &Store,
    transfer: &Transfer,
    report: &TransferReport,
    next_check_at: i64,
) -> Result<Transfer, PayoutError> {
    match store
        .apply_transfer_report(&transfer.out_bill_no, report, next_check_at)
        .await?
    {
        TransferApplied::Applied(t) => {
            if t.status.is_final() {
                crate::metrics::transfer_finished(t.status.as_str());
            }
            Ok(t)
        }
        TransferApplied::Unchanged(t) => {
            if !t.status.is_final() {
                store
                    .transfer_checked(&t.out_bill_no, next_check_at)
                    .await?;
            }
            Ok(t)
        }
        TransferApplied::NotFound => Err(PayoutError::NotFound),
    }
}

/// Applies a verified `MCHTRANSFER.BILL.FINISHED` of merchant `mchid`, checked against the
/// transfer (its merchant, amount and payee).
///
/// # Errors
/// [`PayoutError::NotFound`] for a bill not (yet) known here (WeChat sends it again),
/// [`PayoutError::Invalid`] for a report that does not match the transfer (refused and logged).
pub async fn apply_notified(
    store: &Store,
    mchid: &str,
    bill: &wxpay::v3::transfers::TransferBillResource,
) -> Result<Transfer, PayoutError> {
    let Some(transfer) = store.transfer(&bill.out_bill_no).await? else {
        return Err(PayoutError::NotFound);
    };
    let mismatch = if transfer.mchid != mchid || bill.mch_id != mchid {
        Some("the notification is another merchant's".to_owned())
    } else if transfer.amount_fen != bill.transfer_amount {
        Some(format!(
            "WeChat reports {} fen, the transfer is {} fen",
            bill.transfer_amount, transfer.amount_fen
        ))
    } else if !bill.openid.is_empty() && bill.openid != transfer.openid {
        Some("the notification names another payee".to_owned())
    } else if transfer
        .transfer_bill_no
        .as_deref()
        .is_some_and(|n| n != bill.transfer_bill_no)
    {
        Some("the notification names another WeChat bill".to_owned())
    } else {
        None
    };
    if let Some(reason) = mismatch {
        tracing::error!(out_bill_no = %transfer.out_bill_no, %reason, "verified transfer notification does not match: refused");
        store
            .add_transfer_event(
                &transfer.out_bill_no,
                "notification_rejected",
                &json!({ "reason": reason }),
            )
            .await?;
        return Err(PayoutError::Invalid(reason));
    }
    let report = TransferReport {
        state: bill.state.clone(),
        transfer_bill_no: Some(bill.transfer_bill_no.clone()),
        package_info: None,
        fail_reason: bill.fail_reason.as_ref().map(|r| r.as_str().to_owned()),
        via: "notification".into(),
    };
    apply(store, &transfer, &report, now_ms() + RETRY_MS).await
}

/// Cancels a transfer its user has not confirmed: WeChat first, then the answer recorded
/// (`CANCELING`, and `CANCELLED` by notification or query). A transfer WeChat never had is
/// closed here.
///
/// # Errors
/// [`PayoutError::NotFound`], [`PayoutError::WrongState`], [`PayoutError::WeChat`].
pub async fn cancel(
    store: &Store,
    registry: &Registry,
    transfer: &Transfer,
    via: &str,
) -> Result<Transfer, PayoutError> {
    if !transfer.status.is_cancellable() {
        return Err(PayoutError::WrongState {
            out_bill_no: transfer.out_bill_no.clone(),
            state: transfer.status.as_str().to_owned(),
            what: "only a transfer not yet confirmed by its user can be cancelled",
        });
    }
    let wechat = clients_of(registry, transfer)?;
    let no = OutBillNo::try_from(transfer.out_bill_no.as_str())
        .map_err(|e| PayoutError::Invalid(e.to_string()))?;
    store
        .add_transfer_event(
            &transfer.out_bill_no,
            "cancel_requested",
            &json!({ "via": via }),
        )
        .await?;
    match wechat.v3.cancel_transfer(&no).await {
        Ok(answer) => {
            let report = TransferReport {
                state: answer.state,
                transfer_bill_no: Some(answer.transfer_bill_no),
                package_info: None,
                fail_reason: None,
                via: via.into(),
            };
            apply(store, transfer, &report, now_ms() + RETRY_MS).await
        }
        Err(wxpay::Error::Api(wxpay::error::ApiError::V3 { status: 404, .. }))
            if transfer.status == TransferState::Accepted =>
        {
            // WeChat never had it: nothing to cancel there; it ends here.
            apply(
                store,
                transfer,
                &TransferReport {
                    state: TransferState::Cancelled,
                    transfer_bill_no: None,
                    package_info: None,
                    fail_reason: None,
                    via: via.into(),
                },
                now_ms(),
            )
            .await
        }
        Err(err) => {
            // The bill may have moved on meanwhile (confirmed, expired): the answer says so.
            tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %err, "cancelling the transfer failed");
            if let Ok(bill) = wechat.v3.query_transfer_by_out_bill_no(&no).await {
                apply(
                    store,
                    transfer,
                    &report_of_bill(&bill, "query"),
                    now_ms() + RETRY_MS,
                )
                .await?;
            }
            Err(err.into())
        }
    }
}

/// The `wx.requestMerchantTransfer` object of one of the user's transfers that waits for them.
///
/// # Errors
/// [`PayoutError::NotFound`] (not the user's), [`PayoutError::WrongState`].
pub async fn confirm_object(
    store: &Store,
    registry: &Registry,
    appid: &str,
    openid: &str,
    out_bill_no: &str,
) -> Result<RequestMerchantTransfer, PayoutError> {
    let transfer = store
        .transfer(out_bill_no)
        .await?
        .filter(|t| t.appid == appid && t.openid == openid)
        .ok_or(PayoutError::NotFound)?;
    let (TransferState::WaitUserConfirm, Some(package)) =
        (&transfer.status, transfer.package_info.as_deref())
    else {
        return Err(PayoutError::WrongState {
            out_bill_no: transfer.out_bill_no.clone(),
            state: transfer.status.as_str().to_owned(),
            what: "only a transfer waiting for its user can be confirmed",
        });
    };
    let wechat = clients_of(registry, &transfer)?;
    Ok(wechat
        .v3
        .request_merchant_transfer(package, Some(&transfer.openid)))
}

/// A transfer WeChat has not taken after this long (an operating account left short, WeChat
/// down) is given up: asked about once more, and closed here when WeChat does not have it.
pub const GIVE_UP_MS: i64 = 24 * 3_600_000;

/// Ends a transfer WeChat never took: WeChat is asked first (the last send may have reached
/// it); when it has no such bill, the transfer is `FAIL` with `OVERDUE_CLOSE` (WeChat's own reason
/// for what it closes after its retry period) and its amount goes back.
async fn give_up(
    store: &Store,
    registry: &Registry,
    transfer: &Transfer,
) -> Result<Transfer, PayoutError> {
    let wechat = clients_of(registry, transfer)?;
    let no = OutBillNo::try_from(transfer.out_bill_no.as_str())
        .map_err(|e| PayoutError::Invalid(e.to_string()))?;
    match wechat.v3.query_transfer_by_out_bill_no(&no).await {
        Ok(bill) => {
            let next = next_check(None, &bill.state);
            apply(store, transfer, &report_of_bill(&bill, "query"), next).await
        }
        Err(wxpay::Error::Api(wxpay::error::ApiError::V3 { status: 404, .. })) => {
            tracing::warn!(out_bill_no = %transfer.out_bill_no, last_error = ?transfer.last_error, "WeChat never took the transfer in a day: given up");
            store
                .add_transfer_event(
                    &transfer.out_bill_no,
                    "given_up",
                    &json!({ "last_error": transfer.last_error }),
                )
                .await?;
            apply(
                store,
                transfer,
                &TransferReport {
                    state: TransferState::Fail,
                    transfer_bill_no: None,
                    package_info: None,
                    fail_reason: Some("OVERDUE_CLOSE".into()),
                    via: "given_up".into(),
                },
                now_ms(),
            )
            .await
        }
        Err(err) => retry_later(store, transfer, &err.to_string()).await,
    }
}

/// The job's look at one due transfer: send what WeChat has not answered, ask about the rest,
/// and cancel what waited for its user past the confirmation window.
///
/// # Errors
/// [`PayoutError::Store`]; WeChat's failures are recorded on the transfer.
pub async fn follow(
    store: &Store,
    registry: &Registry,
    confirm_ttl_ms: i64,
    transfer: &Transfer,
) -> Result<Transfer, PayoutError> {
    match transfer.status {
        TransferState::Accepted if now_ms() >= transfer.created_at.saturating_add(GIVE_UP_MS) => {
            return give_up(store, registry, transfer).await;
        }
        // Not answered yet (a lost answer, a crash, a short balance, WeChat's own `ACCEPTED`),
        // or its funds not locked yet (`PROCESSING`): the same bill again, whose answer carries
        // the confirm package once it waits for the user (a query does not).
        TransferState::Accepted | TransferState::Processing => {
            return submit(store, registry, transfer, "resent").await;
        }
        _ => {}
    }
    let wechat = match clients_of(registry, transfer) {
        Ok(w) => w,
        Err(err) => {
            return retry_later(store, transfer, &err.to_string()).await;
        }
    };
    let no = OutBillNo::try_from(transfer.out_bill_no.as_str())
        .map_err(|e| PayoutError::Invalid(e.to_string()))?;
    match wechat.v3.query_transfer_by_out_bill_no(&no).await {
        Ok(bill) => {
            // The window runs from when WeChat began waiting for the user (a bill may first wait
            // for the merchant's funds in PROCESSING), as WeChat's own does.
            let since = store
                .transfer_waiting_since(&transfer.out_bill_no)
                .await?
                .unwrap_or_else(now_ms);
            let expiry = since.saturating_add(confirm_ttl_ms);
            let next = next_check(Some(expiry), &bill.state);
            let after = apply(store, transfer, &report_of_bill(&bill, "query"), next).await?;
            if after.status == TransferState::WaitUserConfirm && after.package_info.is_none() {
                // Waiting for the user, but its package was never had here: ask for the bill
                // again (the same request), which answers with it.
                return submit(store, registry, &after, "resent").await;
            }
            let expired = now_ms() >= expiry;
            if after.status == TransferState::WaitUserConfirm && expired {
                tracing::info!(out_bill_no = %after.out_bill_no, "the user did not confirm the transfer in time: cancelling it");
                return match cancel(store, registry, &after, "expired").await {
                    Ok(t) => Ok(t),
                    Err(PayoutError::WeChat(err)) => {
                        retry_later(store, &after, &err.to_string()).await
                    }
                    Err(other) => Err(other),
                };
            }
            Ok(after)
        }
        Err(err) => {
            tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %err, "transfer query failed");
            retry_later(store, transfer, &err.to_string()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(t: &str) -> ReportInfo {
        ReportInfo {
            info_type: t.into(),
            info_content: "x".into(),
        }
    }

    #[test]
    fn bill_numbers_are_valid_for_wechat() {
        let no = new_out_bill_no();
        assert!(OutBillNo::try_from(no.as_str()).is_ok(), "{no}");
        assert_ne!(no, new_out_bill_no());
    }

    #[test]
    fn known_scenes_need_their_infos() {
        assert!(
            check_scene(
                "1000",
                &[info("活动名称"), info("奖励说明")],
                Some("现金奖励")
            )
            .is_ok()
        );
        assert!(check_scene("1000", &[info("活动名称")], None).is_err());
        assert!(check_scene("1000", &[info("活动名称"), info("奖励说明")], Some("退款")).is_err());
        assert!(check_scene("1011", &[info("赔付原因")], Some("商家赔付")).is_ok());
        assert!(check_scene("1005", &[info("岗位类型"), info("报酬说明")], None).is_ok());
        assert!(check_scene("1009", &[info("任意")], None).is_ok());
        assert!(check_scene("1009", &[], None).is_err());
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(backoff(0), RETRY_MS);
        assert_eq!(backoff(1), 2 * RETRY_MS);
        assert_eq!(backoff(50), 3_600_000);
    }
}
