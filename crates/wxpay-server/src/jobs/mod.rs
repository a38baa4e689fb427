//! Background jobs: they close the gaps that notifications leave.
//!
//! Each job takes one batch of work per call and answers [`ExecutionOutcome::TaskCompleted`] when
//! it did something or [`ExecutionOutcome::EmptyQueue`] when there was nothing to do, so that
//! tests drain a job deterministically ([`Jobs::drain`]) and the [`JobRunner`] loops them in the
//! background while the server runs. Work is taken with leases or `FOR UPDATE SKIP LOCKED`
//! (see the store), so several instances on one PostgreSQL never do the same item twice.
//!
//! - [`JobKind::ReconcileUnpaid`]: asks WeChat about unpaid orders older than a while and applies
//!   the answer through the same compare-and-set as the notifications (a dropped notification is
//!   healed; a late one then changes nothing).
//! - [`JobKind::CloseExpired`]: closes orders past their expiry, at WeChat and then here.
//! - [`JobKind::SubmitRefunds`]: sends refunds a crash or a failure left unaccepted, asking
//!   WeChat first and resending with the same `out_refund_no`.
//! - [`JobKind::FollowRefunds`]: asks WeChat about refunds still `PROCESSING`.
//! - [`JobKind::UploadShipping`]: writes the upload intent of paid virtual and pickup orders,
//!   and (re)tries pending uploads of shipping information, asking WeChat first after an
//!   attempt whose answer may have been lost.
//! - [`JobKind::ReconcileTrade`]: asks WeChat about shipped orders whose settlement push has
//!   not come (`jobs/trade.rs`), applied under the push's own dedupe key.
//! - [`JobKind::FollowTransfers`]: sends merchant transfers WeChat has not answered (same
//!   `out_bill_no`), asks about the others until final, cancels those left unconfirmed.
//! - [`JobKind::DeliverWebhooks`]: the outbox, to `WXPAY_WEBHOOK_URL`, signed, with backoff.
//! - [`JobKind::DailyBill`]: after 10:00 GMT+8, downloads yesterday's bill and stores its
//!   reconciliation (once per date).
//! - [`JobKind::RefreshCertificates`]: in platform-certificate modes, refreshes this instance's
//!   certificates.

pub mod bills;
pub mod certificates;
pub mod fulfilment;
pub mod orders;
pub mod refunds;
pub mod trade;
pub mod transfers;
pub mod webhooks;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::core::orders::OrderError;
use crate::core::reconciliation::ReconcileError;
use crate::core::refunds::RefundError;
use crate::registry::{Registry, RouteError};
use crate::store::{Store, StoreError};

/// What one call of a job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionOutcome {
    /// Work was taken (and done, or rescheduled).
    TaskCompleted,
    /// Nothing was due.
    EmptyQueue,
}

/// A job's failure. The items it held are released by their leases running out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An order operation failed as a whole.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A refund operation failed as a whole.
    #[error(transparent)]
    Refund(#[from] RefundError),
    /// The reconciliation failed.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// WeChat failed.
    #[error("WeChat: {0}")]
    WeChat(#[from] wxpay::Error),
    /// No merchant here handles the item.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Anything else (an HTTP client that cannot be built, a bill that does not parse).
    #[error("{0}")]
    Other(String),
}

/// The jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Query unpaid orders at WeChat.
    ReconcileUnpaid,
    /// Close expired orders.
    CloseExpired,
    /// Send refunds not accepted yet.
    SubmitRefunds,
    /// Query refunds in `PROCESSING`.
    FollowRefunds,
    /// Deliver merchant webhooks.
    DeliverWebhooks,
    /// Upload shipping information to WeChat.
    UploadShipping,
    /// Ask WeChat about shipped orders not known to be settled.
    ReconcileTrade,
    /// Send, follow and expire merchant transfers.
    FollowTransfers,
    /// Download and reconcile yesterday's bill.
    DailyBill,
    /// Refresh the platform certificates.
    RefreshCertificates,
}

impl JobKind {
    /// Every job.
    pub const ALL: [JobKind; 10] = [
        JobKind::ReconcileUnpaid,
        JobKind::CloseExpired,
        JobKind::SubmitRefunds,
        JobKind::FollowRefunds,
        JobKind::DeliverWebhooks,
        JobKind::UploadShipping,
        JobKind::ReconcileTrade,
        JobKind::FollowTransfers,
        JobKind::DailyBill,
        JobKind::RefreshCertificates,
    ];

    /// The job's name (metrics, logs, `job_leases`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::ReconcileUnpaid => "reconcile_unpaid",
            JobKind::CloseExpired => "close_expired",
            JobKind::SubmitRefunds => "submit_refunds",
            JobKind::FollowRefunds => "follow_refunds",
            JobKind::DeliverWebhooks => "deliver_webhooks",
            JobKind::UploadShipping => "upload_shipping",
            JobKind::ReconcileTrade => "reconcile_trade",
            JobKind::FollowTransfers => "follow_transfers",
            JobKind::DailyBill => "daily_bill",
            JobKind::RefreshCertificates => "refresh_certificates",
        }
    }
}

/// How the jobs behave. The defaults suit production; tests shorten the delays.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// This instance's name in leases (unique per process).
    pub owner: String,
    /// Items taken per call.
    pub batch_size: u32,
    /// How long a lease lasts (a crashed holder's items are taken again after it).
    pub lease: Duration,
    /// Unpaid orders older than this are queried at WeChat.
    pub reconcile_after: Duration,
    /// An unpaid order is queried at most once per this.
    pub requery_every: Duration,
    /// A failed close of an expired order is tried again after this.
    pub close_retry_every: Duration,
    /// A refund whose sending failed is tried again after this.
    pub refund_retry_every: Duration,
    /// A refund in `PROCESSING` is queried once per this.
    pub refund_check_every: Duration,
    /// The first retry delay of a failed upload of shipping information; doubled per attempt
    /// up to an hour.
    pub shipping_retry: Duration,
    /// A shipped order not known to be settled is asked about at WeChat once per this.
    pub trade_recheck: Duration,
    /// Timeout of one webhook delivery.
    pub webhook_timeout: Duration,
    /// The first retry delay of a webhook; doubled per attempt.
    pub webhook_backoff: Duration,
    /// The longest retry delay of a webhook.
    pub webhook_backoff_cap: Duration,
    /// The hour (GMT+8) after which yesterday's bill is fetched (WeChat: after 10:00).
    pub bill_after_hour: u8,
    /// A bill not ready yet is asked for again after this.
    pub bill_retry_every: Duration,
    /// How often the platform certificates are refreshed.
    pub certificate_refresh_every: Duration,
    /// How long the runner waits after a job found nothing to do. The webhook deliverer is also
    /// woken at once by outbox writes (of this instance, and of the others on PostgreSQL).
    pub idle_interval: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            owner: format!(
                "wxpay-{}-{}",
                std::process::id(),
                wxpay::nonce::random_string(8)
            ),
            batch_size: 50,
            lease: Duration::from_secs(60),
            reconcile_after: Duration::from_secs(60),
            requery_every: Duration::from_secs(60),
            close_retry_every: Duration::from_secs(60),
            refund_retry_every: Duration::from_secs(30),
            refund_check_every: Duration::from_secs(60),
            shipping_retry: crate::core::fulfilment::UPLOAD_RETRY,
            trade_recheck: Duration::from_secs(30 * 60),
            webhook_timeout: Duration::from_secs(10),
            webhook_backoff: Duration::from_secs(5),
            webhook_backoff_cap: Duration::from_secs(3600),
            bill_after_hour: 10,
            bill_retry_every: Duration::from_secs(15 * 60),
            certificate_refresh_every: Duration::from_secs(3600),
            idle_interval: Duration::from_secs(5),
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// What the jobs work on: the database, the WeChat clients, the configuration (webhooks).
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The database.
    pub store: Store,
    /// The mini programs and merchants, and their WeChat clients.
    pub registry: Registry,
    /// The configuration.
    pub settings: Arc<Settings>,
}

/// The jobs of one instance. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Jobs {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(crate) settings: Arc<Settings>,
    pub(crate) options: Arc<JobOptions>,
    pub(crate) http: reqwest::Client,
    pub(crate) certificates_refreshed: Arc<Mutex<Option<Instant>>>,
}

impl Jobs {
    /// The jobs over a server's state (an [`crate::AppState`] converts).
    ///
    /// # Errors
    /// [`JobError::Other`] when the webhook HTTP client cannot be built.
    pub fn new(context: impl Into<JobContext>, options: JobOptions) -> Result<Self, JobError> {
        let JobContext {
            store,
            registry,
            settings,
        } = context.into();
        let http = reqwest::Client::builder()
            .timeout(options.webhook_timeout)
            .connect_timeout(options.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JobError::Other(format!("webhook client: {e}")))?;
        Ok(Jobs {
            store,
            registry,
            settings,
            options: Arc::new(options),
            http,
            certificates_refreshed: Arc::new(Mutex::new(None)),
        })
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &JobOptions {
        &self.options
    }

    /// Runs one call of a job: one batch.
    ///
    /// # Errors
    /// [`JobError`] when the database fails, or the job's own work fails as a whole (a failure
    /// of one item is recorded on the item and the batch goes on).
    pub async fn try_execute_task(&self, kind: JobKind) -> Result<ExecutionOutcome, JobError> {
        let outcome = match kind {
            JobKind::ReconcileUnpaid => orders::reconcile_unpaid(self).await,
            JobKind::CloseExpired => orders::close_expired(self).await,
            JobKind::SubmitRefunds => refunds::submit_unaccepted(self).await,
            JobKind::FollowRefunds => refunds::follow_processing(self).await,
            JobKind::DeliverWebhooks => webhooks::deliver_due(self).await,
            JobKind::UploadShipping => fulfilment::upload_due(self).await,
            JobKind::ReconcileTrade => {
                trade::reconcile_trade(self, ms(self.options.trade_recheck)).await
            }
            JobKind::FollowTransfers => transfers::follow_due(self).await,
            JobKind::DailyBill => bills::daily_bill(self).await,
            JobKind::RefreshCertificates => certificates::refresh(self).await,
        };
        let label = match &outcome {
            Ok(ExecutionOutcome::TaskCompleted) => "completed",
            Ok(ExecutionOutcome::EmptyQueue) => "empty",
            Err(_) => "error",
        };
        crate::metrics::job_run(kind.as_str(), label);
        outcome
    }

    /// Calls a job until it finds nothing to do (at most `max_calls` times); returns how many
    /// calls did something.
    ///
    /// # Errors
    /// The first [`JobError`].
    pub async fn drain(&self, kind: JobKind, max_calls: usize) -> Result<usize, JobError> {
        let mut done = 0;
        for _ in 0..max_calls {
            match self.try_execute_task(kind).await? {
                ExecutionOutcome::TaskCompleted => done += 1,
                ExecutionOutcome::EmptyQueue => break,
            }
        }
        Ok(done)
    }

    /// Starts every job in the background until `shutdown` turns true.
    #[must_use]
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> JobRunner {
        let tasks = JobKind::ALL
            .into_iter()
            .map(|kind| {
                let jobs = self.clone();
                let mut shutdown = shutdown.clone();
                // The deliverer is also woken by outbox writes (see `store::notices`), so that
                // a webhook leaves right after its commit rather than at the next idle poll.
                let mut wakes =
                    (kind == JobKind::DeliverWebhooks).then(|| jobs.store.notices().outbox_wakes());
                tokio::spawn(async move {
                    loop {
                        if *shutdown.borrow() {
                            break;
                        }
                        if let Some(wakes) = &mut wakes {
                            // What is written from now on is seen by the run below or wakes the
                            // next pause.
                            wakes.borrow_and_update();
                        }
                        let pause = match jobs.try_execute_task(kind).await {
                            // More may be waiting: go on at once, but let others run.
                            Ok(ExecutionOutcome::TaskCompleted) => Duration::ZERO,
                            Ok(ExecutionOutcome::EmptyQueue) => jobs.options.idle_interval,
                            Err(err) => {
                                tracing::warn!(job = kind.as_str(), error = %err, "job failed");
                                jobs.options.idle_interval
                            }
                        };
                        if pause.is_zero() {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = outbox_written(&mut wakes) => {}
                            changed = shutdown.changed() => {
                                // A dropped sender means the server is gone: stop too.
                                if changed.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        JobRunner { tasks }
    }
}

/// Returns when the outbox was written since the receiver last looked; never without one.
async fn outbox_written(wakes: &mut Option<watch::Receiver<u64>>) {
    match wakes {
        Some(w) => {
            if w.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The background tasks of [`Jobs::spawn`].
#[derive(Debug)]
pub struct JobRunner {
    tasks: Vec<JoinHandle<()>>,
}

impl JobRunner {
    /// Waits for the tasks to stop (after the shutdown signal).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stops the tasks now.
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
