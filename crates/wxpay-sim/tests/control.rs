//! The `/sim/` control API: users, paying as the WeChat client, faults, the clock, the merchant,
//! and the state directory.

mod support;

use serde_json::json;
use support::Merchant;
use wxpay_sim::{KeyMode, SimConfig, Simulator};

const NOTIFY: &str = "http://127.0.0.1:9/notify/pay";

#[tokio::test]
async fn users_are_created_with_a_login_code() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (status, v) = m.control("POST", "/sim/users", None).await;
    assert_eq!(status, 200);
    assert!(!v["openid"].as_str().unwrap().is_empty());
    assert!(!v["code"].as_str().unwrap().is_empty());
    assert_eq!(v["user_key"].as_str().unwrap().len(), 43, "{v}");
    let (status, chosen) = m
        .control(
            "POST",
            "/sim/users",
            Some(json!({"openid": "o-chosen-openid"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(chosen["openid"], "o-chosen-openid");
    let (status, v) = m
        .control(
            "POST",
            "/sim/users",
            Some(json!({"openid": "o-chosen-openid"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    // The same user logging in again (with their key) gets a fresh code for the same openid.
    let key = chosen["user_key"].as_str().unwrap();
    let (status, again) = m
        .control_with(
            "POST",
            "/sim/users/o-chosen-openid/code",
            None,
            &[("X-Sim-User-Key", key)],
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["openid"], "o-chosen-openid");
    assert!(!again["code"].as_str().unwrap().is_empty());
    assert_ne!(again["code"], chosen["code"]);
    let (status, _) = m
        .control_with(
            "POST",
            "/sim/users/o-nobody/code",
            None,
            &[("X-Sim-User-Key", key)],
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = m
        .control("POST", "/sim/users", Some(json!({"openid": "bad openid!"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = m
        .control("POST", "/sim/users", Some(json!({"unknown": 1})))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_login_code_for_a_user_needs_their_own_key() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (_, victim) = m.control("POST", "/sim/users", Some(json!({}))).await;
    let (_, attacker) = m.control("POST", "/sim/users", Some(json!({}))).await;
    let path = format!("/sim/users/{}/code", victim["openid"].as_str().unwrap());
    let attackers_key = attacker["user_key"].as_str().unwrap();
    for headers in [
        vec![],
        vec![("X-Sim-User-Key", "")],
        vec![("X-Sim-User-Key", attackers_key)],
        vec![(
            "X-Sim-User-Key",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        // No control token is configured: a bearer is worth nothing.
        vec![("Authorization", "Bearer anything")],
    ] {
        let (status, v) = m.control_with("POST", &path, None, &headers).await;
        assert_eq!(status, 403, "{headers:?}: {v}");
        assert!(v["error"].as_str().is_some(), "{v}");
        assert!(v.get("code").is_none(), "no code: {v}");
    }
    let own = victim["user_key"].as_str().unwrap();
    let (status, v) = m
        .control_with("POST", &path, None, &[("X-Sim-User-Key", own)])
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["openid"], victim["openid"]);
    // Without a control token, the other control routes stay open (`wxpay sim`).
    assert_eq!(m.control("GET", "/sim/clock", None).await.0, 200);
}

#[tokio::test]
async fn a_control_token_guards_the_control_routes_and_mints_codes_without_a_key() {
    let m = Merchant::start_with(SimConfig {
        key_mode: KeyMode::PublicKey,
        control_token: Some("the-control-token".into()),
        ..SimConfig::default()
    })
    .await;
    let bearer = [("Authorization", "Bearer the-control-token")];
    let wrong = [("Authorization", "Bearer not-it")];
    for (method, path, body) in [
        ("GET", "/sim/orders/none", None),
        ("GET", "/sim/notifications", None),
        ("POST", "/sim/notifications/flush", None),
        ("GET", "/sim/faults", None),
        ("PUT", "/sim/faults", Some(json!({}))),
        ("GET", "/sim/clock", None),
        ("POST", "/sim/clock/advance", Some(json!({"seconds": 1}))),
        ("GET", "/sim/merchant", None),
        ("GET", "/sim/connection", None),
        ("GET", "/sim/sub-merchants", None),
        ("POST", "/sim/users", Some(json!({"openid": "o-chosen"}))),
    ] {
        for headers in [&[][..], &wrong[..]] {
            let (status, v) = m.control_with(method, path, body.clone(), headers).await;
            assert_eq!(status, 401, "{method} {path}: {v}");
        }
        let (status, v) = m.control_with(method, path, body, &bearer).await;
        let expected = if path == "/sim/orders/none" { 404 } else { 200 };
        assert_eq!(status, expected, "{method} {path}: {v}");
    }
    // A fresh user stays open, and so does their own code; the token mints any user's code.
    let (status, user) = m.control("POST", "/sim/users", Some(json!({}))).await;
    assert_eq!(status, 200, "{user}");
    let path = format!("/sim/users/{}/code", user["openid"].as_str().unwrap());
    let key = user["user_key"].as_str().unwrap();
    assert_eq!(
        m.control_with("POST", &path, None, &[("X-Sim-User-Key", key)])
            .await
            .0,
        200
    );
    assert_eq!(m.control_with("POST", &path, None, &wrong).await.0, 403);
    assert_eq!(m.control_with("POST", &path, None, &bearer).await.0, 200);
}

#[tokio::test]
async fn the_client_checks_pay_sign_and_payer_before_paying() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let prepay_id = m.prepay("order-ctl-1", 100, &openid, NOTIFY).await;

    // A paySign by another key.
    let stranger = wxpay::RsaPrivateKey::generate().unwrap();
    let forged =
        wxpay::pay_params::v3(&stranger, &m.appid(), &prepay_id, Merchant::now(), "nonce").unwrap();
    let mut body = serde_json::to_value(&forged).unwrap();
    body["openid"] = json!(openid);
    let (status, v) = m.control("POST", "/sim/pay", Some(body)).await;
    assert_eq!(status, 400);
    assert_eq!(v["errMsg"], "requestPayment:fail 支付验证签名失败");

    // Signed for another appid.
    let other_app = wxpay::pay_params::v3(
        &m.key,
        "wx0000000000000000",
        &prepay_id,
        Merchant::now(),
        "nonce",
    )
    .unwrap();
    let mut body = serde_json::to_value(&other_app).unwrap();
    body["openid"] = json!(openid);
    assert_eq!(m.control("POST", "/sim/pay", Some(body)).await.0, 400);

    // A tampered package.
    let mut params = m.request_payment(&prepay_id);
    params.time_stamp = (Merchant::now() + 1).to_string();
    let mut body = serde_json::to_value(&params).unwrap();
    body["openid"] = json!(openid);
    assert_eq!(
        m.control("POST", "/sim/pay", Some(body)).await.1["errMsg"],
        "requestPayment:fail 支付验证签名失败"
    );

    // Another user.
    let someone = m.new_user().await;
    let mut body = serde_json::to_value(m.request_payment(&prepay_id)).unwrap();
    body["openid"] = json!(someone);
    let (status, v) = m.control("POST", "/sim/pay", Some(body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        v["errMsg"],
        "requestPayment:fail 下单账号与支付账号不一致，请核实后再支付"
    );

    let (_, order) = m.control("GET", "/sim/orders/order-ctl-1", None).await;
    assert_eq!(order["trade_state"], "NOTPAY");
    let log = m.control("GET", "/sim/notifications", None).await.1;
    assert!(log["deliveries"].as_array().unwrap().is_empty());

    let (status, paid) = m.pay(&prepay_id, &openid).await;
    assert_eq!(status, 200);
    assert_eq!(paid["errMsg"], "requestPayment:ok");
    let (_, order) = m.control("GET", "/sim/orders/order-ctl-1", None).await;
    assert_eq!(order["trade_state"], "SUCCESS");
    assert_eq!(order["transaction_id"], paid["transaction_id"]);
    assert_eq!(order["total"], 100);
    assert_eq!(
        m.control("GET", "/sim/orders/order-none-1", None).await.0,
        404
    );
}

#[tokio::test]
async fn a_bank_failure_marks_the_order_payerror_without_a_notification() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let prepay_id = m.prepay("order-ctl-2", 100, &openid, NOTIFY).await;
    let mut body = serde_json::to_value(m.request_payment(&prepay_id)).unwrap();
    body["openid"] = json!(openid);
    body["result"] = json!("NOPE");
    assert_eq!(
        m.control("POST", "/sim/pay", Some(body.clone())).await.0,
        400
    );
    body["result"] = json!("PAYERROR");
    let (status, v) = m.control("POST", "/sim/pay", Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(v["trade_state"], "PAYERROR");
    let query = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-ctl-2?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(query.json()["trade_state"], "PAYERROR");
    let log = m.control("GET", "/sim/notifications", None).await.1;
    assert!(log["deliveries"].as_array().unwrap().is_empty());
    assert_eq!(m.pay(&prepay_id, &openid).await.0, 400);
}

#[tokio::test]
async fn faults_are_validated_and_api_errors_look_like_system_error() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (status, v) = m.control("GET", "/sim/faults", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["api_error_rate"], 0.0);
    assert_eq!(v["notify_drop_rate"], 0.0);
    let (status, _) = m
        .control("PUT", "/sim/faults", Some(json!({"notify_drop_rate": 1.5})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = m
        .control("PUT", "/sim/faults", Some(json!({"notify_drop_rat": 0.5})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        m.control("GET", "/sim/faults", None).await.1["notify_drop_rate"],
        0.0,
        "refused settings change nothing"
    );

    let (status, v) = m
        .control("PUT", "/sim/faults", Some(json!({"api_error_rate": 1.0})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["api_error_rate"], 1.0);
    let answer = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-x-1?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.json(),
        json!({"code": "SYSTEM_ERROR", "message": "系统繁忙,请稍后重试"})
    );
    // The control API itself is never faulted.
    assert_eq!(m.control("GET", "/sim/merchant", None).await.0, 200);

    // v2 paths answer the signed SYSTEMERROR business failure.
    let response = m
        .http
        .post(format!("{}/pay/orderquery", m.base))
        .body("<xml><sign_type>HMAC-SHA256</sign_type></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let map = wxpay::v2::xml::decode(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(map["return_code"], "SUCCESS");
    assert_eq!(map["result_code"], "FAIL");
    assert_eq!(map["err_code"], "SYSTEMERROR");
    assert_eq!(
        wxpay::v2::sign::verify_map(&map, &m.sim.merchant().api_v2_key),
        Ok(wxpay::v2::SignType::HmacSha256)
    );

    m.control("PUT", "/sim/faults", Some(json!({}))).await;
    let answer = m
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/order-x-1?mchid={}",
                m.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn the_merchant_endpoint_shows_no_secret() {
    let m = Merchant::start(KeyMode::Migrating).await;
    let (status, v) = m.control("GET", "/sim/merchant", None).await;
    assert_eq!(status, 200);
    let creds = m.sim.merchant();
    assert_eq!(v["mchid"], creds.mchid.as_str());
    assert_eq!(v["appid"], creds.appid.as_str());
    assert_eq!(v["merchant_serial"], creds.merchant_serial.as_str());
    assert_eq!(
        v["wechatpay_public_key_id"],
        creds.wechatpay_public_key_id.as_str()
    );
    assert_eq!(v["key_mode"], "migrating");
    let text = v.to_string();
    for secret in [&creds.api_v2_key, &creds.api_v3_key, &creds.app_secret] {
        assert!(!text.contains(secret.as_str()));
    }
    assert!(!text.contains("PRIVATE KEY"));
    assert!(!format!("{creds:?}").contains(&creds.api_v3_key));
}

#[tokio::test]
async fn the_clock_moves_forward_on_request_only() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (_, before) = m.control("GET", "/sim/clock", None).await;
    assert_eq!(before["offset_seconds"], 0);
    assert_eq!(
        m.control("POST", "/sim/clock/advance", Some(json!({"seconds": "x"})))
            .await
            .0,
        400
    );
    assert_eq!(m.control("POST", "/sim/clock/advance", None).await.0, 400);
    let (status, after) = m
        .control("POST", "/sim/clock/advance", Some(json!({"seconds": 3600})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(after["offset_seconds"], 3600);
}

#[tokio::test]
async fn a_state_dir_keeps_the_merchant_across_restarts() {
    let dir = std::env::temp_dir().join(format!(
        "wxpay-sim-test-{}",
        wxpay::nonce::random_string(12)
    ));
    let config = SimConfig {
        state_dir: Some(dir.clone()),
        ..SimConfig::default()
    };
    let first = Simulator::start(config.clone()).await.unwrap();
    let creds = first.merchant().clone();
    assert_eq!(
        creds.merchant_json_path.as_deref(),
        Some(dir.join("merchant.json").as_path())
    );
    first.shutdown().await;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("merchant.json")).unwrap()).unwrap();
    assert_eq!(json["mchid"], creds.mchid.as_str());
    for file_key in [
        "apiclient_key",
        "apiclient_cert",
        "apiclient_cert_p12",
        "platform_cert",
        "wechatpay_public_key",
        "sim_ca_cert",
    ] {
        let name = json[file_key].as_str().unwrap();
        assert!(dir.join(name).is_file(), "{file_key} -> {name}");
    }
    let secrets = std::fs::read_to_string(dir.join("simulator-secrets.json")).unwrap();
    assert!(
        !secrets.contains(&creds.merchant_private_key_pem),
        "the merchant key is the merchant's, not the simulator's"
    );
    let second = Simulator::start(config).await.unwrap();
    assert_eq!(second.merchant().mchid, creds.mchid);
    assert_eq!(second.merchant().merchant_serial, creds.merchant_serial);
    assert_eq!(second.merchant().api_v3_key, creds.api_v3_key);
    second.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
