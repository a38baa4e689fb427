//! The daily bill compared row by row with the database, deliberate mismatches included.

use serde_json::{Value, json};
use wxpay_server::jobs::bills::{format_date, today_cst};
use wxpay_server::store::{ApiVersion, Backend, EventKind, NewOrder, PaymentConfirmation, now_ms};

use crate::both_backends;
use crate::helpers::TestApp;
use crate::jobs::{admin_get, admin_post, spawn_quiet};

fn items<'a>(report: &'a Value, kind: &str, result: &str) -> Vec<&'a Value> {
    report["report"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == kind && i["result"] == result)
        .collect()
}

/// A payment this database has and WeChat never saw.
async fn local_payment(app: &TestApp) -> String {
    let store = &app.state.store;
    let order = store
        .insert_order(&NewOrder {
            out_trade_no: "LOCALPAID0001".into(),
            openid: "o-local".into(),
            appid: app.state.registry.default_app().appid.clone(),
            mchid: app.state.registry.default_app().mchid.clone(),
            sub_mchid: None,
            api_version: ApiVersion::V3,
            source: "admin",
            description: "local".into(),
            items: vec![],
            amount_fen: 777,
            client_ip: "127.0.0.1".into(),
            expires_at: now_ms() + 600_000,
        })
        .await
        .unwrap();
    store
        .mark_paid(&PaymentConfirmation {
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: "4200000000000000000000000777".into(),
            amount_fen: 777,
            payer_openid: None,
            paid_at: now_ms(),
            dedupe_key: "test:local".into(),
            event: EventKind::Notification,
            detail: json!({}),
        })
        .await
        .unwrap();
    order.out_trade_no
}

async fn reconcile(backend: Backend, version: &str) {
    let app = spawn_quiet(backend, version, |_| {}).await;
    let (_, _, refunded) = app.paid_order().await;
    let (_, _, tampered) = app.paid_order().await;
    let r = admin_post(
        &app,
        &format!("/admin/orders/{refunded}/refunds"),
        &json!({"amount_fen": 1600}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let done = crate::refunds::settled(&app, r.body["out_refund_no"].as_str().unwrap()).await;
    assert_eq!(done.body["status"], "SUCCESS");
    let local = local_payment(&app).await;
    // A deliberate mismatch: the amount recorded here is not what WeChat took.
    sqlx::query("UPDATE orders SET amount_fen = amount_fen + 1 WHERE out_trade_no = $1")
        .bind(&tampered)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let today = format_date(today_cst());

    let early = admin_get(&app, &format!("/admin/reconciliation/{today}")).await;
    assert_eq!(
        (early.status, early.body["code"].as_str()),
        (409, Some("bill_not_ready")),
        "{:?}",
        early.body
    );
    // Two days later at WeChat, today's bill exists (it appears at 10:00 the next day).
    let advanced = app
        .post_json(
            "/sim/clock/advance",
            Some(&app.admin()),
            &json!({"seconds": 172_800}),
        )
        .await;
    assert_eq!(advanced.status, 200);

    let report = admin_get(&app, &format!("/admin/reconciliation/{today}")).await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    let b = &report.body;
    assert_eq!(b["bill_date"], today.as_str());
    assert_eq!(b["status"], "complete");
    assert_eq!(b["bill_rows"], 3, "two payments and a refund");
    let matched_payments = items(b, "payment", "matched");
    assert_eq!(matched_payments.len(), 1);
    assert_eq!(matched_payments[0]["out_trade_no"], refunded.as_str());
    let amount = items(b, "payment", "amount_mismatch");
    assert_eq!(amount.len(), 1);
    assert_eq!(amount[0]["out_trade_no"], tampered.as_str());
    assert_eq!(
        amount[0]["bill_amount_fen"].as_u64().unwrap() + 1,
        amount[0]["db_amount_fen"].as_u64().unwrap()
    );
    let missing = items(b, "payment", "missing_in_bill");
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0]["out_trade_no"], local.as_str());
    let refunds = items(b, "refund", "matched");
    assert_eq!(refunds.len(), 1, "{b}");
    assert_eq!(refunds[0]["bill_amount_fen"], 1600);
    assert_eq!(b["matched"], 2);
    assert_eq!(b["mismatched"], 2);

    // Stored: asked again, the same report; refreshed, made again.
    let again = admin_get(&app, &format!("/admin/reconciliation/{today}")).await;
    assert_eq!(again.body["updated_at"], b["updated_at"]);
    let refreshed = admin_get(&app, &format!("/admin/reconciliation/{today}?refresh=true")).await;
    assert_eq!(refreshed.body["mismatched"], 2);

    let quiet_day = format_date(today_cst().previous_day().unwrap().previous_day().unwrap());
    let none = admin_get(&app, &format!("/admin/reconciliation/{quiet_day}")).await;
    assert_eq!(
        (none.status, none.body["status"].as_str()),
        (200, Some("no_bill")),
        "{:?}",
        none.body
    );
    for bad in ["2024-13-01", "20240101", "yesterday"] {
        assert_eq!(
            admin_get(&app, &format!("/admin/reconciliation/{bad}"))
                .await
                .status,
            400,
            "{bad}"
        );
    }
}

async fn a_v3_bill_is_compared_row_by_row(backend: Backend) {
    reconcile(backend, "v3").await;
}

async fn a_v2_bill_is_compared_row_by_row(backend: Backend) {
    reconcile(backend, "v2").await;
}

/// Reports stored before they belonged to a merchant (migration 0003 gives them `mchid` '')
/// were the first merchant's: a server starting on that database adopts them.
async fn reports_made_before_merchants_are_the_first_merchants(backend: Backend) {
    let app = crate::helpers::spawn_app(backend, "v3").await;
    sqlx::query(
        "INSERT INTO bill_reconciliations (bill_date, api_version, status, bill_rows, matched, \
         mismatched, report, created_at, updated_at, mchid) \
         VALUES ('2020-01-02', 'v3', 'no_bill', 0, 0, 0, '{}', 1, 1, '')",
    )
    .execute(app.state.store.pool())
    .await
    .unwrap();
    let restarted = crate::helpers::spawn_instance(&app, None, |_| {}).await;
    let mchid = restarted.state.registry.default_app().mchid.clone();
    let stored = admin_get(&restarted, "/admin/reconciliation/2020-01-02").await;
    assert_eq!(stored.status, 200, "{:?}", stored.body);
    assert_eq!(stored.body["mchid"], json!(mchid));
    assert_eq!(
        stored.body["status"], "no_bill",
        "the stored report, not a new one"
    );
    assert_eq!(
        restarted
            .count(
                "SELECT COUNT(*) FROM bill_reconciliations WHERE mchid = $1 AND bill_date = '2020-01-02'",
                &mchid
            )
            .await,
        1
    );
    assert_eq!(
        restarted
            .count(
                "SELECT COUNT(*) FROM bill_reconciliations WHERE mchid = $1",
                ""
            )
            .await,
        0,
        "none is left without its merchant"
    );
}

both_backends!(
    a_v3_bill_is_compared_row_by_row,
    a_v2_bill_is_compared_row_by_row,
    reports_made_before_merchants_are_the_first_merchants,
);
