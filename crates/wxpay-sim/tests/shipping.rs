//! Trade management end to end: `wxpay::mp::MpClient`'s shipping calls against the simulator's
//! `/wxa/sec/order/*` for orders paid through the v3 API, the buyer's confirmation on the
//! control API, automatic confirmation on the business clock, and a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::Merchant;
use wxpay::http::{BaseUrls, HttpConfig, RetryPolicy};
use wxpay::mp::shipping::{
    LogisticsType, OrderKey, OrderListQuery, OrderRef, OrderState, Shipment, ShippingItem,
    SpecialOrder, TradeOrder, UploadShippingInfo,
};
use wxpay::mp::{ErrCode, MpClient, MpConfig};
use wxpay::nonce::SystemClock;
use wxpay::{ApiError, Error};
use wxpay_sim::{KeyMode, SimConfig};

const NOTIFY: &str = "http://127.0.0.1:9/notify/pay";

fn mp_client(m: &Merchant) -> MpClient {
    let creds = m.sim.merchant();
    MpClient::with_clock(
        MpConfig::new(&creds.appid, &creds.app_secret),
        &HttpConfig {
            retry: RetryPolicy::none(),
            timeout: Duration::from_secs(10),
            extra_roots_pem: vec![creds.ca_cert_pem.clone()],
            ..HttpConfig::default()
        },
        &BaseUrls::single(&m.base),
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// A paid order: its openid and transaction_id.
async fn paid(m: &Merchant, out_trade_no: &str) -> (String, String) {
    let openid = m.new_user().await;
    let prepay = m.prepay(out_trade_no, 1990, &openid, NOTIFY).await;
    let (status, answer) = m.pay(&prepay, &openid).await;
    assert_eq!(status, 200, "{answer}");
    let order = m.sim.state().store.order(out_trade_no).unwrap();
    (openid, order.transaction_id.unwrap())
}

fn upload(
    m: &Merchant,
    out_trade_no: &str,
    openid: &str,
    shipment: Shipment,
) -> UploadShippingInfo {
    UploadShippingInfo {
        order_key: OrderKey::out_trade_no(m.mchid(), out_trade_no),
        shipment,
        upload_time: time::OffsetDateTime::now_utc(),
        payer_openid: openid.to_owned(),
    }
}

fn errcode(err: &Error) -> ErrCode {
    match err {
        Error::Api(ApiError::MiniProgram { errcode, .. }) => *errcode,
        other => panic!("not a mini-program error: {other:?}"),
    }
}

async fn state_of(mp: &MpClient, transaction_id: &str) -> TradeOrder {
    mp.get_order(&OrderRef::TransactionId(transaction_id.to_owned()))
        .await
        .unwrap()
}

#[tokio::test]
async fn express_in_two_parcels_confirmed_by_the_buyer_settles() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let mp = mp_client(&m);
    assert!(mp.is_trade_managed().await.unwrap());
    assert!(
        mp.is_trade_management_confirmation_completed()
            .await
            .unwrap()
    );
    let companies = mp.get_delivery_list().await.unwrap();
    assert!(companies.iter().any(|c| c.delivery_id == "ZTO"));

    let (openid, transaction_id) = paid(&m, "SHIP-EXP-1").await;
    let before = state_of(&mp, &transaction_id).await;
    assert_eq!(before.order_state, OrderState::AwaitingShipment);
    assert_eq!(before.merchant_trade_no, "SHIP-EXP-1");
    assert_eq!(before.paid_amount, 1990);
    assert_eq!(before.openid, openid);

    let first = Shipment::split(vec![ShippingItem::express("ZTO", "ZTO0001", "上衣")], false);
    mp.upload_shipping_info(&upload(&m, "SHIP-EXP-1", &openid, first))
        .await
        .unwrap();
    let partial = state_of(&mp, &transaction_id).await;
    assert_eq!(partial.order_state, OrderState::AwaitingShipment);
    assert!(!partial.shipping.finish_shipping);

    // The buyer cannot confirm before everything shipped.
    let (status, _) = m
        .control("POST", "/sim/orders/SHIP-EXP-1/confirm-receipt", None)
        .await;
    assert_eq!(status, 409);

    let mut second = upload(
        &m,
        "SHIP-EXP-1",
        &openid,
        Shipment::split(vec![ShippingItem::express("YTO", "YTO0002", "裤子")], true),
    );
    second.upload_time += time::Duration::seconds(1);
    mp.upload_shipping_info(&second).await.unwrap();
    let shipped = state_of(&mp, &transaction_id).await;
    assert_eq!(shipped.order_state, OrderState::Shipped);
    assert!(shipped.shipping.finish_shipping);
    assert_eq!(shipped.shipping.finish_shipping_count, 1);
    assert_eq!(shipped.shipping.delivery_mode, 2);
    let tracking: Vec<&str> = shipped
        .shipping
        .shipping_list
        .iter()
        .map(|p| p.tracking_no.as_str())
        .collect();
    assert_eq!(tracking, ["ZTO0001", "YTO0002"]);

    let (status, answer) = m
        .control("POST", "/sim/orders/SHIP-EXP-1/confirm-receipt", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let settled = state_of(&mp, &transaction_id).await;
    assert_eq!(settled.order_state, OrderState::Completed);
    let (status, view) = m.control("GET", "/sim/orders/SHIP-EXP-1", None).await;
    assert_eq!(status, 200);
    let managed = &view["trade_management"];
    assert_eq!(managed["order_state"], 4, "{view}");
    assert_eq!(managed["confirm_method"], 2);
    assert_eq!(
        managed["shipping"]["shipping_list"][1]["tracking_no"],
        "YTO0002"
    );

    // Nothing more can ship, and the buyer cannot confirm twice.
    let mut late = upload(
        &m,
        "SHIP-EXP-1",
        &openid,
        Shipment::unified(
            LogisticsType::Express,
            ShippingItem::express("ZTO", "Z9", "x"),
        ),
    );
    late.upload_time += time::Duration::seconds(5);
    let err = mp.upload_shipping_info(&late).await.unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentFullyShipped);
    let (status, _) = m
        .control("POST", "/sim/orders/SHIP-EXP-1/confirm-receipt", None)
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn virtual_goods_confirm_automatically_after_two_days() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let mp = mp_client(&m);
    let (openid, transaction_id) = paid(&m, "SHIP-VIRT-1").await;
    mp.upload_shipping_info(&upload(
        &m,
        "SHIP-VIRT-1",
        &openid,
        Shipment::unified(LogisticsType::Virtual, ShippingItem::described("会员卡")),
    ))
    .await
    .unwrap();
    assert_eq!(
        state_of(&mp, &transaction_id).await.order_state,
        OrderState::Shipped
    );
    let (status, _) = m
        .control(
            "POST",
            "/sim/clock/advance",
            Some(json!({"seconds": 2 * 86_400 - 60})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        state_of(&mp, &transaction_id).await.order_state,
        OrderState::Shipped
    );
    let (status, _) = m
        .control("POST", "/sim/clock/advance", Some(json!({"seconds": 60})))
        .await;
    assert_eq!(status, 200);
    // The simulator's token expired with the clock; the client fetched a new one.
    assert_eq!(
        state_of(&mp, &transaction_id).await.order_state,
        OrderState::Completed
    );
}

#[tokio::test]
async fn upload_rules_answer_wechats_errcodes() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let mp = mp_client(&m);
    let (openid, transaction_id) = paid(&m, "SHIP-RULES-1").await;
    let unified = |tracking: &str| {
        Shipment::unified(
            LogisticsType::Express,
            ShippingItem::express("ZTO", tracking, "茶叶"),
        )
    };

    // An unknown payment, another payer.
    let err = mp
        .upload_shipping_info(&upload(&m, "NO-SUCH-ORDER", &openid, unified("T1")))
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentNotFound);
    let stranger = m.new_user().await;
    let err = mp
        .upload_shipping_info(&upload(&m, "SHIP-RULES-1", &stranger, unified("T1")))
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::NotThePayer);

    // Shipped, then one re-shipment, then no more.
    let mut request = upload(&m, "SHIP-RULES-1", &openid, unified("T1"));
    mp.upload_shipping_info(&request).await.unwrap();
    request.upload_time += time::Duration::seconds(1);
    let err = mp.upload_shipping_info(&request).await.unwrap_err();
    assert_eq!(
        errcode(&err),
        ErrCode::ShippingUnchanged,
        "identical re-upload"
    );
    request.shipment = unified("T2");
    request.upload_time += time::Duration::seconds(1);
    mp.upload_shipping_info(&request).await.unwrap();
    let order = state_of(&mp, &transaction_id).await;
    assert_eq!(order.shipping.finish_shipping_count, 2);
    assert_eq!(order.shipping.shipping_list[0].tracking_no, "T2");
    request.shipment = unified("T3");
    request.upload_time += time::Duration::seconds(1);
    let err = mp.upload_shipping_info(&request).await.unwrap_err();
    assert_eq!(errcode(&err), ErrCode::ReshipUsed);

    // An older upload_time is refused.
    let (openid2, _) = paid(&m, "SHIP-RULES-2").await;
    let mut first = upload(
        &m,
        "SHIP-RULES-2",
        &openid2,
        Shipment::split(vec![ShippingItem::express("ZTO", "A", "x")], false),
    );
    mp.upload_shipping_info(&first).await.unwrap();
    first.shipment = Shipment::split(vec![ShippingItem::express("ZTO", "B", "y")], true);
    first.upload_time -= time::Duration::seconds(10);
    let err = mp.upload_shipping_info(&first).await.unwrap_err();
    assert_eq!(errcode(&err), ErrCode::ShippingParamError);

    // The confirm-receipt reminder: express, shipped, once, after the shipment.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let by_id = OrderRef::TransactionId(transaction_id.clone());
    let sim_now = m.sim.state().store.now();
    mp.notify_confirm_receive(&by_id, sim_now + 1)
        .await
        .unwrap();
    let err = mp
        .notify_confirm_receive(&by_id, sim_now + 2)
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::ConfirmReminderUsed);
    let not_shipped = OrderRef::MerchantTradeNo {
        merchant_id: m.mchid(),
        sub_merchant_id: None,
        merchant_trade_no: "SHIP-RULES-2".into(),
    };
    let err = mp
        .notify_confirm_receive(&not_shipped, now)
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::NotShipped);
}

#[tokio::test]
async fn a_restart_keeps_the_shipping_state() {
    let dir = std::env::temp_dir().join(format!(
        "wxpay-sim-shipping-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    let config = || SimConfig {
        state_dir: Some(dir.clone()),
        key_mode: KeyMode::PublicKey,
        time_scale: 2000.0,
        ..SimConfig::default()
    };
    let first = Merchant::start_with(config()).await;
    let mp = mp_client(&first);
    let (openid, transaction_id) = paid(&first, "SHIP-KEEP-1").await;
    let mut request = upload(
        &first,
        "SHIP-KEEP-1",
        &openid,
        Shipment::unified(
            LogisticsType::Express,
            ShippingItem::express("ZTO", "K1", "x"),
        ),
    );
    mp.upload_shipping_info(&request).await.unwrap();
    request.shipment = Shipment::unified(
        LogisticsType::Express,
        ShippingItem::express("ZTO", "K2", "x"),
    );
    request.upload_time += time::Duration::seconds(1);
    mp.upload_shipping_info(&request).await.unwrap();
    first.sim.shutdown().await;

    let second = Merchant::start_with(config()).await;
    let mp = mp_client(&second);
    let order = state_of(&mp, &transaction_id).await;
    assert_eq!(order.order_state, OrderState::Shipped);
    assert_eq!(order.shipping.finish_shipping_count, 2);
    assert_eq!(order.shipping.shipping_list[0].tracking_no, "K2");
    // The re-shipping chance stays used.
    request.shipment = Shipment::unified(
        LogisticsType::Express,
        ShippingItem::express("ZTO", "K3", "x"),
    );
    request.upload_time += time::Duration::seconds(1);
    let err = mp.upload_shipping_info(&request).await.unwrap_err();
    assert_eq!(errcode(&err), ErrCode::ReshipUsed);
    let (status, _) = second
        .control("POST", "/sim/orders/SHIP-KEEP-1/confirm-receipt", None)
        .await;
    assert_eq!(status, 200);
    second.sim.shutdown().await;
    let third = Merchant::start_with(config()).await;
    let order = state_of(&mp_client(&third), &transaction_id).await;
    assert_eq!(order.order_state, OrderState::Completed);
    third.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_order_list_pages_and_filters() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let mp = mp_client(&m);
    let mut ids = Vec::new();
    for no in ["SHIP-LIST-1", "SHIP-LIST-2", "SHIP-LIST-3"] {
        ids.push(paid(&m, no).await);
    }
    let (openid, _) = &ids[1];
    mp.upload_shipping_info(&upload(
        &m,
        "SHIP-LIST-2",
        openid,
        Shipment::unified(LogisticsType::SelfPickup, ShippingItem::described("自提")),
    ))
    .await
    .unwrap();

    let first = mp
        .get_order_list(&OrderListQuery {
            page_size: Some(2),
            ..OrderListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(first.order_list.len(), 2);
    assert!(first.has_more);
    let second = mp
        .get_order_list(&OrderListQuery {
            page_size: Some(2),
            last_index: Some(first.last_index.clone()),
            ..OrderListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(second.order_list.len(), 1);
    assert!(!second.has_more);
    let mut seen: Vec<String> = first
        .order_list
        .iter()
        .chain(&second.order_list)
        .map(|o| o.merchant_trade_no.clone())
        .collect();
    seen.sort();
    assert_eq!(seen, ["SHIP-LIST-1", "SHIP-LIST-2", "SHIP-LIST-3"]);

    let shipped = mp
        .get_order_list(&OrderListQuery {
            order_state: Some(OrderState::Shipped),
            ..OrderListQuery::default()
        })
        .await
        .unwrap();
    let shipped: Vec<&str> = shipped
        .order_list
        .iter()
        .map(|o| o.merchant_trade_no.as_str())
        .collect();
    assert_eq!(shipped, ["SHIP-LIST-2"]);
    let of_user = mp
        .get_order_list(&OrderListQuery {
            openid: Some(ids[0].0.clone()),
            ..OrderListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(of_user.order_list.len(), 1);
    assert_eq!(of_user.order_list[0].transaction_id, ids[0].1);
    let err = mp
        .get_order_list(&OrderListQuery {
            last_index: Some("not-an-index".into()),
            ..OrderListQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::InvalidLastIndex);
}

#[tokio::test]
async fn special_orders_are_reported_before_shipping() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let mp = mp_client(&m);
    let (openid, transaction_id) = paid(&m, "SHIP-SPECIAL-1").await;
    let paid_at = m
        .sim
        .state()
        .store
        .order("SHIP-SPECIAL-1")
        .unwrap()
        .success_time
        .unwrap();
    let day = 86_400;
    for bad in [paid_at + 14 * day, paid_at + 331 * day] {
        let err = mp
            .op_special_order(&transaction_id, SpecialOrder::PreSale { delay_to: bad })
            .await
            .unwrap_err();
        assert_eq!(errcode(&err), ErrCode::InvalidDelayTo);
    }
    mp.op_special_order(
        "SHIP-SPECIAL-1",
        SpecialOrder::PreSale {
            delay_to: paid_at + 30 * day,
        },
    )
    .await
    .unwrap();
    let (_, view) = m.control("GET", "/sim/orders/SHIP-SPECIAL-1", None).await;
    assert_eq!(view["trade_management"]["special_type"], 1, "{view}");
    assert_eq!(view["trade_management"]["delay_to"], paid_at + 30 * day);

    mp.upload_shipping_info(&upload(
        &m,
        "SHIP-SPECIAL-1",
        &openid,
        Shipment::unified(
            LogisticsType::Express,
            ShippingItem::express("ZTO", "P1", "预售"),
        ),
    ))
    .await
    .unwrap();
    let err = mp
        .op_special_order(&transaction_id, SpecialOrder::Test)
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::SpecialOrderNotFound);
    let err = mp
        .op_special_order("NO-SUCH-ORDER", SpecialOrder::Test)
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::SpecialOrderNotFound);
}

mod push_endpoint {
    //! A merchant's message-push endpoint, written with the library as a shop would.
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use wxpay::mp::push::{PushConfig, PushFormat, PushMessage, PushQuery, open_push, verify_url};

    #[derive(Clone)]
    pub struct Endpoint {
        pub config: PushConfig,
        pub format: PushFormat,
        pub opened: Arc<Mutex<Vec<PushMessage>>>,
        pub refused: Arc<Mutex<usize>>,
        /// Answer 500 to this many pushes first.
        pub fail_first: Arc<Mutex<usize>>,
    }

    async fn handshake(State(e): State<Endpoint>, RawQuery(q): RawQuery) -> (StatusCode, String) {
        let query = PushQuery::parse(&q.unwrap_or_default());
        let token = wxpay::mp::ExposeSecret::expose_secret(&e.config.token).to_owned();
        match verify_url(&token, &query) {
            Ok(echo) => (StatusCode::OK, echo.to_owned()),
            Err(_) => (StatusCode::FORBIDDEN, String::new()),
        }
    }

    async fn event(
        State(e): State<Endpoint>,
        RawQuery(q): RawQuery,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        {
            let mut left = e.fail_first.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "");
            }
        }
        let query = PushQuery::parse(&q.unwrap_or_default());
        match open_push(&e.config, &query, e.format, &body) {
            Ok(message) => {
                e.opened.lock().unwrap().push(message);
                (StatusCode::OK, "success")
            }
            Err(_) => {
                *e.refused.lock().unwrap() += 1;
                (StatusCode::FORBIDDEN, "")
            }
        }
    }

    pub async fn start(endpoint: Endpoint) -> String {
        let app = Router::new()
            .route("/push", get(handshake).post(event))
            .with_state(endpoint);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/push")
    }
}

/// Waits (polling, at most 10 s) until the endpoint opened `n` pushes.
async fn opened(endpoint: &push_endpoint::Endpoint, n: usize) -> Vec<wxpay::mp::push::PushMessage> {
    for _ in 0..200 {
        let got = endpoint.opened.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} pushes expected, got {:?}",
        n,
        endpoint.opened.lock().unwrap()
    );
}

const PUSH_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

#[tokio::test]
async fn settlement_events_are_pushed_signed_and_encrypted() {
    use wxpay::mp::push::{ConfirmReceiveMethod, PushConfig, PushEvent, PushFormat};
    for (mode, format, key) in [
        ("safe", PushFormat::Json, Some(PUSH_KEY)),
        ("compatible", PushFormat::Xml, Some(PUSH_KEY)),
        ("plaintext", PushFormat::Json, None),
    ] {
        let m = Merchant::start(KeyMode::PublicKey).await;
        let appid = m.appid();
        let config = match key {
            Some(key) => PushConfig::encrypted("PushTok3n", key, &appid).unwrap(),
            None => PushConfig::plaintext("PushTok3n", &appid),
        };
        let endpoint = push_endpoint::Endpoint {
            config,
            format,
            opened: Arc::default(),
            refused: Arc::default(),
            fail_first: Arc::default(),
        };
        let url = push_endpoint::start(endpoint.clone()).await;

        // A wrong token fails the handshake: the settings are refused.
        let mut settings = json!({"url": url, "token": "WrongTok3n", "mode": mode,
                                  "format": if format == PushFormat::Json { "json" } else { "xml" }});
        if let Some(key) = key {
            settings["encoding_aes_key"] = json!(key);
        }
        let (status, _) = m
            .control("PUT", "/sim/mp/push", Some(settings.clone()))
            .await;
        assert_eq!(status, 400);
        settings["token"] = json!("PushTok3n");
        let (status, answer) = m.control("PUT", "/sim/mp/push", Some(settings)).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            !answer.to_string().contains("PushTok3n"),
            "the token is not echoed"
        );

        let mp = mp_client(&m);
        let (openid, transaction_id) = paid(&m, "SHIP-PUSH-1").await;
        mp.upload_shipping_info(&upload(
            &m,
            "SHIP-PUSH-1",
            &openid,
            Shipment::unified(
                LogisticsType::Express,
                ShippingItem::express("ZTO", "P1", "x"),
            ),
        ))
        .await
        .unwrap();
        let shipped = opened(&endpoint, 1).await;
        let PushEvent::TradeManageOrderSettlement {
            order,
            shipped_time: Some(shipped_time),
            estimated_settlement_time: Some(estimated),
            settlement_time: None,
            ..
        } = &shipped[0].event
        else {
            panic!("{mode}: {:?}", shipped[0].event)
        };
        assert_eq!(order.transaction_id, transaction_id);
        assert_eq!(order.merchant_trade_no, "SHIP-PUSH-1");
        assert_eq!(*estimated, shipped_time + 10 * 86_400);

        // Ten days later the order settles by itself, and that is pushed too.
        let (status, _) = m
            .control(
                "POST",
                "/sim/clock/advance",
                Some(json!({"seconds": 10 * 86_400})),
            )
            .await;
        assert_eq!(status, 200);
        let both = opened(&endpoint, 2).await;
        let PushEvent::TradeManageOrderSettlement {
            confirm_receive_method,
            settlement_time: Some(settled),
            ..
        } = &both[1].event
        else {
            panic!("{mode}: {:?}", both[1].event)
        };
        assert_eq!(*confirm_receive_method, Some(ConfirmReceiveMethod(1)));
        assert_eq!(*settled, shipped_time + 10 * 86_400);
        assert_eq!(*endpoint.refused.lock().unwrap(), 0, "{mode}");
        let (_, log) = m.control("GET", "/sim/mp/pushes", None).await;
        let pushes = log["pushes"].as_array().unwrap();
        assert_eq!(pushes.len(), 2, "{log}");
        assert!(pushes.iter().all(|p| p["delivered"] == true), "{log}");
    }
}

#[tokio::test]
async fn a_refused_push_is_retried_until_acknowledged() {
    use wxpay::mp::push::{PushConfig, PushFormat};
    let m = Merchant::start(KeyMode::PublicKey).await;
    let endpoint = push_endpoint::Endpoint {
        config: PushConfig::encrypted("PushTok3n", PUSH_KEY, m.appid()).unwrap(),
        format: PushFormat::Json,
        opened: Arc::default(),
        refused: Arc::default(),
        fail_first: Arc::new(std::sync::Mutex::new(2)),
    };
    let url = push_endpoint::start(endpoint.clone()).await;
    let (status, answer) = m
        .control(
            "PUT",
            "/sim/mp/push",
            Some(json!({"url": url, "token": "PushTok3n", "encoding_aes_key": PUSH_KEY})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let mp = mp_client(&m);
    let (openid, _) = paid(&m, "SHIP-RETRY-1").await;
    mp.upload_shipping_info(&upload(
        &m,
        "SHIP-RETRY-1",
        &openid,
        Shipment::unified(LogisticsType::Virtual, ShippingItem::described("会员卡")),
    ))
    .await
    .unwrap();
    assert_eq!(opened(&endpoint, 1).await.len(), 1);
    // The log is updated right after the acknowledgement; poll for it.
    let mut log = json!(null);
    for _ in 0..100 {
        log = m.control("GET", "/sim/mp/pushes", None).await.1;
        if log["pushes"][0]["delivered"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log["pushes"][0]["delivered"], true, "{log}");
    assert_eq!(log["pushes"][0]["attempts"], 3, "{log}");
    assert_eq!(opened(&endpoint, 1).await.len(), 1, "acknowledged once");
}

#[tokio::test]
async fn faults_duplicate_and_drop_pushes() {
    use wxpay::mp::push::{PushConfig, PushFormat};
    let m = Merchant::start(KeyMode::PublicKey).await;
    let endpoint = push_endpoint::Endpoint {
        config: PushConfig::encrypted("PushTok3n", PUSH_KEY, m.appid()).unwrap(),
        format: PushFormat::Json,
        opened: Arc::default(),
        refused: Arc::default(),
        fail_first: Arc::default(),
    };
    let url = push_endpoint::start(endpoint.clone()).await;
    let (status, _) = m
        .control(
            "PUT",
            "/sim/mp/push",
            Some(json!({"url": url, "token": "PushTok3n", "encoding_aes_key": PUSH_KEY})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = m
        .control(
            "PUT",
            "/sim/faults",
            Some(json!({"notify_duplicate_rate": 1.0})),
        )
        .await;
    assert_eq!(status, 200);
    let mp = mp_client(&m);
    let ship = |no: &'static str, openid: String| {
        let request = upload(
            &m,
            no,
            &openid,
            Shipment::unified(LogisticsType::Virtual, ShippingItem::described("会员卡")),
        );
        let mp = mp.clone();
        async move { mp.upload_shipping_info(&request).await.unwrap() }
    };
    let (openid, _) = paid(&m, "SHIP-DUP-1").await;
    ship("SHIP-DUP-1", openid).await;
    let twice = opened(&endpoint, 2).await;
    assert_eq!(twice[0], twice[1], "the same push, twice");

    // Every attempt dropped: nothing arrives, all four attempts are spent.
    let (status, _) = m
        .control("PUT", "/sim/faults", Some(json!({"notify_drop_rate": 1.0})))
        .await;
    assert_eq!(status, 200);
    let (openid, _) = paid(&m, "SHIP-DROP-1").await;
    ship("SHIP-DROP-1", openid).await;
    let mut log = json!(null);
    for _ in 0..200 {
        log = m.control("GET", "/sim/mp/pushes", None).await.1;
        if log["pushes"][1]["attempts"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log["pushes"][1]["attempts"], 4, "{log}");
    assert_eq!(log["pushes"][1]["delivered"], false, "{log}");
    assert_eq!(endpoint.opened.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_control_token_guards_confirmation_and_push_settings() {
    let m = Merchant::start_with(SimConfig {
        key_mode: KeyMode::PublicKey,
        control_token: Some("the-control-token".into()),
        ..SimConfig::default()
    })
    .await;
    let bearer = [("Authorization", "Bearer the-control-token")];
    for (method, path, body) in [
        ("POST", "/sim/orders/NONE/confirm-receipt", None),
        (
            "PUT",
            "/sim/mp/push",
            Some(json!({"url": "http://127.0.0.1:9/push", "token": "PushTok3n"})),
        ),
        ("GET", "/sim/mp/pushes", None),
    ] {
        let (status, v) = m.control_with(method, path, body.clone(), &[]).await;
        assert_eq!(status, 401, "{method} {path}: {v}");
        let (status, v) = m.control_with(method, path, body, &bearer).await;
        let expected = match path {
            "/sim/orders/NONE/confirm-receipt" => 404,
            "/sim/mp/push" => 400, // safe mode without a key
            _ => 200,
        };
        assert_eq!(status, expected, "{method} {path}: {v}");
    }
}

/// A second mini program of the simulator, bound to the merchant: (appid, app_secret).
async fn second_app(m: &Merchant) -> (String, String) {
    let (status, v) = m
        .control("POST", "/sim/apps", Some(json!({"mchid": m.mchid()})))
        .await;
    assert!(status == 200 || status == 201, "{v}");
    (
        v["appid"].as_str().unwrap().to_owned(),
        v["app_secret"].as_str().unwrap().to_owned(),
    )
}

fn mp_client_of(m: &Merchant, appid: &str, secret: &str) -> MpClient {
    let creds = m.sim.merchant();
    MpClient::with_clock(
        MpConfig::new(appid, secret),
        &HttpConfig {
            retry: RetryPolicy::none(),
            timeout: Duration::from_secs(10),
            extra_roots_pem: vec![creds.ca_cert_pem.clone()],
            ..HttpConfig::default()
        },
        &BaseUrls::single(&m.base),
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// A user of the mini program `appid`.
async fn user_of(m: &Merchant, appid: &str) -> String {
    let (status, v) = m
        .control("POST", "/sim/users", Some(json!({ "appid": appid })))
        .await;
    assert_eq!(status, 200, "{v}");
    v["openid"].as_str().unwrap().to_owned()
}

/// Pays `prepay_id` as the WeChat client of the mini program `appid`.
async fn pay_in(m: &Merchant, appid: &str, prepay_id: &str, openid: &str) {
    let payment = wxpay::pay_params::v3(
        &m.key,
        appid,
        prepay_id,
        Merchant::now(),
        &wxpay::nonce::nonce(),
    )
    .unwrap();
    let mut body = serde_json::to_value(payment).unwrap();
    body["openid"] = json!(openid);
    let (status, answer) = m.control("POST", "/sim/pay", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Sets the push URL of the mini program `appid` to a new endpoint of its own.
async fn push_to(m: &Merchant, appid: &str) -> push_endpoint::Endpoint {
    use wxpay::mp::push::{PushConfig, PushFormat};
    let endpoint = push_endpoint::Endpoint {
        config: PushConfig::encrypted("PushTok3n", PUSH_KEY, appid).unwrap(),
        format: PushFormat::Json,
        opened: Arc::default(),
        refused: Arc::default(),
        fail_first: Arc::default(),
    };
    let url = push_endpoint::start(endpoint.clone()).await;
    let (status, answer) = m
        .control(
            "PUT",
            "/sim/mp/push",
            Some(json!({"appid": appid, "url": url, "token": "PushTok3n", "encoding_aes_key": PUSH_KEY})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["appid"], appid);
    endpoint
}

#[tokio::test]
async fn every_mini_program_manages_and_pushes_its_own_payments() {
    use wxpay::mp::push::PushEvent;
    let m = Merchant::start(KeyMode::PublicKey).await;
    let first = mp_client(&m);
    let (appid, secret) = second_app(&m).await;
    let second = mp_client_of(&m, &appid, &secret);
    assert!(second.is_trade_managed().await.unwrap());
    assert!(
        second
            .get_delivery_list()
            .await
            .unwrap()
            .iter()
            .any(|c| c.delivery_id == "JTSDEXPRESS")
    );
    let first_pushes = push_to(&m, &m.appid()).await;
    let second_pushes = push_to(&m, &appid).await;

    // A payment in the second mini program.
    let openid = user_of(&m, &appid).await;
    let mut body = m.order_body("SHIP-APP2-1", 2990, &openid, NOTIFY);
    body["appid"] = json!(appid);
    let answer = m
        .v3("POST", "/v3/pay/transactions/jsapi", Some(&body))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    pay_in(
        &m,
        &appid,
        answer.json()["prepay_id"].as_str().unwrap(),
        &openid,
    )
    .await;
    let transaction_id = m
        .sim
        .state()
        .store
        .order("SHIP-APP2-1")
        .unwrap()
        .transaction_id
        .unwrap();

    // Only its own mini program sees it.
    let err = first
        .get_order(&OrderRef::TransactionId(transaction_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentNotFound);
    let page = first
        .get_order_list(&OrderListQuery::default())
        .await
        .unwrap();
    assert!(page.order_list.is_empty(), "{page:?}");
    assert_eq!(
        state_of(&second, &transaction_id).await.order_state,
        OrderState::AwaitingShipment
    );
    let page = second
        .get_order_list(&OrderListQuery::default())
        .await
        .unwrap();
    assert_eq!(page.order_list.len(), 1);
    let err = first
        .upload_shipping_info(&upload(
            &m,
            "SHIP-APP2-1",
            &openid,
            Shipment::unified(
                LogisticsType::Express,
                ShippingItem::express("JTSDEXPRESS", "JT0001", "x"),
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentNotFound);

    // Shipped and confirmed in the second mini program: its pushes go to its own URL, sealed
    // with its AppID; the first mini program's URL gets nothing.
    second
        .upload_shipping_info(&upload(
            &m,
            "SHIP-APP2-1",
            &openid,
            Shipment::unified(
                LogisticsType::Express,
                ShippingItem::express("JTSDEXPRESS", "JT0001", "x"),
            ),
        ))
        .await
        .unwrap();
    let (status, answer) = m
        .control("POST", "/sim/orders/SHIP-APP2-1/confirm-receipt", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let both = opened(&second_pushes, 2).await;
    for message in &both {
        let PushEvent::TradeManageOrderSettlement { order, .. } = &message.event else {
            panic!("{message:?}")
        };
        assert_eq!(order.transaction_id, transaction_id);
    }
    assert_eq!(
        state_of(&second, &transaction_id).await.order_state,
        OrderState::Completed
    );
    assert!(first_pushes.opened.lock().unwrap().is_empty());
    let (_, log) = m.control("GET", "/sim/mp/pushes", None).await;
    assert!(
        log["pushes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["appid"] == appid.as_str()),
        "{log}"
    );
    let (_, view) = m.control("GET", "/sim/orders/SHIP-APP2-1", None).await;
    assert_eq!(view["trade_management"]["appid"], appid.as_str(), "{view}");

    // Taken out of trade management: is_trade_managed says so, its payments are unknown.
    let (status, answer) = m
        .control(
            "PUT",
            "/sim/mp/trade-management",
            Some(json!({"appid": appid, "managed": false})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(!second.is_trade_managed().await.unwrap());
    assert!(first.is_trade_managed().await.unwrap());
    let err = second
        .get_order(&OrderRef::TransactionId(transaction_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentNotFound);
    let (_, view) = m.control("GET", "/sim/orders/SHIP-APP2-1", None).await;
    assert!(view["trade_management"].is_null(), "{view}");
    let (status, _) = m
        .control(
            "PUT",
            "/sim/mp/trade-management",
            Some(json!({"appid": appid, "managed": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(second.is_trade_managed().await.unwrap());

    // Settings for a mini program the simulator does not host: 404.
    let (status, v) = m
        .control(
            "PUT",
            "/sim/mp/push",
            Some(
                json!({"appid": "wxnosuchapp0000000", "url": "http://127.0.0.1:9/push",
                        "token": "PushTok3n", "mode": "plaintext"}),
            ),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = m
        .control(
            "PUT",
            "/sim/mp/trade-management",
            Some(json!({"appid": "wxnosuchapp0000000", "managed": false})),
        )
        .await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test]
async fn partner_payments_are_managed_under_the_paying_mini_program() {
    use wxpay::mp::push::PushEvent;
    const SUB: &str = "1900000301";
    let m = Merchant::start(KeyMode::PublicKey).await;
    let provider = mp_client(&m);
    let (sub_appid, secret) = second_app(&m).await;
    let sub = mp_client_of(&m, &sub_appid, &secret);
    let (status, v) = m
        .control(
            "POST",
            "/sim/sub-merchants",
            Some(json!({"sub_mchid": SUB, "sub_appid": sub_appid})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let pushes = push_to(&m, &sub_appid).await;
    let openid = user_of(&m, &sub_appid).await;
    let answer = m
        .v3(
            "POST",
            "/v3/pay/partner/transactions/jsapi",
            Some(&json!({
                "sp_appid": m.appid(), "sp_mchid": m.mchid(),
                "sub_appid": sub_appid, "sub_mchid": SUB,
                "description": "特约商户-奶茶", "out_trade_no": "SHIP-PARTNER-1",
                "notify_url": NOTIFY, "amount": {"total": 1500, "currency": "CNY"},
                "payer": {"sub_openid": openid},
            })),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    pay_in(
        &m,
        &sub_appid,
        answer.json()["prepay_id"].as_str().unwrap(),
        &openid,
    )
    .await;
    let transaction_id = m
        .sim
        .state()
        .store
        .order("SHIP-PARTNER-1")
        .unwrap()
        .transaction_id
        .unwrap();

    // Managed under the sub_appid, not the provider's sp_appid.
    let err = provider
        .get_order(&OrderRef::TransactionId(transaction_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentNotFound);
    let managed = state_of(&sub, &transaction_id).await;
    assert_eq!(managed.order_state, OrderState::AwaitingShipment);
    assert_eq!(managed.sub_merchant_id, SUB, "{managed:?}");
    let page = sub
        .get_order_list(&OrderListQuery::default())
        .await
        .unwrap();
    assert_eq!(page.order_list.len(), 1);

    // The sub-merchant's mchid finds it (order_number_type 1).
    let request = UploadShippingInfo {
        order_key: OrderKey::out_trade_no(SUB, "SHIP-PARTNER-1"),
        shipment: Shipment::unified(LogisticsType::Virtual, ShippingItem::described("奶茶券")),
        upload_time: time::OffsetDateTime::now_utc(),
        payer_openid: openid.clone(),
    };
    sub.upload_shipping_info(&request).await.unwrap();
    let shipped = opened(&pushes, 1).await;
    let PushEvent::TradeManageOrderSettlement { order, .. } = &shipped[0].event else {
        panic!("{:?}", shipped[0])
    };
    assert_eq!(order.transaction_id, transaction_id);
    assert_eq!(order.sub_merchant_id.as_deref(), Some(SUB));

    // WeChat confirms virtual goods after two days: settled, pushed to the sub_appid.
    let (status, _) = m
        .control(
            "POST",
            "/sim/clock/advance",
            Some(json!({"seconds": 2 * 86_400})),
        )
        .await;
    assert_eq!(status, 200);
    let both = opened(&pushes, 2).await;
    assert!(matches!(
        both[1].event,
        PushEvent::TradeManageOrderSettlement {
            settlement_time: Some(_),
            ..
        }
    ));
}

#[tokio::test]
async fn combined_uploads_are_checked_and_no_combined_payment_exists() {
    use wxpay::mp::shipping::{SubOrderShipment, UploadCombinedShippingInfo};
    let m = Merchant::start(KeyMode::PublicKey).await;
    let mp = mp_client(&m);
    let (openid, _) = paid(&m, "SHIP-COMB-1").await;
    let combined = UploadCombinedShippingInfo {
        order_key: OrderKey::out_trade_no(m.mchid(), "SHIP-COMB-PARENT"),
        sub_orders: vec![SubOrderShipment {
            order_key: OrderKey::out_trade_no(m.mchid(), "SHIP-COMB-1"),
            shipment: Shipment::unified(
                LogisticsType::Express,
                ShippingItem::express("ZTO", "ZT1", "x"),
            ),
        }],
        upload_time: time::OffsetDateTime::now_utc(),
        payer_openid: openid.clone(),
    };
    let err = mp
        .upload_combined_shipping_info(&combined)
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), ErrCode::PaymentNotFound);

    // The field checks, on raw bodies.
    let creds = m.sim.merchant();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let token: serde_json::Value = http
        .get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
            m.base, creds.appid, creds.app_secret
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let key = json!({"order_number_type": 1, "mchid": m.mchid(), "out_trade_no": "P1"});
    let sub = json!({"order_key": {"order_number_type": 1, "mchid": m.mchid(), "out_trade_no": "SHIP-COMB-1"},
                     "logistics_type": 1, "delivery_mode": 1,
                     "shipping_list": [{"tracking_no": "ZT1", "express_company": "ZTO", "item_desc": "x"}]});
    let time = "2026-01-01T12:00:00+08:00";
    for (body, expected) in [
        (
            json!({"order_key": key, "upload_time": time, "payer": {"openid": openid}}),
            10_060_014,
        ),
        (
            json!({"order_key": key, "sub_orders": [], "upload_time": time, "payer": {"openid": openid}}),
            10_060_014,
        ),
        (
            json!({"order_key": {"order_number_type": 3}, "sub_orders": [sub], "upload_time": time, "payer": {"openid": openid}}),
            268_485_194,
        ),
        (
            json!({"order_key": {"order_number_type": 2, "transaction_id": "42"}, "sub_orders": [sub], "upload_time": time, "payer": {"openid": openid}}),
            268_485_194,
        ),
        (
            json!({"order_key": key, "sub_orders": [{"order_key": sub["order_key"], "logistics_type": 9, "delivery_mode": 1, "shipping_list": sub["shipping_list"]}], "upload_time": time, "payer": {"openid": openid}}),
            10_060_005,
        ),
        (
            json!({"order_key": key, "sub_orders": [{"order_key": sub["order_key"], "logistics_type": 1, "delivery_mode": 1, "shipping_list": [{"express_company": "ZTO", "item_desc": "x"}]}], "upload_time": time, "payer": {"openid": openid}}),
            268_485_226,
        ),
        (
            json!({"order_key": key, "sub_orders": [sub], "upload_time": "yesterday", "payer": {"openid": openid}}),
            268_485_216,
        ),
        (
            json!({"order_key": key, "sub_orders": [sub], "upload_time": time}),
            10_060_014,
        ),
        (
            json!({"order_key": key, "sub_orders": "none", "upload_time": time, "payer": {"openid": openid}}),
            47_001,
        ),
        (
            json!({"order_key": key, "sub_orders": [sub], "upload_time": time, "payer": {"openid": openid}}),
            10_060_001,
        ),
    ] {
        let answer: serde_json::Value = http
            .post(format!(
                "{}/wxa/sec/order/upload_combined_shipping_info?access_token={token}",
                m.base
            ))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["errcode"], expected, "{body}: {answer}");
    }
    // Nothing was recorded for the sub-order's payment.
    let (_, view) = m.control("GET", "/sim/orders/SHIP-COMB-1", None).await;
    assert_eq!(view["trade_management"]["order_state"], 1, "{view}");
}
