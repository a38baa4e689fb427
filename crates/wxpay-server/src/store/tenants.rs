//! The registry: merchants (direct, or service providers with their sub-merchants), mini
//! programs, and the merchants' operators. Secrets are stored sealed (see `crate::sealing`);
//! these rows carry the sealed text as it is, and are never shown as they are (the back
//! office's views are `api::tenants`).
//!
//! Every change is one transaction that also raises `registry_version`, and after its commit a
//! `registry` notice goes to the other instances ([`Notices::registry_changed`](super::Notices)).

use serde::{Deserialize, Serialize};

use super::{ApiVersion, Store, StoreError, WriteTransaction, now_ms};

/// A merchant's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MerchantKind {
    /// An ordinary merchant (直连商户): pays for its own mini programs.
    Direct,
    /// A service provider (服务商): pays through its sub-merchants (特约商户).
    Provider,
}

impl MerchantKind {
    /// `direct` or `provider`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantKind::Direct => "direct",
            MerchantKind::Provider => "provider",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "direct" => Ok(MerchantKind::Direct),
            "provider" => Ok(MerchantKind::Provider),
            other => Err(StoreError::Corrupt(format!("merchant kind {other:?}"))),
        }
    }
}

/// Where a merchant or mini program comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistrySource {
    /// The merchant file (`WXPAY_MERCHANT_FILE` or the sandbox's): its secrets stay in the file.
    File,
    /// Registered through the back office: its secrets are stored sealed.
    Registered,
}

impl RegistrySource {
    /// `file` or `registered`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrySource::File => "file",
            RegistrySource::Registered => "registered",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "file" => Ok(RegistrySource::File),
            "registered" => Ok(RegistrySource::Registered),
            other => Err(StoreError::Corrupt(format!("registry source {other:?}"))),
        }
    }
}

/// A row of `merchants`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantRecord {
    /// The merchant id.
    pub mchid: String,
    /// A name for people.
    pub name: String,
    /// Direct or provider.
    pub kind: MerchantKind,
    /// A provider's own appid (`sp_appid`), which its requests are signed as; `None` for a
    /// direct merchant.
    pub sp_appid: Option<String>,
    /// The API its payments use.
    pub api_version: ApiVersion,
    /// Whether it may be used.
    pub enabled: bool,
    /// Its API certificate's serial.
    pub merchant_serial: String,
    /// The WeChat Pay public key's id, when it has one.
    pub wechatpay_public_key_id: Option<String>,
    /// Whether its credentials hold a platform certificate.
    pub has_platform_cert: bool,
    /// Whether its credentials hold `apiclient_cert.p12`.
    pub has_p12: bool,
    /// File or registered.
    pub source: RegistrySource,
    /// The sealed credentials (`None` for the file's merchant).
    pub credentials: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; strictly increased by every change.
    pub updated_at: i64,
}

/// A row of `mini_programs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiniProgramRecord {
    /// The appid.
    pub appid: String,
    /// A name for people.
    pub name: String,
    /// The merchant it pays through (a provider when `sub_mchid` is set).
    pub mchid: String,
    /// The provider's sub-merchant it pays through.
    pub sub_mchid: Option<String>,
    /// Whether it may be used.
    pub enabled: bool,
    /// The sealed AppSecret (`None` for the file's mini program).
    pub app_secret: Option<String>,
    /// The sealed message-push settings (Token, EncodingAESKey), once set.
    pub push_settings: Option<String>,
    /// File or registered.
    pub source: RegistrySource,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; strictly increased by every change.
    pub updated_at: i64,
}

/// A row of `sub_merchants`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubMerchantRecord {
    /// The provider.
    pub sp_mchid: String,
    /// The sub-merchant's id.
    pub sub_mchid: String,
    /// A name for people.
    pub name: String,
    /// The sub-merchant's own mini program, when it has one.
    pub sub_appid: Option<String>,
    /// Whether it may be used.
    pub enabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; strictly increased by every change.
    pub updated_at: i64,
}

/// A row of `operators`, without its token hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorRecord {
    /// Its id.
    pub id: String,
    /// The merchant it acts for.
    pub mchid: String,
    /// A name for people.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// The time of a change of a row last changed at `previous`: now, and always later.
#[must_use]
pub fn next_change(previous: i64) -> i64 {
    now_ms().max(previous.saturating_add(1))
}

#[derive(sqlx::FromRow)]
struct MerchantRow {
    mchid: String,
    name: String,
    kind: String,
    sp_appid: Option<String>,
    api_version: String,
    enabled: i64,
    merchant_serial: String,
    wechatpay_public_key_id: Option<String>,
    has_platform_cert: i64,
    has_p12: i64,
    source: String,
    credentials: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<MerchantRow> for MerchantRecord {
    type Error = StoreError;

    fn try_from(r: MerchantRow) -> Result<Self, StoreError> {
        Ok(MerchantRecord {
            kind: MerchantKind::parse(&r.kind)?,
            api_version: ApiVersion::parse(&r.api_version)?,
            source: RegistrySource::parse(&r.source)?,
            mchid: r.mchid,
            name: r.name,
            sp_appid: r.sp_appid,
            enabled: r.enabled != 0,
            merchant_serial: r.merchant_serial,
            wechatpay_public_key_id: r.wechatpay_public_key_id,
            has_platform_cert: r.has_platform_cert != 0,
            has_p12: r.has_p12 != 0,
            credentials: r.credentials,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const MERCHANT_COLUMNS: &str = "mchid, name, kind, api_version, enabled, merchant_serial, \
    wechatpay_public_key_id, has_platform_cert, has_p12, source, credentials, created_at, updated_at, \
    sp_appid";

#[derive(sqlx::FromRow)]
struct MiniProgramRow {
    appid: String,
    name: String,
    mchid: String,
    sub_mchid: Option<String>,
    enabled: i64,
    app_secret: Option<String>,
    push_settings: Option<String>,
    source: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<MiniProgramRow> for MiniProgramRecord {
    type Error = StoreError;

    fn try_from(r: MiniProgramRow) -> Result<Self, StoreError> {
        Ok(MiniProgramRecord {
            source: RegistrySource::parse(&r.source)?,
            appid: r.appid,
            name: r.name,
            mchid: r.mchid,
            sub_mchid: r.sub_mchid,
            enabled: r.enabled != 0,
            app_secret: r.app_secret,
            push_settings: r.push_settings,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const MINI_PROGRAM_COLUMNS: &str = "appid, name, mchid, sub_mchid, enabled, app_secret, source, created_at, updated_at, push_settings";

#[derive(sqlx::FromRow)]
struct SubMerchantRow {
    sp_mchid: String,
    sub_mchid: String,
    name: String,
    sub_appid: Option<String>,
    enabled: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<SubMerchantRow> for SubMerchantRecord {
    fn from(r: SubMerchantRow) -> Self {
        SubMerchantRecord {
            sp_mchid: r.sp_mchid,
            sub_mchid: r.sub_mchid,
            name: r.name,
            sub_appid: r.sub_appid,
            enabled: r.enabled != 0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const SUB_MERCHANT_COLUMNS: &str =
    "sp_mchid, sub_mchid, name, sub_appid, enabled, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct OperatorRow {
    id: String,
    mchid: String,
    name: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl From<OperatorRow> for OperatorRecord {
    fn from(r: OperatorRow) -> Self {
        OperatorRecord {
            id: r.id,
            mchid: r.mchid,
            name: r.name,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

const OPERATOR_COLUMNS: &str = "id, mchid, name, created_at, revoked_at";

impl Store {
    /// Ends a registry write: when it changed something, raises the version in the same
    /// transaction, commits, and tells this process and the other instances. Returns `changed`.
    async fn finish_registry_write(
        &self,
        mut tx: WriteTransaction,
        changed: bool,
    ) -> Result<bool, StoreError> {
        if !changed {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE registry_version SET version = version + 1, changed_at = $1 WHERE id = 1",
        )
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.notices.registry_changed().await;
        Ok(true)
    }

    /// The registry's version: raised by every change of merchants, mini programs,
    /// sub-merchants and operators (one cheap read to see whether to reload).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn registry_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM registry_version WHERE id = 1")
                .fetch_one(&mut *self.reader().await?)
                .await?,
        )
    }

    /// Adds a merchant; `false` when its mchid is taken (nothing changed).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert_merchant(&self, m: &MerchantRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO merchants (mchid, name, kind, api_version, enabled, merchant_serial, \
             wechatpay_public_key_id, has_platform_cert, has_p12, source, credentials, created_at, \
             updated_at, sp_appid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (mchid) DO NOTHING",
        )
        .bind(&m.mchid)
        .bind(&m.name)
        .bind(m.kind.as_str())
        .bind(m.api_version.as_str())
        .bind(i64::from(m.enabled))
        .bind(&m.merchant_serial)
        .bind(&m.wechatpay_public_key_id)
        .bind(i64::from(m.has_platform_cert))
        .bind(i64::from(m.has_p12))
        .bind(m.source.as_str())
        .bind(&m.credentials)
        .bind(m.created_at)
        .bind(m.updated_at)
        .bind(&m.sp_appid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await
    }

    /// Writes every field of a merchant but its mchid, source and creation time, when the row
    /// was last changed at `expected_updated_at`; `false` otherwise (changed meanwhile, or gone).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn replace_merchant(
        &self,
        m: &MerchantRecord,
        expected_updated_at: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE merchants SET name = $2, kind = $3, api_version = $4, enabled = $5, \
             merchant_serial = $6, wechatpay_public_key_id = $7, has_platform_cert = $8, \
             has_p12 = $9, credentials = $10, updated_at = $11, sp_appid = $13 \
             WHERE mchid = $1 AND updated_at = $12",
        )
        .bind(&m.mchid)
        .bind(&m.name)
        .bind(m.kind.as_str())
        .bind(m.api_version.as_str())
        .bind(i64::from(m.enabled))
        .bind(&m.merchant_serial)
        .bind(&m.wechatpay_public_key_id)
        .bind(i64::from(m.has_platform_cert))
        .bind(i64::from(m.has_p12))
        .bind(&m.credentials)
        .bind(m.updated_at)
        .bind(expected_updated_at)
        .bind(&m.sp_appid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await
    }

    /// One merchant.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn merchant(&self, mchid: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let row: Option<MerchantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants WHERE mchid = $1"
        )))
        .bind(mchid)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(MerchantRecord::try_from).transpose()
    }

    /// Every merchant, by mchid.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn merchants(&self) -> Result<Vec<MerchantRecord>, StoreError> {
        let rows: Vec<MerchantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants ORDER BY mchid"
        )))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(MerchantRecord::try_from).collect()
    }

    /// How many mini programs and sub-merchants each merchant has: (mchid, apps, sub-merchants),
    /// merchants without either left out.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn merchant_counts(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT m.mchid, \
             (SELECT COUNT(*) FROM mini_programs a WHERE a.mchid = m.mchid), \
             (SELECT COUNT(*) FROM sub_merchants s WHERE s.sp_mchid = m.mchid) \
             FROM merchants m ORDER BY m.mchid",
        )
        .fetch_all(&mut *self.reader().await?)
        .await?)
    }

    /// Adds a mini program; `false` when its appid is taken (nothing changed).
    ///
    /// # Errors
    /// [`StoreError::Database`] (a foreign-key violation for an unknown merchant).
    pub async fn insert_mini_program(&self, a: &MiniProgramRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO mini_programs (appid, name, mchid, sub_mchid, enabled, app_secret, source, \
             created_at, updated_at, push_settings) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (appid) DO NOTHING",
        )
        .bind(&a.appid)
        .bind(&a.name)
        .bind(&a.mchid)
        .bind(&a.sub_mchid)
        .bind(i64::from(a.enabled))
        .bind(&a.app_secret)
        .bind(a.source.as_str())
        .bind(a.created_at)
        .bind(a.updated_at)
        .bind(&a.push_settings)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await
    }

    /// Writes every field of a mini program but its appid, source and creation time, when the
    /// row was last changed at `expected_updated_at`; `false` otherwise.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn replace_mini_program(
        &self,
        a: &MiniProgramRecord,
        expected_updated_at: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE mini_programs SET name = $2, mchid = $3, sub_mchid = $4, enabled = $5, \
             app_secret = $6, updated_at = $7, push_settings = $9 WHERE appid = $1 AND updated_at = $8",
        )
        .bind(&a.appid)
        .bind(&a.name)
        .bind(&a.mchid)
        .bind(&a.sub_mchid)
        .bind(i64::from(a.enabled))
        .bind(&a.app_secret)
        .bind(a.updated_at)
        .bind(expected_updated_at)
        .bind(&a.push_settings)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await
    }

    /// One mini program.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mini_program(&self, appid: &str) -> Result<Option<MiniProgramRecord>, StoreError> {
        let row: Option<MiniProgramRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {MINI_PROGRAM_COLUMNS} FROM mini_programs WHERE appid = $1"
        )))
        .bind(appid)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(MiniProgramRecord::try_from).transpose()
    }

    /// The mini programs, by appid: all, or those paying through one merchant.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mini_programs(
        &self,
        mchid: Option<&str>,
    ) -> Result<Vec<MiniProgramRecord>, StoreError> {
        let rows: Vec<MiniProgramRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {MINI_PROGRAM_COLUMNS} FROM mini_programs \
             WHERE $1 = '' OR mchid = $1 ORDER BY appid"
        )))
        .bind(mchid.unwrap_or(""))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(MiniProgramRecord::try_from).collect()
    }

    /// Adds a provider's sub-merchant; `false` when the provider has it already.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert_sub_merchant(&self, s: &SubMerchantRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO sub_merchants (sp_mchid, sub_mchid, name, sub_appid, enabled, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (sp_mchid, sub_mchid) DO NOTHING",
        )
        .bind(&s.sp_mchid)
        .bind(&s.sub_mchid)
        .bind(&s.name)
        .bind(&s.sub_appid)
        .bind(i64::from(s.enabled))
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await
    }

    /// Writes the name, sub_appid and flag of a sub-merchant last changed at
    /// `expected_updated_at`; `false` otherwise.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn replace_sub_merchant(
        &self,
        s: &SubMerchantRecord,
        expected_updated_at: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE sub_merchants SET name = $3, sub_appid = $4, enabled = $5, updated_at = $6 \
             WHERE sp_mchid = $1 AND sub_mchid = $2 AND updated_at = $7",
        )
        .bind(&s.sp_mchid)
        .bind(&s.sub_mchid)
        .bind(&s.name)
        .bind(&s.sub_appid)
        .bind(i64::from(s.enabled))
        .bind(s.updated_at)
        .bind(expected_updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await
    }

    /// One sub-merchant of a provider.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn sub_merchant(
        &self,
        sp_mchid: &str,
        sub_mchid: &str,
    ) -> Result<Option<SubMerchantRecord>, StoreError> {
        let row: Option<SubMerchantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUB_MERCHANT_COLUMNS} FROM sub_merchants WHERE sp_mchid = $1 AND sub_mchid = $2"
        )))
        .bind(sp_mchid)
        .bind(sub_mchid)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        Ok(row.map(SubMerchantRecord::from))
    }

    /// A provider's sub-merchants, by sub_mchid.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn sub_merchants(
        &self,
        sp_mchid: &str,
    ) -> Result<Vec<SubMerchantRecord>, StoreError> {
        let rows: Vec<SubMerchantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUB_MERCHANT_COLUMNS} FROM sub_merchants WHERE sp_mchid = $1 ORDER BY sub_mchid"
        )))
        .bind(sp_mchid)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        Ok(rows.into_iter().map(SubMerchantRecord::from).collect())
    }

    /// Adds an operator with the SHA-256 hex of its token.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a foreign-key violation for an unknown merchant).
    pub async fn insert_operator(
        &self,
        o: &OperatorRecord,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO operators (id, mchid, name, token_hash, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&o.id)
        .bind(&o.mchid)
        .bind(&o.name)
        .bind(token_hash)
        .bind(o.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await?;
        Ok(())
    }

    /// Revokes an operator: its token is refused from now on. Returns the operator (revoked
    /// then, or earlier), `None` for an unknown id.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn revoke_operator(&self, id: &str) -> Result<Option<OperatorRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE operators SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_registry_write(tx, done == 1).await?;
        let row: Option<OperatorRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        Ok(row.map(OperatorRecord::from))
    }

    /// The live (not revoked) operator of a token hash.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn operator_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<OperatorRecord>, StoreError> {
        let row: Option<OperatorRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE token_hash = $1 AND revoked_at IS NULL"
        )))
        .bind(token_hash)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        Ok(row.map(OperatorRecord::from))
    }

    /// The operators, oldest first, revoked ones included: all, or one merchant's.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn operators(&self, mchid: Option<&str>) -> Result<Vec<OperatorRecord>, StoreError> {
        let rows: Vec<OperatorRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE $1 = '' OR mchid = $1 \
             ORDER BY created_at, id"
        )))
        .bind(mchid.unwrap_or(""))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        Ok(rows.into_iter().map(OperatorRecord::from).collect())
    }
}
