//! Fault injection: dropped, duplicated, delayed and probe notifications; API errors and latency.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::app::AppState;

/// The fault settings of `PUT /sim/faults`. Rates are probabilities in `0..=1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of notification attempts not sent (counted as failed, retried on schedule).
    pub notify_drop_rate: f64,
    /// Share of notification attempts sent twice.
    pub notify_duplicate_rate: f64,
    /// Delay before each notification attempt, in milliseconds.
    pub notify_delay_ms: u64,
    /// Extra random delay of each notification attempt, uniform in `0..=notify_shuffle_ms`
    /// milliseconds, so that deliveries arrive in another order than they were made.
    pub notify_shuffle_ms: u64,
    /// Share of API calls answered with `SYSTEM_ERROR` / `SYSTEMERROR`.
    pub api_error_rate: f64,
    /// Share of API calls answered as rate-limited: v3 429 `FREQUENCY_LIMITED`, v2
    /// `FREQUENCY_LIMITED`, mini program `45011` (what clients must back off from).
    pub api_rate_limit_rate: f64,
    /// Added latency of every API call, in milliseconds.
    pub api_latency_ms: u64,
    /// Share of v3 notification attempts preceded by a `WECHATPAY/SIGNTEST/` probe.
    pub signtest_probe_rate: f64,
    /// Merchant transfers answer 403 `NOT_ENOUGH` (运营账户资金不足) and make no bill, whatever
    /// the balance.
    pub transfer_not_enough: bool,
}

/// The longest injectable delay (10 minutes), so that a typo cannot hang the simulator.
pub const MAX_FAULT_DELAY_MS: u64 = 600_000;

impl Faults {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the first field out of range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("notify_drop_rate", self.notify_drop_rate),
            ("notify_duplicate_rate", self.notify_duplicate_rate),
            ("api_error_rate", self.api_error_rate),
            ("api_rate_limit_rate", self.api_rate_limit_rate),
            ("signtest_probe_rate", self.signtest_probe_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        for (name, ms) in [
            ("notify_delay_ms", self.notify_delay_ms),
            ("notify_shuffle_ms", self.notify_shuffle_ms),
            ("api_latency_ms", self.api_latency_ms),
        ] {
            if ms > MAX_FAULT_DELAY_MS {
                return Err(format!("{name} must be at most {MAX_FAULT_DELAY_MS}"));
            }
        }
        Ok(())
    }
}

/// The current settings, shared by the API middleware and the notification dispatcher.
#[derive(Debug, Default)]
pub struct FaultState(RwLock<Faults>);

impl FaultState {
    /// The current settings.
    #[must_use]
    pub fn get(&self) -> Faults {
        *self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the settings.
    ///
    /// # Errors
    /// As [`Faults::validate`]; nothing changes then.
    pub fn set(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = faults;
        Ok(())
    }
}

/// A random delay in `0..=max_ms` milliseconds (zero when `max_ms` is zero).
#[must_use]
pub fn jitter(max_ms: u64) -> Duration {
    if max_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random::<u64>() % (max_ms + 1))
    }
}

/// Whether an event with probability `rate` happens now.
#[must_use]
pub fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

enum Api {
    V2,
    V3,
    MiniProgram,
}

fn api_of(path: &str) -> Option<Api> {
    if path.starts_with("/v3/") {
        Some(Api::V3)
    } else if path.starts_with("/pay/") || path.starts_with("/secapi/") {
        Some(Api::V2)
    } else if path.starts_with("/sns/")
        || path.starts_with("/cgi-bin/")
        || path.starts_with("/wxa/")
    {
        Some(Api::MiniProgram)
    } else {
        None
    }
}

/// Middleware: latency, `SYSTEM_ERROR` and rate-limit answers on the WeChat API paths (never on `/sim/`).
pub async fn inject(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(api) = api_of(request.uri().path()) else {
        return next.run(request).await;
    };
    let faults = state.faults.get();
    if faults.api_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.api_latency_ms)).await;
    }
    let fault = if roll(faults.api_error_rate) {
        Fault::SystemError
    } else if roll(faults.api_rate_limit_rate) {
        Fault::RateLimited
    } else {
        return next.run(request).await;
    };
    let v3 = |status: StatusCode, code: &str, message: &str| {
        (
            status,
            [
                ("request-id", crate::signer::request_id()),
                (
                    http::header::CONTENT_TYPE.as_str(),
                    crate::v3::ERROR_CONTENT_TYPE.to_owned(),
                ),
            ],
            serde_json::json!({"code": code, "message": message}).to_string(),
        )
            .into_response()
    };
    match (api, fault) {
        (Api::V3, Fault::SystemError) => v3(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            V3_SYSTEM_ERROR_MESSAGE,
        ),
        (Api::V3, Fault::RateLimited) => v3(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            V3_FREQUENCY_LIMITED_MESSAGE,
        ),
        (Api::MiniProgram, Fault::SystemError) => {
            axum::Json(serde_json::json!({"errcode": -1, "errmsg": "system error"})).into_response()
        }
        (Api::MiniProgram, Fault::RateLimited) => axum::Json(serde_json::json!({
            "errcode": 45011,
            "errmsg": "api minute-quota reach limit mustslower retry next minute",
        }))
        .into_response(),
        (Api::V2, fault) => {
            let (_, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, wxpay::v2::xml::MAX_XML_BYTES)
                .await
                .unwrap_or_default();
            let (code, des) = match fault {
                Fault::SystemError => ("SYSTEMERROR", "系统错误"),
                Fault::RateLimited => ("FREQUENCY_LIMITED", "请求频率超限，请降低频率后重试"),
            };
            v2_error(&state, &bytes, code, des)
        }
    }
}

/// The message of an injected v3 500 `SYSTEM_ERROR`, as the real service writes it.
pub const V3_SYSTEM_ERROR_MESSAGE: &str = "系统繁忙,请稍后重试";
/// The message of an injected v3 429 `FREQUENCY_LIMITED` (the API tables' wording).
pub const V3_FREQUENCY_LIMITED_MESSAGE: &str = "频率超限";

#[derive(Clone, Copy)]
enum Fault {
    SystemError,
    RateLimited,
}

/// A signed v2 business failure, in the sign type the request used.
fn v2_error(state: &AppState, request_body: &Bytes, err_code: &str, des: &str) -> Response {
    use wxpay::v2::{SignType, XmlMap};
    let sign_type = wxpay::v2::xml::decode(request_body)
        .ok()
        .and_then(|m| m.get("sign_type").and_then(|t| t.parse::<SignType>().ok()))
        .unwrap_or_default();
    let m = &state.merchant;
    let mut map = XmlMap::new();
    for (k, v) in [
        ("return_code", "SUCCESS"),
        ("return_msg", "OK"),
        ("appid", m.appid.as_str()),
        ("mch_id", m.mchid.as_str()),
        ("result_code", "FAIL"),
        ("err_code", err_code),
        ("err_code_des", des),
    ] {
        map.insert(k.to_owned(), v.to_owned());
    }
    map.insert("nonce_str".into(), wxpay::nonce::nonce());
    let sign = wxpay::v2::sign::sign_map(&map, &m.api_v2_key, sign_type);
    map.insert("sign".into(), sign);
    let xml = wxpay::v2::xml::encode(&map).unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Body::from(xml))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{Faults, MAX_FAULT_DELAY_MS, jitter};
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_its_bound_and_varies() {
        assert_eq!(jitter(0), Duration::ZERO);
        let delays: Vec<Duration> = (0..200).map(|_| jitter(50)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(50)));
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "200 equal delays");
    }

    #[test]
    fn shuffle_delay_is_validated() {
        let mut faults = Faults {
            notify_shuffle_ms: MAX_FAULT_DELAY_MS,
            ..Faults::default()
        };
        assert!(faults.validate().is_ok());
        faults.notify_shuffle_ms = MAX_FAULT_DELAY_MS + 1;
        assert_eq!(
            faults.validate().unwrap_err(),
            format!("notify_shuffle_ms must be at most {MAX_FAULT_DELAY_MS}")
        );
    }
}
