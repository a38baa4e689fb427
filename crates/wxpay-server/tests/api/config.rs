use std::path::{Path, PathBuf};

use wxpay_server::{Application, Settings};

use crate::helpers::{random_name, sandbox_dir};

fn error_of(env: &[(&str, &str)]) -> String {
    Settings::from_sources("", env)
        .expect_err("refused")
        .to_string()
}

#[test]
fn bad_values_are_refused_with_one_line_naming_the_key() {
    let cases: [(&[(&str, &str)], &str); 7] = [
        (
            &[("WXPAY_PUBLIC_URL", "ftp://example.com")],
            "WXPAY_PUBLIC_URL",
        ),
        (
            &[("WXPAY_PUBLIC_URL", "https://example.com/x?y=1")],
            "WXPAY_PUBLIC_URL",
        ),
        (&[("WXPAY_API_VERSION", "v4")], "WXPAY_API_VERSION"),
        (&[("WXPAY_LISTEN", "localhost")], "WXPAY_LISTEN"),
        (&[("WXPAY_DATABASE_URL", "mysql://x")], "WXPAY_DATABASE_URL"),
        // Each connection would have its own empty database.
        (
            &[("WXPAY_DATABASE_URL", "sqlite::memory:")],
            "WXPAY_DATABASE_URL",
        ),
        (
            &[("WXPAY_WEBHOOK_URL", "https://example.com/hook")],
            "WXPAY_WEBHOOK_SECRET",
        ),
    ];
    for (env, key) in cases {
        let message = error_of(env);
        assert!(
            message.starts_with(&format!("configuration error: {key}: ")),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }
    let short = error_of(&[("WXPAY_ADMIN_TOKEN", "123")]);
    assert!(
        short.contains("WXPAY_ADMIN_TOKEN") && !short.contains("123"),
        "{short}"
    );
    let typed = error_of(&[("WXPAY_QUERY_AFTER_SECS", "soon")]);
    assert!(
        typed.starts_with("configuration error: WXPAY_QUERY_AFTER_SECS: "),
        "{typed}"
    );
}

#[test]
fn unknown_keys_of_the_file_and_misspelt_variables_are_refused() {
    let typo = Settings::from_sources("databse_url = \"postgres://x@y/z\"\n", &[])
        .expect_err("a misspelt key is refused")
        .to_string();
    assert_eq!(
        typo,
        "configuration error: wxpay.toml: unknown key `databse_url` (did you mean \
         `database_url`?); `wxpay serve --help` lists the keys"
    );
    let unknown = Settings::from_sources("colour = \"blue\"\n", &[])
        .expect_err("an unknown key is refused")
        .to_string();
    assert!(unknown.contains("unknown key `colour`;"), "{unknown}");
    let syntax = Settings::from_sources("listen = \"127.0.0.1:8080\n", &[])
        .expect_err("a syntax error is refused")
        .to_string();
    assert!(
        syntax.starts_with("configuration error: wxpay.toml: ") && !syntax.contains('\n'),
        "{syntax}"
    );
    let env = error_of(&[("WXPAY_DATABSE_URL", "postgres://x@y/z")]);
    assert_eq!(
        env,
        "configuration error: WXPAY_DATABSE_URL: is not a configuration key (did you mean \
         WXPAY_DATABASE_URL?)"
    );
    // A variable far from every key belongs to something else (scripts set WXPAY_BIN): it is
    // left alone here and warned about at start.
    assert!(Settings::from_sources("", &[("WXPAY_BIN", "/usr/bin/wxpay")]).is_ok());
}

#[test]
fn defaults_and_toml_and_environment_layer() {
    let s = Settings::from_sources("", &[]).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.database_url, "sqlite://wxpay.db");
    assert!(s.is_sandbox());
    let s = Settings::from_sources(
        "api_version = \"v2\"\nquery_after_secs = 9\n",
        &[
            ("WXPAY_QUERY_AFTER_SECS", "3"),
            ("WXPAY_ADMIN_TOKEN", "1234567890123456789"),
        ],
    )
    .unwrap();
    assert_eq!(s.api_version, wxpay_server::store::ApiVersion::V2);
    assert_eq!(s.query_after_secs, 3);
    assert!(s.admin_token.is_some());
    assert!(!format!("{s:?}").contains("1234567890123456789"));
}

/// A copy of the sandbox merchant that a test may break.
fn merchant_copy() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("merchant-{}", random_name()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(sandbox_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

async fn start_error(dir: &Path) -> String {
    let file = dir.join("merchant.json");
    let settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            ("WXPAY_MERCHANT_FILE", file.to_str().unwrap()),
            (
                "WXPAY_DATABASE_URL",
                &format!("sqlite://{}", dir.join("db.sqlite").display()),
            ),
            ("WXPAY_PUBLIC_URL", "https://pay.example.com"),
        ],
    )
    .unwrap();
    Application::build(settings)
        .await
        .expect_err("refused")
        .to_string()
}

#[tokio::test]
async fn a_merchant_file_that_does_not_hold_together_stops_the_start() {
    let dir = merchant_copy();
    let other = wxpay::RsaPrivateKey::generate().unwrap();
    std::fs::write(dir.join("apiclient_key.pem"), other.to_pkcs8_pem()).unwrap();
    let message = start_error(&dir).await;
    assert!(
        message.starts_with("configuration error: WXPAY_MERCHANT_FILE: "),
        "{message}"
    );
    assert!(
        message.contains("apiclient_key does not match apiclient_cert"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"));

    let dir = merchant_copy();
    let json = std::fs::read_to_string(dir.join("merchant.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["api_v3_key"] = "short".into();
    std::fs::write(dir.join("merchant.json"), v.to_string()).unwrap();
    let message = start_error(&dir).await;
    assert!(
        message.contains("api_v3_key must be 32 characters") && !message.contains("short"),
        "{message}"
    );

    v = serde_json::from_str(&json).unwrap();
    v["wechatpay_public_key_id"] = "KEY_1".into();
    std::fs::write(dir.join("merchant.json"), v.to_string()).unwrap();
    assert!(start_error(&dir).await.contains("PUB_KEY_ID_"));

    v = serde_json::from_str(&json).unwrap();
    v["platform_cert"] = "missing.pem".into();
    std::fs::write(dir.join("merchant.json"), v.to_string()).unwrap();
    assert!(start_error(&dir).await.contains("platform_cert"));
}

#[tokio::test]
async fn with_a_merchant_file_there_is_no_sim_route() {
    let sim = wxpay_sim::Simulator::start(wxpay_sim::SimConfig {
        state_dir: Some(sandbox_dir()),
        ..wxpay_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let dir = merchant_copy();
    let settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            (
                "WXPAY_MERCHANT_FILE",
                dir.join("merchant.json").to_str().unwrap(),
            ),
            (
                "WXPAY_DATABASE_URL",
                &format!("sqlite://{}", dir.join("db.sqlite").display()),
            ),
            ("WXPAY_PAY_BASE_URL", &sim.base_url()),
            ("WXPAY_MP_BASE_URL", &sim.base_url()),
        ],
    )
    .unwrap();
    let app = Application::build(settings).await.unwrap();
    assert!(app.sandbox().is_none());
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = http
        .post(format!("{base}/sim/users"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    // Login works against the separate simulator.
    let user: serde_json::Value = http
        .post(format!("{}/sim/users", sim.base_url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login = http
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({"code": user["code"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
}

/// `WXPAY_WXACODE_PAGES`: the catalogue by default; a list from the environment or a TOML array;
/// a page WeChat would refuse, or an empty list, stops the start naming the key.
#[test]
fn wxacode_pages_default_to_the_catalogue_and_are_checked() {
    let s = Settings::from_sources("", &[]).unwrap();
    assert_eq!(s.wxacode_pages, ["pages/catalog/catalog"]);
    assert_eq!(s.rate_limit_wxacode.per_minute, 10);
    assert_eq!(s.rate_limit_wxacode.burst, 10);
    let s = Settings::from_sources(
        "",
        &[(
            "WXPAY_WXACODE_PAGES",
            " pages/catalog/catalog, pages/orders/orders ,pages/catalog/catalog",
        )],
    )
    .unwrap();
    assert_eq!(
        s.wxacode_pages,
        ["pages/catalog/catalog", "pages/orders/orders"]
    );
    let s =
        Settings::from_sources("wxacode_pages = [\"pages/a/a\", \"pages/b/b\"]\n", &[]).unwrap();
    assert_eq!(s.wxacode_pages, ["pages/a/a", "pages/b/b"]);
    for bad in ["/pages/a/a", "pages/a/a?x=1", "pages/中/a", " , "] {
        let message = error_of(&[("WXPAY_WXACODE_PAGES", bad)]);
        assert!(
            message.starts_with("configuration error: WXPAY_WXACODE_PAGES: "),
            "{bad}: {message}"
        );
    }
    let message = error_of(&[("WXPAY_RATE_LIMIT_WXACODE_BURST", "0")]);
    assert!(
        message.starts_with("configuration error: WXPAY_RATE_LIMIT_WXACODE_BURST: "),
        "{message}"
    );
}
