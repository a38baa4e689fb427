//! Scenario 12: merchant transfers (payouts) under crashes and on many instances.
//!
//! 12a: the real `wxpay serve` on one SQLite file is SIGKILLed every 0.2–1 s while users log
//! in and confirm (or refuse, or leave) the transfers the back office makes for them, each with
//! its own `out_bill_no`, retried with the same body until answered. After a last restart and
//! the transfer job drained: one transfer per number here and at most one bill at WeChat, the
//! same state on both sides, one webhook per final transfer, and the day's reservations equal to
//! the live transfers.
//!
//! 12b: three `wxpay serve` processes on one PostgreSQL database: each transfer is POSTed to the
//! three at once, notifications are fanned out to the three (and duplicated), and transfers whose
//! notifications were all lost are healed by the three instances' racing jobs. WeChat (counted at
//! a proxy in front of the simulator) sees each transfer created once and each lost one queried
//! once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use serde_json::{Value, json};
use wxpay_server::jobs::JobKind;
use wxpay_server::store::{Transfer, TransferFilter};
use wxpay_server::{Application, Settings};

use crate::harness::{
    ADMIN_TOKEN, Cluster, NO_LIMIT, Secrets, ServerProcess, client, cluster, count, eager_jobs,
    figures, insist, merchant_env, sandbox_dir, simulator, temp_dir,
};

const USERS: usize = 60;
const TRANSFERS: usize = 150;
/// Back-office desks making transfers at the same time (so that crashes cut sends off).
const OFFICE_DESKS: usize = 3;
const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";

/// A scene-1000 cash reward (the scene's two report infos) for `openid`.
fn cash_back(openid: &str, amount: u64) -> Value {
    json!({
        "openid": openid,
        "amount_fen": amount,
        "scene": "1000",
        "report_infos": [
            {"info_type": "活动名称", "info_content": "可靠性测试"},
            {"info_type": "奖励说明", "info_content": "返现"}
        ],
        "perception": "现金奖励",
        "remark": "返现",
        "reason": "reliability suite: transfers under crashes"
    })
}

/// What the back office means a transfer to come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// The user confirms it.
    Confirm,
    /// The user opens WeChat's confirm page and taps cancel (the bill keeps waiting).
    UserCancel,
    /// The user never looks at it.
    Leave,
    /// The back office cancels it (the user leaves it alone).
    BackOfficeCancel,
}

#[derive(Clone, Debug)]
struct Intent {
    no: String,
    openid: String,
    amount: u64,
    fate: Fate,
    /// The name given for WeChat to check, and whether it is the payee's real name.
    name: Option<(String, bool)>,
}

#[derive(Clone)]
struct Payee {
    openid: String,
    real_name: String,
}

struct Shared {
    base: String,
    sim: String,
    http: reqwest::Client,
    failed_requests: AtomicUsize,
    payees: Mutex<Vec<Payee>>,
    intents: Mutex<HashMap<String, Intent>>,
    /// The state WeChat's confirm page answered, per transfer the user confirmed.
    confirmed: Mutex<HashMap<String, String>>,
    user_cancels: AtomicUsize,
    back_office_cancels: AtomicUsize,
    done: AtomicBool,
}

/// A user: logs in (a fresh WeChat user for each try: a lost answer used the code), then looks
/// at their transfers every 0.3–0.7 s and acts on those waiting for them.
async fn payee(shared: Arc<Shared>) {
    let http = &shared.http;
    let real_name = format!("收款人{}", wxpay::nonce::random_string(10));
    let (openid, token) = loop {
        let user: Value = http
            .post(format!("{}/sim/users", shared.sim))
            .json(&json!({"real_name": real_name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
    shared.payees.lock().unwrap().push(Payee {
        openid: openid.clone(),
        real_name,
    });
    let mut handled = HashSet::new();
    while !shared.done.load(Ordering::Relaxed) {
        let pause = rand::rng().random_range(300..700);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let list = match http
            .get(format!("{}/api/transfers", shared.base))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(list) = list else {
            shared.failed_requests.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        for t in list["transfers"].as_array().cloned().unwrap_or_default() {
            let no = t["out_bill_no"].as_str().unwrap().to_owned();
            if t["can_confirm"] != true || handled.contains(&no) {
                continue;
            }
            handled.insert(no.clone());
            let fate = shared.intents.lock().unwrap().get(&no).map(|i| i.fate);
            let cancel = match fate {
                Some(Fate::Confirm) => false,
                Some(Fate::UserCancel) => true,
                _ => continue,
            };
            let Some((status, object)) = insist(&shared.failed_requests, 300, || {
                http.post(format!("{}/api/transfers/{no}/confirm", shared.base))
                    .bearer_auth(&token)
            })
            .await
            else {
                continue;
            };
            assert_eq!(status, 200, "{no}: {object}");
            let mut body = object.clone();
            body["openid"] = json!(openid);
            if cancel {
                body["result"] = json!("CANCEL");
            }
            let answer = http
                .post(format!("{}/sim/transfers/confirm", shared.sim))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success(), "{no}");
            let answer: Value = answer.json().await.unwrap();
            if cancel {
                assert_eq!(answer["state"], "WAIT_USER_CONFIRM", "{no}: {answer}");
                shared.user_cancels.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.confirmed.lock().unwrap().insert(
                    no.clone(),
                    answer["state"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
    }
}

/// One of the back office's desks: a transfer at a time (every `OFFICE_DESKS`th from `desk`),
/// each with its own number, retried with the same body until answered; a few cancelled right
/// after. Returns how many it made.
async fn back_office(shared: Arc<Shared>, desk: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.payees.lock().unwrap().len() < USERS {
        assert!(Instant::now() < deadline, "the users did not log in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let payees = shared.payees.lock().unwrap().clone();
    let http = &shared.http;
    let mut made = 0;
    for i in (desk..TRANSFERS).step_by(OFFICE_DESKS) {
        let payee = &payees[(i * 7) % USERS];
        let fate = match i % 20 {
            13 | 14 => Fate::UserCancel,
            15 | 16 => Fate::Leave,
            18 => Fate::BackOfficeCancel,
            _ => Fate::Confirm,
        };
        let name = if i % 29 == 11 {
            Some((format!("冒名{}", wxpay::nonce::random_string(10)), false))
        } else if i % 6 == 2 {
            Some((payee.real_name.clone(), true))
        } else {
            None
        };
        let mut amount = rand::rng().random_range(10..=2000);
        if name.is_some() {
            amount = amount.max(30);
        }
        let no = format!("RT{i:04}{}", wxpay::nonce::random_string(12));
        let mut body = cash_back(&payee.openid, amount);
        body["out_bill_no"] = json!(no);
        if let Some((n, _)) = &name {
            body["user_name"] = json!(n);
        }
        shared.intents.lock().unwrap().insert(
            no.clone(),
            Intent {
                no: no.clone(),
                openid: payee.openid.clone(),
                amount,
                fate,
                name,
            },
        );
        let (status, answer) = insist(&shared.failed_requests, 300, || {
            http.post(format!("{}/admin/transfers", shared.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
        })
        .await
        .expect("the transfer request is answered");
        assert!(status == 201 || status == 200, "{no}: {status} {answer}");
        assert_eq!(answer["out_bill_no"], no.as_str());
        made += 1;
        if fate == Fate::BackOfficeCancel {
            let (status, answer) = insist(&shared.failed_requests, 300, || {
                http.post(format!("{}/admin/transfers/{no}/cancel", shared.base))
                    .bearer_auth(ADMIN_TOKEN)
            })
            .await
            .expect("the cancel is answered");
            // 409: an earlier try whose answer a crash cut off had already cancelled it.
            assert!(
                status == 200 || (status == 409 && answer["code"] == "transfer_state"),
                "{no}: {status} {answer}"
            );
            shared.back_office_cancels.fetch_add(1, Ordering::Relaxed);
        }
        let pause = rand::rng().random_range(100..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    made
}

/// Settings of the last, in-process restart: the address the process listened on, so that the
/// notify URL (part of every resent request) and WeChat's pending notifications stay valid.
fn settings_at(addr: SocketAddr, database_url: &str, pay_base: &str, mp_base: &str) -> Settings {
    let merchant = sandbox_dir().join("merchant.json");
    let listen = addr.to_string();
    let mut settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", listen.as_str()),
            ("WXPAY_MERCHANT_FILE", merchant.to_str().unwrap()),
            ("WXPAY_DATABASE_URL", database_url),
            ("WXPAY_PAY_BASE_URL", pay_base),
            ("WXPAY_MP_BASE_URL", mp_base),
            ("WXPAY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("WXPAY_QUERY_AFTER_SECS", "0"),
        ],
    )
    .unwrap();
    settings.rate_limit_login = NO_LIMIT;
    settings.rate_limit_orders = NO_LIMIT;
    settings
}

async fn all_transfers(store: &wxpay_server::store::Store) -> Vec<Transfer> {
    let all = store
        .list_transfers(&TransferFilter {
            limit: 500,
            ..TransferFilter::default()
        })
        .await
        .unwrap();
    assert!(all.len() < 500, "more transfers than one page");
    all
}

/// `transfer.*` outbox rows per transfer number (from their dedupe keys).
async fn transfer_webhooks(pool: &sqlx::AnyPool) -> HashMap<String, Vec<String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, dedupe_key FROM outbox WHERE event_type LIKE 'transfer.%' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for (kind, key) in rows {
        let no = key
            .strip_prefix(&format!("{kind}:"))
            .unwrap_or_else(|| panic!("dedupe key {key}"))
            .to_owned();
        per.entry(no).or_default().push(kind);
    }
    per
}

fn webhook_of(state: &str) -> &'static str {
    match state {
        "SUCCESS" => "transfer.succeeded",
        "FAIL" => "transfer.failed",
        "CANCELLED" => "transfer.cancelled",
        other => panic!("no webhook for {other}"),
    }
}

/// The day's reservations against the live transfers (not `FAIL` or `CANCELLED`): the total
/// drift in fen over the merchant's days and every user's days.
async fn budget_drift(pool: &sqlx::AnyPool, transfers: &[Transfer]) -> u64 {
    let live = |t: &&Transfer| !matches!(t.status.as_str(), "FAIL" | "CANCELLED");
    let mut want_budget: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut want_user: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for t in transfers {
        let budget = want_budget
            .entry((t.mchid.clone(), t.day.clone()))
            .or_default();
        let user = want_user
            .entry((t.appid.clone(), t.openid.clone(), t.day.clone()))
            .or_default();
        if live(&t) {
            *budget += t.amount_fen;
            *user += t.amount_fen;
        }
    }
    let budgets: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT mchid, day, reserved_fen FROM transfer_budget_days")
            .fetch_all(pool)
            .await
            .unwrap();
    let users: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT appid, openid, day, reserved_fen FROM transfer_user_days")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut drift = 0;
    let mut seen_budget = HashSet::new();
    for (mchid, day, reserved) in budgets {
        let key = (mchid, day);
        let want = want_budget.get(&key).copied().unwrap_or(0);
        let reserved = u64::try_from(reserved).expect("a negative reservation");
        drift += reserved.abs_diff(want);
        seen_budget.insert(key);
    }
    for (key, want) in &want_budget {
        if !seen_budget.contains(key) {
            drift += want;
        }
    }
    let mut seen_user = HashSet::new();
    for (appid, openid, day, reserved) in users {
        let key = (appid, openid, day);
        let want = want_user.get(&key).copied().unwrap_or(0);
        let reserved = u64::try_from(reserved).expect("a negative reservation");
        drift += reserved.abs_diff(want);
        seen_user.insert(key);
    }
    for (key, want) in &want_user {
        if !seen_user.contains(key) {
            drift += want;
        }
    }
    drift
}

/// Transfers whose timeline has a state line reported `via` (`resent`, `query`, ...).
async fn transfers_with_state_via(pool: &sqlx::AnyPool, via: &str) -> usize {
    usize::try_from(
        count(
            pool,
            &format!(
                "SELECT COUNT(DISTINCT out_bill_no) FROM transfer_events WHERE kind = 'state' AND detail LIKE '%\"via\":\"{via}\"%'"
            ),
        )
        .await,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn sigkill_under_transfers_makes_each_transfer_once_and_keeps_the_budget() {
    let started = Instant::now();
    let sim = simulator(50.0).await;
    let dir = temp_dir("transfers-crash");
    let db_url = format!("sqlite://{}", dir.join("wxpay.db").display());
    let env = merchant_env(&db_url, &sim.tls_base_url(), &sim.base_url(), ADMIN_TOKEN);
    let mut server = ServerProcess::start(env, dir.join("server.log")).await;
    let addr = server.addr;
    let http = client();
    let limits: Value = http
        .get(format!("{}/admin/transfers/limits", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mchid = limits[0]["mchid"].as_str().unwrap().to_owned();
    let set = http
        .put(format!("{}/admin/transfers/limits/{mchid}", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"daily_budget_fen": 100_000_000, "user_daily_cap_fen": 10_000_000}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    let shared = Arc::new(Shared {
        base: server.base.clone(),
        sim: sim.base_url(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap(),
        failed_requests: AtomicUsize::new(0),
        payees: Mutex::default(),
        intents: Mutex::default(),
        confirmed: Mutex::default(),
        user_cancels: AtomicUsize::new(0),
        back_office_cancels: AtomicUsize::new(0),
        done: AtomicBool::new(false),
    });
    // WeChat takes 100 ms per call: crashes cut sends off between the commit here and the
    // answer recorded.
    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults {
            api_latency_ms: 100,
            ..Default::default()
        })
        .unwrap();
    let users: Vec<_> = (0..USERS)
        .map(|_| tokio::spawn(payee(shared.clone())))
        .collect();
    let desks: Vec<_> = (0..OFFICE_DESKS)
        .map(|desk| tokio::spawn(back_office(shared.clone(), desk)))
        .collect();
    let killer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut crashes = 0;
            while !shared.done.load(Ordering::Relaxed) {
                let (up, down) = {
                    let mut rng = rand::rng();
                    (rng.random_range(200..1000), rng.random_range(100..300))
                };
                tokio::time::sleep(Duration::from_millis(up)).await;
                server.kill();
                crashes += 1;
                // Down longer than WeChat's latency: a send the crash cut off has reached
                // WeChat (or was dropped) before anything here may cancel it.
                tokio::time::sleep(Duration::from_millis(down)).await;
                server.spawn(&[]).await;
            }
            (server, crashes)
        })
    };
    let mut requested = 0;
    for desk in desks {
        requested += desk.await.unwrap();
    }
    // The users act on the last transfers, then the crashes stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shared.done.store(true, Ordering::Relaxed);
    for u in users {
        u.await.unwrap();
    }
    let (mut server, crashes) = killer.await.unwrap();
    let load_s = started.elapsed().as_secs_f64();

    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults::default())
        .unwrap();
    // WeChat's pending notifications reach the (running) server.
    let late = sim.state().dispatcher.flush().await;
    server.kill();
    let server_log = server.log_text();
    let starts = server.starts;

    // The last restart, in process, on the same address; the transfer job drained.
    let app = Application::build(settings_at(
        addr,
        &db_url,
        &sim.tls_base_url(),
        &sim.base_url(),
    ))
    .await
    .unwrap()
    .with_jobs(None);
    let state = app.state().clone();
    let store = state.store.clone();
    let pool = store.pool().clone();
    tokio::spawn(app.run_until_stopped());
    let bills_before: HashSet<String> = sim
        .state()
        .transfers
        .bills(None, None)
        .into_iter()
        .map(|b| b.out_bill_no)
        .collect();
    let unanswered: Vec<String> = all_transfers(&store)
        .await
        .into_iter()
        .filter(|t| t.status.as_str() == "ACCEPTED")
        .map(|t| t.out_bill_no)
        .collect();
    let answers_lost = unanswered
        .iter()
        .filter(|no| bills_before.contains(*no))
        .count();
    // A transfer whose creator was killed after committing it stays leased to that process for
    // the send lease (a minute), and waits for its next check: end both now, as the clock would.
    let now = wxpay_server::store::now_ms();
    let orphaned_leases = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM transfers WHERE lease_until > {now} AND status NOT IN ('SUCCESS', 'FAIL', 'CANCELLED')"
        ),
    )
    .await;
    sqlx::query(
        "UPDATE transfers SET lease_until = $1, next_check_at = 0 WHERE status NOT IN ('SUCCESS', 'FAIL', 'CANCELLED')",
    )
    .bind(now - 1)
    .execute(&pool)
    .await
    .unwrap();
    let jobs = eager_jobs(&state);
    let mut job_batches = 0;
    for _ in 0..20 {
        let n = jobs.drain(JobKind::FollowTransfers, 1000).await.unwrap();
        job_batches += n;
        let flushed = sim.state().dispatcher.flush().await;
        if n == 0 && flushed.attempted == 0 {
            break;
        }
    }
    let due = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM transfers WHERE next_check_at <= {} AND status NOT IN ('SUCCESS', 'FAIL', 'CANCELLED')",
            wxpay_server::store::now_ms()
        ),
    )
    .await;
    assert_eq!(due, 0, "transfers still due after the drain");

    // Here against WeChat.
    let transfers = all_transfers(&store).await;
    let here: HashMap<&str, &Transfer> = transfers
        .iter()
        .map(|t| (t.out_bill_no.as_str(), t))
        .collect();
    let bills = sim.state().transfers.bills(None, None);
    let mut at_wechat = HashMap::new();
    let mut duplicates = 0;
    for b in &bills {
        if at_wechat.insert(b.out_bill_no.as_str(), b).is_some() {
            duplicates += 1;
        }
        let t = here
            .get(b.out_bill_no.as_str())
            .unwrap_or_else(|| panic!("bill {} unknown here", b.out_bill_no));
        assert_eq!(t.amount_fen, b.transfer_amount, "{}", b.out_bill_no);
        assert_eq!(t.openid, b.openid, "{}", b.out_bill_no);
    }
    assert_eq!(duplicates, 0);
    let intents = shared.intents.lock().unwrap().clone();
    assert_eq!(intents.len(), requested);
    assert_eq!(
        transfers.len(),
        intents.len(),
        "a transfer beyond the intents"
    );
    let confirmed = shared.confirmed.lock().unwrap().clone();
    let webhooks = transfer_webhooks(&pool).await;
    let mut mismatches = Vec::new();
    let mut without_bill = 0;
    let mut named = 0;
    for intent in intents.values() {
        let no = intent.no.as_str();
        let t = here
            .get(no)
            .unwrap_or_else(|| panic!("{no} requested, not made"));
        assert_eq!(t.amount_fen, intent.amount, "{no}");
        assert_eq!(t.openid, intent.openid, "{no}");
        assert_eq!(t.user_name.is_some(), intent.name.is_some(), "{no}");
        named += usize::from(intent.name.is_some());
        let ours = t.status.as_str();
        match at_wechat.get(no) {
            Some(b) => {
                let theirs = b.state.as_str();
                let same = if b.state.is_final() || t.status.is_final() {
                    ours == theirs
                } else {
                    // Neither is final (here WAIT_USER_CONFIRM after the job, there too).
                    true
                };
                if !same {
                    mismatches.push(format!("{no}: {ours} here, {theirs} at WeChat"));
                }
                if let Some(bill_no) = &t.transfer_bill_no {
                    assert_eq!(bill_no, &b.transfer_bill_no, "{no}");
                }
            }
            None => {
                // Never reached WeChat: only a cancel (WeChat answered 404) ends it here.
                without_bill += 1;
                if ours != "CANCELLED" {
                    mismatches.push(format!("{no}: {ours} here, no bill at WeChat"));
                }
            }
        }
        // After the job, nothing is left unanswered or half-cancelled.
        assert!(
            t.status.is_final() || ours == "WAIT_USER_CONFIRM",
            "{no}: {ours}"
        );
        match (intent.fate, confirmed.get(no)) {
            (Fate::Confirm, Some(answer)) => {
                let right_name = intent.name.as_ref().is_none_or(|(_, right)| *right);
                let want = if right_name { "SUCCESS" } else { "FAIL" };
                assert_eq!(answer, want, "{no}: WeChat's confirm page");
                if ours != want {
                    mismatches.push(format!("{no}: confirmed, {ours} here"));
                }
                if !right_name {
                    assert_eq!(t.fail_reason.as_deref(), Some("NAME_NOT_CORRECT"), "{no}");
                }
            }
            (Fate::BackOfficeCancel, _) => {
                assert_eq!(ours, "CANCELLED", "{no}: cancelled by the back office");
            }
            (_, Some(_)) => panic!("{no} confirmed against its fate"),
            (_, None) => {
                // Not confirmed by its user: it waits, or was never seen by them.
                assert!(!matches!(ours, "SUCCESS" | "FAIL"), "{no}: {ours}");
            }
        }
        let events = webhooks.get(no).cloned().unwrap_or_default();
        if t.status.is_final() {
            assert_eq!(events, [webhook_of(ours)], "{no}: one webhook");
        } else {
            assert!(events.is_empty(), "{no}: {events:?} while {ours}");
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    let drift = budget_drift(&pool, &transfers).await;
    assert_eq!(drift, 0, "the day's reservations drifted");
    let mut secrets = Secrets::of_sandbox().with_session_keys(&pool).await;
    for intent in intents.values() {
        if let Some((name, _)) = &intent.name {
            secrets = secrets.with("a payee's name", name);
        }
    }
    secrets.assert_absent("the crashed server's logs", &server_log);
    let states = |s: &str| transfers.iter().filter(|t| t.status.as_str() == s).count();
    figures(
        "scenario 12a transfers under SIGKILL",
        &[
            ("users", USERS.to_string()),
            ("transfers_requested", requested.to_string()),
            ("made_here", transfers.len().to_string()),
            ("named", named.to_string()),
            ("bills_at_wechat", bills.len().to_string()),
            ("confirmed_by_users", confirmed.len().to_string()),
            ("success", states("SUCCESS").to_string()),
            ("fail_wrong_name", states("FAIL").to_string()),
            (
                "user_tapped_cancel",
                shared.user_cancels.load(Ordering::Relaxed).to_string(),
            ),
            (
                "cancelled_by_back_office",
                shared
                    .back_office_cancels
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            ("cancelled", states("CANCELLED").to_string()),
            ("cancelled_never_at_wechat", without_bill.to_string()),
            ("still_waiting", states("WAIT_USER_CONFIRM").to_string()),
            ("crashes_sigkill", crashes.to_string()),
            ("server_starts", starts.to_string()),
            (
                "requests_failed_by_crashes",
                shared.failed_requests.load(Ordering::Relaxed).to_string(),
            ),
            ("late_notifications_flushed", late.attempted.to_string()),
            ("unanswered_after_crashes", unanswered.len().to_string()),
            ("of_which_answer_lost", answers_lost.to_string()),
            ("leases_left_by_crashes", orphaned_leases.to_string()),
            (
                "resent_by_job",
                transfers_with_state_via(&pool, "resent").await.to_string(),
            ),
            ("job_batches", job_batches.to_string()),
            ("duplicates_at_wechat", duplicates.to_string()),
            ("mismatches", mismatches.len().to_string()),
            ("budget_drift_fen", drift.to_string()),
            ("load_s", format!("{load_s:.1}")),
            ("total_s", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 12b: three instances

const INSTANCES: usize = 3;
const PAYEES: usize = 20;
const MANY_TRANSFERS: usize = 40;

/// Sends the same request to every instance at once (each on its own task, so that they race
/// in the database); the statuses and bodies in the instances' order.
async fn to_all(
    servers: &[ServerProcess],
    make: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Vec<(u16, Value)> {
    let sends: Vec<_> = servers
        .iter()
        .map(|s| {
            let request = make(&s.base);
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    answers
}

/// Polls `pending` (flushing WeChat's notifications) until it is 0, for at most `secs`.
async fn wait_until_none(
    sim: &wxpay_sim::RunningSimulator,
    pool: &sqlx::AnyPool,
    sql: &str,
    secs: u64,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let pending = count(pool, sql).await;
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} {what}");
        sim.state().dispatcher.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn in_list(nos: &[String]) -> String {
    nos.iter()
        .map(|no| format!("'{no}'"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "reliability suite: scripts/test-reliability"]
async fn three_instances_make_each_transfer_once_and_heal_lost_notifications_once() {
    let started = Instant::now();
    let Cluster {
        sim,
        proxy,
        fanout,
        received,
        db,
        servers,
        pool,
    } = cluster(
        "transfers-instances",
        INSTANCES,
        &[
            ("WXPAY_TRANSFER_DAILY_BUDGET_FEN", "100000000"),
            ("WXPAY_TRANSFER_USER_DAILY_CAP_FEN", "10000000"),
        ],
    )
    .await;
    let http = client();
    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_duplicate_rate: 0.3,
            ..Default::default()
        })
        .unwrap();
    let sim_url = sim.base_url();

    // Users, logged in through the three in turn.
    let mut payees = Vec::new();
    for p in 0..PAYEES {
        let user: Value = http
            .post(format!("{sim_url}/sim/users"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let login: Value = http
            .post(format!("{}/api/login", servers[p % INSTANCES].base))
            .json(&json!({"code": user["code"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        payees.push((
            user["openid"].as_str().unwrap().to_owned(),
            login["token"].as_str().unwrap().to_owned(),
        ));
    }

    // Each transfer POSTed to the three at once, same number, same body.
    let mut made = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for k in 0..MANY_TRANSFERS {
        let (openid, _) = &payees[k % PAYEES];
        let amount: u64 = rand::rng().random_range(10..=2000);
        let no = format!("RI{k:04}{}", wxpay::nonce::random_string(12));
        let mut body = cash_back(openid, amount);
        body["out_bill_no"] = json!(no);
        let answers = to_all(&servers, |base| {
            http.post(format!("{base}/admin/transfers"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
        })
        .await;
        for (status, answer) in &answers {
            *statuses.entry(*status).or_default() += 1;
            assert_eq!(answer["out_bill_no"], no.as_str(), "{status} {answer}");
        }
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        let repeats = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!((created, repeats), (1, INSTANCES - 1), "{no}: {answers:?}");
        made.push((no, k % PAYEES, amount));
    }
    wait_until_none(
        &sim,
        &pool,
        "SELECT COUNT(*) FROM transfers WHERE status <> 'WAIT_USER_CONFIRM'",
        30,
        "transfers not waiting for their users",
    )
    .await;

    // Groups: confirmed with notifications (60%), confirmed with every notification lost (20%:
    // the jobs must find them), cancelled by the back office (10%), left waiting (10%).
    let n = made.len();
    let (notified, rest) = made.split_at(n * 3 / 5);
    let (lost, rest) = rest.split_at(n / 5);
    let (cancelled, waiting) = rest.split_at(n / 10);
    let nos =
        |g: &[(String, usize, u64)]| g.iter().map(|(no, _, _)| no.clone()).collect::<Vec<_>>();
    let confirm = |k: usize, no: String, p: usize| {
        let (openid, token) = payees[p].clone();
        let base = servers[k % INSTANCES].base.clone();
        let http = http.clone();
        let sim_url = sim_url.clone();
        async move {
            let object: Value = http
                .post(format!("{base}/api/transfers/{no}/confirm"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(object["package"].as_str().is_some(), "{no}: {object}");
            let mut body = object;
            body["openid"] = json!(openid);
            let answer: Value = http
                .post(format!("{sim_url}/sim/transfers/confirm"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["state"], "SUCCESS", "{no}: {answer}");
        }
    };
    for (k, (no, p, _)) in notified.iter().enumerate() {
        confirm(k, no.clone(), *p).await;
    }
    for (k, (no, _, _)) in cancelled.iter().enumerate() {
        let a = http
            .post(format!(
                "{}/admin/transfers/{no}/cancel",
                servers[k % INSTANCES].base
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200, "{no}");
    }
    wait_until_none(
        &sim,
        &pool,
        &format!(
            "SELECT COUNT(*) FROM transfers WHERE (out_bill_no IN ({}) AND status <> 'SUCCESS') OR (out_bill_no IN ({}) AND status <> 'CANCELLED')",
            in_list(&nos(notified)),
            in_list(&nos(cancelled))
        ),
        60,
        "notified transfers not final",
    )
    .await;

    // From now on every notification is lost: only the jobs can find the confirmations.
    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_drop_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    for (k, (no, p, _)) in lost.iter().enumerate() {
        confirm(k, no.clone(), *p).await;
    }
    sim.state().dispatcher.flush().await;
    let lost_list = in_list(&nos(lost));
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT COUNT(*) FROM transfers WHERE out_bill_no IN ({lost_list}) AND status = 'WAIT_USER_CONFIRM'"
            )
        )
        .await,
        i64::try_from(lost.len()).unwrap(),
        "a lost notification arrived"
    );
    // Age them as if their check were due (ten minutes): the jobs of all three race for them.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE transfers SET next_check_at = 0 WHERE out_bill_no IN ({lost_list})"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM transfers WHERE out_bill_no IN ({lost_list}) AND status <> 'SUCCESS'"
        ),
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "lost notifications not healed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The late notifications come after all (fanned out, duplicated) and change nothing.
    sim.state()
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_duplicate_rate: 0.3,
            ..Default::default()
        })
        .unwrap();
    let late = sim.state().dispatcher.flush().await;
    wait_until_none(
        &sim,
        &pool,
        "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
        60,
        "webhooks not delivered",
    )
    .await;
    // A moment more, for any instance that would do something twice.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Checks.
    let transfers: Vec<Transfer> = {
        let rows: Vec<String> = sqlx::query_scalar("SELECT out_bill_no FROM transfers")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), n, "one transfer per number");
        let store = wxpay_server::store::Store::connect(
            &db.url,
            &wxpay_server::store::StoreOptions {
                max_connections: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let all = all_transfers(&store).await;
        store.close().await;
        all
    };
    let bills = sim.state().transfers.bills(None, None);
    assert_eq!(bills.len(), n, "one bill per transfer at WeChat");
    let at_wechat: HashMap<&str, _> = bills.iter().map(|b| (b.out_bill_no.as_str(), b)).collect();
    let webhooks = transfer_webhooks(&pool).await;
    let state_changes: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT out_bill_no, COUNT(*) FROM transfer_events WHERE kind = 'state' AND detail LIKE '%\"state\":\"SUCCESS\"%' GROUP BY out_bill_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let expected: HashMap<&str, &str> = notified
        .iter()
        .chain(lost)
        .map(|(no, _, _)| (no.as_str(), "SUCCESS"))
        .chain(
            cancelled
                .iter()
                .map(|(no, _, _)| (no.as_str(), "CANCELLED")),
        )
        .chain(
            waiting
                .iter()
                .map(|(no, _, _)| (no.as_str(), "WAIT_USER_CONFIRM")),
        )
        .collect();
    for (no, p, amount) in &made {
        let t = transfers
            .iter()
            .find(|t| &t.out_bill_no == no)
            .unwrap_or_else(|| panic!("{no} missing"));
        let b = at_wechat
            .get(no.as_str())
            .unwrap_or_else(|| panic!("{no} not at WeChat"));
        assert_eq!(
            (t.amount_fen, b.transfer_amount),
            (*amount, *amount),
            "{no}"
        );
        assert_eq!(
            (&t.openid, &b.openid),
            (&payees[*p].0, &payees[*p].0),
            "{no}"
        );
        assert_eq!(
            t.status.as_str(),
            b.state.as_str(),
            "{no}: here and at WeChat"
        );
        assert_eq!(t.status.as_str(), expected[no.as_str()], "{no}");
        let events = webhooks.get(no).cloned().unwrap_or_default();
        if t.status.is_final() {
            assert_eq!(events, [webhook_of(t.status.as_str())], "{no}");
        } else {
            assert!(events.is_empty(), "{no}");
        }
        if t.status.as_str() == "SUCCESS" {
            assert_eq!(state_changes.get(no), Some(&1), "{no} became SUCCESS once");
        }
    }
    let creates: usize = proxy
        .calls("POST", BILLS)
        .iter()
        .filter(|(path, _)| path == BILLS)
        .count();
    assert_eq!(creates, n, "each transfer created at WeChat once");
    let mut lost_queries = 0;
    for (no, _, _) in lost {
        let calls = proxy.count("GET", &format!("{BILLS}/out-bill-no/{no}"));
        assert_eq!(calls, 1, "{no} queried once by the three jobs");
        lost_queries += calls;
    }
    let queries = proxy.count("GET", &format!("{BILLS}/"));
    let cancels = proxy.count("POST", &format!("{BILLS}/out-bill-no/"));
    assert_eq!(cancels, cancelled.len(), "each cancel sent once");
    let drift = budget_drift(&pool, &transfers).await;
    assert_eq!(drift, 0, "the day's reservations drifted");
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
    let dropped: usize = records
        .iter()
        .map(|r| r.attempts.iter().filter(|a| a.outcome == "dropped").count())
        .sum();
    drop(servers);
    figures(
        "scenario 12b transfers on three instances on one PostgreSQL",
        &[
            ("instances", INSTANCES.to_string()),
            ("transfers", n.to_string()),
            ("requests_x3", (n * INSTANCES).to_string()),
            (
                "answered_201_200",
                format!(
                    "{}/{}",
                    statuses.get(&201).copied().unwrap_or(0),
                    statuses.get(&200).copied().unwrap_or(0)
                ),
            ),
            ("create_calls_at_wechat", creates.to_string()),
            ("bills_at_wechat", bills.len().to_string()),
            ("confirmed_notified", notified.len().to_string()),
            ("confirmed_notifications_lost", lost.len().to_string()),
            ("cancelled", cancelled.len().to_string()),
            ("left_waiting", waiting.len().to_string()),
            ("notification_sends", sends.to_string()),
            ("notification_attempts_dropped", dropped.to_string()),
            ("late_redeliveries", late.attempted.to_string()),
            (
                "fanned_out_to_3",
                fanout.delivered.lock().unwrap().to_string(),
            ),
            ("queries_at_wechat", queries.to_string()),
            ("queries_of_lost", lost_queries.to_string()),
            ("cancel_calls_at_wechat", cancels.to_string()),
            ("webhook_events", events.len().to_string()),
            ("webhook_deliveries", received.len().to_string()),
            ("duplicates", "0".into()),
            ("budget_drift_fen", drift.to_string()),
            ("total_s", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}
