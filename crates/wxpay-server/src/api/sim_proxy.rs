//! `/sim/*` in sandbox mode: the simulator's control API, proxied so that the console's
//! emulator and the mini program reach it through this origin. Only what a WeChat user does
//! passes without the admin token; nothing else reaches the simulator.
//!
//! * The path is checked before anything else: percent-decoded segment by segment, it must be
//!   `/sim/` followed by segments that are not empty (no `//`), not `.` or `..`, and contain no
//!   `/`, `\`, `%`, control character or percent-encoded dot. Anything else is 404 (the API's
//!   `{"code","message"}`), and the simulator is not contacted.
//! * Only known routes pass (method and route template); others are 404, again locally.
//! * Open to anyone: `POST /sim/users` (a fresh user with a generated openid: the body is empty
//!   or an object without `openid`), `POST /sim/pay` (the simulator checks the paySign) and
//!   `POST /sim/users/{openid}/code` with the user's own key in `X-Sim-User-Key` (the simulator
//!   checks it: 403 when wrong).
//! * Public: `GET /sim/apps` (every mini program's appid and merchant id, the facts the cashier
//!   shows; the emulator offers them to choose from), `POST /sim/transfers/confirm` (a user
//!   confirming a merchant transfer) and `POST /sim/orders/{no}/confirm-receipt`
//!   (the buyer confirming receipt in WeChat's component; the simulator accepts it only for a
//!   shipped order). The simulator controls them, so the proxy asks with the control token for
//!   anyone; their answers hold no secret.
//! * Everything else (`/sim/orders/*`, `PUT /sim/mp/push`, `PUT /sim/mp/trade-management`,
//!   `GET /sim/mp/pushes`, `GET /sim/transfers`, `/sim/transfers/settings`,
//!   `/sim/merchants/*/balance`, `/sim/notifications*`, `/sim/faults`, `/sim/clock*`,
//!   `/sim/merchant`, `/sim/connection`, `/sim/merchants`, `POST /sim/apps`, a chosen openid, a
//!   code without the user's key) needs
//!   `Authorization: Bearer <admin token>`, checked as the back office checks it: 401 otherwise.
//!   The admin token is never forwarded; an admitted request carries the simulator's control
//!   token instead.
//!
//! Only `Content-Type`, `X-Sim-User-Key`, the `out_trade_no` query of `GET /sim/notifications`
//! and the `mchid` and `openid` queries of `GET /sim/transfers` are forwarded, re-encoded.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};
use secrecy::ExposeSecret;

use crate::api::admin::Admin;
use crate::app::AppState;
use crate::error::ApiError;

/// The header carrying a simulated user's own key.
pub const USER_KEY_HEADER: &str = "x-sim-user-key";

const MAX_BODY: usize = 1024 * 1024;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone.
    Open,
    /// `POST /sim/users`: anyone for a generated openid, the admin for a chosen one.
    NewUser,
    /// `POST /sim/users/{openid}/code`: the user with their key, or the admin.
    UserCode,
    /// Anyone; the answer holds public facts only, so the proxy asks with the control token.
    Public,
    /// The admin token.
    Admin,
}

/// The simulator's control routes that pass: method, template (`*` is one path parameter),
/// access.
const ROUTES: &[(Method, &[&str], Access)] = &[
    (Method::POST, &["users"], Access::NewUser),
    (Method::POST, &["users", "*", "code"], Access::UserCode),
    (Method::POST, &["pay"], Access::Open),
    (Method::GET, &["orders", "*"], Access::Admin),
    // The buyer confirming receipt in WeChat's confirm-receipt component: for anyone, as paying
    // is (the emulator is the buyer's WeChat; the simulator accepts it only for a shipped
    // order), asked with the control token the simulator wants for it.
    (
        Method::POST,
        &["orders", "*", "confirm-receipt"],
        Access::Public,
    ),
    // The mini program's message-push settings at WeChat: the admin's.
    // The user confirming a merchant transfer in WeChat's confirm page: for anyone, as paying
    // is (the simulator checks the package and the user).
    (Method::POST, &["transfers", "confirm"], Access::Public),
    (Method::GET, &["transfers"], Access::Admin),
    (Method::GET, &["transfers", "settings"], Access::Admin),
    (Method::PUT, &["transfers", "settings"], Access::Admin),
    (Method::GET, &["merchants", "*", "balance"], Access::Admin),
    (Method::PUT, &["merchants", "*", "balance"], Access::Admin),
    (Method::PUT, &["mp", "push"], Access::Admin),
    (Method::PUT, &["mp", "trade-management"], Access::Admin),
    (Method::GET, &["mp", "pushes"], Access::Admin),
    (Method::GET, &["notifications"], Access::Admin),
    (Method::POST, &["notifications", "flush"], Access::Admin),
    (Method::GET, &["faults"], Access::Admin),
    (Method::PUT, &["faults"], Access::Admin),
    (Method::GET, &["clock"], Access::Admin),
    (Method::POST, &["clock", "advance"], Access::Admin),
    (Method::GET, &["merchant"], Access::Admin),
    (Method::GET, &["cashier"], Access::Open),
    (Method::GET, &["connection"], Access::Admin),
    (Method::GET, &["merchants"], Access::Admin),
    (Method::POST, &["merchants"], Access::Admin),
    (Method::GET, &["apps"], Access::Public),
    (Method::POST, &["apps"], Access::Admin),
];

fn no_such_route() -> Response {
    ApiError::not_found("no such route").into_response()
}

/// The decoded segments after `/sim/`, or `None` when the path is not plainly under `/sim/`.
fn sim_segments(raw_path: &str) -> Option<Vec<String>> {
    let rest = raw_path.strip_prefix("/sim/")?;
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        // An encoded dot is only ever a trick: WeChat's ids have none to encode.
        let lower = raw.to_ascii_lowercase();
        if lower.contains("%2e") {
            return None;
        }
        let decoded = percent_decode(raw)?;
        if decoded.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded
                .chars()
                .any(|c| matches!(c, '/' | '\\' | '%') || c.is_control())
        {
            return None;
        }
        segments.push(decoded);
    }
    Some(segments)
}

/// Percent-decodes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The route a method and segments match.
fn route_of(method: &Method, segments: &[String]) -> Option<Access> {
    ROUTES.iter().find_map(|(m, template, access)| {
        let matches = m == method
            && template.len() == segments.len()
            && template
                .iter()
                .zip(segments)
                .all(|(t, s)| *t == "*" || t == s);
        matches.then_some(*access)
    })
}

/// Whether a `POST /sim/users` body asks for a generated openid: empty, or an object without
/// a non-null `openid` (an array would fill the fields in order, so it is not one).
fn asks_for_generated_openid(body: &[u8]) -> bool {
    if body.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map.get("openid").is_none_or(|v| v.is_null()),
        // Not an object: the simulator refuses it (400) whoever asks; no openid is chosen.
        Ok(_) => false,
        Err(_) => true,
    }
}

/// The proxy.
pub async fn sim_proxy(State(state): State<AppState>, request: Request) -> Response {
    let Some(base) = state.sandbox_url.clone() else {
        return no_such_route();
    };
    let (mut parts, body) = request.into_parts();
    let Some(segments) = sim_segments(parts.uri.path()) else {
        return no_such_route();
    };
    let Some(access) = route_of(&parts.method, &segments) else {
        return no_such_route();
    };
    let user_key = parts
        .headers
        .get(USER_KEY_HEADER)
        .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
        .cloned();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            )
            .into_response();
        }
    };
    let needs_admin = match access {
        Access::Open | Access::Public => false,
        Access::NewUser => !asks_for_generated_openid(&body),
        Access::UserCode => user_key.is_none(),
        Access::Admin => true,
    };
    // Where it is not needed, a bearer that is not the admin token (a session's) only adds
    // nothing.
    let admin = match Admin::from_request_parts(&mut parts, &state).await {
        Ok(Admin) => true,
        Err(e) if needs_admin => return e.into_response(),
        Err(_) => false,
    };

    let mut target = format!("{base}/sim");
    for segment in &segments {
        target.push('/');
        target.push_str(&percent_encode(segment));
    }
    let names: Vec<&str> = segments.iter().map(String::as_str).collect();
    let passed: &[&str] = match names.as_slice() {
        ["notifications"] => &["out_trade_no"],
        ["transfers"] => &["mchid", "openid"],
        _ => &[],
    };
    if !passed.is_empty() {
        let query = axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(
            &parts.uri,
        );
        let Ok(axum::extract::Query(query)) = query else {
            return ApiError::bad_request("invalid query string").into_response();
        };
        let mut separator = '?';
        for name in passed {
            if let Some(value) = query.get(*name) {
                target.push(separator);
                target.push_str(name);
                target.push('=');
                target.push_str(&percent_encode(value));
                separator = '&';
            }
        }
    }
    let mut forwarded = state.proxy.request(parts.method.clone(), target).body(body);
    if let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE) {
        forwarded = forwarded.header(http::header::CONTENT_TYPE, content_type.clone());
    }
    if access == Access::UserCode
        && let Some(key) = user_key
    {
        forwarded = forwarded.header(USER_KEY_HEADER, key);
    }
    if (admin || access == Access::Public)
        && let Some(token) = &state.sandbox_control_token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
    {
        forwarded = forwarded.header(http::header::AUTHORIZATION, value);
    }
    let simulator_error = |e: reqwest::Error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "simulator_error",
            e.without_url().to_string(),
        )
        .into_response()
    };
    let answer = match forwarded.send().await {
        Ok(answer) => answer,
        Err(e) => return simulator_error(e),
    };
    let status = answer.status();
    let content_type = answer.headers().get(http::header::CONTENT_TYPE).cloned();
    match answer.bytes().await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(e) => simulator_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_under_sim_have_segments() {
        assert_eq!(
            sim_segments("/sim/users/o%2Dx/code"),
            Some(vec!["users".into(), "o-x".into(), "code".into()])
        );
        for bad in [
            "/sim",
            "/sim/",
            "/sim//merchant",
            "/sim/merchant/",
            "/sim/../pay/unifiedorder",
            "/sim/./merchant",
            "/sim/%2e%2e/v3/pay/transactions/jsapi",
            "/sim/%2E%2E/x",
            "/sim/.%2e/x",
            "/sim/%2F../x",
            "/sim/%2fmerchant",
            "/sim/..\\pay",
            "/sim/%5C..%5Cpay",
            "/sim/%252e%252e/x",
            "/sim/%00",
            "/sim/%ff",
            "/sim/%zz",
            "/simx/merchant",
            "/v3/pay",
        ] {
            assert_eq!(sim_segments(bad), None, "{bad}");
        }
    }

    #[test]
    fn routes_match_by_method_and_template() {
        let s = |p: &str| sim_segments(p).unwrap();
        assert_eq!(
            route_of(&Method::POST, &s("/sim/users")),
            Some(Access::NewUser)
        );
        assert_eq!(
            route_of(&Method::POST, &s("/sim/users/o1/code")),
            Some(Access::UserCode)
        );
        assert_eq!(route_of(&Method::GET, &s("/sim/users")), None);
        assert_eq!(
            route_of(&Method::GET, &s("/sim/apps")),
            Some(Access::Public)
        );
        assert_eq!(
            route_of(&Method::POST, &s("/sim/apps")),
            Some(Access::Admin)
        );
        assert_eq!(
            route_of(&Method::POST, &s("/sim/orders/WX1/confirm-receipt")),
            Some(Access::Public)
        );
        assert_eq!(
            route_of(&Method::PUT, &s("/sim/mp/push")),
            Some(Access::Admin)
        );
        assert_eq!(
            route_of(&Method::POST, &s("/sim/merchants")),
            Some(Access::Admin)
        );
        assert_eq!(route_of(&Method::GET, &s("/sim/apps/x")), None);
        assert_eq!(route_of(&Method::GET, &s("/sim/orders/a/b")), None);
        assert_eq!(route_of(&Method::DELETE, &s("/sim/faults")), None);
        assert_eq!(route_of(&Method::GET, &s("/sim/v3/pay")), None);
    }

    #[test]
    fn a_chosen_openid_is_recognised_in_any_form() {
        assert!(asks_for_generated_openid(b""));
        assert!(asks_for_generated_openid(b" {} "));
        assert!(asks_for_generated_openid(br#"{"openid":null}"#));
        assert!(!asks_for_generated_openid(br#"{"openid":"victim"}"#));
        assert!(!asks_for_generated_openid(
            br#"{"openid":null,"openid":"victim"}"#
        ));
        assert!(!asks_for_generated_openid(br#"["victim"]"#));
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("a/b?c"), "a%2Fb%3Fc");
    }
}
