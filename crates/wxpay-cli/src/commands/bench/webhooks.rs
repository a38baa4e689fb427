//! `wxpay bench webhooks`: how long an `order.paid` webhook takes to reach the merchant after
//! its payment is committed, on an idle server.
//!
//! The benchmark plays WeChat Pay (as `wxpay bench notifications`) and the merchant's webhook
//! receiver (a local HTTP server). Orders are committed beforehand; then, one at a time, a
//! payment notification is sent and the benchmark waits for that order's webhook before the
//! next. Two latencies per order:
//! - **commit → received**: from the outbox row's `created_at` (the time the server took just
//!   before committing the payment, Unix ms) to the receiver's clock at arrival (same machine,
//!   same clock): an upper bound of the time from the commit, to the millisecond;
//! - **notification sent → received**: the whole path, measured on one monotonic clock.
//!
//! Before the deliverer was woken by outbox writes, a webhook waited for its idle poll (5 s):
//! 0-5 s, p50 about 2.5 s.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use wxpay_server::store::ApiVersion;

use super::notifications::{insert_orders, prepare};
use super::{
    Api, BenchDatabase, Report, Samples, Scratch, WebhookArgs, http_client, load_average, progress,
    progress_done, round3, server_env, start_server, start_simulator,
};
use crate::failure::Failure;

/// What the receiver saw: out_trade_no → (arrival on the monotonic clock, arrival in Unix ms).
#[derive(Clone, Default)]
struct Arrivals {
    seen: Arc<Mutex<HashMap<String, (Instant, f64)>>>,
    wake: Arc<tokio::sync::Notify>,
}

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if event["type"] == "order.paid"
        && let Some(no) = event["data"]["out_trade_no"].as_str()
    {
        arrivals
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(no.to_owned())
            .or_insert((at, unix_ms));
        arrivals.wake.notify_waiters();
    }
    StatusCode::NO_CONTENT
}

/// Runs the benchmark and returns its report.
///
/// # Errors
/// [`Failure`] when a process does not start, or a webhook does not arrive within 30 s.
pub async fn run(args: &WebhookArgs, err: &mut dyn Write) -> Result<Report, Failure> {
    let common = &args.common;
    let scratch = Scratch::new(common.keep)?;
    let (sim, sim_url) =
        tokio::task::block_in_place(|| start_simulator(&scratch, &common.log_level))?;
    let database = BenchDatabase::create(common.database.as_deref(), &scratch).await?;
    let result = run_with(args, err, &scratch, &sim_url, &database).await;
    drop(sim);
    database.drop_created().await;
    let mut report = result?;
    report.json["load_average_end"] = json!(load_average());
    if common.keep {
        report
            .text
            .push_str(&format!("\nkept: {}", scratch.path().display()));
    }
    Ok(report)
}

async fn run_with(
    args: &WebhookArgs,
    err: &mut dyn Write,
    scratch: &Scratch,
    sim_url: &str,
    database: &BenchDatabase,
) -> Result<Report, Failure> {
    let common = &args.common;
    let setup = {
        let dir = scratch.path().join("sim");
        tokio::task::block_in_place(|| wxpay_sim::merchant::load_or_create(&dir))
            .map_err(|e| Failure::runtime(format!("the simulator's keys: {e}")))?
    };
    let api_version = match common.api {
        Api::V3 => ApiVersion::V3,
        Api::V2 => ApiVersion::V2,
    };
    let orders = insert_orders(database, &setup.credentials, api_version, args.orders).await?;
    let prepared = tokio::task::block_in_place(|| prepare(&setup, common.api, &orders))?;

    let arrivals = Arrivals::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::runtime(format!("the webhook receiver: {e}")))?;
    let hook_url = format!(
        "http://{}/hooks",
        listener
            .local_addr()
            .map_err(|e| Failure::runtime(format!("the webhook receiver: {e}")))?
    );
    let receiver = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(arrivals.clone());
    let receiving = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let http = http_client(4)?;
    let admin_token = wxpay::nonce::random_string(32);
    let mut env = server_env(scratch, sim_url, &database.url, common, &admin_token);
    env.push(("WXPAY_WEBHOOK_URL".to_owned(), hook_url));
    env.push((
        "WXPAY_WEBHOOK_SECRET".to_owned(),
        wxpay::nonce::random_string(32),
    ));
    let (server, base, _) = start_server(scratch, &env, &common.log_level, &http).await?;
    let url = format!("{base}/notify/{}/pay", common.api.as_str());
    // Idle: the jobs' first rounds are over.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let mut whole = Samples::default();
    for (i, ((no, _), p)) in orders.iter().zip(&prepared).enumerate() {
        let sent = Instant::now();
        let answer = http
            .post(&url)
            .headers(p.headers.clone())
            .body(p.body.clone())
            .send()
            .await
            .map_err(|e| Failure::runtime(format!("notification of {no}: {e}")))?;
        if !answer.status().is_success() {
            return Err(Failure::runtime(format!(
                "notification of {no} refused: HTTP {}",
                answer.status()
            )));
        }
        let deadline = sent + Duration::from_secs(30);
        let arrived = loop {
            let woken = arrivals.wake.notified();
            if let Some(a) = arrivals
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(no)
            {
                break a.0;
            }
            if Instant::now() > deadline {
                return Err(Failure::runtime(format!(
                    "the webhook of {no} did not arrive within 30 s"
                )));
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), woken).await;
        };
        whole.record(arrived - sent);
        progress(
            err,
            started,
            Duration::from_secs(60),
            i as u64 + 1,
            "webhooks",
        );
        tokio::time::sleep(args.gap).await;
    }
    progress_done(err);
    drop(server);
    receiving.abort();

    // commit → received, from the outbox rows' timestamps.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database.url)
        .await
        .map_err(|e| Failure::runtime(format!("the bench database: {e}")))?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT out_trade_no, created_at FROM outbox WHERE event_type = 'order.paid'",
    )
    .fetch_all(&pool)
    .await
    .map_err(|e| Failure::runtime(format!("the outbox: {e}")))?;
    pool.close().await;
    let seen = arrivals
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut commit = Samples::default();
    for (no, created_at) in rows {
        if let Some((_, unix_ms)) = seen.get(&no) {
            let ms = (unix_ms - created_at as f64).max(0.0);
            commit.record(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let c = commit.summary();
    let w = whole.summary();
    let json = json!({
        "benchmark": "webhooks",
        "api": common.api.as_str(),
        "database": database.backend,
        "orders": orders.len(),
        "commit_to_received_p50_ms": round3(c.p50_ms),
        "commit_to_received_p99_ms": round3(c.p99_ms),
        "commit_to_received_max_ms": round3(c.max_ms),
        "sent_to_received_p50_ms": round3(w.p50_ms),
        "sent_to_received_p99_ms": round3(w.p99_ms),
        "sent_to_received_max_ms": round3(w.max_ms),
    });
    let text = format!(
        "wxpay bench webhooks: API {}, {}, {} paid orders one at a time on an idle server\n\
         commit -> webhook received:       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} webhooks)\n\
         notification sent -> received:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        common.api.as_str(),
        database.backend,
        orders.len(),
        c.p50_ms,
        c.p99_ms,
        c.max_ms,
        c.count,
        w.p50_ms,
        w.p99_ms,
        w.max_ms,
    );
    Ok(Report { text, json })
}
