//! `wxpay sign v2` and `wxpay sign v3`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use wxpay::v2::SignType;
use wxpay::v2::sign::{constant_time_eq_ignore_case, sign, string_to_sign};
use wxpay::v2::xml::{self, MAX_XML_BYTES};
use wxpay::v3::auth::{Authorization, request_message};

use crate::cli::{SignV2Args, SignV3Args};
use crate::failure::Failure;
use crate::input;

/// Signs the v2 parameters read from `stdin`; writes the sign to `out`, diagnostics to `err`.
///
/// # Errors
/// [`Failure::Input`] for a key that is not 32 visible characters or input that is not a flat JSON object or `<xml>` document.
pub fn v2(
    args: &SignV2Args,
    stdin: impl Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    crate::input::check_v2_key(&args.key)?;
    let bytes = input::read_limited(stdin, MAX_XML_BYTES as u64, "stdin")?;
    let params = parse_v2_params(&bytes)?;
    let sign_type = if args.hmac {
        SignType::HmacSha256
    } else {
        SignType::Md5
    };
    let pairs = || params.iter().map(|(k, v)| (k.as_str(), v.as_str()));

    // The classic mistake: the order says HMAC-SHA256 and the sign is computed with MD5 (or the
    // reverse). The sign is still printed as asked; the mismatch is pointed out.
    if let Some(declared) = params.get("sign_type").filter(|t| !t.is_empty())
        && declared.as_str() != sign_type.as_str()
    {
        let hint = if args.hmac {
            "drop --hmac"
        } else {
            "pass --hmac"
        };
        diag(
            err,
            &format!(
                "warning: the input's sign_type is {declared:?} but the sign is computed with {sign_type} ({hint} to match it)"
            ),
        )?;
    }

    let computed = sign(pairs(), &args.key, sign_type);
    if args.verbose {
        diag(
            err,
            &format!("string to sign: {}&key=<key>", string_to_sign(pairs())),
        )?;
        diag(err, &format!("algorithm: {sign_type}"))?;
        if let Some(given) = params.get("sign") {
            let verdict = if constant_time_eq_ignore_case(&computed, given) {
                "matches the computed sign"
            } else {
                "differs from the computed sign"
            };
            diag(
                err,
                &format!("the input's sign field is not signed; it {verdict}"),
            )?;
        }
    }
    emit(out, &computed)
}

/// Signs a v3 request; writes the `Authorization` header value to `out`.
///
/// # Errors
/// [`Failure::Input`] for an unreadable key or body file, or a value that cannot go in the header.
pub fn v3(args: &SignV3Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    // These values are written inside `key="value"` items separated by commas.
    input::check_token(&args.mchid, "--mchid", 64, &['"', ','])?;
    input::check_token(&args.serial, "--serial", 128, &['"', ','])?;
    let method = args.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Failure::input(format!(
            "--method {:?} is not an HTTP method",
            args.method
        )));
    }
    let url = canonical_url(&args.url)?;
    let nonce = args.nonce.clone().unwrap_or_else(wxpay::nonce::nonce);
    input::check_token(&nonce, "--nonce", 64, &['"', ','])?;
    let timestamp = match args.timestamp {
        Some(t) => t,
        None => input::now()?,
    };
    let key = input::private_key(&args.private_key)?;
    let body = input::read_body(args.body_file.as_deref())?;

    if args.verbose {
        let message = request_message(&method, url, timestamp, &nonce, &body);
        diag(err, "message signed (each line ends with \\n):")?;
        err.write_all(&message)
            .map_err(|e| Failure::input(format!("cannot write to stderr: {e}")))?;
    }
    let auth = Authorization::sign(
        &key,
        &args.mchid,
        &args.serial,
        &method,
        url,
        timestamp,
        &nonce,
        &body,
    )
    .map_err(|e| Failure::input(format!("signing failed: {e}")))?;
    emit(out, &auth.to_header_value())
}

/// The canonical URL is what is on the wire after the host: a full URL is a mistake worth
/// naming, since signing it gives a signature WeChat Pay rejects.
fn canonical_url(url: &str) -> Result<&str, Failure> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(Failure::input(format!(
            "--url must be the path and query as sent (e.g. /v3/pay/transactions/jsapi), not a full URL: {url}"
        )));
    }
    if !url.starts_with('/') {
        return Err(Failure::input(format!("--url must start with '/': {url}")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Failure::input(
            "--url contains whitespace; percent-encode it exactly as it is sent",
        ));
    }
    Ok(url)
}

/// Reads v2 parameters: an `<xml>` document through the safe codec, or a flat JSON object.
fn parse_v2_params(bytes: &[u8]) -> Result<BTreeMap<String, String>, Failure> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(Failure::input(
            "stdin is empty; pipe in a JSON object or an <xml> document",
        )),
        Some(b'<') => xml::decode(bytes).map_err(|e| Failure::input(format!("stdin: {e}"))),
        Some(b'{') => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| Failure::input("stdin: JSON is not UTF-8"))?;
            let mut de = serde_json::Deserializer::from_str(text);
            let params = de
                .deserialize_map(FlatParamsVisitor)
                .and_then(|p| de.end().map(|()| p))
                .map_err(|e| Failure::input(format!("stdin: {e}")))?;
            Ok(params)
        }
        Some(_) => Err(Failure::input(
            "stdin must hold a JSON object or an <xml> document",
        )),
    }
}

/// Reads a JSON object of string and number values, keeping numbers as written (`1.50` stays
/// `1.50`: the sign is over the text), and refusing duplicate names, which a map would hide.
struct FlatParamsVisitor;

impl<'de> Visitor<'de> for FlatParamsVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object whose values are strings or numbers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut params = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let raw: &RawValue = map.next_value()?;
            if name.is_empty() {
                return Err(de::Error::custom("a parameter name is empty"));
            }
            let value = scalar_text(&name, raw.get()).map_err(de::Error::custom)?;
            if params.contains_key(&name) {
                return Err(de::Error::custom(format!(
                    "parameter {name:?} appears twice"
                )));
            }
            params.insert(name, value);
        }
        Ok(params)
    }
}

fn scalar_text(name: &str, raw: &str) -> Result<String, String> {
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw).map_err(|e| e.to_string()),
        Some(b'-' | b'0'..=b'9') => Ok(raw.to_owned()),
        Some(b'{' | b'[') => Err(format!(
            "parameter {name:?} is nested; v2 parameters are flat (pass nested data such as `detail` as a JSON string)"
        )),
        _ => Err(format!(
            "parameter {name:?} is {raw}; v2 parameter values must be strings or numbers"
        )),
    }
}

pub(crate) fn emit(out: &mut dyn Write, line: &str) -> Result<(), Failure> {
    writeln!(out, "{line}").map_err(|e| Failure::input(format!("cannot write to stdout: {e}")))
}

pub(crate) fn diag(err: &mut dyn Write, line: &str) -> Result<(), Failure> {
    writeln!(err, "{line}").map_err(|e| Failure::input(format!("cannot write to stderr: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_keep_their_text_and_nesting_is_refused() {
        let p = parse_v2_params(br#"{"total_fee": 1.50, "body": "a\"b", "n": -3}"#).unwrap();
        assert_eq!(p["total_fee"], "1.50");
        assert_eq!(p["body"], "a\"b");
        assert_eq!(p["n"], "-3");
        let e = parse_v2_params(br#"{"detail": {"a": 1}}"#).unwrap_err();
        assert!(
            matches!(&e, Failure::Input(m) if m.contains("nested")),
            "{e:?}"
        );
        let e = parse_v2_params(br#"{"a": "1", "a": "2"}"#).unwrap_err();
        assert!(
            matches!(&e, Failure::Input(m) if m.contains("twice")),
            "{e:?}"
        );
        let e = parse_v2_params(br#"{"a": true}"#).unwrap_err();
        assert!(
            matches!(&e, Failure::Input(m) if m.contains("strings or numbers")),
            "{e:?}"
        );
        assert!(parse_v2_params(br#"{"a": "1"} trailing"#).is_err());
        assert!(parse_v2_params(b"[1]").is_err());
    }

    #[test]
    fn canonical_url_refuses_full_urls() {
        assert!(canonical_url("https://api.mch.weixin.qq.com/v3/x").is_err());
        assert!(canonical_url("v3/x").is_err());
        assert_eq!(canonical_url("/v3/x?a=1").unwrap(), "/v3/x?a=1");
    }
}
