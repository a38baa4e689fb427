//! `wxpay serve`: the merchant payment server, until Ctrl-C or SIGTERM.

use wxpay_server::config::Overrides;
use wxpay_server::{Settings, StartError};

use crate::cli::ServeArgs;
use crate::failure::Failure;
use crate::process::{print_banner, stop_signal};
use crate::sandbox::build_server;

/// Runs the server on a runtime of its own.
///
/// # Errors
/// [`Failure::Input`] for a bad configuration (one line naming the key); [`Failure::Runtime`]
/// when the runtime cannot start or serving fails.
pub fn run(args: &ServeArgs) -> Result<(), Failure> {
    let overrides = Overrides {
        config: args.config.clone(),
        listen: args.listen.clone(),
        database_url: args.database_url.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(&overrides)).map_err(|e| match e {
        StartError::Serve(_) => Failure::runtime(e.to_string()),
        other => Failure::input(other.to_string()),
    })
}

/// Reads the configuration (`wxpay.toml`, `WXPAY_*`, then the command line's values), starts
/// (in sandbox mode without a merchant file), prints the banner, and serves until Ctrl-C or
/// SIGTERM, then stops gracefully.
async fn serve(overrides: &Overrides) -> Result<(), StartError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,wxpay_sim::request=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let settings = Settings::load_with(overrides)?;
    for name in wxpay_server::config::unknown_env_vars() {
        tracing::warn!(
            "{name} is set but configures nothing (`wxpay serve --help` lists the keys)"
        );
    }
    let app = build_server(settings).await?;
    let stopped = stop_signal().map_err(StartError::Serve)?;
    print_banner(&app.banner());
    app.run_until(async {
        stopped.await;
        tracing::info!("stopping");
    })
    .await
    .map_err(StartError::Serve)
}
