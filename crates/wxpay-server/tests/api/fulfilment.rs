//! Shipping information (小程序发货信息管理服务): virtual goods are uploaded by the job after
//! payment; express orders ship in parcels, the last one uploads; an upload whose answer was
//! lost is not uploaded twice; bad requests change nothing. Against the simulator's trade
//! management (`GET /sim/orders/{no}` shows what WeChat has).

use std::time::Duration;

use serde_json::{Value, json};
use wxpay_server::jobs::{JobKind, JobOptions, Jobs};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::{Answer, TestApp};
use crate::jobs::{admin_get, admin_post, sim_order, spawn_quiet};

/// Jobs that retry at once.
fn jobs(app: &TestApp) -> Jobs {
    Jobs::new(
        app.state.clone(),
        JobOptions {
            shipping_retry: Duration::ZERO,
            ..JobOptions::default()
        },
    )
    .unwrap()
}

async fn put_product(app: &TestApp, sku: &str, body: &Value) -> Answer {
    app.send(
        app.http
            .put(format!("{}/admin/products/{sku}", app.base))
            .bearer_auth(app.admin())
            .json(body),
    )
    .await
}

/// A paid order of `items`: (openid, token, out_trade_no).
async fn paid(app: &TestApp, items: Value) -> (String, String, String) {
    let (openid, token) = app.login().await;
    let created = app.create_order(&token, items).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let before = app.order(&token, &no).await;
    assert!(before.body["shipping_state"].is_null(), "{:?}", before.body);
    let a = app.sim_pay(&created.body["payment"], &openid).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    app.flush().await;
    (openid, token, no)
}

async fn ship(app: &TestApp, no: &str, body: &Value) -> Answer {
    admin_post(app, &format!("/admin/orders/{no}/shipments"), body).await
}

async fn detail(app: &TestApp, no: &str) -> Value {
    let a = admin_get(app, &format!("/admin/orders/{no}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

async fn shipped_webhooks(app: &TestApp, no: &str) -> i64 {
    app.count(
        "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.shipped'",
        no,
    )
    .await
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

both_backends!(
    virtual_goods_are_uploaded_by_the_job_after_payment,
    an_express_order_ships_in_two_parcels_and_the_last_uploads_v3,
    an_express_order_ships_in_two_parcels_and_the_last_uploads_v2,
    a_lost_upload_answer_is_not_uploaded_twice,
    bad_shipments_are_refused_and_change_nothing,
    an_upload_wechat_never_takes_ends_failed,
    a_mini_program_outside_trade_management_needs_no_upload,
    express_companies_come_from_wechats_list,
    parcel_items_are_summed_against_the_order,
    a_second_mini_programs_order_settles_through_the_push,
);

/// An upload WeChat keeps refusing (here every call fails: `api_error_rate` 1) is retried with
/// backoff, never in a hot loop, and left `failed` for a person after a day of failed
/// questions.
async fn an_upload_wechat_never_takes_ends_failed(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let put = put_product(
        &app,
        "voucher",
        &json!({"name": "voucher", "price_fen": 500, "delivery": "virtual"}),
    )
    .await;
    assert!(put.status < 300, "{:?}", put.body);
    let (_, _, no) = paid(&app, json!([{"sku": "voucher", "quantity": 1}])).await;
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let failures = || {
        app.count(
            "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1 AND kind = 'shipping_upload_failed'",
            &no,
        )
    };
    // Production backoff: one attempt, then nothing until it is due.
    let jobs = Jobs::new(app.state.clone(), JobOptions::default()).unwrap();
    for _ in 0..5 {
        jobs.drain(JobKind::UploadShipping, 5).await.unwrap();
    }
    assert_eq!(failures().await, 1);
    let pool = app.state.store.pool();
    let due = |older_ms: i64| {
        sqlx::query(
            "UPDATE shipping_uploads SET next_attempt_at = 0, created_at = created_at - $2 \
             WHERE out_trade_no = $1",
        )
        .bind(no.clone())
        .bind(older_ms)
        .execute(pool)
    };
    // Due again: the job asks WeChat first (the first call may have reached it); the question
    // fails and is tried later, the upload still pending.
    due(0).await.unwrap();
    jobs.drain(JobKind::UploadShipping, 5).await.unwrap();
    assert_eq!(failures().await, 2);
    let d = detail(&app, &no).await;
    assert_eq!(d["shipping_upload"]["status"], "pending", "{d:?}");
    assert!(
        d["shipping_upload"]["next_attempt_at"].as_i64().unwrap()
            >= d["shipping_upload"]["updated_at"].as_i64().unwrap() + 30_000,
        "{d:?}"
    );
    // A day later, still failing: left for a person, and not tried again.
    due(25 * 3600 * 1000).await.unwrap();
    jobs.drain(JobKind::UploadShipping, 5).await.unwrap();
    let d = detail(&app, &no).await;
    assert_eq!(d["shipping_upload"]["status"], "failed", "{d:?}");
    due(0).await.unwrap();
    jobs.drain(JobKind::UploadShipping, 5).await.unwrap();
    assert_eq!(failures().await, 3);
}

/// A control call of the sandbox's simulator with another method than POST.
async fn sim_put(app: &TestApp, path: &str, body: &Value) -> Value {
    let base = app.state.sandbox_url.clone().expect("a sandbox");
    let answer = app
        .http
        .put(format!("{base}{path}"))
        .bearer_auth(crate::helpers::SIM_CONTROL_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// A second mini program of the default merchant, at the simulator and here: its appid.
async fn second_mini_program(app: &TestApp) -> String {
    let mchid = app.state.registry.default_app().mchid.clone();
    let second = crate::helpers::sim_control(app, "/sim/apps", &json!({ "mchid": mchid })).await;
    let appid = second["appid"].as_str().unwrap().to_owned();
    let made = admin_post(
        app,
        "/admin/apps",
        &json!({"appid": appid, "name": "second", "app_secret": second["app_secret"], "mchid": mchid}),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    crate::tenancy::serving(app, 2).await;
    appid
}

/// A paid order of a buyer of the mini program `appid`: (openid, token, out_trade_no).
async fn paid_in(app: &TestApp, appid: &str, items: Value) -> (String, String, String) {
    let (openid, token) = crate::tenancy::buyer(app, appid).await;
    let created = app.create_order(&token, items).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let a = app.sim_pay(&created.body["payment"], &openid).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    app.flush().await;
    (openid, token, no)
}

/// A mini program WeChat does not hold under trade management (`is_trade_managed` false):
/// nothing is uploaded, the upload says `not_managed` at once (no retries, no failure), the
/// order ships, and it is not money waiting for WeChat's settlement.
async fn a_mini_program_outside_trade_management_needs_no_upload(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let appid = second_mini_program(&app).await;
    let answer = sim_put(
        &app,
        "/sim/mp/trade-management",
        &json!({"appid": appid, "managed": false}),
    )
    .await;
    assert_eq!(answer["managed"], false);
    let put = put_product(
        &app,
        "voucher",
        &json!({"name": "voucher", "price_fen": 500, "delivery": "virtual"}),
    )
    .await;
    assert!(put.status < 300, "{:?}", put.body);
    let (_, token, no) = paid_in(&app, &appid, json!([{"sku": "voucher", "quantity": 1}])).await;
    let unsettled = || async {
        admin_get(&app, "/admin/fulfilment/unsettled").await.body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["out_trade_no"] == no.as_str())
    };
    assert!(unsettled().await, "paid, not yet known to need nothing");
    let jobs = Jobs::new(app.state.clone(), JobOptions::default()).unwrap();
    jobs.drain(JobKind::UploadShipping, 5).await.unwrap();
    let d = detail(&app, &no).await;
    assert_eq!(d["shipping_upload"]["status"], "not_managed", "{d}");
    assert_eq!(d["shipping_upload"]["attempts"], 0, "nothing sent: {d}");
    assert!(d["shipping_upload"]["uploaded_at"].is_null());
    assert_eq!(d["order"]["shipping_state"], "shipped");
    let event = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "shipping_not_managed")
        .expect("a shipping_not_managed event");
    assert_eq!(event["detail"]["appid"], appid.as_str());
    assert!(!kinds(&d).contains(&"shipping_upload_failed".to_owned()));
    assert_eq!(shipped_webhooks(&app, &no).await, 1);
    assert_eq!(
        app.order(&token, &no).await.body["shipping_state"],
        "shipped"
    );
    assert!(!unsettled().await, "WeChat holds nothing of it");
    assert!(
        sim_order(&app, &no).await["trade_management"].is_null(),
        "WeChat has nothing of it"
    );
    // Nothing more to do, ever.
    make_due(&app, &no).await;
    assert_eq!(jobs.drain(JobKind::UploadShipping, 5).await.unwrap(), 0);

    // An express order of that mini program: its parcels ship, and nothing is uploaded.
    let (_, _, express) = paid_in(&app, &appid, json!([{"sku": "coffee", "quantity": 1}])).await;
    let shipped = ship(
        &app,
        &express,
        &json!({"express_company": "ZTO", "tracking_no": "ZT42", "last": true}),
    )
    .await;
    assert_eq!(shipped.status, 201, "{:?}", shipped.body);
    assert_eq!(shipped.body["shipping_upload"]["status"], "not_managed");
    assert_eq!(shipped.body["order"]["shipping_state"], "shipped");

    // The default mini program is still under trade management: its orders upload.
    let default_appid = app.state.registry.default_app().appid.clone();
    let (_, _, managed) = paid_in(
        &app,
        &default_appid,
        json!([{"sku": "coffee", "quantity": 1}]),
    )
    .await;
    let shipped = ship(
        &app,
        &managed,
        &json!({"express_company": "ZTO", "tracking_no": "ZT43", "last": true}),
    )
    .await;
    assert_eq!(shipped.body["shipping_upload"]["status"], "uploaded");

    let doc = app.get("/openapi.json", None).await;
    let statuses = doc.body["components"]["schemas"]["UploadStatus"].to_string();
    assert!(statuses.contains("not_managed"), "{statuses}");
}

/// An express parcel names a company of WeChat's list for the mini program (cached); one
/// outside it is refused naming the field, and nothing changes. Without WeChat and without a
/// cached list, 503. Same-city parcels name their courier freely.
async fn express_companies_come_from_wechats_list(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let appid = app.state.registry.default_app().appid.clone();
    let (_, _, no) = paid(&app, json!([{"sku": "coffee", "quantity": 1}])).await;
    let parcel = json!({"express_company": "JTSDEXPRESS", "tracking_no": "JT0001", "last": true});

    // WeChat cannot be asked, and nothing is cached: 503, nothing changes.
    let before = detail(&app, &no).await;
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let a = ship(&app, &no, &parcel).await;
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.body["code"], "wechat_unavailable");
    assert!(a.body["message"].as_str().unwrap().contains(&appid));
    let list = admin_get(&app, &format!("/admin/apps/{appid}/delivery-companies")).await;
    assert_eq!(list.status, 503, "{:?}", list.body);
    app.set_faults(json!({})).await;
    let after = detail(&app, &no).await;
    assert_eq!(after["order"], before["order"]);
    assert_eq!(after["events"], before["events"]);

    // The list, for the console's ship form.
    let list = admin_get(&app, &format!("/admin/apps/{appid}/delivery-companies")).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(list.body["appid"], appid.as_str());
    let companies = list.body["companies"].as_array().unwrap();
    for (id, name) in [
        ("SF", "顺丰速运"),
        ("ZTO", "中通快递"),
        ("YTO", "圆通速递"),
        ("YD", "韵达速递"),
        ("STO", "申通快递"),
        ("JD", "京东物流"),
        ("EMS", "EMS"),
        ("JTSDEXPRESS", "极兔速递"),
    ] {
        assert!(
            companies
                .iter()
                .any(|c| c["delivery_id"] == id && c["delivery_name"] == name),
            "{id}: {companies:?}"
        );
    }
    let unknown = admin_get(&app, "/admin/apps/wxnosuchapp0000000/delivery-companies").await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);

    // Cached: WeChat is not asked again (it would fail now).
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let cached = admin_get(&app, &format!("/admin/apps/{appid}/delivery-companies")).await;
    assert_eq!(cached.status, 200, "{:?}", cached.body);
    // A company WeChat does not list: 400 naming the field, nothing changes.
    let wrong = ship(
        &app,
        &no,
        &json!({"express_company": "NOSUCHEXPRESS", "tracking_no": "NX1", "last": true}),
    )
    .await;
    app.set_faults(json!({})).await;
    assert_eq!(wrong.status, 400, "{:?}", wrong.body);
    assert_eq!(wrong.body["code"], "invalid_request");
    let message = wrong.body["message"].as_str().unwrap();
    assert!(
        message.contains("express_company") && message.contains("NOSUCHEXPRESS"),
        "{message}"
    );
    let after = detail(&app, &no).await;
    assert_eq!(after["order"], before["order"]);
    assert_eq!(after["events"], before["events"]);
    assert_eq!(after["shipments"], json!([]));

    // One it lists: shipped and uploaded.
    let a = ship(&app, &no, &parcel).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["shipping_upload"]["status"], "uploaded");
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(
        wx["shipping"]["shipping_list"][0]["express_company"],
        "JTSDEXPRESS"
    );

    // Same-city delivery carries no express company of WeChat's list: the courier is free.
    let put = put_product(
        &app,
        "cake",
        &json!({"name": "Cake", "price_fen": 3800, "delivery": "same_city"}),
    )
    .await;
    assert!(put.status < 300, "{:?}", put.body);
    let (_, _, city) = paid(&app, json!([{"sku": "cake", "quantity": 1}])).await;
    let a = ship(
        &app,
        &city,
        &json!({"express_company": "OWNRIDER", "tracking_no": "R1"}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["shipping_upload"]["status"], "uploaded");
    assert_eq!(
        sim_order(&app, &city).await["trade_management"]["shipping"]["logistics_type"],
        2
    );
}

/// The items of an order's parcels, summed, never exceed the order (two parcels at once
/// included), and a last parcel that lists items covers the rest; each refusal changes
/// nothing.
async fn parcel_items_are_summed_against_the_order(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (_, _, no) = paid(
        &app,
        json!([{"sku": "coffee", "quantity": 2}, {"sku": "tea", "quantity": 1}]),
    )
    .await;
    let first = ship(
        &app,
        &no,
        &json!({"express_company": "ZTO", "tracking_no": "ZT1", "items": [{"sku": "coffee", "quantity": 1}]}),
    )
    .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let before = detail(&app, &no).await;
    for (body, words) in [
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT2", "items": [{"sku": "coffee", "quantity": 2}]}),
            vec!["items", "coffee", "3", "2"],
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT2", "items": [{"sku": "coffee", "quantity": 1}], "last": true}),
            vec!["items", "tea x1"],
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT2", "items": [{"sku": "tea", "quantity": 1}], "last": true}),
            vec!["items", "coffee x1"],
        ),
    ] {
        let a = ship(&app, &no, &body).await;
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        assert_eq!(a.body["code"], "invalid_request");
        let message = a.body["message"].as_str().unwrap();
        for word in words {
            assert!(message.contains(word), "{word:?} in {message}");
        }
        let after = detail(&app, &no).await;
        assert_eq!(after["order"], before["order"]);
        assert_eq!(after["events"], before["events"]);
        assert_eq!(after["shipments"], before["shipments"]);
    }
    // Not last: a parcel of the tea alone is fine; the last one covers the coffee left.
    let tea = ship(
        &app,
        &no,
        &json!({"express_company": "YTO", "tracking_no": "YT1", "items": [{"sku": "tea", "quantity": 1}]}),
    )
    .await;
    assert_eq!(tea.status, 201, "{:?}", tea.body);
    let last = ship(
        &app,
        &no,
        &json!({"express_company": "YTO", "tracking_no": "YT2", "items": [{"sku": "coffee", "quantity": 1}], "last": true}),
    )
    .await;
    assert_eq!(last.status, 201, "{:?}", last.body);
    assert_eq!(last.body["order"]["shipping_state"], "shipped");
    assert_eq!(last.body["shipping_upload"]["status"], "uploaded");

    // Two parcels of the whole order at once: one is recorded, the other refused.
    let (_, _, other) = paid(&app, json!([{"sku": "coffee", "quantity": 2}])).await;
    let parcel = |tracking: &'static str| json!({"express_company": "ZTO", "tracking_no": tracking, "items": [{"sku": "coffee", "quantity": 2}]});
    let (pa, pb) = (parcel("ZTA"), parcel("ZTB"));
    let (a, b) = tokio::join!(ship(&app, &other, &pa), ship(&app, &other, &pb));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 400], "{:?} {:?}", a.body, b.body);
    assert_eq!(
        detail(&app, &other).await["shipments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A last parcel without items is the rest of the order: nothing to sum.
    let rest = ship(
        &app,
        &other,
        &json!({"express_company": "ZTO", "tracking_no": "ZTC", "last": true}),
    )
    .await;
    assert_eq!(rest.status, 201, "{:?}", rest.body);
}

/// A second mini program's order, end to end through the simulator: shipped in two parcels
/// (WeChat manages it under that mini program's appid), the buyer confirms receipt, WeChat
/// settles and pushes to that mini program's URL, and the order settles here once.
async fn a_second_mini_programs_order_settles_through_the_push(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let appid = second_mini_program(&app).await;
    let token = "pushToken2026";
    let aes = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let set = crate::tenancy::admin_patch(
        &app,
        &format!("/admin/apps/{appid}"),
        &json!({"push_token": token, "push_encoding_aes_key": aes}),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let answer = sim_put(
        &app,
        "/sim/mp/push",
        &json!({"appid": appid, "url": format!("{}/notify/mp/{appid}", app.base),
                "token": token, "encoding_aes_key": aes, "mode": "safe", "format": "json"}),
    )
    .await;
    assert_eq!(answer["appid"], appid.as_str());
    let list = admin_get(&app, &format!("/admin/apps/{appid}/delivery-companies")).await;
    assert_eq!(list.status, 200, "{:?}", list.body);

    let (_, _, no) = paid_in(
        &app,
        &appid,
        json!([{"sku": "coffee", "quantity": 2}, {"sku": "tea", "quantity": 1}]),
    )
    .await;
    let first = ship(
        &app,
        &no,
        &json!({"express_company": "SF", "tracking_no": "SF1001", "receiver_contact": "189****1234",
                "items": [{"sku": "coffee", "quantity": 2}]}),
    )
    .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let last = ship(
        &app,
        &no,
        &json!({"express_company": "YD", "tracking_no": "YD1002",
                "items": [{"sku": "tea", "quantity": 1}], "last": true}),
    )
    .await;
    assert_eq!(last.status, 201, "{:?}", last.body);
    assert_eq!(last.body["shipping_upload"]["status"], "uploaded");
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(wx["appid"], appid.as_str(), "{wx}");
    assert_eq!(wx["order_state"], 2, "{wx}");
    assert_eq!(wx["shipping"]["shipping_list"].as_array().unwrap().len(), 2);

    crate::helpers::sim_control(
        &app,
        &format!("/sim/orders/{no}/confirm-receipt"),
        &json!({}),
    )
    .await;
    assert!(
        crate::push::settles(&app, &no).await,
        "settled by the push to {appid}"
    );
    let d = detail(&app, &no).await;
    assert_eq!(d["order"]["shipping_state"], "settled", "{d}");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.settled'",
            &no,
        )
        .await,
        1
    );
}

async fn virtual_goods_are_uploaded_by_the_job_after_payment(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let p = put_product(
        &app,
        "ebook",
        &json!({"name": "E-book", "price_fen": 990, "delivery": "virtual"}),
    )
    .await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["delivery"], "virtual");
    let (_, token, no) = paid(&app, json!([{"sku": "ebook", "quantity": 1}])).await;
    let mine = app.order(&token, &no).await;
    assert_eq!(mine.body["delivery"], "virtual");
    assert_eq!(mine.body["shipping_state"], "awaiting_shipment");

    // Shipped by hand: refused, nothing changed.
    let by_hand = ship(
        &app,
        &no,
        &json!({"express_company": "ZTO", "tracking_no": "ZT1", "last": true}),
    )
    .await;
    assert_eq!(by_hand.status, 409, "{:?}", by_hand.body);
    assert_eq!(by_hand.body["code"], "order_not_shippable");

    let done = jobs(&app).drain(JobKind::UploadShipping, 10).await.unwrap();
    assert!(done >= 1);
    let d = detail(&app, &no).await;
    assert_eq!(d["order"]["shipping_state"], "shipped", "{d}");
    assert!(d["order"]["shipped_at"].is_i64());
    assert_eq!(d["shipping_upload"]["status"], "uploaded");
    assert_eq!(d["shipping_upload"]["logistics_type"], 3);
    assert_eq!(d["shipping_upload"]["attempts"], 1);
    assert_eq!(d["shipments"], json!([]));
    assert!(kinds(&d).contains(&"shipping_uploaded".to_owned()));
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(wx["order_state"], 2, "{wx}");
    assert_eq!(wx["shipping"]["logistics_type"], 3);
    assert_eq!(wx["shipping"]["finish_shipping"], true);
    assert_eq!(wx["shipping"]["finish_shipping_count"], 1);
    assert_eq!(shipped_webhooks(&app, &no).await, 1);
    // Nothing more to do.
    assert_eq!(
        jobs(&app).drain(JobKind::UploadShipping, 10).await.unwrap(),
        0
    );
    assert_eq!(
        app.order(&token, &no).await.body["shipping_state"],
        "shipped"
    );
}

async fn an_express_order_ships_in_two_parcels_and_the_last_uploads_v3(backend: Backend) {
    two_parcels(backend, "v3").await;
}

async fn an_express_order_ships_in_two_parcels_and_the_last_uploads_v2(backend: Backend) {
    two_parcels(backend, "v2").await;
}

async fn two_parcels(backend: Backend, version: &str) {
    let app = spawn_quiet(backend, version, |_| {}).await;
    let (_, token, no) = paid(
        &app,
        json!([{"sku": "coffee", "quantity": 2}, {"sku": "tea", "quantity": 1}]),
    )
    .await;
    assert_eq!(app.order(&token, &no).await.body["delivery"], "express");
    let overdue = admin_get(&app, "/admin/fulfilment/overdue?hours=0").await;
    assert_eq!(overdue.status, 200, "{:?}", overdue.body);
    assert_eq!(overdue.body["hours"], 0);
    assert!(
        overdue.body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["out_trade_no"] == no.as_str())
    );
    let not_yet = admin_get(&app, "/admin/fulfilment/overdue").await;
    assert_eq!(not_yet.body["hours"], 48);
    assert!(
        !not_yet.body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["out_trade_no"] == no.as_str())
    );

    let first = ship(
        &app,
        &no,
        &json!({"express_company": "ZTO", "tracking_no": "ZT0001", "items": [{"sku": "coffee", "quantity": 2}]}),
    )
    .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["order"]["shipping_state"], "partially_shipped");
    assert!(first.body["shipping_upload"].is_null());
    assert!(
        first.body["shipment"]["item_desc"]
            .as_str()
            .unwrap()
            .ends_with("x2")
    );
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(wx["order_state"], 1, "nothing uploaded yet: {wx}");

    let last = ship(
        &app,
        &no,
        &json!({"express_company": "YTO", "tracking_no": "YT0002", "items": [{"sku": "tea", "quantity": 1}], "last": true}),
    )
    .await;
    assert_eq!(last.status, 201, "{:?}", last.body);
    assert_eq!(last.body["order"]["shipping_state"], "shipped");
    assert_eq!(last.body["shipping_upload"]["status"], "uploaded");
    assert_eq!(last.body["shipment"]["is_last"], true);
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(wx["order_state"], 2, "{wx}");
    assert_eq!(wx["shipping"]["delivery_mode"], 2);
    assert_eq!(wx["shipping"]["logistics_type"], 1);
    assert_eq!(wx["shipping"]["finish_shipping_count"], 1);
    let packages = wx["shipping"]["shipping_list"].as_array().unwrap();
    assert_eq!(packages.len(), 2);
    assert_eq!(packages[0]["tracking_no"], "ZT0001");
    assert_eq!(packages[1]["express_company"], "YTO");
    assert_eq!(shipped_webhooks(&app, &no).await, 1);

    // The same parcel again: 200, nothing changed; another parcel: 409.
    let events = kinds(&detail(&app, &no).await).len();
    let again = ship(
        &app,
        &no,
        &json!({"express_company": "YTO", "tracking_no": "YT0002", "last": true}),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let more = ship(
        &app,
        &no,
        &json!({"express_company": "YTO", "tracking_no": "YT0003"}),
    )
    .await;
    assert_eq!(more.status, 409, "{:?}", more.body);
    let d = detail(&app, &no).await;
    assert_eq!(kinds(&d).len(), events);
    assert_eq!(d["shipments"].as_array().unwrap().len(), 2);
    assert_eq!(
        kinds(&d).iter().filter(|k| *k == "shipment").count(),
        2,
        "{d}"
    );
    assert_eq!(shipped_webhooks(&app, &no).await, 1);
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(wx["shipping"]["finish_shipping_count"], 1);
    let mine = app.order(&token, &no).await;
    assert_eq!(mine.body["shipping_state"], "shipped");
    let overdue = admin_get(&app, "/admin/fulfilment/overdue?hours=0").await;
    assert!(
        !overdue.body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["out_trade_no"] == no.as_str())
    );
}

async fn make_due(app: &TestApp, no: &str) {
    sqlx::query("UPDATE shipping_uploads SET next_attempt_at = 0 WHERE out_trade_no = $1")
        .bind(no)
        .execute(app.state.store.pool())
        .await
        .unwrap();
}

async fn a_lost_upload_answer_is_not_uploaded_twice(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    // The simulator has no fault that applies a call and loses its answer, so the loss is made
    // in two steps: the server's first attempt fails (it counted the attempt before sending),
    // then WeChat gets the upload as if that attempt had reached it.
    let (_, _, no) = paid(&app, json!([{"sku": "coffee", "quantity": 1}])).await;
    // The express companies are known (the ship form reads them): kept while WeChat fails.
    let appid = app.state.registry.default_app().appid.clone();
    let list = admin_get(&app, &format!("/admin/apps/{appid}/delivery-companies")).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let shipped = ship(
        &app,
        &no,
        &json!({"express_company": "ZTO", "tracking_no": "ZT9", "last": true}),
    )
    .await;
    app.set_faults(json!({})).await;
    assert_eq!(shipped.status, 201, "{:?}", shipped.body);
    assert_eq!(shipped.body["order"]["shipping_state"], "shipped");
    assert_eq!(shipped.body["shipping_upload"]["status"], "pending");
    assert_eq!(shipped.body["shipping_upload"]["attempts"], 1);
    assert!(shipped.body["shipping_upload"]["last_error"].is_string());
    assert_eq!(shipped_webhooks(&app, &no).await, 0);

    let order = app.state.store.order(&no).await.unwrap().unwrap();
    let wechat = app.state.registry.for_order(&order).unwrap();
    wechat
        .mp
        .upload_shipping_info(&wxpay::mp::shipping::UploadShippingInfo {
            order_key: wxpay::mp::shipping::OrderKey::transaction_id(
                order.transaction_id.clone().unwrap(),
            ),
            shipment: wxpay::mp::shipping::Shipment::unified(
                wxpay::mp::shipping::LogisticsType::Express,
                wxpay::mp::shipping::ShippingItem::express("ZTO", "ZT9", "Latte"),
            ),
            upload_time: time::OffsetDateTime::now_utc(),
            payer_openid: order.payer_openid.clone().unwrap(),
        })
        .await
        .unwrap();
    make_due(&app, &no).await;
    jobs(&app).drain(JobKind::UploadShipping, 10).await.unwrap();
    let d = detail(&app, &no).await;
    assert_eq!(d["shipping_upload"]["status"], "uploaded", "{d}");
    assert_eq!(d["shipping_upload"]["attempts"], 1, "no second upload");
    let uploaded = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "shipping_uploaded")
        .unwrap();
    assert_eq!(uploaded["detail"]["via"], "found_at_wechat");
    assert!(kinds(&d).contains(&"shipping_upload_failed".to_owned()));
    let wx = &sim_order(&app, &no).await["trade_management"];
    assert_eq!(wx["shipping"]["finish_shipping_count"], 1, "{wx}");
    assert_eq!(shipped_webhooks(&app, &no).await, 1);

    // A failed attempt that never reached WeChat: the job asks, then uploads, once.
    let (_, _, other) = paid(&app, json!([{"sku": "tea", "quantity": 1}])).await;
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let shipped = ship(
        &app,
        &other,
        &json!({"express_company": "YTO", "tracking_no": "YT9", "last": true}),
    )
    .await;
    app.set_faults(json!({})).await;
    assert_eq!(shipped.body["shipping_upload"]["status"], "pending");
    make_due(&app, &other).await;
    jobs(&app).drain(JobKind::UploadShipping, 10).await.unwrap();
    let d = detail(&app, &other).await;
    assert_eq!(d["shipping_upload"]["status"], "uploaded", "{d}");
    assert_eq!(d["shipping_upload"]["attempts"], 2);
    let wx = &sim_order(&app, &other).await["trade_management"];
    assert_eq!(wx["order_state"], 2, "{wx}");
    assert_eq!(wx["shipping"]["finish_shipping_count"], 1, "{wx}");
    assert_eq!(shipped_webhooks(&app, &other).await, 1);
}

async fn bad_shipments_are_refused_and_change_nothing(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let parcel = json!({"express_company": "ZTO", "tracking_no": "ZT1"});
    let unknown = ship(&app, "WX00000000000000nosuchorder", &parcel).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    assert_eq!(unknown.body["code"], "not_found");

    // Unpaid.
    let (_, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    let unpaid = created.body["out_trade_no"].as_str().unwrap().to_owned();
    let a = ship(&app, &unpaid, &parcel).await;
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["code"], "order_not_shippable");

    let (_, _, no) = paid(&app, json!([{"sku": "coffee", "quantity": 2}])).await;
    let before = detail(&app, &no).await;
    for (body, why) in [
        (
            json!({"express_company": "ZTO", "tracking_no": ""}),
            "empty tracking_no",
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "   "}),
            "blank tracking_no",
        ),
        (
            json!({"express_company": "", "tracking_no": "ZT1"}),
            "empty company",
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT 1"}),
            "space in tracking_no",
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT1", "items": [{"sku": "cake", "quantity": 1}]}),
            "not a line of the order",
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT1", "items": [{"sku": "coffee", "quantity": 3}]}),
            "more than ordered",
        ),
        (
            json!({"express_company": "SF", "tracking_no": "SF1"}),
            "SF without a contact",
        ),
        (
            json!({"express_company": "ZTO", "tracking_no": "ZT1", "colour": "red"}),
            "unknown field",
        ),
        (json!({"tracking_no": "ZT1"}), "no company"),
    ] {
        let a = ship(&app, &no, &body).await;
        assert_eq!(a.status, 400, "{why}: {:?}", a.body);
        assert!(a.body["code"].is_string() && a.body["message"].is_string());
    }
    let after = detail(&app, &no).await;
    assert_eq!(after["order"], before["order"]);
    assert_eq!(after["events"], before["events"]);
    assert_eq!(after["shipments"], json!([]));
    assert!(after["shipping_upload"].is_null());

    // An SF parcel with its masked contact is fine.
    let sf = ship(
        &app,
        &no,
        &json!({"express_company": "SF", "tracking_no": "SF1", "receiver_contact": "189****1234", "last": true}),
    )
    .await;
    assert_eq!(sf.status, 201, "{:?}", sf.body);
    assert_eq!(sf.body["shipping_upload"]["status"], "uploaded");
    let bad_hours = admin_get(&app, "/admin/fulfilment/overdue?hours=721").await;
    assert_eq!(bad_hours.status, 400);

    // A merchant-priced order says how it is delivered.
    let (openid, _) = app.login().await;
    let pickup = admin_post(
        &app,
        "/admin/orders",
        &json!({"openid": openid, "amount_fen": 500, "description": "Flowers", "delivery": "pickup"}),
    )
    .await;
    assert_eq!(pickup.status, 201, "{:?}", pickup.body);
    assert_eq!(pickup.body["delivery"], "pickup");
    let wrong = admin_post(
        &app,
        "/admin/orders",
        &json!({"openid": openid, "amount_fen": 500, "description": "Flowers", "delivery": "drone"}),
    )
    .await;
    assert_eq!(wrong.status, 400, "{:?}", wrong.body);

    let doc = app.get("/openapi.json", None).await;
    let paths = &doc.body["paths"];
    assert!(paths["/admin/orders/{out_trade_no}/shipments"]["post"].is_object());
    assert!(paths["/admin/fulfilment/overdue"]["get"].is_object());
    let schemas = &doc.body["components"]["schemas"];
    for name in [
        "CreateShipment",
        "Shipment",
        "ShippingUpload",
        "OverdueOrders",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    assert!(schemas["Order"]["properties"]["shipping_state"].is_object());
    assert!(schemas["Product"]["properties"]["delivery"].is_object());
}
