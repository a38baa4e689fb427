//! The web console, served from files embedded in the binary: the back office at `/` and, in
//! sandbox mode only, the mini-program emulator at `/emulator`. Plain HTML, CSS and JavaScript
//! modules from `console/` (no build step, nothing fetched from elsewhere), served with a strict
//! Content-Security-Policy so that the pages run only their own scripts.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

/// The policy of every console response: only this origin's scripts, styles, images and
/// connections (images also as `blob:` URLs: the mini-program code is fetched with the admin
/// token, which an `<img src>` cannot send); no plugins, no framing, no `<base>` rewriting.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
struct Asset {
    /// The file name under `/console/` (or the page it is served as).
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// Part of the emulator, which exists in sandbox mode only.
    sandbox_only: bool,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($name:literal, $type:expr, $sandbox_only:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../console/", $name)),
            sandbox_only: $sandbox_only,
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", HTML, false),
    asset!("emulator.html", HTML, true),
    asset!("console.css", CSS, false),
    asset!("common.js", JS, false),
    asset!("i18n.js", JS, false),
    asset!("admin.js", JS, false),
    asset!("chart.js", JS, false),
    asset!("registry.js", JS, false),
    asset!("emulator.js", JS, true),
    asset!("favicon.svg", SVG, false),
];

/// Strong ETags from the content: the files only change with the binary, so browsers revalidate
/// (`no-cache`) and get a 304 until an upgrade.
static ETAGS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a.bytes);
            (
                a.name,
                format!("\"{}\"", hex::encode(&digest.as_ref()[..12])),
            )
        })
        .collect()
});

/// The console's routes: `/` (back office), `/console/{file}`, `/console/info`, and in sandbox
/// mode `/emulator`.
pub fn routes(sandbox: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/", get(index))
        .route("/console/info", get(info))
        .route("/console/{file}", get(file));
    if sandbox {
        router.route("/emulator", get(emulator))
    } else {
        router
    }
}

fn asset(name: &str, sandbox: bool) -> Option<&'static Asset> {
    ASSETS
        .iter()
        .find(|a| a.name == name && (sandbox || !a.sandbox_only))
}

/// Headers every console response carries.
fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn serve(asset: &Asset, request_headers: &HeaderMap) -> Response {
    let etag = ETAGS.get(asset.name).map_or("", String::as_str);
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

fn not_found() -> Response {
    ApiError::not_found("no such route").into_response()
}

async fn index(headers: HeaderMap) -> Response {
    asset("index.html", false).map_or_else(not_found, |a| serve(a, &headers))
}

async fn emulator(headers: HeaderMap) -> Response {
    asset("emulator.html", true).map_or_else(not_found, |a| serve(a, &headers))
}

async fn file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    // The pages are served at `/` and `/emulator`, not under `/console/`.
    if name.ends_with(".html") {
        return not_found();
    }
    asset(&name, state.sandbox_url.is_some()).map_or_else(not_found, |a| serve(a, &headers))
}

/// `GET /console/info`: what the pages need to know about this server before anything else
/// (whether it is a sandbox, whether the admin API is open). Nothing secret.
async fn info(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(json!({
        "sandbox": state.sandbox_url.is_some(),
        "admin_api": state.admin_token.is_some(),
        "api_version": state.registry.default_app().api_version.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response();
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_etag_and_a_known_type() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.name);
            assert!(seen.insert(ETAGS[a.name].clone()), "{}", a.name);
            let ext = a.name.rsplit('.').next().unwrap();
            let expected = match ext {
                "html" => HTML,
                "css" => CSS,
                "js" => JS,
                "svg" => SVG,
                other => panic!("no content type for .{other}"),
            };
            assert_eq!(a.content_type, expected, "{}", a.name);
        }
    }

    #[test]
    fn the_pages_load_only_local_files_and_no_inline_code() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{}",
                a.name
            );
            assert!(!text.contains("style=\""), "inline style in {}", a.name);
            assert!(!has_inline_handler(text), "inline handler in {}", a.name);
            for script in text.split("<script").skip(1) {
                let open = &script[..script.find('>').unwrap()];
                assert!(open.contains("src=\"/console/"), "{}: {open}", a.name);
            }
        }
    }

    /// ` onclick=`, ` onload=`, ...: an attribute starting with `on` inside a tag.
    fn has_inline_handler(html: &str) -> bool {
        html.split('<').skip(1).any(|tag| {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            tag.split_whitespace().skip(1).any(|attr| {
                attr.len() > 2 && attr[..2].eq_ignore_ascii_case("on") && attr.contains('=')
            })
        })
    }

    fn labels(text: &str, start: &str, end: &str) -> std::collections::BTreeSet<String> {
        let from = text.find(start).unwrap() + start.len();
        let to = from + text[from..].find(end).unwrap();
        text[from..to]
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let key = l.split(": ").next()?;
                (l.contains(": ") && !l.starts_with("//"))
                    .then(|| key.trim_matches('\'').to_owned())
            })
            .collect()
    }

    #[test]
    fn every_label_exists_in_both_languages() {
        let text = std::str::from_utf8(asset("i18n.js", false).unwrap().bytes).unwrap();
        let zh = labels(text, "const zh = {", "\n};");
        let en = labels(text, "const en = {", "\n};");
        assert!(zh.len() > 100, "{}", zh.len());
        let only_zh: Vec<_> = zh.difference(&en).collect();
        let only_en: Vec<_> = en.difference(&zh).collect();
        assert!(
            only_zh.is_empty() && only_en.is_empty(),
            "{only_zh:?} {only_en:?}"
        );
    }

    #[test]
    fn the_scripts_never_write_markup_from_strings() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", a.name);
            }
        }
    }

    #[test]
    fn a_sandbox_only_file_is_not_found_outside_the_sandbox() {
        assert!(asset("emulator.js", false).is_none());
        assert!(asset("emulator.js", true).is_some());
        assert!(asset("admin.js", false).is_some());
        assert!(asset("../Cargo.toml", true).is_none());
    }
}
