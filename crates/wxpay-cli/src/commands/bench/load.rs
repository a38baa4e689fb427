//! `wxpay bench`: simulated buyers through login -> order -> pay -> notification -> query.
//!
//! Each buyer loops over whole visits, one order each: a new user and `wx.login` code at the
//! simulator (`POST /sim/users`), `POST /api/login`, `POST /api/orders`, paying as the WeChat
//! client would (`POST /sim/pay`, after which the simulator notifies the server), then
//! `GET /api/orders/{no}` until the server reports `SUCCESS`.
//!
//! The RSA bound: one core's RSA-2048 signatures per second (timed here, before the processes
//! start), times the cores, divided by the signatures one v3 order costs both sides. Counted from
//! the code, a v3 order costs 4: the server signs the `Authorization` of the prepay call and the
//! `paySign`; the simulator signs its prepay answer and the notification (once per delivery).
//! `GET /api/orders/{no}` asks WeChat only about an order unpaid for `WXPAY_QUERY_AFTER_SECS`
//! (5 s), which a paid order never is here; the queries that did happen are counted from the
//! database after the run and add 2 signatures each (the request's `Authorization`, the answer).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wxpay::RsaPrivateKey;

use super::{
    Api, BenchDatabase, LatencySummary, LoadArgs, ProcStats, Report, Samples, Scrape, Scratch,
    bucket_quantile, http_client, load_average, progress, progress_done, round3, server_env,
    start_server, start_simulator,
};
use crate::failure::Failure;

/// The product every buyer orders.
const SKU: &str = "bench-coffee";
/// Its price.
const PRICE_FEN: u64 = 1800;
/// Signatures of one v3 order, counted from the code (see the module documentation).
pub const V3_SERVER_SIGNATURES: u32 = 2;
/// The simulator's share.
pub const V3_SIMULATOR_SIGNATURES: u32 = 2;
/// How long a buyer waits for its order to turn `SUCCESS` before counting an error.
const PAID_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoints whose latency is measured, in the order of a visit.
const ENDPOINTS: [&str; 7] = [
    "sim_users",
    "login",
    "create_order",
    "sim_pay",
    "get_order",
    "paid_visible",
    "visit",
];

/// One buyer's measurements.
#[derive(Debug, Default)]
struct BuyerResult {
    samples: [Samples; 7],
    orders: u64,
    polls: u64,
    first_error: Option<String>,
}

struct Shared {
    http: reqwest::Client,
    sim: String,
    server: String,
    /// The mini programs the visits go to in turn (`None`: the only one, not named).
    apps: Vec<Option<String>>,
    visits: AtomicU64,
    measure_from: Instant,
    measure_until: Instant,
    stop: AtomicBool,
    completed: AtomicU64,
}

/// RSA-2048 rates of one core: signatures and verifications per second.
#[derive(Clone, Copy, Debug)]
pub struct RsaRates {
    /// SHA256withRSA signatures per second, one thread.
    pub sign_per_sec: f64,
    /// Verifications per second, one thread.
    pub verify_per_sec: f64,
}

/// Times RSA-2048 with the library's own key type on this thread: signatures for about
/// `sign_for`, verifications for about a third of it.
///
/// # Errors
/// [`Failure::Runtime`] if a key cannot be made or an operation fails.
pub fn measure_rsa(sign_for: Duration) -> Result<RsaRates, Failure> {
    let key = RsaPrivateKey::generate()
        .map_err(|e| Failure::runtime(format!("generating an RSA key: {e}")))?;
    let message = b"POST\n/v3/pay/transactions/jsapi\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{\"appid\":\"wxd678efh567hg6787\",\"mchid\":\"1230000109\",\"description\":\"Image\",\"out_trade_no\":\"1217752501201407033233368018\",\"amount\":{\"total\":100,\"currency\":\"CNY\"}}\n";
    let sign_err = |e: wxpay::CryptoError| Failure::runtime(format!("RSA signing: {e}"));
    // A few operations first, so that the timed ones run on warm caches.
    let mut signature = String::new();
    for _ in 0..5 {
        signature = key.sign_sha256_base64(message).map_err(sign_err)?;
    }
    let started = Instant::now();
    let mut signed = 0u64;
    while started.elapsed() < sign_for {
        signature = key.sign_sha256_base64(message).map_err(sign_err)?;
        signed += 1;
    }
    let sign_per_sec = signed as f64 / started.elapsed().as_secs_f64();
    let public = key.public_key();
    let started = Instant::now();
    let mut verified = 0u64;
    while started.elapsed() < sign_for / 3 {
        public
            .verify_sha256_base64(message, &signature)
            .map_err(|e| Failure::runtime(format!("RSA verification: {e}")))?;
        verified += 1;
    }
    let verify_per_sec = verified as f64 / started.elapsed().as_secs_f64();
    Ok(RsaRates {
        sign_per_sec,
        verify_per_sec,
    })
}

/// Runs the buyers' benchmark and returns its report.
///
/// # Errors
/// [`Failure`] when a process does not start, the set-up fails, or no order completes.
pub async fn run(args: &LoadArgs, err: &mut dyn Write) -> Result<Report, Failure> {
    let common = &args.common;
    let load_start = load_average();
    let scratch = Scratch::new(common.keep)?;
    // Measured before the processes exist, so that nothing else of this run competes.
    let rsa = tokio::task::block_in_place(|| measure_rsa(Duration::from_secs(1)))?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (sim, sim_url) =
        tokio::task::block_in_place(|| start_simulator(&scratch, &common.log_level))?;
    let database = BenchDatabase::create(common.database.as_deref(), &scratch).await?;
    let result = run_with(args, err, &scratch, &sim, &sim_url, &database, rsa, cores).await;
    drop(sim);
    database.drop_created().await;
    let mut report = result?;
    report.json["load_average_start"] = json!(load_start);
    report.json["load_average_end"] = json!(load_average());
    report.text.push_str(&format!(
        "\nload average (1 min): {} at start, {} at end",
        load_start.map_or("?".into(), |l| format!("{l:.2}")),
        load_average().map_or("?".into(), |l| format!("{l:.2}"))
    ));
    if common.keep {
        report
            .text
            .push_str(&format!("\nkept: {}", scratch.path().display()));
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_with(
    args: &LoadArgs,
    err: &mut dyn Write,
    scratch: &Scratch,
    sim: &super::ChildProcess,
    sim_url: &str,
    database: &BenchDatabase,
    rsa: RsaRates,
    cores: usize,
) -> Result<Report, Failure> {
    let common = &args.common;
    let buyers = args.buyers as usize;
    let http = http_client(buyers * 2)?;
    let admin_token = wxpay::nonce::random_string(32);
    let env = server_env(scratch, sim_url, &database.url, common, &admin_token);
    let (server, base, startup) = start_server(scratch, &env, &common.log_level, &http).await?;

    let product = http
        .put(format!("{base}/admin/products/{SKU}"))
        .bearer_auth(&admin_token)
        .json(
            &json!({"name": "Bench coffee", "description": "wxpay bench", "price_fen": PRICE_FEN}),
        )
        .send()
        .await
        .map_err(|e| Failure::runtime(format!("PUT /admin/products: {e}")))?;
    if !product.status().is_success() {
        return Err(Failure::runtime(format!(
            "PUT /admin/products answered {}: {}",
            product.status(),
            product.text().await.unwrap_or_default()
        )));
    }

    let registry = register_merchants(
        &http,
        &base,
        sim_url,
        &admin_token,
        args.merchants,
        common.api,
        &server,
    )
    .await?;

    let started = Instant::now();
    let shared = Arc::new(Shared {
        http: http.clone(),
        sim: sim_url.to_owned(),
        server: base.clone(),
        apps: registry.apps.clone(),
        visits: AtomicU64::new(0),
        measure_from: started + args.warmup,
        measure_until: started + args.warmup + common.duration,
        stop: AtomicBool::new(false),
        completed: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..buyers)
        .map(|_| tokio::spawn(buyer(shared.clone())))
        .collect();

    let total = args.warmup + common.duration;
    let mut before = None;
    while Instant::now() < shared.measure_until {
        if before.is_none() && Instant::now() >= shared.measure_from {
            before = Some(Snapshot::take(&http, &base, &server, sim).await?);
        }
        progress(
            err,
            started,
            total,
            shared.completed.load(Ordering::Relaxed),
            "orders",
        );
        let next = (Instant::now() + Duration::from_millis(250)).min(if before.is_none() {
            shared.measure_from
        } else {
            shared.measure_until
        });
        tokio::time::sleep_until(next.into()).await;
    }
    let before = match before {
        Some(b) => b,
        None => Snapshot::take(&http, &base, &server, sim).await?,
    };
    let after = Snapshot::take(&http, &base, &server, sim).await?;
    shared.stop.store(true, Ordering::Relaxed);
    progress(
        err,
        started,
        total,
        shared.completed.load(Ordering::Relaxed),
        "orders",
    );
    progress_done(err);

    let mut merged = BuyerResult::default();
    for task in tasks {
        let r = match tokio::time::timeout(PAID_TIMEOUT + Duration::from_secs(30), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Failure::runtime(format!("a buyer task failed: {e}"))),
            Err(_) => return Err(Failure::runtime("a buyer did not finish its last visit")),
        };
        for (m, s) in merged.samples.iter_mut().zip(r.samples) {
            m.merge(s);
        }
        merged.orders += r.orders;
        merged.polls += r.polls;
        if merged.first_error.is_none() {
            merged.first_error = r.first_error;
        }
    }
    let peak_rss_bytes = server.stats().map_or(0, |s| s.peak_rss_bytes);
    drop(server);
    let queries = count_queries(database).await;

    let window = (after.at - before.at).as_secs_f64();
    let orders = merged.orders;
    if orders == 0 {
        return Err(Failure::runtime(format!(
            "no order completed in {window:.1} s{}",
            merged
                .first_error
                .as_ref()
                .map_or(String::new(), |e| format!("; first error: {e}"))
        )));
    }
    let orders_per_sec = orders as f64 / window;
    // `route="/notify/{mchid}/v3/pay"` (the merchant's own URL, which the orders give WeChat)
    // and the first merchant's `route="/notify/v3/pay"`.
    let notify_route = format!("/{}/pay\"", common.api.as_str());
    let acked = |s: &Scrape| {
        s.sum(
            "wxpay_notifications_total",
            &[notify_route.as_str(), "result=\"acknowledged\""],
        )
    };
    let notifications_per_sec = (acked(&after.scrape) - acked(&before.scrape)) / window;
    let histogram = "wxpay_http_request_duration_seconds";
    let notify_buckets = |s: &Scrape| s.buckets(histogram, &[notify_route.as_str()]);
    let notify_p50 = bucket_quantile(
        &notify_buckets(&before.scrape),
        &notify_buckets(&after.scrape),
        0.5,
    );
    let notify_p99 = bucket_quantile(
        &notify_buckets(&before.scrape),
        &notify_buckets(&after.scrape),
        0.99,
    );

    let per_order = |a: f64, b: f64| (b - a) / orders as f64;
    let cpu_server = per_order(before.server.cpu_secs, after.server.cpu_secs);
    let cpu_sim = per_order(before.sim.cpu_secs, after.sim.cpu_secs);
    let cpu_generator = per_order(before.own.cpu_secs, after.own.cpu_secs);

    // Signatures per order, counted from the code, plus what the observed WeChat queries added.
    let (signatures, bound, bound_with_verify, ratio) = match common.api {
        Api::V3 => {
            let paid = queries.paid.max(1) as f64;
            let extra = 2.0 * queries.queries as f64 / paid;
            let signatures = f64::from(V3_SERVER_SIGNATURES + V3_SIMULATOR_SIGNATURES) + extra;
            let bound = rsa.sign_per_sec * cores as f64 / signatures;
            // Each order also costs 4 verifications: the simulator checks the Authorization and
            // the paySign, the server the prepay answer and the notification.
            let seconds = signatures / rsa.sign_per_sec + (4.0 + extra) / rsa.verify_per_sec;
            let with_verify = cores as f64 / seconds;
            (
                Some(signatures),
                Some(bound),
                Some(with_verify),
                Some(orders_per_sec / bound),
            )
        }
        Api::V2 => (None, None, None, None),
    };

    let summaries: Vec<(&str, LatencySummary)> = ENDPOINTS
        .iter()
        .zip(merged.samples.iter_mut())
        .map(|(name, s)| (*name, s.summary()))
        .collect();
    // The server's own endpoints: "every endpoint" of the p99 target.
    let server_endpoints = ["login", "create_order", "get_order"];
    let worst = |f: fn(&LatencySummary) -> f64| {
        summaries
            .iter()
            .filter(|(n, _)| server_endpoints.contains(n))
            .map(|(_, s)| f(s))
            .fold(0.0, f64::max)
    };
    let p50_ms = worst(|s| s.p50_ms);
    let p99_ms = worst(|s| s.p99_ms);
    let max_ms = worst(|s| s.max_ms);
    let errors: u64 = summaries.iter().map(|(_, s)| s.errors).sum();

    let mut endpoints = serde_json::Map::new();
    for (name, s) in &summaries {
        endpoints.insert((*name).to_owned(), s.to_json());
    }
    let json = json!({
        "benchmark": "buyers",
        "api": common.api.as_str(),
        "database": database.backend,
        "buyers": buyers,
        "duration_secs": round3(window),
        "orders": orders,
        "orders_per_sec": round3(orders_per_sec),
        "notifications_per_sec": round3(notifications_per_sec),
        "polls_per_order": round3(merged.polls as f64 / merged.samples[6].count().max(1) as f64),
        "p50_ms": round3(p50_ms),
        "p99_ms": round3(p99_ms),
        "max_ms": round3(max_ms),
        "endpoints": endpoints,
        "notify_server_p50_ms": notify_p50.map(round3),
        "notify_server_p99_ms": notify_p99.map(round3),
        "errors": errors,
        "first_error": merged.first_error,
        "cores": cores,
        "rsa_sign_per_sec_per_core": round3(rsa.sign_per_sec),
        "rsa_verify_per_sec_per_core": round3(rsa.verify_per_sec),
        "signatures_per_order": signatures.map(round3),
        "server_signatures_per_order": (common.api == Api::V3).then_some(V3_SERVER_SIGNATURES),
        "simulator_signatures_per_order": (common.api == Api::V3).then_some(V3_SIMULATOR_SIGNATURES),
        "wechat_queries": queries.queries,
        "rsa_bound_orders_per_sec": bound.map(round3),
        "rsa_bound_with_verify_orders_per_sec": bound_with_verify.map(round3),
        "ratio": ratio.map(round3),
        "cpu_secs_per_order_server": cpu_server,
        "cpu_secs_per_order_simulator": cpu_sim,
        "cpu_secs_per_order_generator": cpu_generator,
        "peak_rss_bytes": peak_rss_bytes,
        "startup_ms": round3(startup.as_secs_f64() * 1000.0),
        "merchants": args.merchants,
        "mini_programs": registry.apps.len(),
        "rss_before_registration_bytes": registry.rss_before,
        "rss_after_registration_bytes": registry.rss_after,
        "memory_per_merchant_bytes": registry.per_merchant(),
    });

    let mut text = format!(
        "wxpay bench: API {}, {}, {buyers} buyers, {window:.1} s measured after {:.1} s warm-up{}\n\
         orders:         {orders} ({orders_per_sec:.1}/s)\n\
         notifications:  {notifications_per_sec:.1}/s acknowledged (server-side p50 {} ms, p99 {} ms)\n",
        common.api.as_str(),
        database.backend,
        args.warmup.as_secs_f64(),
        if args.merchants > 0 {
            format!(
                ", {} mini programs of {} merchants in turn",
                registry.apps.len(),
                args.merchants + 1
            )
        } else {
            String::new()
        },
        notify_p50.map_or("-".into(), |v| format!("{v:.2}")),
        notify_p99.map_or("-".into(), |v| format!("{v:.2}")),
    );
    text.push_str("latency (client side)   count      p50 ms    p99 ms    max ms   errors\n");
    for (name, s) in &summaries {
        text.push_str(&format!(
            "  {name:<20} {:>8}  {:>9.2} {:>9.2} {:>9.2} {:>8}\n",
            s.count, s.p50_ms, s.p99_ms, s.max_ms, s.errors
        ));
    }
    text.push_str(&format!(
        "CPU per order:  server {:.3} ms, simulator {:.3} ms, load generator {:.3} ms\n\
         server:         peak RSS {:.1} MiB, start-up {:.1} ms (spawn to /healthz, migrations included)\n",
        cpu_server * 1000.0,
        cpu_sim * 1000.0,
        cpu_generator * 1000.0,
        peak_rss_bytes as f64 / (1024.0 * 1024.0),
        startup.as_secs_f64() * 1000.0,
    ));
    if let Some(per) = registry.per_merchant() {
        text.push_str(&format!(
            "registry:       {} merchants registered: server RSS {:.1} MiB before, {:.1} MiB after ({:.0} KiB per merchant)\n",
            args.merchants,
            registry.rss_before as f64 / (1024.0 * 1024.0),
            registry.rss_after as f64 / (1024.0 * 1024.0),
            per as f64 / 1024.0,
        ));
    }
    text.push_str(&format!(
        "RSA-2048:       {:.0} signatures/s and {:.0} verifications/s per core, {cores} cores\n",
        rsa.sign_per_sec, rsa.verify_per_sec
    ));
    match (signatures, bound, bound_with_verify, ratio) {
        (Some(sig), Some(b), Some(bv), Some(r)) => text.push_str(&format!(
            "RSA bound:      {b:.1} orders/s ({sig:.2} signatures per order: server {V3_SERVER_SIGNATURES}, simulator {V3_SIMULATOR_SIGNATURES}, WeChat queries {}); {bv:.1}/s counting verifications\n\
             ratio:          {:.1}% of the RSA bound",
            queries.queries,
            r * 100.0
        )),
        _ => text.push_str("RSA bound:      none (API v2 signs with MD5/HMAC-SHA256)"),
    }
    if errors > 0 {
        text.push_str(&format!(
            "\nerrors:         {errors}; first: {}",
            merged.first_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(Report { text, json })
}

/// The readings at one end of the measured window.
struct Snapshot {
    at: Instant,
    server: ProcStats,
    sim: ProcStats,
    own: ProcStats,
    scrape: Scrape,
}

impl Snapshot {
    async fn take(
        http: &reqwest::Client,
        base: &str,
        server: &super::ChildProcess,
        sim: &super::ChildProcess,
    ) -> Result<Self, Failure> {
        let at = Instant::now();
        let server_stats = server.stats()?;
        let sim_stats = sim.stats()?;
        let own = ProcStats::own()?;
        let scrape = Scrape::fetch(http, base).await?;
        Ok(Snapshot {
            at,
            server: server_stats,
            sim: sim_stats,
            own,
            scrape,
        })
    }
}

/// Paid orders and WeChat queries of the whole run, read from the database after it.
#[derive(Debug, Default)]
struct QueryCount {
    paid: u64,
    queries: u64,
}

async fn count_queries(database: &BenchDatabase) -> QueryCount {
    let Ok(store) = wxpay_server::store::Store::connect(
        &database.url,
        &wxpay_server::store::StoreOptions {
            max_connections: Some(1),
            ..Default::default()
        },
    )
    .await
    else {
        return QueryCount::default();
    };
    let count = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .map_or(0, |n| u64::try_from(n).unwrap_or(0))
        }
    };
    let result = QueryCount {
        paid: count("SELECT COUNT(*) FROM orders WHERE status = 'SUCCESS'").await,
        queries: count("SELECT COUNT(*) FROM order_events WHERE kind IN ('query', 'query_failed')")
            .await,
    };
    store.close().await;
    result
}

async fn buyer(shared: Arc<Shared>) -> BuyerResult {
    let mut result = BuyerResult::default();
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < shared.measure_until {
        if let Err(e) = visit(&shared, &mut result).await {
            if result.first_error.is_none() {
                result.first_error = Some(e);
            }
            // A failing server must not be hammered in a tight loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    result
}

/// What a call returns: the JSON body, or why it failed.
async fn call(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))
}

fn text_field(v: &Value, field: &str) -> Result<String, String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {field:?} in {v}"))
}

/// One visit: a new buyer, login, order, pay, and polling until the order is paid.
async fn visit(shared: &Shared, r: &mut BuyerResult) -> Result<(), String> {
    let visit_started = Instant::now();
    let in_window = |t: Instant| t >= shared.measure_from && t <= shared.measure_until;
    let measured = in_window(visit_started);
    let http = &shared.http;

    // Each step: time it, record it under its endpoint when the visit is measured.
    macro_rules! step {
        ($index:expr, $request:expr) => {{
            let t = Instant::now();
            match call($request).await {
                Ok(v) => {
                    if measured {
                        r.samples[$index].record(t.elapsed());
                    }
                    v
                }
                Err(e) => {
                    r.samples[$index].errors += 1;
                    return Err(format!("{}: {e}", ENDPOINTS[$index]));
                }
            }
        }};
    }

    let turn = shared.visits.fetch_add(1, Ordering::Relaxed);
    let appid = &shared.apps[usize::try_from(turn).unwrap_or(0) % shared.apps.len()];
    let user = step!(
        0,
        http.post(format!("{}/sim/users", shared.sim)).json(
            &appid
                .as_ref()
                .map_or_else(|| json!({}), |a| json!({ "appid": a }))
        )
    );
    let openid = text_field(&user, "openid")?;
    let code = text_field(&user, "code")?;
    let login = step!(
        1,
        http.post(format!("{}/api/login", shared.server))
            .json(&json!({ "code": code, "appid": appid }))
    );
    let token = text_field(&login, "token")?;
    let order = step!(
        2,
        http.post(format!("{}/api/orders", shared.server))
            .bearer_auth(&token)
            .json(&json!({"items": [{"sku": SKU, "quantity": 1}]}))
    );
    let out_trade_no = text_field(&order, "out_trade_no")?;
    let mut payment = order["payment"].clone();
    if !payment.is_object() {
        return Err(format!("create_order: no payment object in {order}"));
    }
    payment["openid"] = json!(openid);
    let paid = step!(
        3,
        http.post(format!("{}/sim/pay", shared.sim)).json(&payment)
    );
    if paid["errMsg"] != "requestPayment:ok" {
        return Err(format!("sim_pay: {paid}"));
    }
    let paid_answered = Instant::now();
    let mut wait = Duration::from_millis(1);
    loop {
        tokio::time::sleep(wait).await;
        let o = step!(
            4,
            http.get(format!("{}/api/orders/{out_trade_no}", shared.server))
                .bearer_auth(&token)
        );
        r.polls += u64::from(measured);
        if o["status"] == "SUCCESS" {
            break;
        }
        if paid_answered.elapsed() > PAID_TIMEOUT {
            r.samples[5].errors += 1;
            return Err(format!(
                "order {out_trade_no} not SUCCESS {PAID_TIMEOUT:?} after paying: {}",
                o["status"]
            ));
        }
        wait = (wait * 2).min(Duration::from_millis(20));
    }
    let done = Instant::now();
    if measured {
        r.samples[5].record(done - paid_answered);
        r.samples[6].record(done - visit_started);
    }
    if in_window(done) {
        r.orders += 1;
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The mini programs of a run and the server's memory around their registration.
struct Registered {
    apps: Vec<Option<String>>,
    rss_before: u64,
    rss_after: u64,
}

impl Registered {
    fn per_merchant(&self) -> Option<u64> {
        let merchants = u64::try_from(self.apps.len().saturating_sub(1)).ok()?;
        (merchants > 0).then(|| self.rss_after.saturating_sub(self.rss_before) / merchants)
    }
}

/// Makes `n` merchants at the simulator (each with its own keys and mini program), registers
/// them and their mini programs with the server through the back office, and waits until the
/// server serves the last one. The server's resident memory is read before and after.
async fn register_merchants(
    http: &reqwest::Client,
    base: &str,
    sim: &str,
    admin_token: &str,
    n: u32,
    api: Api,
    server: &super::ChildProcess,
) -> Result<Registered, Failure> {
    let rss_before = server.stats()?.rss_bytes;
    if n == 0 {
        // One mini program: logins need not name it.
        return Ok(Registered {
            apps: vec![None],
            rss_before,
            rss_after: rss_before,
        });
    }
    let first = call(http.get(format!("{sim}/sim/merchant")))
        .await
        .map_err(|e| Failure::runtime(format!("GET /sim/merchant: {e}")))?;
    let mut apps = vec![Some(text_field(&first, "appid").map_err(Failure::runtime)?)];
    let fail = |what: &str, e: &dyn std::fmt::Display| Failure::runtime(format!("{what}: {e}"));
    for _ in 0..n {
        let made = call(http.post(format!("{sim}/sim/merchants")).json(&json!({})))
            .await
            .map_err(|e| fail("POST /sim/merchants", &e))?;
        let dir = std::path::PathBuf::from(
            text_field(&made, "merchant_dir").map_err(|e| fail("POST /sim/merchants", &e))?,
        );
        let file: Value = std::fs::read_to_string(dir.join(wxpay_sim::merchant::MERCHANT_JSON))
            .map_err(|e| fail("merchant.json", &e))
            .and_then(|t| serde_json::from_str(&t).map_err(|e| fail("merchant.json", &e)))?;
        let read = |field: &str| -> Option<String> {
            file[field]
                .as_str()
                .and_then(|name| std::fs::read_to_string(dir.join(name)).ok())
        };
        let mchid = text_field(&made, "mchid").map_err(|e| fail("POST /sim/merchants", &e))?;
        let mut merchant = json!({
            "mchid": mchid,
            "name": format!("bench {mchid}"),
            "kind": "direct",
            // Every merchant uses the run's API (`--api`).
            "api_version": api.as_str(),
            "api_v2_key": file["api_v2_key"],
            "api_v3_key": file["api_v3_key"],
            "merchant_serial": file["merchant_serial"],
            "apiclient_key": read("apiclient_key"),
            "apiclient_cert": read("apiclient_cert"),
            "wechatpay_public_key_id": file["wechatpay_public_key_id"],
            "wechatpay_public_key": read("wechatpay_public_key"),
        });
        if let Some(cert) = read("platform_cert") {
            merchant["platform_cert"] = json!(cert);
        }
        let admin = |path: &str, body: &Value| {
            http.post(format!("{base}{path}"))
                .bearer_auth(admin_token)
                .json(body)
        };
        call(admin("/admin/merchants", &merchant))
            .await
            .map_err(|e| fail("POST /admin/merchants", &e))?;
        let appid = text_field(&file, "appid").map_err(|e| fail("merchant.json", &e))?;
        call(admin(
            "/admin/apps",
            &json!({"appid": appid, "name": format!("bench {appid}"), "app_secret": file["app_secret"], "mchid": mchid}),
        ))
        .await
        .map_err(|e| fail("POST /admin/apps", &e))?;
        apps.push(Some(appid));
    }
    // Served once a login of the last mini program goes through.
    if let Some(Some(last)) = apps.last() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let user = call(
                http.post(format!("{sim}/sim/users"))
                    .json(&json!({ "appid": last })),
            )
            .await
            .map_err(|e| fail("POST /sim/users", &e))?;
            let login = call(
                http.post(format!("{base}/api/login"))
                    .json(&json!({ "code": user["code"], "appid": last })),
            )
            .await;
            if login.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Failure::runtime(format!(
                    "the server does not serve the registered mini programs after 60 s: {}",
                    login.err().unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Registered {
        apps,
        rss_before,
        rss_after: server.stats()?.rss_bytes,
    })
}
