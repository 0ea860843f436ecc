//! The SQL of every store operation, written once and compiled for each backend.
//!
//! `store_queries!(Db, BEGIN_WRITE, EVENT_ORDER_LOCK, ROW_LOCK, RUNTIME_UNTIL_3, BULK)` expands to
//! a set of functions over a concrete `sqlx::Pool<Db>`. Both backends accept `$N` placeholders,
//! `ON CONFLICT`, `RETURNING` and `CAST(x AS DOUBLE PRECISION)`, so one text serves both; the
//! arguments carry what does differ: the statement that opens a write transaction, an optional
//! statement run just before an event row is appended (PostgreSQL takes a transaction lock there
//! so event ids are handed out in commit order even with several `serve` replicas), the row-lock
//! clause of a read-then-write (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE` already holds the write
//! lock), the expression for the seconds from `start_time` to the timestamp parameter `$3`, and
//! the module of the backend's batch statements (`bulk::sqlite` or `bulk::postgres`: how a
//! sample batch and the event rows reach the table, see `bulk.rs`).

use crate::domain::event::{EventKind, JobSample, JobSummary, SummaryScheduler};
use crate::domain::usage::is_stale;
use crate::domain::{
    AuditEvent, GpuVendor, Job, JobState, MetricSample, Node, NodeState, Partition,
    PartitionLimits, PartitionState, SampleDetail, SchedulerInfo,
};
use crate::store::{LatePolicy, SampleItem, SampleRejection};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::borrow::Cow;

/// Columns of `jobs` in the order `JobRow` and the insert statement use.
pub(crate) const JOB_COLUMNS: &str = "id, user_name, nodes, node_count, state, start_time, end_time, \
    runtime_seconds, cpu_usage, memory_usage_mb, gpu_usage, requested_cpus, allocated_cpus, \
    requested_memory_mb, allocated_memory_mb, requested_gpus, allocated_gpus, cluster_name, \
    scheduler_instance, ingest_version, last_sample_at, sample_count, avg_cpu_usage, max_cpu_usage, \
    max_memory_usage_mb, avg_gpu_usage, max_gpu_usage, scheduler_type, external_job_id, raw_state, \
    submit_time, partition, account, qos, priority, scheduler_exit_code, state_reason, \
    time_limit_minutes, scheduler_extra, cgroup_path, gpu_vendor, gpu_devices, gpu_count, exit_code, \
    signal, correlation_id, created_at, updated_at, memory_usage_bytes, max_memory_usage_bytes, gpus, sluid";

/// A `jobs` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    user_name: String,
    nodes: Json<Vec<String>>,
    node_count: i64,
    state: String,
    start_time: DateTime<Utc>,
    end_time: Option<DateTime<Utc>>,
    runtime_seconds: Option<f64>,
    cpu_usage: Option<f64>,
    memory_usage_mb: Option<i64>,
    gpu_usage: Option<f64>,
    requested_cpus: Option<i64>,
    allocated_cpus: Option<i64>,
    requested_memory_mb: Option<i64>,
    allocated_memory_mb: Option<i64>,
    requested_gpus: Option<i64>,
    allocated_gpus: Option<i64>,
    cluster_name: String,
    scheduler_instance: String,
    ingest_version: String,
    last_sample_at: Option<DateTime<Utc>>,
    sample_count: i64,
    avg_cpu_usage: Option<f64>,
    max_cpu_usage: Option<f64>,
    max_memory_usage_mb: Option<i64>,
    avg_gpu_usage: Option<f64>,
    max_gpu_usage: Option<f64>,
    scheduler_type: Option<String>,
    external_job_id: Option<String>,
    raw_state: Option<String>,
    submit_time: Option<DateTime<Utc>>,
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    priority: Option<i64>,
    scheduler_exit_code: Option<i64>,
    state_reason: Option<String>,
    time_limit_minutes: Option<i64>,
    scheduler_extra: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    cgroup_path: Option<String>,
    gpu_vendor: Option<String>,
    gpu_devices: Json<Vec<String>>,
    gpu_count: Option<i64>,
    exit_code: Option<i64>,
    signal: Option<i64>,
    correlation_id: String,
    memory_usage_bytes: Option<i64>,
    max_memory_usage_bytes: Option<i64>,
    gpus: Option<Json<Vec<crate::domain::gpu::GpuReading>>>,
    sluid: Option<String>,
}

impl JobRow {
    /// The API view of the row; a running job's runtime is computed at `now`.
    pub(crate) fn into_job(self, now: DateTime<Utc>) -> Result<Job, super::StoreError> {
        let corrupt = |what: &str, value: &str| {
            super::StoreError::Corrupt(format!("job {}: bad {what} {value:?}", self.id))
        };
        let state: JobState = self
            .state
            .parse()
            .map_err(|_| corrupt("state", &self.state))?;
        let gpu_vendor = match &self.gpu_vendor {
            Some(v) => Some(
                v.parse::<GpuVendor>()
                    .map_err(|_| corrupt("gpu_vendor", v))?,
            ),
            None => None,
        };
        let runtime_seconds = if state.is_terminal() {
            self.runtime_seconds
        } else {
            Some(Job::runtime_at(self.start_time, None, now))
        };
        let scheduler = SchedulerInfo {
            kind: self.scheduler_type,
            external_job_id: self.external_job_id,
            raw_state: self.raw_state,
            submit_time: self.submit_time,
            partition: self.partition,
            account: self.account,
            qos: self.qos,
            priority: self.priority,
            exit_code: self.scheduler_exit_code,
            state_reason: self.state_reason,
            time_limit_minutes: self.time_limit_minutes,
            extra: self.scheduler_extra.map(|Json(m)| m),
            sluid: self.sluid,
        };
        Ok(Job {
            id: self.id,
            user: self.user_name,
            nodes: self.nodes.0,
            node_count: self.node_count,
            state,
            start_time: self.start_time,
            end_time: self.end_time,
            runtime_seconds,
            cpu_usage: self.cpu_usage,
            memory_usage_mb: self.memory_usage_mb,
            gpu_usage: self.gpu_usage,
            requested_cpus: self.requested_cpus,
            allocated_cpus: self.allocated_cpus,
            requested_memory_mb: self.requested_memory_mb,
            allocated_memory_mb: self.allocated_memory_mb,
            requested_gpus: self.requested_gpus,
            allocated_gpus: self.allocated_gpus,
            cluster_name: self.cluster_name,
            scheduler_instance: self.scheduler_instance,
            ingest_version: self.ingest_version,
            last_sample_at: self.last_sample_at,
            sample_count: self.sample_count,
            avg_cpu_usage: self.avg_cpu_usage,
            max_cpu_usage: self.max_cpu_usage,
            max_memory_usage_mb: self.max_memory_usage_mb,
            avg_gpu_usage: self.avg_gpu_usage,
            max_gpu_usage: self.max_gpu_usage,
            scheduler: (scheduler != SchedulerInfo::default()).then_some(scheduler),
            cgroup_path: self.cgroup_path,
            gpu_vendor,
            gpu_devices: self.gpu_devices.0,
            gpu_count: self.gpu_count,
            exit_code: self.exit_code,
            signal: self.signal,
            correlation_id: Some(self.correlation_id),
            memory_usage_bytes: self.memory_usage_bytes,
            max_memory_usage_bytes: self.max_memory_usage_bytes,
            gpus: self.gpus.map(|Json(g)| g).unwrap_or_default(),
        })
    }
}

/// An audit row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    job_id: String,
    change_type: String,
    changed_at: DateTime<Utc>,
    changed_by: String,
    source: String,
    correlation_id: String,
    job_snapshot: Json<serde_json::Value>,
    actor: Option<String>,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        AuditEvent {
            id: r.id,
            job_id: r.job_id,
            change_type: r.change_type,
            changed_at: r.changed_at,
            changed_by: r.changed_by,
            source: r.source,
            correlation_id: r.correlation_id,
            job_snapshot: r.job_snapshot.0,
            actor: r.actor,
        }
    }
}

/// Kinds of rows in the event log.
/// Columns of `metric_samples` in the order the batch insert binds them (and `SampleRow` reads).
pub(crate) const SAMPLE_COLUMNS: &str = "job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage, node, \
    cpu_time_seconds, cpu_user_seconds, cpu_system_seconds, cpu_throttled_seconds, cpu_nr_throttled, \
    memory_usage_bytes, memory_peak_bytes, memory_limit_bytes, memory_anon_bytes, memory_file_bytes, \
    memory_shmem_bytes, oom_kills, io_read_bytes, io_write_bytes, io_read_ops, io_write_ops, pids, pressure, gpus";

/// A `metric_samples` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SampleRow {
    timestamp: DateTime<Utc>,
    cpu_usage: Option<f64>,
    memory_usage_mb: Option<i64>,
    gpu_usage: Option<f64>,
    node: Option<String>,
    cpu_time_seconds: Option<f64>,
    cpu_user_seconds: Option<f64>,
    cpu_system_seconds: Option<f64>,
    cpu_throttled_seconds: Option<f64>,
    cpu_nr_throttled: Option<i64>,
    memory_usage_bytes: Option<i64>,
    memory_peak_bytes: Option<i64>,
    memory_limit_bytes: Option<i64>,
    memory_anon_bytes: Option<i64>,
    memory_file_bytes: Option<i64>,
    memory_shmem_bytes: Option<i64>,
    oom_kills: Option<i64>,
    io_read_bytes: Option<i64>,
    io_write_bytes: Option<i64>,
    io_read_ops: Option<i64>,
    io_write_ops: Option<i64>,
    pids: Option<i64>,
    pressure: Option<Json<crate::domain::usage::Pressure>>,
    gpus: Option<Json<Vec<crate::domain::gpu::GpuReading>>>,
}

impl From<SampleRow> for MetricSample {
    fn from(r: SampleRow) -> Self {
        MetricSample {
            timestamp: r.timestamp,
            cpu_usage: r.cpu_usage,
            memory_usage_mb: r.memory_usage_mb,
            gpu_usage: r.gpu_usage,
            detail: SampleDetail {
                node: r.node,
                cpu_time_seconds: r.cpu_time_seconds,
                cpu_user_seconds: r.cpu_user_seconds,
                cpu_system_seconds: r.cpu_system_seconds,
                cpu_throttled_seconds: r.cpu_throttled_seconds,
                cpu_nr_throttled: r.cpu_nr_throttled,
                memory_usage_bytes: r.memory_usage_bytes,
                memory_peak_bytes: r.memory_peak_bytes,
                memory_limit_bytes: r.memory_limit_bytes,
                memory_anon_bytes: r.memory_anon_bytes,
                memory_file_bytes: r.memory_file_bytes,
                memory_shmem_bytes: r.memory_shmem_bytes,
                oom_kills: r.oom_kills,
                io_read_bytes: r.io_read_bytes,
                io_write_bytes: r.io_write_bytes,
                io_read_ops: r.io_read_ops,
                io_write_ops: r.io_write_ops,
                pids: r.pids,
                pressure: r.pressure.map(|Json(p)| p),
                gpus: r.gpus.map(|Json(g)| g).unwrap_or_default(),
            },
        }
    }
}

/// Columns of `jobs` that [`SampledJobRow`] reads.
pub(crate) const SAMPLED_JOB_COLUMNS: &str = "id, state, end_time, nodes, start_time";

/// A `jobs` row as a sample batch reads it (see [`SampledJob`]).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SampledJobRow {
    id: String,
    state: String,
    end_time: Option<DateTime<Utc>>,
    nodes: Json<Vec<String>>,
    start_time: DateTime<Utc>,
}

impl SampledJobRow {
    /// The job's id and what the batch needs of it.
    pub(crate) fn into_sampled(self) -> Result<(String, SampledJob), super::StoreError> {
        let state = self.state.parse().map_err(|_| {
            super::StoreError::Corrupt(format!("job {}: bad state {:?}", self.id, self.state))
        })?;
        let job = SampledJob {
            state,
            end_time: self.end_time,
            nodes: self.nodes.0,
            start_time: self.start_time,
        };
        Ok((self.id, job))
    }
}

/// What a sample batch needs to know of a job it names.
pub(crate) struct SampledJob {
    pub(crate) state: JobState,
    pub(crate) end_time: Option<DateTime<Utc>>,
    pub(crate) nodes: Vec<String>,
    pub(crate) start_time: DateTime<Utc>,
}

/// The `job_sample` payload of a sample of job `job_id` (the sample itself is added from its row
/// when the log is read): what the stream documents, rebuilt from a stored
/// [`crate::domain::event::StoredJobSample`] and the job's own fields.
pub(crate) fn job_sample_payload<'a>(
    job_id: &'a str,
    state: JobState,
    user: &'a str,
    nodes: &'a [String],
    partition: Option<&'a str>,
    correlation_id: &'a str,
) -> JobSample<'a> {
    JobSample {
        job_id: Cow::Borrowed(job_id),
        job: JobSummary {
            id: Cow::Borrowed(job_id),
            user: Cow::Borrowed(user),
            state,
            nodes: Cow::Borrowed(nodes),
            scheduler: SummaryScheduler {
                partition: partition.map(Cow::Borrowed),
            },
        },
        correlation_id: Cow::Borrowed(correlation_id),
        sample: None,
    }
}

impl SampledJob {
    /// Whether a sample collected at `at` belongs to this job. An agent's last samples often
    /// arrive after the epilog: what was measured before the job's end is still the job's.
    /// What an agent measured before the job started is not, beyond the clock skew the server
    /// allows between nodes (`MAX_CLOCK_SKEW_SECONDS`: the start is another node's or the
    /// server's reading, the sample the agent's). The Go service's single-sample endpoint
    /// (`WhileRunning`) keeps taking any past time, as it always did.
    pub(crate) fn accepts(
        &self,
        at: DateTime<Utc>,
        policy: LatePolicy,
    ) -> Result<(), SampleRejection> {
        let skew = chrono::Duration::seconds(crate::domain::validate::MAX_CLOCK_SKEW_SECONDS);
        if policy == LatePolicy::UntilJobEnd && at < self.start_time - skew {
            return Err(SampleRejection::BeforeJobStart);
        }
        if !self.state.is_terminal() {
            return Ok(());
        }
        match (policy, self.end_time) {
            (LatePolicy::UntilJobEnd, Some(end)) if at <= end => Ok(()),
            (LatePolicy::UntilJobEnd, _) => Err(SampleRejection::AfterJobEnd),
            (LatePolicy::WhileRunning, _) => Err(SampleRejection::JobFinished),
        }
    }
}

/// One job's share of a sample batch, folded so that the job row is updated once.
pub(crate) struct JobDelta<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) newest_at: DateTime<Utc>,
    pub(crate) newest_cpu: Option<f64>,
    pub(crate) newest_memory_mb: Option<i64>,
    pub(crate) newest_gpu: Option<f64>,
    pub(crate) newest_memory_bytes: Option<i64>,
    /// The stored row (`metric_samples.id`) of the newest sample when it has GPU figures: the
    /// job's current GPUs are copied from it in the database, not sent and parsed a second time.
    pub(crate) newest_gpus_sample: Option<i64>,
    pub(crate) samples: i64,
    pub(crate) cpu_samples: i64,
    pub(crate) cpu_sum: f64,
    pub(crate) cpu_max: Option<f64>,
    pub(crate) memory_mb_max: Option<i64>,
    pub(crate) memory_bytes_max: Option<i64>,
    pub(crate) gpu_samples: i64,
    pub(crate) gpu_sum: f64,
    pub(crate) gpu_max: Option<f64>,
}

impl<'a> JobDelta<'a> {
    /// Folds the stored items (each with its `metric_samples.id`) per job, in the order jobs
    /// first appear.
    pub(crate) fn of(items: impl IntoIterator<Item = (&'a SampleItem, i64)>) -> Vec<JobDelta<'a>> {
        fn max<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y > x { y } else { x }),
                (x, None) => x,
                (None, y) => y,
            }
        }
        let mut order: Vec<JobDelta<'a>> = Vec::new();
        let mut index: std::collections::HashMap<&'a str, usize> = std::collections::HashMap::new();
        for (item, sample_id) in items {
            let s = &item.sample;
            let i = *index.entry(item.job_id.as_str()).or_insert_with(|| {
                order.push(JobDelta {
                    job_id: item.job_id.as_str(),
                    newest_at: s.timestamp,
                    newest_cpu: None,
                    newest_memory_mb: None,
                    newest_gpu: None,
                    newest_memory_bytes: None,
                    newest_gpus_sample: None,
                    samples: 0,
                    cpu_samples: 0,
                    cpu_sum: 0.0,
                    cpu_max: None,
                    memory_mb_max: None,
                    memory_bytes_max: None,
                    gpu_samples: 0,
                    gpu_sum: 0.0,
                    gpu_max: None,
                });
                order.len() - 1
            });
            let d = &mut order[i];
            if d.samples == 0 || s.timestamp >= d.newest_at {
                d.newest_at = s.timestamp;
                d.newest_cpu = s.cpu_usage;
                d.newest_memory_mb = s.memory_usage_mb;
                d.newest_gpu = s.gpu_usage;
                d.newest_memory_bytes = s.detail.memory_usage_bytes;
                d.newest_gpus_sample = (!s.detail.gpus.is_empty()).then_some(sample_id);
            }
            d.samples += 1;
            if let Some(cpu) = s.cpu_usage {
                d.cpu_samples += 1;
                d.cpu_sum += cpu;
            }
            d.cpu_max = max(d.cpu_max, s.cpu_usage);
            d.memory_mb_max = max(d.memory_mb_max, s.memory_usage_mb);
            d.memory_bytes_max = max(
                d.memory_bytes_max,
                max(s.detail.memory_usage_bytes, s.detail.memory_peak_bytes),
            );
            if let Some(gpu) = s.gpu_usage {
                d.gpu_samples += 1;
                d.gpu_sum += gpu;
            }
            d.gpu_max = max(d.gpu_max, s.gpu_usage);
        }
        order
    }
}

/// `UPDATE jobs SET ...` of a batch's [`JobDelta`] rows, up to its `FROM`: each backend adds the
/// rows as a relation `s` with columns `column1` to `column16` (in the order of the fields of
/// `JobDelta`, `column1` the job id) and `WHERE jobs.id = s.column1` (see `bulk.rs`). Current
/// values follow the newest sample only, so a late sample from an agent's spool counts in the
/// aggregates without overwriting fresher figures; an unknown figure never overwrites a known one.
pub(crate) const JOB_DELTA_SET: &str = "UPDATE jobs SET \
    cpu_usage = CASE WHEN (jobs.last_sample_at IS NULL OR s.column2 >= jobs.last_sample_at) AND s.column3 IS NOT NULL THEN s.column3 ELSE jobs.cpu_usage END, \
    memory_usage_mb = CASE WHEN (jobs.last_sample_at IS NULL OR s.column2 >= jobs.last_sample_at) AND s.column4 IS NOT NULL THEN s.column4 ELSE jobs.memory_usage_mb END, \
    gpu_usage = CASE WHEN (jobs.last_sample_at IS NULL OR s.column2 >= jobs.last_sample_at) AND s.column5 IS NOT NULL THEN s.column5 ELSE jobs.gpu_usage END, \
    memory_usage_bytes = CASE WHEN (jobs.last_sample_at IS NULL OR s.column2 >= jobs.last_sample_at) AND s.column6 IS NOT NULL THEN s.column6 ELSE jobs.memory_usage_bytes END, \
    gpus = CASE WHEN (jobs.last_sample_at IS NULL OR s.column2 >= jobs.last_sample_at) AND s.column7 IS NOT NULL \
        THEN (SELECT m.gpus FROM metric_samples m WHERE m.id = s.column7) ELSE jobs.gpus END, \
    last_sample_at = CASE WHEN jobs.last_sample_at IS NULL OR s.column2 > jobs.last_sample_at THEN s.column2 ELSE jobs.last_sample_at END, \
    sample_count = jobs.sample_count + s.column8, \
    cpu_sample_count = jobs.cpu_sample_count + s.column9, \
    cpu_usage_sum = jobs.cpu_usage_sum + s.column10, \
    avg_cpu_usage = CASE WHEN jobs.cpu_sample_count + s.column9 > 0 \
        THEN (jobs.cpu_usage_sum + s.column10) / (jobs.cpu_sample_count + s.column9) ELSE jobs.avg_cpu_usage END, \
    max_cpu_usage = CASE WHEN s.column11 IS NOT NULL AND (jobs.max_cpu_usage IS NULL OR s.column11 > jobs.max_cpu_usage) THEN s.column11 ELSE jobs.max_cpu_usage END, \
    max_memory_usage_mb = CASE WHEN s.column12 IS NOT NULL AND (jobs.max_memory_usage_mb IS NULL OR s.column12 > jobs.max_memory_usage_mb) THEN s.column12 ELSE jobs.max_memory_usage_mb END, \
    max_memory_usage_bytes = CASE WHEN s.column13 IS NOT NULL AND (jobs.max_memory_usage_bytes IS NULL OR s.column13 > jobs.max_memory_usage_bytes) THEN s.column13 ELSE jobs.max_memory_usage_bytes END, \
    gpu_sample_count = jobs.gpu_sample_count + s.column14, \
    gpu_usage_sum = jobs.gpu_usage_sum + s.column15, \
    avg_gpu_usage = CASE WHEN jobs.gpu_sample_count + s.column14 > 0 \
        THEN (jobs.gpu_usage_sum + s.column15) / (jobs.gpu_sample_count + s.column14) ELSE jobs.avg_gpu_usage END, \
    max_gpu_usage = CASE WHEN s.column16 IS NOT NULL AND (jobs.max_gpu_usage IS NULL OR s.column16 > jobs.max_gpu_usage) THEN s.column16 ELSE jobs.max_gpu_usage END";

/// The log read of `events_after`: each row with its referred sample's columns (under their own
/// names, as [`SampleRow`] reads them; the event's own columns are renamed to stay apart).
/// The join is on the sample id alone, so that every plan takes the primary key: joined on the
/// job as well, PostgreSQL with a young table's statistics chose the (job, time, node) index and
/// read all of a job's samples for each event. `events_after` compares the jobs instead.
///
/// A `job_sample` row stores only its job's state (`StoredJobSample`): the rest of the summary
/// comes from the job's row, or from `deleted_jobs` when the row the event belongs to is gone
/// (the first deletion of the id at or after the event: a job deleted and created again is two
/// incarnations, and an event belongs to the one alive when it was logged).
pub(crate) fn events_after_sql() -> sqlx::AssertSqlSafe<&'static str> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    sqlx::AssertSqlSafe(SQL.get_or_init(|| {
        let sample_columns: Vec<String> = SAMPLE_COLUMNS
            .split(',')
            .map(|c| format!("m.{}", c.trim()))
            .collect();
        format!(
            "SELECT e.id AS event_id, e.occurred_at AS event_at, e.kind AS event_kind, \
             e.job_id AS event_job_id, e.payload AS event_payload, e.sample_id AS event_sample_id, \
             m.id AS stored_sample_id, {}, \
             COALESCE(d.user_name, j.user_name) AS summary_user, \
             COALESCE(d.nodes, j.nodes) AS summary_nodes, \
             CASE WHEN d.job_id IS NULL THEN j.partition ELSE d.partition END AS summary_partition, \
             COALESCE(d.correlation_id, j.correlation_id) AS summary_correlation_id \
             FROM events e LEFT JOIN metric_samples m ON m.id = e.sample_id \
             LEFT JOIN deleted_jobs d ON e.kind = 'job_sample' AND d.job_id = e.job_id \
               AND d.deleted_at = (SELECT MIN(x.deleted_at) FROM deleted_jobs x \
                                   WHERE x.job_id = e.job_id AND x.deleted_at >= e.occurred_at) \
             LEFT JOIN jobs j ON e.kind = 'job_sample' AND d.job_id IS NULL AND j.id = e.job_id \
             WHERE e.id > $1 ORDER BY e.id ASC LIMIT $2",
            sample_columns.join(", ")
        )
    }))
}

/// Columns of `nodes` that `NodeRow` reads.
pub(crate) const NODE_COLUMNS: &str =
    "name, state, state_reason, partitions, features, cpus, memory_total_bytes, \
    cpu_usage_percent, memory_used_bytes, load_1, load_5, load_15, gpus, report_interval_seconds, \
    last_report_at, updated_at";

/// The `running_jobs` column of a node query.
pub(crate) const RUNNING_JOBS_OF_NODE: &str =
    "(SELECT COUNT(*) FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id \
    WHERE jn.node = nodes.name AND j.state = 'running') AS running_jobs";

/// A `nodes` row as stored, with its running job count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct NodeRow {
    pub(crate) name: String,
    pub(crate) state: Option<String>,
    pub(crate) state_reason: Option<String>,
    pub(crate) partitions: Json<Vec<String>>,
    pub(crate) features: Json<Vec<String>>,
    pub(crate) cpus: Option<i64>,
    pub(crate) memory_total_bytes: Option<i64>,
    cpu_usage_percent: Option<f64>,
    memory_used_bytes: Option<i64>,
    pub(crate) load_1: Option<f64>,
    load_5: Option<f64>,
    load_15: Option<f64>,
    gpus: Json<Vec<crate::domain::gpu::GpuReading>>,
    report_interval_seconds: Option<f64>,
    last_report_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    pub(crate) running_jobs: i64,
}

impl NodeRow {
    /// The API view of the row: a scheduler's state wins; without one the state is derived from
    /// the agent's reports at `now`.
    pub(crate) fn into_node(self, now: DateTime<Utc>) -> Result<Node, super::StoreError> {
        let stale = is_stale(self.last_report_at, self.report_interval_seconds, now);
        let state = match &self.state {
            Some(s) => s.parse::<NodeState>().map_err(|_| {
                super::StoreError::Corrupt(format!("node {}: bad state {s:?}", self.name))
            })?,
            None => NodeState::from_agent(stale, self.running_jobs),
        };
        Ok(Node {
            name: self.name,
            state,
            state_reason: self.state_reason,
            partitions: self.partitions.0,
            features: self.features.0,
            cpus: self.cpus,
            memory_total_bytes: self.memory_total_bytes,
            cpu_usage_percent: self.cpu_usage_percent,
            memory_used_bytes: self.memory_used_bytes,
            load_1: self.load_1,
            load_5: self.load_5,
            load_15: self.load_15,
            gpus: self.gpus.0,
            running_jobs: self.running_jobs,
            last_report_at: self.last_report_at,
            report_interval_seconds: self.report_interval_seconds,
            stale,
            updated_at: self.updated_at,
        })
    }
}

/// Columns of `partitions` that `PartitionRow` reads, in the insert statement's order.
pub(crate) const PARTITION_COLUMNS: &str = "name, state, is_default, nodes, total_nodes, total_cpus, \
    max_time_minutes, default_time_minutes, max_nodes_per_job, jobs_running, jobs_pending, updated_at";

/// A `partitions` row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PartitionRow {
    name: String,
    state: String,
    is_default: bool,
    nodes: Json<Vec<String>>,
    total_nodes: Option<i64>,
    total_cpus: Option<i64>,
    max_time_minutes: Option<i64>,
    default_time_minutes: Option<i64>,
    max_nodes_per_job: Option<i64>,
    jobs_running: i64,
    jobs_pending: i64,
    updated_at: DateTime<Utc>,
}

impl PartitionRow {
    pub(crate) fn into_partition(self) -> Result<Partition, super::StoreError> {
        let state = self.state.parse::<PartitionState>().map_err(|_| {
            super::StoreError::Corrupt(format!(
                "partition {}: bad state {:?}",
                self.name, self.state
            ))
        })?;
        Ok(Partition {
            name: self.name,
            state,
            is_default: self.is_default,
            nodes: self.nodes.0,
            total_nodes: self.total_nodes,
            total_cpus: self.total_cpus,
            limits: PartitionLimits {
                max_time_minutes: self.max_time_minutes,
                default_time_minutes: self.default_time_minutes,
                max_nodes_per_job: self.max_nodes_per_job,
            },
            jobs_running: self.jobs_running,
            jobs_pending: self.jobs_pending,
            updated_at: self.updated_at,
        })
    }
}

/// The row a scheduler's report turns `current` into, or `None` when nothing would change.
/// State, reason and partitions are the scheduler's; CPUs, memory and load are taken only while
/// no live agent reports them (an agent measures them more often and more exactly).
pub(crate) fn scheduler_merge(
    current: Option<&NodeRow>,
    n: &crate::store::SchedulerNode,
    now: DateTime<Utc>,
) -> Option<NodeRow> {
    let agent_live =
        current.is_some_and(|c| !is_stale(c.last_report_at, c.report_interval_seconds, now));
    let mut row = current.cloned().unwrap_or_else(|| NodeRow {
        name: n.name.clone(),
        state: None,
        state_reason: None,
        partitions: Json(Vec::new()),
        features: Json(Vec::new()),
        cpus: None,
        memory_total_bytes: None,
        cpu_usage_percent: None,
        memory_used_bytes: None,
        load_1: None,
        load_5: None,
        load_15: None,
        gpus: Json(Vec::new()),
        report_interval_seconds: None,
        last_report_at: None,
        updated_at: now,
        running_jobs: 0,
    });
    row.state = Some(n.state.as_str().to_owned());
    row.state_reason = n.state_reason.clone();
    if let Some(p) = &n.partitions {
        row.partitions = Json(p.clone());
    }
    if let Some(f) = &n.features {
        row.features = Json(f.clone());
    }
    if !agent_live {
        row.cpus = n.cpus.or(row.cpus);
        row.memory_total_bytes = n.memory_total_bytes.or(row.memory_total_bytes);
        row.load_1 = n.load_1.or(row.load_1);
    }
    let same = current.is_some_and(|c| {
        (
            &c.state,
            &c.state_reason,
            &c.partitions.0,
            &c.features.0,
            c.cpus,
            c.memory_total_bytes,
            c.load_1,
        ) == (
            &row.state,
            &row.state_reason,
            &row.partitions.0,
            &row.features.0,
            row.cpus,
            row.memory_total_bytes,
            row.load_1,
        )
    });
    (!same).then_some(row)
}

/// An event-log row queued by a write transaction until its commit. The payload is serialized
/// once, when it is queued, straight from the borrowed payloads of [`crate::domain::event`]: a sample batch
/// queues 1,000 of them, and building, encoding and dropping `serde_json::Value` trees instead
/// cost a third of its time (BENCHMARKS.md, "Sample ingestion"). Both backends take the text as
/// is (SQLite stores it, PostgreSQL casts it to `json`).
pub(crate) struct QueuedEvent {
    pub(crate) kind: EventKind,
    /// The job it is about; none for node and partition events.
    pub(crate) job_id: Option<String>,
    /// The payload as JSON text.
    pub(crate) payload: String,
    /// For `job_sample`: the `metric_samples` row whose figures are the payload's `sample`. The
    /// log keeps the reference, not a second copy of the sample (see [`JobSample`]).
    pub(crate) sample_id: Option<i64>,
}

impl QueuedEvent {
    /// The row of `payload`, serialized now.
    pub(crate) fn new(
        kind: EventKind,
        job_id: Option<&str>,
        payload: &impl serde::Serialize,
        sample_id: Option<i64>,
    ) -> Result<QueuedEvent, super::StoreError> {
        Ok(QueuedEvent {
            kind,
            job_id: job_id.map(str::to_owned),
            payload: to_json(payload)?,
            sample_id,
        })
    }
}

/// `value` as JSON text; an error (a map with keys that are not strings, none of ours) is an
/// encoding error of the statement it was for.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<String, super::StoreError> {
    serde_json::to_string(value).map_err(json_encode_error)
}

/// A value that could not be written as JSON, as the encoding error of its statement.
pub(crate) fn json_encode_error(e: serde_json::Error) -> super::StoreError {
    super::StoreError::Database(sqlx::Error::Encode(e.into()))
}

pub(crate) fn snapshot(job: &Job) -> serde_json::Value {
    serde_json::to_value(job).unwrap_or(serde_json::Value::Null)
}

macro_rules! store_queries {
    ($db:ty, $begin_write:expr, $event_order_lock:expr, $row_lock:expr, $runtime_until_3:expr, $bulk:path, $lifecycle:path) => {
        use $bulk as bulk;
        use $lifecycle as lifecycle;
        use crate::domain::event::{EventKind, JobChange, JobReport, NodeChange, PartitionChange};
        use std::borrow::Cow;
        use crate::store::queries::{
            events_after_sql, snapshot, AuditRow, JobDelta, JobRow, NodeRow, QueuedEvent, SampleRow, SampledJob,
            JOB_COLUMNS, NODE_COLUMNS, PARTITION_COLUMNS, PartitionRow, RUNNING_JOBS_OF_NODE, SAMPLE_COLUMNS,
        };
        use crate::store::{
            Applied, AuditContext, Finish, IngestOutcome, JobFilter, JobPatch, LatePolicy, LifecycleOp, NodeReport,
            SampleItem, SampleQuery, SampleRejection, StoreError, StoreResult,
        };
        use crate::domain::{now_micros, AuditEvent, Job, JobState, MetricSample};
        #[allow(unused_imports)]
        use crate::domain::Node;
        use chrono::{DateTime, Utc};
        use sqlx::types::Json;
        use sqlx::{AssertSqlSafe, FromRow, Pool, QueryBuilder, Row, Transaction};

        /// A write transaction that queues its event-log rows and appends them all at commit:
        /// the event-order lock (PostgreSQL) is then held only for one insert and the commit,
        /// however many changes the transaction carries.
        struct WriteTx {
            tx: Transaction<'static, $db>,
            /// `job_nodes` rows of jobs inserted in this transaction.
            nodes: Vec<(String, String)>,
            /// Audit rows: (job id, change type, context, snapshot).
            audits: Vec<(String, &'static str, AuditContext, serde_json::Value)>,
            /// Event-log rows, in the order their ids are to be handed out.
            events: Vec<QueuedEvent>,
        }

        impl std::ops::Deref for WriteTx {
            type Target = Transaction<'static, $db>;
            fn deref(&self) -> &Self::Target {
                &self.tx
            }
        }

        impl std::ops::DerefMut for WriteTx {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.tx
            }
        }

        impl WriteTx {
            async fn begin(pool: &Pool<$db>) -> StoreResult<WriteTx> {
                Ok(WriteTx {
                    tx: pool.begin_with($begin_write).await?,
                    nodes: Vec::new(),
                    audits: Vec::new(),
                    events: Vec::new(),
                })
            }

            /// Queues an event about a job; `payload` is serialized now (see [`QueuedEvent`]).
            fn append_event(&mut self, kind: EventKind, job_id: &str, payload: &impl serde::Serialize) -> StoreResult<()> {
                self.events.push(QueuedEvent::new(kind, Some(job_id), payload, None)?);
                Ok(())
            }

            /// Queues the `job_sample` event of the stored sample `sample_id` of a job in `state`
            /// (the log keeps no more of it: see `events_after_sql`).
            fn append_sample_event(&mut self, job_id: &str, state: JobState, sample_id: i64) -> StoreResult<()> {
                let payload = crate::domain::event::StoredJobSample { state };
                self.events.push(QueuedEvent::new(EventKind::JobSample, Some(job_id), &payload, Some(sample_id))?);
                Ok(())
            }

            /// An event about no job in particular (a node's or a partition's change).
            fn append_other_event(&mut self, kind: EventKind, payload: &impl serde::Serialize) -> StoreResult<()> {
                self.events.push(QueuedEvent::new(kind, None, payload, None)?);
                Ok(())
            }

            /// Commits a lifecycle batch: its queued rows in one statement where the backend
            /// can (see `lifecycle_batch`), then as [`WriteTx::commit`] does.
            async fn commit_batch(mut self) -> StoreResult<()> {
                if lifecycle::flush(&mut self.tx, now_micros(), &self.nodes, &self.audits, &self.events).await? {
                    self.nodes.clear();
                    self.audits.clear();
                    self.events.clear();
                }
                self.commit().await
            }

            /// Appends the queued rows, one multi-row insert per table, and commits.
            async fn commit(mut self) -> StoreResult<()> {
                let now = now_micros();
                let nodes = std::mem::take(&mut self.nodes);
                for chunk in nodes.chunks(1000) {
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new("INSERT INTO job_nodes (job_id, node) ");
                    qb.push_values(chunk, |mut b, (job_id, node)| {
                        b.push_bind(job_id.clone()).push_bind(node.clone());
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build().execute(&mut *self.tx).await?;
                }
                let audits = std::mem::take(&mut self.audits);
                if !audits.is_empty() {
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO job_audit_events (job_id, change_type, changed_at, changed_by, source, correlation_id, job_snapshot, actor) ",
                    );
                    qb.push_values(audits, |mut b, (job_id, change_type, audit, snapshot)| {
                        b.push_bind(job_id)
                            .push_bind(change_type)
                            .push_bind(now)
                            .push_bind(audit.changed_by)
                            .push_bind(audit.source)
                            .push_bind(audit.correlation_id)
                            .push_bind(Json(snapshot))
                            .push_bind(audit.actor);
                    });
                    qb.build().execute(&mut *self.tx).await?;
                }
                if !self.events.is_empty() {
                    if let Some(lock) = $event_order_lock {
                        sqlx::query(lock).execute(&mut *self.tx).await?;
                    }
                    let events = std::mem::take(&mut self.events);
                    bulk::insert_events(&mut self.tx, now, &events).await?;
                }
                self.tx.commit().await?;
                Ok(())
            }
        }

        type Tx = WriteTx;

        pub async fn ping(pool: &Pool<$db>) -> StoreResult<()> {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        }

        fn select_job_sql(suffix: &str) -> AssertSqlSafe<String> {
            AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs {suffix}"))
        }

        async fn fetch_job(tx: &mut Tx, id: &str, lock: &str) -> StoreResult<Option<Job>> {
            let row: Option<JobRow> = sqlx::query_as(select_job_sql(&format!("WHERE id = $1 {lock}")))
                .bind(id)
                .fetch_optional(&mut ***tx)
                .await?;
            row.map(|r| r.into_job(now_micros())).transpose()
        }

        /// Audit row and event row of a change, in the caller's transaction.
        async fn record_change(
            tx: &mut Tx,
            before: Option<JobState>,
            job: &Job,
            change_type: &'static str,
            audit: &AuditContext,
        ) -> StoreResult<()> {
            tx.audits.push((job.id.clone(), change_type, audit.clone(), snapshot(job)));
            let change = JobChange {
                job: Cow::Borrowed(job),
                correlation_id: Cow::Borrowed(&audit.correlation_id),
                previous_state: before,
            };
            tx.append_event(EventKind::of_change(before, job.state), &job.id, &change)
        }

        /// Binds the `jobs` row of `j` in `JOB_COLUMNS` order, as inserted at `now`.
        fn push_job_values(b: &mut sqlx::query_builder::Separated<'_, $db, &'static str>, j: &Job, correlation_id: &str, now: DateTime<Utc>) {
            let s = j.scheduler.clone().unwrap_or_default();
            b.push_bind(j.id.clone())
                .push_bind(j.user.clone())
                .push_bind(Json(j.nodes.clone()))
                .push_bind(j.nodes.len() as i64)
                .push_bind(j.state.as_str())
                .push_bind(j.start_time)
                .push_bind(j.end_time)
                .push_bind(j.state.is_terminal().then(|| Job::runtime_at(j.start_time, j.end_time, now)))
                .push_bind(j.cpu_usage)
                .push_bind(j.memory_usage_mb)
                .push_bind(j.gpu_usage)
                .push_bind(j.requested_cpus)
                .push_bind(j.allocated_cpus)
                .push_bind(j.requested_memory_mb)
                .push_bind(j.allocated_memory_mb)
                .push_bind(j.requested_gpus)
                .push_bind(j.allocated_gpus)
                .push_bind(j.cluster_name.clone())
                .push_bind(j.scheduler_instance.clone())
                .push_bind(j.ingest_version.clone())
                .push_bind(j.last_sample_at)
                .push_bind(j.sample_count)
                .push_bind(j.avg_cpu_usage)
                .push_bind(j.max_cpu_usage)
                .push_bind(j.max_memory_usage_mb)
                .push_bind(j.avg_gpu_usage)
                .push_bind(j.max_gpu_usage)
                .push_bind(s.kind.clone())
                .push_bind(s.external_job_id.clone())
                .push_bind(s.raw_state.clone())
                .push_bind(s.submit_time)
                .push_bind(s.partition.clone())
                .push_bind(s.account.clone())
                .push_bind(s.qos.clone())
                .push_bind(s.priority)
                .push_bind(s.exit_code)
                .push_bind(s.state_reason.clone())
                .push_bind(s.time_limit_minutes)
                .push_bind(s.extra.clone().map(Json))
                .push_bind(j.cgroup_path.clone())
                .push_bind(j.gpu_vendor.map(|v| v.as_str()))
                .push_bind(Json(j.gpu_devices.clone()))
                .push_bind(j.gpu_count)
                .push_bind(j.exit_code)
                .push_bind(j.signal)
                .push_bind(correlation_id.to_owned())
                .push_bind(now)
                .push_bind(now)
                .push_bind(j.memory_usage_bytes)
                .push_bind(j.max_memory_usage_bytes)
                .push_bind((!j.gpus.is_empty()).then(|| Json(j.gpus.clone())))
                .push_bind(s.sluid.clone());
        }

        /// `INSERT ... ON CONFLICT (id) DO NOTHING` of a whole job (its node rows are queued for
        /// commit); the stored job, or `None` when the id was taken.
        async fn insert_job_row(tx: &mut Tx, job: &Job, correlation_id: &str) -> StoreResult<Option<Job>> {
            let now = now_micros();
            let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!("INSERT INTO jobs ({JOB_COLUMNS}) "));
            qb.push_values(std::iter::once(job), |mut b, j| push_job_values(&mut b, j, correlation_id, now));
            qb.push(format!(" ON CONFLICT (id) DO NOTHING RETURNING {JOB_COLUMNS}"));
            let row: Option<JobRow> = qb.build_query_as().fetch_optional(&mut ***tx).await?;
            let Some(row) = row else { return Ok(None) };
            tx.nodes.extend(job.nodes.iter().map(|n| (job.id.clone(), n.clone())));
            Ok(Some(row.into_job(now)?))
        }

        /// Inserts `job` and queues its `create` audit and event rows; `None` when the id exists.
        async fn insert_new_in(tx: &mut Tx, job: &Job, audit: &AuditContext) -> StoreResult<Option<Job>> {
            let Some(stored) = insert_job_row(tx, job, &audit.correlation_id).await? else {
                return Ok(None);
            };
            record_change(tx, None, &stored, "create", audit).await?;
            Ok(Some(stored))
        }

        pub async fn create_job(pool: &Pool<$db>, job: &Job, audit: &AuditContext) -> StoreResult<Job> {
            let mut tx = WriteTx::begin(pool).await?;
            let stored = insert_new_in(&mut tx, job, audit).await?.ok_or(StoreError::AlreadyExists)?;
            tx.commit().await?;
            Ok(stored)
        }

        /// Records the end of a job that was `previous` and is now `updated`.
        async fn finished(tx: &mut Tx, previous: JobState, updated: Job, finish: &Finish, audit: &AuditContext) -> StoreResult<Applied> {
            let audit = match (&updated.correlation_id, finish.inherit_correlation) {
                (Some(stored), true) => AuditContext { correlation_id: stored.clone(), ..audit.clone() },
                _ => audit.clone(),
            };
            record_change(tx, Some(previous), &updated, "update", &audit).await?;
            Ok(Applied::Done(Box::new(updated)))
        }

        /// Moves a job to its terminal state unless it is terminal already: one statement in the
        /// common case (a running job). An end before the start (node clocks disagree) is
        /// recorded as the start.
        async fn finish_in(tx: &mut Tx, id: &str, finish: &Finish, audit: &AuditContext) -> StoreResult<Applied> {
            let update = format!(
                "UPDATE jobs SET state = $2, \
                 end_time = CASE WHEN $3 < start_time THEN start_time ELSE $3 END, \
                 runtime_seconds = {}, exit_code = $4, signal = $5, scheduler_exit_code = $4, \
                 raw_state = COALESCE($6, raw_state), updated_at = $7 \
                 WHERE id = $1 AND state = $8 RETURNING {JOB_COLUMNS}",
                $runtime_until_3
            );
            for previous in [JobState::Running, JobState::Pending] {
                let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(update.clone()))
                    .bind(id)
                    .bind(finish.state.as_str())
                    .bind(finish.end_time)
                    .bind(finish.exit_code)
                    .bind(finish.signal)
                    .bind(finish.raw_state.as_deref())
                    .bind(now_micros())
                    .bind(previous.as_str())
                    .fetch_optional(&mut ***tx)
                    .await?;
                if let Some(row) = row {
                    return finished(tx, previous, row.into_job(now_micros())?, finish, audit).await;
                }
            }
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut ***tx)
                .await?;
            match state {
                None => Err(StoreError::NotFound),
                Some(_) => Ok(Applied::Skipped),
            }
        }

        /// A job-started event for a job that exists: fills in what the stored job lacks (see
        /// `Job::fill_from_start`); `Skipped` when it adds nothing, as for a plain repeat.
        async fn fill_from_start_in(tx: &mut Tx, started: &Job, audit: &AuditContext) -> StoreResult<Applied> {
            let Some(current) = fetch_job(tx, &started.id, $row_lock).await? else {
                return Ok(Applied::Skipped);
            };
            let merged = current.fill_from_start(started);
            if merged == current {
                return Ok(Applied::Skipped);
            }
            let s = merged.scheduler.clone().unwrap_or_default();
            let row: JobRow = sqlx::query_as(AssertSqlSafe(format!(
                "UPDATE jobs SET start_time = $2, runtime_seconds = $3, ingest_version = $4, requested_cpus = $5, \
                 allocated_cpus = $6, requested_memory_mb = $7, allocated_memory_mb = $8, requested_gpus = $9, \
                 allocated_gpus = $10, cgroup_path = $11, gpu_vendor = $12, gpu_devices = $13, gpu_count = $14, \
                 scheduler_type = $15, external_job_id = $16, partition = $17, account = $18, scheduler_extra = $19, \
                 updated_at = $20, sluid = $21 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(&merged.id)
            .bind(merged.start_time)
            .bind(if merged.state.is_terminal() { merged.runtime_seconds } else { None })
            .bind(&merged.ingest_version)
            .bind(merged.requested_cpus)
            .bind(merged.allocated_cpus)
            .bind(merged.requested_memory_mb)
            .bind(merged.allocated_memory_mb)
            .bind(merged.requested_gpus)
            .bind(merged.allocated_gpus)
            .bind(merged.cgroup_path.as_deref())
            .bind(merged.gpu_vendor.map(|v| v.as_str()))
            .bind(Json(&merged.gpu_devices))
            .bind(merged.gpu_count)
            .bind(s.kind.as_deref())
            .bind(s.external_job_id.as_deref())
            .bind(s.partition.as_deref())
            .bind(s.account.as_deref())
            .bind(s.extra.as_ref().map(Json))
            .bind(now_micros())
            .bind(s.sluid.as_deref())
            .fetch_one(&mut ***tx)
            .await?;
            let updated = row.into_job(now_micros())?;
            record_change(tx, Some(current.state), &updated, "update", audit).await?;
            Ok(Applied::Filled(Box::new(updated)))
        }

        /// Applies a batch of lifecycle changes in one transaction (group commit). Each change
        /// gets its own result; a database error aborts the whole batch and is returned instead,
        /// so the caller can retry the changes one by one.
        pub async fn apply_lifecycle(pool: &Pool<$db>, ops: &[LifecycleOp]) -> StoreResult<Vec<StoreResult<Applied>>> {
            let mut tx = WriteTx::begin(pool).await?;
            // Where the backend can, the common ops of the batch are written in one statement
            // (see `lifecycle_batch`); the rest take the one-event path below, in op order.
            let written = lifecycle::prepare(&mut tx.tx, ops, push_job_values, now_micros()).await?;
            let mut results = Vec::with_capacity(ops.len());
            for (op, written) in ops.iter().zip(written) {
                let result = match (op, written) {
                    (LifecycleOp::Start { job, audit }, Some(stored)) => {
                        tx.nodes.extend(job.nodes.iter().map(|n| (job.id.clone(), n.clone())));
                        record_change(&mut tx, None, &stored, "create", audit)
                            .await
                            .map(|()| Applied::Done(Box::new(stored)))
                    }
                    (LifecycleOp::Finish { finish, audit, .. }, Some(updated)) => {
                        finished(&mut tx, JobState::Running, updated, finish, audit).await
                    }
                    (LifecycleOp::Start { job, audit }, None) => match insert_new_in(&mut tx, job, audit).await {
                        Ok(Some(stored)) => Ok(Applied::Done(Box::new(stored))),
                        Ok(None) => fill_from_start_in(&mut tx, job, audit).await,
                        Err(err) => Err(err),
                    },
                    (LifecycleOp::Finish { id, finish, audit }, None) => finish_in(&mut tx, id, finish, audit).await,
                };
                match result {
                    Err(StoreError::Database(err)) => return Err(StoreError::Database(err)),
                    other => results.push(other),
                }
            }
            tx.commit_batch().await?;
            Ok(results)
        }

        pub async fn update_job(pool: &Pool<$db>, id: &str, patch: &JobPatch, audit: &AuditContext) -> StoreResult<Job> {
            let mut tx = WriteTx::begin(pool).await?;
            let current = fetch_job(&mut tx, id, $row_lock)
                .await?
                .ok_or(StoreError::NotFound)?;
            if current.state.is_terminal() {
                return Err(StoreError::Terminal);
            }
            let next = patch.state.unwrap_or(current.state);
            if !current.state.can_move_to(next) {
                return Err(StoreError::InvalidTransition { from: current.state, to: next });
            }
            let now = now_micros();
            let (end_time, runtime) = if next.is_terminal() {
                (Some(now), Some(Job::runtime_at(current.start_time, Some(now), now)))
            } else {
                (None, None)
            };
            let row: JobRow = sqlx::query_as(AssertSqlSafe(format!(
                "UPDATE jobs SET state = $2, cpu_usage = COALESCE($3, cpu_usage), \
                 memory_usage_mb = COALESCE($4, memory_usage_mb), gpu_usage = COALESCE($5, gpu_usage), \
                 end_time = $6, runtime_seconds = $7, updated_at = $8 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(id)
            .bind(next.as_str())
            .bind(patch.cpu_usage)
            .bind(patch.memory_usage_mb)
            .bind(patch.gpu_usage)
            .bind(end_time)
            .bind(runtime)
            .bind(now)
            .fetch_one(&mut **tx)
            .await?;
            let updated = row.into_job(now_micros())?;
            record_change(&mut tx, Some(current.state), &updated, "update", audit).await?;
            tx.commit().await?;
            Ok(updated)
        }

        /// The scheduler's word on a job's end (the slurmrestd reconciler): finishes a job still
        /// running, and corrects the state, exit code, signal and raw state of one an epilog
        /// already finished (a cancelled or timed-out job looks like a success to the epilog).
        /// `Skipped` when the job already says the same; the end time an epilog recorded is kept.
        pub async fn confirm_final(pool: &Pool<$db>, id: &str, finish: &Finish, audit: &AuditContext) -> StoreResult<Applied> {
            let mut tx = WriteTx::begin(pool).await?;
            let current = fetch_job(&mut tx, id, $row_lock)
                .await?
                .ok_or(StoreError::NotFound)?;
            if !current.state.is_terminal() {
                let applied = finish_in(&mut tx, id, finish, audit).await?;
                tx.commit().await?;
                return Ok(applied);
            }
            let raw = current.scheduler.as_ref().and_then(|s| s.raw_state.clone());
            if current.state == finish.state
                && current.exit_code == finish.exit_code
                && current.signal == finish.signal
                && (finish.raw_state.is_none() || raw == finish.raw_state)
            {
                return Ok(Applied::Skipped);
            }
            let row: JobRow = sqlx::query_as(AssertSqlSafe(format!(
                "UPDATE jobs SET state = $2, exit_code = $3, signal = $4, scheduler_exit_code = $3, \
                 raw_state = COALESCE($5, raw_state), updated_at = $6 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(id)
            .bind(finish.state.as_str())
            .bind(finish.exit_code)
            .bind(finish.signal)
            .bind(finish.raw_state.as_deref())
            .bind(now_micros())
            .fetch_one(&mut **tx)
            .await?;
            let updated = row.into_job(now_micros())?;
            record_change(&mut tx, Some(current.state), &updated, "update", audit).await?;
            tx.commit().await?;
            Ok(Applied::Done(Box::new(updated)))
        }

        pub async fn delete_job(pool: &Pool<$db>, id: &str, audit: &AuditContext) -> StoreResult<()> {
            let mut tx = WriteTx::begin(pool).await?;
            let current = fetch_job(&mut tx, id, $row_lock)
                .await?
                .ok_or(StoreError::NotFound)?;
            // What the log's sample events of this job read of it from now on (after the row
            // lock: every sample event of the job was logged before this instant).
            sqlx::query(
                "INSERT INTO deleted_jobs (job_id, deleted_at, user_name, nodes, partition, correlation_id) \
                 SELECT id, $2, user_name, nodes, partition, correlation_id FROM jobs WHERE id = $1",
            )
            .bind(id)
            .bind(now_micros())
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id).execute(&mut **tx).await?;
            // Samples are not tied to their job by a foreign key on PostgreSQL (migration 0007).
            // A batch storing samples of this job either updated its row first, so this deletion
            // waited for it and sees its samples now, or finds the row gone at its update and
            // removes the samples itself (`ingest_samples`).
            sqlx::query("DELETE FROM metric_samples WHERE job_id = $1").bind(id).execute(&mut **tx).await?;
            tx.audits.push((id.to_owned(), "delete", audit.clone(), snapshot(&current)));
            let change = JobChange { job: Cow::Borrowed(&current), correlation_id: Cow::Borrowed(&audit.correlation_id), previous_state: None };
            tx.append_event(EventKind::JobDeleted, id, &change)?;
            tx.commit().await?;
            Ok(())
        }

        pub async fn get_job(pool: &Pool<$db>, id: &str) -> StoreResult<Job> {
            let row: Option<JobRow> = sqlx::query_as(select_job_sql("WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.ok_or(StoreError::NotFound)?.into_job(now_micros())
        }

        fn push_job_filter(qb: &mut QueryBuilder<$db>, filter: &JobFilter) {
            qb.push(" WHERE 1 = 1");
            if let Some(state) = filter.state {
                qb.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(user) = &filter.user {
                qb.push(" AND user_name = ").push_bind(user.clone());
            }
            if let Some(node) = &filter.node {
                qb.push(" AND id IN (SELECT job_id FROM job_nodes WHERE node = ")
                    .push_bind(node.clone())
                    .push(")");
            }
            if let Some(partition) = &filter.partition {
                qb.push(" AND partition = ").push_bind(partition.clone());
            }
        }

        pub async fn list_jobs(pool: &Pool<$db>, filter: &JobFilter) -> StoreResult<(Vec<Job>, i64)> {
            let mut count: QueryBuilder<$db> = QueryBuilder::new("SELECT COUNT(*) FROM jobs");
            push_job_filter(&mut count, filter);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

            let mut page: QueryBuilder<$db> = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs"));
            push_job_filter(&mut page, filter);
            let column = filter.sort.column();
            let direction = if filter.ascending { "ASC" } else { "DESC" };
            page.push(format!(" ORDER BY ({column} IS NULL) ASC, {column} {direction}, id ASC LIMIT "))
                .push_bind(filter.limit)
                .push(" OFFSET ")
                .push_bind(filter.offset);
            let rows: Vec<JobRow> = page.build_query_as().fetch_all(pool).await?;
            let now = now_micros();
            let jobs = rows.into_iter().map(|r| r.into_job(now)).collect::<StoreResult<Vec<_>>>()?;
            Ok((jobs, total))
        }

        /// Stores a batch of samples in one transaction: one batch insert of the samples, one
        /// batch `UPDATE` of every job's current values and aggregates (computed in SQL from the
        /// stored sums, never from a stale copy), the node's row, and one event per accepted
        /// sample (the batch statements are the backend's, see `bulk.rs`). Items are accepted or rejected one by one; a rejection never fails
        /// the batch.
        pub async fn ingest_samples(
            pool: &Pool<$db>,
            items: &[SampleItem],
            node: Option<&NodeReport>,
            policy: LatePolicy,
        ) -> StoreResult<IngestOutcome> {
            let mut tx = WriteTx::begin(pool).await?;
            let mut ids: Vec<&str> = items.iter().map(|i| i.job_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let jobs: std::collections::HashMap<String, SampledJob> = bulk::select_jobs(&mut tx, &ids)
                .await?
                .into_iter()
                .map(|row| row.into_sampled())
                .collect::<StoreResult<_>>()?;

            let mut outcome = IngestOutcome::default();
            let mut accepted: Vec<&SampleItem> = Vec::with_capacity(items.len());
            let mut accepted_index: Vec<usize> = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let verdict = match jobs.get(&item.job_id) {
                    None => Err(SampleRejection::UnknownJob),
                    Some(job) => job.accepts(item.sample.timestamp, policy),
                };
                match verdict {
                    Ok(()) => {
                        accepted.push(item);
                        accepted_index.push(index);
                    }
                    Err(reason) => outcome.rejected.push((index, reason)),
                }
            }

            // A batch sent again (the agent timed out waiting for an answer the server did send)
            // inserts nothing twice: (job, time, node) is unique, and only the rows really
            // inserted count in the aggregates and the events.
            let ids = bulk::insert_samples(&mut tx, &accepted).await?;
            let mut stored: Vec<(usize, &SampleItem, i64)> = Vec::with_capacity(accepted.len());
            for ((item, index), id) in accepted.iter().zip(accepted_index).zip(ids) {
                match id {
                    Some(id) => stored.push((index, *item, id)),
                    None => outcome.duplicates += 1,
                }
            }

            // The UPDATE locks each job's row until the batch commits: from then on, deleting
            // one of these jobs waits for the batch, then deletes the samples it stored. A job
            // deleted between the lookup above and the UPDATE is missing from the rows the
            // UPDATE returns; its samples just stored are removed again, and rejected as of an
            // unknown job.
            // Rows are updated in job id order, whatever the order of the batch, so that two
            // nodes' batches sharing multi-node jobs lock those rows in the same order and wait
            // for each other rather than deadlock (the plan of a batch's UPDATE, a nested loop
            // over its rows, locks them in the order given).
            let mut deltas = JobDelta::of(stored.iter().map(|&(_, item, id)| (item, id)));
            deltas.sort_unstable_by(|a, b| a.job_id.cmp(b.job_id));
            let updated: std::collections::HashSet<String> =
                bulk::update_jobs(&mut tx, &deltas).await?.into_iter().collect();
            if updated.len() < deltas.len() {
                let (kept, gone): (Vec<_>, Vec<_>) =
                    stored.into_iter().partition(|(_, item, _)| updated.contains(&item.job_id));
                delete_samples(&mut tx, gone.iter().map(|&(_, _, id)| id)).await?;
                outcome
                    .rejected
                    .extend(gone.iter().map(|&(index, _, _)| (index, SampleRejection::UnknownJob)));
                outcome.rejected.sort_unstable_by_key(|&(index, _)| index);
                stored = kept;
            }
            outcome.accepted = stored.len();
            // A multi-node job's figures are the whole job's (see `node_figures.rs`).
            let shares = crate::store::node_figures::shares(
                stored.iter().map(|&(_, item, _)| item),
                |id| jobs.get(id).map(|j| j.nodes.as_slice()),
            );
            bulk::keep_node_figures(&mut tx, &shares).await?;

            for &(_, item, sample_id) in &stored {
                let Some(job) = jobs.get(&item.job_id) else { continue };
                tx.append_sample_event(&item.job_id, job.state, sample_id)?;
            }

            if let Some(report) = node {
                if let Some(node) = upsert_node_report(&mut tx, report).await? {
                    tx.append_other_event(EventKind::NodeUpdated, &NodeChange { node: Cow::Borrowed(&node) })?;
                }
            }
            tx.commit().await?;
            Ok(outcome)
        }

        /// Deletes the sample rows of `ids`.
        async fn delete_samples(tx: &mut Tx, ids: impl Iterator<Item = i64>) -> StoreResult<()> {
            let ids: Vec<i64> = ids.collect();
            for chunk in ids.chunks(500) {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new("DELETE FROM metric_samples WHERE id IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(&mut ***tx).await?;
            }
            Ok(())
        }

        /// Writes an agent's node figures unless a newer report is already stored (a spooled
        /// batch arriving late); the node as it is now, or `None` when nothing changed.
        async fn upsert_node_report(tx: &mut Tx, r: &NodeReport) -> StoreResult<Option<crate::domain::Node>> {
            let now = now_micros();
            let row: Option<NodeRow> = sqlx::query_as(AssertSqlSafe(format!(
                "INSERT INTO nodes (name, cpus, memory_total_bytes, cpu_usage_percent, memory_used_bytes, \
                   load_1, load_5, load_15, gpus, report_interval_seconds, last_report_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                 ON CONFLICT (name) DO UPDATE SET \
                   cpus = COALESCE(excluded.cpus, nodes.cpus), \
                   memory_total_bytes = excluded.memory_total_bytes, \
                   cpu_usage_percent = excluded.cpu_usage_percent, \
                   memory_used_bytes = excluded.memory_used_bytes, \
                   load_1 = excluded.load_1, load_5 = excluded.load_5, load_15 = excluded.load_15, \
                   gpus = excluded.gpus, \
                   report_interval_seconds = excluded.report_interval_seconds, \
                   last_report_at = excluded.last_report_at, \
                   updated_at = excluded.updated_at \
                 WHERE nodes.last_report_at IS NULL OR excluded.last_report_at >= nodes.last_report_at \
                 RETURNING {NODE_COLUMNS}, CAST(0 AS BIGINT) AS running_jobs"
            )))
            .bind(&r.name)
            .bind(r.cpus)
            .bind(r.memory_total_bytes)
            .bind(r.cpu_usage_percent)
            .bind(r.memory_used_bytes)
            .bind(r.load_1)
            .bind(r.load_5)
            .bind(r.load_15)
            .bind(Json(&r.gpus))
            .bind(r.interval_seconds)
            .bind(r.reported_at)
            .bind(now)
            .fetch_optional(&mut ***tx)
            .await?;
            let Some(mut row) = row else { return Ok(None) };
            row.running_jobs = sqlx::query_scalar(
                "SELECT COUNT(*) FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id WHERE jn.node = $1 AND j.state = 'running'",
            )
            .bind(&r.name)
            .fetch_one(&mut ***tx)
            .await?;
            Ok(Some(row.into_node(now)?))
        }

        /// The scheduler's view of nodes, upserted by name in one transaction (see
        /// `scheduler_merge` for which columns it owns); one `node_updated` event per node that
        /// changed. Returns how many changed.
        pub async fn update_nodes_from_scheduler(
            pool: &Pool<$db>,
            nodes: &[crate::store::SchedulerNode],
        ) -> StoreResult<usize> {
            if nodes.is_empty() {
                return Ok(0);
            }
            let now = now_micros();
            let mut tx = WriteTx::begin(pool).await?;
            let mut current: std::collections::HashMap<String, NodeRow> = std::collections::HashMap::new();
            for chunk in nodes.chunks(500) {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT {NODE_COLUMNS}, CAST(0 AS BIGINT) AS running_jobs FROM nodes WHERE name IN ("
                ));
                let mut list = qb.separated(", ");
                for n in chunk {
                    list.push_bind(n.name.clone());
                }
                qb.push(") ").push($row_lock);
                let rows: Vec<NodeRow> = qb.build_query_as().fetch_all(&mut **tx).await?;
                current.extend(rows.into_iter().map(|r| (r.name.clone(), r)));
            }
            let mut changed = 0;
            for n in nodes {
                let Some(row) = crate::store::queries::scheduler_merge(current.get(&n.name), n, now) else {
                    continue;
                };
                let stored: NodeRow = sqlx::query_as(AssertSqlSafe(format!(
                    "INSERT INTO nodes (name, state, state_reason, partitions, features, cpus, memory_total_bytes, \
                       load_1, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                     ON CONFLICT (name) DO UPDATE SET \
                       state = excluded.state, state_reason = excluded.state_reason, \
                       partitions = excluded.partitions, features = excluded.features, cpus = excluded.cpus, \
                       memory_total_bytes = excluded.memory_total_bytes, load_1 = excluded.load_1, \
                       updated_at = excluded.updated_at \
                     RETURNING {NODE_COLUMNS}, CAST(0 AS BIGINT) AS running_jobs"
                )))
                .bind(&row.name)
                .bind(&row.state)
                .bind(&row.state_reason)
                .bind(&row.partitions)
                .bind(&row.features)
                .bind(row.cpus)
                .bind(row.memory_total_bytes)
                .bind(row.load_1)
                .bind(now)
                .fetch_one(&mut **tx)
                .await?;
                // Only for the event: who watches a node wants its job count too.
                let mut stored = stored;
                stored.running_jobs = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id WHERE jn.node = $1 AND j.state = 'running'",
                )
                .bind(&n.name)
                .fetch_one(&mut **tx)
                .await?;
                let node = stored.into_node(now)?;
                tx.append_other_event(EventKind::NodeUpdated, &NodeChange { node: Cow::Borrowed(&node) })?;
                changed += 1;
            }
            changed += release_unlisted_nodes(&mut tx, nodes, now).await?;
            tx.commit().await?;
            Ok(changed)
        }

        /// Nodes the scheduler spoke for (a stored state) but no longer lists (taken out of
        /// `slurm.conf`): the scheduler's state, reason and partitions are dropped, so the node
        /// shows what its agent says, or `unknown` once the agent is silent too. An empty list
        /// releases nothing: it is more likely a restricted view than a cluster without nodes.
        async fn release_unlisted_nodes(
            tx: &mut WriteTx,
            listed: &[crate::store::SchedulerNode],
            now: DateTime<Utc>,
        ) -> StoreResult<usize> {
            if listed.is_empty() {
                return Ok(0);
            }
            let listed: std::collections::HashSet<&str> = listed.iter().map(|n| n.name.as_str()).collect();
            let owned: Vec<String> = sqlx::query_scalar("SELECT name FROM nodes WHERE state IS NOT NULL ORDER BY name")
                .fetch_all(&mut ***tx)
                .await?;
            let mut released = 0;
            for name in owned.iter().filter(|n| !listed.contains(n.as_str())) {
                let row: NodeRow = sqlx::query_as(AssertSqlSafe(format!(
                    "UPDATE nodes SET state = NULL, state_reason = NULL, partitions = $2, features = $2, updated_at = $3 \
                     WHERE name = $1 RETURNING {NODE_COLUMNS}, {RUNNING_JOBS_OF_NODE}"
                )))
                .bind(name)
                .bind(Json(Vec::<String>::new()))
                .bind(now)
                .fetch_one(&mut ***tx)
                .await?;
                let node = row.into_node(now)?;
                tracing::info!(node = %name, "Slurm no longer lists this node; its state now comes from its agent");
                tx.append_other_event(EventKind::NodeUpdated, &NodeChange { node: Cow::Borrowed(&node) })?;
                released += 1;
            }
            Ok(released)
        }

        /// Every node, by name, with its running job count.
        pub async fn list_nodes(pool: &Pool<$db>) -> StoreResult<Vec<crate::domain::Node>> {
            let now = now_micros();
            let rows: Vec<NodeRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {NODE_COLUMNS}, {RUNNING_JOBS_OF_NODE} FROM nodes ORDER BY name"
            )))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| r.into_node(now)).collect()
        }

        pub async fn get_node(pool: &Pool<$db>, name: &str) -> StoreResult<Option<crate::domain::Node>> {
            let now = now_micros();
            let row: Option<NodeRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {NODE_COLUMNS}, {RUNNING_JOBS_OF_NODE} FROM nodes WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?;
            row.map(|r| r.into_node(now)).transpose()
        }

        /// Makes the stored partitions what the scheduler lists: inserts and updates those that
        /// changed (one `partition_updated` event each) and deletes those it no longer lists
        /// (one `partition_deleted` event each, with the partition as it was). An empty list
        /// deletes nothing: it is more likely a restricted view than a cluster without queues.
        /// Returns (changed, deleted).
        pub async fn sync_partitions(
            pool: &Pool<$db>,
            partitions: &[crate::domain::Partition],
        ) -> StoreResult<(usize, usize)> {
            let now = now_micros();
            let mut tx = WriteTx::begin(pool).await?;
            let rows: Vec<PartitionRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PARTITION_COLUMNS} FROM partitions ORDER BY name {}",
                $row_lock
            )))
            .fetch_all(&mut **tx)
            .await?;
            let mut current = std::collections::BTreeMap::new();
            for row in rows {
                let p = row.into_partition()?;
                current.insert(p.name.clone(), p);
            }
            let mut changed = 0;
            for p in partitions {
                if current.get(&p.name).is_some_and(|c| !c.differs_from(p)) {
                    continue;
                }
                let mut stored = p.clone();
                stored.updated_at = now;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO partitions ({PARTITION_COLUMNS}, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                     ON CONFLICT (name) DO UPDATE SET \
                       state = excluded.state, is_default = excluded.is_default, nodes = excluded.nodes, \
                       total_nodes = excluded.total_nodes, total_cpus = excluded.total_cpus, \
                       max_time_minutes = excluded.max_time_minutes, \
                       default_time_minutes = excluded.default_time_minutes, \
                       max_nodes_per_job = excluded.max_nodes_per_job, \
                       jobs_running = excluded.jobs_running, jobs_pending = excluded.jobs_pending, \
                       updated_at = excluded.updated_at"
                )))
                .bind(&stored.name)
                .bind(stored.state.as_str())
                .bind(stored.is_default)
                .bind(Json(&stored.nodes))
                .bind(stored.total_nodes)
                .bind(stored.total_cpus)
                .bind(stored.limits.max_time_minutes)
                .bind(stored.limits.default_time_minutes)
                .bind(stored.limits.max_nodes_per_job)
                .bind(stored.jobs_running)
                .bind(stored.jobs_pending)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                current.insert(stored.name.clone(), stored.clone());
                tx.append_other_event(EventKind::PartitionUpdated, &PartitionChange { partition: Cow::Borrowed(&stored) })?;
                changed += 1;
            }
            let mut deleted = 0;
            if !partitions.is_empty() {
                let listed: std::collections::HashSet<&str> =
                    partitions.iter().map(|p| p.name.as_str()).collect();
                for (name, gone) in &current {
                    if listed.contains(name.as_str()) {
                        continue;
                    }
                    sqlx::query("DELETE FROM partitions WHERE name = $1")
                        .bind(name)
                        .execute(&mut **tx)
                        .await?;
                    tx.append_other_event(EventKind::PartitionDeleted, &PartitionChange { partition: Cow::Borrowed(gone) })?;
                    deleted += 1;
                }
            }
            tx.commit().await?;
            Ok((changed, deleted))
        }

        /// Every partition, by name.
        pub async fn list_partitions(pool: &Pool<$db>) -> StoreResult<Vec<crate::domain::Partition>> {
            let rows: Vec<PartitionRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PARTITION_COLUMNS} FROM partitions ORDER BY name"
            )))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(PartitionRow::into_partition).collect()
        }

        pub async fn get_partition(pool: &Pool<$db>, name: &str) -> StoreResult<Option<crate::domain::Partition>> {
            let row: Option<PartitionRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PARTITION_COLUMNS} FROM partitions WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?;
            row.map(PartitionRow::into_partition).transpose()
        }

        fn push_sample_range(qb: &mut QueryBuilder<$db>, id: &str, query: &SampleQuery) {
            qb.push(" WHERE job_id = ").push_bind(id.to_owned());
            if let Some(start) = query.start {
                qb.push(" AND timestamp >= ").push_bind(start);
            }
            if let Some(end) = query.end {
                qb.push(" AND timestamp <= ").push_bind(end);
            }
        }

        pub async fn list_samples(pool: &Pool<$db>, id: &str, query: &SampleQuery) -> StoreResult<(Vec<MetricSample>, i64)> {
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
            if exists == 0 {
                return Err(StoreError::NotFound);
            }
            let mut count: QueryBuilder<$db> = QueryBuilder::new("SELECT COUNT(*) FROM metric_samples");
            push_sample_range(&mut count, id, query);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

            let mut page: QueryBuilder<$db> =
                QueryBuilder::new(format!("SELECT {SAMPLE_COLUMNS} FROM metric_samples"));
            push_sample_range(&mut page, id, query);
            page.push(" ORDER BY timestamp DESC, id DESC LIMIT ").push_bind(query.limit);
            let rows: Vec<SampleRow> = page.build_query_as().fetch_all(pool).await?;
            let samples = rows.into_iter().map(MetricSample::from).collect();
            Ok((samples, total))
        }

        pub async fn audit_trail(pool: &Pool<$db>, id: &str) -> StoreResult<Vec<AuditEvent>> {
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, job_id, change_type, changed_at, changed_by, source, correlation_id, job_snapshot, actor \
                 FROM job_audit_events WHERE job_id = $1 ORDER BY id ASC",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            if rows.is_empty() {
                get_job(pool, id).await?;
            }
            Ok(rows.into_iter().map(AuditEvent::from).collect())
        }

        pub async fn prune(pool: &Pool<$db>, before: DateTime<Utc>) -> StoreResult<(u64, u64)> {
            let samples = sqlx::query("DELETE FROM metric_samples WHERE timestamp < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected();
            let events = sqlx::query("DELETE FROM events WHERE occurred_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected();
            // Deleted jobs whose events are all gone now.
            sqlx::query("DELETE FROM deleted_jobs WHERE deleted_at < $1")
                .bind(before)
                .execute(pool)
                .await?;
            Ok((samples, events))
        }

        pub async fn seed_job(pool: &Pool<$db>, job: &Job, samples: &[MetricSample], audit: &AuditContext) -> StoreResult<bool> {
            let mut tx = WriteTx::begin(pool).await?;
            if insert_job_row(&mut tx, job, &audit.correlation_id).await?.is_none() {
                return Ok(false);
            }
            // Sums behind the averages, so later samples keep the averages exact.
            let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu_usage).collect();
            let gpu: Vec<f64> = samples.iter().filter_map(|s| s.gpu_usage).collect();
            sqlx::query(
                "UPDATE jobs SET cpu_usage_sum = $2, cpu_sample_count = $3, gpu_usage_sum = $4, gpu_sample_count = $5 WHERE id = $1",
            )
                .bind(&job.id)
                .bind(cpu.iter().sum::<f64>())
                .bind(cpu.len() as i64)
                .bind(gpu.iter().sum::<f64>())
                .bind(gpu.len() as i64)
                .execute(&mut **tx)
                .await?;
            for chunk in samples.chunks(500) {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                    "INSERT INTO metric_samples (job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage) ",
                );
                qb.push_values(chunk, |mut b, s| {
                    b.push_bind(job.id.clone())
                        .push_bind(s.timestamp)
                        .push_bind(s.cpu_usage)
                        .push_bind(s.memory_usage_mb)
                        .push_bind(s.gpu_usage);
                });
                qb.build().execute(&mut **tx).await?;
            }
            let stored = fetch_job(&mut tx, &job.id, "").await?.ok_or(StoreError::NotFound)?;
            record_change(&mut tx, None, &stored, "create", audit).await?;
            tx.commit().await?;
            Ok(true)
        }

        pub async fn correlation_of(pool: &Pool<$db>, id: &str) -> StoreResult<Option<String>> {
            Ok(sqlx::query_scalar("SELECT correlation_id FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?)
        }

        pub async fn job_counts(pool: &Pool<$db>) -> StoreResult<(std::collections::BTreeMap<String, i64>, i64)> {
            let rows = sqlx::query(
                "SELECT state, COUNT(*) AS n, \
                 CAST(COALESCE(SUM(CASE WHEN state = 'running' THEN COALESCE(gpu_count, 0) ELSE 0 END), 0) AS BIGINT) AS gpus \
                 FROM jobs GROUP BY state",
            )
            .fetch_all(pool)
            .await?;
            let mut counts: std::collections::BTreeMap<String, i64> =
                JobState::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
            let mut gpus = 0;
            for row in rows {
                let state: String = row.try_get("state")?;
                counts.insert(state, row.try_get("n")?);
                gpus += row.try_get::<i64, _>("gpus")?;
            }
            Ok((counts, gpus))
        }

        /// Log rows after `after`, oldest first. A `job_sample` row that refers to its stored
        /// sample gets it back as `sample` (rows from before migration 0008 carry it inline);
        /// `sample` is `null` when the sample is gone (its job deleted, or the sample pruned
        /// first), so the log still tells every change in order.
        /// A stored `job_sample` payload (`StoredJobSample`) with its job's summary added back
        /// from the row's `summary_*` columns; `None` when the log knows no such job.
        fn expand_job_sample(r: &<$db as sqlx::Database>::Row, stored: &serde_json::Value) -> StoreResult<Option<serde_json::Value>> {
            let decode = |e: serde_json::Error| StoreError::Database(sqlx::Error::Decode(e.into()));
            let crate::domain::event::StoredJobSample { state } = serde_json::from_value(stored.clone()).map_err(decode)?;
            let job_id: Option<String> = r.try_get("event_job_id")?;
            let user: Option<String> = r.try_get("summary_user")?;
            let (Some(job_id), Some(user)) = (job_id, user) else {
                return Ok(None);
            };
            let Json(nodes): Json<Vec<String>> = r.try_get("summary_nodes")?;
            let partition: Option<String> = r.try_get("summary_partition")?;
            let correlation_id: String = r.try_get("summary_correlation_id")?;
            let payload = crate::store::queries::job_sample_payload(&job_id, state, &user, &nodes, partition.as_deref(), &correlation_id);
            serde_json::to_value(&payload).map(Some).map_err(decode)
        }

        pub async fn events_after(pool: &Pool<$db>, after: i64, limit: i64) -> StoreResult<Vec<crate::store::StoredEvent>> {
            let rows = sqlx::query(events_after_sql())
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut events = Vec::with_capacity(rows.len());
            for r in &rows {
                let Json(mut payload): Json<serde_json::Value> = r.try_get("event_payload")?;
                let kind: String = r.try_get("event_kind")?;
                // A row in the stored form is `{"state": ...}` alone; older rows (and foreign
                // ones) are read as they are.
                let stored_form = payload.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("state"));
                if kind == EventKind::JobSample.as_str() && stored_form {
                    match expand_job_sample(r, &payload)? {
                        Some(expanded) => payload = expanded,
                        None => {
                            let id: i64 = r.try_get("event_id")?;
                            tracing::warn!(id, "skipped a job_sample event whose job is unknown");
                            continue;
                        }
                    }
                }
                let referred: Option<i64> = r.try_get("event_sample_id")?;
                let mut missing_sample = None;
                if referred.is_some() {
                    // A sample of another job is not this event's (ids are never reused on either
                    // backend; this only keeps a damaged log from showing another job's figures).
                    let sample_job: Option<String> = r.try_get("job_id")?;
                    let event_job: Option<String> = r.try_get("event_job_id")?;
                    let stored: Option<i64> = r.try_get("stored_sample_id")?;
                    let sample = match stored {
                        Some(_) if sample_job == event_job => serde_json::to_value(MetricSample::from(SampleRow::from_row(r)?))
                            .map_err(|e| StoreError::Database(sqlx::Error::Decode(e.into())))?,
                        Some(_) => serde_json::Value::Null,
                        // Packed since (`store::sample_packs`), or gone with its job.
                        None => {
                            missing_sample = referred;
                            serde_json::Value::Null
                        }
                    };
                    if let serde_json::Value::Object(fields) = &mut payload {
                        fields.insert("sample".to_owned(), sample);
                    }
                }
                let id: i64 = r.try_get("event_id")?;
                // Only the kinds of `EventKind` were ever logged; a row of another kind (a
                // hand-made or foreign one) is no event of ours, and skipped.
                let Ok(kind) = kind.parse::<EventKind>() else {
                    tracing::warn!(id, kind = %kind, "skipped an event-log row of an unknown kind");
                    continue;
                };
                events.push(crate::store::StoredEvent {
                    id,
                    occurred_at: r.try_get("event_at")?,
                    kind,
                    job_id: r.try_get("event_job_id")?,
                    payload,
                    missing_sample,
                });
            }
            Ok(events)
        }

        pub async fn last_event_id(pool: &Pool<$db>) -> StoreResult<i64> {
            let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events").fetch_one(pool).await?;
            Ok(id.unwrap_or(0))
        }

        /// Appends the `job_report` event of job `id` (`payload` made by the caller from the
        /// job and its report) unless the job is gone or not finished, or already has one
        /// logged since `since`; `true` when appended. The job's row is locked, so a deletion
        /// either comes first (no report) or after (its `job_deleted` follows the report).
        pub async fn append_job_report(
            pool: &Pool<$db>,
            id: &str,
            since: DateTime<Utc>,
            payload: &JobReport<'_>,
        ) -> StoreResult<bool> {
            let mut tx = WriteTx::begin(pool).await?;
            let Some(job) = fetch_job(&mut tx, id, $row_lock).await? else {
                return Ok(false);
            };
            if !job.state.is_terminal() {
                return Ok(false);
            }
            let logged: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM events WHERE kind = $1 AND job_id = $2 AND occurred_at >= $3 LIMIT 1",
            )
            .bind(EventKind::JobReport.as_str())
            .bind(id)
            .bind(since)
            .fetch_optional(&mut **tx)
            .await?;
            if logged.is_some() {
                return Ok(false);
            }
            tx.append_event(EventKind::JobReport, id, payload)?;
            tx.commit().await?;
            Ok(true)
        }

        /// Jobs that ended at or after `since` and have no `job_report` logged since then,
        /// oldest end first, at most `limit` (the reports a restart may have missed).
        pub async fn jobs_missing_report(
            pool: &Pool<$db>,
            since: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT id, end_time FROM jobs WHERE end_time IS NOT NULL AND end_time >= $1 \
                 AND id NOT IN (SELECT job_id FROM events WHERE kind = $2 AND occurred_at >= $1 \
                 AND job_id IS NOT NULL) ORDER BY end_time LIMIT $3",
            )
            .bind(since)
            .bind(EventKind::JobReport.as_str())
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows)
        }
    };
}

pub(crate) use store_queries;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::JobChange;
    use serde_json::json;

    /// The stored part of a `job_sample` payload: everything the stream documents but the
    /// sample, which reading the log adds from the row the event refers to (tested end to end
    /// in tests/samples.rs).
    #[test]
    fn job_sample_payload_keeps_its_wire_shape() {
        let nodes = vec!["n1".to_owned(), "n2".to_owned()];
        let payload = job_sample_payload("j-1", JobState::Running, "alice", &nodes, None, "c-1");
        let text = to_json(&payload).unwrap();
        let got: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want = json!({
            "job_id": "j-1",
            "job": {
                "id": "j-1",
                "user": "alice",
                "state": "running",
                "nodes": ["n1", "n2"],
                "scheduler": { "partition": null },
            },
            "correlation_id": "c-1",
        });
        assert_eq!(got, want);
    }

    /// A job change carries `previous_state` only when there was one.
    #[test]
    fn job_change_payload_has_previous_state_only_after_a_change() {
        let job = Job::new(
            "j-1".into(),
            "alice".into(),
            vec!["n1".into()],
            JobState::Running,
            "2026-11-29T23:00:00Z".parse().unwrap(),
            "c",
            "slurm",
            "prolog-v1",
        );
        let created = JobChange {
            job: Cow::Borrowed(&job),
            correlation_id: Cow::Borrowed("c-1"),
            previous_state: None,
        };
        let got: serde_json::Value = serde_json::from_str(&to_json(&created).unwrap()).unwrap();
        assert_eq!(
            got,
            json!({ "job": snapshot(&job), "correlation_id": "c-1" })
        );
        let updated = JobChange {
            previous_state: Some(JobState::Pending),
            ..created
        };
        let got: serde_json::Value = serde_json::from_str(&to_json(&updated).unwrap()).unwrap();
        assert_eq!(got["previous_state"], "pending");
        assert_eq!(got["job"], snapshot(&job));
    }
}
