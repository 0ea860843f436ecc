//! `GET /v1/jobs/{id}/metrics?resolution=1m|5m|auto`: a job's samples rolled up into buckets
//! per node (`domain::rollup`, read through `store::rollups`). `raw`, the default, stays in
//! `api::jobs` and answers exactly as before. `auto` answers the raw samples when there are at
//! most [`AUTO_MAX_POINTS`] of them and none has expired, else the finest bucket width whose
//! points fit (1 minute only while the raw samples are all there: it is folded from them).

use super::error::ApiError;
use super::jobs::SampleList;
use super::AppState;
use crate::domain::now_micros;
use crate::domain::rollup::{self, Resolution, AUTO_MAX_POINTS};
use crate::store::SampleQuery;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use warp::reply::{json, Reply, Response};

/// The `resolution` parameter (absent: raw).
pub(super) fn resolution_param(params: &HashMap<String, String>) -> Result<Resolution, ApiError> {
    match params.get("resolution").map(|s| s.trim()) {
        None | Some("") => Ok(Resolution::Raw),
        Some(text) => Resolution::parse(text).ok_or_else(|| {
            ApiError::Validation(format!(
                "resolution must be one of {}",
                Resolution::NAMES.join(", ")
            ))
        }),
    }
}

#[derive(Serialize)]
struct PointList<'a> {
    job_id: String,
    /// The bucket width answered: `1m`, `5m`, or with `auto` a coarser one (`15m`, `1h`, ...).
    resolution: String,
    bucket_seconds: i64,
    /// Newest first, at most `limit`.
    points: Vec<rollup::Point<'a>>,
    /// Points in the range.
    total: i64,
    /// Raw samples before this may have expired (answered from rollups); absent when none has.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_samples_since: Option<DateTime<Utc>>,
}

pub(super) async fn answer(
    state: &AppState,
    id: String,
    query: &SampleQuery,
    resolution: Resolution,
) -> Result<Response, ApiError> {
    let job = state.store.get_job(&id).await?;
    let (_, pruned) = state.store.rollup_state().await?;
    let width = match resolution {
        Resolution::Raw | Resolution::OneMinute => 60,
        Resolution::FiveMinutes => rollup::STORED_SECONDS,
        Resolution::Auto => {
            let from = query
                .start
                .map_or(job.start_time, |s| s.max(job.start_time));
            let until = job.end_time.unwrap_or_else(now_micros);
            let until = query.end.map_or(until, |e| e.min(until));
            let raw_whole = pruned.is_none_or(|p| from >= p);
            if raw_whole {
                // Count first: reading a page of raw samples only to drop it would cost as much
                // as the rolled-up answer. Over the whole job the job's row has the count.
                let total = if query.start.is_none() && query.end.is_none() {
                    job.sample_count
                } else {
                    let one = SampleQuery {
                        limit: 1,
                        ..query.clone()
                    };
                    state.store.list_samples(&id, &one).await?.1
                };
                if total <= AUTO_MAX_POINTS {
                    let (samples, total) = state.store.list_samples(&id, query).await?;
                    return Ok(json(&SampleList {
                        job_id: id,
                        samples,
                        total,
                        resolution: Some("raw"),
                    })
                    .into_response());
                }
            }
            let finest = if raw_whole {
                60
            } else {
                rollup::STORED_SECONDS
            };
            let series = job.nodes.len() as i64;
            rollup::auto_width((until - from).num_seconds(), series, finest)
        }
    };
    let buckets = state
        .store
        .rolled_up(&id, query.start, query.end, width)
        .await?;
    let total = buckets.len() as i64;
    let points = buckets
        .iter()
        .rev()
        .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
        .map(rollup::Point)
        .collect();
    Ok(json(&PointList {
        job_id: id,
        resolution: rollup::width_name(width),
        bucket_seconds: width,
        points,
        total,
        raw_samples_since: pruned,
    })
    .into_response())
}
