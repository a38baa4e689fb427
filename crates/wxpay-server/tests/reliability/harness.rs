//! What the scenarios share: servers in process (sandbox) and as `wxpay serve` child processes,
//! a proxy in front of the simulator that counts calls and loses answers on demand, a listener
//! that never answers, log capture, the secrets to look for, and the `FIGURES` lines.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};
use wxpay_server::Settings;
use wxpay_server::api::rate_limit::RateLimit;
use wxpay_server::jobs::{JobKind, JobOptions, Jobs};
use wxpay_server::store::Backend;

pub use crate::helpers::{TestApp, TestDatabase, sandbox_dir, test_settings};

/// No limit (the scenarios that are not about abuse make many logins from one IP).
pub const NO_LIMIT: RateLimit = RateLimit {
    per_minute: 0,
    burst: 1,
};

/// A sandbox server in process (jobs off: the scenarios drain them) and its simulator.
pub struct Sandbox {
    pub app: TestApp,
    pub sim: Arc<wxpay_sim::app::AppState>,
}

pub async fn sandbox(
    backend: Backend,
    api_version: &str,
    adjust: impl FnOnce(&mut Settings),
) -> Sandbox {
    let db = TestDatabase::new(backend).await;
    let mut settings = test_settings(&db.url, api_version);
    settings.rate_limit_login = NO_LIMIT;
    settings.rate_limit_orders = NO_LIMIT;
    adjust(&mut settings);
    let (app, sim) = crate::helpers::build_app(settings)
        .await
        .expect("the server starts");
    let app = app.with_jobs(None);
    let sim = sim.expect("sandbox mode");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    Sandbox {
        app: TestApp {
            base,
            http: client(),
            state,
            backend,
            db,
        },
        sim,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Jobs with no waiting: everything is due at once.
pub fn eager_jobs(state: &wxpay_server::AppState) -> Jobs {
    Jobs::new(
        state.clone(),
        JobOptions {
            reconcile_after: Duration::ZERO,
            refund_retry_every: Duration::ZERO,
            refund_check_every: Duration::ZERO,
            webhook_backoff: Duration::ZERO,
            bill_after_hour: 0,
            ..JobOptions::default()
        },
    )
    .unwrap()
}

/// Drains the jobs that reconcile with WeChat until none finds anything.
pub async fn drain_reconciliation(jobs: &Jobs) -> usize {
    let mut calls = 0;
    for _ in 0..20 {
        let mut round = 0;
        for kind in [
            JobKind::ReconcileUnpaid,
            JobKind::SubmitRefunds,
            JobKind::FollowRefunds,
        ] {
            round += jobs.drain(kind, 1000).await.expect("job");
        }
        calls += round;
        if round == 0 {
            break;
        }
    }
    calls
}

/// A new user of the simulator: (openid, wx.login code).
pub async fn sim_user(http: &reqwest::Client, sim_url: &str) -> (String, String) {
    let v: Value = http
        .post(format!("{sim_url}/sim/users"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["openid"].as_str().unwrap().to_owned(),
        v["code"].as_str().unwrap().to_owned(),
    )
}

/// Pays as the WeChat client at the simulator; true when paid.
pub async fn sim_pay(
    http: &reqwest::Client,
    sim_url: &str,
    payment: &Value,
    openid: &str,
) -> reqwest::Result<bool> {
    let mut body = payment.clone();
    body["openid"] = json!(openid);
    let answer = http
        .post(format!("{sim_url}/sim/pay"))
        .json(&body)
        .send()
        .await?;
    Ok(answer.status().is_success())
}

pub async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Rows of every table, to prove that refused input changed nothing.
pub async fn table_counts(pool: &sqlx::AnyPool) -> BTreeMap<&'static str, i64> {
    let mut counts = BTreeMap::new();
    for table in [
        "products",
        "users",
        "sessions",
        "orders",
        "order_events",
        "processed_notifications",
        "refunds",
        "outbox",
    ] {
        counts.insert(
            table,
            count(pool, &format!("SELECT COUNT(*) FROM {table}")).await,
        );
    }
    counts
}

/// Prints the figures of a scenario on one line (`scripts/test-reliability` collects them).
pub fn figures(scenario: &str, values: &[(&str, String)]) {
    let text: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // On a line of its own: with --nocapture the test's name precedes it.
    let line = format!("\nFIGURES {scenario}: {}\n", text.join(", "));
    let _ = std::io::stdout().write_all(line.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Logs

/// Log lines written by a subscriber installed for the current thread (a `current_thread`
/// runtime runs the server, the simulator and the test on it).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.0.clone())
    }
}

impl LogCapture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Forgets what was logged so far.
    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// What [`capture_logs`] records.
const CAPTURED: &str = "debug,sqlx=info,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info";

/// Captures every log event of this thread, at debug level and above, until the guard drops.
///
/// A global subscriber with the same filter (and no output) is installed first, once: tracing
/// caches whether a call site is enabled across every thread's subscriber, and a call site first
/// hit on a thread without a capture would otherwise be cached as disabled while other tests'
/// threads register theirs, so that a capture could miss events by chance.
pub fn capture_logs() -> (LogCapture, tracing::subscriber::DefaultGuard) {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let interested =
            tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new(CAPTURED));
        // Another global subscriber (none is installed by these tests) would do as well.
        let _ = tracing::subscriber::set_global_default(interested);
    });
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(CAPTURED))
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// The secrets of the sandbox merchant that must never appear in a log or an answer.
pub struct Secrets {
    pub named: Vec<(String, String)>,
}

impl Secrets {
    /// The API v2 key, the APIv3 key, the app secret and every line of the private keys' PEM
    /// bodies (`apiclient_key.pem` and the simulator's own keys beside it).
    pub fn of_sandbox() -> Self {
        let dir = sandbox_dir();
        let secrets = Secrets { named: Vec::new() }.with_merchant_dir(&dir);
        assert!(
            secrets
                .named
                .iter()
                .any(|(n, _)| n.starts_with("apiclient_key")),
            "no private key found in {}",
            dir.display()
        );
        secrets
    }

    /// Adds a merchant directory's secrets (a `merchant.json` and its files): the API v2 key,
    /// the APIv3 key, the app secret and every line of the private keys' PEM bodies.
    pub fn with_merchant_dir(mut self, dir: &std::path::Path) -> Self {
        let merchant: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("merchant.json")).unwrap())
                .unwrap();
        for key in ["api_v2_key", "api_v3_key", "app_secret"] {
            self.named
                .push((key.to_owned(), merchant[key].as_str().unwrap().to_owned()));
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if !text.contains("PRIVATE KEY-----") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut inside = false;
            for line in text.lines() {
                if line.starts_with("-----BEGIN") {
                    inside = line.contains("PRIVATE KEY");
                } else if line.starts_with("-----END") {
                    inside = false;
                } else if inside && line.len() >= 40 {
                    self.named
                        .push((format!("{name} PEM line"), line.to_owned()));
                }
            }
        }
        self
    }

    /// Adds one named secret.
    pub fn with(mut self, name: &str, secret: &str) -> Self {
        self.named.push((name.to_owned(), secret.to_owned()));
        self
    }

    /// Adds session keys (read from the database: they never leave it otherwise).
    pub async fn with_session_keys(mut self, pool: &sqlx::AnyPool) -> Self {
        let keys: Vec<String> = sqlx::query_scalar("SELECT session_key FROM sessions")
            .fetch_all(pool)
            .await
            .unwrap();
        for k in keys {
            self.named.push(("session_key".to_owned(), k));
        }
        self
    }

    /// Panics naming the secret (never printing it) when one appears in `text`.
    pub fn assert_absent(&self, what: &str, text: &str) {
        for (name, secret) in &self.named {
            assert!(
                !text.contains(secret.as_str()),
                "{name} appears in {what} ({} bytes scanned)",
                text.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A proxy in front of WeChat (the simulator)

/// What the proxy does with the next requests.
#[derive(Clone, Debug, Default)]
pub enum ProxyMode {
    /// Forwards everything.
    #[default]
    Forward,
    /// Forwards requests whose path starts with the prefix, then never answers them (the
    /// answer is lost; WeChat did the work).
    LoseAnswers(String),
    /// Answers every WeChat call with a bare HTTP 500 (a load balancer's error page).
    Status500,
}

/// Method, path, and the `out_refund_no` of a refund body.
type Call = (String, String, Option<String>);

#[derive(Clone)]
struct ProxyState {
    target: String,
    http: reqwest::Client,
    mode: Arc<Mutex<ProxyMode>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A reverse proxy to the simulator that records every call (method, path, `out_refund_no` of
/// refund bodies).
pub struct Proxy {
    pub url: String,
    state: ProxyState,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let state = ProxyState {
            target: target.trim_end_matches('/').to_owned(),
            http: client(),
            mode: Arc::default(),
            calls: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(proxy_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, state }
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Calls whose method is `method` and path starts with `prefix`.
    pub fn calls(&self, method: &str, prefix: &str) -> Vec<(String, Option<String>)> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == method && p.starts_with(prefix))
            .map(|(_, p, r)| (p.clone(), r.clone()))
            .collect()
    }

    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.calls(method, prefix).len()
    }
}

async fn proxy_handler(State(state): State<ProxyState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let out_refund_no = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["out_refund_no"].as_str().map(str::to_owned));
    state
        .calls
        .lock()
        .unwrap()
        .push((parts.method.to_string(), path.clone(), out_refund_no));
    let mode = state.mode.lock().unwrap().clone();
    if matches!(mode, ProxyMode::Status500) && !path.starts_with("/sim/") {
        let mut response = Response::new(Body::from("<html>502 Bad Gateway</html>"));
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    let mut headers = parts.headers;
    for hop in [
        http::header::HOST,
        http::header::CONNECTION,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
    ] {
        headers.remove(hop);
    }
    let target = format!(
        "{}{}",
        state.target,
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    let answer = state
        .http
        .request(parts.method, target)
        .headers(headers)
        .body(body)
        .send()
        .await;
    if let ProxyMode::LoseAnswers(prefix) = &mode
        && path.starts_with(prefix.as_str())
    {
        // WeChat did the work; its answer never comes back.
        std::future::pending::<()>().await;
    }
    match answer {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = answer.headers().clone();
            headers.remove(http::header::CONTENT_LENGTH);
            headers.remove(http::header::TRANSFER_ENCODING);
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(_) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            response
        }
    }
}

/// A TCP listener that accepts connections and never answers: WeChat not answering at all.
pub async fn black_hole() -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(0usize));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            *counter.lock().unwrap() += 1;
            held.push(socket);
        }
    });
    (url, accepted)
}

// ---------------------------------------------------------------------------------------------
// `wxpay serve` as a child process

/// The `wxpay` binary: `$WXPAY_BIN`, or `target/debug/wxpay` of the workspace
/// (`scripts/test-reliability` builds it).
pub fn wxpay_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WXPAY_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/wxpay");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p wxpay-cli` (or ./scripts/test-reliability), or set WXPAY_BIN",
        bin.display()
    );
    bin
}

/// A free port (bound and released: the server binds it again at each restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `wxpay serve` in a child process, on a fixed port, its stderr (the logs) appended to a file.
pub struct ServerProcess {
    pub base: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub starts: usize,
}

impl ServerProcess {
    pub async fn start(env: Vec<(String, String)>, log: PathBuf) -> ServerProcess {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = ServerProcess {
            base: format!("http://{addr}"),
            addr,
            log,
            env,
            child: None,
            starts: 0,
        };
        server.spawn(&[]).await;
        server
    }

    /// Starts the process (with `extra` environment on top) and waits until `/healthz` answers.
    pub async fn spawn(&mut self, extra: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(wxpay_bin());
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,sqlx=warn")
            .env("WXPAY_LISTEN", self.addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("wxpay serve starts");
        self.starts += 1;
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "wxpay serve exited with {status}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let up = http
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "wxpay serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment of a `wxpay serve` against a separate simulator (merchant file mode).
pub fn merchant_env(
    database_url: &str,
    pay_base_url: &str,
    mp_base_url: &str,
    admin_token: &str,
) -> Vec<(String, String)> {
    let merchant = sandbox_dir().join("merchant.json");
    [
        ("WXPAY_MERCHANT_FILE", merchant.to_str().unwrap()),
        ("WXPAY_DATABASE_URL", database_url),
        ("WXPAY_PAY_BASE_URL", pay_base_url),
        ("WXPAY_MP_BASE_URL", mp_base_url),
        ("WXPAY_ADMIN_TOKEN", admin_token),
        ("WXPAY_QUERY_AFTER_SECS", "0"),
        ("WXPAY_WECHAT_TIMEOUT_SECS", "5"),
        ("WXPAY_RATE_LIMIT_LOGIN_PER_MINUTE", "0"),
        ("WXPAY_RATE_LIMIT_ORDERS_PER_MINUTE", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A simulator in process with the shared sandbox merchant (its state outlives the servers), its
/// orders its own.
pub async fn simulator(time_scale: f64) -> wxpay_sim::RunningSimulator {
    wxpay_sim::Simulator::start(wxpay_sim::SimConfig {
        state_dir: Some(crate::helpers::own_sandbox_dir()),
        time_scale,
        ..wxpay_sim::SimConfig::default()
    })
    .await
    .unwrap()
}

/// Settings of an in-process server against a separate simulator (merchant file mode).
pub fn merchant_settings(database_url: &str, pay_base_url: &str, mp_base_url: &str) -> Settings {
    let merchant = sandbox_dir().join("merchant.json");
    let mut settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            ("WXPAY_MERCHANT_FILE", merchant.to_str().unwrap()),
            ("WXPAY_DATABASE_URL", database_url),
            ("WXPAY_PAY_BASE_URL", pay_base_url),
            ("WXPAY_MP_BASE_URL", mp_base_url),
            ("WXPAY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("WXPAY_QUERY_AFTER_SECS", "0"),
        ],
    )
    .unwrap();
    settings.rate_limit_login = NO_LIMIT;
    settings.rate_limit_orders = NO_LIMIT;
    settings
}

pub const ADMIN_TOKEN: &str = "reliability-admin-token-0123456789";

/// Creates a temporary directory under the target's tmp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("reliability")
        .join(format!("{name}-{}", crate::helpers::random_name()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The sandbox's demo catalog, for servers in merchant mode (which start with none).
pub async fn seed_catalog(store: &wxpay_server::store::Store) {
    for (sku, name, price_fen, description) in wxpay_server::app::SANDBOX_PRODUCTS {
        store
            .insert_product_if_absent(
                sku,
                &wxpay_server::store::NewProduct {
                    name: (*name).to_owned(),
                    description: (*description).to_owned(),
                    price_fen: *price_fen,
                    active: true,
                    delivery: wxpay_server::store::Delivery::Express,
                },
            )
            .await
            .unwrap();
    }
}

/// The notification fan-out of the many-instance scenarios: every request it takes goes to all
/// `targets` at once.
#[derive(Clone)]
pub struct Fanout {
    pub targets: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
    pub delivered: Arc<Mutex<usize>>,
}

/// Sends each notification to every instance at once; answers with the first one's status.
pub async fn fan_out(State(f): State<Fanout>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut headers = parts.headers;
    headers.remove(http::header::HOST);
    headers.remove(http::header::CONTENT_LENGTH);
    let targets = f.targets.lock().unwrap().clone();
    *f.delivered.lock().unwrap() += 1;
    let sends: Vec<_> = targets
        .iter()
        .map(|base| {
            let request = f
                .http
                .post(format!("{base}{}", parts.uri.path()))
                .headers(headers.clone())
                .body(body.clone());
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();
    let mut first = None;
    for s in sends {
        let status = s.await.unwrap();
        first.get_or_insert(status);
    }
    match first {
        Some(Ok(status)) => status.into_response(),
        _ => http::StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Serves `app` on a free local port; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Sends until the server answers something other than a transport error or a 5xx (it may be
/// down or restarting), at most `tries` times, 100 ms apart; each failed try is counted in
/// `failed`.
pub async fn insist(
    failed: &std::sync::atomic::AtomicUsize,
    tries: usize,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Option<(u16, Value)> {
    for _ in 0..tries {
        match make().send().await {
            Ok(r) if !r.status().is_server_error() => {
                let status = r.status().as_u16();
                match r.json::<Value>().await {
                    Ok(body) => return Some((status, body)),
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            _ => {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Several `wxpay serve` processes on one PostgreSQL database (scenarios 3 and 12b): WeChat (the
/// simulator) behind a counting [`Proxy`], notifications through a [`Fanout`] to every instance,
/// webhooks counted by a receiver (the event ids in `received`).
pub struct Cluster {
    pub sim: wxpay_sim::RunningSimulator,
    pub proxy: Proxy,
    pub fanout: Fanout,
    pub received: Arc<Mutex<Vec<String>>>,
    /// Kept for the run (dropping it removes the database).
    pub db: TestDatabase,
    pub servers: Vec<ServerProcess>,
    /// A small pool on the instances' database, for the checks.
    pub pool: sqlx::AnyPool,
}

/// Starts a [`Cluster`] of `instances` servers with `extra_env` beside the merchant's settings.
pub async fn cluster(name: &str, instances: usize, extra_env: &[(&str, &str)]) -> Cluster {
    let sim = simulator(50.0).await;
    let proxy = Proxy::start(&sim.base_url()).await;
    let fanout = Fanout {
        targets: Arc::default(),
        http: client(),
        delivered: Arc::default(),
    };
    let fanout_url = serve(
        axum::Router::new()
            .fallback(fan_out)
            .with_state(fanout.clone()),
    )
    .await;
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let receiver_url = {
        let received = received.clone();
        serve(
            axum::Router::new().fallback(move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    received
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap_or("").to_owned());
                    http::StatusCode::OK
                }
            }),
        )
        .await
    };
    let db = TestDatabase::new(Backend::Postgres).await;
    let dir = temp_dir(name);
    let mut env = merchant_env(&db.url, &proxy.url, &proxy.url, ADMIN_TOKEN);
    env.extend([
        ("WXPAY_PUBLIC_URL".to_owned(), fanout_url),
        ("WXPAY_WEBHOOK_URL".to_owned(), receiver_url),
        (
            "WXPAY_WEBHOOK_SECRET".to_owned(),
            "reliability-webhook-secret-0123".to_owned(),
        ),
    ]);
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut servers = Vec::new();
    for i in 0..instances {
        servers.push(ServerProcess::start(env.clone(), dir.join(format!("server-{i}.log"))).await);
    }
    *fanout.targets.lock().unwrap() = servers.iter().map(|s| s.base.clone()).collect();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();
    Cluster {
        sim,
        proxy,
        fanout,
        received,
        db,
        servers,
        pool,
    }
}
