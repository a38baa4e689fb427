//! Merchant webhooks: delivered from the outbox to a test receiver, signed, retried, never
//! created twice.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::SecretString;
use serde_json::{Value, json};
use wxpay_server::jobs::webhooks::{DEFAULT_TOLERANCE_SECS, SIGNATURE_HEADER, verify};
use wxpay_server::jobs::{ExecutionOutcome, JobKind};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::TestApp;
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
}

both_backends!(
    webhooks_are_signed_and_retried_until_acknowledged,
    duplicate_notifications_make_one_order_paid_webhook,
    without_a_webhook_url_events_wait_in_the_outbox,
);
