//! The `Allow` header of a 405: which methods a route template takes. warp's "method not
//! allowed" rejection does not say, so the answer is looked up here from the template the
//! request's path falls under (see [`super::metrics::route_template`]); a test checks the table
//! against the OpenAPI document.

use super::error::ApiError;
use warp::http::header::{HeaderValue, ALLOW};
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};

/// The methods `template` answers, as an `Allow` value; `None` for an unknown template.
pub fn allowed_methods(template: &str) -> Option<&'static str> {
    Some(match template {
        "/v1/jobs" => "GET, POST",
        "/v1/jobs/{id}" => "GET, PATCH, DELETE",
        "/v1/jobs/{id}/metrics" | "/v1/jobs/{id}/log" => "GET, POST",
        "/v1/events/job-started"
        | "/v1/events/job-finished"
        | "/v1/samples"
        | "/v1/stream/tickets" => "POST",
        "/metrics"
        | "/v1/health"
        | "/v1/openapi.yaml"
        | "/v1/jobs/{id}/audit"
        | "/v1/jobs/{id}/report"
        | "/v1/jobs/{id}/log/download"
        | "/v1/stream/jobs/{id}/log"
        | "/v1/stream/logs"
        | "/v1/reports"
        | "/v1/whoami"
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

/// Adds `Allow` to a 405 answer for `path`. A 405 for a method the route does take is warp
/// ranking another route's method mismatch above this route's own refusal (a filter rejection
/// it does not rank, seen from schemathesis on `POST /v1/jobs`): that request was malformed,
/// so it is answered 400, not 405.
pub fn add_allow(method: &Method, path: &str, mut response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(methods) = allowed_methods(super::metrics::route_template(path)) {
            if methods.split(", ").any(|m| m == method.as_str()) {
                return ApiError::InvalidRequest("Malformed request".into()).into_response();
            }
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(methods));
        }
    }
    response
}
