//! Rollups (issue 19): the store side of `domain::rollup`. Owns four tables and nothing else:
//! `sample_rollups` (5-minute buckets per job and node), `sample_rollups_coarse` (the coarser
//! levels of `rollup::COARSE_SECONDS`, 15 minutes and an hour, folded from the 5-minute
//! buckets, so a long job's chart reads few rows), `rollup_state` (how far the raw samples are
//! rolled up, from where the coarse levels are built, and from where raw samples may be gone)
//! and `job_sample_archive` (what a job's record and report read from its samples, kept when
//! its last raw sample expires).
//!
//! Raw samples are read only through the store's domain API ([`Store::list_samples`],
//! [`Store::report_inputs`], [`Store::prune`]), never by their table layout, so the sample
//! storage can change under this module.
//!
//! Correctness rests on four rules:
//! - a bucket is always rewritten whole from the raw samples (replace, never add), and only
//!   while every raw sample of it exists, so a pass run twice, or cut off and run again, writes
//!   the same rows;
//! - a coarse bucket is rewritten whole from the 5-minute buckets, in the transaction that
//!   writes any of them, and is read only between `coarse_from` and `rolled_until`;
//! - `rolled_until` moves only after the buckets before it are committed;
//! - [`Store::retire`] never prunes raw samples past `rolled_until` (nor past a 5-minute
//!   boundary, so no bucket is ever half pruned), and archives every job whose samples all go.

use crate::domain::report::{DeviceSummary, NodeSummary, Thresholds};
use crate::domain::rollup::{
    self, Bucket, Buckets, COARSEST_SECONDS, COARSE_SECONDS, STORED_SECONDS,
};
use crate::domain::{now_micros, MetricSample};
use crate::store::{SampleQuery, Store, StoreError, StoreResult};
use chrono::{DateTime, Duration, Utc};

/// Each pass rewrites the buckets of this much before `rolled_until` again, for samples that
/// arrived late (an agent's spool after an outage, a slow batch).
pub const RELOOK: Duration = Duration::minutes(30);

/// A bucket is rolled up once it ended this long ago (batches in flight land first).
pub const SETTLE: Duration = Duration::minutes(2);

/// A pass rolls up at most this much time per step (and commits its progress after each).
pub const WINDOW: Duration = Duration::hours(6);

/// The coarse levels are folded from 5-minute buckets stored before them this much at a time
/// ([`Store::roll_up`], a database migrated with its rollups).
pub const BACKFILL_STEP: Duration = Duration::days(1);

/// ... and at most this much in one pass.
pub const BACKFILL_PER_PASS: Duration = Duration::days(7);

/// A job's stored buckets (see `buckets`): $1 the job, [$2, $3) the 5-minute ones, $4 the
/// coarse level and [$5, $6) the range read from it instead. The bounds are on (job_id,
/// bucket_start), which only the primary key (job_id, bucket_start, node) can take. Bounded on
/// `bucket_start` alone, PostgreSQL preferred the index on that column for the newest hour
/// (past the table's statistics) and read every job's buckets of the hour for each job: 72,000
/// rows, 32–200 ms a job, a 5-minute pass at 10,000 jobs 247 s (BENCHMARKS.md, "Rollups").
const BUCKETS_SQL: &str = "SELECT node, bucket_start, samples, figures FROM sample_rollups \
     WHERE job_id = $1 AND (job_id, bucket_start) >= ($1, $2) AND (job_id, bucket_start) < ($1, $3) \
     AND NOT (bucket_start >= $5 AND bucket_start < $6) \
     UNION ALL \
     SELECT node, bucket_start, samples, figures FROM sample_rollups_coarse \
     WHERE job_id = $1 AND seconds = $4 AND bucket_start >= $5 AND bucket_start < $6 \
     ORDER BY bucket_start";

/// Jobs archived per query page.
const ARCHIVE_PAGE: i64 = 500;

/// What one [`Store::roll_up`] pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupPass {
    pub jobs: usize,
    pub buckets: usize,
    /// `rolled_until` after the pass.
    pub rolled_until: Option<DateTime<Utc>>,
}

/// What one [`Store::retire`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retired {
    /// Raw samples are pruned before this (`None`: nothing is rolled up yet, nothing pruned).
    pub horizon: Option<DateTime<Utc>>,
    pub archived_jobs: usize,
    pub samples: u64,
    pub events: u64,
    pub rollups: u64,
}

/// `rollup_state`: `(rolled_until, raw_pruned_before, coarse_from)`.
type State = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// An archived job: its newest sample and its report's inputs.
type ArchiveRow = (Option<String>, String, String);

macro_rules! backend {
    ($name:ident, $db:ty, $begin:expr) => {
        mod $name {
            use super::*;
            use sqlx::{Pool, QueryBuilder};

            /// `(rolled_until, raw_pruned_before, coarse_from)`.
            pub(super) async fn state(pool: &Pool<$db>) -> StoreResult<State> {
                Ok(sqlx::query_as(
                    "SELECT rolled_until, raw_pruned_before, coarse_from \
                     FROM rollup_state WHERE id = 1",
                )
                .fetch_one(pool)
                .await?)
            }

            pub(super) async fn oldest_start(
                pool: &Pool<$db>,
            ) -> StoreResult<Option<DateTime<Utc>>> {
                Ok(sqlx::query_scalar("SELECT MIN(start_time) FROM jobs")
                    .fetch_one(pool)
                    .await?)
            }

            pub(super) async fn set_rolled_until(
                pool: &Pool<$db>,
                t: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query("UPDATE rollup_state SET rolled_until = $1 WHERE id = 1")
                    .bind(t)
                    .execute(pool)
                    .await?;
                Ok(())
            }

            pub(super) async fn set_pruned_before(
                pool: &Pool<$db>,
                t: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query("UPDATE rollup_state SET raw_pruned_before = $1 WHERE id = 1")
                    .bind(t)
                    .execute(pool)
                    .await?;
                Ok(())
            }

            /// Jobs that may have samples in [from, to): started before `to` (with an hour
            /// for clock skew) and not ended before `from`.
            pub(super) async fn active_jobs(
                pool: &Pool<$db>,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE start_time < $2 \
                     AND (end_time IS NULL OR end_time >= $1) ORDER BY id",
                )
                .bind(from)
                .bind(to + Duration::hours(1))
                .fetch_all(pool)
                .await?)
            }

            /// Upserts `rows` (each with its width: [`STORED_SECONDS`] rows go to
            /// `sample_rollups`, coarser ones to `sample_rollups_coarse`) in one transaction.
            pub(super) async fn put_buckets(
                pool: &Pool<$db>,
                job_id: &str,
                rows: &[(i64, Bucket)],
            ) -> StoreResult<()> {
                let (fine, coarse): (Vec<_>, Vec<_>) =
                    rows.iter().partition(|(width, _)| *width == STORED_SECONDS);
                let mut tx = pool.begin_with($begin).await?;
                for chunk in fine.chunks(500) {
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO sample_rollups (job_id, node, bucket_start, samples, figures) ",
                    );
                    qb.push_values(chunk, |mut row, (_, b)| {
                        row.push_bind(job_id.to_owned())
                            .push_bind(b.node.clone())
                            .push_bind(b.start)
                            .push_bind(b.samples)
                            .push_bind(rollup::encode(b));
                    });
                    qb.push(
                        " ON CONFLICT (job_id, bucket_start, node) DO UPDATE \
                         SET samples = excluded.samples, figures = excluded.figures",
                    );
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in coarse.chunks(500) {
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO sample_rollups_coarse \
                         (job_id, seconds, bucket_start, node, samples, figures) ",
                    );
                    qb.push_values(chunk, |mut row, (width, b)| {
                        row.push_bind(job_id.to_owned())
                            .push_bind(*width)
                            .push_bind(b.start)
                            .push_bind(b.node.clone())
                            .push_bind(b.samples)
                            .push_bind(rollup::encode(b));
                    });
                    qb.push(
                        " ON CONFLICT (job_id, seconds, bucket_start, node) DO UPDATE \
                         SET samples = excluded.samples, figures = excluded.figures",
                    );
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// Job `job_id`'s stored buckets starting in [from, to), in one query: the
            /// `level`-second ones (a coarse level) starting in `coarse` (a range of whole
            /// `level` buckets; empty for none), the 5-minute ones elsewhere.
            pub(super) async fn buckets(
                pool: &Pool<$db>,
                job_id: &str,
                (from, to): (Option<DateTime<Utc>>, DateTime<Utc>),
                level: i64,
                coarse: (DateTime<Utc>, DateTime<Utc>),
            ) -> StoreResult<Vec<Bucket>> {
                let from = from.unwrap_or(DateTime::UNIX_EPOCH);
                let rows: Vec<(String, DateTime<Utc>, i64, Vec<u8>)> = sqlx::query_as(BUCKETS_SQL)
                .bind(job_id)
                .bind(from)
                .bind(to)
                .bind(level)
                .bind(coarse.0)
                .bind(coarse.1)
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|(node, start, samples, figures)| {
                        let (figures, gpus) = rollup::decode(&figures)
                            .map_err(|e| StoreError::Corrupt(format!("sample_rollups: {e}")))?;
                        Ok(Bucket {
                            start,
                            node,
                            samples,
                            figures,
                            gpus,
                        })
                    })
                    .collect()
            }

            pub(super) async fn set_coarse_from(
                pool: &Pool<$db>,
                t: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query("UPDATE rollup_state SET coarse_from = $1 WHERE id = 1")
                    .bind(t)
                    .execute(pool)
                    .await?;
                Ok(())
            }

            pub(super) async fn oldest_bucket(
                pool: &Pool<$db>,
            ) -> StoreResult<Option<DateTime<Utc>>> {
                Ok(sqlx::query_scalar("SELECT MIN(bucket_start) FROM sample_rollups")
                    .fetch_one(pool)
                    .await?)
            }

            /// Jobs with 5-minute buckets starting in [from, to).
            pub(super) async fn jobs_with_buckets(
                pool: &Pool<$db>,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT job_id FROM sample_rollups \
                     WHERE bucket_start >= $1 AND bucket_start < $2 ORDER BY job_id",
                )
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?)
            }

            pub(super) async fn delete_before(
                pool: &Pool<$db>,
                t: DateTime<Utc>,
            ) -> StoreResult<u64> {
                let mut tx = pool.begin_with($begin).await?;
                let deleted = sqlx::query("DELETE FROM sample_rollups WHERE bucket_start < $1")
                    .bind(t)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM sample_rollups_coarse WHERE bucket_start < $1")
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(deleted)
            }

            /// Jobs not archived yet that started before `horizon` and did not end after it,
            /// by id after `after`.
            pub(super) async fn archive_candidates(
                pool: &Pool<$db>,
                horizon: DateTime<Utc>,
                after: &str,
            ) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM jobs j WHERE start_time < $1 \
                     AND (end_time IS NULL OR end_time < $1) AND id > $2 \
                     AND NOT EXISTS (SELECT 1 FROM job_sample_archive a WHERE a.job_id = j.id) \
                     ORDER BY id LIMIT $3",
                )
                .bind(horizon)
                .bind(after)
                .bind(ARCHIVE_PAGE)
                .fetch_all(pool)
                .await?)
            }

            pub(super) async fn put_archive(
                pool: &Pool<$db>,
                job_id: &str,
                row: &ArchiveRow,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO job_sample_archive \
                     (job_id, archived_at, newest_sample, report_nodes, report_devices) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1) \
                     ON CONFLICT (job_id) DO NOTHING",
                )
                .bind(job_id)
                .bind(now_micros())
                .bind(&row.0)
                .bind(&row.1)
                .bind(&row.2)
                .execute(pool)
                .await?;
                Ok(())
            }

            pub(super) async fn archive(
                pool: &Pool<$db>,
                job_id: &str,
            ) -> StoreResult<Option<ArchiveRow>> {
                Ok(sqlx::query_as(
                    "SELECT newest_sample, report_nodes, report_devices \
                     FROM job_sample_archive WHERE job_id = $1",
                )
                .bind(job_id)
                .fetch_optional(pool)
                .await?)
            }
        }
    };
}

backend!(sqlite, sqlx::Sqlite, "BEGIN IMMEDIATE");
backend!(postgres, sqlx::Postgres, "BEGIN");

/// Calls the same function of this module's backend modules on the store's pool.
macro_rules! on {
    ($self:ident, $func:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            super::Backend::Sqlite(pool) => sqlite::$func(pool, $($arg),*).await,
            super::Backend::Postgres(pool) => postgres::$func(pool, $($arg),*).await,
        }
    };
}

/// 5-minute buckets folded into each coarse level, with their widths.
fn coarse_rows(buckets: impl IntoIterator<Item = Bucket>) -> impl Iterator<Item = (i64, Bucket)> {
    let buckets: Vec<Bucket> = buckets.into_iter().collect();
    COARSE_SECONDS.into_iter().flat_map(move |width| {
        let mut coarse = Buckets::new();
        rollup::coarsen(buckets.iter().cloned(), width, &mut coarse);
        coarse.into_values().map(move |b| (width, b))
    })
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("job_sample_archive.{what}: {e}"))
}

impl Store {
    /// `(rolled_until, raw_pruned_before)`: every raw sample before the first is in the
    /// rollups; raw samples before the second may be gone.
    pub async fn rollup_state(
        &self,
    ) -> StoreResult<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
        let (rolled_until, pruned, _) = on!(self, state())?;
        Ok((rolled_until, pruned))
    }

    /// All of job `id`'s samples in [from, to), as domain samples.
    async fn raw_samples(
        &self,
        id: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<MetricSample>> {
        let query = SampleQuery {
            start: from,
            end: to,
            limit: i64::MAX,
        };
        let (mut samples, _) = self.list_samples(id, &query).await?;
        if let Some(to) = to {
            samples.retain(|s| s.timestamp < to);
        }
        Ok(samples)
    }

    /// Rolls up every job's samples in the 5-minute buckets that ended [`SETTLE`] before `now`:
    /// from [`RELOOK`] before `rolled_until` (never before `raw_pruned_before`), or on the
    /// first pass from the oldest job's start. Works through [`WINDOW`]s, moving `rolled_until`
    /// after each, so a long first pass that is cut off resumes where it was. Idempotent.
    pub async fn roll_up(&self, now: DateTime<Utc>) -> StoreResult<RollupPass> {
        let started = std::time::Instant::now();
        let result = self.roll_up_inner(now).await;
        self.observe("roll_up", started, &result);
        result
    }

    async fn roll_up_inner(&self, now: DateTime<Utc>) -> StoreResult<RollupPass> {
        let (rolled_until, pruned, mut coarse_from) = on!(self, state())?;
        let to = rollup::bucket_start(now - SETTLE, STORED_SECONDS);
        let from = match rolled_until {
            Some(t) => t - RELOOK,
            None => match on!(self, oldest_start())? {
                Some(t) => t - Duration::hours(1),
                None => to,
            },
        };
        let mut from = rollup::bucket_start(from, STORED_SECONDS).max(pruned.unwrap_or(from));
        let mut pass = RollupPass {
            rolled_until,
            ..RollupPass::default()
        };
        while from < to {
            let until = (from + WINDOW).min(to);
            self.roll_up_window(from, until, &mut pass).await?;
            if coarse_from.is_none() {
                // The first pass since the coarse levels exist: they are whole from the first
                // coarsest bucket this window began; `backfill_coarse` folds what lies before.
                let t = rollup::bucket_ceil(from, COARSEST_SECONDS);
                on!(self, set_coarse_from(t))?;
                coarse_from = Some(t);
            }
            let watermark = pass.rolled_until.map_or(until, |t| t.max(until));
            on!(self, set_rolled_until(watermark))?;
            pass.rolled_until = Some(watermark);
            from = until;
        }
        if let Some(t) = coarse_from {
            self.backfill_coarse(t).await?;
        }
        Ok(pass)
    }

    /// Rewrites the buckets of [from, to) of every job with samples there, and the coarse
    /// buckets that hold them.
    async fn roll_up_window(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        pass: &mut RollupPass,
    ) -> StoreResult<()> {
        for id in on!(self, active_jobs(from, to))? {
            let samples = match self.raw_samples(&id, Some(from), Some(to)).await {
                Ok(samples) => samples,
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            if samples.is_empty() {
                continue;
            }
            let mut buckets = Buckets::new();
            rollup::fold(&samples, STORED_SECONDS, &mut buckets);
            let fresh = buckets.len();
            // The coarse buckets from the start of the coarsest one holding `from`: the
            // 5-minute buckets stored before `from` (and any after it the raw samples no longer
            // make), with the fresh ones in their place.
            let start = rollup::bucket_start(from, COARSEST_SECONDS);
            let mut all = Buckets::new();
            for b in on!(
                self,
                buckets(&id, (Some(start), to), STORED_SECONDS, (to, to))
            )? {
                all.insert((b.start, b.node.clone()), b);
            }
            all.extend(buckets.iter().map(|(k, b)| (k.clone(), b.clone())));
            let mut rows: Vec<(i64, Bucket)> =
                buckets.into_values().map(|b| (STORED_SECONDS, b)).collect();
            rows.extend(coarse_rows(all.into_values()));
            if !self.put_job_buckets(&id, &rows).await? {
                continue;
            }
            pass.jobs += 1;
            pass.buckets += fresh;
        }
        Ok(())
    }

    /// Writes job `id`'s bucket `rows` ([`put_buckets`](sqlite::put_buckets)); `false` when the
    /// job was deleted meanwhile (its rollups would have gone with it).
    async fn put_job_buckets(&self, id: &str, rows: &[(i64, Bucket)]) -> StoreResult<bool> {
        match on!(self, put_buckets(id, rows)) {
            Ok(()) => Ok(true),
            Err(StoreError::Database(e))
                if e.as_database_error()
                    .is_some_and(|d| d.is_foreign_key_violation()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Folds the 5-minute buckets stored before `coarse_from` (before the coarse levels
    /// existed: a database migrated with its rollups) into the coarse levels, newest first, a
    /// [`BACKFILL_STEP`] at a time, moving `coarse_from` back after each step, at most
    /// [`BACKFILL_PER_PASS`] in one pass (the next passes go on).
    async fn backfill_coarse(&self, mut coarse_from: DateTime<Utc>) -> StoreResult<()> {
        let Some(oldest) = on!(self, oldest_bucket())? else {
            return Ok(());
        };
        let oldest = rollup::bucket_start(oldest, COARSEST_SECONDS);
        coarse_from = rollup::bucket_ceil(coarse_from, COARSEST_SECONDS);
        let stop = oldest.max(coarse_from - BACKFILL_PER_PASS);
        while coarse_from > stop {
            let from = stop.max(coarse_from - BACKFILL_STEP);
            for id in on!(self, jobs_with_buckets(from, coarse_from))? {
                let stored = on!(
                    self,
                    buckets(&id, (Some(from), coarse_from), STORED_SECONDS, (from, from))
                )?;
                let rows: Vec<_> = coarse_rows(stored).collect();
                self.put_job_buckets(&id, &rows).await?;
            }
            on!(self, set_coarse_from(from))?;
            coarse_from = from;
        }
        Ok(())
    }

    /// Retention, rollups first: rolls up what is due, archives the jobs whose samples all
    /// lie before the horizon (the 5-minute boundary at or before `before`, and never past
    /// `rolled_until`), prunes raw samples and events before it ([`Store::prune`]), and deletes
    /// rollups before `rollups_before`.
    pub async fn retire(
        &self,
        before: DateTime<Utc>,
        rollups_before: DateTime<Utc>,
        thresholds: &Thresholds,
    ) -> StoreResult<Retired> {
        let now = now_micros();
        let pass = self.roll_up(now).await?;
        let mut retired = Retired::default();
        if let Some(rolled) = pass.rolled_until {
            let horizon = rollup::bucket_start(before, STORED_SECONDS).min(rolled);
            retired.archived_jobs = self.archive_expiring(horizon, thresholds).await?;
            let (_, pruned) = self.rollup_state().await?;
            if pruned.is_none_or(|p| p < horizon) {
                on!(self, set_pruned_before(horizon))?;
            }
            (retired.samples, retired.events) = self.prune(horizon).await?;
            retired.horizon = Some(horizon);
        }
        // Whole coarsest buckets, so no coarse bucket outlives some of its 5-minute ones.
        let rollups_before = rollup::bucket_start(rollups_before, COARSEST_SECONDS);
        retired.rollups = on!(self, delete_before(rollups_before))?;
        Ok(retired)
    }

    /// Archives the newest sample and report inputs of every job whose samples all lie before
    /// `horizon` (jobs with none left are marked too, so they are looked at once).
    async fn archive_expiring(
        &self,
        horizon: DateTime<Utc>,
        thresholds: &Thresholds,
    ) -> StoreResult<usize> {
        let mut archived = 0;
        let mut after = String::new();
        loop {
            let page = on!(self, archive_candidates(horizon, &after))?;
            let Some(last) = page.last() else {
                return Ok(archived);
            };
            after = last.clone();
            for id in page {
                let newest = SampleQuery {
                    start: None,
                    end: None,
                    limit: 1,
                };
                let newest = match self.list_samples(&id, &newest).await {
                    Ok((samples, _)) => samples.into_iter().next(),
                    Err(StoreError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                if newest.as_ref().is_some_and(|s| s.timestamp >= horizon) {
                    // Still sampled past the horizon (a long-running job): not yet.
                    continue;
                }
                let job = match self.get_job(&id).await {
                    Ok(job) => job,
                    Err(StoreError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                let (nodes, devices) = self.report_inputs(&job, thresholds).await?;
                let row = (
                    newest.map(|s| serde_json::to_string(&s).unwrap_or_default()),
                    serde_json::to_string(&nodes).unwrap_or_default(),
                    serde_json::to_string(&devices).unwrap_or_default(),
                );
                on!(self, put_archive(&id, &row))?;
                archived += 1;
            }
        }
    }

    /// Job `id`'s newest sample as archived when its raw samples expired.
    pub async fn archived_newest_sample(&self, id: &str) -> StoreResult<Option<MetricSample>> {
        let Some((Some(text), _, _)) = on!(self, archive(id))? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| corrupt("newest_sample", e))
    }

    /// Job `id`'s report inputs as archived when its raw samples expired.
    pub(crate) async fn archived_report_inputs(
        &self,
        id: &str,
    ) -> StoreResult<Option<(Vec<NodeSummary>, Vec<DeviceSummary>)>> {
        let Some((_, nodes, devices)) = on!(self, archive(id))? else {
            return Ok(None);
        };
        let nodes = serde_json::from_str(&nodes).map_err(|e| corrupt("report_nodes", e))?;
        let devices = serde_json::from_str(&devices).map_err(|e| corrupt("report_devices", e))?;
        Ok(Some((nodes, devices)))
    }

    /// Job `id`'s samples in [start, end] folded into `width`-second buckets per node (width
    /// 60, or a multiple of 300): the stored rollups before `rolled_until` (the coarsest
    /// stored level that makes up `width` where it is whole, the 5-minute buckets elsewhere)
    /// and the raw samples after it (only the raw samples for widths under 300), oldest first.
    pub async fn rolled_up(
        &self,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        width: i64,
    ) -> StoreResult<Vec<Bucket>> {
        let started = std::time::Instant::now();
        let result = async {
            let (rolled_until, _, coarse_from) = on!(self, state())?;
            let mut out = Buckets::new();
            let raw_from = match rolled_until {
                Some(until) if width >= STORED_SECONDS && start.is_none_or(|s| s < until) => {
                    let to = end.map_or(until, |e| e.min(until));
                    let from = start.map(|s| rollup::bucket_start(s, STORED_SECONDS));
                    let level = rollup::stored_level(width);
                    // The whole `level` buckets in range that are built (from `coarse_from`,
                    // before `rolled_until`); `to` is at or before `rolled_until`.
                    let mut coarse = (to, to);
                    if level > STORED_SECONDS {
                        if let Some(built) = coarse_from {
                            let built = rollup::bucket_ceil(built, level);
                            let first = from.map_or(built, |f| rollup::bucket_ceil(f, level));
                            let last = rollup::bucket_start(
                                rollup::bucket_ceil(to, STORED_SECONDS),
                                level,
                            );
                            if first.max(built) < last {
                                coarse = (first.max(built), last);
                            }
                        }
                    }
                    let stored = on!(self, buckets(id, (from, to), level, coarse))?;
                    rollup::coarsen(stored, width, &mut out);
                    Some(start.map_or(until, |s| s.max(until)))
                }
                _ => start,
            };
            if end.is_none_or(|e| raw_from.is_none_or(|f| f <= e)) {
                let samples = self.raw_samples(id, raw_from, None).await?;
                let samples: Vec<_> = samples
                    .into_iter()
                    .filter(|s| end.is_none_or(|e| s.timestamp <= e))
                    .collect();
                rollup::fold(&samples, width, &mut out);
            } else {
                // Still a missing job is a 404.
                self.get_job(id).await?;
            }
            Ok(out.into_values().collect())
        }
        .await;
        self.observe("rolled_up", started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::BUCKETS_SQL;
    use sqlx::{Connection, Executor};

    /// A rollup pass reads each running job's buckets of the newest hour, which the table's
    /// statistics do not know yet. The read must go by the primary key, not by the index on
    /// `bucket_start` (which reads every job's buckets of that hour, for each job).
    #[tokio::test]
    async fn postgres_reads_a_jobs_newest_buckets_by_its_key() {
        let Some((store, url)) = crate::store::test_postgres_store().await else {
            return;
        };
        crate::store::create_test_jobs(&store, 200, |_| "node-1".into()).await;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        let fill = |hours_ago: i64| {
            format!(
                "INSERT INTO sample_rollups (job_id, node, bucket_start, samples, figures) \
                 SELECT 'job-' || (i % 200), 'node-1', \
                   date_trunc('hour', now()) - interval '{hours_ago} hours' + (i / 200) * interval '5 minutes', 20, '\\x00' \
                 FROM generate_series(0, 200 * 12 - 1) i"
            )
        };
        for hours_ago in [4, 3, 2, 1] {
            db.execute(sqlx::AssertSqlSafe(fill(hours_ago)))
                .await
                .unwrap();
        }
        db.execute("ANALYZE sample_rollups").await.unwrap();
        // The newest hour, written after the statistics were taken.
        db.execute(sqlx::AssertSqlSafe(fill(0))).await.unwrap();
        db.execute(sqlx::AssertSqlSafe(format!(
            "PREPARE buckets(text, timestamptz, timestamptz, bigint, timestamptz, timestamptz) AS {BUCKETS_SQL}"
        )))
        .await
        .unwrap();
        crate::store::assert_plan(
            &mut db,
            "EXECUTE buckets('job-7', date_trunc('hour', now()), \
             date_trunc('hour', now()) + interval '65 minutes', 3600, \
             date_trunc('hour', now()) + interval '65 minutes', date_trunc('hour', now()) + interval '65 minutes')",
            "sample_rollups_pkey",
            "sample_rollups_bucket_idx",
            "the newest buckets of one job",
        )
        .await;
        let _ = db.close().await;
        crate::store::drop_test_postgres_store(store, &url).await;
    }
}
