//! `GET /metrics`: the Prometheus exposition (reader role, or `--metrics-token`), and the
//! request accounting every route goes through (`jobscope_http_request_duration_seconds`).
//!
//! Rendering reads only the in-memory snapshot (see [`crate::metrics`]) and runs on a blocking
//! thread, so a large scrape neither waits for the database nor stalls the request workers.
//! [`serve_standalone`] serves the same endpoint alone, for `jobscope agent --metrics-listen`.

use super::error::ApiError;
use super::stream::StreamRegistry;
use super::AppState;
use crate::metrics::text::{self, Kind};
use crate::metrics::Metrics;
use std::future::Future;
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn scrape(state: AppState) -> Response {
    let streams = state.streams.clone();
    render_response(state.metrics.clone(), Some(streams)).await
}

async fn render_response(metrics: Metrics, streams: Option<StreamRegistry>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let mut out = metrics.render();
        if let Some(streams) = streams {
            stream_connections(&mut out, &streams);
        }
        out
    })
    .await;
    match rendered {
        Ok(body) => {
            let mut response = Response::new(body.into());
            response.headers_mut().insert(
                "content-type",
                warp::http::HeaderValue::from_static(CONTENT_TYPE),
            );
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "rendering /metrics failed");
            ApiError::Internal.into_response()
        }
    }
}

/// Streams and protocols listed even with no connection open, so the series always exist.
const STREAMS: [&str; 3] = ["jobs", "job", "cluster"];
const PROTOCOLS: [&str; 2] = ["sse", "ws"];

fn stream_connections(out: &mut String, streams: &StreamRegistry) {
    let mut counts: std::collections::BTreeMap<(&str, &str), usize> = STREAMS
        .iter()
        .flat_map(|s| PROTOCOLS.iter().map(move |p| ((*s, *p), 0)))
        .collect();
    for (stream, protocol, n) in streams.connection_counts() {
        counts.insert((stream, protocol), n);
    }
    text::header(
        out,
        "jobscope_stream_connections",
        Kind::Gauge,
        "Open SSE and WebSocket stream subscriptions, by stream and protocol.",
    );
    for ((stream, protocol), n) in counts {
        let labels = text::labels(&[("stream", stream), ("protocol", protocol)]);
        text::sample(out, "jobscope_stream_connections", &labels, n as f64);
    }
}

/// Counts one answered request: its latency under its route template, and for the lifecycle
/// hooks their outcome (`created`/`updated`/`skipped` from the handler, `error` for any error
/// answer, malformed bodies included).
pub fn observe(
    metrics: &Metrics,
    started: std::time::Instant,
    method: &Method,
    path: &str,
    response: &Response,
) {
    let route = route_template(path);
    let status = response.status();
    metrics.http_request(
        route,
        method_label(method),
        status.as_u16(),
        started.elapsed(),
    );
    let event = match route {
        "/v1/events/job-started" => "job-started",
        "/v1/events/job-finished" => "job-finished",
        _ => return,
    };
    if *method != Method::POST {
        return;
    }
    match response.extensions().get::<super::hooks::HookOutcome>() {
        Some(outcome) => metrics.hook_event(event, outcome.0),
        None if status.is_client_error() || status.is_server_error() => {
            metrics.hook_event(event, "error")
        }
        None => {}
    }
}

/// The route template of a request path, for the request histogram: a bounded set of values,
/// never the raw path (job ids would make a series per job).
pub fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["metrics"] => "/metrics",
        ["v1", "health"] => "/v1/health",
        ["v1", "openapi.yaml"] => "/v1/openapi.yaml",
        ["v1", "events", "job-started"] => "/v1/events/job-started",
        ["v1", "events", "job-finished"] => "/v1/events/job-finished",
        ["v1", "jobs"] => "/v1/jobs",
        ["v1", "jobs", _] => "/v1/jobs/{id}",
        ["v1", "jobs", _, "metrics"] => "/v1/jobs/{id}/metrics",
        ["v1", "jobs", _, "audit"] => "/v1/jobs/{id}/audit",
        ["v1", "jobs", _, "report"] => "/v1/jobs/{id}/report",
        ["v1", "jobs", _, "log"] => "/v1/jobs/{id}/log",
        ["v1", "jobs", _, "log", "download"] => "/v1/jobs/{id}/log/download",
        ["v1", "reports"] => "/v1/reports",
        ["v1", "whoami"] => "/v1/whoami",
        ["v1", "samples"] => "/v1/samples",
        ["v1", "nodes"] => "/v1/nodes",
        ["v1", "nodes", _] => "/v1/nodes/{name}",
        ["v1", "nodes", _, "jobs"] => "/v1/nodes/{name}/jobs",
        ["v1", "partitions"] => "/v1/partitions",
        ["v1", "partitions", _] => "/v1/partitions/{name}",
        ["v1", "stream", "jobs"] => "/v1/stream/jobs",
        ["v1", "stream", "jobs", _] => "/v1/stream/jobs/{id}",
        ["v1", "stream", "jobs", _, "log"] => "/v1/stream/jobs/{id}/log",
        ["v1", "stream", "cluster"] => "/v1/stream/cluster",
        ["v1", "stream", "nodes"] => "/v1/stream/nodes",
        ["v1", "stream", "partitions"] => "/v1/stream/partitions",
        ["v1", "stream", "tickets"] => "/v1/stream/tickets",
        ["v1", "stream", "status"] => "/v1/stream/status",
        ["v1", "stream", "logs"] => "/v1/stream/logs",
        ["v1", "ws"] => "/v1/ws",
        _ => "other",
    }
}

/// The method label: the methods the API knows, everything else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Serves `GET /metrics` alone on `listener` (no authentication: bind it to an address only
/// Prometheus can reach) until `shutdown` resolves. For `jobscope agent --metrics-listen`.
pub async fn serve_standalone(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let route = warp::path!("metrics")
        .and(warp::get())
        .then(move || render_response(metrics.clone(), None))
        .or(warp::any().map(|| {
            warp::reply::with_status("only GET /metrics is served here\n", StatusCode::NOT_FOUND)
                .into_response()
        }))
        .unify();
    warp::serve(route)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates() {
        assert_eq!(route_template("/v1/jobs/4242"), "/v1/jobs/{id}");
        assert_eq!(
            route_template("/v1/jobs/4242/metrics"),
            "/v1/jobs/{id}/metrics"
        );
        assert_eq!(route_template("/v1/stream/jobs/x"), "/v1/stream/jobs/{id}");
        assert_eq!(route_template("/metrics"), "/metrics");
        assert_eq!(route_template("/v1/jobs/1/2/3/4"), "other");
        assert_eq!(route_template("/wp-admin/../etc/passwd"), "other");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
