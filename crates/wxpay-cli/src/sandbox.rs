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
    let sim_state = sim.state().clone();
    let mut sandbox = Sandbox::new(
        merchant_file,
        sim.base_url(),
        sim.tls_base_url(),
        // Lazy: the simulator stops when the server awaits this, as it stops.
        sim.shutdown(),
    );
    sandbox.platform_certificates = !public_key_only;
    sandbox.control_token = Some(control_token.into());
    let with_provider = settings.sandbox_provider;
    let app = Application::build_sandbox(settings, sandbox).await?;
    if with_provider {
        add_provider(&app, &sim_state)
            .await
            .map_err(StartError::Sandbox)?;
    }
    Ok(app)
}

/// The sub-merchant of the sandbox's service provider.
pub const SANDBOX_SUB_MCHID: &str = "1900000201";

/// `WXPAY_SANDBOX_PROVIDER`: a service provider (服务商) beside the sandbox's direct merchant,
/// made at WeChat (the simulator: a merchant whose own mini program is its `sp_appid`, a
/// sub-merchant bound to a mini program of its own) and registered here (the provider, its
/// sub-merchant, and the sub-merchant's mini program paying through it), so that both kinds
/// of merchant can be tried in the console and the emulator. Once: a sandbox whose database has
/// a provider already is left as it is.
async fn add_provider(
    app: &Application,
    sim: &std::sync::Arc<wxpay_sim::app::AppState>,
) -> Result<(), String> {
    use secrecy::SecretString;
    use wxpay_server::core::tenants::{
        NewMerchant, NewMiniProgram, NewSubMerchant, add_sub_merchant, register_merchant,
        register_mini_program,
    };
    let state = app.state();
    let store = &state.store;
    let merchants = store.merchants().await.map_err(|e| e.to_string())?;
    if merchants
        .iter()
        .any(|m| m.kind == wxpay_server::store::MerchantKind::Provider)
    {
        return Ok(());
    }
    let made = {
        let sim = sim.clone();
        tokio::task::spawn_blocking(move || sim.add_merchant(None, None))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the simulator made no provider: {e:?}"))?
    };
    let (account, provider_app) = made;
    let c = &account.credentials;
    let sp_mchid = c.mchid.clone();
    let sub_app = sim
        .add_app(None, &sp_mchid)
        .map_err(|e| format!("the simulator made no mini program: {e:?}"))?;
    sim.partner
        .register_sub_merchant(&sp_mchid, SANDBOX_SUB_MCHID, Some(sub_app.mp.appid()))
        .map_err(|e| format!("the simulator made no sub-merchant: {e}"))?;
    let key = state.master_key.as_ref();
    let public_key = sim.signer.mode() == wxpay_sim::KeyMode::PublicKey;
    register_merchant(
        store,
        key,
        NewMerchant {
            mchid: sp_mchid.clone(),
            name: "服务商 (sandbox provider)".into(),
            kind: "provider".into(),
            sp_appid: Some(provider_app.mp.appid().to_owned()),
            api_version: "v3".into(),
            api_v2_key: SecretString::from(c.api_v2_key.clone()),
            api_v3_key: SecretString::from(c.api_v3_key.clone()),
            merchant_serial: c.merchant_serial.clone(),
            apiclient_key: SecretString::from(c.merchant_private_key_pem.clone()),
            apiclient_cert: c.merchant_cert_pem.clone(),
            apiclient_cert_p12: None,
            platform_cert: (!public_key).then(|| c.platform_cert_pem.clone()),
            wechatpay_public_key_id: public_key.then(|| c.wechatpay_public_key_id.clone()),
            wechatpay_public_key: public_key.then(|| c.wechatpay_public_key_pem.clone()),
            enabled: None,
        },
    )
    .await
    .map_err(|e| format!("the sandbox provider was not registered: {e}"))?;
    add_sub_merchant(
        store,
        &sp_mchid,
        NewSubMerchant {
            sub_mchid: SANDBOX_SUB_MCHID.into(),
            name: "特约商户 (sandbox sub-merchant)".into(),
            sub_appid: Some(sub_app.mp.appid().to_owned()),
            enabled: None,
        },
    )
    .await
    .map_err(|e| format!("the sandbox sub-merchant was not registered: {e}"))?;
    register_mini_program(
        store,
        key,
        NewMiniProgram {
            appid: sub_app.mp.appid().to_owned(),
            name: "sub-merchant's shop".into(),
            app_secret: SecretString::from(sub_app.mp.app_secret().to_owned()),
            mchid: sp_mchid.clone(),
            sub_mchid: Some(SANDBOX_SUB_MCHID.into()),
            enabled: None,
        },
    )
    .await
    .map_err(|e| format!("the sandbox sub-merchant's mini program was not registered: {e}"))?;
    app.reload_registry().await.map_err(|e| e.to_string())?;
    tracing::info!(sp_mchid = %sp_mchid, sub_mchid = SANDBOX_SUB_MCHID, appid = %sub_app.mp.appid(), "sandbox: service provider added");
    Ok(())
}
