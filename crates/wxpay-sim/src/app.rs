//! The state every handler shares: merchant, keys, orders, notification dispatcher, faults.
//!
//! The v2 endpoints (`crate::v2`) and the mini-program side (`crate::mp`) program against this
//! type: [`AppState::store`] for the business rules, [`AppState::merchant`] for the v2 key and
//! ids, [`AppState::dispatcher`] to send notifications, [`AppState::start_refund_processing`]
//! after a refund is accepted, [`AppState::set_v2_refund_notifier`] for the v2 refund
//! notification (its encrypted `req_info` is made by the v2 code).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wxpay::nonce::Clock as _;
use wxpay::v3::aead::ApiV3Key;

use crate::faults::FaultState;
use crate::journal::{Entry, Journal};
use crate::merchant::{MerchantCredentials, SimulatorKeys};
use crate::mp::MiniProgram;
use crate::notify::{Dispatcher, NewDelivery};
use crate::signer::PlatformSigner;
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
    /// Service-provider mode: sub-merchants, their users, partner orders.
    pub partner: crate::partner::Partner,
    /// Trade management (shipping, receipt, settlement) of the mini program's paid orders.
    pub trade: crate::trade::TradeManagement,
    /// Message push of the mini program (settings, log).
    pub mp_push: crate::mp_push::MpPush,
    /// Bill download tokens.
    pub bill_downloads: Mutex<HashMap<String, BillDownload>>,
    base_url: String,
    v2_refund_notifier: OnceLock<V2RefundNotifier>,
    /// SHA-256 of the control token (see [`crate::SimConfig::control_token`]).
    control_token_digest: Option<[u8; 32]>,
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
}

impl AppState {
    /// Assembles the state.
    ///
    /// # Errors
    /// When the merchant's APIv3 key is not 32 bytes.
    pub fn new(parts: AppParts) -> Result<Self, wxpay::CryptoError> {
        let partner = match &parts.journal {
            Some((journal, entries)) => {
                crate::partner::Partner::persistent(journal.clone(), entries)
            }
            None => crate::partner::Partner::new(),
        };
        let trade = match &parts.journal {
            Some((journal, entries)) => {
                crate::trade::TradeManagement::persistent(journal.clone(), entries)
            }
            None => crate::trade::TradeManagement::new(),
        };
        Ok(Self {
            partner,
            trade,
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
        })
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
