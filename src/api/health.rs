//! `GET /v1/health`: is the database reachable. Never needs a token, so load balancers and
//! Kubernetes probes can call it. Under `--scheduler slurm` a slurmrestd that cannot be reached
//! makes the service `degraded` (still HTTP 200: jobs keep coming from the hooks) with a reason,
//! as does a read replica (`--database-read-url`) that does not answer; one that does says how
//! far behind the primary it is.

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
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_replica_lag_bytes: Option<i64>,
}

pub async fn health(state: AppState) -> Response {
    let healthy = matches!(
        tokio::time::timeout(DB_PING_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let (lag, replica_problem) = if state.store.has_read_replica() {
        match tokio::time::timeout(DB_PING_TIMEOUT, state.store.read_replica_lag()).await {
            Ok(Ok(lag)) => (lag, None),
            _ => (
                None,
                Some(
                    "the read replica does not answer: the API's reads fail until it does"
                        .to_owned(),
                ),
            ),
        }
    } else {
        (None, None)
    };
    let slurm_problem = state.slurm_health.as_ref().and_then(|h| h.problem());
    let (status, code, reason) = verdict(healthy, [replica_problem, slurm_problem]);
    let body = Health {
        status,
        timestamp: crate::domain::now_micros(),
        version: env!("CARGO_PKG_VERSION"),
        reason,
        read_replica_lag_bytes: lag,
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

/// The status, its HTTP code and the reason, from whether the database answers and what else
/// is wrong. Every problem is named, the database's first, so an operator fixing one is not
/// surprised by the next.
fn verdict<const N: usize>(
    database_answers: bool,
    problems: [Option<String>; N],
) -> (&'static str, StatusCode, Option<String>) {
    let database = (!database_answers).then(|| "the database does not answer".to_owned());
    let reasons: Vec<String> = std::iter::once(database)
        .chain(problems)
        .flatten()
        .collect();
    let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    match (database_answers, &reason) {
        (false, _) => ("unhealthy", StatusCode::SERVICE_UNAVAILABLE, reason),
        (true, Some(_)) => ("degraded", StatusCode::OK, reason),
        (true, None) => ("healthy", StatusCode::OK, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_the_database_first() {
        let replica = || Some("the read replica does not answer".to_owned());
        let slurm = || Some("cannot reach slurmrestd at http://head:6820".to_owned());
        assert_eq!(
            verdict(true, [None, None]),
            ("healthy", StatusCode::OK, None)
        );
        assert_eq!(
            verdict(true, [None, slurm()]),
            ("degraded", StatusCode::OK, slurm())
        );
        assert_eq!(
            verdict(true, [replica(), slurm()]),
            (
                "degraded",
                StatusCode::OK,
                Some(
                    "the read replica does not answer; cannot reach slurmrestd at http://head:6820"
                        .to_owned()
                )
            )
        );
        assert_eq!(
            verdict(false, [None, slurm()]),
            (
                "unhealthy",
                StatusCode::SERVICE_UNAVAILABLE,
                Some(
                    "the database does not answer; cannot reach slurmrestd at http://head:6820"
                        .to_owned()
                )
            )
        );
        assert_eq!(
            verdict(false, [None, None]),
            (
                "unhealthy",
                StatusCode::SERVICE_UNAVAILABLE,
                Some("the database does not answer".to_owned())
            )
        );
    }
}
