//! Message push (消息推送) of every simulated mini program: the trade-management events of the
//! payments a mini program manages, sent to the URL set for that mini program with
//! `PUT /sim/mp/push {"appid",...}` (without `appid`: the first mini program), signed and
//! encrypted as WeChat does (with the library's `wxpay::mp::push::seal_push`) with that mini
//! program's AppID, Token and EncodingAESKey.
//!
//! Rules where WeChat is not documented (each one a rule of this simulator):
//!
//! * Setting the URL performs the `GET` handshake (`signature`, `timestamp`, `nonce`,
//!   `echostr`); the settings are refused unless the answer is `200` with exactly the `echostr`
//!   (as the admin console refuses to save them).
//! * A push is answered correctly by `200` with an empty body or `success`; anything else, or
//!   no answer in 5 s, is retried 3 times (5 s apart, shortened by the time scale): at least
//!   once, never more than 4 sends.
//! * The notification faults of `PUT /sim/faults` apply: `notify_drop_rate` (an attempt not
//!   sent, so retried), `notify_duplicate_rate` (sent twice), `notify_delay_ms` and
//!   `notify_shuffle_ms` (before each attempt).
//! * The settings live in memory (not in the journal): set them again after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wxpay::mp::push::{PushConfig, PushFormat, PushMode, seal_push, signature};

use crate::app::AppState;
use crate::faults::{jitter, roll};

/// The retries after the first send.
pub const PUSH_RETRIES: u32 = 3;
/// The timeout of one send and the pause between sends (before the time scale).
pub const PUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Where and how pushes go.
#[derive(Clone, Debug)]
pub struct PushSettings {
    url: String,
    config: PushConfig,
    mode: PushMode,
    format: PushFormat,
}

/// One push as sent, for the control API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushRecord {
    /// The mini program it was pushed for.
    pub appid: String,
    /// `Event`.
    pub event: String,
    /// `transaction_id` of the order.
    pub transaction_id: String,
    /// How many sends so far.
    pub attempts: u32,
    /// Whether an answer acknowledged it.
    pub delivered: bool,
}

/// The push settings of each mini program (by AppID) and the log of pushes.
#[derive(Debug, Default)]
pub struct MpPush {
    settings: Mutex<HashMap<String, PushSettings>>,
    log: Arc<Mutex<Vec<PushRecord>>>,
}

impl MpPush {
    /// Sends `fields` (a message without its common fields) to the URL configured for the mini
    /// program `appid` in the background; nothing when it has none.
    pub fn send(&self, state: &AppState, appid: &str, event: &str, mut fields: Map<String, Value>) {
        let Some(settings) = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(appid)
            .cloned()
        else {
            return;
        };
        let now = wxpay::nonce::Clock::now(state.clock.as_ref());
        fields.insert("ToUserName".into(), json!(original_id(appid)));
        fields.insert("FromUserName".into(), json!("oSysTemAcc0unt000000000000"));
        fields.insert("CreateTime".into(), json!(now));
        fields.insert("MsgType".into(), json!("event"));
        fields.insert("Event".into(), json!(event));
        let nonce = rand::random::<u32>().to_string();
        let sealed = match seal_push(
            &settings.config,
            settings.mode,
            settings.format,
            &fields,
            &now.to_string(),
            &nonce,
            None,
            rand::random(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "message push not sealed");
                return;
            }
        };
        let transaction_id = fields
            .get("transaction_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let index = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push(PushRecord {
                appid: appid.to_owned(),
                event: event.to_owned(),
                transaction_id,
                attempts: 0,
                delivered: false,
            });
            log.len() - 1
        };
        let log = self.log.clone();
        let faults = state.faults.clone();
        let pause = PUSH_INTERVAL.div_f64(state.time_scale.max(1.0));
        let content_type = match settings.format {
            PushFormat::Json => "application/json",
            PushFormat::Xml => "text/xml",
        };
        let url = format!("{}?{}", settings.url, sealed.query);
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .no_proxy()
                .timeout(PUSH_INTERVAL)
                .build()
            {
                Ok(c) => c,
                Err(_) => return,
            };
            let post = || async {
                let answer = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(sealed.body.clone())
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {
                        let body = r.text().await.unwrap_or_default();
                        body.trim().is_empty() || body.trim() == "success"
                    }
                    _ => false,
                }
            };
            for attempt in 0..=PUSH_RETRIES {
                if attempt > 0 {
                    tokio::time::sleep(pause).await;
                }
                // The notification faults apply to pushes too.
                let f = faults.get();
                let delay = Duration::from_millis(f.notify_delay_ms) + jitter(f.notify_shuffle_ms);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let delivered = if roll(f.notify_drop_rate) {
                    false
                } else {
                    let first = post().await;
                    if roll(f.notify_duplicate_rate) {
                        post().await || first
                    } else {
                        first
                    }
                };
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(record) = log.get_mut(index) {
                    record.attempts = attempt + 1;
                    record.delivered = delivered;
                }
                if delivered {
                    return;
                }
            }
        });
    }

    /// The pushes so far.
    #[must_use]
    pub fn records(&self) -> Vec<PushRecord> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A stand-in 原始ID (`gh_` + 12 hex characters) derived from the AppID.
fn original_id(appid: &str) -> String {
    let digest = wxpay::bill::sha1_hex(appid.as_bytes());
    format!("gh_{}", &digest[..12])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSettings {
    #[serde(default)]
    appid: Option<String>,
    url: String,
    token: String,
    #[serde(default)]
    encoding_aes_key: Option<String>,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_format")]
    format: String,
}

fn default_mode() -> String {
    "safe".into()
}

fn default_format() -> String {
    "json".into()
}

fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// The settings and the AppID they are for (`None`: the simulator hosts no such mini program).
fn parse_settings(state: &AppState, body: &[u8]) -> Result<(Option<String>, PushSettings), String> {
    let s: NewSettings =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let appid = s
        .appid
        .clone()
        .unwrap_or_else(|| state.mp.appid().to_owned());
    let known = state.app(&appid).is_some().then(|| appid.clone());
    let url = reqwest::Url::parse(&s.url).map_err(|_| "url is not a URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err("url must be an http(s) URL without a query".into());
    }
    if s.token.len() < 3
        || s.token.len() > 32
        || !s.token.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err("token must be 3 to 32 letters or digits".into());
    }
    let mode = match s.mode.as_str() {
        "plaintext" => PushMode::Plaintext,
        "compatible" => PushMode::Compatible,
        "safe" => PushMode::Safe,
        _ => return Err("mode must be plaintext, compatible or safe".into()),
    };
    let format = match s.format.as_str() {
        "json" => PushFormat::Json,
        "xml" => PushFormat::Xml,
        _ => return Err("format must be json or xml".into()),
    };
    let config = match (&s.encoding_aes_key, mode) {
        (Some(key), _) => PushConfig::encrypted(&s.token, key, &appid)
            .map_err(|_| "encoding_aes_key must be 43 base64 characters".to_owned())?,
        (None, PushMode::Plaintext) => PushConfig::plaintext(&s.token, &appid),
        (None, _) => return Err("compatible and safe mode need encoding_aes_key".into()),
    };
    Ok((
        known,
        PushSettings {
            url: s.url,
            config,
            mode,
            format,
        },
    ))
}

/// `PUT /sim/mp/push {"appid","url","token","encoding_aes_key","mode","format"}`: checks the
/// URL with the handshake, then the pushes of the mini program `appid` (without it: the first
/// one; 404 for one the simulator does not host) go there. The answer never repeats the token
/// or the key.
pub async fn put_settings(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (appid, settings) = match parse_settings(&state, &body) {
        Ok(s) => s,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(appid) = appid else {
        return control_error(StatusCode::NOT_FOUND, "no mini program has this appid");
    };
    let timestamp = wxpay::nonce::Clock::now(state.clock.as_ref()).to_string();
    let nonce = rand::random::<u32>().to_string();
    let echostr = rand::random::<u64>().to_string();
    let token = wxpay::mp::ExposeSecret::expose_secret(&settings.config.token).to_owned();
    let handshake = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(PUSH_INTERVAL)
            .build()
            .ok()?;
        let answer = client
            .get(&settings.url)
            .query(&[
                ("signature", signature(&token, &timestamp, &nonce).as_str()),
                ("timestamp", timestamp.as_str()),
                ("nonce", nonce.as_str()),
                ("echostr", echostr.as_str()),
            ])
            .send()
            .await
            .ok()?;
        if answer.status() != reqwest::StatusCode::OK {
            return None;
        }
        answer.text().await.ok()
    };
    if handshake.await.as_deref() != Some(echostr.as_str()) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "the URL did not answer the handshake with the echostr (token mismatch?)",
        );
    }
    let view = json!({
        "appid": appid,
        "url": settings.url,
        "mode": format!("{:?}", settings.mode).to_lowercase(),
        "format": format!("{:?}", settings.format).to_lowercase(),
    });
    state
        .mp_push
        .settings
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(appid, settings);
    axum::Json(view).into_response()
}

/// `GET /sim/mp/pushes`: every push and whether it was acknowledged.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"pushes": state.mp_push.records()})).into_response()
}
