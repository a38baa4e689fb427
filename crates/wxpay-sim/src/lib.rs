//! wxpay-sim: a local WeChat Pay (API v2 + v3) and mini-program server API, with fault injection.
//!
//! Start it inside a test on port 0 with [`Simulator::start`], or as `wxpay sim` through [`run`].
//! It serves the real paths of `api.mch.weixin.qq.com` and `api.weixin.qq.com`, plain HTTP and
//! TLS on one port, verifies every merchant signature and signs every answer with the library's
//! own protocol code, delivers notifications with WeChat's retry schedule, and offers a control
//! API under `/sim/`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod bills;
pub mod control;
pub mod faults;
pub mod journal;
pub mod merchant;
pub mod mp;
pub mod mp_push;
pub mod notify;
pub mod partner;
pub mod server;
pub mod signer;
pub mod state;
pub mod trade;
pub mod transfers;
pub mod v2;
pub mod v3;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use merchant::MerchantCredentials;
pub use signer::KeyMode;

use crate::app::{AppParts, AppState};
use crate::faults::FaultState;
use crate::journal::Journal;
use crate::merchant::MerchantSetup;
use crate::mp::MiniProgram;
use crate::notify::Dispatcher;
use crate::signer::PlatformSigner;
use crate::state::SimClock;

/// How to run the simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Where the merchant, its users, orders and refunds are kept (`merchant.json` and friends,
    /// `journal.jsonl`), so that a restart finds them again; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// Notification retries and refund processing run this many times faster (> 0).
    pub time_scale: f64,
    /// Which keys WeChat Pay signs with.
    pub key_mode: KeyMode,
    /// In [`KeyMode::Migrating`], the share of notifications signed by the public key (0..=1).
    pub migrating_ratio: f64,
    /// The control token: when set, every control route but `POST /sim/users` (a generated
    /// openid), `POST /sim/pay`, `POST /sim/transfers/confirm` and
    /// `POST /sim/users/{openid}/code` with the user's key requires
    /// `Authorization: Bearer <token>`, which also mints codes without a user key. `None` (the
    /// default, and `wxpay sim`'s): those routes are open, and codes need the user's key.
    pub control_token: Option<String>,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("state_dir", &self.state_dir)
            .field("time_scale", &self.time_scale)
            .field("key_mode", &self.key_mode)
            .field("migrating_ratio", &self.migrating_ratio)
            .field(
                "control_token",
                &self.control_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            time_scale: 1.0,
            key_mode: KeyMode::PublicKey,
            migrating_ratio: 0.5,
            control_token: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The merchant could not be made or loaded.
    #[error(transparent)]
    Credentials(#[from] merchant::CredentialsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Makes or loads the merchant, binds `config.listen`, and serves until
    /// [`RunningSimulator::shutdown`].
    ///
    /// # Errors
    /// [`SimError`] for a bad setting, an unreadable state directory, a busy address or a TLS
    /// setup failure.
    pub async fn start(config: SimConfig) -> Result<RunningSimulator, SimError> {
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(SimError::Config(
                "time_scale must be a positive number".into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.migrating_ratio) {
            return Err(SimError::Config(
                "migrating_ratio must be between 0 and 1".into(),
            ));
        }
        let state_dir = config.state_dir.clone();
        let (setup, journal) = tokio::task::spawn_blocking(move || match state_dir {
            Some(dir) => {
                let setup = merchant::load_or_create(&dir)?;
                let journal = Journal::open(&dir).map_err(|e| {
                    SimError::Config(format!(
                        "{}: {e}",
                        dir.join(journal::JOURNAL_FILE).display()
                    ))
                })?;
                Ok::<(MerchantSetup, _), SimError>((setup, Some(journal)))
            }
            None => Ok((merchant::generate_in_memory()?, None)),
        })
        .await
        .map_err(|e| SimError::Config(format!("merchant setup task: {e}")))??;
        let (journal, entries) = match journal {
            Some((journal, entries)) => (Some(Arc::new(journal)), entries),
            None => (None, Vec::new()),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        let tls = server::tls_config(&setup.keys).map_err(SimError::Tls)?;

        let clock = Arc::new(SimClock::new());
        let faults = Arc::new(FaultState::default());
        let signer = Arc::new(PlatformSigner::new(
            config.key_mode,
            config.migrating_ratio,
            setup.keys.platform_key.clone(),
            &setup.keys.platform_cert,
            setup.keys.public_key_key.clone(),
            setup.credentials.wechatpay_public_key_id.clone(),
        ));
        let dispatcher = Arc::new(
            Dispatcher::new(config.time_scale, faults.clone(), clock.clone())
                .map_err(SimError::Config)?,
        );
        let (appid, secret) = (
            setup.credentials.appid.clone(),
            setup.credentials.app_secret.clone(),
        );
        let mp = Arc::new(match &journal {
            Some(j) => MiniProgram::persistent(appid, secret, clock.clone(), j.clone(), &entries),
            None => MiniProgram::new(appid, secret, clock.clone()),
        });
        let base_url = format!("http://{addr}");
        let state = Arc::new(
            AppState::new(AppParts {
                time_scale: config.time_scale,
                clock,
                merchant: setup.credentials,
                keys: setup.keys,
                signer,
                faults,
                dispatcher: dispatcher.clone(),
                mp,
                base_url,
                journal: journal.map(|j| (j, entries.clone())),
                control_token: config.control_token.clone(),
                state_dir: config.state_dir.clone(),
                migrating_ratio: config.migrating_ratio,
            })
            .map_err(|e| SimError::Config(format!("api_v3_key: {e}")))?,
        );
        // Merchants and mini programs a previous run added.
        {
            let state = state.clone();
            tokio::task::spawn_blocking(move || state.restore_tenants(&entries))
                .await
                .map_err(|e| SimError::Config(format!("merchant restore task: {e}")))?
                .map_err(|e| SimError::Config(format!("restoring merchants: {e}")))?;
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(trade::run_ticker(state.clone(), shutdown_rx.clone()));
        tokio::spawn(transfers::run_ticker(state.clone(), shutdown_rx.clone()));
        let dispatcher_task = tokio::spawn(dispatcher.run(shutdown_rx.clone()));
        let server_task = tokio::spawn(server::serve(
            listener,
            router(state.clone()),
            tls,
            shutdown_rx,
        ));
        // Refunds a previous run left PROCESSING finish as if it had kept running.
        for refund in state.store.processing_refunds() {
            state.start_refund_processing(&refund);
        }
        tracing::info!(%addr, key_mode = %config.key_mode, time_scale = config.time_scale, "simulator listening");
        Ok(RunningSimulator {
            addr,
            state,
            shutdown: shutdown_tx,
            server_task,
            dispatcher_task,
        })
    }
}

/// The complete router: v3, v2, mini program and control API, behind fault injection and the
/// request log.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(v3::router(state.clone()))
        .merge(v2::router(state.clone()))
        .merge(mp_router(state.clone()))
        .merge(control::router(state.clone()))
        // Registering sub-merchants and their users changes the simulated world: the control
        // token's, when one is set.
        .merge(partner::control_router(state.clone()).route_layer(
            axum::middleware::from_fn_with_state(state.clone(), control::require_control),
        ))
        .merge(trade::router(state.clone()))
        // The buyer's confirmation and the push settings change the simulated world too.
        .merge(trade::control_router(state.clone()).route_layer(
            axum::middleware::from_fn_with_state(state.clone(), control::require_control),
        ))
        // The payee's confirmation is open like `/sim/pay` (the unguessable package is its
        // credential); the transfer views, settings and balances are controlled.
        .merge(transfers::open_router(state.clone()))
        .merge(transfers::control_router(state.clone()).route_layer(
            axum::middleware::from_fn_with_state(state.clone(), control::require_control),
        ))
        .layer(axum::middleware::from_fn_with_state(state, faults::inject))
        .layer(axum::middleware::from_fn(server::log_request))
}

/// The routes of `api.weixin.qq.com`, each request served by the mini program it names: its
/// `appid` (query or JSON body), else the one that issued its `access_token`, else the first
/// (which then refuses it as WeChat would: `40013 invalid appid`, `40001`).
fn mp_router(state: Arc<AppState>) -> Router {
    use axum::routing::any;
    Router::new()
        .route("/sns/jscode2session", any(mp_dispatch))
        .route("/cgi-bin/token", any(mp_dispatch))
        .route("/cgi-bin/stable_token", any(mp_dispatch))
        .route("/wxa/getwxacodeunlimit", any(mp_dispatch))
        .route("/wxa/business/getuserphonenumber", any(mp_dispatch))
        .with_state(state)
}

async fn mp_dispatch(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use tower::ServiceExt as _;
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return http::StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let query =
        axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let app = query
        .get("appid")
        .and_then(|a| state.app(a))
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("appid")?.as_str().and_then(|a| state.app(a)))
        })
        .or_else(|| {
            query
                .get("access_token")
                .and_then(|t| state.app_by_token(t))
        })
        .unwrap_or_else(|| state.first_app());
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    match app.router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct RunningSimulator {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    server_task: JoinHandle<()>,
    dispatcher_task: JoinHandle<()>,
}

impl RunningSimulator {
    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:port` (trust [`MerchantCredentials::ca_cert_pem`]).
    #[must_use]
    pub fn tls_base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The merchant-side material.
    #[must_use]
    pub fn merchant(&self) -> &MerchantCredentials {
        &self.state.merchant
    }

    /// The shared state (orders, dispatcher, clock), for tests that look inside.
    #[must_use]
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting connections, lets open requests finish, stops the dispatcher.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server_task.await;
        let _ = self.dispatcher_task.await;
    }
}
