//! `wxpay serve`: the merchant payment server, until Ctrl-C.

use wxpay_server::StartError;

use crate::failure::Failure;

/// Runs the server on a runtime of its own.
///
/// # Errors
/// [`Failure::Input`] for a bad configuration (one line naming the key); [`Failure::Runtime`]
/// when the runtime cannot start or serving fails.
pub fn run() -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(wxpay_server::run_from_env())
        .map_err(|e| match e {
            StartError::Serve(_) => Failure::runtime(e.to_string()),
            other => Failure::input(other.to_string()),
        })
}
