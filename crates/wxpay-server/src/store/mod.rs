//! The database: one [`Store`] over an [`AnyPool`], SQLite or PostgreSQL.
//!
//! Every statement uses `$N` placeholders, which both sqlx-sqlite and PostgreSQL understand, and
//! only portable types: `BIGINT` (`i64`) for money in fen, times in Unix milliseconds and flags,
//! `TEXT` for everything else (JSON included). The few statements that must differ ask
//! [`Store::backend`]. Queries live in one file per table group, each an `impl Store` block.
//!
//! Rules every writer follows:
//! - a state change is one transaction opened with [`Store::begin_write`], guarded by the current
//!   state (`UPDATE .. WHERE status IN (..)`), with its dedupe row, its event row and its outbox
//!   row in the same transaction;
//! - PostgreSQL returns `SUM` of `BIGINT` as `NUMERIC`: cast it (`CAST(SUM(x) AS BIGINT)`).

mod jobs;
mod notifications;
mod orders;
mod outbox;
mod products;
mod refund_state;
mod refunds;
mod reports;
mod sessions;
mod webhooks;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions as _, Connection as _, Executor as _, Transaction};

pub use jobs::JobState;
pub use notifications::{PaymentConfirmation, RefundResult};
pub use orders::insert_event;
pub use orders::{
    ApiVersion, EventKind, NewOrder, Order, OrderEvent, OrderItem, OrderStatus, Transition,
};
pub use outbox::{NewOutboxEvent, OutboxEventType, to_json};
pub use products::{NewProduct, Product};
pub use refund_state::{Refund, RefundStatus, RefundTransition};
pub use refunds::{NewRefund, RefundCreation};
pub use reports::{HourlyPayments, OrderCursor, OrderPage, Reconciliation};
pub use sessions::{NewSession, SessionUser};
pub use webhooks::{OutboxEvent, WebhookAttempt};

/// A database error. Its text never contains a bound value (sqlx does not put them in errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL scheme (use sqlite://FILE or postgres://...)")]
    UnsupportedUrl,
    /// The database refused or failed a statement, or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back (a JSON column, an unknown status).
    #[error("stored data: {0}")]
    Corrupt(String),
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
    /// [`StoreError::UnsupportedUrl`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
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
    /// Most connections; `None` picks 8 for SQLite (readers run in parallel in WAL mode, writers
    /// queue on the file lock anyway) and 16 for PostgreSQL.
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
    /// SQLite only: write transactions of this process take turns here before `BEGIN
    /// IMMEDIATE`. SQLite has one writer at a time anyway; without this queue the others get
    /// `SQLITE_BUSY` and sleep in the busy handler (1, 2, 5, ... 100 ms), which under load made
    /// the p99 of every writing endpoint 80-100 ms instead of a few ms.
    write_turn: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction from [`Store::begin_write`]: the transaction (it dereferences to the
/// connection, like [`Transaction`]) and, on SQLite, this process's writer turn, released after
/// the commit or rollback.
#[derive(Debug)]
pub struct WriteTransaction {
    tx: Transaction<'static, Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTransaction {
    /// Commits.
    ///
    /// # Errors
    /// [`sqlx::Error`] from the database.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back.
    ///
    /// # Errors
    /// [`sqlx::Error`] from the database.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// The current time in Unix milliseconds, the unit of every time column.
#[must_use]
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
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
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        let pool = AnyPoolOptions::new()
            .max_connections(max.max(1))
            .acquire_timeout(options.acquire_timeout)
            // A SQLite connection is a file handle in this process: it cannot break like a
            // socket, and pinging it before each use costs a round trip to its worker thread
            // (two context switches) per statement batch. PostgreSQL keeps the check.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL makes NORMAL durable against crashes of the process (not of the
                        // machine's power), at a fraction of FULL's fsyncs. Foreign keys and a
                        // 5 s busy timeout are sqlx's defaults already.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await?;
        let write_turn =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Store {
            pool,
            backend,
            write_turn,
        })
    }

    /// The pool, for queries of other modules.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
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
        // The turn is taken before a connection, so that waiting writers hold none.
        let turn = match &self.write_turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        };
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTransaction { tx, _turn: turn })
    }

    /// Checks that the database answers (`/healthz`).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        let one: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
            .fetch_one(&self.pool)
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
        self.pool.close().await;
    }
}
