//! AEAD_AES_256_GCM with the APIv3 key: notification resources and platform certificates.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::CryptoError;

/// The APIv3 key: exactly 32 ASCII bytes, used as the raw AES-256 key. `Debug` is redacted.
#[derive(Clone)]
pub struct ApiV3Key {
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

impl ApiV3Key {
    /// Takes the key as WeChat's merchant platform shows it (32 characters).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] unless it is exactly 32 bytes (a 16-byte key would silently
    /// mean AES-128 in some SDKs; WeChat uses AES-256 only).
    pub fn new(key: &str) -> Result<Self, CryptoError> {
        if key.len() != 32 {
            return Err(CryptoError::InvalidKey(format!(
                "the APIv3 key must be 32 bytes, got {}",
                key.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key.as_bytes())
            .map_err(|_| CryptoError::InvalidKey("AES-256 key rejected".into()))?;
        Ok(Self {
            key: Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// Decrypts a base64 `ciphertext || tag` with the 12-character `nonce` and the
    /// `associated_data` (absent means empty).
    ///
    /// # Errors
    /// [`CryptoError::Base64`], [`CryptoError::InvalidKey`] for a nonce that is not 12 bytes,
    /// [`CryptoError::Decrypt`] when authentication fails.
    pub fn decrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext_b64: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = nonce_of(nonce)?;
        let mut data = B64
            .decode(ciphertext_b64.trim())
            .map_err(|_| CryptoError::Base64("ciphertext"))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut data)
            .map_err(|_| CryptoError::Decrypt)?;
        let len = plain.len();
        data.truncate(len);
        Ok(data)
    }

    /// Encrypts `plaintext` as WeChat does: base64 of `ciphertext || 16-byte tag`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] for a nonce that is not 12 bytes.
    pub fn encrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let nonce = nonce_of(nonce)?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut data)
            .map_err(|_| CryptoError::Encrypt("AES-GCM seal failed".into()))?;
        Ok(B64.encode(data))
    }
}

fn nonce_of(nonce: &str) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(nonce.as_bytes()).map_err(|_| {
        CryptoError::InvalidKey(format!(
            "the AES-GCM nonce must be 12 bytes, got {}",
            nonce.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
    const PLAIN: &str = r#"{"out_trade_no":"1217752501201407033233368018","trade_state":"SUCCESS","amount":{"total":100}}"#;
    const CT: &str = "uQVbjqw1sVDp14z//z3fVn1MwLncbdHaJ0qD+wjRqOcpqQWbIs+e1fRAiXMr4ZqsluYGdTttU0u3zC6B2xXMV98xhVOg6UP/NMbRhTrfqAiiLcnIuANoCN3sxicDA2IwHoMbLAjceTh/TYRL7AU=";

    #[test]
    fn d10_vectors() {
        let key = ApiV3Key::new(KEY).unwrap();
        assert_eq!(
            key.decrypt("fdasflkja484", "transaction", CT).unwrap(),
            PLAIN.as_bytes()
        );
        assert_eq!(
            key.encrypt("fdasflkja484", "transaction", PLAIN.as_bytes())
                .unwrap(),
            CT
        );
        let empty_aad = key.encrypt("fdasflkja484", "", PLAIN.as_bytes()).unwrap();
        assert!(
            empty_aad.ends_with("xicDA3oo4wGUdcAV/bBfYrY/yEw="),
            "{empty_aad}"
        );
        assert_eq!(
            key.encrypt("abcdefghijkl", "certificate", b"Hello World")
                .unwrap(),
            "1+/XN+GNqBXhhxW5ujdyILBgfPQ5O793iKPB"
        );
    }

    #[test]
    fn tampering_and_wrong_parameters_fail_authentication() {
        let key = ApiV3Key::new(KEY).unwrap();
        assert_eq!(
            key.decrypt("fdasflkja484", "refund", CT),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            key.decrypt("fdasflkja485", "transaction", CT),
            Err(CryptoError::Decrypt)
        );
        let mut raw = B64.decode(CT).unwrap();
        raw[3] ^= 1;
        assert_eq!(
            key.decrypt("fdasflkja484", "transaction", &B64.encode(raw)),
            Err(CryptoError::Decrypt)
        );
        assert!(matches!(
            key.decrypt("short", "transaction", CT),
            Err(CryptoError::InvalidKey(_))
        ));
        assert_eq!(
            key.decrypt("fdasflkja484", "transaction", "!!"),
            Err(CryptoError::Base64("ciphertext"))
        );
        let other = ApiV3Key::new("VUTSRQPONMLKJIHGFEDCBA9876543210").unwrap();
        assert_eq!(
            other.decrypt("fdasflkja484", "transaction", CT),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn key_must_be_32_bytes_and_debug_is_redacted() {
        assert!(ApiV3Key::new("testAPIv3Key0000").is_err());
        assert_eq!(
            format!("{:?}", ApiV3Key::new(KEY).unwrap()),
            "ApiV3Key(<redacted>)"
        );
    }
}
