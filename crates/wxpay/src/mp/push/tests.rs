use super::*;

// The reference's own vector (SHIPPING_AND_PUSH.md §2.5), byte for byte.
const TOKEN: &str = "ShipRefTok3n";
const AES_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const APPID: &str = "wx0123456789abcdef";
const TIMESTAMP: &str = "1718001234";
const NONCE: &str = "987654321";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const RANDOM: &[u8; 16] = b"RandomPrefix16B!";
const MSG: &str = r#"{"ToUserName":"gh_1a2b3c4d5e6f","FromUserName":"oSysTemAcc0unt000000000000","CreateTime":1718001234,"MsgType":"event","Event":"trade_manage_order_settlement","transaction_id":"4200002222202406100123456789","merchant_id":"1230000109","merchant_trade_no":"SO20240610001","pay_time":1717900000,"shipped_time":1718001200,"estimated_settlement_time":1718865200}"#;
const ENCRYPT: &str = "aosCWHawovb73ZJXXK1CvpBKfob5K555zKK8n69EhPPpPIp5hq3pa/7L59SgX6T98NX8zQKWw9LZCuLTKI2Yt53ctYqblZDRm6Vykyxmvj/w1aH3JDryO6Pn8m9gYZNgmMbn/gQwhRds4hbaVJW9tsZ1GD3GDXvoNZwuKnsN4tT4EboG5VsiBoXxaQ3g0Gc0yL+WPAL6HVkiRnQ1Ad0Q7pyfqZ9QqXPqACZ0ETLjYsXaGjnak4OqSuNapABjgTK6L91W9f4r48cYCCWrggGvAnm0X/tnypNGPuIuNTu4zg8KSXyoMvRgM21tk1Gyi6kQBBPMzsUq6uymObV1o7p6RMlghr3eczW3uDb8swMxtOpcM5urJEF1EXqEHnqZTmL/GfxWL4KO9Pr5cOTao+LF8isp4mlcfKgSYrPLITIryvnNhugdegCCNZGaV6le8XnC1NUs+cfg4jB7Wmwz923f6RNrcoCrIP3KKLOYStfcgBT+xiBg+yKaVplbjx42i5BDqBL0BPY7YO3NJDNgRzgBIuBP/juvWF4/kJHPAvhzgWc=";
const MSG_SIGNATURE: &str = "0b4e0a2f123589fd580abd226f61c6cf2e9f9c2c";
const SIGNATURE: &str = "243235aaadb96a8cf1aef4bd874a141c7e7542d3";

fn key() -> EncodingAesKey {
    EncodingAesKey::parse(AES_KEY).unwrap()
}

fn config() -> PushConfig {
    PushConfig::encrypted(TOKEN, AES_KEY, APPID).unwrap()
}

fn vector_query() -> PushQuery {
    PushQuery::parse(&format!(
        "signature={SIGNATURE}&timestamp={TIMESTAMP}&nonce={NONCE}&openid={OPENID}&encrypt_type=aes&msg_signature={MSG_SIGNATURE}"
    ))
}

fn vector_body() -> Vec<u8> {
    format!(r#"{{"ToUserName":"gh_1a2b3c4d5e6f","Encrypt":"{ENCRYPT}"}}"#).into_bytes()
}

#[test]
fn key_is_bytes_0_to_31() {
    let expected: Vec<u8> = (0u8..32).collect();
    assert_eq!(key().0.to_vec(), expected);
    assert_eq!(key().iv().to_vec(), expected[..16].to_vec());
    assert_eq!(key().to_encoding(), AES_KEY);
}

#[test]
fn key_with_trailing_bits_decodes_leniently() {
    // "A"*42 + "B": the last 2 bits are beyond the 256 and ignored, as WeChat's code does.
    let lenient = EncodingAesKey::parse(&format!("{}B", "A".repeat(42))).unwrap();
    assert_eq!(lenient, EncodingAesKey::parse(&"A".repeat(43)).unwrap());
    assert_eq!(lenient.0, [0u8; 32]);
}

#[test]
fn bad_keys_are_refused() {
    for bad in [
        "",
        &"A".repeat(42),
        &"A".repeat(44),
        &format!("{}=", "A".repeat(42)),
        &format!("{}-", "A".repeat(42)),
    ] {
        assert_eq!(
            EncodingAesKey::parse(bad),
            Err(PushError::InvalidEncodingAesKey),
            "{bad:?}"
        );
    }
    assert!(!format!("{:?}", key()).contains("AAEC"));
}

#[test]
fn reference_signatures() {
    assert_eq!(signature(TOKEN, TIMESTAMP, NONCE), SIGNATURE);
    assert_eq!(
        msg_signature(TOKEN, TIMESTAMP, NONCE, ENCRYPT),
        MSG_SIGNATURE
    );
    assert_eq!(
        signature(TOKEN, "1718000000", "112233"),
        "d6adec4ee3b2c744ff627f801d2773abb2193f99"
    );
    // The official vectors of §2.2 and §2.3.
    assert_eq!(
        signature("AAAAA", "1714036504", "1514711492"),
        "f464b24fc39322e44b38aa78f5edd27bd1441696"
    );
    assert_eq!(
        signature("AAAAA", "1714037059", "486452656"),
        "899cf89e464efb63f54ddac96b0a0a235f53aa78"
    );
}

#[test]
fn reference_encryption_byte_for_byte() {
    let encrypt = encrypt(&key(), APPID, *RANDOM, MSG.as_bytes()).unwrap();
    assert_eq!(encrypt, ENCRYPT);
    assert_eq!(STANDARD.decode(&encrypt).unwrap().len(), 416);
    let decrypted = decrypt(&key(), APPID, ENCRYPT).unwrap();
    assert_eq!(&decrypted.random, RANDOM);
    assert_eq!(decrypted.msg, MSG.as_bytes());
}

#[test]
fn official_safe_mode_vector() {
    let key = EncodingAesKey::parse(&"A".repeat(43)).unwrap();
    let appid = "wxba5fad812f8e6fb9";
    let encrypt = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    assert_eq!(
        msg_signature("AAAAA", "1714112445", "415670741", encrypt),
        "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
    );
    let decrypted = decrypt(&key, appid, encrypt).unwrap();
    assert_eq!(&decrypted.random, b"a8eedb185eb2fecf");
    assert_eq!(
        decrypted.msg,
        br#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#
    );
    let reply = super::encrypt(
        &key,
        appid,
        *b"707722b803182950",
        br#"{"demo_resp":"good luck"}"#,
    )
    .unwrap();
    assert_eq!(
        reply,
        "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
    );
    let config = PushConfig::encrypted("AAAAA", &"A".repeat(43), appid).unwrap();
    let body = encrypted_reply(
        &config,
        PushFormat::Json,
        br#"{"demo_resp":"good luck"}"#,
        1_713_424_427,
        "415670741",
        *b"707722b803182950",
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["MsgSignature"],
        "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
    );
    assert_eq!(body["TimeStamp"], 1_713_424_427);
    assert_eq!(body["Nonce"], "415670741");
}

#[test]
fn reference_push_opens_to_a_typed_settlement_event() {
    let message = open_push(&config(), &vector_query(), PushFormat::Json, &vector_body()).unwrap();
    assert_eq!(message.to_user_name, "gh_1a2b3c4d5e6f");
    assert_eq!(message.from_user_name, "oSysTemAcc0unt000000000000");
    assert_eq!(message.create_time, 1_718_001_234);
    assert_eq!(message.msg_type, "event");
    assert_eq!(
        message.event,
        PushEvent::TradeManageOrderSettlement {
            order: PushOrder {
                transaction_id: "4200002222202406100123456789".into(),
                merchant_id: "1230000109".into(),
                sub_merchant_id: None,
                merchant_trade_no: "SO20240610001".into(),
                pay_time: 1_717_900_000,
            },
            shipped_time: Some(1_718_001_200),
            estimated_settlement_time: Some(1_718_865_200),
            confirm_receive_method: None,
            confirm_receive_time: None,
            settlement_time: None,
        }
    );
    assert_eq!(message.raw.len(), 11);
}

#[test]
fn url_handshake() {
    let query = PushQuery::parse(
        "signature=d6adec4ee3b2c744ff627f801d2773abb2193f99&timestamp=1718000000&nonce=112233&echostr=4375120948345356249",
    );
    assert_eq!(verify_url(TOKEN, &query).unwrap(), "4375120948345356249");
    assert_eq!(
        verify_url("OtherToken", &query),
        Err(PushError::BadSignature)
    );
    let mut no_echo = query.clone();
    no_echo.echostr = None;
    assert_eq!(
        verify_url(TOKEN, &no_echo),
        Err(PushError::MissingParam("echostr"))
    );
    let mut tampered = query.clone();
    tampered.nonce = Some("112234".into());
    assert_eq!(verify_url(TOKEN, &tampered), Err(PushError::BadSignature));
    let mut no_sig = query;
    no_sig.signature = None;
    assert_eq!(
        verify_url(TOKEN, &no_sig),
        Err(PushError::MissingParam("signature"))
    );
}

#[test]
fn tampered_msg_signature_is_refused() {
    let mut query = vector_query();
    query.msg_signature = Some("0b4e0a2f123589fd580abd226f61c6cf2e9f9c2d".into());
    assert_eq!(
        open_push(&config(), &query, PushFormat::Json, &vector_body()),
        Err(PushError::BadMsgSignature)
    );
    // A valid `signature` does not stand in for `msg_signature`.
    query.msg_signature = None;
    assert_eq!(
        open_push(&config(), &query, PushFormat::Json, &vector_body()),
        Err(PushError::MissingParam("msg_signature"))
    );
}

#[test]
fn tampered_ciphertext_with_a_matching_signature_is_refused() {
    let mut bytes = STANDARD.decode(ENCRYPT).unwrap();
    // Flip a bit of the last block: the padding no longer reads as PKCS#7.
    let n = bytes.len();
    bytes[n - 20] ^= 0x01;
    let tampered = STANDARD.encode(&bytes);
    assert_eq!(decrypt(&key(), APPID, &tampered), Err(PushError::Padding));
    let body = format!(r#"{{"ToUserName":"gh_1a2b3c4d5e6f","Encrypt":"{tampered}"}}"#);
    let mut query = vector_query();
    query.msg_signature = Some(msg_signature(TOKEN, TIMESTAMP, NONCE, &tampered));
    assert_eq!(
        open_push(&config(), &query, PushFormat::Json, body.as_bytes()),
        Err(PushError::Padding)
    );
}

#[test]
fn another_appid_is_refused() {
    assert_eq!(
        decrypt(&key(), "wx0123456789abcdee", ENCRYPT),
        Err(PushError::AppIdMismatch)
    );
    let encrypt = encrypt(&key(), "wxOTHER", *RANDOM, MSG.as_bytes()).unwrap();
    assert_eq!(
        decrypt(&key(), APPID, &encrypt),
        Err(PushError::AppIdMismatch)
    );
}

#[test]
fn wrong_key_is_refused() {
    let other = EncodingAesKey::from_bytes([7u8; 32]);
    assert!(matches!(
        decrypt(&other, APPID, ENCRYPT),
        Err(PushError::Padding | PushError::Length | PushError::AppIdMismatch)
    ));
}

#[test]
fn malformed_ciphertexts_are_refused() {
    assert_eq!(
        decrypt(&key(), APPID, "not base64!"),
        Err(PushError::Base64)
    );
    assert_eq!(
        decrypt(&key(), APPID, &STANDARD.encode([0u8; 16])),
        Err(PushError::CipherLength(16))
    );
    assert_eq!(
        decrypt(&key(), APPID, &STANDARD.encode([0u8; 33])),
        Err(PushError::CipherLength(33))
    );
}

/// Encrypts a raw padded plaintext as is (to build payloads no honest sender produces).
fn encrypt_raw(mut plain: Vec<u8>) -> String {
    let unbound = UnboundCipherKey::new(&AES_256, &key().0).unwrap();
    EncryptingKey::cbc(unbound)
        .unwrap()
        .less_safe_encrypt(&mut plain, EncryptionContext::Iv128(key().iv().into()))
        .unwrap();
    STANDARD.encode(plain)
}

#[test]
fn bad_padding_and_length_are_refused() {
    // Pad byte 0, pad byte 33, inconsistent pad bytes.
    let mut zero = vec![b'x'; 64];
    zero[63] = 0;
    assert_eq!(
        decrypt(&key(), APPID, &encrypt_raw(zero)),
        Err(PushError::Padding)
    );
    let mut big = vec![33u8; 64];
    big[0] = b'x';
    assert_eq!(
        decrypt(&key(), APPID, &encrypt_raw(big)),
        Err(PushError::Padding)
    );
    let mut mixed = vec![b'x'; 64];
    mixed[62] = 2;
    mixed[63] = 3;
    mixed[61] = 4;
    assert_eq!(
        decrypt(&key(), APPID, &encrypt_raw(mixed)),
        Err(PushError::Padding)
    );
    // A length prefix past the end.
    let mut long = vec![0u8; 16];
    long.extend_from_slice(&1000u32.to_be_bytes());
    long.extend_from_slice(b"{}wx0123456789abcdef");
    let pad = 32 - long.len() % 32;
    long.resize(long.len() + pad, u8::try_from(pad).unwrap());
    assert_eq!(
        decrypt(&key(), APPID, &encrypt_raw(long)),
        Err(PushError::Length)
    );
    // Accepted: 16-byte PKCS#7 padding is still valid PKCS#7 (WeChat's own decoders are lenient).
    let mut sixteen = vec![0u8; 16];
    sixteen.extend_from_slice(&2u32.to_be_bytes());
    sixteen.extend_from_slice(b"{}wx0123456789abcdef");
    let pad = 16 - sixteen.len() % 16;
    sixteen.resize(sixteen.len() + pad, u8::try_from(pad).unwrap());
    assert_eq!(
        decrypt(&key(), APPID, &encrypt_raw(sixteen)).unwrap().msg,
        b"{}"
    );
}

#[test]
fn round_trips_every_length_around_the_blocks() {
    for len in 0..=70 {
        let msg: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let encrypt = encrypt(&key(), APPID, [9u8; 16], &msg).unwrap();
        assert_eq!(STANDARD.decode(&encrypt).unwrap().len() % 32, 0);
        assert_eq!(decrypt(&key(), APPID, &encrypt).unwrap().msg, msg, "{len}");
    }
    let random = encrypt_random(&key(), APPID, b"hi").unwrap();
    assert_eq!(decrypt(&key(), APPID, &random).unwrap().msg, b"hi");
}

fn remind_shipping_fields() -> Map<String, Value> {
    serde_json::from_str(
        r#"{"ToUserName":"gh_1a2b3c4d5e6f","FromUserName":"oSys","CreateTime":1718001234,"MsgType":"event","Event":"trade_manage_remind_shipping","transaction_id":"4200000001","merchant_id":"1230000109","sub_merchant_id":"","merchant_trade_no":"SO1","pay_time":1717900000,"msg":"请尽快发货"}"#,
    )
    .unwrap()
}

#[test]
fn every_mode_and_format_round_trips() {
    let fields = remind_shipping_fields();
    for format in [PushFormat::Json, PushFormat::Xml] {
        for mode in [PushMode::Plaintext, PushMode::Compatible, PushMode::Safe] {
            let mut config = config();
            config.require_encryption = mode != PushMode::Plaintext;
            let sealed = seal_push(
                &config,
                mode,
                format,
                &fields,
                TIMESTAMP,
                NONCE,
                Some(OPENID),
                *RANDOM,
            )
            .unwrap();
            let query = PushQuery::parse(&sealed.query);
            assert_eq!(query.openid.as_deref(), Some(OPENID));
            let message = open_push(&config, &query, format, &sealed.body)
                .unwrap_or_else(|e| panic!("{format:?} {mode:?}: {e}"));
            assert_eq!(
                message.event,
                PushEvent::TradeManageRemindShipping {
                    order: PushOrder {
                        transaction_id: "4200000001".into(),
                        merchant_id: "1230000109".into(),
                        sub_merchant_id: None,
                        merchant_trade_no: "SO1".into(),
                        pay_time: 1_717_900_000,
                    },
                    msg: Some("请尽快发货".into()),
                },
                "{format:?} {mode:?}"
            );
            assert_eq!(message.create_time, 1_718_001_234);
            if mode == PushMode::Safe {
                let outer = parse_fields(format, &sealed.body).unwrap();
                assert_eq!(outer.len(), 2, "{format:?}: only ToUserName and Encrypt");
            }
        }
    }
}

#[test]
fn plaintext_refused_when_encryption_is_required() {
    let fields = remind_shipping_fields();
    let mut plain_config = config();
    plain_config.require_encryption = false;
    let sealed = seal_push(
        &plain_config,
        PushMode::Plaintext,
        PushFormat::Json,
        &fields,
        TIMESTAMP,
        NONCE,
        None,
        *RANDOM,
    )
    .unwrap();
    let query = PushQuery::parse(&sealed.query);
    assert_eq!(
        open_push(&config(), &query, PushFormat::Json, &sealed.body),
        Err(PushError::PlaintextRefused)
    );
    let mut tampered = query;
    tampered.signature = Some(SIGNATURE.replace('2', "3"));
    assert_eq!(
        open_push(&plain_config, &tampered, PushFormat::Json, &sealed.body),
        Err(PushError::BadSignature)
    );
}

#[test]
fn xml_plaintext_event_parses_with_cdata_and_bare_numbers() {
    let body = b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oSys]]></FromUserName><CreateTime>1718001234</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[trade_manage_order_settlement]]></Event><transaction_id><![CDATA[42]]></transaction_id><merchant_id><![CDATA[1230000109]]></merchant_id><merchant_trade_no><![CDATA[SO1]]></merchant_trade_no><pay_time>1</pay_time><shipped_time>2</shipped_time><confirm_receive_method>2</confirm_receive_method><confirm_receive_time>3</confirm_receive_time><settlement_time>4</settlement_time></xml>";
    let query = PushQuery {
        signature: Some(signature(TOKEN, TIMESTAMP, NONCE)),
        timestamp: Some(TIMESTAMP.into()),
        nonce: Some(NONCE.into()),
        ..PushQuery::default()
    };
    let message = open_push(
        &PushConfig::plaintext(TOKEN, APPID),
        &query,
        PushFormat::Xml,
        body,
    )
    .unwrap();
    let PushEvent::TradeManageOrderSettlement {
        order,
        confirm_receive_method,
        settlement_time,
        estimated_settlement_time,
        ..
    } = message.event
    else {
        panic!("{:?}", message.event)
    };
    assert_eq!(order.transaction_id, "42");
    assert_eq!(confirm_receive_method, Some(ConfirmReceiveMethod(2)));
    assert_eq!(settlement_time, Some(4));
    assert_eq!(estimated_settlement_time, None);
}

#[test]
fn other_events_are_typed_or_kept_raw() {
    let base = r#""ToUserName":"gh_1","FromUserName":"o","CreateTime":1,"MsgType":"event""#;
    let parse = |extra: &str| {
        PushMessage::from_fields(serde_json::from_str(&format!("{{{base},{extra}}}")).unwrap())
    };
    assert_eq!(
        parse(r#""Event":"trade_manage_remind_access_api","msg":"接入""#)
            .unwrap()
            .event,
        PushEvent::TradeManageRemindAccessApi {
            msg: Some("接入".into())
        }
    );
    assert_eq!(
        parse(r#""Event":"wxa_trade_controlled""#).unwrap().event,
        PushEvent::WxaTradeControlled { msg: None }
    );
    let unknown = parse(r#""Event":"debug_demo","debug_str":"hello world""#).unwrap();
    assert_eq!(
        unknown.event,
        PushEvent::Unknown {
            event: "debug_demo".into()
        }
    );
    assert_eq!(unknown.raw["debug_str"], "hello world");
    assert_eq!(
        parse(r#""Event":"trade_manage_remind_shipping","pay_time":"soon""#),
        Err(PushError::Field("pay_time"))
    );
    assert_eq!(
        PushMessage::from_fields(serde_json::from_str(r#"{"CreateTime":1}"#).unwrap()),
        Err(PushError::Field("ToUserName"))
    );
}

#[test]
fn malformed_bodies_are_refused() {
    let config = PushConfig::plaintext(TOKEN, APPID);
    let query = PushQuery {
        signature: Some(SIGNATURE.into()),
        timestamp: Some(TIMESTAMP.into()),
        nonce: Some(NONCE.into()),
        ..PushQuery::default()
    };
    for body in [&b"[]"[..], b"{", b"", b"\"x\""] {
        assert!(matches!(
            open_push(&config, &query, PushFormat::Json, body),
            Err(PushError::Body(_))
        ));
    }
    assert!(matches!(
        open_push(&config, &query, PushFormat::Xml, b"<!DOCTYPE x><xml/>"),
        Err(PushError::Body(_))
    ));
    let big = vec![b' '; MAX_PUSH_BYTES + 1];
    assert_eq!(
        open_push(&config, &query, PushFormat::Json, &big),
        Err(PushError::TooLarge(MAX_PUSH_BYTES + 1))
    );
    // Safe mode without Encrypt.
    let mut aes = vector_query();
    aes.encrypt_type = Some("aes".into());
    assert_eq!(
        open_push(
            &super::tests::config(),
            &aes,
            PushFormat::Json,
            br#"{"ToUserName":"gh"}"#
        ),
        Err(PushError::Field("Encrypt"))
    );
}

#[test]
fn query_round_trips_and_escapes() {
    let query = vector_query();
    assert_eq!(PushQuery::parse(&query.to_query()), query);
    let odd = PushQuery {
        echostr: Some("a b&c=d".into()),
        ..PushQuery::default()
    };
    assert_eq!(PushQuery::parse(&odd.to_query()), odd);
}
