//! The simulator clock and the time formats WeChat writes (all in GMT+8), in Unix seconds over
//! `wxpay::time`.

use std::sync::atomic::{AtomicI64, Ordering};

use time::{Date, OffsetDateTime};
use wxpay::nonce::Clock;

/// China Standard Time, in which WeChat writes every time (defined once, in `wxpay::time`).
pub use wxpay::time::BEIJING as CST;

// ---------------------------------------------------------------------------------------------
// Clock

/// The simulator clock: the system clock plus an offset that tests move forward with
/// `POST /sim/clock/advance`, to expire prepay ids and orders without waiting.
#[derive(Debug, Default)]
pub struct SimClock {
    offset_secs: AtomicI64,
}

impl SimClock {
    /// A clock at the system time.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `seconds` (negative moves it back). Returns the new offset.
    pub fn advance(&self, seconds: i64) -> i64 {
        self.offset_secs.fetch_add(seconds, Ordering::SeqCst) + seconds
    }

    /// The current offset from the system clock, in seconds.
    #[must_use]
    pub fn offset(&self) -> i64 {
        self.offset_secs.load(Ordering::SeqCst)
    }

    /// The current simulated time.
    #[must_use]
    pub fn now_datetime(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.now()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl Clock for SimClock {
    fn now(&self) -> i64 {
        OffsetDateTime::now_utc().unix_timestamp() + self.offset()
    }
}

// ---------------------------------------------------------------------------------------------
// Time formats

// The shapes are `wxpay::time`'s; these name them in Unix seconds, the simulator's unit.

/// RFC 3339 in GMT+8, as v3 writes times: `2018-06-08T10:34:56+08:00`.
#[must_use]
pub fn rfc3339_cst(unix: i64) -> String {
    wxpay::time::format_v3(wxpay::time::beijing_unix(unix))
}

/// `yyyyMMddHHmmss` in GMT+8, as v2 writes `time_end` and `time_expire`.
#[must_use]
pub fn v2_time(unix: i64) -> String {
    wxpay::time::format_v2(wxpay::time::beijing_unix(unix))
}

/// `yyyy-MM-dd HH:mm:ss` in GMT+8, as v2 writes refund success times and bills write every time.
#[must_use]
pub fn dashed_time(unix: i64) -> String {
    wxpay::time::format_dashed(wxpay::time::beijing_unix(unix))
}

/// The GMT+8 calendar date of a Unix time (bills are per GMT+8 day).
#[must_use]
pub fn cst_date(unix: i64) -> Date {
    wxpay::time::beijing_unix(unix).date()
}

/// Parses a v2 `yyyyMMddHHmmss` time (GMT+8) to Unix seconds.
#[must_use]
pub fn parse_v2_time(text: &str) -> Option<i64> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    wxpay::time::parse_v2(text)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Parses an RFC 3339 time with an offset (v3 `time_expire`) to Unix seconds.
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    wxpay::time::parse_v3(text)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

pub(super) fn yyyymmdd(unix: i64) -> String {
    wxpay::time::format_compact_date(cst_date(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(rfc3339_cst(1_554_208_460), "2019-04-02T20:34:20+08:00");
        assert_eq!(v2_time(1_554_208_460), "20190402203420");
        assert_eq!(dashed_time(1_554_208_460), "2019-04-02 20:34:20");
        assert_eq!(parse_v2_time("20190402203420"), Some(1_554_208_460));
        assert_eq!(
            parse_rfc3339("2019-04-02T20:34:20+08:00"),
            Some(1_554_208_460)
        );
        assert_eq!(parse_v2_time("2019040220342"), None);
    }
}
