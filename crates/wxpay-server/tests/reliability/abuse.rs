//! Scenario 9: abuse. Logins are limited per client IP and new orders per user (429
//! `rate_limited` with `Retry-After`); the admin API refuses missing and wrong tokens on every
//! route; `/sim` and the emulator do not exist outside sandbox mode.

use serde_json::json;
use wxpay_server::Application;
use wxpay_server::api::rate_limit::RateLimit;
use wxpay_server::store::Backend;

use crate::harness::{
    ADMIN_TOKEN, TestApp, TestDatabase, client, figures, merchant_settings, sandbox, sim_user,
    simulator,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_orders_are_rate_limited_per_client() {
    let s = sandbox(Backend::Sqlite, "v3", |settings| {
        settings.rate_limit_login = RateLimit {
            per_minute: 6,
            burst: 5,
        };
        settings.rate_limit_orders = RateLimit {
            per_minute: 6,
            burst: 3,
        };
    })
    .await;
    let app = &s.app;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let (_, code) = app.sim_user().await;
        let a = app.login_with(&code).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        tokens.push(a.body["token"].as_str().unwrap().to_owned());
    }
    // The sixth login of this IP within the burst, valid or not, is refused before WeChat is asked.
    let (_, code) = app.sim_user().await;
    let limited = app
        .send(
            app.http
                .post(format!("{}/api/login", app.base))
                .json(&json!({"code": code})),
        )
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["code"], "rate_limited");
    assert!(limited.body["message"].is_string());
    let retry_after: u64 = app
        .http
        .post(format!("{}/api/login", app.base))
        .json(&json!({"code": "whatever"}))
        .send()
        .await
        .unwrap()
        .headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let sessions =
        crate::harness::count(app.state.store.pool(), "SELECT COUNT(*) FROM sessions").await;
    assert_eq!(sessions, 5, "a refused login made no session");

    // Orders: three at once per user, then 429; other users keep their own budget.
    for _ in 0..3 {
        let a = app
            .create_order(&tokens[0], json!([{"sku": "tea", "quantity": 1}]))
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    let a = app
        .create_order(&tokens[0], json!([{"sku": "tea", "quantity": 1}]))
        .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["code"], "rate_limited");
    let a = app
        .create_order(&tokens[1], json!([{"sku": "tea", "quantity": 1}]))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let orders = crate::harness::count(app.state.store.pool(), "SELECT COUNT(*) FROM orders").await;
    assert_eq!(orders, 4);
    figures(
        "scenario 9a rate limits",
        &[
            ("login_burst", "5".into()),
            ("sixth_login", "429".into()),
            ("retry_after_s", retry_after.to_string()),
            ("order_burst_per_user", "3".into()),
            ("fourth_order", "429".into()),
            ("other_user", "201".into()),
        ],
    );
}

const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/orders"),
    ("POST", "/admin/orders"),
    ("GET", "/admin/orders/WX1234567890"),
    ("POST", "/admin/orders/WX1234567890/refunds"),
    ("GET", "/admin/refunds/RF1234567890"),
    ("GET", "/admin/products"),
    ("PUT", "/admin/products/coffee"),
    ("GET", "/admin/reconciliation/2026-01-01"),
    ("GET", "/admin/stats/hourly"),
    ("GET", "/admin/webhooks"),
    ("GET", "/admin/jobs"),
];

async fn refused_everywhere(app: &TestApp, auth: Option<&str>) -> usize {
    let mut refused = 0;
    for (method, path) in ADMIN_ROUTES {
        let mut r = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .json(&json!({"amount_fen": 1, "openid": "o", "description": "d", "name": "n", "price_fen": 1}));
        if let Some(value) = auth {
            r = r.header("authorization", value);
        }
        let a = app.send(r).await;
        assert_eq!(a.status, 401, "{method} {path} with {auth:?}: {:?}", a.body);
        assert_eq!(a.body["code"], "unauthorized");
        refused += 1;
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_missing_and_wrong_tokens_and_sim_routes_need_sandbox_mode() {
    let sim = simulator(1000.0).await;
    let db = TestDatabase::new(Backend::Sqlite).await;
    let app = Application::build(merchant_settings(&db.url, &sim.base_url(), &sim.base_url()))
        .await
        .unwrap()
        .with_jobs(None);
    assert!(app.sandbox().is_none());
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    let app = TestApp {
        base,
        http: client(),
        state,
        backend: Backend::Sqlite,
        db,
    };
    let before = crate::harness::table_counts(app.state.store.pool()).await;
    let mut refused = 0;
    for auth in [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer wrong-token-of-good-length-000000"),
        Some(&*format!("Bearer {}", ADMIN_TOKEN.to_uppercase())),
        Some(&*format!("Bearer {}x", ADMIN_TOKEN)),
        Some(&*format!(
            "Bearer {}",
            &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]
        )),
        Some(&*format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN),
        Some("Bearer ' OR '1'='1"),
    ] {
        refused += refused_everywhere(&app, auth).await;
    }
    assert_eq!(
        before,
        crate::harness::table_counts(app.state.store.pool()).await
    );
    // The right token works.
    let a = app.get("/admin/products", Some(ADMIN_TOKEN)).await;
    assert_eq!(a.status, 200);

    // Without WXPAY_ADMIN_TOKEN the admin API is closed, whatever is sent.
    let closed_db = TestDatabase::new(Backend::Sqlite).await;
    let mut settings = merchant_settings(&closed_db.url, &sim.base_url(), &sim.base_url());
    settings.admin_token = None;
    let closed = Application::build(settings).await.unwrap().with_jobs(None);
    let base = format!("http://127.0.0.1:{}", closed.port());
    let state = closed.state().clone();
    tokio::spawn(closed.run_until_stopped());
    let closed = TestApp {
        base,
        http: client(),
        state,
        backend: Backend::Sqlite,
        db: closed_db,
    };
    refused += refused_everywhere(&closed, Some(&format!("Bearer {ADMIN_TOKEN}"))).await;

    // No /sim and no emulator outside sandbox mode.
    let mut absent = 0;
    for (method, path) in [
        ("GET", "/sim"),
        ("GET", "/sim/merchant"),
        ("POST", "/sim/users"),
        ("POST", "/sim/pay"),
        ("PUT", "/sim/faults"),
        ("POST", "/sim/notifications/flush"),
        ("GET", "/sim/notifications"),
        ("POST", "/sim/clock/advance"),
        ("GET", "/emulator"),
        ("GET", "/emulator/"),
        ("GET", "/emulator/index.html"),
    ] {
        let a = app
            .send(
                app.http
                    .request(method.parse().unwrap(), format!("{}{path}", app.base))
                    .json(&json!({"seconds": 1})),
            )
            .await;
        assert_eq!(a.status, 404, "{method} {path}");
        absent += 1;
    }
    // The simulator was not reached through the server.
    let (_, code) = sim_user(&app.http, &sim.base_url()).await;
    assert!(!code.is_empty());
    // In sandbox mode /sim is there.
    let s = sandbox(Backend::Sqlite, "v3", |_| {}).await;
    assert_eq!(s.app.get("/sim/merchant", None).await.status, 401);
    assert_eq!(
        s.app
            .get("/sim/merchant", Some(&s.app.admin()))
            .await
            .status,
        200
    );
    figures(
        "scenario 9b admin tokens and sandbox routes",
        &[
            ("admin_requests_refused_401", refused.to_string()),
            ("admin_routes", ADMIN_ROUTES.len().to_string()),
            (
                "sim_and_emulator_routes_404_outside_sandbox",
                absent.to_string(),
            ),
        ],
    );
}
