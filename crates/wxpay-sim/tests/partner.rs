//! Service-provider (服务商) mode end to end: the library's partner calls against the
//! simulator's sub-merchants (issue 16).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wxpay::http::{BaseUrls, HttpConfig, RetryPolicy};
use wxpay::nonce::SystemClock;
use wxpay::v3::ErrorCode;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::certificates::PlatformVerifier;
use wxpay::v3::client::{V3Client, V3Config};
use wxpay::v3::models::{
    PartnerPayer, PartnerPrepayFields, PartnerPrepayRequest, PartnerRefundRequest, PayingApp,
    RefundFields, RefundRequest, RefundStatus, RefundTarget, TradeState,
};
use wxpay::v3::notify::Notification;
use wxpay::{ApiError, Error, Fen, RsaPrivateKey, RsaPublicKey};
use wxpay_sim::{KeyMode, RunningSimulator, SimConfig, Simulator};

const SUB: &str = "1900000109";
const SUB_APPID: &str = "wxsub0000000000001";
const SUB_PLAIN: &str = "1900000110";

fn id<T>(text: &str) -> T
where
    T: TryFrom<String>,
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).unwrap()
}

fn config(state_dir: Option<std::path::PathBuf>) -> SimConfig {
    SimConfig {
        key_mode: KeyMode::PublicKey,
        time_scale: 3600.0,
        state_dir,
        ..SimConfig::default()
    }
}

fn client(sim: &RunningSimulator) -> V3Client {
    let m = sim.merchant();
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

async fn control(sim: &RunningSimulator, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{}{path}", sim.base_url()));
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers the two sub-merchants: one with its own mini program, one without.
async fn register(sim: &RunningSimulator) {
    let (status, v) = control(
        sim,
        "/sim/sub-merchants",
        Some(json!({"sub_mchid": SUB, "sub_appid": SUB_APPID})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sp_mchid"], sim.merchant().mchid.as_str());
    let (status, v) = control(
        sim,
        "/sim/sub-merchants",
        Some(json!({"sub_mchid": SUB_PLAIN})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

/// A user of the provider's mini program (sp_appid).
async fn sp_user(sim: &RunningSimulator) -> String {
    let (status, v) = control(sim, "/sim/users", None).await;
    assert_eq!(status, 200, "{v}");
    v["openid"].as_str().unwrap().to_owned()
}

/// A user of the sub-merchant's mini program (sub_appid).
async fn sub_user(sim: &RunningSimulator, sub_mchid: &str) -> String {
    let (status, v) = control(sim, &format!("/sim/sub-merchants/{sub_mchid}/users"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sub_appid"], SUB_APPID);
    v["openid"].as_str().unwrap().to_owned()
}

async fn pay(
    sim: &RunningSimulator,
    payment: &wxpay::RequestPayment,
    openid: &str,
) -> (u16, Value) {
    let mut body = serde_json::to_value(payment).unwrap();
    body["openid"] = openid.into();
    control(sim, "/sim/pay", Some(body)).await
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
    panic!(
        "expected {count} notifications, got {}",
        received.lock().unwrap().len()
    );
}

fn out_trade_no() -> String {
    format!("P{}", wxpay::nonce::random_string(20))
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
        description: "特约商户-奶茶".into(),
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

#[tokio::test]
async fn a_whole_partner_payment_with_sub_appid_and_sub_openid() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let (notify_url, received) = receiver().await;
    let openid = sub_user(&sim, SUB).await;
    let no = out_trade_no();
    let request = order(
        SUB,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&openid)),
        &no,
        1800,
        &notify_url,
    );
    let (prepay, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    assert!(prepay.prepay_id.starts_with("wx"));
    assert_eq!(payment.app_id.as_deref(), Some(SUB_APPID));
    let (status, paid) = pay(&sim, &payment, &openid).await;
    assert_eq!(status, 200, "{paid}");

    let delivered = wait_for(&received, 1).await;
    let (headers, body) = &delivered[0];
    let Notification::PartnerPayment(n) = client.parse_notification(headers, body).await.unwrap()
    else {
        panic!("expected a partner payment notification");
    };
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    let t = n.transaction;
    assert_eq!(t.out_trade_no, no);
    assert_eq!(t.sp_mchid, sim.merchant().mchid);
    assert_eq!(t.sp_appid, sim.merchant().appid);
    assert_eq!(t.sub_mchid, SUB);
    assert_eq!(t.sub_appid.as_deref(), Some(SUB_APPID));
    assert_eq!(
        t.payer.unwrap().sub_openid.as_deref(),
        Some(openid.as_str())
    );
    assert_eq!(t.amount.total, 1800);

    let by_no = client
        .partner_query_by_out_trade_no(&id(SUB), &id(&no))
        .await
        .unwrap();
    assert_eq!(by_no.trade_state, TradeState::Success);
    assert_eq!(by_no.sub_mchid, SUB);
    assert_eq!(by_no.sub_appid.as_deref(), Some(SUB_APPID));
    let tx = by_no.transaction_id.clone().unwrap();
    assert_eq!(t.transaction_id.as_deref(), Some(tx.as_str()));
    let by_id = client
        .partner_query_by_transaction_id(&id(SUB), &tx)
        .await
        .unwrap();
    assert_eq!(by_id.out_trade_no, no);
    assert_eq!(
        by_id.payer.unwrap().sub_openid.as_deref(),
        Some(openid.as_str())
    );

    // The direct endpoints do not see a partner order, nor another sub-merchant.
    let (status, code, _) = api_error(client.query_by_out_trade_no(&id(&no)).await);
    assert_eq!((status, code), (404, ErrorCode::OrderNotExist));
    let (status, code, message) = api_error(
        client
            .partner_query_by_out_trade_no(&id(SUB_PLAIN), &id(&no))
            .await,
    );
    assert_eq!((status, code), (404, ErrorCode::OrderNotExist));
    assert_eq!(message, "订单不存在");
    sim.shutdown().await;
}

#[tokio::test]
async fn with_sp_openid_only_the_pay_sign_covers_sp_appid() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let (notify_url, received) = receiver().await;
    let openid = sp_user(&sim).await;
    let no = out_trade_no();
    let request = order(
        SUB_PLAIN,
        None,
        PartnerPayer::SpOpenid(id(&openid)),
        &no,
        99,
        &notify_url,
    );
    assert_eq!(request.paying_app(), PayingApp::Provider);
    let (_, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    assert_eq!(
        payment.app_id.as_deref(),
        Some(sim.merchant().appid.as_str())
    );
    let (status, paid) = pay(&sim, &payment, &openid).await;
    assert_eq!(status, 200, "{paid}");
    let delivered = wait_for(&received, 1).await;
    let Notification::PartnerPayment(n) = client
        .parse_notification(&delivered[0].0, &delivered[0].1)
        .await
        .unwrap()
    else {
        panic!("expected a partner payment notification");
    };
    assert_eq!(n.transaction.sub_mchid, SUB_PLAIN);
    assert!(n.transaction.sub_appid.is_none());
    let payer = n.transaction.payer.unwrap();
    assert_eq!(payer.sp_openid.as_deref(), Some(openid.as_str()));
    assert!(payer.sub_openid.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_pay_sign_over_the_wrong_appid_is_refused() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let openid = sub_user(&sim, SUB).await;
    let no = out_trade_no();
    let request = order(
        SUB,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&openid)),
        &no,
        500,
        "https://merchant.example/notify",
    );
    let prepay = client.partner_jsapi_prepay(&request).await.unwrap();
    // Signed for the provider's appid although the sub-merchant's mini program pays.
    let wrong = client
        .partner_request_payment(&PayingApp::Provider, &prepay.prepay_id)
        .unwrap();
    let (status, v) = pay(&sim, &wrong, &openid).await;
    assert_eq!(status, 400);
    assert_eq!(v["errMsg"], "requestPayment:fail 支付验证签名失败");
    let right = client
        .partner_request_payment(&request.paying_app(), &prepay.prepay_id)
        .unwrap();
    let (status, v) = pay(&sim, &right, &openid).await;
    assert_eq!(status, 200, "{v}");
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_sub_merchants_unbound_appids_and_foreign_openids_are_refused() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let sub_openid = sub_user(&sim, SUB).await;
    let sp_openid = sp_user(&sim).await;
    let url = "https://merchant.example/notify";

    let unknown = order(
        "1999999999",
        None,
        PartnerPayer::SpOpenid(id(&sp_openid)),
        &out_trade_no(),
        100,
        url,
    );
    let (status, code, message) = api_error(client.partner_jsapi_prepay(&unknown).await);
    assert_eq!((status, code), (400, ErrorCode::InvalidRequest));
    assert_eq!(message, "受理关系不存在");
    let (status, code, _) = api_error(
        client
            .partner_query_by_out_trade_no(&id("1999999999"), &id("P12345678"))
            .await,
    );
    assert_eq!((status, code), (400, ErrorCode::InvalidRequest));

    // SUB_PLAIN has no mini program of its own: SUB_APPID is not bound to it.
    let unbound = order(
        SUB_PLAIN,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&sub_openid)),
        &out_trade_no(),
        100,
        url,
    );
    let (status, code, message) = api_error(client.partner_jsapi_prepay(&unbound).await);
    assert_eq!((status, code), (400, ErrorCode::ParamError));
    assert_eq!(message, "sub_appid与sub_mchid不匹配");

    // An openid of the wrong mini program, both ways.
    for request in [
        order(
            SUB,
            Some(SUB_APPID),
            PartnerPayer::SubOpenid(id(&sp_openid)),
            &out_trade_no(),
            100,
            url,
        ),
        order(
            SUB,
            Some(SUB_APPID),
            PartnerPayer::SpOpenid(id(&sub_openid)),
            &out_trade_no(),
            100,
            url,
        ),
    ] {
        let (status, code, message) = api_error(client.partner_jsapi_prepay(&request).await);
        assert_eq!((status, code), (400, ErrorCode::ParamError));
        assert_eq!(message, "appid和openid不匹配");
    }

    // sub_openid without sub_appid: refused by the library before sending.
    let no_sub_appid = order(
        SUB,
        None,
        PartnerPayer::SubOpenid(id(&sub_openid)),
        &out_trade_no(),
        100,
        url,
    );
    assert!(matches!(
        client.partner_jsapi_prepay(&no_sub_appid).await,
        Err(Error::InvalidRequest(_))
    ));

    // out_trade_no is unique per provider: another sub-merchant cannot reuse it.
    let no = out_trade_no();
    client
        .partner_jsapi_prepay(&order(
            SUB_PLAIN,
            None,
            PartnerPayer::SpOpenid(id(&sp_openid)),
            &no,
            100,
            url,
        ))
        .await
        .unwrap();
    let (status, code, _) = api_error(
        client
            .partner_jsapi_prepay(&order(
                SUB,
                Some(SUB_APPID),
                PartnerPayer::SpOpenid(id(&sp_openid)),
                &no,
                100,
                url,
            ))
            .await,
    );
    assert_eq!((status, code), (403, ErrorCode::OutTradeNoUsed));

    let (status, code, _) = api_error(
        client
            .partner_query_by_out_trade_no(&id(SUB), &id("P-NO-SUCH-ORDER"))
            .await,
    );
    assert_eq!((status, code), (404, ErrorCode::OrderNotExist));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_partner_order_closes_and_cannot_be_paid() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let openid = sub_user(&sim, SUB).await;
    let no = out_trade_no();
    let request = order(
        SUB,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&openid)),
        &no,
        300,
        "https://merchant.example/notify",
    );
    let (_, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    // Another sub-merchant cannot close it; its own can.
    let (status, code, _) = api_error(client.partner_close(&id(SUB_PLAIN), &id(&no)).await);
    assert_eq!((status, code), (404, ErrorCode::OrderNotExist));
    client.partner_close(&id(SUB), &id(&no)).await.unwrap();
    let closed = client
        .partner_query_by_out_trade_no(&id(SUB), &id(&no))
        .await
        .unwrap();
    assert_eq!(closed.trade_state, TradeState::Closed);
    let (status, _) = pay(&sim, &payment, &openid).await;
    assert_eq!(status, 400, "a closed order cannot be paid");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_partner_refund_and_its_notification() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let (notify_url, received) = receiver().await;
    let openid = sub_user(&sim, SUB).await;
    let no = out_trade_no();
    let request = order(
        SUB,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&openid)),
        &no,
        1000,
        &notify_url,
    );
    let (_, payment) = client
        .partner_jsapi_prepay_with_payment(&request)
        .await
        .unwrap();
    assert_eq!(pay(&sim, &payment, &openid).await.0, 200);
    wait_for(&received, 1).await;

    let mut refund = RefundRequest::new(RefundFields {
        target: RefundTarget::OutTradeNo(id(&no)),
        out_refund_no: id("PR-1"),
        refund: Fen::new(400),
        total: Fen::new(1000),
    });
    refund.notify_url = Some(notify_url.clone());
    // Without sub_mchid the order is not the provider's own.
    let (status, code, _) = api_error(client.refund(&refund).await);
    assert_eq!((status, code), (404, ErrorCode::ResourceNotExists));
    let created = client
        .partner_refund(&PartnerRefundRequest {
            sub_mchid: id(SUB),
            refund,
        })
        .await
        .unwrap();
    assert_eq!(created.amount.refund, 400);

    let delivered = wait_for(&received, 2).await;
    let Notification::PartnerRefund(n) = client
        .parse_notification(&delivered[1].0, &delivered[1].1)
        .await
        .unwrap()
    else {
        panic!("expected a partner refund notification");
    };
    assert_eq!(n.event_type, "REFUND.SUCCESS");
    assert_eq!(n.refund.sp_mchid, sim.merchant().mchid);
    assert_eq!(n.refund.sub_mchid, SUB);
    assert_eq!(n.refund.out_refund_no, "PR-1");
    assert_eq!(n.refund.amount.refund, 400);
    assert_eq!(n.refund.refund_status, RefundStatus::Success);

    let queried = client
        .partner_query_refund(&id(SUB), &id("PR-1"))
        .await
        .unwrap();
    assert_eq!(queried.status, RefundStatus::Success);
    let (status, code, _) = api_error(client.query_refund(&id("PR-1")).await);
    assert_eq!((status, code), (404, ErrorCode::ResourceNotExists));
    let order = client
        .partner_query_by_out_trade_no(&id(SUB), &id(&no))
        .await
        .unwrap();
    assert_eq!(order.trade_state, TradeState::Refund);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_sub_merchants_their_users_and_partner_orders() {
    let dir = std::env::temp_dir().join(format!(
        "wxpay-sim-partner-{}",
        wxpay::nonce::random_string(12)
    ));
    let first = Simulator::start(config(Some(dir.clone()))).await.unwrap();
    register(&first).await;
    let openid = sub_user(&first, SUB).await;
    let no = out_trade_no();
    let c = client(&first);
    let request = order(
        SUB,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&openid)),
        &no,
        700,
        "https://merchant.example/notify",
    );
    let (_, payment) = c.partner_jsapi_prepay_with_payment(&request).await.unwrap();
    assert_eq!(pay(&first, &payment, &openid).await.0, 200);
    first.shutdown().await;

    let second = Simulator::start(config(Some(dir.clone()))).await.unwrap();
    let listed: Value = reqwest::get(format!("{}/sim/sub-merchants", second.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["sub_merchants"],
        json!([{"sub_mchid": SUB, "sub_appid": SUB_APPID}, {"sub_mchid": SUB_PLAIN, "sub_appid": null}])
    );
    let c = client(&second);
    let kept = c
        .partner_query_by_out_trade_no(&id(SUB), &id(&no))
        .await
        .unwrap();
    assert_eq!(kept.trade_state, TradeState::Success);
    assert_eq!(kept.sub_appid.as_deref(), Some(SUB_APPID));
    assert_eq!(
        kept.payer.unwrap().sub_openid.as_deref(),
        Some(openid.as_str())
    );
    // The sub-merchant's user still belongs to its mini program.
    let again = order(
        SUB,
        Some(SUB_APPID),
        PartnerPayer::SubOpenid(id(&openid)),
        &out_trade_no(),
        10,
        "https://merchant.example/notify",
    );
    c.partner_jsapi_prepay(&again).await.unwrap();
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sub_merchants_trade_bill_holds_its_orders_only() {
    let sim = Simulator::start(config(None)).await.unwrap();
    let client = client(&sim);
    register(&sim).await;
    let url = "https://merchant.example/notify";
    let sub_openid = sub_user(&sim, SUB).await;
    let sp_openid = sp_user(&sim).await;
    let (mine, theirs) = (out_trade_no(), out_trade_no());
    for (request, openid) in [
        (
            order(
                SUB,
                Some(SUB_APPID),
                PartnerPayer::SubOpenid(id(&sub_openid)),
                &mine,
                100,
                url,
            ),
            &sub_openid,
        ),
        (
            order(
                SUB_PLAIN,
                None,
                PartnerPayer::SpOpenid(id(&sp_openid)),
                &theirs,
                200,
                url,
            ),
            &sp_openid,
        ),
    ] {
        let (_, payment) = client
            .partner_jsapi_prepay_with_payment(&request)
            .await
            .unwrap();
        assert_eq!(pay(&sim, &payment, openid).await.0, 200);
    }
    let today = wxpay::time::beijing_date(time::OffsetDateTime::now_utc());
    // Today's bill exists from 10:00 tomorrow: move the business clock two days on.
    let (status, _) = control(
        &sim,
        "/sim/clock/advance",
        Some(json!({"seconds": 172_800})),
    )
    .await;
    assert_eq!(status, 200);
    let request = wxpay::v3::models::TradeBillRequest {
        bill_date: today,
        bill_type: wxpay::v3::models::TradeBillType::All,
        gzip: false,
    };
    let location = client.partner_trade_bill(&id(SUB), &request).await.unwrap();
    let bill =
        wxpay::bill::parse_trade_bill(&client.download_bill(&location).await.unwrap()).unwrap();
    let nos: Vec<_> = bill.rows.iter().map(|r| r.out_trade_no.as_str()).collect();
    assert_eq!(nos, vec![mine.as_str()]);
    assert_eq!(bill.rows[0].sub_mch_id, SUB);
    // The provider's whole bill names each line's sub-merchant.
    let location = client.trade_bill(&request).await.unwrap();
    let bill =
        wxpay::bill::parse_trade_bill(&client.download_bill(&location).await.unwrap()).unwrap();
    let theirs_row = bill.rows.iter().find(|r| r.out_trade_no == theirs).unwrap();
    assert_eq!(theirs_row.sub_mch_id, SUB_PLAIN);
    let (status, code, message) =
        api_error(client.partner_trade_bill(&id("1999999999"), &request).await);
    assert_eq!((status, code), (400, ErrorCode::InvalidRequest));
    assert_eq!(message, "受理关系不存在");
    sim.shutdown().await;
}
