//! Keeps `job_gpu_figures`: for each job, node and GPU, the running fold of its readings that
//! an efficiency report needs (samples, utilization sum, maximum and idle count, memory peak
//! and total, first and last energy reading), written in the sample batch's own transaction.
//! A report then reads one row per device instead of every sample's GPU list (a 10,000-sample
//! two-GPU job: 2 rows instead of 10,000 JSON texts; see "Job report" in BENCHMARKS.md), and
//! the figures outlive the raw samples' retention.
//!
//! A batch is folded in Rust ([`DeviceFold`], the same fold the report uses over raw samples)
//! and merged with the stored row by one upsert (rows from arrays on PostgreSQL) whose `SET` combines the two folds:
//! sums add, maxima take the larger, first and last readings compare their times (a spooled
//! batch can arrive after newer ones). Only samples the batch really inserted are folded, so a
//! batch sent twice counts once. The idle count depends on the site's idle threshold; each row
//! says which threshold it counted below, and a row whose samples were counted below different
//! ones (the threshold changed while the job ran) says NULL, which makes the report fall back
//! to reading the samples.

use crate::domain::report::{DeviceFold, DeviceSummary, Thresholds};
use crate::store::SampleItem;
use chrono::{DateTime, Utc};

/// The batch's stored GPU samples folded per job, node and device, in (job, node, device) order
/// (the order the rows are upserted in, so two batches never lock them in opposite orders). A
/// sample without a node (the compat single-sample route) is its job's first node's.
pub(in crate::store) fn fold_batch<'a>(
    stored: impl IntoIterator<Item = &'a SampleItem>,
    first_node_of: impl Fn(&str) -> Option<&'a str>,
) -> (f64, Vec<(&'a str, DeviceSummary)>) {
    let thresholds = Thresholds::site();
    let mut items: Vec<&SampleItem> = stored
        .into_iter()
        .filter(|item| !item.sample.detail.gpus.is_empty())
        .collect();
    items.sort_by(|a, b| {
        (a.job_id.as_str(), a.sample.timestamp).cmp(&(b.job_id.as_str(), b.sample.timestamp))
    });
    let mut rows = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let job_id = items[start].job_id.as_str();
        let end = start
            + items[start..]
                .iter()
                .take_while(|item| item.job_id == job_id)
                .count();
        let first = first_node_of(job_id).unwrap_or("");
        let mut fold = DeviceFold::new(thresholds);
        for item in &items[start..end] {
            let node = item.sample.detail.node.as_deref().unwrap_or(first);
            fold.add(node, item.sample.timestamp, &item.sample.detail.gpus);
        }
        rows.extend(fold.finish().into_iter().map(|d| (job_id, d)));
        start = end;
    }
    (thresholds.gpu_idle_percent, rows)
}

/// The upsert's conflict clause: the stored fold (`f`) combined with the batch's (`excluded`).
/// Every `CASE` reads the stored row as it was before this statement, on both backends.
const MERGE_SQL: &str = " ON CONFLICT (job_id, node, gpu_index) DO UPDATE SET \
    uuid = COALESCE(f.uuid, excluded.uuid), \
    samples = f.samples + excluded.samples, \
    utilization_samples = f.utilization_samples + excluded.utilization_samples, \
    utilization_sum = f.utilization_sum + excluded.utilization_sum, \
    utilization_max = CASE WHEN f.utilization_max IS NULL OR excluded.utilization_max > f.utilization_max \
        THEN excluded.utilization_max ELSE f.utilization_max END, \
    idle_samples = f.idle_samples + excluded.idle_samples, \
    idle_below_percent = CASE WHEN f.idle_below_percent = excluded.idle_below_percent \
        THEN f.idle_below_percent ELSE NULL END, \
    memory_peak_bytes = CASE WHEN f.memory_peak_bytes IS NULL OR excluded.memory_peak_bytes > f.memory_peak_bytes \
        THEN excluded.memory_peak_bytes ELSE f.memory_peak_bytes END, \
    memory_total_bytes = CASE WHEN excluded.memory_total_at IS NOT NULL \
        AND (f.memory_total_at IS NULL OR excluded.memory_total_at >= f.memory_total_at) \
        THEN excluded.memory_total_bytes ELSE f.memory_total_bytes END, \
    memory_total_at = CASE WHEN excluded.memory_total_at IS NOT NULL \
        AND (f.memory_total_at IS NULL OR excluded.memory_total_at >= f.memory_total_at) \
        THEN excluded.memory_total_at ELSE f.memory_total_at END, \
    energy_first = CASE WHEN excluded.energy_first_at IS NOT NULL \
        AND (f.energy_first_at IS NULL OR excluded.energy_first_at < f.energy_first_at) \
        THEN excluded.energy_first ELSE f.energy_first END, \
    energy_first_at = CASE WHEN excluded.energy_first_at IS NOT NULL \
        AND (f.energy_first_at IS NULL OR excluded.energy_first_at < f.energy_first_at) \
        THEN excluded.energy_first_at ELSE f.energy_first_at END, \
    energy_last = CASE WHEN excluded.energy_last_at IS NOT NULL \
        AND (f.energy_last_at IS NULL OR excluded.energy_last_at >= f.energy_last_at) \
        THEN excluded.energy_last ELSE f.energy_last END, \
    energy_last_at = CASE WHEN excluded.energy_last_at IS NOT NULL \
        AND (f.energy_last_at IS NULL OR excluded.energy_last_at >= f.energy_last_at) \
        THEN excluded.energy_last_at ELSE f.energy_last_at END";

const COLUMNS: &str = "job_id, node, gpu_index, uuid, samples, utilization_samples, \
    utilization_sum, utilization_max, idle_samples, idle_below_percent, memory_peak_bytes, \
    memory_total_bytes, memory_total_at, energy_first, energy_first_at, energy_last, energy_last_at";

/// One stored row, as read back for a report.
#[derive(sqlx::FromRow)]
struct FiguresRow {
    node: String,
    gpu_index: i64,
    uuid: Option<String>,
    samples: i64,
    utilization_samples: i64,
    utilization_sum: f64,
    utilization_max: Option<f64>,
    idle_samples: i64,
    idle_below_percent: Option<f64>,
    memory_peak_bytes: Option<i64>,
    memory_total_bytes: Option<i64>,
    memory_total_at: Option<DateTime<Utc>>,
    energy_first: Option<f64>,
    energy_first_at: Option<DateTime<Utc>>,
    energy_last: Option<f64>,
    energy_last_at: Option<DateTime<Utc>>,
}

impl FiguresRow {
    fn into_summary(self) -> DeviceSummary {
        DeviceSummary {
            node: self.node,
            index: u32::try_from(self.gpu_index).unwrap_or(u32::MAX),
            uuid: self.uuid,
            samples: self.samples,
            utilization_samples: self.utilization_samples,
            utilization_sum: self.utilization_sum,
            utilization_max: self.utilization_max,
            idle_samples: self.idle_samples,
            memory_peak_bytes: self.memory_peak_bytes.map(|b| b.max(0) as u64),
            memory_total_bytes: self.memory_total_bytes.map(|b| b.max(0) as u64),
            memory_total_at: self.memory_total_at,
            energy_first: self.energy_first,
            energy_first_at: self.energy_first_at,
            energy_last: self.energy_last,
            energy_last_at: self.energy_last_at,
        }
    }
}

/// A byte count as the databases' BIGINT (readings are bounded well below at ingest).
fn bigint(bytes: Option<u64>) -> Option<i64> {
    bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX))
}

macro_rules! backend {
    ($name:ident, $db:ty) => {
        pub(in crate::store) mod $name {
            use super::*;
            use crate::store::StoreResult;

            /// The job's folded devices, or `None` when a row's idle count was not counted
            /// below `idle_percent` alone (the caller then reads the samples).
            pub(in crate::store) async fn gpu_figures(
                pool: &sqlx::Pool<$db>,
                job_id: &str,
                idle_percent: f64,
            ) -> StoreResult<Option<Vec<DeviceSummary>>> {
                let rows: Vec<FiguresRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM job_gpu_figures WHERE job_id = $1 \
                     ORDER BY node, gpu_index"
                )))
                .bind(job_id)
                .fetch_all(pool)
                .await?;
                if rows
                    .iter()
                    .any(|r| r.idle_below_percent != Some(idle_percent))
                {
                    return Ok(None);
                }
                Ok(Some(
                    rows.into_iter().map(FiguresRow::into_summary).collect(),
                ))
            }
        }
    };
}

backend!(sqlite, sqlx::Sqlite);
backend!(postgres, sqlx::Postgres);

/// Merges the batch's folds (from [`fold_batch`]) into the stored rows, as rows of
/// bound values (SQLite's way; PostgreSQL's is [`keep_gpu_figures_unnest`]).
pub(in crate::store) async fn keep_gpu_figures_sqlite(
    conn: &mut sqlx::SqliteConnection,
    idle_percent: f64,
    rows: &[(&str, DeviceSummary)],
) -> crate::store::StoreResult<()> {
    // 17 parameters a row: 1,900 rows (32,300 parameters) stay under SQLite's
    // limit (32,766) and PostgreSQL's (65,535), so a 1,000-job batch with two GPUs
    // each is two statements.
    for chunk in rows.chunks(1900) {
        let mut qb: sqlx::QueryBuilder<sqlx::Sqlite> =
            sqlx::QueryBuilder::new(format!("INSERT INTO job_gpu_figures AS f ({COLUMNS}) "));
        qb.push_values(chunk, |mut b, (job_id, d)| {
            b.push_bind(job_id.to_string())
                .push_bind(d.node.clone())
                .push_bind(i64::from(d.index))
                .push_bind(d.uuid.clone())
                .push_bind(d.samples)
                .push_bind(d.utilization_samples)
                .push_bind(d.utilization_sum)
                .push_bind(d.utilization_max)
                .push_bind(d.idle_samples)
                .push_bind(idle_percent)
                .push_bind(bigint(d.memory_peak_bytes))
                .push_bind(bigint(d.memory_total_bytes))
                .push_bind(d.memory_total_at)
                .push_bind(d.energy_first)
                .push_bind(d.energy_first_at)
                .push_bind(d.energy_last)
                .push_bind(d.energy_last_at);
        });
        qb.push(MERGE_SQL);
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`postgres`]'s merge of a batch's folds: one statement whose rows come from one array per
/// column (`UNNEST`), whatever the batch's size. Rows of bound values cost PostgreSQL about three
/// times as much for a 1,000-job batch with two GPUs each (the parse and bind of 34,000
/// parameters; 42–50 ms against 15 ms in psql, BENCHMARKS.md "Sample ingestion").
pub(in crate::store) async fn keep_gpu_figures_unnest(
    conn: &mut sqlx::PgConnection,
    idle_percent: f64,
    rows: &[(&str, DeviceSummary)],
) -> crate::store::StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut job_id, mut node, mut index, mut uuid) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut samples, mut utilization_samples, mut idle_samples) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut utilization_sum, mut utilization_max) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut memory_peak, mut memory_total, mut memory_total_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut energy_first, mut energy_first_at, mut energy_last, mut energy_last_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (job, d) in rows {
        job_id.push(*job);
        node.push(d.node.as_str());
        index.push(i64::from(d.index));
        uuid.push(d.uuid.as_deref());
        samples.push(d.samples);
        utilization_samples.push(d.utilization_samples);
        utilization_sum.push(d.utilization_sum);
        utilization_max.push(d.utilization_max);
        idle_samples.push(d.idle_samples);
        memory_peak.push(bigint(d.memory_peak_bytes));
        memory_total.push(bigint(d.memory_total_bytes));
        memory_total_at.push(d.memory_total_at);
        energy_first.push(d.energy_first);
        energy_first_at.push(d.energy_first_at);
        energy_last.push(d.energy_last);
        energy_last_at.push(d.energy_last_at);
    }
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "INSERT INTO job_gpu_figures AS f ({COLUMNS}) \
             SELECT t.job_id, t.node, t.gpu_index, t.uuid, t.samples, t.utilization_samples, \
                    t.utilization_sum, t.utilization_max, t.idle_samples, $17, t.memory_peak_bytes, \
                    t.memory_total_bytes, t.memory_total_at, t.energy_first, t.energy_first_at, \
                    t.energy_last, t.energy_last_at \
             FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[], $6::int8[], \
                         $7::float8[], $8::float8[], $9::int8[], $10::int8[], $11::int8[], \
                         $12::timestamptz[], $13::float8[], $14::timestamptz[], $15::float8[], \
                         $16::timestamptz[]) \
               AS t(job_id, node, gpu_index, uuid, samples, utilization_samples, utilization_sum, \
                    utilization_max, idle_samples, memory_peak_bytes, memory_total_bytes, \
                    memory_total_at, energy_first, energy_first_at, energy_last, energy_last_at)\
             {MERGE_SQL}"
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(job_id)
        .bind(node)
        .bind(index)
        .bind(uuid)
        .bind(samples)
        .bind(utilization_samples)
        .bind(utilization_sum)
        .bind(utilization_max)
        .bind(idle_samples)
        .bind(memory_peak)
        .bind(memory_total)
        .bind(memory_total_at)
        .bind(energy_first)
        .bind(energy_first_at)
        .bind(energy_last)
        .bind(energy_last_at)
        .bind(idle_percent)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
