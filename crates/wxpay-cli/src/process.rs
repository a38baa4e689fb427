//! What a long-running command (`wxpay sim`, `wxpay serve`) needs from the process: the stop
//! signal and the start banner.

/// Prints a start banner to stdout in one write. A stdout that is closed or gone (a supervisor
/// that read the URLs and hung up) must not stop a running service, so a failed write is
/// ignored: `println!` would panic on it.
pub fn print_banner(banner: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{banner}\n").as_bytes());
    let _ = out.flush();
}

/// Installs the handlers of Ctrl-C and SIGTERM (what service managers and container runtimes
/// send to stop a process) now, and returns a future that completes when either arrives: the
/// start of a graceful stop. Installing before the start banner is printed means a signal sent
/// as soon as the banner appears is never missed.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
