//! The simulated merchant and the simulator's own keys: generated on first start, written to the
//! state directory, reused on later starts.
//!
//! `merchant.json` holds what a merchant gets from WeChat Pay (ids, API keys, certificate serial)
//! and names the files written beside it. The simulator's private keys (platform certificate key,
//! WeChat Pay public-key key, CA key, TLS key) go to `simulator-secrets.json`, never to
//! `merchant.json`.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::RngExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use wxpay::{RsaPrivateKey, RsaPublicKey, X509Certificate};

/// The file name of the merchant description.
pub const MERCHANT_JSON: &str = "merchant.json";
/// The file name of the simulator's private keys.
pub const SECRETS_JSON: &str = "simulator-secrets.json";
/// The DNS names of the simulator's TLS certificate: `localhost` and the real service hosts.
pub const TLS_HOST_NAMES: &[&str] = &[
    "localhost",
    "api.mch.weixin.qq.com",
    "api2.mch.weixin.qq.com",
    "api.weixin.qq.com",
];

const APICLIENT_KEY: &str = "apiclient_key.pem";
const APICLIENT_CERT: &str = "apiclient_cert.pem";
const APICLIENT_P12: &str = "apiclient_cert.p12";
const PLATFORM_CERT: &str = "platform_cert.pem";
const PUBLIC_KEY: &str = "wechatpay_public_key.pem";
const SIM_CA: &str = "sim_ca.pem";

/// Why the credentials could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not have the expected content.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("generating {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The cause.
        reason: String,
    },
}

fn gen_err(what: &'static str) -> impl Fn(&dyn fmt::Display) -> CredentialsError {
    move |e| CredentialsError::Generate {
        what,
        reason: e.to_string(),
    }
}

/// Everything the merchant side holds: what a real merchant gets from WeChat Pay and the
/// mini-program console. `Debug` never shows keys or secrets.
#[derive(Clone)]
pub struct MerchantCredentials {
    /// The mini program's appid.
    pub appid: String,
    /// The mini program's AppSecret.
    pub app_secret: String,
    /// The merchant id.
    pub mchid: String,
    /// The API v2 key (32 characters).
    pub api_v2_key: String,
    /// The APIv3 key (32 characters).
    pub api_v3_key: String,
    /// The merchant API certificate serial (uppercase hex).
    pub merchant_serial: String,
    /// The merchant API private key (`apiclient_key.pem`, PKCS#8 PEM).
    pub merchant_private_key_pem: String,
    /// The merchant API certificate (`apiclient_cert.pem`).
    pub merchant_cert_pem: String,
    /// `apiclient_cert.p12` (password: the mchid).
    pub merchant_cert_p12: Vec<u8>,
    /// The platform certificate (PEM).
    pub platform_cert_pem: String,
    /// The platform certificate serial (uppercase hex).
    pub platform_serial: String,
    /// The WeChat Pay public key (`PUBLIC KEY` PEM).
    pub wechatpay_public_key_pem: String,
    /// Its id, `PUB_KEY_ID_...`.
    pub wechatpay_public_key_id: String,
    /// The simulator CA (PEM): trust it to reach the simulator over TLS.
    pub ca_cert_pem: String,
    /// Where `merchant.json` was written (none for an in-memory simulator).
    pub merchant_json_path: Option<PathBuf>,
}

impl fmt::Debug for MerchantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantCredentials")
            .field("appid", &self.appid)
            .field("mchid", &self.mchid)
            .field("merchant_serial", &self.merchant_serial)
            .field("platform_serial", &self.platform_serial)
            .field("wechatpay_public_key_id", &self.wechatpay_public_key_id)
            .field("merchant_json_path", &self.merchant_json_path)
            .finish_non_exhaustive()
    }
}

/// The simulator's private material, loaded and parsed once. `Debug` is redacted.
#[derive(Clone)]
pub struct SimulatorKeys {
    /// Signs as the platform certificate.
    pub platform_key: RsaPrivateKey,
    /// The platform certificate.
    pub platform_cert: X509Certificate,
    /// Signs as the WeChat Pay public key.
    pub public_key_key: RsaPrivateKey,
    /// Verifies the merchant's request signatures and `paySign`.
    pub merchant_public_key: RsaPublicKey,
    /// The merchant certificate (DER), which `/secapi/` requires as TLS client certificate.
    pub merchant_cert_der: Vec<u8>,
    /// The CA certificate (DER): TLS root for client certificates.
    pub ca_cert_der: Vec<u8>,
    /// The CA key: issues the certificates of merchants added at run time.
    pub ca_key: RsaPrivateKey,
    /// The TLS server certificate (DER).
    pub tls_cert_der: Vec<u8>,
    /// The TLS server key (PKCS#8 DER).
    pub tls_key_der: Vec<u8>,
}

impl fmt::Debug for SimulatorKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimulatorKeys(<redacted>)")
    }
}

/// The merchant material and the simulator's own keys.
#[derive(Clone, Debug)]
pub struct MerchantSetup {
    /// The merchant side.
    pub credentials: MerchantCredentials,
    /// The simulator side.
    pub keys: SimulatorKeys,
}

#[derive(Serialize, Deserialize)]
struct MerchantJson {
    appid: String,
    app_secret: String,
    mchid: String,
    api_v2_key: String,
    api_v3_key: String,
    merchant_serial: String,
    wechatpay_public_key_id: String,
    apiclient_key: String,
    apiclient_cert: String,
    apiclient_cert_p12: String,
    platform_cert: String,
    wechatpay_public_key: String,
    sim_ca_cert: String,
}

#[derive(Serialize, Deserialize)]
struct SecretsJson {
    ca_key: String,
    platform_key: String,
    public_key_key: String,
    tls_key: String,
    tls_cert: String,
}

struct Material {
    credentials: MerchantCredentials,
    secrets: SecretsJson,
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[usize::from(rng.random_range(0..16u8))]))
        .collect()
}

/// A 20-byte positive serial with no leading zero byte, like WeChat's 40-hex-digit serials.
fn serial_number() -> SerialNumber {
    let mut rng = rand::rng();
    let mut bytes = [0u8; 20];
    rng.fill(&mut bytes[..]);
    bytes[0] = (bytes[0] & 0x7F).max(0x10);
    SerialNumber::from_slice(&bytes)
}

fn rcgen_key(key: &RsaPrivateKey) -> Result<KeyPair, CredentialsError> {
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| gen_err("an rcgen key pair")(&e))
}

fn dn(cn: &str, ou: &str, o: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, "CN");
    name.push(DnType::OrganizationName, o);
    name.push(DnType::OrganizationalUnitName, ou);
    name.push(DnType::CommonName, cn);
    name
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365 * years);
}

fn generate_keys(n: usize) -> Result<Vec<RsaPrivateKey>, CredentialsError> {
    // RSA-2048 generation takes ~100 ms; the keys are independent, so make them in parallel.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(RsaPrivateKey::generate)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| gen_err("an RSA key")(&"generator thread panicked"))?
                    .map_err(|e| gen_err("an RSA key")(&e))
            })
            .collect()
    })
}

/// The CA's name and constraints: the same at every start, so that the CA of a state directory
/// can issue again from its key.
fn ca_params() -> CertificateParams {
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("wxpay-sim CA", "wxpay simulator", "wxpay-sim");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
}

fn merchant_params(mchid: &str) -> CertificateParams {
    let mut merchant_params = CertificateParams::default();
    merchant_params.distinguished_name = dn(mchid, "wxpay-sim merchant", "财付通支付科技有限公司");
    merchant_params.serial_number = Some(serial_number());
    merchant_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    merchant_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut merchant_params, 5);
    merchant_params
}

fn platform_params() -> CertificateParams {
    let mut platform_params = CertificateParams::default();
    platform_params.distinguished_name = dn("Tenpay.com", "Tenpay.com CA Center", "Tenpay.com");
    platform_params.serial_number = Some(serial_number());
    platform_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut platform_params, 5);
    platform_params
}

/// A fresh merchant id: 10 digits, starting with 1 like real ones.
#[must_use]
pub fn new_mchid() -> String {
    format!("1{}", random_digits(9))
}

/// A fresh AppID (`wx` + 16 hex) and AppSecret (32 hex).
#[must_use]
pub fn new_app() -> (String, String) {
    (format!("wx{}", random_hex(16)), random_hex(32))
}

/// Another merchant of the same simulator: its own merchant key and certificate (issued by the
/// simulator CA of `keys`), API keys, platform certificate and WeChat Pay public key. `appid`
/// and `app_secret` are its mini program's.
fn generate_merchant(
    keys: &SimulatorKeys,
    ca_cert_pem: &str,
    mchid: &str,
    appid: String,
    app_secret: String,
) -> Result<Material, CredentialsError> {
    let mut generated = generate_keys(3)?.into_iter();
    let mut next = || {
        generated
            .next()
            .ok_or_else(|| gen_err("keys")(&"too few keys"))
    };
    let (merchant_key, platform_key, public_key_key) = (next()?, next()?, next()?);
    let issuer = Issuer::new(ca_params(), rcgen_key(&keys.ca_key)?);
    let issue = |key: &RsaPrivateKey, params: CertificateParams, what: &'static str| {
        let kp = rcgen_key(key)?;
        params
            .signed_by(&kp, &issuer)
            .map_err(|e| gen_err(what)(&e))
    };
    let merchant_cert = issue(
        &merchant_key,
        merchant_params(mchid),
        "the merchant certificate",
    )?;
    let platform_cert = issue(&platform_key, platform_params(), "the platform certificate")?;
    let merchant_x509 = X509Certificate::from_der(merchant_cert.der())
        .map_err(|e| gen_err("the merchant certificate")(&e))?;
    let platform_x509 = X509Certificate::from_der(platform_cert.der())
        .map_err(|e| gen_err("the platform certificate")(&e))?;
    let p12 = pkcs12(&merchant_key, merchant_cert.der(), &keys.ca_cert_der, mchid)?;
    let tls_key =
        RsaPrivateKey::from_pkcs8_der(&keys.tls_key_der).map_err(|e| gen_err("the TLS key")(&e))?;
    let tls_cert = X509Certificate::from_der(&keys.tls_cert_der)
        .map_err(|e| gen_err("the TLS certificate")(&e))?;
    let credentials = MerchantCredentials {
        appid,
        app_secret,
        api_v2_key: wxpay::nonce::random_string(32),
        api_v3_key: wxpay::nonce::random_string(32),
        merchant_serial: merchant_x509.serial_no.clone(),
        merchant_private_key_pem: merchant_key.to_pkcs8_pem(),
        merchant_cert_pem: merchant_x509.to_pem(),
        merchant_cert_p12: p12,
        platform_cert_pem: platform_x509.to_pem(),
        platform_serial: platform_x509.serial_no.clone(),
        wechatpay_public_key_pem: public_key_key.public_key().to_pem(),
        wechatpay_public_key_id: format!("PUB_KEY_ID_0000000000000024{}", random_digits(18)),
        ca_cert_pem: ca_cert_pem.to_owned(),
        merchant_json_path: None,
        mchid: mchid.to_owned(),
    };
    let secrets = SecretsJson {
        ca_key: keys.ca_key.to_pkcs8_pem(),
        platform_key: platform_key.to_pkcs8_pem(),
        public_key_key: public_key_key.to_pkcs8_pem(),
        tls_key: tls_key.to_pkcs8_pem(),
        tls_cert: tls_cert.to_pem(),
    };
    Ok(Material {
        credentials,
        secrets,
    })
}

/// Makes another merchant under the CA of `keys` (the first merchant's setup): in `dir` (its
/// own `merchant.json`, `simulator-secrets.json` and key files, the first merchant's file set)
/// when given, else in memory.
///
/// # Errors
/// [`CredentialsError`] when generation fails or `dir` cannot be written.
pub fn create_merchant(
    keys: &SimulatorKeys,
    ca_cert_pem: &str,
    mchid: &str,
    appid: String,
    app_secret: String,
    dir: Option<&Path>,
) -> Result<MerchantSetup, CredentialsError> {
    let material = generate_merchant(keys, ca_cert_pem, mchid, appid, app_secret)?;
    match dir {
        Some(dir) => {
            let json_path = dir.join(MERCHANT_JSON);
            let secrets_path = dir.join(SECRETS_JSON);
            write(dir, &material, &json_path, &secrets_path)?;
            let mut setup = material.into_setup(&secrets_path)?;
            setup.credentials.merchant_json_path = Some(json_path);
            Ok(setup)
        }
        None => material.into_setup(Path::new("<memory>")),
    }
}

/// Loads the merchant whose `merchant.json` is in `dir` (never creates one).
///
/// # Errors
/// [`CredentialsError`] when the files are missing, incomplete or do not belong together.
pub fn load_merchant_dir(dir: &Path) -> Result<MerchantSetup, CredentialsError> {
    let json_path = dir.join(MERCHANT_JSON);
    let secrets_path = dir.join(SECRETS_JSON);
    let mut setup = load(dir, &json_path, &secrets_path)?.into_setup(&secrets_path)?;
    setup.credentials.merchant_json_path = Some(json_path);
    Ok(setup)
}

fn generate() -> Result<Material, CredentialsError> {
    let mut keys = generate_keys(5)?.into_iter();
    let mut next = || keys.next().ok_or_else(|| gen_err("keys")(&"too few keys"));
    let (ca_key, merchant_key, platform_key, public_key_key, tls_key) =
        (next()?, next()?, next()?, next()?, next()?);

    let mchid = new_mchid();

    let mut ca_params = ca_params();
    ca_params.serial_number = Some(serial_number());
    validity(&mut ca_params, 20);
    let ca_kp = rcgen_key(&ca_key)?;
    let ca_cert = ca_params
        .self_signed(&ca_kp)
        .map_err(|e| gen_err("the CA certificate")(&e))?;
    let issuer = Issuer::new(ca_params, ca_kp);

    let issue = |key: &RsaPrivateKey, params: CertificateParams, what: &'static str| {
        let kp = rcgen_key(key)?;
        params
            .signed_by(&kp, &issuer)
            .map_err(|e| gen_err(what)(&e))
    };

    let merchant_cert = issue(
        &merchant_key,
        merchant_params(&mchid),
        "the merchant certificate",
    )?;
    let platform_cert = issue(&platform_key, platform_params(), "the platform certificate")?;

    let mut tls_params = CertificateParams::default();
    tls_params.distinguished_name = dn("127.0.0.1", "wxpay simulator", "wxpay-sim");
    tls_params.serial_number = Some(serial_number());
    // The real host names too: an SDK with a fixed gateway (wechatpayv3, wechatpy) reaches the
    // simulator when the test resolves those names to it, as an /etc/hosts entry would.
    let mut names = vec![
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ];
    for host in TLS_HOST_NAMES {
        names.push(SanType::DnsName(
            (*host)
                .try_into()
                .map_err(|e| gen_err("the TLS certificate")(&e))?,
        ));
    }
    tls_params.subject_alt_names = names;
    tls_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    tls_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut tls_params, 5);
    let tls_cert = issue(&tls_key, tls_params, "the TLS certificate")?;

    let merchant_x509 = X509Certificate::from_der(merchant_cert.der())
        .map_err(|e| gen_err("the merchant certificate")(&e))?;
    let platform_x509 = X509Certificate::from_der(platform_cert.der())
        .map_err(|e| gen_err("the platform certificate")(&e))?;
    let p12 = pkcs12(&merchant_key, merchant_cert.der(), ca_cert.der(), &mchid)?;

    let credentials = MerchantCredentials {
        appid: format!("wx{}", random_hex(16)),
        app_secret: random_hex(32),
        api_v2_key: wxpay::nonce::random_string(32),
        api_v3_key: wxpay::nonce::random_string(32),
        merchant_serial: merchant_x509.serial_no.clone(),
        merchant_private_key_pem: merchant_key.to_pkcs8_pem(),
        merchant_cert_pem: merchant_x509.to_pem(),
        merchant_cert_p12: p12,
        platform_cert_pem: platform_x509.to_pem(),
        platform_serial: platform_x509.serial_no.clone(),
        wechatpay_public_key_pem: public_key_key.public_key().to_pem(),
        // The shape of the real ids: PUB_KEY_ID_ and 34 digits.
        wechatpay_public_key_id: format!("PUB_KEY_ID_0000000000000024{}", random_digits(18)),
        ca_cert_pem: ca_cert.pem(),
        merchant_json_path: None,
        mchid,
    };
    let secrets = SecretsJson {
        ca_key: ca_key.to_pkcs8_pem(),
        platform_key: platform_key.to_pkcs8_pem(),
        public_key_key: public_key_key.to_pkcs8_pem(),
        tls_key: tls_key.to_pkcs8_pem(),
        tls_cert: tls_cert.pem(),
    };
    Ok(Material {
        credentials,
        secrets,
    })
}

fn pkcs12(
    key: &RsaPrivateKey,
    cert_der: &[u8],
    ca_der: &[u8],
    password: &str,
) -> Result<Vec<u8>, CredentialsError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let err = gen_err("apiclient_cert.p12");
    let chain = PrivateKeyChain::new(
        random_hex(20).into_bytes(),
        PrivateKey::from_der(key.pkcs8_der()).map_err(|e| err(&e))?,
        [
            Certificate::from_der(cert_der).map_err(|e| err(&e))?,
            Certificate::from_der(ca_der).map_err(|e| err(&e))?,
        ],
    );
    let mut store = KeyStore::new();
    store.add_entry("apiclient", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().map_err(|e| err(&e))
}

fn certificate_der(pem: &str, path: &Path, what: &str) -> Result<Vec<u8>, CredentialsError> {
    X509Certificate::from_pem(pem)
        .map(|c| c.der)
        .map_err(|e| CredentialsError::Invalid {
            path: path.to_owned(),
            reason: format!("{what}: {e}"),
        })
}

impl Material {
    fn into_setup(self, secrets_path: &Path) -> Result<MerchantSetup, CredentialsError> {
        let invalid = |what: &str, e: &dyn fmt::Display| CredentialsError::Invalid {
            path: secrets_path.to_owned(),
            reason: format!("{what}: {e}"),
        };
        let c = &self.credentials;
        let platform_key = RsaPrivateKey::from_pem(&self.secrets.platform_key)
            .map_err(|e| invalid("platform_key", &e))?;
        let public_key_key = RsaPrivateKey::from_pem(&self.secrets.public_key_key)
            .map_err(|e| invalid("public_key_key", &e))?;
        let platform_cert = X509Certificate::from_pem(&c.platform_cert_pem)
            .map_err(|e| invalid("platform_cert", &e))?;
        if platform_cert.public_key != *platform_key.public_key() {
            return Err(invalid(
                "platform_key",
                &"does not match the platform certificate",
            ));
        }
        let pk = RsaPublicKey::from_pem(&c.wechatpay_public_key_pem)
            .map_err(|e| invalid("wechatpay_public_key", &e))?;
        if pk != *public_key_key.public_key() {
            return Err(invalid(
                "public_key_key",
                &"does not match wechatpay_public_key",
            ));
        }
        let merchant_cert = X509Certificate::from_pem(&c.merchant_cert_pem)
            .map_err(|e| invalid("apiclient_cert", &e))?;
        let merchant_key = RsaPrivateKey::from_pem(&c.merchant_private_key_pem)
            .map_err(|e| invalid("apiclient_key", &e))?;
        if merchant_cert.public_key != *merchant_key.public_key() {
            return Err(invalid("apiclient_key", &"does not match apiclient_cert"));
        }
        let tls_key =
            RsaPrivateKey::from_pem(&self.secrets.tls_key).map_err(|e| invalid("tls_key", &e))?;
        let ca_key =
            RsaPrivateKey::from_pem(&self.secrets.ca_key).map_err(|e| invalid("ca_key", &e))?;
        let keys = SimulatorKeys {
            platform_key,
            platform_cert,
            public_key_key,
            merchant_public_key: merchant_cert.public_key.clone(),
            merchant_cert_der: merchant_cert.der.clone(),
            ca_cert_der: certificate_der(&c.ca_cert_pem, secrets_path, "sim_ca_cert")?,
            ca_key,
            tls_cert_der: certificate_der(&self.secrets.tls_cert, secrets_path, "tls_cert")?,
            tls_key_der: tls_key.pkcs8_der().to_vec(),
        };
        Ok(MerchantSetup {
            credentials: self.credentials,
            keys,
        })
    }
}

/// Makes a fresh merchant and simulator keys in memory (tests).
///
/// # Errors
/// [`CredentialsError::Generate`] if key or certificate generation fails.
pub fn generate_in_memory() -> Result<MerchantSetup, CredentialsError> {
    generate()?.into_setup(Path::new("<memory>"))
}

/// Loads the merchant from `dir`, or makes one and writes it there on first start.
///
/// # Errors
/// [`CredentialsError`] when the directory cannot be written, or existing files are incomplete
/// or do not belong together.
pub fn load_or_create(dir: &Path) -> Result<MerchantSetup, CredentialsError> {
    let json_path = dir.join(MERCHANT_JSON);
    let secrets_path = dir.join(SECRETS_JSON);
    let material = if json_path.exists() {
        load(dir, &json_path, &secrets_path)?
    } else {
        let material = generate()?;
        write(dir, &material, &json_path, &secrets_path)?;
        material
    };
    let mut setup = material.into_setup(&secrets_path)?;
    setup.credentials.merchant_json_path = Some(json_path);
    Ok(setup)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CredentialsError + '_ {
    move |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), CredentialsError> {
    // Write to a temporary name and rename, so that a crash never leaves a half-written file.
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = options.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn write(
    dir: &Path,
    m: &Material,
    json_path: &Path,
    secrets_path: &Path,
) -> Result<(), CredentialsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let c = &m.credentials;
    write_file(
        &dir.join(APICLIENT_KEY),
        c.merchant_private_key_pem.as_bytes(),
        true,
    )?;
    write_file(
        &dir.join(APICLIENT_CERT),
        c.merchant_cert_pem.as_bytes(),
        false,
    )?;
    write_file(&dir.join(APICLIENT_P12), &c.merchant_cert_p12, true)?;
    write_file(
        &dir.join(PLATFORM_CERT),
        c.platform_cert_pem.as_bytes(),
        false,
    )?;
    write_file(
        &dir.join(PUBLIC_KEY),
        c.wechatpay_public_key_pem.as_bytes(),
        false,
    )?;
    write_file(&dir.join(SIM_CA), c.ca_cert_pem.as_bytes(), false)?;
    let secrets =
        serde_json::to_vec_pretty(&m.secrets).map_err(|e| gen_err("simulator-secrets.json")(&e))?;
    write_file(secrets_path, &secrets, true)?;
    let json = MerchantJson {
        appid: c.appid.clone(),
        app_secret: c.app_secret.clone(),
        mchid: c.mchid.clone(),
        api_v2_key: c.api_v2_key.clone(),
        api_v3_key: c.api_v3_key.clone(),
        merchant_serial: c.merchant_serial.clone(),
        wechatpay_public_key_id: c.wechatpay_public_key_id.clone(),
        apiclient_key: APICLIENT_KEY.into(),
        apiclient_cert: APICLIENT_CERT.into(),
        apiclient_cert_p12: APICLIENT_P12.into(),
        platform_cert: PLATFORM_CERT.into(),
        wechatpay_public_key: PUBLIC_KEY.into(),
        sim_ca_cert: SIM_CA.into(),
    };
    let text = serde_json::to_vec_pretty(&json).map_err(|e| gen_err("merchant.json")(&e))?;
    // merchant.json holds the API keys, as the merchant's own configuration would.
    write_file(json_path, &text, true)
}

fn load(dir: &Path, json_path: &Path, secrets_path: &Path) -> Result<Material, CredentialsError> {
    let read_text = |path: &Path| std::fs::read_to_string(path).map_err(io_err(path));
    let json: MerchantJson =
        serde_json::from_str(&read_text(json_path)?).map_err(|e| CredentialsError::Invalid {
            path: json_path.to_owned(),
            reason: e.to_string(),
        })?;
    let secrets: SecretsJson =
        serde_json::from_str(&read_text(secrets_path)?).map_err(|e| CredentialsError::Invalid {
            path: secrets_path.to_owned(),
            reason: e.to_string(),
        })?;
    let beside = |name: &str| -> Result<PathBuf, CredentialsError> {
        let p = Path::new(name);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(CredentialsError::Invalid {
                path: json_path.to_owned(),
                reason: format!("{name:?} must be a file name beside merchant.json"),
            });
        }
        Ok(dir.join(p))
    };
    let p12_path = beside(&json.apiclient_cert_p12)?;
    let platform_cert_pem = read_text(&beside(&json.platform_cert)?)?;
    let platform_serial = X509Certificate::from_pem(&platform_cert_pem)
        .map_err(|e| CredentialsError::Invalid {
            path: beside(&json.platform_cert).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .serial_no;
    let credentials = MerchantCredentials {
        merchant_private_key_pem: read_text(&beside(&json.apiclient_key)?)?,
        merchant_cert_pem: read_text(&beside(&json.apiclient_cert)?)?,
        merchant_cert_p12: std::fs::read(&p12_path).map_err(io_err(&p12_path))?,
        platform_cert_pem,
        platform_serial,
        wechatpay_public_key_pem: read_text(&beside(&json.wechatpay_public_key)?)?,
        ca_cert_pem: read_text(&beside(&json.sim_ca_cert)?)?,
        appid: json.appid,
        app_secret: json.app_secret,
        mchid: json.mchid,
        api_v2_key: json.api_v2_key,
        api_v3_key: json.api_v3_key,
        merchant_serial: json.merchant_serial,
        wechatpay_public_key_id: json.wechatpay_public_key_id,
        merchant_json_path: None,
    };
    let merchant_cert = X509Certificate::from_pem(&credentials.merchant_cert_pem).map_err(|e| {
        CredentialsError::Invalid {
            path: json_path.to_owned(),
            reason: format!("apiclient_cert: {e}"),
        }
    })?;
    if merchant_cert.serial_no != credentials.merchant_serial {
        return Err(CredentialsError::Invalid {
            path: json_path.to_owned(),
            reason: "merchant_serial does not match apiclient_cert".into(),
        });
    }
    Ok(Material {
        credentials,
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_round_trip_keeps_the_merchant() {
        let dir = std::env::temp_dir().join(format!("wxpay-sim-merchant-{}", random_hex(12)));
        let first = load_or_create(&dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(MERCHANT_JSON)).unwrap()).unwrap();
        for key in [
            "appid",
            "app_secret",
            "mchid",
            "api_v2_key",
            "api_v3_key",
            "merchant_serial",
            "wechatpay_public_key_id",
            "apiclient_key",
            "apiclient_cert",
            "apiclient_cert_p12",
            "platform_cert",
            "wechatpay_public_key",
            "sim_ca_cert",
        ] {
            assert!(
                json.get(key).is_some_and(serde_json::Value::is_string),
                "{key}"
            );
        }
        let text = std::fs::read_to_string(dir.join(MERCHANT_JSON)).unwrap();
        assert!(!text.contains("PRIVATE KEY"));
        let second = load_or_create(&dir).unwrap();
        assert_eq!(first.credentials.mchid, second.credentials.mchid);
        assert_eq!(first.credentials.api_v3_key, second.credentials.api_v3_key);
        assert_eq!(
            first.keys.platform_cert.serial_no,
            second.keys.platform_cert.serial_no
        );
        assert_eq!(first.credentials.merchant_serial.len(), 40);
        assert!(
            first
                .credentials
                .wechatpay_public_key_id
                .starts_with("PUB_KEY_ID_")
        );
        // The PKCS#12 opens with the mchid as password, as the library reads it.
        wxpay::http::ClientIdentity::from_pkcs12(
            &first.credentials.merchant_cert_p12,
            &first.credentials.mchid,
        )
        .unwrap();
        assert!(!format!("{first:?}").contains(&first.credentials.api_v3_key));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
