//! Per-client rate limits of the mini-program API: a keyed GCRA limiter (`governor`, the
//! token bucket's equivalent) per key (the client IP for `POST /api/login`, the user for
//! `POST /api/orders` and `GET /api/wxacode`), in memory, per instance.
//!
//! A refused request gets 429 `{"code":"rate_limited","message"}` with `Retry-After` (whole
//! seconds until the next request would pass). The limits are per instance: with several
//! instances behind a load balancer a client gets at most that many times the rate.

use std::num::NonZeroU32;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};

use crate::error::ApiError;

/// Most keys one limiter tracks; beyond it, keys whose bucket is full again are forgotten
/// first, so that a flood of distinct keys cannot grow the map without bound.
pub const MAX_TRACKED_KEYS: usize = 65_536;

pub use crate::config::RateLimit;

type Keyed<C> = Gcra<
    String,
    DashMapStateStore<String>,
    C,
    governor::middleware::NoOpMiddleware<<C as Clock>::Instant>,
>;

/// A limiter per key; `C` is the clock (tests drive a fake one).
pub struct RateLimiter<C: Clock = DefaultClock> {
    limit: RateLimit,
    quota: Option<Quota>,
    clock: C,
    keys: RwLock<Option<Keyed<C>>>,
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
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
    /// A limiter with no keys yet, on the system's monotonic clock.
    #[must_use]
    pub fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter on `clock`.
    #[must_use]
    pub fn with_clock(limit: RateLimit, clock: C) -> Self {
        // A rate of 0 is no limit at all.
        let quota = NonZeroU32::new(limit.per_minute).map(|rate| {
            Quota::per_minute(rate)
                .allow_burst(NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN))
        });
        let keys = quota.map(|q| Gcra::dashmap_with_clock(q, clock.clone()));
        RateLimiter {
            limit,
            quota,
            clock,
            keys: RwLock::new(keys),
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
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let key = key.to_owned();
        {
            let guard = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(keys) = guard.as_ref()
                && keys.len() < MAX_TRACKED_KEYS
            {
                return self.decide(keys, &key);
            }
        }
        let mut guard = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let keys = guard.get_or_insert_with(|| Gcra::dashmap_with_clock(quota, self.clock.clone()));
        if keys.len() >= MAX_TRACKED_KEYS {
            keys.retain_recent();
            keys.shrink_to_fit();
            if keys.len() >= MAX_TRACKED_KEYS {
                // Every tracked key is busy: forget them rather than refuse every newcomer.
                *keys = Gcra::dashmap_with_clock(quota, self.clock.clone());
            }
        }
        self.decide(keys, &key)
    }

    fn decide(&self, keys: &Keyed<C>, key: &String) -> Result<(), RateLimited> {
        keys.check_key(key).map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// How many keys are tracked.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, Gcra::len)
    }
}

/// The limiters of one instance.
#[derive(Debug)]
pub struct RateLimits {
    /// `POST /api/login`, per client IP.
    pub login: RateLimiter,
    /// `POST /api/orders`, per user.
    pub orders: RateLimiter,
    /// `GET /api/wxacode`, per user (the admin token is one user).
    pub wxacode: RateLimiter,
}

impl RateLimits {
    /// The limiters of the given limits (`GET /api/wxacode` gets its default one).
    #[must_use]
    pub fn new(login: RateLimit, orders: RateLimit) -> Self {
        RateLimits {
            login: RateLimiter::new(login),
            orders: RateLimiter::new(orders),
            wxacode: RateLimiter::new(crate::config::Settings::default().rate_limit_wxacode),
        }
    }

    /// The limiters of the configured limits.
    #[must_use]
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        RateLimits {
            login: RateLimiter::new(settings.rate_limit_login),
            orders: RateLimiter::new(settings.rate_limit_orders),
            wxacode: RateLimiter::new(settings.rate_limit_wxacode),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::{MAX_TRACKED_KEYS, RateLimit, RateLimiter};

    fn limiter(per_minute: u32, burst: u32) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            RateLimiter::with_clock(RateLimit { per_minute, burst }, clock.clone()),
            clock,
        )
    }

    #[test]
    fn a_burst_passes_then_one_token_per_interval() {
        let (limiter, clock) = limiter(60, 3);
        for _ in 0..3 {
            limiter.check("1.2.3.4").unwrap();
        }
        let refused = limiter.check("1.2.3.4").unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        // Other keys have buckets of their own.
        limiter.check("5.6.7.8").unwrap();
        // One token a second comes back, never more than the burst.
        clock.advance(Duration::from_millis(1000));
        limiter.check("1.2.3.4").unwrap();
        assert!(limiter.check("1.2.3.4").is_err());
        clock.advance(Duration::from_secs(3600));
        for _ in 0..3 {
            limiter.check("1.2.3.4").unwrap();
        }
        assert!(limiter.check("1.2.3.4").is_err());
    }

    #[test]
    fn zero_per_minute_is_no_limit() {
        let (limiter, _) = limiter(0, 1);
        for _ in 0..1000 {
            limiter.check("k").unwrap();
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn the_map_of_keys_stays_bounded() {
        let (limiter, clock) = limiter(60, 2);
        for i in 0..MAX_TRACKED_KEYS {
            limiter.check(&i.to_string()).unwrap();
        }
        assert_eq!(limiter.tracked_keys(), MAX_TRACKED_KEYS);
        // Keys whose bucket refilled are forgotten to make room.
        clock.advance(Duration::from_secs(10));
        limiter.check("newcomer").unwrap();
        assert_eq!(limiter.tracked_keys(), 1);
        // When every key is busy, the newcomer still gets its bucket.
        for i in 0..MAX_TRACKED_KEYS {
            limiter.check(&i.to_string()).unwrap();
        }
        limiter.check("another").unwrap();
        assert!(limiter.tracked_keys() <= 2, "{}", limiter.tracked_keys());
    }

    #[test]
    fn the_answer_is_429_with_retry_after() {
        let (limiter, _) = limiter(1, 1);
        limiter.check("k").unwrap();
        let response = limiter.check("k").unwrap_err().response("logins");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "60");
    }
}
