//! The v3 request signature: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,...`.

use crate::error::{CryptoError, SignatureError};
use crate::keys::RsaPrivateKey;

/// The only v3 signature scheme in use.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// The message a v3 request signature covers: five lines, each ending in `\n`.
///
/// `canonical_url` is the raw path plus `?query` exactly as sent on the wire.
#[must_use]
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(method.len() + canonical_url.len() + nonce.len() + body.len() + 20);
    m.extend_from_slice(method.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(canonical_url.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The message a v3 response or notification signature covers: `TIMESTAMP\nNONCE\nBODY\n`.
#[must_use]
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The parts of an `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// Merchant id.
    pub mchid: String,
    /// Merchant API certificate serial (uppercase hex).
    pub serial_no: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Random string.
    pub nonce_str: String,
    /// Base64 signature.
    pub signature: String,
}

impl Authorization {
    /// Signs a request and returns its header parts.
    ///
    /// # Errors
    /// [`CryptoError::Sign`] if signing fails.
    #[allow(clippy::too_many_arguments)] // the eight inputs of the signed message, each needed
    pub fn sign(
        key: &RsaPrivateKey,
        mchid: &str,
        serial_no: &str,
        method: &str,
        canonical_url: &str,
        timestamp: i64,
        nonce_str: &str,
        body: &[u8],
    ) -> Result<Self, CryptoError> {
        let message = request_message(method, canonical_url, timestamp, nonce_str, body);
        let signature = key.sign_sha256_base64(&message)?;
        Ok(Self {
            mchid: mchid.to_owned(),
            serial_no: serial_no.to_owned(),
            timestamp,
            nonce_str: nonce_str.to_owned(),
            signature,
        })
    }

    /// The header value, in the Go SDK's order, with no spaces after commas.
    #[must_use]
    pub fn to_header_value(&self) -> String {
        format!(
            "{SCHEME} mchid=\"{}\",nonce_str=\"{}\",timestamp=\"{}\",serial_no=\"{}\",signature=\"{}\"",
            self.mchid, self.nonce_str, self.timestamp, self.serial_no, self.signature
        )
    }

    /// Parses a header value tolerantly (any order, optional spaces, quoted values).
    ///
    /// # Errors
    /// [`SignatureError::UnsupportedType`] for another scheme, [`SignatureError::Missing`] or
    /// [`SignatureError::Malformed`] for missing or bad items.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(char::is_whitespace)
            .ok_or(SignatureError::Malformed("authorization"))?;
        if scheme != SCHEME {
            return Err(SignatureError::UnsupportedType(
                scheme.chars().take(40).collect(),
            ));
        }
        let (mut mchid, mut serial, mut ts, mut nonce, mut sig) = (None, None, None, None, None);
        for item in rest.split(',') {
            let (k, v) = item
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed("authorization"))?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned();
            match k.trim() {
                "mchid" => mchid = Some(v),
                "serial_no" => serial = Some(v),
                "timestamp" => ts = Some(v),
                "nonce_str" => nonce = Some(v),
                "signature" => sig = Some(v),
                _ => {}
            }
        }
        let timestamp = ts
            .ok_or(SignatureError::Missing("timestamp"))?
            .parse::<i64>()
            .map_err(|_| SignatureError::Malformed("timestamp"))?;
        Ok(Self {
            mchid: mchid.ok_or(SignatureError::Missing("mchid"))?,
            serial_no: serial.ok_or(SignatureError::Missing("serial_no"))?,
            timestamp,
            nonce_str: nonce.ok_or(SignatureError::Missing("nonce_str"))?,
            signature: sig.ok_or(SignatureError::Missing("signature"))?,
        })
    }

    /// Verifies this authorization against a request, with the merchant's public key.
    ///
    /// # Errors
    /// [`SignatureError::Mismatch`] or [`SignatureError::Malformed`].
    pub fn verify(
        &self,
        public_key: &crate::keys::RsaPublicKey,
        method: &str,
        canonical_url: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let message = request_message(method, canonical_url, self.timestamp, &self.nonce_str, body);
        public_key.verify_sha256_base64(&message, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::D5_KEY;

    const BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
    const NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";

    #[test]
    fn d6_request_signatures() {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        let msg = request_message(
            "POST",
            "/v3/pay/transactions/jsapi",
            1_554_208_460,
            NONCE,
            BODY.as_bytes(),
        );
        assert_eq!(
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &msg)),
            "5f4ed3f0e21e3d84a9fd3f4aae32d1e72f5d83fcbf22957c3a08af6368cd2ede"
        );
        let auth = Authorization::sign(
            &key,
            "1230000109",
            "ABC",
            "POST",
            "/v3/pay/transactions/jsapi",
            1_554_208_460,
            NONCE,
            BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            auth.signature,
            "PlOfBuSVimtYtJ/TedcFLvX4IRwi1BsppHl8MdvhANpP59aXgVybW/uwR4zOpYKEc6vawOvTcEPNVSn+Oy0RK7HASLXMHJHVRhWpPgIoB1AwBHj4nGyW1bXaSqZyTn4MXBbIbUKUqty5vZnvetRyYEGYqSMSI4iWVs8sFJJdQbsw0sm/YizXDkrUNpTGyfks4iCWocR8SFRxGYyJG9jkJNoG48VbA2vSCdmAxj8rkLnVucoDGh8RB5vzk5lSZGqJHKoMgdZ40ZIUXNJZppUWhqR8bZ899upaL24gRTXZqymyi5xQaJo9msrewQQxjmpUjC6qG6m3cMeGeRJt97xeYg=="
        );
        let get = Authorization::sign(
            &key,
            "1230000109",
            "ABC",
            "GET",
            "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109",
            1_554_208_460,
            NONCE,
            b"",
        )
        .unwrap();
        assert_eq!(
            get.signature,
            "djlh5XCn8610jZW0n8/njdcMtoJpDhaPjdarwir6ZGKCLdWHvdjdotU2/SRBHMhoNc24hs9bggIwO7W3NUSZXV67niQdfY7iQ+fYJS3kpucVKJVP6Ykgc1W8lIsusargnf3sR0NEY6VFEvt+/o+PgV5avELtKPmHauiQAEVGcu/9JS9yFd7CL1UGztxBpVLRAIR24bMQ+FHj67MgdqNYDa03MklLa5N6fFjRSBzisC0KXB2yalv7EJpD0cwri16q3T77OHzl347r/Nre+opLk7NQY9LDdk7qrUgrk7ftRoQ47e5WTrNpFfFIlE1eSHWoeUcjxwS/nfxqhW3+CVD8+w=="
        );
        assert!(
            get.verify(
                key.public_key(),
                "GET",
                "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109",
                b""
            )
            .is_ok()
        );
        assert_eq!(
            get.verify(
                key.public_key(),
                "GET",
                "/v3/pay/transactions/out-trade-no/OTHER?mchid=1230000109",
                b""
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn header_round_trips_and_parses_tolerantly() {
        let auth = Authorization {
            mchid: "1230000109".into(),
            serial_no: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into(),
            timestamp: 1_554_208_460,
            nonce_str: NONCE.into(),
            signature: "c2ln".into(),
        };
        assert_eq!(
            Authorization::parse(&auth.to_header_value()),
            Ok(auth.clone())
        );
        let php_order = format!(
            "{SCHEME} mchid=\"1230000109\", serial_no=\"{}\", timestamp=\"1554208460\", nonce_str=\"{NONCE}\", signature=\"c2ln\"",
            auth.serial_no
        );
        assert_eq!(Authorization::parse(&php_order), Ok(auth));
        assert!(matches!(
            Authorization::parse("Bearer x"),
            Err(SignatureError::UnsupportedType(_))
        ));
        assert_eq!(
            Authorization::parse(&format!("{SCHEME} mchid=\"1\",timestamp=\"1\"")),
            Err(SignatureError::Missing("serial_no"))
        );
    }
}
