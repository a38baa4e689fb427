//! The sandbox's `/sim` proxy (issue 13): only plain `/sim/` paths of known simulator routes
//! pass; what a WeChat user does is open, the rest needs the admin token; a login code for a
//! user needs that user's key.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use wxpay_server::store::Backend;

/// A server in sandbox mode, with the simulator's state.
async fn sandbox(backend: Backend) -> (TestApp, Arc<wxpay_sim::app::AppState>) {
    let db = TestDatabase::new(backend).await;
    let settings = test_settings(&db.url, "v3");
    let (app, sim) = build_app(settings).await.expect("the server starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    let app = TestApp {
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        state,
        backend,
        db,
    };
    (app, sim.expect("sandbox mode"))
}

/// One request with the path exactly as written (an HTTP client would resolve dot segments and
/// `%2e%2e` before sending): status and body.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    // The proxy's answers are not chunked (whole bodies), so the body is the JSON itself.
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// What the simulator has seen: its mini-program API requests, orders and users.
fn sim_counts(sim: &wxpay_sim::app::AppState) -> (u64, usize) {
    (sim.mp.requests_served(), sim.store.order_count())
}

async fn escapes_get_404_and_reach_nothing(backend: Backend) {
    let (app, sim) = sandbox(backend).await;
    let admin = app.admin();
    let bearer = format!("Bearer {admin}");
    let before = sim_counts(&sim);
    let escapes = [
        ("POST", "/sim/%2e%2e/v3/pay/transactions/jsapi"),
        ("POST", "/sim/%2E%2E/v3/pay/transactions/jsapi"),
        ("POST", "/sim/../pay/unifiedorder"),
        (
            "GET",
            "/sim/../sns/jscode2session?appid=a&secret=b&js_code=c",
        ),
        ("GET", "/sim/%2F../sns/jscode2session"),
        ("GET", "/sim/%2f%2e%2e%2fsns/jscode2session"),
        ("GET", "/sim//merchant"),
        ("GET", "/sim/./merchant"),
        ("GET", "/sim/merchant/"),
        ("GET", "/sim/%2e/merchant"),
        ("GET", "/sim/%252e%252e/sns/jscode2session"),
        ("GET", "/sim/%5C..%5Csns/jscode2session"),
        ("GET", "/sim/..%5Csns/jscode2session"),
        ("GET", "/sim/users/..%2f..%2fmerchant"),
        ("GET", "/sim/v3/certificates"),
        ("GET", "/sim"),
        ("GET", "/sim/"),
        ("DELETE", "/sim/faults"),
        ("GET", "/sim/users"),
        ("POST", "/sim/orders/x/y"),
    ];
    for (method, path) in escapes {
        // Even with the admin token, an escape goes nowhere.
        for headers in [vec![], vec![("Authorization", bearer.as_str())]] {
            let (status, body) = raw(&app, method, path, &headers, "{}").await;
            assert_eq!(status, 404, "{method} {path}: {body}");
            assert_eq!(body["code"], "not_found", "{method} {path}: {body}");
            assert!(body["message"].is_string(), "{body}");
        }
    }
    // Backslashes: refused by the HTTP parser (400) or by the proxy (404), never forwarded.
    for path in [
        "/sim/..\\sns/jscode2session",
        "/sim\\..\\sns/jscode2session",
    ] {
        let (status, body) = raw(&app, "GET", path, &[], "").await;
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
    }
    assert_eq!(sim_counts(&sim), before, "the simulator saw none of it");
}

async fn protected_routes_need_the_admin_token(backend: Backend) {
    let (app, sim) = sandbox(backend).await;
    let admin = app.admin();
    let routes: [(&str, &str, Option<Value>); 10] = [
        ("GET", "/sim/orders/no-such-order", None),
        ("GET", "/sim/notifications", None),
        ("POST", "/sim/notifications/flush", None),
        ("GET", "/sim/faults", None),
        ("PUT", "/sim/faults", Some(json!({"notify_drop_rate": 1}))),
        ("GET", "/sim/clock", None),
        ("POST", "/sim/clock/advance", Some(json!({"seconds": 60}))),
        ("GET", "/sim/merchant", None),
        ("GET", "/sim/connection", None),
        ("GET", "/sim/merchants", None),
    ];
    for (method, path, body) in &routes {
        for token in [None, Some("not-the-admin-token"), Some("")] {
            let mut r = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.base));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            let a = app.send(r).await;
            assert_eq!(a.status, 401, "{method} {path} {token:?}: {:?}", a.body);
            assert_eq!(a.body["code"], "unauthorized", "{:?}", a.body);
        }
    }
    // Nothing was forwarded: the faults and the clock are untouched.
    assert_eq!(sim.clock.offset(), 0);
    assert_eq!(
        serde_json::to_value(sim.faults.get()).unwrap()["notify_drop_rate"],
        0.0
    );

    for (method, path, body) in routes {
        let mut r = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth(&admin);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let a = app.send(r).await;
        let expected = if path.starts_with("/sim/orders/") {
            404
        } else {
            200
        };
        assert_eq!(a.status, expected, "{method} {path}: {:?}", a.body);
    }
    assert_eq!(sim.clock.offset(), 60);
    app.set_faults(json!({})).await;
    // The merchant facts the emulator's cashier shows are open, and hold no secret.
    let cashier = app.get("/sim/cashier", None).await;
    assert_eq!(cashier.status, 200);
    let keys: Vec<&String> = cashier.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["appid", "mchid"]);
    // So are the mini programs the emulator offers to choose from: appids and mchids only.
    let apps = app.get("/sim/apps", None).await;
    assert_eq!(apps.status, 200, "{:?}", apps.body);
    let listed = apps.body["apps"].as_array().unwrap();
    assert!(
        listed.iter().any(|a| a["appid"] == cashier.body["appid"]),
        "{listed:?}"
    );
    for a in listed {
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["appid", "mchid"]);
    }
    // Making merchants and mini programs stays the admin's.
    for path in ["/sim/merchants", "/sim/apps"] {
        let a = app.post_json(path, None, &json!({})).await;
        assert_eq!(a.status, 401, "{path}: {:?}", a.body);
    }
}

async fn no_one_but_the_user_gets_their_login_code(backend: Backend) {
    let (app, sim) = sandbox(backend).await;
    // The victim, logged in once.
    let victim = app.post_json("/sim/users", None, &json!({})).await;
    assert_eq!(victim.status, 200, "{:?}", victim.body);
    let victim_openid = victim.body["openid"].as_str().unwrap().to_owned();
    let victim_key = victim.body["user_key"].as_str().unwrap().to_owned();
    assert_eq!(victim_key.len(), 43);
    let login = app.login_with(victim.body["code"].as_str().unwrap()).await;
    assert_eq!(login.status, 200);
    // The attacker, a user too.
    let attacker = app.post_json("/sim/users", None, &json!({})).await;
    let attacker_key = attacker.body["user_key"].as_str().unwrap().to_owned();

    let code_path = format!("/sim/users/{victim_openid}/code");
    // Without a key: the admin's call, 401.
    let a = app.post(&code_path, None).await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert_eq!(a.body["code"], "unauthorized");
    let a = app.post(&code_path, Some("not-the-admin-token")).await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    // With another user's key or a made-up one: the simulator's 403.
    for key in [
        attacker_key.as_str(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let a = app
            .send(
                app.http
                    .post(format!("{}{code_path}", app.base))
                    .header("X-Sim-User-Key", key),
            )
            .await;
        assert_eq!(a.status, 403, "{:?}", a.body);
        assert!(a.body["error"].is_string(), "{:?}", a.body);
        assert!(a.body.get("code").is_none());
    }
    // Choosing the victim's openid for a new user, in any form, is the admin's call too.
    for body in [
        json!({"openid": victim_openid}),
        json!([victim_openid]),
        json!({"openid": "o-not-yet-known"}),
    ] {
        let a = app.post_json("/sim/users", None, &body).await;
        assert_eq!(a.status, 401, "{body}: {:?}", a.body);
    }
    let (_, a) = raw(
        &app,
        "POST",
        "/sim/users",
        &[],
        &format!(r#"{{"openid":null,"openid":"{victim_openid}"}}"#),
    )
    .await;
    assert_eq!(a["code"], "unauthorized", "{a}");
    assert!(!sim.mp.has_user("o-not-yet-known"));

    // The victim with their own key logs in again as themselves.
    let again = app
        .send(
            app.http
                .post(format!("{}{code_path}", app.base))
                .header("X-Sim-User-Key", &victim_key),
        )
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["openid"], victim_openid);
    let session = app.login_with(again.body["code"].as_str().unwrap()).await;
    assert_eq!(session.status, 200, "{:?}", session.body);
    // The admin (the back office, the test harness) mints any user's code.
    let admin = app.post(&code_path, Some(&app.admin())).await;
    assert_eq!(admin.status, 200, "{:?}", admin.body);
}

async fn a_fresh_user_logs_in_and_pays_through_the_proxy(backend: Backend) {
    let (app, _sim) = sandbox(backend).await;
    let (openid, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "sticker", "quantity": 1}]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let paid = app.sim_pay(&created.body["payment"], &openid).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    assert_eq!(paid.body["errMsg"], "requestPayment:ok");
}

crate::both_backends!(
    escapes_get_404_and_reach_nothing,
    protected_routes_need_the_admin_token,
    no_one_but_the_user_gets_their_login_code,
    a_fresh_user_logs_in_and_pays_through_the_proxy,
);
