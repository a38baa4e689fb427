//! Mini-program users and their bearer-token sessions. Tokens are stored as SHA-256 hashes; the
//! WeChat session_key is kept here and never sent anywhere.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::{ExposeSecret as _, SecretString};

use super::notices::Notice;
use super::{Store, StoreError, now_ms};

/// Most sessions remembered in memory (about 150 bytes each).
const CACHE_CAPACITY: usize = 100_000;

/// How long a remembered session is trusted before the store is asked again. Revocations
/// evict at once (here, and on the other instances through the notices of
/// [`Notices`](super::notices::Notices)); this bounds how long a session stays usable on an
/// instance that missed such a notice (its listening connection was down).
pub const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The sessions this process saw (created or looked up), by token hash. A session row never
/// changes after it is written; it ends by expiring or by being revoked (deleted). A revocation
/// evicts the entries concerned, and an entry is re-read from the store after
/// [`SESSION_RECHECK`] anyway. Sessions of other instances are read from the database the
/// first time. It saves one query on almost every authenticated request.
#[derive(Debug, Default)]
pub(super) struct SessionCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<String, Cached>,
    /// Raised by every eviction: a session read from the store before an eviction is not
    /// remembered after it (the read may predate the revocation).
    generation: u64,
}

#[derive(Debug)]
struct Cached {
    user: SessionUser,
    /// When it was read or created (Unix ms).
    checked_at: i64,
}

const RECHECK_MS: i64 = SESSION_RECHECK.as_millis() as i64;

impl SessionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, token_hash: &str, now: i64) -> Option<SessionUser> {
        self.lock()
            .entries
            .get(token_hash)
            .filter(|c| c.user.expires_at > now && now - c.checked_at < RECHECK_MS)
            .map(|c| c.user.clone())
    }

    /// The generation to hand to [`put`](Self::put) for a session about to be read.
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remembers a session read (or created) while the cache was at `generation`; nothing
    /// when an eviction happened since.
    fn put(&self, token_hash: &str, user: SessionUser, now: i64, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let entries = &mut state.entries;
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, c| c.user.expires_at > now && now - c.checked_at < RECHECK_MS);
            if entries.len() >= CACHE_CAPACITY {
                // Still full of live sessions: start over (they are read again when used).
                entries.clear();
            }
        }
        entries.insert(
            token_hash.to_owned(),
            Cached {
                user,
                checked_at: now,
            },
        );
    }

    /// Forgets one session.
    pub(super) fn evict_token(&self, token_hash: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.remove(token_hash);
    }

    /// Forgets every session of a user.
    pub(super) fn evict_user(&self, openid: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.retain(|_, c| c.user.openid != openid);
    }

    /// Forgets everything (notices may have been missed).
    pub(super) fn clear(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.clear();
    }
}

/// A session to create after `code2session`.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// SHA-256 hex of the bearer token.
    pub token_hash: &'a str,
    /// The user.
    pub openid: &'a str,
    /// The mini program.
    pub appid: &'a str,
    /// The unionid, when WeChat sent one.
    pub unionid: Option<&'a str>,
    /// WeChat's session key.
    pub session_key: &'a SecretString,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// The user behind a valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionUser {
    /// The user's openid.
    pub openid: String,
    /// The mini program the user logged in to (an openid belongs to one).
    pub appid: String,
    /// When the session ends (Unix milliseconds).
    pub expires_at: i64,
}

impl Store {
    /// Records the user (first login or a later one) and a new session, atomically.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        let generation = self.sessions.generation();
        // The user and the session together, one command either way: a script holding its own
        // transaction on SQLite, one statement with a data-modifying WITH on PostgreSQL.
        let sql = self.backend.dialect().create_session;
        let query = sqlx::query(sql)
            .bind(s.openid)
            .bind(s.appid)
            .bind(s.unionid)
            .bind(now)
            .bind(s.token_hash)
            .bind(s.session_key.expose_secret())
            .bind(s.expires_at);
        if let Some(mut turn) = self.script_turn().await {
            let done = query.execute(&mut *turn).await;
            turn.end_script(done.is_ok()).await;
            done?;
        } else {
            query.execute(&mut *self.reader().await?).await?;
        }
        self.sessions.put(
            s.token_hash,
            SessionUser {
                openid: s.openid.to_owned(),
                appid: s.appid.to_owned(),
                expires_at: s.expires_at,
            },
            now,
            generation,
        );
        Ok(())
    }

    /// The user of an unexpired session.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn session_user(&self, token_hash: &str) -> Result<Option<SessionUser>, StoreError> {
        let now = now_ms();
        if let Some(user) = self.sessions.get(token_hash, now) {
            return Ok(Some(user));
        }
        let generation = self.sessions.generation();
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT s.openid, u.appid, s.expires_at FROM sessions s JOIN users u ON u.openid = s.openid \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        let user = row.map(|(openid, appid, expires_at)| SessionUser {
            openid,
            appid,
            expires_at,
        });
        if let Some(user) = &user {
            self.sessions.put(token_hash, user.clone(), now, generation);
        }
        Ok(user)
    }

    /// Deletes sessions that expired before now; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn delete_expired_sessions(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&mut *self.reader().await?)
            .await?;
        Ok(done.rows_affected())
    }

    /// Revokes one session (logout): deletes it, forgets it here and tells the other
    /// instances. Returns whether there was one (a second logout finds none).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn revoke_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *self.reader().await?)
            .await?;
        self.sessions.evict_token(token_hash);
        self.notices
            .publish(&Notice::Session(token_hash.to_owned()))
            .await;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every session of a user (back office): deletes them, forgets them here and
    /// tells the other instances. Returns how many there were (unexpired or not).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn revoke_user_sessions(&self, openid: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE openid = $1")
            .bind(openid)
            .execute(&mut *self.reader().await?)
            .await?;
        self.sessions.evict_user(openid);
        self.notices.publish(&Notice::User(openid.to_owned())).await;
        Ok(done.rows_affected())
    }
}
