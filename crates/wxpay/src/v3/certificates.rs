//! Platform certificates and the WeChat Pay public key as one verifier, and the pure part of
//! `GET /v3/certificates` (decrypting the list). The download and refresh live in
//! [`V3Client`](crate::v3::client::V3Client).

use std::sync::Arc;

use crate::error::{CryptoError, DecodeError, Error, SignatureError};
use crate::keys::{RsaPublicKey, X509Certificate, normalize_serial};
use crate::v3::aead::ApiV3Key;
use crate::v3::models::{AEAD_AES_256_GCM, CertificateList};
use crate::v3::verifier::{CertificateStore, PublicKeyVerifier, Verifier};

/// The prefix of WeChat Pay public key IDs.
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// Everything the merchant holds to verify WeChat Pay: the WeChat Pay public key, platform
/// certificates, or both (the migration period). Dispatches on `Wechatpay-Serial`.
#[derive(Debug, Clone)]
pub struct PlatformVerifier {
    public_key: Option<PublicKeyVerifier>,
    certificates: Arc<CertificateStore>,
    // Certificate and migration modes download and refresh certificates; public-key mode never.
    downloads: bool,
}

impl PlatformVerifier {
    /// Public-key mode: no certificates.
    #[must_use]
    pub fn public_key(key_id: &str, key: RsaPublicKey) -> Self {
        PlatformVerifier {
            public_key: Some(PublicKeyVerifier::new(key_id, key)),
            certificates: Arc::new(CertificateStore::new()),
            downloads: false,
        }
    }

    /// Certificate mode, with the certificates known so far (possibly none: the client then
    /// downloads them).
    #[must_use]
    pub fn certificates(certs: Vec<X509Certificate>) -> Self {
        PlatformVerifier {
            public_key: None,
            certificates: Arc::new(CertificateStore::with(certs)),
            downloads: true,
        }
    }

    /// Both, as during the migration.
    #[must_use]
    pub fn both(key_id: &str, key: RsaPublicKey, certs: Vec<X509Certificate>) -> Self {
        PlatformVerifier {
            public_key: Some(PublicKeyVerifier::new(key_id, key)),
            certificates: Arc::new(CertificateStore::with(certs)),
            downloads: true,
        }
    }

    /// The public key verifier, when configured.
    #[must_use]
    pub fn public_key_verifier(&self) -> Option<&PublicKeyVerifier> {
        self.public_key.as_ref()
    }

    /// The certificate store (shared; refreshes land here).
    #[must_use]
    pub fn certificate_store(&self) -> &Arc<CertificateStore> {
        &self.certificates
    }

    /// Whether platform certificates are in use (certificate or migration mode): then they are
    /// downloaded and refreshed.
    #[must_use]
    pub fn uses_certificates(&self) -> bool {
        self.downloads
    }

    /// The serial to send as `Wechatpay-Serial` on requests: the public key ID when there is
    /// one (so that answers are signed by it), else the newest certificate.
    #[must_use]
    pub fn preferred_serial(&self) -> Option<String> {
        match &self.public_key {
            Some(pk) => Some(pk.key_id().to_owned()),
            None => self.certificates.newest().map(|c| c.serial_no),
        }
    }
}

impl Verifier for PlatformVerifier {
    fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        match &self.public_key {
            Some(pk) if serial.trim().starts_with(PUBLIC_KEY_ID_PREFIX) => {
                pk.verify(serial, message, signature)
            }
            _ => self.certificates.verify(serial, message, signature),
        }
    }

    fn knows(&self, serial: &str) -> bool {
        self.public_key.as_ref().is_some_and(|pk| pk.knows(serial))
            || self.certificates.knows(serial)
    }

    fn encryption_key(&self) -> Option<(String, RsaPublicKey)> {
        match &self.public_key {
            Some(pk) => pk.encryption_key(),
            None => self.certificates.encryption_key(),
        }
    }
}

/// Decrypts the body of `GET /v3/certificates` with the APIv3 key. Each certificate must
/// decrypt (which proves it came from WeChat Pay: only it and the merchant hold the key), parse,
/// and carry the serial the list names.
///
/// # Errors
/// [`Error::Decode`] for a malformed list, [`Error::Crypto`] when a certificate does not decrypt or
/// parse, or its serial differs from the list's.
pub fn decrypt_certificate_list(
    body: &[u8],
    api_v3_key: &ApiV3Key,
) -> Result<Vec<X509Certificate>, Error> {
    let list: CertificateList = serde_json::from_slice(body).map_err(|e| DecodeError::json(&e))?;
    let mut certs = Vec::with_capacity(list.data.len());
    for entry in list.data {
        let enc = &entry.encrypt_certificate;
        if enc.algorithm != AEAD_AES_256_GCM {
            return Err(DecodeError::invalid(
                "encrypt_certificate.algorithm",
                "expected AEAD_AES_256_GCM",
            )
            .into());
        }
        let pem = api_v3_key.decrypt(
            &enc.nonce,
            enc.associated_data.as_deref().unwrap_or(""),
            &enc.ciphertext,
        )?;
        let pem = String::from_utf8(pem).map_err(|_| DecodeError::NotUtf8)?;
        let cert = X509Certificate::from_pem(&pem)?;
        if normalize_serial(&cert.serial_no) != normalize_serial(&entry.serial_no) {
            return Err(CryptoError::InvalidCertificate(format!(
                "certificate serial {} differs from the listed serial {}",
                cert.serial_no, entry.serial_no
            ))
            .into());
        }
        certs.push(cert);
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RsaPrivateKey;
    use crate::keys::tests::D5_KEY;

    #[test]
    fn public_key_serials_go_to_the_public_key_and_others_to_certificates() {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        let v = PlatformVerifier::public_key("PUB_KEY_ID_1", key.public_key().clone());
        let sig = key.sign_sha256_base64(b"m").unwrap();
        assert!(v.verify("PUB_KEY_ID_1", b"m", &sig).is_ok());
        assert!(matches!(
            v.verify("ABCDEF", b"m", &sig),
            Err(SignatureError::UnknownSerial(_))
        ));
        assert_eq!(v.preferred_serial().as_deref(), Some("PUB_KEY_ID_1"));
        assert!(!v.uses_certificates());
        assert!(PlatformVerifier::certificates(Vec::new()).uses_certificates());
    }

    #[test]
    fn a_list_that_does_not_decrypt_is_refused() {
        let api_key = ApiV3Key::new("0123456789ABCDEFGHIJKLMNOPQRSTUV").unwrap();
        let body = br#"{"data":[{"serial_no":"AB","effective_time":"2026-01-01T00:00:00+08:00","expire_time":"2031-01-01T00:00:00+08:00","encrypt_certificate":{"algorithm":"AEAD_AES_256_GCM","nonce":"abcdefghijkl","associated_data":"certificate","ciphertext":"1+/XN+GNqBXhhxW5ujdyILBgfPQ5O793iKPB"}}]}"#;
        // Decrypts to "Hello World": not a certificate.
        assert!(matches!(
            decrypt_certificate_list(body, &api_key),
            Err(Error::Crypto(CryptoError::InvalidCertificate(_)))
        ));
        let tampered = String::from_utf8_lossy(body).replace("1+/X", "2+/X");
        assert!(matches!(
            decrypt_certificate_list(tampered.as_bytes(), &api_key),
            Err(Error::Crypto(CryptoError::Decrypt))
        ));
    }
}
