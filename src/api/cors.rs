//! Cross-origin requests (CORS) for REST and SSE, from the `--allowed-origins` list that also
//! governs WebSocket `Origin`s: seed 000's and 004's clients are pages on another origin.
//!
//! A request whose `Origin` is listed gets `Access-Control-Allow-Origin` naming it (with
//! `Vary: Origin`); with `*` in the list, every origin gets `*`. A preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) from a listed origin is answered 204 with the methods of
//! the route and the headers the API reads; from any other origin it is 403. Credentials are
//! never allowed (`Access-Control-Allow-Credentials` is never sent): the API authenticates with
//! bearer tokens, not cookies, and `*` with credentials is what browsers forbid anyway. Requests
//! from unlisted origins are answered as before, without CORS headers, so the browser keeps
//! their answers from the page.

use std::sync::Arc;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// Request headers a cross-origin page may send.
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Last-Event-ID, X-Changed-By, X-Source, X-Correlation-Id";
/// Response headers a cross-origin page may read.
const EXPOSE_HEADERS: &str = "X-Correlation-Id, Retry-After";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";
/// Methods offered for a path outside the route table (its request will be a 404 anyway).
const ANY_METHODS: &str = "GET, POST, PATCH, DELETE";

/// What `Access-Control-Allow-Origin` says to `origin`, if anything.
fn allow_origin(allowed: &[String], origin: &str) -> Option<HeaderValue> {
    if allowed.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let normalised = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&normalised) {
        // Echo the origin as the browser sent it: it compares byte for byte.
        return HeaderValue::from_str(origin.trim()).ok();
    }
    None
}

/// Adds the CORS headers for `origin` to an answer.
pub fn decorate(allowed: &Arc<[String]>, origin: Option<&str>, mut response: Response) -> Response {
    let Some(value) = origin.and_then(|o| allow_origin(allowed, o)) else {
        return response;
    };
    let specific = value != "*";
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    if specific {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// The answer to a preflight for `path` from `origin`.
pub fn preflight(allowed: &Arc<[String]>, origin: &str, path: &str) -> Response {
    let Some(value) = allow_origin(allowed, origin) else {
        let body = serde_json::json!({
            "error": "forbidden",
            "message": "This Origin may not make cross-origin requests (see --allowed-origins)",
        });
        return warp::reply::with_status(warp::reply::json(&body), StatusCode::FORBIDDEN)
            .into_response();
    };
    let methods =
        super::allow::allowed_methods(super::metrics::route_template(path)).unwrap_or(ANY_METHODS);
    let mut response = StatusCode::NO_CONTENT.into_response();
    let specific = value != "*";
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    if specific {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Arc<[String]> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_listed_origins_get_headers_and_never_credentials() {
        let listed = list(&["https://dash.example.org"]);
        let ok = decorate(
            &listed,
            Some("https://Dash.example.org"),
            StatusCode::OK.into_response(),
        );
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://Dash.example.org"
        );
        assert_eq!(ok.headers()[header::VARY], "Origin");
        assert!(!ok
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let other = decorate(
            &listed,
            Some("https://evil.example.org"),
            StatusCode::OK.into_response(),
        );
        assert!(!other
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let none = decorate(&listed, None, StatusCode::OK.into_response());
        assert!(!none
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

        let star = list(&["*"]);
        let any = decorate(&star, Some("https://x.org"), StatusCode::OK.into_response());
        assert_eq!(any.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!any
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

        let pre = preflight(&listed, "https://dash.example.org", "/v1/jobs/42");
        assert_eq!(pre.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            pre.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, PATCH, DELETE"
        );
        assert!(pre.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("Authorization"));
        assert_eq!(
            preflight(&listed, "https://evil.example.org", "/v1/jobs").status(),
            StatusCode::FORBIDDEN
        );
    }
}
