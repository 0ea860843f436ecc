//! Samples: the `metric_samples` row ([`SampleRow`]), what a sample batch reads of its jobs
//! ([`SampledJob`]) and folds into them ([`JobDelta`], [`JOB_DELTA_SET`]), and the queries that
//! ingest, list and prune samples (`prune` also retires the event log's rows of the same age).

use crate::domain::event::{JobSample, JobSummary, SummaryScheduler};
use crate::domain::{JobState, MetricSample, SampleDetail};
use crate::store::{LatePolicy, SampleItem, SampleRejection};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::borrow::Cow;

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

/// Rows a pruning statement deletes at most (see `prune`).
pub(crate) const PRUNE_CHUNK: i64 = 2000;

/// The sample functions of `store_queries!`, expanded into the same backend module (its
/// imports, `WriteTx` and the other concerns' functions are in scope there).
macro_rules! sample_queries {
    ($db:ty, $row_lock:expr, $runtime_until_3:expr) => {
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
            let jobs: std::collections::HashMap<String, SampledJob> =
                bulk::select_jobs(&mut tx, &ids)
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
            let updated: std::collections::HashSet<String> = bulk::update_jobs(&mut tx, &deltas)
                .await?
                .into_iter()
                .collect();
            if updated.len() < deltas.len() {
                let (kept, gone): (Vec<_>, Vec<_>) = stored
                    .into_iter()
                    .partition(|(_, item, _)| updated.contains(&item.job_id));
                delete_samples(&mut **tx, gone.iter().map(|&(_, _, id)| id)).await?;
                outcome.rejected.extend(
                    gone.iter()
                        .map(|&(index, _, _)| (index, SampleRejection::UnknownJob)),
                );
                outcome.rejected.sort_unstable_by_key(|&(index, _)| index);
                stored = kept;
            }
            outcome.accepted = stored.len();
            // A multi-node job's figures are the whole job's (see `node_figures.rs`).
            let shares =
                crate::store::node_figures::shares(stored.iter().map(|&(_, item, _)| item), |id| {
                    jobs.get(id).map(|j| j.nodes.as_slice())
                });
            bulk::keep_node_figures(&mut tx, &shares).await?;

            let mut events = crate::domain::event::StoredSampleBatch {
                job_ids: Vec::with_capacity(stored.len()),
                sample_ids: Vec::with_capacity(stored.len()),
                states: Vec::with_capacity(stored.len()),
            };
            for &(_, item, sample_id) in &stored {
                let Some(job) = jobs.get(&item.job_id) else {
                    continue;
                };
                events.job_ids.push(Cow::Borrowed(item.job_id.as_str()));
                events.sample_ids.push(sample_id);
                events.states.push(job.state);
            }
            tx.append_sample_events(&events)?;

            if let Some(report) = node {
                if let Some(node) = upsert_node_report(&mut tx, report).await? {
                    tx.append_other_event(
                        EventKind::NodeUpdated,
                        &NodeChange {
                            node: Cow::Borrowed(&node),
                        },
                    )?;
                }
            }
            tx.commit().await?;
            Ok(outcome)
        }

        /// Deletes the sample rows of `ids` (a batch's rows of a job deleted meanwhile; the rows
        /// `store::sample_packs` has packed).
        pub(crate) async fn delete_samples(
            conn: &mut <$db as sqlx::Database>::Connection,
            ids: impl Iterator<Item = i64>,
        ) -> StoreResult<()> {
            let ids: Vec<i64> = ids.collect();
            for chunk in ids.chunks(500) {
                let mut qb: QueryBuilder<$db> =
                    QueryBuilder::new("DELETE FROM metric_samples WHERE id IN (");
                crate::store::queries::push_in_list(&mut qb, chunk.iter().copied());
                qb.build().execute(&mut *conn).await?;
            }
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

        pub async fn list_samples(
            pool: &Pool<$db>,
            id: &str,
            query: &SampleQuery,
        ) -> StoreResult<(Vec<MetricSample>, i64)> {
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
            if exists == 0 {
                return Err(StoreError::NotFound);
            }
            let mut count: QueryBuilder<$db> =
                QueryBuilder::new("SELECT COUNT(*) FROM metric_samples");
            push_sample_range(&mut count, id, query);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

            let mut page: QueryBuilder<$db> =
                QueryBuilder::new(format!("SELECT {SAMPLE_COLUMNS} FROM metric_samples"));
            push_sample_range(&mut page, id, query);
            page.push(" ORDER BY timestamp DESC, id DESC LIMIT ")
                .push_bind(query.limit);
            let rows: Vec<SampleRow> = page.build_query_as().fetch_all(pool).await?;
            let samples = rows.into_iter().map(MetricSample::from).collect();
            Ok((samples, total))
        }

        /// Deletes rows older than `before` from `metric_samples` and from `events_table` (the
        /// event log on SQLite; on PostgreSQL only its default partition, whose day partitions
        /// `store::partitions` drops whole), [`PRUNE_CHUNK`] rows a statement: each delete is a
        /// short transaction, so on SQLite (one writer at a time) a prune of millions of rows
        /// never holds agents' batches back for long (issue 19; BENCHMARKS.md, "Sample storage").
        pub async fn prune(
            pool: &Pool<$db>,
            before: DateTime<Utc>,
            events_table: &'static str,
        ) -> StoreResult<(u64, u64)> {
            let mut counts = [0u64; 2];
            let events_sql = format!(
                "DELETE FROM {events_table} WHERE id IN \
                 (SELECT id FROM {events_table} WHERE occurred_at < $1 LIMIT $2)"
            );
            for (count, sql) in counts.iter_mut().zip([
                "DELETE FROM metric_samples WHERE id IN \
                 (SELECT id FROM metric_samples WHERE timestamp < $1 LIMIT $2)",
                events_sql.as_str(),
            ]) {
                loop {
                    let deleted = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(before)
                        .bind(crate::store::queries::PRUNE_CHUNK)
                        .execute(pool)
                        .await?
                        .rows_affected();
                    *count += deleted;
                    if deleted < crate::store::queries::PRUNE_CHUNK as u64 {
                        break;
                    }
                }
            }
            // Deleted jobs whose events are all gone now (on PostgreSQL the log may keep a day
            // past `before`: the summaries stay as long as an event of theirs).
            sqlx::query(
                "DELETE FROM deleted_jobs WHERE deleted_at < $1 \
                 AND deleted_at < COALESCE((SELECT MIN(occurred_at) FROM events), $1)",
            )
            .bind(before)
            .execute(pool)
            .await?;
            Ok((counts[0], counts[1]))
        }
    };
}

pub(crate) use sample_queries;

#[cfg(test)]
mod tests {
    use super::super::to_json;
    use super::*;
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
}
