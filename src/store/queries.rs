//! The SQL of every store operation, written once and compiled for each backend.
//!
//! `store_queries!(Db, BEGIN_WRITE, EVENT_ORDER_LOCK, ROW_LOCK)` expands to a set of functions
//! over a concrete `sqlx::Pool<Db>`. Both backends accept `$N` placeholders, `ON CONFLICT`,
//! `RETURNING` and `CAST(x AS DOUBLE PRECISION)`, so one text serves both; the arguments carry
//! what does differ: the statement that opens a write transaction, an optional statement run just
//! before an event row is appended (PostgreSQL takes a transaction lock there so event ids are
//! handed out in commit order even with several `serve` replicas), the row-lock clause of a
//! read-then-write (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE` already holds the write lock), and
//! the expression for the seconds from `start_time` to the timestamp parameter `$3`.

use crate::domain::{AuditEvent, GpuVendor, Job, JobState, SchedulerInfo};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// Columns of `jobs` in the order `JobRow` and the insert statement use.
pub(crate) const JOB_COLUMNS: &str = "id, user_name, nodes, node_count, state, start_time, end_time, \
    runtime_seconds, cpu_usage, memory_usage_mb, gpu_usage, requested_cpus, allocated_cpus, \
    requested_memory_mb, allocated_memory_mb, requested_gpus, allocated_gpus, cluster_name, \
    scheduler_instance, ingest_version, last_sample_at, sample_count, avg_cpu_usage, max_cpu_usage, \
    max_memory_usage_mb, avg_gpu_usage, max_gpu_usage, scheduler_type, external_job_id, raw_state, \
    submit_time, partition, account, qos, priority, scheduler_exit_code, state_reason, \
    time_limit_minutes, scheduler_extra, cgroup_path, gpu_vendor, gpu_devices, gpu_count, exit_code, \
    signal, correlation_id, created_at, updated_at, sluid";

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
        }
    }
}

/// Kinds of rows in the event log.
pub(crate) mod event_kind {
    pub const JOB_CREATED: &str = "job_created";
    pub const JOB_UPDATED: &str = "job_updated";
    pub const JOB_FINISHED: &str = "job_finished";
    pub const JOB_DELETED: &str = "job_deleted";
    pub const JOB_SAMPLE: &str = "job_sample";
}

/// The event-log kind of a change from `before` to the job as it is now.
pub(crate) fn change_kind(before: Option<JobState>, after: JobState) -> &'static str {
    match before {
        None => event_kind::JOB_CREATED,
        Some(prev) if !prev.is_terminal() && after.is_terminal() => event_kind::JOB_FINISHED,
        Some(_) => event_kind::JOB_UPDATED,
    }
}

pub(crate) fn snapshot(job: &Job) -> serde_json::Value {
    serde_json::to_value(job).unwrap_or(serde_json::Value::Null)
}

macro_rules! store_queries {
    ($db:ty, $begin_write:expr, $event_order_lock:expr, $row_lock:expr, $runtime_until_3:expr) => {
        use crate::store::queries::{change_kind, event_kind, snapshot, AuditRow, JobRow, JOB_COLUMNS};
        use crate::store::{Applied, AuditContext, Finish, JobFilter, JobPatch, LifecycleOp, SampleQuery, StoreError, StoreResult};
        use crate::domain::{now_micros, AuditEvent, Job, JobState, MetricSample};
        use chrono::{DateTime, Utc};
        use sqlx::types::Json;
        use sqlx::{AssertSqlSafe, Pool, QueryBuilder, Row, Transaction};

        /// A write transaction that queues its event-log rows and appends them all at commit:
        /// the event-order lock (PostgreSQL) is then held only for one insert and the commit,
        /// however many changes the transaction carries.
        struct WriteTx {
            tx: Transaction<'static, $db>,
            /// `job_nodes` rows of jobs inserted in this transaction.
            nodes: Vec<(String, String)>,
            /// Audit rows: (job id, change type, context, snapshot).
            audits: Vec<(String, &'static str, AuditContext, serde_json::Value)>,
            events: Vec<(&'static str, String, serde_json::Value)>,
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

            fn append_event(&mut self, kind: &'static str, job_id: &str, payload: serde_json::Value) {
                self.events.push((kind, job_id.to_owned(), payload));
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
                        "INSERT INTO job_audit_events (job_id, change_type, changed_at, changed_by, source, correlation_id, job_snapshot) ",
                    );
                    qb.push_values(audits, |mut b, (job_id, change_type, audit, snapshot)| {
                        b.push_bind(job_id)
                            .push_bind(change_type)
                            .push_bind(now)
                            .push_bind(audit.changed_by)
                            .push_bind(audit.source)
                            .push_bind(audit.correlation_id)
                            .push_bind(Json(snapshot));
                    });
                    qb.build().execute(&mut *self.tx).await?;
                }
                if !self.events.is_empty() {
                    if let Some(lock) = $event_order_lock {
                        sqlx::query(lock).execute(&mut *self.tx).await?;
                    }
                    let occurred_at = now;
                    let events = std::mem::take(&mut self.events);
                    let mut qb: QueryBuilder<$db> =
                        QueryBuilder::new("INSERT INTO events (occurred_at, kind, job_id, payload) ");
                    qb.push_values(events, |mut b, (kind, job_id, payload)| {
                        b.push_bind(occurred_at).push_bind(kind).push_bind(job_id).push_bind(Json(payload));
                    });
                    qb.build().execute(&mut *self.tx).await?;
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
            let snap = snapshot(job);
            tx.audits.push((job.id.clone(), change_type, audit.clone(), snap.clone()));
            let mut payload = serde_json::json!({ "job": snap, "correlation_id": audit.correlation_id });
            if let Some(prev) = before {
                payload["previous_state"] = serde_json::Value::from(prev.as_str());
            }
            tx.append_event(change_kind(before, job.state), &job.id, payload);
            Ok(())
        }

        /// `INSERT ... ON CONFLICT (id) DO NOTHING` of a whole job (its node rows are queued for
        /// commit); the stored job, or `None` when the id was taken.
        async fn insert_job_row(tx: &mut Tx, job: &Job, correlation_id: &str) -> StoreResult<Option<Job>> {
            let now = now_micros();
            let s = job.scheduler.clone().unwrap_or_default();
            let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!("INSERT INTO jobs ({JOB_COLUMNS}) "));
            qb.push_values(std::iter::once(job), |mut b, j| {
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
                    .push_bind(s.sluid.clone());
            });
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
                    let updated = row.into_job(now_micros())?;
                    let audit = match (&updated.correlation_id, finish.inherit_correlation) {
                        (Some(stored), true) => AuditContext { correlation_id: stored.clone(), ..audit.clone() },
                        _ => audit.clone(),
                    };
                    record_change(tx, Some(previous), &updated, "update", &audit).await?;
                    return Ok(Applied::Done(Box::new(updated)));
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
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                let result = match op {
                    LifecycleOp::Start { job, audit } => match insert_new_in(&mut tx, job, audit).await {
                        Ok(Some(stored)) => Ok(Applied::Done(Box::new(stored))),
                        Ok(None) => fill_from_start_in(&mut tx, job, audit).await,
                        Err(err) => Err(err),
                    },
                    LifecycleOp::Finish { id, finish, audit } => finish_in(&mut tx, id, finish, audit).await,
                };
                match result {
                    Err(StoreError::Database(err)) => return Err(StoreError::Database(err)),
                    other => results.push(other),
                }
            }
            tx.commit().await?;
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
            sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id).execute(&mut **tx).await?;
            let snap = snapshot(&current);
            tx.audits.push((id.to_owned(), "delete", audit.clone(), snap.clone()));
            let payload = serde_json::json!({ "job": snap, "correlation_id": audit.correlation_id });
            tx.append_event(event_kind::JOB_DELETED, id, payload);
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
        }

        pub async fn list_jobs(pool: &Pool<$db>, filter: &JobFilter) -> StoreResult<(Vec<Job>, i64)> {
            let mut count: QueryBuilder<$db> = QueryBuilder::new("SELECT COUNT(*) FROM jobs");
            push_job_filter(&mut count, filter);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

            let mut page: QueryBuilder<$db> = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs"));
            push_job_filter(&mut page, filter);
            page.push(" ORDER BY start_time DESC, id ASC LIMIT ")
                .push_bind(filter.limit)
                .push(" OFFSET ")
                .push_bind(filter.offset);
            let rows: Vec<JobRow> = page.build_query_as().fetch_all(pool).await?;
            let now = now_micros();
            let jobs = rows.into_iter().map(|r| r.into_job(now)).collect::<StoreResult<Vec<_>>>()?;
            Ok((jobs, total))
        }

        pub async fn add_sample(pool: &Pool<$db>, id: &str, sample: &MetricSample, correlation_id: &str) -> StoreResult<()> {
            let mut tx = WriteTx::begin(pool).await?;
            // Current values follow the newest sample only: a late sample (from an agent's spool)
            // still counts in the aggregates but does not overwrite fresher figures.
            let updated = sqlx::query(
                "UPDATE jobs SET \
                   cpu_usage = CASE WHEN last_sample_at IS NULL OR $2 >= last_sample_at THEN $3 ELSE cpu_usage END, \
                   memory_usage_mb = CASE WHEN last_sample_at IS NULL OR $2 >= last_sample_at THEN $4 ELSE memory_usage_mb END, \
                   gpu_usage = CASE WHEN CAST($5 AS DOUBLE PRECISION) IS NOT NULL AND (last_sample_at IS NULL OR $2 >= last_sample_at) THEN $5 ELSE gpu_usage END, \
                   last_sample_at = CASE WHEN last_sample_at IS NULL OR $2 > last_sample_at THEN $2 ELSE last_sample_at END, \
                   sample_count = sample_count + 1, \
                   cpu_usage_sum = cpu_usage_sum + $3, \
                   avg_cpu_usage = (cpu_usage_sum + $3) / (sample_count + 1), \
                   max_cpu_usage = CASE WHEN max_cpu_usage IS NULL OR $3 > max_cpu_usage THEN $3 ELSE max_cpu_usage END, \
                   max_memory_usage_mb = CASE WHEN max_memory_usage_mb IS NULL OR $4 > max_memory_usage_mb THEN $4 ELSE max_memory_usage_mb END, \
                   gpu_usage_sum = gpu_usage_sum + COALESCE($5, 0), \
                   gpu_sample_count = gpu_sample_count + CASE WHEN CAST($5 AS DOUBLE PRECISION) IS NULL THEN 0 ELSE 1 END, \
                   avg_gpu_usage = CASE WHEN CAST($5 AS DOUBLE PRECISION) IS NULL THEN avg_gpu_usage \
                                        ELSE (gpu_usage_sum + $5) / (gpu_sample_count + 1) END, \
                   max_gpu_usage = CASE WHEN CAST($5 AS DOUBLE PRECISION) IS NOT NULL AND (max_gpu_usage IS NULL OR $5 > max_gpu_usage) \
                                        THEN $5 ELSE max_gpu_usage END \
                 WHERE id = $1 AND state IN ('pending', 'running') \
                 RETURNING user_name, state, nodes, partition",
            )
            .bind(id)
            .bind(sample.timestamp)
            .bind(sample.cpu_usage)
            .bind(sample.memory_usage_mb)
            .bind(sample.gpu_usage)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(updated) = updated else {
                let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
                return Err(if exists > 0 { StoreError::Terminal } else { StoreError::NotFound });
            };
            sqlx::query(
                "INSERT INTO metric_samples (job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(sample.timestamp)
            .bind(sample.cpu_usage)
            .bind(sample.memory_usage_mb)
            .bind(sample.gpu_usage)
            .execute(&mut **tx)
            .await?;
            // Who the sample belongs to, so stream filters (user, state, node, partition) apply
            // to samples without a lookup per event.
            let Json(nodes): Json<Vec<String>> = updated.try_get("nodes")?;
            let job = serde_json::json!({
                "id": id,
                "user": updated.try_get::<String, _>("user_name")?,
                "state": updated.try_get::<String, _>("state")?,
                "nodes": nodes,
                "scheduler": { "partition": updated.try_get::<Option<String>, _>("partition")? },
            });
            let payload = serde_json::json!({ "job_id": id, "job": job, "sample": sample, "correlation_id": correlation_id });
            tx.append_event(event_kind::JOB_SAMPLE, id, payload);
            tx.commit().await?;
            Ok(())
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
                QueryBuilder::new("SELECT timestamp, cpu_usage, memory_usage_mb, gpu_usage FROM metric_samples");
            push_sample_range(&mut page, id, query);
            page.push(" ORDER BY timestamp DESC, id DESC LIMIT ").push_bind(query.limit);
            let rows = page.build().fetch_all(pool).await?;
            let samples = rows
                .iter()
                .map(|r| {
                    Ok(MetricSample {
                        timestamp: r.try_get("timestamp")?,
                        cpu_usage: r.try_get("cpu_usage")?,
                        memory_usage_mb: r.try_get("memory_usage_mb")?,
                        gpu_usage: r.try_get("gpu_usage")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok((samples, total))
        }

        pub async fn audit_trail(pool: &Pool<$db>, id: &str) -> StoreResult<Vec<AuditEvent>> {
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, job_id, change_type, changed_at, changed_by, source, correlation_id, job_snapshot \
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
            Ok((samples, events))
        }

        pub async fn seed_job(pool: &Pool<$db>, job: &Job, samples: &[MetricSample], audit: &AuditContext) -> StoreResult<bool> {
            let mut tx = WriteTx::begin(pool).await?;
            if insert_job_row(&mut tx, job, &audit.correlation_id).await?.is_none() {
                return Ok(false);
            }
            // Sums behind the averages, so later samples keep the averages exact.
            let cpu_sum: f64 = samples.iter().map(|s| s.cpu_usage).sum();
            let gpu: Vec<f64> = samples.iter().filter_map(|s| s.gpu_usage).collect();
            sqlx::query("UPDATE jobs SET cpu_usage_sum = $2, gpu_usage_sum = $3, gpu_sample_count = $4 WHERE id = $1")
                .bind(&job.id)
                .bind(cpu_sum)
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

        pub async fn events_after(pool: &Pool<$db>, after: i64, limit: i64) -> StoreResult<Vec<crate::store::StoredEvent>> {
            let rows = sqlx::query(
                "SELECT id, occurred_at, kind, job_id, payload FROM events WHERE id > $1 ORDER BY id ASC LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let Json(payload): Json<serde_json::Value> = r.try_get("payload")?;
                    Ok(crate::store::StoredEvent {
                        id: r.try_get("id")?,
                        occurred_at: r.try_get("occurred_at")?,
                        kind: r.try_get("kind")?,
                        job_id: r.try_get("job_id")?,
                        payload,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        }

        pub async fn last_event_id(pool: &Pool<$db>) -> StoreResult<i64> {
            let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events").fetch_one(pool).await?;
            Ok(id.unwrap_or(0))
        }
    };
}

pub(crate) use store_queries;
