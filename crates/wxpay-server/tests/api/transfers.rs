//! Merchant transfers (payouts) through the public API against the simulator: made in the back
//! office, confirmed by the user in the mini program, paid, cancelled, expired; lost answers
//! and notifications; duplicates; the budget and the cap; the name.

use serde_json::{Value, json};
use wxpay_server::core::payouts;
use wxpay_server::jobs::JobKind;
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::TestApp;
use crate::jobs::{admin_get, admin_post, eager_jobs, spawn_quiet};

/// A logged-in user of the sandbox's mini program: (openid, session token).
async fn user(app: &TestApp) -> (String, String) {
    app.login().await
}

fn cash_back(openid: &str, amount: u64) -> Value {
    json!({
        "openid": openid,
        "amount_fen": amount,
        "scene": "1000",
        "report_infos": [
            {"info_type": "活动名称", "info_content": "新会员有礼"},
            {"info_type": "奖励说明", "info_content": "首单返现"}
        ],
        "perception": "现金奖励",
        "remark": "首单返现",
        "reason": "campaign 2026-12 first order cash back"
    })
}

async fn transfer(app: &TestApp, no: &str) -> Value {
    let a = admin_get(app, &format!("/admin/transfers/{no}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

/// The user taps "收款" in WeChat's confirm page with the object the server gave.
async fn user_confirms(app: &TestApp, token: &str, openid: &str, no: &str) -> Value {
    let object = app
        .post(&format!("/api/transfers/{no}/confirm"), Some(token))
        .await;
    assert_eq!(object.status, 200, "{:?}", object.body);
    assert_eq!(object.body["openId"], openid);
    assert!(
        object.body["package"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );
    let mut body = object.body.clone();
    body["openid"] = json!(openid);
    let confirmed = app.post_json("/sim/transfers/confirm", None, &body).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    confirmed.body
}

async fn webhooks_of(app: &TestApp, no: &str) -> Vec<String> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY id")
            .fetch_all(app.state.store.pool())
            .await
            .unwrap();
    rows.into_iter()
        .filter(|(_, payload)| payload.contains(&format!("\"out_bill_no\":\"{no}\"")))
        .map(|(t, _)| t)
        .collect()
}

async fn sim_bills(app: &TestApp, openid: &str) -> Vec<Value> {
    let a = app
        .get(
            &format!("/sim/transfers?openid={openid}"),
            Some(&app.admin()),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["transfers"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| a.body.as_array().cloned().unwrap_or_default())
}

async fn budget_left(app: &TestApp) -> u64 {
    let a = admin_get(app, "/admin/transfers/limits").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body[0]["left_today_fen"].as_u64().unwrap()
}

async fn a_confirmed_transfer_is_paid_once(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, token) = user(&app).await;
    let before = budget_left(&app).await;
    app.set_faults(json!({"notify_duplicate_rate": 1.0})).await;
    let made = admin_post(&app, "/admin/transfers", &cash_back(&openid, 1500)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["status"], "WAIT_USER_CONFIRM");
    assert_eq!(made.body["operator"], "admin");
    assert!(made.body.get("package_info").is_none());
    let no = made.body["out_bill_no"].as_str().unwrap().to_owned();
    assert_eq!(budget_left(&app).await, before - 1500);

    // The mini program lists it as waiting for the user.
    let mine = app.get("/api/transfers", Some(&token)).await;
    assert_eq!(mine.body["transfers"][0]["out_bill_no"], no.as_str());
    assert_eq!(mine.body["transfers"][0]["can_confirm"], true);
    // Another user cannot confirm it.
    let (_, other) = user(&app).await;
    let stranger = app
        .post(&format!("/api/transfers/{no}/confirm"), Some(&other))
        .await;
    assert_eq!(stranger.status, 404, "{:?}", stranger.body);

    user_confirms(&app, &token, &openid, &no).await;
    app.flush().await;
    let done = transfer(&app, &no).await;
    assert_eq!(done["status"], "SUCCESS", "{done:?}");
    assert!(done["finished_at"].as_i64().is_some());
    let kinds: Vec<&str> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"requested"));
    assert_eq!(done["timeline"][0]["detail"]["operator"], "admin");
    // Each notification came twice; one webhook, and the money stays spent.
    assert_eq!(webhooks_of(&app, &no).await, ["transfer.succeeded"]);
    assert_eq!(budget_left(&app).await, before - 1500);
    // Confirming again is refused: it no longer waits.
    let again = app
        .post(&format!("/api/transfers/{no}/confirm"), Some(&token))
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    // The same request with its own number makes no second transfer.
    let mut body = cash_back(&openid, 1500);
    body["out_bill_no"] = json!(no);
    let repeat = admin_post(&app, "/admin/transfers", &body).await;
    assert_eq!(repeat.status, 200, "{:?}", repeat.body);
    body["reason"] = json!("another reason");
    let clash = admin_post(&app, "/admin/transfers", &body).await;
    assert_eq!(clash.body["code"], "out_bill_no_used");
    body["reason"] = cash_back(&openid, 1500)["reason"].clone();
    body["amount_fen"] = json!(1600);
    let clash = admin_post(&app, "/admin/transfers", &body).await;
    assert_eq!(clash.body["code"], "out_bill_no_used");
    assert_eq!(sim_bills(&app, &openid).await.len(), 1);
}

async fn a_transfer_cancelled_by_the_merchant_gives_its_amount_back(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, token) = user(&app).await;
    let before = budget_left(&app).await;
    let made = admin_post(&app, "/admin/transfers", &cash_back(&openid, 800)).await;
    let no = made.body["out_bill_no"].as_str().unwrap().to_owned();
    let cancelled = admin_post(&app, &format!("/admin/transfers/{no}/cancel"), &json!({})).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert!(
        ["CANCELING", "CANCELLED"].contains(&cancelled.body["status"].as_str().unwrap()),
        "{:?}",
        cancelled.body
    );
    app.flush().await;
    // The notification or the job's query finishes it.
    eager_jobs(&app)
        .drain(JobKind::FollowTransfers, 3)
        .await
        .unwrap();
    let t = transfer(&app, &no).await;
    assert_eq!(t["status"], "CANCELLED", "{t:?}");
    assert_eq!(webhooks_of(&app, &no).await, ["transfer.cancelled"]);
    assert_eq!(budget_left(&app).await, before);
    // The user can no longer confirm it, and a cancelled transfer cannot be cancelled again.
    let object = app
        .post(&format!("/api/transfers/{no}/confirm"), Some(&token))
        .await;
    assert_eq!(object.status, 409);
    let twice = admin_post(&app, &format!("/admin/transfers/{no}/cancel"), &json!({})).await;
    assert_eq!(twice.body["code"], "transfer_state");
}

async fn an_unconfirmed_transfer_expires(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (openid, _) = user(&app).await;
    let before = budget_left(&app).await;
    // WeChat closes it after a day of its clock.
    let closed_by_wechat = admin_post(&app, "/admin/transfers", &cash_back(&openid, 300)).await;
    let a = closed_by_wechat.body["out_bill_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let advanced = app
        .send(
            app.http
                .post(format!("{}/sim/clock/advance", app.base))
                .bearer_auth(app.admin())
                .json(&json!({"seconds": 25 * 3600})),
        )
        .await;
    assert_eq!(advanced.status, 200, "{:?}", advanced.body);
    app.flush().await;
    let t = transfer(&app, &a).await;
    assert_eq!(t["status"], "FAIL", "{t:?}");
    assert_eq!(t["fail_reason"], "OVERDUE_CLOSE");
    assert_eq!(webhooks_of(&app, &a).await, ["transfer.failed"]);
    assert_eq!(budget_left(&app).await, before);

    // Past this server's own window (here: waiting for its user since two days ago by this
    // server's clock), the job cancels it.
    let ours = admin_post(&app, "/admin/transfers", &cash_back(&openid, 400)).await;
    let b = ours.body["out_bill_no"].as_str().unwrap().to_owned();
    for sql in [
        format!(
            "UPDATE transfers SET created_at = created_at - 172800000, next_check_at = 0 WHERE out_bill_no = '{b}'"
        ),
        format!(
            "UPDATE transfer_events SET created_at = created_at - 172800000 WHERE out_bill_no = '{b}'"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(app.state.store.pool())
            .await
            .unwrap();
    }
    assert!(jobs.drain(JobKind::FollowTransfers, 3).await.unwrap() >= 1);
    app.flush().await;
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    let t = transfer(&app, &b).await;
    assert_eq!(t["status"], "CANCELLED", "{t:?}");
    assert!(
        t["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "cancel_requested" && e["detail"]["via"] == "expired")
    );
}

async fn a_lost_create_answer_makes_one_transfer(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (openid, token) = user(&app).await;
    app.set_faults(json!({"api_error_rate": 1.0})).await;
    let made = admin_post(&app, "/admin/transfers", &cash_back(&openid, 500)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["status"], "ACCEPTED");
    assert!(made.body["last_error"].as_str().is_some());
    let no = made.body["out_bill_no"].as_str().unwrap().to_owned();
    // Not the user's business yet.
    let mine = app.get("/api/transfers", Some(&token)).await;
    assert_eq!(mine.body["transfers"].as_array().unwrap().len(), 0);
    app.set_faults(json!({})).await;
    assert!(sim_bills(&app, &openid).await.is_empty());
    // Sent again, WeChat gets it, but its answer is lost on the way back.
    let stored = app.state.store.transfer(&no).await.unwrap().unwrap();
    let wechat = payouts::clients_of(&app.state.registry, &stored).unwrap();
    let request = payouts::wire_request(&stored).unwrap();
    wechat.v3.create_transfer_bill(&request).await.unwrap();
    assert_eq!(sim_bills(&app, &openid).await.len(), 1);
    // The job sends the same bill once more: WeChat answers with the one it has.
    make_due(&app, &no).await;
    assert!(jobs.drain(JobKind::FollowTransfers, 3).await.unwrap() >= 1);
    let t = transfer(&app, &no).await;
    assert_eq!(t["status"], "WAIT_USER_CONFIRM", "{t:?}");
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    assert_eq!(sim_bills(&app, &openid).await.len(), 1);
    user_confirms(&app, &token, &openid, &no).await;
    app.flush().await;
    assert_eq!(transfer(&app, &no).await["status"], "SUCCESS");
}

async fn a_lost_notification_is_healed_by_the_job(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (openid, token) = user(&app).await;
    let made = admin_post(&app, "/admin/transfers", &cash_back(&openid, 700)).await;
    let no = made.body["out_bill_no"].as_str().unwrap().to_owned();
    app.set_faults(json!({"notify_drop_rate": 1.0})).await;
    user_confirms(&app, &token, &openid, &no).await;
    app.flush().await;
    assert_eq!(transfer(&app, &no).await["status"], "WAIT_USER_CONFIRM");
    make_due(&app, &no).await;
    assert!(jobs.drain(JobKind::FollowTransfers, 3).await.unwrap() >= 1);
    let t = transfer(&app, &no).await;
    assert_eq!(t["status"], "SUCCESS", "{t:?}");
    // The late notification then changes nothing.
    app.set_faults(json!({})).await;
    app.flush().await;
    assert_eq!(webhooks_of(&app, &no).await, ["transfer.succeeded"]);
    assert_eq!(jobs.drain(JobKind::FollowTransfers, 3).await.unwrap(), 0);
}

async fn the_budget_and_the_cap_are_kept_before_wechat_is_asked(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, _) = user(&app).await;
    let (other, _) = user(&app).await;
    let mchid = admin_get(&app, "/admin/transfers/limits").await.body[0]["mchid"]
        .as_str()
        .unwrap()
        .to_owned();
    let set = app
        .send(
            app.http
                .put(format!("{}/admin/transfers/limits/{mchid}", app.base))
                .bearer_auth(app.admin())
                .json(&json!({"daily_budget_fen": 1000, "user_daily_cap_fen": 600})),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["own"], true);
    let first = admin_post(&app, "/admin/transfers", &cash_back(&openid, 500)).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let capped = admin_post(&app, "/admin/transfers", &cash_back(&openid, 200)).await;
    assert_eq!(capped.status, 409, "{:?}", capped.body);
    assert_eq!(capped.body["code"], "over_user_daily_cap");
    let second = admin_post(&app, "/admin/transfers", &cash_back(&other, 400)).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    let over = admin_post(&app, "/admin/transfers", &cash_back(&other, 200)).await;
    assert_eq!(over.status, 409, "{:?}", over.body);
    assert_eq!(over.body["code"], "over_daily_budget");
    assert!(
        over.body["message"]
            .as_str()
            .unwrap()
            .contains("100 fen left")
    );
    // Racing requests never go over: of five 100-fen transfers only one fits.
    let (third, _) = user(&app).await;
    let body = cash_back(&third, 100);
    let post = || admin_post(&app, "/admin/transfers", &body);
    let (a1, a2, a3, a4, a5) = tokio::join!(post(), post(), post(), post(), post());
    let answers = [a1, a2, a3, a4, a5];
    let made = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(
        made,
        1,
        "{:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    assert_eq!(budget_left(&app).await, 0);
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(amount_fen) AS BIGINT) FROM transfers")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(total, 1000);
    // WeChat saw only the ones that fit.
    assert_eq!(sim_bills(&app, &other).await.len(), 1);
    // An operator cannot raise its own budget.
    let op = admin_post(
        &app,
        "/admin/operators",
        &json!({"mchid": mchid, "name": "payouts"}),
    )
    .await;
    assert_eq!(op.status, 201, "{:?}", op.body);
    {
        let op_token = op.body["token"].as_str().unwrap();
        let raised = app
            .send(
                app.http
                    .put(format!("{}/admin/transfers/limits/{mchid}", app.base))
                    .bearer_auth(op_token)
                    .json(&json!({"daily_budget_fen": 99999, "user_daily_cap_fen": 99999})),
            )
            .await;
        assert_eq!(raised.status, 401, "{:?}", raised.body);
    }
}

async fn the_name_is_sent_encrypted_and_checked_by_wechat(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, token) = user(&app).await;
    let mut right = cash_back(&openid, 1000);
    right["user_name"] = json!("测试用户");
    let made = admin_post(&app, "/admin/transfers", &right).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["named"], true);
    assert!(!made.bytes.windows(4).any(|w| w == "测试".as_bytes()));
    let no = made.body["out_bill_no"].as_str().unwrap().to_owned();
    let stored: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT user_name_cipher FROM transfers WHERE out_bill_no = '{no}'"
    )))
    .fetch_one(app.state.store.pool())
    .await
    .unwrap();
    assert!(stored.is_some_and(|c| !c.contains("测试") && c.len() >= 300));
    user_confirms(&app, &token, &openid, &no).await;
    app.flush().await;
    assert_eq!(transfer(&app, &no).await["status"], "SUCCESS");

    let mut wrong = cash_back(&openid, 1000);
    wrong["user_name"] = json!("别人");
    let made = admin_post(&app, "/admin/transfers", &wrong).await;
    let no = made.body["out_bill_no"].as_str().unwrap().to_owned();
    user_confirms(&app, &token, &openid, &no).await;
    app.flush().await;
    let t = transfer(&app, &no).await;
    assert_eq!(t["status"], "FAIL", "{t:?}");
    assert_eq!(t["fail_reason"], "NAME_NOT_CORRECT");
    // Below 30 fen a name cannot be given; from 2,000 yuan it must be.
    let mut tiny = cash_back(&openid, 20);
    tiny["user_name"] = json!("测试用户");
    assert_eq!(
        admin_post(&app, "/admin/transfers", &tiny).await.status,
        400
    );
    let big = cash_back(&openid, 200_000);
    let refused = admin_post(&app, "/admin/transfers", &big).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("user_name")
    );
}

async fn bad_transfer_requests_change_nothing(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (openid, _) = user(&app).await;
    let mut cases = Vec::new();
    cases.push(cash_back("o-never-logged-in", 100));
    cases.push(cash_back(&openid, 9));
    let mut one_info = cash_back(&openid, 100);
    one_info["report_infos"] = json!([{"info_type": "活动名称", "info_content": "x"}]);
    cases.push(one_info);
    let mut perception = cash_back(&openid, 100);
    perception["perception"] = json!("退款");
    cases.push(perception);
    let mut long = cash_back(&openid, 100);
    long["remark"] = json!("备".repeat(33));
    cases.push(long);
    let mut number = cash_back(&openid, 100);
    number["out_bill_no"] = json!("BAD-NUMBER");
    cases.push(number);
    let mut scene = cash_back(&openid, 100);
    scene["scene"] = json!("cash");
    cases.push(scene);
    let mut app_id = cash_back(&openid, 100);
    app_id["appid"] = json!("wxnotregistered");
    cases.push(app_id);
    let mut unknown = cash_back(&openid, 100);
    unknown["amount"] = json!(100);
    cases.push(unknown);
    for body in &cases {
        let a = admin_post(&app, "/admin/transfers", body).await;
        assert_eq!(a.status, 400, "{body} -> {:?}", a.body);
        assert!(a.body["code"].as_str().is_some() && a.body["message"].as_str().is_some());
    }
    let none = app
        .post_json("/admin/transfers", None, &cash_back(&openid, 100))
        .await;
    assert_eq!(none.status, 401);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(sim_bills(&app, &openid).await.is_empty());
    assert_eq!(
        admin_get(&app, "/admin/transfers/NOSUCHBILL").await.status,
        404
    );
}

async fn a_short_operating_account_is_retried_then_given_up(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (openid, _) = user(&app).await;
    let before = budget_left(&app).await;
    app.set_faults(json!({"transfer_not_enough": true})).await;
    let short = admin_post(&app, "/admin/transfers", &cash_back(&openid, 600)).await;
    assert_eq!(short.status, 201, "{:?}", short.body);
    assert_eq!(short.body["status"], "ACCEPTED");
    assert!(
        short.body["last_error"]
            .as_str()
            .unwrap()
            .contains("NOT_ENOUGH")
    );
    let a = short.body["out_bill_no"].as_str().unwrap().to_owned();
    let never = admin_post(&app, "/admin/transfers", &cash_back(&openid, 700)).await;
    let b = never.body["out_bill_no"].as_str().unwrap().to_owned();
    assert_eq!(budget_left(&app).await, before - 1300);
    // The merchant tops up: the same bill goes through.
    app.set_faults(json!({})).await;
    make_due(&app, &a).await;
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    assert_eq!(transfer(&app, &a).await["status"], "WAIT_USER_CONFIRM");
    // The other one was never taken by WeChat in a day: given up, its amount back.
    app.set_faults(json!({"transfer_not_enough": true})).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE transfers SET created_at = created_at - 90000000, next_check_at = 0 WHERE out_bill_no = '{b}'"
    )))
    .execute(app.state.store.pool())
    .await
    .unwrap();
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    let t = transfer(&app, &b).await;
    assert_eq!(t["status"], "FAIL", "{t:?}");
    assert_eq!(t["fail_reason"], "OVERDUE_CLOSE");
    assert!(
        t["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "given_up")
    );
    assert_eq!(webhooks_of(&app, &b).await, ["transfer.failed"]);
    assert_eq!(budget_left(&app).await, before - 600);
    app.set_faults(json!({})).await;
    assert_eq!(sim_bills(&app, &openid).await.len(), 1);
}

async fn sim_put(app: &TestApp, path: &str, body: &Value) -> Value {
    let a = app
        .send(
            app.http
                .put(format!("{}{path}", app.base))
                .bearer_auth(app.admin())
                .json(body),
        )
        .await;
    assert_eq!(a.status, 200, "{path}: {:?}", a.body);
    a.body
}

async fn make_due(app: &TestApp, no: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE transfers SET next_check_at = 0 WHERE out_bill_no = '{no}'"
    )))
    .execute(app.state.store.pool())
    .await
    .unwrap();
}

async fn wechats_early_states_are_followed_until_the_user_can_confirm(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let jobs = eager_jobs(&app);
    let (openid, token) = user(&app).await;
    // WeChat first answers ACCEPTED, without the confirm package.
    sim_put(
        &app,
        "/sim/transfers/settings",
        &json!({"accept_first": true}),
    )
    .await;
    let made = admin_post(&app, "/admin/transfers", &cash_back(&openid, 500)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["status"], "ACCEPTED");
    assert!(made.body["last_error"].is_null());
    let a = made.body["out_bill_no"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/api/transfers", Some(&token)).await.body["transfers"],
        json!([])
    );
    // The same bill again, once WeChat has moved on, answers with the package.
    let advanced = app
        .send(
            app.http
                .post(format!("{}/sim/clock/advance", app.base))
                .bearer_auth(app.admin())
                .json(&json!({"seconds": 1})),
        )
        .await;
    assert_eq!(advanced.status, 200);
    make_due(&app, &a).await;
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    assert_eq!(transfer(&app, &a).await["status"], "WAIT_USER_CONFIRM");
    user_confirms(&app, &token, &openid, &a).await;
    app.flush().await;
    assert_eq!(transfer(&app, &a).await["status"], "SUCCESS");

    // A short operating account keeps the bill in PROCESSING until the merchant tops up.
    sim_put(
        &app,
        "/sim/transfers/settings",
        &json!({"accept_first": false, "low_balance": "processing"}),
    )
    .await;
    let mchid = made.body["mchid"].as_str().unwrap().to_owned();
    sim_put(
        &app,
        &format!("/sim/merchants/{mchid}/balance"),
        &json!({"balance_fen": 100}),
    )
    .await;
    let short = admin_post(&app, "/admin/transfers", &cash_back(&openid, 700)).await;
    assert_eq!(short.status, 201, "{:?}", short.body);
    assert_eq!(short.body["status"], "PROCESSING");
    let b = short.body["out_bill_no"].as_str().unwrap().to_owned();
    let mine = app.get("/api/transfers", Some(&token)).await;
    let listed = mine.body["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["out_bill_no"] == b.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], "PROCESSING");
    assert_eq!(listed["can_confirm"], false);
    let early = app
        .post(&format!("/api/transfers/{b}/confirm"), Some(&token))
        .await;
    assert_eq!(early.status, 409, "{:?}", early.body);
    make_due(&app, &b).await;
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    assert_eq!(transfer(&app, &b).await["status"], "PROCESSING");
    sim_put(
        &app,
        &format!("/sim/merchants/{mchid}/balance"),
        &json!({"balance_fen": 100_000}),
    )
    .await;
    make_due(&app, &b).await;
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    assert_eq!(transfer(&app, &b).await["status"], "WAIT_USER_CONFIRM");
    // Made two days ago by this server's clock, but waiting for its user only since the
    // top-up: the confirmation window runs from then, so the job leaves it.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE transfers SET created_at = created_at - 172800000, next_check_at = 0 WHERE out_bill_no = '{b}'"
    )))
    .execute(app.state.store.pool())
    .await
    .unwrap();
    jobs.drain(JobKind::FollowTransfers, 3).await.unwrap();
    assert_eq!(transfer(&app, &b).await["status"], "WAIT_USER_CONFIRM");
    user_confirms(&app, &token, &openid, &b).await;
    app.flush().await;
    assert_eq!(transfer(&app, &b).await["status"], "SUCCESS");
    assert_eq!(webhooks_of(&app, &b).await, ["transfer.succeeded"]);
    sim_put(
        &app,
        "/sim/transfers/settings",
        &json!({"low_balance": "not_enough"}),
    )
    .await;
}

both_backends!(
    a_confirmed_transfer_is_paid_once,
    a_transfer_cancelled_by_the_merchant_gives_its_amount_back,
    an_unconfirmed_transfer_expires,
    a_lost_create_answer_makes_one_transfer,
    a_lost_notification_is_healed_by_the_job,
    the_budget_and_the_cap_are_kept_before_wechat_is_asked,
    the_name_is_sent_encrypted_and_checked_by_wechat,
    bad_transfer_requests_change_nothing,
    a_short_operating_account_is_retried_then_given_up,
    wechats_early_states_are_followed_until_the_user_can_confirm,
);
