//! The event log's reads and the job reports appended to it: [`events_after_sql`] and
//! `events_after` (the feed of `crate::events`), `last_event_id`, `append_job_report` and
//! `jobs_missing_report`. Rows are appended by `WriteTx::commit` (see `mod.rs`).

use super::SAMPLE_COLUMNS;

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

pub(crate) use event_queries;
