//! A service provider (服务商) beside a direct merchant in one deployment, paying through one
//! simulator: two sub-merchants of the provider, one with its own mini program (`sub_appid`,
//! buyers are `sub_openid`s) and one paid from the provider's own mini program (`sp_openid`);
//! prepays, `wx.requestPayment`, notifications, refunds and queries in the partner shapes with
//! the provider's keys, v3 and v2; the direct merchant's orders side by side.

use serde_json::{Value, json};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::{TestApp, registration, sim_control, sim_merchant, spawn_app};
use crate::tenancy::{admin_patch, admin_post, buyer, pay, serving, until};

const SUB_OWN_APP: &str = "1900000201";
const SUB_PROVIDER_APP: &str = "1900000202";

/// The provider's order `no` as the back office shows it.
async fn detail(app: &TestApp, no: &str) -> Value {
    let d = app
        .get(&format!("/admin/orders/{no}"), Some(&app.admin()))
        .await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    d.body
}

/// A notification the simulator delivered (and was acknowledged) for `no`: (body, headers).
async fn delivered(app: &TestApp, no: &str, index: usize) -> (String, Value) {
    let deliveries = app
        .get(
            &format!("/sim/notifications?out_trade_no={no}"),
            Some(&app.admin()),
        )
        .await;
    let delivery = &deliveries.body["deliveries"][index];
    let sent = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["acked"] == true)
        .expect("an acknowledged attempt")
        .clone();
    (
        delivery["body"].as_str().unwrap().to_owned(),
        sent["headers"].clone(),
    )
}

async fn provider_with_two_sub_merchants(backend: Backend, version: &str) {
    let app = spawn_app(backend, "v3").await;
    let direct = app.state.registry.default_app();
    let (direct_appid, direct_mchid) = (direct.appid.clone(), direct.mchid.clone());

    // At WeChat: a provider (its own mini program is its sp_appid), a sub-merchant bound to its
    // own mini program, and one paid from the provider's mini program.
    let p = sim_merchant(&app, "certificate").await;
    let sub_app = sim_control(&app, "/sim/apps", &json!({ "mchid": p.mchid })).await;
    let sub_appid = sub_app["appid"].as_str().unwrap().to_owned();
    let sub_secret = sub_app["app_secret"].as_str().unwrap().to_owned();
    sim_control(
        &app,
        "/sim/sub-merchants",
        &json!({"sp_mchid": p.mchid, "sub_mchid": SUB_OWN_APP, "sub_appid": sub_appid}),
    )
    .await;
    sim_control(
        &app,
        "/sim/sub-merchants",
        &json!({"sp_mchid": p.mchid, "sub_mchid": SUB_PROVIDER_APP}),
    )
    .await;

    // Here: the provider needs its sp_appid; a direct merchant may not have one.
    let mut body = registration(&p, version);
    body["kind"] = json!("provider");
    let missing = admin_post(&app, "/admin/merchants", &body).await;
    assert_eq!(missing.status, 400, "{:?}", missing.body);
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap()
            .contains("sp_appid"),
        "{:?}",
        missing.body
    );
    body["sp_appid"] = json!(p.appid);
    let made = admin_post(&app, "/admin/merchants", &body).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["sp_appid"], json!(p.appid));
    for (sub, sub_appid) in [
        (SUB_OWN_APP, Some(sub_appid.as_str())),
        (SUB_PROVIDER_APP, None),
    ] {
        let a = admin_post(
            &app,
            &format!("/admin/merchants/{}/sub-merchants", p.mchid),
            &json!({"sub_mchid": sub, "name": format!("shop {sub}"), "sub_appid": sub_appid}),
        )
        .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    for (appid, secret, sub) in [
        (&sub_appid, &sub_secret, SUB_OWN_APP),
        (&p.appid, &p.app_secret, SUB_PROVIDER_APP),
    ] {
        let a = admin_post(
            &app,
            "/admin/apps",
            &json!({"appid": appid, "name": format!("app {appid}"), "app_secret": secret,
                    "mchid": p.mchid, "sub_mchid": sub}),
        )
        .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    serving(&app, 3).await;

    // Each mini program's buyer pays: the two sub-merchants' through the provider, the direct
    // merchant's as before; each order paid once, by a notification at its merchant's URL.
    let mut orders = Vec::new();
    for (appid, mchid, sub, api) in [
        (&sub_appid, &p.mchid, Some(SUB_OWN_APP), version),
        (&p.appid, &p.mchid, Some(SUB_PROVIDER_APP), version),
        (&direct_appid, &direct_mchid, None, "v3"),
    ] {
        let (openid, token) = buyer(&app, appid).await;
        let no = pay(&app, &openid, &token).await;
        assert_eq!(
            app.order(&token, &no).await.body["status"],
            "SUCCESS",
            "{appid}"
        );
        let d = detail(&app, &no).await;
        assert_eq!(d["order"]["appid"], json!(appid));
        assert_eq!(d["order"]["mchid"], json!(mchid));
        assert_eq!(d["order"]["sub_mchid"], json!(sub));
        assert_eq!(d["order"]["api_version"], api);
        assert_eq!(app.paid_events(&no).await, 1, "{appid}");
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
    // WeChat recorded the sub-merchant and the paying mini program.
    let at_wechat = app
        .get(&format!("/sim/orders/{}", orders[0].2), Some(&app.admin()))
        .await;
    assert_eq!(at_wechat.status, 200, "{:?}", at_wechat.body);

    // Buyers of one mini program do not see another's orders.
    assert_eq!(app.order(&orders[0].1, &orders[1].2).await.status, 404);
    assert_eq!(app.order(&orders[1].1, &orders[0].2).await.status, 404);

    // The provider's genuine notification at the direct merchant's URL is refused and changes
    // nothing; at the provider's own URL it is a repeat (acknowledged, no change).
    let (body, headers) = delivered(&app, &orders[0].2, 0).await;
    let post = |mchid: &str| {
        let mut request = app
            .http
            .post(format!("{}/notify/{mchid}/{version}/pay", app.base))
            .body(body.clone());
        for (name, value) in headers.as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        app.send(request)
    };
    let events = app
        .count(
            "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1",
            &orders[0].2,
        )
        .await;
    let elsewhere = post(&direct_mchid).await;
    assert!(
        elsewhere.status == 401 || elsewhere.status == 400,
        "at the direct merchant's URL: {} {:?}",
        elsewhere.status,
        elsewhere.body
    );
    let at_home = post(&p.mchid).await;
    assert!(at_home.status < 300, "at its own URL: {}", at_home.status);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1",
            &orders[0].2
        )
        .await,
        events,
        "nothing changed"
    );

    // Refunds go through the provider with the order's sub-merchant, and settle by its
    // notifications (or the follow-up query).
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
        let d = detail(&app, no).await;
        assert_eq!(d["refunds"][0]["status"], "SUCCESS", "{appid}: {d:?}");
    }

    // The provider's one bill holds its sub-merchants' orders and is reconciled with them.
    sim_control(&app, "/sim/clock/advance", &json!({"seconds": 172_800})).await;
    let today = wxpay_server::jobs::bills::format_date(wxpay_server::jobs::bills::today_cst());
    let report = app
        .get(
            &format!("/admin/reconciliation/{today}?mchid={}", p.mchid),
            Some(&app.admin()),
        )
        .await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    assert_eq!(report.body["mismatched"], 0, "{}", report.body);
    let mut paid: Vec<&str> = report.body["report"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "payment")
        .map(|i| i["out_trade_no"].as_str().unwrap())
        .collect();
    paid.sort_unstable();
    let mut own = vec![orders[0].2.as_str(), orders[1].2.as_str()];
    own.sort_unstable();
    assert_eq!(paid, own, "the provider's bill: its sub-merchants' orders");

    // The provider's operator sees its sub-merchants' orders, not the direct merchant's.
    let made = admin_post(
        &app,
        "/admin/operators",
        &json!({"mchid": p.mchid, "name": "provider's"}),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let operator = made.body["token"].as_str().unwrap().to_owned();
    let listed = app.get("/admin/orders", Some(&operator)).await;
    let mut listed: Vec<String> = listed.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["out_trade_no"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut theirs = vec![orders[0].2.clone(), orders[1].2.clone()];
    theirs.sort();
    assert_eq!(listed, theirs);

    // A disabled sub-merchant takes no new orders; the other one still does.
    let off = admin_patch(
        &app,
        &format!("/admin/merchants/{}/sub-merchants/{SUB_OWN_APP}", p.mchid),
        &json!({"enabled": false}),
    )
    .await;
    assert_eq!(off.status, 200, "{:?}", off.body);
    let registry = app.state.registry.clone();
    until(|| {
        registry
            .for_new_order(&sub_appid)
            .is_err_and(|e| matches!(e, wxpay_server::registry::RouteError::MerchantDisabled(_)))
    })
    .await;
    let refused = app
        .create_order(&orders[0].1, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "merchant_disabled");
    let (openid, token) = buyer(&app, &p.appid).await;
    let still = pay(&app, &openid, &token).await;
    assert_eq!(
        detail(&app, &still).await["order"]["sub_mchid"],
        json!(SUB_PROVIDER_APP)
    );
}

async fn provider_v3_with_two_sub_merchants(backend: Backend) {
    provider_with_two_sub_merchants(backend, "v3").await;
}

async fn provider_v2_with_two_sub_merchants(backend: Backend) {
    provider_with_two_sub_merchants(backend, "v2").await;
}

both_backends!(
    provider_v3_with_two_sub_merchants,
    provider_v2_with_two_sub_merchants
);
