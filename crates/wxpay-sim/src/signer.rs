//! Signing as WeChat Pay: v3 answers and notifications, with the platform certificate key or the
//! WeChat Pay public-key key, as the merchant's key mode says (§B.5, §E).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};
use wxpay::v3::auth::{SCHEME, response_message};
use wxpay::v3::verifier::SIGNTEST_PREFIX;
use wxpay::{RsaPrivateKey, X509Certificate};

/// Which keys WeChat Pay uses for this merchant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyMode {
    /// New merchants (since 2024): the WeChat Pay public key only; `/v3/certificates` has nothing.
    #[default]
    PublicKey,
    /// Older merchants: platform certificates only.
    Certificate,
    /// Migrating from certificates to the public key: answers follow the request's
    /// `Wechatpay-Serial`; notifications are signed by either, interleaved by the migrating ratio.
    Migrating,
}

impl KeyMode {
    /// The command-line spelling: `public_key`, `certificate`, `migrating`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyMode::PublicKey => "public_key",
            KeyMode::Certificate => "certificate",
            KeyMode::Migrating => "migrating",
        }
    }
}

impl FromStr for KeyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public_key" => Ok(KeyMode::PublicKey),
            "certificate" => Ok(KeyMode::Certificate),
            "migrating" => Ok(KeyMode::Migrating),
            other => Err(format!(
                "unknown key mode {other:?}: expected public_key, certificate or migrating"
            )),
        }
    }
}

impl std::fmt::Display for KeyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key one message is signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// The WeChat Pay public key (serial `PUB_KEY_ID_...`).
    PublicKey,
    /// The platform certificate (serial = its uppercase hex serial).
    PlatformCertificate,
}

/// The `Wechatpay-*` signature headers (with `Wechatpay-Signature-Type`, which the real service
/// sends on answers as on notifications: wechatpayv3 refuses answers without it, §B.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// `Wechatpay-Timestamp`.
    pub timestamp: String,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
    /// `Wechatpay-Signature`.
    pub signature: String,
    /// `Wechatpay-Serial`.
    pub serial: String,
}

impl SignatureHeaders {
    /// Adds the headers to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        set("wechatpay-timestamp", &self.timestamp);
        set("wechatpay-nonce", &self.nonce);
        set("wechatpay-signature", &self.signature);
        set("wechatpay-serial", &self.serial);
        set("wechatpay-signature-type", SIGNATURE_TYPE);
    }

    /// The same headers with a deliberately invalid `WECHATPAY/SIGNTEST/` signature (§B.3 probes).
    #[must_use]
    pub fn into_probe(mut self) -> Self {
        self.signature = format!("{SIGNTEST_PREFIX}{}", wxpay::nonce::random_string(44));
        self
    }
}

/// Signs as WeChat Pay for one merchant.
#[derive(Debug)]
pub struct PlatformSigner {
    mode: KeyMode,
    migrating_ratio: f64,
    /// Notifications signed so far in migrating mode: the key follows from the count, so a run of
    /// notifications always uses both keys in the ratio's proportion (chance made tests flaky).
    migrating_count: AtomicU64,
    platform_key: RsaPrivateKey,
    platform_serial: String,
    public_key_key: RsaPrivateKey,
    public_key_id: String,
}

impl PlatformSigner {
    /// A signer. `migrating_ratio` is the share of notifications signed by the public key in
    /// [`KeyMode::Migrating`] (clamped to 0..=1).
    #[must_use]
    pub fn new(
        mode: KeyMode,
        migrating_ratio: f64,
        platform_key: RsaPrivateKey,
        platform_cert: &X509Certificate,
        public_key_key: RsaPrivateKey,
        public_key_id: String,
    ) -> Self {
        Self {
            mode,
            migrating_ratio: if migrating_ratio.is_finite() {
                migrating_ratio.clamp(0.0, 1.0)
            } else {
                0.5
            },
            migrating_count: AtomicU64::new(0),
            platform_key,
            platform_serial: platform_cert.serial_no.clone(),
            public_key_key,
            public_key_id,
        }
    }

    /// The key mode.
    #[must_use]
    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// The public key id.
    #[must_use]
    pub fn public_key_id(&self) -> &str {
        &self.public_key_id
    }

    /// The platform certificate serial.
    #[must_use]
    pub fn platform_serial(&self) -> &str {
        &self.platform_serial
    }

    /// The key an answer is signed with: in migrating mode the request's `Wechatpay-Serial`
    /// decides (the public key when it names the public key id, else the certificate).
    #[must_use]
    pub fn response_key(&self, request_serial: Option<&str>) -> SigningKey {
        match self.mode {
            KeyMode::PublicKey => SigningKey::PublicKey,
            KeyMode::Certificate => SigningKey::PlatformCertificate,
            KeyMode::Migrating => {
                if request_serial.is_some_and(|s| s.trim() == self.public_key_id) {
                    SigningKey::PublicKey
                } else {
                    SigningKey::PlatformCertificate
                }
            }
        }
    }

    /// The key a notification is signed with. Migrating, WeChat picks either; the simulator
    /// spreads the public key evenly: the n-th notification takes it when `floor(n × ratio)`
    /// steps up, so any `k` notifications in a row hold `k × ratio` (rounded) public-key ones.
    #[must_use]
    pub fn notification_key(&self) -> SigningKey {
        match self.mode {
            KeyMode::PublicKey => SigningKey::PublicKey,
            KeyMode::Certificate => SigningKey::PlatformCertificate,
            KeyMode::Migrating => {
                let n = self.migrating_count.fetch_add(1, Ordering::Relaxed);
                #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                let steps = |k: u64| (k as f64 * self.migrating_ratio).floor() as u64;
                if steps(n + 1) > steps(n) {
                    SigningKey::PublicKey
                } else {
                    SigningKey::PlatformCertificate
                }
            }
        }
    }

    /// Signs `TIMESTAMP\nNONCE\nBODY\n` with `key`. `timestamp` is Unix seconds.
    ///
    /// # Errors
    /// When RSA signing fails (it does not for the keys the simulator makes).
    pub fn sign(
        &self,
        key: SigningKey,
        timestamp: i64,
        body: &[u8],
    ) -> Result<SignatureHeaders, wxpay::CryptoError> {
        let timestamp = timestamp.to_string();
        let nonce = wxpay::nonce::nonce();
        let message = response_message(&timestamp, &nonce, body);
        let (private, serial) = match key {
            SigningKey::PublicKey => (&self.public_key_key, &self.public_key_id),
            SigningKey::PlatformCertificate => (&self.platform_key, &self.platform_serial),
        };
        Ok(SignatureHeaders {
            signature: private.sign_sha256_base64(&message)?,
            serial: serial.clone(),
            timestamp,
            nonce,
        })
    }
}

/// The value of `Wechatpay-Signature-Type` on answers and notifications.
pub const SIGNATURE_TYPE: &str = SCHEME;

/// A fresh `Request-ID` in WeChat's shape (uppercase hex).
#[must_use]
pub fn request_id() -> String {
    format!(
        "{:032X}-{}",
        rand::random::<u128>(),
        rand::random::<u32>() % 1000
    )
}
