//! 商家转账 (merchant transfers, the 2025 user-confirm product) and its 免确认 (authorization)
//! mode, as `api.mch.weixin.qq.com` serves them, with the user's side (`wx.requestMerchantTransfer`)
//! on the control API.
//!
//! Sources: `TRANSFERS_PARTNER_PROFITSHARING.md`, Part 1 (§ numbers below). Rules where the
//! references are silent or disagree, each one a rule of this simulator:
//!
//! * By default a bill is created straight in `WAIT_USER_CONFIRM`: its amount is taken from the
//!   merchant's 运营账户 balance at once and given back when it ends `FAIL` or `CANCELLED`. A
//!   balance below the amount, or the fault `transfer_not_enough`, answers 403 `NOT_ENOUGH` and
//!   makes no bill (§1.8).
//! * The two early states are settings (§1.3, §1.8 "Sim: configurable"), for `POST
//!   /transfer-bills` only: `low_balance: "processing"` makes a bill the balance does not cover
//!   in `PROCESSING` (锁定资金中, nothing taken, no `package_info`) instead of the 403;
//!   `accept_first: true` answers every new bill `ACCEPTED` (已受理, no `package_info`; in the
//!   `not_enough` mode its funds are taken at once, else at the next tick). At each *tick* (the
//!   ticker, `/sim/clock/advance`, a balance `PUT`, `GET /sim/transfers`), oldest first, an
//!   `ACCEPTED` bill becomes `WAIT_USER_CONFIRM` (funds taken) or `PROCESSING` (short), and a
//!   `PROCESSING` bill whose amount the balance now covers takes it and becomes
//!   `WAIT_USER_CONFIRM`, its confirmation window starting then. A v3 request applies only the
//!   time-based changes, so that a merchant's immediate retry may still see `ACCEPTED`. A bill
//!   still `PROCESSING` [`LOCK_FUNDS_TTL_SECS`] (24 h) after it entered that state ends `FAIL` /
//!   `OVERDUE_CLOSE` (超过系统重试期,系统自动关闭: the documented reason for a bill the system
//!   stopped retrying), with its notification. The fault `transfer_not_enough` still answers 403
//!   in every mode.
//! * `out_bill_no` is unique per merchant. The same body again answers the stored bill (with its
//!   `package_info` while it waits for the user); another body answers 400 `INVALID_REQUEST`.
//!   `user_name` is compared by its decrypted text (RSA-OAEP ciphertexts differ every time).
//! * The user confirms with `POST /sim/transfers/confirm` (the `wx.requestMerchantTransfer` object
//!   plus the confirming `openid`): `WAIT_USER_CONFIRM` → `TRANSFERING` → `SUCCESS`, or `FAIL`
//!   with `NAME_NOT_CORRECT` (a `user_name` that is not the user's real name) or
//!   `DAY_RECEIVED_QUOTA_EXCEED` (the user's successful receipts of the GMT+8 day would pass the
//!   daily quota). `TRANSFERING` lasts `transfering_secs` of business time (default 0: the bill
//!   finishes within the confirmation).
//! * An unconfirmed bill ends `FAIL` / `OVERDUE_CLOSE` `confirm_ttl_secs` (default 24 h) after its
//!   creation, on the business clock; an unconfirmed authorization ends `CLOSED` /
//!   `USER_OVERDUE_UNCONFIRMED` after the same time.
//! * Cancel is accepted before the user confirmed (`WAIT_USER_CONFIRM`, `ACCEPTED`,
//!   `PROCESSING`): the answer says `CANCELING` and the bill is `CANCELLED` at once (no
//!   `fail_reason`), its notification queued. `TRANSFERING` and final bills answer 400
//!   `INVALID_REQUEST`.
//! * `pre-transfer-with-authorization` makes a bill as the create does and, with
//!   `authorization_info`, an authorization in `WAIT_USER_CONFIRM` linked to it: one package (the
//!   bill's), the bill's expiry. The user's confirmation of that package pays the bill as any
//!   other and puts the authorization `TAKING_EFFECT` (with `MCHTRANSFER.AUTHORIZATION.CONFIRMED`)
//!   whatever the payment's outcome; the bill's expiry closes it `USER_OVERDUE_UNCONFIRMED`, the
//!   merchant's cancel of the bill `CLOSE_VIA_MCH_API` (the reasons the references give for an
//!   unconfirmed authorization and for the merchant's own act). An authorization number already
//!   used, or an authorization in force for the same user and scene, answers 400
//!   `INVALID_REQUEST` and makes nothing.
//! * Every final state (`SUCCESS`, `FAIL`, `CANCELLED`) sends `MCHTRANSFER.BILL.FINISHED` to the
//!   bill's `notify_url` (none without one) through the notification dispatcher.
//! * Time-based transitions are applied whenever bills are read or changed, after
//!   `/sim/clock/advance`, and every 200 ms of real time ([`run_ticker`]), so notifications follow
//!   a clock advance without any request.
//!
//! Bills, authorizations, balances and real names are journal lines (`transfer_bill`,
//! `transfer_authorization`, `transfer_balance`, `transfer_payee`); the settings
//! (`/sim/transfers/settings`) are in memory only, like the faults.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wxpay::keys::normalize_serial;
use wxpay::nonce::Clock as _;

use crate::app::{AppState, MerchantAccount};
use crate::journal::{Entry, Journal};
use crate::notify::{DeliveryKind, DeliverySigning, NewDelivery};
use crate::signer::KeyMode;
use crate::state::{ApiVersion, cst_date, rfc3339_cst};
use crate::v3::{V3Error, check_notify_url, opt_str, parse_body};

/// The smallest transfer: 0.1 yuan, fixed (§1.9).
pub const MIN_AMOUNT_FEN: u64 = 10;
/// The default largest single transfer: 200 yuan (§1.9, the default product range).
pub const DEFAULT_SINGLE_MAX_FEN: u64 = 20_000;
/// From this amount `user_name` is required: 2000 yuan (§1.1).
pub const USER_NAME_REQUIRED_FEN: u64 = 200_000;
/// Below this amount `user_name` is not supported: 0.3 yuan (§1.1).
pub const USER_NAME_MIN_FEN: u64 = 30;
/// The default daily quota a user may receive (successful transfers of one GMT+8 day): 2000 yuan.
pub const DEFAULT_USER_DAILY_QUOTA_FEN: u64 = 200_000;
/// How long a bill (or an authorization) waits for the user: 24 hours (§1.3).
pub const DEFAULT_CONFIRM_TTL_SECS: i64 = 86_400;
/// How long a `PROCESSING` bill waits for its funds before it closes: 24 hours (§1.3).
pub const LOCK_FUNDS_TTL_SECS: i64 = 86_400;
/// A merchant's 运营账户 balance until it is set: 100 000 yuan.
pub const DEFAULT_BALANCE_FEN: u64 = 10_000_000;
/// The real name of a user created without one.
pub const DEFAULT_REAL_NAME: &str = "测试用户";
/// The most `transfer_scene_report_infos` of a scene without a documented rule.
pub const MAX_REPORT_INFOS: usize = 10;
/// The scene ids the simulator knows (the OpenAPI enum, plus 1006 of the official page).
pub const SCENES: &[&str] = &[
    "1000", "1002", "1004", "1005", "1006", "1009", "1010", "1011", "1013",
];
/// The largest RED_PACKET transfer (`user_recv_style`): 200 yuan.
pub const RED_PACKET_MAX_FEN: u64 = 20_000;

const NOT_ENOUGH_MESSAGE: &str = "商户运营账户资金不足,充值后可以原单号发起重试,请勿更换商户单号";
const LIMIT_MESSAGE: &str = "超过单笔转账上下限,核实产品设置是否准确";
const PERCEPTION_MESSAGE: &str = "暂不支持展示当前传入的用户收款感知";
const INFOS_MISSING_MESSAGE: &str = "需传入转账场景报备信息,请检查";
const INFOS_WRONG_MESSAGE: &str = "未传入完整且对应的转账场景报备信息,请根据接口文档检查";
/// What the confirmation page shows for a bad, expired or used package (§1.10).
pub const PACKAGE_ERROR: &str = "package_info信息有误,请返回联系商家处理";
/// What the confirmation page shows to another WeChat user (§1.10).
pub const OPENID_ERROR: &str = "你的微信号与商家指定的收款微信号不一致";
/// What the confirmation page shows for a wrong `mchId` (§1.10).
pub const MCHID_ERROR: &str = "商户号错误";
/// The prefix of authorization packages (§1.11).
pub const AUTHORIZATION_PACKAGE_PREFIX: &str = "0002-";
/// The first bytes of a bill's `package_info` (§1.1, 5 captures).
const PACKAGE_PREFIX: [u8; 12] = [
    0x00, 0x10, 0x50, 0x3b, 0xea, 0x18, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
];

// ---------------------------------------------------------------------------------------------
// Model

/// The state of a transfer bill (§1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillState {
    /// 已受理: taken, not yet processed (setting `accept_first`).
    Accepted,
    /// 锁定资金中: waiting for the balance to cover it (setting `low_balance: "processing"`).
    Processing,
    /// Waiting for the user's confirmation.
    WaitUserConfirm,
    /// Confirmed, being paid.
    Transfering,
    /// Paid.
    Success,
    /// Failed (`fail_reason`).
    Fail,
    /// Being cancelled (only in the cancel answer).
    Canceling,
    /// Cancelled.
    Cancelled,
}

impl BillState {
    /// The wire value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            BillState::Accepted => "ACCEPTED",
            BillState::Processing => "PROCESSING",
            BillState::WaitUserConfirm => "WAIT_USER_CONFIRM",
            BillState::Transfering => "TRANSFERING",
            BillState::Success => "SUCCESS",
            BillState::Fail => "FAIL",
            BillState::Canceling => "CANCELING",
            BillState::Cancelled => "CANCELLED",
        }
    }

    /// SUCCESS, FAIL and CANCELLED: the states that fire the callback.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            BillState::Success | BillState::Fail | BillState::Cancelled
        )
    }
}

/// The state of an authorization (§1.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationState {
    /// Waiting for the user.
    WaitUserConfirm,
    /// Confirmed: transfers need no confirmation.
    TakingEffect,
    /// Closed (`close_reason`).
    Closed,
}

impl AuthorizationState {
    /// The wire value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthorizationState::WaitUserConfirm => "WAIT_USER_CONFIRM",
            AuthorizationState::TakingEffect => "TAKING_EFFECT",
            AuthorizationState::Closed => "CLOSED",
        }
    }
}

/// One `transfer_scene_report_infos` item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportInfo {
    /// `info_type`.
    pub info_type: String,
    /// `info_content`.
    pub info_content: String,
}

/// A transfer bill (a `transfer_bill` journal line, the whole record after each change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillLine {
    /// The merchant.
    pub mchid: String,
    /// The merchant's number.
    pub out_bill_no: String,
    /// WeChat's number (34 digits).
    pub transfer_bill_no: String,
    /// The mini program.
    pub appid: String,
    /// The payee.
    pub openid: String,
    /// `transfer_scene_id`.
    pub transfer_scene_id: String,
    /// Fen.
    pub transfer_amount: u64,
    /// `transfer_remark`.
    pub transfer_remark: String,
    /// `notify_url`.
    pub notify_url: Option<String>,
    /// `user_recv_perception`.
    pub user_recv_perception: Option<String>,
    /// `transfer_scene_report_infos`.
    pub report_infos: Vec<ReportInfo>,
    /// `user_name` as sent (ciphertext), echoed by queries.
    pub user_name: Option<String>,
    /// `user_name` decrypted (checked against the user's real name).
    pub user_name_plain: Option<String>,
    /// The request without `user_name`: a re-POST must match it.
    pub request: Value,
    /// The state.
    pub state: BillState,
    /// `fail_reason` of a FAIL.
    pub fail_reason: Option<String>,
    /// `package_info` for `wx.requestMerchantTransfer` (none under an authorization).
    pub package_info: Option<String>,
    /// The authorization it was made under (`out_authorization_no`).
    pub out_authorization_no: Option<String>,
    /// Simulated Unix seconds.
    pub create_time: i64,
    /// Simulated Unix seconds.
    pub update_time: i64,
    /// When an unconfirmed bill closes, or a `PROCESSING` one gives up waiting for its funds
    /// (simulated Unix seconds).
    pub expire_at: i64,
    /// When a TRANSFERING bill finishes (simulated Unix seconds).
    pub finish_at: Option<i64>,
    /// Whether the bill holds its amount (taken from the balance, not yet paid out or given
    /// back): false while `ACCEPTED` or `PROCESSING` without funds, and once final. Lines written
    /// before this field are read as true (they were funded at creation).
    #[serde(default = "yes")]
    pub funds_locked: bool,
}

const fn yes() -> bool {
    true
}

/// An authorization of 免确认 transfers (a `transfer_authorization` journal line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationLine {
    /// The merchant.
    pub mchid: String,
    /// The merchant's number.
    pub out_authorization_no: String,
    /// WeChat's id, once the user confirmed.
    pub authorization_id: Option<String>,
    /// The mini program.
    pub appid: String,
    /// The user.
    pub openid: String,
    /// The scene.
    pub transfer_scene_id: String,
    /// `user_display_name`.
    pub user_display_name: String,
    /// `user_recv_perception`.
    pub user_recv_perception: Option<String>,
    /// `authorization_notify_url`.
    pub notify_url: String,
    /// The request: a re-POST must match it.
    pub request: Value,
    /// The state.
    pub state: AuthorizationState,
    /// The package for `wx.requestMerchantTransfer` (`0002-...`).
    pub package_info: String,
    /// When the user confirmed.
    pub authorize_time: Option<i64>,
    /// When it closed.
    pub close_time: Option<i64>,
    /// `close_reason`.
    pub close_reason: Option<String>,
    /// Simulated Unix seconds.
    pub create_time: i64,
    /// Simulated Unix seconds.
    pub update_time: i64,
    /// When an unconfirmed authorization closes.
    pub expire_at: i64,
    /// The bill whose confirmation grants it (`pre-transfer-with-authorization`); its
    /// `package_info` is that bill's. None for `user-confirm-authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_bill_no: Option<String>,
}

/// A merchant's 运营账户 balance after a change (a `transfer_balance` journal line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceLine {
    /// The merchant.
    pub mchid: String,
    /// Fen.
    pub balance_fen: u64,
}

/// A user's real name (a `transfer_payee` journal line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeLine {
    /// The mini program.
    pub appid: String,
    /// The user.
    pub openid: String,
    /// The name `user_name` must match.
    pub real_name: String,
}

/// What a create does when the balance does not cover the amount (§1.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowBalance {
    /// 403 `NOT_ENOUGH`, no bill.
    #[default]
    NotEnough,
    /// A bill in `PROCESSING` until the balance covers it (or 24 h pass).
    Processing,
}

/// The simulator's transfer product settings (`GET|PUT /sim/transfers/settings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TransferSettings {
    /// The largest single transfer, in fen (≥ 10).
    pub single_max_fen: u64,
    /// The most a user may receive per GMT+8 day, in fen.
    pub user_daily_quota_fen: u64,
    /// How long a bill or authorization waits for the user, in seconds (> 0).
    pub confirm_ttl_secs: i64,
    /// How long a confirmed bill stays TRANSFERING, in seconds (≥ 0).
    pub transfering_secs: i64,
    /// A create the balance does not cover: `"not_enough"` (403) or `"processing"` (a bill).
    pub low_balance: LowBalance,
    /// New bills are answered `ACCEPTED` and taken on at the next tick.
    pub accept_first: bool,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            single_max_fen: DEFAULT_SINGLE_MAX_FEN,
            user_daily_quota_fen: DEFAULT_USER_DAILY_QUOTA_FEN,
            confirm_ttl_secs: DEFAULT_CONFIRM_TTL_SECS,
            transfering_secs: 0,
            low_balance: LowBalance::NotEnough,
            accept_first: false,
        }
    }
}

/// A change of settings: absent fields keep their value.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// See [`TransferSettings::single_max_fen`].
    pub single_max_fen: Option<u64>,
    /// See [`TransferSettings::user_daily_quota_fen`].
    pub user_daily_quota_fen: Option<u64>,
    /// See [`TransferSettings::confirm_ttl_secs`].
    pub confirm_ttl_secs: Option<i64>,
    /// See [`TransferSettings::transfering_secs`].
    pub transfering_secs: Option<i64>,
    /// See [`TransferSettings::low_balance`].
    pub low_balance: Option<LowBalance>,
    /// See [`TransferSettings::accept_first`].
    pub accept_first: Option<bool>,
}

type Key = (String, String);

/// Something that must be notified once the lock is released.
enum Event {
    Bill(BillLine),
    Authorization(AuthorizationLine, &'static str),
}

#[derive(Default)]
struct Inner {
    bills: HashMap<Key, BillLine>,
    by_bill_no: HashMap<String, Key>,
    by_package: HashMap<String, Key>,
    by_openid: HashMap<String, Vec<Key>>,
    /// Bills that a clock or a tick can change (ACCEPTED, PROCESSING, WAIT_USER_CONFIRM,
    /// TRANSFERING).
    open: BTreeSet<Key>,
    auths: HashMap<Key, AuthorizationLine>,
    auth_by_package: HashMap<String, Key>,
    auth_by_id: HashMap<String, Key>,
    open_auths: BTreeSet<Key>,
    balances: HashMap<String, u64>,
    real_names: HashMap<Key, String>,
    seq: u64,
    settings: TransferSettings,
}

impl Inner {
    fn index_bill(&mut self, bill: &BillLine) {
        let key = (bill.mchid.clone(), bill.out_bill_no.clone());
        if !self.bills.contains_key(&key) {
            self.by_bill_no
                .insert(bill.transfer_bill_no.clone(), key.clone());
            if let Some(p) = &bill.package_info {
                self.by_package.insert(p.clone(), key.clone());
            }
            self.by_openid
                .entry(bill.openid.clone())
                .or_default()
                .push(key.clone());
            if let Some(seq) = bill
                .transfer_bill_no
                .get(4..15)
                .and_then(|s| s.parse::<u64>().ok())
            {
                self.seq = self.seq.max(seq);
            }
        }
        if matches!(
            bill.state,
            BillState::Accepted
                | BillState::Processing
                | BillState::WaitUserConfirm
                | BillState::Transfering
        ) {
            self.open.insert(key.clone());
        } else {
            self.open.remove(&key);
        }
        self.bills.insert(key, bill.clone());
    }

    fn index_auth(&mut self, auth: &AuthorizationLine) {
        let key = (auth.mchid.clone(), auth.out_authorization_no.clone());
        if !self.auths.contains_key(&key) {
            self.auth_by_package
                .insert(auth.package_info.clone(), key.clone());
        }
        if let Some(id) = &auth.authorization_id {
            self.auth_by_id.insert(id.clone(), key.clone());
            if let Some(seq) = id.get(4..15).and_then(|s| s.parse::<u64>().ok()) {
                self.seq = self.seq.max(seq);
            }
        }
        if auth.state == AuthorizationState::WaitUserConfirm {
            self.open_auths.insert(key.clone());
        } else {
            self.open_auths.remove(&key);
        }
        self.auths.insert(key, auth.clone());
    }

    fn balance(&self, mchid: &str) -> u64 {
        self.balances
            .get(mchid)
            .copied()
            .unwrap_or(DEFAULT_BALANCE_FEN)
    }

    fn real_name(&self, appid: &str, openid: &str) -> &str {
        self.real_names
            .get(&(appid.to_owned(), openid.to_owned()))
            .map_or(DEFAULT_REAL_NAME, String::as_str)
    }

    /// What `openid` received successfully on the GMT+8 day of `at`.
    fn received_on_day(&self, openid: &str, at: i64) -> u64 {
        let day = cst_date(at);
        self.by_openid
            .get(openid)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| self.bills.get(k))
                    .filter(|b| b.state == BillState::Success && cst_date(b.update_time) == day)
                    .map(|b| b.transfer_amount)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The transfer bills, authorizations, balances and real names of every merchant.
pub struct Transfers {
    inner: Mutex<Inner>,
    journal: Option<Arc<Journal>>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers").finish_non_exhaustive()
    }
}

impl Default for Transfers {
    fn default() -> Self {
        Self::new()
    }
}

/// One locked change: the journal is written as records change, notifications are sent once the
/// lock is released ([`Transfers::run`]).
struct Txn<'a> {
    inner: MutexGuard<'a, Inner>,
    journal: Option<&'a Arc<Journal>>,
    events: Vec<Event>,
    now: i64,
}

impl Txn<'_> {
    fn save_bill(&mut self, bill: &BillLine) {
        self.inner.index_bill(bill);
        if let Some(j) = self.journal {
            j.append(&Entry::TransferBill(bill.clone()));
        }
        if bill.state.is_final() {
            self.events.push(Event::Bill(bill.clone()));
        }
    }

    fn save_auth(&mut self, auth: &AuthorizationLine, event: Option<&'static str>) {
        self.inner.index_auth(auth);
        if let Some(j) = self.journal {
            j.append(&Entry::TransferAuthorization(auth.clone()));
        }
        if let Some(e) = event {
            self.events.push(Event::Authorization(auth.clone(), e));
        }
    }

    fn set_balance(&mut self, mchid: &str, balance_fen: u64) {
        self.inner.balances.insert(mchid.to_owned(), balance_fen);
        if let Some(j) = self.journal {
            j.append(&Entry::TransferBalance(BalanceLine {
                mchid: mchid.to_owned(),
                balance_fen,
            }));
        }
    }

    /// Gives a bill's funds back to the balance, if it holds them.
    fn release_funds(&mut self, bill: &mut BillLine) {
        if bill.funds_locked {
            let back = self.inner.balance(&bill.mchid) + bill.transfer_amount;
            self.set_balance(&bill.mchid.clone(), back);
            bill.funds_locked = false;
        }
    }

    /// Ends a bill FAIL with `reason` at `at`, its funds (if it holds them) given back.
    fn fail(&mut self, mut bill: BillLine, reason: &str, at: i64) -> BillLine {
        bill.state = BillState::Fail;
        bill.fail_reason = Some(reason.to_owned());
        bill.update_time = at;
        bill.finish_at = None;
        self.release_funds(&mut bill);
        self.save_bill(&bill);
        bill
    }

    /// Pays a confirmed bill at `at`: SUCCESS, or FAIL for a wrong name or the daily quota.
    fn finish(&mut self, mut bill: BillLine, at: i64) -> BillLine {
        if bill
            .user_name_plain
            .as_deref()
            .is_some_and(|name| name != self.inner.real_name(&bill.appid, &bill.openid))
        {
            return self.fail(bill, "NAME_NOT_CORRECT", at);
        }
        let received = self.inner.received_on_day(&bill.openid, at);
        if received + bill.transfer_amount > self.inner.settings.user_daily_quota_fen {
            return self.fail(bill, "DAY_RECEIVED_QUOTA_EXCEED", at);
        }
        bill.state = BillState::Success;
        bill.update_time = at;
        bill.finish_at = None;
        bill.funds_locked = false;
        self.save_bill(&bill);
        bill
    }

    /// Takes on an `ACCEPTED` bill, or retries locking a `PROCESSING` bill's funds: with its
    /// funds (taken now if it does not hold them yet) it waits for the user from now on;
    /// without, an `ACCEPTED` bill goes `PROCESSING` for [`LOCK_FUNDS_TTL_SECS`] and a
    /// `PROCESSING` one stays.
    fn take_on(&mut self, mut bill: BillLine) {
        let now = self.now;
        if !bill.funds_locked {
            let balance = self.inner.balance(&bill.mchid);
            if balance < bill.transfer_amount {
                if bill.state == BillState::Accepted {
                    bill.state = BillState::Processing;
                    bill.update_time = now;
                    bill.expire_at = now + LOCK_FUNDS_TTL_SECS;
                    self.save_bill(&bill);
                }
                return;
            }
            self.set_balance(&bill.mchid.clone(), balance - bill.transfer_amount);
            bill.funds_locked = true;
        }
        bill.state = BillState::WaitUserConfirm;
        bill.update_time = now;
        bill.expire_at = now + self.inner.settings.confirm_ttl_secs;
        self.save_bill(&bill);
    }

    /// Applies every transition whose time has come, oldest first; with `take_on` (a tick),
    /// then takes on the `ACCEPTED` bills and retries the `PROCESSING` ones, oldest first.
    fn advance(&mut self, take_on: bool) {
        let now = self.now;
        let mut due: Vec<(i64, Key)> = self
            .inner
            .open
            .iter()
            .filter_map(|k| {
                let b = self.inner.bills.get(k)?;
                let at = match b.state {
                    BillState::WaitUserConfirm | BillState::Processing => b.expire_at,
                    BillState::Transfering => b.finish_at?,
                    _ => return None,
                };
                (at <= now).then(|| (at, k.clone()))
            })
            .collect();
        due.sort();
        for (at, key) in due {
            let Some(bill) = self.inner.bills.get(&key).cloned() else {
                continue;
            };
            match bill.state {
                BillState::WaitUserConfirm => {
                    let bill = self.fail(bill, "OVERDUE_CLOSE", at);
                    self.close_pending_authorization(&bill, "USER_OVERDUE_UNCONFIRMED", at);
                }
                BillState::Transfering => {
                    self.finish(bill, at);
                }
                BillState::Processing => {
                    self.fail(bill, "OVERDUE_CLOSE", at);
                }
                _ => {}
            }
        }
        if take_on {
            let mut early: Vec<(i64, String, Key)> = self
                .inner
                .open
                .iter()
                .filter_map(|k| {
                    let b = self.inner.bills.get(k)?;
                    matches!(b.state, BillState::Accepted | BillState::Processing)
                        .then(|| (b.create_time, b.transfer_bill_no.clone(), k.clone()))
                })
                .collect();
            early.sort();
            for (_, _, key) in early {
                if let Some(bill) = self.inner.bills.get(&key).cloned() {
                    self.take_on(bill);
                }
            }
        }
        let expired: Vec<Key> = self
            .inner
            .open_auths
            .iter()
            .filter(|k| self.inner.auths.get(*k).is_some_and(|a| a.expire_at <= now))
            .cloned()
            .collect();
        for key in expired {
            if let Some(mut auth) = self.inner.auths.get(&key).cloned() {
                let at = auth.expire_at;
                close_authorization(&mut auth, "USER_OVERDUE_UNCONFIRMED", at);
                self.save_auth(&auth, Some("MCHTRANSFER.AUTHORIZATION.CLOSED"));
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.inner.seq += 1;
        self.inner.seq
    }

    /// The authorization a pre-transfer bill carries, while it waits for the user's confirmation
    /// (none for other bills, or once it took effect or closed).
    fn pending_authorization(&self, bill: &BillLine) -> Option<AuthorizationLine> {
        let no = bill.out_authorization_no.as_ref()?;
        self.inner
            .auths
            .get(&(bill.mchid.clone(), no.clone()))
            .filter(|a| {
                a.state == AuthorizationState::WaitUserConfirm
                    && a.out_bill_no.as_deref() == Some(bill.out_bill_no.as_str())
            })
            .cloned()
    }

    /// Closes the pending authorization a pre-transfer bill carries, with its callback.
    fn close_pending_authorization(&mut self, bill: &BillLine, reason: &str, at: i64) {
        if let Some(mut auth) = self.pending_authorization(bill) {
            close_authorization(&mut auth, reason, at);
            self.save_auth(&auth, Some("MCHTRANSFER.AUTHORIZATION.CLOSED"));
        }
    }

    /// The user confirmed an authorization: `TAKING_EFFECT`, with its callback.
    fn take_effect(&mut self, mut auth: AuthorizationLine) -> AuthorizationLine {
        let now = self.now;
        let seq = self.next_seq();
        auth.state = AuthorizationState::TakingEffect;
        auth.authorization_id = Some(authorization_id(seq, now));
        auth.authorize_time = Some(now);
        auth.update_time = now;
        self.save_auth(&auth, Some("MCHTRANSFER.AUTHORIZATION.CONFIRMED"));
        auth
    }
}

/// Whether `openid` already has an authorization in force for `scene` with `mchid` (one per
/// user and scene, §1.11).
fn has_effective_authorization(inner: &Inner, mchid: &str, openid: &str, scene: &str) -> bool {
    inner.auths.values().any(|a| {
        a.mchid == mchid
            && a.openid == openid
            && a.transfer_scene_id == scene
            && a.state == AuthorizationState::TakingEffect
    })
}

const EFFECTIVE_AUTHORIZATION_MESSAGE: &str = "该用户在此转账场景下已有生效中的授权";

fn close_authorization(auth: &mut AuthorizationLine, reason: &str, at: i64) {
    auth.state = AuthorizationState::Closed;
    auth.close_reason = Some(reason.to_owned());
    auth.close_time = Some(at);
    auth.update_time = at;
}

impl Transfers {
    /// In memory only.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            journal: None,
        }
    }

    /// Restored from the journal read at start; later changes are appended to it.
    #[must_use]
    pub fn persistent(journal: Arc<Journal>, entries: &[Entry]) -> Self {
        let mut inner = Inner::default();
        for entry in entries {
            match entry {
                Entry::TransferBill(bill) => inner.index_bill(bill),
                Entry::TransferAuthorization(auth) => inner.index_auth(auth),
                Entry::TransferBalance(line) => {
                    inner.balances.insert(line.mchid.clone(), line.balance_fen);
                }
                Entry::TransferPayee(line) => {
                    inner.real_names.insert(
                        (line.appid.clone(), line.openid.clone()),
                        line.real_name.clone(),
                    );
                }
                _ => {}
            }
        }
        Self {
            inner: Mutex::new(inner),
            journal: Some(journal),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The balance of `mchid`'s 运营账户, in fen.
    #[must_use]
    pub fn balance(&self, mchid: &str) -> u64 {
        self.lock().balance(mchid)
    }

    /// Sets the balance of `mchid`'s 运营账户 (`PUT /sim/merchants/{mchid}/balance`).
    pub fn set_balance(&self, mchid: &str, balance_fen: u64) {
        self.lock().balances.insert(mchid.to_owned(), balance_fen);
        if let Some(j) = &self.journal {
            j.append(&Entry::TransferBalance(BalanceLine {
                mchid: mchid.to_owned(),
                balance_fen,
            }));
        }
    }

    /// Sets a user's real name (what `user_name` must decrypt to).
    pub fn set_real_name(&self, appid: &str, openid: &str, real_name: &str) {
        self.lock()
            .real_names
            .insert((appid.to_owned(), openid.to_owned()), real_name.to_owned());
        if let Some(j) = &self.journal {
            j.append(&Entry::TransferPayee(PayeeLine {
                appid: appid.to_owned(),
                openid: openid.to_owned(),
                real_name: real_name.to_owned(),
            }));
        }
    }

    /// A user's real name ([`DEFAULT_REAL_NAME`] unless set).
    #[must_use]
    pub fn real_name(&self, appid: &str, openid: &str) -> String {
        self.lock().real_name(appid, openid).to_owned()
    }

    /// The current settings.
    #[must_use]
    pub fn settings(&self) -> TransferSettings {
        self.lock().settings
    }

    /// Changes the settings.
    ///
    /// # Errors
    /// A message naming the first value out of range; nothing changes then.
    pub fn change_settings(&self, change: SettingsChange) -> Result<TransferSettings, String> {
        let mut inner = self.lock();
        let mut s = inner.settings;
        if let Some(v) = change.single_max_fen {
            s.single_max_fen = v;
        }
        if let Some(v) = change.user_daily_quota_fen {
            s.user_daily_quota_fen = v;
        }
        if let Some(v) = change.confirm_ttl_secs {
            s.confirm_ttl_secs = v;
        }
        if let Some(v) = change.transfering_secs {
            s.transfering_secs = v;
        }
        if let Some(v) = change.low_balance {
            s.low_balance = v;
        }
        if let Some(v) = change.accept_first {
            s.accept_first = v;
        }
        if s.single_max_fen < MIN_AMOUNT_FEN {
            return Err(format!("single_max_fen must be at least {MIN_AMOUNT_FEN}"));
        }
        if !(1..=366 * 86_400).contains(&s.confirm_ttl_secs) {
            return Err("confirm_ttl_secs must be between 1 and a year".into());
        }
        if !(0..=366 * 86_400).contains(&s.transfering_secs) {
            return Err("transfering_secs must be between 0 and a year".into());
        }
        inner.settings = s;
        Ok(s)
    }

    /// Runs `f` on the locked records after applying due transitions, then sends the
    /// notifications of every final state reached.
    fn run<R>(&self, state: &AppState, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        self.run_pass(state, false, f)
    }

    /// [`Transfers::run`], with the work of a tick first when `take_on` ([`Txn::advance`]).
    fn run_pass<R>(&self, state: &AppState, take_on: bool, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let mut txn = Txn {
            inner: self.lock(),
            journal: self.journal.as_ref(),
            events: Vec::new(),
            now: state.clock.now(),
        };
        txn.advance(take_on);
        let result = f(&mut txn);
        let events = std::mem::take(&mut txn.events);
        drop(txn);
        for event in events {
            let delivery = match &event {
                Event::Bill(bill) => bill_notification(state, bill),
                Event::Authorization(auth, event_type) => {
                    authorization_notification(state, auth, event_type)
                }
            };
            if let Some(d) = delivery {
                state.dispatcher.enqueue(d);
            }
        }
        result
    }

    /// The bills, oldest first, of `mchid` and `openid` when given.
    #[must_use]
    pub fn bills(&self, mchid: Option<&str>, openid: Option<&str>) -> Vec<BillLine> {
        let inner = self.lock();
        let mut bills: Vec<BillLine> = inner
            .bills
            .values()
            .filter(|b| mchid.is_none_or(|m| b.mchid == m))
            .filter(|b| openid.is_none_or(|o| b.openid == o))
            .cloned()
            .collect();
        bills.sort_by(|a, b| {
            (a.create_time, &a.transfer_bill_no).cmp(&(b.create_time, &b.transfer_bill_no))
        });
        bills
    }

    /// The authorizations, oldest first, of `mchid` and `openid` when given.
    #[must_use]
    pub fn authorizations(
        &self,
        mchid: Option<&str>,
        openid: Option<&str>,
    ) -> Vec<AuthorizationLine> {
        let inner = self.lock();
        let mut auths: Vec<AuthorizationLine> = inner
            .auths
            .values()
            .filter(|a| mchid.is_none_or(|m| a.mchid == m))
            .filter(|a| openid.is_none_or(|o| a.openid == o))
            .cloned()
            .collect();
        auths.sort_by(|a, b| {
            (a.create_time, &a.out_authorization_no).cmp(&(b.create_time, &b.out_authorization_no))
        });
        auths
    }
}

/// Applies the transitions whose time has come on the business clock (expiry, end of
/// TRANSFERING, a `PROCESSING` bill's 24 h), takes on the `ACCEPTED` bills and retries locking
/// the funds of the `PROCESSING` ones, and sends the notifications. Returns how many bills and
/// authorizations reached a final or notified state.
pub fn tick(state: &AppState) -> usize {
    state
        .transfers
        .run_pass(state, true, |txn| txn.events.len())
}

/// Applies due transitions every 200 ms of real time, until shutdown.
pub async fn run_ticker(state: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
        tick(&state);
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rand::random::<u64>().to_le_bytes());
    }
    out.truncate(n);
    out
}

fn yymmdd(unix: i64) -> String {
    let d = cst_date(unix);
    format!(
        "{:02}{:02}{:02}",
        d.year().rem_euclid(100),
        u8::from(d.month()),
        d.day()
    )
}

/// `1330` + 11 digits + `YYMMDD` + 13 digits = 34 digits (§1.1 IDs); the 11 digits are the
/// simulator's sequence number.
fn transfer_bill_no(seq: u64, now: i64) -> String {
    format!(
        "1330{:011}{}{:013}",
        seq % 100_000_000_000,
        yymmdd(now),
        rand::random::<u64>() % 10_000_000_000_000
    )
}

/// `1340` + 11 digits + `YYMMDD` + 13 digits [chosen: the format is not documented].
fn authorization_id(seq: u64, now: i64) -> String {
    format!(
        "1340{:011}{}{:013}",
        seq % 100_000_000_000,
        yymmdd(now),
        rand::random::<u64>() % 10_000_000_000_000
    )
}

/// 116 bytes starting with the captured prefix, base64: 156 characters (§1.1 IDs).
fn bill_package() -> String {
    let mut bytes = PACKAGE_PREFIX.to_vec();
    bytes.extend(random_bytes(116 - PACKAGE_PREFIX.len()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn authorization_package() -> String {
    format!(
        "{AUTHORIZATION_PACKAGE_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(random_bytes(96))
    )
}

// ---------------------------------------------------------------------------------------------
// Answers and notifications

/// The create answer: `out_bill_no`, `transfer_bill_no`, `create_time`, `state`, `package_info`
/// while waiting for the user, `fail_reason` of a FAIL.
#[must_use]
pub fn created_json(bill: &BillLine) -> Value {
    let mut v = json!({
        "out_bill_no": bill.out_bill_no,
        "transfer_bill_no": bill.transfer_bill_no,
        "create_time": rfc3339_cst(bill.create_time),
        "state": bill.state.as_str(),
    });
    if bill.state == BillState::WaitUserConfirm
        && let Some(p) = &bill.package_info
    {
        v["package_info"] = json!(p);
    }
    if let Some(r) = &bill.fail_reason {
        v["fail_reason"] = json!(r);
    }
    v
}

/// The query answer (§1.4): `mch_id` (not `mchid`), no `package_info`.
#[must_use]
pub fn bill_json(bill: &BillLine) -> Value {
    let mut v = json!({
        "mch_id": bill.mchid,
        "out_bill_no": bill.out_bill_no,
        "transfer_bill_no": bill.transfer_bill_no,
        "appid": bill.appid,
        "state": bill.state.as_str(),
        "transfer_amount": bill.transfer_amount,
        "transfer_remark": bill.transfer_remark,
        "openid": bill.openid,
        "create_time": rfc3339_cst(bill.create_time),
        "update_time": rfc3339_cst(bill.update_time),
    });
    if let Some(r) = &bill.fail_reason {
        v["fail_reason"] = json!(r);
    }
    if let Some(n) = &bill.user_name {
        v["user_name"] = json!(n);
    }
    v
}

/// What the control API shows of a bill: the query answer plus everything the simulator keeps.
#[must_use]
pub fn control_bill_json(bill: &BillLine) -> Value {
    let mut v = bill_json(bill);
    v["mchid"] = json!(bill.mchid);
    v["transfer_scene_id"] = json!(bill.transfer_scene_id);
    v["transfer_scene_report_infos"] = json!(bill.report_infos);
    v["notify_url"] = json!(bill.notify_url);
    v["user_recv_perception"] = json!(bill.user_recv_perception);
    v["package_info"] = json!(bill.package_info);
    v["out_authorization_no"] = json!(bill.out_authorization_no);
    v["expire_time"] = json!(rfc3339_cst(bill.expire_at));
    v["finish_time"] = json!(bill.finish_at.map(rfc3339_cst));
    v["funds_locked"] = json!(bill.funds_locked);
    v
}

/// The authorization as its query answers it.
#[must_use]
pub fn authorization_json(auth: &AuthorizationLine) -> Value {
    let mut v = json!({
        "mch_id": auth.mchid,
        "out_authorization_no": auth.out_authorization_no,
        "appid": auth.appid,
        "openid": auth.openid,
        "transfer_scene_id": auth.transfer_scene_id,
        "user_display_name": auth.user_display_name,
        "state": auth.state.as_str(),
        "create_time": rfc3339_cst(auth.create_time),
        "update_time": rfc3339_cst(auth.update_time),
    });
    if let Some(id) = &auth.authorization_id {
        v["authorization_id"] = json!(id);
    }
    if let Some(t) = auth.authorize_time {
        v["authorize_time"] = json!(rfc3339_cst(t));
    }
    if let (Some(t), Some(r)) = (auth.close_time, &auth.close_reason) {
        v["close_info"] = json!({"close_time": rfc3339_cst(t), "close_reason": r});
    }
    v
}

/// The decrypted resource of `MCHTRANSFER.BILL.FINISHED` (§1.6).
#[must_use]
pub fn notification_resource(bill: &BillLine) -> Value {
    let mut v = json!({
        "out_bill_no": bill.out_bill_no,
        "transfer_bill_no": bill.transfer_bill_no,
        "state": bill.state.as_str(),
        "mch_id": bill.mchid,
        "transfer_amount": bill.transfer_amount,
        "openid": bill.openid,
        "create_time": rfc3339_cst(bill.create_time),
        "update_time": rfc3339_cst(bill.update_time),
    });
    if let Some(r) = &bill.fail_reason {
        v["fail_reason"] = json!(r);
    }
    v
}

fn bill_notification(state: &AppState, bill: &BillLine) -> Option<NewDelivery> {
    let url = bill.notify_url.clone()?;
    let merchant = state.merchant_account(&bill.mchid)?;
    let (id, body) = crate::notify::v3_envelope(
        state,
        &merchant,
        "MCHTRANSFER.BILL.FINISHED",
        "商家转账单据终态通知",
        "mch_payment",
        notification_resource(bill).to_string().as_bytes(),
    )?;
    Some(NewDelivery {
        kind: DeliveryKind::Transfer,
        version: ApiVersion::V3,
        url,
        body,
        content_type: "application/json",
        signing: DeliverySigning::V3(merchant.signer.notification_key(), merchant.signer.clone()),
        out_trade_no: bill.out_bill_no.clone(),
        out_refund_no: None,
        event_id: Some(id),
    })
}

fn authorization_notification(
    state: &AppState,
    auth: &AuthorizationLine,
    event_type: &str,
) -> Option<NewDelivery> {
    let merchant = state.merchant_account(&auth.mchid)?;
    let summary = if event_type.ends_with("CONFIRMED") {
        "商家转账用户授权确认通知"
    } else {
        "商家转账用户授权关闭通知"
    };
    let (id, body) = crate::notify::v3_envelope(
        state,
        &merchant,
        event_type,
        summary,
        "mch_payment",
        authorization_json(auth).to_string().as_bytes(),
    )?;
    Some(NewDelivery {
        kind: DeliveryKind::TransferAuthorization,
        version: ApiVersion::V3,
        url: auth.notify_url.clone(),
        body,
        content_type: "application/json",
        signing: DeliverySigning::V3(merchant.signer.notification_key(), merchant.signer.clone()),
        out_trade_no: auth.out_authorization_no.clone(),
        out_refund_no: None,
        event_id: Some(id),
    })
}

// ---------------------------------------------------------------------------------------------
// Request validation

fn invalid(message: impl Into<String>) -> V3Error {
    V3Error::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn param_error(message: impl Into<String>) -> V3Error {
    V3Error::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

fn not_found() -> V3Error {
    V3Error::new(StatusCode::NOT_FOUND, "NOT_FOUND", "记录不存在")
}

/// A text field of at most `max_chars` characters (`required`: present and not empty).
fn text<'a>(
    v: &'a Value,
    field: &str,
    label: &str,
    max_chars: usize,
    required: bool,
) -> Result<Option<&'a str>, V3Error> {
    let s = opt_str(v, field, label, max_chars * 4)?.filter(|s| !s.is_empty());
    match s {
        None if required => Err(V3Error::param(
            field,
            "body",
            None,
            label,
            "必填性规则校验失败，此字段为必填项",
        )),
        Some(s) if s.chars().count() > max_chars => Err(V3Error::param(
            field,
            "body",
            v.pointer(field),
            label,
            &format!("字符串规则校验失败，长度大于最大值 {max_chars}"),
        )),
        s => Ok(s),
    }
}

fn req_text<'a>(v: &'a Value, field: &str, label: &str, max: usize) -> Result<&'a str, V3Error> {
    Ok(text(v, field, label, max, true)?.unwrap_or_default())
}

/// `[0-9A-Za-z]{1,32}`.
fn check_merchant_no(v: &Value, field: &str, label: &str, no: &str) -> Result<(), V3Error> {
    if no.is_empty() || no.len() > 32 || !no.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(V3Error::param(
            field,
            "body",
            v.pointer(field),
            label,
            "字符串规则校验失败，须为1-32位数字或大小写字母",
        ));
    }
    Ok(())
}

fn check_appid(state: &AppState, merchant: &MerchantAccount, appid: &str) -> Result<(), V3Error> {
    if state.is_bound(appid, merchant.mchid()) {
        Ok(())
    } else {
        Err(V3Error::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ))
    }
}

fn check_openid(state: &AppState, appid: &str, openid: &str, field: &str) -> Result<(), V3Error> {
    if state.has_user(appid, openid) {
        Ok(())
    } else {
        Err(param_error("appid和openid不匹配").with_detail(json!({
            "field": field,
            "location": "body",
            "value": openid,
            "issue": "the openid does not belong to the appid",
        })))
    }
}

fn check_scene(v: &Value) -> Result<&str, V3Error> {
    let scene = req_text(v, "/transfer_scene_id", "转账场景ID", 36)?;
    if SCENES.contains(&scene) {
        Ok(scene)
    } else {
        Err(V3Error::param(
            "/transfer_scene_id",
            "body",
            v.pointer("/transfer_scene_id"),
            "转账场景ID",
            "转账场景ID不存在或未开通",
        ))
    }
}

/// The `user_recv_perception` whitelist of a scene (§1.2); `None`: any text.
fn perceptions(scene: &str) -> Option<&'static [&'static str]> {
    match scene {
        "1000" => Some(&["现金奖励", "活动奖励"]),
        "1011" => Some(&["退款", "商家赔付"]),
        _ => None,
    }
}

fn check_perception<'a>(v: &'a Value, scene: &str) -> Result<Option<&'a str>, V3Error> {
    let perception = text(v, "/user_recv_perception", "用户收款感知", 32, false)?;
    if let (Some(p), Some(allowed)) = (perception, perceptions(scene))
        && !allowed.contains(&p)
    {
        return Err(invalid(PERCEPTION_MESSAGE));
    }
    Ok(perception)
}

/// The report infos a scene requires, exactly (§1.2); `None`: any.
fn required_infos(scene: &str) -> Option<&'static [&'static str]> {
    match scene {
        "1000" => Some(&["活动名称", "奖励说明"]),
        "1011" => Some(&["赔付原因"]),
        "1005" => Some(&["岗位类型", "报酬说明"]),
        _ => None,
    }
}

fn report_infos(v: &Value, scene: &str) -> Result<Vec<ReportInfo>, V3Error> {
    let items = match v.get("transfer_scene_report_infos") {
        None | Some(Value::Null) => return Err(param_error(INFOS_MISSING_MESSAGE)),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(param_error(INFOS_MISSING_MESSAGE));
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(V3Error::param(
                "/transfer_scene_report_infos",
                "body",
                Some(other),
                "转账场景报备信息",
                "数组规则校验失败，字段类型错误",
            ));
        }
    };
    let mut infos = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(V3Error::param(
                &format!("/transfer_scene_report_infos/{i}"),
                "body",
                Some(item),
                "转账场景报备信息",
                "对象规则校验失败，字段类型错误",
            ));
        }
        let base = format!("/transfer_scene_report_infos/{i}");
        let info_type = text(v, &format!("{base}/info_type"), "信息类型", 15, true)?;
        let info_content = text(v, &format!("{base}/info_content"), "信息内容", 32, true)?;
        infos.push(ReportInfo {
            info_type: info_type.unwrap_or_default().to_owned(),
            info_content: info_content.unwrap_or_default().to_owned(),
        });
    }
    match required_infos(scene) {
        Some(required) => {
            let mut given: Vec<&str> = infos.iter().map(|i| i.info_type.as_str()).collect();
            given.sort_unstable();
            let mut wanted = required.to_vec();
            wanted.sort_unstable();
            if given != wanted {
                return Err(param_error(INFOS_WRONG_MESSAGE));
            }
        }
        None if infos.len() > MAX_REPORT_INFOS => {
            return Err(V3Error::param(
                "/transfer_scene_report_infos",
                "body",
                None,
                "转账场景报备信息",
                &format!("数组规则校验失败，元素个数大于最大值 {MAX_REPORT_INFOS}"),
            ));
        }
        None => {}
    }
    Ok(infos)
}

fn amount(v: &Value, max: u64) -> Result<u64, V3Error> {
    let field = "/transfer_amount";
    match v.pointer(field) {
        None | Some(Value::Null) => Err(V3Error::param(
            field,
            "body",
            None,
            "转账金额",
            "必填性规则校验失败，此字段为必填项",
        )),
        Some(n @ Value::Number(_)) => match n.as_u64() {
            Some(a) if (MIN_AMOUNT_FEN..=max).contains(&a) => Ok(a),
            Some(_) => Err(invalid(LIMIT_MESSAGE)),
            None => Err(V3Error::param(
                field,
                "body",
                Some(n),
                "转账金额",
                "整型规则校验失败，值必须为非负整数",
            )),
        },
        Some(other) => Err(V3Error::param(
            field,
            "body",
            Some(other),
            "转账金额",
            "整型规则校验失败，字段类型错误",
        )),
    }
}

fn check_recv_style(v: &Value, amount: u64) -> Result<(), V3Error> {
    match v.get("user_recv_style") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(_)) => match opt_str(v, "/user_recv_style/type", "收款方式", 32)? {
            None | Some("CONFIRM_PAGE") => Ok(()),
            Some("RED_PACKET") if amount <= RED_PACKET_MAX_FEN => Ok(()),
            Some("RED_PACKET") => Err(invalid(LIMIT_MESSAGE)),
            Some(_) => Err(V3Error::param(
                "/user_recv_style/type",
                "body",
                v.pointer("/user_recv_style/type"),
                "收款方式",
                "枚举值校验失败，只能为CONFIRM_PAGE或RED_PACKET",
            )),
        },
        Some(other) => Err(V3Error::param(
            "/user_recv_style",
            "body",
            Some(other),
            "收款方式",
            "对象规则校验失败，字段类型错误",
        )),
    }
}

/// Decrypts `user_name` with the key `Wechatpay-Serial` names: the WeChat Pay public key's
/// (unless the merchant uses certificates only) or the platform certificate's (unless it uses
/// the public key only).
fn decrypt_user_name(
    merchant: &MerchantAccount,
    headers: &HeaderMap,
    ciphertext: &str,
) -> Result<String, V3Error> {
    let serial = headers
        .get("wechatpay-serial")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            param_error(
                "Http头Wechatpay-Serial缺失：加密字段须注明所用的微信支付公钥ID或平台证书序列号",
            )
        })?;
    let mode = merchant.signer.mode();
    let key = if serial == merchant.credentials.wechatpay_public_key_id
        && mode != KeyMode::Certificate
    {
        &merchant.keys.public_key_key
    } else if normalize_serial(serial) == normalize_serial(&merchant.credentials.platform_serial)
        && mode != KeyMode::PublicKey
    {
        &merchant.keys.platform_key
    } else {
        return Err(param_error(
            "Http头Wechatpay-Serial无效：不是该商户的微信支付公钥ID或平台证书序列号",
        )
        .with_detail(json!({"field": "Wechatpay-Serial", "location": "header", "value": serial})));
    };
    let plain = key.oaep_decrypt_base64(ciphertext).map_err(|_| {
        param_error("user_name解密失败，请使用Wechatpay-Serial对应的公钥以RSA-OAEP加密")
            .with_detail(
                json!({"field": "/user_name", "location": "body", "issue": "decryption failed"}),
            )
    })?;
    String::from_utf8(plain).map_err(|_| param_error("user_name解密后不是UTF-8文本"))
}

/// What the create calls share once checked.
struct NewBill {
    appid: String,
    out_bill_no: String,
    scene: String,
    amount: u64,
    remark: String,
    notify_url: Option<String>,
    perception: Option<String>,
    infos: Vec<ReportInfo>,
    user_name: Option<String>,
    user_name_plain: Option<String>,
    request: Value,
}

fn check_new_bill(
    state: &AppState,
    merchant: &MerchantAccount,
    headers: &HeaderMap,
    v: &Value,
) -> Result<NewBill, V3Error> {
    let appid = req_text(v, "/appid", "商户AppID", 32)?;
    let out_bill_no = req_text(v, "/out_bill_no", "商户单号", 32)?;
    check_merchant_no(v, "/out_bill_no", "商户单号", out_bill_no)?;
    let scene = check_scene(v)?;
    let remark = req_text(v, "/transfer_remark", "转账备注", 32)?;
    let notify_url = text(v, "/notify_url", "通知地址", 256, false)?;
    if let Some(url) = notify_url {
        check_notify_url(v, "/notify_url", url)?;
    }
    let settings = state.transfers.settings();
    let amount = amount(v, settings.single_max_fen)?;
    let perception = check_perception(v, scene)?;
    let infos = report_infos(v, scene)?;
    check_recv_style(v, amount)?;
    let user_name = opt_str(v, "/user_name", "收款用户姓名", 1024)?.filter(|s| !s.is_empty());
    let user_name_plain = match user_name {
        None if amount >= USER_NAME_REQUIRED_FEN => {
            return Err(V3Error::param(
                "/user_name",
                "body",
                None,
                "收款用户姓名",
                "转账金额大于等于2000元时必填",
            ));
        }
        None => None,
        Some(_) if amount < USER_NAME_MIN_FEN => {
            return Err(V3Error::param(
                "/user_name",
                "body",
                None,
                "收款用户姓名",
                "转账金额小于0.3元时不支持传入收款用户姓名",
            ));
        }
        Some(cipher) => Some(decrypt_user_name(merchant, headers, cipher)?),
    };
    check_appid(state, merchant, appid)?;
    let mut request = v.clone();
    if let Some(map) = request.as_object_mut() {
        map.remove("user_name");
    }
    Ok(NewBill {
        appid: appid.to_owned(),
        out_bill_no: out_bill_no.to_owned(),
        scene: scene.to_owned(),
        amount,
        remark: remark.to_owned(),
        notify_url: notify_url.map(str::to_owned),
        perception: perception.map(str::to_owned),
        infos,
        user_name: user_name.map(str::to_owned),
        user_name_plain,
        request,
    })
}

/// The stored bill again for the same request; 400 for another one.
fn existing(txn: &Txn<'_>, key: &Key, new: &NewBill) -> Result<Option<BillLine>, V3Error> {
    match txn.inner.bills.get(key) {
        None => Ok(None),
        Some(bill)
            if bill.request == new.request && bill.user_name_plain == new.user_name_plain =>
        {
            Ok(Some(bill.clone()))
        }
        Some(_) => Err(invalid(
            "商户单号已存在，且请求参数与原单不一致，请使用原单参数重试或更换商户单号",
        )),
    }
}

fn not_enough() -> V3Error {
    V3Error::new(StatusCode::FORBIDDEN, "NOT_ENOUGH", NOT_ENOUGH_MESSAGE)
}

/// Takes the amount from the balance, or refuses with 403 `NOT_ENOUGH`.
fn lock_funds(
    txn: &mut Txn<'_>,
    state: &AppState,
    mchid: &str,
    amount: u64,
) -> Result<(), V3Error> {
    let balance = txn.inner.balance(mchid);
    if state.faults.get().transfer_not_enough || balance < amount {
        return Err(not_enough());
    }
    txn.set_balance(mchid, balance - amount);
    Ok(())
}

/// The state a new bill of `POST /transfer-bills` starts in, by the settings, its funds taken
/// when they are to be (or 403 `NOT_ENOUGH`): `(state, funds_locked)`.
fn first_state(
    txn: &mut Txn<'_>,
    state: &AppState,
    mchid: &str,
    amount: u64,
) -> Result<(BillState, bool), V3Error> {
    let settings = txn.inner.settings;
    if state.faults.get().transfer_not_enough {
        return Err(not_enough());
    }
    let balance = txn.inner.balance(mchid);
    let funded = match settings.low_balance {
        LowBalance::NotEnough => {
            lock_funds(txn, state, mchid, amount)?;
            true
        }
        // Taken now only if the bill is not to be accepted first: else at the next tick.
        LowBalance::Processing if !settings.accept_first && balance >= amount => {
            txn.set_balance(mchid, balance - amount);
            true
        }
        LowBalance::Processing => false,
    };
    let first = if settings.accept_first {
        BillState::Accepted
    } else if funded {
        BillState::WaitUserConfirm
    } else {
        BillState::Processing
    };
    Ok((first, funded))
}

fn bill_of(new: NewBill, mchid: &str, openid: &str, txn: &mut Txn<'_>) -> BillLine {
    let now = txn.now;
    let seq = txn.next_seq();
    BillLine {
        mchid: mchid.to_owned(),
        out_bill_no: new.out_bill_no,
        transfer_bill_no: transfer_bill_no(seq, now),
        appid: new.appid,
        openid: openid.to_owned(),
        transfer_scene_id: new.scene,
        transfer_amount: new.amount,
        transfer_remark: new.remark,
        notify_url: new.notify_url,
        user_recv_perception: new.perception,
        report_infos: new.infos,
        user_name: new.user_name,
        user_name_plain: new.user_name_plain,
        request: new.request,
        state: BillState::WaitUserConfirm,
        fail_reason: None,
        package_info: None,
        out_authorization_no: None,
        create_time: now,
        update_time: now,
        expire_at: now + txn.inner.settings.confirm_ttl_secs,
        finish_at: None,
        funds_locked: true,
    }
}

// ---------------------------------------------------------------------------------------------
// v3 handlers

/// The transfer routes (state not applied), mounted inside the v3 router behind its
/// authentication and answer signing.
pub(crate) fn v3_routes() -> Router<Arc<AppState>> {
    const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";
    const AUTH: &str = "/v3/fund-app/mch-transfer/user-confirm-authorization";
    Router::new()
        .route(BILLS, post(create_bill))
        .route(&format!("{BILLS}/transfer"), post(transfer_authorized))
        .route(
            &format!("{BILLS}/pre-transfer-with-authorization"),
            post(pre_transfer_with_authorization),
        )
        .route(
            &format!("{BILLS}/out-bill-no/{{out_bill_no}}"),
            get(query_by_out_bill_no),
        )
        .route(
            &format!("{BILLS}/transfer-bill-no/{{transfer_bill_no}}"),
            get(query_by_transfer_bill_no),
        )
        .route(
            &format!("{BILLS}/out-bill-no/{{out_bill_no}}/cancel"),
            post(cancel_bill),
        )
        .route(AUTH, post(create_authorization))
        .route(
            &format!("{AUTH}/out-authorization-no/{{no}}"),
            get(query_authorization),
        )
        .route(
            &format!("{AUTH}/out-authorization-no/{{no}}/close"),
            post(close_authorization_api),
        )
}

async fn create_bill(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let new = check_new_bill(&state, &merchant, &headers, &v)?;
    let openid = req_text(&v, "/openid", "收款用户OpenID", 64)?;
    check_openid(&state, &new.appid, openid, "/openid")?;
    let mchid = merchant.mchid().to_owned();
    let bill = state.transfers.run(&state, |txn| {
        let key = (mchid.clone(), new.out_bill_no.clone());
        if let Some(bill) = existing(txn, &key, &new)? {
            return Ok(bill);
        }
        let (first, funded) = first_state(txn, &state, &mchid, new.amount)?;
        let mut bill = bill_of(new, &mchid, openid, txn);
        bill.state = first;
        bill.funds_locked = funded;
        if first == BillState::Processing {
            bill.expire_at = txn.now + LOCK_FUNDS_TTL_SECS;
        }
        // Made now, shown (create answer, re-POST) and accepted by the confirmation page only
        // once the bill waits for the user.
        let mut package = bill_package();
        while txn.inner.by_package.contains_key(&package) {
            package = bill_package();
        }
        bill.package_info = Some(package);
        txn.save_bill(&bill);
        Ok::<_, V3Error>(bill)
    })?;
    Ok(axum::Json(created_json(&bill)).into_response())
}

fn find_authorization<'a>(
    txn: &'a Txn<'_>,
    mchid: &str,
    v: &Value,
) -> Result<&'a AuthorizationLine, V3Error> {
    let by_id = text(v, "/authorization_id", "授权ID", 64, false)?;
    let by_no = text(v, "/out_authorization_no", "商户授权单号", 32, false)?;
    let key = match (by_id, by_no) {
        (Some(id), _) => txn.inner.auth_by_id.get(id).cloned(),
        (None, Some(no)) => Some((mchid.to_owned(), no.to_owned())),
        (None, None) => {
            return Err(param_error(
                "authorization_id和out_authorization_no必须二选一",
            ));
        }
    };
    key.and_then(|k| txn.inner.auths.get(&k))
        .filter(|a| a.mchid == mchid)
        .ok_or_else(|| invalid("用户授权不存在"))
}

async fn transfer_authorized(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let new = check_new_bill(&state, &merchant, &headers, &v)?;
    let given_openid = text(&v, "/openid", "收款用户OpenID", 64, false)?;
    let mchid = merchant.mchid().to_owned();
    let bill = state.transfers.run(&state, |txn| {
        let key = (mchid.clone(), new.out_bill_no.clone());
        if let Some(bill) = existing(txn, &key, &new)? {
            return Ok(bill);
        }
        let auth = find_authorization(txn, &mchid, &v)?;
        if auth.state != AuthorizationState::TakingEffect {
            return Err(invalid("用户授权未生效或已关闭"));
        }
        if auth.appid != new.appid {
            return Err(invalid("appid与用户授权的appid不一致"));
        }
        if auth.transfer_scene_id != new.scene {
            return Err(invalid("转账场景与用户授权的转账场景不一致"));
        }
        if given_openid.is_some_and(|o| o != auth.openid) {
            return Err(invalid("openid与用户授权的openid不一致"));
        }
        let (openid, out_authorization_no) =
            (auth.openid.clone(), auth.out_authorization_no.clone());
        lock_funds(txn, &state, &mchid, new.amount)?;
        let mut bill = bill_of(new, &mchid, &openid, txn);
        bill.out_authorization_no = Some(out_authorization_no);
        bill.state = BillState::Transfering;
        let now = txn.now;
        Ok(txn.finish(bill, now))
    })?;
    let mut answer = bill_json(&bill);
    if let Some(no) = &bill.out_authorization_no {
        answer["out_authorization_no"] = json!(no);
    }
    Ok(axum::Json(answer).into_response())
}

/// `authorization_info` of a pre-transfer, checked.
struct AuthorizationInfo<'a> {
    user_display_name: &'a str,
    out_authorization_no: &'a str,
    notify_url: &'a str,
}

fn authorization_info(v: &Value) -> Result<Option<AuthorizationInfo<'_>>, V3Error> {
    match v.get("authorization_info") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(_)) => {
            let display = req_text(
                v,
                "/authorization_info/user_display_name",
                "用户展示名称",
                32,
            )?;
            let no_field = "/authorization_info/out_authorization_no";
            let no = req_text(v, no_field, "商户侧授权单号", 32)?;
            check_merchant_no(v, no_field, "商户侧授权单号", no)?;
            let url_field = "/authorization_info/authorization_notify_url";
            let url = req_text(v, url_field, "自动收款授权结果通知地址", 256)?;
            check_notify_url(v, url_field, url)?;
            Ok(Some(AuthorizationInfo {
                user_display_name: display,
                out_authorization_no: no,
                notify_url: url,
            }))
        }
        Some(other) => Err(V3Error::param(
            "/authorization_info",
            "body",
            Some(other),
            "自动收款授权信息",
            "对象规则校验失败，字段类型错误",
        )),
    }
}

/// The create answer plus the authorization's `user_display_name` and `out_authorization_no`.
fn pre_transfer_json(bill: &BillLine, auth: Option<&AuthorizationLine>) -> Value {
    let mut v = created_json(bill);
    if let Some(a) = auth {
        v["user_display_name"] = json!(a.user_display_name);
        v["out_authorization_no"] = json!(a.out_authorization_no);
    }
    v
}

/// `POST .../transfer-bills/pre-transfer-with-authorization` (§1.11): a bill waiting for the
/// user, as `create_bill` makes it, plus an authorization waiting for the same confirmation
/// (same package, same expiry).
async fn pre_transfer_with_authorization(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let new = check_new_bill(&state, &merchant, &headers, &v)?;
    let openid = req_text(&v, "/openid", "收款用户OpenID", 64)?;
    let info = authorization_info(&v)?;
    if let Some(sponsor) = text(&v, "/sponsor_mchid", "出资商户号", 32, false)?
        && !sponsor.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(V3Error::param(
            "/sponsor_mchid",
            "body",
            v.pointer("/sponsor_mchid"),
            "出资商户号",
            "字符串规则校验失败，须为数字",
        ));
    }
    check_openid(&state, &new.appid, openid, "/openid")?;
    let mchid = merchant.mchid().to_owned();
    let (bill, auth) = state.transfers.run(&state, |txn| {
        let key = (mchid.clone(), new.out_bill_no.clone());
        if let Some(bill) = existing(txn, &key, &new)? {
            let auth = bill.out_authorization_no.as_ref().and_then(|no| {
                txn.inner
                    .auths
                    .get(&(mchid.clone(), no.clone()))
                    .filter(|a| a.out_bill_no.as_deref() == Some(bill.out_bill_no.as_str()))
                    .cloned()
            });
            return Ok((bill, auth));
        }
        if let Some(info) = &info {
            if txn
                .inner
                .auths
                .contains_key(&(mchid.clone(), info.out_authorization_no.to_owned()))
            {
                return Err(invalid("商户侧授权单号已存在，请更换商户侧授权单号"));
            }
            if has_effective_authorization(&txn.inner, &mchid, openid, &new.scene) {
                return Err(invalid(EFFECTIVE_AUTHORIZATION_MESSAGE));
            }
        }
        lock_funds(txn, &state, &mchid, new.amount)?;
        let mut bill = bill_of(new, &mchid, openid, txn);
        let mut package = bill_package();
        while txn.inner.by_package.contains_key(&package) {
            package = bill_package();
        }
        bill.package_info = Some(package.clone());
        let auth = info.map(|info| AuthorizationLine {
            mchid: mchid.clone(),
            out_authorization_no: info.out_authorization_no.to_owned(),
            authorization_id: None,
            appid: bill.appid.clone(),
            openid: bill.openid.clone(),
            transfer_scene_id: bill.transfer_scene_id.clone(),
            user_display_name: info.user_display_name.to_owned(),
            user_recv_perception: bill.user_recv_perception.clone(),
            notify_url: info.notify_url.to_owned(),
            request: v.clone(),
            state: AuthorizationState::WaitUserConfirm,
            package_info: package,
            authorize_time: None,
            close_time: None,
            close_reason: None,
            create_time: bill.create_time,
            update_time: bill.create_time,
            expire_at: bill.expire_at,
            out_bill_no: Some(bill.out_bill_no.clone()),
        });
        bill.out_authorization_no = auth.as_ref().map(|a| a.out_authorization_no.clone());
        txn.save_bill(&bill);
        if let Some(a) = &auth {
            txn.save_auth(a, None);
        }
        Ok::<_, V3Error>((bill, auth))
    })?;
    Ok(axum::Json(pre_transfer_json(&bill, auth.as_ref())).into_response())
}

async fn query_by_out_bill_no(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_bill_no): Path<String>,
) -> Result<Response, V3Error> {
    let key = (merchant.mchid().to_owned(), out_bill_no);
    let bill = state
        .transfers
        .run(&state, |txn| txn.inner.bills.get(&key).cloned())
        .ok_or_else(not_found)?;
    Ok(axum::Json(bill_json(&bill)).into_response())
}

async fn query_by_transfer_bill_no(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(transfer_bill_no): Path<String>,
) -> Result<Response, V3Error> {
    let bill = state
        .transfers
        .run(&state, |txn| {
            let key = txn.inner.by_bill_no.get(&transfer_bill_no)?;
            txn.inner.bills.get(key).cloned()
        })
        .filter(|b| b.mchid == merchant.mchid())
        .ok_or_else(not_found)?;
    Ok(axum::Json(bill_json(&bill)).into_response())
}

async fn cancel_bill(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(out_bill_no): Path<String>,
) -> Result<Response, V3Error> {
    let key = (merchant.mchid().to_owned(), out_bill_no);
    let bill = state.transfers.run(&state, |txn| {
        let mut bill = txn.inner.bills.get(&key).cloned().ok_or_else(not_found)?;
        match bill.state {
            BillState::WaitUserConfirm | BillState::Accepted | BillState::Processing => {}
            BillState::Transfering => {
                return Err(invalid("用户已确认收款，转账中的单据不可撤销"));
            }
            _ => return Err(invalid("单据已是终态，不可撤销")),
        }
        bill.state = BillState::Cancelled;
        bill.update_time = txn.now;
        txn.release_funds(&mut bill);
        txn.save_bill(&bill);
        let now = txn.now;
        txn.close_pending_authorization(&bill, "CLOSE_VIA_MCH_API", now);
        Ok(bill)
    })?;
    Ok(axum::Json(json!({
        "out_bill_no": bill.out_bill_no,
        "transfer_bill_no": bill.transfer_bill_no,
        "state": BillState::Canceling.as_str(),
        "update_time": rfc3339_cst(bill.update_time),
    }))
    .into_response())
}

/// The create answer of an authorization: its stored `package_info` always (a re-POST after the
/// user confirmed still carries it, with the current state).
fn authorization_created_json(auth: &AuthorizationLine) -> Value {
    json!({
        "out_authorization_no": auth.out_authorization_no,
        "state": auth.state.as_str(),
        "create_time": rfc3339_cst(auth.create_time),
        "package_info": auth.package_info,
    })
}

fn check_scene_info(v: &Value) -> Result<(), V3Error> {
    match v.get("scene_info") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(_)) => {
            text(v, "/scene_info/client_ip", "用户终端IP", 45, false)?;
            text(v, "/scene_info/device_id", "设备ID", 64, false)?;
            match text(v, "/scene_info/device_type", "设备类型", 16, false)? {
                None | Some("IOS" | "ANDROID" | "HARMONY" | "OTHER") => Ok(()),
                Some(_) => Err(V3Error::param(
                    "/scene_info/device_type",
                    "body",
                    v.pointer("/scene_info/device_type"),
                    "设备类型",
                    "枚举值校验失败，只能为IOS、ANDROID、HARMONY或OTHER",
                )),
            }
        }
        Some(other) => Err(V3Error::param(
            "/scene_info",
            "body",
            Some(other),
            "场景信息",
            "对象规则校验失败，字段类型错误",
        )),
    }
}

async fn create_authorization(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    body: Bytes,
) -> Result<Response, V3Error> {
    let v = parse_body(&body)?;
    let no = req_text(&v, "/out_authorization_no", "商户授权单号", 32)?;
    check_merchant_no(&v, "/out_authorization_no", "商户授权单号", no)?;
    let appid = req_text(&v, "/appid", "商户AppID", 32)?;
    let openid = req_text(&v, "/openid", "用户OpenID", 64)?;
    let scene = check_scene(&v)?;
    let display = req_text(&v, "/user_display_name", "用户展示名称", 32)?;
    let perception = check_perception(&v, scene)?;
    let notify_url = req_text(&v, "/authorization_notify_url", "授权结果通知地址", 256)?;
    check_notify_url(&v, "/authorization_notify_url", notify_url)?;
    check_scene_info(&v)?;
    check_appid(&state, &merchant, appid)?;
    check_openid(&state, appid, openid, "/openid")?;
    let mchid = merchant.mchid().to_owned();
    let auth = state.transfers.run(&state, |txn| {
        let key = (mchid.clone(), no.to_owned());
        if let Some(auth) = txn.inner.auths.get(&key) {
            return if auth.request == v {
                Ok(auth.clone())
            } else {
                Err(invalid(
                    "商户授权单号已存在，且请求参数与原单不一致，请使用原单参数重试或更换商户授权单号",
                ))
            };
        }
        if has_effective_authorization(&txn.inner, &mchid, openid, scene) {
            return Err(invalid(EFFECTIVE_AUTHORIZATION_MESSAGE));
        }
        let mut package = authorization_package();
        while txn.inner.auth_by_package.contains_key(&package) {
            package = authorization_package();
        }
        let now = txn.now;
        let auth = AuthorizationLine {
            mchid: mchid.clone(),
            out_authorization_no: no.to_owned(),
            authorization_id: None,
            appid: appid.to_owned(),
            openid: openid.to_owned(),
            transfer_scene_id: scene.to_owned(),
            user_display_name: display.to_owned(),
            user_recv_perception: perception.map(str::to_owned),
            notify_url: notify_url.to_owned(),
            request: v.clone(),
            state: AuthorizationState::WaitUserConfirm,
            package_info: package,
            authorize_time: None,
            close_time: None,
            close_reason: None,
            create_time: now,
            update_time: now,
            expire_at: now + txn.inner.settings.confirm_ttl_secs,
            out_bill_no: None,
        };
        txn.save_auth(&auth, None);
        Ok(auth)
    })?;
    Ok(axum::Json(authorization_created_json(&auth)).into_response())
}

async fn query_authorization(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(no): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, V3Error> {
    if let Some(flag) = query.get("is_display_authorization")
        && !matches!(flag.as_str(), "" | "true" | "false")
    {
        return Err(V3Error::param(
            "is_display_authorization",
            "query",
            Some(&json!(flag)),
            "是否展示授权",
            "布尔值校验失败，只能为true或false",
        ));
    }
    let key = (merchant.mchid().to_owned(), no);
    let auth = state
        .transfers
        .run(&state, |txn| txn.inner.auths.get(&key).cloned())
        .ok_or_else(not_found)?;
    Ok(axum::Json(authorization_json(&auth)).into_response())
}

async fn close_authorization_api(
    State(state): State<Arc<AppState>>,
    Extension(merchant): Extension<Arc<MerchantAccount>>,
    Path(no): Path<String>,
) -> Result<Response, V3Error> {
    let key = (merchant.mchid().to_owned(), no);
    let auth = state.transfers.run(&state, |txn| {
        let mut auth = txn.inner.auths.get(&key).cloned().ok_or_else(not_found)?;
        if auth.state == AuthorizationState::Closed {
            return Err(invalid("用户授权已关闭"));
        }
        close_authorization(&mut auth, "CLOSE_VIA_MCH_API", txn.now);
        txn.save_auth(&auth, Some("MCHTRANSFER.AUTHORIZATION.CLOSED"));
        Ok(auth)
    })?;
    Ok(axum::Json(authorization_json(&auth)).into_response())
}

// ---------------------------------------------------------------------------------------------
// The user's side and the control API

/// `POST /sim/transfers/confirm` (open, like `/sim/pay`: the package is the credential) (state
/// applied).
pub fn open_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/sim/transfers/confirm", post(confirm))
        .with_state(state)
}

/// `GET /sim/transfers`, `GET|PUT /sim/transfers/settings`,
/// `GET|PUT /sim/merchants/{mchid}/balance` (state applied; the caller adds the control check).
pub fn control_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/sim/transfers", get(list))
        .route(
            "/sim/transfers/settings",
            get(get_settings).put(put_settings),
        )
        .route(
            "/sim/merchants/{mchid}/balance",
            put(put_balance).get(get_balance),
        )
        .with_state(state)
}

fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// A refusal as the WeChat client reports it: `errMsg` `requestMerchantTransfer:fail ...`.
fn client_fail(reason: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"errMsg": format!("requestMerchantTransfer:fail {reason}")})),
    )
        .into_response()
}

/// The `wx.requestMerchantTransfer` object, the confirming user and what they do.
#[derive(Deserialize)]
struct ConfirmRequest {
    #[serde(rename = "mchId")]
    mch_id: String,
    #[serde(rename = "appId", default)]
    app_id: Option<String>,
    package: String,
    #[serde(rename = "openId", default)]
    open_id: Option<String>,
    openid: String,
    #[serde(default)]
    result: Option<String>,
}

enum Confirmed {
    /// The bill, and the authorization its confirmation granted (pre-transfer).
    Bill(BillLine, Option<Box<AuthorizationLine>>),
    Authorization(AuthorizationLine),
    Fail(&'static str),
}

fn confirm_bill(txn: &mut Txn<'_>, request: &ConfirmRequest, cancel: bool) -> Confirmed {
    let Some(mut bill) = txn
        .inner
        .by_package
        .get(&request.package)
        .and_then(|k| txn.inner.bills.get(k))
        .cloned()
    else {
        return Confirmed::Fail(PACKAGE_ERROR);
    };
    if !matches!(
        bill.state,
        BillState::WaitUserConfirm | BillState::Transfering
    ) {
        return Confirmed::Fail(PACKAGE_ERROR);
    }
    if request.mch_id != bill.mchid {
        return Confirmed::Fail(MCHID_ERROR);
    }
    if request.app_id.as_deref() != Some(bill.appid.as_str()) {
        return Confirmed::Fail(PACKAGE_ERROR);
    }
    if request.openid != bill.openid || request.open_id.as_ref().is_some_and(|o| *o != bill.openid)
    {
        return Confirmed::Fail(OPENID_ERROR);
    }
    if cancel || bill.state == BillState::Transfering {
        return Confirmed::Bill(bill, None);
    }
    // The same confirmation grants the authorization a pre-transfer carries, whatever the
    // payment's outcome.
    let auth = txn
        .pending_authorization(&bill)
        .map(|a| Box::new(txn.take_effect(a)));
    let now = txn.now;
    bill.state = BillState::Transfering;
    bill.update_time = now;
    let delay = txn.inner.settings.transfering_secs;
    if delay == 0 {
        return Confirmed::Bill(txn.finish(bill, now), auth);
    }
    bill.finish_at = Some(now + delay);
    txn.save_bill(&bill);
    Confirmed::Bill(bill, auth)
}

fn confirm_authorization(txn: &mut Txn<'_>, request: &ConfirmRequest, cancel: bool) -> Confirmed {
    let Some(auth) = txn
        .inner
        .auth_by_package
        .get(&request.package)
        .and_then(|k| txn.inner.auths.get(k))
        .cloned()
    else {
        return Confirmed::Fail(PACKAGE_ERROR);
    };
    if auth.state != AuthorizationState::WaitUserConfirm {
        return Confirmed::Fail(PACKAGE_ERROR);
    }
    if request.mch_id != auth.mchid {
        return Confirmed::Fail(MCHID_ERROR);
    }
    if request.app_id.as_deref() != Some(auth.appid.as_str()) {
        return Confirmed::Fail(PACKAGE_ERROR);
    }
    if request.openid != auth.openid || request.open_id.as_ref().is_some_and(|o| *o != auth.openid)
    {
        return Confirmed::Fail(OPENID_ERROR);
    }
    if cancel {
        return Confirmed::Authorization(auth);
    }
    Confirmed::Authorization(txn.take_effect(auth))
}

async fn confirm(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: ConfirmRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return control_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
        }
    };
    let cancel = match request.result.as_deref() {
        None | Some("CONFIRM") => false,
        Some("CANCEL") => true,
        Some(other) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                format!("result must be CONFIRM or CANCEL, not {other:?}"),
            );
        }
    };
    let outcome = state.transfers.run(&state, |txn| {
        if request.package.starts_with(AUTHORIZATION_PACKAGE_PREFIX) {
            confirm_authorization(txn, &request, cancel)
        } else {
            confirm_bill(txn, &request, cancel)
        }
    });
    let errmsg = if cancel {
        "requestMerchantTransfer:fail cancel"
    } else {
        "requestMerchantTransfer:ok"
    };
    match outcome {
        Confirmed::Fail(reason) => client_fail(reason),
        Confirmed::Bill(bill, auth) => {
            let mut answer = json!({
                "errMsg": errmsg,
                "out_bill_no": bill.out_bill_no,
                "transfer_bill_no": bill.transfer_bill_no,
                "state": bill.state.as_str(),
            });
            if let Some(r) = &bill.fail_reason {
                answer["fail_reason"] = json!(r);
            }
            if let Some(a) = auth {
                answer["authorization"] = json!({
                    "out_authorization_no": a.out_authorization_no,
                    "authorization_id": a.authorization_id,
                    "state": a.state.as_str(),
                });
            }
            axum::Json(answer).into_response()
        }
        Confirmed::Authorization(auth) => axum::Json(json!({
            "errMsg": errmsg,
            "out_authorization_no": auth.out_authorization_no,
            "authorization_id": auth.authorization_id,
            "state": auth.state.as_str(),
        }))
        .into_response(),
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    tick(&state);
    let mchid = query
        .get("mchid")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let openid = query
        .get("openid")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let bills: Vec<Value> = state
        .transfers
        .bills(mchid, openid)
        .iter()
        .map(control_bill_json)
        .collect();
    let auths: Vec<Value> = state
        .transfers
        .authorizations(mchid, openid)
        .iter()
        .map(|a| {
            let mut v = authorization_json(a);
            v["package_info"] = json!(a.package_info);
            v["authorization_notify_url"] = json!(a.notify_url);
            v["user_recv_perception"] = json!(a.user_recv_perception);
            v["expire_time"] = json!(rfc3339_cst(a.expire_at));
            v["out_bill_no"] = json!(a.out_bill_no);
            v
        })
        .collect();
    axum::Json(json!({"transfers": bills, "authorizations": auths})).into_response()
}

async fn get_settings(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.transfers.settings()).into_response()
}

async fn put_settings(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let change: SettingsChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return control_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
        }
    };
    match state.transfers.change_settings(change) {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Balance {
    balance_fen: u64,
}

fn balance_json(state: &AppState, mchid: &str) -> Value {
    json!({"mchid": mchid, "balance_fen": state.transfers.balance(mchid)})
}

async fn put_balance(
    State(state): State<Arc<AppState>>,
    Path(mchid): Path<String>,
    body: Bytes,
) -> Response {
    if state.merchant_account(&mchid).is_none() {
        return control_error(StatusCode::NOT_FOUND, format!("no merchant {mchid}"));
    }
    let balance: Balance = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return control_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
        }
    };
    state.transfers.set_balance(&mchid, balance.balance_fen);
    // A top-up lets the bills waiting for funds (PROCESSING) go on at once.
    tick(&state);
    axum::Json(balance_json(&state, &mchid)).into_response()
}

async fn get_balance(State(state): State<Arc<AppState>>, Path(mchid): Path<String>) -> Response {
    if state.merchant_account(&mchid).is_none() {
        return control_error(StatusCode::NOT_FOUND, format!("no merchant {mchid}"));
    }
    axum::Json(balance_json(&state, &mchid)).into_response()
}

/// Adds the transfer facts of `mchid` to a control view of a merchant: `balance_fen` and how
/// many bills it has.
pub fn annotate_merchant(state: &AppState, mchid: &str, view: &mut Value) {
    if let Value::Object(map) = view {
        let inner = state.transfers.lock();
        map.insert("balance_fen".into(), json!(inner.balance(mchid)));
        map.insert(
            "transfer_bills".into(),
            json!(inner.bills.keys().filter(|(m, _)| m == mchid).count()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_captured_shapes() {
        let no = transfer_bill_no(42, 1_700_000_000);
        assert_eq!(no.len(), 34);
        assert!(no.starts_with("133000000000042231115"), "{no}");
        assert!(no.bytes().all(|b| b.is_ascii_digit()));
        let package = bill_package();
        assert_eq!(package.len(), 156);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&package)
            .unwrap();
        assert_eq!(bytes.len(), 116);
        assert_eq!(&bytes[..12], &PACKAGE_PREFIX);
        assert!(authorization_package().starts_with("0002-"));
    }

    #[test]
    fn scene_rules() {
        let body = |infos: Value| json!({"transfer_scene_report_infos": infos});
        let ok = body(json!([
            {"info_type": "活动名称", "info_content": "新会员有礼"},
            {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"},
        ]));
        assert_eq!(report_infos(&ok, "1000").unwrap().len(), 2);
        let one = body(json!([{"info_type": "活动名称", "info_content": "x"}]));
        let refused = format!("{:?}", report_infos(&one, "1000").unwrap_err());
        assert!(refused.contains("PARAM_ERROR") && refused.contains(INFOS_WRONG_MESSAGE));
        assert!(report_infos(&body(json!([])), "1006").is_err());
        assert!(report_infos(&one, "1006").is_ok());
        let long =
            body(json!([{"info_type": "一二三四五六七八九十一二三四五六", "info_content": "x"}]));
        assert!(report_infos(&long, "1006").is_err());
    }
}
