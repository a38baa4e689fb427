//! Several mini programs and merchants in one deployment, paying through one simulator: each
//! mini program's buyers pay its merchant (v3 and v2 side by side), notifications arrive at each
//! merchant's own URL, refunds go through the order's merchant, users see only their own
//! orders, a disabled merchant takes no new orders but settles the ones it has.

use std::time::Duration;

use serde_json::{Value, json};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::{Answer, TestApp, registration, sim_control, sim_merchant, spawn_app};

pub(crate) async fn admin_post(app: &TestApp, path: &str, body: &Value) -> Answer {
    app.post_json(path, Some(&app.admin()), body).await
}

pub(crate) async fn admin_patch(app: &TestApp, path: &str, body: &Value) -> Answer {
    app.send(
        app.http
            .patch(format!("{}{path}", app.base))
            .bearer_auth(app.admin())
            .json(body),
    )
    .await
}

/// Waits until this instance serves `apps` mini programs (the registry reloads after a change).
pub(crate) async fn serving(app: &TestApp, apps: usize) {
    until(|| app.state.registry.counts().0 == apps).await;
}

/// Enables or disables a merchant through the back office.
async fn set_enabled(app: &TestApp, mchid: &str, enabled: bool) {
    let a = admin_patch(
        app,
        &format!("/admin/merchants/{mchid}"),
        &json!({ "enabled": enabled }),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["enabled"], enabled);
}

/// Waits (30 s at most: a loaded machine is slow, and the registry's periodic check runs every
/// 5 s) until `ready` holds.
pub(crate) async fn until(ready: impl Fn() -> bool) {
    for _ in 0..1200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not within 30 s");
}

/// A buyer of `appid`: (openid, token).
pub(crate) async fn buyer(app: &TestApp, appid: &str) -> (String, String) {
    let user = app
        .post_json("/sim/users", None, &json!({ "appid": appid }))
        .await;
    assert_eq!(user.status, 200, "{:?}", user.body);
    let login = app
        .post_json(
            "/api/login",
            None,
            &json!({ "code": user.body["code"], "appid": appid }),
        )
        .await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    (
        user.body["openid"].as_str().unwrap().to_owned(),
        login.body["token"].as_str().unwrap().to_owned(),
    )
}

/// A paid order of the buyer: its number.
pub(crate) async fn pay(app: &TestApp, openid: &str, token: &str) -> String {
    let created = app
        .create_order(token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let paid = app.sim_pay(&created.body["payment"], openid).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    app.flush().await;
    no
}

async fn mini_programs_of_three_merchants_pay_and_refund_side_by_side(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let file_app = app.state.registry.default_app();
    let (file_appid, file_mchid) = (file_app.appid.clone(), file_app.mchid.clone());
    // B: v3 with the WeChat Pay public key; C: v2 (its platform certificate for nothing else).
    let b = sim_merchant(&app, "public_key").await;
    let c = sim_merchant(&app, "certificate").await;
    // A second mini program of the file's merchant.
    let second = sim_control(&app, "/sim/apps", &json!({ "mchid": file_mchid })).await;
    let second_appid = second["appid"].as_str().unwrap().to_owned();

    for (m, version) in [(&b, "v3"), (&c, "v2")] {
        let a = admin_post(&app, "/admin/merchants", &registration(m, version)).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    for (appid, secret, mchid) in [
        (&b.appid, &b.app_secret, &b.mchid),
        (&c.appid, &c.app_secret, &c.mchid),
        (
            &second_appid,
            &second["app_secret"].as_str().unwrap().to_owned(),
            &file_mchid,
        ),
    ] {
        let a = admin_post(
            &app,
            "/admin/apps",
            &json!({"appid": appid, "name": format!("app {appid}"), "app_secret": secret, "mchid": mchid}),
        )
        .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    serving(&app, 4).await;

    // Several mini programs: a login must say which.
    let user = app.post_json("/sim/users", None, &json!({})).await;
    let anonymous = app.login_with(user.body["code"].as_str().unwrap()).await;
    assert_eq!(anonymous.status, 400);
    assert_eq!(anonymous.body["code"], "appid_required");
    let unknown = app
        .post_json(
            "/api/login",
            None,
            &json!({"code": user.body["code"], "appid": "wx00000000000000ff"}),
        )
        .await;
    assert_eq!(unknown.body["code"], "unknown_app");
    // ... or the WeChat client's Referer does.
    let by_referer = app
        .send(
            app.http
                .post(format!("{}/api/login", app.base))
                .header(
                    "Referer",
                    format!("https://servicewechat.com/{file_appid}/3/page-frame.html"),
                )
                .json(&json!({"code": user.body["code"]})),
        )
        .await;
    assert_eq!(by_referer.status, 200, "{:?}", by_referer.body);

    let mut orders = Vec::new();
    for (appid, mchid, version) in [
        (&file_appid, &file_mchid, "v3"),
        (&second_appid, &file_mchid, "v3"),
        (&b.appid, &b.mchid, "v3"),
        (&c.appid, &c.mchid, "v2"),
    ] {
        let (openid, token) = buyer(&app, appid).await;
        let no = pay(&app, &openid, &token).await;
        let mine = app.order(&token, &no).await;
        assert_eq!(mine.body["status"], "SUCCESS", "{appid}: {:?}", mine.body);
        let detail = app
            .get(&format!("/admin/orders/{no}"), Some(&app.admin()))
            .await;
        assert_eq!(detail.body["order"]["appid"], json!(appid));
        assert_eq!(detail.body["order"]["mchid"], json!(mchid));
        assert_eq!(detail.body["order"]["api_version"], version);
        // Paid once, by its merchant's notification (at its merchant's own URL: the only one
        // its APIv3 key or v2 key verifies there).
        assert_eq!(app.paid_events(&no).await, 1);
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1 \
                 AND detail LIKE '%notification%' AND detail LIKE '%\"result\":\"paid\"%'",
                &no
            )
            .await,
            1,
            "{appid}: paid by a notification"
        );
        orders.push((appid.clone(), token, no));
    }

    // A merchant's genuine notification at another merchant's URL is refused (its keys do not
    // verify it) and changes nothing; at its own URL it is acknowledged (a repeat: no change).
    for (i, own, version) in [(2, &b.mchid, "v3"), (3, &c.mchid, "v2")] {
        let (_, _, no) = &orders[i];
        let deliveries = app
            .get(
                &format!("/sim/notifications?out_trade_no={no}"),
                Some(&app.admin()),
            )
            .await;
        let delivery = &deliveries.body["deliveries"][0];
        let sent = delivery["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["acked"] == true)
            .expect("an acknowledged attempt");
        let post = |mchid: &str| {
            let mut request = app
                .http
                .post(format!("{}/notify/{mchid}/{version}/pay", app.base))
                .body(delivery["body"].as_str().unwrap().to_owned());
            for (name, value) in sent["headers"].as_object().unwrap() {
                request = request.header(name.as_str(), value.as_str().unwrap());
            }
            app.send(request)
        };
        let events = app
            .count(
                "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1",
                no,
            )
            .await;
        let elsewhere = post(&file_mchid).await;
        assert_eq!(
            elsewhere.status, 401,
            "{version} at another merchant's URL: {:?}",
            elsewhere.body
        );
        let at_home = post(own).await;
        assert!(
            at_home.status < 300,
            "{version} at its own URL: {}",
            at_home.status
        );
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1",
                no
            )
            .await,
            events,
            "nothing changed"
        );
        assert_eq!(app.paid_events(no).await, 1);
    }

    // Each buyer sees their own orders only (another mini program's order is not found).
    let (_, token_a, no_a) = &orders[0];
    let (_, token_b, no_b) = &orders[2];
    assert_eq!(app.order(token_b, no_a).await.status, 404);
    assert_eq!(app.order(token_a, no_b).await.status, 404);
    let listed = app.get("/api/orders", Some(token_b)).await;
    let listed: Vec<&str> = listed.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["out_trade_no"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![no_b.as_str()]);

    // Refunds go through each order's merchant (v3 and v2 over its own client certificate).
    for (appid, _, no) in &orders {
        let r = admin_post(
            &app,
            &format!("/admin/orders/{no}/refunds"),
            &json!({"amount_fen": 1}),
        )
        .await;
        assert_eq!(r.status, 201, "{appid}: {:?}", r.body);
    }
    sim_control(&app, "/sim/clock/advance", &json!({"seconds": 10})).await;
    app.flush().await;
    for (appid, _, no) in &orders {
        let detail = app
            .get(&format!("/admin/orders/{no}"), Some(&app.admin()))
            .await;
        assert_eq!(
            detail.body["refunds"][0]["status"], "SUCCESS",
            "{appid}: {:?}",
            detail.body
        );
    }

    // Each merchant's bill is reconciled with its own orders: two days later at WeChat, today's
    // bills exist.
    sim_control(&app, "/sim/clock/advance", &json!({"seconds": 172_800})).await;
    let today = wxpay_server::jobs::bills::format_date(wxpay_server::jobs::bills::today_cst());
    for (mchid, expected) in [
        (&file_mchid, vec![0, 1]),
        (&b.mchid, vec![2]),
        (&c.mchid, vec![3]),
    ] {
        let report = app
            .get(
                &format!("/admin/reconciliation/{today}?mchid={mchid}"),
                Some(&app.admin()),
            )
            .await;
        assert_eq!(report.status, 200, "{mchid}: {:?}", report.body);
        assert_eq!(report.body["mchid"], json!(mchid));
        assert_eq!(report.body["mismatched"], 0, "{mchid}: {}", report.body);
        let mut paid: Vec<&str> = report.body["report"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "payment")
            .map(|i| i["out_trade_no"].as_str().unwrap())
            .collect();
        paid.sort_unstable();
        let mut own: Vec<&str> = expected.iter().map(|&i| orders[i].2.as_str()).collect();
        own.sort_unstable();
        assert_eq!(paid, own, "{mchid}: its own orders, and only those");
    }
    // Without a merchant: the first one's.
    let first = app
        .get(
            &format!("/admin/reconciliation/{today}"),
            Some(&app.admin()),
        )
        .await;
    assert_eq!(first.body["mchid"], json!(file_mchid));

    // An operator of B sees and acts on B's orders only.
    let made = admin_post(
        &app,
        "/admin/operators",
        &json!({"mchid": b.mchid, "name": "b's"}),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let operator = made.body["token"].as_str().unwrap().to_owned();
    let (_, _, no_file) = &orders[0];
    let listed = app.get("/admin/orders", Some(&operator)).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let listed: Vec<&str> = listed.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["out_trade_no"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![no_b.as_str()], "only B's order");
    let everything = app.get("/admin/orders", Some(&app.admin())).await;
    assert_eq!(everything.body["orders"].as_array().unwrap().len(), 4);
    let only_c = app
        .get(
            &format!("/admin/orders?mchid={}", c.mchid),
            Some(&app.admin()),
        )
        .await;
    assert_eq!(only_c.body["orders"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get(&format!("/admin/orders/{no_b}"), Some(&operator))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/admin/orders/{no_file}"), Some(&operator))
            .await
            .status,
        404
    );
    let theirs = app
        .post_json(
            &format!("/admin/orders/{no_file}/refunds"),
            Some(&operator),
            &json!({"amount_fen": 1}),
        )
        .await;
    assert_eq!(theirs.status, 404, "{:?}", theirs.body);
    let ours = app
        .post_json(
            &format!("/admin/orders/{no_b}/refunds"),
            Some(&operator),
            &json!({"amount_fen": 1}),
        )
        .await;
    assert_eq!(ours.status, 201, "{:?}", ours.body);
    let refund_no = ours.body["out_refund_no"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/admin/refunds/{refund_no}"), Some(&operator))
            .await
            .status,
        200
    );
    let file_refund = app
        .get(&format!("/admin/orders/{no_file}"), Some(&app.admin()))
        .await;
    let file_refund_no = file_refund.body["refunds"][0]["out_refund_no"]
        .as_str()
        .unwrap();
    assert_eq!(
        app.get(&format!("/admin/refunds/{file_refund_no}"), Some(&operator))
            .await
            .status,
        404
    );
    let (openid_b, _) = buyer(&app, &b.appid).await;
    let for_b = app
        .post_json(
            "/admin/orders",
            Some(&operator),
            &json!({"openid": openid_b, "amount_fen": 100, "description": "by B's operator", "appid": b.appid}),
        )
        .await;
    assert_eq!(for_b.status, 201, "{:?}", for_b.body);
    assert_eq!(for_b.body["mchid"], json!(b.mchid));
    let for_file = app
        .post_json(
            "/admin/orders",
            Some(&operator),
            &json!({"openid": openid_b, "amount_fen": 100, "description": "not B's", "appid": file_appid}),
        )
        .await;
    assert_eq!(for_file.status, 403, "{:?}", for_file.body);
    // What is not a merchant's own stays the admin's.
    for path in [
        "/admin/webhooks",
        "/admin/jobs",
        "/admin/merchants",
        "/admin/stats/hourly",
    ] {
        assert_eq!(app.get(path, Some(&operator)).await.status, 401, "{path}");
    }
    // Its reconciliation is B's, whatever it asks for.
    let theirs = app
        .get(
            &format!("/admin/reconciliation/{today}?mchid={file_mchid}"),
            Some(&operator),
        )
        .await;
    assert_eq!(theirs.body["mchid"], json!(b.mchid), "{:?}", theirs.body);
    let revoked = app
        .send(
            app.http
                .delete(format!(
                    "{}/admin/operators/{}",
                    app.base,
                    made.body["id"].as_str().unwrap()
                ))
                .bearer_auth(app.admin()),
        )
        .await;
    assert!(revoked.status < 300, "{:?}", revoked.body);
    assert_eq!(app.get("/admin/orders", Some(&operator)).await.status, 401);

    // A notification URL of a merchant that is not here: refused, nothing read.
    let stray = app
        .send(
            app.http
                .post(format!("{}/notify/1999999999/v3/pay", app.base))
                .body("{}"),
        )
        .await;
    assert_eq!(stray.status, 404);
}

async fn a_disabled_merchant_takes_no_new_orders_but_settles_its_own(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let b = sim_merchant(&app, "public_key").await;
    let a = admin_post(&app, "/admin/merchants", &registration(&b, "v3")).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let a = admin_post(
        &app,
        "/admin/apps",
        &json!({"appid": b.appid, "name": "b", "app_secret": b.app_secret, "mchid": b.mchid}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    serving(&app, 2).await;

    let (openid, token) = buyer(&app, &b.appid).await;
    let pending = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(pending.status, 201, "{:?}", pending.body);

    set_enabled(&app, &b.mchid, false).await;
    // Once this instance has reloaded its registry (polled, not ordered: orders are rate limited).
    until(|| app.state.registry.for_new_order(&b.appid).is_err()).await;
    let refused = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "merchant_disabled");

    // The order it had is still paid, notified and refunded through it.
    let paid = app.sim_pay(&pending.body["payment"], &openid).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    app.flush().await;
    let no = pending.body["out_trade_no"].as_str().unwrap();
    assert_eq!(app.order(&token, no).await.body["status"], "SUCCESS");
    let r = admin_post(
        &app,
        &format!("/admin/orders/{no}/refunds"),
        &json!({"amount_fen": 1}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    set_enabled(&app, &b.mchid, true).await;
    until(|| app.state.registry.for_new_order(&b.appid).is_ok()).await;
    let accepted = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(accepted.status, 201, "enabled again: {:?}", accepted.body);
}

/// Several instances on one PostgreSQL: a merchant and its mini program registered on one are
/// served by the other within seconds, and a change of its API version too (an update, not a
/// redeploy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_registered_on_one_instance_is_served_by_another() {
    // Every instance is given the same master key (each sandbox would make its own).
    let key = || {
        |s: &mut wxpay_server::Settings| {
            s.master_key = Some(
                wxpay_server::sealing::MasterKey::parse(
                    "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
                )
                .unwrap(),
            );
        }
    };
    let first = crate::helpers::spawn_app_with(Backend::Postgres, "v3", key()).await;
    let second = crate::helpers::spawn_instance(&first, None, key()).await;
    second.state.store.notices().listening().await;
    // The second instance has a simulator of its own: the merchant is made in the one both
    // share for this test, the second's (it is where its orders go).
    let b = sim_merchant(&second, "public_key").await;
    let a = admin_post(&first, "/admin/merchants", &registration(&b, "v3")).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let a = admin_post(
        &first,
        "/admin/apps",
        &json!({"appid": b.appid, "name": "b", "app_secret": b.app_secret, "mchid": b.mchid}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let started = std::time::Instant::now();
    serving(&second, 2).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "served after {took:?}");

    let (openid, token) = buyer(&second, &b.appid).await;
    let no = pay(&second, &openid, &token).await;
    let detail = second
        .get(&format!("/admin/orders/{no}"), Some(&second.admin()))
        .await;
    assert_eq!(detail.body["order"]["mchid"], json!(b.mchid));
    assert_eq!(detail.body["order"]["status"], "SUCCESS");
    assert_eq!(detail.body["order"]["api_version"], "v3");

    // Moved to API v2 on the first instance: the second's next order of B is a v2 one.
    let moved = admin_patch(
        &first,
        &format!("/admin/merchants/{}", b.mchid),
        &json!({"api_version": "v2"}),
    )
    .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    // Once the second instance has moved (polled, not ordered: orders are rate limited).
    until(|| {
        second
            .state
            .registry
            .app(&b.appid)
            .is_ok_and(|app| app.api_version.as_str() == "v2")
    })
    .await;
    let created = second
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let detail = second
        .get(&format!("/admin/orders/{no}"), Some(&second.admin()))
        .await;
    assert_eq!(detail.body["order"]["api_version"], "v2");
    assert_eq!(
        created.body["payment"]["signType"], "MD5",
        "{:?}",
        created.body
    );
    let paid = second.sim_pay(&created.body["payment"], &openid).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    second.flush().await;
    let no = created.body["out_trade_no"].as_str().unwrap();
    assert_eq!(second.order(&token, no).await.body["status"], "SUCCESS");
}

both_backends!(
    mini_programs_of_three_merchants_pay_and_refund_side_by_side,
    a_disabled_merchant_takes_no_new_orders_but_settles_its_own,
);
