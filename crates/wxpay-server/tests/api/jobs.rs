//! The background jobs, drained by hand on a server that runs none itself.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use wxpay_server::Settings;
use wxpay_server::jobs::{ExecutionOutcome, JobKind, JobOptions, Jobs};
use wxpay_server::store::{Backend, OrderStatus, RefundStatus};

use crate::both_backends;
use crate::helpers::{Answer, TestApp, TestDatabase, test_settings};

/// A server like `spawn_app`'s, without background jobs: the tests drain them.
pub async fn spawn_quiet(
    backend: Backend,
    api_version: &str,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let db = TestDatabase::new(backend).await;
    let mut settings = test_settings(&db.url, api_version);
    adjust(&mut settings);
    let (app, _) = crate::helpers::build_app(settings)
        .await
        .expect("the server starts");
    let app = app.with_jobs(None);
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        state,
        backend,
        db,
    }
}

/// Jobs with no waiting: everything is due at once, webhooks are retried at once.
pub fn eager_jobs(app: &TestApp) -> Jobs {
    Jobs::new(
        app.state.clone(),
        JobOptions {
            reconcile_after: Duration::ZERO,
            refund_retry_every: Duration::ZERO,
            refund_check_every: Duration::ZERO,
            webhook_backoff: Duration::ZERO,
            bill_after_hour: 0,
            ..JobOptions::default()
        },
    )
    .unwrap()
}

pub fn admin_token(app: &TestApp) -> String {
    app.state
        .admin_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned()
}

pub async fn admin_get(app: &TestApp, path: &str) -> Answer {
    app.get(path, Some(&admin_token(app))).await
}

pub async fn admin_post(app: &TestApp, path: &str, body: &Value) -> Answer {
    app.post_json(path, Some(&admin_token(app)), body).await
}

/// The simulator's view of an order (through the `/sim` proxy).
pub async fn sim_order(app: &TestApp, no: &str) -> Value {
    let a = app
        .get(&format!("/sim/orders/{no}"), Some(&app.admin()))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

/// A created (unpaid) order: (openid, token, out_trade_no, payment).
pub async fn unpaid_order(app: &TestApp) -> (String, String, String, Value) {
    let (openid, token) = app.login().await;
    let created = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 2}]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    (openid, token, no, created.body["payment"].clone())
}

pub async fn order_status(app: &TestApp, no: &str) -> OrderStatus {
    app.state.store.order(no).await.unwrap().unwrap().status
}

async fn reconcile(backend: Backend, version: &str) {
    let app = spawn_quiet(backend, version, |_| {}).await;
    let jobs = eager_jobs(&app);
    app.set_faults(json!({"notify_drop_rate": 1.0})).await;
    let (openid, _, no, payment) = unpaid_order(&app).await;
    let untouched = {
        let (_, _, other, _) = unpaid_order(&app).await;
        other
    };
    assert_eq!(app.sim_pay(&payment, &openid).await.status, 200);
    app.flush().await;
    assert_eq!(
        order_status(&app, &no).await,
        OrderStatus::NotPay,
        "the notification was dropped"
    );

    assert!(jobs.drain(JobKind::ReconcileUnpaid, 10).await.unwrap() >= 1);
    let order = app.state.store.order(&no).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Success);
    assert_eq!(
        order.transaction_id.as_deref(),
        sim_order(&app, &no).await["transaction_id"].as_str()
    );
    assert_eq!(order_status(&app, &untouched).await, OrderStatus::NotPay);
    // Each unpaid order is asked about once per interval: draining again finds nothing.
    assert_eq!(
        jobs.try_execute_task(JobKind::ReconcileUnpaid)
            .await
            .unwrap(),
        ExecutionOutcome::EmptyQueue
    );

    // The notification arrives late after all: nothing changes twice.
    app.set_faults(json!({})).await;
    let resent = app
        .post_json("/sim/notifications/flush", Some(&app.admin()), &json!({}))
        .await;
    assert_eq!(resent.status, 200);
    assert_eq!(app.outbox_rows(&no).await, 1);
    assert_eq!(app.paid_events(&no).await, 1);
    let kinds: Vec<String> = app
        .state
        .store
        .events(&no)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"query".to_owned()), "{kinds:?}");
}

async fn the_reconcile_job_pays_a_v3_order_whose_notification_was_dropped(backend: Backend) {
    reconcile(backend, "v3").await;
}

async fn the_reconcile_job_pays_a_v2_order_whose_notification_was_dropped(backend: Backend) {
    reconcile(backend, "v2").await;
}

async fn expire(app: &TestApp, no: &str) {
    sqlx::query("UPDATE orders SET expires_at = 1 WHERE out_trade_no = $1")
        .bind(no)
        .execute(app.state.store.pool())
        .await
        .unwrap();
}

async fn expired_orders_are_closed_at_wechat_and_here(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (_, _, unpaid, _) = unpaid_order(&app).await;
    let (_, _, fresh, _) = unpaid_order(&app).await;
    // Paid at WeChat, but the notification was lost and the order expired here meanwhile.
    app.set_faults(json!({"notify_drop_rate": 1.0})).await;
    let (openid, _, paid, payment) = unpaid_order(&app).await;
    assert_eq!(app.sim_pay(&payment, &openid).await.status, 200);
    expire(&app, &unpaid).await;
    expire(&app, &paid).await;

    assert_eq!(jobs.drain(JobKind::CloseExpired, 10).await.unwrap(), 1);
    assert_eq!(order_status(&app, &unpaid).await, OrderStatus::Closed);
    assert_eq!(sim_order(&app, &unpaid).await["trade_state"], "CLOSED");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.closed'",
            &unpaid
        )
        .await,
        1
    );
    assert_eq!(
        order_status(&app, &paid).await,
        OrderStatus::Success,
        "WeChat's payment wins"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.closed'",
            &paid
        )
        .await,
        0
    );
    assert_eq!(order_status(&app, &fresh).await, OrderStatus::NotPay);
    assert_eq!(
        jobs.try_execute_task(JobKind::CloseExpired).await.unwrap(),
        ExecutionOutcome::EmptyQueue
    );
}

async fn processing_refunds_are_followed_until_they_succeed(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (_, _, no) = app.paid_order().await;
    app.set_faults(json!({"notify_drop_rate": 1.0})).await;
    let created = admin_post(
        &app,
        &format!("/admin/orders/{no}/refunds"),
        &json!({"amount_fen": 1000}),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let out_refund_no = created.body["out_refund_no"].as_str().unwrap().to_owned();
    app.flush().await;
    let mut status = RefundStatus::Processing;
    for _ in 0..100 {
        jobs.drain(JobKind::FollowRefunds, 5).await.unwrap();
        status = app
            .state
            .store
            .refund(&out_refund_no)
            .await
            .unwrap()
            .unwrap()
            .status;
        if status != RefundStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, RefundStatus::Success);
    assert_eq!(order_status(&app, &no).await, OrderStatus::Refund);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND event_type = 'refund.succeeded'", &no).await, 1);
    assert_eq!(
        jobs.try_execute_task(JobKind::FollowRefunds).await.unwrap(),
        ExecutionOutcome::EmptyQueue
    );
}

async fn two_instances_never_lease_the_same_webhook(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let mut numbers = Vec::new();
    for _ in 0..4 {
        numbers.push(app.paid_order().await.2);
    }
    let store = &app.state.store;
    let (a, b) = tokio::join!(
        store.lease_due_webhooks("instance-a", 60_000, 3),
        store.lease_due_webhooks("instance-b", 60_000, 3)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<i64> = a.iter().chain(b.iter()).map(|e| e.id).collect();
    assert_eq!(ids.len(), 4, "{a:?} {b:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "an event was leased twice");
    assert!(
        store
            .lease_due_webhooks("instance-c", 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_daily_bill_job_reconciles_yesterday_once(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    // Yesterday's bill exists from 10:00 Beijing time: ten hours on, it exists at any hour.
    let advanced = app
        .post_json(
            "/sim/clock/advance",
            Some(&app.admin()),
            &json!({"seconds": 36_000}),
        )
        .await;
    assert_eq!(advanced.status, 200);
    assert_eq!(jobs.drain(JobKind::DailyBill, 5).await.unwrap(), 1);
    let yesterday = wxpay_server::jobs::bills::today_cst()
        .previous_day()
        .unwrap();
    let date = wxpay_server::jobs::bills::format_date(yesterday);
    let stored = app
        .state
        .store
        .reconciliation(&app.state.registry.default_app().mchid, &date)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status, "no_bill",
        "the simulator had no trades yesterday"
    );
    assert_eq!(
        jobs.try_execute_task(JobKind::DailyBill).await.unwrap(),
        ExecutionOutcome::EmptyQueue
    );
    let jobs_state = admin_get(&app, "/admin/jobs").await;
    assert_eq!(jobs_state.status, 200);
    assert_eq!(jobs_state.body["jobs"][0]["name"], "daily_bill");
}

both_backends!(
    the_reconcile_job_pays_a_v3_order_whose_notification_was_dropped,
    the_reconcile_job_pays_a_v2_order_whose_notification_was_dropped,
    expired_orders_are_closed_at_wechat_and_here,
    processing_refunds_are_followed_until_they_succeed,
    two_instances_never_lease_the_same_webhook,
    the_daily_bill_job_reconciles_yesterday_once,
);
