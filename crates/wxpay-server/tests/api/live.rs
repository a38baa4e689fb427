//! Going live: the client's address behind a trusted reverse proxy, HTTPS with a reloaded
//! certificate, bounded metrics, slow and idle connections.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wxpay_server::api::rate_limit::RateLimit;
use wxpay_server::net::client_ip::TrustedProxies;
use wxpay_server::store::Backend;

use crate::helpers::{TestApp, spawn_app_with};

const LOGIN_LIMIT: RateLimit = RateLimit {
    per_minute: 60,
    burst: 20,
};

async fn login_from(app: &TestApp, forwarded_for: &str, code: &str) -> u16 {
    app.send(
        app.http
            .post(format!("{}/api/login", app.base))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({ "code": code })),
    )
    .await
    .status
}

async fn client_ip_of(app: &TestApp, out_trade_no: &str) -> String {
    sqlx::query_scalar("SELECT client_ip FROM orders WHERE out_trade_no = $1")
        .bind(out_trade_no.to_owned())
        .fetch_one(app.state.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
        s.rate_limit_login = LOGIN_LIMIT;
        s.trusted_proxies = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
    })
    .await;
    // 25 buyers behind the proxy (a forged entry on the left, a second proxy on the right).
    let (mut token, mut openid) = (String::new(), String::new());
    for i in 0..25 {
        let (id, code) = app.sim_user().await;
        openid = id;
        let forwarded = format!("6.6.6.6, 198.51.100.{i}, 10.0.0.2");
        let a = app.send(
            app.http
                .post(format!("{}/api/login", app.base))
                .header("x-forwarded-for", forwarded)
                .json(&json!({ "code": code })),
        );
        let a = a.await;
        assert_eq!(a.status, 200, "buyer {i}: {:?}", a.body);
        token = a.body["token"].as_str().unwrap().to_owned();
    }
    // 25 logins of one buyer: the burst passes, then 429.
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(login_from(&app, "203.0.113.5", "not-a-code").await);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // Forwarded (RFC 7239) and X-Real-IP are read too.
    let a = app
        .send(
            app.http
                .post(format!("{}/api/login", app.base))
                .header("forwarded", "for=\"[2001:db8::5]:4711\";proto=https")
                .json(&json!({ "code": "not-a-code" })),
        )
        .await;
    assert_eq!(a.status, 401, "a fresh budget: {:?}", a.body);

    // The payer's address sent to WeChat is the forwarded one...
    let order = app
        .send(
            app.http
                .post(format!("{}/api/orders", app.base))
                .bearer_auth(&token)
                .header("x-real-ip", "198.51.100.77")
                .json(&json!({ "items": [{"sku": "tea", "quantity": 1}] })),
        )
        .await;
    assert_eq!(order.status, 201, "{:?}", order.body);
    let no = order.body["out_trade_no"].as_str().unwrap();
    assert_eq!(client_ip_of(&app, no).await, "198.51.100.77");
    // ...and an order of the back office never carries the operator's address.
    let admin = app
        .send(
            app.http
                .post(format!("{}/admin/orders", app.base))
                .bearer_auth(crate::jobs::admin_token(&app))
                .header("x-forwarded-for", "203.0.113.200")
                .json(&json!({"openid": openid, "amount_fen": 100, "description": "年费"})),
        )
        .await;
    assert_eq!(admin.status, 201, "{:?}", admin.body);
    let no = admin.body["out_trade_no"].as_str().unwrap();
    assert_eq!(
        client_ip_of(&app, no).await,
        "127.0.0.1",
        "the server's own address"
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    for trusted in ["", "10.0.0.0/8"] {
        let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
            s.rate_limit_login = LOGIN_LIMIT;
            s.trusted_proxies = TrustedProxies::parse(trusted).unwrap();
        })
        .await;
        let mut statuses = Vec::new();
        for i in 0..25 {
            let forged = format!("198.51.100.{i}");
            let status = app
                .send(
                    app.http
                        .post(format!("{}/api/login", app.base))
                        .header("x-forwarded-for", &forged)
                        .header("x-real-ip", &forged)
                        .header("forwarded", format!("for={forged}"))
                        .json(&json!({ "code": "not-a-code" })),
                )
                .await
                .status;
            statuses.push(status);
        }
        assert!(
            statuses[..20].iter().all(|s| *s == 401),
            "{trusted:?}: {statuses:?}"
        );
        assert!(
            statuses[20..].iter().all(|s| *s == 429),
            "{trusted:?}: {statuses:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

fn random_token(len: usize) -> String {
    // Method tokens: letters only (hyper accepts any token).
    let raw = wxpay::nonce::random_string(len);
    raw.chars()
        .filter(char::is_ascii_alphabetic)
        .collect::<String>()
        + "X"
}

async fn raw_request(addr: &str, head: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn metrics_labels_stay_bounded_whatever_the_requests() {
    let app = spawn_app_with(Backend::Sqlite, "v3", |_| {}).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let scrape = |app: &TestApp| {
        let url = format!("{}/metrics", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    // Every route and method seen once, so that later scrapes can only grow by counts.
    for method in [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
    ] {
        raw_request(
            &addr,
            &format!("{method} /no/such/path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
    }
    let mut sent = Vec::new();
    for i in 0..100 {
        let method = random_token(if i % 10 == 0 { 60_000 } else { 40 });
        let path = format!("/{}/{}", random_token(30), i);
        let answer = raw_request(
            &addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 4"),
            "{}",
            &answer[..answer.len().min(80)]
        );
        sent.push((method, path));
    }
    let text = scrape(&app).await;
    // The recorder is shared by the tests of this process: other tests add their routes, never
    // megabytes. Before labels were bounded, this was over 10 MB.
    assert!(text.len() < 1_000_000, "{} bytes", text.len());
    for (method, path) in &sent {
        assert!(!text.contains(&method[..20]), "a method became a label");
        assert!(!text.contains(path.as_str()), "a path became a label");
    }
    assert!(text.contains("method=\"other\""));
    assert!(text.contains("route=\"other\""));
}

#[tokio::test]
async fn metrics_behind_a_token_or_on_their_own_listener() {
    const TOKEN: &str = "metrics-token-0123456789";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
        s.metrics_token = Some(TOKEN.to_owned().into());
        s.metrics_listen = Some(([127, 0, 0, 1], port).into());
    })
    .await;
    // Not on the main listener any more.
    assert_eq!(app.get("/metrics", None).await.status, 404);
    let own = format!("http://127.0.0.1:{port}/metrics");
    let a = app.send(app.http.get(&own)).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["code"], "unauthorized");
    let a = app
        .send(app.http.get(&own).bearer_auth("metrics-token-wrong-000"))
        .await;
    assert_eq!(a.status, 401);
    let a = app.send(app.http.get(&own).bearer_auth(TOKEN)).await;
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.bytes).contains("wxpay_orders"));

    // A token without a listener of its own: on the main one, behind the token.
    let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
        s.metrics_token = Some(TOKEN.to_owned().into());
    })
    .await;
    assert_eq!(app.get("/metrics", None).await.status, 401);
    assert_eq!(app.get("/metrics", Some(TOKEN)).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Slow and idle connections

#[tokio::test]
async fn a_connection_trickling_its_headers_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
        s.connection_limits.header_timeout = Duration::from_secs(1);
        s.connection_limits.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // One byte every 200 ms: never a complete head.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("an answer to half a request"),
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the server closed the connection");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "{closed_after:?}"
    );
    // An idle connection (nothing sent) is closed after the idle timeout, not the header one.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("closed within 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let idle_for = started.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1900) && idle_for < Duration::from_secs(4),
        "{idle_for:?}"
    );
    // A kept-alive connection serves requests one after another.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..3 {
        let r = client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn the_connection_cap_holds_further_clients_until_a_slot_frees() {
    let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
        s.connection_limits.max_connections = 2;
        s.connection_limits.header_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Two silent-but-started connections take both slots.
    let mut a = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(&addr).await.unwrap();
    a.write_all(b"G").await.unwrap();
    b.write_all(b"G").await.unwrap();
    let started = tokio::time::Instant::now();
    let answer = raw_request(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Served once the header timeout freed a slot.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// HTTPS

/// A test CA and leaf certificates for `localhost` it signs.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wxpay test CA");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// (certificate PEM, key PEM, certificate DER)
    fn leaf(&self, name: &str) -> (String, String, Vec<u8>) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// The certificate the server presents on a new connection.
async fn presented_certificate(port: u16, ca_der: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn https_with_http2_and_http1_and_a_certificate_reloaded_without_a_restart() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{}", crate::helpers::random_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    let (cert, key, first_der) = ca.leaf("first");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let app = spawn_app_with(Backend::Sqlite, "v3", |s| {
        s.tls = Some(wxpay_server::net::tls::TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
        s.tls_reload_secs = 1;
    })
    .await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        app.state
            .registry
            .default_app()
            .notify_base
            .starts_with("https://"),
        "{}",
        app.state.registry.default_app().notify_base
    );
    let https = format!("https://localhost:{port}/healthz");
    let root = reqwest::Certificate::from_der(ca.issuer.der()).unwrap();
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([root.clone()])
            .resolve("localhost", ([127, 0, 0, 1], port).into());
        if http1_only {
            client = client.http1_only();
        }
        let r = client.build().unwrap().get(&https).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version, "ALPN");
    }
    // Plain HTTP on the TLS port gets no answer.
    let plain = raw_request(
        &format!("127.0.0.1:{port}"),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert_eq!(
        presented_certificate(port, ca.issuer.der()).await,
        first_der
    );

    // A key that does not match: the old certificate stays in service.
    let (_, other_key, _) = ca.leaf("other");
    std::fs::write(&key_path, &other_key).unwrap();
    // Renewal: the new pair replaces the files; new connections get it without a restart.
    let (cert, key, second_der) = ca.leaf("second");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let presented = presented_certificate(port, ca.issuer.der()).await;
        if presented == second_der {
            break;
        }
        assert_eq!(presented, first_der);
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reloaded within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The public URL and an exposed sandbox

fn merchant_env<'a>(merchant: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    // A database file of its own for each server of these tests.
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("live-{}.db", crate::helpers::random_name()));
    let url: &'static str = Box::leak(format!("sqlite://{}", file.display()).into_boxed_str());
    let mut env = vec![
        ("WXPAY_LISTEN", "127.0.0.1:0"),
        ("WXPAY_MERCHANT_FILE", merchant),
        ("WXPAY_DATABASE_URL", url),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test]
async fn the_public_url_must_be_https_for_wechats_production_hosts() {
    let merchant = crate::helpers::sandbox_dir().join("merchant.json");
    let merchant = merchant.to_str().unwrap();
    // API v3 on WeChat's hosts: refused, with or without a public URL.
    for public in ["http://pay.example.com", ""] {
        let err = wxpay_server::Settings::from_sources(
            "",
            &merchant_env(merchant, &[("WXPAY_PUBLIC_URL", public)]),
        )
        .unwrap_err();
        assert_eq!(err.key, "WXPAY_PUBLIC_URL", "{err}");
        assert!(!err.to_string().contains('\n'));
    }
    for allowed in [
        // HTTPS.
        vec![("WXPAY_PUBLIC_URL", "https://pay.example.com")],
        // Another host: a simulator.
        vec![
            ("WXPAY_PUBLIC_URL", "http://127.0.0.1:8080"),
            ("WXPAY_PAY_BASE_URL", "http://127.0.0.1:9090"),
            ("WXPAY_MP_BASE_URL", "http://127.0.0.1:9090"),
        ],
        // API v2: started, with a warning.
        vec![
            ("WXPAY_PUBLIC_URL", "http://pay.example.com"),
            ("WXPAY_API_VERSION", "v2"),
        ],
    ] {
        let settings = wxpay_server::Settings::from_sources("", &merchant_env(merchant, &allowed))
            .unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
        let app = wxpay_server::Application::build(settings).await.unwrap();
        let warned = app
            .banner()
            .contains("WARNING: WXPAY_PUBLIC_URL is not https://");
        let v2 = allowed.contains(&("WXPAY_API_VERSION", "v2"));
        assert_eq!(warned, v2, "{allowed:?}:\n{}", app.banner());
    }
}

#[tokio::test]
async fn a_sandbox_listening_beyond_loopback_warns_in_its_banner() {
    for (listen, warned) in [("127.0.0.1:0", false), ("0.0.0.0:0", true)] {
        let db = crate::helpers::TestDatabase::new(Backend::Sqlite).await;
        let mut settings = crate::helpers::test_settings(&db.url, "v3");
        settings.listen = listen.parse().unwrap();
        let (app, _) = crate::helpers::build_app(settings).await.unwrap();
        let banner = app.banner();
        assert_eq!(
            banner.contains("WARNING: sandbox mode listens on"),
            warned,
            "{banner}"
        );
    }
}
