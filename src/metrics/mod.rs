//! Prometheus export: what `GET /metrics` serves (in `serve`, and in `jobscope agent
//! --metrics-listen` for one node's jobs).
//!
//! [`Metrics`] owns one `prometheus::Registry` per process (no global registry) for the service's
//! own counters and histograms, and a [`Snapshot`] of running jobs, nodes, partitions and job
//! counts from which the job, node, partition and cluster series are rendered at scrape time. In `serve` the snapshot is
//! loaded once from the store and then kept current from the event feed ([`feed`]); the agent
//! feeds it directly with each batch. A scrape reads only memory: no database query, no file
//! read (except the process's own `/proc/self` figures, see [`process`]), and no full-table
//! scan; its cost grows with the running jobs only. Finished jobs' series stay for a grace period
//! (`--metrics-grace`) so their last values get scraped, then vanish.
//!
//! # Counters other components call
//!
//! | call | series |
//! |---|---|
//! | [`Metrics::samples_ingested`] | `jobscope_samples_ingested_total` |
//! | [`Metrics::samples_rejected`] | `jobscope_samples_rejected_total{reason}` |
//! | [`Metrics::sample_batch`] | `jobscope_sample_batches_total{outcome}` (server side) |
//! | [`Metrics::agent_batch`] | `jobscope_agent_batches_total{outcome}` (agent side) |
//! | [`Metrics::set_spool_depth`] | `jobscope_agent_spool_batches` |
//! | [`Metrics::collector_duration`] | `jobscope_collector_duration_seconds` |
//! | [`Metrics::hook_event`] | `jobscope_hook_events_total{event,outcome}` |
//! | [`Metrics::http_request`] | `jobscope_http_request_duration_seconds{route,method,status}` |
//! | [`StorageMetrics::observe`] | `storage_operation_duration_seconds{operation,success,database}`, `storage_operation_errors_total{operation,database}` |
//! | [`StorageMetrics::lifecycle_batch`] | `jobscope_lifecycle_batch_events` |
//!
//! # In the agent (`jobscope agent --metrics-listen ADDR`)
//!
//! Build one `Metrics::new(MetricsOptions { per_job: true, grace })`, call
//! [`Metrics::record_agent_batch`] with every batch the sampler produces (before delivery, so the
//! node's series stay current while the server is down), and serve it with
//! `crate::api::metrics::serve_standalone(listener, metrics, shutdown)`. The job, node and agent
//! series are then the same as `serve`'s, for this node's jobs only.

pub mod feed;
mod partitions;
mod process;
pub mod snapshot;
pub mod text;
mod verdicts;
mod waste;

pub use snapshot::{JobLabels, Snapshot};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What `--per-job-metrics` and `--metrics-grace` say.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsOptions {
    /// Export per-job series (false: only cluster, node and service series).
    pub per_job: bool,
    /// How long a finished job's series stay.
    pub grace: Duration,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            per_job: true,
            grace: Duration::from_secs(120),
        }
    }
}

/// Storage timings, handed to the store (`Store::observe_with`).
#[derive(Clone)]
pub struct StorageMetrics {
    duration: HistogramVec,
    errors: IntCounterVec,
    lifecycle_batch: Histogram,
}

impl crate::store::StoreObserver for StorageMetrics {
    fn observe(
        &self,
        operation: &'static str,
        database: crate::store::Database,
        elapsed: Duration,
        success: bool,
    ) {
        let database = database.as_str();
        self.duration
            .with_label_values(&[operation, if success { "true" } else { "false" }, database])
            .observe(elapsed.as_secs_f64());
        if !success {
            self.errors.with_label_values(&[operation, database]).inc();
        }
    }

    fn lifecycle_batch(&self, events: usize) {
        self.lifecycle_batch.observe(events as f64);
    }
}

/// The process's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    options: MetricsOptions,
    registry: Registry,
    snapshot: RwLock<Snapshot>,
    http: HistogramVec,
    hooks: IntCounterVec,
    storage: StorageMetrics,
    samples_ingested: IntCounter,
    samples_rejected: IntCounterVec,
    sample_batches: IntCounterVec,
    agent_batches: IntCounterVec,
    spool_depth: IntGauge,
    collector_duration: Histogram,
    render_duration: Histogram,
    /// Size of the last rendering, to allocate the next one at once.
    last_size: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(MetricsOptions::default())
    }
}

/// Buckets for request and storage latencies: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Label values created up front, so the series exist (at 0) before the first event and every
/// dashboard panel and rate() has data from the first scrape.
const HOOK_EVENTS: [&str; 2] = ["job-started", "job-finished"];
pub const HOOK_OUTCOMES: [&str; 4] = ["created", "updated", "skipped", "error"];
const REJECT_REASONS: [&str; 3] = ["invalid", "unknown_job", "finished_job"];
const AGENT_OUTCOMES: [&str; 3] = ["sent", "spooled", "dropped"];

fn must<T>(result: prometheus::Result<T>) -> T {
    // Only fails on an invalid name or label set, which are constants here: a programming error
    // that every test run would hit.
    result.unwrap_or_else(|err| panic!("metric definition is invalid: {err}"))
}

impl Metrics {
    pub fn new(options: MetricsOptions) -> Metrics {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));

        let http = must(HistogramVec::new(
            HistogramOpts::new(
                "jobscope_http_request_duration_seconds",
                "HTTP requests by route template, method and status: time until the response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        ));
        register(Box::new(http.clone()));
        let hooks = must(IntCounterVec::new(
            Opts::new(
                "jobscope_hook_events_total",
                "Slurm lifecycle events received, by event and outcome.",
            ),
            &["event", "outcome"],
        ));
        register(Box::new(hooks.clone()));
        for event in HOOK_EVENTS {
            for outcome in HOOK_OUTCOMES {
                hooks.with_label_values(&[event, outcome]);
            }
        }
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "storage_operation_duration_seconds",
                "Storage operations by operation, success and database (primary or replica).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation", "success", "database"],
        ));
        register(Box::new(duration.clone()));
        let errors = must(IntCounterVec::new(
            Opts::new(
                "storage_operation_errors_total",
                "Storage operations that failed in the database, by operation and database.",
            ),
            &["operation", "database"],
        ));
        register(Box::new(errors.clone()));
        let lifecycle_batch = must(Histogram::with_opts(
            HistogramOpts::new(
                "jobscope_lifecycle_batch_events",
                "Hook events (job started, job finished) committed per group-commit transaction.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        ));
        register(Box::new(lifecycle_batch.clone()));
        let samples_ingested = must(IntCounter::new(
            "jobscope_samples_ingested_total",
            "Job samples stored.",
        ));
        register(Box::new(samples_ingested.clone()));
        let samples_rejected = must(IntCounterVec::new(
            Opts::new(
                "jobscope_samples_rejected_total",
                "Job samples refused, by reason.",
            ),
            &["reason"],
        ));
        register(Box::new(samples_rejected.clone()));
        for reason in REJECT_REASONS {
            samples_rejected.with_label_values(&[reason]);
        }
        let sample_batches = must(IntCounterVec::new(
            Opts::new(
                "jobscope_sample_batches_total",
                "Sample batches received from agents, by outcome.",
            ),
            &["outcome"],
        ));
        register(Box::new(sample_batches.clone()));
        for outcome in ["accepted", "rejected"] {
            sample_batches.with_label_values(&[outcome]);
        }
        let agent_batches = must(IntCounterVec::new(
            Opts::new(
                "jobscope_agent_batches_total",
                "Batches this agent sent, spooled (server unreachable) or dropped (spool full).",
            ),
            &["outcome"],
        ));
        register(Box::new(agent_batches.clone()));
        for outcome in AGENT_OUTCOMES {
            agent_batches.with_label_values(&[outcome]);
        }
        let spool_depth = must(IntGauge::new(
            "jobscope_agent_spool_batches",
            "Batches waiting in this agent's spool.",
        ));
        register(Box::new(spool_depth.clone()));
        let collector_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "jobscope_collector_duration_seconds",
                "Time one collection round took (cgroups, GPUs and node figures).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        ));
        register(Box::new(collector_duration.clone()));
        let render_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "jobscope_metrics_render_duration_seconds",
                "Time to render /metrics (shows up in the next scrape).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        ));
        register(Box::new(render_duration.clone()));

        Metrics {
            inner: Arc::new(Inner {
                options,
                registry,
                snapshot: RwLock::new(Snapshot::default()),
                http,
                hooks,
                storage: StorageMetrics {
                    duration,
                    errors,
                    lifecycle_batch,
                },
                samples_ingested,
                samples_rejected,
                sample_batches,
                agent_batches,
                spool_depth,
                collector_duration,
                render_duration,
                last_size: AtomicUsize::new(16 * 1024),
            }),
        }
    }

    pub fn options(&self) -> &MetricsOptions {
        &self.inner.options
    }

    /// The handle the store reports its operations to.
    pub fn storage(&self) -> StorageMetrics {
        self.inner.storage.clone()
    }

    /// `n` samples were stored (`POST /v1/samples`, `POST /v1/jobs/{id}/metrics`).
    pub fn samples_ingested(&self, n: u64) {
        self.inner.samples_ingested.inc_by(n);
    }

    /// `n` samples were refused. `reason`: `invalid` (failed validation), `unknown_job`,
    /// `finished_job` (compat endpoint) and `after_job_end` (an agent's sample collected after
    /// the job ended); another value adds a series, so keep to a fixed set.
    pub fn samples_rejected(&self, reason: &'static str, n: u64) {
        self.inner
            .samples_rejected
            .with_label_values(&[reason])
            .inc_by(n);
    }

    /// An agent's batch reached the server: `accepted` true when it was stored.
    pub fn sample_batch(&self, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "rejected" };
        self.inner
            .sample_batches
            .with_label_values(&[outcome])
            .inc();
    }

    /// The agent's batch went out: `sent`, `spooled` or `dropped`.
    pub fn agent_batch(&self, outcome: &'static str) {
        self.inner.agent_batches.with_label_values(&[outcome]).inc();
    }

    /// Batches in the agent's spool now.
    pub fn set_spool_depth(&self, batches: i64) {
        self.inner.spool_depth.set(batches);
    }

    /// One collection round of the agent (or of `serve --collect`) took `elapsed`.
    pub fn collector_duration(&self, elapsed: Duration) {
        self.inner.collector_duration.observe(elapsed.as_secs_f64());
    }

    /// A lifecycle hook answered: `event` is `job-started` or `job-finished`, `outcome` one of
    /// [`HOOK_OUTCOMES`].
    pub fn hook_event(&self, event: &'static str, outcome: &'static str) {
        self.inner.hooks.with_label_values(&[event, outcome]).inc();
    }

    /// One HTTP request. `route` must be a route template (bounded), never the raw path.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.inner
            .http
            .with_label_values(&[route, method, &status])
            .observe(elapsed.as_secs_f64());
    }

    /// Runs `f` on the snapshot under its write lock. Callers keep `f` short: a scrape waits for
    /// it (and only for it).
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut snapshot = self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner());
        f(&mut snapshot)
    }

    /// For the agent: the newest sample of a job on this node (the `MetricSample` the agent
    /// posts). The job is tracked as running.
    pub fn record_job_sample(&self, job: &JobLabels, sample: &crate::domain::MetricSample) {
        self.update(|s| {
            s.current_at = Some(chrono::Utc::now());
            s.record_sample(job, sample)
        })
    }

    /// For the agent, after each collection round: the jobs still running on this node. The
    /// others start their grace period now, and jobs past it are forgotten.
    pub fn retain_running_jobs<'a>(&self, job_ids: impl IntoIterator<Item = &'a str>) {
        let grace = self.inner.options.grace;
        self.update(|s| {
            let now = Instant::now();
            s.retain_running(job_ids, now);
            s.expire(now, grace);
            s.current_at = Some(chrono::Utc::now());
        });
    }

    /// For the agent, once per collection round: every job sample of `batch` and the node's own
    /// figures, exactly as `POST /v1/samples` would store them (the same checks; an item that
    /// fails them is skipped here too). `labels` gives each job's user, account and partition
    /// (the agent's job list); a job without an entry is exported with its id and node only.
    /// Jobs of earlier rounds missing from this batch start their grace period.
    pub fn record_agent_batch(
        &self,
        batch: &crate::collector::SampleBatch,
        labels: &std::collections::HashMap<String, JobLabels>,
    ) {
        let now = crate::domain::now_micros();
        let Ok((node, at)) = batch.check_envelope(now) else {
            return;
        };
        let mut running = Vec::with_capacity(batch.jobs.len());
        for report in &batch.jobs {
            let Ok(item) = report.to_item(&node, at, now) else {
                continue;
            };
            let job = labels
                .get(&item.job_id)
                .cloned()
                .unwrap_or_else(|| JobLabels {
                    job_id: item.job_id.clone(),
                    nodes: vec![node.clone()],
                    ..JobLabels::default()
                });
            self.record_job_sample(&job, &item.sample);
            running.push(item.job_id);
        }
        if let Ok(Some(report)) = batch.node_report(&node, at) {
            self.update(|s| s.record_node_report(&report));
        }
        self.retain_running_jobs(running.iter().map(String::as_str));
    }

    /// The whole exposition: snapshot series, the registry's counters and histograms, and the
    /// process's figures. CPU work proportional to the running jobs; callers on an async
    /// runtime run it on a blocking thread.
    pub fn render(&self) -> String {
        let started = Instant::now();
        let mut out = String::with_capacity(self.inner.last_size.load(Ordering::Relaxed) + 4096);
        let tracked = {
            let snapshot = self
                .inner
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner());
            snapshot.render(
                &mut out,
                self.inner.options.per_job,
                self.inner.options.grace,
                Instant::now(),
                chrono::Utc::now(),
            );
            snapshot.tracked_jobs()
        };
        text::header(
            &mut out,
            "jobscope_metrics_tracked_jobs",
            text::Kind::Gauge,
            "Jobs the exporter tracks: running, and finished within the grace period.",
        );
        text::sample(
            &mut out,
            "jobscope_metrics_tracked_jobs",
            "",
            tracked as f64,
        );
        text::header(
            &mut out,
            "jobscope_build_info",
            text::Kind::Gauge,
            "Always 1: the running jobscope's version.",
        );
        text::sample(
            &mut out,
            "jobscope_build_info",
            &text::labels(&[("version", env!("CARGO_PKG_VERSION"))]),
            1.0,
        );
        process::render(&mut out);
        let encoder = prometheus::TextEncoder::new();
        if let Err(err) = encoder.encode_utf8(&self.inner.registry.gather(), &mut out) {
            tracing::warn!(error = %err, "metrics: could not encode the service counters");
        }
        self.inner.last_size.store(out.len(), Ordering::Relaxed);
        self.inner
            .render_duration
            .observe(started.elapsed().as_secs_f64());
        out
    }
}

#[cfg(test)]
mod tests;
