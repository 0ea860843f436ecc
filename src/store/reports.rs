//! What the efficiency reports read (`domain::report`): a job's samples summarized per node
//! and per GPU device. Samples still in rows are summarized in SQL (one `GROUP BY` row per node,
//! whatever the number of samples) plus their GPU lists — only the `gpus` column, only of
//! samples that have one, parsed into just the figures a report uses. Packed samples
//! (`store::sample_packs`, all but about the newest hour) come as each pack's stored digest,
//! one small row per node and hour. A report of a 10,000-sample job thus reads a few hundred
//! GPU lists at most. (Expanding the GPU lists in SQL instead, `json_array_elements` and `->>`,
//! was six times slower on PostgreSQL: a `json` value is parsed again by every `->>`; see
//! "Job report" in BENCHMARKS.md.)

use crate::domain::report::{
    DeviceFold, DeviceSummary, NodeSummary, NodeTally, SummaryMerge, Thresholds,
};
use crate::domain::Job;
use crate::store::{Store, StoreResult};
use chrono::{DateTime, Utc};

/// Per-node tallies of one job's sample rows; `$1` is the job id.
const NODE_SUMMARY_SQL: &str = "SELECT node, COUNT(*) AS samples, \
    MAX(cpu_time_seconds) AS cpu_time_seconds, SUM(cpu_usage) AS cpu_usage_sum, \
    COUNT(cpu_usage) AS cpu_usage_count, \
    MAX(cpu_throttled_seconds) AS cpu_throttled_seconds, \
    MAX(CASE WHEN memory_peak_bytes IS NOT NULL \
             AND (memory_usage_bytes IS NULL OR memory_peak_bytes > memory_usage_bytes) \
        THEN memory_peak_bytes ELSE COALESCE(memory_usage_bytes, memory_usage_mb * 1048576) END) \
        AS memory_peak_bytes, \
    MAX(oom_kills) AS oom_kills, MAX(io_read_bytes) AS io_read_bytes, \
    MAX(io_write_bytes) AS io_write_bytes \
    FROM metric_samples WHERE job_id = $1 GROUP BY node";

/// The GPU lists of one job's sample rows, oldest first.
const GPU_SQL: &str = "SELECT node, timestamp, gpus FROM metric_samples \
    WHERE job_id = $1 AND gpus IS NOT NULL ORDER BY timestamp";

#[derive(sqlx::FromRow)]
struct NodeSummaryRow {
    node: Option<String>,
    samples: i64,
    cpu_time_seconds: Option<f64>,
    cpu_usage_sum: Option<f64>,
    cpu_usage_count: i64,
    cpu_throttled_seconds: Option<f64>,
    memory_peak_bytes: Option<i64>,
    oom_kills: Option<i64>,
    io_read_bytes: Option<i64>,
    io_write_bytes: Option<i64>,
}

impl NodeSummaryRow {
    fn into_tally(self, first_node: &str) -> NodeTally {
        NodeTally {
            summary: NodeSummary {
                node: self.node.unwrap_or_else(|| first_node.to_owned()),
                samples: self.samples,
                cpu_time_seconds: self.cpu_time_seconds,
                cpu_usage_mean: None,
                cpu_throttled_seconds: self.cpu_throttled_seconds,
                memory_peak_bytes: self.memory_peak_bytes,
                oom_kills: self.oom_kills,
                io_read_bytes: self.io_read_bytes,
                io_write_bytes: self.io_write_bytes,
            },
            cpu_usage_sum: self.cpu_usage_sum.unwrap_or(0.0),
            cpu_usage_count: self.cpu_usage_count,
        }
    }
}

/// A GPU reading with only what a report uses (the rest of the stored JSON is skipped, not
/// built).
#[derive(serde::Deserialize)]
struct GpuFigures {
    index: u32,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    utilization_percent: Option<f64>,
    #[serde(default)]
    memory_used_bytes: Option<u64>,
    #[serde(default)]
    memory_total_bytes: Option<u64>,
    #[serde(default)]
    energy_joules: Option<f64>,
}

impl GpuFigures {
    fn into_reading(self) -> crate::domain::gpu::GpuReading {
        let mut g =
            crate::domain::gpu::GpuReading::new(self.index, crate::domain::gpu::GpuVendor::Nvidia);
        g.uuid = self.uuid;
        g.utilization_percent = self.utilization_percent;
        g.memory_used_bytes = self.memory_used_bytes;
        g.memory_total_bytes = self.memory_total_bytes;
        g.energy_joules = self.energy_joules;
        g
    }
}

/// Filters of `GET /v1/reports`.
#[derive(Debug, Clone)]
pub struct ReportFilter {
    pub user: Option<String>,
    /// Jobs that ended (or, still running, started) at or after this.
    pub since: DateTime<Utc>,
    pub limit: i64,
}

macro_rules! backend {
    ($name:ident, $db:ty) => {
        mod $name {
            use super::*;
            use crate::store::queries::{JobRow, JOB_COLUMNS};
            use sqlx::types::Json;
            use sqlx::{AssertSqlSafe, Pool};
            use std::collections::BTreeMap;

            /// Per-node tallies of the job's sample rows.
            pub(super) async fn nodes(pool: &Pool<$db>, job: &Job) -> StoreResult<Vec<NodeTally>> {
                let first = job.nodes.first().map(String::as_str).unwrap_or("");
                let rows: Vec<NodeSummaryRow> = sqlx::query_as(NODE_SUMMARY_SQL)
                    .bind(&job.id)
                    .fetch_all(pool)
                    .await?;
                Ok(rows.into_iter().map(|r| r.into_tally(first)).collect())
            }

            /// Per-device summaries of the job's sample rows, per node with its first GPU
            /// reading's time.
            pub(super) async fn devices(
                pool: &Pool<$db>,
                job: &Job,
                thresholds: &Thresholds,
            ) -> StoreResult<Vec<(DateTime<Utc>, Vec<DeviceSummary>)>> {
                let first = job.nodes.first().map(String::as_str).unwrap_or("");
                let rows: Vec<(Option<String>, DateTime<Utc>, Json<Vec<GpuFigures>>)> =
                    sqlx::query_as(GPU_SQL)
                        .bind(&job.id)
                        .fetch_all(pool)
                        .await?;
                let mut folds: BTreeMap<String, (DateTime<Utc>, DeviceFold)> = BTreeMap::new();
                for (node, at, Json(gpus)) in rows {
                    let node = node.as_deref().unwrap_or(first);
                    let readings: Vec<_> = gpus.into_iter().map(GpuFigures::into_reading).collect();
                    folds
                        .entry(node.to_owned())
                        .or_insert_with(|| (at, DeviceFold::new(thresholds)))
                        .1
                        .add(node, &readings);
                }
                Ok(folds
                    .into_values()
                    .map(|(at, fold)| (at, fold.finish()))
                    .collect())
            }

            pub(super) async fn jobs(
                pool: &Pool<$db>,
                filter: &ReportFilter,
            ) -> StoreResult<Vec<Job>> {
                let user = match filter.user {
                    Some(_) => " AND user_name = $2",
                    None => " AND $2 IS NULL",
                };
                let rows: Vec<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state <> 'pending' \
                     AND (end_time >= $1 OR (end_time IS NULL AND state = 'running')){user} \
                     ORDER BY start_time DESC LIMIT $3"
                )))
                .bind(filter.since)
                .bind(filter.user.as_deref())
                .bind(filter.limit)
                .fetch_all(pool)
                .await?;
                let now = crate::domain::now_micros();
                rows.into_iter().map(|r| r.into_job(now)).collect()
            }
        }
    };
}

backend!(sqlite, sqlx::Sqlite);
backend!(postgres, sqlx::Postgres);

impl Store {
    /// What the report of `job` needs from its samples: per-node summaries and per-device GPU
    /// summaries, from its sample rows and its packs' digests (the GPU lists are read only
    /// from rows that have one).
    pub async fn report_inputs(
        &self,
        job: &Job,
        thresholds: &Thresholds,
    ) -> StoreResult<(Vec<NodeSummary>, Vec<DeviceSummary>)> {
        let started = std::time::Instant::now();
        let result = async {
            let mut merge = SummaryMerge::default();
            let (nodes, devices) = match &self.backend {
                super::Backend::Sqlite(pool) => (
                    sqlite::nodes(pool, job).await?,
                    sqlite::devices(pool, job, thresholds).await?,
                ),
                super::Backend::Postgres(pool) => {
                    let (nodes, devices) = tokio::join!(
                        postgres::nodes(pool, job),
                        postgres::devices(pool, job, thresholds)
                    );
                    (nodes?, devices?)
                }
            };
            nodes.into_iter().for_each(|n| merge.add_node(n));
            for (first_at, part) in devices {
                merge.add_devices(first_at, part);
            }
            self.add_pack_digests(job, Some(thresholds), &mut merge)
                .await?;
            Ok(merge)
        }
        .await;
        self.observe("report_inputs", started, &result);
        let merge = result?;
        if merge.is_empty() {
            // No samples left: the inputs archived when they expired (`store::rollups`).
            if let Some(archived) = self.archived_report_inputs(&job.id).await? {
                return Ok(archived);
            }
        }
        Ok(merge.finish())
    }

    /// Node summaries only (the reports list: GPU use there comes from the job's row).
    pub async fn report_node_summaries(&self, job: &Job) -> StoreResult<Vec<NodeSummary>> {
        let mut merge = SummaryMerge::default();
        let nodes = match &self.backend {
            super::Backend::Sqlite(pool) => sqlite::nodes(pool, job).await?,
            super::Backend::Postgres(pool) => postgres::nodes(pool, job).await?,
        };
        nodes.into_iter().for_each(|n| merge.add_node(n));
        self.add_pack_digests(job, None, &mut merge).await?;
        if merge.is_empty() {
            if let Some((archived, _)) = self.archived_report_inputs(&job.id).await? {
                return Ok(archived);
            }
        }
        Ok(merge.finish().0)
    }

    /// The jobs a reports list covers, newest start first.
    pub async fn report_jobs(&self, filter: &ReportFilter) -> StoreResult<Vec<Job>> {
        let started = std::time::Instant::now();
        let result = match &self.backend {
            super::Backend::Sqlite(pool) => sqlite::jobs(pool, filter).await,
            super::Backend::Postgres(pool) => postgres::jobs(pool, filter).await,
        };
        self.observe("report_jobs", started, &result);
        result
    }
}
