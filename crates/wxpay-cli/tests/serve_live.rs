//! `wxpay serve` as a process, going live: a stop bounded even with a request half sent, the
//! jobs stopped at the signal, and the start refused with one line for a TLS key that does not
//! match its certificate or a plain-HTTP public URL with API v3 on WeChat's production hosts.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wxpay-serve-live-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `wxpay serve` in sandbox mode in `dir`, with `env` on top; stdout piped, stderr to a file.
fn serve(dir: &Scratch, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxpay"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info,sqlx=warn")
        .env("WXPAY_LISTEN", "127.0.0.1:0")
        .env(
            "WXPAY_DATABASE_URL",
            format!("sqlite://{}", p(&dir.path("wxpay.db"))),
        )
        .env("WXPAY_SANDBOX_DIR", p(&dir.path("sandbox")))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path("stderr.log")).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// The address in the banner's `API:` line.
fn wait_for_banner(child: &mut Child) -> String {
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(url) = line.trim().strip_prefix("API:") {
            let url = url.trim();
            return url
                .trim_start_matches("http://")
                .trim_end_matches("/api/")
                .to_owned();
        }
    }
    panic!("no banner");
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits up to `limit` for the process to exit; kills it and fails otherwise.
fn exit_within(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("still running {limit:?} after SIGTERM");
}

#[test]
fn a_sigterm_with_a_half_sent_request_stops_within_the_shutdown_timeout() {
    let dir = Scratch::new("shutdown");
    let mut child = serve(
        &dir,
        &[
            ("WXPAY_SHUTDOWN_TIMEOUT_SECS", "2"),
            // Long enough that only the shutdown timeout can end these connections.
            ("WXPAY_HEADER_TIMEOUT_SECS", "120"),
            ("WXPAY_IDLE_TIMEOUT_SECS", "120"),
        ],
    )
    .spawn()
    .unwrap();
    let addr = wait_for_banner(&mut child);
    // A request whose body never finishes. `Expect: 100-continue` makes the server say when the
    // handler starts reading the body: from then on the request is in progress.
    let mut body_half = std::net::TcpStream::connect(&addr).unwrap();
    body_half
        .write_all(
            b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut continued = [0u8; 25];
    std::io::Read::read_exact(&mut body_half, &mut continued).unwrap();
    assert!(
        continued.starts_with(b"HTTP/1.1 100 Continue"),
        "{continued:?}"
    );
    body_half.write_all(b"{\"co").unwrap();
    // And a head that never ends (its timeout is far longer than the stop's).
    let mut head_half = std::net::TcpStream::connect(&addr).unwrap();
    head_half
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Wait: ")
        .unwrap();

    sigterm(&child);
    let (status, took) = exit_within(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "stopped after {took:?} (shutdown timeout 2 s)"
    );
    let log = std::fs::read_to_string(dir.path("stderr.log")).unwrap();
    let jobs = log.find("background jobs stopped").expect(&log);
    let cut = log
        .find("connections still open at the end of the shutdown timeout")
        .expect(&log);
    assert!(
        jobs < cut,
        "the jobs stop at the signal, not after the connections:\n{log}"
    );
    drop((body_half, head_half));
}

fn tls_pair(dir: &Scratch, mismatched: bool) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key_pem = if mismatched {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    } else {
        key.serialize_pem()
    };
    let (c, k) = (dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key_pem).unwrap();
    (c, k)
}

fn refused(command: &mut Command) -> String {
    let output = command.stdout(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn a_tls_key_that_does_not_match_its_certificate_stops_the_start_with_one_line() {
    let dir = Scratch::new("tls-mismatch");
    let (cert, key) = tls_pair(&dir, true);
    let mut command = serve(
        &dir,
        &[("WXPAY_TLS_CERT", p(&cert)), ("WXPAY_TLS_KEY", p(&key))],
    );
    command.stderr(Stdio::piped());
    let stderr = refused(&mut command);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("WXPAY_TLS_KEY"), "{stderr}");
    assert!(
        stderr.contains("does not match the certificate"),
        "{stderr}"
    );

    // The matching pair starts, on https://.
    let (cert, key) = tls_pair(&dir, false);
    let mut child = serve(
        &dir,
        &[("WXPAY_TLS_CERT", p(&cert)), ("WXPAY_TLS_KEY", p(&key))],
    )
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut https = false;
    while stdout.read_line(&mut line).unwrap() > 0 {
        if line.contains("API:") {
            https = line.contains("https://127.0.0.1:");
            break;
        }
        line.clear();
    }
    sigterm(&child);
    let (status, _) = exit_within(&mut child, Duration::from_secs(15));
    assert!(https, "{line}");
    assert!(status.success());
}

#[test]
fn a_plain_http_public_url_is_refused_for_api_v3_on_wechats_production_hosts() {
    let dir = Scratch::new("public-url");
    // Any file will do: the configuration is refused before it is read.
    let merchant = dir.path("merchant.json");
    std::fs::write(&merchant, "{}").unwrap();
    for public in [None, Some("http://pay.example.com")] {
        let mut command = serve(
            &dir,
            &[
                ("WXPAY_MERCHANT_FILE", p(&merchant)),
                ("WXPAY_ADMIN_TOKEN", "an-admin-token-0123456789"),
            ],
        );
        if let Some(url) = public {
            command.env("WXPAY_PUBLIC_URL", url);
        }
        command.stderr(Stdio::piped());
        let stderr = refused(&mut command);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("WXPAY_PUBLIC_URL"), "{stderr}");
        assert!(stderr.contains("https://"), "{stderr}");
    }
}

/// `WXPAY_SANDBOX_PROVIDER`: the sandbox also has a service provider with a sub-merchant and the
/// sub-merchant's mini program, whose buyer pays through the provider (the order names the
/// sub-merchant); a restart on the same state adds nothing.
#[test]
fn a_sandbox_with_a_provider_pays_its_sub_merchant() {
    use serde_json::{Value, json};
    let dir = Scratch::new("provider");
    let admin = "sandbox-provider-admin-token-0123456789";
    let env = [
        ("WXPAY_SANDBOX_PROVIDER", "true"),
        ("WXPAY_ADMIN_TOKEN", admin),
        ("WXPAY_QUERY_AFTER_SECS", "1"),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let call =
        |method: reqwest::Method, url: String, token: Option<String>, body: Option<Value>| {
            let mut request = http.request(method, url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let answer = request.send().await.unwrap();
                let status = answer.status().as_u16();
                (status, answer.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let mut child = serve(&dir, &env).spawn().unwrap();
    let base = format!("http://{}", wait_for_banner(&mut child));
    let admin_token = Some(admin.to_owned());
    let (sub_appid, sp_mchid) = runtime.block_on(async {
        let (status, merchants) = call(
            get.clone(),
            format!("{base}/admin/merchants"),
            admin_token.clone(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{merchants}");
        let provider = merchants["merchants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == "provider")
            .expect("a provider")
            .clone();
        assert!(provider["sp_appid"].is_string(), "{provider}");
        assert_eq!(provider["sub_merchant_count"], 1);
        let (_, apps) = call(
            get.clone(),
            format!("{base}/admin/apps"),
            admin_token.clone(),
            None,
        )
        .await;
        let apps = apps["apps"].as_array().unwrap().clone();
        assert_eq!(apps.len(), 2, "{apps:?}");
        let sub_app = apps
            .iter()
            .find(|a| a["sub_mchid"] == "1900000201")
            .expect("the sub-merchant's mini program");
        (
            sub_app["appid"].as_str().unwrap().to_owned(),
            provider["mchid"].as_str().unwrap().to_owned(),
        )
    });

    runtime.block_on(async {
        // A buyer of the sub-merchant's mini program pays (the registry may take a moment to
        // serve the registered mini program).
        let (_, user) = call(
            post.clone(),
            format!("{base}/sim/users"),
            admin_token.clone(),
            Some(json!({ "appid": sub_appid })),
        )
        .await;
        let mut login = (0, Value::Null);
        for _ in 0..100 {
            login = call(
                post.clone(),
                format!("{base}/api/login"),
                None,
                Some(json!({ "code": user["code"], "appid": sub_appid })),
            )
            .await;
            if login.1["code"] != "unknown_app" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(login.0, 200, "{}", login.1);
        let token = Some(login.1["token"].as_str().unwrap().to_owned());
        let (status, created) = call(
            post.clone(),
            format!("{base}/api/orders"),
            token.clone(),
            Some(json!({ "items": [{"sku": "coffee", "quantity": 1}] })),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let no = created["out_trade_no"].as_str().unwrap().to_owned();
        let mut pay = created["payment"].clone();
        pay["openid"] = user["openid"].clone();
        let (status, paid) = call(post.clone(), format!("{base}/sim/pay"), None, Some(pay)).await;
        assert_eq!(status, 200, "{paid}");
        let mut order = Value::Null;
        for _ in 0..300 {
            order = call(
                get.clone(),
                format!("{base}/admin/orders/{no}"),
                admin_token.clone(),
                None,
            )
            .await
            .1;
            if order["order"]["status"] == "SUCCESS" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(order["order"]["status"], "SUCCESS", "{order}");
        assert_eq!(order["order"]["mchid"], json!(sp_mchid));
        assert_eq!(order["order"]["sub_mchid"], "1900000201");
        assert_eq!(order["order"]["appid"], json!(sub_appid));
    });
    sigterm(&child);
    let (status, _) = exit_within(&mut child, Duration::from_secs(15));
    assert!(status.success());

    // Restarted on the same state: the same provider, nothing added.
    let mut child = serve(&dir, &env).spawn().unwrap();
    let base = format!("http://{}", wait_for_banner(&mut child));
    runtime.block_on(async {
        let (_, merchants) = call(
            get.clone(),
            format!("{base}/admin/merchants"),
            admin_token.clone(),
            None,
        )
        .await;
        assert_eq!(
            merchants["merchants"].as_array().unwrap().len(),
            2,
            "{merchants}"
        );
    });
    sigterm(&child);
    let (status, _) = exit_within(&mut child, Duration::from_secs(15));
    assert!(status.success());
}
