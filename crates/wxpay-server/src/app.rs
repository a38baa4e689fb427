//! The application: state, router, binding, sandbox mode.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::net::TcpListener;
use wxpay::http::BaseUrls;
use wxpay::mp::client::WxaCodeImage;

use crate::api::{mini, notify};
use crate::config::{ConfigError, Settings};
use crate::error::ApiError;
use crate::merchant::Merchant;
use crate::registry::Registry;
use crate::store::{NewProduct, Store, StoreOptions};
use crate::wechat::{WeChat, WeChatEndpoints};

/// Largest JSON body of the mini-program API.
pub const MAX_API_BODY: usize = 16 * 1024;
/// Largest notification body (the library refuses larger ones too).
pub const MAX_NOTIFY_BODY: usize = wxpay::v3::notify::MAX_NOTIFICATION_BYTES;
/// Most mini-program codes kept in memory.
pub const WXACODE_CACHE_ENTRIES: usize = 256;

/// Why the server could not start. One line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error("WXPAY_DATABASE_URL: {0}")]
    Database(#[from] crate::store::StoreError),
    /// The address is taken or not ours.
    #[error("WXPAY_LISTEN: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The sandbox simulator did not start.
    #[error("WXPAY_SANDBOX_DIR: the sandbox simulator did not start: {0}")]
    Sandbox(String),
    /// Neither a merchant file nor a sandbox was given.
    #[error(
        "WXPAY_MERCHANT_FILE: not set; sandbox mode (the simulator in process) is started by `wxpay serve`"
    )]
    NoMerchant,
    /// A WeChat client could not be built.
    #[error("WXPAY_MERCHANT_FILE: {0}")]
    Client(String),
    /// Serving failed after the start.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Mini-program codes by (scene, page), oldest evicted first.
#[derive(Debug, Default)]
pub struct WxaCodeCache {
    inner: Mutex<CachedCodes>,
}

/// The images by key, and the keys oldest first.
type CachedCodes = (
    HashMap<(String, String, String), WxaCodeImage>,
    VecDeque<(String, String, String)>,
);

impl WxaCodeCache {
    /// A cached image.
    pub fn get(&self, key: &(String, String, String)) -> Option<WxaCodeImage> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .get(key)
            .cloned()
    }

    /// Keeps an image, evicting the oldest beyond [`WXACODE_CACHE_ENTRIES`].
    pub fn put(&self, key: (String, String, String), image: WxaCodeImage) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), image).is_none() {
            order.push_back(key);
        }
        while order.len() > WXACODE_CACHE_ENTRIES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// How many images are kept.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The mini programs and merchants, and their WeChat clients.
    pub registry: Registry,
    /// The configuration.
    pub settings: Arc<Settings>,
    /// The back office's token (configured, or made up in sandbox mode).
    pub admin_token: Option<SecretString>,
    /// Mini-program codes.
    pub wxacode_cache: Arc<WxaCodeCache>,
    /// The sandbox simulator's base URL (`/sim/*` is proxied there); `None` outside sandbox mode.
    pub sandbox_url: Option<String>,
    /// The client of the `/sim` proxy.
    pub proxy: reqwest::Client,
    /// The simulator's control token, sent with the `/sim` requests the admin token admits.
    pub sandbox_control_token: Option<SecretString>,
    /// The per-client rate limits of login and order creation.
    pub rate_limits: Arc<crate::api::rate_limit::RateLimits>,
    /// The key sealing the registry's secrets (configured, or sandbox mode's key file); `None`:
    /// registering secrets is refused.
    pub master_key: Option<crate::sealing::MasterKey>,
}

impl From<AppState> for crate::jobs::JobContext {
    fn from(state: AppState) -> Self {
        crate::jobs::JobContext {
            store: state.store,
            registry: state.registry,
            settings: state.settings,
        }
    }
}

/// The complete router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/login", post(mini::login))
        .route("/api/logout", post(mini::logout))
        .route("/api/products", get(mini::products))
        .route(
            "/api/orders",
            post(mini::create_order).get(mini::list_orders),
        )
        .route("/api/orders/{out_trade_no}", get(mini::get_order))
        .route("/api/orders/{out_trade_no}/payment", post(mini::payment))
        .route("/api/orders/{out_trade_no}/close", post(mini::close))
        .route("/api/wxacode", get(mini::wxacode))
        .merge(crate::api::payouts::mini_routes())
        .layer(DefaultBodyLimit::max(MAX_API_BODY));
    let notifications = Router::new()
        .route("/notify/{mchid}/v3/pay", post(notify::v3_pay))
        .route("/notify/{mchid}/v3/refund", post(notify::v3_refund))
        .route("/notify/{mchid}/v2/pay", post(notify::v2_pay))
        .route("/notify/{mchid}/v2/refund", post(notify::v2_refund))
        .route(
            "/notify/{mchid}/v3/transfer",
            post(crate::api::payouts::notify),
        )
        // The paths of one-merchant deployments: the first merchant's.
        .route("/notify/v3/pay", post(notify::v3_pay_default))
        .route("/notify/v3/refund", post(notify::v3_refund_default))
        .route("/notify/v2/pay", post(notify::v2_pay_default))
        .route("/notify/v2/refund", post(notify::v2_refund_default))
        .route(
            "/notify/mp/{appid}",
            get(crate::api::push::verify).post(crate::api::push::receive),
        )
        .layer(DefaultBodyLimit::max(MAX_NOTIFY_BODY));
    let mut router = Router::new()
        .merge(api)
        .merge(notifications)
        .route("/healthz", get(mini::healthz))
        .merge(crate::api::admin::routes())
        .merge(crate::api::tenants::routes())
        .merge(crate::api::payouts::admin_routes())
        .route("/admin/alerts", get(crate::api::push::list_alerts))
        .route(
            "/admin/fulfilment/unsettled",
            get(crate::api::push::unsettled),
        )
        .route(
            "/admin/alerts/{id}/acknowledge",
            post(crate::api::push::acknowledge_alert),
        )
        .merge(crate::api::metrics::routes(&state.settings, false))
        .merge(crate::api::openapi::routes())
        .merge(crate::console::routes(state.sandbox_url.is_some()));
    if state.sandbox_url.is_some() {
        router = router
            .route("/sim", any(crate::api::sim_proxy::sim_proxy))
            .route("/sim/{*rest}", any(crate::api::sim_proxy::sim_proxy));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(
            crate::api::metrics::track_requests,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.settings.trusted_proxies.clone()),
            crate::net::client_ip::resolve,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// One line per request: method, path (never the query, which may carry codes), status, time.
async fn log_request(
    crate::net::client_ip::ClientIp(client_ip): crate::net::client_ip::ClientIp,
    request: Request,
    next: Next,
) -> Response {
    if !tracing::enabled!(tracing::Level::WARN) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if status < 500 && !tracing::enabled!(tracing::Level::INFO) {
        return response;
    }
    // To the tenth of a millisecond: more digits are noise (and f64 shows a lot of them).
    let ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    if status >= 500 {
        tracing::warn!(%method, %path, status, %ms, %client_ip, "request");
    } else {
        tracing::info!(%method, %path, status, %ms, %client_ip, "request");
    }
    response
}

/// The upstream of sandbox mode, composed outside the server: `wxpay serve` starts the
/// simulator and hands over its URLs, its merchant and a way to stop it. The server does not
/// depend on the simulator; it only talks to the URLs given here.
pub struct Sandbox {
    /// The `merchant.json` the simulator wrote.
    pub merchant_file: PathBuf,
    /// Plain HTTP base of WeChat Pay and the mini-program API (and of `/sim/*`, proxied).
    pub base_url: String,
    /// HTTPS base of the v2 calls that need the merchant's client certificate.
    pub v2_pay_url: String,
    /// Whether the simulator signs with platform certificates (false: with the WeChat Pay
    /// public key only, so there are no certificates to download).
    pub platform_certificates: bool,
    /// The simulator's control token (`wxpay_sim::SimConfig::control_token`): the `/sim` proxy
    /// sends it with the requests the admin token admits. `None`: the simulator has none.
    pub control_token: Option<SecretString>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("merchant_file", &self.merchant_file)
            .field("base_url", &self.base_url)
            .field("v2_pay_url", &self.v2_pay_url)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox at these URLs; `stop` runs when the server stops.
    pub fn new(
        merchant_file: PathBuf,
        base_url: String,
        v2_pay_url: String,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Sandbox {
            merchant_file,
            base_url,
            v2_pay_url,
            platform_certificates: true,
            control_token: None,
            stop: Box::pin(stop),
        }
    }

    /// Stops the upstream (the simulator's graceful stop).
    pub async fn shutdown(self) {
        self.stop.await;
    }
}

/// The demo catalog of sandbox mode.
pub const SANDBOX_PRODUCTS: &[(&str, &str, u64, &str)] = &[
    ("coffee", "拿铁咖啡 Latte", 1800, "Hot latte, 350 ml"),
    (
        "tea",
        "茉莉花茶 Jasmine tea",
        1200,
        "Jasmine green tea, 500 ml",
    ),
    (
        "cake",
        "芝士蛋糕 Cheesecake",
        2850,
        "A slice of New York cheesecake",
    ),
    ("sticker", "贴纸 Sticker", 1, "One fen, for trying payments"),
];

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<crate::net::tls::CertStore>>,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    simulator: Option<Sandbox>,
    /// What the registry is rebuilt from when it changes.
    directory_sources: crate::core::tenants::DirectorySources,
    jobs: Option<crate::jobs::JobOptions>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the database (migrations included), loads the merchant file, builds the clients
    /// and binds the address.
    ///
    /// # Errors
    /// [`StartError`], one line naming the key at fault ([`StartError::NoMerchant`] without a
    /// merchant file: sandbox mode is [`Application::build_sandbox`]).
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Self::build_with(settings, None).await
    }

    /// As [`Application::build`], in sandbox mode when `settings` name no merchant file: the
    /// merchant and upstream URLs are the sandbox's, the demo catalog is seeded, an admin
    /// token is made up unless configured, `/sim/*` is proxied to the sandbox, and the sandbox
    /// is stopped with the server.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_sandbox(settings: Settings, sandbox: Sandbox) -> Result<Self, StartError> {
        Self::build_with(settings, Some(sandbox)).await
    }

    async fn build_with(settings: Settings, sandbox: Option<Sandbox>) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        let tls = settings
            .tls
            .clone()
            .map(crate::net::tls::CertStore::load)
            .transpose()?;
        let metrics_listener = match settings.metrics_listen {
            Some(at) => Some(TcpListener::bind(at).await.map_err(|e| {
                ConfigError::new(
                    "WXPAY_METRICS_LISTEN",
                    format!("cannot listen on {at}: {e}"),
                )
            })?),
            None => None,
        };
        let store = Store::connect(
            &settings.database_url,
            &StoreOptions {
                max_connections: settings.database_max_connections,
                ..StoreOptions::default()
            },
        )
        .await?;
        let (merchant, urls, v2_pay) = match (settings.merchant_file(), &sandbox) {
            (Some(path), _) => {
                let defaults = BaseUrls::default();
                let pay = settings.pay_base_url.clone().unwrap_or(defaults.pay);
                let urls = BaseUrls {
                    pay: pay.clone(),
                    mp: settings.mp_base_url.clone().unwrap_or(defaults.mp),
                };
                (Merchant::load(path)?, urls, pay)
            }
            (None, Some(sandbox)) => {
                let mut merchant = Merchant::load(&sandbox.merchant_file)?;
                if !sandbox.platform_certificates {
                    // The simulator's files keep a platform certificate, but a public-key merchant
                    // has none to download: asking would only be answered 404 at every start.
                    merchant.platform_cert = None;
                }
                for (sku, name, price_fen, description) in SANDBOX_PRODUCTS {
                    store
                        .insert_product_if_absent(
                            sku,
                            &NewProduct {
                                name: (*name).to_owned(),
                                description: (*description).to_owned(),
                                price_fen: *price_fen,
                                active: true,
                                delivery: crate::store::Delivery::Express,
                            },
                        )
                        .await?;
                }
                (
                    merchant,
                    BaseUrls::single(&sandbox.base_url),
                    sandbox.v2_pay_url.clone(),
                )
            }
            (None, None) => return Err(StartError::NoMerchant),
        };
        let endpoints = WeChatEndpoints::new(
            urls,
            v2_pay,
            Duration::from_secs(settings.wechat_timeout_secs),
            merchant.extra_ca_pem.clone(),
        )
        .map_err(|e| StartError::Client(e.to_string()))?;
        // A merchant file wins over a sandbox handed in: the sandbox is then not used.
        let simulator = if settings.merchant_file().is_some() {
            if let Some(unused) = sandbox {
                unused.shutdown().await;
            }
            None
        } else {
            sandbox
        };
        // The registry (`core/tenants.rs`): the key sealing registered secrets, and the file's
        // merchant and mini program listed beside the registered ones.
        let master_key = match (&settings.master_key, &simulator) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(_)) => Some(
                crate::sealing::MasterKey::load_or_create(&settings.sandbox_master_key_dir())
                    .map_err(|e| ConfigError::new("WXPAY_MASTER_KEY", e.to_string()))?,
            ),
            (None, None) => None,
        };
        crate::core::tenants::import_file_merchant(&store, &merchant, settings.api_version).await?;
        // Reconciliations made before they belonged to a merchant were the first merchant's.
        store.adopt_reconciliations(&merchant.mchid).await?;
        let notify_base = settings.public_url.clone().unwrap_or_else(|| {
            format!("{}://{addr}", if tls.is_some() { "https" } else { "http" })
        });
        let wechat = WeChat::new(&merchant, &endpoints, settings.api_version, &notify_base)
            .map_err(|e| StartError::Client(e.to_string()))?;
        let directory_sources = crate::core::tenants::DirectorySources {
            file: wechat,
            endpoints,
            extra_ca_pem: merchant.extra_ca_pem.clone(),
            key: master_key.clone(),
        };
        let registry =
            Registry::new(crate::core::tenants::directory(&store, &directory_sources).await?);
        let admin_token = match (&settings.admin_token, &simulator) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => Some(SecretString::from(wxpay::nonce::random_string(32))),
            (None, None) => None,
        };
        let proxy = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| StartError::Sandbox(e.to_string()))?;
        let rate_limits = Arc::new(crate::api::rate_limit::RateLimits::from_settings(&settings));
        let state = AppState {
            store,
            registry,
            settings: Arc::new(settings),
            admin_token,
            wxacode_cache: Arc::new(WxaCodeCache::default()),
            sandbox_url: simulator.as_ref().map(|s| s.base_url.clone()),
            sandbox_control_token: simulator.as_ref().and_then(|s| s.control_token.clone()),
            proxy,
            rate_limits,
            master_key,
        };
        Ok(Application {
            listener,
            addr,
            tls,
            metrics_listener,
            state,
            simulator,
            directory_sources,
            jobs: Some(crate::jobs::JobOptions::default()),
        })
    }

    /// Replaces the background jobs' options; `None` runs no jobs (tests drain them by hand
    /// with [`crate::jobs::Jobs`]).
    #[must_use]
    pub fn with_jobs(mut self, options: Option<crate::jobs::JobOptions>) -> Self {
        self.jobs = options;
        self
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (store, clients, settings).
    #[must_use]
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Rebuilds the routing from the registry now (after a change made before
    /// [`Application::run_until`], whose own watcher starts from the version it finds).
    ///
    /// # Errors
    /// [`StoreError`](crate::store::StoreError) when the database cannot be read.
    pub async fn reload_registry(&self) -> Result<(), crate::store::StoreError> {
        let directory =
            crate::core::tenants::directory(&self.state.store, &self.directory_sources).await?;
        self.state.registry.replace(directory);
        Ok(())
    }

    /// The sandbox, in sandbox mode.
    #[must_use]
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.simulator.as_ref()
    }

    /// The start-up banner: the URLs, and in sandbox mode the admin token.
    #[must_use]
    pub fn banner(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", self.addr);
        let mut lines = vec![
            format!(
                "wxpay server ({} mode, API {}, database {})",
                if self.simulator.is_some() {
                    "sandbox"
                } else {
                    "merchant"
                },
                self.state.registry.default_app().api_version.as_str(),
                self.state.store.backend().as_str()
            ),
            format!("  API:        {base}/api/"),
            format!("  console:    {base}/"),
            format!(
                "  notify:     {}/notify/{{mchid}}/{{v2,v3}}/{{pay,refund}}",
                self.state.registry.default_app().notify_base
            ),
            format!("  health:     {base}/healthz"),
        ];
        lines.push(
            match (&self.metrics_listener, &self.state.settings.metrics_token) {
                (Some(l), token) => format!(
                    "  metrics:    http://{}/metrics{}",
                    l.local_addr()
                        .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
                    if token.is_some() {
                        " (bearer token)"
                    } else {
                        ""
                    }
                ),
                (None, Some(_)) => format!("  metrics:    {base}/metrics (bearer token)"),
                (None, None) => format!("  metrics:    {base}/metrics"),
            },
        );
        if let Some(sim) = &self.simulator {
            lines.push(format!("  emulator:   {base}/emulator (the mini program)"));
            lines.push(format!(
                "  simulator:  {base}/sim/ (proxied to {})",
                sim.base_url
            ));
            lines.push(format!("  merchant:   {}", sim.merchant_file.display()));
            if self.state.settings.admin_token.is_none()
                && let Some(token) = &self.state.admin_token
            {
                // A throwaway token of a sandbox with fake money: printing it is the point.
                lines.push(format!(
                    "  admin token (sandbox, set WXPAY_ADMIN_TOKEN to choose one): {}",
                    token.expose_secret()
                ));
            }
        }
        for warning in crate::net::deployment_warnings(
            &self.state.settings,
            &self.state.registry.default_app().notify_base,
            self.addr,
        ) {
            tracing::warn!("{warning}");
            lines.push(format!("  WARNING: {warning}"));
        }
        lines.join("\n")
    }

    /// Serves until `shutdown` completes; then stops the jobs, accepts no more connections,
    /// lets open requests finish within `WXPAY_SHUTDOWN_TIMEOUT_SECS` (closing what is still open
    /// after it), and stops the sandbox simulator.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let settings = self.state.settings.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runner = match self.jobs {
            Some(options) => match crate::jobs::Jobs::new(self.state.clone(), options) {
                Ok(jobs) => Some(jobs.spawn(stopped.clone())),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            },
            None => None,
        };
        let tls = match &self.tls {
            Some(store) => {
                tokio::spawn(store.clone().watch(
                    Duration::from_secs(settings.tls_reload_secs),
                    stopped.clone(),
                ));
                Some(
                    store
                        .acceptor()
                        .map_err(|e| std::io::Error::other(e.to_string()))?,
                )
            }
            None => None,
        };
        let registry = tokio::spawn(crate::core::tenants::keep_current(
            self.state.store.clone(),
            self.state.registry.clone(),
            self.directory_sources,
            stopped.clone(),
        ));
        let metrics = self.metrics_listener.map(|listener| {
            tokio::spawn(crate::net::serve(
                listener,
                None,
                crate::api::metrics::own_router(self.state.clone()),
                settings.connection_limits,
                stopped.clone(),
            ))
        });
        // The jobs stop at the signal, not after the last connection: a request left open cannot
        // keep them running.
        let jobs = tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
            if let Some(runner) = runner {
                runner.join().await;
                tracing::info!("background jobs stopped");
            }
        });
        let result = crate::net::serve(
            self.listener,
            tls,
            router(self.state.clone()),
            settings.connection_limits,
            stopped,
        )
        .await;
        let _ = jobs.await;
        let _ = registry.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        if let Some(sim) = self.simulator {
            sim.shutdown().await;
        }
        self.state.store.close().await;
        result
    }

    /// Serves until the process is stopped.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(std::future::pending()).await
    }
}
