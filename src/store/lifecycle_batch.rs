//! A group-commit batch of lifecycle events in as few statements and round trips as
//! PostgreSQL allows.
//!
//! On PostgreSQL every statement is a round trip to a server that shares the machine's cores,
//! and at 8 hook clients the service waited on them, not on the CPU (BENCHMARKS.md, "Hook
//! ingestion"). The common ops of a batch (a new job; a running job that ends) are applied by
//! [`postgres::apply_common`] in one statement of its own, which PostgreSQL runs and commits as
//! one transaction, with no `BEGIN` or `COMMIT` to wait for:
//! - the rows of the jobs that end are read first (one more round trip, only when the batch
//!   ends jobs), with their row versions (`xmin`);
//! - the written rows are predicted exactly (`JobRow::new_job`, `JobRow::finished`), so the
//!   audit snapshots and event payloads are serialized before the statement;
//! - the statement inserts the new jobs, ends the jobs whose row is still the version read and
//!   running, and appends the node, audit and event-log rows of exactly the ops it wrote, taking
//!   the event-order lock (and its notification) after every row write and before any event id
//!   is drawn: a transaction never waits for a row while it holds the lock.
//!
//! What it leaves (a repeated job-started, a job that is pending, unknown, terminal or changed
//! since it was read, a job whose scheduler extras hold floats, and every op after the first on
//! one job, which must see the first) goes through the one-event path of `queries/jobs.rs` in one
//! transaction after it, whose queued rows [`postgres::flush`] appends in one statement. SQLite runs
//! in-process, where statements are cheap, and keeps the one-event path
//! ([`sqlite::apply_common`] applies nothing, [`sqlite::flush`] writes nothing).

use super::queries::{QueuedAudit, QueuedEvent};
use super::{Applied, AuditContext, LifecycleOp, StoreResult};
use chrono::{DateTime, Utc};

/// Audit rows queued by a write transaction.
pub(super) type AuditRows = [QueuedAudit];

/// The job an op is about.
fn job_id(op: &LifecycleOp) -> &str {
    match op {
        LifecycleOp::Start { job, .. } => &job.id,
        LifecycleOp::Finish { id, .. } => id,
    }
}

/// One text column of the audit rows, as an array parameter.
fn column<'a>(
    audits: &'a AuditRows,
    field: impl Fn(&'a QueuedAudit) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    audits.iter().map(field).collect()
}

/// Per op, nothing applied.
fn none_applied(ops: &[LifecycleOp]) -> Vec<Option<Applied>> {
    ops.iter().map(|_| None).collect()
}

pub(super) mod postgres {
    use super::*;
    use crate::domain::{Job, JobState};
    use crate::store::queries::{
        change_rows, finish_audit, push_finish_of_rows, push_insert_of_rows, JobRow, JOB_COLUMNS,
    };
    use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
    use std::collections::{HashMap, HashSet};

    /// What one statement is to write for a batch.
    #[derive(Default)]
    pub(super) struct Planned {
        /// Per op, the job as it will be once written; `None` for an op left to the one-event path.
        pub(super) jobs: Vec<Option<Job>>,
        inserts: Vec<JobRow>,
        /// Rows after their end, with the row version each was read at.
        finishes: Vec<(JobRow, String)>,
        nodes: Vec<(String, String)>,
        audits: Vec<QueuedAudit>,
        events: Vec<QueuedEvent>,
    }

    impl Planned {
        fn record(
            &mut self,
            before: Option<JobState>,
            job: &Job,
            change: &'static str,
            audit: &AuditContext,
        ) -> StoreResult<()> {
            let (audit_row, event) = change_rows(before, job, change, audit)?;
            self.audits.push(audit_row);
            self.events.push(event);
            Ok(())
        }
    }

    /// The rows of the jobs `ids`, with the row version (`xmin`) each was read at.
    pub(super) async fn read_rows(
        pool: &PgPool,
        ids: Vec<&str>,
    ) -> StoreResult<HashMap<String, (JobRow, String)>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS}, xmin::text AS seen FROM jobs WHERE id = ANY($1)"
        )))
        .bind(ids)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|row| {
                let job = <JobRow as sqlx::FromRow<_>>::from_row(row)?;
                let seen: String = row.try_get("seen")?;
                Ok((job.id().to_owned(), (job, seen)))
            })
            .collect()
    }

    pub(super) fn plan(
        ops: &[LifecycleOp],
        mut current: HashMap<String, (JobRow, String)>,
        now: DateTime<Utc>,
    ) -> StoreResult<Planned> {
        let mut planned = Planned::default();
        let mut seen = HashSet::with_capacity(ops.len());
        for op in ops {
            // A second op on one job (every node of a job runs its epilog) must see the first:
            // it goes to the one-event path, which runs after this statement has committed.
            if !seen.insert(job_id(op)) {
                planned.jobs.push(None);
                continue;
            }
            let job = match op {
                LifecycleOp::Start { job, audit } => {
                    let row = JobRow::new_job(job, &audit.correlation_id, now);
                    if !row.reads_back_as_written() {
                        planned.jobs.push(None);
                        continue;
                    }
                    let stored = row.clone().into_job(now)?;
                    planned.inserts.push(row);
                    planned
                        .nodes
                        .extend(job.nodes.iter().map(|n| (job.id.clone(), n.clone())));
                    planned.record(None, &stored, "create", audit)?;
                    stored
                }
                LifecycleOp::Finish { id, finish, audit } => {
                    let Some((row, seen)) = current
                        .remove(id.as_str())
                        .filter(|(row, _)| row.is_running())
                    else {
                        planned.jobs.push(None);
                        continue;
                    };
                    let after = row.finished(finish);
                    let updated = after.clone().into_job(now)?;
                    planned.finishes.push((after, seen));
                    planned.record(
                        Some(JobState::Running),
                        &updated,
                        "update",
                        &finish_audit(&updated, finish, audit),
                    )?;
                    updated
                }
            };
            planned.jobs.push(Some(job));
        }
        Ok(planned)
    }

    /// Applies the new jobs and the ends of running jobs of `ops`, with their node, audit and
    /// event-log rows, in one statement (its own transaction). Returns, per op, what was
    /// applied, or `None` for an op left to the one-event path.
    pub(in crate::store) async fn apply_common(
        pool: &PgPool,
        ops: &[LifecycleOp],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<Applied>>> {
        let ending: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                LifecycleOp::Finish { id, .. } => Some(id.as_str()),
                LifecycleOp::Start { .. } => None,
            })
            .collect();
        let planned = plan(ops, read_rows(pool, ending).await?, now)?;
        if planned.jobs.iter().all(Option::is_none) {
            return Ok(none_applied(ops));
        }
        let written = write(pool, &planned, now).await?;
        Ok(planned
            .jobs
            .into_iter()
            .map(|job| {
                job.filter(|j| written.contains(&j.id))
                    .map(|j| Applied::Done(Box::new(j)))
            })
            .collect())
    }

    /// The statement of `planned`; the ids of the jobs it wrote.
    pub(super) async fn write(
        pool: &PgPool,
        planned: &Planned,
        now: DateTime<Utc>,
    ) -> StoreResult<HashSet<String>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("WITH s AS (");
        push_insert_of_rows(&mut qb, &planned.inserts, now)?;
        qb.push("), f AS (");
        push_finish_of_rows(&mut qb, &planned.finishes, now);
        qb.push(
            "), written AS (SELECT id FROM s UNION ALL SELECT id FROM f), \
             n AS (INSERT INTO job_nodes (job_id, node) SELECT u.job_id, u.node FROM UNNEST(",
        );
        qb.push_bind(
            planned
                .nodes
                .iter()
                .map(|(j, _)| j.as_str())
                .collect::<Vec<_>>(),
        );
        qb.push("::text[], ");
        qb.push_bind(
            planned
                .nodes
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>(),
        );
        qb.push("::text[]) AS u(job_id, node) WHERE u.job_id IN (SELECT id FROM s) ON CONFLICT DO NOTHING), ");
        push_audit_insert(
            &mut qb,
            now,
            &planned.audits,
            "WHERE u.job_id IN (SELECT id FROM written)",
        )?;
        // Counting `written` runs both writes to the end before the lock is taken.
        qb.push(format!(
            ", lock AS ({} FROM (SELECT count(*) FROM written) AS all_written), e AS (",
            crate::store::postgres::EVENT_ORDER_LOCK
        ));
        push_event_insert(
            &mut qb,
            now,
            &planned.events,
            "WHERE e.job_id IN (SELECT id FROM written)",
        );
        qb.push(") SELECT id FROM written");
        Ok(qb
            .build_query_scalar::<String>()
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect())
    }

    /// `a AS (INSERT INTO job_audit_events ... FROM UNNEST(...) <filter> ORDER BY u.n)`.
    fn push_audit_insert(
        qb: &mut QueryBuilder<Postgres>,
        now: DateTime<Utc>,
        audits: &AuditRows,
        filter: &str,
    ) -> StoreResult<()> {
        qb.push(
            "a AS (INSERT INTO job_audit_events (job_id, change_type, changed_at, changed_by, \
             source, correlation_id, job_snapshot, actor) \
             SELECT u.job_id, u.change_type, ",
        );
        qb.push_bind(now);
        qb.push(
            ", u.changed_by, u.source, u.correlation_id, u.snapshot::jsonb, u.actor FROM UNNEST(",
        );
        let snapshots: Vec<String> = audits
            .iter()
            .map(|(.., s)| crate::store::queries::to_json(s))
            .collect::<Result<_, _>>()?;
        qb.push_bind(column(audits, |a| Some(a.0.as_str())));
        qb.push("::text[], ");
        qb.push_bind(column(audits, |a| Some(a.1)));
        qb.push("::text[], ");
        qb.push_bind(column(audits, |a| Some(a.2.changed_by.as_str())));
        qb.push("::text[], ");
        qb.push_bind(column(audits, |a| Some(a.2.source.as_str())));
        qb.push("::text[], ");
        qb.push_bind(column(audits, |a| Some(a.2.correlation_id.as_str())));
        qb.push("::text[], ");
        qb.push_bind(snapshots);
        qb.push("::text[], ");
        qb.push_bind(column(audits, |a| a.2.actor.as_deref()));
        qb.push(format!(
            "::text[]) WITH ORDINALITY AS u(job_id, change_type, changed_by, source, \
             correlation_id, snapshot, actor, n) {filter} ORDER BY u.n)"
        ));
        Ok(())
    }

    /// `INSERT INTO events ... FROM lock, UNNEST(...) <filter> ORDER BY e.n`: joined to the
    /// `lock` CTE, so no event id is drawn before the event-order lock is held.
    fn push_event_insert(
        qb: &mut QueryBuilder<Postgres>,
        now: DateTime<Utc>,
        events: &[QueuedEvent],
        filter: &str,
    ) {
        qb.push("INSERT INTO events (occurred_at, kind, job_id, payload, sample_id) SELECT ");
        qb.push_bind(now);
        qb.push(", e.kind, e.job_id, e.payload::json, e.sample_id FROM lock, UNNEST(");
        qb.push_bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>());
        qb.push("::text[], ");
        qb.push_bind(
            events
                .iter()
                .map(|e| e.job_id.as_deref())
                .collect::<Vec<_>>(),
        );
        qb.push("::text[], ");
        qb.push_bind(
            events
                .iter()
                .map(|e| e.payload.as_str())
                .collect::<Vec<_>>(),
        );
        qb.push("::text[], ");
        qb.push_bind(events.iter().map(|e| e.sample_id).collect::<Vec<_>>());
        qb.push(format!(
            "::int8[]) WITH ORDINALITY AS e(kind, job_id, payload, sample_id, n) {filter} ORDER BY e.n"
        ));
    }

    /// Appends the queued `job_nodes`, audit and event-log rows of a batch in one statement;
    /// `true`: they are written.
    /// The event-order lock and its notification (`EVENT_ORDER_LOCK`) are taken in the same
    /// statement, before any event id is drawn: the event rows are joined to the lock's row and
    /// sorted, so none is inserted before the lock is held.
    pub(in crate::store) async fn flush(
        conn: &mut PgConnection,
        now: DateTime<Utc>,
        nodes: &[(String, String)],
        audits: &AuditRows,
        events: &[QueuedEvent],
    ) -> StoreResult<bool> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("WITH ");
        if !nodes.is_empty() {
            qb.push("n AS (INSERT INTO job_nodes (job_id, node) SELECT * FROM UNNEST(");
            qb.push_bind(nodes.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>());
            qb.push("::text[], ");
            qb.push_bind(nodes.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>());
            qb.push("::text[]) ON CONFLICT DO NOTHING), ");
        }
        if !audits.is_empty() {
            push_audit_insert(&mut qb, now, audits, "")?;
            qb.push(", ");
        }
        if events.is_empty() {
            qb.push("done AS (SELECT 1) SELECT 1");
        } else {
            qb.push(format!(
                "lock AS ({}) ",
                crate::store::postgres::EVENT_ORDER_LOCK
            ));
            push_event_insert(&mut qb, now, events, "");
        }
        qb.build().execute(&mut *conn).await?;
        Ok(true)
    }
}

pub(super) mod sqlite {
    use super::*;
    use sqlx::{SqliteConnection, SqlitePool};

    /// SQLite runs in-process: each statement is a function call, and the one-event path
    /// settles every op.
    pub(in crate::store) async fn apply_common(
        _pool: &SqlitePool,
        ops: &[LifecycleOp],
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<Applied>>> {
        Ok(none_applied(ops))
    }

    /// Leaves the queued rows to `WriteTx::commit` (`false`).
    pub(in crate::store) async fn flush(
        _conn: &mut SqliteConnection,
        _now: DateTime<Utc>,
        _nodes: &[(String, String)],
        _audits: &AuditRows,
        _events: &[QueuedEvent],
    ) -> StoreResult<bool> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::postgres::*;
    use super::*;
    use crate::domain::{Job, JobState};
    use crate::store::{Backend, Finish};

    /// A job whose row changes between the batch's read and its statement (a sample batch
    /// raising its counts) is not ended from the stale row: the statement leaves it, writes no
    /// audit or event row for it, and the one-event path ends it from the row as it is.
    #[tokio::test]
    async fn a_row_changed_after_it_was_read_is_left_to_the_one_event_path() {
        let Some((store, url)) = crate::store::test_postgres_store().await else {
            return;
        };
        let Backend::Postgres(pool) = store.backend.clone() else {
            unreachable!("a PostgreSQL store")
        };
        let audit = AuditContext {
            changed_by: "test".into(),
            source: "test".into(),
            correlation_id: "c-1".into(),
            actor: None,
        };
        let job = Job::new(
            "77".into(),
            "alice".into(),
            vec!["n1".into()],
            JobState::Running,
            chrono::Utc::now() - chrono::Duration::minutes(5),
            "default",
            "slurm",
            "test",
        );
        store.create_job(&job, &audit).await.unwrap();
        let finish = Finish {
            state: JobState::Completed,
            end_time: chrono::Utc::now(),
            exit_code: Some(0),
            signal: None,
            raw_state: None,
            inherit_correlation: true,
        };
        let ops = [LifecycleOp::Finish {
            id: "77".into(),
            finish: finish.clone(),
            audit: audit.clone(),
        }];
        let now = crate::domain::now_micros();
        let read = read_rows(&pool, vec!["77"]).await.unwrap();
        let planned = plan(&ops, read, now).unwrap();
        assert!(planned.jobs[0].is_some(), "a running job's end is planned");
        sqlx::query("UPDATE jobs SET sample_count = 3 WHERE id = '77'")
            .execute(&pool)
            .await
            .unwrap();
        let events = store.last_event_id().await.unwrap();
        let written = write(&pool, &planned, now).await.unwrap();
        assert!(
            written.is_empty(),
            "the stale row was not written: {written:?}"
        );
        assert_eq!(store.last_event_id().await.unwrap(), events);
        let stored = store.get_job("77").await.unwrap();
        assert_eq!(stored.state, JobState::Running);

        // Through group commit: the one-event path ends it, counts and all.
        match store.finish_job("77", &finish, &audit).await.unwrap() {
            crate::store::Applied::Done(job) => {
                assert_eq!(job.state, JobState::Completed);
                assert_eq!(job.sample_count, 3);
            }
            other => panic!("not ended: {other:?}"),
        }
        let trail = store.audit_trail("77").await.unwrap();
        assert_eq!(trail.len(), 2, "{trail:?}");
        crate::store::drop_test_postgres_store(store, &url).await;
    }
}
