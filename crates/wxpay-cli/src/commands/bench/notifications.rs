//! `wxpay bench notifications`: a flood of valid signed payment notifications, duplicates
//! included, at the server's `/notify/v3/pay` (or `/notify/v2/pay`).
//!
//! The benchmark plays WeChat Pay: it holds the simulator's keys (the WeChat Pay public-key key
//! from `simulator-secrets.json`, the merchant's APIv3 and v2 keys from `merchant.json`). Before
//! the flood it commits unpaid orders through the server's own store, exactly as
//! `POST /api/orders` commits them, and signs one notification per order (signing is kept out of
//! the measured time: it is WeChat's cost, not the server's). During the flood each delivery is,
//! with the `--duplicates` probability, a repeat of one already sent (possibly still in flight:
//! concurrent duplicates), otherwise the next new one. Afterwards the database must show each
//! acknowledged notification applied exactly once: one paid order, one timeline event, one
//! webhook in the outbox.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use time::OffsetDateTime;
use wxpay::Fen;
use wxpay::v3::aead::ApiV3Key;
use wxpay_server::store::{ApiVersion, NewOrder, OrderItem, Store, StoreOptions};

use super::{
    Api, BenchDatabase, NotificationArgs, ProcStats, Report, Samples, Scratch, http_client,
    load_average, progress, progress_done, round3, server_env, start_server, start_simulator,
};
use crate::failure::Failure;

const AMOUNT_FEN: u64 = 1800;

/// One order and its signed notification.
pub(super) struct Prepared {
    pub(super) headers: HeaderMap,
    pub(super) body: bytes::Bytes,
}

/// Runs the flood and returns its report.
///
/// # Errors
/// [`Failure`] when a process does not start, the set-up fails, or nothing is acknowledged.
pub async fn run(args: &NotificationArgs, err: &mut dyn Write) -> Result<Report, Failure> {
    let common = &args.common;
    let load_start = load_average();
    let scratch = Scratch::new(common.keep)?;
    let (sim, sim_url) =
        tokio::task::block_in_place(|| start_simulator(&scratch, &common.log_level))?;
    let database = BenchDatabase::create(common.database.as_deref(), &scratch).await?;
    let result = run_with(args, err, &scratch, &sim_url, &database).await;
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

async fn run_with(
    args: &NotificationArgs,
    err: &mut dyn Write,
    scratch: &Scratch,
    sim_url: &str,
    database: &BenchDatabase,
) -> Result<Report, Failure> {
    let common = &args.common;
    let setup = {
        let dir = scratch.path().join("sim");
        tokio::task::block_in_place(|| wxpay_sim::merchant::load_or_create(&dir))
            .map_err(|e| Failure::runtime(format!("the simulator's keys: {e}")))?
    };
    let api_version = match common.api {
        Api::V3 => ApiVersion::V3,
        Api::V2 => ApiVersion::V2,
    };

    // The orders, committed before the server starts (the migrations run here, then).
    let setup_started = Instant::now();
    let orders = insert_orders(database, &setup.credentials, api_version, args.orders).await?;
    let prepared = Arc::new(tokio::task::block_in_place(|| {
        prepare(&setup, common.api, &orders)
    })?);
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let concurrency = args.concurrency as usize;
    let http = http_client(concurrency)?;
    let admin_token = wxpay::nonce::random_string(32);
    let env = server_env(scratch, sim_url, &database.url, common, &admin_token);
    let (server, base, startup) = start_server(scratch, &env, &common.log_level, &http).await?;
    let url = format!("{base}/notify/{}/pay", common.api.as_str());

    let flood = Arc::new(Flood {
        http,
        url,
        api: common.api,
        prepared,
        next: AtomicUsize::new(0),
        acked: (0..orders.len()).map(|_| AtomicBool::new(false)).collect(),
        sent: AtomicU64::new(0),
        duplicates: args.duplicates,
        until: Instant::now() + common.duration,
    });
    let server_before = server.stats()?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| tokio::spawn(sender(flood.clone(), i as u64)))
        .collect();
    while Instant::now() < flood.until && flood.next.load(Ordering::Relaxed) < orders.len() {
        progress(
            err,
            started,
            common.duration,
            flood.sent.load(Ordering::Relaxed),
            "notifications",
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut samples = Samples::default();
    let mut refused = 0u64;
    let mut duplicates_sent = 0u64;
    let mut first_refusal = None;
    for task in tasks {
        let r = task
            .await
            .map_err(|e| Failure::runtime(format!("a sender failed: {e}")))?;
        samples.merge(r.samples);
        refused += r.refused;
        duplicates_sent += r.duplicates;
        if first_refusal.is_none() {
            first_refusal = r.first_refusal;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress(
        err,
        started,
        common.duration,
        flood.sent.load(Ordering::Relaxed),
        "notifications",
    );
    progress_done(err);
    let server_after = server.stats()?;
    drop(server);

    let sent = flood.sent.load(Ordering::Relaxed);
    let unique_sent = flood.next.load(Ordering::Relaxed).min(orders.len());
    let unique_acked = flood
        .acked
        .iter()
        .filter(|a| a.load(Ordering::Relaxed))
        .count() as u64;
    if sent == 0 || unique_acked == 0 {
        return Err(Failure::runtime(format!(
            "no notification was acknowledged{}",
            first_refusal.map_or(String::new(), |e| format!("; first refusal: {e}"))
        )));
    }
    let applied = count_applied(database).await?;
    let exactly_once = applied.paid == unique_acked
        && applied.events == unique_acked
        && applied.dedupe_rows == unique_acked
        && applied.webhooks == unique_acked;
    let summary = samples.summary();
    let per_sec = sent as f64 / elapsed;
    let cpu_per_notification = (server_after.cpu_secs - server_before.cpu_secs) / sent as f64;
    let exhausted = unique_sent >= orders.len();

    let json = json!({
        "benchmark": "notifications",
        "api": common.api.as_str(),
        "database": database.backend,
        "concurrency": concurrency,
        "duration_secs": round3(elapsed),
        "orders_prepared": orders.len(),
        "setup_secs": round3(setup_secs),
        "pool_exhausted": exhausted,
        "notifications": sent,
        "duplicates_sent": duplicates_sent,
        "unique_notifications": unique_sent,
        "refused": refused,
        "first_refusal": first_refusal,
        "notifications_per_sec": round3(per_sec),
        "p50_ms": round3(summary.p50_ms),
        "p99_ms": round3(summary.p99_ms),
        "max_ms": round3(summary.max_ms),
        "paid_orders": applied.paid,
        "notification_events": applied.events,
        "dedupe_rows": applied.dedupe_rows,
        "webhooks": applied.webhooks,
        "exactly_once": exactly_once,
        "cpu_secs_per_notification_server": cpu_per_notification,
        "peak_rss_bytes": server_after.peak_rss_bytes,
        "startup_ms": round3(startup.as_secs_f64() * 1000.0),
        "generator_cpu_secs": ProcStats::own().map_or(0.0, |s| s.cpu_secs),
    });
    let text = format!(
        "wxpay bench notifications: API {}, {}, {concurrency} senders, {elapsed:.1} s{}\n\
         notifications:  {sent} ({per_sec:.1}/s), of which {duplicates_sent} duplicates; {refused} refused\n\
         latency:        p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
         applied:        {} orders paid, {} events, {} dedupe rows, {} webhooks for {unique_acked} distinct notifications: {}\n\
         server:         {:.3} ms CPU per notification, peak RSS {:.1} MiB\n\
         set-up:         {} orders committed and their notifications signed in {setup_secs:.1} s",
        common.api.as_str(),
        database.backend,
        if exhausted {
            " (all prepared orders used: raise --orders)"
        } else {
            ""
        },
        summary.p50_ms,
        summary.p99_ms,
        summary.max_ms,
        applied.paid,
        applied.events,
        applied.dedupe_rows,
        applied.webhooks,
        if exactly_once {
            "exactly once"
        } else {
            "MISMATCH"
        },
        cpu_per_notification * 1000.0,
        server_after.peak_rss_bytes as f64 / (1024.0 * 1024.0),
        orders.len(),
    );
    Ok(Report { text, json })
}

/// Commits `count` unpaid orders (out_trade_no, openid) through the server's store.
pub(super) async fn insert_orders(
    database: &BenchDatabase,
    merchant: &wxpay_sim::MerchantCredentials,
    api_version: ApiVersion,
    count: u32,
) -> Result<Vec<(String, String)>, Failure> {
    let store = Store::connect(&database.url, &StoreOptions::default())
        .await
        .map_err(|e| Failure::runtime(format!("the bench database: {e}")))?;
    let workers = 8u32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        let appid = merchant.appid.clone();
        let mchid = merchant.mchid.clone();
        let share = count / workers + u32::from(w < count % workers);
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::with_capacity(share as usize);
            for _ in 0..share {
                let openid = format!("o{}", wxpay::nonce::random_string(27));
                let order = NewOrder {
                    out_trade_no: wxpay_server::core::orders::new_out_trade_no(),
                    openid: openid.clone(),
                    appid: appid.clone(),
                    mchid: mchid.clone(),
                    sub_mchid: None,
                    api_version,
                    source: "api",
                    description: "Bench coffee".to_owned(),
                    items: vec![OrderItem {
                        sku: "bench-coffee".to_owned(),
                        name: "Bench coffee".to_owned(),
                        quantity: 1,
                        unit_price_fen: AMOUNT_FEN,
                    }],
                    amount_fen: AMOUNT_FEN,
                    client_ip: "127.0.0.1".to_owned(),
                    expires_at: wxpay_server::store::now_ms() + 30 * 60 * 1000,
                };
                store.insert_order(&order).await?;
                made.push((order.out_trade_no, openid));
            }
            Ok::<_, wxpay_server::store::StoreError>(made)
        }));
    }
    let mut orders = Vec::with_capacity(count as usize);
    for t in tasks {
        let made = t
            .await
            .map_err(|e| Failure::runtime(format!("inserting orders: {e}")))?
            .map_err(|e| Failure::runtime(format!("inserting orders: {e}")))?;
        orders.extend(made);
    }
    store.close().await;
    Ok(orders)
}

/// Signs one notification per order, on every core.
pub(super) fn prepare(
    setup: &wxpay_sim::merchant::MerchantSetup,
    api: Api,
    orders: &[(String, String)],
) -> Result<Vec<Prepared>, Failure> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunk = orders.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = orders
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, (no, openid))| match api {
                            Api::V3 => sign_v3(setup, c * chunk + i, no, openid),
                            Api::V2 => sign_v2(setup, c * chunk + i, no, openid),
                        })
                        .collect::<Result<Vec<_>, Failure>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(orders.len());
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| Failure::runtime("a signing thread panicked"))??,
            );
        }
        Ok(all)
    })
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Failure> {
    Ok((
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| Failure::runtime(format!("header {name}: {e}")))?,
        HeaderValue::from_str(value)
            .map_err(|e| Failure::runtime(format!("header {name}: {e}")))?,
    ))
}

fn sign_v3(
    setup: &wxpay_sim::merchant::MerchantSetup,
    index: usize,
    out_trade_no: &str,
    openid: &str,
) -> Result<Prepared, Failure> {
    let m = &setup.credentials;
    let now = wxpay::time::beijing(OffsetDateTime::now_utc());
    let at = wxpay::time::format_v3(now);
    let resource = json!({
        "appid": m.appid,
        "mchid": m.mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": format!("42000{:023}", index),
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": at,
        "payer": {"openid": openid},
        "amount": {"total": AMOUNT_FEN, "payer_total": AMOUNT_FEN, "currency": "CNY", "payer_currency": "CNY"},
    });
    let key = ApiV3Key::new(&m.api_v3_key).map_err(|e| Failure::runtime(e.to_string()))?;
    let signed = wxpay::v3::notify::sign_notification(
        &wxpay::v3::notify::NotificationSigner {
            api_v3_key: &key,
            signing_key: &setup.keys.public_key_key,
            serial: &m.wechatpay_public_key_id,
        },
        &wxpay::v3::notify::NotificationEvent {
            id: &format!("EV-{:019}", index),
            create_time: now,
            event_type: "TRANSACTION.SUCCESS",
            summary: "支付成功",
            original_type: "transaction",
            resource_json: resource.to_string().as_bytes(),
        },
        now.unix_timestamp(),
    )
    .map_err(|e| Failure::runtime(format!("signing a notification: {e}")))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &signed.headers {
        let (n, v) = header(name, value)?;
        headers.insert(n, v);
    }
    Ok(Prepared {
        headers,
        body: bytes::Bytes::from(signed.body),
    })
}

fn sign_v2(
    setup: &wxpay_sim::merchant::MerchantSetup,
    index: usize,
    out_trade_no: &str,
    openid: &str,
) -> Result<Prepared, Failure> {
    let m = &setup.credentials;
    let n = wxpay::v2::notify::PayNotification {
        appid: m.appid.clone(),
        mch_id: m.mchid.clone(),
        nonce_str: wxpay::nonce::nonce(),
        sign_type: wxpay::v2::SignType::Md5,
        device_info: None,
        openid: openid.to_owned(),
        is_subscribe: Some(false),
        sub_appid: None,
        sub_mch_id: None,
        sub_openid: None,
        sub_is_subscribe: None,
        trade_type: "JSAPI".to_owned(),
        bank_type: "OTHERS".to_owned(),
        total_fee: Fen::new(AMOUNT_FEN),
        settlement_total_fee: None,
        fee_type: Some("CNY".to_owned()),
        cash_fee: Fen::new(AMOUNT_FEN),
        cash_fee_type: None,
        coupon_fee: None,
        coupons: Vec::new(),
        transaction_id: format!("42000{:023}", index),
        out_trade_no: out_trade_no.to_owned(),
        attach: None,
        time_end: wxpay::time::beijing(OffsetDateTime::now_utc()),
    };
    let xml =
        wxpay::v2::notify::build_pay_notification(&n, &m.api_v2_key, wxpay::v2::SignType::Md5)
            .map_err(|e| Failure::runtime(format!("signing a notification: {e}")))?;
    let mut headers = HeaderMap::new();
    let (name, value) = header("content-type", "text/xml")?;
    headers.insert(name, value);
    Ok(Prepared {
        headers,
        body: bytes::Bytes::from(xml),
    })
}

struct Flood {
    http: reqwest::Client,
    url: String,
    api: Api,
    prepared: Arc<Vec<Prepared>>,
    /// The next notification never sent.
    next: AtomicUsize,
    /// Which notifications were acknowledged at least once.
    acked: Vec<AtomicBool>,
    sent: AtomicU64,
    duplicates: f64,
    until: Instant,
}

#[derive(Default)]
struct SenderResult {
    samples: Samples,
    refused: u64,
    duplicates: u64,
    first_refusal: Option<String>,
}

async fn sender(flood: Arc<Flood>, seed: u64) -> SenderResult {
    let mut result = SenderResult::default();
    // xorshift64*: a private, cheap stream per sender (no shared RNG on the hot path).
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let total = flood.prepared.len();
    while Instant::now() < flood.until {
        let sent_before = flood.next.load(Ordering::Relaxed).min(total);
        let duplicate = sent_before > 0 && random() < flood.duplicates;
        let index = if duplicate {
            ((random() * sent_before as f64) as usize).min(sent_before - 1)
        } else {
            let i = flood.next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                break;
            }
            i
        };
        let n = &flood.prepared[index];
        let started = Instant::now();
        let answer = flood
            .http
            .post(&flood.url)
            .headers(n.headers.clone())
            .body(n.body.clone())
            .send()
            .await;
        let outcome = match answer {
            Ok(response) => {
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                let acked = match flood.api {
                    Api::V3 => status.is_success(),
                    Api::V2 => status.is_success() && wxpay::v2::notify::is_success_ack(&body),
                };
                if acked {
                    Ok(())
                } else {
                    Err(format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        flood.sent.fetch_add(1, Ordering::Relaxed);
        result.duplicates += u64::from(duplicate);
        match outcome {
            Ok(()) => {
                result.samples.record(started.elapsed());
                flood.acked[index].store(true, Ordering::Relaxed);
            }
            Err(e) => {
                result.refused += 1;
                result.samples.errors += 1;
                if result.first_refusal.is_none() {
                    result.first_refusal = Some(e);
                }
            }
        }
    }
    result
}

/// What the database holds after the flood.
struct Applied {
    paid: u64,
    events: u64,
    dedupe_rows: u64,
    webhooks: u64,
}

async fn count_applied(database: &BenchDatabase) -> Result<Applied, Failure> {
    let store = Store::connect(
        &database.url,
        &StoreOptions {
            max_connections: Some(1),
            ..StoreOptions::default()
        },
    )
    .await
    .map_err(|e| Failure::runtime(format!("the bench database: {e}")))?;
    let pool = store.pool().clone();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| Failure::runtime(format!("counting the results: {e}")))
        }
    };
    let applied = Applied {
        paid: count("SELECT COUNT(*) FROM orders WHERE status = 'SUCCESS'").await?,
        events: count("SELECT COUNT(*) FROM order_events WHERE kind = 'notification'").await?,
        dedupe_rows: count("SELECT COUNT(*) FROM processed_notifications").await?,
        webhooks: count("SELECT COUNT(*) FROM outbox WHERE event_type = 'order.paid'").await?,
    };
    store.close().await;
    Ok(applied)
}
