//! Sample packs (issue 19): the store side of `domain::sample_pack`. Owns `sample_packs`.
//!
//! Samples arrive as rows of `metric_samples`, where they are cheap to write and to read while
//! a job runs. Once an hour has been closed for [`PACK_AFTER`], [`Store::pack_closed_hours`]
//! moves each job's rows of that hour into one pack per node ([`PERIOD`]), in one transaction
//! per job: the packs are written and the rows they hold are deleted together, so a reader sees
//! every sample exactly once, in a row or in a pack. Rows thus live about an hour, and the rows
//! table stays the size of an hour of samples instead of growing with retention.
//!
//! Readers never see the difference: [`Store::list_samples`] merges packs into its answer, the
//! event log finds a packed sample by its row id ([`Store::events_after`]), and retention drops
//! packs past it ([`Store::prune`]: on PostgreSQL a day partition of `sample_packs` at a time,
//! `store::partitions`). A sample that arrives for an hour already packed (an agent's spool
//! after an outage) is stored as a row as usual and merged into the hour's pack by the next pass.

use super::partitions;
use super::queries::{SampleRow, SAMPLE_COLUMNS};
use super::{SampleQuery, Store, StoreError, StoreResult, StoredEvent};
use crate::domain::report::{SampleDigest, SummaryMerge, Thresholds};
use crate::domain::sample_pack::{self, PackedSample};
use crate::domain::{Job, MetricSample};
use chrono::{DateTime, Duration, DurationRound, Utc};
use std::collections::BTreeMap;

/// Samples are packed by the hour: one pack per job, node and UTC hour (240 samples at 15 s).
/// Rows then live about an hour, and a pack is small enough to decode for a page of samples.
pub const PERIOD: Duration = Duration::hours(1);

/// An hour is packed this long after it ends (batches in flight land first; later ones are
/// merged into its pack by a later pass).
pub const PACK_AFTER: Duration = Duration::minutes(10);

/// One transaction packs at most this much of one job's time (a backlog of rows, after an
/// upgrade, goes a day at a time).
const TX_SPAN: Duration = Duration::days(1);

/// What a pack is of: a node (none for samples posted without one) and an hour.
type PackKey = (Option<String>, DateTime<Utc>);

/// Jobs looked up per query of a pass.
const JOBS_PAGE: i64 = 200;

/// Packs deleted per statement where retention deletes them (SQLite, a default partition): a pack
/// holds up to an hour of samples, some 15 kB, so a chunk is far fewer rows than the log's.
const PRUNE_CHUNK: i64 = 200;

/// Packs without a digest (written before digests were kept) given one per pass, at most.
const DIGESTS_PER_PASS: i64 = 2_000;

/// What one [`Store::pack_closed_hours`] pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackPass {
    /// Samples moved from rows into packs.
    pub samples: u64,
    /// Packs written (new, or rewritten with late samples).
    pub packs: u64,
    /// Older packs given the digest they lacked.
    pub digests: u64,
}

/// A pack as stored, without its data.
#[derive(Debug, Clone, sqlx::FromRow)]
struct PackMeta {
    node: Option<String>,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    samples: i32,
    min_id: i64,
    max_id: i64,
}

/// A `metric_samples` row with its id.
#[derive(sqlx::FromRow)]
struct IdRow {
    id: i64,
    #[sqlx(flatten)]
    sample: SampleRow,
}

fn damaged(e: sample_pack::PackError) -> StoreError {
    StoreError::Corrupt(format!("sample_packs.data: {e}"))
}

/// The digest of a pack's samples (in any order), as stored beside it; a pack of samples posted
/// without a node is digested under the name "" (readers give it the job's first node, as for
/// rows).
fn digest_of(
    node: Option<&str>,
    samples: &[PackedSample],
    thresholds: &Thresholds,
) -> SampleDigest {
    let mut oldest_first: Vec<&MetricSample> = samples.iter().map(|(_, s)| s).collect();
    oldest_first.sort_by_key(|s| s.timestamp);
    SampleDigest::of(node.unwrap_or(""), oldest_first, thresholds)
}

/// The start of the [`PERIOD`] that holds `t`.
fn period_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(PERIOD).unwrap_or(t)
}

macro_rules! backend {
    ($name:ident, $db:ty, $begin:expr, $lock:literal, $row:literal) => {
        mod $name {
            use super::*;
            use sqlx::types::Json;
            use sqlx::{Pool, QueryBuilder};

            /// Jobs with sample rows before `before`, by id after `after`.
            pub(super) async fn jobs_with_rows_before(
                pool: &Pool<$db>,
                before: DateTime<Utc>,
                after: &str,
            ) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT job_id FROM metric_samples \
                     WHERE timestamp < $1 AND job_id > $2 ORDER BY job_id LIMIT $3",
                )
                .bind(before)
                .bind(after)
                .bind(JOBS_PAGE)
                .fetch_all(pool)
                .await?)
            }

            /// Moves job `job_id`'s rows before `before` into packs, at most [`TX_SPAN`] of
            /// them from the oldest on. Returns (samples moved, packs written), or `None` when
            /// it has no rows before `before`.
            pub(super) async fn pack_oldest(
                pool: &Pool<$db>,
                job_id: &str,
                before: DateTime<Utc>,
                thresholds: &Thresholds,
            ) -> StoreResult<Option<(u64, u64)>> {
                let mut tx = pool.begin_with($begin).await?;
                let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT MIN(timestamp) FROM metric_samples WHERE job_id = $1 AND timestamp < $2",
                )
                .bind(job_id)
                .bind(before)
                .fetch_one(&mut *tx)
                .await?;
                let Some(oldest) = oldest else {
                    return Ok(None);
                };
                let from = period_start(oldest);
                let to = (from + TX_SPAN).min(before);
                // Locked (PostgreSQL): a second server packing the same job at once waits, then
                // finds these rows gone instead of packing them twice.
                let rows: Vec<IdRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT id, {SAMPLE_COLUMNS} FROM metric_samples \
                     WHERE job_id = $1 AND timestamp >= $2 AND timestamp < $3{}",
                    $lock
                )))
                .bind(job_id)
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await?;
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let mut groups: BTreeMap<PackKey, Vec<PackedSample>> = BTreeMap::new();
                for row in rows {
                    let sample = MetricSample::from(row.sample);
                    let key = (sample.detail.node.clone(), period_start(sample.timestamp));
                    groups.entry(key).or_default().push((row.id, sample));
                }
                // Packs already made of these hours, which late rows join.
                let existing: Vec<(Option<String>, DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
                    "SELECT node, first_at, data FROM sample_packs \
                     WHERE job_id = $1 AND first_at >= $2 AND first_at < $3",
                )
                .bind(job_id)
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await?;
                let mut existing: BTreeMap<PackKey, Vec<(DateTime<Utc>, Vec<u8>)>> =
                    existing.into_iter().fold(BTreeMap::new(), |mut m, (node, first_at, data)| {
                        m.entry((node, period_start(first_at)))
                            .or_insert_with(Vec::new)
                            .push((first_at, data));
                        m
                    });
                let moved = ids.len() as u64;
                let mut packs = 0;
                for ((node, period), mut samples) in groups {
                    if let Some(old) = existing.remove(&(node.clone(), period)) {
                        let mut merged = Vec::new();
                        for (first_at, data) in old {
                            merged.extend(
                                sample_pack::decode(&data, node.as_deref()).map_err(damaged)?,
                            );
                            sqlx::query(
                                "DELETE FROM sample_packs WHERE job_id = $1 \
                                 AND node IS NOT DISTINCT FROM $2 AND first_at = $3",
                            )
                            .bind(job_id)
                            .bind(&node)
                            .bind(first_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        // A row that repeats a packed sample (same node and instant; resent
                        // by an agent) is the same sample: the packed one stays.
                        if node.is_some() {
                            let packed: std::collections::HashSet<DateTime<Utc>> =
                                merged.iter().map(|(_, s)| s.timestamp).collect();
                            samples.retain(|(_, s)| !packed.contains(&s.timestamp));
                        }
                        merged.extend(samples);
                        samples = merged;
                    }
                    let first_at = samples.iter().map(|(_, s)| s.timestamp).min();
                    let last_at = samples.iter().map(|(_, s)| s.timestamp).max();
                    let min_id = samples.iter().map(|(id, _)| *id).min();
                    let max_id = samples.iter().map(|(id, _)| *id).max();
                    let (Some(first_at), Some(last_at), Some(min_id), Some(max_id)) =
                        (first_at, last_at, min_id, max_id)
                    else {
                        continue;
                    };
                    let count = i32::try_from(samples.len())
                        .map_err(|_| StoreError::Corrupt("sample pack too large".into()))?;
                    sqlx::query(
                        "INSERT INTO sample_packs \
                         (job_id, node, first_at, last_at, samples, min_id, max_id, data, digest) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(job_id)
                    .bind(&node)
                    .bind(first_at)
                    .bind(last_at)
                    .bind(count)
                    .bind(min_id)
                    .bind(max_id)
                    .bind(sample_pack::encode(&samples))
                    .bind(Json(digest_of(node.as_deref(), &samples, thresholds)))
                    .execute(&mut *tx)
                    .await?;
                    packs += 1;
                }
                // By id, never by time: a row stored since the read above is not in a pack.
                crate::store::$name::q::delete_samples(&mut *tx, ids.into_iter()).await?;
                tx.commit().await?;
                Ok(Some((moved, packs)))
            }

            /// Job `job_id`'s packs that hold samples in [start, end], newest first.
            pub(super) async fn packs_of(
                pool: &Pool<$db>,
                job_id: &str,
                start: Option<DateTime<Utc>>,
                end: Option<DateTime<Utc>>,
            ) -> StoreResult<Vec<PackMeta>> {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT node, first_at, last_at, samples, min_id, max_id \
                     FROM sample_packs WHERE job_id = ",
                );
                qb.push_bind(job_id.to_owned());
                if let Some(start) = start {
                    qb.push(" AND last_at >= ").push_bind(start);
                }
                if let Some(end) = end {
                    qb.push(" AND first_at <= ").push_bind(end);
                }
                qb.push(" ORDER BY last_at DESC");
                Ok(qb.build_query_as().fetch_all(pool).await?)
            }

            /// The data of job `job_id`'s pack of `node` that starts at `first_at`.
            pub(super) async fn pack_data(
                pool: &Pool<$db>,
                job_id: &str,
                node: &Option<String>,
                first_at: DateTime<Utc>,
            ) -> StoreResult<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar(
                    "SELECT data FROM sample_packs WHERE job_id = $1 \
                     AND node IS NOT DISTINCT FROM $2 AND first_at = $3",
                )
                .bind(job_id)
                .bind(node)
                .bind(first_at)
                .fetch_optional(pool)
                .await?)
            }

            /// Job `job_id`'s packs' digests (`None` for a pack written before digests were
            /// kept), oldest first.
            pub(super) async fn digests_of(
                pool: &Pool<$db>,
                job_id: &str,
            ) -> StoreResult<Vec<(Option<String>, DateTime<Utc>, Option<Json<SampleDigest>>)>>
            {
                Ok(sqlx::query_as(
                    "SELECT node, first_at, digest FROM sample_packs WHERE job_id = $1 \
                     ORDER BY first_at",
                )
                .bind(job_id)
                .fetch_all(pool)
                .await?)
            }

            /// Gives up to `limit` packs that lack a digest theirs; returns how many.
            pub(super) async fn fill_digests(
                pool: &Pool<$db>,
                thresholds: &Thresholds,
                limit: i64,
            ) -> StoreResult<u64> {
                let packs: Vec<(String, Option<String>, DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
                    "SELECT job_id, node, first_at, data FROM sample_packs \
                     WHERE digest IS NULL LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await?;
                let mut filled = 0;
                for (job_id, node, first_at, data) in packs {
                    let samples = sample_pack::decode(&data, node.as_deref()).map_err(damaged)?;
                    // Only if still the same pack (a packing pass may have rewritten it).
                    filled += sqlx::query(
                        "UPDATE sample_packs SET digest = $4 WHERE job_id = $1 \
                         AND node IS NOT DISTINCT FROM $2 AND first_at = $3 AND digest IS NULL \
                         AND samples = $5",
                    )
                    .bind(&job_id)
                    .bind(&node)
                    .bind(first_at)
                    .bind(Json(digest_of(node.as_deref(), &samples, thresholds)))
                    .bind(samples.len() as i32)
                    .execute(pool)
                    .await?
                    .rows_affected();
                }
                Ok(filled)
            }

            /// Job `job_id`'s packs whose id range holds `sample_id`.
            pub(super) async fn packs_holding(
                pool: &Pool<$db>,
                job_id: &str,
                sample_id: i64,
            ) -> StoreResult<Vec<(PackMeta, Vec<u8>)>> {
                let rows: Vec<(Option<String>, DateTime<Utc>, DateTime<Utc>, i32, i64, i64, Vec<u8>)> =
                    sqlx::query_as(
                        "SELECT node, first_at, last_at, samples, min_id, max_id, data \
                         FROM sample_packs WHERE job_id = $1 AND min_id <= $2 AND max_id >= $2",
                    )
                    .bind(job_id)
                    .bind(sample_id)
                    .fetch_all(pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(node, first_at, last_at, samples, min_id, max_id, data)| {
                        (
                            PackMeta {
                                node,
                                first_at,
                                last_at,
                                samples,
                                min_id,
                                max_id,
                            },
                            data,
                        )
                    })
                    .collect())
            }

            /// Deletes the packs of `table` whose newest sample is before `before`, a bounded
            /// chunk a statement (a writer waits for one chunk at most); returns their samples.
            pub(super) async fn prune(
                pool: &Pool<$db>,
                table: &str,
                before: DateTime<Utc>,
            ) -> StoreResult<u64> {
                let sql = format!(
                    "DELETE FROM {table} WHERE {row} IN \
                     (SELECT {row} FROM {table} WHERE last_at < $1 LIMIT $2) RETURNING samples",
                    row = $row,
                );
                let mut samples = 0u64;
                loop {
                    let deleted: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(before)
                        .bind(PRUNE_CHUNK)
                        .fetch_all(pool)
                        .await?;
                    samples += deleted.iter().map(|&n| n.max(0) as u64).sum::<u64>();
                    if deleted.len() < PRUNE_CHUNK as usize {
                        return Ok(samples);
                    }
                }
            }
        }
    };
}

backend!(sqlite, sqlx::Sqlite, "BEGIN IMMEDIATE", "", "rowid");
backend!(postgres, sqlx::Postgres, "BEGIN", " FOR UPDATE", "ctid");

/// Calls the same function of this module's backend modules on the store's pool.
macro_rules! on {
    ($self:ident, $func:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            super::Backend::Sqlite(pool) => sqlite::$func(pool, $($arg),*).await,
            super::Backend::Postgres(pool) => postgres::$func(pool, $($arg),*).await,
        }
    };
}

fn in_range(s: &MetricSample, query: &SampleQuery) -> bool {
    query.start.is_none_or(|t| s.timestamp >= t) && query.end.is_none_or(|t| s.timestamp <= t)
}

impl Store {
    /// Packs every job's sample rows of the hours that ended at least [`PACK_AFTER`] before
    /// `now`: one transaction per job (and per day of its backlog), so a pass cut off resumes
    /// where it was.
    /// Each pack keeps a digest for reports, its GPUs' idle samples counted by `thresholds`.
    pub async fn pack_closed_hours(
        &self,
        now: DateTime<Utc>,
        thresholds: &Thresholds,
    ) -> StoreResult<PackPass> {
        let started = std::time::Instant::now();
        let result = self.pack_closed_hours_inner(now, thresholds).await;
        self.observe("pack_closed_hours", started, &result);
        result
    }

    async fn pack_closed_hours_inner(
        &self,
        now: DateTime<Utc>,
        thresholds: &Thresholds,
    ) -> StoreResult<PackPass> {
        let before = period_start(now - PACK_AFTER);
        let mut pass = PackPass {
            digests: on!(self, fill_digests(thresholds, DIGESTS_PER_PASS))?,
            ..PackPass::default()
        };
        let mut after = String::new();
        loop {
            let jobs = on!(self, jobs_with_rows_before(before, &after))?;
            let Some(last) = jobs.last() else {
                return Ok(pass);
            };
            after = last.clone();
            for job in &jobs {
                while let Some((samples, packs)) = on!(self, pack_oldest(job, before, thresholds))?
                {
                    pass.samples += samples;
                    pass.packs += packs;
                }
            }
        }
    }

    /// `raw` (a page of job `id`'s sample rows, newest first, and the rows' count in range) with
    /// the job's packed samples merged in: the newest `query.limit` of both, and both counted.
    pub(super) async fn with_packed_samples(
        &self,
        id: &str,
        query: &SampleQuery,
        (mut page, mut total): (Vec<MetricSample>, i64),
    ) -> StoreResult<(Vec<MetricSample>, i64)> {
        let packs = on!(self, packs_of(id, query.start, query.end))?;
        if packs.is_empty() {
            return Ok((page, total));
        }
        let limit = usize::try_from(query.limit.max(0)).unwrap_or(usize::MAX);
        let inside = |m: &PackMeta| {
            query.start.is_none_or(|t| m.first_at >= t) && query.end.is_none_or(|t| m.last_at <= t)
        };
        for meta in &packs {
            // Packs come newest first: once the page is full and holds nothing older than this
            // pack's newest sample, this pack (and every later one) adds to the count only.
            let page_full = page.len() >= limit
                && page
                    .last()
                    .is_some_and(|oldest| oldest.timestamp >= meta.last_at);
            if page_full && inside(meta) {
                total += i64::from(meta.samples);
                continue;
            }
            let Some(data) = on!(self, pack_data(id, &meta.node, meta.first_at))? else {
                continue; // packed again or pruned since the listing: its samples moved on
            };
            let samples: Vec<MetricSample> = sample_pack::decode(&data, meta.node.as_deref())
                .map_err(damaged)?
                .into_iter()
                .map(|(_, s)| s)
                .filter(|s| in_range(s, query))
                .collect();
            total += samples.len() as i64;
            if !page_full {
                page.extend(samples);
                page.sort_by_key(|s| std::cmp::Reverse(s.timestamp));
                page.truncate(limit);
            }
        }
        Ok((page, total))
    }

    /// Fills in the `sample` of `job_sample` events whose sample row was packed.
    pub(super) async fn with_packed_event_samples(
        &self,
        mut events: Vec<StoredEvent>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut cache: Vec<(String, PackMeta, Vec<PackedSample>)> = Vec::new();
        for event in &mut events {
            let (Some(sample_id), Some(job_id)) = (event.missing_sample, event.job_id.clone())
            else {
                continue;
            };
            let cached = |cache: &[(String, PackMeta, Vec<PackedSample>)]| {
                cache
                    .iter()
                    .filter(|(job, m, _)| {
                        *job == job_id && m.min_id <= sample_id && sample_id <= m.max_id
                    })
                    .find_map(|(_, _, samples)| samples.iter().find(|(i, _)| *i == sample_id))
                    .map(|(_, s)| s.clone())
            };
            let mut found = cached(&cache);
            if found.is_none() {
                for (meta, data) in on!(self, packs_holding(&job_id, sample_id))? {
                    let samples =
                        sample_pack::decode(&data, meta.node.as_deref()).map_err(damaged)?;
                    cache.push((job_id.clone(), meta, samples));
                }
                found = cached(&cache);
            }
            let Some(sample) = found else {
                continue; // gone with its job, or past retention
            };
            if let serde_json::Value::Object(fields) = &mut event.payload {
                let value = serde_json::to_value(&sample)
                    .map_err(|e| StoreError::Database(sqlx::Error::Decode(e.into())))?;
                fields.insert("sample".to_owned(), value);
            }
            event.missing_sample = None;
        }
        Ok(events)
    }

    /// Adds job `job`'s packs to a report's `merge`: each pack's stored digest, or, for a pack
    /// without one or digested under another GPU idle threshold, a digest of its samples.
    /// With `thresholds` `None` only the node tallies are wanted (any digest will do).
    pub(super) async fn add_pack_digests(
        &self,
        job: &Job,
        thresholds: Option<&Thresholds>,
        merge: &mut SummaryMerge,
    ) -> StoreResult<()> {
        let first = job.nodes.first().map(String::as_str).unwrap_or("");
        for (node, first_at, digest) in on!(self, digests_of(&job.id))? {
            let usable = digest
                .map(|d| d.0)
                .filter(|d| thresholds.is_none_or(|t| d.fits(t)));
            let mut digest = match usable {
                Some(digest) => digest,
                None => {
                    let Some(data) = on!(self, pack_data(&job.id, &node, first_at))? else {
                        continue; // packed again or pruned since the listing
                    };
                    let samples = sample_pack::decode(&data, node.as_deref()).map_err(damaged)?;
                    digest_of(None, &samples, thresholds.unwrap_or(Thresholds::site()))
                }
            };
            digest.rename(node.as_deref().unwrap_or(first));
            merge.add_digest(first_at, digest);
        }
        Ok(())
    }

    /// Deletes the packs whose newest sample is before `before`; returns how many samples went.
    /// On PostgreSQL whole day partitions go (`partitions`), then what the default partition
    /// caught; on SQLite, chunk by chunk.
    pub(super) async fn prune_packs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        match &self.backend {
            super::Backend::Sqlite(pool) => sqlite::prune(pool, "sample_packs", before).await,
            super::Backend::Postgres(pool) => {
                let dropped = partitions::drop_past(pool, &partitions::PACKS, before).await?;
                Ok(dropped + postgres::prune(pool, partitions::PACKS.default, before).await?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periods_start_on_the_hour() {
        let t = Utc.with_ymd_and_hms(2026, 12, 5, 13, 14, 15).unwrap();
        assert_eq!(
            period_start(t),
            Utc.with_ymd_and_hms(2026, 12, 5, 13, 0, 0).unwrap()
        );
        assert_eq!(period_start(period_start(t)), period_start(t));
    }
}
