use serde_json::{Value, json};
use wxpay::RsaPrivateKey;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::notify::{NotificationEvent, NotificationSigner, sign_notification};
use wxpay_server::store::{Backend, OrderStatus};

use crate::both_backends;
use crate::helpers::{TestApp, sandbox_dir, spawn_app};

struct Signer {
    key: RsaPrivateKey,
    serial: String,
    api_v3_key: ApiV3Key,
    api_v2_key: String,
}

fn wechat_signer() -> Signer {
    let setup = wxpay_sim::merchant::load_or_create(&sandbox_dir()).unwrap();
    Signer {
        key: setup.keys.public_key_key.clone(),
        serial: setup.credentials.wechatpay_public_key_id.clone(),
        api_v3_key: ApiV3Key::new(&setup.credentials.api_v3_key).unwrap(),
        api_v2_key: setup.credentials.api_v2_key.clone(),
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A v3 notification as WeChat would send it, signed by `key`.
fn v3_notification(
    s: &Signer,
    key: &RsaPrivateKey,
    event_id: &str,
    event_type: &str,
    original_type: &str,
    resource: &Value,
) -> (Vec<(&'static str, String)>, String) {
    let n = sign_notification(
        &NotificationSigner {
            api_v3_key: &s.api_v3_key,
            signing_key: key,
            serial: &s.serial,
        },
        &NotificationEvent {
            id: event_id,
            create_time: time::macros::datetime!(2026-01-01 10:00:00 +8),
            event_type,
            summary: "支付成功",
            original_type,
            resource_json: resource.to_string().as_bytes(),
        },
        now(),
    )
    .unwrap();
    (n.headers, n.body)
}

async fn post_notification(
    app: &TestApp,
    path: &str,
    headers: &[(&'static str, String)],
    body: &str,
) -> (u16, String) {
    let mut r = app
        .http
        .post(format!("{}{path}", app.base))
        .body(body.to_owned());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let a = app.send(r).await;
    (a.status, String::from_utf8_lossy(&a.bytes).into_owned())
}

/// An unpaid order of a fresh user: (out_trade_no, openid, amount).
async fn unpaid_order(app: &TestApp) -> (String, String, u64) {
    let (openid, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "tea", "quantity": 2}]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    (
        created.body["out_trade_no"].as_str().unwrap().to_owned(),
        openid,
        2400,
    )
}

fn transaction(app: &TestApp, no: &str, openid: &str, amount: u64, appid: Option<&str>) -> Value {
    json!({
        "appid": appid.unwrap_or(&app.state.registry.default_app().appid),
        "mchid": app.state.registry.default_app().mchid,
        "out_trade_no": no,
        "transaction_id": format!("42000{}", wxpay::nonce::random_string(10)),
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": "2026-01-01T10:00:00+08:00",
        "payer": {"openid": openid},
        "amount": {"total": amount, "payer_total": amount, "currency": "CNY", "payer_currency": "CNY"}
    })
}

async fn concurrent_duplicate_v3_notifications_change_the_order_once(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let s = wechat_signer();
    let (no, openid, amount) = unpaid_order(&app).await;
    let (headers, body) = v3_notification(
        &s,
        &s.key,
        "EV-dup-1",
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(&app, &no, &openid, amount, None),
    );
    let (a, b, c) = tokio::join!(
        post_notification(&app, "/notify/v3/pay", &headers, &body),
        post_notification(&app, "/notify/v3/pay", &headers, &body),
        post_notification(&app, "/notify/v3/pay", &headers, &body),
    );
    for (status, text) in [a, b, c] {
        assert_eq!(status, 204, "{text}");
        assert!(text.is_empty());
    }
    assert_eq!(
        app.state.store.order(&no).await.unwrap().unwrap().status,
        OrderStatus::Success
    );
    assert_eq!(app.paid_events(&no).await, 1);
    assert_eq!(app.outbox_rows(&no).await, 1);
    // A later replay with fresh headers changes nothing either.
    let (headers, body) = v3_notification(
        &s,
        &s.key,
        "EV-dup-1",
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(&app, &no, &openid, amount, None),
    );
    assert_eq!(
        post_notification(&app, "/notify/v3/pay", &headers, &body)
            .await
            .0,
        204
    );
    assert_eq!(app.paid_events(&no).await, 1);
    assert_eq!(app.outbox_rows(&no).await, 1);
}

async fn concurrent_duplicate_v2_notifications_change_the_order_once(backend: Backend) {
    let app = spawn_app(backend, "v2").await;
    let s = wechat_signer();
    let (no, openid, amount) = unpaid_order(&app).await;
    let n = wxpay::v2::notify::PayNotification {
        appid: app.state.registry.default_app().appid.clone(),
        mch_id: app.state.registry.default_app().mchid.clone(),
        nonce_str: wxpay::nonce::nonce(),
        sign_type: wxpay::v2::SignType::Md5,
        device_info: None,
        openid,
        is_subscribe: Some(false),
        sub_appid: None,
        sub_mch_id: None,
        sub_openid: None,
        sub_is_subscribe: None,
        trade_type: "JSAPI".into(),
        bank_type: "OTHERS".into(),
        total_fee: wxpay::Fen::new(amount),
        settlement_total_fee: None,
        fee_type: Some("CNY".into()),
        cash_fee: wxpay::Fen::new(amount),
        cash_fee_type: None,
        coupon_fee: None,
        coupons: vec![],
        transaction_id: format!("42000{}", wxpay::nonce::random_string(10)),
        out_trade_no: no.clone(),
        attach: None,
        time_end: time::OffsetDateTime::now_utc(),
    };
    let xml =
        wxpay::v2::notify::build_pay_notification(&n, &s.api_v2_key, wxpay::v2::SignType::Md5)
            .unwrap();
    let h = [("Content-Type", "text/xml".to_owned())];
    let (a, b) = tokio::join!(
        post_notification(&app, "/notify/v2/pay", &h, &xml),
        post_notification(&app, "/notify/v2/pay", &h, &xml),
    );
    for (status, text) in [a, b] {
        assert_eq!(status, 200);
        assert!(wxpay::v2::notify::is_success_ack(text.as_bytes()), "{text}");
    }
    assert_eq!(app.paid_events(&no).await, 1);
    assert_eq!(app.outbox_rows(&no).await, 1);

    // Signed with another key: FAIL, nothing changes.
    let (other, _, _) = unpaid_order(&app).await;
    let mut forged = n.clone();
    forged.out_trade_no = other.clone();
    forged.transaction_id = "4200000000000000000001".into();
    let xml = wxpay::v2::notify::build_pay_notification(
        &forged,
        &"k".repeat(32),
        wxpay::v2::SignType::Md5,
    )
    .unwrap();
    let (status, text) = post_notification(&app, "/notify/v2/pay", &h, &xml).await;
    assert!(status >= 400);
    assert!(
        text.contains("<return_code><![CDATA[FAIL]]></return_code>"),
        "{text}"
    );
    assert_eq!(
        app.state.store.order(&other).await.unwrap().unwrap().status,
        OrderStatus::NotPay
    );
}

async fn notifications_that_do_not_match_or_verify_are_refused_and_change_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend, "v3").await;
    let s = wechat_signer();
    let (no, openid, amount) = unpaid_order(&app).await;
    let other_key = RsaPrivateKey::generate().unwrap();
    let cases = [
        (
            "wrong amount",
            v3_notification(
                &s,
                &s.key,
                "EV-a",
                "TRANSACTION.SUCCESS",
                "transaction",
                &transaction(&app, &no, &openid, amount + 1, None),
            ),
            400,
        ),
        (
            "wrong appid",
            v3_notification(
                &s,
                &s.key,
                "EV-b",
                "TRANSACTION.SUCCESS",
                "transaction",
                &transaction(&app, &no, &openid, amount, Some("wx0000000000000000")),
            ),
            400,
        ),
        (
            "forged signature",
            v3_notification(
                &s,
                &other_key,
                "EV-c",
                "TRANSACTION.SUCCESS",
                "transaction",
                &transaction(&app, &no, &openid, amount, None),
            ),
            401,
        ),
    ];
    for (what, (headers, body), expected) in cases {
        let (status, text) = post_notification(&app, "/notify/v3/pay", &headers, &body).await;
        assert_eq!(status, expected, "{what}: {text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"code": "FAIL", "message": "失败"}),
            "{what}"
        );
    }
    // A tampered body under a valid signature.
    let (headers, body) = v3_notification(
        &s,
        &s.key,
        "EV-d",
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(&app, &no, &openid, amount, None),
    );
    let tampered = body.replacen("EV-d", "EV-e", 1);
    assert_eq!(
        post_notification(&app, "/notify/v3/pay", &headers, &tampered)
            .await
            .0,
        401
    );
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::NotPay);
    assert_eq!(app.outbox_rows(&no).await, 0);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed_notifications")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
    let rejected = app
        .state
        .store
        .events(&no)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "notification_rejected")
        .count();
    assert_eq!(rejected, 2);
    // The untouched order can still be paid by the real notification.
    let (headers, body) = v3_notification(
        &s,
        &s.key,
        "EV-f",
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction(&app, &no, &openid, amount, None),
    );
    assert_eq!(
        post_notification(&app, "/notify/v3/pay", &headers, &body)
            .await
            .0,
        204
    );
}

/// A v3 notification of a payment in another currency, or by another payer than the order's
/// buyer, is refused like a wrong amount: 400, recorded, nothing changes.
async fn v3_notifications_in_another_currency_or_by_another_payer_are_refused(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let s = wechat_signer();
    let (no, openid, amount) = unpaid_order(&app).await;
    let mut usd = transaction(&app, &no, &openid, amount, None);
    usd["amount"]["currency"] = json!("USD");
    let stranger = transaction(&app, &no, "o-not-the-buyer", amount, None);
    for (what, event_id, resource) in [("USD", "EV-usd", usd), ("payer", "EV-payer", stranger)] {
        let (headers, body) = v3_notification(
            &s,
            &s.key,
            event_id,
            "TRANSACTION.SUCCESS",
            "transaction",
            &resource,
        );
        let (status, text) = post_notification(&app, "/notify/v3/pay", &headers, &body).await;
        assert_eq!(status, 400, "{what}: {text}");
    }
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::NotPay);
    assert_eq!(app.outbox_rows(&no).await, 0);
    let reasons: Vec<String> = app
        .state
        .store
        .events(&no)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "notification_rejected")
        .map(|e| e.detail["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("currency USD"), "{reasons:?}");
    assert!(reasons[1].contains("payer"), "{reasons:?}");
}

/// The same for v2: `fee_type=USD`, or an `openid` that is not the order's buyer.
async fn v2_notifications_in_another_currency_or_by_another_payer_are_refused(backend: Backend) {
    let app = spawn_app(backend, "v2").await;
    let s = wechat_signer();
    let (no, openid, amount) = unpaid_order(&app).await;
    let base = wxpay::v2::notify::PayNotification {
        appid: app.state.registry.default_app().appid.clone(),
        mch_id: app.state.registry.default_app().mchid.clone(),
        nonce_str: wxpay::nonce::nonce(),
        sign_type: wxpay::v2::SignType::Md5,
        device_info: None,
        openid,
        is_subscribe: Some(false),
        sub_appid: None,
        sub_mch_id: None,
        sub_openid: None,
        sub_is_subscribe: None,
        trade_type: "JSAPI".into(),
        bank_type: "OTHERS".into(),
        total_fee: wxpay::Fen::new(amount),
        settlement_total_fee: None,
        fee_type: Some("USD".into()),
        cash_fee: wxpay::Fen::new(amount),
        cash_fee_type: None,
        coupon_fee: None,
        coupons: vec![],
        transaction_id: format!("42000{}", wxpay::nonce::random_string(10)),
        out_trade_no: no.clone(),
        attach: None,
        time_end: time::OffsetDateTime::now_utc(),
    };
    let mut stranger = base.clone();
    stranger.fee_type = Some("CNY".into());
    stranger.openid = "o-not-the-buyer".into();
    let h = [("Content-Type", "text/xml".to_owned())];
    for (what, n) in [("USD", base), ("payer", stranger)] {
        let xml =
            wxpay::v2::notify::build_pay_notification(&n, &s.api_v2_key, wxpay::v2::SignType::Md5)
                .unwrap();
        let (status, text) = post_notification(&app, "/notify/v2/pay", &h, &xml).await;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(
            text.contains("<return_code><![CDATA[FAIL]]></return_code>"),
            "{what}: {text}"
        );
    }
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::NotPay);
    assert_eq!(app.outbox_rows(&no).await, 0);
    let rejected = app
        .state
        .store
        .events(&no)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "notification_rejected")
        .count();
    assert_eq!(rejected, 2);
}

async fn a_refund_notification_completes_the_refund_once(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let s = wechat_signer();
    let (_, _, no) = app.paid_order().await;
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    // The refund row as the admin API writes it, with the amount reserved on the order.
    let pool = app.state.store.pool();
    sqlx::query("INSERT INTO refunds (out_refund_no, out_trade_no, api_version, amount_fen, status, submitted_at, created_at, updated_at) VALUES ('R1', $1, 'v3', 1000, 'PROCESSING', 1, 1, 1)")
        .bind(&no)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE orders SET refunded_fen = 1000 WHERE out_trade_no = $1")
        .bind(&no)
        .execute(pool)
        .await
        .unwrap();
    let resource = json!({
        "mchid": app.state.registry.default_app().mchid, "out_trade_no": no, "transaction_id": order.transaction_id,
        "out_refund_no": "R1", "refund_id": "50300000001", "refund_status": "SUCCESS",
        "success_time": "2026-01-01T10:05:00+08:00", "user_received_account": "支付用户零钱",
        "amount": {"total": order.amount_fen, "refund": 1000, "payer_total": order.amount_fen, "payer_refund": 1000}
    });
    let (headers, body) =
        v3_notification(&s, &s.key, "EV-r1", "REFUND.SUCCESS", "refund", &resource);
    let (a, b) = tokio::join!(
        post_notification(&app, "/notify/v3/refund", &headers, &body),
        post_notification(&app, "/notify/v3/refund", &headers, &body),
    );
    assert_eq!((a.0, b.0), (204, 204), "{a:?} {b:?}");
    let refund = app.state.store.refund("R1").await.unwrap().unwrap();
    assert_eq!(refund.status, wxpay_server::store::RefundStatus::Success);
    assert_eq!(refund.refund_id.as_deref(), Some("50300000001"));
    assert_eq!(
        app.state.store.order(&no).await.unwrap().unwrap().status,
        OrderStatus::Refund
    );
    let refund_events: i64 = app.count("SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'refund.succeeded'", &no).await;
    assert_eq!(refund_events, 1);
    // A refund this server does not know is not acknowledged (WeChat will retry).
    let mut unknown = resource.clone();
    unknown["out_refund_no"] = json!("R-unknown");
    let (headers, body) =
        v3_notification(&s, &s.key, "EV-r2", "REFUND.SUCCESS", "refund", &unknown);
    assert_eq!(
        post_notification(&app, "/notify/v3/refund", &headers, &body)
            .await
            .0,
        404
    );
}

both_backends!(
    concurrent_duplicate_v3_notifications_change_the_order_once,
    concurrent_duplicate_v2_notifications_change_the_order_once,
    notifications_that_do_not_match_or_verify_are_refused_and_change_nothing,
    v3_notifications_in_another_currency_or_by_another_payer_are_refused,
    v2_notifications_in_another_currency_or_by_another_payer_are_refused,
    a_refund_notification_completes_the_refund_once,
);
