//! Several merchants and mini programs in one simulator: merchants and apps added at run time,
//! each merchant paid, notified and refunded with its own keys by the library's real clients
//! (built from each merchant's own `merchant.json`), bindings, visibility, per-app codes and
//! a restart on the same state directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wxpay::http::{BaseUrls, ClientIdentity, HttpConfig, RetryPolicy};
use wxpay::nonce::SystemClock;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::certificates::PlatformVerifier;
use wxpay::v3::client::{V3Client, V3Config};
use wxpay::v3::models::{PrepayFields, PrepayRequest, RefundFields, RefundRequest, RefundTarget};
use wxpay::v3::notify::Notification;
use wxpay::{ApiError, Error, Fen, RsaPrivateKey, RsaPublicKey};
use wxpay_sim::merchant::load_merchant_dir;
use wxpay_sim::{KeyMode, MerchantCredentials, RunningSimulator, SimConfig, Simulator};

fn id<T>(text: &str) -> T
where
    T: TryFrom<String>,
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).unwrap()
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wxpay-sim-tenants-{}", rand::random::<u64>()))
}

async fn start(dir: &Path) -> RunningSimulator {
    Simulator::start(SimConfig {
        state_dir: Some(dir.to_owned()),
        time_scale: 3600.0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

async fn control(sim: &RunningSimulator, method: &str, path: &str, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(
        method.parse().unwrap(),
        format!("{}{}", sim.base_url(), path),
    );
    if method != "GET" {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Adds a merchant and reads its own `merchant.json` back, as its merchant server would.
async fn add_merchant(sim: &RunningSimulator, mode: &str) -> (Value, MerchantCredentials) {
    let (status, answer) = control(sim, "POST", "/sim/merchants", json!({"key_mode": mode})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["key_mode"], mode);
    let text = answer.to_string();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let dir = PathBuf::from(answer["merchant_dir"].as_str().unwrap());
    let credentials = load_merchant_dir(&dir).unwrap().credentials;
    assert_eq!(answer["mchid"], credentials.mchid.as_str());
    assert!(!text.contains(&credentials.api_v3_key));
    assert!(!text.contains(&credentials.api_v2_key));
    assert_eq!(credentials.mchid.len(), 10);
    (answer, credentials)
}

async fn new_user(sim: &RunningSimulator, appid: &str) -> (String, String) {
    let (status, answer) = control(sim, "POST", "/sim/users", json!({"appid": appid})).await;
    assert_eq!(status, 200, "{answer}");
    (
        answer["openid"].as_str().unwrap().to_owned(),
        answer["code"].as_str().unwrap().to_owned(),
    )
}

fn v3_client(
    sim: &RunningSimulator,
    m: &MerchantCredentials,
    appid: &str,
    mode: KeyMode,
) -> V3Client {
    let public_key = RsaPublicKey::from_pem(&m.wechatpay_public_key_pem).unwrap();
    let platform = match mode {
        KeyMode::PublicKey => PlatformVerifier::public_key(&m.wechatpay_public_key_id, public_key),
        // No certificate configured: the client downloads this merchant's own.
        KeyMode::Certificate => PlatformVerifier::certificates(Vec::new()),
        KeyMode::Migrating => {
            PlatformVerifier::both(&m.wechatpay_public_key_id, public_key, Vec::new())
        }
    };
    let config = V3Config {
        mchid: m.mchid.clone(),
        appid: appid.to_owned(),
        merchant_serial: m.merchant_serial.clone(),
        private_key: RsaPrivateKey::from_pem(&m.merchant_private_key_pem).unwrap(),
        api_v3_key: ApiV3Key::new(&m.api_v3_key).unwrap(),
        platform,
    };
    V3Client::with_clock(
        config,
        &HttpConfig {
            retry: RetryPolicy::none(),
            timeout: Duration::from_secs(10),
            ..HttpConfig::default()
        },
        &BaseUrls::single(&sim.base_url()),
        Arc::new(SystemClock),
    )
    .unwrap()
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn wait_for(received: &Received, count: usize) -> Vec<(HeaderMap, Bytes)> {
    for _ in 0..400 {
        {
            let got = received.lock().unwrap();
            if got.len() >= count {
                return got.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} notifications");
}

async fn pay(
    sim: &RunningSimulator,
    payment: &impl serde::Serialize,
    openid: &str,
) -> (u16, Value) {
    let mut body = serde_json::to_value(payment).unwrap();
    body["openid"] = openid.into();
    control(sim, "POST", "/sim/pay", body).await
}

/// Prepay, pay, notification and refund (with its notification) for one merchant and app.
async fn pay_and_refund(
    sim: &RunningSimulator,
    m: &MerchantCredentials,
    appid: &str,
    mode: KeyMode,
    other: &V3Client,
) -> String {
    let client = v3_client(sim, m, appid, mode);
    let (notify_url, received) = receiver().await;
    let (openid, _) = new_user(sim, appid).await;
    let no = format!("T{}", wxpay::nonce::random_string(20));
    let order = PrepayRequest::jsapi(PrepayFields {
        description: "咖啡".into(),
        out_trade_no: id(&no),
        total: Fen::new(500),
        openid: id(&openid),
        notify_url: notify_url.clone(),
    });
    let (_, payment) = client.jsapi_prepay_with_payment(&order).await.unwrap();
    let (status, answer) = pay(sim, &payment, &openid).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = wait_for(&received, 1).await;
    let (headers, body) = &delivered[0];
    match client.parse_notification(headers, body).await.unwrap() {
        Notification::Payment(p) => {
            assert_eq!(p.transaction.out_trade_no, no);
            assert_eq!(p.transaction.mchid, m.mchid);
            assert_eq!(p.transaction.appid, appid);
        }
        other => panic!("expected a payment notification, got {other:?}"),
    }
    // Another merchant's keys neither verify nor decrypt it.
    assert!(other.parse_notification(headers, body).await.is_err());
    let expected_serial = match mode {
        KeyMode::Certificate => m.platform_serial.clone(),
        _ => m.wechatpay_public_key_id.clone(),
    };
    assert_eq!(
        headers["wechatpay-serial"].to_str().unwrap(),
        expected_serial
    );
    if mode == KeyMode::Certificate {
        assert_eq!(
            client.verifier().certificate_store().serials(),
            vec![m.platform_serial.clone()]
        );
    }

    let mut refund = RefundRequest::new(RefundFields {
        target: RefundTarget::OutTradeNo(id(&no)),
        out_refund_no: id(&format!("R{no}")),
        refund: Fen::new(200),
        total: Fen::new(500),
    });
    refund.notify_url = Some(notify_url);
    let created = client.refund(&refund).await.unwrap();
    assert_eq!(created.out_trade_no, no);
    let delivered = wait_for(&received, 2).await;
    let (headers, body) = &delivered[1];
    match client.parse_notification(headers, body).await.unwrap() {
        Notification::Refund(r) => assert_eq!(r.refund.out_trade_no, no),
        other => panic!("expected a refund notification, got {other:?}"),
    }
    no
}

fn v3_code(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Api(ApiError::V3 { status, code, .. })) => (status, format!("{code:?}")),
        other => panic!("expected a v3 error, got {other:?}"),
    }
}

#[tokio::test]
async fn each_merchant_pays_notifies_and_refunds_with_its_own_keys() {
    let dir = temp_dir();
    let sim = start(&dir).await;
    let first = sim.merchant().clone();
    let first_client = v3_client(&sim, &first, &first.appid, KeyMode::PublicKey);
    let (b_answer, b) = add_merchant(&sim, "public_key").await;
    let (_, c) = add_merchant(&sim, "certificate").await;
    assert_eq!(b_answer["appid"], b.appid.as_str());
    assert!(
        dir.join("merchants")
            .join(&b.mchid)
            .join("merchant.json")
            .exists()
    );
    // A third mini program, bound to B.
    let (status, d) = control(&sim, "POST", "/sim/apps", json!({"mchid": b.mchid})).await;
    assert_eq!(status, 201, "{d}");
    let d_appid = d["appid"].as_str().unwrap().to_owned();
    assert!(d_appid.starts_with("wx") && d_appid.len() == 18);
    assert_eq!(d["app_secret"].as_str().unwrap().len(), 32);
    let (_, apps) = control(&sim, "GET", "/sim/apps", Value::Null).await;
    assert_eq!(apps["apps"].as_array().unwrap().len(), 4);
    assert!(!apps.to_string().contains(d["app_secret"].as_str().unwrap()));
    let (_, merchants) = control(&sim, "GET", "/sim/merchants", Value::Null).await;
    assert_eq!(merchants["merchants"].as_array().unwrap().len(), 3);
    assert!(!merchants.to_string().contains(&b.api_v3_key));
    assert!(!merchants.to_string().contains(&c.api_v2_key));

    let b_no = pay_and_refund(&sim, &b, &b.appid, KeyMode::PublicKey, &first_client).await;
    pay_and_refund(&sim, &b, &d_appid, KeyMode::PublicKey, &first_client).await;
    let c_no = pay_and_refund(&sim, &c, &c.appid, KeyMode::Certificate, &first_client).await;
    pay_and_refund(
        &sim,
        &first,
        &first.appid,
        KeyMode::PublicKey,
        &v3_client(&sim, &b, &b.appid, KeyMode::PublicKey),
    )
    .await;

    // A merchant never sees another's orders.
    let c_client = v3_client(&sim, &c, &c.appid, KeyMode::Certificate);
    let (status, code) = v3_code(c_client.query_by_out_trade_no(&id(&b_no)).await);
    assert_eq!((status, code.as_str()), (404, "OrderNotExist"));
    let b_client = v3_client(&sim, &b, &b.appid, KeyMode::PublicKey);
    b_client.query_by_out_trade_no(&id(&b_no)).await.unwrap();
    let (status, _) = v3_code(b_client.query_by_out_trade_no(&id(&c_no)).await);
    assert_eq!(status, 404);
    assert_eq!(
        v3_code(first_client.query_by_out_trade_no(&id(&c_no)).await).0,
        404
    );

    // An appid bound to another merchant: APPID_MCHID_NOT_MATCH.
    let wrong = v3_client(&sim, &b, &c.appid, KeyMode::PublicKey);
    let (openid, _) = new_user(&sim, &c.appid).await;
    let order = PrepayRequest::jsapi(PrepayFields {
        description: "x".into(),
        out_trade_no: id("MISMATCH-1"),
        total: Fen::new(1),
        openid: id(&openid),
        notify_url: "http://127.0.0.1:9/notify".into(),
    });
    let (status, code) = v3_code(wrong.jsapi_prepay(&order).await);
    assert_eq!((status, code.as_str()), (400, "AppidMchidNotMatch"));
    // An openid of another mini program of the same merchant: appid和openid不匹配.
    let other_app = v3_client(&sim, &b, &d_appid, KeyMode::PublicKey);
    let (status, code) = v3_code(other_app.jsapi_prepay(&order).await);
    assert_eq!((status, code.as_str()), (400, "ParamError"));

    // A public-key merchant has no platform certificate; the certificate merchant its own.
    assert!(b_client.download_certificates().await.unwrap().is_empty());
    let certs = c_client.download_certificates().await.unwrap();
    assert_eq!(certs[0].serial_no, c.platform_serial);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn v2_per_merchant_keys_bindings_and_client_certificates() {
    use wxpay::v2::client::{V2Client, V2Config};
    use wxpay::v2::models::{
        OrderId, RefundFields, RefundRequest, UnifiedOrderFields, UnifiedOrderRequest,
    };
    let dir = temp_dir();
    let sim = start(&dir).await;
    let first = sim.merchant().clone();
    let (_, b) = add_merchant(&sim, "public_key").await;
    let http = HttpConfig {
        retry: RetryPolicy::none(),
        extra_roots_pem: vec![b.ca_cert_pem.clone()],
        ..HttpConfig::default()
    };
    let client = V2Client::new(
        V2Config::new(&b.appid, &b.mchid, &b.api_v2_key),
        &http,
        &BaseUrls::single(&sim.base_url()),
    )
    .unwrap();
    let (notify_url, received) = receiver().await;
    let (openid, _) = new_user(&sim, &b.appid).await;
    let order = |no: &str| {
        UnifiedOrderRequest::jsapi(UnifiedOrderFields {
            body: "商品".into(),
            out_trade_no: id(no),
            total_fee: Fen::new(300),
            spbill_create_ip: "203.0.113.7".into(),
            notify_url: notify_url.clone(),
            openid: id(&openid),
        })
    };
    let prepay = client.unified_order(&order("V2-B-1")).await.unwrap();
    let payment = client.request_payment(
        &prepay.prepay_id,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
    let (status, answer) = pay(&sim, &payment, &openid).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = wait_for(&received, 1).await;
    let note = wxpay::v2::notify::parse_pay_notification(&delivered[0].1, &b.api_v2_key).unwrap();
    assert_eq!(note.out_trade_no.as_str(), "V2-B-1");
    assert!(wxpay::v2::notify::parse_pay_notification(&delivered[0].1, &first.api_v2_key).is_err());

    // B's mch_id with the first merchant's appid.
    let wrong = V2Client::new(
        V2Config::new(&first.appid, &b.mchid, &b.api_v2_key),
        &http,
        &BaseUrls::single(&sim.base_url()),
    )
    .unwrap();
    match wrong.unified_order(&order("V2-B-2")).await {
        Err(Error::Api(ApiError::V2Business { err_code, .. })) => {
            assert_eq!(err_code.as_str(), "APPID_MCHID_NOT_MATCH");
        }
        other => panic!("expected APPID_MCHID_NOT_MATCH, got {other:?}"),
    }
    // The first merchant cannot see B's order.
    let first_client = V2Client::new(
        V2Config::new(&first.appid, &first.mchid, &first.api_v2_key),
        &http,
        &BaseUrls::single(&sim.base_url()),
    )
    .unwrap();
    let query = wxpay::v2::models::OrderQueryRequest::by_out_trade_no(id("V2-B-1"));
    match first_client.order_query(&query).await {
        Err(Error::Api(ApiError::V2Business { err_code, .. })) => {
            assert_eq!(err_code.as_str(), "ORDERNOTEXIST");
        }
        other => panic!("expected ORDERNOTEXIST, got {other:?}"),
    }
    client.order_query(&query).await.unwrap();

    // /secapi/ refund: B's own client certificate works, the first merchant's does not.
    let refund = RefundRequest::new(RefundFields {
        id: OrderId::OutTradeNo(id("V2-B-1")),
        out_refund_no: id("V2-R-1"),
        total_fee: Fen::new(300),
        refund_fee: Fen::new(100),
    });
    let with_identity = |m: &MerchantCredentials| {
        V2Client::new(
            V2Config::new(&b.appid, &b.mchid, &b.api_v2_key).with_client_identity(
                ClientIdentity::from_pkcs12(&m.merchant_cert_p12, &m.mchid).unwrap(),
            ),
            &http,
            &BaseUrls::single(&sim.tls_base_url()),
        )
        .unwrap()
    };
    assert!(with_identity(&first).refund(&refund).await.is_err());
    with_identity(&b).refund(&refund).await.unwrap();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn code2session(sim: &RunningSimulator, appid: &str, secret: &str, code: &str) -> Value {
    reqwest::Client::new()
        .get(format!(
            "{}/sns/jscode2session?appid={appid}&secret={secret}&js_code={code}&grant_type=authorization_code",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn codes_and_secrets_are_per_mini_program_and_survive_a_restart() {
    let dir = temp_dir();
    let sim = start(&dir).await;
    let first = sim.merchant().clone();
    let (_, b) = add_merchant(&sim, "certificate").await;
    let (_, e) = control(
        &sim,
        "POST",
        "/sim/apps",
        json!({"mchid": b.mchid, "appid": "wx0123456789abcdef"}),
    )
    .await;
    assert_eq!(e["appid"], "wx0123456789abcdef");
    let e_secret = e["app_secret"].as_str().unwrap().to_owned();

    let (b_openid, b_code) = new_user(&sim, &b.appid).await;
    // A code of app B used with app E: invalid code.
    let refused = code2session(&sim, "wx0123456789abcdef", &e_secret, &b_code).await;
    assert_eq!(refused["errcode"], 40029, "{refused}");
    // App B's code with the first app's secret, and B's appid with E's secret.
    let refused = code2session(&sim, &b.appid, &e_secret, &b_code).await;
    assert_eq!(refused["errcode"], 40125, "{refused}");
    let ok = code2session(&sim, &b.appid, &b.app_secret, &b_code).await;
    assert_eq!(ok["openid"], b_openid.as_str(), "{ok}");
    // No appid: the first mini program's user, as before.
    let (status, answer) = control(&sim, "POST", "/sim/users", json!({})).await;
    assert_eq!(status, 200);
    let first_code = answer["code"].as_str().unwrap();
    let ok = code2session(&sim, &first.appid, &first.app_secret, first_code).await;
    assert_eq!(ok["openid"], answer["openid"]);
    // Tokens per app: E's token works for E's calls.
    let token: Value = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", sim.base_url()))
        .json(&json!({"grant_type": "client_credential", "appid": "wx0123456789abcdef", "secret": e_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(token["access_token"].is_string(), "{token}");
    let (e_openid, _) = new_user(&sim, "wx0123456789abcdef").await;
    let (status, unknown) = control(
        &sim,
        "POST",
        "/sim/users",
        json!({"appid": "wx9999999999999999"}),
    )
    .await;
    assert_eq!(status, 400, "{unknown}");
    sim.shutdown().await;

    // Restart on the same state directory: merchants, apps and their users are back.
    let sim = start(&dir).await;
    let (_, merchants) = control(&sim, "GET", "/sim/merchants", Value::Null).await;
    let ids: Vec<&str> = merchants["merchants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mchid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![first.mchid.as_str(), b.mchid.as_str()]);
    assert_eq!(merchants["merchants"][1]["key_mode"], "certificate");
    let (_, apps) = control(&sim, "GET", "/sim/apps", Value::Null).await;
    assert_eq!(apps["apps"].as_array().unwrap().len(), 3);
    let state = sim.state();
    assert!(state.has_user(&b.appid, &b_openid));
    assert!(state.has_user("wx0123456789abcdef", &e_openid));
    assert!(!state.has_user(&first.appid, &e_openid));
    // And B still pays with its own keys.
    let c = v3_client(&sim, &b, &b.appid, KeyMode::Certificate);
    let other = v3_client(&sim, &first, &first.appid, KeyMode::PublicKey);
    pay_and_refund(&sim, &b, &b.appid, KeyMode::Certificate, &other).await;
    c.download_certificates().await.unwrap();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
