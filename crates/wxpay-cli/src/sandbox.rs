//! Sandbox mode, composed here rather than in the server: without a merchant file, `wxpay
//! serve` (and `wxpay demo`) start the simulator in process and hand the server its URLs, its
//! merchant and its stop. The server itself never depends on the simulator.

use std::net::SocketAddr;

use wxpay_server::app::Sandbox;
use wxpay_server::{Application, Settings, StartError};
use wxpay_sim::{SimConfig, Simulator};

/// Builds the server: in merchant mode as configured, in sandbox mode (no merchant file) with
/// a simulator started on a free local port, its state in `WXPAY_SANDBOX_DIR`.
///
/// # Errors
/// [`StartError`]; [`StartError::Sandbox`] when the simulator does not start.
pub async fn build_server(settings: Settings) -> Result<Application, StartError> {
    if settings.merchant_file().is_some() {
        return Application::build(settings).await;
    }
    // What the server would refuse is refused before a simulator starts: the refusal stays the
    // one line it is in merchant mode, with nothing started and stopped around it.
    if let Some(files) = settings.tls.clone() {
        wxpay_server::net::tls::CertStore::load(files)?;
    }
    // The simulator's control routes answer only this token; the server's `/sim` proxy sends
    // it with what the admin token admits.
    let control_token = wxpay::nonce::random_string(32);
    let sim = Simulator::start(SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: Some(settings.sandbox_dir.clone()),
        time_scale: settings.sandbox_time_scale,
        control_token: Some(control_token.clone()),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| StartError::Sandbox(e.to_string()))?;
    let Some(merchant_file) = sim.merchant().merchant_json_path.clone() else {
        sim.shutdown().await;
        return Err(StartError::Sandbox(
            "the simulator wrote no merchant.json".into(),
        ));
    };
    let public_key_only = sim.state().signer.mode() == wxpay_sim::KeyMode::PublicKey;
    let mut sandbox = Sandbox::new(
        merchant_file,
        sim.base_url(),
        sim.tls_base_url(),
        // Lazy: the simulator stops when the server awaits this, as it stops.
        sim.shutdown(),
    );
    sandbox.platform_certificates = !public_key_only;
    sandbox.control_token = Some(control_token.into());
    Application::build_sandbox(settings, sandbox).await
}
