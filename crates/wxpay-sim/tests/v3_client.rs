//! The library's v3 client against the simulator, in the three key modes: every call, the
//! notifications, the bills, and the rejections a client must notice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use wxpay::http::{BaseUrls, HttpConfig, RetryPolicy};
use wxpay::nonce::{Clock, FixedClock, SystemClock};
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::certificates::PlatformVerifier;
use wxpay::v3::client::{V3Client, V3Config};
use wxpay::v3::models::{
    FundFlowAccountType, FundFlowBillRequest, PrepayFields, PrepayRequest, RefundFields,
    RefundRequest, RefundStatus, RefundTarget, TradeBillRequest, TradeBillType, TradeState,
};
use wxpay::v3::notify::Notification;
use wxpay::v3::verifier::Verifier;
use wxpay::{ApiError, Error, Fen, RsaPrivateKey, RsaPublicKey, SignatureError};
use wxpay_sim::{KeyMode, RunningSimulator, SimConfig, Simulator};

/// A validated identifier (the tests use valid ones).
fn id<T>(text: &str) -> T
where
    T: TryFrom<String>,
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).unwrap()
}

async fn start(mode: KeyMode) -> RunningSimulator {
    Simulator::start(SimConfig {
        key_mode: mode,
        time_scale: 3600.0,
        migrating_ratio: 0.5,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn http_config() -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy::none(),
        timeout: Duration::from_secs(10),
        ..HttpConfig::default()
    }
}

fn platform(sim: &RunningSimulator, mode: KeyMode) -> PlatformVerifier {
    let m = sim.merchant();
    let public_key = RsaPublicKey::from_pem(&m.wechatpay_public_key_pem).unwrap();
    match mode {
        KeyMode::PublicKey => PlatformVerifier::public_key(&m.wechatpay_public_key_id, public_key),
        // No certificate configured: the client must download them on the first answer.
        KeyMode::Certificate => PlatformVerifier::certificates(Vec::new()),
        KeyMode::Migrating => {
            PlatformVerifier::both(&m.wechatpay_public_key_id, public_key, Vec::new())
        }
    }
}

fn client_with(
    sim: &RunningSimulator,
    platform: PlatformVerifier,
    clock: Arc<dyn Clock>,
) -> V3Client {
    let m = sim.merchant();
    let config = V3Config {
        mchid: m.mchid.clone(),
        appid: m.appid.clone(),
        merchant_serial: m.merchant_serial.clone(),
        private_key: RsaPrivateKey::from_pem(&m.merchant_private_key_pem).unwrap(),
        api_v3_key: ApiV3Key::new(&m.api_v3_key).unwrap(),
        platform,
    };
    V3Client::with_clock(
        config,
        &http_config(),
        &BaseUrls::single(&sim.base_url()),
        clock,
    )
    .unwrap()
}

fn client(sim: &RunningSimulator, mode: KeyMode) -> V3Client {
    client_with(sim, platform(sim, mode), Arc::new(SystemClock))
}

async fn new_user(sim: &RunningSimulator) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/sim/users", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["openid"].as_str().unwrap().to_owned()
}

async fn pay(
    sim: &RunningSimulator,
    payment: &wxpay::RequestPayment,
    openid: &str,
) -> reqwest::Response {
    let mut body = serde_json::to_value(payment).unwrap();
    body["openid"] = openid.into();
    reqwest::Client::new()
        .post(format!("{}/sim/pay", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A merchant notify endpoint that records what arrives and acks with 204.
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
    for _ in 0..200 {
        {
            let got = received.lock().unwrap();
            if got.len() >= count {
                return got.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "expected {count} notifications, got {}",
        received.lock().unwrap().len()
    );
}

fn out_trade_no() -> String {
    format!("T{}", wxpay::nonce::random_string(20))
}

async fn paid_order(
    sim: &RunningSimulator,
    client: &V3Client,
    total: u64,
    notify_url: &str,
) -> (String, String) {
    let openid = new_user(sim).await;
    let no = out_trade_no();
    let order = PrepayRequest::jsapi(PrepayFields {
        description: ("咖啡 Coffee").into(),
        out_trade_no: id(&no),
        total: Fen::new(total),
        openid: id(&openid),
        notify_url: (notify_url).into(),
    });
    let (prepay, payment) = client.jsapi_prepay_with_payment(&order).await.unwrap();
    assert!(prepay.prepay_id.starts_with("wx"));
    let answer = pay(sim, &payment, &openid).await;
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    (no, openid)
}

async fn whole_payment_in(mode: KeyMode) {
    let sim = start(mode).await;
    let client = client(&sim, mode);
    let (notify_url, received) = receiver().await;

    let (no, openid) = paid_order(&sim, &client, 1250, &notify_url).await;

    let by_no = client.query_by_out_trade_no(&id(&no)).await.unwrap();
    assert_eq!(by_no.trade_state, TradeState::Success);
    assert_eq!(by_no.amount.total, 1250);
    assert_eq!(by_no.payer.as_ref().unwrap().openid, openid);
    let tx = by_no.transaction_id.clone().unwrap();
    let by_id = client.query_by_transaction_id(&tx).await.unwrap();
    assert_eq!(by_id.out_trade_no, no);

    let delivered = wait_for(&received, 1).await;
    let (headers, body) = &delivered[0];
    match client.parse_notification(headers, body).await.unwrap() {
        Notification::Payment(p) => {
            assert_eq!(p.event_type, "TRANSACTION.SUCCESS");
            assert_eq!(p.transaction.out_trade_no, no);
            assert_eq!(p.transaction.amount.total, 1250);
            assert_eq!(p.transaction.transaction_id.as_deref(), Some(tx.as_str()));
            assert_eq!(p.transaction.mchid, sim.merchant().mchid);
        }
        other => panic!("expected a payment notification, got {other:?}"),
    }
    if mode == KeyMode::Certificate {
        // The certificate was downloaded on the first answer and is the platform's.
        let store = client.verifier().certificate_store();
        assert_eq!(
            store.serials(),
            vec![sim.merchant().platform_serial.clone()]
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_whole_payment_in_public_key_mode() {
    whole_payment_in(KeyMode::PublicKey).await;
}

#[tokio::test]
async fn a_whole_payment_in_certificate_mode_downloads_the_certificates() {
    whole_payment_in(KeyMode::Certificate).await;
}

#[tokio::test]
async fn a_whole_payment_in_migrating_mode() {
    whole_payment_in(KeyMode::Migrating).await;
}

#[tokio::test]
async fn migrating_notifications_are_signed_by_either_key_and_all_verify() {
    let sim = start(KeyMode::Migrating).await;
    let client = client(&sim, KeyMode::Migrating);
    let (notify_url, received) = receiver().await;
    for _ in 0..12 {
        paid_order(&sim, &client, 1, &notify_url).await;
    }
    let delivered = wait_for(&received, 12).await;
    let mut by_public_key = 0;
    for (headers, body) in &delivered {
        if headers["wechatpay-serial"]
            .to_str()
            .unwrap()
            .starts_with("PUB_KEY_ID_")
        {
            by_public_key += 1;
        }
        client.parse_notification(headers, body).await.unwrap();
    }
    // The simulator interleaves the keys by the ratio (0.5): half of them each, every run.
    assert_eq!(
        by_public_key, 6,
        "both the public key and the certificate signed, half each"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn closing_an_unpaid_order_and_the_errors_around_it() {
    let sim = start(KeyMode::PublicKey).await;
    let client = client(&sim, KeyMode::PublicKey);
    let openid = new_user(&sim).await;
    let no = out_trade_no();
    let order = PrepayRequest::jsapi(PrepayFields {
        description: ("Tea").into(),
        out_trade_no: id(&no),
        total: Fen::new(300),
        openid: id(&openid),
        notify_url: ("https://merchant.example/notify").into(),
    });
    let (_, payment) = client.jsapi_prepay_with_payment(&order).await.unwrap();

    // The same out_trade_no with another amount is refused.
    let mut other = order.clone();
    other.amount.total = 301;
    match client.jsapi_prepay(&other).await {
        Err(Error::Api(ApiError::V3 { status, code, .. })) => {
            assert_eq!(status, 403);
            assert_eq!(code, wxpay::v3::ErrorCode::OutTradeNoUsed);
        }
        other => panic!("expected OUT_TRADE_NO_USED, got {other:?}"),
    }

    client.close(&id(&no)).await.unwrap();
    let closed = client.query_by_out_trade_no(&id(&no)).await.unwrap();
    assert_eq!(closed.trade_state, TradeState::Closed);
    let answer = pay(&sim, &payment, &openid).await;
    assert_eq!(answer.status(), 400, "a closed order cannot be paid");

    match client.query_by_out_trade_no(&id("NOSUCHORDER1")).await {
        Err(Error::Api(ApiError::V3 {
            status: 404, code, ..
        })) => {
            assert_eq!(code, wxpay::v3::ErrorCode::OrderNotExist);
        }
        other => panic!("expected ORDER_NOT_EXIST, got {other:?}"),
    }
    // Refused before sending: the simulator never sees it.
    assert!(matches!(
        wxpay::OutTradeNo::try_from("a b").map_err(Error::from),
        Err(Error::InvalidRequest(_))
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn refunds_are_idempotent_bounded_and_notified() {
    let sim = start(KeyMode::PublicKey).await;
    let client = client(&sim, KeyMode::PublicKey);
    let (notify_url, received) = receiver().await;
    let (no, _) = paid_order(&sim, &client, 1000, &notify_url).await;

    let mut first = RefundRequest::new(RefundFields {
        target: RefundTarget::OutTradeNo(id(&no)),
        out_refund_no: id("R1-A"),
        refund: Fen::new(400),
        total: Fen::new(1000),
    });
    first.notify_url = Some(notify_url.clone());
    let created = client.refund(&first).await.unwrap();
    assert_eq!(created.amount.refund, 400);
    assert_eq!(created.out_trade_no, no);

    let again = client.refund(&first).await.unwrap();
    assert_eq!(
        again.refund_id, created.refund_id,
        "same out_refund_no, same refund"
    );

    let over = RefundRequest::new(RefundFields {
        target: RefundTarget::OutTradeNo(id(&no)),
        out_refund_no: id("R1-B"),
        refund: Fen::new(601),
        total: Fen::new(1000),
    });
    match client.refund(&over).await {
        Err(Error::Api(ApiError::V3 { status: 400, .. })) => {}
        other => panic!("a refund over the remaining 600 must be refused, got {other:?}"),
    }
    let rest = RefundRequest::new(RefundFields {
        target: RefundTarget::OutTradeNo(id(&no)),
        out_refund_no: id("R1-C"),
        refund: Fen::new(600),
        total: Fen::new(1000),
    });
    client.refund(&rest).await.unwrap();

    // The payment notification, then the refund notification of R1-A (R1-C has no notify_url).
    let delivered = wait_for(&received, 2).await;
    let mut refund_seen = false;
    for (headers, body) in &delivered {
        if let Notification::Refund(r) = client.parse_notification(headers, body).await.unwrap() {
            assert_eq!(r.refund.out_refund_no, "R1-A");
            assert_eq!(r.refund.refund_status, RefundStatus::Success);
            assert_eq!(r.refund.amount.refund, 400);
            refund_seen = true;
        }
    }
    assert!(refund_seen);
    let queried = client.query_refund(&id("R1-A")).await.unwrap();
    assert_eq!(queried.status, RefundStatus::Success);
    assert_eq!(
        client
            .query_by_out_trade_no(&id(&no))
            .await
            .unwrap()
            .trade_state,
        TradeState::Refund
    );
    match client.query_refund(&id("R-UNKNOWN")).await {
        Err(Error::Api(ApiError::V3 { status: 404, .. })) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn bills_download_with_their_digest_checked() {
    let sim = start(KeyMode::Certificate).await;
    let client = client(&sim, KeyMode::Certificate);
    let (no, _) = paid_order(&sim, &client, 1234, "https://merchant.example/notify").await;
    let today = wxpay::time::beijing_date(time::OffsetDateTime::now_utc());
    // Today's bill exists from 10:00 tomorrow: move the simulator's business clock two days on (signatures
    // keep using the wall clock on both sides).
    let advanced = reqwest::Client::new()
        .post(format!("{}/sim/clock/advance", sim.base_url()))
        .json(&serde_json::json!({"seconds": 172_800}))
        .send()
        .await
        .unwrap();
    assert_eq!(advanced.status(), 200);

    for gzip in [false, true] {
        let location = client
            .trade_bill(&TradeBillRequest {
                bill_date: today,
                bill_type: TradeBillType::All,
                gzip,
            })
            .await
            .unwrap();
        let text = client.download_bill(&location).await.unwrap();
        let bill = wxpay::bill::parse_trade_bill(&text).unwrap();
        assert!(
            bill.rows.iter().any(|row| row.out_trade_no == no),
            "the paid order is in the bill"
        );

        let mut forged = location.clone();
        forged.hash_value = "0".repeat(40);
        assert!(matches!(
            client.download_bill(&forged).await,
            Err(Error::Decode(wxpay::DecodeError::Bill(_)))
        ));
    }
    let fund_flow = client
        .fund_flow_bill(&FundFlowBillRequest {
            bill_date: today,
            account_type: FundFlowAccountType::Basic,
            gzip: false,
        })
        .await
        .unwrap();
    let text = client.download_bill(&fund_flow).await.unwrap();
    wxpay::bill::parse_fund_flow_bill(&text).unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_signed_with_another_key_is_refused_with_sign_error() {
    let sim = start(KeyMode::PublicKey).await;
    let m = sim.merchant();
    let config = V3Config {
        mchid: m.mchid.clone(),
        appid: m.appid.clone(),
        merchant_serial: m.merchant_serial.clone(),
        private_key: RsaPrivateKey::generate().unwrap(),
        api_v3_key: ApiV3Key::new(&m.api_v3_key).unwrap(),
        platform: platform(&sim, KeyMode::PublicKey),
    };
    let client = V3Client::new(config, &http_config(), &BaseUrls::single(&sim.base_url())).unwrap();
    match client.query_by_out_trade_no(&id("T000000001")).await {
        Err(Error::Api(ApiError::V3 {
            status: 401, code, ..
        })) => {
            assert_eq!(code, wxpay::v3::ErrorCode::SignError);
        }
        other => panic!("expected SIGN_ERROR, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_clock_ten_minutes_off_is_refused_both_ways() {
    let sim = start(KeyMode::PublicKey).await;
    let now = SystemClock.now();
    // The merchant's clock is late: the simulator refuses its timestamp.
    let late = client_with(
        &sim,
        platform(&sim, KeyMode::PublicKey),
        Arc::new(FixedClock::at(now - 600)),
    );
    assert!(matches!(
        late.query_by_out_trade_no(&id("T000000001")).await,
        Err(Error::Api(ApiError::V3 { status: 401, .. }))
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_answer_signed_by_an_unknown_key_is_not_believed() {
    let sim = start(KeyMode::PublicKey).await;
    let m = sim.merchant();
    let impostor = RsaPrivateKey::generate().unwrap();
    let wrong =
        PlatformVerifier::public_key(&m.wechatpay_public_key_id, impostor.public_key().clone());
    let client = client_with(&sim, wrong, Arc::new(SystemClock));
    let openid = new_user(&sim).await;
    let order = PrepayRequest::jsapi(PrepayFields {
        description: ("Tea").into(),
        out_trade_no: id(&out_trade_no()),
        total: Fen::new(1),
        openid: id(&openid),
        notify_url: ("https://m.example/n").into(),
    });
    match client.jsapi_prepay(&order).await {
        Err(Error::Signature(SignatureError::Mismatch)) => {}
        other => panic!("expected a signature mismatch, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_public_key_merchant_that_also_expects_certificates_finds_none_without_an_error() {
    let sim = start(KeyMode::PublicKey).await;
    let client = client(&sim, KeyMode::Migrating);
    assert!(client.download_certificates().await.unwrap().is_empty());
    assert_eq!(client.refresh_certificates().await.unwrap(), 0);
    // Answers are still verified, with the public key the requests name.
    let openid = new_user(&sim).await;
    let order = PrepayRequest::jsapi(PrepayFields {
        description: ("Tea").into(),
        out_trade_no: id(&out_trade_no()),
        total: Fen::new(1),
        openid: id(&openid),
        notify_url: ("https://m.example/n").into(),
    });
    client.jsapi_prepay(&order).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn downloaded_certificates_verify_and_encrypt() {
    let sim = start(KeyMode::Certificate).await;
    let client = client(&sim, KeyMode::Certificate);
    let certs = client.download_certificates().await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].serial_no, sim.merchant().platform_serial);
    assert_eq!(client.refresh_certificates().await.unwrap(), 1);
    assert_eq!(
        client.refresh_certificates().await.unwrap(),
        0,
        "known certificates are kept, not added"
    );
    let (serial, ciphertext) = client.encrypt_sensitive("13800138000").unwrap();
    assert_eq!(serial, sim.merchant().platform_serial);
    assert!(!ciphertext.is_empty());
    assert!(client.verifier().knows(&serial));
    sim.shutdown().await;
}
