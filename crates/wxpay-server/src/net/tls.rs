//! HTTPS on its own (`WXPAY_TLS_CERT` + `WXPAY_TLS_KEY`): rustls with aws-lc-rs, HTTP/2 and
//! HTTP/1.1 offered by ALPN, and the certificate reloaded when its files change.
//!
//! Reloading reads both files every `WXPAY_TLS_RELOAD_SECS` and compares them with what is
//! loaded. A file watcher (`notify`) was not chosen: certbot and Kubernetes replace certificates
//! by swapping symlinks or directories, which inotify on the file itself does not report, and a
//! renewal every few months does not need to be seen within a second. Reading two small files
//! every few seconds costs nothing and sees every kind of replacement. A pair that does not load
//! (a key written before its certificate, a mismatch) keeps the old certificate in service and is
//! logged once; the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;

/// The certificate chain and private key files, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `WXPAY_TLS_CERT`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `WXPAY_TLS_KEY`: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The files' contents, as last read.
type Contents = (Vec<u8>, Vec<u8>);

fn read(files: &TlsFiles) -> Result<Contents, ConfigError> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
    };
    Ok((
        read("WXPAY_TLS_CERT", &files.cert)?,
        read("WXPAY_TLS_KEY", &files.key)?,
    ))
}

/// A certificate and key that belong together.
fn certified_key(
    files: &TlsFiles,
    (cert, key): &Contents,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ConfigError::new(
                "WXPAY_TLS_CERT",
                format!(
                    "{} is not a PEM certificate chain: {e}",
                    files.cert.display()
                ),
            )
        })?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            "WXPAY_TLS_CERT",
            format!("{} holds no CERTIFICATE", files.cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
        ConfigError::new(
            "WXPAY_TLS_KEY",
            format!("{} holds no PEM private key", files.key.display()),
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| {
            ConfigError::new(
                "WXPAY_TLS_KEY",
                format!("{} is not a usable private key: {e}", files.key.display()),
            )
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(ConfigError::new(
                "WXPAY_TLS_KEY",
                format!(
                    "{} does not match the certificate in {} (WXPAY_TLS_CERT)",
                    files.key.display(),
                    files.cert.display()
                ),
            ))
        }
        Err(e) => Err(ConfigError::new(
            "WXPAY_TLS_CERT",
            format!("{}: {e}", files.cert.display()),
        )),
    }
}

/// The certificate in service, replaced when the files change.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// What `current` was loaded from, and the contents last refused (logged once).
    seen: std::sync::Mutex<(Contents, Option<Contents>)>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl CertStore {
    /// Loads the pair.
    ///
    /// # Errors
    /// One line naming the key at fault: a file missing, not PEM, or a key that does not match
    /// the certificate.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, ConfigError> {
        let provider = provider();
        let contents = read(&files)?;
        let key = certified_key(&files, &contents, &provider)?;
        Ok(Arc::new(CertStore {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: std::sync::Mutex::new((contents, None)),
        }))
    }

    /// The acceptor: TLS 1.2 and 1.3, HTTP/2 preferred to HTTP/1.1.
    ///
    /// # Errors
    /// When rustls refuses the protocol versions (not with the default provider).
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, ConfigError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("WXPAY_TLS_CERT", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reads the files again; a changed pair that loads replaces the certificate in service.
    /// Returns whether it was replaced.
    pub fn reload(&self) -> bool {
        let contents = match read(&self.files) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("TLS certificate not reloaded: {e}");
                return false;
            }
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.0 == contents || seen.1.as_ref() == Some(&contents) {
            return false;
        }
        match certified_key(&self.files, &contents, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                *seen = (contents, None);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!("TLS certificate not reloaded, the previous one stays: {e}");
                seen.1 = Some(contents);
                false
            }
        }
    }

    /// Checks the files every `every` until `stop` turns true.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = super::stopped(&mut stop) => return,
            }
            let store = self.clone();
            // File reads block; keep them off the serving threads.
            let _ = tokio::task::spawn_blocking(move || store.reload()).await;
        }
    }
}
