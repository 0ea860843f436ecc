//! `POST /v1/samples`: a node agent's batch of job samples and node figures.
//!
//! The envelope (node name, time, size) is checked as a whole; each job sample is then accepted
//! or rejected on its own, so one bad or late item never costs the others. The answer lists every
//! rejection with its index, so the agent can log what it lost and why.

use super::error::ApiError;
use super::AppState;
use crate::api::connections::RateLimited;
use crate::collector::SampleBatch;
use crate::domain::now_micros;
use crate::log_safe::Esc;
use crate::store::{LatePolicy, SampleRejection};
use serde::Serialize;
use warp::reply::{json, Reply, Response};

/// Client-caused: logged at INFO once a minute at most.
static PARTLY_REJECTED: RateLimited = RateLimited::new();

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
    /// Samples this server already had (the batch was sent before): stored once.
    duplicates: usize,
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
        SampleRejection::BeforeJobStart => (
            "before_job_start",
            "collected_at is before the job's start_time; not the job's",
        ),
    }
}

pub async fn ingest(batch: SampleBatch, state: AppState) -> Response {
    let metrics = state.metrics.clone();
    let result = ingest_inner(batch, state).await;
    metrics.sample_batch(result.is_ok());
    super::error::respond(result)
}

async fn ingest_inner(batch: SampleBatch, state: AppState) -> Result<Response, ApiError> {
    let prepared = batch.prepare(now_micros())?;
    let outcome = state
        .store
        .ingest_samples(
            &prepared.items,
            prepared.node_report.as_ref(),
            LatePolicy::UntilJobEnd,
        )
        .await?;
    let mut rejected: Vec<Rejected> = prepared
        .invalid
        .into_iter()
        .map(|i| Rejected {
            index: i.index,
            job_id: i.job_id,
            reason: "invalid",
            message: i.message,
        })
        .collect();
    for (i, reason) in outcome.rejected {
        let (reason, message) = reason_text(reason);
        rejected.push(Rejected {
            index: prepared.positions[i],
            job_id: prepared.items[i].job_id.clone(),
            reason,
            message: message.to_owned(),
        });
    }
    rejected.sort_by_key(|r| r.index);
    state.metrics.samples_ingested(outcome.accepted as u64);
    // (`job_finished` cannot happen here: agents' samples are judged by the job's end time.)
    for reason in [
        "invalid",
        "unknown_job",
        "after_job_end",
        "before_job_start",
    ] {
        let n = rejected.iter().filter(|r| r.reason == reason).count() as u64;
        if n > 0 {
            state.metrics.samples_rejected(reason, n);
        }
    }
    let node = prepared.node;
    if let Some(first) = rejected.first() {
        // The job id is the client's text, unvalidated for an invalid item: escaped.
        tracing::debug!(
            node = %Esc(&node),
            accepted = outcome.accepted,
            rejected = rejected.len(),
            first_reason = first.reason,
            first_job = %Esc(&first.job_id),
            "sample batch partly rejected"
        );
        PARTLY_REJECTED.note(|batches| {
            tracing::info!(
                batches,
                node = %Esc(&node),
                first_reason = first.reason,
                first_job = %Esc(&first.job_id),
                "sample batches partly rejected since the last report (details at debug)"
            )
        });
    }
    Ok(json(&BatchAnswer {
        node,
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected,
    })
    .into_response())
}
