//! The verdict arrives by itself: when a job finishes (its `job_finished` event), after a
//! grace period for the agents' last samples, its efficiency report is computed once and
//! appended to the event log as a `job_report` event, through the store's ordinary event
//! write path. It is thus stored once, replayable with `Last-Event-ID`, and fanned out by the
//! streams like any other job event (their scope filters read its `job` summary).
//!
//! A job deleted before its grace ends gets no report (the append finds no row). A restart
//! during the grace does not lose the report: at start, jobs that ended within the last
//! [`RECOVERY_GRACES`] grace windows (at least [`RECOVERY_FLOOR`]) and have no `job_report`
//! logged get one, when their grace is over (at most [`RECOVERY_LIMIT`] of them).

use crate::domain::now_micros;
use crate::domain::report::{compute, Thresholds};
use crate::events::{EventFeed, EventKind, JobReport};
use crate::store::{Store, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// How long after a job's end its report waits for late samples (`ServeConfig::report_grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How many grace windows back the start-up recovery looks.
pub const RECOVERY_GRACES: u32 = 4;

/// The start-up recovery looks back at least this far (a restart takes a while).
pub const RECOVERY_FLOOR: Duration = Duration::from_secs(600);

/// Most reports the start-up recovery makes.
pub const RECOVERY_LIMIT: i64 = 1000;

/// Computes job `id`'s report now and logs it unless it is gone, unfinished or reported
/// already; `true` when logged.
pub async fn publish(store: &Store, id: &str) -> StoreResult<bool> {
    let job = match store.get_job(id).await {
        Ok(job) => job,
        Err(StoreError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    if !job.state.is_terminal() {
        return Ok(false);
    }
    let t = Thresholds::site();
    let (nodes, devices) = store.report_inputs(&job, t).await?;
    let report = compute(&job, &nodes, &devices, now_micros(), t);
    // A report logged since an hour before the job's end is this end's report.
    let since = job.end_time.unwrap_or_else(now_micros) - chrono::Duration::hours(1);
    store
        .append_job_report(id, since, &JobReport::new(&job, &report))
        .await
}

/// Runs until `stop`: recovers the reports a restart missed, then reports each job `grace`
/// after its `job_finished` event.
pub async fn run(store: Store, feed: EventFeed, grace: Duration, mut stop: watch::Receiver<bool>) {
    let mut events = feed.subscribe();
    // Due time -> job ids.
    let mut due: BTreeMap<Instant, Vec<String>> = BTreeMap::new();
    let window = chrono::Duration::from_std((grace * RECOVERY_GRACES).max(RECOVERY_FLOOR))
        .unwrap_or(chrono::Duration::minutes(10));
    match store
        .jobs_missing_report(now_micros() - window, RECOVERY_LIMIT)
        .await
    {
        Ok(jobs) => {
            for (id, ended) in jobs {
                due.entry(due_at(ended, grace)).or_default().push(id);
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not look for missed job reports"),
    }
    loop {
        let next = due.keys().next().copied();
        tokio::select! {
            _ = stop.changed() => return,
            _ = sleep_until(next) => {
                if let Some((_, ids)) = due.pop_first() {
                    for id in ids {
                        if let Err(err) = publish(&store, &id).await {
                            tracing::warn!(error = %err, job = %id, "job report not logged");
                        }
                    }
                }
            }
            received = events.recv() => match received {
                Ok(event) => {
                    if event.kind == EventKind::JobFinished {
                        if let Some(id) = &event.job_id {
                            due.entry(Instant::now() + grace).or_default().push(id.clone());
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "report scheduler fell behind the event feed");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// When the report of a job that ended at `ended` is due (now, at the earliest).
fn due_at(ended: DateTime<Utc>, grace: Duration) -> Instant {
    let elapsed = (now_micros() - ended).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + grace.saturating_sub(elapsed)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
