//! Money as integer fen (CNY cents). There is no floating point anywhere in this module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An amount of money in fen (1 yuan = 100 fen). Never negative.
///
/// WeChat Pay transports amounts as integers in fen everywhere except in bills, where they are
/// yuan strings with two decimals; [`Fen::parse_yuan`] converts those exactly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(u64);

/// Why a yuan string could not be turned into fen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text was empty or had characters other than digits and one dot.
    #[error("not a yuan amount: {0:?}")]
    Malformed(String),
    /// More than two decimals (fen is the smallest unit).
    #[error("more than two decimals in yuan amount {0:?}")]
    TooPrecise(String),
    /// A minus sign: amounts are never negative.
    #[error("negative amount {0:?}")]
    Negative(String),
    /// The amount does not fit in 64 bits of fen.
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Fen {
    /// Zero fen.
    pub const ZERO: Fen = Fen(0);

    /// An amount of `fen` fen.
    #[must_use]
    pub const fn new(fen: u64) -> Self {
        Fen(fen)
    }

    /// The amount in fen.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Parses a yuan string such as `"0.01"`, `"12.5"` or `"3"` exactly.
    ///
    /// # Errors
    /// [`MoneyError`] for empty or malformed text, a sign, more than two decimals, or overflow.
    pub fn parse_yuan(text: &str) -> Result<Self, MoneyError> {
        let t = text.trim();
        if t.starts_with('-') {
            return Err(MoneyError::Negative(text.to_owned()));
        }
        let t = t.strip_prefix('+').unwrap_or(t);
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(MoneyError::Malformed(text.to_owned()));
        }
        if frac.len() > 2 {
            return Err(MoneyError::TooPrecise(text.to_owned()));
        }
        let overflow = || MoneyError::Overflow(text.to_owned());
        let mut fen: u64 = 0;
        for b in whole.bytes() {
            fen = fen
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        let mut cents = 0u64;
        for (i, b) in frac.bytes().enumerate() {
            let place = if i == 0 { 10 } else { 1 };
            cents += u64::from(b - b'0') * place;
        }
        fen.checked_mul(100)
            .and_then(|v| v.checked_add(cents))
            .map(Fen)
            .ok_or_else(overflow)
    }

    /// The amount as a yuan string with exactly two decimals, e.g. `"12.50"`.
    #[must_use]
    pub fn to_yuan_string(self) -> String {
        format!("{}.{:02}", self.0 / 100, self.0 % 100)
    }

    /// `self + other`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    /// `self - other`, or `None` when it would be negative.
    #[must_use]
    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    /// `self * n`, or `None` on overflow.
    #[must_use]
    pub fn checked_mul(self, n: u64) -> Option<Fen> {
        self.0.checked_mul(n).map(Fen)
    }
}

impl fmt::Display for Fen {
    /// Displays as fen (the unit every API uses); use [`Fen::to_yuan_string`] for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Fen {
    type Err = MoneyError;

    /// Parses an integer number of fen, as v2 XML carries it (`<total_fee>1</total_fee>`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(MoneyError::Negative(s.to_owned()));
        }
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::Malformed(s.to_owned()));
        }
        t.parse::<u64>()
            .map(Fen)
            .map_err(|_| MoneyError::Overflow(s.to_owned()))
    }
}

impl From<u32> for Fen {
    fn from(v: u32) -> Self {
        Fen(u64::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_parse_exactly() {
        assert_eq!(Fen::parse_yuan("0.01"), Ok(Fen(1)));
        assert_eq!(Fen::parse_yuan("12.5"), Ok(Fen(1250)));
        assert_eq!(Fen::parse_yuan("12.50"), Ok(Fen(1250)));
        assert_eq!(Fen::parse_yuan("3"), Ok(Fen(300)));
        assert_eq!(Fen::parse_yuan("0.1"), Ok(Fen(10)));
        assert_eq!(Fen::parse_yuan(".5"), Ok(Fen(50)));
        assert_eq!(Fen::parse_yuan("3."), Ok(Fen(300)));
        // 0.29 * 100 is 28.999999999999996 in f64: the classic bug the seeds have.
        assert_eq!(Fen::parse_yuan("0.29"), Ok(Fen(29)));
        assert_eq!(Fen::parse_yuan("184467440737095516.15"), Ok(Fen(u64::MAX)));
    }

    #[test]
    fn bad_yuan_strings_are_errors() {
        assert!(matches!(
            Fen::parse_yuan("0.001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Fen::parse_yuan("-1"),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            Fen::parse_yuan("184467440737095516.16"),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            Fen::parse_yuan("99999999999999999999"),
            Err(MoneyError::Overflow(_))
        ));
        for bad in ["", ".", "1e3", "1,00", "¥1", "1.2.3", " ", "0x10", "NaN"] {
            assert!(
                matches!(Fen::parse_yuan(bad), Err(MoneyError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn yuan_string_round_trips() {
        for fen in [0u64, 1, 9, 10, 99, 100, 101, 1250, 123_456_789] {
            let s = Fen(fen).to_yuan_string();
            assert_eq!(Fen::parse_yuan(&s), Ok(Fen(fen)), "{s}");
        }
        assert_eq!(Fen(5).to_yuan_string(), "0.05");
    }

    #[test]
    fn integer_fen_parse_rejects_negatives_and_junk() {
        assert_eq!("42".parse::<Fen>(), Ok(Fen(42)));
        assert!(matches!("-1".parse::<Fen>(), Err(MoneyError::Negative(_))));
        assert!(matches!(
            "1.0".parse::<Fen>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "18446744073709551616".parse::<Fen>(),
            Err(MoneyError::Overflow(_))
        ));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Fen(1).checked_sub(Fen(2)), None);
        assert_eq!(Fen(u64::MAX).checked_add(Fen(1)), None);
        assert_eq!(Fen(3).checked_mul(4), Some(Fen(12)));
    }
}
