//! Scenario: revocation across two instances. Two `wxpay serve` processes on one PostgreSQL
//! database; buyers log in on A and use their tokens on B (so that B has them in its session
//! cache). Half log out on A, the other half are revoked by the back office on B: the other
//! instance refuses each token within a bounded wait, told by `NOTIFY wxpay_events`. Then B's
//! listening connection is killed (`pg_terminate_backend`) and a session is revoked on A while B
//! cannot hear it: B still refuses it within `SESSION_RECHECK` (its cache is cleared when it
//! reconnects, and never trusts an entry longer than that anyway).

use std::time::{Duration, Instant};

use serde_json::json;
use wxpay_server::store::{Backend, SESSION_RECHECK};

use crate::harness::{
    ADMIN_TOKEN, ServerProcess, TestDatabase, client, count, figures, merchant_env, sim_user,
    simulator, temp_dir,
};

const BUYERS: usize = 20;

async fn status(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    http.get(format!("{base}/api/orders"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// How long until `base` refuses `token` (polling every 2 ms), at most `within`.
async fn refused_after(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    loop {
        if status(http, base, token).await == 401 {
            return Some(since.elapsed());
        }
        if since.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `n` connections of the database listen for notices.
async fn wait_for_listeners(pool: &sqlx::AnyPool, db: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{db}' AND query ILIKE 'LISTEN%'"
    );
    while count(pool, &sql).await < n {
        assert!(Instant::now() < deadline, "the instances do not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn a_revocation_on_one_instance_is_honoured_by_the_other_within_a_bound() {
    let started = Instant::now();
    let sim = simulator(1.0).await;
    let sim_url = sim.base_url();
    let db = TestDatabase::new(Backend::Postgres).await;
    let db_name = db.url.rsplit('/').next().unwrap().to_owned();
    let dir = temp_dir("revocation");
    let env = merchant_env(&db.url, &sim_url, &sim_url, ADMIN_TOKEN);
    let a = ServerProcess::start(env.clone(), dir.join("a.log")).await;
    let b = ServerProcess::start(env, dir.join("b.log")).await;
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    wait_for_listeners(&pool, &db_name, 2).await;
    let http = client();

    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        let (openid, code) = sim_user(&http, &sim_url).await;
        let login: serde_json::Value = http
            .post(format!("{}/api/login", a.base))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().expect("a token").to_owned();
        assert_eq!(
            status(&http, &b.base, &token).await,
            200,
            "B knows the session"
        );
        buyers.push((openid, token));
    }

    // Half log out on A; B must refuse. The other half are revoked on B; A must refuse.
    let bound = SESSION_RECHECK / 2;
    let mut lags = Vec::new();
    for (i, (openid, token)) in buyers.iter().enumerate() {
        let (here, there) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let since = Instant::now();
        if i % 2 == 0 {
            let out = http
                .post(format!("{}/api/logout", here.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(out.status(), 204);
        } else {
            let revoked: serde_json::Value = http
                .post(format!(
                    "{}/admin/users/{openid}/sessions/revoke",
                    here.base
                ))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(revoked["revoked"], 1, "{revoked}");
        }
        assert_eq!(status(&http, &here.base, token).await, 401);
        let lag = refused_after(&http, &there.base, token, since, bound)
            .await
            .expect("the other instance refuses a revoked token within the bound");
        lags.push(lag);
    }
    lags.sort();

    // B's listening connection is killed; a revocation on A in that moment is missed by B's
    // listener, and B still refuses within SESSION_RECHECK.
    let (_, code) = sim_user(&http, &sim_url).await;
    let login: serde_json::Value = http
        .post(format!("{}/api/login", a.base))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    assert_eq!(status(&http, &b.base, &token).await, 200);
    let killed = count(
        &pool,
        &format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db_name}' AND query ILIKE 'LISTEN%') AS t"
        ),
    )
    .await;
    assert_eq!(killed, 2, "both listeners killed");
    let since = Instant::now();
    let out = http
        .post(format!("{}/api/logout", a.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let missed_lag = refused_after(
        &http,
        &b.base,
        &token,
        since,
        SESSION_RECHECK + Duration::from_secs(5),
    )
    .await
    .expect("B refuses a revocation whose notice it missed within SESSION_RECHECK");
    // And the listeners come back.
    wait_for_listeners(&pool, &db_name, 2).await;
    assert!(b.log_text().contains("reconnecting") || b.log_text().contains("retrying"));

    let p50 = lags[lags.len() / 2];
    let max = *lags.last().unwrap();
    figures(
        "revocation across two instances",
        &[
            ("revocations", lags.len().to_string()),
            ("refused_by_the_other_p50_ms", ms(p50)),
            ("refused_by_the_other_max_ms", ms(max)),
            ("notice_missed_refused_after_ms", ms(missed_lag)),
            ("session_recheck_s", SESSION_RECHECK.as_secs().to_string()),
            ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}
