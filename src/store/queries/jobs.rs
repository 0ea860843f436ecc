//! Jobs: the `jobs` row ([`JobRow`]) and every query that creates, changes, reads, counts or
//! deletes jobs, with the audit and event rows each change records (`record_change`).

use crate::domain::{GpuVendor, Job, JobState, SchedulerInfo};
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

/// The job functions of `store_queries!`, expanded into the same backend module (its
/// imports, `WriteTx` and the other concerns' functions are in scope there).
macro_rules! job_queries {
    ($db:ty, $row_lock:expr, $runtime_until_3:expr) => {
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
            let nulls_last = if filter.sort.may_be_null() { format!("({column} IS NULL) ASC, ") } else { String::new() };
            page.push(format!(" ORDER BY {nulls_last}{column} {direction}, id ASC LIMIT "))
                .push_bind(filter.limit)
                .push(" OFFSET ")
                .push_bind(filter.offset);
            let rows: Vec<JobRow> = page.build_query_as().fetch_all(pool).await?;
            let now = now_micros();
            let jobs = rows.into_iter().map(|r| r.into_job(now)).collect::<StoreResult<Vec<_>>>()?;
            Ok((jobs, total))
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
    };
}

pub(crate) use job_queries;

#[cfg(test)]
mod tests {
    use super::super::{snapshot, to_json};
    use crate::domain::event::JobChange;
    use crate::domain::{Job, JobState};
    use serde_json::json;
    use std::borrow::Cow;

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
