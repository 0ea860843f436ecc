//! The connection registry: how many stream connections are open, by stream and protocol and
//! by job (for `GET /v1/stream/status` and `/metrics`), and the cluster status that every
//! `/v1/stream/cluster` connection shares.

use super::{compute_cluster_status, STATUS_MAX_AGE};
use crate::store::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// What the open streams share: connection counts by stream and protocol and by job (for
/// `GET /v1/stream/status`), and the cluster status every `/v1/stream/cluster` connection sends.
#[derive(Clone, Default)]
pub struct StreamRegistry {
    counts: Arc<std::sync::Mutex<Counts>>,
    status: Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>,
}

#[derive(Default)]
struct Counts {
    by_stream: std::collections::BTreeMap<(&'static str, &'static str), usize>,
    by_job: std::collections::BTreeMap<String, usize>,
}

/// Counts one open connection until dropped.
pub(in crate::api) struct Registered {
    registry: StreamRegistry,
    key: (&'static str, &'static str),
    job: Option<String>,
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(in crate::api) fn register(
        &self,
        stream: &'static str,
        protocol: &'static str,
        job: Option<String>,
    ) -> Registered {
        let mut counts = self.lock();
        *counts.by_stream.entry((stream, protocol)).or_default() += 1;
        if let Some(job) = &job {
            *counts.by_job.entry(job.clone()).or_default() += 1;
        }
        Registered {
            registry: self.clone(),
            key: (stream, protocol),
            job,
        }
    }

    /// Open connections per (stream, protocol), for `/metrics`.
    pub fn connection_counts(&self) -> Vec<(&'static str, &'static str, usize)> {
        let counts = self.lock();
        counts
            .by_stream
            .iter()
            .map(|((stream, protocol), n)| (*stream, *protocol, *n))
            .collect()
    }

    /// The cluster at a glance, computed at most once per [`STATUS_MAX_AGE`] for all
    /// connections: concurrent callers wait for the one computing it.
    pub(super) async fn cluster_status(&self, store: &Store) -> Value {
        let mut cached = self.status.lock().await;
        if let Some((at, status)) = cached.as_ref() {
            if at.elapsed() < STATUS_MAX_AGE {
                return status.clone();
            }
        }
        let status = compute_cluster_status(store).await;
        *cached = Some((Instant::now(), status.clone()));
        status
    }

    /// `{"connections", "streams": {stream: {protocol: n}}, "jobs": {job_id: n}}`.
    pub fn snapshot(&self) -> Value {
        let counts = self.lock();
        let mut streams = serde_json::Map::new();
        for ((stream, protocol), n) in &counts.by_stream {
            let entry = streams
                .entry(stream.to_string())
                .or_insert_with(|| json!({}));
            entry[*protocol] = json!(n);
        }
        json!({
            "connections": counts.by_stream.values().sum::<usize>(),
            "streams": streams,
            "jobs": counts.by_job,
        })
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut counts = self.registry.lock();
        if let Some(n) = counts.by_stream.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.by_stream.remove(&self.key);
            }
        }
        if let Some(job) = &self.job {
            if let Some(n) = counts.by_job.get_mut(job) {
                *n -= 1;
                if *n == 0 {
                    counts.by_job.remove(job);
                }
            }
        }
    }
}
