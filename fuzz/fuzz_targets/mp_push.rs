//! The mini-program message-push receiver: `open_push` on fuzzed queries and bodies in both
//! formats (nothing passes without the token's signature), `decrypt` on fuzzed `Encrypt` values,
//! and fuzzed messages sealed with the fixed keys (so that the decrypted message parser and the
//! event typing are reached); a sealed message must open to the fields it was made of.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay::mp::push::{
    EncodingAesKey, PushConfig, PushFormat, PushMessage, PushMode, PushQuery, decrypt,
    open_push, parse_fields, seal_push,
};

const TOKEN: &str = "ShipRefTok3n";
const AES_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const APPID: &str = "wx0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let config = PushConfig::encrypted(TOKEN, AES_KEY, APPID).expect("key");
    let mut plain = config.clone();
    plain.require_encryption = false;
    // The query: the first line; the body: the rest.
    let split = data.iter().position(|b| *b == b'\n');
    let (head, body) = match split {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let query = PushQuery::parse(&String::from_utf8_lossy(head));
    for format in [PushFormat::Json, PushFormat::Xml] {
        for config in [&config, &plain] {
            let _ = open_push(config, &query, format, body);
        }
    }
    let key = EncodingAesKey::parse(AES_KEY).expect("key");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decrypt(&key, APPID, text);
        let _ = EncodingAesKey::parse(text);
    }
    // The same bytes as the message of an encrypted push.
    for format in [PushFormat::Json, PushFormat::Xml] {
        let Ok(fields) = parse_fields(format, data) else {
            continue;
        };
        for mode in [PushMode::Plaintext, PushMode::Compatible, PushMode::Safe] {
            let Ok(sealed) = seal_push(
                &plain, mode, format, &fields, "1718001234", "987654321", None, [7; 16],
            ) else {
                continue;
            };
            let query = PushQuery::parse(&sealed.query);
            let opened = open_push(&plain, &query, format, &sealed.body);
            match (opened, PushMessage::from_fields(fields.clone())) {
                // JSON re-encodes exactly; XML text may be normalised by the parser.
                (Ok(message), Ok(direct)) if format == PushFormat::Json => {
                    assert_eq!(message.event, direct.event);
                }
                _ => {}
            }
        }
    }
});
