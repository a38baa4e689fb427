//! Merchant webhooks: delivered from the outbox to a test receiver, signed, retried, never
//! created twice.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::SecretString;
use serde_json::{Value, json};
use wxpay_server::jobs::webhooks::{DEFAULT_TOLERANCE_SECS, SIGNATURE_HEADER, verify};
use wxpay_server::jobs::{ExecutionOutcome, JobKind, JobOptions};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::{TestApp, TestDatabase, build_app, spawn_instance, test_settings};
use crate::jobs::{admin_get, eager_jobs, spawn_quiet};

const SECRET: &str = "whsec_0123456789abcdef";

/// What the receiver got: (signature header, body).
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A merchant endpoint that fails the first `failures` deliveries with 500, then answers 200.
async fn receiver(failures: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        post(move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                let signature = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let mut log = log.lock().unwrap();
                log.push((signature, body));
                if log.len() <= failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn spawn_with_receiver(backend: Backend, failures: usize) -> (TestApp, Received) {
    let (url, received) = receiver(failures).await;
    let app = spawn_quiet(backend, "v3", |s| {
        s.webhook_url = Some(url);
        s.webhook_secret = Some(SecretString::from(SECRET));
    })
    .await;
    (app, received)
}

fn now_secs() -> i64 {
    wxpay_server::store::now_ms() / 1000
}

async fn webhooks_are_signed_and_retried_until_acknowledged(backend: Backend) {
    let (app, received) = spawn_with_receiver(backend, 2).await;
    let jobs = eager_jobs(&app);
    let (_, _, no) = app.paid_order().await;
    for attempt in 1..=3 {
        assert_eq!(
            jobs.try_execute_task(JobKind::DeliverWebhooks)
                .await
                .unwrap(),
            ExecutionOutcome::TaskCompleted,
            "attempt {attempt}"
        );
    }
    assert_eq!(
        jobs.try_execute_task(JobKind::DeliverWebhooks)
            .await
            .unwrap(),
        ExecutionOutcome::EmptyQueue
    );

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    let mut ids = Vec::new();
    for (signature, body) in &received {
        verify(
            SECRET.as_bytes(),
            signature,
            body,
            now_secs(),
            DEFAULT_TOLERANCE_SECS,
        )
        .expect("a valid signature");
        assert!(
            verify(
                b"another secret",
                signature,
                body,
                now_secs(),
                DEFAULT_TOLERANCE_SECS
            )
            .is_err()
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "order.paid");
        assert_eq!(event["data"]["out_trade_no"], no.as_str());
        assert_eq!(event["data"]["status"], "SUCCESS");
        assert!(event["created_at"].as_i64().is_some());
        ids.push(event["id"].as_str().unwrap().to_owned());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.starts_with("evt_")),
        "one event, the same id on every attempt: {ids:?}"
    );

    let listed = admin_get(&app, "/admin/webhooks").await;
    let hook = &listed.body["webhooks"][0];
    assert_eq!(hook["attempts"], 3);
    assert_eq!(hook["status"], "delivered");
    assert!(hook["delivered_at"].as_i64().is_some());
    let kinds: Vec<String> = app
        .state
        .store
        .events(&no)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "webhook_failed").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "webhook_delivered").count(),
        1,
        "{kinds:?}"
    );
}

async fn duplicate_notifications_make_one_order_paid_webhook(backend: Backend) {
    let (app, received) = spawn_with_receiver(backend, 0).await;
    let jobs = eager_jobs(&app);
    app.set_faults(json!({"notify_duplicate_rate": 1.0})).await;
    let (_, _, first) = app.paid_order().await;
    let (_, _, second) = app.paid_order().await;
    jobs.drain(JobKind::DeliverWebhooks, 10).await.unwrap();
    let received = received.lock().unwrap().clone();
    let mut paid: Vec<String> = received
        .iter()
        .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap())
        .filter(|e| e["type"] == "order.paid")
        .map(|e| e["data"]["out_trade_no"].as_str().unwrap().to_owned())
        .collect();
    paid.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(paid, expected, "exactly one order.paid per order");
    assert_eq!(app.outbox_rows(&first).await, 1);
}

async fn without_a_webhook_url_events_wait_in_the_outbox(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (_, _, no) = app.paid_order().await;
    assert_eq!(
        jobs.try_execute_task(JobKind::DeliverWebhooks)
            .await
            .unwrap(),
        ExecutionOutcome::EmptyQueue
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE out_trade_no = $1 AND delivered_at IS NULL",
            &no
        )
        .await,
        1
    );
    // Shown as such, not as pending forever.
    let listed = admin_get(&app, "/admin/webhooks").await;
    assert_eq!(listed.body["webhooks"][0]["status"], "not_configured");
    let detail = admin_get(&app, &format!("/admin/orders/{no}")).await;
    assert_eq!(detail.body["webhooks"][0]["status"], "not_configured");
}

async fn a_failed_webhook_is_retrying_and_a_new_one_pending(backend: Backend) {
    let (app, _) = spawn_with_receiver(backend, 1).await;
    let jobs = eager_jobs(&app);
    let (_, _, no) = app.paid_order().await;
    let hooks = admin_get(&app, &format!("/admin/orders/{no}")).await.body["webhooks"].clone();
    assert_eq!(hooks[0]["status"], "pending", "{hooks}");
    jobs.try_execute_task(JobKind::DeliverWebhooks)
        .await
        .unwrap();
    let hooks = admin_get(&app, &format!("/admin/orders/{no}")).await.body["webhooks"].clone();
    assert_eq!(hooks[0]["status"], "retrying", "{hooks}");
}

/// Jobs that never poll in a test's time: only a wake can make the deliverer run.
fn sleepy_jobs() -> JobOptions {
    JobOptions {
        idle_interval: Duration::from_secs(3600),
        ..JobOptions::default()
    }
}

/// A server whose jobs run with [`sleepy_jobs`], delivering to `url`.
async fn spawn_sleepy(backend: Backend, url: &str) -> TestApp {
    let db = TestDatabase::new(backend).await;
    let mut settings = test_settings(&db.url, "v3");
    settings.webhook_url = Some(url.to_owned());
    settings.webhook_secret = Some(SecretString::from(SECRET));
    let (app, _) = build_app(settings).await.expect("the server starts");
    let app = app.with_jobs(Some(sleepy_jobs()));
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

/// Waits (at most a minute, far less than the deliverer's hour-long poll) until the receiver
/// got the `order.paid` webhook of `no`.
async fn received_paid(received: &Received, no: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = received.lock().unwrap().iter().any(|(_, body)| {
            let e: Value = serde_json::from_slice(body).unwrap();
            e["type"] == "order.paid" && e["data"]["out_trade_no"] == no
        });
        if got {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_webhook_leaves_on_the_commit_without_waiting_for_the_poll(backend: Backend) {
    let (url, received) = receiver(0).await;
    let app = spawn_sleepy(backend, &url).await;
    app.state.store.notices().listening().await;
    for _ in 0..2 {
        let (_, _, no) = app.paid_order().await;
        assert!(
            received_paid(&received, &no).await,
            "the webhook of {no} waited for the idle poll"
        );
    }
}

both_backends!(
    a_failed_webhook_is_retrying_and_a_new_one_pending,
    a_webhook_leaves_on_the_commit_without_waiting_for_the_poll,
);

/// Two instances on one PostgreSQL: A (no jobs) writes the outbox row; B's deliverer, which
/// never polls in the test's time, is woken by A's `NOTIFY` and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_written_by_one_instance_is_delivered_by_another_at_once() {
    let (url, received) = receiver(0).await;
    let a = spawn_quiet(Backend::Postgres, "v3", |s| {
        s.webhook_url = Some(url.clone());
        s.webhook_secret = Some(SecretString::from(SECRET));
    })
    .await;
    let b = spawn_instance(&a, Some(sleepy_jobs()), |s| {
        s.webhook_url = Some(url.clone());
        s.webhook_secret = Some(SecretString::from(SECRET));
    })
    .await;
    b.state.store.notices().listening().await;
    let (_, _, no) = a.paid_order().await;
    assert!(
        received_paid(&received, &no).await,
        "B's deliverer was not woken by A's outbox write"
    );
}

both_backends!(
    webhooks_are_signed_and_retried_until_acknowledged,
    duplicate_notifications_make_one_order_paid_webhook,
    without_a_webhook_url_events_wait_in_the_outbox,
);
