//! RSA keys and X.509 certificates, loaded once and used for every signature.
//!
//! One implementation serves both sides: the merchant signs requests and `paySign` with a
//! [`RsaPrivateKey`]; WeChat (and our simulator) signs answers and notifications with one too.
//! [`RsaPublicKey`] verifies and encrypts sensitive fields (RSA-OAEP with SHA-1).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use der::{Decode as _, DecodePem as _, Encode as _};
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::error::CryptoError;

/// An RSA private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY` PEM), parsed once.
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct RsaPrivateKey {
    inner: Arc<PrivateInner>,
}

struct PrivateInner {
    signing: KeyPair,
    decrypting: OaepPrivateDecryptingKey,
    public: RsaPublicKey,
    pkcs8_der: Vec<u8>,
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPrivateKey(<redacted>)")
    }
}

/// The label and DER of a PEM text. Text before the `-----BEGIN` line (openssl's "Bag
/// Attributes") is skipped; a text without one is reported as not PEM, not as the parser's
/// complaint about its first bytes.
fn decode_pem(pem: &str) -> Result<(&str, Vec<u8>), CryptoError> {
    let start = pem.find("-----BEGIN ").ok_or_else(|| {
        CryptoError::InvalidKey("not PEM: no \"-----BEGIN ...-----\" line".into())
    })?;
    pem_rfc7468::decode_vec(pem[start..].trim().as_bytes())
        .map_err(|e| CryptoError::InvalidKey(format!("not PEM: {e}")))
}

impl RsaPrivateKey {
    /// Reads a PEM private key, PKCS#1 or PKCS#8.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] when the PEM is not an RSA private key of at least 2048 bits.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let (label, der) = decode_pem(pem)?;
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => {
                let pair = KeyPair::from_der(&der)
                    .map_err(|e| CryptoError::InvalidKey(format!("PKCS#1 key rejected: {e}")))?;
                let pkcs8 = pair
                    .as_der()
                    .map_err(|_| CryptoError::InvalidKey("cannot re-encode key".into()))?;
                Self::from_pkcs8_der(pkcs8.as_ref())
            }
            other => Err(CryptoError::InvalidKey(format!(
                "expected a PRIVATE KEY or RSA PRIVATE KEY PEM, found {other}"
            ))),
        }
    }

    /// Reads a PKCS#8 DER private key.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] when it is not an acceptable RSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let signing = KeyPair::from_pkcs8(der)
            .map_err(|e| CryptoError::InvalidKey(format!("PKCS#8 key rejected: {e}")))?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| CryptoError::InvalidKey(format!("PKCS#8 key rejected: {e}")))
            .and_then(|k| {
                OaepPrivateDecryptingKey::new(k)
                    .map_err(|_| CryptoError::InvalidKey("key rejected for OAEP".into()))
            })?;
        let public = RsaPublicKey::from_spki_der(
            signing
                .public_key()
                .as_der()
                .map_err(|_| CryptoError::InvalidKey("cannot encode public key".into()))?
                .as_ref(),
        )?;
        Ok(Self {
            inner: Arc::new(PrivateInner {
                signing,
                decrypting,
                public,
                pkcs8_der: der.to_vec(),
            }),
        })
    }

    /// Generates a new RSA-2048 key (the simulator and tests use this).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] if the generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| CryptoError::InvalidKey("key generation failed".into()))?;
        let der = pair
            .as_der()
            .map_err(|_| CryptoError::InvalidKey("cannot encode key".into()))?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// The key as a PKCS#8 PEM (for writing the simulator's `apiclient_key.pem`).
    #[must_use]
    pub fn to_pkcs8_pem(&self) -> String {
        pem_rfc7468::encode_string(
            "PRIVATE KEY",
            pem_rfc7468::LineEnding::LF,
            &self.inner.pkcs8_der,
        )
        .unwrap_or_default()
    }

    /// The PKCS#8 DER bytes.
    #[must_use]
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.inner.pkcs8_der
    }

    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.inner.public
    }

    /// SHA256withRSA (PKCS#1 v1.5) over `message`, base64-encoded: the signature of every v3
    /// message (request Authorization, response and notification headers, `paySign`).
    ///
    /// # Errors
    /// [`CryptoError::Sign`] if the signer fails (it does not for a valid key).
    pub fn sign_sha256_base64(&self, message: &[u8]) -> Result<String, CryptoError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.inner.signing.public_modulus_len()];
        self.inner
            .signing
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .map_err(|_| CryptoError::Sign)?;
        Ok(B64.encode(sig))
    }

    /// RSA-OAEP (SHA-1, MGF1-SHA1) decryption of a base64 ciphertext (sensitive fields).
    ///
    /// # Errors
    /// [`CryptoError::Base64`] or [`CryptoError::Decrypt`].
    pub fn oaep_decrypt_base64(&self, ciphertext_b64: &str) -> Result<Vec<u8>, CryptoError> {
        let ct = B64
            .decode(ciphertext_b64.trim())
            .map_err(|_| CryptoError::Base64("ciphertext"))?;
        let mut out = vec![0u8; self.inner.decrypting.min_output_size()];
        let plain = self
            .inner
            .decrypting
            .decrypt(&OAEP_SHA1_MGF1SHA1, &ct, &mut out, None)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

/// An RSA public key: verifies SHA256withRSA signatures and encrypts with RSA-OAEP(SHA-1).
#[derive(Clone)]
pub struct RsaPublicKey {
    inner: Arc<PublicInner>,
}

struct PublicInner {
    verifying: ParsedPublicKey,
    encrypting: OaepPublicEncryptingKey,
    spki_der: Vec<u8>,
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPublicKey")
            .field("spki_len", &self.inner.spki_der.len())
            .finish()
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.spki_der == other.inner.spki_der
    }
}

impl RsaPublicKey {
    /// Reads a `PUBLIC KEY` (SPKI) PEM, e.g. the WeChat Pay public key file, or an
    /// `RSA PUBLIC KEY` (PKCS#1) PEM.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] when it is not an RSA public key.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let (label, der) = decode_pem(pem)?;
        match label {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                let spki = spki_from_pkcs1_public(&der)?;
                Self::from_spki_der(&spki)
            }
            "CERTIFICATE" => Ok(Certificate_::from_der(&der)?.public_key),
            other => Err(CryptoError::InvalidKey(format!(
                "expected a PUBLIC KEY PEM, found {other}"
            ))),
        }
    }

    /// Reads an SPKI DER public key.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] when it is not an acceptable RSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let verifying = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| CryptoError::InvalidKey(format!("public key rejected: {e}")))?;
        let encrypting = PublicEncryptingKey::from_der(der)
            .ok()
            .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
            .ok_or_else(|| CryptoError::InvalidKey("public key rejected for OAEP".into()))?;
        Ok(Self {
            inner: Arc::new(PublicInner {
                verifying,
                encrypting,
                spki_der: der.to_vec(),
            }),
        })
    }

    /// The SPKI DER bytes.
    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.inner.spki_der
    }

    /// The key as a `PUBLIC KEY` PEM.
    #[must_use]
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string(
            "PUBLIC KEY",
            pem_rfc7468::LineEnding::LF,
            &self.inner.spki_der,
        )
        .unwrap_or_default()
    }

    /// Verifies a base64 SHA256withRSA signature over `message`.
    ///
    /// # Errors
    /// [`crate::SignatureError::Malformed`] for bad base64, [`crate::SignatureError::Mismatch`]
    /// when the signature is wrong.
    pub fn verify_sha256_base64(
        &self,
        message: &[u8],
        signature_b64: &str,
    ) -> Result<(), crate::SignatureError> {
        let sig = B64
            .decode(signature_b64.trim())
            .map_err(|_| crate::SignatureError::Malformed("signature"))?;
        self.inner
            .verifying
            .verify_sig(message, &sig)
            .map_err(|_| crate::SignatureError::Mismatch)
    }

    /// RSA-OAEP (SHA-1, MGF1-SHA1) encryption, base64-encoded (sensitive request fields).
    ///
    /// # Errors
    /// [`CryptoError::Encrypt`] when the plaintext is too long for the key.
    pub fn oaep_encrypt_base64(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut out = vec![0u8; self.inner.encrypting.ciphertext_size()];
        let ct = self
            .inner
            .encrypting
            .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
            .map_err(|_| CryptoError::Encrypt("plaintext too long for RSA-OAEP".into()))?;
        Ok(B64.encode(ct))
    }
}

fn spki_from_pkcs1_public(pkcs1: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use der::asn1::BitString;
    use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: BitString::from_bytes(pkcs1)
            .map_err(|e| CryptoError::InvalidKey(e.to_string()))?,
    };
    spki.to_der()
        .map_err(|e| CryptoError::InvalidKey(e.to_string()))
}

/// An X.509 certificate with what WeChat Pay uses of it: serial (uppercase hex), validity and
/// RSA public key.
#[derive(Clone, Debug)]
pub struct X509Certificate {
    /// Serial number as uppercase hex without leading zeros, as WeChat writes it.
    pub serial_no: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The subject public key.
    pub public_key: RsaPublicKey,
    /// The DER encoding.
    pub der: Vec<u8>,
}

type Certificate_ = X509Certificate;

impl X509Certificate {
    /// Parses a `CERTIFICATE` PEM.
    ///
    /// # Errors
    /// [`CryptoError::InvalidCertificate`] when it does not parse or has no RSA key.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let cert = Certificate::from_pem(pem.trim().as_bytes())
            .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))?;
        Self::from_parsed(&cert)
    }

    /// Parses a DER certificate.
    ///
    /// # Errors
    /// [`CryptoError::InvalidCertificate`] when it does not parse or has no RSA key.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let cert = Certificate::from_der(der)
            .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))?;
        Self::from_parsed(&cert)
    }

    fn from_parsed(cert: &Certificate) -> Result<Self, CryptoError> {
        let tbs = cert.tbs_certificate();
        let serial_no = serial_hex(tbs.serial_number().as_bytes());
        let validity = tbs.validity();
        let to_odt = |t: x509_cert::time::Time| {
            let secs = t.to_unix_duration().as_secs();
            OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
                .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))
        };
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))?;
        let public_key = RsaPublicKey::from_spki_der(&spki)
            .map_err(|e| CryptoError::InvalidCertificate(format!("subject key: {e}")))?;
        let der = cert
            .to_der()
            .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))?;
        Ok(Self {
            serial_no,
            not_before: to_odt(validity.not_before)?,
            not_after: to_odt(validity.not_after)?,
            public_key,
            der,
        })
    }

    /// The certificate as PEM.
    #[must_use]
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &self.der)
            .unwrap_or_default()
    }

    /// Whether `at` is within the validity period.
    #[must_use]
    pub fn is_valid_at(&self, at: OffsetDateTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// Uppercase hex of a DER integer's bytes, without the leading sign byte(s).
#[must_use]
pub fn serial_hex(bytes: &[u8]) -> String {
    let mut b = bytes;
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    hex::encode_upper(b)
}

/// Normalizes a serial for comparison: certificate serials are hex and compared
/// case-insensitively; `PUB_KEY_ID_...` identifiers are kept as they are.
#[must_use]
pub fn normalize_serial(serial: &str) -> String {
    let s = serial.trim();
    if s.starts_with("PUB_KEY_ID_") {
        s.to_owned()
    } else {
        let upper = s.to_ascii_uppercase();
        let stripped = upper.trim_start_matches('0');
        if stripped.is_empty() {
            "0".to_owned()
        } else {
            stripped.to_owned()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The throwaway RSA key of the protocol reference, section D.5.
    pub(crate) const D5_KEY: &str = include_str!("../tests/data/d5_key.pem");

    #[test]
    fn pkcs1_and_pkcs8_pems_give_the_same_key() {
        let k8 = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        let pair = KeyPair::from_pkcs8(k8.pkcs8_der()).unwrap();
        // Re-encode as PKCS#1 through aws-lc: the PKCS#8 wraps the PKCS#1 structure.
        let pk8 = pkcs8_inner(k8.pkcs8_der());
        let pem1 = pem_rfc7468::encode_string("RSA PRIVATE KEY", pem_rfc7468::LineEnding::LF, &pk8)
            .unwrap();
        let k1 = RsaPrivateKey::from_pem(&pem1).unwrap();
        assert_eq!(k1.public_key(), k8.public_key());
        drop(pair);
    }

    fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8).unwrap();
        info.private_key.as_bytes().to_vec()
    }

    #[test]
    fn oaep_round_trip_and_d9_vector() {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        let d9 = "AVR3bjhkAmipnVWSmT19E0fthd/u342sr6dm7QBpkDxXa/Q/ANKWnF0sSs4qbRs671+xhH6Uj52gbrOZccmeeyOK2AcYriA5jZRDYVh9bWajBVuR6WeNgCNms9Yb6P7T6ifwRcN+Q13MB23xT0TjNpsdCRTYAovTUu0Whwfz5KLKdG0jHHWB/QgOowkpHOCulC/WL4XhVVZx5S9i4SZq/FwvnDfzMG1AqlHT9N5+y5+3ywWF5z7LbiwweXdLjLlL7ci++59HE6MvluTfwYpaFx4nmADu4u4qsJ07d1smGVcikLprnj9HtFLjHuV/xZ9q3B4qwYcZel8qgS9NwMzwkw==";
        assert_eq!(key.oaep_decrypt_base64(d9).unwrap(), b"13800138000");
        let ct = key
            .public_key()
            .oaep_encrypt_base64(b"secret name")
            .unwrap();
        assert_eq!(key.oaep_decrypt_base64(&ct).unwrap(), b"secret name");
        let other = RsaPrivateKey::generate().unwrap();
        assert_eq!(other.oaep_decrypt_base64(&ct), Err(CryptoError::Decrypt));
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        assert_eq!(format!("{key:?}"), "RsaPrivateKey(<redacted>)");
    }

    #[test]
    fn wrong_pem_labels_are_clear_errors() {
        let err = RsaPrivateKey::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("CERTIFICATE"), "{err}");
        assert!(RsaPrivateKey::from_pem("garbage").is_err());
    }

    #[test]
    fn serials_normalize_case_insensitively() {
        assert_eq!(normalize_serial("00ab12"), "AB12");
        assert_eq!(normalize_serial("AB12"), "AB12");
        assert_eq!(normalize_serial("PUB_KEY_ID_0001"), "PUB_KEY_ID_0001");
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
    }
}
