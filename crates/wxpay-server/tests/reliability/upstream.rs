//! Scenario 6: WeChat failing. `SYSTEM_ERROR`, a bare 500, answers slower than the timeout, no
//! answer at all: the server times out, retries only calls that carry their idempotency key
//! (the same out_trade_no / out_refund_no, so a retry can never make a second order or refund),
//! and keeps answering its own API. A refund whose answer was lost is found by querying, never
//! sent as a second refund.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wxpay_server::Application;
use wxpay_server::jobs::JobKind;
use wxpay_server::store::{Backend, RefundStatus};

use crate::harness::{
    ADMIN_TOKEN, Proxy, ProxyMode, TestApp, TestDatabase, black_hole, client, eager_jobs, figures,
    merchant_settings, sim_pay, sim_user, simulator,
};

const PREPAY: &str = "/v3/pay/transactions/jsapi";
const REFUNDS: &str = "/v3/refund/domestic/refunds";

async fn server(pay_base_url: &str, mp_base_url: &str) -> TestApp {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut settings = merchant_settings(&db.url, pay_base_url, mp_base_url);
    settings.wechat_timeout_secs = 1;
    let app = Application::build(settings).await.unwrap().with_jobs(None);
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    crate::harness::seed_catalog(&state.store).await;
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        http: client(),
        state,
        backend: Backend::Sqlite,
        db,
    }
}

async fn buyer(app: &TestApp, sim_url: &str) -> (String, String) {
    let (openid, code) = sim_user(&app.http, sim_url).await;
    let login = app.login_with(&code).await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    (openid, login.body["token"].as_str().unwrap().to_owned())
}

fn faults(sim: &wxpay_sim::RunningSimulator, f: wxpay_sim::faults::Faults) {
    sim.state().faults.set(f).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn system_errors_and_500s_are_retried_with_the_same_key_only() {
    let sim = simulator(1000.0).await;
    let proxy = Proxy::start(&sim.base_url()).await;
    let app = server(&proxy.url, &proxy.url).await;
    let (openid, token) = buyer(&app, &sim.base_url()).await;
    let mut lines = Vec::new();

    for (name, mode, rate) in [
        ("SYSTEM_ERROR", ProxyMode::Forward, 1.0),
        ("bare 500", ProxyMode::Status500, 0.0),
    ] {
        faults(
            &sim,
            wxpay_sim::faults::Faults {
                api_error_rate: rate,
                ..Default::default()
            },
        );
        proxy.set_mode(mode);
        let before = proxy.count("POST", PREPAY);
        let created = app
            .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
            .await;
        assert_eq!(created.status, 502, "{name}: {:?}", created.body);
        assert_eq!(created.body["code"], "wechat_error");
        let tries = proxy.count("POST", PREPAY) - before;
        // The order is committed before WeChat is called: it waits for a retry.
        let listed = app.get("/api/orders", Some(&token)).await;
        let no = listed.body["orders"][0]["out_trade_no"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(listed.body["orders"][0]["status"], "NOTPAY");
        faults(&sim, wxpay_sim::faults::Faults::default());
        proxy.set_mode(ProxyMode::Forward);
        let payment = app.payment(&token, &no).await;
        assert_eq!(payment.status, 200, "{:?}", payment.body);
        assert!(
            sim_pay(
                &app.http,
                &sim.base_url(),
                &payment.body["payment"],
                &openid
            )
            .await
            .unwrap()
        );
        assert_eq!(sim.state().store.order(&no).unwrap().out_trade_no, no);
        lines.push((format!("{name}_prepay_attempts"), tries.to_string()));
    }

    // A refund sent while WeChat answers SYSTEM_ERROR: kept, resent with the same number later.
    let created = app
        .create_order(&token, json!([{"sku": "cake", "quantity": 1}]))
        .await;
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    assert!(
        sim_pay(
            &app.http,
            &sim.base_url(),
            &created.body["payment"],
            &openid
        )
        .await
        .unwrap()
    );
    // The notification is in flight: make sure the order is paid here before refunding it.
    assert_eq!(app.order(&token, &no).await.body["status"], "SUCCESS");
    faults(
        &sim,
        wxpay_sim::faults::Faults {
            api_error_rate: 1.0,
            ..Default::default()
        },
    );
    let refund = app
        .post_json(
            &format!("/admin/orders/{no}/refunds"),
            Some(ADMIN_TOKEN),
            &json!({"amount_fen": 100}),
        )
        .await;
    assert_eq!(refund.status, 202, "{:?}", refund.body);
    let out_refund_no = refund.body["out_refund_no"].as_str().unwrap().to_owned();
    assert!(sim.state().store.refunds_of_order(&no).is_empty());
    faults(&sim, wxpay_sim::faults::Faults::default());
    let jobs = eager_jobs(&app.state);
    jobs.drain(JobKind::SubmitRefunds, 10).await.unwrap();
    let at_wechat = sim.state().store.refunds_of_order(&no);
    assert_eq!(at_wechat.len(), 1);
    assert_eq!(at_wechat[0].out_refund_no, out_refund_no);
    let sends = proxy.calls("POST", REFUNDS);
    assert!(
        sends
            .iter()
            .all(|(_, n)| n.as_deref() == Some(out_refund_no.as_str()))
    );
    lines.push(("refund_sends_one_number".into(), sends.len().to_string()));
    lines.push(("refunds_at_wechat".into(), at_wechat.len().to_string()));
    let lines: Vec<(&str, String)> = lines.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    figures("scenario 6a SYSTEM_ERROR and 500", &lines);
}

/// Fires `n` order creations, and while they hang asks `/healthz` and `/api/products`.
async fn api_stays_responsive(app: &TestApp, token: &str, n: usize) -> (f64, f64, Vec<u16>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, base, token) = (app.http.clone(), app.base.clone(), token.to_owned());
            tokio::spawn(async move {
                let a = http
                    .post(format!("{base}/api/orders"))
                    .bearer_auth(token)
                    .json(&json!({"items": [{"sku": "tea", "quantity": 1}]}))
                    .send()
                    .await
                    .unwrap();
                let status = a.status().as_u16();
                let body: Value = a.json().await.unwrap();
                assert_eq!(body["code"], "wechat_error");
                status
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut worst_ms: f64 = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(app.get("/healthz", None).await.status, 200);
        assert_eq!(app.get("/api/products", None).await.status, 200);
        worst_ms = worst_ms.max(t.elapsed().as_secs_f64() * 1000.0);
        assert!(
            tasks.iter().all(|t| !t.is_finished()),
            "the API answered only after the calls to WeChat gave up"
        );
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    (worst_ms, started.elapsed().as_secs_f64(), statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn slow_or_silent_wechat_times_out_and_the_api_stays_responsive() {
    let sim = simulator(1000.0).await;
    let proxy = Proxy::start(&sim.base_url()).await;
    let app = server(&proxy.url, &proxy.url).await;
    let (_, token) = buyer(&app, &sim.base_url()).await;

    // Slower than the 1 s timeout.
    faults(
        &sim,
        wxpay_sim::faults::Faults {
            api_latency_ms: 2500,
            ..Default::default()
        },
    );
    let before = proxy.count("POST", PREPAY);
    let (slow_health_ms, slow_s, statuses) = api_stays_responsive(&app, &token, 10).await;
    assert!(statuses.iter().all(|s| *s == 504), "{statuses:?}");
    let slow_attempts = proxy.count("POST", PREPAY) - before;
    faults(&sim, wxpay_sim::faults::Faults::default());

    // Not answering at all: a listener that accepts and stays silent.
    let (hole, accepted) = black_hole().await;
    let silent = server(&hole, &proxy.url).await;
    let (_, token) = buyer(&silent, &sim.base_url()).await;
    let (silent_health_ms, silent_s, statuses) = api_stays_responsive(&silent, &token, 10).await;
    assert!(statuses.iter().all(|s| *s == 504), "{statuses:?}");
    let connections = *accepted.lock().unwrap();
    figures(
        "scenario 6b slow and silent WeChat",
        &[
            ("orders_during_slowness", "10".into()),
            ("slow_answers_504", "10".into()),
            ("slow_prepay_attempts", slow_attempts.to_string()),
            ("slow_batch_s", format!("{slow_s:.1}")),
            (
                "healthz_worst_ms_during_slowness",
                format!("{slow_health_ms:.0}"),
            ),
            ("orders_during_silence", "10".into()),
            ("silent_answers_504", "10".into()),
            ("silent_connections_accepted", connections.to_string()),
            ("silent_batch_s", format!("{silent_s:.1}")),
            (
                "healthz_worst_ms_during_silence",
                format!("{silent_health_ms:.0}"),
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn a_refund_whose_answer_was_lost_is_resolved_by_querying() {
    let sim = simulator(1000.0).await;
    let proxy = Proxy::start(&sim.base_url()).await;
    let app = server(&proxy.url, &proxy.url).await;
    let (openid, token) = buyer(&app, &sim.base_url()).await;
    let created = app
        .create_order(&token, json!([{"sku": "cake", "quantity": 2}]))
        .await;
    let no = created.body["out_trade_no"].as_str().unwrap().to_owned();
    assert!(
        sim_pay(
            &app.http,
            &sim.base_url(),
            &created.body["payment"],
            &openid
        )
        .await
        .unwrap()
    );
    assert_eq!(app.order(&token, &no).await.body["status"], "SUCCESS");

    // Neither the answer nor the refund notification arrives: only a query can tell.
    faults(
        &sim,
        wxpay_sim::faults::Faults {
            notify_drop_rate: 1.0,
            ..Default::default()
        },
    );
    proxy.set_mode(ProxyMode::LoseAnswers(REFUNDS.into()));
    let refund = app
        .post_json(
            &format!("/admin/orders/{no}/refunds"),
            Some(ADMIN_TOKEN),
            &json!({"amount_fen": 1000}),
        )
        .await;
    assert_eq!(refund.status, 202, "{:?}", refund.body);
    let out_refund_no = refund.body["out_refund_no"].as_str().unwrap().to_owned();
    let sent_while_lost = proxy.count("POST", REFUNDS);
    // WeChat made the refund; the server does not know.
    assert_eq!(sim.state().store.refunds_of_order(&no).len(), 1);
    let stored = app
        .state
        .store
        .refund(&out_refund_no)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.submitted_at.is_none());

    proxy.set_mode(ProxyMode::Forward);
    let jobs = eager_jobs(&app.state);
    jobs.drain(JobKind::SubmitRefunds, 10).await.unwrap();
    assert_eq!(
        proxy.count("POST", REFUNDS),
        sent_while_lost,
        "no refund sent after the query"
    );
    let queries = proxy.count("GET", &format!("{REFUNDS}/{out_refund_no}"));
    assert!(queries >= 1);
    let stored = app
        .state
        .store
        .refund(&out_refund_no)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.submitted_at.is_some());
    let mut status = stored.status;
    for _ in 0..200 {
        if status != RefundStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        jobs.drain(JobKind::FollowRefunds, 10).await.unwrap();
        status = app
            .state
            .store
            .refund(&out_refund_no)
            .await
            .unwrap()
            .unwrap()
            .status;
    }
    assert_eq!(status, RefundStatus::Success);
    let at_wechat = sim.state().store.refunds_of_order(&no);
    assert_eq!(at_wechat.len(), 1);
    assert_eq!(at_wechat[0].amount, 1000);
    assert_eq!(sim.state().store.order(&no).unwrap().refunded, 1000);
    assert!(
        proxy
            .calls("POST", REFUNDS)
            .iter()
            .all(|(_, n)| n.as_deref() == Some(out_refund_no.as_str()))
    );
    figures(
        "scenario 6c lost refund answer",
        &[
            (
                "refund_sends_with_lost_answers",
                sent_while_lost.to_string(),
            ),
            ("refund_sends_after_recovery", "0".into()),
            ("refund_queries", queries.to_string()),
            ("refunds_at_wechat", at_wechat.len().to_string()),
            ("refunded_fen", "1000".into()),
            ("final_status", status.as_str().into()),
        ],
    );
}
