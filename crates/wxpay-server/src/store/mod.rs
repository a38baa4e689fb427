//! The database: one [`Store`] over an [`AnyPool`], SQLite or PostgreSQL.
//!
//! Every statement uses `$N` placeholders, which both sqlx-sqlite and PostgreSQL understand, and
//! only portable types: `BIGINT` (`i64`) for money in fen, times in Unix milliseconds and flags,
//! `TEXT` for everything else (JSON included). Queries live in one file per table group, each an
//! `impl Store` block. The few statements that must differ are in `dialect/`: one file per
//! backend, two values of one struct, so that neither backend can lack a statement the other has.
//!
//! Rules every writer follows:
//! - a state change is atomic: guarded by the current state (`UPDATE .. WHERE status IN (..)`),
//!   with its dedupe row, its event row and its outbox row in the same transaction. That is a
//!   transaction from [`Store::begin_write`], or, for the hot paths, one command: on SQLite a
//!   script holding its own `BEGIN IMMEDIATE; ...; COMMIT` on the writer connection, on
//!   PostgreSQL one statement whose other rows are written by a data-modifying `WITH`;
//! - PostgreSQL returns `SUM` of `BIGINT` as `NUMERIC`: cast it (`CAST(SUM(x) AS BIGINT)`).
//! - statuses are written once, by `order_status_name!` / `refund_status_name!` (used by
//!   [`OrderStatus`], [`RefundStatus`] and, through `order_status_sql!`, every statement).
//!
//! A new column of `orders` touches:
//! 1. both migrations, `migrations/sqlite` and `migrations/postgres` (the schema-parity test,
//!    `tests/api/schema.rs`, fails until they agree);
//! 2. `order_columns!` and `OrderRow` in `orders.rs`, and [`Order`] with its `TryFrom<OrderRow>`
//!    (the compiler points at the conversion);
//! 3. the INSERT of `insert_order_sql!` (with [`NewOrder`]) if it is set at creation.
//!
//! It is published only if someone adds it to a view: `api::admin::OrderView` (the API's
//! `Order` schema) or `outbox::OrderPayload` (the webhooks); [`Order`] itself is not
//! serializable.

/// The stored name of an order status: the one place each is written. [`OrderStatus`] and
/// every statement use it (the migrations' CHECK lists repeat them, and the schema-parity
/// test compares those of both backends).
macro_rules! order_status_name {
    (NotPay) => {
        "NOTPAY"
    };
    (Success) => {
        "SUCCESS"
    };
    (Refund) => {
        "REFUND"
    };
    (Closed) => {
        "CLOSED"
    };
    (PayError) => {
        "PAYERROR"
    };
}

/// Order statuses as SQL literals, comma-separated: `status IN (` .. `)`, inside `concat!`.
macro_rules! order_status_sql {
    ($first:ident $(, $rest:ident)*) => {
        concat!("'", order_status_name!($first), "'" $(, ", '", order_status_name!($rest), "'")*)
    };
}

/// The stored name of a refund status (as [`order_status_name`]).
macro_rules! refund_status_name {
    (Processing) => {
        "PROCESSING"
    };
    (Success) => {
        "SUCCESS"
    };
    (Closed) => {
        "CLOSED"
    };
    (Abnormal) => {
        "ABNORMAL"
    };
}

/// Refund statuses as SQL literals (as [`order_status_sql`]).
macro_rules! refund_status_sql {
    ($first:ident $(, $rest:ident)*) => {
        concat!("'", refund_status_name!($first), "'" $(, ", '", refund_status_name!($rest), "'")*)
    };
}

mod dialect;
mod fulfilment;
mod jobs;
pub mod notices;
mod notifications;
mod orders;
mod outbox;
mod products;
mod push;
mod refund_state;
mod refunds;
mod reports;
mod sessions;
mod tenants;
mod transfers;
mod webhooks;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{
    Any, AnyConnection, AnyPool, ConnectOptions as _, Connection as _, Executor as _, Transaction,
};

pub use fulfilment::{
    Delivery, NewShipment, ShipRefusal, Shipment, ShipmentItem, ShipmentRecorded, ShippingState,
    ShippingUpload, UploadStatus,
};
pub use jobs::JobState;
pub use notices::Notices;
pub use notifications::{PaymentConfirmation, RefundResult};
pub use orders::insert_event;
pub use orders::{
    ApiVersion, EventKind, NewOrder, Order, OrderEvent, OrderItem, OrderStatus, Transition,
};
pub use outbox::{NewOutboxEvent, OrderPayload, OutboxEventType, RefundPayload, to_json};
pub use products::{NewProduct, Product};
pub use push::{Alert, PushApplied, TradeChange};
pub use refund_state::{Refund, RefundStatus, RefundTransition};
pub use refunds::{NewRefund, RefundCreation};
pub use reports::{HourlyPayments, OrderCursor, OrderPage, Reconciliation};
pub use sessions::{NewSession, SESSION_RECHECK, SessionUser};
pub use tenants::{
    MerchantKind, MerchantRecord, MiniProgramRecord, OperatorRecord, RegistrySource,
    SubMerchantRecord, next_change,
};
pub use transfers::{
    JsonText, NewTransfer, ReportInfo, Transfer, TransferApplied, TransferCreation, TransferEvent,
    TransferFilter, TransferLimits, TransferReport, state_rank,
};
pub use webhooks::{OutboxEvent, WebhookAttempt, WebhookStatus};

/// A database error. Its text never contains a bound value (sqlx does not put them in errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL scheme (use sqlite://FILE or postgres://...)")]
    UnsupportedUrl,
    /// An in-memory SQLite database: each of the store's connections would open an empty one of
    /// its own.
    #[error(
        "an in-memory SQLite database cannot be shared by the server's connections: use a file (sqlite://FILE)"
    )]
    InMemory,
    /// The database refused or failed a statement, or could not be reached.
    #[error("database: {}", describe(.0))]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("database migration: {}", describe_migration(.0))]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back (a JSON column, an unknown status).
    #[error("stored data: {0}")]
    Corrupt(String),
}

/// An error's text for people: PostgreSQL's message without the " at line N" that sqlx appends
/// (a line of PostgreSQL's own C source, meaningless to whoever reads it).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("error returned from database: {}", db.message()),
        other => other.to_string(),
    }
}

fn describe_migration(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(e) => format!("while executing migrations: {}", describe(e)),
        MigrateError::ExecuteMigration(e, version) => {
            format!("while executing migration {version}: {}", describe(e))
        }
        other => other.to_string(),
    }
}

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (one file, WAL mode).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend of a database URL.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for any other scheme, [`StoreError::InMemory`] for an
    /// in-memory SQLite database.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err(StoreError::InMemory);
            }
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// The statements that differ between the backends.
    fn dialect(self) -> &'static dialect::Dialect {
        match self {
            Backend::Sqlite => &dialect::sqlite::DIALECT,
            Backend::Postgres => &dialect::postgres::DIALECT,
        }
    }

    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most connections; `None` picks 16 for PostgreSQL. On SQLite this is the number of reader
    /// connections (default 4; they run in parallel in WAL mode), beside the one writer.
    pub max_connections: Option<u32>,
    /// How long a caller waits for a connection.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: None,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the connections the store's own queries use, outside sqlx's pool.
    sqlite: Option<Arc<SqliteConnections>>,
    /// Who is logged in: sessions never change once written, so a hit needs no query.
    sessions: Arc<sessions::SessionCache>,
    /// Outbox wakes and session revocations, in this process and to the other instances.
    notices: Notices,
    /// SQLite only: payments to commit together (see `notifications::group_commit`).
    payments: Option<tokio::sync::mpsc::Sender<notifications::PaymentJob>>,
}

/// SQLite's writer connection, taken in turns (see [`SqliteConnections`]).
type SharedWriter = Arc<tokio::sync::Mutex<WriterSlot>>;

/// A pooled PostgreSQL connection idle this long is pinged before it is lent.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// SQLite's own connections: one writer, taken in turns by write transactions, and a few
/// readers.
///
/// Why not sqlx's pool: each sqlx-sqlite connection runs on a thread of its own, so every
/// statement is a hand-off between threads, and the pool adds one more on every release (it
/// pings the connection) and two on `BEGIN` and `COMMIT` (a rendezvous). A perf profile under
/// `wxpay bench` showed 40% of the server's CPU in those thread switches. These connections are
/// returned without a ping (a SQLite connection is a file handle in this process: it cannot
/// break like a socket; a statement cut off by a cancelled request is finished by the
/// connection's thread before the next one runs) and transactions are plain `BEGIN IMMEDIATE` /
/// `COMMIT` statements.
///
/// One writer, because SQLite has one writer at a time anyway: without the turn, the others get
/// `SQLITE_BUSY` and sleep in the busy handler (1, 2, 5, ... 100 ms), which under load made the
/// p99 of every writing endpoint 80-100 ms instead of a few ms.
#[derive(Debug)]
struct SqliteConnections {
    writer: SharedWriter,
    readers: Arc<ReaderSlots>,
    /// How long a reader waits for a free connection.
    acquire_timeout: Duration,
}

#[derive(Debug)]
struct WriterSlot {
    conn: AnyConnection,
    /// A transaction may still be open on it (a `BEGIN` or `COMMIT` failed, or a dropped
    /// transaction's rollback could not run): roll back before the next `BEGIN`.
    dirty: bool,
}

#[derive(Debug)]
struct ReaderSlots {
    idle: std::sync::Mutex<Vec<AnyConnection>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// A connection for reads (and single-statement writes) from [`Store::reader`]: one of SQLite's
/// reader connections, or a PostgreSQL connection of the pool. It dereferences to the connection.
#[derive(Debug)]
pub struct ReadConnection {
    inner: ReadInner,
}

#[derive(Debug)]
enum ReadInner {
    Sqlite {
        conn: Option<AnyConnection>,
        home: Arc<ReaderSlots>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
    Pool(PoolConnection<Any>),
}

impl std::ops::Deref for ReadConnection {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.inner {
            ReadInner::Sqlite { conn, .. } => conn.as_ref().expect("held until drop"),
            ReadInner::Pool(c) => c,
        }
    }
}

impl std::ops::DerefMut for ReadConnection {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.inner {
            ReadInner::Sqlite { conn, .. } => conn.as_mut().expect("held until drop"),
            ReadInner::Pool(c) => c,
        }
    }
}

impl Drop for ReadConnection {
    fn drop(&mut self) {
        // Back to the idle list before the permit (a field, dropped after this) lets the next
        // reader in.
        if let ReadInner::Sqlite { conn, home, .. } = &mut self.inner
            && let Some(conn) = conn.take()
        {
            home.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(conn);
        }
    }
}

/// A write transaction from [`Store::begin_write`]. It dereferences to the connection, like
/// [`Transaction`]; dropped without [`commit`](Self::commit) it rolls back.
#[derive(Debug)]
pub struct WriteTransaction {
    inner: Option<WriteInner>,
}

#[derive(Debug)]
enum WriteInner {
    /// SQLite: the writer connection, held for the whole transaction.
    Sqlite(tokio::sync::OwnedMutexGuard<WriterSlot>),
    /// PostgreSQL: a transaction on a pool connection.
    Pool(Transaction<'static, Any>),
}

impl WriteTransaction {
    /// SQLite: waits for the writer's turn, then `BEGIN IMMEDIATE` on the writer connection.
    async fn begin_sqlite(writer: SharedWriter) -> Result<WriteTransaction, sqlx::Error> {
        // The turn is made a transaction before BEGIN, so that a cancelled BEGIN is rolled back
        // like any transaction.
        let mut tx = Self::script_sqlite(writer).await;
        tx.execute("BEGIN IMMEDIATE").await?;
        Ok(tx)
    }

    /// SQLite: the writer's turn for a script that holds its own transaction,
    /// `BEGIN IMMEDIATE; ...; COMMIT`, sent to the connection's thread as one command (one
    /// hand-off instead of one per statement). Run the script with `fetch_all` or `execute`
    /// (`fetch_optional` stops at the first row, before the `COMMIT`), then call
    /// [`end_script`](Self::end_script).
    async fn script_sqlite(writer: SharedWriter) -> WriteTransaction {
        // The turn is taken before anything else, so that waiting writers hold nothing.
        let mut slot = writer.lock_owned().await;
        if slot.dirty {
            // An earlier transaction may be open still; the error when none is, is expected.
            let _ = slot.conn.execute("ROLLBACK").await;
        }
        // Until the script is known to have committed.
        slot.dirty = true;
        WriteTransaction {
            inner: Some(WriteInner::Sqlite(slot)),
        }
    }

    /// Ends a script's turn: a script that succeeded has committed; one that failed part-way
    /// may have left its transaction open, which is rolled back now.
    async fn end_script(mut self, succeeded: bool) {
        if let Some(WriteInner::Sqlite(mut slot)) = self.inner.take()
            && (succeeded || slot.conn.execute("ROLLBACK").await.is_ok())
        {
            slot.dirty = false;
        }
    }

    /// Commits.
    ///
    /// # Errors
    /// [`sqlx::Error`] from the database (the transaction is then rolled back).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.inner.take().expect("present until commit or rollback") {
            WriteInner::Pool(tx) => tx.commit().await,
            WriteInner::Sqlite(mut slot) => match slot.conn.execute("COMMIT").await {
                Ok(_) => {
                    slot.dirty = false;
                    Ok(())
                }
                Err(e) => {
                    if slot.conn.execute("ROLLBACK").await.is_ok() {
                        slot.dirty = false;
                    }
                    Err(e)
                }
            },
        }
    }

    /// Rolls back.
    ///
    /// # Errors
    /// [`sqlx::Error`] from the database.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        match self.inner.take().expect("present until commit or rollback") {
            WriteInner::Pool(tx) => tx.rollback().await,
            WriteInner::Sqlite(mut slot) => {
                slot.conn.execute("ROLLBACK").await?;
                slot.dirty = false;
                Ok(())
            }
        }
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        // A cancelled request or an early `?`: roll back now, still holding the writer's turn,
        // so that the write lock is not kept until the next transaction. (sqlx's own
        // `Transaction` queues its rollback the same way.)
        if let Some(WriteInner::Sqlite(mut slot)) = self.inner.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if slot.conn.execute("ROLLBACK").await.is_ok() {
                    slot.dirty = false;
                }
            });
        }
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self
            .inner
            .as_ref()
            .expect("present until commit or rollback")
        {
            WriteInner::Sqlite(slot) => &slot.conn,
            WriteInner::Pool(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self
            .inner
            .as_mut()
            .expect("present until commit or rollback")
        {
            WriteInner::Sqlite(slot) => &mut slot.conn,
            WriteInner::Pool(tx) => tx,
        }
    }
}

/// The current time in Unix milliseconds, the unit of every time column.
#[must_use]
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The settings of every SQLite connection. WAL makes `synchronous = NORMAL` durable against
/// crashes of the process (not of the machine's power), at a fraction of FULL's fsyncs. Foreign
/// keys and a 5 s busy timeout are sqlx's defaults already.
async fn sqlite_settings(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    Ok(())
}

impl Store {
    /// Connects, applies the migrations, and returns the pool. A SQLite file is created when
    /// absent and switched to WAL mode.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is unsupported, the database cannot be reached or a migration
    /// fails.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let connect_options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        // Migrations and the journal mode first, on one connection: switching to WAL needs the
        // database to itself.
        {
            let mut conn = sqlx::AnyConnection::connect_with(&connect_options).await?;
            match backend {
                Backend::Sqlite => {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    SQLITE_MIGRATOR.run(&mut conn).await?;
                }
                Backend::Postgres => POSTGRES_MIGRATOR.run(&mut conn).await?,
            }
            conn.close().await?;
        }
        let max = options.max_connections.unwrap_or(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        });
        let pool = AnyPoolOptions::new()
            // On SQLite the store's own queries use the connections below; the pool serves
            // `Store::pool` (tests, ad-hoc queries) and stays small.
            .max_connections(match backend {
                Backend::Sqlite => 2,
                Backend::Postgres => max.max(1),
            })
            .acquire_timeout(options.acquire_timeout)
            // sqlx's own check pings every connection it lends: one more network round trip per
            // statement on PostgreSQL. Connections in steady use are lent without it; one that
            // sat idle for a while (where a restart or a proxy may have broken it) is pinged
            // first, and replaced when the ping fails.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres && meta.idle_for >= PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlite_settings(conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options.clone())
            .await?;
        let sqlite = match backend {
            Backend::Sqlite => {
                let open = || async {
                    let mut conn = sqlx::AnyConnection::connect_with(&connect_options).await?;
                    sqlite_settings(&mut conn).await?;
                    Ok::<_, sqlx::Error>(conn)
                };
                let writer = WriterSlot {
                    conn: open().await?,
                    dirty: false,
                };
                let readers = max.max(1);
                let mut idle = Vec::with_capacity(readers as usize);
                for _ in 0..readers {
                    idle.push(open().await?);
                }
                Some(Arc::new(SqliteConnections {
                    writer: Arc::new(tokio::sync::Mutex::new(writer)),
                    readers: Arc::new(ReaderSlots {
                        idle: std::sync::Mutex::new(idle),
                        permits: Arc::new(tokio::sync::Semaphore::new(readers as usize)),
                    }),
                    acquire_timeout: options.acquire_timeout,
                }))
            }
            Backend::Postgres => None,
        };
        // The group commit is SQLite's: PostgreSQL commits concurrent transactions of its
        // connections together itself (one WAL flush for many), and funnelling its payments
        // through one task made them slower (2,343 -> 1,808 notifications/s).
        let payments = sqlite.as_ref().map(|own| {
            let (payments, jobs) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(notifications::group_commit(own.writer.clone(), jobs));
            payments
        });
        let sessions = Arc::<sessions::SessionCache>::default();
        let notices = match backend {
            Backend::Sqlite => Notices::local(),
            Backend::Postgres => Notices::postgres(&url, pool.clone(), sessions.clone()),
        };
        Ok(Store {
            pool,
            backend,
            sqlite,
            sessions,
            notices,
            payments,
        })
    }

    /// A connection for reads and single-statement writes: one of SQLite's reader connections
    /// (waiting for a free one), or a PostgreSQL connection from the pool.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn reader(&self) -> Result<ReadConnection, StoreError> {
        let inner = match &self.sqlite {
            Some(own) => {
                let permit = tokio::time::timeout(
                    own.acquire_timeout,
                    own.readers.permits.clone().acquire_owned(),
                )
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
                let conn = own
                    .readers
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop()
                    .ok_or(sqlx::Error::PoolClosed)?;
                ReadInner::Sqlite {
                    conn: Some(conn),
                    home: own.readers.clone(),
                    _permit: permit,
                }
            }
            None => ReadInner::Pool(self.pool.acquire().await?),
        };
        Ok(ReadConnection { inner })
    }

    /// The pool, for queries of other modules.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The notices between instances (the outbox wake, revocations).
    #[must_use]
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a transaction that will write. On SQLite it waits for this process's writer turn,
    /// then takes the write lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// and then writes fails with `SQLITE_BUSY` when another writer committed in between, which
    /// no busy timeout cures.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let tx = match &self.sqlite {
            Some(own) => WriteTransaction::begin_sqlite(own.writer.clone()).await?,
            None => WriteTransaction {
                inner: Some(WriteInner::Pool(self.pool.begin().await?)),
            },
        };
        Ok(tx)
    }

    /// SQLite: the writer's turn for a script holding its own transaction (see
    /// `WriteTransaction::script_sqlite`); `None` on PostgreSQL, where each statement is a
    /// round trip anyway and a transaction from [`begin_write`](Self::begin_write) is used.
    async fn script_turn(&self) -> Option<WriteTransaction> {
        match &self.sqlite {
            Some(own) => Some(WriteTransaction::script_sqlite(own.writer.clone()).await),
            None => None,
        }
    }

    /// Checks that the database answers (`/healthz`).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        let one: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
            .fetch_one(&mut *self.reader().await?)
            .await?;
        if one == 1 {
            Ok(())
        } else {
            Err(StoreError::Corrupt(
                "SELECT 1 answered something else".into(),
            ))
        }
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        if let Some(own) = &self.sqlite {
            own.readers.permits.close();
            let _writer = own.writer.lock().await;
            let idle = std::mem::take(
                &mut *own
                    .readers
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for conn in idle {
                let _ = conn.close().await;
            }
        }
        self.pool.close().await;
    }
}
