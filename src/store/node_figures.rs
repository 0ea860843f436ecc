//! Keeps `jobs.node_figures` (each node's newest figures for a multi-node job, see
//! [`crate::domain::figures`]) in the sample write path, in the batch's own transaction, and
//! makes such a job's current figures and aggregates the whole job's.
//!
//! Only jobs allocated more than one node have the column: for a single-node job the job's own
//! figures already are its node's, and ingestion of the common case costs nothing more. A
//! multi-node job's row is read and written once per batch that carries samples of it; the
//! row is already locked by the batch's UPDATE (see `ingest_samples`), so two nodes' batches
//! never lose each other's figures.

use crate::domain::figures::JobFigures;
use crate::domain::MetricSample;
use crate::store::SampleItem;

/// One multi-node job's samples in a batch, with the node they were measured on.
pub(in crate::store) struct Share<'a> {
    pub job_id: &'a str,
    pub node_count: i64,
    pub samples: Vec<(&'a str, &'a MetricSample)>,
}

/// The shares of the stored items whose job (looked up by `nodes_of`) runs on several nodes,
/// in job id order (the order the batch's UPDATE locked them in). Only agents' samples (those
/// with a node) count.
pub(in crate::store) fn shares<'a>(
    stored: impl IntoIterator<Item = &'a SampleItem>,
    nodes_of: impl Fn(&str) -> Option<&'a [String]>,
) -> Vec<Share<'a>> {
    let mut by_job: std::collections::BTreeMap<&'a str, Share<'a>> = Default::default();
    for item in stored {
        let Some(nodes) = nodes_of(&item.job_id) else {
            continue;
        };
        if nodes.len() < 2 {
            continue;
        }
        // A sample without a node (the compat single-sample route: a figure for the whole
        // job, from outside) is no node's: it keeps its meaning as the job's own figure.
        let Some(node) = item.sample.detail.node.as_deref() else {
            continue;
        };
        by_job
            .entry(item.job_id.as_str())
            .or_insert_with(|| Share {
                job_id: item.job_id.as_str(),
                node_count: nodes.len() as i64,
                samples: Vec::new(),
            })
            .samples
            .push((node, &item.sample));
    }
    by_job.into_values().collect()
}

/// `UPDATE` of a multi-node job's row: the figures, then its current values and aggregates
/// as the whole job's (an unknown total leaves the stored value). `$10`, the GPU list, is bound
/// as text; `{gpus}` is how the backend reads it as the column's type.
const KEEP_SQL: &str = "UPDATE jobs SET node_figures = $2, \
    cpu_usage = COALESCE($3, cpu_usage), \
    memory_usage_bytes = COALESCE($4, memory_usage_bytes), \
    memory_usage_mb = COALESCE($5, memory_usage_mb), \
    avg_cpu_usage = COALESCE($6, avg_cpu_usage), \
    max_cpu_usage = COALESCE($7, max_cpu_usage), \
    max_memory_usage_bytes = COALESCE($8, max_memory_usage_bytes), \
    max_memory_usage_mb = COALESCE($9, max_memory_usage_mb), \
    gpus = COALESCE({gpus}, gpus) \
    WHERE id = $1";

/// Folds `share` into `stored`; the figures to write.
fn fold(stored: Option<JobFigures>, share: &Share<'_>) -> JobFigures {
    let mut figures = stored.unwrap_or_default();
    for (node, sample) in &share.samples {
        figures.absorb(node, sample);
    }
    figures.update_maxima(share.node_count);
    figures
}

macro_rules! backend {
    ($name:ident, $conn:ty, $gpus:literal) => {
        pub(in crate::store) mod $name {
            use super::*;
            use crate::store::StoreResult;
            use sqlx::types::Json;

            /// Folds each share into its job's stored figures and writes the job's totals.
            pub(in crate::store) async fn keep_node_figures(
                conn: &mut $conn,
                shares: &[Share<'_>],
            ) -> StoreResult<()> {
                for share in shares {
                    let stored: Option<Option<Json<JobFigures>>> =
                        sqlx::query_scalar("SELECT node_figures FROM jobs WHERE id = $1")
                            .bind(share.job_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    let figures = fold(stored.flatten().map(|Json(f)| f), share);
                    let t = figures.totals(share.node_count, None);
                    let gpus = figures.gpus();
                    let gpus = match gpus.is_empty() {
                        true => None,
                        false => Some(crate::store::queries::to_json(&gpus)?),
                    };
                    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                    let sql = SQL.get_or_init(|| KEEP_SQL.replace("{gpus}", $gpus));
                    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(share.job_id)
                        .bind(Json(&figures))
                        .bind(t.cpu_usage)
                        .bind(t.memory_usage_bytes)
                        .bind(t.memory_usage_bytes.map(|b| b >> 20))
                        .bind(t.avg_cpu_usage)
                        .bind(t.max_cpu_usage)
                        .bind(t.max_memory_bytes)
                        .bind(t.max_memory_bytes.map(|b| b >> 20))
                        .bind(gpus)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            /// The stored figures of a job (`None` for a single-node job or an unknown one).
            pub(in crate::store) async fn node_figures(
                conn: &mut $conn,
                job_id: &str,
            ) -> StoreResult<Option<JobFigures>> {
                let stored: Option<Option<Json<JobFigures>>> =
                    sqlx::query_scalar("SELECT node_figures FROM jobs WHERE id = $1")
                        .bind(job_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                Ok(stored.flatten().map(|Json(f)| f))
            }
        }
    };
}

backend!(sqlite, sqlx::SqliteConnection, "$10");
backend!(postgres, sqlx::PgConnection, "$10::json");

impl super::Store {
    /// Each node's figures of a multi-node job (`None` for a single-node job, whose figures
    /// are its own row's, or for an unknown job).
    pub async fn node_figures(
        &self,
        job_id: &str,
    ) -> crate::store::StoreResult<Option<JobFigures>> {
        let started = std::time::Instant::now();
        let result = match &self.backend {
            super::Backend::Sqlite(pool) => match pool.acquire().await {
                Ok(mut conn) => sqlite::node_figures(&mut conn, job_id).await,
                Err(e) => Err(e.into()),
            },
            super::Backend::Postgres(pool) => match pool.acquire().await {
                Ok(mut conn) => postgres::node_figures(&mut conn, job_id).await,
                Err(e) => Err(e.into()),
            },
        };
        self.observe("node_figures", started, &result);
        result
    }
}
