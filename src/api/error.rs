//! The one error type of the API and the one place that turns errors, ours or warp's, into the
//! Go service's JSON error body `{"error": CODE, "message": TEXT}`.

use crate::domain::validate::ValidationError;
use crate::store::StoreError;
use serde::Serialize;
use std::convert::Infallible;
use warp::http::{header, StatusCode};
use warp::reply::{Reply, Response};
use warp::Rejection;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Unparsable JSON body or query parameter.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Validation(String),
    #[error("Missing or invalid bearer token")]
    Unauthorized,
    #[error("This token's role may not use this endpoint")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("Request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("Internal server error")]
    Internal,
    /// The database could not be reached within `--db-acquire-timeout`: try again later.
    #[error("The database is unavailable; try again later")]
    Unavailable,
    /// Past `--max-connections` (answered by the connection layer).
    #[error("Too many connections; try again later")]
    Overloaded,
    #[error("Request URI is too long")]
    UriTooLong,
    #[error("Request header fields are too large")]
    HeadersTooLarge,
}

/// Seconds a client is told to wait (`Retry-After`) after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

impl warp::reject::Reject for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    pub fn job_not_found() -> ApiError {
        ApiError::NotFound("Job not found".into())
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Validation(_) => (StatusCode::BAD_REQUEST, "validation_error"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::Unavailable | ApiError::Overloaded => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if self == ApiError::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Validation(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::job_not_found(),
            StoreError::AlreadyExists => {
                ApiError::Conflict("Job with this ID already exists".into())
            }
            StoreError::Terminal => {
                ApiError::Conflict("Job is in terminal state and cannot be updated".into())
            }
            StoreError::InvalidTransition { from, to } => {
                ApiError::Conflict(format!("Invalid state transition from {from} to {to}"))
            }
            // An outage or a lock held too long: the request may succeed as it is later. The
            // store already logged the error with the operation name.
            other if other.is_unavailable() => ApiError::Unavailable,
            // Database text can carry schema details and data; it goes to the log only (the
            // store already logged it with the operation name).
            other => {
                tracing::error!(error = %other, "request failed in the store");
                ApiError::Internal
            }
        }
    }
}

/// Renders a handler's result: the success reply, or the error body.
pub fn respond<T: Reply>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(reply) => reply.into_response(),
        Err(err) => err.into_response(),
    }
}

/// Turns every rejection, ours or warp's, into the JSON error body.
pub async fn handle_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(err) = rejection.find::<ApiError>() {
        err.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound("No such endpoint".into())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::InvalidRequest("Invalid query string".into())
    } else if let Some(missing) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::Validation(format!("{} header is required", missing.name()))
    } else if let Some(bad) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::InvalidRequest(format!("Invalid {} header", bad.name()))
    } else if rejection
        .find::<warp::ws::MissingConnectionUpgrade>()
        .is_some()
    {
        ApiError::InvalidRequest(
            "A WebSocket upgrade is required (Connection: upgrade, Upgrade: websocket)".into(),
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge(super::request::MAX_BODY_BYTES)
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::InvalidRequest("Unsupported content type".into())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::Internal
    };
    Ok(error.into_response())
}
