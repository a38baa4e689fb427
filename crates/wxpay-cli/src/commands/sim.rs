//! `wxpay sim`: the local WeChat Pay and mini-program simulator, until Ctrl-C.

use wxpay_sim::{SimConfig, SimError, Simulator};

use crate::cli::SimArgs;
use crate::failure::Failure;
use crate::process::{print_banner, stop_signal};

/// Runs the simulator on a runtime of its own (the debugging commands need none).
///
/// # Errors
/// [`Failure::Input`] for a bad setting, state directory or address; [`Failure::Runtime`] when
/// the runtime, TLS or the signal handler cannot be set up.
pub fn run(args: &SimArgs) -> Result<(), Failure> {
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        return Err(Failure::input(format!(
            "--time-scale must be a positive number, got {}",
            args.time_scale
        )));
    }
    // Logs go to stderr; RUST_LOG overrides the default level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A subscriber may already be set (it is not in this binary); logging then stays as it is.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    let config = SimConfig {
        listen: args.listen,
        state_dir: Some(args.state_dir.clone()),
        time_scale: args.time_scale,
        key_mode: args.key_mode,
        ..SimConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(config))
}

/// Runs the simulator until Ctrl-C or SIGTERM, printing the URLs and where `merchant.json` is.
async fn serve(config: SimConfig) -> Result<(), Failure> {
    let stopped = stop_signal().map_err(|e| Failure::runtime(format!("signal: {e}")))?;
    let sim = Simulator::start(config.clone())
        .await
        .map_err(|e| match e {
            SimError::Config(_) | SimError::Credentials(_) | SimError::Bind { .. } => {
                Failure::input(e.to_string())
            }
            other => Failure::runtime(other.to_string()),
        })?;
    let m = sim.merchant();
    let merchant = match &m.merchant_json_path {
        Some(p) => p.display().to_string(),
        None => "in memory (no --state-dir)".to_owned(),
    };
    print_banner(&format!(
        "wxpay simulator (WeChat Pay v2 + v3, mini program)\n\
         \x20 http:      {}\n\
         \x20 https:     {}   (CA: sim_ca.pem beside merchant.json)\n\
         \x20 control:   {}/sim/\n\
         \x20 key mode:  {}\n\
         \x20 appid:     {}\n\
         \x20 mchid:     {}\n\
         \x20 merchant:  {merchant}",
        sim.base_url(),
        sim.tls_base_url(),
        sim.base_url(),
        config.key_mode,
        m.appid,
        m.mchid,
    ));
    stopped.await;
    sim.shutdown().await;
    Ok(())
}
