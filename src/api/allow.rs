//! The `Allow` header of a 405: which methods a route template takes. warp's "method not
//! allowed" rejection does not say, so the answer is looked up here from the template the
//! request's path falls under, in the one route table ([`super::route_table`]).

use super::error::ApiError;
use warp::http::header::{HeaderValue, ALLOW};
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};

pub use super::route_table::allowed_methods;

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
