//! The request rules that API v2 and API v3 share (lengths, character sets, notify URLs), in
//! one place. Each returns [`Error::InvalidRequest`] with a message naming the field and the
//! rule, never echoing a value that could be secret.

use crate::error::Error;
use crate::money::Fen;

pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest(message.into())
}

/// Text of `min..=max` characters without control characters.
///
/// # Errors
/// [`Error::InvalidRequest`] naming `field`.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), Error> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(invalid(format!(
            "{field} must have {min} to {max} characters, not {len}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// [`text`] of 1 to `max` characters, when present.
///
/// # Errors
/// [`Error::InvalidRequest`] naming `field`.
pub fn opt_text(field: &str, value: Option<&str>, max: usize) -> Result<(), Error> {
    value.map_or(Ok(()), |v| text(field, v, 1, max))
}

/// An amount of at least 1 fen that fits WeChat's 32-bit `Int`.
///
/// # Errors
/// [`Error::InvalidRequest`] naming `field`.
pub fn amount(field: &str, amount: Fen) -> Result<(), Error> {
    if amount.get() == 0 {
        return Err(invalid(format!("{field} must be at least 1 fen")));
    }
    if amount.get() > i32::MAX as u64 {
        return Err(invalid(format!(
            "{field} is over the largest amount WeChat accepts"
        )));
    }
    Ok(())
}

/// A `transaction_id`: 1 to 32 letters or digits.
///
/// # Errors
/// [`Error::InvalidRequest`].
pub fn transaction_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("transaction_id must be 1 to 32 letters or digits"));
    }
    Ok(())
}

/// The longest v2 `notify_url`.
pub const V2_NOTIFY_URL_MAX: usize = 256;
/// The longest v3 `notify_url` (one less than v2's).
pub const V3_NOTIFY_URL_MAX: usize = 255;

/// A `notify_url`: an absolute `http(s)` URL with a host, no query string, no fragment, at most
/// `max` characters ([`V2_NOTIFY_URL_MAX`] or [`V3_NOTIFY_URL_MAX`]).
///
/// # Errors
/// [`Error::InvalidRequest`] saying what is wrong.
pub fn notify_url(url: &str, max: usize) -> Result<(), Error> {
    if url.len() > max {
        return Err(invalid(format!(
            "notify_url must have at most {max} characters"
        )));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("notify_url must be an absolute http:// or https:// URL"))?;
    if url.contains('?') {
        return Err(invalid("notify_url must not have a query string"));
    }
    if url.contains('#') {
        return Err(invalid("notify_url must not have a fragment"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "notify_url must not contain spaces or control characters",
        ));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Err(invalid("notify_url must name a host (and no user info)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_urls_differ_only_in_length() {
        assert!(notify_url("https://example.com/notify", V3_NOTIFY_URL_MAX).is_ok());
        let long = format!("https://example.com/{}", "n".repeat(236));
        assert_eq!(long.len(), 256);
        assert!(notify_url(&long, V2_NOTIFY_URL_MAX).is_ok());
        assert!(notify_url(&long, V3_NOTIFY_URL_MAX).is_err());
        for bad in [
            "https://example.com/notify?x=1",
            "/notify",
            "ftp://a.com/n",
            "https:///n",
            "https://a.com/n#f",
            "https://u@a.com/n",
            "https://a.com/a b",
        ] {
            assert!(notify_url(bad, V2_NOTIFY_URL_MAX).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_and_amount_rules() {
        assert!(text("body", "a", 1, 2).is_ok());
        assert!(text("body", "", 1, 2).is_err());
        assert!(text("body", "a\u{0}", 1, 2).is_err());
        assert!(opt_text("attach", None, 1).is_ok());
        assert!(amount("total", Fen::ZERO).is_err());
        assert!(amount("total", Fen::new(u64::from(u32::MAX))).is_err());
        assert!(transaction_id("4200000000000000000000000000").is_ok());
        assert!(transaction_id("42-00").is_err());
    }
}
