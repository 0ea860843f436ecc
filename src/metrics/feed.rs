//! Keeps `serve`'s metrics snapshot current: loads job counts, running jobs and nodes once from
//! the store, then applies every committed event from the event feed, catching up from the log
//! when it falls behind (as the streams do). Nothing here runs while Prometheus waits: a scrape
//! only reads the snapshot this task writes.

use super::Metrics;
use crate::domain::JobState;
use crate::events::EventFeed;
use crate::store::{JobFilter, Store, StoreResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Log rows read per query while catching up.
const CATCH_UP_BATCH: i64 = 500;
/// Running jobs read per query at start.
const LOAD_PAGE: i64 = 1000;
/// How often finished jobs past their grace period are dropped and the freshness time is set.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);
/// Tries to load a consistent picture (no event committed while loading) before accepting one.
const LOAD_ATTEMPTS: usize = 5;

/// Loads the snapshot from the store (before the server starts answering), then follows the
/// feed in a task until `stop` turns true.
pub async fn start(
    metrics: Metrics,
    store: Store,
    feed: &EventFeed,
    stop: watch::Receiver<bool>,
) -> StoreResult<tokio::task::JoinHandle<()>> {
    // Subscribe before loading, so nothing committed during the load is missed.
    let live = feed.subscribe();
    let cursor = load(&metrics, &store).await?;
    catch_up(&metrics, &store, cursor).await?;
    Ok(tokio::spawn(follow(metrics, store, live, stop)))
}

/// Reads counts, running jobs, nodes and partitions; returns the event id the picture is current at.
async fn load(metrics: &Metrics, store: &Store) -> StoreResult<i64> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = store.last_event_id().await?;
        let (counts, _) = store.job_counts().await?;
        let running = running_jobs(store).await?;
        let nodes = store.list_nodes().await?;
        let partitions = store.list_partitions().await?;
        let after = store.last_event_id().await?;
        // Events are numbered in commit order, so when none was committed between the two
        // reads, the counts and jobs read in between are exactly the state at `before`.
        if before == after || attempt == LOAD_ATTEMPTS {
            if before != after {
                tracing::warn!(
                    before,
                    after,
                    "metrics: the store kept changing while loading; job counts may be off by the changes in between"
                );
            }
            let jobs = running.len();
            metrics.update(|s| {
                s.reset(&counts, &running, &nodes, before);
                s.reset_partitions(&partitions);
            });
            tracing::info!(
                running_jobs = jobs,
                cursor = before,
                "metrics snapshot loaded"
            );
            return Ok(before);
        }
    }
}

async fn running_jobs(store: &Store) -> StoreResult<Vec<crate::domain::Job>> {
    let mut jobs = Vec::new();
    let mut offset = 0;
    loop {
        let filter = JobFilter {
            state: Some(JobState::Running),
            limit: LOAD_PAGE,
            offset,
            ..JobFilter::default()
        };
        let (page, _) = store.list_jobs(&filter).await?;
        let full = page.len() as i64 == LOAD_PAGE;
        offset += page.len() as i64;
        jobs.extend(page);
        if !full {
            return Ok(jobs);
        }
    }
}

/// Applies every logged event after `cursor`; returns the new cursor.
async fn catch_up(metrics: &Metrics, store: &Store, mut cursor: i64) -> StoreResult<i64> {
    loop {
        let page = store.events_after(cursor, CATCH_UP_BATCH).await?;
        let full = page.len() as i64 == CATCH_UP_BATCH;
        if let Some(last) = page.last() {
            cursor = last.id;
        }
        let now = Instant::now();
        metrics.update(|s| {
            for event in &page {
                s.apply_event(event, now);
            }
            s.current_at = Some(chrono::Utc::now());
        });
        if !full {
            return Ok(cursor);
        }
    }
}

async fn follow(
    metrics: Metrics,
    store: Store,
    mut live: broadcast::Receiver<Arc<crate::events::FeedEvent>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let grace = metrics.options().grace;
    // Set when a catch-up from the log failed: live events are then left to the log (applying
    // them would move the cursor past the events still missing) until a retry succeeds.
    let mut behind = false;
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(_) if behind => {}
                Ok(first) => {
                    // Apply what is waiting in one go, under one short write lock.
                    let mut batch = vec![first];
                    while batch.len() < 256 {
                        match live.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    let now = Instant::now();
                    metrics.update(|s| {
                        for event in &batch {
                            if event.id > s.cursor {
                                s.apply_event(event, now);
                            }
                        }
                    });
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "metrics fell behind the event feed; catching up from the log");
                    behind = !catch_up_logged(&metrics, &store).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if behind {
                    behind = !catch_up_logged(&metrics, &store).await;
                }
                let now = Instant::now();
                metrics.update(|s| {
                    s.expire(now, grace);
                    if !behind {
                        s.current_at = Some(chrono::Utc::now());
                    }
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Catches up from the snapshot's cursor; false (and a warning) when the log cannot be read.
async fn catch_up_logged(metrics: &Metrics, store: &Store) -> bool {
    let cursor = metrics.update(|s| s.cursor);
    match catch_up(metrics, store, cursor).await {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(error = %err, "metrics could not read the event log; will retry");
            false
        }
    }
}
