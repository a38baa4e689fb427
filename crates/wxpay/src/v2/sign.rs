//! API v2 signatures: MD5 and HMAC-SHA256 over the sorted, non-empty parameters plus `&key=`.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::hmac;
use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq as _;

use crate::error::SignatureError;

/// The v2 signature algorithm (`sign_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SignType {
    /// `MD5`, the default when `sign_type` is absent. 32 hex characters.
    #[default]
    Md5,
    /// `HMAC-SHA256`. 64 hex characters.
    HmacSha256,
}

impl SignType {
    /// The wire name, `MD5` or `HMAC-SHA256`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// The type a received signature was made with, by its length (the PHP SDK's rule: some
    /// notifications arrive MD5-signed for HMAC merchants).
    #[must_use]
    pub fn from_signature_len(len: usize) -> Option<SignType> {
        match len {
            32 => Some(SignType::Md5),
            64 => Some(SignType::HmacSha256),
            _ => None,
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "MD5" => Ok(SignType::Md5),
            "HMAC-SHA256" => Ok(SignType::HmacSha256),
            other => Err(format!("unknown sign_type {other:?}")),
        }
    }
}

/// `stringA`: the parameters other than `sign` with non-empty values, sorted by name in byte
/// order, joined as `k=v&k=v` with raw (not URL-encoded) values.
pub fn string_to_sign<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .collect();
    pairs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Signs parameters with the API v2 key. The result is uppercase hex (32 chars for MD5, 64 for
/// HMAC-SHA256).
pub fn sign<'a, I>(params: I, api_key: &str, sign_type: SignType) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut message = string_to_sign(params);
    message.push_str("&key=");
    message.push_str(api_key);
    let out = match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(message.as_bytes())),
        SignType::HmacSha256 => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, api_key.as_bytes());
            hex::encode_upper(hmac::sign(&key, message.as_bytes()).as_ref())
        }
    };
    // The message holds the key: wipe it rather than leave it in freed memory.
    zero_string(message);
    out
}

/// Signs a map of parameters.
pub fn sign_map(params: &super::XmlMap, api_key: &str, sign_type: SignType) -> String {
    sign(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        api_key,
        sign_type,
    )
}

/// Verifies the `sign` in `params`. The algorithm is taken from the signature's length, and the
/// comparison takes constant time.
///
/// # Errors
/// [`SignatureError::Missing`] without `sign`, [`SignatureError::Malformed`] for a sign of
/// another length, [`SignatureError::Mismatch`] when it is wrong.
pub fn verify_map(params: &super::XmlMap, api_key: &str) -> Result<SignType, SignatureError> {
    let received = params
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::Missing("sign"))?;
    let sign_type =
        SignType::from_signature_len(received.len()).ok_or(SignatureError::Malformed("sign"))?;
    let expected = sign_map(params, api_key, sign_type);
    if constant_time_eq_ignore_case(&expected, received) {
        Ok(sign_type)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Compares two hex signatures in constant time, ignoring ASCII case.
#[must_use]
pub fn constant_time_eq_ignore_case(expected_upper: &str, received: &str) -> bool {
    let received = received.to_ascii_uppercase();
    expected_upper.as_bytes().ct_eq(received.as_bytes()).into()
}

fn zero_string(s: String) {
    let mut bytes = s.into_bytes();
    // A volatile-free wipe is enough here: the goal is to not leave the key in a reusable
    // allocation, not to defeat a memory-dumping attacker.
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn d1() -> Vec<(&'static str, &'static str)> {
        vec![
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ]
    }

    #[test]
    fn official_vector_d1() {
        assert_eq!(
            string_to_sign(d1()),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
        );
        assert_eq!(
            sign(d1(), KEY, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
        assert_eq!(
            sign(d1(), KEY, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn notification_vector_d3() {
        let params = [
            ("appid", "wxd930ea5d5a258f4f"),
            ("bank_type", "OTHERS"),
            ("cash_fee", "1"),
            ("fee_type", "CNY"),
            ("is_subscribe", "N"),
            ("mch_id", "10000100"),
            ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
            ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            ("out_trade_no", "1409811653"),
            ("result_code", "SUCCESS"),
            ("return_code", "SUCCESS"),
            ("time_end", "20140903131540"),
            ("total_fee", "1"),
            ("trade_type", "JSAPI"),
            ("transaction_id", "1004400740201409030005092168"),
        ];
        assert_eq!(
            sign(params, KEY, SignType::Md5),
            "B9C97CC90F7FDD884DBD7DC718C9DF9C"
        );
        assert_eq!(
            sign(params, KEY, SignType::HmacSha256),
            "32CBCB5B172178CF1940A74273862353E9BA56A155F8C3C3AE384E6E4D2265FD"
        );
    }

    #[test]
    fn verify_detects_type_by_length_and_rejects_tampering() {
        let mut m: super::super::XmlMap = d1()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        m.insert("sign".into(), "9A0A8659F005D6984697E2CA0A9CF3B7".into());
        assert_eq!(verify_map(&m, KEY), Ok(SignType::Md5));
        m.insert("sign".into(), "9a0a8659f005d6984697e2ca0a9cf3b7".into());
        assert_eq!(verify_map(&m, KEY), Ok(SignType::Md5));
        m.insert(
            "sign".into(),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6".into(),
        );
        assert_eq!(verify_map(&m, KEY), Ok(SignType::HmacSha256));
        m.insert("body".into(), "tampered".into());
        assert_eq!(verify_map(&m, KEY), Err(SignatureError::Mismatch));
        m.insert("sign".into(), "short".into());
        assert_eq!(verify_map(&m, KEY), Err(SignatureError::Malformed("sign")));
        m.remove("sign");
        assert_eq!(verify_map(&m, KEY), Err(SignatureError::Missing("sign")));
    }

    proptest::proptest! {
        #[test]
        fn order_does_not_matter_and_empty_values_are_dropped(
            pairs in proptest::collection::btree_map("[a-z_]{1,10}", "[ -~]{0,20}", 0..10),
            hmac in proptest::bool::ANY,
        ) {
            let t = if hmac { SignType::HmacSha256 } else { SignType::Md5 };
            let forward: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut backward = forward.clone();
            backward.reverse();
            let s1 = sign(forward.iter().copied(), KEY, t);
            proptest::prop_assert_eq!(&s1, &sign(backward.iter().copied(), KEY, t));
            // Adding an empty value or a `sign` changes nothing.
            let mut more = forward.clone();
            more.push(("zzz_empty_param", ""));
            more.push(("sign", "WHATEVER"));
            proptest::prop_assert_eq!(&s1, &sign(more.iter().copied(), KEY, t));
            proptest::prop_assert_eq!(s1.len(), if hmac { 64 } else { 32 });
        }
    }
}
