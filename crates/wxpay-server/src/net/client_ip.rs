//! The client's address: the socket peer, or, when the peer is a trusted reverse proxy
//! (`WXPAY_TRUSTED_PROXIES`), the address the proxies forwarded.
//!
//! One value per request ([`ClientIp`], resolved once by [`resolve`]) is what the login rate
//! limiter counts, what the request log shows, and what WeChat receives as the payer's
//! `payer_client_ip` / `spbill_create_ip`.
//!
//! Forwarded addresses are read right to left, skipping trusted proxies: the right-most entry
//! was written by the proxy that talks to this server, so it is true; everything left of the
//! first untrusted entry was written by the client and may be forged. The walk over a list of
//! networks is what the small crates for this (`axum-client-ip`, `client-ip`) do not offer (they
//! trust a fixed number of hops), so it is written here; `ipnet` does the networks.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The addresses and networks whose forwarded headers are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a list of addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`,
    /// `fd00::/8`) separated by commas or spaces.
    ///
    /// # Errors
    /// The first entry that is neither, quoted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let net = IpNet::from_str(entry)
                .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                .map_err(|_| {
                    format!("{entry:?} is not an IP address or a network like 10.0.0.0/8")
                })?;
            nets.push(net.trunc());
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether none is trusted (forwarded headers are then always ignored).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The networks, for display.
    #[must_use]
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

/// An IPv4 address mapped into IPv6 (a dual-stack socket's view of an IPv4 peer) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The client of a request whose socket peer is `peer`.
#[must_use]
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded_for: Vec<&str> = header_list(headers, "x-forwarded-for").collect();
    if !forwarded_for.is_empty() {
        return walk(peer, forwarded_for.iter().map(|e| parse_node(e)), trusted);
    }
    let forwarded: Vec<Option<IpAddr>> = header_list(headers, "forwarded")
        .filter_map(forwarded_for_param)
        .collect();
    if !forwarded.is_empty() {
        return walk(peer, forwarded.into_iter(), trusted);
    }
    if let Some(real) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_node(v.trim()))
    {
        return real;
    }
    peer
}

/// The comma-separated entries of every instance of a header, in order.
fn header_list<'a>(headers: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// Right to left: the first address that is not a trusted proxy. An entry that is not an
/// address (`unknown`, an obfuscated name, garbage) ends the walk: nothing left of it can be
/// told apart from forgery, so the last trusted hop seen stands for the client.
fn walk(
    peer: IpAddr,
    entries: impl DoubleEndedIterator<Item = Option<IpAddr>>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut last = peer;
    for entry in entries.rev() {
        let Some(ip) = entry.map(canonical) else {
            return last;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        last = ip;
    }
    last
}

/// `for=` of one element of a `Forwarded` header (RFC 7239): `Some(None)` for a `for` that is
/// not an address, `None` for an element without `for`.
fn forwarded_for_param(element: &str) -> Option<Option<IpAddr>> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]:5678`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(text) {
        return Some(ip);
    }
    if let Ok(addr) = SocketAddr::from_str(text) {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| IpAddr::from_str(t).ok())
}

/// The client's address (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(ip) = parts.extensions.get::<ClientIp>() {
            return Ok(ip.clone());
        }
        // A router served without `resolve` (tests that call it directly): no proxy is trusted.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(
                || "127.0.0.1".to_owned(),
                |c| canonical(c.0.ip()).to_string(),
            );
        Ok(ClientIp(ip))
    }
}

/// The address of this server on the connection a request came in on: what WeChat receives as
/// the "payer's" address of an order the back office makes (WeChat's field for orders made by a
/// server is the address of the machine calling the API; the operator is not the payer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// [`LocalAddr`]'s address as text, `127.0.0.1` when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ServerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<LocalAddr>()
            .map(|a| canonical(a.0.ip()))
            .filter(|ip| !ip.is_unspecified())
            .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string());
        Ok(ServerIp(ip))
    }
}

/// Middleware: resolves the request's [`ClientIp`] once, for every layer and handler after it.
pub async fn resolve(
    State(trusted): State<std::sync::Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        let ip = client_address(peer, request.headers(), &trusted);
        request.extensions_mut().insert(ClientIp(ip.to_string()));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::{TrustedProxies, client_address};
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rightmost_untrusted_address_of_a_trusted_chain() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(client_address(ip("192.168.1.1"), &h, &t), ip("1.2.3.4"));
        // Two header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4:5555"),
        ]);
        assert_eq!(client_address(ip("10.0.0.9"), &h, &t), ip("1.2.3.4"));
        // An untrusted peer's headers are never read.
        assert_eq!(client_address(ip("8.8.8.8"), &h, &t), ip("8.8.8.8"));
        // Garbage ends the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.2.2.2")]);
        assert_eq!(client_address(ip("10.0.0.9"), &h, &t), ip("10.2.2.2"));
    }

    #[test]
    fn forwarded_and_x_real_ip() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6;proto=https, for="[2001:db8::7]:4711";by=127.0.0.1"#,
        )]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("2001:db8::7"));
        let h = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("203.0.113.9"));
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &headers(&[]), &t),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("localhost").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }
}
