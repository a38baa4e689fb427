//! The library's clients over a transport of the caller's own (`wxpay::http::Transport`): a
//! recording wrapper around the default reqwest transport sees every request the v3, v2 and
//! mini-program clients send to the simulator, and every answer; the v2 refund goes through the
//! transport that presents the merchant certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wxpay::http::{
    BaseUrls, BoxFuture, ClientIdentity, HttpClient, HttpConfig, OutgoingRequest, RawResponse,
    ReqwestTransport, RetryPolicy, Transport,
};
use wxpay::mp::client::{MpClient, MpConfig};
use wxpay::nonce::SystemClock;
use wxpay::v2::client::{V2Client, V2Config};
use wxpay::v2::models::{
    OrderId, RefundFields, RefundRequest, UnifiedOrderFields, UnifiedOrderRequest,
};
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::certificates::PlatformVerifier;
use wxpay::v3::client::{V3Client, V3Config};
use wxpay::v3::models::{PrepayFields, PrepayRequest, TradeState};
use wxpay::{Error, Fen, OpenId, OutRefundNo, OutTradeNo, RsaPrivateKey, RsaPublicKey};
use wxpay_sim::{RunningSimulator, SimConfig, Simulator};

/// One exchange as the transport saw it.
#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    url: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    status: Option<u16>,
    signed_answer: bool,
}

/// Records every request and answer, and sends through the transport it wraps.
#[derive(Debug)]
struct Recording {
    inner: ReqwestTransport,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Transport for Recording {
    fn send<'a>(
        &'a self,
        request: &'a OutgoingRequest,
    ) -> BoxFuture<'a, Result<RawResponse, wxpay::TransportError>> {
        Box::pin(async move {
            let header = |name: http::HeaderName| {
                request
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let mut exchange = Exchange {
                method: request.method.to_string(),
                url: request.url.clone(),
                authorization: header(http::header::AUTHORIZATION),
                content_type: header(http::header::CONTENT_TYPE),
                body: request.body.to_vec(),
                status: None,
                signed_answer: false,
            };
            let answer = self.inner.send(request).await;
            if let Ok(answer) = &answer {
                exchange.status = Some(answer.status.as_u16());
                exchange.signed_answer = answer.headers.contains_key("wechatpay-signature");
            }
            self.log.lock().unwrap().push(exchange);
            answer
        })
    }
}

fn recording(inner: ReqwestTransport) -> (HttpClient, Arc<Mutex<Vec<Exchange>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let transport = Recording {
        inner,
        log: Arc::clone(&log),
    };
    (
        HttpClient::from_transport(Arc::new(transport), RetryPolicy::none()),
        log,
    )
}

fn http_config(sim: &RunningSimulator) -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy::none(),
        timeout: Duration::from_secs(10),
        extra_roots_pem: vec![sim.merchant().ca_cert_pem.clone()],
        ..HttpConfig::default()
    }
}

async fn start() -> RunningSimulator {
    Simulator::start(SimConfig {
        time_scale: 1000.0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

async fn new_user(sim: &RunningSimulator) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}/sim/users", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn path(url: &str) -> &str {
    let after_scheme = &url[url.find("://").unwrap() + 3..];
    &after_scheme[after_scheme.find('/').unwrap()..]
}

#[tokio::test]
async fn the_v3_client_sends_through_the_callers_transport() {
    let sim = start().await;
    let m = sim.merchant().clone();
    let (http, log) = recording(ReqwestTransport::new(&http_config(&sim)).unwrap());
    let config = V3Config {
        mchid: m.mchid.clone(),
        appid: m.appid.clone(),
        merchant_serial: m.merchant_serial.clone(),
        private_key: RsaPrivateKey::from_pem(&m.merchant_private_key_pem).unwrap(),
        api_v3_key: ApiV3Key::new(&m.api_v3_key).unwrap(),
        platform: PlatformVerifier::public_key(
            &m.wechatpay_public_key_id,
            RsaPublicKey::from_pem(&m.wechatpay_public_key_pem).unwrap(),
        ),
    };
    let client = V3Client::with_http(
        config,
        &BaseUrls::single(&sim.base_url()),
        http,
        Arc::new(SystemClock),
    );
    let user = new_user(&sim).await;
    let no: OutTradeNo = format!("T{}", wxpay::nonce::random_string(20))
        .parse()
        .unwrap();
    let mut order = PrepayRequest::jsapi(PrepayFields {
        description: "Coffee".into(),
        out_trade_no: no.clone(),
        total: Fen::new(1250),
        openid: OpenId::try_from(user["openid"].as_str().unwrap()).unwrap(),
        notify_url: "https://merchant.example/notify/v3/pay".into(),
    });
    order.time_expire = Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let prepay = client.jsapi_prepay(&order).await.unwrap();
    assert!(prepay.prepay_id.starts_with("wx"));
    let queried = client.query_by_out_trade_no(&no).await.unwrap();
    assert_eq!(queried.trade_state, TradeState::NotPay);
    client.close(&no).await.unwrap();

    let log = log.lock().unwrap().clone();
    let seen: Vec<(&str, &str, Option<u16>)> = log
        .iter()
        .map(|e| (e.method.as_str(), path(&e.url), e.status))
        .collect();
    let query = format!("/v3/pay/transactions/out-trade-no/{no}?mchid={}", m.mchid);
    let close = format!("/v3/pay/transactions/out-trade-no/{no}/close");
    assert_eq!(
        seen,
        [
            ("POST", "/v3/pay/transactions/jsapi", Some(200)),
            ("GET", query.as_str(), Some(200)),
            ("POST", close.as_str(), Some(204)),
        ]
    );
    for e in &log {
        let auth = e.authorization.as_deref().unwrap();
        assert!(auth.starts_with("WECHATPAY2-SHA256-RSA2048 "), "{auth}");
        assert!(auth.contains(&format!("mchid=\"{}\"", m.mchid)), "{auth}");
    }
    assert!(log[0].signed_answer && log[1].signed_answer);
    let body: serde_json::Value = serde_json::from_slice(&log[0].body).unwrap();
    assert_eq!(body["appid"], m.appid);
    assert_eq!(body["out_trade_no"], no.as_str());
    assert_eq!(body["amount"]["total"], 1250);
    let expire = body["time_expire"].as_str().unwrap();
    assert!(expire.ends_with("+08:00"), "{expire}");
    assert_eq!(log[0].content_type.as_deref(), Some("application/json"));
    assert!(log[1].body.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn the_v2_refund_goes_through_the_transport_with_the_merchant_certificate() {
    let sim = start().await;
    let m = sim.merchant().clone();
    let http_config = http_config(&sim);
    let (http, plain_log) = recording(ReqwestTransport::new(&http_config).unwrap());
    let identity = ClientIdentity::from_pkcs12(&m.merchant_cert_p12, &m.mchid).unwrap();
    let (secapi, secapi_log) =
        recording(ReqwestTransport::with_identity(&http_config, &identity).unwrap());
    let config = V2Config::new(&m.appid, &m.mchid, &m.api_v2_key);
    let client = V2Client::with_http(
        config.clone(),
        &BaseUrls::single(&sim.tls_base_url()),
        http.clone(),
        Some(secapi),
    )
    .unwrap();

    let user = new_user(&sim).await;
    let openid = user["openid"].as_str().unwrap().to_owned();
    let no: OutTradeNo = "ORDER-T-0001".parse().unwrap();
    let prepay = client
        .unified_order(&UnifiedOrderRequest::jsapi(UnifiedOrderFields {
            body: "模拟商品".into(),
            out_trade_no: no.clone(),
            total_fee: Fen::new(100),
            spbill_create_ip: "203.0.113.7".into(),
            notify_url: "https://merchant.example/notify/v2/pay".into(),
            openid: OpenId::try_from(openid.as_str()).unwrap(),
        }))
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut pay = serde_json::to_value(client.request_payment(&prepay.prepay_id, now)).unwrap();
    pay["openid"] = openid.into();
    let paid = reqwest::Client::new()
        .post(format!("{}/sim/pay", sim.base_url()))
        .json(&pay)
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());

    let refund = RefundRequest::new(RefundFields {
        id: OrderId::OutTradeNo(no.clone()),
        out_refund_no: OutRefundNo::try_from("REFUND-T-0001").unwrap(),
        total_fee: Fen::new(100),
        refund_fee: Fen::new(40),
    });
    let accepted = client.refund(&refund).await.unwrap();
    assert_eq!(accepted.refund_fee, Fen::new(40));

    let plain = plain_log.lock().unwrap().clone();
    assert_eq!(plain.len(), 1);
    assert_eq!(path(&plain[0].url), "/pay/unifiedorder");
    let secapi = secapi_log.lock().unwrap().clone();
    assert_eq!(
        secapi.len(),
        1,
        "the refund, and only it, used the certificate"
    );
    assert_eq!(path(&secapi[0].url), "/secapi/pay/refund");
    assert_eq!(secapi[0].status, Some(200));
    assert_eq!(
        secapi[0].content_type.as_deref(),
        Some("text/xml; charset=utf-8")
    );
    let sent = wxpay::v2::xml::decode(&secapi[0].body).unwrap();
    assert_eq!(sent["out_refund_no"], "REFUND-T-0001");
    assert!(wxpay::v2::sign::verify_map(&sent, &m.api_v2_key).is_ok());

    // The same refund through a transport without the certificate is refused by WeChat.
    let without = V2Client::with_http(
        config,
        &BaseUrls::single(&sim.tls_base_url()),
        http.clone(),
        Some(http),
    )
    .unwrap();
    match without.refund(&refund).await {
        Err(Error::Api(wxpay::ApiError::V2Return { return_msg })) => {
            assert!(return_msg.contains("证书"), "{return_msg}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plain_log.lock().unwrap().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_mini_program_client_sends_through_the_callers_transport() {
    let sim = start().await;
    let m = sim.merchant().clone();
    let (http, log) = recording(ReqwestTransport::new(&http_config(&sim)).unwrap());
    let client = MpClient::with_http(
        MpConfig::new(&m.appid, &m.app_secret),
        &BaseUrls::single(&sim.base_url()),
        http,
        Arc::new(SystemClock),
    )
    .unwrap();
    let user = new_user(&sim).await;
    let session = client
        .code2session(user["code"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(session.openid, user["openid"].as_str().unwrap());
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "GET");
    assert!(path(&log[0].url).starts_with("/sns/jscode2session?"));
    assert_eq!(log[0].status, Some(200));
    sim.shutdown().await;
}
