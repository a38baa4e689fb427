//! `spawn_app`: a server on port 0 with a fresh database (SQLite file or PostgreSQL database)
//! and the sandbox simulator in process; one helper per endpoint.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};
use wxpay_server::store::Backend;
use wxpay_server::{Application, Settings};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The sandbox merchant shared by every test (made once; each test still gets a fresh
/// simulator and database).
pub fn sandbox_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wxpay-server-sandbox");
        wxpay_sim::merchant::load_or_create(&dir).expect("sandbox merchant");
        dir
    })
    .clone()
}

/// The shared sandbox merchant in a directory of this test's own: a simulator keeps its users and
/// orders in its state directory (`journal.jsonl`), and tests must not see each other's.
pub fn own_sandbox_dir() -> PathBuf {
    let shared = sandbox_dir();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("wxpay-server-sandboxes")
        .join(random_name());
    std::fs::create_dir_all(&dir).expect("a sandbox directory");
    for entry in std::fs::read_dir(&shared).expect("the shared sandbox") {
        let entry = entry.expect("a sandbox file");
        if entry.file_name() != wxpay_sim::journal::JOURNAL_FILE {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("a sandbox copy");
        }
    }
    dir
}

pub fn random_name() -> String {
    wxpay::nonce::random_string(12).to_ascii_lowercase()
}

/// A database of its own, dropped with the test (even a failing one).
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
    sqlite_file: Option<PathBuf>,
}

impl TestDatabase {
    /// Another handle on a database that an owning `TestDatabase` drops (this one drops nothing).
    #[allow(dead_code)]
    pub fn borrowed(url: &str) -> Self {
        TestDatabase {
            url: url.to_owned(),
            pg_name: None,
            sqlite_file: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("test-{}.db", random_name()));
                TestDatabase {
                    url: format!("sqlite://{}", file.display()),
                    pg_name: None,
                    sqlite_file: Some(file),
                }
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let name = format!("wxpay_test_{}", random_name());
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432");
                sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
                )
                .await
                .expect("create database");
                TestDatabase {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    pg_name: Some(name),
                    sqlite_file: None,
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(file) = &self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any runtime we may block: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut conn) =
                        <sqlx::AnyConnection as sqlx::Connection>::connect(PG_ADMIN_URL).await
                    {
                        let _ = sqlx::Executor::execute(
                            &mut conn,
                            sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )),
                        )
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: wxpay_server::AppState,
    #[allow(dead_code)]
    pub backend: Backend,
    /// Dropped with the app, which removes the database.
    #[allow(dead_code)]
    pub db: TestDatabase,
}

/// Settings of a test server: port 0, the given database, the shared sandbox merchant, a
/// time-scaled simulator, queries before answering at once.
pub fn test_settings(db_url: &str, api_version: &str) -> Settings {
    let sandbox = own_sandbox_dir();
    Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            ("WXPAY_DATABASE_URL", db_url),
            ("WXPAY_API_VERSION", api_version),
            ("WXPAY_SANDBOX_DIR", sandbox.to_str().unwrap()),
            ("WXPAY_SANDBOX_TIME_SCALE", "2000"),
            ("WXPAY_QUERY_AFTER_SECS", "0"),
        ],
    )
    .expect("test settings")
}

/// Builds the server as `wxpay serve` does: without a merchant file, a simulator is started
/// (state in `WXPAY_SANDBOX_DIR`) and handed over as the sandbox. Also the simulator's state,
/// in sandbox mode.
/// The simulator's control token in the tests' sandboxes (as `wxpay serve` makes one up).
pub const SIM_CONTROL_TOKEN: &str = "test-sim-control-token";

pub async fn build_app(
    settings: Settings,
) -> Result<
    (
        Application,
        Option<std::sync::Arc<wxpay_sim::app::AppState>>,
    ),
    wxpay_server::StartError,
> {
    if settings.merchant_file().is_some() {
        return Ok((Application::build(settings).await?, None));
    }
    let sim = wxpay_sim::Simulator::start(wxpay_sim::SimConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: Some(settings.sandbox_dir.clone()),
        time_scale: settings.sandbox_time_scale,
        control_token: Some(SIM_CONTROL_TOKEN.into()),
        ..wxpay_sim::SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let state = sim.state().clone();
    let mut sandbox = wxpay_server::Sandbox::new(
        sim.merchant()
            .merchant_json_path
            .clone()
            .expect("merchant.json"),
        sim.base_url(),
        sim.tls_base_url(),
        sim.shutdown(),
    );
    sandbox.control_token = Some(SIM_CONTROL_TOKEN.into());
    Ok((
        Application::build_sandbox(settings, sandbox).await?,
        Some(state),
    ))
}

pub async fn spawn_app(backend: Backend, api_version: &str) -> TestApp {
    spawn_app_with(backend, api_version, |_| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    api_version: &str,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let db = TestDatabase::new(backend).await;
    let mut settings = test_settings(&db.url, api_version);
    adjust(&mut settings);
    let (app, _) = build_app(settings).await.expect("the server starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        state,
        backend,
        db,
    }
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub bytes: bytes::Bytes,
    pub content_type: String,
}

impl TestApp {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            bytes,
            content_type,
        }
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>) -> Answer {
        let mut r = self.http.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    /// The back office's token (the sandbox makes one up), which the `/sim` proxy requires for
    /// everything but a user's own calls.
    pub fn admin(&self) -> String {
        use secrecy::ExposeSecret;
        self.state
            .admin_token
            .as_ref()
            .expect("an admin token")
            .expose_secret()
            .to_owned()
    }

    /// A new WeChat user of the simulator: (openid, wx.login code).
    pub async fn sim_user(&self) -> (String, String) {
        let a = self.post_json("/sim/users", None, &json!({})).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        (
            a.body["openid"].as_str().unwrap().to_owned(),
            a.body["code"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn login_with(&self, code: &str) -> Answer {
        self.post_json("/api/login", None, &json!({ "code": code }))
            .await
    }

    /// A logged-in user: (openid, token).
    pub async fn login(&self) -> (String, String) {
        let (openid, code) = self.sim_user().await;
        let a = self.login_with(&code).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        (openid, a.body["token"].as_str().unwrap().to_owned())
    }

    pub async fn create_order(&self, token: &str, items: Value) -> Answer {
        self.post_json("/api/orders", Some(token), &json!({ "items": items }))
            .await
    }

    pub async fn order(&self, token: &str, no: &str) -> Answer {
        self.get(&format!("/api/orders/{no}"), Some(token)).await
    }

    pub async fn payment(&self, token: &str, no: &str) -> Answer {
        self.post(&format!("/api/orders/{no}/payment"), Some(token))
            .await
    }

    pub async fn close(&self, token: &str, no: &str) -> Answer {
        self.post(&format!("/api/orders/{no}/close"), Some(token))
            .await
    }

    /// Pays as the WeChat client would, through the server's `/sim` proxy.
    pub async fn sim_pay(&self, payment: &Value, openid: &str) -> Answer {
        let mut body = payment.clone();
        body["openid"] = json!(openid);
        self.post_json("/sim/pay", None, &body).await
    }

    /// Waits until every notification attempt made so far is finished.
    pub async fn flush(&self) -> Value {
        let a = self
            .post("/sim/notifications/flush", Some(&self.admin()))
            .await;
        assert_eq!(a.status, 200);
        a.body
    }

    pub async fn set_faults(&self, faults: Value) {
        let a = self
            .send(
                self.http
                    .put(format!("{}/sim/faults", self.base))
                    .bearer_auth(self.admin())
                    .json(&faults),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }

    /// Rows of a table matching one order (to count state changes and webhooks).
    pub async fn count(&self, sql: &'static str, out_trade_no: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(out_trade_no)
            .fetch_one(self.state.store.pool())
            .await
            .unwrap()
    }

    pub async fn outbox_rows(&self, out_trade_no: &str) -> i64 {
        self.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1",
            out_trade_no,
        )
        .await
    }

    pub async fn paid_events(&self, out_trade_no: &str) -> i64 {
        self.count(
            "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1 AND detail LIKE '%\"result\":\"paid\"%'",
            out_trade_no,
        )
        .await
    }

    /// A user with a paid order: (openid, token, out_trade_no).
    pub async fn paid_order(&self) -> (String, String, String) {
        let (openid, token) = self.login().await;
        let created = self
            .create_order(&token, json!([{"sku": "coffee", "quantity": 2}]))
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
        let paid = self.sim_pay(&created.body["payment"], &openid).await;
        assert_eq!(paid.status, 200, "{:?}", paid.body);
        self.flush().await;
        (openid, token, no)
    }
}

/// Runs a test body against SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(wxpay_server::store::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(wxpay_server::store::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// A second instance on the database of `first` (several instances on one PostgreSQL), with
/// its own simulator; `jobs` as [`Application::with_jobs`].
#[allow(dead_code)]
pub async fn spawn_instance(
    first: &TestApp,
    jobs: Option<wxpay_server::jobs::JobOptions>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let db = TestDatabase::borrowed(&first.db.url);
    let mut settings = test_settings(&db.url, "v3");
    adjust(&mut settings);
    let (app, _) = build_app(settings).await.expect("the server starts");
    let app = app.with_jobs(jobs);
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        state,
        backend: first.backend,
        db,
    }
}

/// A merchant the simulator made: its files and its mini program.
pub struct SimMerchant {
    pub mchid: String,
    pub appid: String,
    pub app_secret: String,
    pub dir: std::path::PathBuf,
}

/// A control call to the sandbox's simulator (with its control token).
pub async fn sim_control(app: &TestApp, path: &str, body: &Value) -> Value {
    let base = app.state.sandbox_url.clone().expect("a sandbox");
    let answer = app
        .http
        .post(format!("{base}{path}"))
        .bearer_auth(SIM_CONTROL_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    assert!(status == 200 || status == 201, "{path}: {status} {body}");
    body
}

/// A new merchant (its own keys, files and mini program) at the sandbox's simulator.
pub async fn sim_merchant(app: &TestApp, key_mode: &str) -> SimMerchant {
    let made = sim_control(app, "/sim/merchants", &json!({ "key_mode": key_mode })).await;
    let dir = std::path::PathBuf::from(made["merchant_dir"].as_str().expect("merchant_dir"));
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("merchant.json")).unwrap()).unwrap();
    SimMerchant {
        mchid: made["mchid"].as_str().unwrap().to_owned(),
        appid: file["appid"].as_str().unwrap().to_owned(),
        app_secret: file["app_secret"].as_str().unwrap().to_owned(),
        dir,
    }
}

/// The registration body of a simulator merchant (its files as the back office sends them).
pub fn registration(m: &SimMerchant, api_version: &str) -> Value {
    use base64::Engine as _;
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(m.dir.join("merchant.json")).unwrap())
            .unwrap();
    let read = |field: &str| -> Option<String> {
        file[field]
            .as_str()
            .and_then(|name| std::fs::read_to_string(m.dir.join(name)).ok())
    };
    let mut body = json!({
        "mchid": m.mchid,
        "name": format!("merchant {}", m.mchid),
        "kind": "direct",
        "api_version": api_version,
        "api_v2_key": file["api_v2_key"],
        "api_v3_key": file["api_v3_key"],
        "merchant_serial": file["merchant_serial"],
        "apiclient_key": read("apiclient_key"),
        "apiclient_cert": read("apiclient_cert"),
    });
    if let Some(p12) = file["apiclient_cert_p12"].as_str() {
        body["apiclient_cert_p12"] = json!(
            base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(m.dir.join(p12)).unwrap())
        );
    }
    if let Some(cert) = read("platform_cert") {
        body["platform_cert"] = json!(cert);
    }
    if let (Some(id), Some(key)) = (
        file["wechatpay_public_key_id"].as_str(),
        read("wechatpay_public_key"),
    ) {
        body["wechatpay_public_key_id"] = json!(id);
        body["wechatpay_public_key"] = json!(key);
    }
    body
}
