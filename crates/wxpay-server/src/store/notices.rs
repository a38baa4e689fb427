//! Notices between the instances of one database: "a session was revoked", "the outbox was
//! written" and "the registry of merchants and mini programs changed". They make the session cache and the webhook deliverer react at once instead of
//! waiting for a timeout or a poll; none of them carries state the database does not have, so a
//! lost notice only delays (see [`SESSION_RECHECK`](super::sessions::SESSION_RECHECK) and the
//! deliverer's idle poll), it never makes anything wrong.
//!
//! - In this process: the outbox wake is a [`watch`] counter every deliverer subscribes to,
//!   raised after the commit of any transaction that wrote an outbox row; a revocation evicts
//!   from this process's session cache before its call returns.
//! - PostgreSQL (several instances): the same notices go out with `pg_notify` on the channel
//!   [`CHANNEL`] after the commit, and every instance `LISTEN`s on a connection of its own
//!   ([`sqlx::postgres::PgListener`]). The payloads are `outbox`, `session TOKEN_HASH`,
//!   `user OPENID` and `registry` (see [`Notices::registry_changes`]: the registry's readers
//!   reload; its version, `Store::registry_version`, is what they compare). When the listening connection is lost, notices may have been missed: the
//!   session cache is cleared and the deliverers are woken, and the listener reconnects (every
//!   second until it succeeds).
//! - SQLite has one instance: the local part is all there is.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};

use super::sessions::SessionCache;

/// The PostgreSQL channel of the notices.
pub const CHANNEL: &str = "wxpay_events";

/// A notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The outbox has new rows.
    Outbox,
    /// The session of this token hash was revoked.
    Session(String),
    /// Every session of this openid was revoked.
    User(String),
    /// The registry (merchants, mini programs, sub-merchants, operators) changed.
    Registry,
}

impl Notice {
    fn payload(&self) -> String {
        match self {
            Notice::Outbox => "outbox".to_owned(),
            Notice::Registry => "registry".to_owned(),
            Notice::Session(hash) => format!("session {hash}"),
            Notice::User(openid) => format!("user {openid}"),
        }
    }

    fn parse(payload: &str) -> Option<Notice> {
        match payload.split_once(' ') {
            None if payload == "outbox" => Some(Notice::Outbox),
            None if payload == "registry" => Some(Notice::Registry),
            Some(("session", hash)) if !hash.is_empty() => Some(Notice::Session(hash.to_owned())),
            Some(("user", openid)) if !openid.is_empty() => Some(Notice::User(openid.to_owned())),
            _ => None,
        }
    }
}

/// The notices of one [`Store`](super::Store). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notices {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Raised for every outbox write seen (here, or by another instance).
    outbox: Arc<watch::Sender<u64>>,
    /// Raised for every registry change seen (here, or by another instance).
    registry: Arc<watch::Sender<u64>>,
    /// PostgreSQL: the pool notices are sent with, and the queue of outbox notices (sent by a
    /// task of their own, off the hot path, coalesced).
    postgres: Option<(AnyPool, mpsc::Sender<()>)>,
    /// PostgreSQL: whether the listener is connected (tests wait for it).
    listening: watch::Receiver<bool>,
    /// Dropped with the last clone: stops the tasks.
    _alive: watch::Sender<()>,
}

impl Notices {
    /// SQLite: local notices only.
    pub(super) fn local() -> Self {
        let (alive, _) = watch::channel(());
        let (_, listening) = watch::channel(false);
        Notices {
            inner: Arc::new(Inner {
                outbox: Arc::new(watch::channel(0).0),
                registry: Arc::new(watch::channel(0).0),
                postgres: None,
                listening,
                _alive: alive,
            }),
        }
    }

    /// PostgreSQL: local notices, sent to the other instances with `pg_notify`, and a listener
    /// on `url` for theirs.
    pub(super) fn postgres(url: &str, pool: AnyPool, sessions: Arc<SessionCache>) -> Self {
        let (alive, stopped) = watch::channel(());
        let (listening_tx, listening) = watch::channel(false);
        let outbox = Arc::new(watch::channel(0).0);
        let registry = Arc::new(watch::channel(0).0);
        // One pending outbox notice is enough: a burst of payments sends one or two.
        let (queue, pending) = mpsc::channel(1);
        tokio::spawn(send_outbox_notices(pool.clone(), pending));
        tokio::spawn(listen(
            url.to_owned(),
            sessions,
            outbox.clone(),
            registry.clone(),
            listening_tx,
            stopped,
        ));
        Notices {
            inner: Arc::new(Inner {
                outbox,
                registry,
                postgres: Some((pool, queue)),
                listening,
                _alive: alive,
            }),
        }
    }

    /// After the commit of a transaction that wrote outbox rows: wakes the deliverers of this
    /// process now, and those of the other instances (PostgreSQL) a moment later.
    pub fn outbox_written(&self) {
        self.inner.outbox.send_modify(|n| *n = n.wrapping_add(1));
        if let Some((_, queue)) = &self.inner.postgres {
            // Full: a notice is queued already, which covers this write too.
            let _ = queue.try_send(());
        }
    }

    /// A receiver that changes whenever the outbox was written (here or elsewhere).
    #[must_use]
    pub fn outbox_wakes(&self) -> watch::Receiver<u64> {
        self.inner.outbox.subscribe()
    }

    /// After the commit of a registry change: raises this process's registry counter now, and
    /// tells the other instances (PostgreSQL).
    pub async fn registry_changed(&self) {
        self.inner.registry.send_modify(|n| *n = n.wrapping_add(1));
        self.publish(&Notice::Registry).await;
    }

    /// A receiver that changes whenever the registry changed (here or elsewhere), and when
    /// notices may have been missed (the listener reconnected): its readers reload.
    #[must_use]
    pub fn registry_changes(&self) -> watch::Receiver<u64> {
        self.inner.registry.subscribe()
    }

    /// Waits until the listener is connected (PostgreSQL); at once on SQLite. For tests and
    /// benchmarks that need the notices of other instances from the first write.
    pub async fn listening(&self) {
        if self.inner.postgres.is_none() {
            return;
        }
        let mut listening = self.inner.listening.clone();
        let _ = listening.wait_for(|up| *up).await;
    }

    /// Tells the other instances (PostgreSQL; nothing on SQLite). A failure is logged: the
    /// others then notice through their bounds (session re-checks, the idle poll).
    pub(crate) async fn publish(&self, notice: &Notice) {
        if let Some((pool, _)) = &self.inner.postgres
            && let Err(e) = send(pool, notice).await
        {
            tracing::warn!(error = %e, "could not notify the other instances");
        }
    }
}

async fn send(pool: &AnyPool, notice: &Notice) -> Result<(), sqlx::Error> {
    // pg_notify returns `void`, which the Any driver cannot decode: select a number instead.
    sqlx::query("SELECT CAST(1 AS BIGINT) FROM (SELECT pg_notify($1, $2)) AS sent")
        .bind(CHANNEL)
        .bind(notice.payload())
        .fetch_all(pool)
        .await?;
    Ok(())
}

async fn send_outbox_notices(pool: AnyPool, mut pending: mpsc::Receiver<()>) {
    while pending.recv().await.is_some() {
        if let Err(e) = send(&pool, &Notice::Outbox).await {
            tracing::warn!(error = %e, "could not notify the other instances of webhooks to send");
        }
    }
}

/// Listens until the store is dropped, reconnecting after failures.
async fn listen(
    url: String,
    sessions: Arc<SessionCache>,
    outbox: Arc<watch::Sender<u64>>,
    registry: Arc<watch::Sender<u64>>,
    listening: watch::Sender<bool>,
    mut stopped: watch::Receiver<()>,
) {
    // Notices may have been missed while not listening (and at the start nothing is known).
    let missed = || {
        sessions.clear();
        outbox.send_modify(|n| *n = n.wrapping_add(1));
        registry.send_modify(|n| *n = n.wrapping_add(1));
    };
    loop {
        let connected = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = tokio::select! {
            l = connected => l,
            _ = stopped.changed() => return,
        };
        match listener {
            Ok(mut listener) => {
                missed();
                listening.send_replace(true);
                loop {
                    let received = tokio::select! {
                        r = listener.try_recv() => r,
                        _ = stopped.changed() => return,
                    };
                    match received {
                        Ok(Some(notification)) => match Notice::parse(notification.payload()) {
                            Some(Notice::Outbox) => {
                                outbox.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            Some(Notice::Session(hash)) => sessions.evict_token(&hash),
                            Some(Notice::User(openid)) => sessions.evict_user(&openid),
                            Some(Notice::Registry) => {
                                registry.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            None => {}
                        },
                        // The connection was lost; the next `try_recv` reconnects.
                        Ok(None) => {
                            tracing::warn!(
                                "lost the connection listening for notices; reconnecting"
                            );
                            missed();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for notices; retrying");
                            listening.send_replace(false);
                            missed();
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for notices; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Notice;

    #[test]
    fn payloads_read_back() {
        for n in [
            Notice::Outbox,
            Notice::Registry,
            Notice::Session("ab12".into()),
            Notice::User("o_x-1".into()),
        ] {
            assert_eq!(Notice::parse(&n.payload()), Some(n));
        }
        assert_eq!(Notice::parse("session "), None);
        assert_eq!(Notice::parse("other"), None);
    }
}
