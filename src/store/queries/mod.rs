//! The SQL of every store operation, written once and compiled for each backend.
//!
//! `store_queries!(Db, BEGIN_WRITE, EVENT_ORDER_LOCK, ROW_LOCK, RUNTIME_UNTIL_3, BULK, LIFECYCLE)`
//! expands to a set of functions over a concrete `sqlx::Pool<Db>`. Both backends accept `$N`
//! placeholders, `ON CONFLICT`, `RETURNING` and `CAST(x AS DOUBLE PRECISION)`, so one text serves
//! both; the arguments carry what does differ: the statement that opens a write transaction, an
//! optional statement run just before an event row is appended (PostgreSQL takes a transaction
//! lock there so event ids are handed out in commit order even with several `serve` replicas),
//! the row-lock clause of a read-then-write (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE` already
//! holds the write lock), the expression for the seconds from `start_time` to the timestamp
//! parameter `$3`, and the modules of the backend's batch statements (`bulk::sqlite` or
//! `bulk::postgres`: how a sample batch and the event rows reach the table, see `bulk.rs`;
//! `lifecycle_batch::sqlite` or `lifecycle_batch::postgres`: a lifecycle batch's common ops in
//! one statement).
//!
//! The functions are split by table and concern, each file holding its rows' types and a macro
//! of its queries that `store_queries!` expands into the same backend module: `jobs.rs` (jobs,
//! their changes and counts), `samples.rs` (sample batches, sample reads, retention),
//! `nodes.rs` (nodes and partitions), `audit.rs` (the audit trail) and `events.rs` (the event
//! log's reads and job reports). This file holds what they share: the write transaction
//! (`WriteTx`, which appends the queued audit and event rows at commit) and [`QueuedEvent`].

mod audit;
mod events;
mod jobs;
mod nodes;
mod samples;

pub(crate) use audit::{audit_queries, AuditRow};
pub(crate) use events::{
    batched_sample_payload, event_queries, events_after_sql, BatchedSample, SampleSummaries,
    SampleSummaryRow, SAMPLE_SUMMARY_FROM,
};
pub(crate) use jobs::{job_queries, JobRow, JOB_COLUMNS};
pub(crate) use nodes::{
    node_queries, scheduler_merge, NodeRow, PartitionRow, NODE_COLUMNS, PARTITION_COLUMNS,
    RUNNING_JOBS_OF_NODE,
};
pub(crate) use samples::{
    job_sample_payload, sample_queries, JobDelta, SampleRow, SampledJob, SampledJobRow,
    JOB_DELTA_SET, PRUNE_CHUNK, SAMPLED_JOB_COLUMNS, SAMPLE_COLUMNS,
};

use crate::domain::event::{EventKind, StoredSampleBatch, SAMPLE_BATCH_KIND};
use crate::domain::Job;
// The rows' conversions in the files below name it as `super::StoreError`.
use super::StoreError;

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
    /// log keeps the reference, not a second copy of the sample (see
    /// [`crate::domain::event::JobSample`]).
    pub(crate) sample_id: Option<i64>,
    /// For a batch's samples kept as one row ([`StoredSampleBatch`]): the samples it stands
    /// for, each with its own event id; the row's id is the last of them.
    pub(crate) span: Option<i64>,
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
            span: None,
        })
    }

    /// The one row of a batch's `job_sample` events; `None` for a batch that stored nothing.
    pub(crate) fn sample_batch(
        batch: &StoredSampleBatch<'_>,
    ) -> Result<Option<QueuedEvent>, super::StoreError> {
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(QueuedEvent {
            kind: EventKind::JobSample,
            job_id: None,
            payload: to_json(batch)?,
            sample_id: None,
            span: Some(batch.len() as i64),
        }))
    }

    /// The `kind` column of the row.
    pub(crate) fn stored_kind(&self) -> &'static str {
        match self.span {
            Some(_) => SAMPLE_BATCH_KIND,
            None => self.kind.as_str(),
        }
    }
}

/// The ids a transaction's queued rows take, as (total, per row the ids taken up to and
/// including it): a row's id is the last of its own (see [`StoredSampleBatch`]).
pub(crate) fn id_blocks(events: &[QueuedEvent]) -> (i64, Vec<i64>) {
    let upto: Vec<i64> = events
        .iter()
        .scan(0, |taken, e| {
            *taken += e.span.unwrap_or(1);
            Some(*taken)
        })
        .collect();
    (upto.last().copied().unwrap_or(0), upto)
}

/// Binds `values` one by one into the `IN (` list that `qb` ends with, and closes the list.
pub(crate) fn push_in_list<'t, DB, T>(
    qb: &mut sqlx::QueryBuilder<DB>,
    values: impl IntoIterator<Item = T>,
) where
    DB: sqlx::Database,
    T: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut list = qb.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    qb.push(")");
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

            /// Queues the `job_sample` events of a batch's stored samples, as one row (see
            /// [`crate::domain::event::StoredSampleBatch`]).
            fn append_sample_events(&mut self, batch: &crate::domain::event::StoredSampleBatch<'_>) -> StoreResult<()> {
                self.events.extend(QueuedEvent::sample_batch(batch)?);
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

        crate::store::queries::job_queries!($db, $row_lock, $runtime_until_3);
        crate::store::queries::audit_queries!($db, $row_lock, $runtime_until_3);
        crate::store::queries::sample_queries!($db, $row_lock, $runtime_until_3);
        crate::store::queries::node_queries!($db, $row_lock, $runtime_until_3);
        crate::store::queries::event_queries!($db, $row_lock, $runtime_until_3);
    };
}

pub(crate) use store_queries;
