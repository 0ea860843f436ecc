//! A group-commit batch of lifecycle events in as few statements as PostgreSQL allows.
//!
//! On PostgreSQL every statement is a round trip to a server that shares the machine's cores;
//! here a batch costs the same number of them whatever its size (BENCHMARKS.md, "Hook
//! ingestion"). A batch is applied in two statements between BEGIN and COMMIT:
//! - [`postgres::prepare`]: one data-modifying CTE that inserts every started job and moves
//!   every finished job that is running to its terminal state, returning the rows written;
//! - [`postgres::flush`]: one data-modifying CTE that appends the node, audit and event-log
//!   rows, taking the event-order lock (and its notification) before the event ids are drawn.
//!
//! `prepare` settles only the common cases (a new job; a running job that ends); what it leaves
//! (a repeated job-started, a job that is pending, unknown or terminal) goes through the
//! one-event path of `queries/jobs.rs` in the same transaction, so every event keeps its meaning.
//! So does every op after the first on one job (every node of a job runs its epilog): sibling
//! CTEs see one snapshot, and the second event must see the first, which the one-event path,
//! later in the transaction, does. SQLite runs in-process, where statements are cheap,
//! and keeps the one-event path ([`sqlite::prepare`] settles nothing, [`sqlite::flush`] writes
//! nothing).

use super::queries::QueuedEvent;
use super::{AuditContext, LifecycleOp, StoreResult};
use crate::domain::Job;
use chrono::{DateTime, Utc};

/// Audit rows queued by a write transaction: (job id, change type, context, snapshot).
pub(super) type AuditRows = [(String, &'static str, AuditContext, serde_json::Value)];

/// Per op, true when it is the first of `ops` about its job: only those can be prepared in one
/// statement, since sibling CTEs see one snapshot and a second op on a job must see the first.
fn first_of_their_job(ops: &[LifecycleOp]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    ops.iter().map(|op| seen.insert(op.job_id())).collect()
}

/// One text column of the audit rows, as an array parameter.
fn column<'a>(
    audits: &'a AuditRows,
    field: impl Fn(&'a (String, &'static str, AuditContext, serde_json::Value)) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    audits.iter().map(field).collect()
}

pub(super) mod postgres {
    use super::*;
    use crate::domain::JobState;
    use crate::store::queries::{JobRow, JOB_COLUMNS};
    use sqlx::{PgConnection, Postgres, QueryBuilder};

    /// The `jobs` row of a job-started, bound in `JOB_COLUMNS` order (see `queries/jobs.rs`).
    pub(in crate::store) type PushJob = fn(
        &mut sqlx::query_builder::Separated<'_, Postgres, &'static str>,
        &Job,
        &str,
        DateTime<Utc>,
    );

    /// Applies the new jobs and the ends of running jobs of `ops` in one statement. Returns,
    /// per op, the row written (a new job, or a job that was running and is now terminal), or
    /// `None` for an op left to the one-event path.
    pub(in crate::store) async fn prepare(
        conn: &mut PgConnection,
        ops: &[LifecycleOp],
        push_job: PushJob,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<Job>>> {
        let mut written = vec![None; ops.len()];
        let first = first_of_their_job(ops);
        let starts: Vec<(usize, &Job, &AuditContext)> = ops
            .iter()
            .zip(&first)
            .enumerate()
            .filter_map(|(i, (op, first))| match op {
                LifecycleOp::Start { job, audit } if *first => Some((i, &**job, audit)),
                _ => None,
            })
            .collect();
        let finishes: Vec<_> = ops
            .iter()
            .zip(&first)
            .filter_map(|(op, first)| match op {
                LifecycleOp::Finish { id, finish, .. } if *first => Some((id, finish)),
                _ => None,
            })
            .collect();
        if starts.is_empty() && finishes.is_empty() {
            return Ok(written);
        }
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("WITH ");
        if !starts.is_empty() {
            qb.push(format!("s AS (INSERT INTO jobs ({JOB_COLUMNS}) "));
            qb.push_values(&starts, |mut b, (_, job, audit)| {
                push_job(&mut b, job, &audit.correlation_id, now)
            });
            qb.push(format!(
                " ON CONFLICT (id) DO NOTHING RETURNING {JOB_COLUMNS}), "
            ));
        }
        if !finishes.is_empty() {
            // The same assignments as the one-event finish of a running job (`finish_in`).
            qb.push(
                "f AS (UPDATE jobs j SET state = u.state, \
                 end_time = CASE WHEN u.end_time < j.start_time THEN j.start_time ELSE u.end_time END, \
                 runtime_seconds = GREATEST(0, EXTRACT(EPOCH FROM (u.end_time - j.start_time)))::DOUBLE PRECISION, \
                 exit_code = u.exit_code, signal = u.signal, scheduler_exit_code = u.exit_code, \
                 raw_state = COALESCE(u.raw_state, j.raw_state), updated_at = ",
            );
            qb.push_bind(now);
            qb.push(" FROM UNNEST(");
            qb.push_bind(
                finishes
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>(),
            );
            qb.push("::text[], ");
            qb.push_bind(
                finishes
                    .iter()
                    .map(|(_, f)| f.state.as_str())
                    .collect::<Vec<_>>(),
            );
            qb.push("::text[], ");
            qb.push_bind(finishes.iter().map(|(_, f)| f.end_time).collect::<Vec<_>>());
            qb.push("::timestamptz[], ");
            qb.push_bind(
                finishes
                    .iter()
                    .map(|(_, f)| f.exit_code)
                    .collect::<Vec<_>>(),
            );
            qb.push("::int8[], ");
            qb.push_bind(finishes.iter().map(|(_, f)| f.signal).collect::<Vec<_>>());
            qb.push("::int8[], ");
            qb.push_bind(
                finishes
                    .iter()
                    .map(|(_, f)| f.raw_state.as_deref())
                    .collect::<Vec<_>>(),
            );
            qb.push(
                "::text[]) AS u(id, state, end_time, exit_code, signal, raw_state) \
                 WHERE j.id = u.id AND j.state = ",
            );
            qb.push_bind(JobState::Running.as_str());
            let returning: Vec<String> = JOB_COLUMNS
                .split(',')
                .map(|c| format!("j.{}", c.trim()))
                .collect();
            qb.push(format!(" RETURNING {}), ", returning.join(", ")));
        }
        qb.push(format!(
            "none AS (SELECT {JOB_COLUMNS} FROM jobs WHERE false) "
        ));
        let parts: Vec<&str> = [
            (!starts.is_empty()).then_some("s"),
            (!finishes.is_empty()).then_some("f"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let selects: Vec<String> = parts
            .iter()
            .map(|p| format!("SELECT {JOB_COLUMNS} FROM {p}"))
            .collect();
        qb.push(selects.join(" UNION ALL "));
        let rows: Vec<JobRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
        let mut by_id: std::collections::HashMap<String, Job> = rows
            .into_iter()
            .map(|r| r.into_job(now).map(|j| (j.id.clone(), j)))
            .collect::<Result<_, _>>()?;
        for ((slot, op), first) in written.iter_mut().zip(ops).zip(first) {
            if first {
                *slot = by_id.remove(op.job_id());
            }
        }
        Ok(written)
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
            qb.push(
                "a AS (INSERT INTO job_audit_events (job_id, change_type, changed_at, changed_by, \
                 source, correlation_id, job_snapshot, actor) \
                 SELECT u.job_id, u.change_type, ",
            );
            qb.push_bind(now);
            qb.push(", u.changed_by, u.source, u.correlation_id, u.snapshot::jsonb, u.actor FROM UNNEST(");
            let snapshots: Vec<String> = audits
                .iter()
                .map(|(.., s)| super::super::queries::to_json(s))
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
            qb.push(
                "::text[]) WITH ORDINALITY AS u(job_id, change_type, changed_by, source, \
                 correlation_id, snapshot, actor, n) ORDER BY u.n), ",
            );
        }
        if events.is_empty() {
            qb.push("done AS (SELECT 1) SELECT 1");
        } else {
            qb.push(format!(
                "lock AS ({}) INSERT INTO events (occurred_at, kind, job_id, payload, sample_id) SELECT ",
                crate::store::postgres::EVENT_ORDER_LOCK
            ));
            qb.push_bind(now);
            qb.push(", e.kind, e.job_id, e.payload::json, e.sample_id FROM lock, UNNEST(");
            qb.push_bind(events.iter().map(|e| e.stored_kind()).collect::<Vec<_>>());
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
            qb.push(
                "::int8[]) WITH ORDINALITY AS e(kind, job_id, payload, sample_id, n) ORDER BY e.n",
            );
        }
        qb.build().execute(&mut *conn).await?;
        Ok(true)
    }
}

pub(super) mod sqlite {
    use super::*;
    use sqlx::{Sqlite, SqliteConnection};

    /// Same shape as [`super::postgres::PushJob`].
    pub(in crate::store) type PushJob = fn(
        &mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>,
        &Job,
        &str,
        DateTime<Utc>,
    );

    /// SQLite runs in-process: each statement is a function call, and the one-event path
    /// settles every op.
    pub(in crate::store) async fn prepare(
        _conn: &mut SqliteConnection,
        ops: &[LifecycleOp],
        _push_job: PushJob,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<Job>>> {
        Ok(vec![None; ops.len()])
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
