//! The fee column's precision.

use std::fmt;

/// A fee amount in thousandths of a fen (units of 0.00001 yuan), the precision of the bill's
/// `手续费` column. Signed: refund lines can carry a returned fee.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliFen(i64);

impl MilliFen {
    /// Zero.
    pub const ZERO: MilliFen = MilliFen(0);

    /// An amount of `units` thousandths of a fen.
    #[must_use]
    pub const fn new(units: i64) -> Self {
        MilliFen(units)
    }

    /// The amount in thousandths of a fen.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Parses a yuan string with at most five decimals (`"0.00600"`, `"-1.5"`) exactly.
    ///
    /// # Errors
    /// A message naming the problem: not a number, more than five decimals, or overflow.
    pub fn parse_yuan(text: &str) -> Result<Self, String> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
            return Err(format!("{text:?} is not a yuan amount"));
        }
        if frac.len() > 5 {
            return Err(format!("{text:?} has more than five decimals"));
        }
        let overflow = || format!("{text:?} is too large");
        let mut units: i64 = 0;
        for b in whole
            .bytes()
            .chain(frac.bytes())
            .chain(std::iter::repeat_n(b'0', 5 - frac.len()))
        {
            units = units
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        Ok(MilliFen(if negative { -units } else { units }))
    }

    /// The amount as yuan with exactly five decimals, e.g. `"0.00600"` or `"-1.50000"`.
    #[must_use]
    pub fn to_yuan_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:05}", abs / 100_000, abs % 100_000)
    }

    /// `self + other`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: MilliFen) -> Option<MilliFen> {
        self.0.checked_add(other.0).map(MilliFen)
    }
}

impl fmt::Display for MilliFen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yuan_string())
    }
}
