//! Verifying what WeChat Pay signs: answers and notifications, with platform certificates, the
//! WeChat Pay public key, or both during the migration.

use std::fmt;
use std::sync::{Arc, RwLock};

use http::HeaderMap;

use crate::error::SignatureError;
use crate::keys::{RsaPublicKey, X509Certificate, normalize_serial};
use crate::v3::auth::{SCHEME, response_message};

/// The time window, in seconds, within which a signed answer or notification is believed.
pub const DEFAULT_WINDOW_SECS: i64 = 300;

/// The prefix of WeChat Pay's deliberately invalid probe signatures.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The `Wechatpay-*` headers of a signed answer or notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Wechatpay-Timestamp`.
    pub timestamp: String,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
    /// `Wechatpay-Signature` (base64).
    pub signature: String,
    /// `Wechatpay-Serial`: a platform certificate serial or a `PUB_KEY_ID_...`.
    pub serial: String,
    /// `Wechatpay-Signature-Type` (notifications).
    pub signature_type: Option<String>,
}

impl SignedHeaders {
    /// Reads the headers.
    ///
    /// # Errors
    /// [`SignatureError::Missing`] when one is absent, [`SignatureError::Malformed`] when not text.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, SignatureError> {
        fn get(h: &HeaderMap, name: &'static str) -> Result<Option<String>, SignatureError> {
            h.get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::to_owned)
                        .map_err(|_| SignatureError::Malformed(name))
                })
                .transpose()
        }
        let need = |name: &'static str| get(headers, name)?.ok_or(SignatureError::Missing(name));
        Ok(Self {
            timestamp: need("wechatpay-timestamp")?,
            nonce: need("wechatpay-nonce")?,
            signature: need("wechatpay-signature")?,
            serial: need("wechatpay-serial")?,
            signature_type: get(headers, "wechatpay-signature-type")?,
        })
    }
}

/// Something that holds WeChat Pay's verification keys, by serial.
pub trait Verifier: Send + Sync + fmt::Debug {
    /// Verifies `signature` (base64) over `message` with the key named by `serial`.
    ///
    /// # Errors
    /// [`SignatureError::UnknownSerial`] when no key has that serial,
    /// [`SignatureError::Mismatch`] or [`SignatureError::Malformed`] otherwise.
    fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), SignatureError>;

    /// Whether a key with this serial is held.
    fn knows(&self, serial: &str) -> bool;

    /// The key to encrypt sensitive fields with and its serial (sent as `Wechatpay-Serial`): the
    /// public key, or the newest platform certificate.
    fn encryption_key(&self) -> Option<(String, RsaPublicKey)>;
}

/// The WeChat Pay public key with its `PUB_KEY_ID_...`.
#[derive(Clone, Debug)]
pub struct PublicKeyVerifier {
    key_id: String,
    key: RsaPublicKey,
}

impl PublicKeyVerifier {
    /// A verifier for one WeChat Pay public key.
    #[must_use]
    pub fn new(key_id: impl Into<String>, key: RsaPublicKey) -> Self {
        Self {
            key_id: key_id.into(),
            key,
        }
    }

    /// The `PUB_KEY_ID_...`.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl Verifier for PublicKeyVerifier {
    fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        if serial.trim() != self.key_id {
            return Err(SignatureError::UnknownSerial(
                serial.chars().take(64).collect(),
            ));
        }
        self.key.verify_sha256_base64(message, signature)
    }

    fn knows(&self, serial: &str) -> bool {
        serial.trim() == self.key_id
    }

    fn encryption_key(&self) -> Option<(String, RsaPublicKey)> {
        Some((self.key_id.clone(), self.key.clone()))
    }
}

/// The platform certificates known so far. All are kept (an answer may be signed by any of them
/// during a rotation); the newest encrypts.
#[derive(Debug, Default)]
pub struct CertificateStore {
    certs: RwLock<Vec<X509Certificate>>,
}

impl CertificateStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with these certificates.
    #[must_use]
    pub fn with(certs: Vec<X509Certificate>) -> Self {
        let store = Self::new();
        store.merge(certs);
        store
    }

    /// Adds certificates, replacing any with the same serial. Returns how many were new.
    pub fn merge(&self, certs: Vec<X509Certificate>) -> usize {
        let mut held = self
            .certs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut added = 0;
        for cert in certs {
            let serial = normalize_serial(&cert.serial_no);
            if let Some(slot) = held
                .iter_mut()
                .find(|c| normalize_serial(&c.serial_no) == serial)
            {
                *slot = cert;
            } else {
                held.push(cert);
                added += 1;
            }
        }
        added
    }

    /// The serials held.
    #[must_use]
    pub fn serials(&self) -> Vec<String> {
        self.read().iter().map(|c| c.serial_no.clone()).collect()
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The newest certificate (greatest not-before), which encrypts.
    #[must_use]
    pub fn newest(&self) -> Option<X509Certificate> {
        self.read().iter().max_by_key(|c| c.not_before).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<X509Certificate>> {
        self.certs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key_for(&self, serial: &str) -> Option<RsaPublicKey> {
        let wanted = normalize_serial(serial);
        self.read()
            .iter()
            .find(|c| normalize_serial(&c.serial_no) == wanted)
            .map(|c| c.public_key.clone())
    }
}

impl Verifier for CertificateStore {
    fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        let key = self
            .key_for(serial)
            .ok_or_else(|| SignatureError::UnknownSerial(serial.chars().take(64).collect()))?;
        key.verify_sha256_base64(message, signature)
    }

    fn knows(&self, serial: &str) -> bool {
        self.key_for(serial).is_some()
    }

    fn encryption_key(&self) -> Option<(String, RsaPublicKey)> {
        self.newest().map(|c| (c.serial_no, c.public_key))
    }
}

impl Verifier for Arc<CertificateStore> {
    fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        self.as_ref().verify(serial, message, signature)
    }
    fn knows(&self, serial: &str) -> bool {
        self.as_ref().knows(serial)
    }
    fn encryption_key(&self) -> Option<(String, RsaPublicKey)> {
        self.as_ref().encryption_key()
    }
}

/// Both at once, as during the migration from certificates to the public key: dispatches on
/// `Wechatpay-Serial`.
#[derive(Debug, Clone)]
pub struct CombinedVerifier {
    public_key: PublicKeyVerifier,
    certificates: Arc<CertificateStore>,
}

impl CombinedVerifier {
    /// A verifier that accepts both.
    #[must_use]
    pub fn new(public_key: PublicKeyVerifier, certificates: Arc<CertificateStore>) -> Self {
        Self {
            public_key,
            certificates,
        }
    }
}

impl Verifier for CombinedVerifier {
    fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        if serial.trim().starts_with("PUB_KEY_ID_") {
            self.public_key.verify(serial, message, signature)
        } else {
            self.certificates.verify(serial, message, signature)
        }
    }

    fn knows(&self, serial: &str) -> bool {
        self.public_key.knows(serial) || self.certificates.knows(serial)
    }

    fn encryption_key(&self) -> Option<(String, RsaPublicKey)> {
        self.public_key.encryption_key()
    }
}

/// Checks a signed answer or notification, in the order that costs least first: signature type
/// (when given), `WECHATPAY/SIGNTEST/` probe, time window, then the RSA signature over
/// `TIMESTAMP\nNONCE\nBODY\n` with the key its serial names.
///
/// `now` is Unix seconds (injected, so tests can replay old messages).
///
/// # Errors
/// The [`SignatureError`] of the first check that fails.
pub fn verify_signed(
    verifier: &dyn Verifier,
    headers: &SignedHeaders,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<(), SignatureError> {
    if let Some(t) = &headers.signature_type
        && t != SCHEME
    {
        return Err(SignatureError::UnsupportedType(
            t.chars().take(40).collect(),
        ));
    }
    if headers.signature.starts_with(SIGNTEST_PREFIX) {
        return Err(SignatureError::Probe);
    }
    let timestamp: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("Wechatpay-Timestamp"))?;
    let skew = now.saturating_sub(timestamp).saturating_abs();
    if skew >= window_secs {
        return Err(SignatureError::Stale {
            timestamp,
            skew,
            window: window_secs,
        });
    }
    let message = response_message(&headers.timestamp, &headers.nonce, body);
    verifier.verify(&headers.serial, &message, &headers.signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RsaPrivateKey;
    use crate::keys::tests::D5_KEY;

    const D7_SIG: &str = "Fx7NKfc9uAogSej5EJ6OvQ5k5ZbRWj/aY9Lbm+WN4InohigGVx2szDJhT8JQ8ctvQb1+v9OXkOuHxSuXOEBWn0iKOwH4tAx/BZi0TJWMP2ShDR7BUbu8mvm6+vsWx6oortoBSgKiQtrxh9LDim+BOun8ROSX4Wiumv7wEcfKUOyllbHfZxK45NH/LKBdxSJDZFBm3Wtq1I0pvpnlTCwmnyKF9n2kDJgjQbw51uN5XpNXPX2owmpkfVp79I4rMdkNKZuphUmYG5wyCJBAF8sbwcTCvjQQblTXmCmUbHzYj+qXRg1sthbMGqbpK5z1n3tFLjiIXfQJR+PmdqjBsPT1jA==";
    const D7_204_SIG: &str = "bNAqvNkGbCLVu6KSXS974+kowtExJqx2mdIIrPgLT7QaHBx6w0Kh6xE8uyfdaI1VpWXZPbxtnOIVXF4k5rHQgxrg7u6HRniT92zQxwfWxDRqKvwWnM9f4HzSznHL6DLEseQCyR1KOUUVp7c+zSIXUGU451l28kJFxxQ1evC1DqbxXjzfpsbJrMxKVgZfsTE0CFg498itZF2+d4yyJ9s1ZFYOvUh6YIvJq9ry8Hw3d+ybXF5dk9YAQSB7UE83Jeups2uwipj6OR/z2u+opdFOjvbWyWW8HFrmkzvfLQX2Hl45+sn9N3pmdV6caFuJqZXp1TaoYNOPH8B/lGshNN/YYQ==";
    const BODY: &[u8] = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
    const PK_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";

    fn headers(sig: &str, serial: &str) -> SignedHeaders {
        SignedHeaders {
            timestamp: "1554209980".into(),
            nonce: "c5ac7061fccab6bf3e254dcf98995b8c".into(),
            signature: sig.into(),
            serial: serial.into(),
            signature_type: None,
        }
    }

    fn pk_verifier() -> PublicKeyVerifier {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        PublicKeyVerifier::new(PK_ID, key.public_key().clone())
    }

    #[test]
    fn d7_response_signatures_verify() {
        let v = pk_verifier();
        let now = 1_554_209_980 + 10;
        assert_eq!(
            verify_signed(&v, &headers(D7_SIG, PK_ID), BODY, now, 300),
            Ok(())
        );
        assert_eq!(
            verify_signed(&v, &headers(D7_204_SIG, PK_ID), b"", now, 300),
            Ok(())
        );
        assert_eq!(
            verify_signed(&v, &headers(D7_SIG, PK_ID), b"{}", now, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn window_probe_type_and_serial_are_checked() {
        let v = pk_verifier();
        let ts = 1_554_209_980;
        assert!(matches!(
            verify_signed(&v, &headers(D7_SIG, PK_ID), BODY, ts + 300, 300),
            Err(SignatureError::Stale { skew: 300, .. })
        ));
        assert_eq!(
            verify_signed(&v, &headers(D7_SIG, PK_ID), BODY, ts + 299, 300),
            Ok(())
        );
        assert_eq!(
            verify_signed(&v, &headers(D7_SIG, PK_ID), BODY, ts - 299, 300),
            Ok(())
        );
        assert_eq!(
            verify_signed(&v, &headers("WECHATPAY/SIGNTEST/abc", PK_ID), BODY, ts, 300),
            Err(SignatureError::Probe)
        );
        let mut h = headers(D7_SIG, PK_ID);
        h.signature_type = Some("WECHATPAY2-SM2-WITH-SM3".into());
        assert!(matches!(
            verify_signed(&v, &h, BODY, ts, 300),
            Err(SignatureError::UnsupportedType(_))
        ));
        assert!(matches!(
            verify_signed(&v, &headers(D7_SIG, "PUB_KEY_ID_OTHER"), BODY, ts, 300),
            Err(SignatureError::UnknownSerial(_))
        ));
    }

    #[test]
    fn combined_verifier_dispatches_on_serial() {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        let cert = test_certificate(&key, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
        let store = Arc::new(CertificateStore::with(vec![cert]));
        let combined = CombinedVerifier::new(pk_verifier(), store.clone());
        let ts = 1_554_209_980;
        assert_eq!(
            verify_signed(&combined, &headers(D7_SIG, PK_ID), BODY, ts, 300),
            Ok(())
        );
        let lower = "5157f09efdc096de15ebe81a47057a7232f1b8e1";
        assert_eq!(
            verify_signed(&combined, &headers(D7_SIG, lower), BODY, ts, 300),
            Ok(())
        );
        assert!(matches!(
            verify_signed(&combined, &headers(D7_SIG, "ABCDEF"), BODY, ts, 300),
            Err(SignatureError::UnknownSerial(_))
        ));
        assert_eq!(combined.encryption_key().unwrap().0, PK_ID);
        assert_eq!(
            store.encryption_key().unwrap().0,
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
        );
    }

    /// A certificate carrying `key`'s public key with the given serial; only the fields the
    /// verifier uses matter here.
    fn test_certificate(key: &RsaPrivateKey, serial: &str) -> X509Certificate {
        X509Certificate {
            serial_no: serial.into(),
            not_before: time::OffsetDateTime::UNIX_EPOCH,
            not_after: time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 100),
            public_key: key.public_key().clone(),
            der: Vec::new(),
        }
    }
}
