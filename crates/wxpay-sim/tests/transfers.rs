//! Merchant transfers (商家转账, 2025) and their authorization mode, driven as a merchant would:
//! requests signed with the library's `Authorization::sign`, `user_name` encrypted with the
//! library's RSA-OAEP under the simulator's WeChat Pay key, answers verified, the payee's
//! confirmation posted as the WeChat client does, notifications decrypted. Time moves only by the
//! business clock (`/sim/clock/advance`), never by waiting.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::receiver::{self, Receiver};
use support::{Answer, Merchant};
use wxpay::http::{BaseUrls, HttpConfig, RetryPolicy};
use wxpay::keys::{RsaPrivateKey, RsaPublicKey, X509Certificate};
use wxpay::nonce::SystemClock;
use wxpay::v3::ErrorCode;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::auth::Authorization;
use wxpay::v3::certificates::PlatformVerifier;
use wxpay::v3::client::{V3Client, V3Config};
use wxpay::v3::notify::Notification;
use wxpay::v3::transfers::{
    AuthorizationInfo, AuthorizationRequest, AuthorizationState, AuthorizedTransferRequest,
    PreTransferWithAuthorizationRequest, TransferBillRequest, TransferFailReason,
    TransferSceneReportInfo, TransferState, UserName,
};
use wxpay::v3::verifier::{SignedHeaders, verify_signed};
use wxpay::{ApiError, Error, OpenId, OutBillNo};
use wxpay_sim::{KeyMode, SimConfig};

const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";
const AUTHS: &str = "/v3/fund-app/mch-transfer/user-confirm-authorization";
const LIMIT: &str = "超过单笔转账上下限,核实产品设置是否准确";
const NOT_ENOUGH: &str = "商户运营账户资金不足,充值后可以原单号发起重试,请勿更换商户单号";
const PACKAGE_ERROR: &str = "package_info信息有误,请返回联系商家处理";
const OPENID_ERROR: &str = "你的微信号与商家指定的收款微信号不一致";

fn infos_1000() -> Value {
    json!([
        {"info_type": "活动名称", "info_content": "新会员有礼"},
        {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"},
    ])
}

fn bill_body(m: &Merchant, no: &str, openid: &str, amount: u64) -> Value {
    json!({
        "appid": m.appid(),
        "out_bill_no": no,
        "transfer_scene_id": "1000",
        "openid": openid,
        "transfer_amount": amount,
        "transfer_remark": "新会员开通有礼",
        "user_recv_perception": "现金奖励",
        "transfer_scene_report_infos": infos_1000(),
    })
}

async fn create(m: &Merchant, body: &Value) -> Answer {
    m.v3("POST", BILLS, Some(body)).await
}

/// A create call with a `Wechatpay-Serial` header (for an encrypted `user_name`).
async fn create_with_serial(m: &Merchant, body: &Value, serial: Option<&str>) -> Answer {
    let bytes = body.to_string().into_bytes();
    let auth = m.authorization("POST", BILLS, &bytes);
    m.send("POST", BILLS, bytes, Some(auth), serial).await
}

fn encrypt_for_public_key(m: &Merchant, name: &str) -> String {
    RsaPublicKey::from_pem(&m.sim.merchant().wechatpay_public_key_pem)
        .unwrap()
        .oaep_encrypt_base64(name.as_bytes())
        .unwrap()
}

async fn created(m: &Merchant, body: &Value) -> Value {
    let answer = create(m, body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    m.verify(&answer).unwrap();
    answer.json()
}

async fn new_user_named(m: &Merchant, name: &str) -> String {
    let (status, v) = m
        .control("POST", "/sim/users", Some(json!({"real_name": name})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["real_name"], name);
    v["openid"].as_str().unwrap().to_owned()
}

async fn confirm(m: &Merchant, package: &str, openid: &str) -> (u16, Value) {
    m.control(
        "POST",
        "/sim/transfers/confirm",
        Some(json!({"mchId": m.mchid(), "appId": m.appid(), "package": package, "openid": openid})),
    )
    .await
}

async fn query(m: &Merchant, out_bill_no: &str) -> Answer {
    m.v3("GET", &format!("{BILLS}/out-bill-no/{out_bill_no}"), None)
        .await
}

async fn state_of(m: &Merchant, out_bill_no: &str) -> Value {
    let answer = query(m, out_bill_no).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    m.verify(&answer).unwrap();
    answer.json()
}

async fn balance(m: &Merchant) -> u64 {
    let (status, v) = m
        .control(
            "GET",
            &format!("/sim/merchants/{}/balance", m.mchid()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["balance_fen"].as_u64().unwrap()
}

async fn advance(m: &Merchant, seconds: i64) {
    let (status, v) = m
        .control(
            "POST",
            "/sim/clock/advance",
            Some(json!({"seconds": seconds})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

async fn settings(m: &Merchant, change: Value) -> Value {
    let (status, v) = m
        .control("PUT", "/sim/transfers/settings", Some(change))
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Flushes until nothing is pending, returning the delivery log.
async fn settle(m: &Merchant) -> Vec<Value> {
    for _ in 0..60 {
        let (status, summary) = m.control("POST", "/sim/notifications/flush", None).await;
        assert_eq!(status, 200);
        if summary["pending"] == 0 {
            let (_, v) = m.control("GET", "/sim/notifications", None).await;
            return v["deliveries"].as_array().unwrap().clone();
        }
    }
    panic!("notifications still pending after 60 flushes");
}

/// The decrypted notifications received at `path`, each checked: signed by the simulator's
/// key, `mch_payment` resource.
fn received(m: &Merchant, rx: &Receiver, path: &str) -> Vec<(Value, Value)> {
    let key = ApiV3Key::new(&m.sim.merchant().api_v3_key).unwrap();
    rx.received()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let headers = SignedHeaders::from_headers(&r.headers).unwrap();
            verify_signed(
                m.verifier().as_ref(),
                &headers,
                &r.body,
                Merchant::now(),
                300,
            )
            .unwrap();
            let envelope: Value = serde_json::from_slice(&r.body).unwrap();
            let res = &envelope["resource"];
            assert_eq!(res["original_type"], "mch_payment");
            assert_eq!(res["associated_data"], "mch_payment");
            assert_eq!(res["algorithm"], "AEAD_AES_256_GCM");
            let plain = key
                .decrypt(
                    res["nonce"].as_str().unwrap(),
                    res["associated_data"].as_str().unwrap(),
                    res["ciphertext"].as_str().unwrap(),
                )
                .unwrap();
            (envelope.clone(), serde_json::from_slice(&plain).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_bill_is_created_confirmed_by_the_payee_paid_and_notified() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let openid = m.new_user().await;
    let before = balance(&m).await;
    assert_eq!(before, 10_000_000, "the default balance");
    let mut body = bill_body(&m, "plan1", &openid, 300);
    body["notify_url"] = json!(format!("{base}/notify/transfer"));
    let bill = created(&m, &body).await;
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM");
    assert_eq!(bill["out_bill_no"], "plan1");
    let no = bill["transfer_bill_no"].as_str().unwrap().to_owned();
    assert!(
        no.len() == 34 && no.starts_with("1330") && no.bytes().all(|b| b.is_ascii_digit()),
        "{no}"
    );
    let package = bill["package_info"].as_str().unwrap().to_owned();
    assert_eq!(package.len(), 156);
    assert!(bill["create_time"].as_str().unwrap().ends_with("+08:00"));
    assert_eq!(balance(&m).await, before - 300, "the amount is locked");

    let q = state_of(&m, "plan1").await;
    assert_eq!(q["state"], "WAIT_USER_CONFIRM");
    assert_eq!(q["mch_id"], m.mchid().as_str());
    assert!(q.get("mchid").is_none() && q.get("package_info").is_none());
    assert_eq!(q["transfer_amount"], 300);
    assert_eq!(q["openid"], openid.as_str());
    assert_eq!(q["appid"], m.appid().as_str());
    assert_eq!(q["transfer_remark"], "新会员开通有礼");
    assert!(q.get("fail_reason").is_none());

    let (status, answer) = confirm(&m, &package, &openid).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errMsg"], "requestMerchantTransfer:ok");
    assert_eq!(answer["state"], "SUCCESS");

    let by_no = m
        .v3("GET", &format!("{BILLS}/transfer-bill-no/{no}"), None)
        .await;
    assert_eq!(by_no.status, 200);
    m.verify(&by_no).unwrap();
    assert_eq!(by_no.json()["state"], "SUCCESS");
    assert_eq!(by_no.json()["out_bill_no"], "plan1");
    assert_eq!(balance(&m).await, before - 300, "paid out");

    let log = settle(&m).await;
    let d = log
        .iter()
        .find(|d| d["kind"] == "transfer")
        .expect("a transfer delivery");
    assert_eq!(d["out_trade_no"], "plan1");
    assert_eq!(d["acked"], true);
    let notes = received(&m, &rx, "/notify/transfer");
    assert_eq!(notes.len(), 1);
    let (envelope, plain) = &notes[0];
    assert_eq!(envelope["event_type"], "MCHTRANSFER.BILL.FINISHED");
    assert_eq!(envelope["summary"], "商家转账单据终态通知");
    assert_eq!(envelope["resource_type"], "encrypt-resource");
    assert_eq!(plain["out_bill_no"], "plan1");
    assert_eq!(plain["transfer_bill_no"], no.as_str());
    assert_eq!(plain["state"], "SUCCESS");
    assert_eq!(plain["mch_id"], m.mchid().as_str());
    assert_eq!(plain["transfer_amount"], 300);
    assert_eq!(plain["openid"], openid.as_str());
    assert!(plain.get("fail_reason").is_none());
    assert!(plain["update_time"].as_str().unwrap().ends_with("+08:00"));

    // The package is used.
    let (status, again) = confirm(&m, &package, &openid).await;
    assert_eq!(status, 400);
    assert_eq!(
        again["errMsg"],
        format!("requestMerchantTransfer:fail {PACKAGE_ERROR}")
    );
    // The control view lists it.
    let (status, list) = m
        .control("GET", &format!("/sim/transfers?openid={openid}"), None)
        .await;
    assert_eq!(status, 200);
    let bills = list["transfers"].as_array().unwrap();
    assert_eq!(bills.len(), 1);
    assert_eq!(bills[0]["state"], "SUCCESS");
    assert_eq!(bills[0]["package_info"], package.as_str());
    m.sim.shutdown().await;
}

#[tokio::test]
async fn the_same_body_again_answers_the_stored_bill_and_another_body_is_refused() {
    let m = Merchant::start(KeyMode::Certificate).await;
    let openid = m.new_user().await;
    let body = bill_body(&m, "again1", &openid, 500);
    let first = created(&m, &body).await;
    let second = created(&m, &body).await;
    assert_eq!(first, second, "the stored bill, with the same package_info");
    assert_eq!(balance(&m).await, 10_000_000 - 500, "locked once");

    let mut other = body.clone();
    other["transfer_amount"] = json!(501);
    let refused = create(&m, &other).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.code(), "INVALID_REQUEST");
    m.verify(&refused).unwrap();
    let mut other = body.clone();
    other["transfer_remark"] = json!("另一个备注");
    assert_eq!(create(&m, &other).await.code(), "INVALID_REQUEST");

    let package = first["package_info"].as_str().unwrap();
    assert_eq!(confirm(&m, package, &openid).await.0, 200);
    let after = created(&m, &body).await;
    assert_eq!(after["state"], "SUCCESS");
    assert_eq!(after["transfer_bill_no"], first["transfer_bill_no"]);
    assert!(after.get("package_info").is_none());
}

#[tokio::test]
async fn a_bill_is_cancelled_before_confirmation_only() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let openid = m.new_user().await;
    let mut body = bill_body(&m, "cancel1", &openid, 1000);
    body["notify_url"] = json!(format!("{base}/notify/cancel"));
    let bill = created(&m, &body).await;
    let cancel = |no: &str| format!("{BILLS}/out-bill-no/{no}/cancel");
    let answer = m.v3("POST", &cancel("cancel1"), None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    m.verify(&answer).unwrap();
    let a = answer.json();
    assert_eq!(a["state"], "CANCELING");
    assert_eq!(a["out_bill_no"], "cancel1");
    assert_eq!(a["transfer_bill_no"], bill["transfer_bill_no"]);
    assert!(a["update_time"].as_str().unwrap().ends_with("+08:00"));
    let q = state_of(&m, "cancel1").await;
    assert_eq!(q["state"], "CANCELLED");
    assert!(q.get("fail_reason").is_none());
    assert_eq!(balance(&m).await, 10_000_000, "the funds are back");
    // Final: no second cancel, no confirmation.
    assert_eq!(
        m.v3("POST", &cancel("cancel1"), None).await.code(),
        "INVALID_REQUEST"
    );
    let (status, v) = confirm(&m, bill["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(status, 400, "{v}");
    let unknown = m.v3("POST", &cancel("nosuchbill"), None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "NOT_FOUND");

    settle(&m).await;
    let notes = received(&m, &rx, "/notify/cancel");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1["state"], "CANCELLED");
    assert!(notes[0].1.get("fail_reason").is_none());

    // A confirmed bill stays TRANSFERING for a while here: it cannot be cancelled, and then
    // succeeds on the business clock.
    settings(&m, json!({"transfering_secs": 60})).await;
    let bill = created(&m, &bill_body(&m, "cancel2", &openid, 1000)).await;
    let (_, confirmed) = confirm(&m, bill["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(confirmed["state"], "TRANSFERING");
    assert_eq!(state_of(&m, "cancel2").await["state"], "TRANSFERING");
    let refused = m.v3("POST", &cancel("cancel2"), None).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.code(), "INVALID_REQUEST");
    advance(&m, 61).await;
    assert_eq!(state_of(&m, "cancel2").await["state"], "SUCCESS");
    assert_eq!(
        m.v3("POST", &cancel("cancel2"), None).await.code(),
        "INVALID_REQUEST"
    );
}

#[tokio::test]
async fn an_unconfirmed_bill_closes_after_24_hours_of_business_time() {
    let m = Merchant::start(KeyMode::Migrating).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let openid = m.new_user().await;
    let mut body = bill_body(&m, "late1", &openid, 700);
    body["notify_url"] = json!(format!("{base}/notify/late"));
    let bill = created(&m, &body).await;
    // (A margin of a few minutes: the wall clock keeps running under the business clock.)
    advance(&m, 86_400 - 300).await;
    assert_eq!(state_of(&m, "late1").await["state"], "WAIT_USER_CONFIRM");
    advance(&m, 300).await;
    let q = state_of(&m, "late1").await;
    assert_eq!(q["state"], "FAIL");
    assert_eq!(q["fail_reason"], "OVERDUE_CLOSE");
    assert_eq!(balance(&m).await, 10_000_000);
    let (status, v) = confirm(&m, bill["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(status, 400);
    assert_eq!(
        v["errMsg"],
        format!("requestMerchantTransfer:fail {PACKAGE_ERROR}")
    );
    settle(&m).await;
    let notes = received(&m, &rx, "/notify/late");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1["state"], "FAIL");
    assert_eq!(notes[0].1["fail_reason"], "OVERDUE_CLOSE");

    // The waiting time is a setting.
    settings(&m, json!({"confirm_ttl_secs": 600})).await;
    created(&m, &bill_body(&m, "late2", &openid, 700)).await;
    advance(&m, 600).await;
    assert_eq!(state_of(&m, "late2").await["fail_reason"], "OVERDUE_CLOSE");
}

#[tokio::test]
async fn user_name_is_decrypted_and_checked_against_the_real_name() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let serial = m.sim.merchant().wechatpay_public_key_id.clone();
    let openid = new_user_named(&m, "张三").await;

    let mut right = bill_body(&m, "name1", &openid, 300);
    right["user_name"] = json!(encrypt_for_public_key(&m, "张三"));
    let answer = create_with_serial(&m, &right, Some(&serial)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let (_, v) = confirm(&m, answer.json()["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(v["state"], "SUCCESS");
    // The query echoes the ciphertext as sent.
    assert_eq!(state_of(&m, "name1").await["user_name"], right["user_name"]);
    // A retry re-encrypts (OAEP ciphertexts differ): still the same request.
    right["user_name"] = json!(encrypt_for_public_key(&m, "张三"));
    let retry = create_with_serial(&m, &right, Some(&serial)).await;
    assert_eq!(retry.status, 200, "{:?}", retry.json());
    assert_eq!(retry.json()["state"], "SUCCESS");

    let mut wrong = bill_body(&m, "name2", &openid, 300);
    wrong["user_name"] = json!(encrypt_for_public_key(&m, "李四"));
    let answer = create_with_serial(&m, &wrong, Some(&serial)).await;
    assert_eq!(answer.status, 200, "the bill is made; the name fails later");
    let (status, v) = confirm(&m, answer.json()["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(status, 200);
    assert_eq!(v["state"], "FAIL");
    assert_eq!(v["fail_reason"], "NAME_NOT_CORRECT");
    let q = state_of(&m, "name2").await;
    assert_eq!(q["state"], "FAIL");
    assert_eq!(q["fail_reason"], "NAME_NOT_CORRECT");
    assert_eq!(
        balance(&m).await,
        10_000_000 - 300,
        "only the first was paid"
    );

    // A user created without a name is 测试用户.
    let plain_user = m.new_user().await;
    let mut default = bill_body(&m, "name3", &plain_user, 300);
    default["user_name"] = json!(encrypt_for_public_key(&m, "测试用户"));
    let answer = create_with_serial(&m, &default, Some(&serial)).await;
    let (_, v) = confirm(
        &m,
        answer.json()["package_info"].as_str().unwrap(),
        &plain_user,
    )
    .await;
    assert_eq!(v["state"], "SUCCESS");

    // The key must be named, be the merchant's, and decrypt.
    let mut body = bill_body(&m, "name4", &openid, 300);
    body["user_name"] = json!(encrypt_for_public_key(&m, "张三"));
    for serial in [None, Some("PUB_KEY_ID_0000000000000000000000000000")] {
        let refused = create_with_serial(&m, &body, serial).await;
        assert_eq!(refused.status, 400, "{serial:?}");
        assert_eq!(refused.code(), "PARAM_ERROR");
    }
    let other_key = RsaPrivateKey::generate().unwrap();
    body["user_name"] = json!(other_key.public_key().oaep_encrypt_base64(b"x").unwrap());
    let refused = create_with_serial(&m, &body, Some(&serial)).await;
    assert_eq!(refused.code(), "PARAM_ERROR");
    // The platform certificate is no key of a public-key merchant.
    let cert = X509Certificate::from_pem(&m.sim.merchant().platform_cert_pem).unwrap();
    body["user_name"] = json!(
        cert.public_key
            .oaep_encrypt_base64("张三".as_bytes())
            .unwrap()
    );
    let refused = create_with_serial(&m, &body, Some(&cert.serial_no)).await;
    assert_eq!(refused.code(), "PARAM_ERROR");
    assert_eq!(query(&m, "name4").await.status, 404, "no bill was made");

    // Below 0.3 yuan no name; from 2000 yuan a name is required.
    let mut tiny = bill_body(&m, "name5", &openid, 29);
    tiny["user_name"] = json!(encrypt_for_public_key(&m, "张三"));
    assert_eq!(
        create_with_serial(&m, &tiny, Some(&serial)).await.code(),
        "PARAM_ERROR"
    );
    settings(
        &m,
        json!({"single_max_fen": 300_000, "user_daily_quota_fen": 1_000_000}),
    )
    .await;
    let big = bill_body(&m, "name6", &openid, 200_000);
    assert_eq!(create(&m, &big).await.code(), "PARAM_ERROR");
    let mut big = big;
    big["user_name"] = json!(encrypt_for_public_key(&m, "张三"));
    assert_eq!(
        create_with_serial(&m, &big, Some(&serial)).await.status,
        200
    );
}

#[tokio::test]
async fn a_certificate_merchant_encrypts_with_the_platform_certificate() {
    let m = Merchant::start(KeyMode::Certificate).await;
    let openid = new_user_named(&m, "王五").await;
    let cert = X509Certificate::from_pem(&m.sim.merchant().platform_cert_pem).unwrap();
    let mut body = bill_body(&m, "cert1", &openid, 100);
    body["user_name"] = json!(
        cert.public_key
            .oaep_encrypt_base64("王五".as_bytes())
            .unwrap()
    );
    let answer = create_with_serial(&m, &body, Some(&cert.serial_no)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let (_, v) = confirm(&m, answer.json()["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(v["state"], "SUCCESS");
    // The public key is no key of a certificate merchant.
    let mut body = bill_body(&m, "cert2", &openid, 100);
    body["user_name"] = json!(encrypt_for_public_key(&m, "王五"));
    let serial = m.sim.merchant().wechatpay_public_key_id.clone();
    assert_eq!(
        create_with_serial(&m, &body, Some(&serial)).await.code(),
        "PARAM_ERROR"
    );
}

#[tokio::test]
async fn amounts_are_bounded_by_10_fen_and_the_single_maximum() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    for (no, amount) in [("low1", 9), ("high1", 20_001), ("zero1", 0)] {
        let refused = create(&m, &bill_body(&m, no, &openid, amount)).await;
        assert_eq!(refused.status, 400, "{amount}");
        assert_eq!(refused.code(), "INVALID_REQUEST");
        assert_eq!(refused.json()["message"], LIMIT);
        assert_eq!(query(&m, no).await.status, 404);
    }
    for (no, amount) in [("low2", 10), ("high2", 20_000)] {
        assert_eq!(
            created(&m, &bill_body(&m, no, &openid, amount)).await["state"],
            "WAIT_USER_CONFIRM"
        );
    }
    let mut typed = bill_body(&m, "typed1", &openid, 100);
    typed["transfer_amount"] = json!("100");
    assert_eq!(create(&m, &typed).await.code(), "PARAM_ERROR");
    let s = settings(&m, json!({"single_max_fen": 50_000})).await;
    assert_eq!(s["single_max_fen"], 50_000);
    assert_eq!(
        s["confirm_ttl_secs"], 86_400,
        "other settings keep their value"
    );
    assert_eq!(
        create(&m, &bill_body(&m, "high3", &openid, 20_001))
            .await
            .status,
        200
    );
    let (status, _) = m
        .control(
            "PUT",
            "/sim/transfers/settings",
            Some(json!({"single_max_fen": 9})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn scene_report_infos_perceptions_and_fields_are_checked() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let base = bill_body(&m, "scene1", &openid, 100);
    let refused = |a: &Answer, code: &str, message: Option<&str>| {
        assert_eq!(a.status, 400, "{:?}", a.json());
        assert_eq!(a.code(), code, "{:?}", a.json());
        if let Some(msg) = message {
            assert_eq!(a.json()["message"], msg);
        }
    };
    let mut b = base.clone();
    b.as_object_mut()
        .unwrap()
        .remove("transfer_scene_report_infos");
    refused(
        &create(&m, &b).await,
        "PARAM_ERROR",
        Some("需传入转账场景报备信息,请检查"),
    );
    b["transfer_scene_report_infos"] = json!([]);
    refused(
        &create(&m, &b).await,
        "PARAM_ERROR",
        Some("需传入转账场景报备信息,请检查"),
    );
    b["transfer_scene_report_infos"] =
        json!([{"info_type": "活动名称", "info_content": "新会员有礼"}]);
    let wrong = "未传入完整且对应的转账场景报备信息,请根据接口文档检查";
    refused(&create(&m, &b).await, "PARAM_ERROR", Some(wrong));
    b["transfer_scene_report_infos"] = json!([
        {"info_type": "活动名称", "info_content": "a"},
        {"info_type": "奖励说明", "info_content": "b"},
        {"info_type": "奖励说明", "info_content": "c"},
    ]);
    refused(&create(&m, &b).await, "PARAM_ERROR", Some(wrong));
    b["transfer_scene_report_infos"] = json!([
        {"info_type": "活动名称", "info_content": "a"},
        {"info_type": "奖励说明", "info_content": "一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十一二三"},
    ]);
    refused(&create(&m, &b).await, "PARAM_ERROR", None);

    // 1011: 赔付原因 only, perception 退款 or 商家赔付.
    let mut c = base.clone();
    c["transfer_scene_id"] = json!("1011");
    c["user_recv_perception"] = json!("退款");
    refused(&create(&m, &c).await, "PARAM_ERROR", Some(wrong));
    c["transfer_scene_report_infos"] =
        json!([{"info_type": "赔付原因", "info_content": "商品破损"}]);
    assert_eq!(create(&m, &c).await.status, 200);

    let mut p = base.clone();
    p["out_bill_no"] = json!("scene2");
    p["user_recv_perception"] = json!("退款");
    refused(
        &create(&m, &p).await,
        "INVALID_REQUEST",
        Some("暂不支持展示当前传入的用户收款感知"),
    );
    p["user_recv_perception"] = json!("活动奖励");
    assert_eq!(create(&m, &p).await.status, 200);

    // Another scene: any infos within the lengths.
    let mut o = base.clone();
    o["out_bill_no"] = json!("scene3");
    o["transfer_scene_id"] = json!("1006");
    o["user_recv_perception"] = json!("报销款");
    o["transfer_scene_report_infos"] = json!([{"info_type": "报销说明", "info_content": "差旅费"}]);
    assert_eq!(create(&m, &o).await.status, 200);
    o["out_bill_no"] = json!("scene4");
    o["transfer_scene_id"] = json!("9999");
    refused(&create(&m, &o).await, "PARAM_ERROR", None);

    let mut f = base.clone();
    f["out_bill_no"] = json!("scene-5");
    refused(&create(&m, &f).await, "PARAM_ERROR", None);
    f["out_bill_no"] = json!("a".repeat(33));
    refused(&create(&m, &f).await, "PARAM_ERROR", None);
    let mut f = base.clone();
    f["out_bill_no"] = json!("scene6");
    f["transfer_remark"] = json!("备".repeat(33));
    refused(&create(&m, &f).await, "PARAM_ERROR", None);
    f["transfer_remark"] = json!("备".repeat(32));
    assert_eq!(create(&m, &f).await.status, 200);
    let mut f = base.clone();
    f["out_bill_no"] = json!("scene7");
    f["openid"] = json!("o-nobody-at-all");
    refused(
        &create(&m, &f).await,
        "PARAM_ERROR",
        Some("appid和openid不匹配"),
    );
    f["openid"] = json!(openid);
    f["appid"] = json!("wx0000000000000000");
    refused(&create(&m, &f).await, "APPID_MCHID_NOT_MATCH", None);
    f["appid"] = json!(m.appid());
    f["notify_url"] = json!("https://example.com/notify?x=1");
    refused(&create(&m, &f).await, "PARAM_ERROR", None);
}

#[tokio::test]
async fn a_low_balance_or_the_fault_answers_not_enough_and_makes_no_bill() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let body = bill_body(&m, "poor1", &openid, 500);
    let (status, _) = m
        .control(
            "PUT",
            "/sim/faults",
            Some(json!({"transfer_not_enough": true})),
        )
        .await;
    assert_eq!(status, 200);
    let refused = create(&m, &body).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.code(), "NOT_ENOUGH");
    assert_eq!(refused.json()["message"], NOT_ENOUGH);
    m.verify(&refused).unwrap();
    assert_eq!(query(&m, "poor1").await.status, 404);
    assert_eq!(balance(&m).await, 10_000_000);
    m.control("PUT", "/sim/faults", Some(json!({}))).await;

    let (status, v) = m
        .control(
            "PUT",
            &format!("/sim/merchants/{}/balance", m.mchid()),
            Some(json!({"balance_fen": 499})),
        )
        .await;
    assert_eq!((status, v["balance_fen"].as_u64()), (200, Some(499)));
    let refused = create(&m, &body).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.code(), "NOT_ENOUGH");
    assert_eq!(query(&m, "poor1").await.status, 404);
    // Topped up, the same number goes through.
    m.control(
        "PUT",
        &format!("/sim/merchants/{}/balance", m.mchid()),
        Some(json!({"balance_fen": 500})),
    )
    .await;
    assert_eq!(created(&m, &body).await["state"], "WAIT_USER_CONFIRM");
    assert_eq!(balance(&m).await, 0);
    let (_, merchants) = m.control("GET", "/sim/merchants", None).await;
    assert_eq!(merchants["merchants"][0]["balance_fen"], 0);
    let (_, merchant) = m.control("GET", "/sim/merchant", None).await;
    assert_eq!(merchant["balance_fen"], 0);
    assert_eq!(merchant["transfer_bills"], 1);

    // The API faults apply: a lost call makes no bill.
    m.control("PUT", "/sim/faults", Some(json!({"api_error_rate": 1.0})))
        .await;
    let failed = create(&m, &bill_body(&m, "poor2", &openid, 10)).await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.code(), "SYSTEM_ERROR");
    m.control("PUT", "/sim/faults", Some(json!({}))).await;
    assert_eq!(query(&m, "poor2").await.status, 404);
}

#[tokio::test]
async fn the_daily_quota_of_a_user_fails_the_bill_at_confirmation() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    settings(&m, json!({"user_daily_quota_fen": 1_000})).await;
    // Noon GMT+8, far from the day's end, so that both confirmations fall on one day.
    let into_day = (Merchant::now() + 8 * 3600).rem_euclid(86_400);
    advance(&m, (86_400 + 43_200 - into_day) % 86_400).await;
    let first = created(&m, &bill_body(&m, "quota1", &openid, 600)).await;
    let second = created(&m, &bill_body(&m, "quota2", &openid, 600)).await;
    let (_, v) = confirm(&m, first["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(v["state"], "SUCCESS");
    let (_, v) = confirm(&m, second["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(v["state"], "FAIL");
    assert_eq!(v["fail_reason"], "DAY_RECEIVED_QUOTA_EXCEED");
    assert_eq!(balance(&m).await, 10_000_000 - 600);
}

#[tokio::test]
async fn the_confirmation_page_refuses_another_user_merchant_or_package() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let stranger = m.new_user().await;
    let bill = created(&m, &bill_body(&m, "page1", &openid, 100)).await;
    let package = bill["package_info"].as_str().unwrap();
    let merchant = &m;
    let post = |body: Value| async move {
        merchant
            .control("POST", "/sim/transfers/confirm", Some(body))
            .await
    };
    let base =
        json!({"mchId": m.mchid(), "appId": m.appid(), "package": package, "openid": openid});
    let fail = |reason: &str| format!("requestMerchantTransfer:fail {reason}");

    let mut b = base.clone();
    b["openid"] = json!(stranger);
    let (status, v) = post(b).await;
    assert_eq!(
        (status, v["errMsg"].as_str()),
        (400, Some(fail(OPENID_ERROR).as_str()))
    );
    let mut b = base.clone();
    b["openId"] = json!(stranger);
    let (_, v) = post(b).await;
    assert_eq!(v["errMsg"], fail(OPENID_ERROR));
    let mut b = base.clone();
    b["mchId"] = json!("1900000000");
    let (status, v) = post(b).await;
    assert_eq!(
        (status, v["errMsg"].as_str()),
        (400, Some(fail("商户号错误").as_str()))
    );
    let mut b = base.clone();
    b["package"] = json!("ABCDEF");
    let (_, v) = post(b).await;
    assert_eq!(v["errMsg"], fail(PACKAGE_ERROR));
    // Closing the page changes nothing.
    let mut b = base.clone();
    b["result"] = json!("CANCEL");
    let (status, v) = post(b).await;
    assert_eq!(status, 200);
    assert_eq!(v["errMsg"], "requestMerchantTransfer:fail cancel");
    assert_eq!(v["state"], "WAIT_USER_CONFIRM");
    assert_eq!(state_of(&m, "page1").await["state"], "WAIT_USER_CONFIRM");
    let (_, v) = post(base).await;
    assert_eq!(v["state"], "SUCCESS");
}

#[tokio::test]
async fn queries_find_the_merchants_own_bills_only() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let bill = created(&m, &bill_body(&m, "mine1", &openid, 100)).await;
    let no = bill["transfer_bill_no"].as_str().unwrap();
    for target in [
        format!("{BILLS}/out-bill-no/nosuch1"),
        format!("{BILLS}/transfer-bill-no/1330000000000000000000000000000000"),
    ] {
        let a = m.v3("GET", &target, None).await;
        assert_eq!(a.status, 404);
        assert_eq!(a.code(), "NOT_FOUND");
        assert_eq!(a.json()["message"], "记录不存在");
        m.verify(&a).unwrap();
    }
    // Another merchant of the simulator does not see it.
    let (status, other) = m.control("POST", "/sim/merchants", Some(json!({}))).await;
    assert_eq!(status, 201, "{other}");
    let mchid = other["mchid"].as_str().unwrap().to_owned();
    let account = m.sim.state().merchant_account(&mchid).unwrap();
    let key = RsaPrivateKey::from_pem(&account.credentials.merchant_private_key_pem).unwrap();
    for target in [
        format!("{BILLS}/out-bill-no/mine1"),
        format!("{BILLS}/transfer-bill-no/{no}"),
    ] {
        let auth = Authorization::sign(
            &key,
            &mchid,
            &account.credentials.merchant_serial,
            "GET",
            &target,
            Merchant::now(),
            &wxpay::nonce::nonce(),
            b"",
        )
        .unwrap()
        .to_header_value();
        let a = m.send("GET", &target, Vec::new(), Some(auth), None).await;
        assert_eq!(a.status, 404, "{target}");
        assert_eq!(a.code(), "NOT_FOUND");
    }
}

#[tokio::test]
async fn bills_balances_and_names_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("wxpay-sim-transfers-{}", rand::random::<u64>()));
    let config = || SimConfig {
        state_dir: Some(dir.clone()),
        key_mode: KeyMode::PublicKey,
        time_scale: 2000.0,
        ..SimConfig::default()
    };
    let first = Merchant::start_with(config()).await;
    let openid = new_user_named(&first, "赵六").await;
    let paid = created(&first, &bill_body(&first, "keep1", &openid, 100)).await;
    confirm(&first, paid["package_info"].as_str().unwrap(), &openid).await;
    let waiting = created(&first, &bill_body(&first, "keep2", &openid, 200)).await;
    first
        .control(
            "PUT",
            &format!("/sim/merchants/{}/balance", first.mchid()),
            Some(json!({"balance_fen": 5_000})),
        )
        .await;
    first.sim.shutdown().await;

    let second = Merchant::start_with(config()).await;
    let kept = state_of(&second, "keep1").await;
    assert_eq!(kept["state"], "SUCCESS");
    assert_eq!(kept["transfer_bill_no"], paid["transfer_bill_no"]);
    assert_eq!(
        state_of(&second, "keep2").await["state"],
        "WAIT_USER_CONFIRM"
    );
    assert_eq!(balance(&second).await, 5_000);
    // The same body still answers the same bill, whose package still works, and the real name
    // is remembered.
    let again = created(&second, &bill_body(&second, "keep2", &openid, 200)).await;
    assert_eq!(again, waiting);
    assert_eq!(
        second
            .sim
            .state()
            .transfers
            .real_name(&second.appid(), &openid),
        "赵六"
    );
    let (_, v) = confirm(&second, waiting["package_info"].as_str().unwrap(), &openid).await;
    assert_eq!(v["state"], "SUCCESS");
    // New numbers do not collide with the old ones.
    let third = created(&second, &bill_body(&second, "keep3", &openid, 300)).await;
    assert_ne!(third["transfer_bill_no"], paid["transfer_bill_no"]);
    assert_ne!(third["transfer_bill_no"], waiting["transfer_bill_no"]);
    second.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_authorization_lets_the_merchant_transfer_without_confirmation() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let openid = m.new_user().await;
    let auth_body = json!({
        "out_authorization_no": "auth1",
        "appid": m.appid(),
        "openid": openid,
        "transfer_scene_id": "1000",
        "user_display_name": "测试商户",
        "user_recv_perception": "现金奖励",
        "authorization_notify_url": format!("{base}/notify/auth"),
        "scene_info": {"client_ip": "127.0.0.1", "device_type": "IOS"},
    });
    let answer = m.v3("POST", AUTHS, Some(&auth_body)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    m.verify(&answer).unwrap();
    let a = answer.json();
    assert_eq!(a["state"], "WAIT_USER_CONFIRM");
    let package = a["package_info"].as_str().unwrap().to_owned();
    assert!(package.starts_with("0002-"), "{package}");
    assert_eq!(
        m.v3("POST", AUTHS, Some(&auth_body)).await.json(),
        a,
        "idempotent"
    );

    // Not yet effective: no transfer.
    let mut transfer = bill_body(&m, "free1", &openid, 300);
    transfer.as_object_mut().unwrap().remove("openid");
    transfer["out_authorization_no"] = json!("auth1");
    transfer["notify_url"] = json!(format!("{base}/notify/bill"));
    let early = m
        .v3("POST", &format!("{BILLS}/transfer"), Some(&transfer))
        .await;
    assert_eq!(early.code(), "INVALID_REQUEST");

    let (status, v) = confirm(&m, &package, &openid).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "TAKING_EFFECT");
    let authorization_id = v["authorization_id"].as_str().unwrap().to_owned();
    let target = format!("{AUTHS}/out-authorization-no/auth1?is_display_authorization=true");
    let q = m.v3("GET", &target, None).await;
    assert_eq!(q.status, 200);
    m.verify(&q).unwrap();
    let q = q.json();
    assert_eq!(q["state"], "TAKING_EFFECT");
    assert_eq!(q["authorization_id"], authorization_id.as_str());
    assert!(q["authorize_time"].as_str().unwrap().ends_with("+08:00"));
    // One authorization per user and scene.
    let mut second = auth_body.clone();
    second["out_authorization_no"] = json!("auth2");
    assert_eq!(
        m.v3("POST", AUTHS, Some(&second)).await.code(),
        "INVALID_REQUEST"
    );

    let done = m
        .v3("POST", &format!("{BILLS}/transfer"), Some(&transfer))
        .await;
    assert_eq!(done.status, 200, "{:?}", done.json());
    m.verify(&done).unwrap();
    let done = done.json();
    assert_eq!(done["state"], "SUCCESS");
    assert_eq!(done["openid"], openid.as_str());
    assert_eq!(done["mch_id"], m.mchid().as_str());
    assert_eq!(state_of(&m, "free1").await["state"], "SUCCESS");
    let mut by_id = bill_body(&m, "free2", &openid, 200);
    by_id.as_object_mut().unwrap().remove("openid");
    by_id["authorization_id"] = json!(authorization_id);
    let done = m
        .v3("POST", &format!("{BILLS}/transfer"), Some(&by_id))
        .await;
    assert_eq!(done.json()["state"], "SUCCESS");
    assert_eq!(balance(&m).await, 10_000_000 - 500);

    let closed = m
        .v3(
            "POST",
            &format!("{AUTHS}/out-authorization-no/auth1/close"),
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{:?}", closed.json());
    assert_eq!(closed.json()["state"], "CLOSED");
    assert_eq!(
        closed.json()["close_info"]["close_reason"],
        "CLOSE_VIA_MCH_API"
    );
    by_id["out_bill_no"] = json!("free3");
    let refused = m
        .v3("POST", &format!("{BILLS}/transfer"), Some(&by_id))
        .await;
    assert_eq!(refused.code(), "INVALID_REQUEST");
    assert_eq!(query(&m, "free3").await.status, 404);

    settle(&m).await;
    let auth_notes = received(&m, &rx, "/notify/auth");
    let mut events: Vec<&str> = auth_notes
        .iter()
        .map(|(e, _)| e["event_type"].as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "MCHTRANSFER.AUTHORIZATION.CLOSED",
            "MCHTRANSFER.AUTHORIZATION.CONFIRMED"
        ]
    );
    assert!(
        auth_notes
            .iter()
            .all(|(_, plain)| plain["out_authorization_no"] == "auth1")
    );
    let bill_notes = received(&m, &rx, "/notify/bill");
    assert_eq!(bill_notes.len(), 1);
    assert_eq!(bill_notes[0].0["event_type"], "MCHTRANSFER.BILL.FINISHED");
    assert_eq!(bill_notes[0].1["state"], "SUCCESS");
    assert_eq!(bill_notes[0].1["out_bill_no"], "free1");
}

// ---------------------------------------------------------------------------------------------
// pre-transfer-with-authorization, through the library's client

const PRE_TRANSFER: &str =
    "/v3/fund-app/mch-transfer/transfer-bills/pre-transfer-with-authorization";

/// The library's client for the simulator's first merchant (public-key mode), without retries.
fn lib_client(m: &Merchant) -> V3Client {
    let a = m.sim.merchant();
    let config = V3Config {
        mchid: a.mchid.clone(),
        appid: a.appid.clone(),
        merchant_serial: a.merchant_serial.clone(),
        private_key: RsaPrivateKey::from_pem(&a.merchant_private_key_pem).unwrap(),
        api_v3_key: ApiV3Key::new(&a.api_v3_key).unwrap(),
        platform: PlatformVerifier::public_key(
            &a.wechatpay_public_key_id,
            RsaPublicKey::from_pem(&a.wechatpay_public_key_pem).unwrap(),
        ),
    };
    let http = HttpConfig {
        retry: RetryPolicy::none(),
        timeout: Duration::from_secs(10),
        ..HttpConfig::default()
    };
    V3Client::with_clock(
        config,
        &http,
        &BaseUrls::single(&m.base),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn no(text: &str) -> OutBillNo {
    OutBillNo::parse(text).unwrap()
}

fn report_infos() -> Vec<TransferSceneReportInfo> {
    vec![
        TransferSceneReportInfo::new("活动名称", "新会员有礼"),
        TransferSceneReportInfo::new("奖励说明", "注册会员抽奖一等奖"),
    ]
}

fn pre_transfer(
    out_bill_no: &str,
    openid: &str,
    amount: u64,
    out_authorization_no: &str,
    base: &str,
) -> PreTransferWithAuthorizationRequest {
    PreTransferWithAuthorizationRequest {
        out_bill_no: no(out_bill_no),
        transfer_scene_id: "1000".into(),
        openid: OpenId::parse(openid).unwrap(),
        user_name: None,
        transfer_amount: amount,
        transfer_remark: "新会员开通有礼".into(),
        notify_url: Some(format!("{base}/notify/bill")),
        user_recv_perception: Some("现金奖励".into()),
        transfer_scene_report_infos: report_infos(),
        authorization_info: AuthorizationInfo {
            user_display_name: "好物商城".into(),
            out_authorization_no: no(out_authorization_no),
            authorization_notify_url: format!("{base}/notify/auth"),
        },
        sponsor_mchid: None,
    }
}

fn authorized_transfer(
    out_bill_no: &str,
    out_authorization_no: &str,
    amount: u64,
    base: &str,
) -> AuthorizedTransferRequest {
    AuthorizedTransferRequest {
        out_bill_no: no(out_bill_no),
        out_authorization_no: no(out_authorization_no),
        transfer_scene_id: "1000".into(),
        transfer_amount: amount,
        transfer_remark: "新会员开通有礼".into(),
        notify_url: Some(format!("{base}/notify/bill")),
        user_recv_perception: Some("现金奖励".into()),
        transfer_scene_report_infos: report_infos(),
    }
}

/// The v3 error of a call that must fail with one.
fn api_error<T: std::fmt::Debug>(result: Result<T, Error>) -> (u16, ErrorCode) {
    match result {
        Err(Error::Api(ApiError::V3 { status, code, .. })) => (status, code),
        other => panic!("expected a v3 error, got {other:?}"),
    }
}

/// The notifications received at `path`, verified and parsed by the library's client.
async fn parsed(client: &V3Client, rx: &Receiver, path: &str) -> Vec<Notification> {
    let mut out = Vec::new();
    for r in rx.received().into_iter().filter(|r| r.path == path) {
        out.push(
            client
                .parse_notification(&r.headers, &r.body)
                .await
                .unwrap(),
        );
    }
    out
}

fn bill_notes(notes: &[Notification]) -> Vec<(String, TransferState, Option<TransferFailReason>)> {
    let mut out: Vec<_> = notes
        .iter()
        .map(|n| match n {
            Notification::Transfer(t) => {
                assert_eq!(t.event_type, "MCHTRANSFER.BILL.FINISHED");
                (
                    t.bill.out_bill_no.clone(),
                    t.bill.state.clone(),
                    t.bill.fail_reason.clone(),
                )
            }
            other => panic!("expected a bill notification, got {other:?}"),
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn authorization_notes(notes: &[Notification]) -> Vec<(String, String, AuthorizationState)> {
    let mut out: Vec<_> = notes
        .iter()
        .map(|n| match n {
            Notification::TransferAuthorization(t) => (
                t.authorization.out_authorization_no.clone(),
                t.event_type.clone(),
                t.authorization.state.clone(),
            ),
            other => panic!("expected an authorization notification, got {other:?}"),
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

#[tokio::test]
async fn a_pre_transfer_is_paid_and_authorizes_later_transfers_by_one_confirmation() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = new_user_named(&m, "张三").await;
    let mut request = pre_transfer("pre1", &openid, 300, "preauth1", &base);
    // The name is encrypted by the client and its key named in Wechatpay-Serial.
    request.user_name = Some(UserName::Plain("张三".into()));

    let created = client
        .pre_transfer_with_authorization(&request)
        .await
        .unwrap();
    assert_eq!(created.state, TransferState::WaitUserConfirm);
    assert_eq!(created.out_bill_no, "pre1");
    assert_eq!(created.out_authorization_no.as_deref(), Some("preauth1"));
    assert_eq!(created.user_display_name.as_deref(), Some("好物商城"));
    let package = created.package_info.clone().unwrap();
    assert_eq!(package.len(), 156, "the bill's package: {package}");
    assert_eq!(balance(&m).await, 10_000_000 - 300, "the amount is locked");
    // Idempotent: the same request again (a fresh ciphertext of the same name) is the same bill.
    let again = client
        .pre_transfer_with_authorization(&request)
        .await
        .unwrap();
    assert_eq!(again, created);
    assert_eq!(balance(&m).await, 10_000_000 - 300);
    // The authorization shares the bill's package.
    let (_, listed) = m.control("GET", "/sim/transfers", None).await;
    let auths = listed["authorizations"].as_array().unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0]["package_info"], package.as_str(), "one package");
    assert_eq!(auths[0]["out_bill_no"], "pre1");

    let pending = client
        .query_transfer_authorization(&no("preauth1"))
        .await
        .unwrap();
    assert_eq!(pending.state, AuthorizationState::WaitUserConfirm);
    assert!(pending.authorization_id.is_none());
    // Nothing can be transferred under it before the user confirmed.
    let early = client
        .create_authorized_transfer(&authorized_transfer("free0", "preauth1", 200, &base))
        .await;
    assert_eq!(api_error(early), (400, ErrorCode::InvalidRequest));

    // One confirmation of the bill's package: paid, and the authorization in force.
    let (status, v) = confirm(&m, &package, &openid).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["errMsg"], "requestMerchantTransfer:ok");
    assert_eq!(v["state"], "SUCCESS");
    assert_eq!(v["authorization"]["state"], "TAKING_EFFECT");
    let bill = client
        .query_transfer_by_out_bill_no(&no("pre1"))
        .await
        .unwrap();
    assert_eq!(bill.state, TransferState::Success);
    assert_eq!(bill.transfer_bill_no, created.transfer_bill_no);
    let auth = client
        .query_transfer_authorization(&no("preauth1"))
        .await
        .unwrap();
    assert_eq!(auth.state, AuthorizationState::TakingEffect);
    assert_eq!(
        auth.authorization_id.as_deref(),
        v["authorization"]["authorization_id"].as_str()
    );
    assert!(auth.authorize_time.is_some());
    assert_eq!(auth.openid.as_deref(), Some(openid.as_str()));
    assert_eq!(auth.transfer_scene_id.as_deref(), Some("1000"));
    // The package is used up.
    let (status, v) = confirm(&m, &package, &openid).await;
    assert_eq!(
        (status, v["errMsg"].as_str()),
        (
            400,
            Some("requestMerchantTransfer:fail package_info信息有误,请返回联系商家处理")
        )
    );
    // A re-POST after the confirmation answers the bill as it is now, without a package.
    let after = client
        .pre_transfer_with_authorization(&request)
        .await
        .unwrap();
    assert_eq!(after.state, TransferState::Success);
    assert_eq!(after.transfer_bill_no, created.transfer_bill_no);
    assert!(after.package_info.is_none());
    assert_eq!(after.out_authorization_no.as_deref(), Some("preauth1"));

    // Later transfers go straight through.
    let free = client
        .create_authorized_transfer(&authorized_transfer("free1", "preauth1", 200, &base))
        .await
        .unwrap();
    assert_eq!(free.state, TransferState::Success);
    assert_eq!(
        client
            .query_transfer_by_out_bill_no(&no("free1"))
            .await
            .unwrap()
            .state,
        TransferState::Success
    );
    assert_eq!(balance(&m).await, 10_000_000 - 500);

    settle(&m).await;
    assert_eq!(
        bill_notes(&parsed(&client, &rx, "/notify/bill").await),
        [
            ("free1".to_owned(), TransferState::Success, None),
            ("pre1".to_owned(), TransferState::Success, None),
        ]
    );
    assert_eq!(
        authorization_notes(&parsed(&client, &rx, "/notify/auth").await),
        [(
            "preauth1".to_owned(),
            "MCHTRANSFER.AUTHORIZATION.CONFIRMED".to_owned(),
            AuthorizationState::TakingEffect
        )]
    );
}

#[tokio::test]
async fn the_raw_pre_transfer_answer_has_the_documented_fields() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let openid = m.new_user().await;
    let mut body = bill_body(&m, "raw1", &openid, 100);
    body["authorization_info"] = json!({
        "user_display_name": "好物商城",
        "out_authorization_no": "rawauth1",
        "authorization_notify_url": "https://shop.example.com/notify/auth",
    });
    body["sponsor_mchid"] = json!(m.mchid());
    let answer = m.v3("POST", PRE_TRANSFER, Some(&body)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    m.verify(&answer).unwrap();
    let v = answer.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "create_time",
            "out_authorization_no",
            "out_bill_no",
            "package_info",
            "state",
            "transfer_bill_no",
            "user_display_name"
        ]
    );
    // The authorization's fields are checked like the user-confirm-authorization ones.
    let mut long = bill_body(&m, "raw2", &openid, 100);
    long["authorization_info"] = json!({
        "user_display_name": "商".repeat(33),
        "out_authorization_no": "rawauth2",
        "authorization_notify_url": "https://shop.example.com/notify/auth",
    });
    assert_eq!(
        m.v3("POST", PRE_TRANSFER, Some(&long)).await.code(),
        "PARAM_ERROR"
    );
    long["authorization_info"]["user_display_name"] = json!("好物商城");
    long["authorization_info"]["authorization_notify_url"] =
        json!("https://shop.example.com/n?x=1");
    assert_eq!(
        m.v3("POST", PRE_TRANSFER, Some(&long)).await.code(),
        "PARAM_ERROR"
    );
    long["authorization_info"]["authorization_notify_url"] =
        json!("https://shop.example.com/notify/auth");
    long["authorization_info"]["out_authorization_no"] = json!("raw-auth-2");
    assert_eq!(
        m.v3("POST", PRE_TRANSFER, Some(&long)).await.code(),
        "PARAM_ERROR"
    );
    assert_eq!(query(&m, "raw2").await.status, 404, "no bill");
}

#[tokio::test]
async fn a_used_authorization_number_or_one_in_force_for_the_user_and_scene_is_refused() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (_rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = m.new_user().await;
    // A number used by a user-confirm-authorization (pending, for the same user and scene: a
    // pending one does not count as in force).
    let pending = client
        .request_transfer_authorization(&AuthorizationRequest {
            out_authorization_no: no("auth1"),
            openid: OpenId::parse(&openid).unwrap(),
            transfer_scene_id: "1000".into(),
            user_display_name: "好物商城".into(),
            user_recv_perception: None,
            authorization_notify_url: format!("{base}/notify/auth"),
            scene_info: None,
        })
        .await
        .unwrap();
    assert_eq!(pending.state, AuthorizationState::WaitUserConfirm);
    let used = client
        .pre_transfer_with_authorization(&pre_transfer("pre1", &openid, 100, "auth1", &base))
        .await;
    assert_eq!(api_error(used), (400, ErrorCode::InvalidRequest));
    assert_eq!(
        api_error(client.query_transfer_by_out_bill_no(&no("pre1")).await),
        (404, ErrorCode::NotFound),
        "no bill"
    );
    assert_eq!(balance(&m).await, 10_000_000, "nothing locked");

    let first = client
        .pre_transfer_with_authorization(&pre_transfer("pre1", &openid, 100, "preauth1", &base))
        .await
        .unwrap();
    // A number used by another pre-transfer.
    let twice = client
        .pre_transfer_with_authorization(&pre_transfer("pre2", &openid, 100, "preauth1", &base))
        .await;
    assert_eq!(api_error(twice), (400, ErrorCode::InvalidRequest));
    // The same bill number with another authorization is another body.
    let other = client
        .pre_transfer_with_authorization(&pre_transfer("pre1", &openid, 100, "preauth9", &base))
        .await;
    assert_eq!(api_error(other), (400, ErrorCode::InvalidRequest));
    // Nor may the bill number be reused by a plain create.
    assert_eq!(
        create(&m, &bill_body(&m, "pre1", &openid, 100))
            .await
            .code(),
        "INVALID_REQUEST"
    );

    // Once it is in force, no second authorization for this user and scene, by either call.
    let (status, v) = confirm(&m, first.package_info.as_deref().unwrap(), &openid).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["authorization"]["state"], "TAKING_EFFECT");
    let second = client
        .pre_transfer_with_authorization(&pre_transfer("pre3", &openid, 100, "preauth3", &base))
        .await;
    assert_eq!(api_error(second), (400, ErrorCode::InvalidRequest));
    assert_eq!(
        api_error(client.query_transfer_by_out_bill_no(&no("pre3")).await),
        (404, ErrorCode::NotFound)
    );
    let mut plain_auth = json!({
        "out_authorization_no": "auth3",
        "appid": m.appid(),
        "openid": openid,
        "transfer_scene_id": "1000",
        "user_display_name": "好物商城",
        "authorization_notify_url": format!("{base}/notify/auth"),
    });
    assert_eq!(
        m.v3("POST", AUTHS, Some(&plain_auth)).await.code(),
        "INVALID_REQUEST"
    );
    // Another user may.
    let other_user = m.new_user().await;
    let fine = client
        .pre_transfer_with_authorization(&pre_transfer("pre4", &other_user, 100, "preauth4", &base))
        .await
        .unwrap();
    assert_eq!(fine.state, TransferState::WaitUserConfirm);
    plain_auth["openid"] = json!(other_user);
    assert_eq!(m.v3("POST", AUTHS, Some(&plain_auth)).await.status, 200);
    assert_eq!(balance(&m).await, 10_000_000 - 200);
}

#[tokio::test]
async fn expiry_and_cancel_close_the_pending_authorization_with_the_bill() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let alice = m.new_user().await;
    let bob = m.new_user().await;
    let expiring = client
        .pre_transfer_with_authorization(&pre_transfer("pre1", &alice, 100, "preauth1", &base))
        .await
        .unwrap();
    client
        .pre_transfer_with_authorization(&pre_transfer("pre2", &bob, 200, "preauth2", &base))
        .await
        .unwrap();
    assert_eq!(balance(&m).await, 10_000_000 - 300);

    // The merchant cancels bob's bill: its authorization closes by the merchant's act.
    let cancelled = client.cancel_transfer(&no("pre2")).await.unwrap();
    assert_eq!(cancelled.state, TransferState::Canceling);
    let closed = client
        .query_transfer_authorization(&no("preauth2"))
        .await
        .unwrap();
    assert_eq!(closed.state, AuthorizationState::Closed);
    assert_eq!(closed.close_info.unwrap().close_reason, "CLOSE_VIA_MCH_API");
    assert_eq!(balance(&m).await, 10_000_000 - 100);

    // Not yet after 23 h 50 min of business time (whatever real time the test takes).
    advance(&m, 85_800).await;
    assert_eq!(
        client
            .query_transfer_authorization(&no("preauth1"))
            .await
            .unwrap()
            .state,
        AuthorizationState::WaitUserConfirm
    );
    advance(&m, 600).await;
    let bill = client
        .query_transfer_by_out_bill_no(&no("pre1"))
        .await
        .unwrap();
    assert_eq!(bill.state, TransferState::Fail);
    assert_eq!(bill.fail_reason, Some(TransferFailReason::OverdueClose));
    let auth = client
        .query_transfer_authorization(&no("preauth1"))
        .await
        .unwrap();
    assert_eq!(auth.state, AuthorizationState::Closed);
    assert_eq!(
        auth.close_info.unwrap().close_reason,
        "USER_OVERDUE_UNCONFIRMED"
    );
    assert_eq!(balance(&m).await, 10_000_000, "every amount given back");
    // The package is dead, and nothing goes through under the closed authorization.
    let (status, _) = confirm(&m, expiring.package_info.as_deref().unwrap(), &alice).await;
    assert_eq!(status, 400);
    let refused = client
        .create_authorized_transfer(&authorized_transfer("free1", "preauth1", 100, &base))
        .await;
    assert_eq!(api_error(refused), (400, ErrorCode::InvalidRequest));
    // Nothing is in force for alice: a new pre-transfer (new numbers) is taken.
    client
        .pre_transfer_with_authorization(&pre_transfer("pre3", &alice, 100, "preauth3", &base))
        .await
        .unwrap();

    settle(&m).await;
    assert_eq!(
        bill_notes(&parsed(&client, &rx, "/notify/bill").await),
        [
            (
                "pre1".to_owned(),
                TransferState::Fail,
                Some(TransferFailReason::OverdueClose)
            ),
            ("pre2".to_owned(), TransferState::Cancelled, None),
        ]
    );
    let auth_notes = authorization_notes(&parsed(&client, &rx, "/notify/auth").await);
    assert_eq!(
        auth_notes,
        [
            (
                "preauth1".to_owned(),
                "MCHTRANSFER.AUTHORIZATION.CLOSED".to_owned(),
                AuthorizationState::Closed
            ),
            (
                "preauth2".to_owned(),
                "MCHTRANSFER.AUTHORIZATION.CLOSED".to_owned(),
                AuthorizationState::Closed
            ),
        ]
    );
}

#[tokio::test]
async fn a_failed_payment_still_grants_the_confirmed_authorization() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (_rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = new_user_named(&m, "李四").await;
    let mut request = pre_transfer("pre1", &openid, 300, "preauth1", &base);
    request.user_name = Some(UserName::Plain("王五".into()));
    let created = client
        .pre_transfer_with_authorization(&request)
        .await
        .unwrap();
    let (status, v) = confirm(&m, created.package_info.as_deref().unwrap(), &openid).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "FAIL");
    assert_eq!(v["fail_reason"], "NAME_NOT_CORRECT");
    assert_eq!(v["authorization"]["state"], "TAKING_EFFECT");
    let free = client
        .create_authorized_transfer(&authorized_transfer("free1", "preauth1", 200, &base))
        .await
        .unwrap();
    assert_eq!(free.state, TransferState::Success);
}

#[tokio::test]
async fn a_pre_transfer_and_its_authorization_survive_a_restart() {
    let dir =
        std::env::temp_dir().join(format!("wxpay-sim-pre-transfer-{}", rand::random::<u64>()));
    let config = || SimConfig {
        state_dir: Some(dir.clone()),
        key_mode: KeyMode::PublicKey,
        time_scale: 2000.0,
        ..SimConfig::default()
    };
    let (rx, base) = receiver::start(Receiver::default()).await;
    let first = Merchant::start_with(config()).await;
    let openid = first.new_user().await;
    let request = pre_transfer("keep1", &openid, 100, "keepauth1", &base);
    let created = lib_client(&first)
        .pre_transfer_with_authorization(&request)
        .await
        .unwrap();
    first.sim.shutdown().await;

    let second = Merchant::start_with(config()).await;
    let client = lib_client(&second);
    assert_eq!(
        client
            .pre_transfer_with_authorization(&request)
            .await
            .unwrap(),
        created,
        "the same bill and authorization"
    );
    assert_eq!(
        client
            .query_transfer_authorization(&no("keepauth1"))
            .await
            .unwrap()
            .state,
        AuthorizationState::WaitUserConfirm
    );
    let (status, v) = confirm(&second, created.package_info.as_deref().unwrap(), &openid).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "SUCCESS");
    assert_eq!(v["authorization"]["state"], "TAKING_EFFECT");
    settle(&second).await;
    assert_eq!(
        authorization_notes(&parsed(&client, &rx, "/notify/auth").await),
        [(
            "keepauth1".to_owned(),
            "MCHTRANSFER.AUTHORIZATION.CONFIRMED".to_owned(),
            AuthorizationState::TakingEffect
        )]
    );
    second.sim.shutdown().await;

    let third = Merchant::start_with(config()).await;
    let client = lib_client(&third);
    let auth = client
        .query_transfer_authorization(&no("keepauth1"))
        .await
        .unwrap();
    assert_eq!(auth.state, AuthorizationState::TakingEffect);
    let free = client
        .create_authorized_transfer(&authorized_transfer("free1", "keepauth1", 100, &base))
        .await
        .unwrap();
    assert_eq!(free.state, TransferState::Success);
    third.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The early states: ACCEPTED (setting accept_first) and PROCESSING (setting low_balance), through
// the library's client

fn bill_request(out_bill_no: &str, openid: &str, amount: u64, base: &str) -> TransferBillRequest {
    TransferBillRequest {
        out_bill_no: no(out_bill_no),
        transfer_scene_id: "1000".into(),
        openid: OpenId::parse(openid).unwrap(),
        user_name: None,
        transfer_amount: amount,
        transfer_remark: "新会员开通有礼".into(),
        notify_url: Some(format!("{base}/notify/bill")),
        user_recv_perception: Some("现金奖励".into()),
        transfer_scene_report_infos: report_infos(),
    }
}

/// Sets the balance; the answer is the balance once the bills waiting for funds took theirs.
async fn set_balance(m: &Merchant, balance_fen: u64) -> u64 {
    let (status, v) = m
        .control(
            "PUT",
            &format!("/sim/merchants/{}/balance", m.mchid()),
            Some(json!({"balance_fen": balance_fen})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["balance_fen"].as_u64().unwrap()
}

/// The package the simulator keeps for a bill (the control API shows it in every state).
async fn kept_package(m: &Merchant, out_bill_no: &str) -> String {
    let (_, listed) = m.control("GET", "/sim/transfers", None).await;
    listed["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["out_bill_no"] == out_bill_no)
        .and_then(|b| b["package_info"].as_str())
        .unwrap()
        .to_owned()
}

async fn state_by_client(client: &V3Client, out_bill_no: &str) -> TransferState {
    client
        .query_transfer_by_out_bill_no(&no(out_bill_no))
        .await
        .unwrap()
        .state
}

#[tokio::test]
async fn the_early_state_settings_default_to_todays_behaviour_and_are_checked() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (status, v) = m.control("GET", "/sim/transfers/settings", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["low_balance"], "not_enough");
    assert_eq!(v["accept_first"], false);
    let v = settings(
        &m,
        json!({"low_balance": "processing", "accept_first": true}),
    )
    .await;
    assert_eq!(
        (v["low_balance"].as_str(), v["accept_first"].as_bool()),
        (Some("processing"), Some(true))
    );
    assert_eq!(v["confirm_ttl_secs"], 86_400, "other fields kept");
    for bad in [
        json!({"low_balance": "wait"}),
        json!({"accept_first": "yes"}),
    ] {
        let (status, v) = m.control("PUT", "/sim/transfers/settings", Some(bad)).await;
        assert_eq!(status, 400, "{v}");
    }
    let (_, v) = m.control("GET", "/sim/transfers/settings", None).await;
    assert_eq!(v["low_balance"], "processing");
}

#[tokio::test]
async fn an_accepted_bill_waits_for_the_user_after_a_tick_and_its_retry_carries_the_package() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = m.new_user().await;
    settings(&m, json!({"accept_first": true})).await;
    let request = bill_request("acc1", &openid, 300, &base);

    let accepted = client.create_transfer_bill(&request).await.unwrap();
    assert_eq!(accepted.state, TransferState::Accepted);
    assert!(accepted.package_info.is_none());
    assert_eq!(accepted.out_bill_no, "acc1");
    assert_eq!(accepted.transfer_bill_no.len(), 34);
    // In the not_enough mode the funds are taken at once (a short balance is still a 403).
    assert_eq!(balance(&m).await, 10_000_000 - 300);
    // The page does not open before the bill waits for the user (unless the ticker was faster).
    let package = kept_package(&m, "acc1").await;
    let early = state_by_client(&client, "acc1").await;
    assert!(
        matches!(
            early,
            TransferState::Accepted | TransferState::WaitUserConfirm
        ),
        "{early:?}"
    );

    // The next tick (here the business clock) takes it on.
    advance(&m, 1).await;
    let waiting = client.create_transfer_bill(&request).await.unwrap();
    assert_eq!(waiting.state, TransferState::WaitUserConfirm);
    assert_eq!(waiting.transfer_bill_no, accepted.transfer_bill_no);
    assert_eq!(waiting.create_time, accepted.create_time);
    assert_eq!(waiting.package_info.as_deref(), Some(package.as_str()));
    assert_eq!(
        state_by_client(&client, "acc1").await,
        TransferState::WaitUserConfirm
    );
    assert_eq!(balance(&m).await, 10_000_000 - 300, "taken once");
    let (status, v) = confirm(&m, &package, &openid).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("SUCCESS")), "{v}");

    // Short, not_enough mode: refused, no bill, even with accept_first.
    set_balance(&m, 100).await;
    let refused = client
        .create_transfer_bill(&bill_request("acc2", &openid, 300, &base))
        .await;
    assert_eq!(api_error(refused), (403, ErrorCode::NotEnough));
    assert_eq!(
        api_error(client.query_transfer_by_out_bill_no(&no("acc2")).await).0,
        404
    );
    settle(&m).await;
    assert_eq!(
        bill_notes(&parsed(&client, &rx, "/notify/bill").await),
        [("acc1".to_owned(), TransferState::Success, None)]
    );
}

#[tokio::test]
async fn a_short_bill_stays_processing_until_a_top_up_then_waits_for_the_user_and_is_paid() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = m.new_user().await;
    settings(&m, json!({"low_balance": "processing"})).await;
    set_balance(&m, 499).await;
    let request = bill_request("proc1", &openid, 500, &base);

    let created = client.create_transfer_bill(&request).await.unwrap();
    assert_eq!(created.state, TransferState::Processing);
    assert!(created.package_info.is_none());
    assert_eq!(balance(&m).await, 499, "nothing taken");
    assert_eq!(
        state_by_client(&client, "proc1").await,
        TransferState::Processing
    );
    // Ticks change nothing while the balance is short; the retry answers the bill as it is.
    advance(&m, 23 * 3600).await;
    let again = client.create_transfer_bill(&request).await.unwrap();
    assert_eq!(again.state, TransferState::Processing);
    assert!(again.package_info.is_none());
    assert_eq!(again.transfer_bill_no, created.transfer_bill_no);
    // The confirmation page refuses it.
    let package = kept_package(&m, "proc1").await;
    let (status, v) = confirm(&m, &package, &openid).await;
    assert_eq!(
        (status, v["errMsg"].as_str()),
        (
            400,
            Some(format!("requestMerchantTransfer:fail {PACKAGE_ERROR}").as_str())
        )
    );
    // A bill of an amount the balance covers goes straight through meanwhile.
    let small = client
        .create_transfer_bill(&bill_request("proc2", &openid, 99, &base))
        .await
        .unwrap();
    assert_eq!(small.state, TransferState::WaitUserConfirm);
    assert_eq!(balance(&m).await, 400);

    // The top-up: the same bill goes on at once, the funds locked.
    assert_eq!(set_balance(&m, 600).await, 100, "the answer shows the lock");
    assert_eq!(balance(&m).await, 100);
    let waiting = client.create_transfer_bill(&request).await.unwrap();
    assert_eq!(waiting.state, TransferState::WaitUserConfirm);
    assert_eq!(waiting.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(waiting.package_info.as_deref(), Some(package.as_str()));
    // Its confirmation window started at the lock, not at the creation 23 hours before.
    advance(&m, 2 * 3600).await;
    assert_eq!(
        state_by_client(&client, "proc1").await,
        TransferState::WaitUserConfirm
    );
    let (status, v) = confirm(&m, &package, &openid).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("SUCCESS")), "{v}");
    assert_eq!(
        state_by_client(&client, "proc1").await,
        TransferState::Success
    );
    assert_eq!(balance(&m).await, 100);
    // proc2 was created 23 h in and expires 24 h later: still waiting.
    assert_eq!(
        state_by_client(&client, "proc2").await,
        TransferState::WaitUserConfirm
    );
    settle(&m).await;
    assert_eq!(
        bill_notes(&parsed(&client, &rx, "/notify/bill").await),
        [("proc1".to_owned(), TransferState::Success, None)]
    );
}

#[tokio::test]
async fn a_processing_bill_never_funded_fails_after_24_hours_with_its_notification() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = m.new_user().await;
    settings(&m, json!({"low_balance": "processing"})).await;
    set_balance(&m, 499).await;
    let created = client
        .create_transfer_bill(&bill_request("late1", &openid, 500, &base))
        .await
        .unwrap();
    assert_eq!(created.state, TransferState::Processing);
    // The business clock also follows the wall clock: ten minutes of margin.
    advance(&m, 24 * 3600 - 600).await;
    assert_eq!(
        state_by_client(&client, "late1").await,
        TransferState::Processing
    );
    advance(&m, 600).await;
    let bill = client
        .query_transfer_by_out_bill_no(&no("late1"))
        .await
        .unwrap();
    assert_eq!(bill.state, TransferState::Fail);
    assert_eq!(bill.fail_reason, Some(TransferFailReason::OverdueClose));
    assert_eq!(
        balance(&m).await,
        499,
        "nothing was taken, nothing given back"
    );
    // Funds arriving afterwards change nothing.
    set_balance(&m, 10_000).await;
    assert_eq!(state_by_client(&client, "late1").await, TransferState::Fail);
    assert_eq!(balance(&m).await, 10_000);
    settle(&m).await;
    assert_eq!(
        bill_notes(&parsed(&client, &rx, "/notify/bill").await),
        [(
            "late1".to_owned(),
            TransferState::Fail,
            Some(TransferFailReason::OverdueClose)
        )]
    );
    // The fault answers 403 in this mode too.
    let (status, _) = m
        .control(
            "PUT",
            "/sim/faults",
            Some(json!({"transfer_not_enough": true})),
        )
        .await;
    assert_eq!(status, 200);
    let refused = client
        .create_transfer_bill(&bill_request("late2", &openid, 100, &base))
        .await;
    assert_eq!(api_error(refused), (403, ErrorCode::NotEnough));
}

#[tokio::test]
async fn early_bills_are_cancelled_and_give_back_only_the_funds_they_hold() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let client = lib_client(&m);
    let openid = m.new_user().await;
    settings(&m, json!({"low_balance": "processing"})).await;
    set_balance(&m, 499).await;
    let created = client
        .create_transfer_bill(&bill_request("stop1", &openid, 500, &base))
        .await
        .unwrap();
    assert_eq!(created.state, TransferState::Processing);
    let cancelled = client.cancel_transfer(&no("stop1")).await.unwrap();
    assert_eq!(cancelled.state, TransferState::Canceling);
    assert_eq!(cancelled.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(
        state_by_client(&client, "stop1").await,
        TransferState::Cancelled
    );
    assert_eq!(balance(&m).await, 499);
    // A later top-up does not revive it.
    set_balance(&m, 1_000).await;
    assert_eq!(
        state_by_client(&client, "stop1").await,
        TransferState::Cancelled
    );
    assert_eq!(balance(&m).await, 1_000);

    // ACCEPTED with its funds (not_enough mode): cancelled (or, if a tick came first, cancelled
    // while waiting for the user), the funds given back either way.
    settings(
        &m,
        json!({"low_balance": "not_enough", "accept_first": true}),
    )
    .await;
    let accepted = client
        .create_transfer_bill(&bill_request("stop2", &openid, 300, &base))
        .await
        .unwrap();
    assert_eq!(accepted.state, TransferState::Accepted);
    assert_eq!(balance(&m).await, 700);
    client.cancel_transfer(&no("stop2")).await.unwrap();
    assert_eq!(
        state_by_client(&client, "stop2").await,
        TransferState::Cancelled
    );
    assert_eq!(balance(&m).await, 1_000);

    // ACCEPTED without funds (processing mode), short at its tick: PROCESSING, then cancelled.
    settings(&m, json!({"low_balance": "processing"})).await;
    let accepted = client
        .create_transfer_bill(&bill_request("stop3", &openid, 1_500, &base))
        .await
        .unwrap();
    assert_eq!(accepted.state, TransferState::Accepted);
    assert_eq!(balance(&m).await, 1_000, "taken at the tick, if at all");
    advance(&m, 1).await;
    assert_eq!(
        state_by_client(&client, "stop3").await,
        TransferState::Processing
    );
    client.cancel_transfer(&no("stop3")).await.unwrap();
    assert_eq!(
        state_by_client(&client, "stop3").await,
        TransferState::Cancelled
    );
    assert_eq!(balance(&m).await, 1_000);
    // Cancelling again: the bill is final.
    assert_eq!(
        api_error(client.cancel_transfer(&no("stop3")).await),
        (400, ErrorCode::InvalidRequest)
    );
    settle(&m).await;
    assert_eq!(
        bill_notes(&parsed(&client, &rx, "/notify/bill").await),
        [
            ("stop1".to_owned(), TransferState::Cancelled, None),
            ("stop2".to_owned(), TransferState::Cancelled, None),
            ("stop3".to_owned(), TransferState::Cancelled, None),
        ]
    );
}

#[tokio::test]
async fn a_processing_bill_survives_a_restart_and_goes_on_after_a_top_up() {
    let dir = std::env::temp_dir().join(format!("wxpay-sim-processing-{}", rand::random::<u64>()));
    let config = || SimConfig {
        state_dir: Some(dir.clone()),
        key_mode: KeyMode::PublicKey,
        time_scale: 2000.0,
        ..SimConfig::default()
    };
    let (_rx, base) = receiver::start(Receiver::default()).await;
    let first = Merchant::start_with(config()).await;
    let openid = first.new_user().await;
    settings(&first, json!({"low_balance": "processing"})).await;
    set_balance(&first, 100).await;
    let request = bill_request("hold1", &openid, 200, &base);
    let created = lib_client(&first)
        .create_transfer_bill(&request)
        .await
        .unwrap();
    assert_eq!(created.state, TransferState::Processing);
    first.sim.shutdown().await;

    // The settings are back to their defaults; the bill still waits for its funds.
    let second = Merchant::start_with(config()).await;
    let client = lib_client(&second);
    assert_eq!(
        state_by_client(&client, "hold1").await,
        TransferState::Processing
    );
    assert_eq!(balance(&second).await, 100);
    set_balance(&second, 300).await;
    let waiting = client.create_transfer_bill(&request).await.unwrap();
    assert_eq!(waiting.state, TransferState::WaitUserConfirm);
    assert_eq!(waiting.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(balance(&second).await, 100);
    second.sim.shutdown().await;

    // The lock is kept too: confirmed after another restart, nothing taken twice.
    let third = Merchant::start_with(config()).await;
    let (status, v) = confirm(&third, waiting.package_info.as_deref().unwrap(), &openid).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("SUCCESS")), "{v}");
    assert_eq!(balance(&third).await, 100);
    third.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
