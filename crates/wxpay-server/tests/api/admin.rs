//! The back office: authentication, orders, the catalog, statistics; `/metrics`, `/openapi.json`.

use std::collections::HashSet;

use serde_json::{Value, json};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::TestApp;
use crate::jobs::{admin_get, admin_post, admin_token, spawn_quiet};

async fn admin_order(app: &TestApp, openid: &str, amount: u64) -> Value {
    let a = admin_post(
        app,
        "/admin/orders",
        &json!({"openid": openid, "amount_fen": amount, "description": "会员年费"}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body
}

async fn the_admin_api_refuses_missing_and_wrong_tokens(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (_, user_token) = app.login().await;
    let wrong = format!("{}x", admin_token(&app));
    for (token, what) in [
        (None, "missing"),
        (Some(wrong.as_str()), "wrong"),
        (Some(user_token.as_str()), "a buyer's"),
    ] {
        for path in [
            "/admin/orders",
            "/admin/products",
            "/admin/stats/hourly",
            "/admin/webhooks",
            "/admin/refunds/R1",
        ] {
            let a = app.get(path, token).await;
            assert_eq!(a.status, 401, "{what} token on {path}: {:?}", a.body);
            assert_eq!(a.body["code"], "unauthorized");
            assert!(a.body["message"].as_str().is_some());
        }
        let a = app
            .post_json(
                "/admin/orders",
                token,
                &json!({"openid": "o", "amount_fen": 1, "description": "d"}),
            )
            .await;
        assert_eq!(a.status, 401);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders WHERE $1 = $1", "x")
            .await,
        0
    );
    assert_eq!(admin_get(&app, "/admin/orders").await.status, 200);
}

async fn orders_are_listed_newest_first_page_by_page(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, _) = app.sim_user().await;
    let mut created = Vec::new();
    for amount in 1..=5 {
        created.push(
            admin_order(&app, &openid, amount).await["out_trade_no"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/orders?limit=2&cursor={c}"),
            None => "/admin/orders?limit=2".to_owned(),
        };
        let page = admin_get(&app, &path).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        pages += 1;
        for o in page.body["orders"].as_array().unwrap() {
            seen.push(o["out_trade_no"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
    let unpaid = admin_get(&app, "/admin/orders?status=NOTPAY&limit=200").await;
    assert_eq!(unpaid.body["orders"].as_array().unwrap().len(), 5);
    let paid = admin_get(&app, "/admin/orders?status=SUCCESS").await;
    assert_eq!(paid.body["orders"].as_array().unwrap().len(), 0);
    for bad in [
        "/admin/orders?status=PAID",
        "/admin/orders?limit=0",
        "/admin/orders?limit=201",
        "/admin/orders?cursor=bm90IGEgY3Vyc29y",
        "/admin/orders?limit=x",
    ] {
        let a = admin_get(&app, bad).await;
        assert_eq!(a.status, 400, "{bad}: {:?}", a.body);
    }
}

async fn a_merchant_priced_order_is_paid_and_shows_its_timeline(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, _) = app.sim_user().await;
    let created = admin_order(&app, &openid, 9900).await;
    assert_eq!(created["amount_fen"], 9900);
    assert_eq!(created["source"], "admin");
    assert_eq!(created["status"], "NOTPAY");
    assert!(
        created["payment"]["package"]
            .as_str()
            .unwrap()
            .starts_with("prepay_id=")
    );
    let no = created["out_trade_no"].as_str().unwrap();
    assert_eq!(app.sim_pay(&created["payment"], &openid).await.status, 200);
    app.flush().await;
    let detail = admin_get(&app, &format!("/admin/orders/{no}")).await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.body["order"]["status"], "SUCCESS");
    assert_eq!(detail.body["refundable_fen"], 9900);
    let kinds: Vec<&str> = detail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "prepay", "notification"]);
    assert_eq!(detail.body["webhooks"][0]["event_type"], "order.paid");
    assert_eq!(
        admin_get(&app, "/admin/orders/NOSUCHORDER").await.status,
        404
    );

    let before = app
        .count("SELECT COUNT(*) FROM orders WHERE $1 = $1", "x")
        .await;
    for body in [
        json!({"openid": openid, "amount_fen": 0, "description": "d"}),
        json!({"openid": openid, "amount_fen": 1, "description": ""}),
        json!({"openid": "", "amount_fen": 1, "description": "d"}),
        json!({"openid": "o'; DROP TABLE orders; --", "amount_fen": 1, "description": "d"}),
        json!({"openid": openid, "amount_fen": 1, "description": "d", "extra": 1}),
        json!({"openid": openid, "amount_fen": 1.5, "description": "d"}),
    ] {
        let a = admin_post(&app, "/admin/orders", &body).await;
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders WHERE $1 = $1", "x")
            .await,
        before
    );

    let stats = admin_get(&app, "/admin/stats/hourly").await;
    assert_eq!(stats.status, 200);
    let hours = stats.body["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(
        hours
            .iter()
            .map(|h| h["payments"].as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    assert_eq!(
        hours
            .iter()
            .map(|h| h["amount_fen"].as_u64().unwrap())
            .sum::<u64>(),
        9900
    );
    assert_eq!(hours[23]["payments"], 1, "this hour is the last");
    let webhooks = admin_get(&app, "/admin/webhooks?limit=5").await;
    assert_eq!(webhooks.body["webhooks"][0]["out_trade_no"], no);
    assert!(webhooks.body["webhooks"][0]["delivered_at"].is_null());
}

async fn products_are_created_and_replaced(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let token = admin_token(&app);
    let put = |sku: &str, body: Value| {
        let request = app
            .http
            .put(format!("{}/admin/products/{sku}", app.base))
            .bearer_auth(&token)
            .json(&body);
        app.send(request)
    };
    let a = put(
        "mooncake",
        json!({"name": "月饼 Mooncake", "price_fen": 3800}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["active"], true);
    let b = put(
        "mooncake",
        json!({"name": "月饼 Mooncake", "price_fen": 4200, "active": false}),
    )
    .await;
    assert_eq!((b.status, b.body["price_fen"].as_u64()), (200, Some(4200)));
    let list = admin_get(&app, "/admin/products").await;
    let skus: HashSet<&str> = list.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert!(
        skus.contains("mooncake") && skus.contains("coffee"),
        "{skus:?}"
    );
    // Inactive: the mini program cannot order it.
    let (_, user) = app.login().await;
    assert_eq!(
        app.create_order(&user, json!([{"sku": "mooncake", "quantity": 1}]))
            .await
            .status,
        400
    );
    for (sku, body) in [
        ("bad sku", json!({"name": "x", "price_fen": 1})),
        ("ok", json!({"name": "", "price_fen": 1})),
        ("ok", json!({"name": "x", "price_fen": 0})),
        ("ok", json!({"name": "x"})),
    ] {
        let a = put(sku, body.clone()).await;
        assert_eq!(a.status, 400, "{sku} {body}: {:?}", a.body);
    }
    assert!(app.state.store.product("ok").await.unwrap().is_none());
}

both_backends!(
    the_admin_api_refuses_missing_and_wrong_tokens,
    orders_are_listed_newest_first_page_by_page,
    a_merchant_priced_order_is_paid_and_shows_its_timeline,
    products_are_created_and_replaced,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_openapi_description_are_served() {
    let app = spawn_quiet(Backend::Sqlite, "v3", |_| {}).await;
    app.paid_order().await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain"));
    let text = String::from_utf8(metrics.bytes.to_vec()).unwrap();
    for needle in [
        "wxpay_http_request_duration_seconds_bucket{",
        "route=\"/api/orders\"",
        "wxpay_orders_created_total{source=\"api\"}",
        "wxpay_orders_paid_total{via=\"notification\"}",
        // The merchant's own notify URL, which the prepay gave WeChat.
        "wxpay_notifications_total{route=\"/notify/{mchid}/v3/pay\",result=\"acknowledged\"}",
        "wxpay_orders{status=\"SUCCESS\"}",
        "wxpay_webhooks_pending",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/login", "post"),
        ("/api/orders", "post"),
        ("/api/orders/{out_trade_no}", "get"),
        ("/api/orders/{out_trade_no}/payment", "post"),
        ("/api/orders/{out_trade_no}/close", "post"),
        ("/api/wxacode", "get"),
        ("/notify/v3/pay", "post"),
        ("/notify/v2/refund", "post"),
        ("/notify/{mchid}/v3/pay", "post"),
        ("/notify/{mchid}/v3/refund", "post"),
        ("/notify/{mchid}/v2/pay", "post"),
        ("/notify/{mchid}/v2/refund", "post"),
        ("/healthz", "get"),
        ("/admin/orders", "get"),
        ("/admin/orders", "post"),
        ("/admin/orders/{out_trade_no}/refunds", "post"),
        ("/admin/refunds/{out_refund_no}", "get"),
        ("/admin/products/{sku}", "put"),
        ("/admin/reconciliation/{date}", "get"),
        ("/admin/stats/hourly", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not described"
        );
    }
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for name in [
        "Order",
        "Refund",
        "Product",
        "CreateRefund",
        "Reconciliation",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        schemas["Order"]["properties"]["amount_fen"]["type"],
        "integer"
    );
    assert!(
        schemas["Order"]["properties"].get("prepay_id").is_none(),
        "skipped fields stay out"
    );
}

/// OpenAPI requires unique operation ids (generators name functions after them). With
/// `WXPAY_OPENAPI_OUT=FILE` the document is also written there, for scripts/check-openapi to hand
/// to an independent validator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_operation_ids_are_unique() {
    let app = spawn_quiet(Backend::Sqlite, "v3", |_| {}).await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let mut seen = HashSet::new();
    let mut repeated = Vec::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if !seen.insert(id.to_owned()) {
                repeated.push(format!("{id} ({method} {path})"));
            }
        }
    }
    assert!(
        repeated.is_empty(),
        "operation ids used twice: {repeated:?}"
    );
    assert!(seen.contains("admin_list_orders") && seen.contains("list_orders"));
    if let Some(out) = std::env::var_os("WXPAY_OPENAPI_OUT") {
        std::fs::write(out, doc.bytes.as_ref()).unwrap();
    }
}
