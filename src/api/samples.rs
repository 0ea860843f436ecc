//! `POST /v1/samples`: a node agent's batch of job samples and node figures.
//!
//! The envelope (node name, time, size) is checked as a whole; each job sample is then accepted
//! or rejected on its own, so one bad or late item never costs the others. The answer lists every
//! rejection with its index, so the agent can log what it lost and why.

use super::error::ApiError;
use super::AppState;
use crate::collector::SampleBatch;
use crate::domain::now_micros;
use crate::store::{LatePolicy, SampleRejection};
use serde::Serialize;
use warp::reply::{json, Reply, Response};

/// Largest batch body: a node with thousands of jobs and GPUs fits with room to spare.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Serialize)]
struct Rejected {
    index: usize,
    job_id: String,
    reason: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct BatchAnswer {
    node: String,
    accepted: usize,
    rejected: Vec<Rejected>,
}

fn reason_text(reason: SampleRejection) -> (&'static str, &'static str) {
    match reason {
        SampleRejection::UnknownJob => ("unknown_job", "no job with this id"),
        SampleRejection::AfterJobEnd => (
            "after_job_end",
            "collected after the job ended; not the job's",
        ),
        SampleRejection::JobFinished => ("job_finished", "the job is finished"),
    }
}

pub async fn ingest(batch: SampleBatch, state: AppState) -> Response {
    super::error::respond(ingest_inner(batch, state).await)
}

async fn ingest_inner(batch: SampleBatch, state: AppState) -> Result<Response, ApiError> {
    let now = now_micros();
    let (node, at) = batch.check_envelope(now)?;
    let node_report = batch.node_report(&node, at)?;
    let mut rejected = Vec::new();
    let mut items = Vec::with_capacity(batch.jobs.len());
    // Positions in `items` → positions in the batch, for the store's per-item verdicts.
    let mut positions = Vec::with_capacity(batch.jobs.len());
    for (index, report) in batch.jobs.iter().enumerate() {
        match report.to_item(&node, at, now) {
            Ok(item) => {
                items.push(item);
                positions.push(index);
            }
            Err(err) => rejected.push(Rejected {
                index,
                job_id: report.job_id.chars().take(255).collect(),
                reason: "invalid",
                message: err.0,
            }),
        }
    }
    let outcome = state
        .store
        .ingest_samples(&items, node_report.as_ref(), LatePolicy::UntilJobEnd)
        .await?;
    for (i, reason) in outcome.rejected {
        let (reason, message) = reason_text(reason);
        rejected.push(Rejected {
            index: positions[i],
            job_id: items[i].job_id.clone(),
            reason,
            message: message.to_owned(),
        });
    }
    rejected.sort_by_key(|r| r.index);
    if !rejected.is_empty() {
        tracing::info!(
            node = %node,
            accepted = outcome.accepted,
            rejected = rejected.len(),
            first_reason = rejected[0].reason,
            "sample batch partly rejected"
        );
    }
    Ok(json(&BatchAnswer {
        node,
        accepted: outcome.accepted,
        rejected,
    })
    .into_response())
}
