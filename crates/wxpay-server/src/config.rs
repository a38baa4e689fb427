//! Configuration: defaults < `wxpay.toml` (or the file named by `WXPAY_CONFIG`) < `WXPAY_*`
//! environment variables. Validated once at start; a bad value stops the start with one line
//! naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::store::ApiVersion;

/// A configuration value that cannot be used. Displays as one line: the key, then what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    /// The environment variable (which is also the `wxpay.toml` key, lowercased without prefix).
    pub key: String,
    /// What is wrong (never the value of a secret).
    pub message: String,
}

impl ConfigError {
    /// An error for `key` (like `WXPAY_PUBLIC_URL`).
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The raw values, as figment reads them.
#[derive(Debug, Serialize, Deserialize)]
struct Raw {
    #[serde(deserialize_with = "lenient_string")]
    listen: String,
    database_url: String,
    public_url: Option<String>,
    api_version: String,
    merchant_file: Option<PathBuf>,
    pay_base_url: Option<String>,
    mp_base_url: Option<String>,
    #[serde(default, skip_serializing, deserialize_with = "lenient_secret")]
    admin_token: Option<SecretString>,
    webhook_url: Option<String>,
    #[serde(default, skip_serializing, deserialize_with = "lenient_secret")]
    webhook_secret: Option<SecretString>,
    query_after_secs: u64,
    order_ttl_secs: u64,
    session_ttl_secs: u64,
    transfer_daily_budget_fen: u64,
    transfer_user_daily_cap_fen: u64,
    transfer_confirm_ttl_secs: u64,
    sandbox_dir: PathBuf,
    sandbox_time_scale: f64,
    sandbox_provider: bool,
    database_max_connections: Option<u32>,
    wechat_timeout_secs: u64,
    rate_limit_login_per_minute: u32,
    rate_limit_login_burst: u32,
    rate_limit_orders_per_minute: u32,
    rate_limit_orders_burst: u32,
    rate_limit_wxacode_per_minute: u32,
    rate_limit_wxacode_burst: u32,
    #[serde(default, deserialize_with = "string_or_list")]
    wxacode_pages: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_reload_secs: u64,
    #[serde(default, deserialize_with = "string_or_list")]
    trusted_proxies: Option<String>,
    #[serde(default, skip_serializing, deserialize_with = "lenient_secret")]
    metrics_token: Option<SecretString>,
    #[serde(default, deserialize_with = "lenient_option")]
    metrics_listen: Option<String>,
    header_timeout_secs: u64,
    idle_timeout_secs: u64,
    max_connections: u32,
    shutdown_timeout_secs: u64,
    #[serde(default, skip_serializing, deserialize_with = "lenient_secret")]
    master_key: Option<SecretString>,
    master_key_file: Option<PathBuf>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://wxpay.db".into(),
            public_url: None,
            api_version: "v3".into(),
            merchant_file: None,
            pay_base_url: None,
            mp_base_url: None,
            admin_token: None,
            webhook_url: None,
            webhook_secret: None,
            query_after_secs: 5,
            order_ttl_secs: 30 * 60,
            session_ttl_secs: 2 * 24 * 3600,
            transfer_daily_budget_fen: 1_000_000,
            transfer_user_daily_cap_fen: 20_000,
            transfer_confirm_ttl_secs: 24 * 3600,
            sandbox_dir: PathBuf::from("wxpay-sandbox"),
            sandbox_time_scale: 1.0,
            sandbox_provider: false,
            database_max_connections: None,
            wechat_timeout_secs: 10,
            rate_limit_login_per_minute: 60,
            rate_limit_login_burst: 20,
            rate_limit_orders_per_minute: 30,
            rate_limit_orders_burst: 10,
            rate_limit_wxacode_per_minute: 10,
            rate_limit_wxacode_burst: 10,
            wxacode_pages: Some(DEFAULT_WXACODE_PAGES.to_owned()),
            tls_cert: None,
            tls_key: None,
            tls_reload_secs: 10,
            trusted_proxies: None,
            metrics_token: None,
            metrics_listen: None,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            shutdown_timeout_secs: 30,
            master_key: None,
            master_key_file: None,
        }
    }
}

/// One limit: `per_minute` requests a minute on average, `burst` at once. `per_minute == 0`
/// turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate, requests per minute (0: no limit).
    pub per_minute: u32,
    /// Bucket size: requests allowed at once (at least 1).
    pub burst: u32,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `WXPAY_LISTEN`: where to listen (`127.0.0.1:8080`; port 0 picks one).
    pub listen: SocketAddr,
    /// `WXPAY_DATABASE_URL`: `sqlite://FILE` (default `sqlite://wxpay.db`) or `postgres://...`.
    pub database_url: String,
    /// `WXPAY_PUBLIC_URL`: the base of the notify URLs WeChat calls (default `http://LISTEN`).
    pub public_url: Option<String>,
    /// `WXPAY_API_VERSION`: `v3` (default) or `v2`, for new orders.
    pub api_version: ApiVersion,
    /// `WXPAY_MERCHANT_FILE`: a `merchant.json`; without it the server runs in sandbox mode.
    pub merchant_file: Option<PathBuf>,
    /// `WXPAY_PAY_BASE_URL`: where WeChat Pay is (production by default).
    pub pay_base_url: Option<String>,
    /// `WXPAY_MP_BASE_URL`: where the mini-program API is (production by default).
    pub mp_base_url: Option<String>,
    /// `WXPAY_ADMIN_TOKEN`: the back office's bearer token (at least 16 characters). Without it
    /// the admin API is closed, except in sandbox mode where one is made up and printed.
    pub admin_token: Option<SecretString>,
    /// `WXPAY_WEBHOOK_URL`: where merchant webhooks go.
    pub webhook_url: Option<String>,
    /// `WXPAY_WEBHOOK_SECRET`: the HMAC key of the webhook signature (with the URL, or neither).
    pub webhook_secret: Option<SecretString>,
    /// `WXPAY_QUERY_AFTER_SECS`: an unpaid order older than this is queried at WeChat before
    /// `GET /api/orders/{no}` answers (default 5), and at most once per this many seconds.
    pub query_after_secs: u64,
    /// `WXPAY_ORDER_TTL_SECS`: how long an order can be paid (default 1800; 60 to 7 days).
    pub order_ttl_secs: u64,
    /// `WXPAY_SESSION_TTL_SECS`: how long a login lasts (default 2 days).
    pub session_ttl_secs: u64,
    /// `WXPAY_TRANSFER_DAILY_BUDGET_FEN`: a merchant's transfers per day (GMT+8) unless set per
    /// merchant (default 1,000,000 fen = 10,000 yuan).
    pub transfer_daily_budget_fen: u64,
    /// `WXPAY_TRANSFER_USER_DAILY_CAP_FEN`: what one user may receive per day unless set per
    /// merchant (default 20,000 fen = 200 yuan).
    pub transfer_user_daily_cap_fen: u64,
    /// `WXPAY_TRANSFER_CONFIRM_TTL_SECS`: a transfer not confirmed by its user after this is
    /// cancelled (default and at most 86,400: WeChat closes it after a day anyway).
    pub transfer_confirm_ttl_secs: u64,
    /// `WXPAY_SANDBOX_DIR`: the sandbox simulator's merchant (default `./wxpay-sandbox`).
    pub sandbox_dir: PathBuf,
    /// `WXPAY_SANDBOX_TIME_SCALE`: the sandbox simulator's time scale (default 1).
    pub sandbox_time_scale: f64,
    /// `WXPAY_SANDBOX_PROVIDER`: whether a new sandbox also registers a service provider with a
    /// sub-merchant and the sub-merchant's mini program (default false: one mini program, so
    /// that logins need not name theirs).
    pub sandbox_provider: bool,
    /// `WXPAY_DATABASE_MAX_CONNECTIONS`: PostgreSQL pool size (default 16); on SQLite the number
    /// of reader connections beside the one writer (default 4).
    pub database_max_connections: Option<u32>,
    /// `WXPAY_WECHAT_TIMEOUT_SECS`: timeout of one call to WeChat (default 10).
    pub wechat_timeout_secs: u64,
    /// `WXPAY_RATE_LIMIT_LOGIN_PER_MINUTE` / `WXPAY_RATE_LIMIT_LOGIN_BURST`: logins per client
    /// IP (default 60 a minute, 20 at once; a rate of 0 turns the limit off).
    pub rate_limit_login: RateLimit,
    /// `WXPAY_RATE_LIMIT_ORDERS_PER_MINUTE` / `WXPAY_RATE_LIMIT_ORDERS_BURST`: new orders per user
    /// (default 30 a minute, 10 at once; a rate of 0 turns the limit off).
    pub rate_limit_orders: RateLimit,
    /// `WXPAY_RATE_LIMIT_WXACODE_PER_MINUTE` / `WXPAY_RATE_LIMIT_WXACODE_BURST`: mini-program
    /// codes per user (default 10 a minute, 10 at once; a rate of 0 turns the limit off).
    pub rate_limit_wxacode: RateLimit,
    /// `WXPAY_WXACODE_PAGES`: the pages `GET /api/wxacode` makes codes for (comma-separated;
    /// default the catalogue, `pages/catalog/catalog`).
    pub wxacode_pages: Vec<String>,
    /// `WXPAY_TLS_CERT` + `WXPAY_TLS_KEY`: serve HTTPS with this PEM certificate chain and key
    /// (both or neither).
    pub tls: Option<crate::net::tls::TlsFiles>,
    /// `WXPAY_TLS_RELOAD_SECS`: how often the TLS files are checked for a new certificate
    /// (default 10).
    pub tls_reload_secs: u64,
    /// `WXPAY_TRUSTED_PROXIES`: reverse proxies (addresses or networks, comma-separated) whose
    /// `X-Forwarded-For` / `Forwarded` / `X-Real-IP` give the client's address (default none).
    pub trusted_proxies: crate::net::client_ip::TrustedProxies,
    /// `WXPAY_METRICS_TOKEN`: `/metrics` needs `Authorization: Bearer TOKEN` (at least 16
    /// characters).
    pub metrics_token: Option<SecretString>,
    /// `WXPAY_METRICS_LISTEN`: serve `/metrics` on this address only, not on `WXPAY_LISTEN`.
    pub metrics_listen: Option<SocketAddr>,
    /// `WXPAY_HEADER_TIMEOUT_SECS` (default 10), `WXPAY_IDLE_TIMEOUT_SECS` (60),
    /// `WXPAY_MAX_CONNECTIONS` (1024), `WXPAY_SHUTDOWN_TIMEOUT_SECS` (30).
    pub connection_limits: crate::net::limits::ConnectionLimits,
    /// `WXPAY_MASTER_KEY` (64 hexadecimal characters or the base64 of 32 bytes) or
    /// `WXPAY_MASTER_KEY_FILE` (a file holding it): the key that seals the registered merchants'
    /// and mini programs' secrets. Without it, registering them is refused, except in sandbox
    /// mode, where a key is kept in `wxpay-master.key` beside the SQLite database (in the
    /// sandbox directory on PostgreSQL).
    pub master_key: Option<crate::sealing::MasterKey>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_raw(Raw::default()).expect("the defaults are valid")
    }
}

/// Values given on the command line (`wxpay serve --config --listen --database-url`): over the
/// file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The configuration file, instead of `$WXPAY_CONFIG` or `./wxpay.toml`.
    pub config: Option<PathBuf>,
    /// `listen`.
    pub listen: Option<String>,
    /// `database_url`.
    pub database_url: Option<String>,
}

/// The page of the mini program's catalogue (`miniprogram/app.json`), the default and only page
/// of `GET /api/wxacode` unless `WXPAY_WXACODE_PAGES` says otherwise.
pub const DEFAULT_WXACODE_PAGES: &str = "pages/catalog/catalog";

/// Every key of `wxpay.toml` (the environment variable is `WXPAY_` + the key in capitals): the key,
/// its default, what it does. `wxpay serve --help` prints this table.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "listen",
        "127.0.0.1:8080",
        "where to listen (port 0 picks one)",
    ),
    (
        "database_url",
        "sqlite://wxpay.db",
        "sqlite://FILE or postgres://USER@HOST/DB",
    ),
    (
        "public_url",
        "http://LISTEN",
        "the base of the notify URLs WeChat calls",
    ),
    ("api_version", "v3", "v3 or v2, for new orders"),
    (
        "merchant_file",
        "(none: sandbox mode)",
        "the merchant.json of a real merchant",
    ),
    (
        "pay_base_url",
        "https://api.mch.weixin.qq.com",
        "where WeChat Pay is",
    ),
    (
        "mp_base_url",
        "https://api.weixin.qq.com",
        "where the mini-program API is",
    ),
    (
        "admin_token",
        "(none; made up in sandbox mode)",
        "the back office's bearer token, 16+ characters",
    ),
    ("webhook_url", "(none)", "where merchant webhooks go"),
    (
        "webhook_secret",
        "(none)",
        "the webhooks' HMAC key, 16+ characters (with webhook_url)",
    ),
    (
        "query_after_secs",
        "5",
        "query WeChat for an unpaid order older than this",
    ),
    (
        "order_ttl_secs",
        "1800",
        "how long an order can be paid (60 to 604800)",
    ),
    (
        "transfer_daily_budget_fen",
        "1000000",
        "a merchant's transfers per day (GMT+8), in fen, unless set per merchant",
    ),
    (
        "transfer_user_daily_cap_fen",
        "20000",
        "what one user may receive per day, in fen, unless set per merchant",
    ),
    (
        "transfer_confirm_ttl_secs",
        "86400",
        "a transfer the user has not confirmed after this is cancelled (60 to 86400)",
    ),
    (
        "session_ttl_secs",
        "172800",
        "how long a login lasts (60 to 7776000)",
    ),
    (
        "sandbox_dir",
        "wxpay-sandbox",
        "the sandbox simulator's state",
    ),
    (
        "sandbox_time_scale",
        "1",
        "the sandbox simulator's time scale",
    ),
    (
        "sandbox_provider",
        "false",
        "a new sandbox also registers a service provider, its sub-merchant and that one's mini program",
    ),
    (
        "database_max_connections",
        "16 (PostgreSQL), 4 readers (SQLite)",
        "database pool size",
    ),
    (
        "wechat_timeout_secs",
        "10",
        "timeout of one call to WeChat (1 to 120)",
    ),
    (
        "rate_limit_login_per_minute",
        "60",
        "logins per client address (0: no limit)",
    ),
    (
        "rate_limit_login_burst",
        "20",
        "logins per client address at once",
    ),
    (
        "rate_limit_orders_per_minute",
        "30",
        "new orders per user (0: no limit)",
    ),
    (
        "rate_limit_orders_burst",
        "10",
        "new orders per user at once",
    ),
    (
        "rate_limit_wxacode_per_minute",
        "10",
        "mini-program codes per user (0: no limit)",
    ),
    (
        "rate_limit_wxacode_burst",
        "10",
        "mini-program codes per user at once",
    ),
    (
        "wxacode_pages",
        DEFAULT_WXACODE_PAGES,
        "pages /api/wxacode makes codes for (comma-separated)",
    ),
    (
        "tls_cert",
        "(none: plain HTTP)",
        "PEM certificate chain to serve HTTPS",
    ),
    ("tls_key", "(none)", "PEM private key of tls_cert"),
    (
        "tls_reload_secs",
        "10",
        "how often the certificate files are re-read",
    ),
    (
        "trusted_proxies",
        "(none)",
        "proxy addresses/CIDRs whose X-Forwarded-For is believed",
    ),
    (
        "metrics_token",
        "(none)",
        "bearer token required by /metrics",
    ),
    (
        "metrics_listen",
        "(none)",
        "serve /metrics on this address only",
    ),
    (
        "header_timeout_secs",
        "10",
        "time to receive a request's head",
    ),
    (
        "idle_timeout_secs",
        "60",
        "an idle keep-alive connection is closed",
    ),
    ("max_connections", "1024", "concurrent connections"),
    (
        "shutdown_timeout_secs",
        "30",
        "how long open requests get after SIGTERM",
    ),
    (
        "master_key",
        "(none; sandbox: wxpay-master.key)",
        "seals registered merchants' secrets: 64 hex or base64 of 32 bytes",
    ),
    (
        "master_key_file",
        "(none)",
        "a file holding master_key (instead of master_key)",
    ),
];

/// The keys with their defaults, for `wxpay serve --help`.
#[must_use]
pub fn keys_help() -> String {
    let width = KEYS.iter().map(|(k, ..)| k.len()).max().unwrap_or(0);
    let default_width = KEYS
        .iter()
        .map(|(_, d, _)| d.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::from(
        "Configuration: ./wxpay.toml (or --config / WXPAY_CONFIG), then WXPAY_* environment \
         variables (WXPAY_ + the key in capitals), then these flags.\n\nKeys, defaults:\n",
    );
    for (key, default, what) in KEYS {
        text.push_str(&format!(
            "  {key:width$}  {default:default_width$}  {what}\n"
        ));
    }
    text
}

fn is_key(key: &str) -> bool {
    KEYS.iter().any(|(k, ..)| k.eq_ignore_ascii_case(key))
}

/// The key `name` is probably a misspelling of.
fn closest_key(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    KEYS.iter()
        .map(|(k, ..)| (strsim::damerau_levenshtein(&name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// A `WXPAY_*` variable that is not a key but is within two edits of one: refused, as it was
/// surely meant for the server (`WXPAY_DATABSE_URL`). Other `WXPAY_*` names (tools of the
/// project set some, like `WXPAY_BIN`) are only warned about, by [`unknown_env_vars`].
fn misspelt_env_key(var: &str) -> Option<ConfigError> {
    let field = var.strip_prefix("WXPAY_")?;
    if is_key(field) || field == "CONFIG" {
        return None;
    }
    closest_key(field).map(|k| {
        ConfigError::new(
            var,
            format!("is not a configuration key (did you mean {}?)", env_key(k)),
        )
    })
}

/// The `WXPAY_*` environment variables that configure nothing, for a warning at start.
#[must_use]
pub fn unknown_env_vars() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.strip_prefix("WXPAY_")
                .is_some_and(|f| !is_key(f) && f != "CONFIG")
        })
        .collect();
    names.sort();
    names
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn env_key(field: &str) -> String {
    format!("WXPAY_{}", field.to_ascii_uppercase())
}

impl Settings {
    /// Reads `wxpay.toml` (or `$WXPAY_CONFIG`) when present and the `WXPAY_*` environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with(&Overrides::default())
    }

    /// Like [`Settings::load`], with command-line values over the file and the environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key, an unknown key of the file, or a `WXPAY_*`
    /// variable that looks like a misspelt key.
    pub fn load_with(overrides: &Overrides) -> Result<Self, ConfigError> {
        let path = overrides
            .config
            .clone()
            .or_else(|| std::env::var_os("WXPAY_CONFIG").map(PathBuf::from));
        let (file, required) = match path {
            Some(p) => (p, true),
            None => (PathBuf::from("wxpay.toml"), false),
        };
        let toml = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::new(
                    "WXPAY_CONFIG",
                    format!("{} does not exist", file.display()),
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    &file.display().to_string(),
                    format!("cannot be read: {e}"),
                ));
            }
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("WXPAY_"))
            .collect();
        if let Some(e) = env.iter().find_map(|(k, _)| misspelt_env_key(k)) {
            return Err(e);
        }
        let mut figment = Self::layered(&file.display().to_string(), &toml)?
            .merge(Env::prefixed("WXPAY_").filter(|k| is_key(k.as_str())));
        for (key, value) in [
            ("listen", &overrides.listen),
            ("database_url", &overrides.database_url),
        ] {
            if let Some(value) = value {
                figment = figment.merge((key, value));
            }
        }
        Self::from_figment(figment)
    }

    /// Reads the settings from a TOML text and an explicit environment (tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn from_sources(toml: &str, env: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut figment = Self::layered("wxpay.toml", toml)?;
        for (key, value) in env {
            if let Some(e) = misspelt_env_key(key) {
                return Err(e);
            }
            let Some(field) = key.strip_prefix("WXPAY_") else {
                continue;
            };
            if !is_key(field) {
                continue;
            }
            // Parsed as the `Env` provider parses the real environment.
            let value: figment::value::Value = match value.parse() {
                Ok(v) => v,
                Err(never) => match never {},
            };
            figment = figment.merge((field.to_ascii_lowercase(), value));
        }
        Self::from_figment(figment)
    }

    /// The defaults under the TOML text of `file`, whose syntax and keys are checked first: a
    /// misspelt key would otherwise be ignored and its default silently used.
    fn layered(file: &str, toml: &str) -> Result<Figment, ConfigError> {
        let provider = Toml::string(toml);
        let data = figment::Provider::data(&provider)
            .map_err(|e| ConfigError::new(file, one_line(&e.to_string())))?;
        for dict in data.values() {
            for key in dict.keys() {
                if !is_key(key) {
                    let hint = closest_key(key)
                        .map(|k| format!(" (did you mean `{k}`?)"))
                        .unwrap_or_default();
                    return Err(ConfigError::new(
                        file,
                        format!("unknown key `{key}`{hint}; `wxpay serve --help` lists the keys"),
                    ));
                }
            }
        }
        Ok(Figment::from(Serialized::defaults(Raw::default())).merge(provider))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract().map_err(|e| {
            let key = e
                .path
                .first()
                .map_or_else(|| "WXPAY_CONFIG".to_owned(), |f| env_key(f));
            ConfigError::new(&key, e.kind.to_string())
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw.listen.trim().parse().map_err(|_| {
            ConfigError::new(
                "WXPAY_LISTEN",
                format!("{:?} is not an address like 127.0.0.1:8080", raw.listen),
            )
        })?;
        crate::store::Backend::of_url(&raw.database_url).map_err(|e| {
            ConfigError::new(
                "WXPAY_DATABASE_URL",
                match e {
                    crate::store::StoreError::InMemory => e.to_string(),
                    _ => "must start with sqlite:// or postgres://".to_owned(),
                },
            )
        })?;
        let api_version = match raw.api_version.trim().to_ascii_lowercase().as_str() {
            "v3" => ApiVersion::V3,
            "v2" => ApiVersion::V2,
            other => {
                return Err(ConfigError::new(
                    "WXPAY_API_VERSION",
                    format!("{other:?} is not v2 or v3"),
                ));
            }
        };
        let public_url = raw
            .public_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_base_url("WXPAY_PUBLIC_URL", &u))
            .transpose()?;
        let pay_base_url = raw
            .pay_base_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_base_url("WXPAY_PAY_BASE_URL", &u))
            .transpose()?;
        let mp_base_url = raw
            .mp_base_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_base_url("WXPAY_MP_BASE_URL", &u))
            .transpose()?;
        if let Some(path) = &raw.merchant_file
            && !path.is_file()
        {
            return Err(ConfigError::new(
                "WXPAY_MERCHANT_FILE",
                format!("{} does not exist or is not a file", path.display()),
            ));
        }
        let admin_token = raw.admin_token.filter(|t| !t.expose_secret().is_empty());
        if let Some(token) = &admin_token
            && (token.expose_secret().len() < 16
                || !token.expose_secret().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "WXPAY_ADMIN_TOKEN",
                "must be at least 16 visible ASCII characters",
            ));
        }
        let webhook_url = raw
            .webhook_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_url("WXPAY_WEBHOOK_URL", &u))
            .transpose()?;
        let webhook_secret = raw.webhook_secret.filter(|t| !t.expose_secret().is_empty());
        match (&webhook_url, &webhook_secret) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "WXPAY_WEBHOOK_SECRET",
                    "is required with WXPAY_WEBHOOK_URL",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "WXPAY_WEBHOOK_URL",
                    "is required with WXPAY_WEBHOOK_SECRET",
                ));
            }
            (Some(_), Some(secret)) if secret.expose_secret().len() < 16 => {
                return Err(ConfigError::new(
                    "WXPAY_WEBHOOK_SECRET",
                    "must be at least 16 characters",
                ));
            }
            _ => {}
        }
        if !(60..=24 * 3600).contains(&raw.transfer_confirm_ttl_secs) {
            return Err(ConfigError::new(
                "WXPAY_TRANSFER_CONFIRM_TTL_SECS",
                "must be between 60 and 86400 (WeChat closes unconfirmed transfers after a day)",
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&raw.order_ttl_secs) {
            return Err(ConfigError::new(
                "WXPAY_ORDER_TTL_SECS",
                "must be between 60 and 604800",
            ));
        }
        if raw.query_after_secs > 3600 {
            return Err(ConfigError::new(
                "WXPAY_QUERY_AFTER_SECS",
                "must be at most 3600",
            ));
        }
        if !(60..=90 * 24 * 3600).contains(&raw.session_ttl_secs) {
            return Err(ConfigError::new(
                "WXPAY_SESSION_TTL_SECS",
                "must be between 60 and 7776000",
            ));
        }
        if !(raw.sandbox_time_scale.is_finite() && raw.sandbox_time_scale > 0.0) {
            return Err(ConfigError::new(
                "WXPAY_SANDBOX_TIME_SCALE",
                "must be a positive number",
            ));
        }
        if raw.database_max_connections == Some(0) {
            return Err(ConfigError::new(
                "WXPAY_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if !(1..=120).contains(&raw.wechat_timeout_secs) {
            return Err(ConfigError::new(
                "WXPAY_WECHAT_TIMEOUT_SECS",
                "must be between 1 and 120",
            ));
        }
        let rate_limit_login = rate_limit(
            "WXPAY_RATE_LIMIT_LOGIN",
            raw.rate_limit_login_per_minute,
            raw.rate_limit_login_burst,
        )?;
        let rate_limit_orders = rate_limit(
            "WXPAY_RATE_LIMIT_ORDERS",
            raw.rate_limit_orders_per_minute,
            raw.rate_limit_orders_burst,
        )?;
        let rate_limit_wxacode = rate_limit(
            "WXPAY_RATE_LIMIT_WXACODE",
            raw.rate_limit_wxacode_per_minute,
            raw.rate_limit_wxacode_burst,
        )?;
        let wxacode_pages = wxacode_pages(raw.wxacode_pages.as_deref().unwrap_or(""))?;
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => Some(crate::net::tls::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "WXPAY_TLS_KEY",
                    "is required with WXPAY_TLS_CERT",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "WXPAY_TLS_CERT",
                    "is required with WXPAY_TLS_KEY",
                ));
            }
        };
        if !(1..=86_400).contains(&raw.tls_reload_secs) {
            return Err(ConfigError::new(
                "WXPAY_TLS_RELOAD_SECS",
                "must be between 1 and 86400",
            ));
        }
        let trusted_proxies = crate::net::client_ip::TrustedProxies::parse(
            raw.trusted_proxies.as_deref().unwrap_or(""),
        )
        .map_err(|m| ConfigError::new("WXPAY_TRUSTED_PROXIES", m))?;
        let metrics_token = raw.metrics_token.filter(|t| !t.expose_secret().is_empty());
        if let Some(token) = &metrics_token
            && (token.expose_secret().len() < 16
                || !token.expose_secret().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "WXPAY_METRICS_TOKEN",
                "must be at least 16 visible ASCII characters",
            ));
        }
        let metrics_listen = raw
            .metrics_listen
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.trim().parse::<SocketAddr>().map_err(|_| {
                    ConfigError::new(
                        "WXPAY_METRICS_LISTEN",
                        format!("{l:?} is not an address like 127.0.0.1:9100"),
                    )
                })
            })
            .transpose()?;
        let secs = |key: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if range.contains(&value) {
                Ok(std::time::Duration::from_secs(value))
            } else {
                Err(ConfigError::new(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                ))
            }
        };
        let connection_limits = crate::net::limits::ConnectionLimits {
            header_timeout: secs(
                "WXPAY_HEADER_TIMEOUT_SECS",
                raw.header_timeout_secs,
                1..=600,
            )?,
            idle_timeout: secs("WXPAY_IDLE_TIMEOUT_SECS", raw.idle_timeout_secs, 1..=3600)?,
            max_connections: usize::try_from(raw.max_connections)
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("WXPAY_MAX_CONNECTIONS", "must be between 1 and 1000000")
                })?,
            shutdown_timeout: secs(
                "WXPAY_SHUTDOWN_TIMEOUT_SECS",
                raw.shutdown_timeout_secs,
                0..=3600,
            )?,
        };
        let master_key = match (
            raw.master_key
                .filter(|k| !k.expose_secret().trim().is_empty()),
            raw.master_key_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "WXPAY_MASTER_KEY_FILE",
                    "set WXPAY_MASTER_KEY or WXPAY_MASTER_KEY_FILE, not both",
                ));
            }
            (Some(text), None) => Some(
                crate::sealing::MasterKey::parse(text.expose_secret())
                    .map_err(|e| ConfigError::new("WXPAY_MASTER_KEY", e.to_string()))?,
            ),
            (None, Some(path)) => Some(
                crate::sealing::MasterKey::from_file(&path)
                    .map_err(|e| ConfigError::new("WXPAY_MASTER_KEY_FILE", e.to_string()))?,
            ),
            (None, None) => None,
        };
        crate::net::check_public_url(
            raw.merchant_file.is_some(),
            pay_base_url.as_deref(),
            public_url.as_deref(),
            api_version,
        )?;
        Ok(Settings {
            listen,
            database_url: raw.database_url,
            public_url,
            api_version,
            merchant_file: raw.merchant_file,
            pay_base_url,
            mp_base_url,
            admin_token,
            webhook_url,
            webhook_secret,
            query_after_secs: raw.query_after_secs,
            order_ttl_secs: raw.order_ttl_secs,
            session_ttl_secs: raw.session_ttl_secs,
            transfer_daily_budget_fen: raw.transfer_daily_budget_fen,
            transfer_user_daily_cap_fen: raw.transfer_user_daily_cap_fen,
            transfer_confirm_ttl_secs: raw.transfer_confirm_ttl_secs,
            sandbox_dir: raw.sandbox_dir,
            sandbox_time_scale: raw.sandbox_time_scale,
            sandbox_provider: raw.sandbox_provider,
            database_max_connections: raw.database_max_connections,
            wechat_timeout_secs: raw.wechat_timeout_secs,
            rate_limit_login,
            rate_limit_orders,
            rate_limit_wxacode,
            wxacode_pages,
            tls,
            tls_reload_secs: raw.tls_reload_secs,
            trusted_proxies,
            metrics_token,
            metrics_listen,
            connection_limits,
            master_key,
        })
    }

    /// Whether the server runs against the in-process simulator (no merchant file).
    #[must_use]
    pub fn is_sandbox(&self) -> bool {
        self.merchant_file.is_none()
    }

    /// The merchant file, when one is configured.
    #[must_use]
    pub fn merchant_file(&self) -> Option<&Path> {
        self.merchant_file.as_deref()
    }

    /// Where sandbox mode keeps its master key when none is configured: beside the SQLite
    /// database (so that a new database file gets a new key, and the registered secrets of one
    /// survive restarts), or in the sandbox directory on PostgreSQL and for an in-memory SQLite
    /// database.
    #[must_use]
    pub fn sandbox_master_key_dir(&self) -> PathBuf {
        let sqlite_file = self
            .database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(""))
            .filter(|file| !file.is_empty() && !file.contains(":memory:"));
        match sqlite_file {
            Some(file) => match Path::new(file).parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            },
            None => self.sandbox_dir.clone(),
        }
    }
}

/// A rate limit: at most 1,000,000 a minute, a burst of 1 to 100,000.
fn rate_limit(prefix: &str, per_minute: u32, burst: u32) -> Result<RateLimit, ConfigError> {
    if per_minute > 1_000_000 {
        return Err(ConfigError::new(
            &format!("{prefix}_PER_MINUTE"),
            "must be at most 1000000 (0 turns the limit off)",
        ));
    }
    if !(1..=100_000).contains(&burst) {
        return Err(ConfigError::new(
            &format!("{prefix}_BURST"),
            "must be between 1 and 100000",
        ));
    }
    Ok(RateLimit { per_minute, burst })
}

/// The pages of `WXPAY_WXACODE_PAGES`: at least one, each a page path as WeChat takes it
/// (segments of `[0-9A-Za-z_.-]`, no leading `/`, no query, at most 128 characters).
fn wxacode_pages(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut pages = Vec::new();
    for page in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Err(e) = wxpay::mp::validate_page(page) {
            return Err(ConfigError::new(
                "WXPAY_WXACODE_PAGES",
                format!("{page:?} is not a page path like pages/catalog/catalog: {e}"),
            ));
        }
        if !pages.iter().any(|p| p == page) {
            pages.push(page.to_owned());
        }
    }
    if pages.is_empty() {
        return Err(ConfigError::new(
            "WXPAY_WXACODE_PAGES",
            "must list at least one page, like pages/catalog/catalog",
        ));
    }
    Ok(pages)
}

fn check_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ConfigError::new(key, "must be an absolute http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || url.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            key,
            "must be an absolute http:// or https:// URL with a host",
        ));
    }
    Ok(url.to_owned())
}

/// A base URL: absolute, no query or fragment; the trailing `/` is dropped.
fn check_base_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let url = check_url(key, url)?;
    if url.contains(['?', '#']) {
        return Err(ConfigError::new(
            key,
            "must not have a query string or fragment",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A string that the environment parser may have turned into a number or a boolean (an all-digit
/// token, a bare port).
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
}

impl Lenient {
    fn into_string(self) -> String {
        match self {
            Lenient::Text(s) => s,
            Lenient::Unsigned(n) => n.to_string(),
            Lenient::Signed(n) => n.to_string(),
            Lenient::Float(n) => n.to_string(),
            Lenient::Bool(b) => b.to_string(),
        }
    }
}

fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Lenient::deserialize(d).map(Lenient::into_string)
}

fn lenient_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Lenient>::deserialize(d)?.map(Lenient::into_string))
}

/// A list written as one string (`"10.0.0.1, 10.1.0.0/16"`, as in the environment) or as a TOML
/// array; kept as one comma-separated string.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Lenient),
        Many(Vec<Lenient>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(one) => one.into_string(),
        OneOrMany::Many(many) => many
            .into_iter()
            .map(Lenient::into_string)
            .collect::<Vec<_>>()
            .join(","),
    }))
}

fn lenient_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<Lenient>::deserialize(d)?.map(|v| SecretString::from(v.into_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `KEYS` (the unknown-key check, `serve --help`) and the fields read are the same set.
    #[test]
    fn the_keys_table_lists_every_field() {
        let fields = serde_json::to_value(Raw::default()).unwrap();
        let mut fields: Vec<&str> = fields
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // Secrets are not serialised.
        fields.extend([
            "admin_token",
            "webhook_secret",
            "metrics_token",
            "master_key",
        ]);
        fields.sort_unstable();
        let mut keys: Vec<&str> = KEYS.iter().map(|(k, ..)| *k).collect();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }
}
