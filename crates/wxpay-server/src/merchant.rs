//! The merchant's credentials from a `merchant.json` (the simulator's format, so real
//! credentials use the same file), validated before anything starts.
//!
//! ```json
//! {"appid": "wx...", "app_secret": "...", "mchid": "...", "api_v2_key": "...", "api_v3_key": "...",
//!  "merchant_serial": "...", "wechatpay_public_key_id": "PUB_KEY_ID_...",
//!  "apiclient_key": "apiclient_key.pem", "apiclient_cert": "apiclient_cert.pem",
//!  "apiclient_cert_p12": "apiclient_cert.p12", "platform_cert": "platform_cert.pem",
//!  "wechatpay_public_key": "wechatpay_public_key.pem", "sim_ca_cert": "sim_ca.pem"}
//! ```
//! File-valued keys name files beside `merchant.json`. `wechatpay_public_key_id` with
//! `wechatpay_public_key`, and `platform_cert`, are each optional, but one of them is needed;
//! `apiclient_cert_p12` (v2 refunds) and `sim_ca_cert` (a simulator's TLS) are optional.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use serde::Deserialize;
use wxpay::http::ClientIdentity;
use wxpay::mp::client::MpConfig;
use wxpay::v2::client::V2Config;
use wxpay::v3::aead::ApiV3Key;
use wxpay::v3::certificates::{PUBLIC_KEY_ID_PREFIX, PlatformVerifier};
use wxpay::v3::client::V3Config;
use wxpay::{RsaPrivateKey, RsaPublicKey, X509Certificate};

use crate::config::ConfigError;

const KEY: &str = "WXPAY_MERCHANT_FILE";

#[derive(Deserialize)]
struct MerchantJson {
    appid: String,
    app_secret: SecretString,
    mchid: String,
    api_v2_key: SecretString,
    api_v3_key: SecretString,
    merchant_serial: String,
    #[serde(default)]
    wechatpay_public_key_id: Option<String>,
    apiclient_key: String,
    apiclient_cert: String,
    #[serde(default)]
    apiclient_cert_p12: Option<String>,
    #[serde(default)]
    platform_cert: Option<String>,
    #[serde(default)]
    wechatpay_public_key: Option<String>,
    #[serde(default)]
    sim_ca_cert: Option<String>,
}

/// The merchant, loaded and checked. `Debug` shows no secret.
#[derive(Clone)]
pub struct Merchant {
    /// The mini program's appid.
    pub appid: String,
    /// The mini program's AppSecret.
    pub app_secret: SecretString,
    /// The merchant id.
    pub mchid: String,
    /// The API v2 key.
    pub api_v2_key: SecretString,
    /// The APIv3 key.
    pub api_v3_key: ApiV3Key,
    /// The merchant API certificate serial.
    pub merchant_serial: String,
    /// The merchant API private key.
    pub private_key: RsaPrivateKey,
    /// The merchant API certificate.
    pub merchant_cert: X509Certificate,
    /// `apiclient_cert.p12` (password: the mchid), for v2 refunds.
    pub p12: Option<Vec<u8>>,
    /// The platform certificate, when configured.
    pub platform_cert: Option<X509Certificate>,
    /// The WeChat Pay public key and its id, when configured.
    pub public_key: Option<(String, RsaPublicKey)>,
    /// An extra trusted CA (PEM), e.g. the simulator's.
    pub extra_ca_pem: Option<String>,
}

impl fmt::Debug for Merchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Merchant")
            .field("appid", &self.appid)
            .field("mchid", &self.mchid)
            .field("merchant_serial", &self.merchant_serial)
            .field("public_key_id", &self.public_key.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

fn err(message: impl Into<String>) -> ConfigError {
    ConfigError::new(KEY, message)
}

/// A merchant's credentials as contents (PEM texts, the PKCS#12's bytes), from a
/// `merchant.json` and its files or from the back office's API. [`validate`](Self::validate)
/// checks them as a whole. `Debug` shows no secret.
#[derive(Clone)]
pub struct CredentialContents {
    /// The merchant id.
    pub mchid: String,
    /// The API v2 key (32 visible ASCII characters).
    pub api_v2_key: SecretString,
    /// The APIv3 key (32 characters).
    pub api_v3_key: SecretString,
    /// The serial of `apiclient_cert`.
    pub merchant_serial: String,
    /// `apiclient_key.pem`: the merchant API private key.
    pub apiclient_key: SecretString,
    /// `apiclient_cert.pem`: the merchant API certificate.
    pub apiclient_cert: String,
    /// `apiclient_cert.p12` (password: the mchid), for v2 refunds.
    pub apiclient_cert_p12: Option<SecretSlice<u8>>,
    /// The platform certificate (PEM).
    pub platform_cert: Option<String>,
    /// The WeChat Pay public key's id (`PUB_KEY_ID_...`).
    pub wechatpay_public_key_id: Option<String>,
    /// The WeChat Pay public key (PEM).
    pub wechatpay_public_key: Option<String>,
}

impl fmt::Debug for CredentialContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialContents")
            .field("mchid", &self.mchid)
            .field("merchant_serial", &self.merchant_serial)
            .field("wechatpay_public_key_id", &self.wechatpay_public_key_id)
            .finish_non_exhaustive()
    }
}

/// Credentials that do not hold together: the message names the field, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CredentialError {
    /// The field at fault (`api_v3_key`, `apiclient_key`, ...).
    pub field: &'static str,
    /// What is wrong, starting with the field's name.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> CredentialError {
    CredentialError {
        field,
        message: message.into(),
    }
}

/// A merchant's checked credentials: what [`CredentialContents::validate`] makes, and what a
/// [`Merchant`] is built of. `Debug` shows no secret.
#[derive(Clone)]
pub struct MerchantCredentials {
    /// The merchant id.
    pub mchid: String,
    /// The API v2 key.
    pub api_v2_key: SecretString,
    /// The APIv3 key.
    pub api_v3_key: ApiV3Key,
    /// The merchant API certificate serial (as the certificate writes it).
    pub merchant_serial: String,
    /// The merchant API private key.
    pub private_key: RsaPrivateKey,
    /// The merchant API certificate.
    pub merchant_cert: X509Certificate,
    /// `apiclient_cert.p12` (password: the mchid), for v2 refunds.
    pub p12: Option<Vec<u8>>,
    /// The platform certificate, when configured.
    pub platform_cert: Option<X509Certificate>,
    /// The WeChat Pay public key and its id, when configured.
    pub public_key: Option<(String, RsaPublicKey)>,
}

impl fmt::Debug for MerchantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantCredentials")
            .field("mchid", &self.mchid)
            .field("merchant_serial", &self.merchant_serial)
            .field("public_key_id", &self.public_key.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

impl MerchantCredentials {
    /// The merchant of one mini program with these credentials.
    #[must_use]
    pub fn into_merchant(
        self,
        appid: String,
        app_secret: SecretString,
        extra_ca_pem: Option<String>,
    ) -> Merchant {
        Merchant {
            appid,
            app_secret,
            mchid: self.mchid,
            api_v2_key: self.api_v2_key,
            api_v3_key: self.api_v3_key,
            merchant_serial: self.merchant_serial,
            private_key: self.private_key,
            merchant_cert: self.merchant_cert,
            p12: self.p12,
            platform_cert: self.platform_cert,
            public_key: self.public_key,
            extra_ca_pem,
        }
    }
}

/// An empty optional value is absent.
fn present(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

impl CredentialContents {
    /// Checks the credentials as a whole: the mchid and serial are set, the APIv3 and v2 keys
    /// are 32 characters, the private key parses and matches `apiclient_cert`, the serial is the
    /// certificate's, the PKCS#12 opens with the mchid, the public key id starts with
    /// `PUB_KEY_ID_` and comes with its key, and one of the platform certificate and the public
    /// key is present.
    ///
    /// # Errors
    /// [`CredentialError`] naming the first field at fault.
    pub fn validate(&self) -> Result<MerchantCredentials, CredentialError> {
        for (field, value) in [
            ("mchid", &self.mchid),
            ("merchant_serial", &self.merchant_serial),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, format!("{field} is empty")));
            }
        }
        let api_v3_key = ApiV3Key::new(self.api_v3_key.expose_secret())
            .map_err(|_| invalid("api_v3_key", "api_v3_key must be 32 characters"))?;
        let v2_key = self.api_v2_key.expose_secret();
        if v2_key.len() != 32 || !v2_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "api_v2_key",
                "api_v2_key must be 32 visible ASCII characters",
            ));
        }
        let private_key = RsaPrivateKey::from_pem(self.apiclient_key.expose_secret())
            .map_err(|e| invalid("apiclient_key", format!("apiclient_key: {e}")))?;
        let merchant_cert = X509Certificate::from_pem(&self.apiclient_cert)
            .map_err(|e| invalid("apiclient_cert", format!("apiclient_cert: {e}")))?;
        if merchant_cert.public_key != *private_key.public_key() {
            return Err(invalid(
                "apiclient_key",
                "apiclient_key does not match apiclient_cert (different key pairs)",
            ));
        }
        if !merchant_cert
            .serial_no
            .eq_ignore_ascii_case(self.merchant_serial.trim())
        {
            return Err(invalid(
                "merchant_serial",
                format!(
                    "merchant_serial is not the serial of apiclient_cert ({})",
                    merchant_cert.serial_no
                ),
            ));
        }
        let p12 = match &self.apiclient_cert_p12 {
            Some(der) if !der.expose_secret().is_empty() => {
                ClientIdentity::from_pkcs12(der.expose_secret(), &self.mchid).map_err(|e| {
                    invalid(
                        "apiclient_cert_p12",
                        format!("apiclient_cert_p12: {e} (its password must be the mchid)"),
                    )
                })?;
                Some(der.expose_secret().to_vec())
            }
            _ => None,
        };
        let public_key = match (
            present(self.wechatpay_public_key_id.as_deref()),
            present(self.wechatpay_public_key.as_deref()),
        ) {
            (Some(id), Some(pem)) => {
                if !id.starts_with(PUBLIC_KEY_ID_PREFIX) {
                    return Err(invalid(
                        "wechatpay_public_key_id",
                        format!("wechatpay_public_key_id must start with {PUBLIC_KEY_ID_PREFIX}"),
                    ));
                }
                let key = RsaPublicKey::from_pem(pem).map_err(|e| {
                    invalid("wechatpay_public_key", format!("wechatpay_public_key: {e}"))
                })?;
                Some((id.to_owned(), key))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "wechatpay_public_key",
                    "wechatpay_public_key_id is set but wechatpay_public_key is not",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "wechatpay_public_key_id",
                    "wechatpay_public_key is set but wechatpay_public_key_id is not",
                ));
            }
            (None, None) => None,
        };
        let platform_cert = match present(self.platform_cert.as_deref()) {
            Some(pem) => Some(
                X509Certificate::from_pem(pem)
                    .map_err(|e| invalid("platform_cert", format!("platform_cert: {e}")))?,
            ),
            None => None,
        };
        if public_key.is_none() && platform_cert.is_none() {
            return Err(invalid(
                "platform_cert",
                "neither wechatpay_public_key nor platform_cert is set: WeChat Pay's signatures could not be verified",
            ));
        }
        Ok(MerchantCredentials {
            mchid: self.mchid.clone(),
            api_v2_key: self.api_v2_key.clone(),
            api_v3_key,
            merchant_serial: merchant_cert.serial_no.clone(),
            private_key,
            merchant_cert,
            p12,
            platform_cert,
            public_key,
        })
    }
}

impl Merchant {
    /// Loads and checks `merchant.json`: the files exist, then the credentials as
    /// [`CredentialContents::validate`] checks them (the same checks as the back office's API).
    ///
    /// # Errors
    /// [`ConfigError`] for `WXPAY_MERCHANT_FILE`, naming the field and the problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let json: MerchantJson =
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let file = |field: &str, name: &str| -> Result<PathBuf, ConfigError> {
            let p = Path::new(name);
            if name.is_empty()
                || p.is_absolute()
                || p.components().any(|c| matches!(c, Component::ParentDir))
            {
                return Err(err(format!(
                    "{field}: {name:?} must be a file name beside merchant.json"
                )));
            }
            let full = dir.join(p);
            if !full.is_file() {
                return Err(err(format!("{field}: {} does not exist", full.display())));
            }
            Ok(full)
        };
        let read_text = |field: &str, name: &str| -> Result<String, ConfigError> {
            let p = file(field, name)?;
            std::fs::read_to_string(&p).map_err(|e| err(format!("{field}: {}: {e}", p.display())))
        };
        let read_optional = |field: &str, name: &Option<String>| match name {
            Some(name) if !name.is_empty() => read_text(field, name).map(Some),
            _ => Ok(None),
        };
        for (field, value) in [
            ("appid", &json.appid),
            ("mchid", &json.mchid),
            ("merchant_serial", &json.merchant_serial),
        ] {
            if value.trim().is_empty() {
                return Err(err(format!("{field} is empty")));
            }
        }
        if json.app_secret.expose_secret().is_empty() {
            return Err(err("app_secret is empty"));
        }
        // The keys' lengths first, as before the files are read.
        if ApiV3Key::new(json.api_v3_key.expose_secret()).is_err() {
            return Err(err("api_v3_key must be 32 characters"));
        }
        let v2_key = json.api_v2_key.expose_secret();
        if v2_key.len() != 32 || !v2_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("api_v2_key must be 32 visible ASCII characters"));
        }
        let apiclient_key = SecretString::from(read_text("apiclient_key", &json.apiclient_key)?);
        let apiclient_cert = read_text("apiclient_cert", &json.apiclient_cert)?;
        let apiclient_cert_p12 = match &json.apiclient_cert_p12 {
            Some(name) if !name.is_empty() => {
                let p = file("apiclient_cert_p12", name)?;
                let der = std::fs::read(&p).map_err(|e| err(format!("apiclient_cert_p12: {e}")))?;
                Some(SecretSlice::from(der))
            }
            _ => None,
        };
        let contents = CredentialContents {
            mchid: json.mchid,
            api_v2_key: json.api_v2_key,
            api_v3_key: json.api_v3_key,
            merchant_serial: json.merchant_serial,
            apiclient_key,
            apiclient_cert,
            apiclient_cert_p12,
            platform_cert: read_optional("platform_cert", &json.platform_cert)?,
            wechatpay_public_key_id: json.wechatpay_public_key_id,
            wechatpay_public_key: read_optional(
                "wechatpay_public_key",
                &json.wechatpay_public_key,
            )?,
        };
        let credentials = contents.validate().map_err(|e| err(e.message))?;
        let extra_ca_pem = read_optional("sim_ca_cert", &json.sim_ca_cert)?;
        Ok(credentials.into_merchant(json.appid, json.app_secret, extra_ca_pem))
    }

    /// The verifier of WeChat Pay's signatures: the public key, the platform certificate, or
    /// both (the migration).
    #[must_use]
    pub fn platform_verifier(&self) -> PlatformVerifier {
        let certs: Vec<X509Certificate> = self.platform_cert.iter().cloned().collect();
        match &self.public_key {
            Some((id, key)) if certs.is_empty() => PlatformVerifier::public_key(id, key.clone()),
            Some((id, key)) => PlatformVerifier::both(id, key.clone(), certs),
            None => PlatformVerifier::certificates(certs),
        }
    }

    /// The v3 client configuration.
    #[must_use]
    pub fn v3_config(&self) -> V3Config {
        V3Config {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            merchant_serial: self.merchant_serial.clone(),
            private_key: self.private_key.clone(),
            api_v3_key: self.api_v3_key.clone(),
            platform: self.platform_verifier(),
        }
    }

    /// The v2 client configuration (with the client certificate for refunds when the PKCS#12 is
    /// configured).
    ///
    /// # Errors
    /// [`ConfigError`] when the PKCS#12 does not open (checked at load already).
    pub fn v2_config(&self) -> Result<V2Config, ConfigError> {
        let mut config = V2Config::new(&self.appid, &self.mchid, self.api_v2_key.expose_secret());
        if let Some(der) = &self.p12 {
            let identity = ClientIdentity::from_pkcs12(der, &self.mchid)
                .map_err(|e| err(format!("apiclient_cert_p12: {e}")))?;
            config = config.with_client_identity(identity);
        }
        Ok(config)
    }

    /// The mini-program client configuration.
    #[must_use]
    pub fn mp_config(&self) -> MpConfig {
        MpConfig::new(&self.appid, self.app_secret.expose_secret())
    }
}
