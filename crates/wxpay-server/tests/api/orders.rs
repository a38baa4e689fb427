use serde_json::json;
use wxpay_server::store::{Backend, NewOrder, OrderStatus};

use crate::both_backends;
use crate::helpers::spawn_app;

async fn pay(backend: Backend, version: &str) {
    let app = spawn_app(backend, version).await;
    let (openid, token) = app.login().await;
    let created = app
        .create_order(
            &token,
            json!([{"sku": "coffee", "quantity": 2}, {"sku": "sticker", "quantity": 1}]),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["amount_fen"], 3601);
    assert_eq!(created.body["status"], "NOTPAY");
    let payment = &created.body["payment"];
    assert!(
        payment["package"]
            .as_str()
            .unwrap()
            .starts_with("prepay_id=")
    );
    assert_eq!(
        payment["signType"],
        if version == "v3" { "RSA" } else { "MD5" }
    );
    assert!(payment.get("appId").is_none());
    let no = created.body["out_trade_no"].as_str().unwrap();

    let paid = app.sim_pay(payment, &openid).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    app.flush().await;

    let order = app.order(&token, no).await;
    assert_eq!(order.status, 200);
    assert_eq!(order.body["status"], "SUCCESS", "{:?}", order.body);
    assert!(order.body["transaction_id"].as_str().is_some());
    assert_eq!(app.outbox_rows(no).await, 1);
    assert_eq!(app.paid_events(no).await, 1);
    let events: Vec<String> = app
        .state
        .store
        .events(no)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(events, ["created", "prepay", "notification"]);
}

async fn a_v3_order_is_paid_through_the_notification(backend: Backend) {
    pay(backend, "v3").await;
}

async fn a_v2_order_is_paid_through_the_notification(backend: Backend) {
    pay(backend, "v2").await;
}

async fn another_users_order_is_not_found(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (_, alice) = app.login().await;
    let (_, bob) = app.login().await;
    let created = app
        .create_order(&alice, json!([{"sku": "tea", "quantity": 1}]))
        .await;
    let no = created.body["out_trade_no"].as_str().unwrap();
    for answer in [
        app.order(&bob, no).await,
        app.payment(&bob, no).await,
        app.close(&bob, no).await,
    ] {
        assert_eq!(answer.status, 404, "{:?}", answer.body);
        assert_eq!(answer.body["code"], "not_found");
    }
    assert_eq!(app.order(&alice, no).await.status, 200);
}

async fn bad_items_are_refused_and_create_nothing(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (_, token) = app.login().await;
    let cases = [
        (json!([{"sku": "nope", "quantity": 1}]), "unknown_sku"),
        (
            json!([{"sku": "coffee", "quantity": 100}]),
            "invalid_request",
        ),
        (json!([{"sku": "coffee", "quantity": 0}]), "invalid_request"),
        (
            json!([{"sku": "coffee", "quantity": -1}]),
            "invalid_request",
        ),
        (
            json!([{"sku": "coffee", "quantity": 1.5}]),
            "invalid_request",
        ),
        (
            json!([{"sku": "coffee", "quantity": 18446744073709551615u64}]),
            "invalid_request",
        ),
        (
            json!([{"sku": "coffee", "quantity": 1}, {"sku": "coffee", "quantity": 1}]),
            "invalid_request",
        ),
        (json!([]), "invalid_request"),
        (
            json!([{"sku": "x' OR '1'='1", "quantity": 1}]),
            "unknown_sku",
        ),
        (
            json!([{"sku": "coffee", "quantity": 1, "price_fen": 1}]),
            "invalid_request",
        ),
    ];
    for (items, code) in cases {
        let a = app.create_order(&token, items.clone()).await;
        assert_eq!(a.status, 400, "{items}: {:?}", a.body);
        assert_eq!(a.body["code"], code, "{items}");
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
}

async fn an_unpaid_order_is_queried_before_the_notification_arrives(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    app.set_faults(json!({"notify_drop_rate": 1.0})).await;
    let (openid, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "cake", "quantity": 1}]))
        .await;
    let no = created.body["out_trade_no"].as_str().unwrap();
    assert_eq!(
        app.sim_pay(&created.body["payment"], &openid).await.status,
        200
    );
    app.flush().await;
    let order = app.order(&token, no).await;
    assert_eq!(order.body["status"], "SUCCESS", "{:?}", order.body);
    assert_eq!(app.outbox_rows(no).await, 1);
    let events = app.state.store.events(no).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "query" && e.detail["result"] == "paid"),
        "{events:?}"
    );
}

async fn payment_parameters_are_refreshed_and_a_lost_prepay_recovered(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (openid, token) = app.login().await;
    // A crash between the commit and the prepay leaves an order without prepay_id.
    let store = &app.state.store;
    let order = store
        .insert_order(&NewOrder {
            out_trade_no: wxpay_server::core::orders::new_out_trade_no(),
            openid: openid.clone(),
            appid: app.state.registry.default_app().appid.clone(),
            mchid: app.state.registry.default_app().mchid.clone(),
            sub_mchid: None,
            api_version: wxpay_server::store::ApiVersion::V3,
            source: "api",
            description: "recovered".into(),
            items: vec![],
            amount_fen: 10,
            client_ip: "127.0.0.1".into(),
            expires_at: wxpay_server::store::now_ms() + 600_000,
        })
        .await
        .unwrap();
    assert!(order.prepay_id.is_none());
    let first = app.payment(&token, &order.out_trade_no).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let again = app.payment(&token, &order.out_trade_no).await;
    assert_eq!(
        again.body["payment"]["package"],
        first.body["payment"]["package"]
    );
    assert_ne!(
        again.body["payment"]["nonceStr"],
        first.body["payment"]["nonceStr"]
    );
    assert_eq!(
        app.sim_pay(&again.body["payment"], &openid).await.status,
        200
    );
    app.flush().await;
    assert_eq!(
        store
            .order(&order.out_trade_no)
            .await
            .unwrap()
            .unwrap()
            .status,
        OrderStatus::Success
    );
    let paid = app.payment(&token, &order.out_trade_no).await;
    assert_eq!(paid.status, 409);
    assert_eq!(paid.body["code"], "order_not_payable");
}

async fn an_order_is_closed_at_wechat_then_here(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (openid, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "tea", "quantity": 3}]))
        .await;
    let no = created.body["out_trade_no"].as_str().unwrap();
    let closed = app.close(&token, no).await;
    assert_eq!(closed.status, 200, "{:?}", closed.body);
    assert_eq!(closed.body["status"], "CLOSED");
    assert_eq!(app.close(&token, no).await.body["status"], "CLOSED");
    assert_eq!(app.outbox_rows(no).await, 1);
    let refused = app.sim_pay(&created.body["payment"], &openid).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(app.payment(&token, no).await.status, 409);

    let (_, token2, paid_no) = app.paid_order().await;
    let not_closed = app.close(&token2, &paid_no).await;
    assert_eq!(not_closed.status, 409);
    assert_eq!(not_closed.body["code"], "order_paid");
}

both_backends!(
    a_v3_order_is_paid_through_the_notification,
    a_v2_order_is_paid_through_the_notification,
    another_users_order_is_not_found,
    bad_items_are_refused_and_create_nothing,
    an_unpaid_order_is_queried_before_the_notification_arrives,
    payment_parameters_are_refreshed_and_a_lost_prepay_recovered,
    an_order_is_closed_at_wechat_then_here,
);
