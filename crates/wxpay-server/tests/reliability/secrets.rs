//! Scenario 8: secrets. A full run through the public API, for v3 and v2 (login, catalog,
//! orders, payment parameters, payment, notifications, queries, close, refunds and their
//! notifications, every admin view, errors, forged notifications), with every log line (debug
//! level and above, server and simulator) and every response body kept, then searched for the
//! API v2 key, the APIv3 key, the app secret, the private keys' PEM lines and every session_key;
//! then a second merchant and mini program registered through the back office (keys, PEMs and
//! AppSecret sent in requests), paid and refunded through, and an operator: their secrets, the
//! operator's token and the sandbox's master key are searched for too.
//! The crash and many-instance scenarios search their child processes' logs the same way.

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use wxpay_server::jobs::JobKind;
use wxpay_server::store::Backend;

use crate::harness::{Sandbox, Secrets, capture_logs, eager_jobs, figures, sandbox};
use crate::helpers::{Answer, registration, sim_merchant};

#[derive(Default)]
struct Responses {
    bodies: Vec<u8>,
    count: usize,
}

impl Responses {
    fn keep(&mut self, a: Answer) -> Answer {
        self.bodies.extend_from_slice(&a.bytes);
        self.bodies.push(b'\n');
        self.count += 1;
        a
    }
}

async fn full_run(s: &Sandbox, r: &mut Responses) {
    let app = &s.app;
    let admin = app
        .state
        .admin_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let (openid, code) = app.sim_user().await;
    let login = r.keep(app.login_with(&code).await);
    let token = login.body["token"].as_str().unwrap().to_owned();
    r.keep(app.login_with(&code).await); // a used code: refused
    r.keep(app.login_with("not-a-code").await);
    r.keep(app.get("/api/products", None).await);
    let created = r.keep(
        app.create_order(
            &token,
            json!([{"sku": "coffee", "quantity": 2}, {"sku": "cake", "quantity": 1}]),
        )
        .await,
    );
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let again = r.keep(app.payment(&token, &no).await);
    r.keep(app.sim_pay(&again.body["payment"], &openid).await);
    app.flush().await;
    r.keep(app.order(&token, &no).await);
    r.keep(app.get("/api/orders", Some(&token)).await);
    let second = r.keep(
        app.create_order(&token, json!([{"sku": "tea", "quantity": 1}]))
            .await,
    );
    let second_no = second.body["out_trade_no"].as_str().unwrap().to_owned();
    r.keep(app.order(&token, &second_no).await);
    r.keep(app.close(&token, &second_no).await);
    r.keep(app.payment(&token, &second_no).await); // closed: refused
    r.keep(app.order(&token, "WX00000000000000unknown").await);
    r.keep(app.get("/api/orders", Some("wrong-token")).await);
    r.keep(
        app.get(
            "/api/wxacode?scene=a%3D1&page=pages/catalog/catalog",
            Some(&token),
        )
        .await,
    );
    // Refunds, partial then the rest.
    for amount in [1000, 1000] {
        let refund = r.keep(
            app.post_json(
                &format!("/admin/orders/{no}/refunds"),
                Some(&admin),
                &json!({"amount_fen": amount, "reason": "顾客要求"}),
            )
            .await,
        );
        let out_refund_no = refund.body["out_refund_no"].as_str().unwrap().to_owned();
        let jobs = eager_jobs(&app.state);
        for _ in 0..100 {
            app.flush().await;
            jobs.drain(JobKind::FollowRefunds, 5).await.unwrap();
            let shown = r.keep(
                app.get(&format!("/admin/refunds/{out_refund_no}"), Some(&admin))
                    .await,
            );
            if shown.body["status"] != "PROCESSING" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    r.keep(
        app.post_json(
            &format!("/admin/orders/{no}/refunds"),
            Some(&admin),
            &json!({"amount_fen": 999999}),
        )
        .await,
    );
    for path in [
        "/admin/orders".to_owned(),
        format!("/admin/orders/{no}"),
        "/admin/products".into(),
        "/admin/stats/hourly".into(),
        "/admin/webhooks".into(),
        "/admin/jobs".into(),
        format!("/admin/reconciliation/{}", today()),
        "/admin/reconciliation/2020-01-01".into(),
    ] {
        r.keep(app.get(&path, Some(&admin)).await);
    }
    r.keep(
        app.get("/admin/orders", Some("wrong-admin-token-000000000"))
            .await,
    );
    let buyer = app.sim_user().await.0;
    r.keep(
        app.post_json(
            "/admin/orders",
            Some(&admin),
            &json!({"openid": buyer, "amount_fen": 1, "description": "admin order"}),
        )
        .await,
    );
    r.keep(
        app.send(
            app.http
                .put(format!("{}/admin/products/tea", app.base))
                .bearer_auth(&admin)
                .json(&json!({"name": "Tea", "price_fen": 1300})),
        )
        .await,
    );
    for path in ["/healthz", "/metrics", "/openapi.json", "/no/such/route"] {
        r.keep(app.get(path, None).await);
    }
    // Forged notifications: their refusals are logged.
    let genuine: Value =
        serde_json::from_str(&s.sim.dispatcher.records(Some(&no))[0].body).unwrap_or(Value::Null);
    r.keep(
        app.send(
            app.http
                .post(format!("{}/notify/v3/pay", app.base))
                .header("wechatpay-signature", "bad")
                .body(genuine.to_string()),
        )
        .await,
    );
    r.keep(
        app.send(
            app.http
                .post(format!("{}/notify/v2/pay", app.base))
                .body("<xml><sign>00</sign></xml>"),
        )
        .await,
    );
    r.keep(
        app.send(
            app.http
                .post(format!("{}/notify/v2/refund", app.base))
                .body("<xml><return_code>SUCCESS</return_code><req_info>AAAA</req_info></xml>"),
        )
        .await,
    );
    // The simulator's own views (the sandbox proxies them to the admin).
    let admin = app.admin();
    r.keep(app.get(&format!("/sim/orders/{no}"), Some(&admin)).await);
    r.keep(app.get("/sim/notifications", Some(&admin)).await);
    r.keep(app.get("/sim/merchant", Some(&admin)).await);
    r.keep(app.get("/sim/cashier", None).await);
}

/// The registry: a second merchant registered with its keys in the request, its mini program
/// with its AppSecret, refused registrations, a payment and a refund through them, an operator
/// (its token answered once) using and losing its token, every registry view. Returns the
/// merchant's directory and the operator's token, to search for.
async fn registry_run(s: &Sandbox, r: &mut Responses) -> (std::path::PathBuf, String, [String; 2]) {
    let app = &s.app;
    let admin = app.admin();
    let b = sim_merchant(app, "public_key").await;
    let body = registration(&b, "v3");
    let mut bad_key = body.clone();
    bad_key["api_v3_key"] = json!("too-short");
    r.keep(
        app.post_json("/admin/merchants", Some(&admin), &bad_key)
            .await,
    );
    let mut bad_pem = body.clone();
    bad_pem["apiclient_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----");
    r.keep(
        app.post_json("/admin/merchants", Some(&admin), &bad_pem)
            .await,
    );
    let made = r.keep(app.post_json("/admin/merchants", Some(&admin), &body).await);
    assert_eq!(made.status, 201, "{:?}", made.body);
    r.keep(app.post_json("/admin/merchants", Some(&admin), &body).await); // a duplicate
    let app_body =
        json!({"appid": b.appid, "name": "b", "app_secret": b.app_secret, "mchid": b.mchid});
    let registered = r.keep(app.post_json("/admin/apps", Some(&admin), &app_body).await);
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let rotated = r.keep(
        app.send(
            app.http
                .patch(format!("{}/admin/merchants/{}", app.base, b.mchid))
                .bearer_auth(&admin)
                .json(&json!({"api_v2_key": body["api_v2_key"], "name": "b again"})),
        )
        .await,
    );
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    // B's message push: its Token and EncodingAESKey set, a genuine push and forged ones sent.
    let push_token = wxpay::nonce::random_string(32);
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&wxpay::nonce::random_string(32).as_bytes()[..32]);
    let push_key = wxpay::mp::push::EncodingAesKey::from_bytes(raw).to_encoding();
    let set = r.keep(
        app.send(
            app.http
                .patch(format!("{}/admin/apps/{}", app.base, b.appid))
                .bearer_auth(&admin)
                .json(&json!({"push_token": push_token, "push_encoding_aes_key": push_key})),
        )
        .await,
    );
    assert_eq!(set.status, 200, "{:?}", set.body);
    let mut fields = serde_json::Map::new();
    for (k, v) in [
        ("ToUserName", json!("gh_0123456789ab")),
        ("FromUserName", json!("o_system")),
        ("CreateTime", json!(1_733_580_000)),
        ("MsgType", json!("event")),
        ("Event", json!("wxa_trade_controlled")),
        ("msg", json!("restricted")),
    ] {
        fields.insert(k.into(), v);
    }
    for (token, key) in [
        (push_token.as_str(), push_key.as_str()),
        ("forgedToken1", push_key.as_str()),
        (
            push_token.as_str(),
            "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut",
        ),
    ] {
        let config = wxpay::mp::push::PushConfig::encrypted(token, key, &b.appid).unwrap();
        let sealed = wxpay::mp::push::seal_push(
            &config,
            wxpay::mp::push::PushMode::Safe,
            wxpay::mp::push::PushFormat::Json,
            &fields,
            "1733580000",
            "nonce1",
            None,
            [3; 16],
        )
        .unwrap();
        r.keep(
            app.send(
                app.http
                    .post(format!(
                        "{}/notify/mp/{}?{}",
                        app.base, b.appid, sealed.query
                    ))
                    .body(sealed.body),
            )
            .await,
        );
    }
    // Served: a buyer of B pays, and is refunded.
    let mut token = None;
    for _ in 0..200 {
        let user = app
            .post_json("/sim/users", None, &json!({"appid": b.appid}))
            .await;
        let login = r.keep(
            app.post_json(
                "/api/login",
                None,
                &json!({"code": user.body["code"], "appid": b.appid}),
            )
            .await,
        );
        if login.status == 200 {
            token = Some((
                user.body["openid"].as_str().unwrap().to_owned(),
                login.body["token"].as_str().unwrap().to_owned(),
            ));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (openid, token) = token.expect("B's mini program is served");
    let created = r.keep(
        app.create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
            .await,
    );
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    r.keep(app.sim_pay(&created.body["payment"], &openid).await);
    app.flush().await;
    r.keep(
        app.post_json(
            &format!("/admin/orders/{no}/refunds"),
            Some(&admin),
            &json!({"amount_fen": 1}),
        )
        .await,
    );
    app.flush().await;
    let operator = app
        .post_json(
            "/admin/operators",
            Some(&admin),
            &json!({"mchid": b.mchid, "name": "b"}),
        )
        .await;
    assert_eq!(operator.status, 201, "{:?}", operator.body);
    let operator_token = operator.body["token"].as_str().unwrap().to_owned();
    let id = operator.body["id"].as_str().unwrap().to_owned();
    // The only answer allowed to hold the operator's token is the one that made it.
    r.count += 1;
    r.keep(app.get("/admin/orders", Some(&operator_token)).await);
    r.keep(
        app.get(&format!("/admin/orders/{no}"), Some(&operator_token))
            .await,
    );
    r.keep(app.get("/admin/whoami", Some(&operator_token)).await);
    for path in [
        "/admin/merchants".to_owned(),
        format!("/admin/merchants/{}", b.mchid),
        "/admin/apps".into(),
        format!("/admin/apps/{}", b.appid),
        "/admin/operators".into(),
        "/admin/registry/version".into(),
    ] {
        r.keep(app.get(&path, Some(&admin)).await);
    }
    r.keep(
        app.send(
            app.http
                .delete(format!("{}/admin/operators/{id}", app.base))
                .bearer_auth(&admin),
        )
        .await,
    );
    r.keep(app.get("/admin/orders", Some(&operator_token)).await);
    r.keep(app.get("/admin/alerts", Some(&admin)).await);
    (b.dir, operator_token, [push_token, push_key])
}

fn today() -> String {
    let d = wxpay::time::beijing_date(time::OffsetDateTime::now_utc());
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[tokio::test]
async fn no_secret_in_any_log_line_or_response() {
    let (logs, _guard) = capture_logs();
    let mut responses = Responses::default();
    let mut secrets = Secrets::of_sandbox();
    let mut session_keys = 0;
    let mut registered = 0;
    for version in ["v3", "v2"] {
        let s = sandbox(Backend::Sqlite, version, |_| {}).await;
        full_run(&s, &mut responses).await;
        let (dir, operator_token, [push_token, push_key]) = registry_run(&s, &mut responses).await;
        registered += 1;
        secrets = secrets
            .with_merchant_dir(&dir)
            .with("operator token", &operator_token)
            .with("message-push Token", &push_token)
            .with("message-push EncodingAESKey", &push_key);
        let key_file = s
            .app
            .state
            .settings
            .sandbox_master_key_dir()
            .join(wxpay_server::sealing::SANDBOX_KEY_FILE);
        let key = std::fs::read_to_string(&key_file).expect("the sandbox's master key file");
        secrets = secrets.with("master key", key.trim());
        let before = secrets.named.len();
        secrets = secrets.with_session_keys(s.app.state.store.pool()).await;
        session_keys += secrets.named.len() - before;
    }
    let logs = logs.text();
    assert!(logs.lines().count() > 100, "the logs were not captured");
    secrets.assert_absent("the logs", &logs);
    secrets.assert_absent("the responses", &String::from_utf8_lossy(&responses.bodies));
    figures(
        "scenario 8 secrets",
        &[
            ("log_lines", logs.lines().count().to_string()),
            ("responses", responses.count.to_string()),
            ("response_bytes", responses.bodies.len().to_string()),
            ("secrets_searched", secrets.named.len().to_string()),
            ("session_keys", session_keys.to_string()),
            ("merchants_registered", registered.to_string()),
            ("found", "0".into()),
        ],
    );
}
