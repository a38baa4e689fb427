//! A simulator restarted on the same state directory keeps its merchant, users, orders and
//! refunds (issue 13): an old merchant database and a restarted sandbox agree.

mod support;

use serde_json::json;
use support::Merchant;
use wxpay_sim::{KeyMode, SimConfig};

const NOTIFY: &str = "http://127.0.0.1:9/notify/pay";

fn config(dir: &std::path::Path) -> SimConfig {
    SimConfig {
        state_dir: Some(dir.to_path_buf()),
        key_mode: KeyMode::PublicKey,
        time_scale: 2000.0,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn a_restart_on_the_same_state_directory_finds_users_orders_and_refunds_again() {
    let dir = std::env::temp_dir().join(format!("wxpay-sim-restart-{}", rand_suffix()));
    let first = Merchant::start_with(config(&dir)).await;
    let openid = first.new_user().await;
    let prepay = first.prepay("order-keep-1", 500, &openid, NOTIFY).await;
    assert_eq!(first.pay(&prepay, &openid).await.0, 200);
    let unpaid = first.prepay("order-keep-2", 80, &openid, NOTIFY).await;
    let refund = json!({"out_trade_no": "order-keep-1", "out_refund_no": "R-keep-1",
                        "amount": {"refund": 100, "total": 500, "currency": "CNY"}});
    let refunded = first
        .v3("POST", "/v3/refund/domestic/refunds", Some(&refund))
        .await;
    assert_eq!(refunded.status, 200, "{:?}", refunded.json());
    let query = |m: &Merchant, no: &str| {
        format!("/v3/pay/transactions/out-trade-no/{no}?mchid={}", m.mchid())
    };
    let before = first
        .v3("GET", &query(&first, "order-keep-1"), None)
        .await
        .json();
    let mchid = first.mchid();
    first.sim.shutdown().await;

    let second = Merchant::start_with(config(&dir)).await;
    assert_eq!(second.mchid(), mchid, "the same merchant");
    assert!(second.sim.state().mp.has_user(&openid), "the user is known");
    let after = second
        .v3("GET", &query(&second, "order-keep-1"), None)
        .await;
    assert_eq!(after.status, 200);
    second.verify(&after).unwrap();
    let after = after.json();
    assert_eq!(after["transaction_id"], before["transaction_id"]);
    assert_eq!(after["trade_state"], "REFUND");
    let by_id = second
        .v3(
            "GET",
            &format!(
                "/v3/pay/transactions/id/{}?mchid={}",
                before["transaction_id"].as_str().unwrap(),
                second.mchid()
            ),
            None,
        )
        .await;
    assert_eq!(by_id.json()["out_trade_no"], "order-keep-1");
    let kept_refund = second
        .v3("GET", "/v3/refund/domestic/refunds/R-keep-1", None)
        .await;
    assert_eq!(kept_refund.status, 200);
    assert_eq!(kept_refund.json()["amount"]["refund"], 100);

    // The unpaid order is still payable by its prepay_id, and the user can still log in.
    assert_eq!(second.pay(&unpaid, &openid).await.0, 200);
    // What is left to refund is remembered.
    let too_much = json!({"out_trade_no": "order-keep-1", "out_refund_no": "R-keep-2",
                          "amount": {"refund": 401, "total": 500, "currency": "CNY"}});
    let refused = second
        .v3("POST", "/v3/refund/domestic/refunds", Some(&too_much))
        .await;
    assert_eq!(refused.status, 400);
    // New orders after the restart get numbers of their own.
    let other = second.prepay("order-keep-3", 10, &openid, NOTIFY).await;
    assert_ne!(other, unpaid);
    second.sim.shutdown().await;

    // And a third start sees the payment made during the second.
    let third = Merchant::start_with(config(&dir)).await;
    let paid = third
        .v3("GET", &query(&third, "order-keep-2"), None)
        .await
        .json();
    assert_eq!(paid["trade_state"], "SUCCESS");
    third.sim.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_users_key_survives_a_restart_and_stays_the_only_way_to_their_codes() {
    let dir = std::env::temp_dir().join(format!("wxpay-sim-restart-key-{}", rand_suffix()));
    let first = Merchant::start_with(config(&dir)).await;
    let (status, user) = first.control("POST", "/sim/users", Some(json!({}))).await;
    assert_eq!(status, 200, "{user}");
    let (_, other) = first.control("POST", "/sim/users", Some(json!({}))).await;
    first.sim.shutdown().await;
    // The key itself is not written down, only its digest.
    let journal = std::fs::read_to_string(dir.join(wxpay_sim::journal::JOURNAL_FILE)).unwrap();
    assert!(!journal.contains(user["user_key"].as_str().unwrap()));

    let second = Merchant::start_with(config(&dir)).await;
    let path = format!("/sim/users/{}/code", user["openid"].as_str().unwrap());
    let own = user["user_key"].as_str().unwrap();
    let (status, v) = second
        .control_with("POST", &path, None, &[("X-Sim-User-Key", own)])
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["openid"], user["openid"]);
    let theirs = other["user_key"].as_str().unwrap();
    let (status, v) = second
        .control_with("POST", &path, None, &[("X-Sim-User-Key", theirs)])
        .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(second.control("POST", &path, None).await.0, 403);
    second.sim.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    )
}
