//! Merchant webhooks from the outbox.
//!
//! Each event is POSTed as JSON `{"id","type","created_at","data"}` (`created_at` in Unix
//! milliseconds, `data` the order or the refund) with the header
//! `Wxpay-Signature: t=TIMESTAMP,v1=HEX`, where HEX is the HMAC-SHA256 under
//! `WXPAY_WEBHOOK_SECRET` of `TIMESTAMP.BODY` (Unix seconds, a dot, the exact body bytes). A 2xx
//! answer acknowledges it; anything else is retried with exponential backoff. The `id` is the
//! same on every attempt: receivers dedupe on it.

use std::time::Duration;

use aws_lc_rs::hmac;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::{ExecutionOutcome, JobError, Jobs, ms};
use crate::store::{OutboxEvent, WebhookAttempt, now_ms};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Wxpay-Signature";

/// How far a signature's timestamp may be from now when verified, in seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a webhook signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookSignatureError {
    /// The header is not `t=...,v1=...`.
    #[error("malformed Wxpay-Signature header")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the tolerance")]
    Expired,
    /// No `v1` signature matches.
    #[error("signature does not match")]
    Mismatch,
}

/// The `Wxpay-Signature` value of `body` at `timestamp` (Unix seconds).
#[must_use]
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("t={timestamp},v1={}", hex::encode(context.sign().as_ref()))
}

/// Verifies a `Wxpay-Signature` header over the raw body, as a receiver does: the timestamp
/// within `tolerance_secs` of `now` (Unix seconds), and one `v1` that matches (compared in
/// constant time).
///
/// # Errors
/// [`WebhookSignatureError`].
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), WebhookSignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(
                    t.parse::<i64>()
                        .map_err(|_| WebhookSignatureError::Malformed)?,
                )
            }
            Some(("v1", v)) => {
                signatures.push(hex::decode(v).map_err(|_| WebhookSignatureError::Malformed)?)
            }
            Some(_) => {}
            None => return Err(WebhookSignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(WebhookSignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(WebhookSignatureError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(WebhookSignatureError::Expired);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(body.len() + 16);
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    if signatures
        .iter()
        .any(|s| hmac::verify(&key, &message, s).is_ok())
    {
        Ok(())
    } else {
        Err(WebhookSignatureError::Mismatch)
    }
}

/// The body of an event's webhook.
///
/// # Errors
/// [`JobError::Other`] when the stored payload is not JSON.
pub fn body(event: &OutboxEvent) -> Result<Vec<u8>, JobError> {
    let data: Value = serde_json::from_str(&event.payload)
        .map_err(|e| JobError::Other(format!("outbox event {} payload: {e}", event.event_id)))?;
    let envelope = json!({
        "id": event.event_id,
        "type": event.event_type,
        "created_at": event.created_at,
        "data": data,
    });
    serde_json::to_vec(&envelope).map_err(|e| JobError::Other(e.to_string()))
}

/// The delay before attempt `attempts + 1`: `base * 2^attempts`, at most `cap`.
#[must_use]
pub fn backoff(base: Duration, cap: Duration, attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    base.saturating_mul(2u32.saturating_pow(exponent)).min(cap)
}

/// Delivers one batch of due events (concurrently), recording each attempt.
///
/// # Errors
/// [`JobError::Store`].
pub async fn deliver_due(jobs: &Jobs) -> Result<ExecutionOutcome, JobError> {
    let settings = &jobs.settings;
    let (Some(url), Some(secret)) = (&settings.webhook_url, &settings.webhook_secret) else {
        return Ok(ExecutionOutcome::EmptyQueue);
    };
    let o = &jobs.options;
    let events = jobs
        .store
        .lease_due_webhooks(&o.owner, ms(o.lease), o.batch_size)
        .await?;
    if events.is_empty() {
        return Ok(ExecutionOutcome::EmptyQueue);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for event in events {
        let jobs = jobs.clone();
        let url = url.clone();
        let secret = secret.expose_secret().as_bytes().to_vec();
        tasks.spawn(async move {
            let attempt = attempt(&jobs, &url, &secret, &event).await;
            let recorded = jobs
                .store
                .record_webhook_attempt(&event, &jobs.options.owner, &attempt)
                .await;
            (event, attempt, recorded)
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (event, attempt, recorded) =
            joined.map_err(|e| JobError::Other(format!("webhook task: {e}")))?;
        let result = match &attempt {
            WebhookAttempt::Delivered { .. } => "delivered",
            WebhookAttempt::Failed { .. } => "failed",
        };
        crate::metrics::webhook_delivery(&event.event_type, result);
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event_id = %event.event_id, "webhook lease lost before the attempt was recorded")
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(ExecutionOutcome::TaskCompleted),
    }
}

async fn attempt(jobs: &Jobs, url: &str, secret: &[u8], event: &OutboxEvent) -> WebhookAttempt {
    let o = &jobs.options;
    let retry_at = now_ms()
        + ms(backoff(
            o.webhook_backoff,
            o.webhook_backoff_cap,
            event.attempts,
        ));
    let body = match body(event) {
        Ok(b) => b,
        Err(e) => {
            return WebhookAttempt::Failed {
                error: e.to_string(),
                retry_at,
            };
        }
    };
    let signature = sign(secret, now_ms() / 1000, &body);
    let answer = jobs
        .http
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header("Wxpay-Event-Id", &event.event_id)
        .body(body)
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => WebhookAttempt::Delivered {
            status: response.status().as_u16(),
        },
        Ok(response) => WebhookAttempt::Failed {
            error: format!("HTTP {}", response.status().as_u16()),
            retry_at,
        },
        Err(e) => WebhookAttempt::Failed {
            error: e.without_url().to_string(),
            retry_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let header = sign(b"0123456789abcdef", 1_700_000_000, b"{\"id\":\"evt_1\"}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify(
                b"0123456789abcdef",
                &header,
                b"{\"id\":\"evt_1\"}",
                1_700_000_100,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                b"0123456789abcdef",
                &header,
                b"{\"id\":\"evt_2\"}",
                1_700_000_100,
                300
            ),
            Err(WebhookSignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another secret!!",
                &header,
                b"{\"id\":\"evt_1\"}",
                1_700_000_100,
                300
            ),
            Err(WebhookSignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"0123456789abcdef",
                &header,
                b"{\"id\":\"evt_1\"}",
                1_700_001_000,
                300
            ),
            Err(WebhookSignatureError::Expired)
        );
        assert_eq!(
            verify(b"k", "v1=00", b"", 0, 300),
            Err(WebhookSignatureError::Malformed)
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '42.{}' | openssl dgst -sha256 -hmac secret
        let header = sign(b"secret", 42, b"{}");
        assert_eq!(
            header,
            "t=42,v1=ee559adbff530cab6563962ca22cb4ddedc72cf238a92121369139968f86bc26"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(5);
        let cap = Duration::from_secs(3600);
        assert_eq!(backoff(base, cap, 0), Duration::from_secs(5));
        assert_eq!(backoff(base, cap, 3), Duration::from_secs(40));
        assert_eq!(backoff(base, cap, 20), cap);
        assert_eq!(backoff(base, cap, i64::MAX), cap);
    }
}
