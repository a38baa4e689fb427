//! Mini-program users and their bearer-token sessions. Tokens are stored as SHA-256 hashes; the
//! WeChat session_key is kept here and never sent anywhere.

use secrecy::{ExposeSecret as _, SecretString};

use super::{Store, StoreError, now_ms};

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
    /// Records the user (first login or a later one) and a new session, in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (openid, appid, unionid, created_at, last_login_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (openid) DO UPDATE SET last_login_at = excluded.last_login_at, \
             unionid = COALESCE(excluded.unionid, users.unionid)",
        )
        .bind(s.openid)
        .bind(s.appid)
        .bind(s.unionid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, openid, session_key, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.token_hash)
        .bind(s.openid)
        .bind(s.session_key.expose_secret())
        .bind(now)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user of an unexpired session.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn session_user(&self, token_hash: &str) -> Result<Option<SessionUser>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT openid, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(openid, expires_at)| SessionUser { openid, expires_at }))
    }

    /// Deletes sessions that expired before now; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn delete_expired_sessions(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
