//! `GET /api/wxacode`: a mini-program session or the admin token, pages from
//! `WXPAY_WXACODE_PAGES`, scenes checked as WeChat checks them before WeChat is called, and a
//! per-user rate limit.

use wxpay_server::api::rate_limit::RateLimit;
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::TestApp;
use crate::jobs::{admin_token, spawn_quiet};

const CATALOG: &str = "pages/catalog/catalog";

async fn code(app: &TestApp, token: Option<&str>, query: &str) -> crate::helpers::Answer {
    app.get(&format!("/api/wxacode?{query}"), token).await
}

async fn wxacode_is_a_cached_jpeg_for_a_session(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (_, token) = app.login().await;
    let a = code(
        &app,
        Some(&token),
        &format!("scene=table%3D12&page={CATALOG}"),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.content_type, "image/jpeg");
    assert!(a.bytes.starts_with(b"\xff\xd8\xff"));
    assert_eq!(app.state.wxacode_cache.len(), 1);
    // Without a page: the first configured one, the same image from the cache.
    let b = code(&app, Some(&token), "scene=table%3D12").await;
    assert_eq!(b.status, 200, "{:?}", b.body);
    assert_eq!(b.bytes, a.bytes);
    assert_eq!(app.state.wxacode_cache.len(), 1);
}

async fn wxacode_refuses_missing_tokens_bad_pages_and_bad_scenes(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |_| {}).await;
    let (_, token) = app.login().await;
    for (token, query) in [
        (None, "scene=a%3D1"),
        (Some("not-a-session-token"), "scene=a%3D1"),
    ] {
        let a = code(&app, token, query).await;
        assert_eq!(a.status, 401, "{token:?}: {:?}", a.body);
        assert_eq!(a.body["code"], "unauthorized");
        assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let thirty_three = "a".repeat(33);
    for (query, says) in [
        (
            "scene=a%3D1&page=pages/index/index".to_owned(),
            "WXPAY_WXACODE_PAGES",
        ),
        (
            "scene=a%3D1&page=pages/cart/cart".to_owned(),
            "WXPAY_WXACODE_PAGES",
        ),
        (
            "scene=a%3D1&page=/pages/catalog/catalog".to_owned(),
            "WXPAY_WXACODE_PAGES",
        ),
        (format!("scene={thirty_three}"), "33 characters"),
        ("scene=a%20b".to_owned(), "' '"),
        ("scene=%E4%B8%AD".to_owned(), "'中'"),
        ("scene=100%25".to_owned(), "'%'"),
        ("scene=".to_owned(), "scene is required"),
        (String::new(), "scene is required"),
    ] {
        let a = code(&app, Some(&token), &query).await;
        assert_eq!(a.status, 400, "{query}: {:?}", a.body);
        assert_eq!(a.body["code"], "invalid_request", "{query}");
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    // Exactly 32 characters of the whole alphabet pass.
    let edge = "aZ9!#$&'()*+,/:;=?@-._~0123456789";
    let edge = &edge[..32];
    let a = app
        .send(
            app.http
                .get(format!("{}/api/wxacode", app.base))
                .query(&[("scene", edge)])
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(a.status, 200, "{edge}: {:?}", a.body);
    assert_eq!(
        app.state.wxacode_cache.len(),
        1,
        "only the good request reached WeChat"
    );
}

async fn wxacode_is_rate_limited_per_user(backend: Backend) {
    let app = spawn_quiet(backend, "v3", |s| {
        s.rate_limit_wxacode = RateLimit {
            per_minute: 10,
            burst: 10,
        };
    })
    .await;
    let (_, greedy) = app.login().await;
    let (_, other) = app.login().await;
    for i in 0..10 {
        let a = code(&app, Some(&greedy), &format!("scene=n%3D{i}")).await;
        assert_eq!(a.status, 200, "call {i}: {:?}", a.body);
    }
    let limited = code(&app, Some(&greedy), "scene=n%3D10").await;
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    assert_eq!(limited.body["code"], "rate_limited");
    let cached = code(&app, Some(&greedy), "scene=n%3D0").await;
    assert_eq!(cached.status, 429, "a cached code counts too");
    assert_eq!(app.state.wxacode_cache.len(), 10);
    let a = code(&app, Some(&other), "scene=n%3D10").await;
    assert_eq!(
        a.status, 200,
        "another user keeps their budget: {:?}",
        a.body
    );
    // The admin token works (the back office's console) and has a budget of its own.
    let admin = admin_token(&app);
    let a = code(
        &app,
        Some(&admin),
        &format!("scene=shop%3D1&page={CATALOG}"),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.content_type, "image/jpeg");
}

both_backends!(
    wxacode_is_a_cached_jpeg_for_a_session,
    wxacode_refuses_missing_tokens_bad_pages_and_bad_scenes,
    wxacode_is_rate_limited_per_user,
);

/// `WXPAY_WXACODE_PAGES` lists the pages; a page not listed is refused, a listed one made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wxacode_pages_come_from_the_configuration() {
    let app = spawn_quiet(Backend::Sqlite, "v3", |s| {
        s.wxacode_pages = vec!["pages/orders/orders".into(), CATALOG.into()];
    })
    .await;
    let admin = admin_token(&app);
    let a = code(&app, Some(&admin), "scene=a%3D1&page=pages/orders/orders").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = code(&app, Some(&admin), "scene=a%3D1&page=pages/cart/cart").await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("pages/orders/orders, pages/catalog/catalog")
    );
}
