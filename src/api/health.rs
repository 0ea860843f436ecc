//! `GET /v1/health`: is the database reachable. Never needs a token, so load balancers and
//! Kubernetes probes can call it.

use super::AppState;
use serde::Serialize;
use std::time::Duration;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// How long the database may take to answer before the service counts as unhealthy.
const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct Health {
    status: &'static str,
    timestamp: chrono::DateTime<chrono::Utc>,
    version: &'static str,
}

pub async fn health(state: AppState) -> Response {
    let healthy = matches!(
        tokio::time::timeout(DB_PING_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let (status, code) = if healthy {
        ("healthy", StatusCode::OK)
    } else {
        ("unhealthy", StatusCode::SERVICE_UNAVAILABLE)
    };
    let body = Health {
        status,
        timestamp: crate::domain::now_micros(),
        version: env!("CARGO_PKG_VERSION"),
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}
