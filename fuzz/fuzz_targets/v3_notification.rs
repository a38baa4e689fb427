//! The v3 notification parser: `parse_notification` on fuzzed headers and body (nothing passes
//! without the platform key's signature), and `decrypt_verified` on fuzzed bodies and on fuzzed
//! resources encrypted with the fixed APIv3 key (so that the decrypted JSON is reached).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::notify::{NotificationKeys, decrypt_verified, parse_notification};
use wxpay::v3::verifier::PublicKeyVerifier;

const API_V3_KEY: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
const KEY_ID: &str = "PUB_KEY_ID_0000000000000000000000000000000000";

fn verifier() -> &'static PublicKeyVerifier {
    static VERIFIER: OnceLock<PublicKeyVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let key = wxpay::RsaPrivateKey::generate().expect("key");
        PublicKeyVerifier::new(KEY_ID, key.public_key().clone())
    })
}

fuzz_target!(|data: &[u8]| {
    let key = ApiV3Key::new(API_V3_KEY).expect("32 bytes");
    // Headers: the lines before the first empty line, `name: value`.
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&data[..0], data),
    };
    let mut headers = http::HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        if let Some(colon) = line.iter().position(|b| *b == b':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(&line[..colon]),
                http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            )
        {
            headers.append(name, value);
        }
    }
    let keys = NotificationKeys {
        verifier: verifier(),
        api_v3_key: &key,
        window_secs: 300,
    };
    assert!(parse_notification(keys, &headers, body, 1_700_000_000).is_err());
    let _ = decrypt_verified(&key, data);
    // The same bytes as the decrypted resource of a payment and of a refund notification.
    for (event_type, original_type) in [
        ("TRANSACTION.SUCCESS", "transaction"),
        ("REFUND.SUCCESS", "refund"),
    ] {
        let Ok(ciphertext) = key.encrypt("0123456789ab", original_type, data) else {
            continue;
        };
        let envelope = serde_json::json!({
            "id": "EV-0000000000000000001",
            "create_time": "2026-01-01T00:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "fuzz",
            "resource": {
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": original_type,
                "original_type": original_type,
                "nonce": "0123456789ab",
            }
        });
        let _ = decrypt_verified(&key, envelope.to_string().as_bytes());
    }
});
