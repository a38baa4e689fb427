//! The v3 endpoints, driven as a merchant would: requests signed with the library's
//! `Authorization::sign`, answers checked with the library's verifiers, in all three key modes.

mod support;

use serde_json::json;
use support::Merchant;
use wxpay::keys::RsaPrivateKey;
use wxpay::v3::aead::ApiV3Key;
use wxpay_sim::KeyMode;

const NOTIFY: &str = "http://127.0.0.1:9/notify/pay";
const MODES: [KeyMode; 3] = [KeyMode::PublicKey, KeyMode::Certificate, KeyMode::Migrating];

#[tokio::test]
async fn an_order_is_placed_queried_paid_and_cannot_be_closed_after_payment_in_every_key_mode() {
    for mode in MODES {
        let m = Merchant::start(mode).await;
        let openid = m.new_user().await;
        let order = m
            .v3(
                "POST",
                "/v3/pay/transactions/jsapi",
                Some(&m.order_body("order-life-1", 100, &openid, NOTIFY)),
            )
            .await;
        assert_eq!(order.status, 200, "{mode:?} {:?}", order.json());
        m.verify(&order).unwrap();
        let serial = order.headers["wechatpay-serial"]
            .to_str()
            .unwrap()
            .to_owned();
        match mode {
            KeyMode::PublicKey => assert!(serial.starts_with("PUB_KEY_ID_"), "{serial}"),
            // Without a Wechatpay-Serial in the request, a migrating merchant gets certificate signatures.
            KeyMode::Certificate | KeyMode::Migrating => {
                assert_eq!(serial, m.sim.merchant().platform_serial)
            }
        }
        assert!(order.headers.contains_key("request-id"));
        let prepay_id = order.json()["prepay_id"].as_str().unwrap().to_owned();
        assert!(
            prepay_id.starts_with("wx") && prepay_id.len() == 36,
            "{prepay_id}"
        );

        let target = format!(
            "/v3/pay/transactions/out-trade-no/order-life-1?mchid={}",
            m.mchid()
        );
        let unpaid = m.v3("GET", &target, None).await;
        assert_eq!(unpaid.status, 200);
        m.verify(&unpaid).unwrap();
        let t = unpaid.json();
        assert_eq!(t["trade_state"], "NOTPAY");
        assert_eq!(t["amount"]["total"], 100);
        assert!(
            t.get("transaction_id").is_none()
                && t.get("payer").is_none()
                && t.get("success_time").is_none()
        );

        let (status, paid) = m.pay(&prepay_id, &openid).await;
        assert_eq!(status, 200, "{paid}");
        let transaction_id = paid["transaction_id"].as_str().unwrap().to_owned();
        assert!(transaction_id.starts_with("42000") && transaction_id.len() == 28);

        let by_id = m
            .v3(
                "GET",
                &format!(
                    "/v3/pay/transactions/id/{transaction_id}?mchid={}",
                    m.mchid()
                ),
                None,
            )
            .await;
        assert_eq!(by_id.status, 200);
        m.verify(&by_id).unwrap();
        let t = by_id.json();
        assert_eq!(t["trade_state"], "SUCCESS");
        assert_eq!(t["trade_state_desc"], "支付成功");
        assert_eq!(t["payer"]["openid"], openid.as_str());
        assert_eq!(t["amount"]["payer_total"], 100);
        assert_eq!(t["appid"], m.appid().as_str());
        assert!(t["success_time"].as_str().unwrap().ends_with("+08:00"));

        let close = m
            .v3(
                "POST",
                "/v3/pay/transactions/out-trade-no/order-life-1/close",
                Some(&json!({"mchid": m.mchid()})),
            )
            .await;
        assert_eq!(close.status, 400);
        assert_eq!(close.code(), "ORDERPAID");
        m.sim.shutdown().await;
    }
}

#[tokio::test]
async fn closing_answers_a_signed_204_and_a_closed_order_can_be_neither_reordered_nor_paid() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let prepay_id = m.prepay("order-close-1", 50, &openid, NOTIFY).await;
    let close = m
        .v3(
            "POST",
            "/v3/pay/transactions/out-trade-no/order-close-1/close",
            Some(&json!({"mchid": m.mchid()})),
        )
        .await;
    assert_eq!(close.status, 204);
    assert!(close.body.is_empty());
    m.verify(&close).unwrap();
    // Closing again, and closing an unknown number, also answer 204.
    for no in ["order-close-1", "order-never-made"] {
        let again = m
            .v3(
                "POST",
                &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
                Some(&json!({"mchid": m.mchid()})),
            )
            .await;
        assert_eq!(again.status, 204);
    }
    let reorder = m
        .v3(
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&m.order_body("order-close-1", 50, &openid, NOTIFY)),
        )
        .await;
    assert_eq!(reorder.status, 403);
    assert_eq!(reorder.code(), "OUT_TRADE_NO_USED");
    let (status, answer) = m.pay(&prepay_id, &openid).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errMsg"], "requestPayment:fail 订单已关闭");
    let query = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-close-1?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(query.json()["trade_state"], "CLOSED");
}

#[tokio::test]
async fn signatures_serials_and_timestamps_are_checked_like_the_real_service() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let body = m
        .order_body("order-sign-1", 100, &openid, NOTIFY)
        .to_string()
        .into_bytes();
    let path = "/v3/pay/transactions/jsapi";
    let serial = m.sim.merchant().merchant_serial.clone();

    // Signed by another key.
    let stranger = RsaPrivateKey::generate().unwrap();
    let auth = m.authorization_at("POST", path, &body, Merchant::now(), &serial, &stranger);
    let answer = m.send("POST", path, body.clone(), Some(auth), None).await;
    assert_eq!(answer.status, 401);
    let v = answer.json();
    assert_eq!(v["code"], "SIGN_ERROR");
    assert_eq!(v["detail"]["field"], "signature");
    assert_eq!(v["detail"]["detail"]["issue"], "sign not match");
    assert_eq!(v["detail"]["sign_information"]["url"], path);
    assert_eq!(v["detail"]["sign_information"]["method"], "POST");

    // The body changed after signing.
    let auth = m.authorization("POST", path, &body);
    let mut tampered = m
        .order_body("order-sign-1", 1, &openid, NOTIFY)
        .to_string()
        .into_bytes();
    let answer = m
        .send(
            "POST",
            path,
            std::mem::take(&mut tampered),
            Some(auth),
            None,
        )
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.code(), "SIGN_ERROR");

    // A serial that is not the merchant certificate's.
    let auth = m.authorization_at(
        "POST",
        path,
        &body,
        Merchant::now(),
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        &m.key,
    );
    let answer = m.send("POST", path, body.clone(), Some(auth), None).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.code(), "SIGN_ERROR");
    assert_eq!(answer.json()["detail"]["field"], "serial_no");

    // The serial is compared as the SDKs do: case does not matter.
    let auth = m.authorization_at(
        "POST",
        path,
        &body,
        Merchant::now(),
        &serial.to_lowercase(),
        &m.key,
    );
    assert_eq!(
        m.send("POST", path, body.clone(), Some(auth), None)
            .await
            .status,
        200
    );

    // Five minutes away, either side.
    for skew in [-300, 300] {
        let auth = m.authorization_at("POST", path, &body, Merchant::now() + skew, &serial, &m.key);
        let answer = m.send("POST", path, body.clone(), Some(auth), None).await;
        assert_eq!(answer.status, 401, "skew {skew}");
        assert_eq!(answer.json()["detail"]["field"], "timestamp");
    }
    let auth = m.authorization_at("POST", path, &body, Merchant::now() - 200, &serial, &m.key);
    assert_eq!(
        m.send("POST", path, body.clone(), Some(auth), None)
            .await
            .status,
        200
    );

    // No Authorization at all, or another scheme.
    assert_eq!(
        m.send("POST", path, body.clone(), None, None).await.code(),
        "SIGN_ERROR"
    );
    assert_eq!(
        m.send("POST", path, body.clone(), Some("Bearer abc".into()), None)
            .await
            .status,
        401
    );

    // Another merchant id.
    let other = Authorization_for_other_mchid(&m, &body);
    let answer = m.send("POST", path, body.clone(), Some(other), None).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "MCH_NOT_EXISTS");

    // The signed URL is the raw request target: signing the decoded form of an escaped path fails.
    let raw = format!(
        "/v3/pay/transactions/out-trade-no/A%7CB-123?mchid={}",
        m.mchid()
    );
    let decoded = format!(
        "/v3/pay/transactions/out-trade-no/A|B-123?mchid={}",
        m.mchid()
    );
    let auth = m.authorization("GET", &decoded, b"");
    assert_eq!(
        m.send("GET", &raw, Vec::new(), Some(auth), None)
            .await
            .status,
        401
    );
    let auth = m.authorization("GET", &raw, b"");
    let answer = m.send("GET", &raw, Vec::new(), Some(auth), None).await;
    assert_eq!(answer.status, 404, "{:?}", answer.json());
    assert_eq!(answer.code(), "ORDER_NOT_EXIST");
}

#[allow(non_snake_case)]
fn Authorization_for_other_mchid(m: &Merchant, body: &[u8]) -> String {
    wxpay::v3::auth::Authorization::sign(
        &m.key,
        "1900000000",
        &m.sim.merchant().merchant_serial,
        "POST",
        "/v3/pay/transactions/jsapi",
        Merchant::now(),
        &wxpay::nonce::nonce(),
        body,
    )
    .unwrap()
    .to_header_value()
}

#[tokio::test]
async fn bad_bodies_get_param_error_with_a_json_pointer() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let path = "/v3/pay/transactions/jsapi";

    let mut body = m.order_body("order-param-1", 100, &openid, NOTIFY);
    body["payer"].as_object_mut().unwrap().remove("openid");
    let answer = m.v3("POST", path, Some(&body)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "PARAM_ERROR");
    assert_eq!(answer.json()["detail"]["field"], "/payer/openid");
    assert_eq!(answer.json()["detail"]["location"], "body");

    let mut body = m.order_body("order-param-1", 100, &openid, NOTIFY);
    body["amount"]["currency"] = json!("XYZ");
    let answer = m.v3("POST", path, Some(&body)).await;
    assert_eq!(answer.json()["detail"]["field"], "/amount/currency");

    let mut body = m.order_body("order-param-1", 100, &openid, NOTIFY);
    body["amount"]["total"] = json!(0);
    assert_eq!(
        m.v3("POST", path, Some(&body)).await.json()["detail"]["field"],
        "/amount/total"
    );

    let body = m.order_body("short", 100, &openid, NOTIFY);
    assert_eq!(
        m.v3("POST", path, Some(&body)).await.json()["detail"]["field"],
        "/out_trade_no"
    );

    let body = m.order_body(
        "order-param-1",
        100,
        &openid,
        "http://127.0.0.1:9/notify?x=1",
    );
    assert_eq!(
        m.v3("POST", path, Some(&body)).await.json()["detail"]["field"],
        "/notify_url"
    );

    let body = m.order_body("order-param-1", 100, "o-nobody-knows-this-user", NOTIFY);
    let answer = m.v3("POST", path, Some(&body)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "PARAM_ERROR");
    assert_eq!(answer.json()["message"], "appid和openid不匹配");

    let mut body = m.order_body("order-param-1", 100, &openid, NOTIFY);
    body["appid"] = json!("wx0000000000000000");
    let answer = m.v3("POST", path, Some(&body)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "APPID_MCHID_NOT_MATCH");

    let answer = m
        .send(
            "POST",
            path,
            b"not json".to_vec(),
            Some(m.authorization("POST", path, b"not json")),
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "PARAM_ERROR");

    let answer = m
        .v3(
            "GET",
            "/v3/pay/transactions/out-trade-no/order-param-1",
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["detail"]["field"], "mchid");
    assert_eq!(answer.json()["detail"]["location"], "query");

    // Nothing was created by any of these.
    let (status, _) = m.control("GET", "/sim/orders/order-param-1", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_same_out_trade_no_is_idempotent_with_the_same_parameters_only() {
    let m = Merchant::start(KeyMode::Certificate).await;
    let openid = m.new_user().await;
    let first = m.prepay("order-dup-1", 100, &openid, NOTIFY).await;
    let second = m.prepay("order-dup-1", 100, &openid, NOTIFY).await;
    assert_eq!(first, second);
    let answer = m
        .v3(
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&m.order_body("order-dup-1", 101, &openid, NOTIFY)),
        )
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.code(), "OUT_TRADE_NO_USED");
    m.verify(&answer).unwrap();

    let (status, _) = m.pay(&first, &openid).await;
    assert_eq!(status, 200);
    let again = m
        .v3(
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&m.order_body("order-dup-1", 100, &openid, NOTIFY)),
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.code(), "ORDERPAID");
    let (status, answer) = m.pay(&first, &openid).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errMsg"], "requestPayment:fail 该订单已支付");

    let unknown = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-none-1?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "ORDER_NOT_EXIST");
    let unknown = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/id/4200000000000000000000000000?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(unknown.code(), "ORDER_NOT_EXIST");
}

#[tokio::test]
async fn a_prepay_id_expires_after_two_hours_and_reordering_gives_a_fresh_one() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let old = m.prepay("order-exp-1", 100, &openid, NOTIFY).await;
    let (status, clock) = m
        .control("POST", "/sim/clock/advance", Some(json!({"seconds": 7201})))
        .await;
    assert_eq!(status, 200, "{clock}");
    assert_eq!(clock["offset_seconds"], 7201);
    let (status, answer) = m.pay(&old, &openid).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["errMsg"],
        "requestPayment:fail prepay_id已过期，请重新下单"
    );
    let fresh = m.prepay("order-exp-1", 100, &openid, NOTIFY).await;
    assert_ne!(fresh, old);
    let (status, _) = m.pay(&fresh, &openid).await;
    assert_eq!(status, 200);

    // time_expire closes the order.
    let mut body = m.order_body("order-exp-2", 100, &openid, NOTIFY);
    let expire = time::OffsetDateTime::from_unix_timestamp(Merchant::now() + 7201 + 600).unwrap();
    body["time_expire"] = json!(
        expire
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let answer = m
        .v3("POST", "/v3/pay/transactions/jsapi", Some(&body))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    m.control("POST", "/sim/clock/advance", Some(json!({"seconds": 601})))
        .await;
    let query = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-exp-2?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(query.json()["trade_state"], "CLOSED");
}

#[tokio::test]
async fn refunds_respect_the_amount_are_idempotent_and_succeed() {
    let m = Merchant::start(KeyMode::Migrating).await;
    let openid = m.new_user().await;
    let prepay = m.prepay("order-ref-1", 100, &openid, NOTIFY).await;
    let refund = |no: &str, amount: u64| {
        json!({"out_trade_no": "order-ref-1", "out_refund_no": no, "reason": "不想要了",
               "amount": {"refund": amount, "total": 100, "currency": "CNY"}})
    };
    let path = "/v3/refund/domestic/refunds";
    let unpaid = m.v3("POST", path, Some(&refund("R-1", 10))).await;
    assert_eq!(unpaid.status, 400, "{:?}", unpaid.json());
    assert_eq!(unpaid.code(), "INVALID_REQUEST");
    let (_, paid) = m.pay(&prepay, &openid).await;
    let transaction_id = paid["transaction_id"].as_str().unwrap().to_owned();

    let first = m.v3("POST", path, Some(&refund("R-1", 60))).await;
    assert_eq!(first.status, 200, "{:?}", first.json());
    m.verify(&first).unwrap();
    let r = first.json();
    assert_eq!(r["status"], "PROCESSING");
    assert_eq!(r["amount"]["refund"], 60);
    assert_eq!(r["transaction_id"], transaction_id.as_str());
    assert!(r["refund_id"].as_str().unwrap().starts_with("50300"));

    let again = m.v3("POST", path, Some(&refund("R-1", 60))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["refund_id"], r["refund_id"]);
    let conflicting = m.v3("POST", path, Some(&refund("R-1", 61))).await;
    assert_eq!(conflicting.status, 400);
    assert_eq!(conflicting.code(), "INVALID_REQUEST");

    let over = m.v3("POST", path, Some(&refund("R-2", 41))).await;
    assert_eq!(over.status, 400);
    assert_eq!(over.code(), "INVALID_REQUEST");
    assert_eq!(over.json()["detail"]["field"], "/amount/refund");

    let by_tx = json!({"transaction_id": transaction_id, "out_refund_no": "R-2",
                       "amount": {"refund": 40, "total": 100, "currency": "CNY"}});
    assert_eq!(m.v3("POST", path, Some(&by_tx)).await.status, 200);

    let unknown = json!({"out_trade_no": "order-none-9", "out_refund_no": "R-3",
                         "amount": {"refund": 1, "total": 100, "currency": "CNY"}});
    let answer = m.v3("POST", path, Some(&unknown)).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.code(), "RESOURCE_NOT_EXISTS");

    // PROCESSING turns SUCCESS after 5 simulated seconds (2.5 ms at this time scale).
    let mut status = String::new();
    for _ in 0..100 {
        let q = m.v3("GET", "/v3/refund/domestic/refunds/R-1", None).await;
        m.verify(&q).unwrap();
        status = q.json()["status"].as_str().unwrap().to_owned();
        if status == "SUCCESS" {
            assert!(
                q.json()["success_time"]
                    .as_str()
                    .unwrap()
                    .ends_with("+08:00")
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "SUCCESS");
    let missing = m
        .v3("GET", "/v3/refund/domestic/refunds/R-none", None)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "RESOURCE_NOT_EXISTS");
    let order = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-ref-1?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(order.json()["trade_state"], "REFUND");
}

#[tokio::test]
async fn platform_certificates_follow_the_key_mode() {
    let pk = Merchant::start(KeyMode::PublicKey).await;
    let answer = pk.v3("GET", "/v3/certificates", None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.code(), "RESOURCE_NOT_EXISTS");
    assert!(
        answer.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("无可用的平台证书")
    );

    for mode in [KeyMode::Certificate, KeyMode::Migrating] {
        let m = Merchant::start(mode).await;
        let answer = m.v3("GET", "/v3/certificates", None).await;
        assert_eq!(answer.status, 200);
        m.verify(&answer).unwrap();
        let item = &answer.json()["data"][0];
        assert_eq!(item["serial_no"], m.sim.merchant().platform_serial.as_str());
        let enc = &item["encrypt_certificate"];
        assert_eq!(enc["associated_data"], "certificate");
        assert_eq!(enc["algorithm"], "AEAD_AES_256_GCM");
        let key = ApiV3Key::new(&m.sim.merchant().api_v3_key).unwrap();
        let pem = key
            .decrypt(
                enc["nonce"].as_str().unwrap(),
                "certificate",
                enc["ciphertext"].as_str().unwrap(),
            )
            .unwrap();
        let cert = wxpay::X509Certificate::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
        assert_eq!(cert.serial_no, m.sim.merchant().platform_serial);
    }
}

#[tokio::test]
async fn a_migrating_merchant_chooses_the_answer_key_with_wechatpay_serial() {
    let m = Merchant::start(KeyMode::Migrating).await;
    let target = format!(
        "/v3/pay/transactions/out-trade-no/order-none-1?mchid={}",
        m.mchid()
    );
    let pk_id = m.sim.merchant().wechatpay_public_key_id.clone();
    let auth = m.authorization("GET", &target, b"");
    let answer = m
        .send("GET", &target, Vec::new(), Some(auth), Some(&pk_id))
        .await;
    assert_eq!(answer.headers["wechatpay-serial"], pk_id.as_str());
    m.verify(&answer).unwrap();
    let auth = m.authorization("GET", &target, b"");
    let platform = m.sim.merchant().platform_serial.clone();
    let answer = m
        .send("GET", &target, Vec::new(), Some(auth), Some(&platform))
        .await;
    assert_eq!(answer.headers["wechatpay-serial"], platform.as_str());
    m.verify(&answer).unwrap();
    // A public-key-only verifier refuses the certificate-signed answer: the serial is unknown to it.
    let headers = wxpay::v3::verifier::SignedHeaders::from_headers(&answer.headers).unwrap();
    assert!(matches!(
        wxpay::v3::verifier::verify_signed(
            &m.public_key_verifier(),
            &headers,
            &answer.body,
            Merchant::now(),
            300
        ),
        Err(wxpay::SignatureError::UnknownSerial(_))
    ));
}

#[tokio::test]
async fn bills_are_offered_for_past_days_with_a_sha1_and_an_unsigned_download() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    for (no, total) in [("order-bill-1", 100u64), ("order-bill-2", 250)] {
        let prepay = m.prepay(no, total, &openid, NOTIFY).await;
        assert_eq!(m.pay(&prepay, &openid).await.0, 200);
    }
    let refund = json!({"out_trade_no": "order-bill-2", "out_refund_no": "R-bill-1",
                        "amount": {"refund": 50, "total": 250, "currency": "CNY"}});
    assert_eq!(
        m.v3("POST", "/v3/refund/domestic/refunds", Some(&refund))
            .await
            .status,
        200
    );
    let (_, clock) = m.control("GET", "/sim/clock", None).await;
    let today = clock["now"].as_str().unwrap()[..10].to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let answer = m
        .v3(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={today}&bill_type=ALL"),
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "STATEMENT_CREATING");

    m.control(
        "POST",
        "/sim/clock/advance",
        Some(json!({"seconds": 172_800})),
    )
    .await;
    for tar in ["", "&tar_type=GZIP"] {
        let answer = m
            .v3(
                "GET",
                &format!("/v3/bill/tradebill?bill_date={today}&bill_type=ALL{tar}"),
                None,
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        m.verify(&answer).unwrap();
        let v = answer.json();
        assert_eq!(v["hash_type"], "SHA1");
        let url = v["download_url"].as_str().unwrap();
        let target = url
            .strip_prefix(&m.base)
            .expect("the download URL points at the simulator");
        assert!(target.starts_with("/v3/billdownload/file?token="));
        let file = m.v3("GET", target, None).await;
        assert_eq!(file.status, 200);
        assert!(
            !file.headers.contains_key("wechatpay-signature"),
            "bill files are not signed"
        );
        let text = wxpay::bill::bill_text(&file.body, 1 << 20).unwrap();
        assert_eq!(
            wxpay::bill::sha1_hex(text.as_bytes()),
            v["hash_value"].as_str().unwrap()
        );
        assert_eq!(wxpay::bill::is_gzip(&file.body), !tar.is_empty());
        let bill = wxpay::bill::parse_trade_bill(&text).unwrap();
        assert_eq!(bill.rows.len(), 3);
        assert_eq!(bill.summary.total_count, 3);
        assert_eq!(bill.summary.settlement_total_fee, wxpay::Fen::new(350));
        assert_eq!(bill.summary.refund_fee, wxpay::Fen::new(50));
        assert!(text.ends_with("\r\n"));
    }
    let success = m
        .v3(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={today}&bill_type=SUCCESS"),
            None,
        )
        .await;
    assert_eq!(success.status, 200);
    let flow = m
        .v3(
            "GET",
            &format!("/v3/bill/fundflowbill?bill_date={today}"),
            None,
        )
        .await;
    assert_eq!(flow.status, 200, "{:?}", flow.json());
    let target = flow.json()["download_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&m.base)
        .unwrap()
        .to_owned();
    let file = m.v3("GET", &target, None).await;
    let bill = wxpay::bill::parse_fund_flow_bill(std::str::from_utf8(&file.body).unwrap()).unwrap();
    assert_eq!(bill.summary.income, wxpay::Fen::new(350));

    let empty_day = m
        .v3("GET", "/v3/bill/tradebill?bill_date=2020-01-01", None)
        .await;
    assert_eq!(empty_day.status, 400);
    let bad = m
        .v3(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={today}&bill_type=NOPE"),
            None,
        )
        .await;
    assert_eq!(bad.code(), "PARAM_ERROR");
    // Five minutes later the download URL is dead.
    m.control("POST", "/sim/clock/advance", Some(json!({"seconds": 301})))
        .await;
    let expired = m.v3("GET", &target, None).await;
    assert_eq!(expired.status, 400);
}
