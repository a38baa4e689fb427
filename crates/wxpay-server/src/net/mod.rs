//! The connections: the accept loop (HTTP/1.1 and HTTP/2, optionally TLS), the client's
//! address behind trusted proxies, the per-connection limits, the bounded graceful stop, and the
//! checks of a deployment (public URL, exposed sandbox).

pub mod client_ip;
pub mod limits;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use self::client_ip::LocalAddr;
use self::limits::{Activity, ConnectionLimits, Expired, Watched};

/// How long a connection closed for a timeout may take to say goodbye (HTTP/2 GOAWAY).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Completes when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `stop` turns true: then accepts no more connections, asks
/// every open one to finish (HTTP/1: after its current request; HTTP/2: GOAWAY), and after
/// `limits.shutdown_timeout` closes those still open.
///
/// # Errors
/// Never after the start (failed accepts are logged and retried); the type leaves room.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so that the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stopped(&mut stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: the error would repeat at once.
                    tracing::warn!(error = %e, %local, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            connection(stream, peer, local, tls, router, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            of = open,
            secs = limits.shutdown_timeout.as_secs(),
            %local,
            "connections still open at the end of the shutdown timeout: closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let stream = Watched::new(stream, activity.clone());
    match tls {
        None => {
            serve_connection(
                TokioIo::new(stream),
                peer,
                local,
                router,
                limits,
                stop,
                activity,
            )
            .await
        }
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(
                        TokioIo::new(stream),
                        peer,
                        local,
                        router,
                        limits,
                        stop,
                        activity,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    local: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = requests.request();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(LocalAddr(local));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(guard);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            why = activity.expired(&limits) => {
                if why == Expired::Header {
                    tracing::info!(%peer, secs = limits.header_timeout.as_secs(), "no complete request within the header timeout: connection closed");
                }
                // HTTP/2 gets its GOAWAY, and an idle HTTP/1 connection closes at once; a
                // half-read HTTP/1 head is dropped after the grace.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

/// Whether a WeChat Pay base URL (`None`: the default) is one of WeChat's own hosts.
#[must_use]
pub fn is_wechat_production(pay_base_url: Option<&str>) -> bool {
    let Some(url) = pay_base_url else {
        return true;
    };
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':', '?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    host == "weixin.qq.com" || host.ends_with(".weixin.qq.com") || host.ends_with(".wechatpay.cn")
}

/// With a merchant against WeChat's production hosts and API v3, the notify URLs must be HTTPS:
/// WeChat refuses others (with v2 it is a warning, see [`deployment_warnings`]). Against
/// another base URL (a simulator) plain HTTP stays allowed.
///
/// # Errors
/// `WXPAY_PUBLIC_URL`, one line.
pub fn check_public_url(
    merchant: bool,
    pay_base_url: Option<&str>,
    public_url: Option<&str>,
    api_version: crate::store::ApiVersion,
) -> Result<(), crate::config::ConfigError> {
    if merchant
        && api_version == crate::store::ApiVersion::V3
        && is_wechat_production(pay_base_url)
        && !public_url.is_some_and(|u| u.starts_with("https://"))
    {
        return Err(crate::config::ConfigError::new(
            "WXPAY_PUBLIC_URL",
            "must be an https:// URL that WeChat can reach: WeChat Pay API v3 refuses notify URLs that are not HTTPS",
        ));
    }
    Ok(())
}

/// Warnings for the banner: a v2 merchant on WeChat's production hosts whose notify URLs are
/// not HTTPS, a sandbox reachable from other machines.
#[must_use]
pub fn deployment_warnings(
    settings: &crate::config::Settings,
    notify_base: &str,
    addr: SocketAddr,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !settings.is_sandbox()
        && is_wechat_production(settings.pay_base_url.as_deref())
        && !notify_base.starts_with("https://")
    {
        warnings.push(format!(
            "WXPAY_PUBLIC_URL is not https:// ({notify_base}): WeChat may refuse or not deliver notifications to it; put the server behind HTTPS"
        ));
    }
    if settings.is_sandbox() && !addr.ip().is_loopback() {
        warnings.push(format!(
            "sandbox mode listens on {addr}, reachable from other machines: anyone there can use the simulator and its admin token is printed above; listen on 127.0.0.1 or configure a merchant"
        ));
    }
    warnings
}
