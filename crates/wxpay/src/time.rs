//! WeChat's times, defined once for the whole workspace.
//!
//! WeChat writes every time as Beijing wall time (GMT+8, no daylight saving), in three shapes:
//!
//! - API v2: `yyyyMMddHHmmss` (`time_end`, `time_start`, `time_expire`), see [`format_v2`] and
//!   [`parse_v2`];
//! - API v2 refund success times and every time in a bill: `yyyy-MM-dd HH:mm:ss`, see
//!   [`format_dashed`] and [`parse_dashed`];
//! - API v3: RFC 3339 with the `+08:00` offset, e.g. `2018-06-08T10:34:56+08:00`, see
//!   [`format_v3`], [`parse_v3`] and the serde helpers [`v3`] and [`v3::option`].
//!
//! Bills are per Beijing day: [`beijing_date`].
//!
//! This is the only place in the workspace that defines the +8 offset or these formats; the test
//! `one_definition_of_the_offset` reads every `.rs` file of the workspace (fuzz targets
//! included) and fails when another definition appears. By hand:
//! `grep -rnE 'offset!\(\+0?8|from_hms\(8' crates fuzz --include=*.rs` prints one line.

use ::time::format_description::BorrowedFormatItem;
use ::time::format_description::well_known::Rfc3339;
use ::time::macros::{format_description, offset};
use ::time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Beijing time, GMT+8: the offset of every time WeChat writes.
pub const BEIJING: UtcOffset = offset!(+8);

const V2_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day][hour][minute][second]");
const DASHED_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const COMPACT_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day]");
const DASHED_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// A text that is not a time of the expected shape. Its message quotes the text and names the
/// shape; it never carries anything secret (times are not).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {shape} time")]
pub struct InvalidTime {
    text: String,
    shape: &'static str,
}

impl InvalidTime {
    fn new(text: &str, shape: &'static str) -> Self {
        InvalidTime {
            text: text.to_owned(),
            shape,
        }
    }
}

/// The time in Beijing (same instant, GMT+8 offset).
#[must_use]
pub fn beijing(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(BEIJING)
}

/// A Unix time (seconds) in Beijing; out-of-range values give the epoch.
#[must_use]
pub fn beijing_unix(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(BEIJING)
}

/// The Beijing calendar day of an instant (bills are per Beijing day).
#[must_use]
pub fn beijing_date(t: OffsetDateTime) -> Date {
    beijing(t).date()
}

/// A Beijing wall time (as a bill writes it) as an instant.
#[must_use]
pub fn from_beijing_wall(t: PrimitiveDateTime) -> OffsetDateTime {
    t.assume_offset(BEIJING)
}

fn format_with(t: OffsetDateTime, format: &[BorrowedFormatItem<'_>]) -> String {
    let t = beijing(t);
    // Only years outside 0..=9999 fail to format; they cannot be sent to WeChat either, and
    // the request validators refuse them before anything is written.
    t.format(format).unwrap_or_else(|_| t.to_string())
}

/// `yyyyMMddHHmmss` in Beijing time, as API v2 writes `time_end` and takes `time_expire`.
#[must_use]
pub fn format_v2(t: OffsetDateTime) -> String {
    format_with(t, V2_FORMAT)
}

/// Parses a v2 `yyyyMMddHHmmss` Beijing time.
///
/// # Errors
/// [`InvalidTime`] for any other text.
pub fn parse_v2(text: &str) -> Result<OffsetDateTime, InvalidTime> {
    PrimitiveDateTime::parse(text, V2_FORMAT)
        .map(from_beijing_wall)
        .map_err(|_| InvalidTime::new(text, "yyyyMMddHHmmss"))
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, as API v2 writes refund success times.
#[must_use]
pub fn format_dashed(t: OffsetDateTime) -> String {
    format_with(t, DASHED_FORMAT)
}

/// Parses a `yyyy-MM-dd HH:mm:ss` Beijing time.
///
/// # Errors
/// [`InvalidTime`] for any other text.
pub fn parse_dashed(text: &str) -> Result<OffsetDateTime, InvalidTime> {
    parse_dashed_wall(text).map(from_beijing_wall)
}

/// Parses a `yyyy-MM-dd HH:mm:ss` wall time without placing it (bills keep wall times).
///
/// # Errors
/// [`InvalidTime`] for any other text.
pub fn parse_dashed_wall(text: &str) -> Result<PrimitiveDateTime, InvalidTime> {
    PrimitiveDateTime::parse(text, DASHED_FORMAT)
        .map_err(|_| InvalidTime::new(text, "yyyy-MM-dd HH:mm:ss"))
}

/// Writes a wall time as `yyyy-MM-dd HH:mm:ss` (bills).
#[must_use]
pub fn format_dashed_wall(t: PrimitiveDateTime) -> String {
    t.format(DASHED_FORMAT).unwrap_or_else(|_| t.to_string())
}

/// RFC 3339 in Beijing time, as API v3 writes and takes times: `2018-06-08T10:34:56+08:00`.
#[must_use]
pub fn format_v3(t: OffsetDateTime) -> String {
    format_with(t, V3_FORMAT)
}

// RFC 3339 with whole seconds; the `time` crate's Rfc3339 would also write fractions when a
// value has them, and WeChat's times never do.
const V3_FORMAT: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);

/// Parses an RFC 3339 time (any offset; WeChat sends `+08:00`). The offset is kept, so that
/// [`format_v3`] of a `+08:00` time gives back the same text.
///
/// # Errors
/// [`InvalidTime`] for text that is not RFC 3339.
pub fn parse_v3(text: &str) -> Result<OffsetDateTime, InvalidTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| InvalidTime::new(text, "RFC 3339"))
}

/// `yyyyMMdd` (v2 `bill_date`).
#[must_use]
pub fn format_compact_date(date: Date) -> String {
    date.format(COMPACT_DATE)
        .unwrap_or_else(|_| date.to_string())
}

/// `yyyy-MM-dd` (v3 `bill_date`).
#[must_use]
pub fn format_dashed_date(date: Date) -> String {
    date.format(DASHED_DATE)
        .unwrap_or_else(|_| date.to_string())
}

/// Parses `yyyy-MM-dd`.
///
/// # Errors
/// [`InvalidTime`] for any other text.
pub fn parse_dashed_date(text: &str) -> Result<Date, InvalidTime> {
    Date::parse(text, DASHED_DATE).map_err(|_| InvalidTime::new(text, "yyyy-MM-dd"))
}

/// Serde helpers for v3 times: `#[serde(with = "wxpay::time::v3")]` on an [`OffsetDateTime`]
/// reads any RFC 3339 time and writes `+08:00` RFC 3339; [`v3::option`] does the same for an
/// `Option<OffsetDateTime>` (absent and `null` are `None`).
pub mod v3 {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::OffsetDateTime;

    /// Serializes as `2018-06-08T10:34:56+08:00`.
    ///
    /// # Errors
    /// For a year outside 0..=9999.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        let t = super::beijing(*t);
        let text = t
            .format(super::V3_FORMAT)
            .map_err(|e| serde::ser::Error::custom(format!("time: {e}")))?;
        serializer.serialize_str(&text)
    }

    /// Deserializes an RFC 3339 string.
    ///
    /// # Errors
    /// When the value is not an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        super::parse_v3(&text).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<OffsetDateTime>`; use with `#[serde(default)]`.
    pub mod option {
        use serde::{Deserialize as _, Deserializer, Serializer};

        use super::OffsetDateTime;

        /// Serializes `Some` as v3 text and `None` as `null` (skip it with
        /// `skip_serializing_if = "Option::is_none"`).
        ///
        /// # Errors
        /// For a year outside 0..=9999.
        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Deserializes an RFC 3339 string or `null`.
        ///
        /// # Errors
        /// When the value is neither.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
                Some(text) => super::super::parse_v3(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ::time::macros::{date, datetime};

    use super::*;

    #[test]
    fn v2_times_are_beijing_wall_times() {
        let t = parse_v2("20091225091010").unwrap();
        assert_eq!(t, datetime!(2009-12-25 09:10:10 +08:00));
        assert_eq!(format_v2(t.to_offset(UtcOffset::UTC)), "20091225091010");
        assert_eq!(
            format_v2(datetime!(2024-01-02 03:04:05 UTC)),
            "20240102110405"
        );
        assert_eq!(format_dashed(t), "2009-12-25 09:10:10");
        assert_eq!(parse_dashed("2009-12-25 09:10:10").unwrap(), t);
        assert!(parse_v2("2009122509101").is_err());
        assert!(parse_dashed("20091225091010").is_err());
        assert_eq!(
            parse_v2("2009").unwrap_err().to_string(),
            "\"2009\" is not a yyyyMMddHHmmss time"
        );
    }

    #[test]
    fn v3_times_round_trip_as_sent() {
        let text = "2018-06-08T10:34:56+08:00";
        let t = parse_v3(text).unwrap();
        assert_eq!(format_v3(t), text);
        assert_eq!(format_v3(datetime!(2018-06-08 02:34:56 UTC)), text);
        assert_eq!(parse_v3("2018-06-08T02:34:56Z").unwrap(), t);
        assert!(parse_v3("2018-06-08 10:34:56").is_err());
        assert_eq!(
            format_v3(beijing_unix(1_554_208_460)),
            "2019-04-02T20:34:20+08:00"
        );
    }

    #[test]
    fn serde_helpers_keep_the_wire_text() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "v3")]
            at: OffsetDateTime,
            #[serde(default, with = "v3::option", skip_serializing_if = "Option::is_none")]
            maybe: Option<OffsetDateTime>,
        }
        let json = r#"{"at":"2026-11-24T10:00:00+08:00","maybe":"2026-11-24T10:00:01+08:00"}"#;
        let t: T = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), json);
        let t: T =
            serde_json::from_str(r#"{"at":"2026-11-24T10:00:00+08:00","maybe":null}"#).unwrap();
        assert_eq!(t.maybe, None);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"at":"2026-11-24T10:00:00+08:00"}"#
        );
        assert!(serde_json::from_str::<T>(r#"{"at":"yesterday"}"#).is_err());
    }

    /// Every `.rs` file of the workspace (crates and fuzz targets), comments aside, defines the
    /// +8 offset at most here.
    #[test]
    fn one_definition_of_the_offset() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "target" && !name.starts_with('.') && name != "node_modules" {
                        walk(&path, out);
                    }
                } else if name.ends_with(".rs") {
                    out.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        walk(&root.join("crates"), &mut files);
        walk(&root.join("fuzz"), &mut files);
        // Built here so that this test does not find itself.
        let patterns = [
            format!("offset!({}8", '+'),
            format!("offset!({}08", '+'),
            format!("from_hms({}", 8),
            format!("from_whole_seconds({}", 8 * 3600),
        ];
        let mut found = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if patterns
                    .iter()
                    .any(|p| code.replace(' ', "").contains(p.as_str()))
                {
                    found.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("time.rs"), "{found:#?}");
    }

    #[test]
    fn dates_are_beijing_days() {
        assert_eq!(
            beijing_date(datetime!(2024-03-04 16:00:00 UTC)),
            date!(2024 - 03 - 05)
        );
        assert_eq!(format_compact_date(date!(2024 - 03 - 05)), "20240305");
        assert_eq!(format_dashed_date(date!(2024 - 03 - 05)), "2024-03-05");
        assert_eq!(
            parse_dashed_date("2024-03-05").unwrap(),
            date!(2024 - 03 - 05)
        );
    }
}
