//! `wxpay serve`: the merchant payment server, until Ctrl-C.

use wxpay_server::StartError;

use crate::cli::ServeArgs;
use crate::failure::Failure;

/// Runs the server on a runtime of its own.
///
/// # Errors
/// [`Failure::Input`] for a bad configuration (one line naming the key); [`Failure::Runtime`]
/// when the runtime cannot start or serving fails.
pub fn run(args: &ServeArgs) -> Result<(), Failure> {
    let overrides = wxpay_server::config::Overrides {
        config: args.config.clone(),
        listen: args.listen.clone(),
        database_url: args.database_url.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(wxpay_server::run_with(&overrides))
        .map_err(|e| match e {
            StartError::Serve(_) => Failure::runtime(e.to_string()),
            other => Failure::input(other.to_string()),
        })
}
