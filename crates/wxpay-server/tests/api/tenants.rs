//! The registry of merchants and mini programs through the back office: registration with the
//! sandbox merchant's real credentials (and broken copies of them), sealed storage, the file's
//! merchant listed, sub-merchants of a provider, operators and their tokens, a second server on
//! the same database, the master key's configuration.

use std::path::Path;

use base64::Engine as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use wxpay_server::Settings;
use wxpay_server::core::tenants::{self, TenantError, credentials_aad};
use wxpay_server::sealing::{self, MasterKey};
use wxpay_server::store::Backend;

use crate::both_backends;
use crate::helpers::{Answer, TestApp, sandbox_dir, spawn_instance};
use crate::jobs::{admin_get, admin_post, admin_token, spawn_quiet};

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const DIRECT: &str = "1900000001";
const PROVIDER: &str = "1900000002";
const APP_SECRET: &str = "3a9f0c6be1d24f5a8c7e6d5b4a392817";

/// The sandbox merchant's files.
struct Sandbox {
    json: Value,
    key_pem: String,
    cert_pem: String,
    p12_b64: String,
    platform_pem: String,
    public_key_pem: String,
}

fn sandbox() -> Sandbox {
    let dir = sandbox_dir();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    Sandbox {
        json: serde_json::from_str(&read("merchant.json")).unwrap(),
        key_pem: read("apiclient_key.pem"),
        cert_pem: read("apiclient_cert.pem"),
        p12_b64: base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("apiclient_cert.p12")).unwrap()),
        platform_pem: read("platform_cert.pem"),
        public_key_pem: read("wechatpay_public_key.pem"),
    }
}

impl Sandbox {
    fn s(&self, field: &str) -> String {
        self.json[field].as_str().unwrap().to_owned()
    }

    /// A valid registration body for `mchid` (the sandbox's credentials, without the PKCS#12,
    /// whose password is the sandbox's mchid).
    fn body(&self, mchid: &str, kind: &str) -> Value {
        json!({
            "mchid": mchid,
            "name": format!("{kind} {mchid}"),
            "kind": kind,
            "api_version": "v3",
            "api_v2_key": self.s("api_v2_key"),
            "api_v3_key": self.s("api_v3_key"),
            "merchant_serial": self.s("merchant_serial"),
            "apiclient_key": self.key_pem,
            "apiclient_cert": self.cert_pem,
            "platform_cert": self.platform_pem,
            "wechatpay_public_key_id": self.s("wechatpay_public_key_id"),
            "wechatpay_public_key": self.public_key_pem,
        })
    }

    /// Texts that must never appear in an answer.
    fn secrets(&self) -> Vec<String> {
        let key_body = self
            .key_pem
            .lines()
            .find(|l| !l.starts_with("-----"))
            .unwrap()
            .to_owned();
        vec![
            self.s("api_v2_key"),
            self.s("api_v3_key"),
            self.s("app_secret"),
            key_body,
            "PRIVATE KEY".to_owned(),
            self.p12_b64[..48].to_owned(),
            APP_SECRET.to_owned(),
        ]
    }
}

fn master_key(text: &str) -> impl FnOnce(&mut Settings) {
    let key = MasterKey::parse(text).unwrap();
    move |s: &mut Settings| s.master_key = Some(key)
}

/// Every answer of a test, to search for secrets at the end.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, a: Answer) -> Answer {
        self.0.push(String::from_utf8_lossy(&a.bytes).into_owned());
        a
    }

    fn assert_none_contains(&self, secrets: &[String]) {
        for text in &self.0 {
            for secret in secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "an answer holds a secret: {text}"
                );
            }
        }
    }
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
    let mut r = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(admin_token(app));
    if let Some(b) = body {
        r = r.json(b);
    }
    app.send(r).await
}

async fn patch(app: &TestApp, path: &str, body: &Value) -> Answer {
    send(app, reqwest::Method::PATCH, path, Some(body)).await
}

async fn rows(app: &TestApp) -> Vec<i64> {
    let mut counts = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM merchants WHERE $1 = $1",
        "SELECT COUNT(*) FROM mini_programs WHERE $1 = $1",
        "SELECT COUNT(*) FROM sub_merchants WHERE $1 = $1",
        "SELECT COUNT(*) FROM operators WHERE $1 = $1",
        "SELECT MAX(updated_at) FROM merchants WHERE $1 = $1",
        "SELECT version FROM registry_version WHERE $1 = $1",
    ] {
        counts.push(app.count(sql, "x").await);
    }
    counts
}

async fn column(app: &TestApp, sql: &'static str, key: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .bind(key)
        .fetch_one(app.state.store.pool())
        .await
        .unwrap()
}

fn find<'a>(list: &'a Value, field: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v[field] == value)
        .unwrap_or_else(|| panic!("no {field} {value} in {list}"))
}

async fn merchants_apps_sub_merchants_are_registered_and_no_answer_holds_a_secret(
    backend: Backend,
) {
    let app = spawn_quiet(backend, "v3", master_key(KEY)).await;
    let sb = sandbox();
    let mut seen = Seen::default();
    let version = rows(&app).await[5];

    // The file's merchant and mini program are listed.
    let a = seen.keep(admin_get(&app, "/admin/merchants").await);
    assert_eq!(a.status, 200, "{:?}", a.body);
    let file = find(&a.body["merchants"], "mchid", &sb.s("mchid"));
    assert_eq!(file["source"], "file");
    assert_eq!(file["kind"], "direct");
    assert_eq!(file["has_p12"], true);
    assert_eq!(file["public_key_id"], sb.s("wechatpay_public_key_id"));
    assert_eq!(file["merchant_serial"], sb.s("merchant_serial"));
    assert_eq!(file["app_count"], 1);
    let a = seen.keep(admin_get(&app, "/admin/apps").await);
    let file_app = find(&a.body["apps"], "appid", &sb.s("appid"));
    assert_eq!(file_app["source"], "file");
    assert_eq!(file_app["has_app_secret"], false);
    assert_eq!(file_app["mchid"], sb.s("mchid"));

    // A direct merchant and a provider.
    let a = seen.keep(admin_post(&app, "/admin/merchants", &sb.body(DIRECT, "direct")).await);
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["source"], "registered");
    assert_eq!(a.body["has_platform_cert"], true);
    assert_eq!(a.body["has_p12"], false);
    assert_eq!(a.body["enabled"], true);
    assert_eq!(a.body["public_key_id"], sb.s("wechatpay_public_key_id"));
    let mut provider = sb.body(PROVIDER, "provider");
    provider["api_version"] = json!("v2");
    provider["platform_cert"] = Value::Null;
    provider["sp_appid"] = json!("wx00000000000000aa");
    let a = seen.keep(admin_post(&app, "/admin/merchants", &provider).await);
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["kind"], "provider");
    assert_eq!(a.body["sp_appid"], "wx00000000000000aa");
    assert_eq!(a.body["api_version"], "v2");
    assert_eq!(a.body["has_platform_cert"], false);

    // Two sub-merchants of the provider; none under the direct merchant.
    for (sub, appid) in [
        ("1900000101", Some("wx1111111111111111")),
        ("1900000102", None),
    ] {
        let a = seen.keep(
            admin_post(
                &app,
                &format!("/admin/merchants/{PROVIDER}/sub-merchants"),
                &json!({"sub_mchid": sub, "name": format!("shop {sub}"), "sub_appid": appid}),
            )
            .await,
        );
        assert_eq!(a.status, 201, "{:?}", a.body);
        assert_eq!(a.body["sp_mchid"], PROVIDER);
    }
    let before = rows(&app).await;
    let a = seen.keep(
        admin_post(
            &app,
            &format!("/admin/merchants/{DIRECT}/sub-merchants"),
            &json!({"sub_mchid": "1900000199", "name": "x"}),
        )
        .await,
    );
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["code"], "not_a_provider");
    let a = seen.keep(
        admin_post(
            &app,
            &format!("/admin/merchants/{PROVIDER}/sub-merchants"),
            &json!({"sub_mchid": "1900000101", "name": "again"}),
        )
        .await,
    );
    assert_eq!(a.status, 409);
    assert_eq!(a.body["code"], "already_exists");
    assert_eq!(rows(&app).await, before);

    // Two mini programs: one paying directly, one through a sub-merchant.
    let direct_app = json!({"appid": "wxd0000000000000001", "name": "咖啡店", "app_secret": APP_SECRET, "mchid": DIRECT});
    let a = seen.keep(admin_post(&app, "/admin/apps", &direct_app).await);
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["has_app_secret"], true);
    assert_eq!(a.body["sub_mchid"], Value::Null);
    let sub_app = json!({"appid": "wxs0000000000000001", "name": "分店", "app_secret": APP_SECRET,
        "mchid": PROVIDER, "sub_mchid": "1900000101"});
    let a = seen.keep(admin_post(&app, "/admin/apps", &sub_app).await);
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["sub_mchid"], "1900000101");

    // Refused, changing nothing: a duplicate, a provider's app without or with another's
    // sub-merchant, a sub-merchant under a direct merchant, an unknown merchant.
    let before = rows(&app).await;
    for (body, status, code) in [
        (direct_app.clone(), 409, "already_exists"),
        (
            json!({"appid": "wxs2", "name": "n", "app_secret": APP_SECRET, "mchid": PROVIDER}),
            400,
            "invalid_request",
        ),
        (
            json!({"appid": "wxs3", "name": "n", "app_secret": APP_SECRET, "mchid": PROVIDER, "sub_mchid": "1900000999"}),
            400,
            "invalid_request",
        ),
        (
            json!({"appid": "wxs4", "name": "n", "app_secret": APP_SECRET, "mchid": DIRECT, "sub_mchid": "1900000101"}),
            409,
            "not_a_provider",
        ),
        (
            json!({"appid": "wxs5", "name": "n", "app_secret": APP_SECRET, "mchid": "1999999999"}),
            400,
            "invalid_request",
        ),
        (
            json!({"appid": "wxs6", "name": "n", "app_secret": "", "mchid": DIRECT}),
            400,
            "invalid_request",
        ),
    ] {
        let a = seen.keep(admin_post(&app, "/admin/apps", &body).await);
        assert_eq!(a.status, status, "{body}: {:?}", a.body);
        assert_eq!(a.body["code"], code, "{body}: {:?}", a.body);
    }
    let a = seen.keep(admin_post(&app, "/admin/merchants", &sb.body(DIRECT, "direct")).await);
    assert_eq!(a.status, 409);
    assert_eq!(a.body["code"], "already_exists");
    assert_eq!(rows(&app).await, before);

    // The provider with its sub-merchants and app; the counts in the list.
    let a = seen.keep(admin_get(&app, &format!("/admin/merchants/{PROVIDER}")).await);
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["sub_merchants"].as_array().unwrap().len(), 2);
    assert_eq!(
        a.body["sub_merchants"][0]["sub_appid"],
        "wx1111111111111111"
    );
    assert_eq!(a.body["apps"][0]["appid"], "wxs0000000000000001");
    let a = seen.keep(admin_get(&app, "/admin/merchants").await);
    assert_eq!(a.body["merchants"].as_array().unwrap().len(), 3);
    let p = find(&a.body["merchants"], "mchid", PROVIDER);
    assert_eq!(
        (p["sub_merchant_count"].as_u64(), p["app_count"].as_u64()),
        (Some(2), Some(1))
    );
    let a = seen.keep(admin_get(&app, &format!("/admin/merchants/{PROVIDER}/sub-merchants")).await);
    assert_eq!(a.body["sub_merchants"].as_array().unwrap().len(), 2);
    let a = seen.keep(admin_get(&app, &format!("/admin/apps?mchid={DIRECT}")).await);
    assert_eq!(a.body["apps"].as_array().unwrap().len(), 1);
    let a = seen.keep(admin_get(&app, "/admin/apps/wxs0000000000000001").await);
    assert_eq!(a.body["mchid"], PROVIDER);
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{PROVIDER}/sub-merchants/1900000102"),
            &json!({"enabled": false, "sub_appid": "wx2222222222222222"}),
        )
        .await,
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        (a.body["enabled"].as_bool(), a.body["sub_appid"].as_str()),
        (Some(false), Some("wx2222222222222222"))
    );

    // The version counts the changes (2 merchants, 2 sub-merchants, 2 apps, 1 patch).
    let a = seen.keep(admin_get(&app, "/admin/registry/version").await);
    assert_eq!(a.body["version"].as_i64(), Some(version + 7));
    assert_eq!(
        app.state.store.registry_version().await.unwrap(),
        version + 7
    );

    // Stored sealed: no plaintext, bound to its row.
    let sealed = column(
        &app,
        "SELECT credentials FROM merchants WHERE mchid = $1",
        DIRECT,
    )
    .await
    .unwrap();
    assert!(sealed.starts_with("v1:"));
    for secret in sb.secrets() {
        assert!(!sealed.contains(&secret));
    }
    let key = MasterKey::parse(KEY).unwrap();
    let opened = sealing::open(&key, &credentials_aad(DIRECT), &sealed).unwrap();
    assert!(String::from_utf8_lossy(opened.expose_secret()).contains(&sb.s("api_v3_key")));
    assert!(sealing::open(&key, &credentials_aad(PROVIDER), &sealed).is_err());
    // Copied onto the provider's row, it does not open there.
    sqlx::query("UPDATE merchants SET credentials = $1 WHERE mchid = $2")
        .bind(&sealed)
        .bind(PROVIDER)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let e = tenants::load_credentials(&app.state.store, Some(&key), PROVIDER)
        .await
        .unwrap_err();
    assert!(matches!(e, TenantError::Unreadable(_)), "{e}");
    let secret = column(
        &app,
        "SELECT app_secret FROM mini_programs WHERE appid = $1",
        "wxd0000000000000001",
    )
    .await
    .unwrap();
    assert!(secret.starts_with("v1:") && !secret.contains(APP_SECRET));
    assert_eq!(
        column(
            &app,
            "SELECT app_secret FROM mini_programs WHERE appid = $1",
            &sb.s("appid")
        )
        .await,
        None
    );
    assert_eq!(
        tenants::load_app_secret(&app.state.store, Some(&key), "wxd0000000000000001")
            .await
            .unwrap()
            .expose_secret(),
        APP_SECRET
    );

    // Nothing is listed or answered with a secret, and the admin token is required.
    let a = seen.keep(app.get("/admin/merchants", None).await);
    assert_eq!(a.status, 401);
    seen.assert_none_contains(&sb.secrets());
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

async fn invalid_credentials_are_refused_naming_the_field_and_change_nothing(backend: Backend) {
    let app = spawn_quiet(backend, "v3", master_key(KEY)).await;
    let sb = sandbox();
    let mut seen = Seen::default();
    let good = sb.body("1900000003", "direct");
    let other_key = wxpay::RsaPrivateKey::generate().unwrap().to_pkcs8_pem();
    let before = rows(&app).await;
    for (body, needle) in [
        (
            with(good.clone(), "apiclient_key", json!(other_key)),
            "apiclient_key does not match apiclient_cert",
        ),
        (
            with(good.clone(), "api_v3_key", json!(&sb.s("api_v3_key")[..31])),
            "api_v3_key must be 32 characters",
        ),
        (
            with(good.clone(), "api_v2_key", json!("short")),
            "api_v2_key must be 32",
        ),
        // The sandbox's PKCS#12 opens with the sandbox's mchid only.
        (
            with(good.clone(), "apiclient_cert_p12", json!(sb.p12_b64)),
            "apiclient_cert_p12",
        ),
        (
            with(good.clone(), "apiclient_cert_p12", json!("not base64!")),
            "apiclient_cert_p12",
        ),
        (
            with(good.clone(), "wechatpay_public_key_id", json!("KEY_1")),
            "wechatpay_public_key_id must start with PUB_KEY_ID_",
        ),
        (
            with(good.clone(), "merchant_serial", json!("0123456789ABCDEF")),
            "merchant_serial is not the serial of apiclient_cert",
        ),
        (
            with(
                with(good.clone(), "platform_cert", Value::Null),
                "wechatpay_public_key",
                Value::Null,
            ),
            "wechatpay_public_key_id is set but wechatpay_public_key is not",
        ),
        (
            with(
                with(
                    with(good.clone(), "platform_cert", Value::Null),
                    "wechatpay_public_key",
                    Value::Null,
                ),
                "wechatpay_public_key_id",
                Value::Null,
            ),
            "neither wechatpay_public_key nor platform_cert",
        ),
        (
            with(
                good.clone(),
                "apiclient_cert",
                json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            ),
            "apiclient_cert",
        ),
        (
            with(good.clone(), "kind", json!("agent")),
            "kind must be direct or provider",
        ),
        (
            with(good.clone(), "api_version", json!("v4")),
            "api_version must be v3 or v2",
        ),
        (with(good.clone(), "mchid", json!("19 00")), "mchid must be"),
        (with(good.clone(), "name", json!("")), "name must be"),
        (with(good.clone(), "surprise", json!(1)), "surprise"),
    ] {
        let a = seen.keep(admin_post(&app, "/admin/merchants", &body).await);
        assert_eq!(a.status, 400, "{needle}: {:?}", a.body);
        assert_eq!(a.body["code"], "invalid_request");
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle}: {message}");
    }
    // 404s.
    for path in [
        "/admin/merchants/1999999999",
        "/admin/merchants/%20x",
        "/admin/merchants/1999999999/sub-merchants",
        "/admin/apps/wxnone",
    ] {
        let a = seen.keep(admin_get(&app, path).await);
        assert_eq!(a.status, 404, "{path}: {:?}", a.body);
        assert_eq!(a.body["code"], "not_found");
    }
    for (path, body) in [
        ("/admin/merchants/1999999999", json!({"enabled": false})),
        ("/admin/apps/wxnone", json!({"enabled": false})),
        (
            "/admin/merchants/1999999999/sub-merchants/1",
            json!({"enabled": false}),
        ),
    ] {
        let a = seen.keep(patch(&app, path, &body).await);
        assert_eq!(a.status, 404, "{path}: {:?}", a.body);
    }
    let a = seen.keep(
        admin_post(
            &app,
            "/admin/merchants/1999999999/sub-merchants",
            &json!({"sub_mchid": "1", "name": "n"}),
        )
        .await,
    );
    assert_eq!(a.status, 404);
    let a = seen.keep(
        send(
            &app,
            reqwest::Method::DELETE,
            "/admin/operators/op_none",
            None,
        )
        .await,
    );
    assert_eq!(a.status, 404);
    assert_eq!(rows(&app).await, before);
    seen.assert_none_contains(&sb.secrets());
    // The valid body is accepted afterwards.
    assert_eq!(
        admin_post(&app, "/admin/merchants", &good).await.status,
        201
    );
}

/// A new merchant key pair and certificate: (key PEM, certificate PEM, serial).
fn new_key_and_cert() -> (String, String, String) {
    let key = wxpay::RsaPrivateKey::generate().unwrap().to_pkcs8_pem();
    let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "1900000001");
    let cert = params.self_signed(&pair).unwrap().pem();
    let serial = wxpay::X509Certificate::from_pem(&cert).unwrap().serial_no;
    (key, cert, serial)
}

async fn updates_rotate_keys_switch_verification_and_disable(backend: Backend) {
    let app = spawn_quiet(backend, "v3", master_key(KEY)).await;
    let sb = sandbox();
    let mut seen = Seen::default();
    let key = MasterKey::parse(KEY).unwrap();
    // Platform certificate only at first.
    let mut body = sb.body(DIRECT, "direct");
    body["wechatpay_public_key_id"] = Value::Null;
    body["wechatpay_public_key"] = Value::Null;
    let a = seen.keep(admin_post(&app, "/admin/merchants", &body).await);
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(
        (
            a.body["has_platform_cert"].as_bool(),
            &a.body["public_key_id"]
        ),
        (Some(true), &Value::Null)
    );
    let created = a.body["updated_at"].as_i64().unwrap();

    // To the WeChat Pay public key, and API v2, in one change.
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"platform_cert": null, "wechatpay_public_key_id": sb.s("wechatpay_public_key_id"),
                "wechatpay_public_key": sb.public_key_pem, "api_version": "v2"}),
        )
        .await,
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["has_platform_cert"], false);
    assert_eq!(a.body["public_key_id"], sb.s("wechatpay_public_key_id"));
    assert_eq!(a.body["api_version"], "v2");
    let switched = a.body["updated_at"].as_i64().unwrap();
    assert!(switched > created);
    let c = tenants::load_credentials(&app.state.store, Some(&key), DIRECT)
        .await
        .unwrap();
    assert!(c.platform_cert.is_none() && c.public_key.is_some());

    // Removing both ways of verifying is refused as a whole, and changes nothing.
    let before = rows(&app).await;
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"wechatpay_public_key_id": null, "wechatpay_public_key": null, "name": "renamed"}),
        )
        .await,
    );
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains("neither"));
    assert_eq!(rows(&app).await, before);
    let a = seen.keep(admin_get(&app, &format!("/admin/merchants/{DIRECT}")).await);
    assert_eq!(
        (a.body["updated_at"].as_i64(), a.body["name"].as_str()),
        (Some(switched), Some("direct 1900000001"))
    );

    // A new key pair and certificate: the serial must come with them.
    let (new_key, new_cert, new_serial) = new_key_and_cert();
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"apiclient_key": new_key, "apiclient_cert": new_cert}),
        )
        .await,
    );
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("merchant_serial")
    );
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"apiclient_key": new_key, "apiclient_cert": new_cert, "merchant_serial": new_serial}),
        )
        .await,
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["merchant_serial"], new_serial.as_str());
    assert!(a.body["updated_at"].as_i64().unwrap() > switched);
    let c = tenants::load_credentials(&app.state.store, Some(&key), DIRECT)
        .await
        .unwrap();
    assert_eq!(c.merchant_serial, new_serial);
    assert!(!sb.key_pem.contains(new_key.lines().nth(1).unwrap()));
    seen.assert_none_contains(&[new_key.lines().nth(1).unwrap().to_owned()]);

    // Disabled, and back.
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"enabled": false}),
        )
        .await,
    );
    assert_eq!(a.body["enabled"], false);
    let a = seen.keep(admin_get(&app, "/admin/merchants").await);
    assert_eq!(
        find(&a.body["merchants"], "mchid", DIRECT)["enabled"],
        false
    );
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"enabled": true, "name": "咖啡"}),
        )
        .await,
    );
    assert_eq!(
        (a.body["enabled"].as_bool(), a.body["name"].as_str()),
        (Some(true), Some("咖啡"))
    );

    // A mini program: a new AppSecret, disabled.
    let app_body = json!({"appid": "wxd0000000000000001", "name": "n", "app_secret": APP_SECRET, "mchid": DIRECT});
    assert_eq!(admin_post(&app, "/admin/apps", &app_body).await.status, 201);
    let a = seen.keep(
        patch(
            &app,
            "/admin/apps/wxd0000000000000001",
            &json!({"app_secret": "9".repeat(32), "enabled": false}),
        )
        .await,
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["enabled"], false);
    assert_eq!(
        tenants::load_app_secret(&app.state.store, Some(&key), "wxd0000000000000001")
            .await
            .unwrap()
            .expose_secret(),
        "9".repeat(32)
    );

    // The file's merchant: its name and flag change here, its credentials in its file.
    let file = sb.s("mchid");
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{file}"),
            &json!({"api_v3_key": sb.s("api_v3_key")}),
        )
        .await,
    );
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["code"], "from_merchant_file");
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/merchants/{file}"),
            &json!({"name": "总店"}),
        )
        .await,
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["name"], "总店");
    let a = seen.keep(
        patch(
            &app,
            &format!("/admin/apps/{}", sb.s("appid")),
            &json!({"app_secret": APP_SECRET}),
        )
        .await,
    );
    assert_eq!(a.status, 409);
    let e = tenants::load_credentials(&app.state.store, Some(&key), &file)
        .await
        .unwrap_err();
    assert!(matches!(e, TenantError::FromFile(_)), "{e}");
    seen.assert_none_contains(&sb.secrets());
}

async fn operator_tokens_work_until_revoked_and_are_never_listed(backend: Backend) {
    let app = spawn_quiet(backend, "v3", master_key(KEY)).await;
    let sb = sandbox();
    let mut seen = Seen::default();
    let mchid = sb.s("mchid");
    let a = seen.keep(
        admin_post(
            &app,
            "/admin/operators",
            &json!({"mchid": mchid, "name": "小王"}),
        )
        .await,
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    let token = a.body["token"].as_str().unwrap().to_owned();
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["mchid"], mchid.as_str());
    let hash = wxpay_server::core::login::token_hash(&token);
    assert_eq!(
        column(&app, "SELECT token_hash FROM operators WHERE id = $1", &id)
            .await
            .as_deref(),
        Some(hash.as_str())
    );

    let a = seen.keep(app.get("/admin/whoami", Some(&token)).await);
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        (
            a.body["kind"].as_str(),
            a.body["mchid"].as_str(),
            a.body["operator_id"].as_str()
        ),
        (Some("operator"), Some(mchid.as_str()), Some(id.as_str()))
    );
    let a = seen.keep(admin_get(&app, "/admin/whoami").await);
    assert_eq!(
        (a.body["kind"].as_str(), &a.body["mchid"]),
        (Some("admin"), &Value::Null)
    );
    // Not the admin token: the admin routes refuse it.
    assert_eq!(
        seen.keep(app.get("/admin/merchants", Some(&token)).await)
            .status,
        401
    );
    assert_eq!(
        seen.keep(
            app.get("/admin/whoami", Some("nobody-has-this-token"))
                .await
        )
        .status,
        401
    );
    assert_eq!(seen.keep(app.get("/admin/whoami", None).await).status, 401);

    // Refused, changing nothing.
    let before = rows(&app).await;
    for body in [
        json!({"mchid": "1999999999", "name": "x"}),
        json!({"mchid": mchid, "name": ""}),
    ] {
        let a = seen.keep(admin_post(&app, "/admin/operators", &body).await);
        assert_eq!(a.status, 400, "{:?}", a.body);
    }
    assert_eq!(rows(&app).await, before);

    let a = seen.keep(admin_get(&app, "/admin/operators").await);
    assert_eq!(a.body["operators"].as_array().unwrap().len(), 1);
    assert!(a.body["operators"][0].get("token").is_none());
    let a = seen.keep(admin_get(&app, &format!("/admin/operators?mchid={mchid}")).await);
    assert_eq!(a.body["operators"][0]["revoked_at"], Value::Null);

    let a = seen.keep(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/admin/operators/{id}"),
            None,
        )
        .await,
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.body["revoked_at"].as_i64().is_some());
    assert_eq!(
        seen.keep(app.get("/admin/whoami", Some(&token)).await)
            .status,
        401
    );
    // Again: still revoked, same time.
    let again = seen.keep(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/admin/operators/{id}"),
            None,
        )
        .await,
    );
    assert_eq!(
        (again.status, &again.body["revoked_at"]),
        (200, &a.body["revoked_at"])
    );
    let a = seen.keep(admin_get(&app, "/admin/operators").await);
    assert!(a.body["operators"][0]["revoked_at"].as_i64().is_some());
    assert!(
        app.state
            .store
            .operator_by_token_hash(&hash)
            .await
            .unwrap()
            .is_none()
    );

    let mut secrets = sb.secrets();
    secrets.push(hash);
    // The token was in its creation answer only.
    let (first, rest) = seen.0.split_first().unwrap();
    assert!(first.contains(&token));
    Seen(rest.to_vec()).assert_none_contains(&[token]);
    seen.assert_none_contains(&secrets);
}

async fn a_second_server_opens_the_seals_with_the_same_key_only(backend: Backend) {
    let first = spawn_quiet(backend, "v3", master_key(KEY)).await;
    let sb = sandbox();
    assert_eq!(
        admin_post(&first, "/admin/merchants", &sb.body(DIRECT, "direct"))
            .await
            .status,
        201
    );
    let app_body = json!({"appid": "wxd0000000000000001", "name": "n", "app_secret": APP_SECRET, "mchid": DIRECT});
    assert_eq!(
        admin_post(&first, "/admin/apps", &app_body).await.status,
        201
    );
    let version = first.state.store.registry_version().await.unwrap();

    let second = spawn_instance(&first, None, master_key(KEY)).await;
    // Its start imported the same file merchant again: nothing changed.
    assert_eq!(
        second.state.store.registry_version().await.unwrap(),
        version
    );
    let a = admin_get(&second, &format!("/admin/merchants/{DIRECT}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["apps"][0]["appid"], "wxd0000000000000001");
    let credentials = tenants::load_credentials(
        &second.state.store,
        second.state.master_key.as_ref(),
        DIRECT,
    )
    .await
    .unwrap();
    assert_eq!(credentials.merchant_serial, sb.s("merchant_serial"));
    assert_eq!(credentials.mchid, DIRECT);
    let secret = tenants::load_app_secret(
        &second.state.store,
        second.state.master_key.as_ref(),
        "wxd0000000000000001",
    )
    .await
    .unwrap();
    let merchant = credentials.into_merchant("wxd0000000000000001".into(), secret, None);
    assert_eq!(merchant.mp_config().appid, "wxd0000000000000001");
    assert_eq!(merchant.v3_config().mchid, DIRECT);

    // A change on the first is announced to the second (PostgreSQL's NOTIFY; SQLite has one
    // instance, whose own store raises it).
    if backend == Backend::Postgres {
        second.state.store.notices().listening().await;
        let mut changes = second.state.store.notices().registry_changes();
        changes.mark_unchanged();
        let a = patch(
            &first,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"name": "renamed"}),
        )
        .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed())
            .await
            .expect("the registry notice arrives")
            .unwrap();
        assert_eq!(
            second.state.store.registry_version().await.unwrap(),
            version + 1
        );
    } else {
        let mut changes = first.state.store.notices().registry_changes();
        changes.mark_unchanged();
        let a = patch(
            &first,
            &format!("/admin/merchants/{DIRECT}"),
            &json!({"name": "renamed"}),
        )
        .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert!(changes.has_changed().unwrap());
    }

    // Another key: the rows are listed, the secrets do not open, and saying so is clear.
    let third = spawn_instance(&first, None, master_key(OTHER_KEY)).await;
    assert_eq!(
        admin_get(&third, &format!("/admin/merchants/{DIRECT}"))
            .await
            .status,
        200
    );
    let e = tenants::load_credentials(&third.state.store, third.state.master_key.as_ref(), DIRECT)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, TenantError::Unreadable(m) if m.contains("WXPAY_MASTER_KEY") && m.contains(DIRECT)),
        "{e}"
    );
    let before = rows(&first).await;
    let a = patch(
        &third,
        &format!("/admin/merchants/{DIRECT}"),
        &json!({"api_v3_key": sb.s("api_v3_key")}),
    )
    .await;
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["code"], "credentials_unreadable");
    assert!(!a.bytes.windows(4).any(|w| w == b"v1:A"));
    assert_eq!(rows(&first).await, before);
    assert!(
        tenants::load_app_secret(
            &third.state.store,
            third.state.master_key.as_ref(),
            "wxd0000000000000001"
        )
        .await
        .is_err()
    );
}

both_backends!(
    merchants_apps_sub_merchants_are_registered_and_no_answer_holds_a_secret,
    invalid_credentials_are_refused_naming_the_field_and_change_nothing,
    updates_rotate_keys_switch_verification_and_disable,
    operator_tokens_work_until_revoked_and_are_never_listed,
    a_second_server_opens_the_seals_with_the_same_key_only,
    without_a_master_key_a_merchant_server_refuses_to_store_secrets,
);

/// Merchant mode without a master key: the file's merchant works and is listed; registering
/// secrets is refused with 409 `master_key_required`, changing nothing.
async fn without_a_master_key_a_merchant_server_refuses_to_store_secrets(backend: Backend) {
    let sim = wxpay_sim::Simulator::start(wxpay_sim::SimConfig {
        state_dir: Some(crate::helpers::own_sandbox_dir()),
        ..wxpay_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let db = crate::helpers::TestDatabase::new(backend).await;
    let merchant = sim.merchant().merchant_json_path.clone().unwrap();
    let settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            ("WXPAY_MERCHANT_FILE", merchant.to_str().unwrap()),
            ("WXPAY_DATABASE_URL", &db.url),
            ("WXPAY_PAY_BASE_URL", &sim.base_url()),
            ("WXPAY_MP_BASE_URL", &sim.base_url()),
            ("WXPAY_ADMIN_TOKEN", "an-admin-token-of-this-test"),
        ],
    )
    .unwrap();
    assert!(settings.master_key.is_none());
    let server = wxpay_server::Application::build(settings)
        .await
        .unwrap()
        .with_jobs(None);
    let app = TestApp {
        base: format!("http://127.0.0.1:{}", server.port()),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        state: server.state().clone(),
        backend,
        db,
    };
    tokio::spawn(server.run_until_stopped());
    assert!(app.state.master_key.is_none());
    let sb = sandbox();
    let before = rows(&app).await;
    let a = admin_post(&app, "/admin/merchants", &sb.body(DIRECT, "direct")).await;
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["code"], "master_key_required");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("WXPAY_MASTER_KEY")
    );
    let a = admin_post(
        &app,
        "/admin/apps",
        &json!({"appid": "wxd1", "name": "n", "app_secret": APP_SECRET, "mchid": sb.s("mchid")}),
    )
    .await;
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["code"], "master_key_required");
    assert_eq!(rows(&app).await, before);
    let a = admin_get(&app, "/admin/merchants").await;
    assert_eq!(a.body["merchants"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["merchants"][0]["source"], "file");
    // The file's merchant still works (its products, orders: the payment path is unchanged).
    assert_eq!(admin_get(&app, "/admin/orders").await.status, 200);
    // What needs no secret is still possible.
    assert_eq!(
        admin_post(
            &app,
            "/admin/operators",
            &json!({"mchid": sb.s("mchid"), "name": "n"})
        )
        .await
        .status,
        201
    );
}

#[test]
fn a_bad_master_key_stops_the_start_with_one_line_naming_it() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("master-{}", crate::helpers::random_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.key");
    std::fs::write(&short, "abcd\n").unwrap();
    let good = dir.join("good.key");
    std::fs::write(&good, format!("{KEY}\n")).unwrap();
    for (env, key) in [
        (vec![("WXPAY_MASTER_KEY", &KEY[..62])], "WXPAY_MASTER_KEY"),
        (
            vec![("WXPAY_MASTER_KEY", "not-a-key-at-all")],
            "WXPAY_MASTER_KEY",
        ),
        (
            vec![("WXPAY_MASTER_KEY_FILE", short.to_str().unwrap())],
            "WXPAY_MASTER_KEY_FILE",
        ),
        (
            vec![("WXPAY_MASTER_KEY_FILE", "/nonexistent/wxpay.key")],
            "WXPAY_MASTER_KEY_FILE",
        ),
        (
            vec![
                ("WXPAY_MASTER_KEY", KEY),
                ("WXPAY_MASTER_KEY_FILE", good.to_str().unwrap()),
            ],
            "WXPAY_MASTER_KEY_FILE",
        ),
    ] {
        let e = Settings::from_sources("", &env).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        let line = e.to_string();
        assert!(!line.contains('\n') && !line.contains(&KEY[..62]), "{line}");
    }
    let from_file =
        Settings::from_sources("", &[("WXPAY_MASTER_KEY_FILE", good.to_str().unwrap())]).unwrap();
    let from_env = Settings::from_sources("", &[("WXPAY_MASTER_KEY", KEY)]).unwrap();
    assert_eq!(from_file.master_key, from_env.master_key);
    assert!(!format!("{from_env:?}").contains(KEY));
    assert!(wxpay_server::config::keys_help().contains("master_key_file"));
}

/// Sandbox mode without a key keeps one in `wxpay-master.key` beside the SQLite database, so that
/// a restart opens what was registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_keeps_its_master_key_beside_the_database() {
    let first = spawn_quiet(Backend::Sqlite, "v3", |_| {}).await;
    let file = Path::new(first.db.url.strip_prefix("sqlite://").unwrap())
        .parent()
        .unwrap()
        .join(sealing::SANDBOX_KEY_FILE);
    assert!(file.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let sb = sandbox();
    assert_eq!(
        admin_post(&first, "/admin/merchants", &sb.body(DIRECT, "direct"))
            .await
            .status,
        201
    );
    let again = spawn_instance(&first, None, |_| {}).await;
    let c = tenants::load_credentials(&again.state.store, again.state.master_key.as_ref(), DIRECT)
        .await
        .unwrap();
    assert_eq!(c.merchant_serial, sb.s("merchant_serial"));
}
