//! `wxpay sim`: the local WeChat Pay and mini-program simulator, until Ctrl-C.

use wxpay_sim::{SimConfig, SimError};

use crate::cli::SimArgs;
use crate::failure::Failure;

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
    runtime
        .block_on(wxpay_sim::run(config))
        .map_err(|e| match e {
            SimError::Config(_) | SimError::Credentials(_) | SimError::Bind { .. } => {
                Failure::input(e.to_string())
            }
            other => Failure::runtime(other.to_string()),
        })
}
