//! What the efficiency reports read (`domain::report`): a job's samples summarized per node and
//! its GPU readings per device, both in SQL (`GROUP BY`; each sample's GPU list is expanded by
//! the database's own JSON functions). A report of a 10,000-sample job thus moves one row per
//! node and one per device, never its samples (see "Job report" in BENCHMARKS.md).

use crate::domain::report::{DeviceSummary, NodeSummary, Thresholds};
use crate::domain::Job;
use crate::store::{Store, StoreResult};
use chrono::{DateTime, Utc};

/// Per-node summary of one job's samples; `$1` is the job id.
const NODE_SUMMARY_SQL: &str = "SELECT node, COUNT(*) AS samples, \
    MAX(cpu_time_seconds) AS cpu_time_seconds, AVG(cpu_usage) AS cpu_usage_mean, \
    MAX(cpu_throttled_seconds) AS cpu_throttled_seconds, \
    MAX(CASE WHEN memory_peak_bytes IS NOT NULL \
             AND (memory_usage_bytes IS NULL OR memory_peak_bytes > memory_usage_bytes) \
        THEN memory_peak_bytes ELSE COALESCE(memory_usage_bytes, memory_usage_mb * 1048576) END) \
        AS memory_peak_bytes, \
    MAX(oom_kills) AS oom_kills, MAX(io_read_bytes) AS io_read_bytes, \
    MAX(io_write_bytes) AS io_write_bytes \
    FROM metric_samples WHERE job_id = $1 GROUP BY node ORDER BY node";

/// Per-device summary of one job's GPU readings, in the database (each sample's GPU list is
/// expanded there, so no JSON crosses the wire); `$1` the job id, `$2` the idle threshold.
/// `{e}` is the backend's expression for a field of a list element `g` (see [`gpu_sql`]);
/// the energy counter's first and last readings are its minimum and maximum.
const GPU_SUMMARY_SQL: &str = "SELECT m.node AS node, CAST({e:index} AS BIGINT) AS idx, \
    MAX({t:uuid}) AS uuid, COUNT(*) AS samples, \
    COUNT({e:utilization_percent}) AS utilization_samples, \
    SUM(CAST({e:utilization_percent} AS DOUBLE PRECISION)) AS utilization_sum, \
    MAX(CAST({e:utilization_percent} AS DOUBLE PRECISION)) AS utilization_max, \
    SUM(CASE WHEN CAST({e:utilization_percent} AS DOUBLE PRECISION) < $2 THEN 1 ELSE 0 END) AS idle_samples, \
    MAX(CAST({e:memory_used_bytes} AS BIGINT)) AS memory_peak_bytes, \
    MAX(CAST({e:memory_total_bytes} AS BIGINT)) AS memory_total_bytes, \
    MIN(CAST({e:energy_joules} AS DOUBLE PRECISION)) AS energy_first, \
    MAX(CAST({e:energy_joules} AS DOUBLE PRECISION)) AS energy_last \
    FROM metric_samples m, {each} WHERE m.job_id = $1 AND m.gpus IS NOT NULL \
    GROUP BY m.node, idx ORDER BY m.node, idx";

/// [`GPU_SUMMARY_SQL`] for a backend: `each` lists a sample's GPUs as rows `g`, `field` and
/// `text` read a field of one as a number and as text.
fn gpu_sql(each: &str, field: impl Fn(&str) -> String, text: impl Fn(&str) -> String) -> String {
    let mut sql = GPU_SUMMARY_SQL.replace("{each}", each);
    for name in [
        "index",
        "utilization_percent",
        "memory_used_bytes",
        "memory_total_bytes",
        "energy_joules",
    ] {
        sql = sql.replace(&format!("{{e:{name}}}"), &field(name));
    }
    sql.replace("{t:uuid}", &text("uuid"))
}

#[derive(sqlx::FromRow)]
struct DeviceSummaryRow {
    node: Option<String>,
    idx: i64,
    uuid: Option<String>,
    samples: i64,
    utilization_samples: i64,
    utilization_sum: Option<f64>,
    utilization_max: Option<f64>,
    idle_samples: Option<i64>,
    memory_peak_bytes: Option<i64>,
    memory_total_bytes: Option<i64>,
    energy_first: Option<f64>,
    energy_last: Option<f64>,
}

impl DeviceSummaryRow {
    fn into_summary(self, first_node: &str) -> DeviceSummary {
        DeviceSummary {
            node: self.node.unwrap_or_else(|| first_node.to_owned()),
            index: u32::try_from(self.idx).unwrap_or(0),
            uuid: self.uuid,
            samples: self.samples,
            utilization_samples: self.utilization_samples,
            utilization_sum: self.utilization_sum.unwrap_or(0.0),
            utilization_max: self.utilization_max,
            idle_samples: self.idle_samples.unwrap_or(0),
            memory_peak_bytes: self.memory_peak_bytes.and_then(|b| u64::try_from(b).ok()),
            memory_total_bytes: self.memory_total_bytes.and_then(|b| u64::try_from(b).ok()),
            energy_first: self.energy_first,
            energy_last: self.energy_last,
        }
    }
}

#[derive(sqlx::FromRow)]
struct NodeSummaryRow {
    node: Option<String>,
    samples: i64,
    cpu_time_seconds: Option<f64>,
    cpu_usage_mean: Option<f64>,
    cpu_throttled_seconds: Option<f64>,
    memory_peak_bytes: Option<i64>,
    oom_kills: Option<i64>,
    io_read_bytes: Option<i64>,
    io_write_bytes: Option<i64>,
}

impl NodeSummaryRow {
    fn into_summary(self, first_node: &str) -> NodeSummary {
        NodeSummary {
            node: self.node.unwrap_or_else(|| first_node.to_owned()),
            samples: self.samples,
            cpu_time_seconds: self.cpu_time_seconds,
            cpu_usage_mean: self.cpu_usage_mean,
            cpu_throttled_seconds: self.cpu_throttled_seconds,
            memory_peak_bytes: self.memory_peak_bytes,
            oom_kills: self.oom_kills,
            io_read_bytes: self.io_read_bytes,
            io_write_bytes: self.io_write_bytes,
        }
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
    ($name:ident, $db:ty, $each:expr, $field:expr, $text:expr) => {
        mod $name {
            use super::*;
            use crate::store::queries::{JobRow, JOB_COLUMNS};
            use sqlx::{AssertSqlSafe, Pool};

            pub(super) async fn nodes(
                pool: &Pool<$db>,
                job: &Job,
            ) -> StoreResult<Vec<NodeSummary>> {
                let first = job.nodes.first().map(String::as_str).unwrap_or("");
                let rows: Vec<NodeSummaryRow> = sqlx::query_as(NODE_SUMMARY_SQL)
                    .bind(&job.id)
                    .fetch_all(pool)
                    .await?;
                Ok(rows.into_iter().map(|r| r.into_summary(first)).collect())
            }

            pub(super) async fn devices(
                pool: &Pool<$db>,
                job: &Job,
                thresholds: &Thresholds,
            ) -> StoreResult<Vec<DeviceSummary>> {
                let first = job.nodes.first().map(String::as_str).unwrap_or("");
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let sql = SQL.get_or_init(|| gpu_sql($each, $field, $text));
                let rows: Vec<DeviceSummaryRow> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(&job.id)
                    .bind(thresholds.gpu_idle_percent)
                    .fetch_all(pool)
                    .await?;
                Ok(rows.into_iter().map(|r| r.into_summary(first)).collect())
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

backend!(
    sqlite,
    sqlx::Sqlite,
    "json_each(m.gpus) AS g",
    |f: &str| format!("json_extract(g.value, '$.{f}')"),
    |f: &str| format!("json_extract(g.value, '$.{f}')")
);
backend!(
    postgres,
    sqlx::Postgres,
    "json_array_elements(m.gpus) AS g",
    |f: &str| format!("(g ->> '{f}')"),
    |f: &str| format!("(g ->> '{f}')")
);

impl Store {
    /// What the report of `job` needs from its samples: per-node summaries and per-device GPU
    /// summaries (the GPU lists are read only when the job has GPUs, or its samples might).
    pub async fn report_inputs(
        &self,
        job: &Job,
        thresholds: &Thresholds,
    ) -> StoreResult<(Vec<NodeSummary>, Vec<DeviceSummary>)> {
        let started = std::time::Instant::now();
        let result = async {
            match &self.backend {
                super::Backend::Sqlite(pool) => Ok((
                    sqlite::nodes(pool, job).await?,
                    sqlite::devices(pool, job, thresholds).await?,
                )),
                super::Backend::Postgres(pool) => {
                    let (nodes, devices) = tokio::join!(
                        postgres::nodes(pool, job),
                        postgres::devices(pool, job, thresholds)
                    );
                    Ok((nodes?, devices?))
                }
            }
        }
        .await;
        self.observe("report_inputs", started, &result);
        result
    }

    /// Node summaries only (the reports list: GPU use there comes from the job's row).
    pub async fn report_node_summaries(&self, job: &Job) -> StoreResult<Vec<NodeSummary>> {
        match &self.backend {
            super::Backend::Sqlite(pool) => sqlite::nodes(pool, job).await,
            super::Backend::Postgres(pool) => postgres::nodes(pool, job).await,
        }
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
