//! The message push of a mini program (`/notify/mp/{appid}`): its settings in the back office
//! (never shown), WeChat's URL handshake, the trade-management events in every mode and format
//! verified and applied once (settled orders, reminders, the `wxa_trade_controlled` alert),
//! forged and tampered pushes refused; and end to end with the simulator: shipped, the buyer
//! confirms receipt, WeChat settles and pushes.

use serde_json::{Map, Value, json};
use wxpay::mp::push::{PushConfig, PushFormat, PushMode, seal_push};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::{TestApp, sim_control, spawn_app};
use crate::tenancy::admin_patch;

const TOKEN: &str = "pushToken2026";
/// 43 characters of base64 (32 bytes).
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// A paid order of the default mini program: (out_trade_no, transaction_id, openid).
async fn paid_order(app: &TestApp) -> (String, String, String) {
    let (openid, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let paid = app.sim_pay(&created.body["payment"], &openid).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    app.flush().await;
    let detail = app
        .get(&format!("/admin/orders/{no}"), Some(&app.admin()))
        .await;
    let tx = detail.body["order"]["transaction_id"]
        .as_str()
        .expect("paid")
        .to_owned();
    (no, tx, openid)
}

fn settlement_fields(
    no: &str,
    tx: &str,
    mchid: &str,
    at: i64,
    settled: bool,
) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("ToUserName".into(), json!("gh_0123456789ab"));
    f.insert("FromUserName".into(), json!("o_system"));
    f.insert("CreateTime".into(), json!(at));
    f.insert("MsgType".into(), json!("event"));
    f.insert("Event".into(), json!("trade_manage_order_settlement"));
    f.insert("transaction_id".into(), json!(tx));
    f.insert("merchant_id".into(), json!(mchid));
    f.insert("merchant_trade_no".into(), json!(no));
    f.insert("pay_time".into(), json!(at - 100));
    f.insert("shipped_time".into(), json!(at - 50));
    if settled {
        f.insert("confirm_receive_method".into(), json!(1));
        f.insert("confirm_receive_time".into(), json!(at - 10));
        f.insert("settlement_time".into(), json!(at));
    } else {
        f.insert("estimated_settlement_time".into(), json!(at + 864_000));
    }
    f
}

/// Posts a push sealed as WeChat does.
async fn push(
    app: &TestApp,
    appid: &str,
    config: &PushConfig,
    mode: PushMode,
    format: PushFormat,
    fields: &Map<String, Value>,
) -> (u16, String) {
    let sealed = seal_push(
        config,
        mode,
        format,
        fields,
        "1733560000",
        "nonce42",
        None,
        [7; 16],
    )
    .unwrap();
    post_raw(app, appid, &sealed.query, sealed.body, format).await
}

async fn post_raw(
    app: &TestApp,
    appid: &str,
    query: &str,
    body: Vec<u8>,
    format: PushFormat,
) -> (u16, String) {
    let content_type = match format {
        PushFormat::Json => "application/json",
        PushFormat::Xml => "text/xml",
    };
    let answer = app
        .http
        .post(format!("{}/notify/mp/{appid}?{query}", app.base))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Whether the order settles here within 30 s (WeChat's push is asynchronous, and retried 5 s
/// apart when an attempt fails). Reading the order at WeChat meanwhile runs its automatic
/// confirmation.
pub(crate) async fn settles(app: &TestApp, no: &str) -> bool {
    for _ in 0..600 {
        let _ = app
            .get(&format!("/sim/orders/{no}"), Some(&app.admin()))
            .await;
        if app
            .state
            .store
            .order(no)
            .await
            .unwrap()
            .is_some_and(|o| o.settled_at.is_some())
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

async fn settled_state(app: &TestApp, no: &str) -> (Value, i64, i64) {
    let d = app
        .get(&format!("/admin/orders/{no}"), Some(&app.admin()))
        .await;
    (
        d.body["order"]["shipping_state"].clone(),
        app.count(
            "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1 AND kind = 'settled'",
            no,
        )
        .await,
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.settled'",
            no,
        )
        .await,
    )
}

async fn pushes_are_verified_and_applied_once(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let wechat = app.state.registry.default_app();
    let (appid, mchid) = (wechat.appid.clone(), wechat.mchid.clone());

    // Nothing is read before the mini program has push settings.
    let cold = PushConfig::plaintext(TOKEN, &appid);
    let (status, _) = push(
        &app,
        &appid,
        &cold,
        PushMode::Plaintext,
        PushFormat::Json,
        &settlement_fields("x", "y", &mchid, 1, true),
    )
    .await;
    assert_eq!(status, 404);

    // Settings: a bad key is refused naming the field; the answer never holds them.
    let bad = admin_patch(
        &app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": TOKEN, "push_encoding_aes_key": "short"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .contains("push_encoding_aes_key")
    );
    let set = admin_patch(
        &app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": TOKEN, "push_encoding_aes_key": AES_KEY}),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["has_push"], true);
    let listed = app.get("/admin/apps", Some(&app.admin())).await;
    for text in [set.body.to_string(), listed.body.to_string()] {
        assert!(!text.contains(TOKEN) && !text.contains(AES_KEY), "{text}");
    }

    // The URL handshake: the echostr for the right signature only.
    let config = PushConfig::encrypted(TOKEN, AES_KEY, &appid).unwrap();
    let sig = wxpay::mp::push::signature(TOKEN, "1733560000", "n1");
    let ok = app
        .http
        .get(format!(
            "{}/notify/mp/{appid}?signature={sig}&timestamp=1733560000&nonce=n1&echostr=hello123",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "hello123");
    let forged = app
        .http
        .get(format!(
            "{}/notify/mp/{appid}?signature=00{}&timestamp=1733560000&nonce=n1&echostr=hello123",
            app.base,
            &sig[2..]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // In safe and compatible mode, JSON and XML: the "shipped" push puts a line on the
    // timeline, the settlement settles the order once (a repeat changes nothing).
    for (i, (mode, format)) in [
        (PushMode::Safe, PushFormat::Json),
        (PushMode::Safe, PushFormat::Xml),
        (PushMode::Compatible, PushFormat::Json),
        (PushMode::Compatible, PushFormat::Xml),
    ]
    .into_iter()
    .enumerate()
    {
        let (no, tx, _) = paid_order(&app).await;
        let at = 1_733_560_000 + i64::try_from(i).unwrap() * 1000;
        // Reordered: the settlement first, then the older "shipped" push.
        let settled = settlement_fields(&no, &tx, &mchid, at, true);
        let shipped = settlement_fields(&no, &tx, &mchid, at - 500, false);
        for fields in [&settled, &shipped, &settled] {
            let (status, body) = push(&app, &appid, &config, mode, format, fields).await;
            assert_eq!(
                (status, body.as_str()),
                (200, "success"),
                "{mode:?} {format:?}"
            );
        }
        let (state, settled_events, webhooks) = settled_state(&app, &no).await;
        assert_eq!(state, "settled", "{mode:?} {format:?}");
        assert_eq!(settled_events, 1);
        assert_eq!(webhooks, 1);
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.received'",
                &no
            )
            .await,
            1
        );
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1 AND kind = 'trade_management'",
                &no
            )
            .await,
            1,
            "the shipped push: one timeline line"
        );
    }

    // Forged and tampered pushes are refused and change nothing.
    let (no, tx, _) = paid_order(&app).await;
    let fields = settlement_fields(&no, &tx, &mchid, 1_733_570_000, true);
    // Plaintext while the mini program is set to encryption: forged.
    let plaintext = PushConfig::plaintext(TOKEN, &appid);
    let (status, _) = push(
        &app,
        &appid,
        &plaintext,
        PushMode::Plaintext,
        PushFormat::Json,
        &fields,
    )
    .await;
    assert_eq!(status, 401);
    // Another Token's signature.
    let other = PushConfig::encrypted("otherToken9", AES_KEY, &appid).unwrap();
    let (status, _) = push(
        &app,
        &appid,
        &other,
        PushMode::Safe,
        PushFormat::Json,
        &fields,
    )
    .await;
    assert_eq!(status, 401);
    // Another EncodingAESKey (the signature is right, the payload does not decrypt to ours).
    let other_key =
        PushConfig::encrypted(TOKEN, "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut", &appid)
            .unwrap();
    let (status, _) = push(
        &app,
        &appid,
        &other_key,
        PushMode::Safe,
        PushFormat::Json,
        &fields,
    )
    .await;
    assert_eq!(status, 401);
    // Another mini program's payload.
    let other_app = PushConfig::encrypted(TOKEN, AES_KEY, "wx00000000000000ee").unwrap();
    let (status, _) = push(
        &app,
        &appid,
        &other_app,
        PushMode::Safe,
        PushFormat::Json,
        &fields,
    )
    .await;
    assert_eq!(status, 401);
    // Not a push at all.
    let (status, _) = post_raw(
        &app,
        &appid,
        "signature=x",
        b"{not json".to_vec(),
        PushFormat::Json,
    )
    .await;
    assert!(status == 400 || status == 401, "{status}");
    let (state, settled_events, _) = settled_state(&app, &no).await;
    assert_ne!(state, "settled");
    assert_eq!(settled_events, 0);
    // A settlement naming another transaction of ours is not believed.
    let wrong = settlement_fields(
        &no,
        "4200000000000000000000000000",
        &mchid,
        1_733_570_001,
        true,
    );
    let (status, _) = push(
        &app,
        &appid,
        &config,
        PushMode::Safe,
        PushFormat::Json,
        &wrong,
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(settled_state(&app, &no).await.0, "settled");

    // wxa_trade_controlled raises an alert once, until acknowledged.
    let mut controlled = Map::new();
    controlled.insert("ToUserName".into(), json!("gh_0123456789ab"));
    controlled.insert("FromUserName".into(), json!("o_system"));
    controlled.insert("CreateTime".into(), json!(1_733_580_000));
    controlled.insert("MsgType".into(), json!("event"));
    controlled.insert("Event".into(), json!("wxa_trade_controlled"));
    controlled.insert("msg".into(), json!("交易管控"));
    for _ in 0..2 {
        let (status, _) = push(
            &app,
            &appid,
            &config,
            PushMode::Safe,
            PushFormat::Xml,
            &controlled,
        )
        .await;
        assert_eq!(status, 200);
    }
    let alerts = app.get("/admin/alerts", Some(&app.admin())).await;
    assert_eq!(alerts.status, 200);
    let open = alerts.body["alerts"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{:?}", alerts.body);
    assert_eq!(open[0]["kind"], "wxa_trade_controlled");
    let id = open[0]["id"].as_str().unwrap();
    let ack = app
        .post(
            &format!("/admin/alerts/{id}/acknowledge"),
            Some(&app.admin()),
        )
        .await;
    assert_eq!(ack.status, 204);
    let after = app.get("/admin/alerts", Some(&app.admin())).await;
    assert_eq!(after.body["alerts"].as_array().unwrap().len(), 0);

    // The money still held: paid orders not settled (the forged-at one), not the settled ones.
    let held = app
        .get("/admin/fulfilment/unsettled", Some(&app.admin()))
        .await;
    assert_eq!(held.status, 200, "{:?}", held.body);
    let listed: Vec<&str> = held.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["out_trade_no"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![no.as_str()], "{:?}", held.body);
    assert_eq!(held.body["count"], 1);
    assert_eq!(held.body["total_fen"], held.body["orders"][0]["amount_fen"]);

    // Plaintext mode once the EncodingAESKey is removed.
    let plain = admin_patch(
        &app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": TOKEN, "push_encoding_aes_key": null}),
    )
    .await;
    assert_eq!(plain.status, 200, "{:?}", plain.body);
    let (no, tx, _) = paid_order(&app).await;
    let fields = settlement_fields(&no, &tx, &mchid, 1_733_590_000, true);
    let (status, _) = push(
        &app,
        &appid,
        &plaintext,
        PushMode::Plaintext,
        PushFormat::Xml,
        &fields,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(settled_state(&app, &no).await.0, "settled");
}

/// End to end with the simulator: its pushes go to our URL (the handshake when it is set),
/// WeChat settles after the buyer confirms receipt, and the order settles here.
async fn the_simulators_settlement_push_settles_the_order(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let wechat = app.state.registry.default_app();
    let appid = wechat.appid.clone();
    let set = admin_patch(
        &app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": TOKEN, "push_encoding_aes_key": AES_KEY}),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let url = format!("{}/notify/mp/{appid}", app.base);
    let base = app.state.sandbox_url.clone().unwrap();
    let put = app
        .http
        .put(format!("{base}/sim/mp/push"))
        .bearer_auth(crate::helpers::SIM_CONTROL_TOKEN)
        .json(&json!({"url": url, "token": TOKEN, "encoding_aes_key": AES_KEY, "mode": "safe", "format": "xml"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());

    let (no, tx, openid) = paid_order(&app).await;
    // The shipping information, as the merchant's fulfilment uploads it.
    use wxpay::mp::shipping::{
        LogisticsType, OrderKey, Shipment, ShippingItem, UploadShippingInfo,
    };
    wechat
        .mp
        .upload_shipping_info(&UploadShippingInfo {
            order_key: OrderKey::transaction_id(tx.clone()),
            shipment: Shipment::unified(
                LogisticsType::Virtual,
                ShippingItem::described("coffee voucher"),
            ),
            upload_time: time::OffsetDateTime::now_utc(),
            payer_openid: openid,
        })
        .await
        .unwrap();
    sim_control(
        &app,
        &format!("/sim/orders/{no}/confirm-receipt"),
        &json!({}),
    )
    .await;
    assert!(settles(&app, &no).await, "settled by the simulator's push");
    let (state, settled_events, webhooks) = settled_state(&app, &no).await;
    assert_eq!((state, settled_events, webhooks), (json!("settled"), 1, 1));
}

/// A settlement whose push never came (no push URL at WeChat): the reconcile job finds it by
/// asking WeChat and settles the order once; the push arriving late changes nothing.
async fn a_lost_settlement_push_is_healed_by_the_reconcile_job(backend: Backend) {
    use wxpay_server::jobs::{JobKind, JobOptions, Jobs};
    let app = spawn_app(backend, "v3").await;
    let wechat = app.state.registry.default_app();
    let (appid, mchid) = (wechat.appid.clone(), wechat.mchid.clone());
    let jobs = Jobs::new(
        app.state.clone(),
        JobOptions {
            trade_recheck: std::time::Duration::ZERO,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let (no, tx, _) = paid_order(&app).await;
    // Not shipped yet: nothing to ask.
    assert_eq!(jobs.drain(JobKind::ReconcileTrade, 5).await.unwrap(), 0);
    let shipped = app
        .post_json(
            &format!("/admin/orders/{no}/shipments"),
            Some(&app.admin()),
            &json!({"express_company": "YTO", "tracking_no": "YT9876543210", "last": true}),
        )
        .await;
    assert_eq!(shipped.status, 201, "{:?}", shipped.body);
    // Shipped, not confirmed: WeChat says so, nothing changes.
    jobs.drain(JobKind::ReconcileTrade, 5).await.unwrap();
    assert_eq!(settled_state(&app, &no).await.0, "shipped");
    // The buyer confirms at WeChat, which settles and pushes to no one.
    sim_control(
        &app,
        &format!("/sim/orders/{no}/confirm-receipt"),
        &json!({}),
    )
    .await;
    jobs.drain(JobKind::ReconcileTrade, 5).await.unwrap();
    let (state, settled_events, webhooks) = settled_state(&app, &no).await;
    assert_eq!((state, settled_events, webhooks), (json!("settled"), 1, 1));
    // Settled orders are not asked about again.
    assert_eq!(jobs.drain(JobKind::ReconcileTrade, 5).await.unwrap(), 0);
    // The push, late: a duplicate.
    let set = admin_patch(
        &app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": TOKEN, "push_encoding_aes_key": AES_KEY}),
    )
    .await;
    assert_eq!(set.status, 200);
    let config = PushConfig::encrypted(TOKEN, AES_KEY, &appid).unwrap();
    let fields = settlement_fields(&no, &tx, &mchid, 1_733_600_000, true);
    let (status, _) = push(
        &app,
        &appid,
        &config,
        PushMode::Safe,
        PushFormat::Json,
        &fields,
    )
    .await;
    assert_eq!(status, 200);
    let (state, settled_events, webhooks) = settled_state(&app, &no).await;
    assert_eq!((state, settled_events, webhooks), (json!("settled"), 1, 1));
}

/// Sets the mini program's push settings here and the simulator's push URL (the handshake
/// must pass), in `mode`/`format`.
async fn connect_push(app: &TestApp, appid: &str, mode: &str, format: &str) {
    let set = admin_patch(
        app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": TOKEN, "push_encoding_aes_key": AES_KEY}),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let base = app.state.sandbox_url.clone().unwrap();
    let put = app
        .http
        .put(format!("{base}/sim/mp/push"))
        .bearer_auth(crate::helpers::SIM_CONTROL_TOKEN)
        .json(
            &json!({"url": format!("{}/notify/mp/{appid}", app.base), "token": TOKEN,
            "encoding_aes_key": AES_KEY, "mode": mode, "format": format}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
}

/// Virtual goods, v3 and v2: uploaded by the job after payment, confirmed by WeChat itself
/// after the delay (the simulator's clock), settled by the push (each push sent twice: applied
/// once), and still refundable once settled. No person acts after the payment.
async fn virtual_goods_settle_without_a_human(backend: Backend) {
    use wxpay_server::jobs::{JobKind, JobOptions, Jobs};
    for version in ["v3", "v2"] {
        let app = spawn_app(backend, version).await;
        let appid = app.state.registry.default_app().appid.clone();
        connect_push(&app, &appid, "compatible", "json").await;
        let product = app
            .send(
                app.http
                    .put(format!("{}/admin/products/ebook", app.base))
                    .bearer_auth(app.admin())
                    .json(&json!({"name": "e-book", "price_fen": 990, "delivery": "virtual"})),
            )
            .await;
        assert!(product.status < 300, "{:?}", product.body);
        let faults = app
            .http
            .put(format!(
                "{}/sim/faults",
                app.state.sandbox_url.clone().unwrap()
            ))
            .bearer_auth(crate::helpers::SIM_CONTROL_TOKEN)
            .json(&json!({"notify_duplicate_rate": 1.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(faults.status(), 200);
        let (openid, token) = app.login().await;
        let created = app
            .create_order(&token, json!([{"sku": "ebook", "quantity": 1}]))
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
        assert_eq!(
            app.sim_pay(&created.body["payment"], &openid).await.status,
            200
        );
        app.flush().await;
        let jobs = Jobs::new(app.state.clone(), JobOptions::default()).unwrap();
        jobs.drain(JobKind::UploadShipping, 10).await.unwrap();
        assert_eq!(settled_state(&app, &no).await.0, "shipped", "{version}");
        // WeChat confirms virtual goods by itself after its delay.
        sim_control(&app, "/sim/clock/advance", &json!({"seconds": 3 * 86_400})).await;
        assert!(
            settles(&app, &no).await,
            "{version}: settled by WeChat's push"
        );
        app.flush().await;
        let (state, settled_events, webhooks) = settled_state(&app, &no).await;
        assert_eq!(
            (state, settled_events, webhooks),
            (json!("settled"), 1, 1),
            "{version}"
        );
        // A settled order is still refunded as WeChat allows.
        let refund = app
            .post_json(
                &format!("/admin/orders/{no}/refunds"),
                Some(&app.admin()),
                &json!({"amount_fen": 990}),
            )
            .await;
        assert_eq!(refund.status, 201, "{version}: {:?}", refund.body);
        sim_control(&app, "/sim/clock/advance", &json!({"seconds": 10})).await;
        app.flush().await;
        let d = app
            .get(&format!("/admin/orders/{no}"), Some(&app.admin()))
            .await;
        assert_eq!(
            d.body["refunds"][0]["status"], "SUCCESS",
            "{version}: {:?}",
            d.body
        );
        assert_eq!(d.body["order"]["status"], "REFUND");
    }
}

both_backends!(
    pushes_are_verified_and_applied_once,
    the_simulators_settlement_push_settles_the_order,
    a_lost_settlement_push_is_healed_by_the_reconcile_job,
    virtual_goods_settle_without_a_human
);
