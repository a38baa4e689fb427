//! Scenario 4: forged and replayed notifications. Every forgery targets an unpaid order (a
//! forged payment would mark it paid): all are refused, none changes anything, each is logged
//! once and no log line carries a secret. WeChat's own redelivery of a genuine notification is
//! acknowledged and changes nothing.

use http::HeaderMap;
use serde_json::{Value, json};
use wxpay::RsaPrivateKey;
use wxpay::v2::{SignType, XmlMap};
use wxpay_server::store::Backend;
use wxpay_sim::signer::SignatureHeaders;

use crate::harness::{Sandbox, Secrets, capture_logs, figures, sandbox, sim_pay, table_counts};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn headers_of(h: &SignatureHeaders) -> HeaderMap {
    let mut headers = HeaderMap::new();
    h.apply(&mut headers);
    headers.insert(
        "wechatpay-signature-type",
        "WECHATPAY2-SHA256-RSA2048".parse().unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    headers
}

/// Headers as WeChat signs them, at `timestamp`.
fn signed(s: &Sandbox, body: &str, timestamp: i64) -> SignatureHeaders {
    s.sim
        .signer
        .sign(s.sim.signer.notification_key(), timestamp, body.as_bytes())
        .unwrap()
}

/// A v3 payment notification body for `transaction`, encrypted with the merchant's APIv3 key.
fn envelope(s: &Sandbox, id: &str, transaction: &Value) -> String {
    let nonce = wxpay::nonce::random_string(12);
    let ciphertext = s
        .sim
        .api_v3_key
        .encrypt(&nonce, "transaction", transaction.to_string().as_bytes())
        .unwrap();
    json!({
        "id": id,
        "create_time": "2026-01-01T10:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": "transaction",
            "nonce": nonce,
        }
    })
    .to_string()
}

fn v2_xml(fields: &[(&str, String)], key: &str) -> String {
    let mut map = XmlMap::new();
    for (k, v) in fields {
        map.insert((*k).to_owned(), v.clone());
    }
    let sign = wxpay::v2::sign::sign_map(&map, key, SignType::Md5);
    map.insert("sign".into(), sign);
    wxpay::v2::xml::encode(&map).unwrap()
}

struct Attempt {
    name: &'static str,
    path: &'static str,
    headers: HeaderMap,
    body: String,
}

#[tokio::test]
async fn forged_and_replayed_notifications_are_refused_and_logged_once() {
    let (logs, _guard) = capture_logs();
    let s = sandbox(Backend::Sqlite, "v3", |_| {}).await;
    let app = &s.app;
    let sim_url = app.state.sandbox_url.clone().unwrap();
    // The genuine notification of order A is kept from the server: the test delivers it.
    s.sim
        .faults
        .set(wxpay_sim::faults::Faults {
            notify_drop_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    let (openid, token) = app.login().await;
    let a = app
        .create_order(&token, json!([{"sku": "coffee", "quantity": 1}]))
        .await;
    let no_a = a.body["out_trade_no"].as_str().unwrap().to_owned();
    assert!(
        sim_pay(&app.http, &sim_url, &a.body["payment"], &openid)
            .await
            .unwrap()
    );
    let b = app
        .create_order(&token, json!([{"sku": "cake", "quantity": 2}]))
        .await;
    let no_b = b.body["out_trade_no"].as_str().unwrap().to_owned();
    let amount_b = b.body["amount_fen"].as_u64().unwrap();

    let genuine = s.sim.dispatcher.records(Some(&no_a))[0].body.clone();
    let envelope_a: Value = serde_json::from_str(&genuine).unwrap();
    let r = &envelope_a["resource"];
    let plain = s
        .sim
        .api_v3_key
        .decrypt(
            r["nonce"].as_str().unwrap(),
            r["associated_data"].as_str().unwrap(),
            r["ciphertext"].as_str().unwrap(),
        )
        .unwrap();
    let tx_a: Value = serde_json::from_slice(&plain).unwrap();
    // What a forger wants WeChat to have said: order B is paid.
    let mut tx_b = tx_a.clone();
    tx_b["out_trade_no"] = json!(no_b);
    tx_b["transaction_id"] = json!(format!("42000{}", wxpay::nonce::random_string(10)));
    tx_b["amount"]["total"] = json!(amount_b);
    tx_b["amount"]["payer_total"] = json!(amount_b);
    let forged_b = envelope(&s, "EV-forged-0001", &tx_b);

    let mut attempts = Vec::new();
    let t = now();

    let mut h = signed(&s, &forged_b, t);
    h.signature = wxpay::nonce::random_string(344);
    attempts.push(Attempt {
        name: "wrong signature",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.clone(),
    });

    let other = RsaPrivateKey::generate().unwrap();
    let mut h = signed(&s, &forged_b, t);
    h.signature = other
        .sign_sha256_base64(&wxpay::v3::auth::response_message(
            &h.timestamp,
            &h.nonce,
            forged_b.as_bytes(),
        ))
        .unwrap();
    attempts.push(Attempt {
        name: "signed by another key",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.clone(),
    });

    let h = signed(&s, &forged_b, t).into_probe();
    attempts.push(Attempt {
        name: "WECHATPAY/SIGNTEST probe",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.clone(),
    });

    let h = signed(&s, &forged_b, t - 600);
    attempts.push(Attempt {
        name: "timestamp 10 minutes old",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.clone(),
    });

    let h = signed(&s, &forged_b, t + 600);
    attempts.push(Attempt {
        name: "timestamp 10 minutes ahead",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.clone(),
    });

    let mut h = signed(&s, &forged_b, t);
    h.serial = "PUB_KEY_ID_0114232134912410000000000000000000".into();
    attempts.push(Attempt {
        name: "unknown serial",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.clone(),
    });

    // A captured delivery of order A replayed: its old headers, or its old signature under a
    // fresh timestamp.
    let old = signed(&s, &genuine, t - 900);
    attempts.push(Attempt {
        name: "replay with the old headers",
        path: "/notify/v3/pay",
        headers: headers_of(&old),
        body: genuine.clone(),
    });
    let mut fresh = old.clone();
    fresh.timestamp = t.to_string();
    attempts.push(Attempt {
        name: "replay with a fresh timestamp",
        path: "/notify/v3/pay",
        headers: headers_of(&fresh),
        body: genuine.clone(),
    });
    // A's body with B's number spliced into the signed body (the signature no longer holds).
    let spliced = genuine.replace("\"id\":\"", "\"id\":\"X");
    attempts.push(Attempt {
        name: "replayed body, altered id",
        path: "/notify/v3/pay",
        headers: headers_of(&fresh),
        body: spliced,
    });

    // Verified (signed with WeChat's key and encrypted with the APIv3 key) but not matching B.
    for (name, field, value) in [
        ("amount differs", "/amount/total", json!(amount_b + 1)),
        ("amount is one fen", "/amount/total", json!(1)),
        ("appid differs", "/appid", json!("wx0000000000000000")),
        ("mchid differs", "/mchid", json!("1900000000")),
    ] {
        let mut tx = tx_b.clone();
        *tx.pointer_mut(field).unwrap() = value;
        let body = envelope(
            &s,
            &format!("EV-mismatch-{}", wxpay::nonce::random_string(8)),
            &tx,
        );
        let h = signed(&s, &body, t);
        attempts.push(Attempt {
            name,
            path: "/notify/v3/pay",
            headers: headers_of(&h),
            body,
        });
    }

    // A ciphertext that fails authentication, under a valid signature.
    let mut tampered: Value = serde_json::from_str(&forged_b).unwrap();
    let ct = tampered["resource"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = match ct.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", &ct[1..]),
    };
    tampered["resource"]["ciphertext"] = json!(flipped);
    let tampered = tampered.to_string();
    let h = signed(&s, &tampered, t);
    attempts.push(Attempt {
        name: "ciphertext fails authentication",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: tampered,
    });

    // A refund notification posted to the payment URL.
    let h = signed(
        &s,
        &forged_b.replace("TRANSACTION.SUCCESS", "REFUND.SUCCESS"),
        t,
    );
    attempts.push(Attempt {
        name: "event type of another URL",
        path: "/notify/v3/pay",
        headers: headers_of(&h),
        body: forged_b.replace("TRANSACTION.SUCCESS", "REFUND.SUCCESS"),
    });

    // v2: signed XML.
    let merchant: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::harness::sandbox_dir().join("merchant.json")).unwrap(),
    )
    .unwrap();
    let v2_key = merchant["api_v2_key"].as_str().unwrap();
    let appid = merchant["appid"].as_str().unwrap().to_owned();
    let mchid = merchant["mchid"].as_str().unwrap().to_owned();
    let v2_fields = |total: u64, appid: &str, mchid: &str| -> Vec<(&'static str, String)> {
        vec![
            ("return_code", "SUCCESS".into()),
            ("result_code", "SUCCESS".into()),
            ("appid", appid.to_owned()),
            ("mch_id", mchid.to_owned()),
            ("nonce_str", wxpay::nonce::nonce()),
            ("openid", openid.clone()),
            ("trade_type", "JSAPI".into()),
            ("bank_type", "OTHERS".into()),
            ("total_fee", total.to_string()),
            ("cash_fee", total.to_string()),
            (
                "transaction_id",
                format!("42000{}", wxpay::nonce::random_string(10)),
            ),
            ("out_trade_no", no_b.clone()),
            ("time_end", "20260101100000".into()),
        ]
    };
    let xml_headers = {
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/xml".parse().unwrap());
        h
    };
    let mut bad_sign =
        wxpay::v2::xml::decode(v2_xml(&v2_fields(amount_b, &appid, &mchid), v2_key).as_bytes())
            .unwrap();
    bad_sign.insert("sign".into(), "0".repeat(32));
    let bad_sign = wxpay::v2::xml::encode(&bad_sign).unwrap();
    for (name, body) in [
        ("v2 wrong signature", bad_sign),
        (
            "v2 signed by another key",
            v2_xml(
                &v2_fields(amount_b, &appid, &mchid),
                "0123456789abcdef0123456789abcdef",
            ),
        ),
        (
            "v2 unsigned",
            v2_xml(&v2_fields(amount_b, &appid, &mchid), v2_key)
                .replace("<sign>", "<signature>")
                .replace("</sign>", "</signature>"),
        ),
        (
            "v2 amount differs",
            v2_xml(&v2_fields(amount_b - 1, &appid, &mchid), v2_key),
        ),
        (
            "v2 appid differs",
            v2_xml(&v2_fields(amount_b, "wx0000000000000000", &mchid), v2_key),
        ),
        (
            "v2 mchid differs",
            v2_xml(&v2_fields(amount_b, &appid, "1900000000"), v2_key),
        ),
    ] {
        attempts.push(Attempt {
            name,
            path: "/notify/v2/pay",
            headers: xml_headers.clone(),
            body,
        });
    }

    let pool = app.state.store.pool();
    let before = table_counts(pool).await;
    let mut refused = 0;
    let mut rejected_events = 0;
    for attempt in &attempts {
        logs.clear();
        let events_before = app
            .count(
                "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1",
                &no_b,
            )
            .await;
        let answer = app
            .send(
                app.http
                    .post(format!("{}{}", app.base, attempt.path))
                    .headers(attempt.headers.clone())
                    .body(attempt.body.clone()),
            )
            .await;
        assert!(
            (400..500).contains(&answer.status),
            "{}: answered {} {:?}",
            attempt.name,
            answer.status,
            String::from_utf8_lossy(&answer.bytes)
        );
        refused += 1;
        let order_b = app.state.store.order(&no_b).await.unwrap().unwrap();
        assert_eq!(order_b.status.as_str(), "NOTPAY", "{}", attempt.name);
        assert_eq!(app.outbox_rows(&no_b).await, 0, "{}", attempt.name);
        let events_after = app
            .count(
                "SELECT COUNT(*) FROM order_events WHERE out_trade_no = $1",
                &no_b,
            )
            .await;
        // A verified notification that contradicts the order is recorded on its timeline.
        assert!(events_after - events_before <= 1, "{}", attempt.name);
        rejected_events += events_after - events_before;
        let lines: Vec<String> = logs
            .text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{} must be logged once: {lines:#?}",
            attempt.name
        );
    }
    let mut after = table_counts(pool).await;
    let rejections = after.get("order_events").copied().unwrap() - before["order_events"];
    assert_eq!(rejections, rejected_events);
    after.insert("order_events", before["order_events"]);
    assert_eq!(
        before, after,
        "the forgeries changed nothing but B's timeline"
    );

    // WeChat's own delivery of A, then its redelivery (same body, fresh signature), then the same
    // payment under another event id: one state change, one webhook event.
    for (name, body) in [
        ("genuine", genuine.clone()),
        ("redelivered", genuine.clone()),
        (
            "same payment, new event id",
            envelope(&s, "EV-second-copy", &tx_a),
        ),
    ] {
        let h = signed(&s, &body, now());
        let answer = app
            .send(
                app.http
                    .post(format!("{}/notify/v3/pay", app.base))
                    .headers(headers_of(&h))
                    .body(body),
            )
            .await;
        assert_eq!(answer.status, 204, "{name}");
    }
    assert_eq!(app.paid_events(&no_a).await, 1);
    assert_eq!(app.outbox_rows(&no_a).await, 1);

    let secrets = Secrets::of_sandbox().with_session_keys(pool).await;
    secrets.assert_absent("the logs of scenario 4", &logs.text());
    figures(
        "scenario 4 forgery and replay",
        &[
            ("forged_or_replayed", attempts.len().to_string()),
            ("refused_4xx", refused.to_string()),
            ("state_changes", "0".into()),
            ("rejections_on_the_timeline", rejected_events.to_string()),
            ("log_lines_per_refusal", "1".into()),
            ("genuine_deliveries", "3".into()),
            ("order_paid_events", "1".into()),
            ("secrets_in_logs", "0".into()),
        ],
    );
}
