//! wxpay-server: the merchant payment server behind a WeChat mini program.
//!
//! A library ([`Application::build`], [`router`]) started by `wxpay serve`. It serves the mini
//! program (login, orders priced from the catalog, `wx.requestPayment` parameters), receives
//! WeChat Pay's v2 and v3 notifications and applies each exactly once, and keeps its state in
//! SQLite (default) or PostgreSQL. Without a merchant file it runs in sandbox mode against the
//! simulator, in process.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod demo;
pub mod error;
pub mod jobs;
pub mod merchant;
pub mod net;
pub mod payments;
pub mod store;
pub mod wechat;

pub use app::{AppState, Application, StartError, router};
pub use config::{ConfigError, Settings};

/// `wxpay serve`: reads the configuration (`wxpay.toml`, `WXPAY_*`), starts, prints the banner,
/// and serves until Ctrl-C or SIGTERM, then stops gracefully.
///
/// # Errors
/// [`StartError`] (one line naming the key at fault), or an I/O error while serving.
pub async fn run_from_env() -> Result<(), StartError> {
    run_with(&config::Overrides::default()).await
}

/// Like [`run_from_env`], with the command line's values over the file and the environment.
///
/// # Errors
/// As [`run_from_env`].
pub async fn run_with(overrides: &config::Overrides) -> Result<(), StartError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,wxpay_sim::request=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let settings = Settings::load_with(overrides)?;
    for name in config::unknown_env_vars() {
        tracing::warn!(
            "{name} is set but configures nothing (`wxpay serve --help` lists the keys)"
        );
    }
    let app = Application::build(settings).await?;
    let stopped = wxpay_sim::stop_signal().map_err(StartError::Serve)?;
    wxpay_sim::print_banner(&app.banner());
    app.run_until(async {
        stopped.await;
        tracing::info!("stopping");
    })
    .await
    .map_err(StartError::Serve)
}
