//! `GET /v1/openapi.yaml`: the OpenAPI document, compiled into the binary so the served spec is
//! always the one the code was built with.

use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::{Reply, Response};

pub const DOCUMENT: &str = include_str!("../../openapi/jobscope.yaml");

pub fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    response
}
