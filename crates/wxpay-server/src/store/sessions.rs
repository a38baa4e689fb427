//! Mini-program users and their bearer-token sessions. Tokens are stored as SHA-256 hashes; the
//! WeChat session_key is kept here and never sent anywhere.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::{ExposeSecret as _, SecretString};

use super::{Store, StoreError, now_ms};

/// Most sessions remembered in memory (about 150 bytes each).
const CACHE_CAPACITY: usize = 100_000;

/// The sessions this process saw (created or looked up), by token hash: a session row never
/// changes after it is written and only ends by expiring, so a remembered one is as good as the
/// row until `expires_at`. Sessions of other instances are read from the database the first
/// time. It saves one query on every authenticated request.
#[derive(Debug, Default)]
pub(super) struct SessionCache {
    entries: Mutex<HashMap<String, SessionUser>>,
}

impl SessionCache {
    fn get(&self, token_hash: &str, now: i64) -> Option<SessionUser> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(token_hash)
            .filter(|u| u.expires_at > now)
            .cloned()
    }

    fn put(&self, token_hash: &str, user: SessionUser, now: i64) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, u| u.expires_at > now);
            if entries.len() >= CACHE_CAPACITY {
                // Still full of live sessions: start over (they are read again when used).
                entries.clear();
            }
        }
        entries.insert(token_hash.to_owned(), user);
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
                expires_at: s.expires_at,
            },
            now,
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
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT openid, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        let user = row.map(|(openid, expires_at)| SessionUser { openid, expires_at });
        if let Some(user) = &user {
            self.sessions.put(token_hash, user.clone(), now);
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
}
