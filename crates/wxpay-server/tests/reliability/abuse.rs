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

/// Status counts of `calls` concurrent `GET /api/wxacode` (50 at a time): `query(i)` is the
/// query string of call `i`.
async fn wxacode_flood(
    app: &TestApp,
    token: Option<&str>,
    calls: usize,
    query: impl Fn(usize) -> String,
) -> std::collections::BTreeMap<u16, usize> {
    let mut statuses = std::collections::BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        let mut r = app
            .http
            .get(format!("{}/api/wxacode?{}", app.base, query(i)));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        tasks.spawn(async move { r.send().await.map(|a| a.status().as_u16()).unwrap_or(0) });
        if tasks.len() >= 50 {
            let status = tasks.join_next().await.unwrap().unwrap();
            *statuses.entry(status).or_default() += 1;
        }
    }
    while let Some(status) = tasks.join_next().await {
        *statuses.entry(status.unwrap()).or_default() += 1;
    }
    statuses
}

/// Scenario 9c: `/api/wxacode` abused. Without a token, with pages outside `WXPAY_WXACODE_PAGES`
/// or bad scenes, nothing reaches WeChat; one user asking for 500 distinct codes gets the
/// default 10 and 429 for the rest, while another user and the back office keep their budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn wxacode_abuse_reaches_wechat_only_within_the_limit() {
    let s = sandbox(Backend::Sqlite, "v3", |_| {}).await;
    let app = &s.app;
    let (_, greedy) = app.login().await;
    let (_, other) = app.login().await;
    let served = || s.sim.mp.requests_served();
    let before = served();

    let anonymous = wxacode_flood(app, None, 500, |i| format!("scene=n%3D{i}")).await;
    let bad_page = wxacode_flood(app, Some(&greedy), 500, |i| {
        format!("scene=n%3D{i}&page=pages/secret{i}/index")
    })
    .await;
    let bad_scene = wxacode_flood(app, Some(&greedy), 500, |i| {
        format!("scene={}{i}", "x".repeat(32))
    })
    .await;
    assert_eq!(anonymous.get(&401), Some(&500), "{anonymous:?}");
    assert_eq!(bad_page.get(&400), Some(&500), "{bad_page:?}");
    assert_eq!(bad_scene.get(&400), Some(&500), "{bad_scene:?}");
    assert_eq!(served(), before, "nothing refused reached WeChat");
    assert_eq!(app.state.wxacode_cache.len(), 0);

    let flood = wxacode_flood(app, Some(&greedy), 500, |i| format!("scene=n%3D{i}")).await;
    let reached = served() - before;
    assert_eq!(flood.get(&200), Some(&10), "{flood:?}");
    assert_eq!(flood.get(&429), Some(&490), "{flood:?}");
    assert_eq!(app.state.wxacode_cache.len(), 10);
    // The codes, and at most one access token.
    assert!(
        (10..=11).contains(&reached),
        "{reached} requests reached WeChat"
    );
    let refused = app.get("/api/wxacode?scene=n%3D0", Some(&greedy)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["code"], "rate_limited");
    let retry_after = app
        .http
        .get(format!("{}/api/wxacode?scene=n%3D0", app.base))
        .bearer_auth(&greedy)
        .send()
        .await
        .unwrap()
        .headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();

    let other_user = app.get("/api/wxacode?scene=n%3D500", Some(&other)).await;
    assert_eq!(other_user.status, 200, "{:?}", other_user.body);
    let admin_token = {
        use secrecy::ExposeSecret as _;
        app.state
            .admin_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    let admin = app
        .get("/api/wxacode?scene=shop%3D1", Some(&admin_token))
        .await;
    assert_eq!(admin.status, 200, "{:?}", admin.body);
    figures(
        "scenario 9c wxacode abuse",
        &[
            ("anonymous_500_401", anonymous[&401].to_string()),
            ("bad_page_500_400", bad_page[&400].to_string()),
            ("bad_scene_500_400", bad_scene[&400].to_string()),
            ("one_user_500_200", flood[&200].to_string()),
            ("one_user_500_429", flood[&429].to_string()),
            ("requests_at_wechat", reached.to_string()),
            ("retry_after_s", retry_after),
            ("other_user", other_user.status.to_string()),
            ("admin_token", admin.status.to_string()),
        ],
    );
}

/// One request with the path exactly as written (HTTP clients resolve `..` and `%2e%2e`): the
/// status and the JSON body.
async fn raw_request(base: &str, method: &str, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A sandbox server on this database and sandbox directory, with the admin token known; its
/// stop.
async fn sandbox_on(
    db_url: &str,
    dir: &std::path::Path,
) -> (
    TestApp,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut settings = crate::helpers::test_settings(db_url, "v3");
    settings.sandbox_dir = dir.to_path_buf();
    settings.admin_token = Some(ADMIN_TOKEN.to_owned().into());
    let (app, _) = crate::helpers::build_app(settings).await.unwrap();
    let app = app.with_jobs(None);
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        app.run_until(async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let db = TestDatabase::borrowed(db_url);
    let app = TestApp {
        base,
        http: client(),
        state,
        backend: Backend::Sqlite,
        db,
    };
    (app, stop, running)
}

/// Scenario 9d: `/sim` escapes and takeover. Through a sandbox's `/sim` proxy an attacker
/// tries path escapes to the simulator's WeChat APIs, the control routes without the admin
/// token, and taking over a victim (a login code for the victim's openid, a new user with that
/// openid); then the sandbox restarts on the same `wxpay.db` and state directory and the
/// attacker tries again. The victim alone logs in again, with their key, to their own orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn sim_escapes_and_takeover() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let dir = crate::helpers::own_sandbox_dir();
    let (app, stop, running) = sandbox_on(&db.url, &dir).await;
    // The victim buys something.
    let victim = app.post_json("/sim/users", None, &json!({})).await;
    assert_eq!(victim.status, 200);
    let openid = victim.body["openid"].as_str().unwrap().to_owned();
    let key = victim.body["user_key"].as_str().unwrap().to_owned();
    let session = app.login_with(victim.body["code"].as_str().unwrap()).await;
    let token = session.body["token"].as_str().unwrap().to_owned();
    let order = app
        .create_order(&token, json!([{"sku": "tea", "quantity": 1}]))
        .await;
    assert_eq!(order.status, 201, "{:?}", order.body);
    let no = order.body["out_trade_no"].as_str().unwrap().to_owned();

    let escapes = [
        ("POST", "/sim/%2e%2e/v3/pay/transactions/jsapi"),
        ("POST", "/sim/%2E%2E/v3/pay/transactions/jsapi"),
        ("POST", "/sim/../pay/unifiedorder"),
        ("POST", "/sim/%2e%2e/pay/closeorder"),
        ("GET", "/sim/../sns/jscode2session"),
        ("GET", "/sim/%2F../sns/jscode2session"),
        ("GET", "/sim/%2f%2e%2e%2fcgi-bin/token"),
        ("GET", "/sim//merchant"),
        ("GET", "/sim/./merchant"),
        ("GET", "/sim/%252e%252e/cgi-bin/token"),
        ("GET", "/sim/%5C..%5Ccgi-bin/token"),
        ("GET", "/sim/..%5Ccgi-bin/token"),
        ("POST", "/sim/users/..%2f..%2fclock%2fadvance"),
        ("GET", "/sim/v3/certificates"),
    ];
    let protected: [(&str, String); 11] = [
        ("GET", format!("/sim/orders/{no}")),
        ("PUT", "/sim/mp/push".into()),
        ("GET", "/sim/mp/pushes".into()),
        ("GET", "/sim/notifications".into()),
        ("POST", "/sim/notifications/flush".into()),
        ("GET", "/sim/faults".into()),
        ("PUT", "/sim/faults".into()),
        ("GET", "/sim/clock".into()),
        ("POST", "/sim/clock/advance".into()),
        ("GET", "/sim/merchant".into()),
        ("GET", "/sim/connection".into()),
    ];
    let attack = |app: &TestApp| {
        let app_base = app.base.clone();
        let http = app.http.clone();
        let openid = openid.clone();
        let protected = protected.clone();
        async move {
            let (mut e, mut p, mut t) = (0, 0, 0);
            for (method, path) in escapes {
                let (status, body) = raw_request(&app_base, method, path).await;
                assert_eq!(status, 404, "{method} {path}: {body}");
                assert_eq!(body["code"], "not_found");
                e += 1;
            }
            for (method, path) in &protected {
                for bearer in [None, Some("not-the-admin-token")] {
                    let mut r = http
                        .request(method.parse().unwrap(), format!("{app_base}{path}"))
                        .json(&json!({"seconds": 1}));
                    if let Some(b) = bearer {
                        r = r.bearer_auth(b);
                    }
                    let a = r.send().await.unwrap();
                    assert_eq!(a.status(), 401, "{method} {path}");
                    p += 1;
                }
            }
            // Takeover: a code for the victim without their key, with the attacker's own key,
            // or a new user bearing the victim's openid.
            let attacker: serde_json::Value = http
                .post(format!("{app_base}/sim/users"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let code_url = format!("{app_base}/sim/users/{openid}/code");
            let tries = [
                (http.post(&code_url), 401),
                (http.post(&code_url).bearer_auth("not-the-admin-token"), 401),
                (
                    http.post(&code_url)
                        .header("X-Sim-User-Key", attacker["user_key"].as_str().unwrap()),
                    403,
                ),
                (
                    http.post(format!("{app_base}/sim/users"))
                        .json(&json!({"openid": openid})),
                    401,
                ),
                (
                    http.post(format!("{app_base}/sim/users"))
                        .json(&json!([openid])),
                    401,
                ),
            ];
            for (request, expected) in tries {
                let a = request.send().await.unwrap();
                assert_eq!(a.status(), expected);
                let body: serde_json::Value = a.json().await.unwrap();
                assert!(body.get("openid").is_none(), "{body}");
                t += 1;
            }
            (e, p, t)
        }
    };
    let first = attack(&app).await;
    let _ = stop.send(());
    running.await.unwrap();

    // The same wxpay.db and state directory: a restarted sandbox knows the victim, and so does
    // the server's database.
    let (app, stop, running) = sandbox_on(&db.url, &dir).await;
    let second = attack(&app).await;
    let (escapes_404, protected_401, takeovers_refused) =
        (first.0 + second.0, first.1 + second.1, first.2 + second.2);
    let again = app
        .send(
            app.http
                .post(format!("{}/sim/users/{openid}/code", app.base))
                .header("X-Sim-User-Key", &key),
        )
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let session = app.login_with(again.body["code"].as_str().unwrap()).await;
    assert_eq!(session.status, 200);
    let mine = app
        .get("/api/orders", Some(session.body["token"].as_str().unwrap()))
        .await;
    assert_eq!(mine.status, 200);
    assert!(
        mine.body.to_string().contains(&no),
        "the victim's own order"
    );
    let _ = stop.send(());
    running.await.unwrap();
    figures(
        "scenario 9d /sim escapes and takeover",
        &[
            ("escapes_404", escapes_404.to_string()),
            ("protected_requests_401", protected_401.to_string()),
            ("takeover_attempts_refused", takeovers_refused.to_string()),
            ("sandbox_restarts", "1".into()),
            ("victim_relogin_after_restart", "ok".into()),
        ],
    );
}
