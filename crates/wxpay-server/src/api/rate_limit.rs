//! Per-client rate limits of the mini-program API: a token bucket per key (the client IP for
//! `POST /api/login`, the user for `POST /api/orders`), in memory, per instance.
//!
//! A refused request gets 429 `{"code":"rate_limited","message"}` with `Retry-After` (whole
//! seconds until a token is back). The limits are per instance: with several instances behind a
//! load balancer a client gets at most that many times the rate.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Most keys one limiter tracks; beyond it, keys whose bucket is full again are forgotten
/// first, so that a flood of distinct keys cannot grow the map without bound.
pub const MAX_TRACKED_KEYS: usize = 65_536;

pub use crate::config::RateLimit;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A request over its limit: how long until it would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// Time until a token is back.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The answer: 429 `rate_limited` with `Retry-After` in whole seconds (at least 1).
    #[must_use]
    pub fn response(self, what: &str) -> Response {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {what}: retry in {secs} s"),
        )
        .into_response();
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("1")),
        );
        response
    }
}

impl RateLimiter {
    /// A limiter with no keys yet.
    #[must_use]
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    #[must_use]
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token for `key` now.
    ///
    /// # Errors
    /// [`RateLimited`] when the key's bucket is empty (nothing is taken then).
    pub fn check(&self, key: &str) -> Result<(), RateLimited> {
        self.check_at(key, Instant::now())
    }

    /// Takes a token for `key` at `now` (tests pass their own instants).
    ///
    /// # Errors
    /// [`RateLimited`] when the key's bucket is empty.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), RateLimited> {
        if self.limit.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.limit.burst.max(1));
        let per_sec = f64::from(self.limit.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_sec
                    < capacity
            });
            if buckets.len() >= MAX_TRACKED_KEYS {
                // Every tracked key is busy: forget them rather than refuse every newcomer.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(RateLimited {
                retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec),
            })
        }
    }

    /// How many keys are tracked.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The limiters of one instance.
#[derive(Debug)]
pub struct RateLimits {
    /// `POST /api/login`, per client IP.
    pub login: RateLimiter,
    /// `POST /api/orders`, per user.
    pub orders: RateLimiter,
}

impl RateLimits {
    /// The limiters of the configured limits.
    #[must_use]
    pub fn new(login: RateLimit, orders: RateLimit) -> Self {
        RateLimits {
            login: RateLimiter::new(login),
            orders: RateLimiter::new(orders),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_TRACKED_KEYS, RateLimit, RateLimiter};
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_passes_then_one_token_per_interval() {
        let limiter = RateLimiter::new(RateLimit {
            per_minute: 60,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at("1.2.3.4", t0).unwrap();
        }
        let refused = limiter.check_at("1.2.3.4", t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        // Other keys have buckets of their own.
        limiter.check_at("5.6.7.8", t0).unwrap();
        // One token a second comes back, never more than the burst.
        limiter
            .check_at("1.2.3.4", t0 + Duration::from_millis(1000))
            .unwrap();
        assert!(
            limiter
                .check_at("1.2.3.4", t0 + Duration::from_millis(1000))
                .is_err()
        );
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            limiter.check_at("1.2.3.4", later).unwrap();
        }
        assert!(limiter.check_at("1.2.3.4", later).is_err());
    }

    #[test]
    fn zero_per_minute_is_no_limit() {
        let limiter = RateLimiter::new(RateLimit {
            per_minute: 0,
            burst: 1,
        });
        let t0 = Instant::now();
        for _ in 0..1000 {
            limiter.check_at("k", t0).unwrap();
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn the_map_of_keys_stays_bounded() {
        let limiter = RateLimiter::new(RateLimit {
            per_minute: 60,
            burst: 2,
        });
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_KEYS {
            limiter.check_at(&i.to_string(), t0).unwrap();
        }
        assert_eq!(limiter.tracked_keys(), MAX_TRACKED_KEYS);
        // Keys whose bucket refilled are forgotten to make room.
        let later = t0 + Duration::from_secs(10);
        limiter.check_at("newcomer", later).unwrap();
        assert_eq!(limiter.tracked_keys(), 1);
        // When every key is busy, the newcomer still gets its bucket.
        for i in 0..MAX_TRACKED_KEYS {
            limiter.check_at(&i.to_string(), later).unwrap();
        }
        limiter.check_at("another", later).unwrap();
        assert!(limiter.tracked_keys() <= 2, "{}", limiter.tracked_keys());
    }

    #[test]
    fn the_answer_is_429_with_retry_after() {
        let limiter = RateLimiter::new(RateLimit {
            per_minute: 1,
            burst: 1,
        });
        let t0 = Instant::now();
        limiter.check_at("k", t0).unwrap();
        let response = limiter.check_at("k", t0).unwrap_err().response("logins");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "60");
    }
}
