//! One listener for plain HTTP and TLS on the same port: the first byte tells them apart (0x16
//! opens a TLS handshake). TLS asks for a client certificate issued by the simulator CA but
//! accepts connections without one; the verified certificate reaches handlers as the
//! [`ClientCertificate`] request extension (the v2 `/secapi/` endpoints require it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::merchant::SimulatorKeys;

/// The TLS client certificate of the connection (DER), verified against the simulator CA;
/// `None` on plain HTTP or when the client sent none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertificate(pub Option<Vec<u8>>);

/// Whether the request came over TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tls(pub bool);

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration: the simulator's server certificate; client certificates optional,
/// verified against the simulator CA when given.
///
/// # Errors
/// When the certificates or keys are rejected by rustls.
pub fn tls_config(keys: &SimulatorKeys) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(keys.ca_cert_der.clone()))
        .map_err(|e| format!("simulator CA: {e}"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client certificate verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(keys.tls_cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(keys.tls_key_der.clone())),
        )
        .map_err(|e| format!("TLS server certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets open connections finish
/// their requests (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(connection(stream, app.clone(), acceptor.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    app: Router,
    acceptor: TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == 0x16 {
        let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
        else {
            return;
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        http(
            TokioIo::new(tls),
            app,
            ClientCertificate(cert),
            Tls(true),
            shutdown,
        )
        .await;
    } else {
        http(
            TokioIo::new(stream),
            app,
            ClientCertificate(None),
            Tls(false),
            shutdown,
        )
        .await;
    }
}

async fn http<I>(
    io: I,
    app: Router,
    cert: ClientCertificate,
    tls: Tls,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(cert.clone());
        request.extensions_mut().insert(tls);
        request
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }
    }
}

/// Middleware: one `info` line per request with method, path (never the query string, which
/// may hold an access_token), status and latency.
pub async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        target: "wxpay_sim::request",
        %method,
        path = %path,
        status = response.status().as_u16(),
        latency_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}
