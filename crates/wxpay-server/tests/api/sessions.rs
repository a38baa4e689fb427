//! Revoking sessions: logout, the back office's "log this user out everywhere", and another
//! instance on the same PostgreSQL refusing a revoked token at once (its session cache is told
//! through `NOTIFY`, not left to expire).

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use wxpay_server::core::login::{new_token, token_hash};
use wxpay_server::store::{Backend, NewSession, now_ms};

use crate::both_backends;
use crate::helpers::{TestApp, spawn_app, spawn_instance};
use crate::jobs::admin_post;

/// The status of an authenticated request (the caller's orders).
async fn orders_status(app: &TestApp, token: &str) -> u16 {
    app.get("/api/orders", Some(token)).await.status
}

/// Another session of the same user (as a second phone would get by logging in).
async fn second_session(app: &TestApp, openid: &str) -> String {
    let token = new_token().unwrap();
    app.state
        .store
        .create_session(&NewSession {
            token_hash: &token_hash(&token),
            openid,
            appid: "wx_test",
            unionid: None,
            session_key: &SecretString::from("k"),
            expires_at: now_ms() + 3_600_000,
        })
        .await
        .unwrap();
    token
}

/// Polls until `token` is refused by `app`, at most `within`; whether it was.
async fn refused_within(app: &TestApp, token: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if orders_status(app, token).await == 401 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn logout_revokes_the_token_and_can_be_repeated(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (_, token) = app.login().await;
    let (_, other) = app.login().await;
    // Used once, so that the session is in the server's cache.
    assert_eq!(orders_status(&app, &token).await, 200);

    let out = app.post("/api/logout", Some(&token)).await;
    assert_eq!(out.status, 204, "{:?}", out.body);
    let after = app.get("/api/orders", Some(&token)).await;
    assert_eq!(after.status, 401, "{:?}", after.body);
    assert_eq!(after.body["code"], "unauthorized");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE token_hash = $1")
        .bind(token_hash(&token))
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Idempotent; another user's session is untouched; no token at all is a 401.
    assert_eq!(app.post("/api/logout", Some(&token)).await.status, 204);
    assert_eq!(orders_status(&app, &other).await, 200);
    let anonymous = app.post("/api/logout", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body["code"], "unauthorized");
}

async fn the_back_office_revokes_every_session_of_a_user(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (openid, first) = app.login().await;
    let second = second_session(&app, &openid).await;
    let (_, bystander) = app.login().await;
    for token in [&first, &second, &bystander] {
        assert_eq!(orders_status(&app, token).await, 200);
    }

    let path = format!("/admin/users/{openid}/sessions/revoke");
    let unauthorized = app.post_json(&path, None, &json!({})).await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(orders_status(&app, &first).await, 200);

    let revoked = admin_post(&app, &path, &json!({})).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body, json!({ "openid": openid, "revoked": 2 }));
    assert_eq!(orders_status(&app, &first).await, 401);
    assert_eq!(orders_status(&app, &second).await, 401);
    assert_eq!(orders_status(&app, &bystander).await, 200);

    let again = admin_post(&app, &path, &json!({})).await;
    assert_eq!(again.body["revoked"], 0);
    let bad = admin_post(&app, "/admin/users/a%20b/sessions/revoke", &json!({})).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.body["code"], "invalid_request");
}

both_backends!(
    logout_revokes_the_token_and_can_be_repeated,
    the_back_office_revokes_every_session_of_a_user,
);

/// Two instances on one PostgreSQL database: B has the session in its cache; A revokes it; B
/// refuses it well before its cache would re-check the store (`SESSION_RECHECK`), because A's
/// `NOTIFY` reached B's listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_is_refused_by_another_at_once() {
    let a = spawn_app(Backend::Postgres, "v3").await;
    let b = spawn_instance(&a, None, |_| {}).await;
    b.state.store.notices().listening().await;
    a.state.store.notices().listening().await;
    let wait = wxpay_server::store::SESSION_RECHECK / 2;

    // Logout on A.
    let (_, token) = a.login().await;
    assert_eq!(orders_status(&b, &token).await, 200);
    assert_eq!(a.post("/api/logout", Some(&token)).await.status, 204);
    assert!(
        refused_within(&b, &token, wait).await,
        "B still accepts a token A logged out"
    );

    // The back office on A.
    let (openid, first) = a.login().await;
    let second = second_session(&a, &openid).await;
    for token in [&first, &second] {
        assert_eq!(orders_status(&b, token).await, 200);
    }
    let revoked = admin_post(
        &a,
        &format!("/admin/users/{openid}/sessions/revoke"),
        &json!({}),
    )
    .await;
    assert_eq!(revoked.body["revoked"], 2, "{:?}", revoked.body);
    for token in [&first, &second] {
        assert!(
            refused_within(&b, token, wait).await,
            "B still accepts a token the back office revoked on A"
        );
    }
}
