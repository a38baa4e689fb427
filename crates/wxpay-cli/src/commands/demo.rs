//! `wxpay demo`: the whole flow, v2 and v3, against an in-process simulator and server.

use std::io::Write;

use crate::failure::Failure;

/// Runs the demo on a runtime of its own, one line per step on `out`.
///
/// # Errors
/// [`Failure::Invalid`] when a step failed; [`Failure::Runtime`] when the runtime cannot start
/// or the output cannot be written.
pub fn run(out: &mut dyn Write) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    let summary = runtime
        .block_on(crate::demo::run(out))
        .map_err(|e| Failure::runtime(e.to_string()))?;
    if summary.all_passed() {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "{} of {} demo steps failed",
            summary.failed,
            summary.passed + summary.failed
        )))
    }
}
