//! The twelve differences from the real service found by comparing the simulator with the
//! official docs, the official SDKs and real captures (issue 14), one test each, on the wire.

mod support;

use serde_json::{Value, json};
use support::Merchant;
use wxpay::v2::{SignType, XmlMap};
use wxpay_sim::KeyMode;

const NOTIFY: &str = "http://127.0.0.1:9/notify/pay";

impl Merchant {
    /// Sends a v2 call signed with MD5 and returns the answer's fields.
    async fn v2(&self, path: &str, fields: &[(&str, &str)]) -> XmlMap {
        let m = self.sim.merchant();
        let mut map = XmlMap::new();
        map.insert("appid".into(), m.appid.clone());
        map.insert("mch_id".into(), m.mchid.clone());
        map.insert("nonce_str".into(), wxpay::nonce::nonce());
        for (k, v) in fields {
            map.insert((*k).into(), (*v).into());
        }
        let sign = wxpay::v2::sign::sign_map(&map, &m.api_v2_key, SignType::Md5);
        map.insert("sign".into(), sign);
        let body = wxpay::v2::xml::encode(&map).unwrap();
        let text = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        wxpay::v2::xml::decode(&text).unwrap_or_default()
    }

    async fn v2_order(&self, no: &str, total: &str, openid: &str, device: Option<&str>) -> XmlMap {
        let mut fields = vec![
            ("body", "test"),
            ("out_trade_no", no),
            ("total_fee", total),
            ("spbill_create_ip", "127.0.0.1"),
            ("notify_url", NOTIFY),
            ("trade_type", "JSAPI"),
            ("openid", openid),
        ];
        if let Some(d) = device {
            fields.push(("device_info", d));
        }
        self.v2("/pay/unifiedorder", &fields).await
    }
}

fn field<'a>(map: &'a XmlMap, key: &str) -> &'a str {
    map.get(key).map_or("", String::as_str)
}

/// 1. Signed answers carry `Wechatpay-Signature-Type`, and the library still takes an answer
/// without it but refuses another value.
#[tokio::test]
async fn signed_answers_name_their_signature_type() {
    for mode in [KeyMode::PublicKey, KeyMode::Certificate] {
        let m = Merchant::start(mode).await;
        let openid = m.new_user().await;
        let answer = m
            .v3(
                "POST",
                "/v3/pay/transactions/jsapi",
                Some(&m.order_body("order-type-1", 10, &openid, NOTIFY)),
            )
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.headers["wechatpay-signature-type"],
            "WECHATPAY2-SHA256-RSA2048"
        );
        m.verify(&answer).unwrap();
        let closed = m
            .v3(
                "POST",
                "/v3/pay/transactions/out-trade-no/order-type-1/close",
                Some(&json!({"mchid": m.mchid()})),
            )
            .await;
        assert_eq!(closed.status, 204);
        assert_eq!(
            closed.headers["wechatpay-signature-type"],
            "WECHATPAY2-SHA256-RSA2048"
        );

        let mut without = answer.headers.clone();
        without.remove("wechatpay-signature-type");
        let headers = wxpay::v3::verifier::SignedHeaders::from_headers(&without).unwrap();
        let verifier = m.verifier();
        assert_eq!(
            wxpay::v3::verifier::verify_signed(
                verifier.as_ref(),
                &headers,
                &answer.body,
                Merchant::now(),
                300
            ),
            Ok(()),
            "older answers without the header are accepted"
        );
        let mut other = headers.clone();
        other.signature_type = Some("WECHATPAY2-SM2-WITH-SM3".into());
        assert!(matches!(
            wxpay::v3::verifier::verify_signed(
                verifier.as_ref(),
                &other,
                &answer.body,
                Merchant::now(),
                300
            ),
            Err(wxpay::SignatureError::UnsupportedType(_))
        ));
        m.sim.shutdown().await;
    }
}

/// 2. A reused `out_trade_no`: v2 `INVALID_REQUEST` / `201 商户订单号重复`, v3 403
/// `OUT_TRADE_NO_USED` / `商户订单号重复`; a closed order's number likewise.
#[tokio::test]
async fn a_reused_order_number_is_a_duplicate_in_both_apis() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let first = m.v2_order("order-dup-v2", "100", &openid, None).await;
    assert_eq!(field(&first, "result_code"), "SUCCESS", "{first:?}");
    let again = m.v2_order("order-dup-v2", "100", &openid, None).await;
    assert_eq!(field(&again, "prepay_id"), field(&first, "prepay_id"));
    let other = m.v2_order("order-dup-v2", "101", &openid, None).await;
    assert_eq!(field(&other, "result_code"), "FAIL");
    assert_eq!(field(&other, "err_code"), "INVALID_REQUEST");
    assert_eq!(field(&other, "err_code_des"), "201 商户订单号重复");
    let closed = m
        .v2("/pay/closeorder", &[("out_trade_no", "order-dup-v2")])
        .await;
    assert_eq!(field(&closed, "result_code"), "SUCCESS", "{closed:?}");
    let reuse_closed = m.v2_order("order-dup-v2", "100", &openid, None).await;
    assert_eq!(field(&reuse_closed, "err_code"), "INVALID_REQUEST");
    assert_eq!(field(&reuse_closed, "err_code_des"), "201 商户订单号重复");

    m.prepay("order-dup-v3", 100, &openid, NOTIFY).await;
    let other = m
        .v3(
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&m.order_body("order-dup-v3", 101, &openid, NOTIFY)),
        )
        .await;
    assert_eq!(other.status, 403);
    assert_eq!(
        other.json(),
        json!({"code": "OUT_TRADE_NO_USED", "message": "商户订单号重复"})
    );
    let close = m
        .v3(
            "POST",
            "/v3/pay/transactions/out-trade-no/order-dup-v3/close",
            Some(&json!({"mchid": m.mchid()})),
        )
        .await;
    assert_eq!(close.status, 204);
    let reuse_closed = m
        .v3(
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&m.order_body("order-dup-v3", 100, &openid, NOTIFY)),
        )
        .await;
    assert_eq!(reuse_closed.status, 403);
    assert_eq!(reuse_closed.code(), "OUT_TRADE_NO_USED");
}

/// 3. The v3 query of an unpaid order has the real shape; a paid one adds the payment fields.
#[tokio::test]
async fn the_v3_query_has_the_shape_of_real_answers() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let mut body = m.order_body("order-shape-1", 88, &openid, NOTIFY);
    body["attach"] = json!("table=12");
    let prepay = m
        .v3("POST", "/v3/pay/transactions/jsapi", Some(&body))
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = format!(
        "/v3/pay/transactions/out-trade-no/order-shape-1?mchid={}",
        m.mchid()
    );
    let unpaid = m.v3("GET", &target, None).await.json();
    assert_eq!(
        unpaid,
        json!({
            "appid": m.appid(),
            "mchid": m.mchid(),
            "out_trade_no": "order-shape-1",
            "trade_state": "NOTPAY",
            "trade_state_desc": "订单未支付",
            "amount": {"payer_currency": "CNY", "total": 88},
            "promotion_detail": [],
            "scene_info": {"device_id": ""},
        })
    );
    assert_eq!(m.pay(&prepay, &openid).await.0, 200);
    let paid = m.v3("GET", &target, None).await.json();
    assert_eq!(paid["trade_type"], "JSAPI");
    assert_eq!(paid["attach"], "table=12");
    assert_eq!(paid["promotion_detail"], json!([]));
    assert_eq!(
        paid["amount"],
        json!({"total": 88, "payer_total": 88, "currency": "CNY", "payer_currency": "CNY"})
    );
    assert_eq!(paid["payer"]["openid"], openid.as_str());
    // The library reads both shapes.
    let t: wxpay::v3::models::Transaction = serde_json::from_value(unpaid).unwrap();
    assert_eq!(t.amount.total, 88);
    let t: wxpay::v3::models::Transaction = serde_json::from_value(paid).unwrap();
    assert_eq!(t.attach.as_deref(), Some("table=12"));
}

/// 4. Yesterday's bill exists from 10:00 Beijing time, in v3 and v2.
#[tokio::test]
async fn yesterdays_bill_exists_after_ten_beijing_time() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let prepay = m.prepay("order-bill-time", 100, &openid, NOTIFY).await;
    assert_eq!(m.pay(&prepay, &openid).await.0, 200);
    let (_, clock) = m.control("GET", "/sim/clock", None).await;
    let now = time::OffsetDateTime::parse(
        clock["now"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .to_offset(wxpay::time::BEIJING);
    let day = now.date();
    // To 09:59:59 the next day, then one more second.
    let ten = day
        .next_day()
        .unwrap()
        .with_hms(10, 0, 0)
        .unwrap()
        .assume_offset(wxpay::time::BEIJING);
    let to_nine_59 = (ten - now).whole_seconds() - 1;
    m.control(
        "POST",
        "/sim/clock/advance",
        Some(json!({"seconds": to_nine_59})),
    )
    .await;
    let target = format!("/v3/bill/tradebill?bill_date={day}&bill_type=ALL");
    let early = m.v3("GET", &target, None).await;
    assert_eq!(early.status, 400);
    assert_eq!(
        early.json(),
        json!({"code": "STATEMENT_CREATING", "message": "账单生成中，请在次日10点后下载"})
    );
    let v2_date = format!("{}{:02}{:02}", day.year(), u8::from(day.month()), day.day());
    let early_v2 = m
        .v2("/pay/downloadbill", &[("bill_date", v2_date.as_str())])
        .await;
    assert_eq!(field(&early_v2, "return_msg"), "Bill Creating");
    m.control("POST", "/sim/clock/advance", Some(json!({"seconds": 2})))
        .await;
    assert_eq!(m.v3("GET", &target, None).await.status, 200);
}

/// 5. `force_refresh` within 30 s of the last one returns the current token, without error.
#[tokio::test]
async fn a_forced_stable_token_refresh_within_30_seconds_returns_the_current_token() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let creds = m.sim.merchant();
    let body = json!({"grant_type": "client_credential", "appid": creds.appid,
                      "secret": creds.app_secret, "force_refresh": true});
    let post = || async {
        m.http
            .post(format!("{}/cgi-bin/stable_token", m.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let first = post().await;
    assert!(first["access_token"].is_string(), "{first}");
    let second = post().await;
    assert_eq!(second["access_token"], first["access_token"], "{second}");
    assert!(second.get("errcode").is_none(), "{second}");
    m.control("POST", "/sim/clock/advance", Some(json!({"seconds": 30})))
        .await;
    let third = post().await;
    assert_ne!(third["access_token"], first["access_token"], "{third}");
}

async fn stable_token(m: &Merchant) -> String {
    let creds = m.sim.merchant();
    let v: Value = m
        .http
        .post(format!("{}/cgi-bin/stable_token", m.base))
        .json(
            &json!({"grant_type": "client_credential", "appid": creds.appid,
                      "secret": creds.app_secret}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// 6. `getwxacodeunlimit` answers `image/jpeg` (a PNG only with a transparent background).
#[tokio::test]
async fn the_mini_program_code_is_a_jpeg() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let token = stable_token(&m).await;
    let url = format!("{}/wxa/getwxacodeunlimit?access_token={token}", m.base);
    let jpeg = m
        .http
        .post(&url)
        .json(&json!({"scene": "a=1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(jpeg.headers()["content-type"], "image/jpeg");
    assert!(jpeg.bytes().await.unwrap().starts_with(&[0xff, 0xd8, 0xff]));
    let png = m
        .http
        .post(&url)
        .json(&json!({"scene": "a=1", "is_hyaline": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
}

/// 7. Failed authentication is answered unsigned, as `application/json; charset=utf-8`.
#[tokio::test]
async fn failed_authentication_is_not_signed() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let target = format!(
        "/v3/pay/transactions/out-trade-no/order-nope-1?mchid={}",
        m.mchid()
    );
    let wrong = m.authorization("GET", "/v3/other", b"");
    for auth in [None, Some(wrong)] {
        let answer = m.send("GET", &target, Vec::new(), auth, None).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.code(), "SIGN_ERROR");
        assert_eq!(
            answer.headers["content-type"],
            "application/json; charset=utf-8"
        );
        assert!(answer.headers.contains_key("request-id"));
        for h in [
            "wechatpay-signature",
            "wechatpay-serial",
            "wechatpay-timestamp",
            "wechatpay-nonce",
            "wechatpay-signature-type",
        ] {
            assert!(!answer.headers.contains_key(h), "{h} on a 401");
        }
    }
    // A verified request that fails on business grounds is still signed.
    let missing = m.v3("GET", &target, None).await;
    assert_eq!(missing.status, 404);
    m.verify(&missing).unwrap();
}

/// 8. Mini-program error messages put a comma before `rid:`.
#[tokio::test]
async fn mini_program_errors_read_like_wechats() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let creds = m.sim.merchant();
    let v: Value = m
        .http
        .get(format!(
            "{}/sns/jscode2session?appid={}&secret={}&js_code=nope&grant_type=authorization_code",
            m.base, creds.appid, creds.app_secret
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], 40029);
    let msg = v["errmsg"].as_str().unwrap();
    assert!(msg.starts_with("invalid code, rid: "), "{msg}");
}

/// 9. v2 `orderquery` of an unpaid order carries `total_fee`, and `device_info` when given.
#[tokio::test]
async fn the_v2_query_of_an_unpaid_order_carries_its_amount() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let made = m
        .v2_order("order-v2q-1", "321", &openid, Some("POS-7"))
        .await;
    assert_eq!(field(&made, "result_code"), "SUCCESS", "{made:?}");
    let q = m
        .v2("/pay/orderquery", &[("out_trade_no", "order-v2q-1")])
        .await;
    assert_eq!(field(&q, "trade_state"), "NOTPAY");
    assert_eq!(field(&q, "total_fee"), "321");
    assert_eq!(field(&q, "device_info"), "POS-7");
    assert!(!q.contains_key("transaction_id"));
    m.v2_order("order-v2q-2", "5", &openid, None).await;
    let q = m
        .v2("/pay/orderquery", &[("out_trade_no", "order-v2q-2")])
        .await;
    assert_eq!(field(&q, "total_fee"), "5");
    assert!(!q.contains_key("device_info"));
}

/// 10. Injected faults: 500 `SYSTEM_ERROR` with the real text, and a 429 `FREQUENCY_LIMITED`.
#[tokio::test]
async fn faults_include_the_real_system_error_and_rate_limiting() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let target = format!(
        "/v3/pay/transactions/out-trade-no/order-f-1?mchid={}",
        m.mchid()
    );
    let (status, v) = m
        .control(
            "PUT",
            "/sim/faults",
            Some(json!({"api_rate_limit_rate": 1.0})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let limited = m.v3("GET", &target, None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.json(),
        json!({"code": "FREQUENCY_LIMITED", "message": "频率超限"})
    );
    let v2 = m
        .v2("/pay/orderquery", &[("out_trade_no", "order-f-1")])
        .await;
    assert_eq!(field(&v2, "err_code"), "FREQUENCY_LIMITED");
    let creds = m.sim.merchant();
    let mp: Value = m
        .http
        .get(format!(
            "{}/sns/jscode2session?appid={}&secret={}&js_code=x",
            m.base, creds.appid, creds.app_secret
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mp["errcode"], 45011);

    m.control("PUT", "/sim/faults", Some(json!({"api_error_rate": 1.0})))
        .await;
    let failed = m.v3("GET", &target, None).await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        failed.json(),
        json!({"code": "SYSTEM_ERROR", "message": "系统繁忙,请稍后重试"})
    );
    let (status, _) = m
        .control(
            "PUT",
            "/sim/faults",
            Some(json!({"api_rate_limit_rate": 1.5})),
        )
        .await;
    assert_eq!(status, 400);
}

/// 11. `/v3/certificates` of a public-key merchant links the current guide.
#[tokio::test]
async fn certificates_of_a_public_key_merchant_link_the_current_guide() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let answer = m.v3("GET", "/v3/certificates", None).await;
    assert_eq!(answer.status, 404);
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.ends_with("https://pay.weixin.qq.com/doc/v3/merchant/4012153196"),
        "{message}"
    );
}

/// 12. Bills start with a UTF-8 byte-order mark; the v3 hash covers the file as served; the
/// library parses them.
#[tokio::test]
async fn bills_start_with_a_byte_order_mark() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let prepay = m.prepay("order-bom-1", 100, &openid, NOTIFY).await;
    assert_eq!(m.pay(&prepay, &openid).await.0, 200);
    let (_, clock) = m.control("GET", "/sim/clock", None).await;
    let today = clock["now"].as_str().unwrap()[..10].to_owned();
    m.control(
        "POST",
        "/sim/clock/advance",
        Some(json!({"seconds": 172_800})),
    )
    .await;
    for path in [
        format!("/v3/bill/tradebill?bill_date={today}"),
        format!("/v3/bill/fundflowbill?bill_date={today}"),
    ] {
        let offer = m.v3("GET", &path, None).await;
        assert_eq!(offer.status, 200, "{:?}", offer.json());
        let target = offer.json()["download_url"]
            .as_str()
            .unwrap()
            .strip_prefix(&m.base)
            .unwrap()
            .to_owned();
        let file = m.v3("GET", &target, None).await;
        assert!(file.body.starts_with(b"\xef\xbb\xbf"), "{path}");
        assert_eq!(
            wxpay::bill::sha1_hex(&file.body),
            offer.json()["hash_value"].as_str().unwrap()
        );
        let text = std::str::from_utf8(&file.body).unwrap();
        if path.contains("tradebill") {
            assert!(text.starts_with("\u{feff}交易时间,"));
            assert_eq!(wxpay::bill::parse_trade_bill(text).unwrap().rows.len(), 1);
        } else {
            assert!(text.starts_with("\u{feff}记账时间,"));
            assert!(wxpay::bill::parse_fund_flow_bill(text).is_ok());
        }
    }
    let v2_date = today.replace('-', "");
    let text = m
        .http
        .post(format!("{}/pay/downloadbill", m.base))
        .body({
            let c = m.sim.merchant();
            let mut map = XmlMap::new();
            map.insert("appid".into(), c.appid.clone());
            map.insert("mch_id".into(), c.mchid.clone());
            map.insert("nonce_str".into(), wxpay::nonce::nonce());
            map.insert("bill_date".into(), v2_date);
            let sign = wxpay::v2::sign::sign_map(&map, &c.api_v2_key, SignType::Md5);
            map.insert("sign".into(), sign);
            wxpay::v2::xml::encode(&map).unwrap()
        })
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(text.starts_with(b"\xef\xbb\xbf"));
    let text = std::str::from_utf8(&text).unwrap();
    assert_eq!(wxpay::bill::parse_trade_bill(text).unwrap().rows.len(), 1);
}
