//! The state every handler shares: merchant, keys, orders, notification dispatcher, faults.
//!
//! The v2 endpoints (`crate::v2`) and the mini-program side (`crate::mp`) program against this
//! type: [`AppState::store`] for the business rules, [`AppState::merchant`] for the v2 key and
//! ids, [`AppState::dispatcher`] to send notifications, [`AppState::start_refund_processing`]
//! after a refund is accepted, [`AppState::set_v2_refund_notifier`] for the v2 refund
//! notification (its encrypted `req_info` is made by the v2 code).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use wxpay::nonce::Clock as _;
use wxpay::v3::aead::ApiV3Key;

use crate::faults::FaultState;
use crate::journal::{Entry, Journal};
use crate::merchant::{MerchantCredentials, SimulatorKeys};
use crate::mp::MiniProgram;
use crate::notify::{Dispatcher, NewDelivery};
use crate::signer::{KeyMode, PlatformSigner};
use crate::state::{ApiVersion, Order, Refund, RefundStatus, SimClock, Store};

/// Makes the v2 refund notification of a refund that reached a final state (the `req_info`
/// encryption lives with the v2 code). Returns `None` when no notification is due (no
/// `notify_url`).
pub type V2RefundNotifier =
    Arc<dyn Fn(&AppState, &Order, &Refund) -> Option<NewDelivery> + Send + Sync>;

/// How long a bill `download_url` works: 5 minutes (§B.14).
pub const BILL_URL_TTL_SECS: i64 = 300;

/// A prepared bill download.
#[derive(Clone, Debug)]
pub struct BillDownload {
    /// The answer body (gzip bytes when asked for).
    pub body: Vec<u8>,
    /// Whether `body` is gzip.
    pub gzip: bool,
    /// Until when the token works (simulated Unix seconds).
    pub expires_at: i64,
}

/// The shared state of the simulator.
pub struct AppState {
    /// Time scale: notification retries and refund processing run this many times faster.
    pub time_scale: f64,
    /// The simulated clock (business time).
    pub clock: Arc<SimClock>,
    /// Orders and refunds.
    pub store: Store,
    /// The merchant's material (the simulator checks its signatures with it).
    pub merchant: MerchantCredentials,
    /// The simulator's keys.
    pub keys: SimulatorKeys,
    /// Signs v3 answers and notifications.
    pub signer: Arc<PlatformSigner>,
    /// The merchant's APIv3 key (encrypts notification resources and certificates).
    pub api_v3_key: ApiV3Key,
    /// Fault settings.
    pub faults: Arc<FaultState>,
    /// The notification dispatcher.
    pub dispatcher: Arc<Dispatcher>,
    /// The mini-program side (users, wx.login codes).
    pub mp: Arc<MiniProgram>,
    /// Service-provider mode (any merchant as a provider): sub-merchants, their users, partner
    /// orders.
    pub partner: crate::partner::Partner,
    /// Trade management (shipping, receipt, settlement) of the mini program's paid orders.
    pub trade: crate::trade::TradeManagement,
    /// Message push of the mini program (settings, log).
    pub mp_push: crate::mp_push::MpPush,
    /// Merchant transfers (商家转账): bills, authorizations, balances, payees' real names.
    pub transfers: crate::transfers::Transfers,
    /// Bill download tokens.
    pub bill_downloads: Mutex<HashMap<String, BillDownload>>,
    base_url: String,
    v2_refund_notifier: OnceLock<V2RefundNotifier>,
    /// SHA-256 of the control token (see [`crate::SimConfig::control_token`]).
    control_token_digest: Option<[u8; 32]>,
    /// Every merchant (the first one first) and every mini program (the first one first).
    tenants: Tenants,
    state_dir: Option<PathBuf>,
    journal: Option<Arc<Journal>>,
    migrating_ratio: f64,
}

/// One merchant as WeChat Pay knows it: its keys (to verify its requests), its WeChat Pay keys
/// (to sign answers and notifications for it) and its APIv3 key.
pub struct MerchantAccount {
    /// The merchant's material.
    pub credentials: MerchantCredentials,
    /// Its keys on the simulator side (platform and public-key keys, merchant public key).
    pub keys: SimulatorKeys,
    /// Signs its v3 answers and notifications.
    pub signer: Arc<PlatformSigner>,
    /// Its APIv3 key.
    pub api_v3_key: ApiV3Key,
}

impl std::fmt::Debug for MerchantAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantAccount")
            .field("credentials", &self.credentials)
            .field("key_mode", &self.signer.mode())
            .finish_non_exhaustive()
    }
}

impl MerchantAccount {
    /// The merchant id.
    #[must_use]
    pub fn mchid(&self) -> &str {
        &self.credentials.mchid
    }

    /// What `GET /sim/merchants` shows (no key).
    #[must_use]
    pub fn public_json(&self) -> serde_json::Value {
        let c = &self.credentials;
        serde_json::json!({
            "mchid": c.mchid,
            "key_mode": self.signer.mode().as_str(),
            "merchant_serial": c.merchant_serial,
            "platform_serial": c.platform_serial,
            "wechatpay_public_key_id": c.wechatpay_public_key_id,
            "merchant_json": c.merchant_json_path,
            "merchant_dir": c.merchant_json_path.as_ref().and_then(|p| p.parent()),
        })
    }
}

/// One mini program and the merchant it is bound to.
pub struct AppEntry {
    /// The mini program.
    pub mp: Arc<MiniProgram>,
    /// The merchant id it is bound to.
    pub mchid: String,
    /// Its routes of `api.weixin.qq.com`.
    pub router: axum::Router,
}

impl std::fmt::Debug for AppEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppEntry")
            .field("appid", &self.mp.appid())
            .field("mchid", &self.mchid)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Tenants {
    merchants: RwLock<Vec<Arc<MerchantAccount>>>,
    apps: RwLock<Vec<Arc<AppEntry>>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a merchant or mini program could not be added.
#[derive(Debug)]
pub enum TenantError {
    /// A bad request (taken id, malformed id, unknown merchant).
    Invalid(String),
    /// Key generation or the state directory failed.
    Internal(String),
}

fn sha256(s: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("base_url", &self.base_url)
            .field("merchant", &self.merchant)
            .field("time_scale", &self.time_scale)
            .finish_non_exhaustive()
    }
}

/// Everything [`AppState::new`] needs.
pub struct AppParts {
    /// See [`AppState::time_scale`].
    pub time_scale: f64,
    /// The clock.
    pub clock: Arc<SimClock>,
    /// Merchant material.
    pub merchant: MerchantCredentials,
    /// Simulator keys.
    pub keys: SimulatorKeys,
    /// The signer.
    pub signer: Arc<PlatformSigner>,
    /// Faults.
    pub faults: Arc<FaultState>,
    /// Dispatcher.
    pub dispatcher: Arc<Dispatcher>,
    /// Mini program.
    pub mp: Arc<MiniProgram>,
    /// `http://host:port` of the simulator.
    pub base_url: String,
    /// The journal and what it held at start (with a state directory).
    pub journal: Option<(Arc<Journal>, Vec<Entry>)>,
    /// See [`crate::SimConfig::control_token`].
    pub control_token: Option<String>,
    /// The state directory (merchants added at run time get a directory in it).
    pub state_dir: Option<PathBuf>,
    /// See [`crate::SimConfig::migrating_ratio`].
    pub migrating_ratio: f64,
}

impl AppState {
    /// Assembles the state.
    ///
    /// # Errors
    /// When the merchant's APIv3 key is not 32 bytes.
    pub fn new(parts: AppParts) -> Result<Self, wxpay::CryptoError> {
        let first = Arc::new(MerchantAccount {
            credentials: parts.merchant.clone(),
            keys: parts.keys.clone(),
            signer: parts.signer.clone(),
            api_v3_key: ApiV3Key::new(&parts.merchant.api_v3_key)?,
        });
        let first_app = Arc::new(AppEntry {
            mp: parts.mp.clone(),
            mchid: parts.merchant.mchid.clone(),
            router: MiniProgram::router(parts.mp.clone()),
        });
        let tenants = Tenants {
            merchants: RwLock::new(vec![first]),
            apps: RwLock::new(vec![first_app]),
        };
        let journal = parts.journal.as_ref().map(|(j, _)| j.clone());
        let partner = match &parts.journal {
            Some((journal, entries)) => {
                crate::partner::Partner::persistent(&parts.merchant.mchid, journal.clone(), entries)
            }
            None => crate::partner::Partner::new(&parts.merchant.mchid),
        };
        let trade = match &parts.journal {
            Some((journal, entries)) => {
                crate::trade::TradeManagement::persistent(journal.clone(), entries)
            }
            None => crate::trade::TradeManagement::new(),
        };
        let transfers = match &parts.journal {
            Some((journal, entries)) => {
                crate::transfers::Transfers::persistent(journal.clone(), entries)
            }
            None => crate::transfers::Transfers::new(),
        };
        Ok(Self {
            partner,
            trade,
            transfers,
            mp_push: crate::mp_push::MpPush::default(),
            api_v3_key: ApiV3Key::new(&parts.merchant.api_v3_key)?,
            store: match parts.journal {
                Some((journal, entries)) => {
                    Store::persistent(parts.clock.clone(), journal, &entries)
                }
                None => Store::new(parts.clock.clone()),
            },
            time_scale: parts.time_scale,
            clock: parts.clock,
            merchant: parts.merchant,
            keys: parts.keys,
            signer: parts.signer,
            faults: parts.faults,
            dispatcher: parts.dispatcher,
            mp: parts.mp,
            bill_downloads: Mutex::new(HashMap::new()),
            base_url: parts.base_url,
            v2_refund_notifier: OnceLock::new(),
            control_token_digest: parts.control_token.as_deref().map(sha256),
            tenants,
            state_dir: parts.state_dir,
            journal,
            migrating_ratio: parts.migrating_ratio,
        })
    }

    /// The merchant `mchid`, if the simulator has it.
    #[must_use]
    pub fn merchant_account(&self, mchid: &str) -> Option<Arc<MerchantAccount>> {
        read(&self.tenants.merchants)
            .iter()
            .find(|m| m.mchid() == mchid)
            .cloned()
    }

    /// The merchant `mchid`, or the first one for an unknown id (an order's merchant always
    /// exists; partner orders name their provider).
    #[must_use]
    pub fn account_for(&self, mchid: &str) -> Arc<MerchantAccount> {
        self.merchant_account(mchid)
            .unwrap_or_else(|| self.first_merchant())
    }

    /// The first merchant (the one of `merchant.json` in the state directory).
    #[must_use]
    pub fn first_merchant(&self) -> Arc<MerchantAccount> {
        read(&self.tenants.merchants)[0].clone()
    }

    /// Every merchant, the first one first.
    #[must_use]
    pub fn merchant_accounts(&self) -> Vec<Arc<MerchantAccount>> {
        read(&self.tenants.merchants).clone()
    }

    /// The mini program `appid`, if the simulator has it.
    #[must_use]
    pub fn app(&self, appid: &str) -> Option<Arc<AppEntry>> {
        read(&self.tenants.apps)
            .iter()
            .find(|a| a.mp.appid() == appid)
            .cloned()
    }

    /// The first mini program.
    #[must_use]
    pub fn first_app(&self) -> Arc<AppEntry> {
        read(&self.tenants.apps)[0].clone()
    }

    /// Every mini program, the first one first.
    #[must_use]
    pub fn apps(&self) -> Vec<Arc<AppEntry>> {
        read(&self.tenants.apps).clone()
    }

    /// The mini program that issued the access token `token`.
    #[must_use]
    pub fn app_by_token(&self, token: &str) -> Option<Arc<AppEntry>> {
        read(&self.tenants.apps)
            .iter()
            .find(|a| a.mp.knows_token(token))
            .cloned()
    }

    /// Whether the mini program `appid` is bound to the merchant `mchid`.
    #[must_use]
    pub fn is_bound(&self, appid: &str, mchid: &str) -> bool {
        self.app(appid).is_some_and(|a| a.mchid == mchid)
    }

    /// Whether `openid` is a user of the mini program `appid`.
    #[must_use]
    pub fn has_user(&self, appid: &str, openid: &str) -> bool {
        self.app(appid).is_some_and(|a| a.mp.has_user(openid))
    }

    /// Whether `openid` is a user of any mini program of the simulator.
    #[must_use]
    pub fn is_any_user(&self, openid: &str) -> bool {
        read(&self.tenants.apps)
            .iter()
            .any(|a| a.mp.has_user(openid))
    }

    fn register_merchant(
        &self,
        setup: crate::merchant::MerchantSetup,
        mode: KeyMode,
    ) -> Result<Arc<MerchantAccount>, TenantError> {
        let signer = Arc::new(PlatformSigner::new(
            mode,
            self.migrating_ratio,
            setup.keys.platform_key.clone(),
            &setup.keys.platform_cert,
            setup.keys.public_key_key.clone(),
            setup.credentials.wechatpay_public_key_id.clone(),
        ));
        let account = Arc::new(MerchantAccount {
            api_v3_key: ApiV3Key::new(&setup.credentials.api_v3_key)
                .map_err(|e| TenantError::Internal(e.to_string()))?,
            credentials: setup.credentials,
            keys: setup.keys,
            signer,
        });
        let mut merchants = write(&self.tenants.merchants);
        if merchants.iter().any(|m| m.mchid() == account.mchid()) {
            return Err(TenantError::Invalid(format!(
                "merchant {} already exists",
                account.mchid()
            )));
        }
        merchants.push(account.clone());
        Ok(account)
    }

    fn register_app(
        &self,
        appid: String,
        app_secret: String,
        mchid: String,
        entries: &[Entry],
    ) -> Arc<AppEntry> {
        let mp = Arc::new(match &self.journal {
            Some(j) => MiniProgram::persistent_app(
                appid,
                app_secret,
                self.clock.clone(),
                j.clone(),
                entries,
                false,
            ),
            None => MiniProgram::secondary(appid, app_secret, self.clock.clone()),
        });
        let entry = Arc::new(AppEntry {
            router: MiniProgram::router(mp.clone()),
            mp,
            mchid,
        });
        write(&self.tenants.apps).push(entry.clone());
        entry
    }

    /// Adds a merchant (`POST /sim/merchants`): keys issued by the simulator CA, written to
    /// `merchants/{mchid}/` of the state directory, with its own mini program (a merchant's
    /// `merchant.json` names one, as the first merchant's does). Blocking (RSA key generation):
    /// call it off the async threads.
    ///
    /// # Errors
    /// [`TenantError::Invalid`] for a malformed or taken mchid, [`TenantError::Internal`] when
    /// generation or the state directory fails.
    pub fn add_merchant(
        &self,
        mchid: Option<String>,
        mode: Option<KeyMode>,
    ) -> Result<(Arc<MerchantAccount>, Arc<AppEntry>), TenantError> {
        let mchid = match mchid {
            Some(m) => {
                if !(8..=32).contains(&m.len()) || !m.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(TenantError::Invalid(
                        "mchid must be 8 to 32 digits".to_owned(),
                    ));
                }
                m
            }
            None => loop {
                let m = crate::merchant::new_mchid();
                if self.merchant_account(&m).is_none() {
                    break m;
                }
            },
        };
        if self.merchant_account(&mchid).is_some() {
            return Err(TenantError::Invalid(format!(
                "merchant {mchid} already exists"
            )));
        }
        let mode = mode.unwrap_or_else(|| self.signer.mode());
        let (appid, app_secret) = self.fresh_app();
        let relative = format!("merchants/{mchid}");
        let dir = self.state_dir.as_ref().map(|d| d.join(&relative));
        let first = self.first_merchant();
        let setup = crate::merchant::create_merchant(
            &first.keys,
            &first.credentials.ca_cert_pem,
            &mchid,
            appid.clone(),
            app_secret.clone(),
            dir.as_deref(),
        )
        .map_err(|e| TenantError::Internal(e.to_string()))?;
        let account = self.register_merchant(setup, mode)?;
        if let Some(j) = &self.journal {
            j.append(&Entry::Merchant(crate::journal::MerchantLine {
                mchid: mchid.clone(),
                key_mode: mode.as_str().to_owned(),
                dir: relative,
            }));
        }
        let app = self.add_app_unchecked(appid, app_secret, mchid);
        Ok((account, app))
    }

    fn fresh_app(&self) -> (String, String) {
        loop {
            let (appid, secret) = crate::merchant::new_app();
            if self.app(&appid).is_none() {
                return (appid, secret);
            }
        }
    }

    fn add_app_unchecked(&self, appid: String, app_secret: String, mchid: String) -> Arc<AppEntry> {
        if let Some(j) = &self.journal {
            j.append(&Entry::App(crate::journal::AppLine {
                appid: appid.clone(),
                app_secret: app_secret.clone(),
                mchid: mchid.clone(),
            }));
        }
        self.register_app(appid, app_secret, mchid, &[])
    }

    /// Adds a mini program bound to the merchant `mchid` (`POST /sim/apps`).
    ///
    /// # Errors
    /// [`TenantError::Invalid`] for an unknown merchant, a malformed or taken appid.
    pub fn add_app(
        &self,
        appid: Option<String>,
        mchid: &str,
    ) -> Result<Arc<AppEntry>, TenantError> {
        if self.merchant_account(mchid).is_none() {
            return Err(TenantError::Invalid(format!("no merchant {mchid}")));
        }
        let (appid, secret) = match appid {
            Some(a) => {
                let ok = a.len() == 18
                    && a.starts_with("wx")
                    && a[2..].bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    return Err(TenantError::Invalid(
                        "appid must be wx and 16 hex digits".to_owned(),
                    ));
                }
                if self.app(&a).is_some() {
                    return Err(TenantError::Invalid(format!("app {a} already exists")));
                }
                (a, crate::merchant::new_app().1)
            }
            None => self.fresh_app(),
        };
        Ok(self.add_app_unchecked(appid, secret, mchid.to_owned()))
    }

    /// Brings back the merchants and mini programs a previous run added (journal lines), at
    /// start. Blocking (reads key files).
    ///
    /// # Errors
    /// When a merchant's directory cannot be read.
    pub fn restore_tenants(&self, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            match entry {
                Entry::Merchant(line) => {
                    if self.merchant_account(&line.mchid).is_some() {
                        continue;
                    }
                    let dir = self
                        .state_dir
                        .as_ref()
                        .ok_or("a merchant line without a state directory")?
                        .join(&line.dir);
                    let setup =
                        crate::merchant::load_merchant_dir(&dir).map_err(|e| e.to_string())?;
                    let mode = line.key_mode.parse::<KeyMode>()?;
                    self.register_merchant(setup, mode).map_err(|e| match e {
                        TenantError::Invalid(m) | TenantError::Internal(m) => m,
                    })?;
                }
                Entry::App(line) if self.app(&line.appid).is_none() => {
                    self.register_app(
                        line.appid.clone(),
                        line.app_secret.clone(),
                        line.mchid.clone(),
                        entries,
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a control token is configured.
    #[must_use]
    pub fn has_control_token(&self) -> bool {
        self.control_token_digest.is_some()
    }

    /// Whether `given` is the control token (false when none is configured). Compares digests
    /// in constant time.
    #[must_use]
    pub fn is_control_token(&self, given: &str) -> bool {
        self.control_token_digest.is_some_and(|expected| {
            #[allow(deprecated)]
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &sha256(given))
                .is_ok();
            same
        })
    }

    /// `http://127.0.0.1:port`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Simulated Unix seconds now (business time: order creation, payment, expiry).
    #[must_use]
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Real Unix seconds now: signature timestamps use the real clock, so that moving the
    /// simulated clock does not make every signature stale.
    #[must_use]
    pub fn wall_now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// A simulated duration in wall time, divided by the time scale (at least 1 ms).
    #[must_use]
    pub fn scaled(&self, simulated: Duration) -> Duration {
        scale(simulated, self.time_scale)
    }

    /// Registers the v2 refund notification builder (once; later calls are ignored and return
    /// `false`).
    pub fn set_v2_refund_notifier(&self, notifier: V2RefundNotifier) -> bool {
        self.v2_refund_notifier.set(notifier).is_ok()
    }

    /// Starts the processing of a newly accepted refund: after
    /// [`crate::state::REFUND_PROCESSING_SECS`] (time-scaled) it succeeds and its notification is
    /// sent. Call it once, when [`Store::refund`] returned `created = true`.
    pub fn start_refund_processing(self: &Arc<Self>, refund: &Refund) {
        let state = Arc::clone(self);
        let out_refund_no = refund.out_refund_no.clone();
        let delay = self.scaled(Duration::from_secs(
            crate::state::REFUND_PROCESSING_SECS.unsigned_abs(),
        ));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            state.settle_refund(&out_refund_no);
        });
    }

    /// Completes a PROCESSING refund as SUCCESS and sends its notification. Returns the refund
    /// when this call completed it.
    pub fn settle_refund(&self, out_refund_no: &str) -> Option<Refund> {
        let refund = self
            .store
            .complete_refund(out_refund_no, RefundStatus::Success)?;
        let order = self.store.order(&refund.out_trade_no)?;
        let delivery = match refund.version {
            ApiVersion::V3 => crate::notify::v3_refund_notification(self, &order, &refund),
            ApiVersion::V2 => self
                .v2_refund_notifier
                .get()
                .and_then(|f| f(self, &order, &refund)),
        };
        if let Some(d) = delivery {
            self.dispatcher.enqueue(d);
        }
        Some(refund)
    }

    /// Completes every refund that is due on the simulated clock (after `/sim/clock/advance`).
    pub fn settle_due_refunds(&self) -> usize {
        self.store
            .due_refunds()
            .iter()
            .filter(|no| self.settle_refund(no).is_some())
            .count()
    }

    /// Sends the payment notification of a freshly paid order (v2 XML or v3 JSON, by the API
    /// that created it).
    pub fn notify_payment(&self, order: &Order) {
        let delivery = match order.version {
            ApiVersion::V3 => crate::notify::v3_payment_notification(self, order),
            ApiVersion::V2 => crate::notify::v2_payment_notification(self, order),
        };
        if let Some(d) = delivery {
            self.dispatcher.enqueue(d);
        }
    }
}

/// `simulated / time_scale`, at least 1 ms.
#[must_use]
pub fn scale(simulated: Duration, time_scale: f64) -> Duration {
    let scale = if time_scale.is_finite() && time_scale > 0.0 {
        time_scale
    } else {
        1.0
    };
    Duration::from_secs_f64(simulated.as_secs_f64() / scale).max(Duration::from_millis(1))
}
