//! The command line: one enum of subcommands, each with its arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// WeChat Pay toolkit: debugging tools for the signature errors every integrator meets.
#[derive(Debug, Parser)]
#[command(name = "wxpay", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `wxpay`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute a request signature (v2 `sign`, v3 `Authorization` header).
    #[command(subcommand)]
    Sign(SignCommand),
    /// Check a signature made by WeChat Pay (v3 answers and notifications).
    #[command(subcommand)]
    Verify(VerifyCommand),
    /// Decrypt an AEAD_AES_256_GCM `resource` or `encrypt_certificate`.
    #[command(subcommand)]
    Decrypt(DecryptCommand),
    /// Build the `wx.requestPayment` parameters for a prepay_id.
    #[command(subcommand)]
    PaySign(PaySignCommand),
    /// Run the local WeChat Pay (v2 + v3) and mini-program simulator until Ctrl-C or SIGTERM.
    Sim(SimArgs),
    /// Run the merchant payment server (configured by wxpay.toml and WXPAY_* variables; sandbox
    /// mode with an in-process simulator when no merchant file is set) until Ctrl-C or SIGTERM.
    #[command(after_help = wxpay_server::config::keys_help())]
    Serve(ServeArgs),
    /// Walk the whole payment flow (v2 and v3) against an in-process simulator and server; exit
    /// status 0 only when every step passed.
    Demo,
    /// Load-test the server: start the simulator and the server as child processes and run
    /// simulated buyers through login, order, pay, notification and query.
    Bench(crate::commands::bench::BenchArgs),
}

/// `wxpay serve`: the common keys as flags, over the file and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (default ./wxpay.toml when present; WXPAY_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Where to listen, e.g. 127.0.0.1:8080 (WXPAY_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// sqlite://FILE or postgres://USER@HOST/DB (WXPAY_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// `wxpay sim`
#[derive(Debug, Args)]
pub struct SimArgs {
    /// The address to listen on (HTTP and HTTPS on one port), e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where the simulated merchant is kept (`merchant.json`, keys, certificates); created if absent.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Run notification retries and refund processing this many times faster.
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Which keys WeChat Pay signs with: public_key, certificate or migrating.
    #[arg(long, value_name = "MODE", default_value = "public_key")]
    pub key_mode: wxpay_sim::KeyMode,
}

/// `wxpay sign ...`
#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Sign API v2 parameters read on stdin (a JSON object or an `<xml>` document); prints the sign.
    V2(SignV2Args),
    /// Sign an API v3 request; prints the Authorization header value.
    V3(SignV3Args),
}

/// `wxpay sign v2`
#[derive(Debug, Args)]
pub struct SignV2Args {
    /// The API v2 key (32 characters, set in the merchant platform).
    #[arg(long, value_name = "KEY")]
    pub key: String,
    /// Sign with HMAC-SHA256 instead of MD5.
    #[arg(long)]
    pub hmac: bool,
    /// Also print, on stderr, the string that is signed (with the key shown as `<key>`).
    #[arg(long, short)]
    pub verbose: bool,
}

/// `wxpay sign v3`
#[derive(Debug, Args)]
pub struct SignV3Args {
    /// The merchant id (`mchid`).
    #[arg(long, value_name = "M")]
    pub mchid: String,
    /// The serial number of the merchant API certificate (uppercase hex).
    #[arg(long, value_name = "S")]
    pub serial: String,
    /// The merchant API private key, `apiclient_key.pem` (PKCS#1 or PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    pub private_key: PathBuf,
    /// The HTTP method, e.g. POST.
    #[arg(long, value_name = "M")]
    pub method: String,
    /// The canonical URL: the path and query exactly as sent, e.g. `/v3/pay/transactions/jsapi`.
    #[arg(long, value_name = "PATH")]
    pub url: String,
    /// A file holding the exact request body bytes (none for GET and DELETE).
    #[arg(long, value_name = "F")]
    pub body_file: Option<PathBuf>,
    /// Unix seconds; defaults to now.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(i64).range(0..))]
    pub timestamp: Option<i64>,
    /// The nonce; defaults to a fresh 32-character one.
    #[arg(long, value_name = "N")]
    pub nonce: Option<String>,
    /// Also print, on stderr, the message that is signed.
    #[arg(long, short)]
    pub verbose: bool,
}

/// `wxpay verify ...`
#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Verify a `Wechatpay-Signature` over `timestamp\nnonce\nbody\n`; prints `valid` or why not.
    ///
    /// Only the signature is checked: the timestamp window and whether the key matches
    /// `Wechatpay-Serial` are the caller's to check. Exit status 0 for valid, 1 for invalid,
    /// 2 for unusable input.
    V3(VerifyV3Args),
}

/// `wxpay verify v3`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("verification_key").required(true).args(["public_key", "certificate"])))]
pub struct VerifyV3Args {
    /// The WeChat Pay public key (SPKI `PUBLIC KEY` PEM).
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// A WeChat Pay platform certificate (X.509 PEM).
    #[arg(long, value_name = "FILE")]
    pub certificate: Option<PathBuf>,
    /// The `Wechatpay-Timestamp` header.
    #[arg(long, value_name = "T")]
    pub timestamp: String,
    /// The `Wechatpay-Nonce` header.
    #[arg(long, value_name = "N")]
    pub nonce: String,
    /// The `Wechatpay-Signature` header (base64).
    #[arg(long, value_name = "B64")]
    pub signature: String,
    /// A file holding the exact raw body bytes (none for an empty body, e.g. a 204 answer).
    #[arg(long, value_name = "F")]
    pub body_file: Option<PathBuf>,
}

/// `wxpay decrypt ...`
#[derive(Debug, Subcommand)]
pub enum DecryptCommand {
    /// Decrypt AEAD_AES_256_GCM with the APIv3 key; prints the plaintext.
    V3(DecryptV3Args),
}

/// `wxpay decrypt v3`
#[derive(Debug, Args)]
pub struct DecryptV3Args {
    /// The APIv3 key (32 characters).
    #[arg(long, value_name = "K")]
    pub apiv3_key: String,
    /// The `nonce` (12 characters).
    #[arg(long, value_name = "N")]
    pub nonce: String,
    /// The `associated_data`; absent means empty.
    #[arg(long, value_name = "A", default_value = "")]
    pub associated_data: String,
    /// The base64 `ciphertext`.
    #[arg(long, value_name = "B64")]
    pub ciphertext: String,
}

/// `wxpay pay-sign ...`
#[derive(Debug, Subcommand)]
pub enum PaySignCommand {
    /// API v3 (`signType: RSA`) parameters; prints the `wx.requestPayment` JSON.
    V3(PaySignV3Args),
    /// API v2 (`signType: MD5` or `HMAC-SHA256`) parameters; prints the `wx.requestPayment` JSON.
    V2(PaySignV2Args),
}

/// What both `pay-sign` versions take.
#[derive(Debug, Args)]
pub struct PaySignCommon {
    /// The appid the order was placed with.
    #[arg(long, value_name = "A")]
    pub appid: String,
    /// The prepay_id from the order (without `prepay_id=`).
    #[arg(long, value_name = "P")]
    pub prepay_id: String,
    /// Unix seconds; defaults to now.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(i64).range(0..))]
    pub timestamp: Option<i64>,
    /// The nonceStr; defaults to a fresh 32-character one.
    #[arg(long, value_name = "N")]
    pub nonce: Option<String>,
}

/// `wxpay pay-sign v3`
#[derive(Debug, Args)]
pub struct PaySignV3Args {
    /// The merchant API private key, `apiclient_key.pem` (PKCS#1 or PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    pub private_key: PathBuf,
    /// The common parameters.
    #[command(flatten)]
    pub common: PaySignCommon,
}

/// `wxpay pay-sign v2`
#[derive(Debug, Args)]
pub struct PaySignV2Args {
    /// The API v2 key (32 characters, set in the merchant platform).
    #[arg(long, value_name = "K")]
    pub key: String,
    /// Sign with HMAC-SHA256 instead of MD5 (must match the order's `sign_type`).
    #[arg(long)]
    pub hmac: bool,
    /// The common parameters.
    #[command(flatten)]
    pub common: PaySignCommon,
}
