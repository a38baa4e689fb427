//! `wxpay bench`: load generators that run the simulator and the server as separate processes,
//! as in production, and measure them from the outside.
//!
//! - [`load`]: simulated buyers through login, order, pay, notification and query, against the
//!   RSA bound measured in the same run.
//! - [`notifications`]: a flood of valid signed payment notifications, duplicates included.
//! - [`webhooks`]: commit -> `order.paid` webhook received, one payment at a time.
//!
//! What both share lives here: the child processes, `/proc` readings, percentiles, the fresh
//! database of a run, the progress line.

pub mod load;
pub mod notifications;
pub mod webhooks;

use std::fs::File;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::failure::Failure;

/// `wxpay bench`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the buyers' flow.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The buyers' flow (the default benchmark).
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The benchmarks other than the buyers' flow.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Flood the server's payment notification URL with valid signed notifications (and
    /// duplicates); report notifications/s, latency, and that each was applied exactly once.
    Notifications(NotificationArgs),
    /// Pay orders one at a time on an idle server and measure how long each `order.paid`
    /// webhook takes to reach a local receiver after the commit (p50, p99).
    Webhooks(WebhookArgs),
}

/// Which WeChat Pay API the server uses for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// JSON and RSA-2048 signatures.
    V3,
    /// XML and MD5/HMAC-SHA256.
    V2,
}

impl Api {
    /// `v2` or `v3`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Api::V3 => "v3",
            Api::V2 => "v2",
        }
    }
}

/// What every benchmark takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The API the server uses.
    #[arg(long, value_enum, default_value = "v3")]
    pub api: Api,
    /// A PostgreSQL URL (`postgres://...`): a fresh database is created beside the one named
    /// (and dropped afterwards). Default: a fresh SQLite file in a temporary directory.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// How long to measure, e.g. `15s`, `500ms`, `2m`.
    #[arg(long, value_name = "TIME", default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print the results as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// `RUST_LOG` of the server and the simulator (their logs go to files in the run's temporary
    /// directory; `info` logs every request).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,
    /// Keep the temporary directory (databases, logs, the simulator's keys) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// An extra setting of the server, e.g. `WXPAY_DATABASE_MAX_CONNECTIONS=4` (repeatable; to
    /// compare configurations).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub server_env: Vec<(String, String)>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if key.starts_with("WXPAY_") => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not WXPAY_KEY=VALUE")),
    }
}

/// `wxpay bench [--buyers N] ...`
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent simulated buyers.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub buyers: u32,
    /// Time before measuring starts (connections, caches, the database's first pages).
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Register this many more merchants before measuring, each with its own keys at the
    /// simulator and one mini program (sealed under a master key); the buyers' visits go to all
    /// the mini programs in turn. Reports the server's memory per merchant.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub merchants: u32,
    /// What every benchmark takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `wxpay bench notifications ...`
#[derive(Debug, Args)]
pub struct NotificationArgs {
    /// The share of deliveries that repeat a notification already sent (0 to 0.95).
    #[arg(long, value_name = "RATIO", default_value_t = 0.3, value_parser = parse_ratio)]
    pub duplicates: f64,
    /// Concurrent senders (WeChat Pay's own dispatcher sends many at once).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Unpaid orders made beforehand, one distinct notification each; the flood stops early when
    /// they are all used.
    #[arg(long, value_name = "N", default_value_t = 40_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub orders: u32,
    /// What every benchmark takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `wxpay bench webhooks ...`
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Orders paid, one after another.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub orders: u32,
    /// Pause after each webhook (the server is idle when the next payment arrives).
    #[arg(long, value_name = "TIME", default_value = "20ms", value_parser = parse_duration)]
    pub gap: Duration,
    /// What every benchmark takes (`--duration` is not used).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parses `15s`, `500ms`, `2m`, `1.5s` (a bare number is seconds).
///
/// # Errors
/// A message for anything else, or a zero or absurd duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 15s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 24.0 * 3600.0) {
        return Err(format!("{text:?} must be more than 0 and at most 24 hours"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=0.95).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} must be between 0 and 0.95"))
    }
}

/// Runs the chosen benchmark on a runtime of its own.
///
/// # Errors
/// [`Failure::Input`] for unusable arguments (a bad database URL); [`Failure::Runtime`] when a
/// process does not start or the run fails.
pub fn run(args: &BenchArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    let (report, json) = match &args.command {
        Some(BenchCommand::Notifications(n)) => {
            let report = runtime.block_on(notifications::run(n, err))?;
            (report, n.common.json)
        }
        Some(BenchCommand::Webhooks(w)) => {
            let report = runtime.block_on(webhooks::run(w, err))?;
            (report, w.common.json)
        }
        None => {
            let report = runtime.block_on(load::run(&args.load, err))?;
            (report, args.load.common.json)
        }
    };
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(out, "{}", report.text)?;
        if json {
            writeln!(out, "{}", report.json)?;
        }
        out.flush()
    };
    write(out).map_err(|e| Failure::runtime(format!("cannot write the report: {e}")))
}

/// What a benchmark hands back: the human table and the JSON object.
#[derive(Debug)]
pub struct Report {
    /// Lines for a person.
    pub text: String,
    /// The machine-readable results.
    pub json: Value,
}

/// A directory of the run's own (databases, logs, the simulator's state), removed at the end
/// unless kept.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// Creates a fresh directory under the system's temporary directory.
    ///
    /// # Errors
    /// [`Failure::Runtime`] when it cannot be created.
    pub fn new(keep: bool) -> Result<Self, Failure> {
        let path = std::env::temp_dir().join(format!(
            "wxpay-bench-{}-{}",
            std::process::id(),
            wxpay::nonce::random_string(8)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", path.display())))?;
        Ok(Scratch { path, keep })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process of the benchmark (`wxpay sim` or `wxpay serve`): its stdout read line by line
/// in a thread, its stderr in a file; killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    /// When it was spawned.
    pub spawned_at: Instant,
}

impl ChildProcess {
    /// Spawns this same executable with `args`, in `dir`, with none of the caller's `WXPAY_*`
    /// variables (only `env`), and `RUST_LOG` set to `log_level`.
    ///
    /// # Errors
    /// [`Failure::Runtime`] when it cannot be started.
    pub fn spawn(
        name: &'static str,
        args: &[&str],
        env: &[(String, String)],
        dir: &Path,
        log_level: &str,
    ) -> Result<Self, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::runtime(format!("cannot find the wxpay executable: {e}")))?;
        let stderr_path = dir.join(format!("{name}.log"));
        let stderr = File::create(&stderr_path).map_err(|e| {
            Failure::runtime(format!("cannot create {}: {e}", stderr_path.display()))
        })?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env("RUST_LOG", log_level);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WXPAY_") {
                command.env_remove(key);
            }
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| Failure::runtime(format!("cannot start `wxpay {name}`: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Failure::runtime(format!("no stdout of `wxpay {name}`")))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProcess {
            name,
            child,
            lines,
            stderr_path,
            spawned_at,
        })
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (blocking the thread) for a stdout line that starts with `prefix` after trimming,
    /// and returns the rest of it, trimmed.
    ///
    /// # Errors
    /// [`Failure::Runtime`] with the end of the child's log when it exits or `timeout` passes.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Result<String, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim_start().strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("printed no {prefix:?} line in {timeout:?}")));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.failure("exited"));
                }
            }
        }
    }

    /// A failure naming the process, with the last lines of its log.
    #[must_use]
    pub fn failure(&self, what: &str) -> Failure {
        let log = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Failure::runtime(format!(
            "`wxpay {}` {what}; end of its log ({}): {}",
            self.name,
            self.stderr_path.display(),
            tail.join(" | ")
        ))
    }

    /// CPU time and peak RSS so far.
    ///
    /// # Errors
    /// [`Failure::Runtime`] when `/proc` cannot be read (not Linux, or the process is gone).
    pub fn stats(&self) -> Result<ProcStats, Failure> {
        ProcStats::of(self.pid())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `/proc` says about a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
    /// Resident set size now (`VmRSS`), in bytes.
    pub rss_bytes: u64,
}

impl ProcStats {
    /// The readings of process `pid`.
    ///
    /// # Errors
    /// [`Failure::Runtime`] when `/proc/PID/stat` or `/proc/PID/status` cannot be read.
    pub fn of(pid: u32) -> Result<Self, Failure> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| Failure::runtime(format!("cannot read /proc/{pid}/stat: {e}")))?;
        // The command name may hold spaces and parentheses: fields are counted after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line; the first after ')' is field 3.
        let cpu_secs = (ticks(11) + ticks(12)) as f64 / clock_ticks_per_sec();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| Failure::runtime(format!("cannot read /proc/{pid}/status: {e}")))?;
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Ok(ProcStats {
            cpu_secs,
            peak_rss_bytes: kib("VmHWM:"),
            rss_bytes: kib("VmRSS:"),
        })
    }

    /// This process.
    ///
    /// # Errors
    /// As [`ProcStats::of`].
    pub fn own() -> Result<Self, Failure> {
        Self::of(std::process::id())
    }
}

/// `USER_HZ`, from `getconf CLK_TCK` (100 on every Linux this runs on, the fallback).
fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The 1-minute load average (the machine is shared: every figure is recorded with it).
#[must_use]
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Latency samples of one endpoint, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    micros: Vec<u32>,
    /// Failed requests (not in the samples).
    pub errors: u64,
}

impl Samples {
    /// Records one latency.
    pub fn record(&mut self, elapsed: Duration) {
        self.micros
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another set of samples.
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    /// How many were recorded.
    #[must_use]
    pub fn count(&self) -> usize {
        self.micros.len()
    }

    /// p50, p99 and max in milliseconds (zeros without samples). Sorts the samples.
    pub fn summary(&mut self) -> LatencySummary {
        self.micros.sort_unstable();
        let at = |q: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let rank = ((q * self.micros.len() as f64).ceil() as usize).clamp(1, self.micros.len());
            f64::from(self.micros[rank - 1]) / 1000.0
        };
        LatencySummary {
            count: self.micros.len() as u64,
            errors: self.errors,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: self.micros.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        }
    }
}

/// Percentiles of one endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

impl LatencySummary {
    /// As JSON.
    #[must_use]
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "errors": self.errors,
            "p50_ms": round3(self.p50_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
        })
    }
}

/// Three decimals, for readable JSON.
#[must_use]
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The run's database: a SQLite file in the scratch directory, or a fresh PostgreSQL database
/// beside the one the given URL names, dropped at the end.
#[derive(Debug)]
pub struct BenchDatabase {
    /// What the server gets as `WXPAY_DATABASE_URL`.
    pub url: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The URL the fresh database was made from, and its name (PostgreSQL).
    created: Option<(String, String)>,
}

impl BenchDatabase {
    /// Makes the run's database.
    ///
    /// # Errors
    /// [`Failure::Input`] for a URL that is not PostgreSQL; [`Failure::Runtime`] when the fresh
    /// database cannot be created.
    pub async fn create(given: Option<&str>, scratch: &Scratch) -> Result<Self, Failure> {
        let Some(url) = given else {
            return Ok(BenchDatabase {
                url: format!("sqlite://{}", scratch.path().join("bench.db").display()),
                backend: "sqlite",
                created: None,
            });
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Failure::input(
                "--database must be a postgres:// URL (SQLite is the default)",
            ));
        }
        use sqlx::{Connection as _, Executor as _};
        let name = format!(
            "wxpay_bench_{}",
            wxpay::nonce::random_string(10).to_ascii_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| Failure::runtime(format!("--database: cannot connect: {e}")))?;
        // The name is made here of lowercase letters and digits: nothing to inject.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(|e| Failure::runtime(format!("--database: CREATE DATABASE failed: {e}")))?;
        let _ = conn.close().await;
        Ok(BenchDatabase {
            url: with_database(url, &name),
            backend: "postgres",
            created: Some((url.to_owned(), name)),
        })
    }

    /// Drops the fresh PostgreSQL database (the server must be stopped first).
    pub async fn drop_created(&self) {
        use sqlx::{Connection as _, Executor as _};
        if let Some((url, name)) = &self.created
            && let Ok(mut conn) = sqlx::PgConnection::connect(url).await
        {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
            let _ = conn.close().await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`, the query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The simulator as a child process, listening on a free port with its state in `dir/sim`.
///
/// # Errors
/// [`Failure::Runtime`] when it does not start within a minute (the first start makes keys).
pub fn start_simulator(
    scratch: &Scratch,
    log_level: &str,
) -> Result<(ChildProcess, String), Failure> {
    let state_dir = scratch.path().join("sim");
    let state = state_dir.to_string_lossy().into_owned();
    let sim = ChildProcess::spawn(
        "sim",
        &["sim", "--listen", "127.0.0.1:0", "--state-dir", &state],
        &[],
        scratch.path(),
        log_level,
    )?;
    let url = sim.wait_for_line("http:", Duration::from_secs(60))?;
    Ok((sim, url))
}

/// The settings the server gets: the simulator's merchant, the simulator as WeChat, the run's
/// database, a free port, an admin token, and no rate limits.
#[must_use]
pub fn server_env(
    scratch: &Scratch,
    sim_url: &str,
    database_url: &str,
    common: &CommonArgs,
    admin_token: &str,
) -> Vec<(String, String)> {
    let api = common.api;
    let mut env: Vec<(String, String)> = [
        (
            "WXPAY_MERCHANT_FILE",
            scratch
                .path()
                .join("sim")
                .join(wxpay_sim::merchant::MERCHANT_JSON)
                .to_string_lossy()
                .into_owned(),
        ),
        ("WXPAY_PAY_BASE_URL", sim_url.to_owned()),
        ("WXPAY_MP_BASE_URL", sim_url.to_owned()),
        ("WXPAY_DATABASE_URL", database_url.to_owned()),
        ("WXPAY_API_VERSION", api.as_str().to_owned()),
        ("WXPAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("WXPAY_ADMIN_TOKEN", admin_token.to_owned()),
        // Seals the secrets of the merchants `--merchants` registers.
        (
            "WXPAY_MASTER_KEY",
            wxpay::nonce::random_string(32)
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
        // Every buyer logs in from 127.0.0.1: the per-IP login limit would measure itself.
        ("WXPAY_RATE_LIMIT_LOGIN_PER_MINUTE", "0".to_owned()),
        ("WXPAY_RATE_LIMIT_ORDERS_PER_MINUTE", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Later entries win when the child's environment is built.
    env.extend(common.server_env.iter().cloned());
    env
}

/// Starts `wxpay serve` and waits until `/healthz` answers 200. Returns the process, its base
/// URL, and the start-up time (spawn to the first healthy answer, migrations included).
///
/// # Errors
/// [`Failure::Runtime`] when it does not become healthy within a minute.
pub async fn start_server(
    scratch: &Scratch,
    env: &[(String, String)],
    log_level: &str,
    http: &reqwest::Client,
) -> Result<(ChildProcess, String, Duration), Failure> {
    let server = ChildProcess::spawn("serve", &["serve"], env, scratch.path(), log_level)?;
    let api =
        tokio::task::block_in_place(|| server.wait_for_line("API:", Duration::from_secs(60)))?;
    let base = api
        .trim_end_matches('/')
        .trim_end_matches("/api")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            let startup = server.spawned_at.elapsed();
            return Ok((server, base, startup));
        }
        if Instant::now() > deadline {
            return Err(server.failure("did not become healthy in 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The HTTP client of the load generator: keep-alive connections, no proxy.
///
/// # Errors
/// [`Failure::Runtime`] when it cannot be built.
pub fn http_client(connections: usize) -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections.max(8))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Failure::runtime(format!("cannot build the HTTP client: {e}")))
}

/// A progress line on stderr when it is a terminal: `[=====>   ] 7.2/15.0 s  1234 orders 171/s`.
pub fn progress(err: &mut dyn Write, started: Instant, total: Duration, done: u64, what: &str) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fraction = (elapsed / total.as_secs_f64()).clamp(0.0, 1.0);
    let width = 30;
    let filled = (fraction * f64::from(width)) as u32;
    let bar: String = (0..width)
        .map(|i| match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        })
        .collect();
    let rate = if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    let _ = write!(
        err,
        "\r[{bar}] {elapsed:5.1}/{:.1} s  {done} {what}  {rate:.0}/s   ",
        total.as_secs_f64()
    );
    let _ = err.flush();
}

/// Ends the progress line.
pub fn progress_done(err: &mut dyn Write) {
    if std::io::stderr().is_terminal() {
        let _ = writeln!(err);
    }
}

/// The counters and latency histograms of the server's `/metrics`.
#[derive(Debug, Default)]
pub struct Scrape {
    text: String,
}

impl Scrape {
    /// Reads `GET /metrics`.
    ///
    /// # Errors
    /// [`Failure::Runtime`] when it does not answer.
    pub async fn fetch(http: &reqwest::Client, base: &str) -> Result<Self, Failure> {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| Failure::runtime(format!("GET /metrics: {e}")))?
            .text()
            .await
            .map_err(|e| Failure::runtime(format!("GET /metrics: {e}")))?;
        Ok(Scrape { text })
    }

    /// The sum of the samples of `metric` whose labels contain every one of `labels`
    /// (`route="/notify/v3/pay"`).
    #[must_use]
    pub fn sum(&self, metric: &str, labels: &[&str]) -> f64 {
        self.samples(metric, labels).map(|(_, v)| v).sum()
    }

    fn samples<'a>(
        &'a self,
        metric: &'a str,
        labels: &'a [&'a str],
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.text.lines().filter_map(move |line| {
            let rest = line.strip_prefix(metric)?;
            let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
                // The last `}`: label values may hold braces (`route="/notify/{mchid}/v3/pay"`).
                let (l, v) = rest.rsplit_once('}')?;
                (l, v)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            if !labels.iter().all(|l| label_text.contains(l)) {
                return None;
            }
            Some((label_text, value.trim().parse::<f64>().ok()?))
        })
    }

    /// The cumulative bucket counts of a histogram (`le` → count), sorted by `le`, summed over
    /// the series whose labels match.
    #[must_use]
    pub fn buckets(&self, histogram: &str, labels: &[&str]) -> Vec<(f64, f64)> {
        let name = format!("{histogram}_bucket");
        let mut out: Vec<(f64, f64)> = self
            .samples(&name, labels)
            .filter_map(|(label_text, count)| {
                let le = label_text.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Several series (routes) matched: one histogram, their sum per bucket.
        out.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        out
    }
}

/// A quantile (0..1) of the observations between two scrapes of a histogram, interpolated
/// linearly inside the bucket, in milliseconds. `None` without observations.
#[must_use]
pub fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut lower_le = 0.0;
    let mut lower_count = 0.0;
    for (le, count) in &delta {
        if *count >= target {
            if le.is_infinite() {
                return Some(lower_le * 1000.0);
            }
            let within = count - lower_count;
            let fraction = if within > 0.0 {
                (target - lower_count) / within
            } else {
                1.0
            };
            return Some((lower_le + (le - lower_le) * fraction) * 1000.0);
        }
        lower_le = *le;
        lower_count = *count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100u64 {
            s.record(Duration::from_millis(ms));
        }
        let summary = s.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 1e-9);
        assert!((summary.p99_ms - 99.0).abs() < 1e-9);
        assert!((summary.max_ms - 100.0).abs() < 1e-9);
    }

    #[test]
    fn the_database_of_a_postgres_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "b1"),
            "postgres://u:p@h/b1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "b1"),
            "postgres://h:5432/b1"
        );
    }

    #[test]
    fn histogram_quantiles_interpolate_inside_the_bucket() {
        let before = vec![(0.001, 0.0), (0.002, 0.0), (f64::INFINITY, 0.0)];
        let after = vec![(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let p50 = bucket_quantile(&before, &after, 0.5).unwrap();
        assert!((p50 - 1.0).abs() < 1e-9);
        let p75 = bucket_quantile(&before, &after, 0.75).unwrap();
        assert!((p75 - 1.5).abs() < 1e-9);
        assert!(bucket_quantile(&after, &after, 0.5).is_none());
    }

    #[test]
    fn scrapes_sum_labelled_samples() {
        let scrape = Scrape {
            text: "wxpay_notifications_total{route=\"/notify/v3/pay\",result=\"acknowledged\"} 7\n\
                   wxpay_notifications_total{route=\"/notify/v3/pay\",result=\"refused\"} 2\n\
                   wxpay_notifications_total_other 5\n"
                .into(),
        };
        assert!(
            (scrape.sum("wxpay_notifications_total", &["result=\"acknowledged\""]) - 7.0).abs()
                < 1e-9
        );
        assert!((scrape.sum("wxpay_notifications_total", &[]) - 9.0).abs() < 1e-9);
    }

    #[test]
    fn buckets_of_several_matching_routes_are_summed() {
        let h = "wxpay_http_request_duration_seconds_bucket";
        let scrape = Scrape {
            text: format!(
                "{h}{{route=\"/notify/v3/pay\",le=\"0.001\"}} 1\n\
                 {h}{{route=\"/notify/v3/pay\",le=\"+Inf\"}} 2\n\
                 {h}{{route=\"/notify/{{mchid}}/v3/pay\",le=\"0.001\"}} 10\n\
                 {h}{{route=\"/notify/{{mchid}}/v3/pay\",le=\"+Inf\"}} 20\n\
                 {h}{{route=\"/notify/{{mchid}}/v2/pay\",le=\"+Inf\"}} 99\n"
            ),
        };
        assert_eq!(
            scrape.buckets("wxpay_http_request_duration_seconds", &["/v3/pay\""]),
            vec![(0.001, 11.0), (f64::INFINITY, 22.0)]
        );
    }
}
