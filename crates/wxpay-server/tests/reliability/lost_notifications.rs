//! Scenario 1: 1,000 orders, 30% of notification attempts dropped, 30% duplicated, deliveries
//! shuffled. After the reconcile job every paid order is paid here with exactly one `order.paid`
//! event, no unpaid order is paid, and the late deliveries that follow change nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use wxpay_server::jobs::JobKind;
use wxpay_server::store::{Backend, OrderStatus};

use crate::harness::{count, eager_jobs, figures, sandbox, sim_pay, sim_user};

const ORDERS: usize = 1000;
const USERS: usize = 100;
/// One order in five is left unpaid.
const UNPAID_EVERY: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn lost_repeated_and_shuffled_notifications_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn lost_repeated_and_shuffled_notifications_postgres() {
    run(Backend::Postgres).await;
}

async fn run(backend: Backend) {
    let started = Instant::now();
    // WeChat's retry schedule slowed down 100 times: a dropped notification is retried long
    // after the reconcile job ran (the flush at the end delivers the retries, late).
    let s = sandbox(backend, "v3", |settings| {
        settings.sandbox_time_scale = 0.01;
    })
    .await;
    let app = &s.app;
    let sim_url = app.state.sandbox_url.clone().unwrap();
    s.sim
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_drop_rate: 0.3,
            notify_duplicate_rate: 0.3,
            notify_shuffle_ms: 300,
            ..Default::default()
        })
        .unwrap();

    let mut users = Vec::new();
    for _ in 0..USERS {
        let (openid, code) = sim_user(&app.http, &sim_url).await;
        let login = app.login_with(&code).await;
        assert_eq!(login.status, 200, "{:?}", login.body);
        users.push((openid, login.body["token"].as_str().unwrap().to_owned()));
    }
    let users = Arc::new(users);
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..ORDERS {
        let (users, limit, http, base, sim_url) = (
            users.clone(),
            limit.clone(),
            app.http.clone(),
            app.base.clone(),
            sim_url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let (openid, token) = &users[i % USERS];
            let sku = ["coffee", "tea", "cake", "sticker"][i % 4];
            let created: serde_json::Value = http
                .post(format!("{base}/api/orders"))
                .bearer_auth(token)
                .json(&json!({"items": [{"sku": sku, "quantity": 1 + i % 3}]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let no = created["out_trade_no"]
                .as_str()
                .expect("created")
                .to_owned();
            let pay = i % UNPAID_EVERY != 0;
            if pay {
                assert!(
                    sim_pay(&http, &sim_url, &created["payment"], openid)
                        .await
                        .unwrap()
                );
            }
            (no, pay)
        }));
    }
    let mut paid = Vec::new();
    let mut unpaid = Vec::new();
    for t in tasks {
        let (no, was_paid) = t.await.unwrap();
        if was_paid {
            paid.push(no);
        } else {
            unpaid.push(no);
        }
    }
    let created_in = started.elapsed();

    // Every first attempt made (the dropped ones wait for their retry, 25 minutes away).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = s.sim.dispatcher.records(None);
        let attempted = records.iter().filter(|r| !r.attempts.is_empty()).count();
        if attempted == paid.len() && records.len() == paid.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{attempted} of {} attempted",
            paid.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = s.sim.dispatcher.records(None);
    let first_dropped: HashSet<String> = records
        .iter()
        .filter(|r| r.attempts.iter().all(|a| a.outcome == "dropped"))
        .map(|r| r.out_trade_no.clone())
        .collect();
    let duplicated = records
        .iter()
        .filter(|r| r.attempts.iter().any(|a| a.duplicate))
        .count();
    let pool = app.state.store.pool();
    let paid_by_notification =
        count(pool, "SELECT COUNT(*) FROM orders WHERE status = 'SUCCESS'").await;
    // Arrival order against payment order: how many notifications overtook an earlier payment.
    let arrivals: Vec<(String, i64)> = sqlx::query_as(
        "SELECT out_trade_no, received_at FROM processed_notifications ORDER BY received_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let arrival: HashMap<&str, usize> = arrivals
        .iter()
        .enumerate()
        .map(|(i, (no, _))| (no.as_str(), i))
        .collect();
    let mut latest = None;
    let mut overtaken = 0;
    for no in &paid {
        if let Some(&rank) = arrival.get(no.as_str()) {
            if latest.is_some_and(|l| rank < l) {
                overtaken += 1;
            }
            latest = Some(latest.map_or(rank, |l: usize| l.max(rank)));
        }
    }

    // The reconcile job heals what the dropped notifications left unpaid.
    let jobs = eager_jobs(&app.state);
    let reconcile_calls = jobs.drain(JobKind::ReconcileUnpaid, 1000).await.unwrap();
    let healed = count(pool, "SELECT COUNT(*) FROM orders WHERE status = 'SUCCESS'").await
        - paid_by_notification;
    check(app, &paid, &unpaid).await;

    // The retries of the dropped notifications arrive late: they change nothing.
    let mut late = 0;
    for _ in 0..10 {
        let flushed: serde_json::Value = app
            .http
            .post(format!("{sim_url}/sim/notifications/flush"))
            .bearer_auth(crate::helpers::SIM_CONTROL_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        late += flushed["attempted"].as_u64().unwrap();
        if flushed["pending"] == 0 {
            break;
        }
    }
    let records = s.sim.dispatcher.records(None);
    assert!(
        records.iter().all(|r| r.acked),
        "every delivery acknowledged in the end"
    );
    let attempts: usize = records.iter().map(|r| r.attempts.len()).sum();
    let dropped_attempts: usize = records
        .iter()
        .map(|r| r.attempts.iter().filter(|a| a.outcome == "dropped").count())
        .sum();
    let duplicate_sends: usize = records
        .iter()
        .map(|r| r.attempts.iter().filter(|a| a.duplicate).count())
        .sum();
    check(app, &paid, &unpaid).await;

    figures(
        &format!("scenario 1 lost/repeated/shuffled notifications ({backend:?})"),
        &[
            ("orders", ORDERS.to_string()),
            ("paid", paid.len().to_string()),
            ("unpaid", unpaid.len().to_string()),
            ("first_attempt_dropped", first_dropped.len().to_string()),
            ("duplicated_deliveries", duplicated.to_string()),
            ("arrived_before_an_earlier_payment", overtaken.to_string()),
            ("paid_by_notification", paid_by_notification.to_string()),
            ("healed_by_reconcile", healed.to_string()),
            ("reconcile_batches", reconcile_calls.to_string()),
            ("late_redeliveries", late.to_string()),
            ("attempts_total", attempts.to_string()),
            ("dropped_attempts", dropped_attempts.to_string()),
            ("duplicate_sends", duplicate_sends.to_string()),
            ("order_paid_events_per_paid_order", "1".into()),
            ("unpaid_marked_paid", "0".into()),
            (
                "created_and_paid_in_s",
                format!("{:.1}", created_in.as_secs_f64()),
            ),
            ("total_s", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
    assert_eq!(
        first_dropped.len() as i64,
        healed,
        "the reconcile job healed exactly the dropped ones"
    );
}

async fn check(app: &crate::harness::TestApp, paid: &[String], unpaid: &[String]) {
    let pool = app.state.store.pool();
    let statuses: HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT out_trade_no, status FROM orders")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let paid_events: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT out_trade_no, COUNT(*) FROM outbox WHERE event_type = 'order.paid' GROUP BY out_trade_no",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let state_changes: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT out_trade_no, COUNT(*) FROM order_events WHERE detail LIKE '%\"result\":\"paid\"%' GROUP BY out_trade_no",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for no in paid {
        assert_eq!(statuses[no], OrderStatus::Success.as_str(), "{no}");
        assert_eq!(paid_events.get(no), Some(&1), "one order.paid for {no}");
        assert_eq!(state_changes.get(no), Some(&1), "one state change for {no}");
    }
    for no in unpaid {
        assert_eq!(statuses[no], OrderStatus::NotPay.as_str(), "{no}");
        assert_eq!(paid_events.get(no), None, "{no}");
    }
    assert_eq!(statuses.len(), paid.len() + unpaid.len());
}
