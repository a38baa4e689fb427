use serde_json::json;
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::spawn_app;

async fn login_gives_a_token_and_refuses_a_reused_code(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let (_, code) = app.sim_user().await;
    let first = app.login_with(&code).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let token = first.body["token"].as_str().unwrap();
    assert!(token.len() >= 43);
    assert!(first.body["expires_in"].as_u64().unwrap() > 0);
    assert!(first.body.get("session_key").is_none() && first.body.get("openid").is_none());
    // The token is stored hashed, the session key stays on the server.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE token_hash = $1")
        .bind(token)
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let again = app.login_with(&code).await;
    assert_eq!(again.status, 401, "{:?}", again.body);
    assert_eq!(again.body["code"], "invalid_code");
    // WeChat's own text (errcode, rid) is logged, not shown to the user.
    assert_eq!(again.body["message"], "WeChat refused the login code");
}

async fn requests_without_a_valid_token_are_unauthorized(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let items = json!([{"sku": "tea", "quantity": 1}]);
    let none = app
        .post_json("/api/orders", None, &json!({ "items": items }))
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["code"], "unauthorized");
    let forged = app.create_order("not-a-token", items).await;
    assert_eq!(forged.status, 401);
}

async fn malformed_json_gets_a_json_error(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let a = app
        .send(
            app.http
                .post(format!("{}/api/login", app.base))
                .header("content-type", "application/json")
                .body("{\"code\":"),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], "invalid_request");
    let wrong_type = app
        .send(
            app.http
                .post(format!("{}/api/login", app.base))
                .body("code=1"),
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    // On a connection of its own: the server answers 413 without reading the body and closes
    // that connection, which a pooled client could otherwise pick for the next request.
    let lone = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let huge = app
        .send(
            lone.post(format!("{}/api/login", app.base))
                .header("content-type", "application/json")
                .body(format!("{{\"code\":\"{}\"}}", "x".repeat(100_000))),
        )
        .await;
    assert_eq!(huge.status, 413, "{:?}", huge.body);
    assert_eq!(huge.body["code"], "payload_too_large");
    let unknown = app.get("/api/nothing", None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["code"], "not_found");
}

async fn healthz_checks_the_database(backend: Backend) {
    let app = spawn_app(backend, "v3").await;
    let a = app.get("/healthz", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["status"], "ok");
    assert_eq!(a.body["database"], backend.as_str());
    app.state.store.close().await;
    let down = app.get("/healthz", None).await;
    assert_eq!(down.status, 503);
}

both_backends!(
    login_gives_a_token_and_refuses_a_reused_code,
    requests_without_a_valid_token_are_unauthorized,
    malformed_json_gets_a_json_error,
    healthz_checks_the_database,
);

/// Every rejection is `{"code","message"}`, those of axum's path and query extractors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_rejections_are_in_the_api_format() {
    let app = crate::jobs::spawn_quiet(Backend::Sqlite, "v3", |_| {}).await;
    let (_, token) = app.login().await;
    let admin = crate::jobs::admin_token(&app);
    for (path, token) in [
        ("/api/orders?limit=many", token.as_str()),
        ("/api/orders?limit=-1", token.as_str()),
        ("/api/orders/%FF%FE", token.as_str()),
        ("/admin/orders?limit=x", admin.as_str()),
        ("/admin/orders/%C3%28", admin.as_str()),
        ("/admin/reconciliation/%FF?refresh=maybe", admin.as_str()),
    ] {
        let a = app.get(path, Some(token)).await;
        assert_eq!(a.status, 400, "{path}: {:?}", a.bytes);
        assert!(a.content_type.starts_with("application/json"), "{path}");
        assert_eq!(a.body["code"], "invalid_request", "{path}: {:?}", a.bytes);
        assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}
