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

use secrecy::{ExposeSecret as _, SecretString};
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

impl Merchant {
    /// Loads and checks `merchant.json`: the files exist, the private key parses and matches
    /// `apiclient_cert`, the serial is the certificate's, the APIv3 and v2 keys are 32
    /// characters, the public key id starts with `PUB_KEY_ID_`, the PKCS#12 opens with the mchid.
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
        let api_v3_key = ApiV3Key::new(json.api_v3_key.expose_secret())
            .map_err(|_| err("api_v3_key must be 32 characters"))?;
        let v2_key = json.api_v2_key.expose_secret();
        if v2_key.len() != 32 || !v2_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("api_v2_key must be 32 visible ASCII characters"));
        }
        let private_key =
            RsaPrivateKey::from_pem(&read_text("apiclient_key", &json.apiclient_key)?)
                .map_err(|e| err(format!("apiclient_key: {e}")))?;
        let merchant_cert =
            X509Certificate::from_pem(&read_text("apiclient_cert", &json.apiclient_cert)?)
                .map_err(|e| err(format!("apiclient_cert: {e}")))?;
        if merchant_cert.public_key != *private_key.public_key() {
            return Err(err(
                "apiclient_key does not match apiclient_cert (different key pairs)",
            ));
        }
        if !merchant_cert
            .serial_no
            .eq_ignore_ascii_case(json.merchant_serial.trim())
        {
            return Err(err(format!(
                "merchant_serial is not the serial of apiclient_cert ({})",
                merchant_cert.serial_no
            )));
        }
        let p12 = match &json.apiclient_cert_p12 {
            Some(name) if !name.is_empty() => {
                let p = file("apiclient_cert_p12", name)?;
                let der = std::fs::read(&p).map_err(|e| err(format!("apiclient_cert_p12: {e}")))?;
                ClientIdentity::from_pkcs12(&der, &json.mchid).map_err(|e| {
                    err(format!(
                        "apiclient_cert_p12: {e} (its password must be the mchid)"
                    ))
                })?;
                Some(der)
            }
            _ => None,
        };
        let public_key = match (&json.wechatpay_public_key_id, &json.wechatpay_public_key) {
            (Some(id), Some(name)) if !id.is_empty() && !name.is_empty() => {
                if !id.starts_with(PUBLIC_KEY_ID_PREFIX) {
                    return Err(err(format!(
                        "wechatpay_public_key_id must start with {PUBLIC_KEY_ID_PREFIX}"
                    )));
                }
                let key = RsaPublicKey::from_pem(&read_text("wechatpay_public_key", name)?)
                    .map_err(|e| err(format!("wechatpay_public_key: {e}")))?;
                Some((id.clone(), key))
            }
            (Some(id), _) if !id.is_empty() => {
                return Err(err(
                    "wechatpay_public_key_id is set but wechatpay_public_key is not",
                ));
            }
            (_, Some(name)) if !name.is_empty() => {
                return Err(err(
                    "wechatpay_public_key is set but wechatpay_public_key_id is not",
                ));
            }
            _ => None,
        };
        let platform_cert = match &json.platform_cert {
            Some(name) if !name.is_empty() => Some(
                X509Certificate::from_pem(&read_text("platform_cert", name)?)
                    .map_err(|e| err(format!("platform_cert: {e}")))?,
            ),
            _ => None,
        };
        if public_key.is_none() && platform_cert.is_none() {
            return Err(err(
                "neither wechatpay_public_key nor platform_cert is set: WeChat Pay's signatures could not be verified",
            ));
        }
        let extra_ca_pem = match &json.sim_ca_cert {
            Some(name) if !name.is_empty() => Some(read_text("sim_ca_cert", name)?),
            _ => None,
        };
        Ok(Merchant {
            appid: json.appid,
            app_secret: json.app_secret,
            mchid: json.mchid,
            api_v2_key: json.api_v2_key,
            api_v3_key,
            merchant_serial: merchant_cert.serial_no.clone(),
            private_key,
            merchant_cert,
            p12,
            platform_cert,
            public_key,
            extra_ca_pem,
        })
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
