//! The registry of merchants and mini programs: register and update merchants from their
//! credentials (checked as the merchant file's are, then sealed under the master key), their
//! mini programs, a provider's sub-merchants, and the merchants' operators; the merchant file's
//! merchant and mini program are listed too (`source: file`, their secrets stay in the file).
//!
//! [`load_credentials`] and [`load_app_secret`] open the seals back into the same checked
//! credentials the file gives (for the payments' routing, which is not done yet: today the
//! payments still use the one merchant of the file).

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

use crate::merchant::{CredentialContents, Merchant, MerchantCredentials};
use crate::registry::Directory;
use crate::sealing::{self, MasterKey, SealError};
use crate::store::{
    ApiVersion, MerchantKind, MerchantRecord, MiniProgramRecord, OperatorRecord, RegistrySource,
    Store, StoreError, SubMerchantRecord, next_change, now_ms,
};
use crate::wechat::{WeChat, WeChatEndpoints};

/// Why a registry change or read was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// A field is invalid; the message names it (never a secret's value).
    #[error("{0}")]
    Invalid(String),
    /// No such merchant, mini program, sub-merchant or operator.
    #[error("{0}")]
    NotFound(&'static str),
    /// The mchid, appid or sub_mchid is registered already.
    #[error("{0}")]
    Exists(String),
    /// Secrets cannot be stored: no master key is configured.
    #[error(
        "no master key is configured: set WXPAY_MASTER_KEY or WXPAY_MASTER_KEY_FILE to store secrets"
    )]
    MasterKeyRequired,
    /// The merchant or mini program comes from the merchant file, whose secrets and merchant
    /// are changed in the file.
    #[error("{0}")]
    FromFile(String),
    /// Sub-merchants belong to service providers.
    #[error("{0}")]
    NotProvider(String),
    /// The row changed between the read and the write: retry.
    #[error("it was changed meanwhile by another request: read it again and retry")]
    Changed,
    /// The stored secrets do not open with this master key (another key sealed them, or they
    /// were altered).
    #[error("{0}")]
    Unreadable(String),
    /// No randomness.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A merchant to register (`POST /admin/merchants`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMerchant {
    /// The merchant id (1 to 32 of A-Z a-z 0-9 _ -).
    pub mchid: String,
    /// A name for people (1 to 64 characters).
    pub name: String,
    /// `direct` or `provider` (a 服务商, paying through its sub-merchants).
    pub kind: String,
    /// A provider's own appid (`sp_appid`: the mini program or official account it signs its
    /// requests as); required for a provider, refused for a direct merchant.
    #[serde(default)]
    pub sp_appid: Option<String>,
    /// `v3` or `v2`.
    pub api_version: String,
    /// The API v2 key (32 visible ASCII characters).
    #[schema(value_type = String)]
    pub api_v2_key: SecretString,
    /// The APIv3 key (32 characters).
    #[schema(value_type = String)]
    pub api_v3_key: SecretString,
    /// The serial of `apiclient_cert`.
    pub merchant_serial: String,
    /// `apiclient_key.pem`, as text.
    #[schema(value_type = String)]
    pub apiclient_key: SecretString,
    /// `apiclient_cert.pem`, as text.
    pub apiclient_cert: String,
    /// `apiclient_cert.p12` in base64 (its password is the mchid), for v2 refunds.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub apiclient_cert_p12: Option<SecretString>,
    /// The platform certificate (PEM); this or the public key is required.
    #[serde(default)]
    pub platform_cert: Option<String>,
    /// The WeChat Pay public key's id (`PUB_KEY_ID_...`), with `wechatpay_public_key`.
    #[serde(default)]
    pub wechatpay_public_key_id: Option<String>,
    /// The WeChat Pay public key (PEM).
    #[serde(default)]
    pub wechatpay_public_key: Option<String>,
    /// Whether it may be used (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for NewMerchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMerchant")
            .field("mchid", &self.mchid)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A change of a merchant (`PATCH /admin/merchants/{mchid}`): absent fields are kept. The
/// credential fields replace the stored ones, and the result is checked as a whole; `null`
/// removes an optional one (`"platform_cert": null` after switching to the public key).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantPatch {
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it may be used.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `v3` or `v2`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// A provider's own appid (`sp_appid`).
    #[serde(default)]
    pub sp_appid: Option<String>,
    /// The API v2 key.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub api_v2_key: Option<SecretString>,
    /// The APIv3 key.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub api_v3_key: Option<SecretString>,
    /// The serial of `apiclient_cert` (with a new key and certificate).
    #[serde(default)]
    pub merchant_serial: Option<String>,
    /// `apiclient_key.pem`, as text.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub apiclient_key: Option<SecretString>,
    /// `apiclient_cert.pem`, as text.
    #[serde(default)]
    pub apiclient_cert: Option<String>,
    /// `apiclient_cert.p12` in base64; `null` removes it.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub apiclient_cert_p12: Option<Option<SecretString>>,
    /// The platform certificate (PEM); `null` removes it.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub platform_cert: Option<Option<String>>,
    /// The WeChat Pay public key's id; `null` removes it.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub wechatpay_public_key_id: Option<Option<String>>,
    /// The WeChat Pay public key (PEM); `null` removes it.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub wechatpay_public_key: Option<Option<String>>,
}

impl std::fmt::Debug for MerchantPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantPatch")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

impl MerchantPatch {
    fn changes_credentials(&self) -> bool {
        self.api_v2_key.is_some()
            || self.api_v3_key.is_some()
            || self.merchant_serial.is_some()
            || self.apiclient_key.is_some()
            || self.apiclient_cert.is_some()
            || self.apiclient_cert_p12.is_some()
            || self.platform_cert.is_some()
            || self.wechatpay_public_key_id.is_some()
            || self.wechatpay_public_key.is_some()
    }
}

/// A present field, `null` included: `Some(None)` for `null`, `None` (by `default`) when absent.
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A mini program to register (`POST /admin/apps`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMiniProgram {
    /// The appid (1 to 32 of A-Z a-z 0-9 _ -).
    pub appid: String,
    /// A name for people.
    pub name: String,
    /// Its AppSecret (1 to 128 visible ASCII characters).
    #[schema(value_type = String)]
    pub app_secret: SecretString,
    /// The merchant it pays through.
    pub mchid: String,
    /// With a provider: the sub-merchant it pays through (required then).
    #[serde(default)]
    pub sub_mchid: Option<String>,
    /// Whether it may be used (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for NewMiniProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMiniProgram")
            .field("appid", &self.appid)
            .field("mchid", &self.mchid)
            .finish_non_exhaustive()
    }
}

/// A change of a mini program (`PATCH /admin/apps/{appid}`): absent fields are kept.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MiniProgramPatch {
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it may be used.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new AppSecret.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub app_secret: Option<SecretString>,
    /// Another merchant to pay through.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Another sub-merchant; `null`: none.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub sub_mchid: Option<Option<String>>,
    /// The Token of the mini program's message push (消息推送: 3 to 32 letters and digits),
    /// as set in its admin console; `null` removes the push settings. Also for the merchant
    /// file's mini program.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub push_token: Option<Option<SecretString>>,
    /// The EncodingAESKey of compatible or safe mode (43 characters); `null`: plaintext mode.
    /// Given with `push_token`.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub push_encoding_aes_key: Option<Option<SecretString>>,
}

impl std::fmt::Debug for MiniProgramPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniProgramPatch")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("mchid", &self.mchid)
            .finish_non_exhaustive()
    }
}

/// A provider's sub-merchant to add (`POST /admin/merchants/{mchid}/sub-merchants`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubMerchant {
    /// The sub-merchant's id (特约商户号).
    pub sub_mchid: String,
    /// A name for people.
    pub name: String,
    /// The sub-merchant's own mini program, if any.
    #[serde(default)]
    pub sub_appid: Option<String>,
    /// Whether it may be used (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A change of a sub-merchant: absent fields are kept.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubMerchantPatch {
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// The sub-merchant's own mini program; `null`: none.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub sub_appid: Option<Option<String>>,
    /// Whether it may be used.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// What is sealed in `merchants.credentials`: the credentials as contents.
#[derive(Serialize)]
struct SealedOut<'a> {
    mchid: &'a str,
    api_v2_key: &'a str,
    api_v3_key: &'a str,
    merchant_serial: &'a str,
    apiclient_key: &'a str,
    apiclient_cert: &'a str,
    apiclient_cert_p12: Option<String>,
    platform_cert: Option<&'a str>,
    wechatpay_public_key_id: Option<&'a str>,
    wechatpay_public_key: Option<&'a str>,
}

#[derive(Deserialize)]
struct SealedIn {
    mchid: String,
    api_v2_key: SecretString,
    api_v3_key: SecretString,
    merchant_serial: String,
    apiclient_key: SecretString,
    apiclient_cert: String,
    apiclient_cert_p12: Option<SecretString>,
    platform_cert: Option<String>,
    wechatpay_public_key_id: Option<String>,
    wechatpay_public_key: Option<String>,
}

/// The associated data of a merchant's sealed credentials.
#[must_use]
pub fn credentials_aad(mchid: &str) -> String {
    format!("merchant:{mchid}:credentials")
}

/// The associated data of a mini program's sealed AppSecret.
#[must_use]
pub fn app_secret_aad(appid: &str) -> String {
    format!("app:{appid}:app_secret")
}

fn seal_contents(key: &MasterKey, c: &CredentialContents) -> Result<String, TenantError> {
    let out = SealedOut {
        mchid: &c.mchid,
        api_v2_key: c.api_v2_key.expose_secret(),
        api_v3_key: c.api_v3_key.expose_secret(),
        merchant_serial: c.merchant_serial.trim(),
        apiclient_key: c.apiclient_key.expose_secret(),
        apiclient_cert: &c.apiclient_cert,
        apiclient_cert_p12: c
            .apiclient_cert_p12
            .as_ref()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der.expose_secret())),
        platform_cert: c.platform_cert.as_deref(),
        wechatpay_public_key_id: c.wechatpay_public_key_id.as_deref(),
        wechatpay_public_key: c.wechatpay_public_key.as_deref(),
    };
    // Held as a secret, so that the plaintext is zeroed once sealed.
    let plain = SecretSlice::from(
        serde_json::to_vec(&out).map_err(|e| TenantError::Invalid(format!("credentials: {e}")))?,
    );
    Ok(sealing::seal(
        key,
        &credentials_aad(&c.mchid),
        plain.expose_secret(),
    )?)
}

fn unreadable(what: &str, e: &dyn std::fmt::Display) -> TenantError {
    TenantError::Unreadable(format!(
        "the stored {what} cannot be read with the configured WXPAY_MASTER_KEY: {e}"
    ))
}

fn open_contents(
    key: &MasterKey,
    mchid: &str,
    sealed: &str,
) -> Result<CredentialContents, TenantError> {
    let what = format!("credentials of merchant {mchid}");
    let plain =
        sealing::open(key, &credentials_aad(mchid), sealed).map_err(|e| unreadable(&what, &e))?;
    let s: SealedIn = serde_json::from_slice(plain.expose_secret())
        .map_err(|_| unreadable(&what, &"not the credentials' format"))?;
    if s.mchid != mchid {
        return Err(unreadable(&what, &"they are another merchant's"));
    }
    let p12 = s
        .apiclient_cert_p12
        .map(|b64| decode_p12(b64.expose_secret()))
        .transpose()
        .map_err(|_| unreadable(&what, &"apiclient_cert_p12 is not base64"))?;
    Ok(CredentialContents {
        mchid: s.mchid,
        api_v2_key: s.api_v2_key,
        api_v3_key: s.api_v3_key,
        merchant_serial: s.merchant_serial,
        apiclient_key: s.apiclient_key,
        apiclient_cert: s.apiclient_cert,
        apiclient_cert_p12: p12,
        platform_cert: s.platform_cert,
        wechatpay_public_key_id: s.wechatpay_public_key_id,
        wechatpay_public_key: s.wechatpay_public_key,
    })
}

fn decode_p12(b64: &str) -> Result<SecretSlice<u8>, TenantError> {
    let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .map(SecretSlice::from)
        .map_err(|_| TenantError::Invalid("apiclient_cert_p12 must be the file in base64".into()))
}

/// An id: 1 to 32 of A-Z a-z 0-9 _ -.
fn check_id(field: &str, value: &str) -> Result<String, TenantError> {
    let v = value.trim();
    if (1..=32).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(v.to_owned())
    } else {
        Err(TenantError::Invalid(format!(
            "{field} must be 1 to 32 of A-Z a-z 0-9 _ -"
        )))
    }
}

/// Whether a path parameter can be an id (anything else is not found).
#[must_use]
pub fn is_id(value: &str) -> bool {
    check_id("id", value).is_ok_and(|v| v == value)
}

fn check_name(field: &str, value: &str) -> Result<String, TenantError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > 64 || v.chars().any(char::is_control) {
        return Err(TenantError::Invalid(format!(
            "{field} must be 1 to 64 characters without control characters"
        )));
    }
    Ok(v.to_owned())
}

fn parse_kind(text: &str) -> Result<MerchantKind, TenantError> {
    match text.trim() {
        "direct" => Ok(MerchantKind::Direct),
        "provider" => Ok(MerchantKind::Provider),
        _ => Err(TenantError::Invalid(
            "kind must be direct or provider".into(),
        )),
    }
}

/// A provider's `sp_appid` (required), or none for a direct merchant.
fn check_sp_appid(
    kind: MerchantKind,
    sp_appid: Option<&str>,
) -> Result<Option<String>, TenantError> {
    match (kind, sp_appid) {
        (MerchantKind::Provider, Some(appid)) => Ok(Some(check_id("sp_appid", appid)?)),
        (MerchantKind::Provider, None) => Err(TenantError::Invalid(
            "sp_appid: a service provider needs its own appid (sp_appid), which it signs its requests as".into(),
        )),
        (MerchantKind::Direct, None) => Ok(None),
        (MerchantKind::Direct, Some(_)) => Err(TenantError::Invalid(
            "sp_appid: only a service provider has one".into(),
        )),
    }
}

fn parse_api_version(text: &str) -> Result<ApiVersion, TenantError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "v3" => Ok(ApiVersion::V3),
        "v2" => Ok(ApiVersion::V2),
        _ => Err(TenantError::Invalid("api_version must be v3 or v2".into())),
    }
}

fn check_app_secret(secret: &SecretString) -> Result<(), TenantError> {
    let s = secret.expose_secret();
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TenantError::Invalid(
            "app_secret must be 1 to 128 visible ASCII characters".into(),
        ));
    }
    Ok(())
}

fn validated(c: &CredentialContents) -> Result<MerchantCredentials, TenantError> {
    c.validate().map_err(|e| TenantError::Invalid(e.message))
}

/// Registers a merchant: its credentials are checked as a whole (as the merchant file's), then
/// sealed under the master key. Nothing is written when anything is refused.
///
/// # Errors
/// [`TenantError::MasterKeyRequired`] without a key, [`TenantError::Invalid`] naming the field,
/// [`TenantError::Exists`] for a registered mchid.
pub async fn register_merchant(
    store: &Store,
    key: Option<&MasterKey>,
    new: NewMerchant,
) -> Result<MerchantRecord, TenantError> {
    let key = key.ok_or(TenantError::MasterKeyRequired)?;
    let mchid = check_id("mchid", &new.mchid)?;
    let name = check_name("name", &new.name)?;
    let kind = parse_kind(&new.kind)?;
    let sp_appid = check_sp_appid(kind, new.sp_appid.as_deref())?;
    let api_version = parse_api_version(&new.api_version)?;
    let contents = CredentialContents {
        mchid: mchid.clone(),
        api_v2_key: new.api_v2_key,
        api_v3_key: new.api_v3_key,
        merchant_serial: new.merchant_serial,
        apiclient_key: new.apiclient_key,
        apiclient_cert: new.apiclient_cert,
        apiclient_cert_p12: new
            .apiclient_cert_p12
            .filter(|p| !p.expose_secret().trim().is_empty())
            .map(|p| decode_p12(p.expose_secret()))
            .transpose()?,
        platform_cert: new.platform_cert,
        wechatpay_public_key_id: new.wechatpay_public_key_id,
        wechatpay_public_key: new.wechatpay_public_key,
    };
    let checked = validated(&contents)?;
    if store.merchant(&mchid).await?.is_some() {
        return Err(TenantError::Exists(format!(
            "merchant {mchid} is registered already"
        )));
    }
    let now = now_ms();
    let record = MerchantRecord {
        mchid: mchid.clone(),
        name,
        kind,
        sp_appid,
        api_version,
        enabled: new.enabled.unwrap_or(true),
        merchant_serial: checked.merchant_serial.clone(),
        wechatpay_public_key_id: checked.public_key.as_ref().map(|(id, _)| id.clone()),
        has_platform_cert: checked.platform_cert.is_some(),
        has_p12: checked.p12.is_some(),
        source: RegistrySource::Registered,
        credentials: Some(seal_contents(key, &contents)?),
        created_at: now,
        updated_at: now,
    };
    if !store.insert_merchant(&record).await? {
        return Err(TenantError::Exists(format!(
            "merchant {mchid} is registered already"
        )));
    }
    tracing::info!(mchid = %mchid, kind = kind.as_str(), "merchant registered");
    Ok(record)
}

/// Changes a merchant: its name, flag, API version, and (registered merchants) its
/// credentials, replaced in part or whole and checked again as a whole.
///
/// # Errors
/// [`TenantError::NotFound`], [`TenantError::Invalid`], [`TenantError::FromFile`] for new
/// credentials of the file's merchant, [`TenantError::MasterKeyRequired`],
/// [`TenantError::Unreadable`], [`TenantError::Changed`].
pub async fn update_merchant(
    store: &Store,
    key: Option<&MasterKey>,
    mchid: &str,
    patch: MerchantPatch,
) -> Result<MerchantRecord, TenantError> {
    let current = store
        .merchant(mchid)
        .await?
        .ok_or(TenantError::NotFound("no such merchant"))?;
    let mut next = current.clone();
    if let Some(name) = &patch.name {
        next.name = check_name("name", name)?;
    }
    if let Some(enabled) = patch.enabled {
        next.enabled = enabled;
    }
    if let Some(v) = &patch.api_version {
        next.api_version = parse_api_version(v)?;
    }
    if let Some(v) = &patch.sp_appid {
        next.sp_appid = check_sp_appid(current.kind, Some(v))?;
    }
    if patch.changes_credentials() {
        if current.source == RegistrySource::File {
            return Err(TenantError::FromFile(format!(
                "merchant {mchid} comes from the merchant file: change its credentials there"
            )));
        }
        let key = key.ok_or(TenantError::MasterKeyRequired)?;
        let sealed = current
            .credentials
            .as_deref()
            .ok_or_else(|| unreadable("credentials", &"none are stored"))?;
        let mut c = open_contents(key, mchid, sealed)?;
        if let Some(v) = patch.api_v2_key {
            c.api_v2_key = v;
        }
        if let Some(v) = patch.api_v3_key {
            c.api_v3_key = v;
        }
        if let Some(v) = patch.merchant_serial {
            c.merchant_serial = v;
        }
        if let Some(v) = patch.apiclient_key {
            c.apiclient_key = v;
        }
        if let Some(v) = patch.apiclient_cert {
            c.apiclient_cert = v;
        }
        if let Some(v) = patch.apiclient_cert_p12 {
            c.apiclient_cert_p12 = v
                .filter(|p| !p.expose_secret().trim().is_empty())
                .map(|p| decode_p12(p.expose_secret()))
                .transpose()?;
        }
        if let Some(v) = patch.platform_cert {
            c.platform_cert = v;
        }
        if let Some(v) = patch.wechatpay_public_key_id {
            c.wechatpay_public_key_id = v;
        }
        if let Some(v) = patch.wechatpay_public_key {
            c.wechatpay_public_key = v;
        }
        let checked = validated(&c)?;
        next.merchant_serial = checked.merchant_serial.clone();
        next.wechatpay_public_key_id = checked.public_key.as_ref().map(|(id, _)| id.clone());
        next.has_platform_cert = checked.platform_cert.is_some();
        next.has_p12 = checked.p12.is_some();
        next.credentials = Some(seal_contents(key, &c)?);
    }
    if next == current {
        return Ok(current);
    }
    next.updated_at = next_change(current.updated_at);
    if !store.replace_merchant(&next, current.updated_at).await? {
        return Err(TenantError::Changed);
    }
    tracing::info!(mchid = %mchid, enabled = next.enabled, "merchant changed");
    Ok(next)
}

/// A registered merchant's credentials, opened and checked again: what the merchant file gives
/// ([`MerchantCredentials::into_merchant`] makes the [`Merchant`] of one of its mini programs).
///
/// # Errors
/// [`TenantError::NotFound`], [`TenantError::FromFile`] (the file's merchant: its credentials
/// are in the file), [`TenantError::MasterKeyRequired`], [`TenantError::Unreadable`] (another
/// master key, another row's value, altered, or no longer valid).
pub async fn load_credentials(
    store: &Store,
    key: Option<&MasterKey>,
    mchid: &str,
) -> Result<MerchantCredentials, TenantError> {
    let record = store
        .merchant(mchid)
        .await?
        .ok_or(TenantError::NotFound("no such merchant"))?;
    let Some(sealed) = record.credentials.as_deref() else {
        return Err(TenantError::FromFile(format!(
            "merchant {mchid} comes from the merchant file: its credentials are there"
        )));
    };
    let key = key.ok_or(TenantError::MasterKeyRequired)?;
    let contents = open_contents(key, mchid, sealed)?;
    contents
        .validate()
        .map_err(|e| unreadable(&format!("credentials of merchant {mchid}"), &e))
}

/// A registered mini program's AppSecret, opened.
///
/// # Errors
/// As [`load_credentials`].
pub async fn load_app_secret(
    store: &Store,
    key: Option<&MasterKey>,
    appid: &str,
) -> Result<SecretString, TenantError> {
    let record = store
        .mini_program(appid)
        .await?
        .ok_or(TenantError::NotFound("no such mini program"))?;
    let Some(sealed) = record.app_secret.as_deref() else {
        return Err(TenantError::FromFile(format!(
            "mini program {appid} comes from the merchant file: its AppSecret is there"
        )));
    };
    let key = key.ok_or(TenantError::MasterKeyRequired)?;
    let what = format!("AppSecret of mini program {appid}");
    let plain =
        sealing::open(key, &app_secret_aad(appid), sealed).map_err(|e| unreadable(&what, &e))?;
    let text =
        std::str::from_utf8(plain.expose_secret()).map_err(|_| unreadable(&what, &"not text"))?;
    Ok(SecretString::from(text.to_owned()))
}

/// Checks that a mini program can pay through `mchid` (and `sub_mchid`): the merchant exists;
/// a provider's mini program names one of its sub-merchants, a direct merchant's names none.
async fn check_payee(
    store: &Store,
    mchid: &str,
    sub_mchid: Option<&str>,
) -> Result<(), TenantError> {
    let merchant = store
        .merchant(mchid)
        .await?
        .ok_or_else(|| TenantError::Invalid(format!("mchid: no merchant {mchid} is registered")))?;
    match (merchant.kind, sub_mchid) {
        (MerchantKind::Direct, None) => Ok(()),
        (MerchantKind::Direct, Some(_)) => Err(TenantError::NotProvider(format!(
            "sub_mchid: merchant {mchid} is a direct merchant; sub-merchants belong to a service provider"
        ))),
        (MerchantKind::Provider, None) => Err(TenantError::Invalid(format!(
            "sub_mchid: merchant {mchid} is a service provider, whose mini programs pay through one of its sub-merchants"
        ))),
        (MerchantKind::Provider, Some(sub)) => {
            if store.sub_merchant(mchid, sub).await?.is_some() {
                Ok(())
            } else {
                Err(TenantError::Invalid(format!(
                    "sub_mchid: {sub} is not a sub-merchant of {mchid}"
                )))
            }
        }
    }
}

/// Registers a mini program: its AppSecret sealed, its merchant (and sub-merchant) checked.
///
/// # Errors
/// [`TenantError::MasterKeyRequired`], [`TenantError::Invalid`], [`TenantError::NotProvider`],
/// [`TenantError::Exists`].
pub async fn register_mini_program(
    store: &Store,
    key: Option<&MasterKey>,
    new: NewMiniProgram,
) -> Result<MiniProgramRecord, TenantError> {
    let key = key.ok_or(TenantError::MasterKeyRequired)?;
    let appid = check_id("appid", &new.appid)?;
    let name = check_name("name", &new.name)?;
    check_app_secret(&new.app_secret)?;
    let mchid = check_id("mchid", &new.mchid)?;
    let sub_mchid = new
        .sub_mchid
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| check_id("sub_mchid", s))
        .transpose()?;
    check_payee(store, &mchid, sub_mchid.as_deref()).await?;
    if store.mini_program(&appid).await?.is_some() {
        return Err(TenantError::Exists(format!(
            "mini program {appid} is registered already"
        )));
    }
    let now = now_ms();
    let record = MiniProgramRecord {
        app_secret: Some(sealing::seal(
            key,
            &app_secret_aad(&appid),
            new.app_secret.expose_secret().as_bytes(),
        )?),
        appid: appid.clone(),
        name,
        mchid,
        sub_mchid,
        enabled: new.enabled.unwrap_or(true),
        push_settings: None,
        source: RegistrySource::Registered,
        created_at: now,
        updated_at: now,
    };
    if !store.insert_mini_program(&record).await? {
        return Err(TenantError::Exists(format!(
            "mini program {appid} is registered already"
        )));
    }
    tracing::info!(appid = %appid, mchid = %record.mchid, "mini program registered");
    Ok(record)
}

/// Changes a mini program: name, flag, AppSecret, the merchant and sub-merchant it pays
/// through (the file's mini program: name and flag only).
///
/// # Errors
/// [`TenantError::NotFound`], [`TenantError::Invalid`], [`TenantError::FromFile`],
/// [`TenantError::MasterKeyRequired`], [`TenantError::NotProvider`], [`TenantError::Changed`].
pub async fn update_mini_program(
    store: &Store,
    key: Option<&MasterKey>,
    appid: &str,
    patch: MiniProgramPatch,
) -> Result<MiniProgramRecord, TenantError> {
    let current = store
        .mini_program(appid)
        .await?
        .ok_or(TenantError::NotFound("no such mini program"))?;
    let mut next = current.clone();
    if let Some(name) = &patch.name {
        next.name = check_name("name", name)?;
    }
    if let Some(enabled) = patch.enabled {
        next.enabled = enabled;
    }
    let moves = patch.mchid.is_some() || patch.sub_mchid.is_some();
    if current.source == RegistrySource::File && (moves || patch.app_secret.is_some()) {
        return Err(TenantError::FromFile(format!(
            "mini program {appid} comes from the merchant file: change its AppSecret and merchant there"
        )));
    }
    if patch.push_token.is_some() || patch.push_encoding_aes_key.is_some() {
        next.push_settings = match &patch.push_token {
            Some(Some(token)) => {
                let key = key.ok_or(TenantError::MasterKeyRequired)?;
                let aes = patch.push_encoding_aes_key.clone().flatten();
                Some(crate::core::push::seal_settings(
                    key,
                    appid,
                    token,
                    aes.as_ref(),
                )?)
            }
            Some(None) => None,
            None => {
                return Err(TenantError::Invalid(
                    "push_encoding_aes_key: give it with push_token".into(),
                ));
            }
        };
    }
    if let Some(secret) = &patch.app_secret {
        let key = key.ok_or(TenantError::MasterKeyRequired)?;
        check_app_secret(secret)?;
        next.app_secret = Some(sealing::seal(
            key,
            &app_secret_aad(appid),
            secret.expose_secret().as_bytes(),
        )?);
    }
    if moves {
        if let Some(mchid) = &patch.mchid {
            next.mchid = check_id("mchid", mchid)?;
        }
        if let Some(sub) = &patch.sub_mchid {
            next.sub_mchid = sub
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| check_id("sub_mchid", s))
                .transpose()?;
        }
        check_payee(store, &next.mchid, next.sub_mchid.as_deref()).await?;
    }
    if next == current {
        return Ok(current);
    }
    next.updated_at = next_change(current.updated_at);
    if !store
        .replace_mini_program(&next, current.updated_at)
        .await?
    {
        return Err(TenantError::Changed);
    }
    tracing::info!(appid = %appid, enabled = next.enabled, "mini program changed");
    Ok(next)
}

async fn provider(store: &Store, sp_mchid: &str) -> Result<MerchantRecord, TenantError> {
    let merchant = store
        .merchant(sp_mchid)
        .await?
        .ok_or(TenantError::NotFound("no such merchant"))?;
    if merchant.kind != MerchantKind::Provider {
        return Err(TenantError::NotProvider(format!(
            "merchant {sp_mchid} is a direct merchant: sub-merchants belong to a service provider"
        )));
    }
    Ok(merchant)
}

/// Adds a sub-merchant (特约商户) to a service provider.
///
/// # Errors
/// [`TenantError::NotFound`] (no such merchant), [`TenantError::NotProvider`] (a direct
/// merchant), [`TenantError::Invalid`], [`TenantError::Exists`].
pub async fn add_sub_merchant(
    store: &Store,
    sp_mchid: &str,
    new: NewSubMerchant,
) -> Result<SubMerchantRecord, TenantError> {
    provider(store, sp_mchid).await?;
    let sub_mchid = check_id("sub_mchid", &new.sub_mchid)?;
    let name = check_name("name", &new.name)?;
    let sub_appid = new
        .sub_appid
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| check_id("sub_appid", s))
        .transpose()?;
    let now = now_ms();
    let record = SubMerchantRecord {
        sp_mchid: sp_mchid.to_owned(),
        sub_mchid: sub_mchid.clone(),
        name,
        sub_appid,
        enabled: new.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    if !store.insert_sub_merchant(&record).await? {
        return Err(TenantError::Exists(format!(
            "{sub_mchid} is a sub-merchant of {sp_mchid} already"
        )));
    }
    Ok(record)
}

/// Changes a sub-merchant's name, sub_appid or flag.
///
/// # Errors
/// [`TenantError::NotFound`], [`TenantError::Invalid`], [`TenantError::Changed`].
pub async fn update_sub_merchant(
    store: &Store,
    sp_mchid: &str,
    sub_mchid: &str,
    patch: SubMerchantPatch,
) -> Result<SubMerchantRecord, TenantError> {
    let current = store
        .sub_merchant(sp_mchid, sub_mchid)
        .await?
        .ok_or(TenantError::NotFound("no such sub-merchant"))?;
    let mut next = current.clone();
    if let Some(name) = &patch.name {
        next.name = check_name("name", name)?;
    }
    if let Some(appid) = &patch.sub_appid {
        next.sub_appid = appid
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| check_id("sub_appid", s))
            .transpose()?;
    }
    if let Some(enabled) = patch.enabled {
        next.enabled = enabled;
    }
    if next == current {
        return Ok(current);
    }
    next.updated_at = next_change(current.updated_at);
    if !store
        .replace_sub_merchant(&next, current.updated_at)
        .await?
    {
        return Err(TenantError::Changed);
    }
    Ok(next)
}

/// An operator and its token, shown once.
#[derive(Debug)]
pub struct NewOperator {
    /// The operator.
    pub operator: OperatorRecord,
    /// Its bearer token (only its hash is stored).
    pub token: SecretString,
}

/// Creates an operator of a merchant: a bearer token, returned once, stored hashed.
///
/// # Errors
/// [`TenantError::Invalid`] (unknown merchant, bad name), [`TenantError::Seal`] (no
/// randomness).
pub async fn create_operator(
    store: &Store,
    mchid: &str,
    name: &str,
) -> Result<NewOperator, TenantError> {
    let mchid = check_id("mchid", mchid)?;
    let name = check_name("name", name)?;
    if store.merchant(&mchid).await?.is_none() {
        return Err(TenantError::Invalid(format!(
            "mchid: no merchant {mchid} is registered"
        )));
    }
    let token = crate::core::login::new_token().map_err(|_| SealError)?;
    let operator = OperatorRecord {
        id: format!("op_{}", wxpay::nonce::random_string(16)),
        mchid,
        name,
        created_at: now_ms(),
        revoked_at: None,
    };
    store
        .insert_operator(&operator, &crate::core::login::token_hash(&token))
        .await?;
    tracing::info!(operator = %operator.id, mchid = %operator.mchid, "operator created");
    Ok(NewOperator {
        operator,
        token: SecretString::from(token),
    })
}

/// Revokes an operator: its token is refused from now on.
///
/// # Errors
/// [`TenantError::NotFound`].
pub async fn revoke_operator(store: &Store, id: &str) -> Result<OperatorRecord, TenantError> {
    let operator = store
        .revoke_operator(id)
        .await?
        .ok_or(TenantError::NotFound("no such operator"))?;
    tracing::info!(operator = %operator.id, "operator revoked");
    Ok(operator)
}

/// Lists the merchant file's merchant and mini program in the registry (`source: file`): their
/// non-secret fields, no secrets (those stay in the file). Idempotent: called at every start,
/// it writes only what changed in the file; a name, flag or API version set through the back
/// office is kept. An mchid or appid registered through the back office is left alone (with a
/// warning).
///
/// # Errors
/// [`StoreError`].
pub async fn import_file_merchant(
    store: &Store,
    merchant: &Merchant,
    api_version: ApiVersion,
) -> Result<(), StoreError> {
    let now = now_ms();
    let from_file = MerchantRecord {
        mchid: merchant.mchid.clone(),
        name: format!("merchant {}", merchant.mchid),
        kind: MerchantKind::Direct,
        sp_appid: None,
        api_version,
        enabled: true,
        merchant_serial: merchant.merchant_serial.clone(),
        wechatpay_public_key_id: merchant.public_key.as_ref().map(|(id, _)| id.clone()),
        has_platform_cert: merchant.platform_cert.is_some(),
        has_p12: merchant.p12.is_some(),
        source: RegistrySource::File,
        credentials: None,
        created_at: now,
        updated_at: now,
    };
    match store.merchant(&merchant.mchid).await? {
        None => {
            store.insert_merchant(&from_file).await?;
        }
        Some(current) if current.source == RegistrySource::File => {
            let next = MerchantRecord {
                merchant_serial: from_file.merchant_serial,
                wechatpay_public_key_id: from_file.wechatpay_public_key_id,
                has_platform_cert: from_file.has_platform_cert,
                has_p12: from_file.has_p12,
                ..current.clone()
            };
            if next != current {
                let next = MerchantRecord {
                    updated_at: next_change(current.updated_at),
                    ..next
                };
                store.replace_merchant(&next, current.updated_at).await?;
            }
        }
        Some(_) => tracing::warn!(
            mchid = %merchant.mchid,
            "the merchant file's mchid is registered through the back office; the registered one is listed"
        ),
    }
    match store.mini_program(&merchant.appid).await? {
        None => {
            store
                .insert_mini_program(&MiniProgramRecord {
                    appid: merchant.appid.clone(),
                    name: format!("mini program {}", merchant.appid),
                    mchid: merchant.mchid.clone(),
                    sub_mchid: None,
                    enabled: true,
                    app_secret: None,
                    push_settings: None,
                    source: RegistrySource::File,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
        }
        Some(current)
            if current.source == RegistrySource::File && current.mchid != merchant.mchid =>
        {
            let next = MiniProgramRecord {
                mchid: merchant.mchid.clone(),
                sub_mchid: None,
                updated_at: next_change(current.updated_at),
                ..current.clone()
            };
            store
                .replace_mini_program(&next, current.updated_at)
                .await?;
        }
        Some(current) if current.source == RegistrySource::File => {}
        Some(_) => tracing::warn!(
            appid = %merchant.appid,
            "the merchant file's appid is registered through the back office; the registered one is listed"
        ),
    }
    Ok(())
}

/// What the routing [`Directory`] is built from besides the database: the merchant file's (or
/// the sandbox's) merchant and mini program, where WeChat is, and the master key.
#[derive(Clone, Debug)]
pub struct DirectorySources {
    /// The clients of the merchant file's merchant and mini program: always first.
    pub file: WeChat,
    /// The API v2/v3 the file's merchant uses for new orders.
    pub endpoints: WeChatEndpoints,
    /// An extra trusted CA (a simulator's), for every client.
    pub extra_ca_pem: Option<String>,
    /// Opens the registered secrets.
    pub key: Option<MasterKey>,
}

/// The routing directory of this moment: the file's mini program first, then every enabled
/// registered mini program with its merchant's clients (built once per merchant and bound to
/// each of its mini programs; a service provider's bound to its `sp_appid` and naming the
/// mini program's sub-merchant), and the disabled merchants and sub-merchants (they take no new
/// orders but still settle theirs). A mini program whose secrets do not open is left out and
/// logged.
///
/// # Errors
/// [`StoreError`] when the database cannot be read.
pub async fn directory(store: &Store, sources: &DirectorySources) -> Result<Directory, StoreError> {
    let mut directory = Directory::default();
    directory.add_app(sources.file.clone());
    let merchants = store.merchants().await?;
    for m in &merchants {
        if !m.enabled {
            directory.disable_merchant(&m.mchid);
        }
        if m.kind == MerchantKind::Provider {
            for sub in store.sub_merchants(&m.mchid).await? {
                if !sub.enabled {
                    directory.disable_sub_merchant(&m.mchid, &sub.sub_mchid);
                }
            }
        }
    }
    let mut apps = store.mini_programs(None).await?;
    apps.sort_by(|a, b| (a.created_at, &a.appid).cmp(&(b.created_at, &b.appid)));
    let mut clients: std::collections::HashMap<String, WeChat> = std::collections::HashMap::new();
    clients.insert(sources.file.mchid.clone(), sources.file.clone());
    for app in apps
        .iter()
        .filter(|a| a.enabled && a.source == RegistrySource::Registered)
    {
        let Some(merchant) = merchants.iter().find(|m| m.mchid == app.mchid) else {
            continue;
        };
        match app_clients(store, sources, merchant, app, &mut clients).await {
            Ok(wechat) => directory.add_app(wechat),
            Err(err) => {
                tracing::error!(appid = %app.appid, mchid = %app.mchid, error = %err, "a registered mini program cannot be served: left out");
            }
        }
    }
    // Providers and merchants without a mini program still receive their notifications (a
    // mini program moved away leaves its orders behind) and have their bills reconciled.
    for merchant in merchants
        .iter()
        .filter(|m| m.source == RegistrySource::Registered && !clients.contains_key(&m.mchid))
    {
        match base_clients(store, sources, merchant, None).await {
            Ok(wechat) => directory.add_merchant(wechat),
            Err(err) => {
                tracing::error!(mchid = %merchant.mchid, error = %err, "a registered merchant cannot be served: left out");
            }
        }
    }
    for wechat in clients.into_values() {
        directory.add_merchant(wechat);
    }
    Ok(directory)
}

/// A registered merchant's own clients: bound to its `sp_appid` for a provider, else to
/// `appid` (its first mini program's) with that mini program's AppSecret.
async fn base_clients(
    store: &Store,
    sources: &DirectorySources,
    merchant: &MerchantRecord,
    app: Option<(&str, &SecretString)>,
) -> Result<WeChat, String> {
    let key = sources.key.as_ref();
    let credentials = load_credentials(store, key, &merchant.mchid)
        .await
        .map_err(|e| e.to_string())?;
    // A merchant's own clients log nobody in (each mini program has its own mini-program
    // client): without a mini program of its own, theirs holds a placeholder secret.
    let no_app = || SecretString::from("no-mini-program".to_owned());
    let (appid, secret) = match (&merchant.sp_appid, app) {
        (Some(sp_appid), app) => (
            sp_appid.clone(),
            app.map_or_else(no_app, |(_, s)| s.clone()),
        ),
        (None, Some((appid, secret))) => (appid.to_owned(), secret.clone()),
        (None, None) => (format!("wx{}", merchant.mchid), no_app()),
    };
    let wechat = WeChat::new(
        &credentials.into_merchant(appid, secret, sources.extra_ca_pem.clone()),
        &sources.endpoints,
        merchant.api_version,
        &sources.file.notify_base,
    )
    .map_err(|e| e.to_string())?;
    Ok(match merchant.kind {
        MerchantKind::Provider => wechat.into_provider(),
        MerchantKind::Direct => wechat,
    })
}

async fn app_clients(
    store: &Store,
    sources: &DirectorySources,
    merchant: &MerchantRecord,
    app: &MiniProgramRecord,
    clients: &mut std::collections::HashMap<String, WeChat>,
) -> Result<WeChat, String> {
    let key = sources.key.as_ref();
    let secret = load_app_secret(store, key, &app.appid)
        .await
        .map_err(|e| e.to_string())?;
    let mp =
        WeChat::mp_client(&app.appid, &secret, &sources.endpoints).map_err(|e| e.to_string())?;
    let base = match clients.get(&merchant.mchid) {
        Some(base) => base.clone(),
        None => {
            let base = base_clients(store, sources, merchant, Some((&app.appid, &secret))).await?;
            clients.insert(merchant.mchid.clone(), base.clone());
            base
        }
    };
    match (&app.sub_mchid, merchant.kind) {
        (Some(sub_mchid), MerchantKind::Provider) => base
            .for_sub_merchant(&app.appid, sub_mchid, mp)
            .ok_or_else(|| format!("merchant {} has no sp_appid", merchant.mchid)),
        (None, MerchantKind::Direct) => Ok(base.for_app(&app.appid, mp)),
        _ => Err(format!(
            "mini program {} and merchant {} disagree on the sub-merchant",
            app.appid, merchant.mchid
        )),
    }
}

/// How often an instance compares the registry's version with the one it serves, in case it
/// missed a notice (its listening connection was down).
pub const REGISTRY_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `registry` current until `stop` turns true: rebuilt at every registry notice (a change
/// made here, or on another instance through PostgreSQL's notices) and whenever the stored
/// version differs from the one last built (checked every [`REGISTRY_RECHECK`]).
pub async fn keep_current(
    store: Store,
    registry: crate::registry::Registry,
    sources: DirectorySources,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = store.notices().registry_changes();
    let mut built = store.registry_version().await.ok();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(REGISTRY_RECHECK) => {
                let now = store.registry_version().await.ok();
                if now.is_none() || now == built {
                    continue;
                }
            }
            () = async {
                let _ = stop.wait_for(|s| *s).await;
            } => return,
        }
        let version = store.registry_version().await.ok();
        match directory(&store, &sources).await {
            Ok(d) => {
                let (apps, merchants) = (d.app_count(), d.merchant_count());
                registry.replace(d);
                built = version;
                tracing::info!(apps, merchants, "registry reloaded");
            }
            Err(err) => {
                tracing::warn!(error = %err, "the registry could not be reloaded; retried at the next check")
            }
        }
    }
}
