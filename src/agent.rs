//! `jobscope agent`, the node agent, and `serve --collect`, its in-process twin.
//!
//! Every interval: learn which jobs run here (the server's running jobs on this node; discovery
//! adds what the server does not know), take one [`Sampler`] pass on a blocking thread, and
//! deliver the batch. The agent delivers over HTTP and keeps what it could not deliver in a
//! bounded on-disk [`Spool`], sent oldest first once the server answers again; `serve --collect`
//! hands the batch straight to the store. Sampling never waits on delivery for longer than one
//! request's timeout, and a pass that overruns its interval skips ticks rather than queueing them.

use crate::client::{self, ApiClient, Call, ClientOptions};
use crate::collector::{open_gpus, KnownJob, PassNotes, SampleBatch, Sampler, SamplerConfig};
use crate::domain::{now_micros, JobState};
use crate::spool::{PushOutcome, Spool, SpoolLimits};
use crate::store::{JobFilter, LatePolicy, Store};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// Spooled batches sent per pass at most, so a long outage drains over a few intervals instead
/// of delaying the next sample.
const DRAIN_PER_PASS: usize = 200;

/// Everything the agent needs, validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server: reqwest::Url,
    pub token: Option<String>,
    pub sampler: SamplerConfig,
    pub gpu: crate::collector::GpuChoice,
    pub spool_dir: PathBuf,
    pub spool_limits: SpoolLimits,
    pub timeout: Duration,
    /// The hook's settings (`--hook-config`, or its default file), for draining its spool.
    pub hook: crate::hook::config::HookConfig,
    /// `--metrics-listen`: where this node's series are served, and their grace period.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub metrics_grace: Duration,
    /// `--log-rate`: job output shipped per job and stream (bytes/s); 0: not at all.
    pub log_rate: u64,
    /// `--log-drain`: how long a finished job's output files are still read.
    pub log_drain: Duration,
}

/// The hook's spool and a client with the hook's token, when this node has a hook spool.
fn hook_drain(
    config: &crate::hook::config::HookConfig,
) -> Option<(Spool, crate::hook::HookClient)> {
    if !config.spool_dir.is_dir() {
        return None;
    }
    let spool = crate::hook::open_spool(&config.spool_dir)
        .map_err(|e| tracing::warn!(dir = %config.spool_dir.display(), error = %e, "cannot open the hook spool; not delivering it"))
        .ok()?;
    let client = crate::hook::HookClient::from_config(config)
        .map_err(|e| tracing::warn!(error = %e, "cannot build the hook client; not delivering the hook spool"))
        .ok()?;
    tracing::info!(dir = %config.spool_dir.display(), "delivering the Slurm hook's spooled events too");
    Some((spool, client))
}

/// Counts since start, logged at shutdown and (with the metrics issue) exported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgentTotals {
    pub passes: u64,
    pub batches_sent: u64,
    pub batches_spooled: u64,
    pub batches_dropped: u64,
    pub samples_accepted: u64,
    pub samples_rejected: u64,
}

/// The agent's HTTP side: who it talks to and how.
struct Uplink {
    api: ApiClient,
    node: String,
}

/// What became of one delivery attempt.
enum Delivery {
    /// The server took the batch (some items may have been rejected).
    Accepted { accepted: u64, rejected: u64 },
    /// The server will never take this batch as it is (malformed, too large): drop it.
    Refused(String),
    /// Try again later: unreachable, timed out, 5xx, or a fixable setup error (see [`Call::SampleBatch`]).
    Retry(String),
}

impl Uplink {
    fn new(config: &AgentConfig) -> anyhow::Result<Uplink> {
        let options = ClientOptions {
            timeout: Some(config.timeout),
            connect_timeout: config.timeout.min(Duration::from_secs(5)),
            user_agent: None,
        };
        Ok(Uplink {
            api: ApiClient::new(config.server.clone(), config.token.as_deref(), options)
                .context("--token-file")?,
            node: config.sampler.node.clone(),
        })
    }

    /// The server's running jobs on this node.
    async fn running_jobs(&self) -> anyhow::Result<Vec<KnownJob>> {
        let mut url = self.api.url(&["v1", "nodes", &self.node, "jobs"]);
        url.set_query(Some("limit=10000"));
        let response = self.api.get(url).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("server answered {status}");
        }
        let body: serde_json::Value = response.json().await?;
        Ok(body["jobs"]
            .as_array()
            .map(|jobs| jobs.iter().filter_map(KnownJob::from_json).collect())
            .unwrap_or_default())
    }

    async fn post(&self, body: Vec<u8>) -> Delivery {
        let request = self
            .api
            .post(self.api.url(&["v1", "samples"]))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(err) => return Delivery::Retry(client::describe(&err)),
        };
        let status = response.status();
        if status.is_success() {
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            let rejected = answer["rejected"].as_array().map_or(0, |r| r.len()) as u64;
            if rejected > 0 {
                tracing::info!(rejected, first = %answer["rejected"][0], "the server rejected some samples");
            }
            return Delivery::Accepted {
                accepted: answer["accepted"].as_u64().unwrap_or(0),
                rejected,
            };
        }
        let text = response.text().await.unwrap_or_default();
        let detail = format!("{status}: {}", text.chars().take(300).collect::<String>());
        if Call::SampleBatch.retry(status) {
            Delivery::Retry(detail)
        } else {
            Delivery::Refused(detail)
        }
    }
}

/// Runs the agent until `stop` turns true.
pub async fn run(
    config: AgentConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<AgentTotals> {
    let uplink = Uplink::new(&config)?;
    let spool = Spool::open(&config.spool_dir, config.spool_limits)
        .with_context(|| format!("--spool-dir: cannot use {}", config.spool_dir.display()))?;
    let (gpus, gpu_line) = open_gpus(config.gpu, &config.sampler.drm_root);
    tracing::info!("{gpu_line}");
    // Before the sampler, which sizes its kept cgroup files by the limit.
    crate::collector::fd_limit::raise_open_files_limit();
    let sampler = Arc::new(Mutex::new(Sampler::new(config.sampler.clone(), gpus)));
    tracing::info!(
        node = %config.sampler.node,
        server = %config.server,
        interval_ms = config.sampler.interval.as_millis() as u64,
        cgroup_root = %config.sampler.cgroup_root.display(),
        spool = %config.spool_dir.display(),
        "jobscope agent sampling"
    );
    let metrics = match config.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, config.metrics_grace, stop.clone()).await?),
        None => None,
    };
    let hook_spool = hook_drain(&config.hook);
    let mut totals = AgentTotals::default();
    let mut known: Vec<KnownJob> = Vec::new();
    let running_ids = output_shipper(&config, &stop)?;
    let mut server_down = false;
    let mut tick = tokio::time::interval(config.sampler.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if let Some((spool, client)) = &hook_spool {
            let report =
                crate::hook::deliver_spooled(spool, client, config.sampler.interval / 2).await;
            if report.delivered + report.dropped > 0 {
                tracing::info!(
                    delivered = report.delivered,
                    dropped = report.dropped,
                    remaining = report.remaining,
                    "hook spool delivered"
                );
            }
        }
        match uplink.running_jobs().await {
            Ok(jobs) => {
                known = jobs;
                if let Some(ids) = &running_ids {
                    ids.send_replace(known.iter().map(|j| j.id.clone()).collect());
                }
            }
            // Keep the last list: discovery still finds the cgroups, and the jobs the server
            // knew a moment ago are still the best guess for their sluid/cpus/GPUs.
            Err(err) => {
                tracing::debug!(error = %err, "cannot fetch this node's running jobs; using the last list")
            }
        }
        let pass_started = std::time::Instant::now();
        let batch = sample_once(&sampler, known.clone()).await?;
        totals.passes += 1;
        if let Some(metrics) = &metrics {
            metrics.collector_duration(pass_started.elapsed());
            metrics.record_agent_batch(&batch, &job_labels(&known));
        }
        let before = totals.clone();
        // Spooled batches may use half an interval, so sampling keeps its pace after an outage.
        let drain_budget = config.sampler.interval / 2;
        deliver(
            &uplink,
            &spool,
            &batch,
            &mut totals,
            &mut server_down,
            drain_budget,
        )
        .await;
        if let Some(metrics) = &metrics {
            for (outcome, n) in [
                ("sent", totals.batches_sent - before.batches_sent),
                ("spooled", totals.batches_spooled - before.batches_spooled),
                ("dropped", totals.batches_dropped - before.batches_dropped),
            ] {
                for _ in 0..n {
                    metrics.agent_batch(outcome);
                }
            }
            metrics.set_spool_depth(spool.depth().map_or(0, |d| d.records as i64));
        }
    }
    tracing::info!(?totals, "jobscope agent stopped");
    Ok(totals)
}

/// Starts shipping the output of the jobs running here (unless `--log-rate 0`); the agent
/// keeps the returned list of running job ids current.
fn output_shipper(
    config: &AgentConfig,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<watch::Sender<std::collections::HashSet<String>>>> {
    if config.log_rate == 0 {
        return Ok(None);
    }
    let shipper = crate::log_tail::LogShipper::new(
        config.server.clone(),
        config.token.as_deref(),
        config.sampler.node.clone(),
        config.log_rate,
        config.timeout,
    )
    .context("cannot build the job output client")?
    .with_drain(config.log_drain);
    let (tx, rx) = watch::channel(Default::default());
    tokio::spawn(crate::log_tail::run_shipper(
        shipper,
        rx,
        Duration::from_secs(1),
        stop.clone(),
    ));
    Ok(Some(tx))
}

/// Sends one batch, or queues it behind the spooled ones (the server then receives batches
/// oldest first), and drains the spool while the server answers.
async fn deliver(
    uplink: &Uplink,
    spool: &Spool,
    batch: &SampleBatch,
    totals: &mut AgentTotals,
    server_down: &mut bool,
    drain_budget: Duration,
) {
    let body = match serde_json::to_vec(batch) {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode a batch; dropped");
            totals.batches_dropped += 1;
            return;
        }
    };
    let spooled_before = spool.depth().map(|d| d.records).unwrap_or(0);
    if spooled_before == 0 {
        match uplink.post(body.clone()).await {
            Delivery::Accepted { accepted, rejected } => {
                totals.batches_sent += 1;
                totals.samples_accepted += accepted;
                totals.samples_rejected += rejected;
                if *server_down {
                    tracing::info!("the server answers again");
                    *server_down = false;
                }
                return;
            }
            Delivery::Refused(why) => {
                totals.batches_dropped += 1;
                tracing::error!(reason = %why, "the server refused a batch; dropped");
                return;
            }
            Delivery::Retry(why) => {
                if !*server_down {
                    tracing::warn!(reason = %why, "cannot deliver samples; spooling until the server answers");
                    *server_down = true;
                }
            }
        }
    }
    spool_batch(spool, &body, totals);
    if !*server_down || spooled_before > 0 {
        *server_down = !drain(uplink, spool, totals, drain_budget).await;
    }
}

/// Each known job's labels for the agent's per-job series.
fn job_labels(known: &[KnownJob]) -> std::collections::HashMap<String, crate::metrics::JobLabels> {
    known
        .iter()
        .map(|j| {
            let labels = crate::metrics::JobLabels {
                job_id: j.id.clone(),
                user: j.user.clone().unwrap_or_default(),
                account: j.account.clone(),
                partition: j.partition.clone(),
                nodes: j.nodes.clone(),
            };
            (j.id.clone(), labels)
        })
        .collect()
}

/// Binds `--metrics-listen` (an error at start, not later) and serves this node's series.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<crate::metrics::Metrics> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen: cannot listen on {addr}"))?;
    let metrics = crate::metrics::Metrics::new(crate::metrics::MetricsOptions {
        per_job: true,
        grace,
    });
    tracing::info!(%addr, "serving this node's metrics on /metrics");
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    tokio::spawn(crate::api::metrics::serve_standalone(
        listener,
        metrics.clone(),
        shutdown,
    ));
    Ok(metrics)
}

async fn sample_once(
    sampler: &Arc<Mutex<Sampler>>,
    known: Vec<KnownJob>,
) -> anyhow::Result<SampleBatch> {
    let sampler = sampler.clone();
    let (batch, notes) = tokio::task::spawn_blocking(move || {
        let mut sampler = sampler.blocking_lock();
        sampler.sample(&known, now_micros())
    })
    .await
    .context("the sampling thread panicked")?;
    log_notes(&notes);
    Ok(batch)
}

fn log_notes(notes: &PassNotes) {
    if notes.unattributed_cgroups > 0 {
        tracing::debug!(
            count = notes.unattributed_cgroups,
            "job cgroups named by a SLUID no job-started event has sent yet; not sampled"
        );
    }
}

fn spool_batch(spool: &Spool, body: &[u8], totals: &mut AgentTotals) {
    match spool.push(body) {
        Ok(PushOutcome::Stored { dropped }) => {
            totals.batches_spooled += 1;
            if dropped.records > 0 {
                totals.batches_dropped += dropped.records as u64;
                tracing::warn!(
                    dropped = dropped.records,
                    total_dropped = totals.batches_dropped,
                    "the spool is full: its oldest batches were dropped"
                );
            }
        }
        Ok(PushOutcome::Rejected(why)) => {
            totals.batches_dropped += 1;
            tracing::warn!(?why, "a batch does not fit in the spool; dropped");
        }
        Err(err) => {
            totals.batches_dropped += 1;
            tracing::error!(error = %err, "cannot write to the spool; batch dropped");
        }
    }
}

/// Sends spooled batches oldest first until the spool is empty, the server fails, `budget` is
/// spent, or [`DRAIN_PER_PASS`] were sent. `true` when the server answered.
async fn drain(uplink: &Uplink, spool: &Spool, totals: &mut AgentTotals, budget: Duration) -> bool {
    let deadline = std::time::Instant::now() + budget;
    let Ok(Some(_guard)) = spool.try_drain() else {
        return true;
    };
    let entries = match spool.oldest_first() {
        Ok(entries) => entries,
        Err(err) => {
            tracing::error!(error = %err, "cannot list the spool");
            return true;
        }
    };
    for entry in entries.take(DRAIN_PER_PASS) {
        // The next sample is due: the rest waits for the next pass.
        if std::time::Instant::now() >= deadline {
            break;
        }
        let body = match spool.read(&entry) {
            Ok(Some(body)) => body,
            // Damaged records were moved aside by the spool; nothing to send.
            Ok(None) => continue,
            Err(err) => {
                tracing::error!(error = %err, record = entry.name(), "cannot read a spooled batch");
                continue;
            }
        };
        match uplink.post(body).await {
            Delivery::Accepted { accepted, rejected } => {
                totals.batches_sent += 1;
                totals.samples_accepted += accepted;
                totals.samples_rejected += rejected;
            }
            Delivery::Refused(why) => {
                totals.batches_dropped += 1;
                tracing::error!(reason = %why, record = entry.name(), "the server refused a spooled batch; dropped");
            }
            Delivery::Retry(why) => {
                tracing::debug!(reason = %why, "spool drain paused");
                return false;
            }
        }
        if let Err(err) = spool.remove(&entry) {
            tracing::error!(error = %err, record = entry.name(), "cannot remove a delivered batch from the spool");
        }
    }
    true
}

/// `serve --collect`: the same sampling on the server's own node, straight into the store.
pub async fn collect_in_process(
    store: Store,
    config: SamplerConfig,
    gpu: crate::collector::GpuChoice,
    metrics: crate::metrics::Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let (gpus, gpu_line) = open_gpus(gpu, &config.drm_root);
    tracing::info!("{gpu_line}");
    tracing::info!(node = %config.node, interval_ms = config.interval.as_millis() as u64, "in-process collector sampling");
    let node = config.node.clone();
    crate::collector::fd_limit::raise_open_files_limit();
    let sampler = Arc::new(Mutex::new(Sampler::new(config.clone(), gpus)));
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let filter = JobFilter {
            state: Some(JobState::Running),
            user: None,
            node: Some(node.clone()),
            limit: 10_000,
            offset: 0,
            ..JobFilter::default()
        };
        let known: Vec<KnownJob> = match store.list_jobs(&filter).await {
            Ok((jobs, _)) => jobs.iter().map(KnownJob::from_job).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "collector cannot list running jobs; skipping a pass");
                continue;
            }
        };
        let pass_started = std::time::Instant::now();
        let batch = match sample_once(&sampler, known).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(error = %err, "sampling failed");
                continue;
            }
        };
        metrics.collector_duration(pass_started.elapsed());
        let prepared = match batch.prepare(now_micros()) {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(error = %err, "the collector produced an invalid batch");
                continue;
            }
        };
        for invalid in &prepared.invalid {
            tracing::warn!(job_id = %invalid.job_id, reason = %invalid.message, "sample not stored");
        }
        match store
            .ingest_samples(
                &prepared.items,
                prepared.node_report.as_ref(),
                LatePolicy::UntilJobEnd,
            )
            .await
        {
            Ok(outcome) if !outcome.rejected.is_empty() => {
                metrics.samples_ingested(outcome.accepted as u64);
                tracing::debug!(
                    rejected = outcome.rejected.len(),
                    "samples of jobs the store does not have running"
                )
            }
            Ok(outcome) => metrics.samples_ingested(outcome.accepted as u64),
            Err(err) => tracing::warn!(error = %err, "collector could not store a batch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn only_a_refusal_of_the_batch_itself_drops_it() {
        for kept in [401, 403, 404, 405, 408, 429, 500, 502, 503] {
            assert!(
                Call::SampleBatch.retry(StatusCode::from_u16(kept).unwrap()),
                "{kept} must keep the batch for later"
            );
        }
        for dropped in [400, 413, 422] {
            assert!(!Call::SampleBatch.retry(StatusCode::from_u16(dropped).unwrap()));
        }
    }
}
