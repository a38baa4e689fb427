//! Refunds through the back office: partial, racing, lost answers, refusals.

use serde_json::json;
use wxpay_server::jobs::JobKind;
use wxpay_server::store::{Backend, NewOrder, OrderStatus, PaymentConfirmation, RefundStatus};

use crate::both_backends;
use crate::helpers::TestApp;
use crate::jobs::{admin_get, admin_post, eager_jobs, order_status, sim_order, spawn_quiet};

async fn refund(app: &TestApp, no: &str, amount: u64) -> crate::helpers::Answer {
    admin_post(
        app,
        &format!("/admin/orders/{no}/refunds"),
        &json!({"amount_fen": amount, "reason": "退货"}),
    )
    .await
}

/// The refunds the simulator holds for an order: (out_refund_no, amount).
async fn sim_refunds(app: &TestApp, no: &str) -> Vec<(String, u64)> {
    sim_order(app, no).await["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["out_refund_no"].as_str().unwrap().to_owned(),
                r["amount"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The refund once WeChat settled it and its notification arrived (the simulator settles a
/// refund a few time-scaled seconds after accepting it).
pub async fn settled(app: &TestApp, out_refund_no: &str) -> crate::helpers::Answer {
    for _ in 0..200 {
        app.flush().await;
        let a = admin_get(app, &format!("/admin/refunds/{out_refund_no}")).await;
        if a.body["status"] != "PROCESSING" {
            return a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    admin_get(app, &format!("/admin/refunds/{out_refund_no}")).await
}

async fn partial_refunds(backend: Backend, version: &str) {
    let app = spawn_quiet(backend, version, |_| {}).await;
    let (_, token, no) = app.paid_order().await;
    let first = refund(&app, &no, 1000).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["amount_fen"], 1000);
    assert_eq!(first.body["out_trade_no"], no.as_str());
    assert!(first.body["refund_id"].as_str().is_some());
    let first_no = first.body["out_refund_no"].as_str().unwrap().to_owned();
    let shown = settled(&app, &first_no).await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.body["status"], "SUCCESS",
        "the refund notification completed it: {:?}",
        shown.body
    );
    assert_eq!(app.order(&token, &no).await.body["status"], "REFUND");

    let second = refund(&app, &no, 2600).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    let too_much = refund(&app, &no, 1).await;
    assert_eq!(too_much.status, 409, "{:?}", too_much.body);
    assert_eq!(too_much.body["code"], "refund_exceeds_paid");
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    assert_eq!(order.refunded_fen, 3600);
    let at_wechat = sim_refunds(&app, &no).await;
    assert_eq!(at_wechat.len(), 2);
    assert_eq!(at_wechat.iter().map(|r| r.1).sum::<u64>(), 3600);

    let detail = admin_get(&app, &format!("/admin/orders/{no}")).await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.body["refundable_fen"], 0);
    assert_eq!(detail.body["refunds"].as_array().unwrap().len(), 2);
    let kinds: Vec<&str> = detail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"refund_requested") && kinds.contains(&"refund"),
        "{kinds:?}"
    );

    // Bad requests change nothing.
    for body in [
        json!({"amount_fen": 0}),
        json!({"amount_fen": -5}),
        json!({"amount_fen": 1, "reason": "x".repeat(81)}),
        json!({"amount": 1}),
    ] {
        let a = admin_post(&app, &format!("/admin/orders/{no}/refunds"), &body).await;
        assert_eq!(a.status, 400, "{body} {:?}", a.body);
    }
    assert_eq!(refund(&app, "NO_SUCH_ORDER", 1).await.status, 404);
    assert_eq!(
        admin_get(&app, "/admin/refunds/NO_SUCH_REFUND")
            .await
            .status,
        404
    );
    assert_eq!(
        app.state.store.refunds_of_order(&no).await.unwrap().len(),
        2
    );
}

async fn partial_v3_refunds_add_up_to_the_paid_amount_and_no_more(backend: Backend) {
    partial_refunds(backend, "v3").await;
}

async fn partial_v2_refunds_add_up_to_the_paid_amount_and_no_more(backend: Backend) {
    partial_refunds(backend, "v2").await;
}

async fn concurrent_refunds_never_exceed_the_paid_amount(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (_, _, no) = app.paid_order().await;
    let (a, b, c, d) = tokio::join!(
        refund(&app, &no, 1000),
        refund(&app, &no, 1000),
        refund(&app, &no, 1000),
        refund(&app, &no, 1000)
    );
    let mut statuses = vec![a.status, b.status, c.status, d.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [201, 201, 201, 409],
        "{:?}",
        [a.body, b.body, c.body, d.body]
    );
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    assert_eq!(order.refunded_fen, 3000);
    assert_eq!(
        sim_refunds(&app, &no)
            .await
            .iter()
            .map(|r| r.1)
            .sum::<u64>(),
        3000
    );
    // Repeating a request with its own out_refund_no answers the same refund.
    let body = json!({"amount_fen": 600, "out_refund_no": "MY-REFUND-1"});
    let path = format!("/admin/orders/{no}/refunds");
    let (x, y) = tokio::join!(
        admin_post(&app, &path, &body),
        admin_post(&app, &path, &body)
    );
    let mut statuses = vec![x.status, y.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201], "{:?} {:?}", x.body, y.body);
    assert_eq!(
        app.state
            .store
            .order(&no)
            .await
            .unwrap()
            .unwrap()
            .refunded_fen,
        3600
    );
    let taken = admin_post(
        &app,
        &format!("/admin/orders/{no}/refunds"),
        &json!({"amount_fen": 1, "out_refund_no": "MY-REFUND-1"}),
    )
    .await;
    assert_eq!(taken.body["code"], "out_refund_no_used");
}

async fn a_refund_whose_answer_was_lost_is_resolved_without_a_second_refund(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (_, _, no) = app.paid_order().await;
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let lost = refund(&app, &no, 700).await;
    let never_arrived = refund(&app, &no, 500).await;
    for a in [&lost, &never_arrived] {
        assert_eq!(a.status, 202, "{:?}", a.body);
        assert_eq!(a.body["status"], "PROCESSING");
        assert!(a.body["submitted_at"].is_null());
        assert!(a.body["last_error"].as_str().is_some());
    }
    app.set_faults(json!({})).await;
    // The first one did reach WeChat; only its answer was lost.
    let lost_no = lost.body["out_refund_no"].as_str().unwrap();
    let stored = app.state.store.refund(lost_no).await.unwrap().unwrap();
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    app.state
        .registry
        .default_app()
        .refund(&order, &stored)
        .await
        .unwrap();
    assert_eq!(sim_refunds(&app, &no).await.len(), 1);

    assert!(jobs.drain(JobKind::SubmitRefunds, 5).await.unwrap() >= 1);
    let at_wechat = sim_refunds(&app, &no).await;
    let mut numbers: Vec<&str> = at_wechat.iter().map(|r| r.0.as_str()).collect();
    numbers.sort_unstable();
    let mut expected = vec![
        lost_no,
        never_arrived.body["out_refund_no"].as_str().unwrap(),
    ];
    expected.sort_unstable();
    assert_eq!(numbers, expected, "one refund each at WeChat");
    for no in expected {
        let r = app.state.store.refund(no).await.unwrap().unwrap();
        assert!(r.submitted_at.is_some() && r.refund_id.is_some(), "{r:?}");
    }
    assert_eq!(
        app.state
            .store
            .order(&no)
            .await
            .unwrap()
            .unwrap()
            .refunded_fen,
        1200
    );
    assert_eq!(jobs.drain(JobKind::SubmitRefunds, 5).await.unwrap(), 0);
}

async fn a_refund_refused_by_wechat_is_closed_and_releases_its_amount(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    // Paid in this database only: WeChat never heard of the order and refuses the refund.
    let store = &app.state.store;
    let order = store
        .insert_order(&NewOrder {
            out_trade_no: "LOCALONLY0001".into(),
            openid: "o-local".into(),
            appid: app.state.registry.default_app().appid.clone(),
            mchid: app.state.registry.default_app().mchid.clone(),
            sub_mchid: None,
            api_version: wxpay_server::store::ApiVersion::V3,
            source: "admin",
            description: "local".into(),
            items: vec![],
            amount_fen: 500,
            client_ip: "127.0.0.1".into(),
            expires_at: wxpay_server::store::now_ms() + 600_000,
        })
        .await
        .unwrap();
    store
        .mark_paid(&PaymentConfirmation {
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: "4200000000000000000000000001".into(),
            amount_fen: 500,
            payer_openid: None,
            paid_at: wxpay_server::store::now_ms(),
            dedupe_key: "test:local".into(),
            event: wxpay_server::store::EventKind::Notification,
            detail: json!({}),
        })
        .await
        .unwrap();
    let refused = refund(&app, "LOCALONLY0001", 200).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "refund_rejected");
    let refunds = store.refunds_of_order("LOCALONLY0001").await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].status, RefundStatus::Closed);
    assert_eq!(
        store
            .order("LOCALONLY0001")
            .await
            .unwrap()
            .unwrap()
            .refunded_fen,
        0
    );
    assert_eq!(
        order_status(&app, "LOCALONLY0001").await,
        OrderStatus::Success
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'refund.failed'",
            "LOCALONLY0001"
        )
        .await,
        1
    );
    // An unpaid order cannot be refunded at all.
    let (_, _, unpaid, _) = crate::jobs::unpaid_order(&app).await;
    let a = refund(&app, &unpaid, 1).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (409, Some("order_not_paid"))
    );
}

/// The buyer's `GET /api/orders/{no}` lists the order's refunds with their states, and only
/// what is safe to show the buyer; another user still gets 404.
async fn the_buyer_sees_the_refunds_of_the_order(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (_, token, no) = app.paid_order().await;
    let before = app.order(&token, &no).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    assert_eq!(before.body["refunds"], json!([]));

    let first = refund(&app, &no, 1000).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let first_no = first.body["out_refund_no"].as_str().unwrap().to_owned();
    assert_eq!(settled(&app, &first_no).await.body["status"], "SUCCESS");
    // WeChat does not answer the second: it stays PROCESSING (no jobs run here), with an error
    // the buyer must not see.
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let second = admin_post(
        &app,
        &format!("/admin/orders/{no}/refunds"),
        &json!({"amount_fen": 500}),
    )
    .await;
    app.set_faults(json!({})).await;
    assert_eq!(second.status, 202, "{:?}", second.body);
    assert!(second.body["last_error"].as_str().is_some());
    let second_no = second.body["out_refund_no"].as_str().unwrap().to_owned();

    let a = app.order(&token, &no).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["out_trade_no"], no.as_str());
    assert_eq!(a.body["refunded_fen"], 1500);
    let refunds = a.body["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 2, "{:?}", a.body);
    let (r1, r2) = (&refunds[0], &refunds[1]);
    assert_eq!(r1["out_refund_no"], first_no.as_str());
    assert_eq!(r1["amount_fen"], 1000);
    assert_eq!(r1["status"], "SUCCESS");
    assert_eq!(r1["reason"], "退货");
    assert!(r1["created_at"].as_i64().is_some());
    // WeChat's time of success (the simulator's clock, which runs scaled).
    assert!(r1["succeeded_at"].as_i64().is_some_and(|t| t > 0), "{r1:?}");
    assert_eq!(r2["out_refund_no"], second_no.as_str());
    assert_eq!(r2["amount_fen"], 500);
    assert_eq!(r2["status"], "PROCESSING");
    assert!(r2["reason"].is_null());
    assert!(r2["succeeded_at"].is_null());
    // Only the buyer's fields: no refund id, errors, versions or the order's internals.
    for r in refunds {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "amount_fen",
                "created_at",
                "out_refund_no",
                "reason",
                "status",
                "succeeded_at"
            ]
        );
    }
    for internal in [
        "openid",
        "client_ip",
        "prepay_id",
        "payer_openid",
        "version",
    ] {
        assert!(
            a.body.get(internal).is_none(),
            "{internal} shown: {:?}",
            a.body
        );
    }
    assert!(!String::from_utf8_lossy(&a.bytes).contains("last_error"));

    // Another user's order stays 404; no token, 401.
    let (_, other) = app.login().await;
    let stranger = app.order(&other, &no).await;
    assert_eq!(stranger.status, 404, "{:?}", stranger.body);
    assert_eq!(stranger.body["code"], "not_found");
    assert_eq!(
        app.get(&format!("/api/orders/{no}"), None).await.status,
        401
    );
    // The list stays as it was: refunds are in the order's detail.
    let list = app.get("/api/orders", Some(&token)).await;
    assert!(list.body["orders"][0].get("refunds").is_none());
}

both_backends!(
    the_buyer_sees_the_refunds_of_the_order,
    partial_v3_refunds_add_up_to_the_paid_amount_and_no_more,
    partial_v2_refunds_add_up_to_the_paid_amount_and_no_more,
    concurrent_refunds_never_exceed_the_paid_amount,
    a_refund_whose_answer_was_lost_is_resolved_without_a_second_refund,
    a_refund_refused_by_wechat_is_closed_and_releases_its_amount,
);

/// The console sends its own out_refund_no, once per form: a retried submit (the first answer
/// lost) finds the refund it made instead of making a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_refund_with_its_out_refund_no_refunds_once() {
    let app = spawn_quiet(Backend::Sqlite, "v3", |_| {}).await;
    let (_, _, no) = app.paid_order().await;
    let body = json!({"amount_fen": 700, "reason": "退货", "out_refund_no": "RFCONSOLE0001"});
    let path = format!("/admin/orders/{no}/refunds");
    let first = admin_post(&app, &path, &body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = admin_post(&app, &path, &body).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["out_refund_no"], "RFCONSOLE0001");
    assert_eq!(again.body["refund_id"], first.body["refund_id"]);
    assert_eq!(
        sim_refunds(&app, &no).await,
        vec![("RFCONSOLE0001".to_owned(), 700)]
    );
}
