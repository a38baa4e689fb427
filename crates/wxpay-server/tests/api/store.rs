//! The store's own connection handling: write transactions that are dropped, cancelled or fail
//! leave nothing behind and do not keep the write lock; remembered sessions still expire.

use std::time::Duration;

use secrecy::SecretString;
use sqlx::Executor as _;
use wxpay_server::core::orders::new_out_trade_no;
use wxpay_server::store::{
    ApiVersion, Backend, EventKind, NewOrder, NewRefund, NewSession, Order, OrderStatus,
    PaymentConfirmation, RefundCreation, RefundResult, RefundStatus, Store, StoreOptions,
    Transition, now_ms,
};

use crate::both_backends;
use crate::helpers::{TestDatabase, random_name};

async fn store(db: &TestDatabase) -> Store {
    Store::connect(&db.url, &StoreOptions::default())
        .await
        .expect("the store connects")
}

async fn insert_user(conn: &mut sqlx::AnyConnection, openid: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO users (openid, appid, created_at, last_login_at) VALUES ($1, 'wxapp', 1, 1)",
    )
    .bind(openid)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

async fn users_named(store: &Store, openid: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE openid = $1")
        .bind(openid)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A write on a connection of its own that gives up at once if another one holds SQLite's
/// write lock (PostgreSQL has row locks only, which these writes do not share).
async fn write_elsewhere_at_once(store: &Store, openid: &str) {
    let mut conn = store.pool().acquire().await.unwrap();
    if store.backend() == Backend::Sqlite {
        conn.execute("PRAGMA busy_timeout = 0").await.unwrap();
    }
    insert_user(&mut conn, openid)
        .await
        .expect("no write lock is left behind");
    if store.backend() == Backend::Sqlite {
        conn.execute("PRAGMA busy_timeout = 5000").await.unwrap();
    }
}

/// The next write transaction starts (the writer's turn came back) and commits.
async fn next_write_commits(store: &Store, openid: &str) {
    let mut tx = tokio::time::timeout(Duration::from_secs(5), store.begin_write())
        .await
        .expect("the writer's turn is free again")
        .unwrap();
    assert_eq!(insert_user(&mut tx, openid).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(users_named(store, openid).await, 1);
}

async fn dropped_write_transactions_roll_back(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;

    // Dropped without a commit (an early `?`).
    let dropped = random_name();
    {
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(insert_user(&mut tx, &dropped).await.unwrap(), 1);
    }
    next_write_commits(&store, &random_name()).await;
    write_elsewhere_at_once(&store, &random_name()).await;
    assert_eq!(users_named(&store, &dropped).await, 0);

    // Cancelled while it waits (a request whose client went away).
    let cancelled = random_name();
    let outcome = tokio::time::timeout(Duration::from_millis(50), async {
        let mut tx = store.begin_write().await.unwrap();
        insert_user(&mut tx, &cancelled).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert!(outcome.is_err(), "the future was cut off");
    next_write_commits(&store, &random_name()).await;
    write_elsewhere_at_once(&store, &random_name()).await;
    assert_eq!(users_named(&store, &cancelled).await, 0);

    // A statement fails inside: nothing of the transaction is kept.
    let first = random_name();
    let mut tx = store.begin_write().await.unwrap();
    insert_user(&mut tx, &first).await.unwrap();
    let duplicate = insert_user(&mut tx, &first).await;
    assert!(duplicate.is_err(), "the primary key refuses a second row");
    drop(tx);
    next_write_commits(&store, &random_name()).await;
    assert_eq!(users_named(&store, &first).await, 0);

    // An explicit rollback.
    let rolled = random_name();
    let mut tx = store.begin_write().await.unwrap();
    insert_user(&mut tx, &rolled).await.unwrap();
    tx.rollback().await.unwrap();
    write_elsewhere_at_once(&store, &random_name()).await;
    assert_eq!(users_named(&store, &rolled).await, 0);
    store.close().await;
}

async fn concurrent_write_transactions_all_commit(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let names: Vec<String> = (0..40).map(|_| random_name()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for name in names.clone() {
        let store = store.clone();
        tasks.spawn(async move {
            let mut tx = store.begin_write().await.unwrap();
            insert_user(&mut tx, &name).await.unwrap();
            // Reads of the same transaction see its own write.
            let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE openid = $1")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(seen, 1);
            tx.commit().await.unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for name in &names {
        assert_eq!(users_named(&store, name).await, 1);
    }
    // Readers see committed rows.
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut *store.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(total, 40);
    store.close().await;
}

async fn sessions_are_remembered_until_they_expire(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let key = SecretString::from("c2Vzc2lvbi1rZXk=");
    let now = now_ms();
    for (hash, expires_at) in [("live", now + 60_000), ("over", now - 1)] {
        store
            .create_session(&NewSession {
                token_hash: hash,
                openid: "o-remembered",
                appid: "wxapp",
                unionid: None,
                session_key: &key,
                expires_at,
            })
            .await
            .unwrap();
    }
    let live = store.session_user("live").await.unwrap().expect("live");
    assert_eq!(live.openid, "o-remembered");
    assert_eq!(live.expires_at, now + 60_000);
    assert_eq!(store.session_user("over").await.unwrap(), None);
    assert_eq!(store.session_user("unknown").await.unwrap(), None);

    // Another instance on the same database finds the session in the database.
    let other = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        other.session_user("live").await.unwrap(),
        Some(live.clone())
    );
    assert_eq!(other.session_user("over").await.unwrap(), None);
    other.close().await;
    store.close().await;
}

async fn new_order(store: &Store, amount_fen: u64) -> String {
    let no = new_out_trade_no();
    store
        .insert_order(&NewOrder {
            out_trade_no: no.clone(),
            openid: "o-buyer".into(),
            appid: "wxapp".into(),
            mchid: "1900000001".into(),
            sub_mchid: None,
            api_version: ApiVersion::V3,
            source: "api",
            description: "tea".into(),
            items: Vec::new(),
            amount_fen,
            client_ip: "127.0.0.1".into(),
            expires_at: now_ms() + 3_600_000,
        })
        .await
        .unwrap();
    no
}

fn payment(no: &str, amount_fen: u64, dedupe: &str) -> PaymentConfirmation {
    PaymentConfirmation {
        out_trade_no: no.to_owned(),
        transaction_id: format!("42000{no}"),
        amount_fen,
        payer_openid: Some("o-buyer".into()),
        paid_at: now_ms(),
        dedupe_key: dedupe.to_owned(),
        event: EventKind::Notification,
        detail: serde_json::json!({ "via": "test" }),
    }
}

/// Payments arriving together (on SQLite they share one transaction): each order is paid once,
/// repeats change nothing, a wrong amount is refused, and a payment that fails does not fail
/// the others.
async fn payments_arriving_together_are_each_applied_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let mut orders = Vec::new();
    for _ in 0..30 {
        orders.push(new_order(&store, 100).await);
    }
    // An order whose stored lines cannot be read back: reading it fails.
    let broken = new_order(&store, 100).await;
    sqlx::query("UPDATE orders SET items = 'not json' WHERE out_trade_no = $1")
        .bind(&broken)
        .execute(store.pool())
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    let mut submit = |p: PaymentConfirmation, label: &'static str| {
        let store = store.clone();
        tasks.spawn(async move { (label, p.out_trade_no.clone(), store.mark_paid(&p).await) });
    };
    for no in &orders {
        submit(payment(no, 100, &format!("v3:{no}")), "first");
        submit(payment(no, 100, &format!("v3:{no}")), "repeat");
        submit(payment(no, 99, &format!("v3:other-{no}")), "wrong amount");
    }
    submit(payment(&broken, 100, "v3:broken"), "broken");
    submit(payment("WXNOSUCHORDER", 100, "v3:none"), "unknown");

    let mut applied = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (label, no, result) = done.unwrap();
        match (label, result) {
            ("broken", result) => assert!(result.is_err(), "{result:?}"),
            ("unknown", result) => assert_eq!(result.unwrap(), Transition::NotFound),
            ("wrong amount", Ok(Transition::Refused(o) | Transition::Unchanged(o))) => {
                // Refused while unpaid; once paid, a paid order is reported as it is.
                assert_eq!(o.amount_fen, 100);
            }
            (_, Ok(Transition::Applied(o))) => {
                assert_eq!(o.status, OrderStatus::Success);
                *applied.entry(no).or_insert(0) += 1;
            }
            (_, Ok(Transition::Unchanged(o))) => assert_eq!(o.status, OrderStatus::Success),
            (label, other) => panic!("{label} {no}: {other:?}"),
        }
    }
    assert_eq!(applied.len(), orders.len());
    assert!(applied.values().all(|n| *n == 1), "{applied:?}");
    let count = |sql: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM orders WHERE status = 'SUCCESS'").await,
        30
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM processed_notifications").await,
        30
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM order_events WHERE kind = 'notification'").await,
        30
    );
    assert_eq!(count("SELECT COUNT(*) FROM outbox").await, 30);
    store.close().await;
}

async fn events_of(store: &Store, no: &str, kind: &str) -> usize {
    store
        .events(no)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// Orders and prepays (one command each on SQLite): the event comes with the change, a refused
/// change writes nothing, a failing one leaves nothing and frees the writer.
async fn order_writes_come_with_their_events(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let no = new_order(&store, 100).await;
    assert_eq!(events_of(&store, &no, "created").await, 1);

    let stored = store.store_prepay(&no, "wx-prepay-1", false).await.unwrap();
    let Transition::Applied(order) = stored else {
        panic!("{stored:?}")
    };
    assert_eq!(order.prepay_id.as_deref(), Some("wx-prepay-1"));
    assert_eq!(order.version, 1);
    assert_eq!(events_of(&store, &no, "prepay").await, 1);

    assert_eq!(
        store
            .store_prepay("WXNOSUCHORDER", "wx-prepay-2", false)
            .await
            .unwrap(),
        Transition::NotFound
    );
    let paid = store
        .mark_paid(&payment(&no, 100, "v3:prepay-test"))
        .await
        .unwrap();
    assert!(matches!(paid, Transition::Applied(_)), "{paid:?}");
    let refused = store.store_prepay(&no, "wx-prepay-3", true).await.unwrap();
    let Transition::Refused(order) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(order.prepay_id.as_deref(), Some("wx-prepay-1"));
    assert_eq!(events_of(&store, &no, "prepay").await, 1);

    // The same order number again: refused by the primary key, and nothing is added.
    let duplicate = store
        .insert_order(&NewOrder {
            out_trade_no: no.clone(),
            openid: "o-other".into(),
            appid: "wxapp".into(),
            mchid: "1900000001".into(),
            sub_mchid: None,
            api_version: ApiVersion::V3,
            source: "api",
            description: "tea".into(),
            items: Vec::new(),
            amount_fen: 5,
            client_ip: "127.0.0.1".into(),
            expires_at: now_ms() + 3_600_000,
        })
        .await;
    assert!(duplicate.is_err());
    assert_eq!(events_of(&store, &no, "created").await, 1);
    write_elsewhere_at_once(&store, &random_name()).await;
    next_write_commits(&store, &random_name()).await;
    let order = store.order(&no).await.unwrap().unwrap();
    assert_eq!((order.openid.as_str(), order.amount_fen), ("o-buyer", 100));
    store.close().await;
}

/// A refund's result that arrives before WeChat's answer to the submission (the notification
/// overtook it, or the answer was lost) also records that WeChat has the refund.
async fn a_refund_result_before_the_answer_records_the_submission(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let no = new_order(&store, 1000).await;
    let paid = store
        .mark_paid(&payment(&no, 1000, "v3:refund-test"))
        .await
        .unwrap();
    assert!(matches!(paid, Transition::Applied(_)), "{paid:?}");
    let created = store
        .create_refund(&NewRefund {
            out_trade_no: no.clone(),
            out_refund_no: format!("R{no}"),
            amount_fen: 300,
            reason: None,
            lease_owner: "test".into(),
            lease_ms: 60_000,
        })
        .await
        .unwrap();
    let RefundCreation::Created(refund) = created else {
        panic!("{created:?}")
    };
    assert_eq!(refund.submitted_at, None);
    store
        .apply_refund_result(&RefundResult {
            out_refund_no: refund.out_refund_no.clone(),
            refund_id: "50300000001".into(),
            status: RefundStatus::Success,
            success_at: Some(now_ms()),
            dedupe_key: "v3:refund-result".into(),
            detail: serde_json::json!({ "via": "notification" }),
        })
        .await
        .unwrap();
    let after = store.refund(&refund.out_refund_no).await.unwrap().unwrap();
    assert_eq!(after.status, RefundStatus::Success);
    assert_eq!(after.refund_id.as_deref(), Some("50300000001"));
    assert!(after.submitted_at.is_some(), "{after:?}");
    // WeChat's late answer changes nothing more.
    let late = store
        .refund_accepted(&refund.out_refund_no, Some("50300000001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(late.submitted_at, after.submitted_at);
    assert_eq!(late.version, after.version);
    store.close().await;
}

/// The order's webhook payload, as stored in the outbox.
async fn paid_webhook(store: &Store, no: &str) -> serde_json::Value {
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE out_trade_no = $1 AND event_type = 'order.paid'",
    )
    .bind(no)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(payloads.len(), 1, "one order.paid webhook for {no}");
    serde_json::from_str(&payloads[0]).unwrap()
}

/// The details of the order's one payment event.
async fn payment_event(store: &Store, no: &str) -> serde_json::Value {
    let events: Vec<_> = store
        .events(no)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "notification")
        .collect();
    assert_eq!(events.len(), 1, "one payment event for {no}: {events:?}");
    events[0].detail.clone()
}

/// `mark_paid_as_read` of a payment of `amount_fen` with `dedupe`.
async fn pay_as_read(
    store: &Store,
    no: &str,
    amount_fen: u64,
    dedupe: &str,
    read: &Order,
) -> Transition {
    store
        .mark_paid_as_read(&payment(no, amount_fen, dedupe), read)
        .await
        .unwrap()
}

/// A payment of an order the caller has just read (one command when the order is as read):
/// the webhook carries the order exactly as stored, whether the read was current or stale;
/// payments of one order racing with the same read apply once and leave one dedupe row.
async fn payments_of_an_order_as_read_apply_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;

    // As read: applied, and the webhook is the stored order.
    let fresh = new_order(&store, 100).await;
    let read = store.order(&fresh).await.unwrap().unwrap();
    let Transition::Applied(paid) = pay_as_read(&store, &fresh, 100, "v3:fresh", &read).await
    else {
        panic!("a payment of a current read applies");
    };
    let stored = store.order(&fresh).await.unwrap().unwrap();
    assert_eq!(paid, stored);
    assert_eq!(stored.version, read.version + 1);
    assert_eq!(
        stored.transaction_id.as_deref(),
        Some("42000".to_owned() + &fresh).as_deref()
    );
    assert_eq!(
        paid_webhook(&store, &fresh).await,
        serde_json::to_value(wxpay_server::store::OrderPayload::from(&stored)).unwrap()
    );
    let detail = payment_event(&store, &fresh).await;
    assert_eq!(detail["previous_status"], "NOTPAY");
    assert_eq!(detail["via"], "test");
    // The same report again, with the old read: nothing more.
    assert!(matches!(
        pay_as_read(&store, &fresh, 100, "v3:fresh", &read).await,
        Transition::Unchanged(_)
    ));

    // A stale read (the prepay was stored since): applied from the order as it is.
    let stale = new_order(&store, 100).await;
    let read = store.order(&stale).await.unwrap().unwrap();
    store
        .store_prepay(&stale, "wx_prepay_1", false)
        .await
        .unwrap();
    assert!(matches!(
        pay_as_read(&store, &stale, 100, "v3:stale", &read).await,
        Transition::Applied(_)
    ));
    let stored = store.order(&stale).await.unwrap().unwrap();
    assert_eq!(stored.version, read.version + 2);
    assert_eq!(
        paid_webhook(&store, &stale).await,
        serde_json::to_value(wxpay_server::store::OrderPayload::from(&stored)).unwrap()
    );

    // Closed since it was read: paid (WeChat's word wins), and the event says what it was.
    let closed = new_order(&store, 100).await;
    let read = store.order(&closed).await.unwrap().unwrap();
    store
        .mark_closed(&closed, &serde_json::json!({ "via": "test" }))
        .await
        .unwrap();
    assert!(matches!(
        pay_as_read(&store, &closed, 100, "v3:closed", &read).await,
        Transition::Applied(_)
    ));
    let detail = payment_event(&store, &closed).await;
    assert_eq!(detail["previous_status"], "CLOSED");
    assert!(detail["anomaly"].is_string(), "{detail}");

    // Another amount: refused, nothing written.
    let other = new_order(&store, 100).await;
    let read = store.order(&other).await.unwrap().unwrap();
    assert!(matches!(
        pay_as_read(&store, &other, 99, "v3:other", &read).await,
        Transition::Refused(_)
    ));
    assert_eq!(store.order(&other).await.unwrap().unwrap(), read);

    // Racing reports of the same orders (a notification, its repeat, another notification and
    // a query result), all with the same read.
    let mut racing = Vec::new();
    for _ in 0..20 {
        let no = new_order(&store, 100).await;
        racing.push((no.clone(), store.order(&no).await.unwrap().unwrap()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (no, read) in &racing {
        for dedupe in ["v3:a", "v3:a", "v3:b", "query:c"] {
            let store = store.clone();
            let p = payment(no, 100, &format!("{dedupe}:{no}"));
            let read = read.clone();
            tasks.spawn(async move {
                (
                    p.out_trade_no.clone(),
                    store.mark_paid_as_read(&p, &read).await,
                )
            });
        }
    }
    let mut applied = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (no, result) = done.unwrap();
        match result.unwrap() {
            Transition::Applied(_) => *applied.entry(no).or_insert(0) += 1,
            Transition::Unchanged(o) => assert_eq!(o.status, OrderStatus::Success),
            other => panic!("{no}: {other:?}"),
        }
    }
    assert_eq!(applied.len(), racing.len());
    assert!(applied.values().all(|n| *n == 1), "{applied:?}");
    for (no, _) in &racing {
        let dedupe: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM processed_notifications WHERE out_trade_no = $1",
        )
        .bind(no)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(
            dedupe, 1,
            "one dedupe row for {no}: the report that applied"
        );
        let stored = store.order(no).await.unwrap().unwrap();
        assert_eq!(
            paid_webhook(&store, no).await,
            serde_json::to_value(wxpay_server::store::OrderPayload::from(&stored)).unwrap()
        );
        payment_event(&store, no).await;
    }
    store.close().await;
}

/// Six reads of the order at once (so several connections are taken), each must succeed.
async fn concurrent_reads(store: &Store, no: &str) {
    let reads: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            let no = no.to_owned();
            tokio::spawn(async move { store.order(&no).await })
        })
        .collect();
    for read in reads {
        let order = read.await.unwrap().expect("the read succeeds");
        assert!(order.is_some());
    }
}

/// PostgreSQL connections in steady use are lent without a ping, but one that sat idle is
/// checked first: after the server's connections are killed (a restart, a proxy's timeout),
/// the next queries get new connections instead of failing.
#[tokio::test]
async fn postgres_connections_killed_while_idle_are_replaced() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let store = store(&db).await;
    let no = new_order(&store, 100).await;
    // Several connections in the pool.
    concurrent_reads(&store, &no).await;
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Would fail with the killed connections' errors if they were lent unchecked.
    concurrent_reads(&store, &no).await;
    assert!(matches!(
        store
            .mark_paid(&payment(&no, 100, "v3:after-kill"))
            .await
            .unwrap(),
        Transition::Applied(_)
    ));
    store.close().await;
}

both_backends!(
    payments_of_an_order_as_read_apply_once,
    a_refund_result_before_the_answer_records_the_submission,
    order_writes_come_with_their_events,
    payments_arriving_together_are_each_applied_once,
    dropped_write_transactions_roll_back,
    concurrent_write_transactions_all_commit,
    sessions_are_remembered_until_they_expire,
);
