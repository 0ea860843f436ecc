//! The `Allow` header of a 405: which methods a route template takes. warp's "method not
//! allowed" rejection does not say, so the answer is looked up here from the template the
//! request's path falls under (see [`super::metrics::route_template`]); a test checks the table
//! against the OpenAPI document.

use warp::http::header::{HeaderValue, ALLOW};
use warp::http::StatusCode;
use warp::reply::Response;

/// The methods `template` answers, as an `Allow` value; `None` for an unknown template.
pub fn allowed_methods(template: &str) -> Option<&'static str> {
    Some(match template {
        "/v1/jobs" => "GET, POST",
        "/v1/jobs/{id}" => "GET, PATCH, DELETE",
        "/v1/jobs/{id}/metrics" => "GET, POST",
        "/v1/events/job-started"
        | "/v1/events/job-finished"
        | "/v1/samples"
        | "/v1/stream/tickets" => "POST",
        "/metrics"
        | "/v1/health"
        | "/v1/openapi.yaml"
        | "/v1/jobs/{id}/audit"
        | "/v1/nodes"
        | "/v1/nodes/{name}"
        | "/v1/nodes/{name}/jobs"
        | "/v1/partitions"
        | "/v1/partitions/{name}"
        | "/v1/stream/jobs"
        | "/v1/stream/jobs/{id}"
        | "/v1/stream/cluster"
        | "/v1/stream/nodes"
        | "/v1/stream/partitions"
        | "/v1/stream/status"
        | "/v1/ws" => "GET",
        _ => return None,
    })
}

/// Adds `Allow` to a 405 answer for `path`.
pub fn add_allow(path: &str, mut response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(methods) = allowed_methods(super::metrics::route_template(path)) {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(methods));
        }
    }
    response
}
