//! The event log's reads and the job reports appended to it: [`events_after_sql`] and
//! `events_after` (the feed of `crate::events`), `last_event_id`, `append_job_report` and
//! `jobs_missing_report`. Rows are appended by `WriteTx::commit` (see `mod.rs`). A sample
//! batch's row ([`crate::domain::event::StoredSampleBatch`]) is read back as one `job_sample`
//! event per sample, each with its own id.

use super::SAMPLE_COLUMNS;
use crate::domain::JobState;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// What a `job_sample` event shows of its job, from the job's row or, once the row is gone,
/// from `deleted_jobs` (then with the time of the deletion).
#[derive(sqlx::FromRow)]
pub(crate) struct SampleSummaryRow {
    job_id: String,
    deleted_at: Option<DateTime<Utc>>,
    user_name: String,
    nodes: Json<Vec<String>>,
    partition: Option<String>,
    correlation_id: String,
}

/// The reads of [`SampleSummaryRow`]s, of jobs alive and of jobs deleted, each up to its open
/// `IN (` list: the caller binds the job ids and closes it.
pub(crate) const SAMPLE_SUMMARY_FROM: [&str; 2] = [
    "SELECT id AS job_id, NULL AS deleted_at, user_name, nodes, partition, correlation_id \
     FROM jobs WHERE id IN (",
    "SELECT job_id, deleted_at, user_name, nodes, partition, correlation_id \
     FROM deleted_jobs WHERE job_id IN (",
];

/// One event of a batch row being read back: where it sits in the page, and what it refers to.
pub(crate) struct BatchedSample {
    pub(crate) index: usize,
    pub(crate) sample_id: i64,
    pub(crate) state: JobState,
}

/// A page's [`SampleSummaryRow`]s by job id, so each event finds its job's without scanning
/// all of them (a page of a 1,000-job batch has 1,000 of each).
pub(crate) struct SampleSummaries(std::collections::HashMap<String, Vec<SampleSummaryRow>>);

impl SampleSummaries {
    pub(crate) fn new(rows: Vec<SampleSummaryRow>) -> SampleSummaries {
        let mut by_job: std::collections::HashMap<String, Vec<SampleSummaryRow>> =
            std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            by_job.entry(row.job_id.clone()).or_default().push(row);
        }
        SampleSummaries(by_job)
    }

    /// The summary a sample event of `job_id` logged at `at` shows: that of the first deletion
    /// of the id at or after `at` (the incarnation alive when it was logged), else the job's row.
    fn at(&self, job_id: &str, at: DateTime<Utc>) -> Option<&SampleSummaryRow> {
        let of_job = self.0.get(job_id)?;
        of_job
            .iter()
            .filter(|s| s.deleted_at.is_some_and(|d| d >= at))
            .min_by_key(|s| s.deleted_at)
            .or_else(|| of_job.iter().find(|s| s.deleted_at.is_none()))
    }
}

/// The payload of a batched sample's event: the job's summary and the sample (`null` when its
/// row is gone, or is not this job's); `None` when the log knows no such job.
pub(crate) fn batched_sample_payload(
    job_id: &str,
    state: JobState,
    at: DateTime<Utc>,
    summaries: &SampleSummaries,
    sample: Option<&(String, crate::domain::MetricSample)>,
) -> Result<Option<serde_json::Value>, serde_json::Error> {
    let Some(s) = summaries.at(job_id, at) else {
        return Ok(None);
    };
    let payload = super::job_sample_payload(
        job_id,
        state,
        &s.user_name,
        &s.nodes.0,
        s.partition.as_deref(),
        &s.correlation_id,
    );
    let mut value = serde_json::to_value(&payload)?;
    let sample = match sample {
        Some((sample_job, sample)) if sample_job == job_id => serde_json::to_value(sample)?,
        _ => serde_json::Value::Null,
    };
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("sample".to_owned(), sample);
    }
    Ok(Some(value))
}

/// The log read of `events_after`: each row with its referred sample's columns (under their own
/// names, as [`super::SampleRow`] reads them; the event's own columns are renamed to stay apart).
/// The join is on the sample id alone, so that every plan takes the primary key: joined on the
/// job as well, PostgreSQL with a young table's statistics chose the (job, time, node) index and
/// read all of a job's samples for each event. `events_after` compares the jobs instead.
///
/// A `job_sample` row stores only its job's state (`StoredJobSample`): the rest of the summary
/// comes from the job's row, or from `deleted_jobs` when the row the event belongs to is gone
/// (the first deletion of the id at or after the event: a job deleted and created again is two
/// incarnations, and an event belongs to the one alive when it was logged).
///
/// `lateral` (PostgreSQL): the page of events is cut first and each joined row is found by its
/// own index lookup (`LATERAL ... LIMIT 1`, which the planner cannot turn into a join). The
/// feed runs this statement after every commit, as a prepared statement whose generic plan
/// does not know `$1`: written as plain joins, that plan estimated a third of the log after
/// the cursor and hashed all of `jobs` and `metric_samples` on every call (BENCHMARKS.md, "Hook
/// ingestion"). SQLite, which has no `LATERAL`, plans the joins as index lookups by itself.
pub(crate) fn events_after_sql(lateral: bool) -> sqlx::AssertSqlSafe<&'static str> {
    static PLAIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static LATERAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let cell = if lateral { &LATERAL } else { &PLAIN };
    sqlx::AssertSqlSafe(cell.get_or_init(|| {
        let sample_columns: Vec<String> = SAMPLE_COLUMNS
            .split(',')
            .map(|c| format!("m.{}", c.trim()))
            .collect();
        let select = format!(
            "SELECT e.id AS event_id, e.occurred_at AS event_at, e.kind AS event_kind, \
             e.job_id AS event_job_id, e.payload AS event_payload, e.sample_id AS event_sample_id, \
             m.id AS stored_sample_id, {}, \
             COALESCE(d.user_name, j.user_name) AS summary_user, \
             COALESCE(d.nodes, j.nodes) AS summary_nodes, \
             CASE WHEN d.job_id IS NULL THEN j.partition ELSE d.partition END AS summary_partition, \
             COALESCE(d.correlation_id, j.correlation_id) AS summary_correlation_id ",
            sample_columns.join(", ")
        );
        if lateral {
            format!(
                "{select} FROM (SELECT id, occurred_at, kind, job_id, payload, sample_id FROM events \
                   WHERE id > $1 ORDER BY id LIMIT $2) e \
                 LEFT JOIN LATERAL (SELECT * FROM metric_samples x WHERE x.id = e.sample_id LIMIT 1) m ON true \
                 LEFT JOIN LATERAL (SELECT x.* FROM deleted_jobs x WHERE e.kind = 'job_sample' \
                   AND x.job_id = e.job_id AND x.deleted_at >= e.occurred_at \
                   ORDER BY x.deleted_at LIMIT 1) d ON true \
                 LEFT JOIN LATERAL (SELECT x.user_name, x.nodes, x.partition, x.correlation_id \
                   FROM jobs x WHERE e.kind = 'job_sample' AND d.job_id IS NULL AND x.id = e.job_id \
                   LIMIT 1) j ON true \
                 ORDER BY e.id ASC"
            )
        } else {
            format!(
                "{select} FROM events e LEFT JOIN metric_samples m ON m.id = e.sample_id \
                 LEFT JOIN deleted_jobs d ON e.kind = 'job_sample' AND d.job_id = e.job_id \
                   AND d.deleted_at = (SELECT MIN(x.deleted_at) FROM deleted_jobs x \
                                       WHERE x.job_id = e.job_id AND x.deleted_at >= e.occurred_at) \
                 LEFT JOIN jobs j ON e.kind = 'job_sample' AND d.job_id IS NULL AND j.id = e.job_id \
                 WHERE e.id > $1 ORDER BY e.id ASC LIMIT $2"
            )
        }
    }))
}

/// The event functions of `store_queries!`, expanded into the same backend module (its
/// imports, `WriteTx` and the other concerns' functions are in scope there).
macro_rules! event_queries {
    ($db:ty, $row_lock:expr, $runtime_until_3:expr) => {
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
            let rows = sqlx::query(events_after_sql(<$db as sqlx::Database>::NAME == "PostgreSQL"))
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut events = Vec::with_capacity(rows.len());
            let mut batched = Vec::new();
            for r in &rows {
                if events.len() as i64 >= limit {
                    break;
                }
                let kind: String = r.try_get("event_kind")?;
                if kind == crate::domain::event::SAMPLE_BATCH_KIND {
                    read_sample_batch(r, after, limit, &mut events, &mut batched)?;
                    continue;
                }
                let Json(mut payload): Json<serde_json::Value> = r.try_get("event_payload")?;
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
            if !batched.is_empty() {
                expand_sample_batches(pool, &mut events, &batched).await?;
            }
            Ok(events)
        }

        /// The events of a sample batch's row after `after`, up to `limit` in all, appended to
        /// `events` with their payloads still to fill (`batched`, see `expand_sample_batches`).
        fn read_sample_batch(
            r: &<$db as sqlx::Database>::Row,
            after: i64,
            limit: i64,
            events: &mut Vec<crate::store::StoredEvent>,
            batched: &mut Vec<crate::store::queries::BatchedSample>,
        ) -> StoreResult<()> {
            let id: i64 = r.try_get("event_id")?;
            let occurred_at: DateTime<Utc> = r.try_get("event_at")?;
            let Json(batch): Json<crate::domain::event::StoredSampleBatch<'static>> = r.try_get("event_payload")?;
            if !batch.is_whole() {
                tracing::warn!(id, "skipped a damaged sample batch row of the event log");
                return Ok(());
            }
            let first = id - batch.len() as i64 + 1;
            let entries = batch.job_ids.into_iter().zip(batch.sample_ids).zip(batch.states);
            for (offset, ((job_id, sample_id), state)) in entries.enumerate() {
                let event_id = first + offset as i64;
                if event_id <= after {
                    continue;
                }
                if events.len() as i64 >= limit {
                    break;
                }
                batched.push(crate::store::queries::BatchedSample { index: events.len(), sample_id, state });
                events.push(crate::store::StoredEvent {
                    id: event_id,
                    occurred_at,
                    kind: EventKind::JobSample,
                    job_id: Some(job_id.into_owned()),
                    payload: serde_json::Value::Null,
                    missing_sample: None,
                });
            }
            Ok(())
        }

        /// Fills in the payloads of a page's batched `job_sample` events: their samples and
        /// their jobs' summaries, each read once for the page. An event whose job the log no
        /// longer knows is dropped, as `events_after` drops a single row's.
        async fn expand_sample_batches(
            pool: &Pool<$db>,
            events: &mut Vec<crate::store::StoredEvent>,
            batched: &[crate::store::queries::BatchedSample],
        ) -> StoreResult<()> {
            use crate::store::queries::{batched_sample_payload, SampleSummaries, SampleSummaryRow, SAMPLE_SUMMARY_FROM};
            let decode = |e: serde_json::Error| StoreError::Database(sqlx::Error::Decode(e.into()));
            let mut samples = std::collections::HashMap::with_capacity(batched.len());
            let sample_ids: Vec<i64> = batched.iter().map(|b| b.sample_id).collect();
            for chunk in sample_ids.chunks(500) {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT id AS stored_sample_id, {SAMPLE_COLUMNS} FROM metric_samples WHERE id IN ("
                ));
                crate::store::queries::push_in_list(&mut qb, chunk.iter().copied());
                for r in qb.build().fetch_all(pool).await? {
                    let id: i64 = r.try_get("stored_sample_id")?;
                    let job: String = r.try_get("job_id")?;
                    samples.insert(id, (job, MetricSample::from(SampleRow::from_row(&r)?)));
                }
            }
            let mut job_ids: Vec<&str> = batched.iter().filter_map(|b| events[b.index].job_id.as_deref()).collect();
            job_ids.sort_unstable();
            job_ids.dedup();
            let mut summaries: Vec<SampleSummaryRow> = Vec::new();
            for from in SAMPLE_SUMMARY_FROM {
                for chunk in job_ids.chunks(500) {
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new(from);
                    crate::store::queries::push_in_list(&mut qb, chunk.iter().copied());
                    summaries.extend(qb.build_query_as::<SampleSummaryRow>().fetch_all(pool).await?);
                }
            }
            let summaries = SampleSummaries::new(summaries);
            let mut unknown = Vec::new();
            for b in batched {
                let event = &mut events[b.index];
                let job_id = event.job_id.as_deref().unwrap_or_default();
                let sample = samples.get(&b.sample_id);
                match batched_sample_payload(job_id, b.state, event.occurred_at, &summaries, sample).map_err(decode)? {
                    Some(payload) => {
                        event.payload = payload;
                        // Packed since (`store::sample_packs`), or gone with its job.
                        event.missing_sample = sample.is_none().then_some(b.sample_id);
                    }
                    None => {
                        tracing::warn!(id = event.id, "skipped a job_sample event whose job is unknown");
                        unknown.push(b.index);
                    }
                }
            }
            for index in unknown.into_iter().rev() {
                events.remove(index);
            }
            Ok(())
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

pub(crate) use event_queries;

#[cfg(test)]
mod tests {
    use super::events_after_sql;
    use sqlx::{Connection, Executor};

    /// Every (node type, relation) of an `EXPLAIN (FORMAT JSON)` plan.
    fn plan_nodes(plan: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let node_type = plan["Node Type"].as_str().unwrap_or_default().to_owned();
        let relation = plan["Relation Name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        out.push((node_type, relation));
        for child in plan["Plans"].as_array().into_iter().flatten() {
            plan_nodes(child, out);
        }
    }

    /// The feed reads the log after every commit through a prepared statement, whose generic
    /// plan does not know the cursor. That plan must still find each event's job, deleted job
    /// and sample by key: one that scans or hashes `jobs` or `metric_samples` costs the whole
    /// table on every commit (it did, before the `LATERAL` form).
    #[tokio::test]
    async fn postgres_reads_the_log_by_key_lookups_in_the_generic_plan() {
        let Some((store, url)) = crate::store::test_postgres_store().await else {
            return;
        };
        crate::store::create_test_jobs(&store, 300, |i| format!("node-{}", i % 10)).await;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        // A log much longer than the jobs table, as samples' events make it, with statistics as
        // young as a busy service's (autovacuum has not analyzed it yet): the old form of the
        // read then hashed `jobs`, `metric_samples` and every partition of the log.
        db.execute(
            "INSERT INTO events (occurred_at, kind, job_id, payload) \
             SELECT now(), 'job_sample', 'job-' || (i % 300), '{\"state\":\"running\"}' \
             FROM generate_series(1, 20000) i",
        )
        .await
        .unwrap();
        db.execute("SET plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        db.execute(sqlx::AssertSqlSafe(format!(
            "PREPARE log_read(bigint, bigint) AS {}",
            events_after_sql(true).0
        )))
        .await
        .unwrap();
        let explained = crate::store::explain(&mut db, "EXECUTE log_read(0, 500)").await;
        let mut nodes = Vec::new();
        plan_nodes(&explained[0]["Plan"], &mut nodes);
        for (node_type, relation) in &nodes {
            // (The empty `metric_samples` and `deleted_jobs` may be scanned: per event, and
            // a table's growth past its statistics replans the statement.)
            assert!(
                !(node_type.contains("Scan")
                    && !node_type.starts_with("Index")
                    && relation == "jobs"),
                "{node_type} on jobs in the log read's generic plan: {nodes:?}"
            );
            assert!(
                !["Hash Join", "Merge Join", "Hash"].contains(&node_type.as_str()),
                "{node_type} in the log read's generic plan: {nodes:?}"
            );
        }
        assert!(
            nodes
                .iter()
                .any(|(t, r)| t.starts_with("Index") && r == "jobs"),
            "the plan looks jobs up by key: {nodes:?}"
        );

        let _ = db.close().await;
        crate::store::drop_test_postgres_store(store, &url).await;
    }
}
