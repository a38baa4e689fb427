//! Plain HTTP and TLS on one port; TLS clients trust the simulator CA; the merchant's client
//! certificate (from `apiclient_cert.p12`) reaches the handlers.

mod support;

use http::Method;
use support::Merchant;
use wxpay::http::{ClientIdentity, HttpClient, HttpConfig, OutgoingRequest};
use wxpay_sim::KeyMode;

fn config(m: &Merchant) -> HttpConfig {
    HttpConfig {
        extra_roots_pem: vec![m.sim.merchant().ca_cert_pem.clone()],
        ..HttpConfig::default()
    }
}

async fn connection(client: &HttpClient, base: &str) -> serde_json::Value {
    let answer = client
        .send_once(&OutgoingRequest::new(
            Method::GET,
            format!("{base}/sim/connection"),
        ))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    serde_json::from_slice(&answer.body).unwrap()
}

#[tokio::test]
async fn the_same_port_speaks_http_and_tls() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let client = HttpClient::new(&config(&m)).unwrap();
    let plain = connection(&client, &m.sim.base_url()).await;
    assert_eq!(plain["tls"], false);
    let tls = connection(&client, &m.sim.tls_base_url()).await;
    assert_eq!(tls["tls"], true);
    assert!(tls["client_certificate"].is_null());

    // A signed v3 call over TLS verifies like one over plain HTTP.
    let target = format!(
        "/v3/pay/transactions/out-trade-no/order-tls-1?mchid={}",
        m.mchid()
    );
    let request = OutgoingRequest::new(Method::GET, format!("{}{target}", m.sim.tls_base_url()))
        .header(
            http::header::AUTHORIZATION,
            &m.authorization("GET", &target, b""),
        )
        .unwrap();
    let answer = client.send_once(&request).await.unwrap();
    assert_eq!(answer.status, 404);
    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(v["code"], "ORDER_NOT_EXIST");
}

#[tokio::test]
async fn the_merchant_certificate_from_the_p12_is_seen_by_handlers() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let creds = m.sim.merchant();
    let identity = ClientIdentity::from_pkcs12(&creds.merchant_cert_p12, &creds.mchid).unwrap();
    let client = HttpClient::with_identity(&config(&m), &identity).unwrap();
    let v = connection(&client, &m.sim.tls_base_url()).await;
    assert_eq!(v["tls"], true);
    assert_eq!(v["client_certificate"]["is_merchant_certificate"], true);
    assert_eq!(
        v["client_certificate"]["serial_no"],
        creds.merchant_serial.as_str()
    );
    // On plain HTTP there is no certificate to present.
    let v = connection(&client, &m.sim.base_url()).await;
    assert!(v["client_certificate"].is_null());
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["stranger".to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    let identity = ClientIdentity::from_pem(format!("{}{}", key.serialize_pem(), cert.pem()));
    let client = HttpClient::with_identity(&config(&m), &identity).unwrap();
    let result = client
        .send_once(&OutgoingRequest::new(
            Method::GET,
            format!("{}/sim/connection", m.sim.tls_base_url()),
        ))
        .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_simulator_ca_cannot_connect() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let client = HttpClient::new(&HttpConfig::default()).unwrap();
    let result = client
        .send_once(&OutgoingRequest::new(
            Method::GET,
            format!("{}/sim/connection", m.sim.tls_base_url()),
        ))
        .await;
    assert!(result.is_err());
}

/// An SDK with a built-in gateway reaches the simulator through a hosts entry: the TLS certificate
/// names the real hosts (what scripts/test-peers relies on).
#[tokio::test]
async fn the_tls_certificate_names_the_real_hosts() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let ca = reqwest::Certificate::from_pem(m.sim.merchant().ca_cert_pem.as_bytes()).unwrap();
    for host in ["api.mch.weixin.qq.com", "api.weixin.qq.com", "localhost"] {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca.clone()])
            .resolve(host, m.sim.addr())
            .build()
            .unwrap();
        let answer = client
            .get(format!(
                "https://{host}:{}/sim/connection",
                m.sim.addr().port()
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(answer.status(), 200, "{host}");
    }
}
