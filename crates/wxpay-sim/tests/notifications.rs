//! Payment and refund notifications: signed and encrypted as WeChat does, retried on the
//! (time-scaled) schedule until acknowledged, with dropped, duplicated and probe sends visible in
//! the delivery log.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::Merchant;
use support::receiver::{self, Receiver};
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::verifier::{SignedHeaders, verify_signed};
use wxpay_sim::state::{ApiVersion, NewOrder, TradeType};
use wxpay_sim::{KeyMode, SimConfig};

async fn deliveries(m: &Merchant) -> Vec<Value> {
    let (status, v) = m.control("GET", "/sim/notifications", None).await;
    assert_eq!(status, 200);
    v["deliveries"].as_array().unwrap().clone()
}

/// Flushes until nothing is pending (bounded), returning the log.
async fn settle(m: &Merchant) -> Vec<Value> {
    for _ in 0..60 {
        let (status, summary) = m.control("POST", "/sim/notifications/flush", None).await;
        assert_eq!(status, 200);
        if summary["pending"] == 0 {
            return deliveries(m).await;
        }
    }
    panic!(
        "notifications still pending after 60 flushes: {:?}",
        deliveries(m).await
    );
}

async fn paid_order(m: &Merchant, no: &str, total: u64, url: &str) -> (String, String) {
    let openid = m.new_user().await;
    let prepay = m.prepay(no, total, &openid, url).await;
    let (status, paid) = m.pay(&prepay, &openid).await;
    assert_eq!(status, 200, "{paid}");
    (openid, paid["transaction_id"].as_str().unwrap().to_owned())
}

fn verify_notification(m: &Merchant, r: &receiver::Received) -> Result<(), wxpay::SignatureError> {
    let headers = SignedHeaders::from_headers(&r.headers)?;
    verify_signed(
        m.verifier().as_ref(),
        &headers,
        &r.body,
        Merchant::now(),
        300,
    )
}

fn decrypt(m: &Merchant, body: &[u8]) -> (Value, Value) {
    let envelope: Value = serde_json::from_slice(body).unwrap();
    let res = &envelope["resource"];
    let key = ApiV3Key::new(&m.sim.merchant().api_v3_key).unwrap();
    let plain = key
        .decrypt(
            res["nonce"].as_str().unwrap(),
            res["associated_data"].as_str().unwrap(),
            res["ciphertext"].as_str().unwrap(),
        )
        .unwrap();
    (envelope.clone(), serde_json::from_slice(&plain).unwrap())
}

#[tokio::test]
async fn a_payment_notification_is_signed_encrypted_and_acked_in_every_key_mode() {
    for mode in [KeyMode::PublicKey, KeyMode::Certificate, KeyMode::Migrating] {
        let m = Merchant::start(mode).await;
        let (rx, base) = receiver::start(Receiver::default()).await;
        let (openid, tx) = paid_order(&m, "order-note-1", 88, &format!("{base}/notify/pay")).await;
        let log = settle(&m).await;
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["acked"], true);
        assert_eq!(log[0]["kind"], "payment");
        assert_eq!(log[0]["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(log[0]["attempts"][0]["status"], 204);

        let got = rx.received();
        assert_eq!(got.len(), 1);
        let r = &got[0];
        verify_notification(&m, r).unwrap();
        // The log shows exactly what was sent.
        let logged = &log[0]["attempts"][0]["headers"];
        for name in [
            "wechatpay-serial",
            "wechatpay-signature",
            "wechatpay-nonce",
            "wechatpay-timestamp",
        ] {
            assert_eq!(logged[name], r.headers[name].to_str().unwrap(), "{name}");
        }
        assert_eq!(log[0]["body"], std::str::from_utf8(&r.body).unwrap());
        let (_, filtered) = m
            .control("GET", "/sim/notifications?out_trade_no=order-other", None)
            .await;
        assert!(filtered["deliveries"].as_array().unwrap().is_empty());
        let (_, filtered) = m
            .control("GET", "/sim/notifications?out_trade_no=order-note-1", None)
            .await;
        assert_eq!(filtered["deliveries"].as_array().unwrap().len(), 1);
        assert_eq!(
            r.headers["wechatpay-signature-type"],
            "WECHATPAY2-SHA256-RSA2048"
        );
        assert_eq!(r.headers["content-type"], "application/json");
        let (envelope, t) = decrypt(&m, &r.body);
        assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
        assert_eq!(envelope["resource_type"], "encrypt-resource");
        assert_eq!(envelope["summary"], "支付成功");
        assert!(envelope["id"].as_str().unwrap().starts_with("EV-"));
        assert!(
            envelope["create_time"]
                .as_str()
                .unwrap()
                .ends_with("+08:00")
        );
        assert_eq!(envelope["resource"]["original_type"], "transaction");
        assert_eq!(envelope["resource"]["nonce"].as_str().unwrap().len(), 12);
        assert_eq!(t["trade_state"], "SUCCESS");
        assert_eq!(t["transaction_id"], tx.as_str());
        assert_eq!(t["out_trade_no"], "order-note-1");
        assert_eq!(t["payer"]["openid"], openid.as_str());
        assert_eq!(t["amount"]["total"], 88);
        assert_eq!(t["amount"]["payer_total"], 88);
        assert_eq!(t["mchid"], m.mchid().as_str());
        m.sim.shutdown().await;
    }
}

#[tokio::test]
async fn failed_acks_are_retried_on_schedule_until_a_200_or_204() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver {
        fail_first: std::sync::Arc::new(std::sync::Mutex::new(2)),
        ..Receiver::default()
    })
    .await;
    paid_order(&m, "order-retry-1", 10, &format!("{base}/notify/pay")).await;
    // Retries at 15 s and 15 s, divided by the time scale of 2000: a few milliseconds.
    let mut log = Vec::new();
    for _ in 0..200 {
        log = deliveries(&m).await;
        if log[0]["acked"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(log[0]["acked"], true, "{log:?}");
    let statuses: Vec<_> = log[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(500), json!(204)]);
    assert_eq!(log[0]["retries"], 2);
    assert_eq!(rx.received().len(), 3);
    // Each attempt is signed afresh.
    let nonces: std::collections::HashSet<_> = rx
        .received()
        .iter()
        .map(|r| r.headers["wechatpay-nonce"].clone())
        .collect();
    assert_eq!(nonces.len(), 3);
}

#[tokio::test]
async fn an_unreachable_url_exhausts_the_fifteen_retries() {
    let m = Merchant::start_with(SimConfig {
        time_scale: 1_000_000.0,
        ..SimConfig::default()
    })
    .await;
    paid_order(&m, "order-lost-1", 10, "http://127.0.0.1:9/notify/pay").await;
    let mut log = Vec::new();
    for _ in 0..300 {
        log = deliveries(&m).await;
        if log[0]["gave_up"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log[0]["gave_up"], true, "{log:?}");
    assert_eq!(log[0]["acked"], false);
    assert_eq!(log[0]["attempts"].as_array().unwrap().len(), 16);
    assert!(
        log[0]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["outcome"] == "failed")
    );
    let (_, summary) = m.control("POST", "/sim/notifications/flush", None).await;
    assert_eq!(
        summary["attempted"], 0,
        "given-up deliveries are not attempted again"
    );
}

#[tokio::test]
async fn two_hundred_orders_with_drops_and_duplicates_are_all_delivered_and_logged() {
    let m = Merchant::start_with(SimConfig {
        time_scale: 100_000.0,
        ..SimConfig::default()
    })
    .await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let (status, _) = m
        .control(
            "PUT",
            "/sim/faults",
            Some(json!({"notify_drop_rate": 0.3, "notify_duplicate_rate": 0.3})),
        )
        .await;
    assert_eq!(status, 200);
    let openid = m.new_user().await;
    for i in 0..200 {
        let no = format!("order-bulk-{i:04}");
        let prepay = m
            .prepay(&no, 100 + i, &openid, &format!("{base}/notify/pay"))
            .await;
        assert_eq!(m.pay(&prepay, &openid).await.0, 200);
    }
    let log = settle(&m).await;
    assert_eq!(log.len(), 200);
    let mut dropped = 0;
    let mut duplicates = 0;
    let mut sent = 0;
    for d in &log {
        assert_eq!(d["acked"], true, "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        // The last attempt is the acknowledged one; every earlier one was dropped.
        let last_number = attempts.last().unwrap()["number"].as_u64().unwrap();
        for a in attempts {
            match a["outcome"].as_str().unwrap() {
                "dropped" => {
                    dropped += 1;
                    assert!(a["status"].is_null());
                    assert!(a["number"].as_u64().unwrap() < last_number);
                }
                "sent" => {
                    sent += 1;
                    assert_eq!(a["status"], 204);
                    assert_eq!(a["number"].as_u64().unwrap(), last_number);
                    if a["duplicate"] == true {
                        duplicates += 1;
                    }
                }
                other => panic!("unexpected outcome {other}: {d}"),
            }
        }
        assert_eq!(d["retries"].as_u64().unwrap(), last_number);
    }
    assert!(
        dropped > 20,
        "about 30% of first attempts are dropped: {dropped}"
    );
    assert!(
        duplicates > 20,
        "about 30% of sends are duplicated: {duplicates}"
    );
    // What arrived is exactly what the log says was sent: dropped attempts never left.
    let received = rx.received();
    assert_eq!(received.len(), sent);
    assert_eq!(sent, 200 + duplicates);
    let mut per_order: HashMap<String, usize> = HashMap::new();
    for r in &received {
        verify_notification(&m, r).unwrap();
        let (_, t) = decrypt(&m, &r.body);
        *per_order
            .entry(t["out_trade_no"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_order.len(), 200);
    for d in &log {
        let dups = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["duplicate"] == true)
            .count();
        assert_eq!(per_order[d["out_trade_no"].as_str().unwrap()], 1 + dups);
    }
}

#[tokio::test]
async fn signtest_probes_precede_real_notifications_and_never_count_as_acks() {
    let m = Merchant::start(KeyMode::PublicKey).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    m.control(
        "PUT",
        "/sim/faults",
        Some(json!({"signtest_probe_rate": 1.0})),
    )
    .await;
    paid_order(&m, "order-probe-1", 10, &format!("{base}/notify/pay")).await;
    let log = settle(&m).await;
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["probe"], true);
    assert_eq!(
        attempts[0]["acked"], false,
        "the receiver answered 204 but a probe never acks"
    );
    assert_eq!(attempts[1]["probe"], false);
    assert_eq!(attempts[1]["acked"], true);
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert!(
        got[0].headers["wechatpay-signature"]
            .to_str()
            .unwrap()
            .starts_with("WECHATPAY/SIGNTEST/")
    );
    assert_eq!(
        verify_notification(&m, &got[0]),
        Err(wxpay::SignatureError::Probe)
    );
    verify_notification(&m, &got[1]).unwrap();
    assert_eq!(got[0].body, got[1].body);
}

#[tokio::test]
async fn migrating_notifications_are_signed_by_the_key_the_ratio_picks() {
    for (ratio, expect_public_key) in [(1.0, true), (0.0, false)] {
        let m = Merchant::start_with(SimConfig {
            key_mode: KeyMode::Migrating,
            migrating_ratio: ratio,
            time_scale: 2000.0,
            ..SimConfig::default()
        })
        .await;
        let (rx, base) = receiver::start(Receiver::default()).await;
        paid_order(&m, "order-mig-1", 10, &format!("{base}/notify/pay")).await;
        settle(&m).await;
        let got = rx.received();
        let serial = got[0].headers["wechatpay-serial"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            serial.starts_with("PUB_KEY_ID_"),
            expect_public_key,
            "{serial}"
        );
        verify_notification(&m, &got[0]).unwrap();
    }
}

#[tokio::test]
async fn a_refund_notification_follows_a_successful_refund() {
    let m = Merchant::start(KeyMode::Certificate).await;
    let (rx, base) = receiver::start(Receiver::default()).await;
    let (_, tx) = paid_order(&m, "order-rn-1", 100, &format!("{base}/notify/pay")).await;
    let refund = json!({"transaction_id": tx, "out_refund_no": "R-rn-1", "notify_url": format!("{base}/notify/refund"),
                        "amount": {"refund": 30, "total": 100, "currency": "CNY"}});
    assert_eq!(
        m.v3("POST", "/v3/refund/domestic/refunds", Some(&refund))
            .await
            .status,
        200
    );
    let mut refund_log = None;
    for _ in 0..200 {
        let log = settle(&m).await;
        // The refund's notification is queued when the refund succeeds, which may be just after
        // a flush counted nothing pending: wait for its record to be finished, not just present.
        if let Some(d) = log
            .iter()
            .find(|d| d["kind"] == "refund" && (d["acked"] == true || d["gave_up"] == true))
        {
            refund_log = Some(d.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = refund_log.expect("a refund notification");
    assert_eq!(d["acked"], true);
    assert_eq!(d["out_refund_no"], "R-rn-1");
    let r = rx
        .received()
        .into_iter()
        .find(|r| r.path == "/notify/refund")
        .unwrap();
    verify_notification(&m, &r).unwrap();
    let (envelope, plain) = decrypt(&m, &r.body);
    assert_eq!(envelope["event_type"], "REFUND.SUCCESS");
    assert_eq!(envelope["resource"]["associated_data"], "refund");
    assert_eq!(plain["refund_status"], "SUCCESS");
    assert_eq!(plain["amount"]["refund"], 30);
    assert_eq!(plain["amount"]["total"], 100);
    assert_eq!(plain["transaction_id"], tx.as_str());
    assert_eq!(plain["out_refund_no"], "R-rn-1");
    assert!(plain["refund_id"].as_str().unwrap().starts_with("50300"));
}

#[tokio::test]
async fn v2_payment_notifications_are_signed_xml_and_need_the_xml_ack() {
    for xml_ack in [true, false] {
        let m = Merchant::start_with(SimConfig {
            time_scale: 1_000_000.0,
            ..SimConfig::default()
        })
        .await;
        let (rx, base) = receiver::start(Receiver {
            xml_ack,
            ..Receiver::default()
        })
        .await;
        let openid = m.new_user().await;
        let merchant = m.sim.merchant().clone();
        let url = format!("{base}/notify/v2");
        // The v2 endpoints are another module's; the order is placed in the store directly.
        let (order, _) = m
            .sim
            .state()
            .store
            .create_or_reuse_order(&NewOrder {
                appid: &merchant.appid,
                mchid: &merchant.mchid,
                out_trade_no: "order-v2-1",
                openid: &openid,
                description: "test",
                attach: Some("附加"),
                device_info: None,
                notify_url: &url,
                total: 1,
                version: ApiVersion::V2,
                sign_type: wxpay::v2::SignType::HmacSha256,
                trade_type: TradeType::Jsapi,
                time_expire: None,
            })
            .unwrap();
        let params = wxpay::pay_params::v2(
            &merchant.api_v2_key,
            &merchant.appid,
            &order.prepay_id,
            Merchant::now(),
            &wxpay::nonce::nonce(),
            wxpay::v2::SignType::HmacSha256,
        );
        // The client refuses a paySign made with another sign type than unifiedorder's.
        let md5 = wxpay::pay_params::v2(
            &merchant.api_v2_key,
            &merchant.appid,
            &order.prepay_id,
            Merchant::now(),
            &wxpay::nonce::nonce(),
            wxpay::v2::SignType::Md5,
        );
        let mut body = serde_json::to_value(&md5).unwrap();
        body["openid"] = json!(openid);
        assert_eq!(m.control("POST", "/sim/pay", Some(body)).await.0, 400);
        let mut body = serde_json::to_value(&params).unwrap();
        body["openid"] = json!(openid);
        let (status, paid) = m.control("POST", "/sim/pay", Some(body)).await;
        assert_eq!(status, 200, "{paid}");

        let mut log = Vec::new();
        for _ in 0..300 {
            log = deliveries(&m).await;
            if log[0]["acked"] == true || log[0]["gave_up"] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(log[0]["version"], "v2");
        assert_eq!(log[0]["acked"], xml_ack, "{log:?}");
        let got = rx.received();
        let map = wxpay::v2::xml::decode(&got[0].body).unwrap();
        assert_eq!(
            wxpay::v2::sign::verify_map(&map, &merchant.api_v2_key),
            Ok(wxpay::v2::SignType::HmacSha256)
        );
        assert_eq!(map["sign_type"], "HMAC-SHA256");
        assert_eq!(map["result_code"], "SUCCESS");
        assert_eq!(map["out_trade_no"], "order-v2-1");
        assert_eq!(
            map["transaction_id"],
            paid["transaction_id"].as_str().unwrap()
        );
        assert_eq!(map["total_fee"], "1");
        assert_eq!(map["attach"], "附加");
        assert_eq!(map["time_end"].len(), 14);
        if !xml_ack {
            // A plain 204 is no v2 ack: all sixteen attempts were made.
            assert_eq!(got.len(), 16);
        }
    }
}
