//! Service-provider (服务商) mode for any merchant: a merchant added at run time acts as a
//! provider with two sub-merchants, one with its own mini program hosted by the simulator
//! (`POST /sim/apps`, users from `POST /sim/users {"appid"}`), one paying through the provider's
//! mini program. API v3 through the library's partner calls, API v2 with raw XML signed by the
//! library's v2 signing functions; refusals; a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wxpay::http::{BaseUrls, HttpConfig, RetryPolicy};
use wxpay::nonce::SystemClock;
use wxpay::v2::sign::sign_map;
use wxpay::v2::{SignType, XmlMap};
use wxpay::v3::ErrorCode;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::certificates::PlatformVerifier;
use wxpay::v3::client::{V3Client, V3Config};
use wxpay::v3::models::{
    PartnerPayer, PartnerPrepayFields, PartnerPrepayRequest, PartnerRefundRequest, RefundFields,
    RefundRequest, RefundStatus, RefundTarget, TradeState,
};
use wxpay::v3::notify::Notification;
use wxpay::{ApiError, Error, Fen, RsaPrivateKey, RsaPublicKey};
use wxpay_sim::merchant::load_merchant_dir;
use wxpay_sim::{MerchantCredentials, RunningSimulator, SimConfig, Simulator};

/// The sub-merchant with its own mini program (hosted by the simulator).
const SUB_APP: &str = "1900000201";
/// The sub-merchant without one (pays through the provider's mini program).
const SUB_PLAIN: &str = "1900000202";

fn id<T>(text: &str) -> T
where
    T: TryFrom<String>,
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).unwrap()
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "wxpay-sim-providers-{}",
        wxpay::nonce::random_string(12)
    ))
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

/// The provider: a merchant added at run time, its credentials read from its own directory.
struct Provider {
    m: MerchantCredentials,
    /// The sub-merchant's own mini program and its AppSecret.
    sub_appid: String,
    sub_secret: String,
}

/// Adds merchant B and its two sub-merchants.
async fn provider(sim: &RunningSimulator) -> Provider {
    let (status, answer) = control(sim, "POST", "/sim/merchants", json!({})).await;
    assert_eq!(status, 201, "{answer}");
    let dir = PathBuf::from(answer["merchant_dir"].as_str().unwrap());
    let m = load_merchant_dir(&dir).unwrap().credentials;
    // The sub-merchant's mini program, hosted by the simulator.
    let (status, app) = control(sim, "POST", "/sim/apps", json!({"mchid": m.mchid})).await;
    assert_eq!(status, 201, "{app}");
    let sub_appid = app["appid"].as_str().unwrap().to_owned();
    let sub_secret = app["app_secret"].as_str().unwrap().to_owned();
    let (status, v) = control(
        sim,
        "POST",
        "/sim/sub-merchants",
        json!({"sp_mchid": m.mchid, "sub_mchid": SUB_APP, "sub_appid": sub_appid}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sp_mchid"], m.mchid.as_str());
    assert_eq!(v["sp_appid"], m.appid.as_str());
    assert_eq!(v["sub_app_hosted"], true);
    let (status, v) = control(
        sim,
        "POST",
        "/sim/sub-merchants",
        json!({"sp_mchid": m.mchid, "sub_mchid": SUB_PLAIN}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    Provider {
        m,
        sub_appid,
        sub_secret,
    }
}

/// A user of the mini program `appid` and their `wx.login` code.
async fn user(sim: &RunningSimulator, appid: &str) -> (String, String) {
    let (status, v) = control(sim, "POST", "/sim/users", json!({"appid": appid})).await;
    assert_eq!(status, 200, "{v}");
    (
        v["openid"].as_str().unwrap().to_owned(),
        v["code"].as_str().unwrap().to_owned(),
    )
}

fn v3_client(sim: &RunningSimulator, m: &MerchantCredentials) -> V3Client {
    let public_key = RsaPublicKey::from_pem(&m.wechatpay_public_key_pem).unwrap();
    V3Client::with_clock(
        V3Config {
            mchid: m.mchid.clone(),
            appid: m.appid.clone(),
            merchant_serial: m.merchant_serial.clone(),
            private_key: RsaPrivateKey::from_pem(&m.merchant_private_key_pem).unwrap(),
            api_v3_key: ApiV3Key::new(&m.api_v3_key).unwrap(),
            platform: PlatformVerifier::public_key(&m.wechatpay_public_key_id, public_key),
        },
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

async fn receiver(ack: &'static str) -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                (StatusCode::OK, ack)
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

fn out_trade_no() -> String {
    format!("Q{}", wxpay::nonce::random_string(20))
}

fn order(
    sub_mchid: &str,
    sub_appid: Option<&str>,
    payer: PartnerPayer,
    no: &str,
    total: u64,
    notify_url: &str,
) -> PartnerPrepayRequest {
    PartnerPrepayRequest::jsapi(PartnerPrepayFields {
        sub_mchid: id(sub_mchid),
        sub_appid: sub_appid.map(id),
        description: "特约商户-面包".into(),
        out_trade_no: id(no),
        total: Fen::new(total),
        payer,
        notify_url: notify_url.into(),
    })
}

fn api_error(result: Result<impl std::fmt::Debug, Error>) -> (u16, ErrorCode, String) {
    match result {
        Err(Error::Api(ApiError::V3 {
            status,
            code,
            message,
            ..
        })) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
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
async fn a_second_merchant_is_a_provider_in_v3() {
    let dir = temp_dir();
    let sim = start(&dir).await;
    let first = sim.merchant().clone();
    let p = provider(&sim).await;
    let client = v3_client(&sim, &p.m);
    let first_client = v3_client(&sim, &first);

    // The control API: per provider lists, unknown providers refused.
    let (status, listed) = control(
        &sim,
        "GET",
        &format!("/sim/sub-merchants?sp_mchid={}", p.m.mchid),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["sp_mchid"], p.m.mchid.as_str());
    assert_eq!(
        listed["sub_merchants"],
        json!([{"sub_mchid": SUB_APP, "sub_appid": p.sub_appid}, {"sub_mchid": SUB_PLAIN, "sub_appid": null}])
    );
    let (_, firsts) = control(&sim, "GET", "/sim/sub-merchants", Value::Null).await;
    assert_eq!(firsts["sp_mchid"], first.mchid.as_str());
    assert_eq!(firsts["sub_merchants"], json!([]));
    let (status, v) = control(
        &sim,
        "POST",
        "/sim/sub-merchants",
        json!({"sp_mchid": "1999999999", "sub_mchid": SUB_APP}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("1999999999"), "{v}");

    // A user of the sub-merchant's mini program logs in through its jscode2session.
    let (sub_openid, code) = user(&sim, &p.sub_appid).await;
    let session = code2session(&sim, &p.sub_appid, &p.sub_secret, &code).await;
    assert_eq!(session["openid"], sub_openid.as_str(), "{session}");

    let (notify_url, received) = receiver("").await;
    let no = out_trade_no();
    let request = order(
        SUB_APP,
        Some(&p.sub_appid),
        PartnerPayer::SubOpenid(id(&sub_openid)),
        &no,
        1200,
        &notify_url,
    );
    let (_, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    assert_eq!(payment.app_id.as_deref(), Some(p.sub_appid.as_str()));
    let (status, paid) = pay(&sim, &payment, &sub_openid).await;
    assert_eq!(status, 200, "{paid}");
    let delivered = wait_for(&received, 1).await;
    let (headers, body) = &delivered[0];
    // Encrypted with the provider's APIv3 key and signed with its key: the first merchant can
    // neither verify nor decrypt it.
    assert!(
        first_client
            .parse_notification(headers, body)
            .await
            .is_err()
    );
    let Notification::PartnerPayment(n) = client.parse_notification(headers, body).await.unwrap()
    else {
        panic!("expected a partner payment notification");
    };
    let t = n.transaction;
    assert_eq!(t.out_trade_no, no);
    assert_eq!(t.sp_mchid, p.m.mchid);
    assert_eq!(t.sp_appid, p.m.appid);
    assert_eq!(t.sub_mchid, SUB_APP);
    assert_eq!(t.sub_appid.as_deref(), Some(p.sub_appid.as_str()));
    assert_eq!(
        t.payer.unwrap().sub_openid.as_deref(),
        Some(sub_openid.as_str())
    );

    let queried = client
        .partner_query_by_out_trade_no(&id(SUB_APP), &id(&no))
        .await
        .unwrap();
    assert_eq!(queried.trade_state, TradeState::Success);
    let tx = queried.transaction_id.clone().unwrap();
    client
        .partner_query_by_transaction_id(&id(SUB_APP), &tx)
        .await
        .unwrap();

    // Refund, its notification, its query.
    let mut refund = RefundRequest::new(RefundFields {
        target: RefundTarget::OutTradeNo(id(&no)),
        out_refund_no: id(&format!("R{no}")),
        refund: Fen::new(200),
        total: Fen::new(1200),
    });
    refund.notify_url = Some(notify_url.clone());
    let created = client
        .partner_refund(&PartnerRefundRequest {
            sub_mchid: id(SUB_APP),
            refund: refund.clone(),
        })
        .await
        .unwrap();
    assert_eq!(created.amount.refund, 200);
    let delivered = wait_for(&received, 2).await;
    let Notification::PartnerRefund(r) = client
        .parse_notification(&delivered[1].0, &delivered[1].1)
        .await
        .unwrap()
    else {
        panic!("expected a partner refund notification");
    };
    assert_eq!(r.refund.sp_mchid, p.m.mchid);
    assert_eq!(r.refund.sub_mchid, SUB_APP);
    let queried = client
        .partner_query_refund(&id(SUB_APP), &id(&format!("R{no}")))
        .await
        .unwrap();
    assert_eq!(queried.status, RefundStatus::Success);
    // Another provider (the first merchant) has no relation with SUB_APP.
    let (status, code, message) = api_error(
        first_client
            .partner_refund(&PartnerRefundRequest {
                sub_mchid: id(SUB_APP),
                refund,
            })
            .await,
    );
    assert_eq!((status, code), (400, ErrorCode::InvalidRequest));
    assert_eq!(message, "受理关系不存在");

    // The other sub-merchant pays through the provider's mini program (sp_openid).
    let (sp_openid, _) = user(&sim, &p.m.appid).await;
    let no2 = out_trade_no();
    let request = order(
        SUB_PLAIN,
        None,
        PartnerPayer::SpOpenid(id(&sp_openid)),
        &no2,
        300,
        &notify_url,
    );
    let (_, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    assert_eq!(payment.app_id.as_deref(), Some(p.m.appid.as_str()));
    let (status, paid) = pay(&sim, &payment, &sp_openid).await;
    assert_eq!(status, 200, "{paid}");
    let delivered = wait_for(&received, 3).await;
    let Notification::PartnerPayment(n) = client
        .parse_notification(&delivered[2].0, &delivered[2].1)
        .await
        .unwrap()
    else {
        panic!("expected a partner payment notification");
    };
    assert_eq!(n.transaction.sub_mchid, SUB_PLAIN);
    assert_eq!(
        n.transaction.payer.unwrap().sp_openid.as_deref(),
        Some(sp_openid.as_str())
    );

    // Refusals. The first merchant is not SUB_APP's provider.
    let (first_openid, _) = user(&sim, &first.appid).await;
    let (status, code, message) = api_error(
        first_client
            .partner_jsapi_prepay(&order(
                SUB_PLAIN,
                None,
                PartnerPayer::SpOpenid(id(&first_openid)),
                &out_trade_no(),
                100,
                &notify_url,
            ))
            .await,
    );
    assert_eq!((status, code), (400, ErrorCode::InvalidRequest));
    assert_eq!(message, "受理关系不存在");
    let (status, code, _) = api_error(
        first_client
            .partner_query_by_out_trade_no(&id(SUB_APP), &id(&no))
            .await,
    );
    assert_eq!((status, code), (400, ErrorCode::InvalidRequest));
    // An unbound sub-merchant of the provider.
    let (status, _, message) = api_error(
        client
            .partner_jsapi_prepay(&order(
                "1900000299",
                None,
                PartnerPayer::SpOpenid(id(&sp_openid)),
                &out_trade_no(),
                100,
                &notify_url,
            ))
            .await,
    );
    assert_eq!((status, message.as_str()), (400, "受理关系不存在"));
    // A sub_openid of another mini program (the provider's), and an sp_openid of the first
    // merchant's mini program.
    for request in [
        order(
            SUB_APP,
            Some(&p.sub_appid),
            PartnerPayer::SubOpenid(id(&sp_openid)),
            &out_trade_no(),
            100,
            &notify_url,
        ),
        order(
            SUB_PLAIN,
            None,
            PartnerPayer::SpOpenid(id(&first_openid)),
            &out_trade_no(),
            100,
            &notify_url,
        ),
    ] {
        let (status, code, message) = api_error(client.partner_jsapi_prepay(&request).await);
        assert_eq!((status, code), (400, ErrorCode::ParamError));
        assert_eq!(message, "appid和openid不匹配");
    }
    // The sub-merchant's app is not bound to the other sub-merchant.
    let (_, code, message) = api_error(
        client
            .partner_jsapi_prepay(&order(
                SUB_PLAIN,
                Some(&p.sub_appid),
                PartnerPayer::SubOpenid(id(&sub_openid)),
                &out_trade_no(),
                100,
                &notify_url,
            ))
            .await,
    );
    assert_eq!(code, ErrorCode::ParamError);
    assert_eq!(message, "sub_appid与sub_mchid不匹配");
    // sp_appid of another merchant.
    let mut wrong_app = v3_client(&sim, &p.m);
    wrong_app = wrong_app.for_app(&first.appid);
    let (status, code, _) = api_error(
        wrong_app
            .partner_jsapi_prepay(&order(
                SUB_PLAIN,
                None,
                PartnerPayer::SpOpenid(id(&first_openid)),
                &out_trade_no(),
                100,
                &notify_url,
            ))
            .await,
    );
    assert_eq!((status, code), (400, ErrorCode::AppidMchidNotMatch));
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sub_merchant_of_a_second_provider_survives_a_restart() {
    let dir = temp_dir();
    let sim = start(&dir).await;
    let p = provider(&sim).await;
    // The same sub_mchid under the first merchant too: a distinct relation.
    let (status, _) = control(
        &sim,
        "POST",
        "/sim/sub-merchants",
        json!({"sub_mchid": SUB_PLAIN}),
    )
    .await;
    assert_eq!(status, 200);
    let (sub_openid, _) = user(&sim, &p.sub_appid).await;
    let no = out_trade_no();
    let client = v3_client(&sim, &p.m);
    let request = order(
        SUB_APP,
        Some(&p.sub_appid),
        PartnerPayer::SubOpenid(id(&sub_openid)),
        &no,
        700,
        "https://merchant.example/notify",
    );
    let (_, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    assert_eq!(pay(&sim, &payment, &sub_openid).await.0, 200);
    sim.shutdown().await;

    let sim = start(&dir).await;
    let (_, listed) = control(
        &sim,
        "GET",
        &format!("/sim/sub-merchants?sp_mchid={}", p.m.mchid),
        Value::Null,
    )
    .await;
    assert_eq!(
        listed["sub_merchants"],
        json!([{"sub_mchid": SUB_APP, "sub_appid": p.sub_appid}, {"sub_mchid": SUB_PLAIN, "sub_appid": null}])
    );
    let (_, firsts) = control(&sim, "GET", "/sim/sub-merchants", Value::Null).await;
    assert_eq!(
        firsts["sub_merchants"],
        json!([{"sub_mchid": SUB_PLAIN, "sub_appid": null}])
    );
    let client = v3_client(&sim, &p.m);
    let kept = client
        .partner_query_by_out_trade_no(&id(SUB_APP), &id(&no))
        .await
        .unwrap();
    assert_eq!(kept.trade_state, TradeState::Success);
    // The relation still works for new orders.
    client
        .partner_jsapi_prepay(&order(
            SUB_APP,
            Some(&p.sub_appid),
            PartnerPayer::SubOpenid(id(&sub_openid)),
            &out_trade_no(),
            10,
            "https://merchant.example/notify",
        ))
        .await
        .unwrap();
    // The first merchant's SUB_PLAIN is not the provider's SUB_APP.
    let first_client = v3_client(&sim, &sim.merchant().clone());
    let (_, _, message) = api_error(
        first_client
            .partner_query_by_out_trade_no(&id(SUB_APP), &id(&no))
            .await,
    );
    assert_eq!(message, "受理关系不存在");
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// API v2

/// A signed v2 request of the provider `m` (MD5), `fields` added to appid/mch_id/nonce_str.
fn v2_body(m: &MerchantCredentials, fields: &[(&str, &str)]) -> String {
    let mut map = XmlMap::new();
    map.insert("appid".into(), m.appid.clone());
    map.insert("mch_id".into(), m.mchid.clone());
    map.insert("nonce_str".into(), wxpay::nonce::nonce());
    for (k, v) in fields {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    let sign = sign_map(&map, &m.api_v2_key, SignType::Md5);
    map.insert("sign".into(), sign);
    wxpay::v2::xml::encode(&map).unwrap()
}

/// Posts a v2 request and decodes the answer; a signed answer's signature is checked.
async fn v2_call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    m: &MerchantCredentials,
    fields: &[(&str, &str)],
) -> XmlMap {
    let text = http
        .post(format!("{base}{path}"))
        .body(v2_body(m, fields))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let map = wxpay::v2::xml::decode(text.as_bytes()).unwrap();
    if let Some(sign) = map.get("sign") {
        assert_eq!(
            &sign_map(&map, &m.api_v2_key, SignType::Md5),
            sign,
            "answer signature: {text}"
        );
    }
    map
}

fn field<'a>(map: &'a XmlMap, key: &str) -> &'a str {
    map.get(key).map_or("", String::as_str)
}

#[tokio::test]
async fn a_second_merchant_is_a_provider_in_v2() {
    let dir = temp_dir();
    let sim = start(&dir).await;
    let first = sim.merchant().clone();
    let p = provider(&sim).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = sim.base_url();
    let (notify_url, received) =
        receiver("<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>").await;
    let (sub_openid, _) = user(&sim, &p.sub_appid).await;
    let (sp_openid, _) = user(&sim, &p.m.appid).await;

    // unifiedorder for the sub-merchant's own mini program (sub_openid).
    let no = out_trade_no();
    let order_fields = |no: &str, extra: &[(&'static str, String)]| {
        let mut f: Vec<(&'static str, String)> = vec![
            ("body", "面包".into()),
            ("out_trade_no", no.to_owned()),
            ("total_fee", "800".into()),
            ("spbill_create_ip", "203.0.113.9".into()),
            ("notify_url", notify_url.clone()),
            ("trade_type", "JSAPI".into()),
        ];
        f.extend(extra.iter().cloned());
        f
    };
    let sub_fields = [
        ("sub_mch_id", SUB_APP.to_owned()),
        ("sub_appid", p.sub_appid.clone()),
        ("sub_openid", sub_openid.clone()),
    ];
    let fields = order_fields(&no, &sub_fields);
    let as_refs = |f: &[(&'static str, String)]| -> Vec<(&'static str, String)> { f.to_vec() };
    let call = |f: Vec<(&'static str, String)>, path: &'static str| {
        let http = http.clone();
        let base = base.clone();
        let m = p.m.clone();
        async move {
            let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            v2_call(&http, &base, path, &m, &refs).await
        }
    };
    let answer = call(as_refs(&fields), "/pay/unifiedorder").await;
    assert_eq!(field(&answer, "result_code"), "SUCCESS", "{answer:?}");
    assert_eq!(field(&answer, "sub_mch_id"), SUB_APP);
    assert_eq!(field(&answer, "sub_appid"), p.sub_appid);
    let prepay_id = field(&answer, "prepay_id").to_owned();

    // paySign over the provider's mini program is refused; over sub_appid it pays.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let wrong = wxpay::pay_params::v2(
        &p.m.api_v2_key,
        &p.m.appid,
        &prepay_id,
        now,
        "n1",
        SignType::Md5,
    );
    let (status, v) = pay(&sim, &wrong, &sub_openid).await;
    assert_eq!(status, 400, "{v}");
    let payment = wxpay::pay_params::v2(
        &p.m.api_v2_key,
        &p.sub_appid,
        &prepay_id,
        now,
        "n2",
        SignType::Md5,
    );
    let (status, v) = pay(&sim, &payment, &sub_openid).await;
    assert_eq!(status, 200, "{v}");

    // The payment notification: signed with the provider's v2 key, with the sub fields.
    let delivered = wait_for(&received, 1).await;
    let note = wxpay::v2::xml::decode(&delivered[0].1).unwrap();
    assert_eq!(
        &sign_map(&note, &p.m.api_v2_key, SignType::Md5),
        note.get("sign").unwrap()
    );
    assert_eq!(field(&note, "mch_id"), p.m.mchid);
    assert_eq!(field(&note, "appid"), p.m.appid);
    assert_eq!(field(&note, "sub_mch_id"), SUB_APP);
    assert_eq!(field(&note, "sub_appid"), p.sub_appid);
    assert_eq!(field(&note, "sub_openid"), sub_openid);
    assert_eq!(field(&note, "sub_is_subscribe"), "N");
    let provider_openid = field(&note, "openid").to_owned();
    assert_eq!(provider_openid.len(), 28);
    assert_ne!(provider_openid, sub_openid);
    // The library's parser takes it too.
    let parsed =
        wxpay::v2::notify::parse_pay_notification(&delivered[0].1, &p.m.api_v2_key).unwrap();
    assert_eq!(parsed.out_trade_no.as_str(), no);
    assert!(wxpay::v2::notify::parse_pay_notification(&delivered[0].1, &first.api_v2_key).is_err());

    // orderquery: with its sub_mch_id only.
    let q = call(
        vec![("out_trade_no", no.clone()), ("sub_mch_id", SUB_APP.into())],
        "/pay/orderquery",
    )
    .await;
    assert_eq!(field(&q, "trade_state"), "SUCCESS", "{q:?}");
    assert_eq!(field(&q, "sub_openid"), sub_openid);
    assert_eq!(field(&q, "openid"), provider_openid);
    assert_eq!(field(&q, "sub_mch_id"), SUB_APP);
    for other in [
        vec![("out_trade_no", no.clone())],
        vec![
            ("out_trade_no", no.clone()),
            ("sub_mch_id", SUB_PLAIN.into()),
        ],
    ] {
        let q = call(other, "/pay/orderquery").await;
        assert_eq!(field(&q, "err_code"), "ORDERNOTEXIST", "{q:?}");
    }

    // refund (mutual TLS with the provider's certificate), its notification, refundquery.
    let tls = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(p.m.ca_cert_pem.as_bytes()).unwrap())
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", p.m.merchant_private_key_pem, p.m.merchant_cert_pem).as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let out_refund_no = format!("R{no}");
    let refund_fields = [
        ("out_trade_no", no.as_str()),
        ("out_refund_no", out_refund_no.as_str()),
        ("total_fee", "800"),
        ("refund_fee", "300"),
        ("notify_url", notify_url.as_str()),
        ("sub_mch_id", SUB_APP),
    ];
    let r = v2_call(
        &tls,
        &sim.tls_base_url(),
        "/secapi/pay/refund",
        &p.m,
        &refund_fields,
    )
    .await;
    assert_eq!(field(&r, "result_code"), "SUCCESS", "{r:?}");
    assert_eq!(field(&r, "sub_mch_id"), SUB_APP);
    // Without sub_mch_id the order is not found.
    let r = v2_call(
        &tls,
        &sim.tls_base_url(),
        "/secapi/pay/refund",
        &p.m,
        &refund_fields[..5],
    )
    .await;
    assert_eq!(field(&r, "err_code"), "ORDERNOTEXIST", "{r:?}");
    let delivered = wait_for(&received, 2).await;
    let outer = wxpay::v2::xml::decode(&delivered[1].1).unwrap();
    assert_eq!(field(&outer, "sub_mch_id"), SUB_APP);
    assert_eq!(field(&outer, "sub_appid"), p.sub_appid);
    assert_eq!(field(&outer, "mch_id"), p.m.mchid);
    let refund_note =
        wxpay::v2::notify::parse_refund_notification(&delivered[1].1, &p.m.api_v2_key).unwrap();
    assert_eq!(refund_note.out_refund_no, out_refund_no);
    let rq = call(
        vec![
            ("out_refund_no", out_refund_no.clone()),
            ("sub_mch_id", SUB_APP.into()),
        ],
        "/pay/refundquery",
    )
    .await;
    assert_eq!(field(&rq, "refund_status_0"), "SUCCESS", "{rq:?}");
    assert_eq!(field(&rq, "sub_mch_id"), SUB_APP);
    let rq = call(
        vec![("out_refund_no", out_refund_no.clone())],
        "/pay/refundquery",
    )
    .await;
    assert_eq!(field(&rq, "err_code"), "REFUNDNOTEXIST", "{rq:?}");

    // The other sub-merchant, paying with the provider's openid.
    let no2 = out_trade_no();
    let answer = call(
        order_fields(
            &no2,
            &[
                ("sub_mch_id", SUB_PLAIN.into()),
                ("openid", sp_openid.clone()),
            ],
        ),
        "/pay/unifiedorder",
    )
    .await;
    assert_eq!(field(&answer, "result_code"), "SUCCESS", "{answer:?}");
    let payment = wxpay::pay_params::v2(
        &p.m.api_v2_key,
        &p.m.appid,
        field(&answer, "prepay_id"),
        now,
        "n3",
        SignType::Md5,
    );
    assert_eq!(pay(&sim, &payment, &sp_openid).await.0, 200);
    let delivered = wait_for(&received, 3).await;
    let note = wxpay::v2::xml::decode(&delivered[2].1).unwrap();
    assert_eq!(field(&note, "sub_mch_id"), SUB_PLAIN);
    assert_eq!(field(&note, "openid"), sp_openid);
    assert!(!note.contains_key("sub_openid"));
    assert!(!note.contains_key("sub_appid"));

    // downloadbill with sub_mch_id: that sub-merchant's lines, its number in the column.
    let today = wxpay::time::beijing_date(time::OffsetDateTime::now_utc());
    let (status, _) = control(
        &sim,
        "POST",
        "/sim/clock/advance",
        json!({"seconds": 172_800}),
    )
    .await;
    assert_eq!(status, 200);
    let bill_date = format!(
        "{:04}{:02}{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    let text = http
        .post(format!("{base}/pay/downloadbill"))
        .body(v2_body(
            &p.m,
            &[
                ("bill_date", &bill_date),
                ("bill_type", "ALL"),
                ("sub_mch_id", SUB_PLAIN),
            ],
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bill = wxpay::bill::parse_trade_bill(&text).unwrap();
    let nos: Vec<_> = bill.rows.iter().map(|r| r.out_trade_no.as_str()).collect();
    assert_eq!(nos, vec![no2.as_str()], "{text}");
    assert_eq!(bill.rows[0].sub_mch_id, SUB_PLAIN);

    // Refusals: an unbound sub-merchant, a foreign sub_appid, a sub_openid of another app,
    // and the first merchant for the provider's sub-merchant.
    let a = call(
        order_fields(
            &out_trade_no(),
            &[
                ("sub_mch_id", "1900000299".into()),
                ("openid", sp_openid.clone()),
            ],
        ),
        "/pay/unifiedorder",
    )
    .await;
    assert_eq!(
        (field(&a, "return_code"), field(&a, "return_msg")),
        ("FAIL", "受理关系不存在")
    );
    let a = call(
        order_fields(
            &out_trade_no(),
            &[
                ("sub_mch_id", SUB_PLAIN.into()),
                ("sub_appid", p.sub_appid.clone()),
                ("sub_openid", sub_openid.clone()),
            ],
        ),
        "/pay/unifiedorder",
    )
    .await;
    assert_eq!(
        (field(&a, "return_code"), field(&a, "return_msg")),
        ("FAIL", "sub_mch_id与sub_appid不匹配")
    );
    let a = call(
        order_fields(
            &out_trade_no(),
            &[
                ("sub_mch_id", SUB_APP.into()),
                ("sub_appid", p.sub_appid.clone()),
                ("sub_openid", sp_openid.clone()),
            ],
        ),
        "/pay/unifiedorder",
    )
    .await;
    assert_eq!(
        (field(&a, "err_code"), field(&a, "err_code_des")),
        ("PARAM_ERROR", "sub_appid和sub_openid不匹配")
    );
    let first_query = v2_call(
        &http,
        &base,
        "/pay/orderquery",
        &first,
        &[("out_trade_no", &no), ("sub_mch_id", SUB_APP)],
    )
    .await;
    assert_eq!(field(&first_query, "return_msg"), "受理关系不存在");
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
