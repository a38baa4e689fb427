//! `wxpay demo`: the whole flow through the public HTTP API, for API v2 and for API v3.
//!
//! Starts the server in sandbox mode (the simulator in process, a temporary SQLite database)
//! and walks: login, order, pay (as the WeChat client, through `/sim/pay`), the payment
//! notification, the order query, a partial refund, its notification, the close of a second
//! order, a mini-program code, and the reconciliation of the day's bill (the simulator's clock
//! moved a day on, so that the day's bill exists). One line per step.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use wxpay_server::Settings;
use wxpay_server::jobs::bills::{format_date, today_cst};

/// How the demo went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Steps that passed.
    pub passed: usize,
    /// Steps that failed (a failed step skips the rest of its API version).
    pub failed: usize,
}

impl DemoSummary {
    /// Whether every step passed.
    #[must_use]
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "wxpay-demo-{}-{}",
            std::process::id(),
            wxpay::nonce::random_string(8)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    admin: String,
}

struct Answer {
    status: u16,
    body: Value,
    content_type: String,
    bytes: Vec<u8>,
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, String> {
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| e.without_url().to_string())?
            .to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            content_type,
            bytes,
        })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Answer, String> {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<Answer, String> {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }
}

fn expect(answer: &Answer, status: u16, what: &str) -> Result<(), String> {
    if answer.status == status {
        Ok(())
    } else {
        Err(format!("{what}: HTTP {} {}", answer.status, answer.body))
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v[key]
        .as_str()
        .ok_or_else(|| format!("the answer has no {key}: {v}"))
}

/// Runs the demo for v2 and v3, writing one line per step to `out`.
///
/// # Errors
/// Only when `out` cannot be written; a failing step is counted, not returned.
pub async fn run(out: &mut dyn Write) -> std::io::Result<DemoSummary> {
    let mut summary = DemoSummary::default();
    let dir = TempDir::new()?;
    for version in ["v2", "v3"] {
        if let Err(e) = run_version(version, &dir.0, out, &mut summary).await {
            summary.failed += 1;
            writeln!(out, "[{version}] FAIL {e}")?;
        }
    }
    writeln!(
        out,
        "{}: {} steps passed, {} failed",
        if summary.all_passed() {
            "demo passed"
        } else {
            "demo FAILED"
        },
        summary.passed,
        summary.failed
    )?;
    Ok(summary)
}

/// Runs the steps of one API version; the error is the first failed step.
async fn run_version(
    version: &str,
    dir: &std::path::Path,
    out: &mut dyn Write,
    summary: &mut DemoSummary,
) -> Result<(), String> {
    let db = dir.join(format!("demo-{version}.db"));
    // A simulator of its own, as the database is its own: the simulator keeps its orders across
    // restarts, and one shared by both runs would bill the v2 run's payments to the v3 run.
    let sandbox = dir.join(format!("sandbox-{version}"));
    let settings = Settings::from_sources(
        "",
        &[
            ("WXPAY_LISTEN", "127.0.0.1:0"),
            ("WXPAY_DATABASE_URL", &format!("sqlite://{}", db.display())),
            ("WXPAY_API_VERSION", version),
            ("WXPAY_SANDBOX_DIR", &sandbox.display().to_string()),
            ("WXPAY_SANDBOX_TIME_SCALE", "1000"),
            ("WXPAY_QUERY_AFTER_SECS", "0"),
        ],
    )
    .map_err(|e| e.to_string())?;
    let app = crate::sandbox::build_server(settings)
        .await
        .map_err(|e| format!("the server did not start: {e}"))?
        .with_jobs(None);
    let admin = app
        .state()
        .admin_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .ok_or("sandbox mode has no admin token")?;
    let client = Client {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?,
        base: format!("http://127.0.0.1:{}", app.port()),
        admin,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let result = steps(version, &client, out, summary).await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

async fn steps(
    version: &str,
    c: &Client,
    out: &mut dyn Write,
    summary: &mut DemoSummary,
) -> Result<(), String> {
    let mut pass = |step: &str, detail: String| -> Result<(), String> {
        summary.passed += 1;
        writeln!(out, "[{version}] ok   {step:<14} {detail}").map_err(|e| e.to_string())
    };
    let admin = Some(c.admin.as_str());

    let user = c.post("/sim/users", None, &json!({})).await?;
    expect(&user, 200, "creating a WeChat user")?;
    let openid = text(&user.body, "openid")?.to_owned();
    let login = c
        .post(
            "/api/login",
            None,
            &json!({"code": text(&user.body, "code")?}),
        )
        .await?;
    expect(&login, 200, "login")?;
    let token = text(&login.body, "token")?.to_owned();
    pass("login", format!("openid {openid}, session token issued"))?;

    let order = c
        .post(
            "/api/orders",
            Some(&token),
            &json!({"items": [{"sku": "coffee", "quantity": 2}]}),
        )
        .await?;
    expect(&order, 201, "order")?;
    let no = text(&order.body, "out_trade_no")?.to_owned();
    let amount = order.body["amount_fen"].as_u64().ok_or("no amount_fen")?;
    pass(
        "order",
        format!(
            "{no}, {amount} fen, signType {}",
            order.body["payment"]["signType"]
        ),
    )?;

    let mut pay = order.body["payment"].clone();
    pay["openid"] = json!(openid);
    let paid = c.post("/sim/pay", None, &pay).await?;
    expect(&paid, 200, "paying")?;
    pass(
        "pay",
        format!("transaction {}", text(&paid.body, "transaction_id")?),
    )?;

    expect(
        &c.post("/sim/notifications/flush", admin, &json!({}))
            .await?,
        200,
        "flushing notifications",
    )?;
    let detail = c.get(&format!("/admin/orders/{no}"), admin).await?;
    expect(&detail, 200, "the order's timeline")?;
    let notified = detail.body["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["kind"] == "notification"));
    if !notified || detail.body["order"]["status"] != "SUCCESS" {
        return Err(format!(
            "notification: the order was not paid by a notification: {}",
            detail.body
        ));
    }
    pass(
        "notification",
        "verified and applied once: SUCCESS".to_owned(),
    )?;

    let queried = c.get(&format!("/api/orders/{no}"), Some(&token)).await?;
    expect(&queried, 200, "query")?;
    if queried.body["status"] != "SUCCESS" {
        return Err(format!("query: status {}", queried.body["status"]));
    }
    pass("query", "SUCCESS".to_owned())?;

    let refund = c
        .post(
            &format!("/admin/orders/{no}/refunds"),
            admin,
            &json!({"amount_fen": 1000, "reason": "demo"}),
        )
        .await?;
    expect(&refund, 201, "refund")?;
    let refund_no = text(&refund.body, "out_refund_no")?.to_owned();
    pass(
        "refund",
        format!(
            "{refund_no}: 1000 of {amount} fen, {}",
            refund.body["status"]
        ),
    )?;

    let mut status = Value::Null;
    for _ in 0..300 {
        expect(
            &c.post("/sim/notifications/flush", admin, &json!({}))
                .await?,
            200,
            "flushing notifications",
        )?;
        let r = c.get(&format!("/admin/refunds/{refund_no}"), admin).await?;
        status = r.body["status"].clone();
        if status != "PROCESSING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if status != "SUCCESS" {
        return Err(format!("refund notification: the refund is {status}"));
    }
    pass("refund notice", "refund SUCCESS, order REFUND".to_owned())?;

    let second = c
        .post(
            "/api/orders",
            Some(&token),
            &json!({"items": [{"sku": "tea", "quantity": 1}]}),
        )
        .await?;
    expect(&second, 201, "second order")?;
    let second_no = text(&second.body, "out_trade_no")?.to_owned();
    let closed = c
        .post(
            &format!("/api/orders/{second_no}/close"),
            Some(&token),
            &json!({}),
        )
        .await?;
    expect(&closed, 200, "close")?;
    if closed.body["status"] != "CLOSED" {
        return Err(format!("close: status {}", closed.body["status"]));
    }
    pass("close", format!("{second_no} CLOSED at WeChat and here"))?;

    let code = c
        .get(
            "/api/wxacode?scene=demo%3D1&page=pages/catalog/catalog",
            Some(&token),
        )
        .await?;
    expect(&code, 200, "wxacode")?;
    if !code.content_type.starts_with("image/") || code.bytes.len() < 8 {
        return Err(format!(
            "wxacode: {} ({} bytes)",
            code.content_type,
            code.bytes.len()
        ));
    }
    pass(
        "wxacode",
        format!("{}, {} bytes", code.content_type, code.bytes.len()),
    )?;

    let today = format_date(today_cst());
    expect(
        // Two days: yesterday's bill exists from 10:00 Beijing time, whatever the hour now.
        &c.post("/sim/clock/advance", admin, &json!({"seconds": 172_800}))
            .await?,
        200,
        "advancing the simulator's clock",
    )?;
    let report = c
        .get(&format!("/admin/reconciliation/{today}"), admin)
        .await?;
    expect(&report, 200, "reconciliation")?;
    let (matched, mismatched) = (
        report.body["matched"].as_u64().unwrap_or(0),
        report.body["mismatched"].as_u64().unwrap_or(u64::MAX),
    );
    if report.body["status"] != "complete" || mismatched != 0 || matched < 2 {
        return Err(format!("reconciliation: {}", report.body));
    }
    pass(
        "reconciliation",
        format!("bill of {today}: {matched} lines matched, 0 mismatched"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_walks_the_whole_flow_for_v2_and_v3() {
        let mut out = Vec::new();
        let summary = super::run(&mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(summary.all_passed(), "{text}");
        for version in ["[v2]", "[v3]"] {
            for step in [
                "login",
                "order",
                "pay",
                "notification",
                "query",
                "refund",
                "refund notice",
                "close",
                "wxacode",
                "reconciliation",
            ] {
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("{version} ok   {step} "))),
                    "{version} {step} missing:\n{text}"
                );
            }
        }
        assert_eq!(summary.passed, 20);
    }
}
