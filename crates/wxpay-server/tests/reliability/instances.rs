//! Scenario 3: three `wxpay serve` processes on one PostgreSQL database. Every notification is
//! delivered to all three at once (a fan-out in front of them, plus the simulator's duplicates),
//! the same refund request is sent to all three at once, and the background jobs of all three
//! race for the same work (orders to reconcile, orders to close, webhooks to deliver). Every
//! order changes state once, and WeChat (counted at a proxy in front of the simulator) and the
//! webhook receiver see every job item once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Cluster, Secrets, client, cluster, count, figures, sim_pay, sim_user,
};

const INSTANCES: usize = 3;
const BUYERS: usize = 30;
const ORDERS_PER_BUYER: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn three_instances_change_each_order_once_and_do_each_job_item_once() {
    let started = Instant::now();
    let Cluster {
        sim,
        proxy,
        fanout,
        received,
        db: _db,
        servers,
        pool,
    } = cluster("instances", INSTANCES, &[]).await;
    let http = client();
    for (sku, name, price_fen, _) in wxpay_server::app::SANDBOX_PRODUCTS {
        let a = http
            .put(format!("{}/admin/products/{sku}", servers[0].base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "price_fen": price_fen}))
            .send()
            .await
            .unwrap();
        assert!(a.status().is_success());
    }

    // Orders through the three instances in turn; notifications fanned out and duplicated.
    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_duplicate_rate: 0.3,
            ..Default::default()
        })
        .unwrap();
    let sim_url = sim.base_url();
    let mut orders = Vec::new();
    for b in 0..BUYERS {
        let base = &servers[b % INSTANCES].base;
        let (openid, code) = sim_user(&http, &sim_url).await;
        let login: Value = http
            .post(format!("{base}/api/login"))
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().unwrap().to_owned();
        for k in 0..ORDERS_PER_BUYER {
            let base = &servers[(b + k) % INSTANCES].base;
            let created: Value = http
                .post(format!("{base}/api/orders"))
                .bearer_auth(&token)
                .json(&json!({"items": [{"sku": "coffee", "quantity": 1 + k}]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            orders.push((
                created["out_trade_no"].as_str().unwrap().to_owned(),
                created["payment"].clone(),
                openid.clone(),
            ));
        }
    }
    // Groups: paid with notifications (60%), paid with every notification lost (20%: the
    // reconcile jobs must find them), unpaid and expired (20%: the close jobs).
    let n = orders.len();
    let (notified, rest) = orders.split_at(n * 3 / 5);
    let (lost, expired) = rest.split_at(n / 5);
    for (no, payment, openid) in notified {
        assert!(
            sim_pay(&http, &sim_url, payment, openid).await.unwrap(),
            "{no}"
        );
    }
    sim.state().dispatcher.flush().await;
    // The same refund request sent to the three instances at once, for a third of the paid orders.
    let mut refund_numbers = Vec::new();
    for (i, (no, _, _)) in notified.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let out_refund_no = format!("RFI{i:04}{}", wxpay::nonce::random_string(8));
        // Each on its own task: a request future does nothing until polled, so awaiting them in
        // turn would send them one after another.
        let sends: Vec<_> = servers
            .iter()
            .map(|s| {
                let request = http
                    .post(format!("{}/admin/orders/{no}/refunds", s.base))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"amount_fen": 100, "out_refund_no": out_refund_no}));
                tokio::spawn(async move { request.send().await })
            })
            .collect();
        let mut statuses = Vec::new();
        for s in sends {
            statuses.push(s.await.unwrap().unwrap().status().as_u16());
        }
        assert!(
            statuses.iter().all(|s| (200..300).contains(s)),
            "{statuses:?}"
        );
        refund_numbers.push((no.clone(), out_refund_no));
    }

    // Settled at WeChat, notified to the three.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &pool,
        "SELECT COUNT(*) FROM refunds WHERE status = 'PROCESSING'",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "refunds not settled");
        sim.state().dispatcher.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From now on every notification is lost: only the jobs can find the payments.
    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_drop_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    for (no, payment, openid) in lost {
        assert!(
            sim_pay(&http, &sim_url, payment, openid).await.unwrap(),
            "{no}"
        );
    }

    // Age the lost and the expired orders as if minutes had passed: the jobs of all three take
    // them (reconcile after 60 s, close after expiry).
    let list = |g: &[(String, Value, String)]| {
        g.iter()
            .map(|(no, _, _)| format!("'{no}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET created_at = created_at - 120000 WHERE out_trade_no IN ({})",
        list(lost)
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET expires_at = created_at - 1000 WHERE out_trade_no IN ({})",
        list(expired)
    )))
    .execute(&pool)
    .await
    .unwrap();

    // Wait for the jobs: lost ones paid, expired ones closed, refunds settled, webhooks sent.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pending = count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM orders WHERE status = 'NOTPAY' AND out_trade_no IN ({}, {})",
                list(lost),
                list(expired)
            ),
        )
        .await
            + count(
                &pool,
                "SELECT COUNT(*) FROM refunds WHERE status = 'PROCESSING'",
            )
            .await
            + count(
                &pool,
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
            )
            .await;
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} items still pending");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A moment more, for any instance that would do something twice.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let paid_changes: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT out_trade_no, COUNT(*) FROM order_events WHERE detail LIKE '%\"result\":\"paid\"%' GROUP BY out_trade_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let closes: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT out_trade_no, COUNT(*) FROM order_events WHERE kind = 'closed' GROUP BY out_trade_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let outbox_dupes = count(
        &pool,
        "SELECT COUNT(*) FROM (SELECT out_trade_no, event_type FROM outbox GROUP BY out_trade_no, event_type HAVING COUNT(*) > 1) d",
    )
    .await;
    assert_eq!(outbox_dupes, 0);
    for (no, _, _) in notified.iter().chain(lost) {
        assert_eq!(paid_changes.get(no), Some(&1), "{no} paid once");
        assert_eq!(closes.get(no), None, "{no}");
    }
    let mut close_calls = 0;
    for (no, _, _) in expired {
        assert_eq!(closes.get(no), Some(&1), "{no} closed once");
        assert_eq!(paid_changes.get(no), None, "{no}");
        let calls = proxy.count(
            "POST",
            &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
        );
        assert_eq!(calls, 1, "{no} closed at WeChat once");
        close_calls += calls;
    }
    let mut query_calls = 0;
    for (no, _, _) in lost {
        let calls = proxy.count("GET", &format!("/v3/pay/transactions/out-trade-no/{no}"));
        assert_eq!(
            calls,
            1,
            "{no} queried once: {:?} {:?}",
            proxy.calls("GET", "/"),
            sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(format!(
                "SELECT kind, detail FROM order_events WHERE out_trade_no = '{no}'"
            )))
            .fetch_all(&pool)
            .await
            .unwrap()
        );
        query_calls += calls;
    }
    let mut refund_sends = 0;
    for (no, out_refund_no) in &refund_numbers {
        let at_wechat = sim.state().store.refunds_of_order(no);
        assert_eq!(at_wechat.len(), 1, "{no}");
        assert_eq!(&at_wechat[0].out_refund_no, out_refund_no);
        let sends = proxy
            .calls("POST", "/v3/refund/domestic/refunds")
            .into_iter()
            .filter(|(_, n)| n.as_deref() == Some(out_refund_no.as_str()))
            .count();
        assert_eq!(sends, 1, "{out_refund_no} sent to WeChat once");
        refund_sends += sends;
    }
    let refund_changes = count(
        &pool,
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'refund.succeeded'",
    )
    .await;
    assert_eq!(refund_changes as usize, refund_numbers.len());
    // Every webhook event delivered once, by one of the three.
    let events: Vec<String> = sqlx::query_scalar("SELECT event_id FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    let received = received.lock().unwrap().clone();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for id in &received {
        *per_event.entry(id.as_str()).or_default() += 1;
    }
    for id in &events {
        assert_eq!(
            per_event.get(id.as_str()),
            Some(&1),
            "webhook {id} delivered once"
        );
    }
    assert_eq!(received.len(), events.len());
    let secrets = Secrets::of_sandbox().with_session_keys(&pool).await;
    for s in &servers {
        secrets.assert_absent("an instance's logs", &s.log_text());
    }
    let records = sim.state().dispatcher.records(None);
    let sends: usize = records
        .iter()
        .map(|r| {
            r.attempts
                .iter()
                .filter(|a| a.outcome == "sent" && !a.probe)
                .count()
        })
        .sum();
    drop(servers);
    figures(
        "scenario 3 three instances on one PostgreSQL",
        &[
            ("instances", INSTANCES.to_string()),
            ("orders", n.to_string()),
            ("paid_notified", notified.len().to_string()),
            ("paid_notification_lost", lost.len().to_string()),
            ("expired", expired.len().to_string()),
            ("notification_sends", sends.to_string()),
            (
                "fanned_out_to_3",
                fanout.delivered.lock().unwrap().to_string(),
            ),
            ("state_changes_per_order", "1".into()),
            ("reconcile_queries_at_wechat", query_calls.to_string()),
            ("close_calls_at_wechat", close_calls.to_string()),
            ("refund_requests_x3", refund_numbers.len().to_string()),
            ("refund_sends_at_wechat", refund_sends.to_string()),
            ("webhook_events", events.len().to_string()),
            ("webhook_deliveries", received.len().to_string()),
            ("total_s", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}
