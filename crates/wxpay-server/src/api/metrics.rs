//! `GET /metrics`: Prometheus text.
//!
//! Counters: `wxpay_orders_created_total{source}`, `wxpay_orders_paid_total{via}`,
//! `wxpay_notifications_total{route,result}`, `wxpay_webhook_deliveries_total{type,result}`,
//! `wxpay_job_runs_total{job,result}`, `wxpay_http_requests_total{method,route,status}`.
//! Histogram: `wxpay_http_request_duration_seconds{method,route}`. Gauges read from the
//! database at each scrape: `wxpay_orders{status}`, `wxpay_webhooks_pending`,
//! `wxpay_refunds_processing`.
//!
//! Labels take bounded values only: the method is one of the standard ones or `other`, the
//! route is the matched route's template or `other`, so that no request can add series.
//! `WXPAY_METRICS_TOKEN` puts `/metrics` behind a bearer token; `WXPAY_METRICS_LISTEN` serves it
//! on a listener of its own (and not on the main one).
//!
//! One recorder per process (the `metrics` facade is global): several servers in one process
//! (tests) share it.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;
use crate::error::ApiError;

const LATENCY: &str = "wxpay_http_request_duration_seconds";
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.to_owned()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics shows only what reaches this one"
            );
        }
        handle
    })
}

/// The routes of the main listener: `GET /metrics`, unless it has a listener of its own.
pub fn routes(settings: &crate::config::Settings, own_listener: bool) -> Router<AppState> {
    handle();
    if settings.metrics_listen.is_some() && !own_listener {
        return Router::new();
    }
    Router::new().route("/metrics", get(scrape))
}

/// The router of `WXPAY_METRICS_LISTEN`: `/metrics` only.
pub fn own_router(state: AppState) -> Router {
    let settings = state.settings.clone();
    routes(&settings, true)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

/// `WXPAY_METRICS_TOKEN`, when set.
fn authorized(state: &AppState, headers: &http::HeaderMap) -> bool {
    let Some(expected) = &state.settings.metrics_token else {
        return true;
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    // Digests first, so that neither the content nor the length leaks through timing.
    let digest = |t: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
    let (a, b) = (
        digest(given),
        digest(secrecy::ExposeSecret::expose_secret(expected)),
    );
    #[allow(deprecated)]
    let same = aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok();
    same
}

/// The method as a label: one of the standard methods, or `other`.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "`WXPAY_METRICS_TOKEN` is set and `Authorization: Bearer TOKEN` is missing or wrong", body = crate::api::admin::ErrorBody))
)]
pub(crate) async fn scrape(
    State(state): State<AppState>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::unauthorized(
            "Authorization: Bearer METRICS_TOKEN is required",
        ));
    }
    let store = &state.store;
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
            .fetch_all(store.pool())
            .await
            .map_err(crate::store::StoreError::from)?;
    for status in ["NOTPAY", "SUCCESS", "REFUND", "CLOSED", "PAYERROR"] {
        let n = by_status
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("wxpay_orders", "status" => status).set(n as f64);
    }
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        .fetch_one(store.pool())
        .await
        .map_err(crate::store::StoreError::from)?;
    metrics::gauge!("wxpay_webhooks_pending").set(pending as f64);
    let processing: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM refunds WHERE status = 'PROCESSING'")
            .fetch_one(store.pool())
            .await
            .map_err(crate::store::StoreError::from)?;
    metrics::gauge!("wxpay_refunds_processing").set(processing as f64);
    Ok((
        StatusCode::OK,
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response())
}

/// Middleware: latency and count per route (the route's pattern, never the raw path), and the
/// counters that follow from an answer (orders created, notifications by result).
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    metrics::histogram!(LATENCY, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("wxpay_http_requests_total", "method" => method, "route" => route.clone(), "status" => status.as_u16().to_string())
        .increment(1);
    if method == "POST" && status == StatusCode::CREATED {
        match route.as_str() {
            "/api/orders" => {
                metrics::counter!("wxpay_orders_created_total", "source" => "api").increment(1)
            }
            "/admin/orders" => {
                metrics::counter!("wxpay_orders_created_total", "source" => "admin").increment(1)
            }
            _ => {}
        }
    }
    if route.starts_with("/notify/") {
        let result = if status.is_success() {
            "acknowledged"
        } else {
            "refused"
        };
        metrics::counter!("wxpay_notifications_total", "route" => route, "result" => result)
            .increment(1);
    }
    response
}
