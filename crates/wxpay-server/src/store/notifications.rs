//! Applying a payment exactly once, whoever reports it: a v2 or v3 notification, or a query.

use super::orders::{EventKind, OrderRow, OrderStatus, Transition, insert_event, order_of};
use super::outbox::{NewOutboxEvent, OutboxEventType};
use super::{Backend, SharedWriter, Store, StoreError, WriteTransaction, now_ms};

use sqlx::AnyConnection;

use super::orders::Order;

pub use super::refund_state::RefundResult;

/// A payment WeChat confirmed, already checked against the order (merchant, appid, amount).
#[derive(Clone, Debug)]
pub struct PaymentConfirmation {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's transaction id.
    pub transaction_id: String,
    /// The amount WeChat reports, in fen; the update is refused unless it equals the order's.
    pub amount_fen: u64,
    /// The payer's openid, as WeChat reports it.
    pub payer_openid: Option<String>,
    /// When it was paid (Unix milliseconds).
    pub paid_at: i64,
    /// Unique per notification (`v3:EVENT_ID`, `v2:pay:TRANSACTION_ID`) or per query result
    /// (`query:TRANSACTION_ID`): a repeat of the same report changes nothing.
    pub dedupe_key: String,
    /// The timeline entry: [`EventKind::Notification`] or [`EventKind::Query`].
    pub event: EventKind,
    /// Its details (how it arrived, what it said).
    pub detail: serde_json::Value,
}

/// What [`apply_payment`] found and did inside a transaction.
enum Paid {
    /// Written: commit. The order after the change and its status before.
    Applied(Order, OrderStatus),
    /// Nothing written (already paid, a repeat, another amount, no such order).
    Nothing(Transition),
}

/// A payment waiting for the SQLite group commit, with where to send its outcome.
pub(super) struct PaymentJob {
    payment: PaymentConfirmation,
    /// The order as the caller read it, for [`pay_as_read`].
    read: Option<Order>,
    now: i64,
    reply: tokio::sync::oneshot::Sender<Result<Transition, StoreError>>,
}

/// Most payments committed together.
const GROUP_MAX: usize = 64;

/// The checks and writes of [`Store::mark_paid`], on a connection inside a transaction. It
/// writes nothing unless it returns `Paid::Applied` (an error may leave writes: the caller rolls
/// back), so that several can share a transaction.
async fn apply_payment(
    conn: &mut AnyConnection,
    backend: Backend,
    p: &PaymentConfirmation,
    now: i64,
) -> Result<Paid, StoreError> {
    let dialect = backend.dialect();
    let select = dialect.select_order_to_pay;
    let row: Option<OrderRow> = sqlx::query_as(select)
        .bind(&p.out_trade_no)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(current) = order_of(row)? else {
        return Ok(Paid::Nothing(Transition::NotFound));
    };
    if current.status.is_paid() {
        return Ok(Paid::Nothing(Transition::Unchanged(current)));
    }
    if current.amount_fen != p.amount_fen {
        return Ok(Paid::Nothing(Transition::Refused(current)));
    }
    // The order is payable and locked (SQLite's write lock, PostgreSQL's row lock), so the
    // UPDATE below matches when the dedupe row is new; a repeat writes nothing.
    let paid = |sql| {
        sqlx::query_as::<_, OrderRow>(sql)
            .bind(&p.out_trade_no)
            .bind(&p.transaction_id)
            .bind(p.payer_openid.as_deref())
            .bind(p.paid_at)
            .bind(now)
    };
    let amount_fen = super::orders::fen_to_db(p.amount_fen)?;
    let row: Option<OrderRow> = if backend == Backend::Sqlite {
        // One command (one hand-off to the connection's thread): the dedupe row, then the
        // update only if that row was new (`changes()` counts the rows of the INSERT).
        let rows = paid(dialect.mark_paid)
            .bind(amount_fen)
            .bind(&p.dedupe_key)
            .fetch_all(&mut *conn)
            .await?;
        if rows.is_empty() {
            // The dedupe row existed: a repeat (the lock rules out any other reason).
            return Ok(Paid::Nothing(Transition::Unchanged(current)));
        }
        rows.into_iter().next()
    } else {
        let fresh = sqlx::query(
            "INSERT INTO processed_notifications (dedupe_key, kind, out_trade_no, received_at) \
             VALUES ($1, 'payment', $2, $3) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&p.dedupe_key)
        .bind(&p.out_trade_no)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(Paid::Nothing(Transition::Unchanged(current)));
        }
        paid(dialect.mark_paid)
            .bind(amount_fen)
            .fetch_optional(&mut *conn)
            .await?
    };
    let Some(order) = order_of(row)? else {
        // The lock makes this unreachable; failing rolls the dedupe row back.
        return Err(StoreError::Corrupt(format!(
            "order {} changed while it was locked",
            p.out_trade_no
        )));
    };
    let detail = paid_detail(p, current.status);
    let webhook = NewOutboxEvent::order(OutboxEventType::OrderPaid, &order)?;
    if let Some(script) = dialect.paid_event_and_webhook {
        // One command: what `insert_event` and `NewOutboxEvent::insert` write.
        sqlx::query(script)
            .bind(&p.out_trade_no)
            .bind(p.event.as_str())
            .bind(detail.to_string())
            .bind(now)
            .bind(super::outbox::new_event_id())
            .bind(webhook.event_type.as_str())
            .bind(&webhook.dedupe_key)
            .bind(&webhook.payload)
            .execute(&mut *conn)
            .await?;
    } else {
        insert_event(&mut *conn, &p.out_trade_no, p.event, &detail, now).await?;
        webhook.insert(&mut *conn, now).await?;
    }
    Ok(Paid::Applied(order, current.status))
}

/// The timeline entry's details of a payment applied to an order that was `previous`.
fn paid_detail(p: &PaymentConfirmation, previous: OrderStatus) -> serde_json::Value {
    let mut detail = p.detail.clone();
    if let Some(map) = detail.as_object_mut() {
        map.insert("result".into(), "paid".into());
        map.insert("transaction_id".into(), p.transaction_id.clone().into());
        map.insert("previous_status".into(), previous.as_str().into());
        if previous == OrderStatus::Closed {
            map.insert(
                "anomaly".into(),
                "paid at WeChat after it was closed here".into(),
            );
        }
    }
    detail
}

/// [`apply_payment`] in one command, for an order the caller has just read: every write is
/// guarded by the order's `version` as read, so when it matches, the order after the change is
/// known beforehand (every change of an order's columns but `last_queried_at`, which webhooks
/// do not carry, raises its version), and the dedupe row, the update, the event and the webhook
/// are written by one statement. `None` when nothing was written: the order changed since it
/// was read, or the dedupe row exists; [`apply_payment`] then decides, under the lock.
///
/// SQLite: a script inside the caller's transaction, each statement guarded by `changes()` of
/// the one before. PostgreSQL: one statement (its own transaction) of data-modifying WITH
/// clauses; `FOR UPDATE` makes a concurrent payment of the same order wait, then see the new
/// version and write nothing, not even its dedupe row.
async fn pay_as_read(
    conn: &mut AnyConnection,
    backend: Backend,
    p: &PaymentConfirmation,
    read: &Order,
    now: i64,
) -> Result<Option<Paid>, StoreError> {
    let payable = matches!(
        read.status,
        OrderStatus::NotPay | OrderStatus::PayError | OrderStatus::Closed
    );
    if !payable || read.amount_fen != p.amount_fen {
        return Ok(None);
    }
    let mut paid = read.clone();
    paid.status = OrderStatus::Success;
    paid.transaction_id = Some(p.transaction_id.clone());
    paid.payer_openid.clone_from(&p.payer_openid);
    paid.paid_at = Some(p.paid_at);
    if paid.shipping_state.is_none() {
        paid.shipping_state = Some(super::ShippingState::AwaitingShipment);
    }
    paid.updated_at = now;
    paid.version = read.version + 1;
    let detail = paid_detail(p, read.status).to_string();
    let webhook = NewOutboxEvent::order(OutboxEventType::OrderPaid, &paid)?;
    let rows: Vec<OrderRow> = sqlx::query_as(backend.dialect().pay_as_read)
        .bind(&p.out_trade_no)
        .bind(&p.transaction_id)
        .bind(p.payer_openid.as_deref())
        .bind(p.paid_at)
        .bind(now)
        .bind(super::orders::fen_to_db(p.amount_fen)?)
        .bind(&p.dedupe_key)
        .bind(read.version)
        .bind(p.event.as_str())
        .bind(detail)
        .bind(super::outbox::new_event_id())
        .bind(webhook.event_type.as_str())
        .bind(&webhook.dedupe_key)
        .bind(&webhook.payload)
        .fetch_all(&mut *conn)
        .await?;
    let Some(order) = order_of(rows.into_iter().next())? else {
        return Ok(None);
    };
    if order != paid {
        // The webhook carries `paid`: the statement's guard makes this unreachable, and failing
        // rolls it back (SQLite) or reports the corruption (PostgreSQL).
        return Err(StoreError::Corrupt(format!(
            "order {} is not as predicted after its payment",
            p.out_trade_no
        )));
    }
    Ok(Some(Paid::Applied(order, read.status)))
}

/// What the caller of `mark_paid` learns, and what is logged once the payment is committed.
fn settled(outcome: Paid, p: &PaymentConfirmation) -> Transition {
    match outcome {
        Paid::Applied(order, previous) => {
            if previous == OrderStatus::Closed {
                tracing::error!(out_trade_no = %order.out_trade_no, "order paid at WeChat after it was closed here");
            }
            crate::metrics::order_paid(p.event.as_str());
            Transition::Applied(order)
        }
        Paid::Nothing(transition) => transition,
    }
}

/// One payment inside a transaction: [`pay_as_read`] when the caller read the order, and
/// [`apply_payment`] when that wrote nothing (or there was no read).
async fn pay(
    conn: &mut AnyConnection,
    backend: Backend,
    p: &PaymentConfirmation,
    read: Option<&Order>,
    now: i64,
) -> Result<Paid, StoreError> {
    if let Some(read) = read
        && let Some(paid) = pay_as_read(conn, backend, p, read, now).await?
    {
        return Ok(paid);
    }
    apply_payment(conn, backend, p, now).await
}

/// One payment in a transaction of its own.
async fn pay_alone(
    mut tx: WriteTransaction,
    backend: Backend,
    p: &PaymentConfirmation,
    read: Option<&Order>,
    now: i64,
) -> Result<Transition, StoreError> {
    let outcome = pay(&mut tx, backend, p, read, now).await?;
    match outcome {
        Paid::Applied(..) => tx.commit().await?,
        Paid::Nothing(_) => tx.rollback().await?,
    }
    Ok(settled(outcome, p))
}

/// The payments of a batch applied one after another in one SQLite transaction, committed once.
/// On any error the transaction is rolled back (dropped) and nothing of the batch is written.
async fn commit_together(
    writer: &SharedWriter,
    batch: &[PaymentJob],
) -> Result<Vec<Paid>, StoreError> {
    let mut tx = WriteTransaction::begin_sqlite(writer.clone()).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(
            pay(
                &mut tx,
                Backend::Sqlite,
                &job.payment,
                job.read.as_ref(),
                job.now,
            )
            .await?,
        );
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// SQLite's group commit of payments: takes the payments waiting, applies them one after
/// another in one transaction, commits once, then answers each. A notification is still
/// acknowledged only after its payment is committed; the batch shares `BEGIN`, `COMMIT` and the
/// pages written to the WAL. If anything fails, the batch is rolled back and each payment is
/// applied alone, so one bad payment cannot fail the others. (PostgreSQL does not use it: it
/// already commits concurrent transactions together, and one task would serialize them.)
pub(super) async fn group_commit(
    writer: SharedWriter,
    mut jobs: tokio::sync::mpsc::Receiver<PaymentJob>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit_together(&writer, &batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(settled(outcome, &job.payment)));
                }
            }
            Err(e) => {
                // Each payment is replayed alone and answers with its own outcome or error.
                tracing::warn!(error = %e, payments = batch.len(), "a group commit of payments failed; applying them one by one");
                for job in batch {
                    let result = match WriteTransaction::begin_sqlite(writer.clone()).await {
                        Ok(tx) => {
                            pay_alone(
                                tx,
                                Backend::Sqlite,
                                &job.payment,
                                job.read.as_ref(),
                                job.now,
                            )
                            .await
                        }
                        Err(e) => Err(e.into()),
                    };
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

impl Store {
    /// Marks an order paid, once: from `NOTPAY`, `PAYERROR`, or `CLOSED` (WeChat's word wins: money
    /// taken for an order closed here is recorded, and the event says so). The dedupe row, the
    /// state change, the event and the `order.paid` webhook are one transaction, committed
    /// before this returns. On SQLite, payments arriving together share one transaction (see
    /// [`group_commit`]).
    ///
    /// Returns `Unchanged` for a repeated report or an order already paid, `Refused` when the
    /// amount differs from the order's, `NotFound` for an unknown order.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_paid(&self, p: &PaymentConfirmation) -> Result<Transition, StoreError> {
        self.mark_paid_as(p, None).await
    }

    /// [`mark_paid`](Self::mark_paid) for an order the caller has just read (and checked):
    /// when the order has not changed since, the payment is one command (see `pay_as_read`);
    /// otherwise it is as `mark_paid`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_paid_as_read(
        &self,
        p: &PaymentConfirmation,
        read: &Order,
    ) -> Result<Transition, StoreError> {
        if read.out_trade_no != p.out_trade_no {
            return self.mark_paid_as(p, None).await;
        }
        self.mark_paid_as(p, Some(read)).await
    }

    async fn mark_paid_as(
        &self,
        p: &PaymentConfirmation,
        read: Option<&Order>,
    ) -> Result<Transition, StoreError> {
        let transition = self.commit_payment(p, read).await?;
        if matches!(transition, Transition::Applied(_)) {
            // Committed, with its `order.paid` row in the outbox.
            self.notices.outbox_written();
        }
        Ok(transition)
    }

    async fn commit_payment(
        &self,
        p: &PaymentConfirmation,
        read: Option<&Order>,
    ) -> Result<Transition, StoreError> {
        let now = now_ms();
        let Some(payments) = &self.payments else {
            if let Some(read) = read {
                // PostgreSQL: one statement, its own transaction.
                let mut conn = self.pool.acquire().await?;
                if let Some(paid) = pay_as_read(&mut conn, self.backend, p, read, now).await? {
                    return Ok(settled(paid, p));
                }
            }
            let tx = self.begin_write().await?;
            return pay_alone(tx, self.backend, p, None, now).await;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = PaymentJob {
            payment: p.clone(),
            read: read.cloned(),
            now,
            reply,
        };
        payments
            .send(job)
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}
