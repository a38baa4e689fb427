//! Benchmarks of the pure protocol code: v2 signing and XML, v3 signing, verification and
//! decryption, with aws-lc-rs's raw RSA as the baseline the v3 paths are measured against
//! (target: within 10% of it).
//!
//! Run with `cargo bench -p wxpay --bench protocol` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use wxpay::RsaPrivateKey;
use wxpay::v2::sign::sign_map;
use wxpay::v2::{SignType, XmlMap, xml};
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::auth::Authorization;
use wxpay::v3::notify::{
    NotificationEvent, NotificationKeys, NotificationSigner, parse_notification, sign_notification,
};
use wxpay::v3::verifier::{DEFAULT_WINDOW_SECS, PublicKeyVerifier, SignedHeaders, verify_signed};

/// The throwaway RSA key of the protocol reference, section D.5.
const D5_KEY: &str = include_str!("../tests/data/d5_key.pem");
const V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const APIV3_KEY: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";

const D6_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
const D6_NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";

const D7_BODY: &[u8] = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
const D7_TIMESTAMP: i64 = 1_554_209_980;
const D7_SIGNATURE: &str = "Fx7NKfc9uAogSej5EJ6OvQ5k5ZbRWj/aY9Lbm+WN4InohigGVx2szDJhT8JQ8ctvQb1+v9OXkOuHxSuXOEBWn0iKOwH4tAx/BZi0TJWMP2ShDR7BUbu8mvm6+vsWx6oortoBSgKiQtrxh9LDim+BOun8ROSX4Wiumv7wEcfKUOyllbHfZxK45NH/LKBdxSJDZFBm3Wtq1I0pvpnlTCwmnyKF9n2kDJgjQbw51uN5XpNXPX2owmpkfVp79I4rMdkNKZuphUmYG5wyCJBAF8sbwcTCvjQQblTXmCmUbHzYj+qXRg1sthbMGqbpK5z1n3tFLjiIXfQJR+PmdqjBsPT1jA==";

/// A paid JSAPI transaction as WeChat Pay encrypts it into a notification (about 600 bytes).
const TRANSACTION: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018","transaction_id":"4200000000202611240000000001","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"order=88231;channel=mini-program","success_time":"2026-11-24T10:00:00+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"},"scene_info":{"device_id":"013467007045764"},"promotion_detail":[{"coupon_id":"109519","name":"单品惠-6","scope":"SINGLE","type":"DISCOUNT","amount":0,"stock_id":"931386","wechatpay_contribute":0,"merchant_contribute":0,"other_contribute":0,"currency":"CNY"}]}"#;

fn d5_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pem(D5_KEY).expect("the D.5 key parses")
}

/// A typical `unifiedorder` request: 12 parameters.
fn unifiedorder() -> XmlMap {
    [
        ("appid", "wxd678efh567hg6787"),
        ("mch_id", "1230000109"),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("sign_type", "MD5"),
        ("body", "Image形象店-深圳腾大-QQ公仔"),
        ("attach", "order=88231"),
        ("out_trade_no", "1217752501201407033233368018"),
        ("total_fee", "100"),
        ("spbill_create_ip", "203.0.113.7"),
        ("notify_url", "https://example.com/wxpay/notify/v2"),
        ("trade_type", "JSAPI"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A typical v2 payment notification (the D.3 fields, as WeChat writes them, with CDATA).
const V2_NOTIFICATION: &str = "<xml><appid><![CDATA[wxd930ea5d5a258f4f]]></appid>\
<bank_type><![CDATA[OTHERS]]></bank_type><cash_fee><![CDATA[1]]></cash_fee>\
<fee_type><![CDATA[CNY]]></fee_type><is_subscribe><![CDATA[N]]></is_subscribe>\
<mch_id><![CDATA[10000100]]></mch_id><nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str>\
<openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></openid><out_trade_no><![CDATA[1409811653]]></out_trade_no>\
<result_code><![CDATA[SUCCESS]]></result_code><return_code><![CDATA[SUCCESS]]></return_code>\
<sign><![CDATA[B9C97CC90F7FDD884DBD7DC718C9DF9C]]></sign><time_end><![CDATA[20140903131540]]></time_end>\
<total_fee>1</total_fee><trade_type><![CDATA[JSAPI]]></trade_type>\
<transaction_id><![CDATA[1004400740201409030005092168]]></transaction_id></xml>";

fn v2_sign(c: &mut Criterion) {
    let params = unifiedorder();
    let mut group = c.benchmark_group("v2_sign");
    group.bench_function("md5", |b| {
        b.iter(|| sign_map(black_box(&params), V2_KEY, SignType::Md5))
    });
    group.bench_function("hmac_sha256", |b| {
        b.iter(|| sign_map(black_box(&params), V2_KEY, SignType::HmacSha256));
    });
    group.finish();
}

fn v2_sign_and_xml_encode(c: &mut Criterion) {
    let params = unifiedorder();
    let sign_name = "sign".to_owned();
    let mut group = c.benchmark_group("v2_sign_and_xml_encode");
    group.bench_function("md5", |b| {
        b.iter(|| {
            let sign = sign_map(black_box(&params), V2_KEY, SignType::Md5);
            xml::encode(params.iter().chain(std::iter::once((&sign_name, &sign))))
                .expect("encodable")
        });
    });
    group.finish();
}

fn xml_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("xml_decode");
    group.bench_function("payment_notification", |b| {
        b.iter(|| xml::decode(black_box(V2_NOTIFICATION.as_bytes())).expect("decodes"));
    });
    group.finish();
}

fn v3_authorization(c: &mut Criterion) {
    let key = d5_key();
    let mut group = c.benchmark_group("v3_authorization");
    group.bench_function("jsapi_post", |b| {
        b.iter(|| {
            Authorization::sign(
                &key,
                "1230000109",
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                "POST",
                "/v3/pay/transactions/jsapi",
                1_554_208_460,
                D6_NONCE,
                black_box(D6_BODY.as_bytes()),
            )
            .expect("signs")
            .to_header_value()
        });
    });
    group.finish();
}

fn v3_verify(c: &mut Criterion) {
    let verifier = PublicKeyVerifier::new(PUB_KEY_ID, d5_key().public_key().clone());
    let headers = SignedHeaders {
        timestamp: D7_TIMESTAMP.to_string(),
        nonce: "c5ac7061fccab6bf3e254dcf98995b8c".to_owned(),
        signature: D7_SIGNATURE.to_owned(),
        serial: PUB_KEY_ID.to_owned(),
        signature_type: None,
    };
    let mut group = c.benchmark_group("v3_verify");
    group.bench_function("response", |b| {
        b.iter(|| {
            verify_signed(
                &verifier,
                &headers,
                black_box(D7_BODY),
                D7_TIMESTAMP,
                DEFAULT_WINDOW_SECS,
            )
            .expect("verifies");
        });
    });
    group.finish();
}

fn aead_decrypt(c: &mut Criterion) {
    let key = ApiV3Key::new(APIV3_KEY).expect("32 bytes");
    let ciphertext = key
        .encrypt("fdasflkja484", "transaction", TRANSACTION.as_bytes())
        .expect("encrypts");
    let mut group = c.benchmark_group("aead_decrypt");
    group.bench_function("transaction_resource", |b| {
        b.iter(|| {
            key.decrypt("fdasflkja484", "transaction", black_box(&ciphertext))
                .expect("decrypts")
        });
    });
    group.finish();
}

/// The baseline: aws-lc-rs called directly, then through our key types (which add base64).
fn raw_rsa_sign(c: &mut Criterion) {
    let key = d5_key();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(key.pkcs8_der()).expect("PKCS#8");
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let message = d6_message();
    let mut group = c.benchmark_group("raw_rsa_sign");
    group.bench_function("aws_lc_rs", |b| {
        let mut out = vec![0u8; pair.public_modulus_len()];
        b.iter(|| {
            pair.sign(&RSA_PKCS1_SHA256, &rng, black_box(&message), &mut out)
                .expect("signs");
        });
    });
    group.bench_function("rsa_private_key", |b| {
        b.iter(|| key.sign_sha256_base64(black_box(&message)).expect("signs"));
    });
    group.finish();
}

fn raw_rsa_verify(c: &mut Criterion) {
    let key = d5_key();
    let public = key.public_key().clone();
    let parsed =
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public.spki_der()).expect("SPKI");
    let message = d6_message();
    let signature_b64 = key.sign_sha256_base64(&message).expect("signs");
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(key.pkcs8_der()).expect("PKCS#8");
    let mut signature = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        &message,
        &mut signature,
    )
    .expect("signs");
    let mut group = c.benchmark_group("raw_rsa_verify");
    group.bench_function("aws_lc_rs", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(&message), &signature)
                .expect("verifies")
        });
    });
    group.bench_function("rsa_public_key", |b| {
        b.iter(|| {
            public
                .verify_sha256_base64(black_box(&message), &signature_b64)
                .expect("verifies")
        });
    });
    group.finish();
}

fn oaep_decrypt(c: &mut Criterion) {
    let key = d5_key();
    let ciphertext = key
        .public_key()
        .oaep_encrypt_base64(b"13800138000")
        .expect("encrypts");
    let mut group = c.benchmark_group("oaep_decrypt");
    group.bench_function("phone_number", |b| {
        b.iter(|| {
            key.oaep_decrypt_base64(black_box(&ciphertext))
                .expect("decrypts")
        });
    });
    group.finish();
}

/// A whole v3 payment notification: headers, signature over the raw body, AES-GCM decryption
/// of the resource and JSON parsing of the transaction.
fn v3_notification(c: &mut Criterion) {
    let key = d5_key();
    let api_v3_key = ApiV3Key::new(APIV3_KEY).expect("32 bytes");
    let verifier = PublicKeyVerifier::new(PUB_KEY_ID, key.public_key().clone());
    let now = 1_795_000_000;
    let signed = sign_notification(
        &NotificationSigner {
            api_v3_key: &api_v3_key,
            signing_key: &key,
            serial: PUB_KEY_ID,
        },
        &NotificationEvent {
            id: "EV-2018022511223320873",
            create_time: time::macros::datetime!(2026-11-24 10:00:01 +8),
            event_type: "TRANSACTION.SUCCESS",
            summary: "支付成功",
            original_type: "transaction",
            resource_json: TRANSACTION.as_bytes(),
        },
        now,
    )
    .expect("signs");
    let mut headers = HeaderMap::new();
    for (name, value) in &signed.headers {
        headers.insert(*name, value.parse().expect("header value"));
    }
    let keys = NotificationKeys {
        verifier: &verifier,
        api_v3_key: &api_v3_key,
        window_secs: DEFAULT_WINDOW_SECS,
    };
    let mut group = c.benchmark_group("v3_notification");
    group.bench_function("payment", |b| {
        b.iter(|| {
            parse_notification(keys, &headers, black_box(signed.body.as_bytes()), now)
                .expect("parses")
        });
    });
    group.finish();
}

fn d6_message() -> Vec<u8> {
    wxpay::v3::auth::request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        1_554_208_460,
        D6_NONCE,
        D6_BODY.as_bytes(),
    )
}

criterion_group!(
    protocol,
    v2_sign,
    v2_sign_and_xml_encode,
    xml_decode,
    v3_authorization,
    v3_verify,
    aead_decrypt,
    raw_rsa_sign,
    raw_rsa_verify,
    oaep_decrypt,
    v3_notification,
);
criterion_main!(protocol);
