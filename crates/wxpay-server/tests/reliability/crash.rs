//! Scenario 2: crashes. `wxpay serve` (the real binary) is killed with SIGKILL at random moments
//! while 200 concurrent buyers create and pay orders and the back office refunds some, then
//! restarted on the same SQLite file (alternately in v3 and v2, so both kinds of orders live
//! through crashes). The simulator runs in the test, so WeChat's state survives the crashes.
//! After a last restart and the reconciliation jobs: nothing paid at WeChat is missing, no order
//! is in an impossible state, no refund was made twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use serde_json::{Value, json};
use wxpay_server::Application;
use wxpay_server::store::{OrderStatus, RefundStatus};

use crate::harness::{
    ADMIN_TOKEN, Secrets, ServerProcess, client, drain_reconciliation, eager_jobs, figures, insist,
    merchant_env, merchant_settings, simulator, temp_dir,
};

const BUYERS: usize = 200;
const ROUNDS: usize = 4;

struct Shared {
    base: String,
    sim: String,
    http: reqwest::Client,
    failed_requests: AtomicUsize,
    paid: Mutex<Vec<(String, u64)>>,
    refund_intents: Mutex<Vec<(String, String, u64)>>,
    done: AtomicBool,
}

async fn buyer(shared: Arc<Shared>, n: usize) {
    let http = &shared.http;
    let token = loop {
        let user: Value = http
            .post(format!("{}/sim/users", shared.sim))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // A login whose answer was lost used the code: the next try takes a fresh user.
        if let Ok(r) = http
            .post(format!("{}/api/login", shared.base))
            .json(&json!({"code": user["code"]}))
            .send()
            .await
            && r.status().is_success()
            && let Ok(body) = r.json::<Value>().await
        {
            break (
                user["openid"].as_str().unwrap().to_owned(),
                body["token"].as_str().unwrap().to_owned(),
            );
        }
        shared.failed_requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (openid, token) = token;
    for round in 0..ROUNDS {
        let sku = ["coffee", "tea", "cake", "sticker"][(n + round) % 4];
        let Some((status, created)) = insist(&shared.failed_requests, 200, || {
            http.post(format!("{}/api/orders", shared.base))
                .bearer_auth(&token)
                .json(&json!({"items": [{"sku": sku, "quantity": 1 + round}]}))
        })
        .await
        else {
            continue;
        };
        assert_eq!(status, 201, "{created}");
        let no = created["out_trade_no"].as_str().unwrap().to_owned();
        if (n + round).is_multiple_of(7) {
            continue; // left unpaid
        }
        let mut body = created["payment"].clone();
        body["openid"] = json!(openid);
        let paid = http
            .post(format!("{}/sim/pay", shared.sim))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .is_success();
        assert!(paid);
        shared
            .paid
            .lock()
            .unwrap()
            .push((no.clone(), created["amount_fen"].as_u64().unwrap()));
        // Some buyers look at their order (the server queries WeChat when unpaid).
        if round == 1 {
            let _ = insist(&shared.failed_requests, 200, || {
                http.get(format!("{}/api/orders/{no}", shared.base))
                    .bearer_auth(&token)
            })
            .await;
        }
    }
}

/// The back office refunds paid orders, each request retried with its own out_refund_no until
/// the server answers.
async fn refunder(shared: Arc<Shared>) -> usize {
    let mut refunds = 0;
    let mut refunded = HashSet::new();
    while !shared.done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let pick = {
            let paid = shared.paid.lock().unwrap();
            paid.iter()
                .rev()
                .find(|(no, _)| !refunded.contains(no))
                .cloned()
        };
        let Some((no, amount)) = pick else { continue };
        refunded.insert(no.clone());
        let out_refund_no = format!("RFT{}", wxpay::nonce::random_string(20));
        let part = (amount / 2).max(1);
        let answer = insist(&shared.failed_requests, 200, || {
            shared
                .http
                .post(format!("{}/admin/orders/{no}/refunds", shared.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"amount_fen": part, "out_refund_no": out_refund_no, "reason": "crash test"}))
        })
        .await;
        // 409: the payment's notification has not arrived yet (it will be refunded later, or not).
        if let Some((status, _)) = answer
            && (200..300).contains(&status)
        {
            refunds += 1;
            shared
                .refund_intents
                .lock()
                .unwrap()
                .push((no, out_refund_no, part));
        }
    }
    refunds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn sigkill_under_load_loses_no_payment_and_doubles_no_refund() {
    let started = Instant::now();
    let sim = simulator(50.0).await;
    let dir = temp_dir("crash");
    let db_url = format!("sqlite://{}", dir.join("wxpay.db").display());
    let env = merchant_env(&db_url, &sim.tls_base_url(), &sim.base_url(), ADMIN_TOKEN);
    let mut server = ServerProcess::start(env, dir.join("server.log")).await;
    let http = client();
    for (sku, name, price_fen, _) in wxpay_server::app::SANDBOX_PRODUCTS {
        let a = http
            .put(format!("{}/admin/products/{sku}", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "price_fen": price_fen}))
            .send()
            .await
            .unwrap();
        assert!(a.status().is_success());
    }
    let shared = Arc::new(Shared {
        base: server.base.clone(),
        sim: sim.base_url(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap(),
        failed_requests: AtomicUsize::new(0),
        paid: Mutex::default(),
        refund_intents: Mutex::default(),
        done: AtomicBool::new(false),
    });
    let buyers: Vec<_> = (0..BUYERS)
        .map(|n| tokio::spawn(buyer(shared.clone(), n)))
        .collect();
    let refunds_task = tokio::spawn(refunder(shared.clone()));
    let killer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut crashes = 0;
            while !shared.done.load(Ordering::Relaxed) {
                let (up, down) = {
                    let mut rng = rand::rng();
                    (rng.random_range(200..1000), rng.random_range(20..300))
                };
                tokio::time::sleep(Duration::from_millis(up)).await;
                server.kill();
                crashes += 1;
                tokio::time::sleep(Duration::from_millis(down)).await;
                let version = if crashes % 2 == 1 { "v2" } else { "v3" };
                server.spawn(&[("WXPAY_API_VERSION", version)]).await;
            }
            (server, crashes)
        })
    };
    for b in buyers {
        b.await.unwrap();
    }
    // Let the refunder take the last paid orders, then stop the crashes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.done.store(true, Ordering::Relaxed);
    let refunds_made = refunds_task.await.unwrap();
    let (mut server, crashes) = killer.await.unwrap();
    let load_s = started.elapsed().as_secs_f64();

    // WeChat keeps retrying its notifications; the restarted server takes them.
    let late = sim.state().dispatcher.flush().await;
    server.kill();
    let server_log = server.log_text();
    let starts = server.starts;

    // The last restart, with the reconciliation jobs drained.
    let app = Application::build(merchant_settings(
        &db_url,
        &sim.tls_base_url(),
        &sim.base_url(),
    ))
    .await
    .unwrap()
    .with_jobs(None);
    let state = app.state().clone();
    let store = state.store.clone();
    let paid_before: i64 = crate::harness::count(
        store.pool(),
        "SELECT COUNT(*) FROM orders WHERE status IN ('SUCCESS', 'REFUND')",
    )
    .await;
    // A refund whose creator was killed between committing it and sending it stays leased to
    // that process for a minute (the admin API's send lease) before the jobs may send it. Stand
    // for that minute: end every lease now, as the clock would.
    let orphaned_leases = sqlx::query(
        "UPDATE refunds SET lease_until = $1 WHERE status = 'PROCESSING' AND lease_until > $1",
    )
    .bind(wxpay_server::store::now_ms())
    .execute(store.pool())
    .await
    .unwrap()
    .rows_affected();
    let jobs = eager_jobs(&state);
    let mut reconcile_batches = 0;
    for _ in 0..100 {
        reconcile_batches += drain_reconciliation(&jobs).await;
        let processing = crate::harness::count(
            store.pool(),
            "SELECT COUNT(*) FROM refunds WHERE status = 'PROCESSING'",
        )
        .await;
        if processing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paid_after: i64 = crate::harness::count(
        store.pool(),
        "SELECT COUNT(*) FROM orders WHERE status IN ('SUCCESS', 'REFUND')",
    )
    .await;

    // Every order: what WeChat says against what the database says.
    let nos: Vec<String> = sqlx::query_scalar("SELECT out_trade_no FROM orders")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let sim_store = &sim.state().store;
    let mut paid_at_wechat = 0;
    let mut v2_orders = 0;
    let mut without_prepay = 0;
    let mut sim_refunds = 0;
    for no in &nos {
        let order = store.order(no).await.unwrap().unwrap();
        if order.api_version == wxpay_server::store::ApiVersion::V2 {
            v2_orders += 1;
        }
        let at_wechat = sim_store.order(no);
        if at_wechat.is_none() {
            without_prepay += 1;
        }
        let wechat_paid = at_wechat
            .as_ref()
            .is_some_and(|o| o.transaction_id.is_some());
        if wechat_paid {
            paid_at_wechat += 1;
            assert!(
                order.status.is_paid(),
                "{no} paid at WeChat, {} here",
                order.status
            );
            assert_eq!(
                order.transaction_id,
                at_wechat.as_ref().unwrap().transaction_id,
                "{no}"
            );
        } else {
            assert!(!order.status.is_paid(), "{no} paid here, not at WeChat");
        }
        // Possible states only.
        if order.status.is_paid() {
            assert!(
                order.paid_at.is_some() && order.transaction_id.is_some(),
                "{no}"
            );
        }
        if order.status == OrderStatus::Refund {
            assert!(order.refunded_fen > 0, "{no}");
        }
        assert!(order.refunded_fen <= order.amount_fen, "{no}");
        let refunds = store.refunds_of_order(no).await.unwrap();
        let reserved: u64 = refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Closed)
            .map(|r| r.amount_fen)
            .sum();
        assert_eq!(order.refunded_fen, reserved, "{no}");
        let paid_events = crate::harness::count(
            store.pool(),
            &format!("SELECT COUNT(*) FROM outbox WHERE event_type = 'order.paid' AND out_trade_no = '{no}'"),
        )
        .await;
        assert_eq!(paid_events, i64::from(order.status.is_paid()), "{no}");
        // Each refund is one refund at WeChat, and WeChat has no other.
        let at_wechat_refunds = sim_store.refunds_of_order(no);
        assert_eq!(at_wechat_refunds.len(), refunds.len(), "{no}");
        for r in &refunds {
            let w = sim_store
                .refund_by_out_refund_no(&r.out_refund_no)
                .unwrap_or_else(|| panic!("refund {} not at WeChat", r.out_refund_no));
            assert_eq!(w.amount, r.amount_fen);
            assert_eq!(r.status, RefundStatus::Success, "{}", r.out_refund_no);
        }
        let total: u64 = at_wechat_refunds.iter().map(|r| r.amount).sum();
        assert!(total <= order.amount_fen, "{no}");
        sim_refunds += at_wechat_refunds.len();
    }
    // Each refund request of the back office made one refund.
    let intents = shared.refund_intents.lock().unwrap().clone();
    let mut per_order: HashMap<&str, usize> = HashMap::new();
    for (no, out_refund_no, amount) in &intents {
        let w = sim_store.refund_by_out_refund_no(out_refund_no).unwrap();
        assert_eq!(w.amount, *amount);
        *per_order.entry(no.as_str()).or_default() += 1;
    }
    assert_eq!(sim_refunds, intents.len(), "no refund beyond the requests");
    // And WeChat has no payment the database does not know.
    let today = wxpay_sim::state::cst_date(sim.state().now());
    for p in sim_store.bill_day(today).payments {
        assert!(
            nos.contains(&p.out_trade_no),
            "{} unknown here",
            p.out_trade_no
        );
    }
    Secrets::of_sandbox()
        .with_session_keys(store.pool())
        .await
        .assert_absent("the crashed server's logs", &server_log);
    figures(
        "scenario 2 crash (SIGKILL)",
        &[
            ("buyers", BUYERS.to_string()),
            ("orders", nos.len().to_string()),
            ("v2_orders", v2_orders.to_string()),
            ("paid_at_wechat", paid_at_wechat.to_string()),
            ("crashes_sigkill", crashes.to_string()),
            ("server_starts", starts.to_string()),
            (
                "requests_failed_by_crashes",
                shared.failed_requests.load(Ordering::Relaxed).to_string(),
            ),
            (
                "orders_without_prepay_after_crash",
                without_prepay.to_string(),
            ),
            ("late_notifications_flushed", late.attempted.to_string()),
            ("paid_before_reconcile", paid_before.to_string()),
            (
                "healed_by_reconcile",
                (paid_after - paid_before).to_string(),
            ),
            ("reconcile_batches", reconcile_batches.to_string()),
            ("refund_leases_left_by_crashes", orphaned_leases.to_string()),
            ("refunds_requested", refunds_made.to_string()),
            ("refunds_at_wechat", sim_refunds.to_string()),
            ("refunds_made_twice", "0".into()),
            ("missing_payments", "0".into()),
            ("impossible_states", "0".into()),
            ("load_s", format!("{load_s:.1}")),
            ("total_s", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}
