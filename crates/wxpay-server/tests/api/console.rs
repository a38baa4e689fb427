//! The web console's routes: the back office at `/`, its files under `/console/`, the emulator
//! at `/emulator` in sandbox mode only; content types, the Content-Security-Policy, caching.

use std::collections::BTreeSet;

use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use wxpay_server::store::Backend;
use wxpay_server::{Application, Settings};

use crate::helpers::{TestDatabase, sandbox_dir, spawn_app};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

struct Page {
    status: u16,
    content_type: String,
    policy: String,
    cache: String,
    etag: String,
    text: String,
}

async fn fetch(http: &reqwest::Client, url: &str) -> Page {
    let response = http.get(url).send().await.expect("request sent");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Page {
        status: response.status().as_u16(),
        content_type: header(CONTENT_TYPE),
        policy: header(CONTENT_SECURITY_POLICY),
        cache: header(CACHE_CONTROL),
        etag: header(ETAG),
        text: response.text().await.unwrap(),
    }
}

/// The files a page or module refers to: `src="/console/..."`, `href="/console/..."`, and the
/// `from './x.js'` of a module.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for marker in ["src=\"/console/", "href=\"/console/"] {
        for part in text.split(marker).skip(1) {
            found.insert(format!("/console/{}", &part[..part.find('"').unwrap()]));
        }
    }
    for part in text.split("from './").skip(1) {
        found.insert(format!("/console/{}", &part[..part.find('\'').unwrap()]));
    }
    found
}

#[tokio::test]
async fn the_back_office_is_served_at_the_root_under_a_strict_policy() {
    let app = spawn_app(Backend::Sqlite, "v3").await;
    let page = fetch(&app.http, &format!("{}/", app.base)).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, HTML);
    assert!(
        page.policy.starts_with("default-src 'self'"),
        "{}",
        page.policy
    );
    for directive in [
        "script-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(page.policy.contains(directive), "{directive}");
    }
    assert!(!page.policy.contains("unsafe"), "{}", page.policy);
    assert_eq!(page.cache, "no-cache");
    assert!(
        page.text
            .contains("<script type=\"module\" src=\"/console/admin.js\">")
    );

    // Revalidation with the ETag answers 304 without a body.
    let again = app
        .http
        .get(format!("{}/", app.base))
        .header(IF_NONE_MATCH, &page.etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_file_the_pages_load_is_served_with_its_content_type() {
    let app = spawn_app(Backend::Sqlite, "v3").await;
    let mut pending: Vec<String> = vec!["/".into(), "/emulator".into()];
    let mut seen = BTreeSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let page = fetch(&app.http, &format!("{}{path}", app.base)).await;
        assert_eq!(page.status, 200, "{path}");
        let expected = match path.rsplit('.').next() {
            Some("js") => JS,
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => HTML,
        };
        assert_eq!(page.content_type, expected, "{path}");
        assert!(page.policy.starts_with("default-src 'self'"), "{path}");
        assert!(!page.etag.is_empty(), "{path}");
        pending.extend(references(&page.text));
    }
    for file in [
        "admin.js",
        "emulator.js",
        "common.js",
        "i18n.js",
        "chart.js",
        "registry.js",
        "console.css",
        "favicon.svg",
    ] {
        assert!(
            seen.contains(&format!("/console/{file}")),
            "{file}: {seen:?}"
        );
    }

    for missing in [
        "/console/index.html",
        "/console/nothing.js",
        "/console/..%2FCargo.toml",
    ] {
        let page = fetch(&app.http, &format!("{}{missing}", app.base)).await;
        assert_eq!(page.status, 404, "{missing}");
    }
}

#[tokio::test]
async fn the_console_knows_it_runs_in_a_sandbox() {
    let app = spawn_app(Backend::Sqlite, "v2").await;
    let info = app.get("/console/info", None).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.body["sandbox"], true);
    assert_eq!(info.body["admin_api"], true);
    assert_eq!(info.body["api_version"], "v2");
    let emulator = fetch(&app.http, &format!("{}/emulator", app.base)).await;
    assert_eq!(
        (emulator.status, emulator.content_type.as_str()),
        (200, HTML)
    );
    assert!(
        emulator
            .text
            .contains("<script type=\"module\" src=\"/console/emulator.js\">")
    );
}

#[tokio::test]
async fn without_the_sandbox_there_is_no_emulator() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let merchant = sandbox_dir().join("merchant.json");
    // WeChat is never called here: nothing listens at the discard port.
    let settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            ("WXPAY_DATABASE_URL", &db.url),
            ("WXPAY_MERCHANT_FILE", merchant.to_str().unwrap()),
            ("WXPAY_PAY_BASE_URL", "http://127.0.0.1:9"),
            ("WXPAY_MP_BASE_URL", "http://127.0.0.1:9"),
        ],
    )
    .unwrap();
    let app = Application::build(settings)
        .await
        .expect("the server starts")
        .with_jobs(None);
    assert!(app.sandbox().is_none());
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    for path in ["/emulator", "/console/emulator.js"] {
        assert_eq!(
            fetch(&http, &format!("{base}{path}")).await.status,
            404,
            "{path}"
        );
    }
    let root = fetch(&http, &format!("{base}/")).await;
    assert_eq!((root.status, root.content_type.as_str()), (200, HTML));
    let admin = fetch(&http, &format!("{base}/console/admin.js")).await;
    assert_eq!((admin.status, admin.content_type.as_str()), (200, JS));

    let info: serde_json::Value = http
        .get(format!("{base}/console/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sandbox"], false);
    assert_eq!(info["admin_api"], false, "no WXPAY_ADMIN_TOKEN");
}
