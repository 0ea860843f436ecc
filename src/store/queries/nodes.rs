//! Nodes and partitions: the `nodes` and `partitions` rows ([`NodeRow`], [`PartitionRow`]), how
//! a scheduler's report merges into a node ([`scheduler_merge`]), and the queries that write
//! (agent reports, scheduler sync) and read them.

use crate::domain::usage::is_stale;
use crate::domain::{Node, NodeState, Partition, PartitionLimits, PartitionState};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// Columns of `nodes` that `NodeRow` reads.
pub(crate) const NODE_COLUMNS: &str =
    "name, state, state_reason, partitions, features, cpus, memory_total_bytes, \
    cpu_usage_percent, memory_used_bytes, load_1, load_5, load_15, gpus, report_interval_seconds, \
    last_report_at, updated_at";

/// The `running_jobs` column of a node query.
pub(crate) const RUNNING_JOBS_OF_NODE: &str =
    "(SELECT COUNT(*) FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id \
    WHERE jn.node = nodes.name AND j.state = 'running') AS running_jobs";

/// A `nodes` row as stored, with its running job count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct NodeRow {
    pub(crate) name: String,
    pub(crate) state: Option<String>,
    pub(crate) state_reason: Option<String>,
    pub(crate) partitions: Json<Vec<String>>,
    pub(crate) features: Json<Vec<String>>,
    pub(crate) cpus: Option<i64>,
    pub(crate) memory_total_bytes: Option<i64>,
    cpu_usage_percent: Option<f64>,
    memory_used_bytes: Option<i64>,
    pub(crate) load_1: Option<f64>,
    load_5: Option<f64>,
    load_15: Option<f64>,
    gpus: Json<Vec<crate::domain::gpu::GpuReading>>,
    report_interval_seconds: Option<f64>,
    last_report_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    pub(crate) running_jobs: i64,
}

impl NodeRow {
    /// The API view of the row: a scheduler's state wins; without one the state is derived from
    /// the agent's reports at `now`.
    pub(crate) fn into_node(self, now: DateTime<Utc>) -> Result<Node, super::StoreError> {
        let stale = is_stale(self.last_report_at, self.report_interval_seconds, now);
        let state = match &self.state {
            Some(s) => s.parse::<NodeState>().map_err(|_| {
                super::StoreError::Corrupt(format!("node {}: bad state {s:?}", self.name))
            })?,
            None => NodeState::from_agent(stale, self.running_jobs),
        };
        Ok(Node {
            name: self.name,
            state,
            state_reason: self.state_reason,
            partitions: self.partitions.0,
            features: self.features.0,
            cpus: self.cpus,
            memory_total_bytes: self.memory_total_bytes,
            cpu_usage_percent: self.cpu_usage_percent,
            memory_used_bytes: self.memory_used_bytes,
            load_1: self.load_1,
            load_5: self.load_5,
            load_15: self.load_15,
            gpus: self.gpus.0,
            running_jobs: self.running_jobs,
            last_report_at: self.last_report_at,
            report_interval_seconds: self.report_interval_seconds,
            stale,
            updated_at: self.updated_at,
        })
    }
}

/// Columns of `partitions` that `PartitionRow` reads, in the insert statement's order.
pub(crate) const PARTITION_COLUMNS: &str = "name, state, is_default, nodes, total_nodes, total_cpus, \
    max_time_minutes, default_time_minutes, max_nodes_per_job, jobs_running, jobs_pending, updated_at";

/// A `partitions` row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PartitionRow {
    name: String,
    state: String,
    is_default: bool,
    nodes: Json<Vec<String>>,
    total_nodes: Option<i64>,
    total_cpus: Option<i64>,
    max_time_minutes: Option<i64>,
    default_time_minutes: Option<i64>,
    max_nodes_per_job: Option<i64>,
    jobs_running: i64,
    jobs_pending: i64,
    updated_at: DateTime<Utc>,
}

impl PartitionRow {
    pub(crate) fn into_partition(self) -> Result<Partition, super::StoreError> {
        let state = self.state.parse::<PartitionState>().map_err(|_| {
            super::StoreError::Corrupt(format!(
                "partition {}: bad state {:?}",
                self.name, self.state
            ))
        })?;
        Ok(Partition {
            name: self.name,
            state,
            is_default: self.is_default,
            nodes: self.nodes.0,
            total_nodes: self.total_nodes,
            total_cpus: self.total_cpus,
            limits: PartitionLimits {
                max_time_minutes: self.max_time_minutes,
                default_time_minutes: self.default_time_minutes,
                max_nodes_per_job: self.max_nodes_per_job,
            },
            jobs_running: self.jobs_running,
            jobs_pending: self.jobs_pending,
            updated_at: self.updated_at,
        })
    }
}

/// The row a scheduler's report turns `current` into, or `None` when nothing would change.
/// State, reason and partitions are the scheduler's; CPUs, memory and load are taken only while
/// no live agent reports them (an agent measures them more often and more exactly).
pub(crate) fn scheduler_merge(
    current: Option<&NodeRow>,
    n: &crate::store::SchedulerNode,
    now: DateTime<Utc>,
) -> Option<NodeRow> {
    let agent_live =
        current.is_some_and(|c| !is_stale(c.last_report_at, c.report_interval_seconds, now));
    let mut row = current.cloned().unwrap_or_else(|| NodeRow {
        name: n.name.clone(),
        state: None,
        state_reason: None,
        partitions: Json(Vec::new()),
        features: Json(Vec::new()),
        cpus: None,
        memory_total_bytes: None,
        cpu_usage_percent: None,
        memory_used_bytes: None,
        load_1: None,
        load_5: None,
        load_15: None,
        gpus: Json(Vec::new()),
        report_interval_seconds: None,
        last_report_at: None,
        updated_at: now,
        running_jobs: 0,
    });
    row.state = Some(n.state.as_str().to_owned());
    row.state_reason = n.state_reason.clone();
    if let Some(p) = &n.partitions {
        row.partitions = Json(p.clone());
    }
    if let Some(f) = &n.features {
        row.features = Json(f.clone());
    }
    if !agent_live {
        row.cpus = n.cpus.or(row.cpus);
        row.memory_total_bytes = n.memory_total_bytes.or(row.memory_total_bytes);
        row.load_1 = n.load_1.or(row.load_1);
    }
    let same = current.is_some_and(|c| {
        (
            &c.state,
            &c.state_reason,
            &c.partitions.0,
            &c.features.0,
            c.cpus,
            c.memory_total_bytes,
            c.load_1,
        ) == (
            &row.state,
            &row.state_reason,
            &row.partitions.0,
            &row.features.0,
            row.cpus,
            row.memory_total_bytes,
            row.load_1,
        )
    });
    (!same).then_some(row)
}

/// The node functions of `store_queries!`, expanded into the same backend module (its
/// imports, `WriteTx` and the other concerns' functions are in scope there).
macro_rules! node_queries {
    ($db:ty, $row_lock:expr, $runtime_until_3:expr) => {
        /// Writes an agent's node figures unless a newer report is already stored (a spooled
        /// batch arriving late); the node as it is now, or `None` when nothing changed.
        async fn upsert_node_report(tx: &mut Tx, r: &NodeReport) -> StoreResult<Option<crate::domain::Node>> {
            let now = now_micros();
            let row: Option<NodeRow> = sqlx::query_as(AssertSqlSafe(format!(
                "INSERT INTO nodes (name, cpus, memory_total_bytes, cpu_usage_percent, memory_used_bytes, \
                   load_1, load_5, load_15, gpus, report_interval_seconds, last_report_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                 ON CONFLICT (name) DO UPDATE SET \
                   cpus = COALESCE(excluded.cpus, nodes.cpus), \
                   memory_total_bytes = excluded.memory_total_bytes, \
                   cpu_usage_percent = excluded.cpu_usage_percent, \
                   memory_used_bytes = excluded.memory_used_bytes, \
                   load_1 = excluded.load_1, load_5 = excluded.load_5, load_15 = excluded.load_15, \
                   gpus = excluded.gpus, \
                   report_interval_seconds = excluded.report_interval_seconds, \
                   last_report_at = excluded.last_report_at, \
                   updated_at = excluded.updated_at \
                 WHERE nodes.last_report_at IS NULL OR excluded.last_report_at >= nodes.last_report_at \
                 RETURNING {NODE_COLUMNS}, CAST(0 AS BIGINT) AS running_jobs"
            )))
            .bind(&r.name)
            .bind(r.cpus)
            .bind(r.memory_total_bytes)
            .bind(r.cpu_usage_percent)
            .bind(r.memory_used_bytes)
            .bind(r.load_1)
            .bind(r.load_5)
            .bind(r.load_15)
            .bind(Json(&r.gpus))
            .bind(r.interval_seconds)
            .bind(r.reported_at)
            .bind(now)
            .fetch_optional(&mut ***tx)
            .await?;
            let Some(mut row) = row else { return Ok(None) };
            row.running_jobs = sqlx::query_scalar(
                "SELECT COUNT(*) FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id WHERE jn.node = $1 AND j.state = 'running'",
            )
            .bind(&r.name)
            .fetch_one(&mut ***tx)
            .await?;
            Ok(Some(row.into_node(now)?))
        }

        /// The scheduler's view of nodes, upserted by name in one transaction (see
        /// `scheduler_merge` for which columns it owns); one `node_updated` event per node that
        /// changed. Returns how many changed.
        pub async fn update_nodes_from_scheduler(
            pool: &Pool<$db>,
            nodes: &[crate::store::SchedulerNode],
        ) -> StoreResult<usize> {
            if nodes.is_empty() {
                return Ok(0);
            }
            let now = now_micros();
            let mut tx = WriteTx::begin(pool).await?;
            let mut current: std::collections::HashMap<String, NodeRow> = std::collections::HashMap::new();
            for chunk in nodes.chunks(500) {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT {NODE_COLUMNS}, CAST(0 AS BIGINT) AS running_jobs FROM nodes WHERE name IN ("
                ));
                crate::store::queries::push_in_list(&mut qb, chunk.iter().map(|n| n.name.clone()));
                qb.push(" ").push($row_lock);
                let rows: Vec<NodeRow> = qb.build_query_as().fetch_all(&mut **tx).await?;
                current.extend(rows.into_iter().map(|r| (r.name.clone(), r)));
            }
            let mut changed = 0;
            for n in nodes {
                let Some(row) = crate::store::queries::scheduler_merge(current.get(&n.name), n, now) else {
                    continue;
                };
                let stored: NodeRow = sqlx::query_as(AssertSqlSafe(format!(
                    "INSERT INTO nodes (name, state, state_reason, partitions, features, cpus, memory_total_bytes, \
                       load_1, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                     ON CONFLICT (name) DO UPDATE SET \
                       state = excluded.state, state_reason = excluded.state_reason, \
                       partitions = excluded.partitions, features = excluded.features, cpus = excluded.cpus, \
                       memory_total_bytes = excluded.memory_total_bytes, load_1 = excluded.load_1, \
                       updated_at = excluded.updated_at \
                     RETURNING {NODE_COLUMNS}, CAST(0 AS BIGINT) AS running_jobs"
                )))
                .bind(&row.name)
                .bind(&row.state)
                .bind(&row.state_reason)
                .bind(&row.partitions)
                .bind(&row.features)
                .bind(row.cpus)
                .bind(row.memory_total_bytes)
                .bind(row.load_1)
                .bind(now)
                .fetch_one(&mut **tx)
                .await?;
                // Only for the event: who watches a node wants its job count too.
                let mut stored = stored;
                stored.running_jobs = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id WHERE jn.node = $1 AND j.state = 'running'",
                )
                .bind(&n.name)
                .fetch_one(&mut **tx)
                .await?;
                let node = stored.into_node(now)?;
                tx.append_other_event(EventKind::NodeUpdated, &NodeChange { node: Cow::Borrowed(&node) })?;
                changed += 1;
            }
            changed += release_unlisted_nodes(&mut tx, nodes, now).await?;
            tx.commit().await?;
            Ok(changed)
        }

        /// Nodes the scheduler spoke for (a stored state) but no longer lists (taken out of
        /// `slurm.conf`): the scheduler's state, reason and partitions are dropped, so the node
        /// shows what its agent says, or `unknown` once the agent is silent too. An empty list
        /// releases nothing: it is more likely a restricted view than a cluster without nodes.
        async fn release_unlisted_nodes(
            tx: &mut WriteTx,
            listed: &[crate::store::SchedulerNode],
            now: DateTime<Utc>,
        ) -> StoreResult<usize> {
            if listed.is_empty() {
                return Ok(0);
            }
            let listed: std::collections::HashSet<&str> = listed.iter().map(|n| n.name.as_str()).collect();
            let owned: Vec<String> = sqlx::query_scalar("SELECT name FROM nodes WHERE state IS NOT NULL ORDER BY name")
                .fetch_all(&mut ***tx)
                .await?;
            let mut released = 0;
            for name in owned.iter().filter(|n| !listed.contains(n.as_str())) {
                let row: NodeRow = sqlx::query_as(AssertSqlSafe(format!(
                    "UPDATE nodes SET state = NULL, state_reason = NULL, partitions = $2, features = $2, updated_at = $3 \
                     WHERE name = $1 RETURNING {NODE_COLUMNS}, {RUNNING_JOBS_OF_NODE}"
                )))
                .bind(name)
                .bind(Json(Vec::<String>::new()))
                .bind(now)
                .fetch_one(&mut ***tx)
                .await?;
                let node = row.into_node(now)?;
                tracing::info!(node = %name, "Slurm no longer lists this node; its state now comes from its agent");
                tx.append_other_event(EventKind::NodeUpdated, &NodeChange { node: Cow::Borrowed(&node) })?;
                released += 1;
            }
            Ok(released)
        }

        /// Every node, by name, with its running job count.
        pub async fn list_nodes(pool: &Pool<$db>) -> StoreResult<Vec<crate::domain::Node>> {
            let now = now_micros();
            let rows: Vec<NodeRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {NODE_COLUMNS}, {RUNNING_JOBS_OF_NODE} FROM nodes ORDER BY name"
            )))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| r.into_node(now)).collect()
        }

        pub async fn get_node(pool: &Pool<$db>, name: &str) -> StoreResult<Option<crate::domain::Node>> {
            let now = now_micros();
            let row: Option<NodeRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {NODE_COLUMNS}, {RUNNING_JOBS_OF_NODE} FROM nodes WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?;
            row.map(|r| r.into_node(now)).transpose()
        }

        /// Makes the stored partitions what the scheduler lists: inserts and updates those that
        /// changed (one `partition_updated` event each) and deletes those it no longer lists
        /// (one `partition_deleted` event each, with the partition as it was). An empty list
        /// deletes nothing: it is more likely a restricted view than a cluster without queues.
        /// Returns (changed, deleted).
        pub async fn sync_partitions(
            pool: &Pool<$db>,
            partitions: &[crate::domain::Partition],
        ) -> StoreResult<(usize, usize)> {
            let now = now_micros();
            let mut tx = WriteTx::begin(pool).await?;
            let rows: Vec<PartitionRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PARTITION_COLUMNS} FROM partitions ORDER BY name {}",
                $row_lock
            )))
            .fetch_all(&mut **tx)
            .await?;
            let mut current = std::collections::BTreeMap::new();
            for row in rows {
                let p = row.into_partition()?;
                current.insert(p.name.clone(), p);
            }
            let mut changed = 0;
            for p in partitions {
                if current.get(&p.name).is_some_and(|c| !c.differs_from(p)) {
                    continue;
                }
                let mut stored = p.clone();
                stored.updated_at = now;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO partitions ({PARTITION_COLUMNS}, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                     ON CONFLICT (name) DO UPDATE SET \
                       state = excluded.state, is_default = excluded.is_default, nodes = excluded.nodes, \
                       total_nodes = excluded.total_nodes, total_cpus = excluded.total_cpus, \
                       max_time_minutes = excluded.max_time_minutes, \
                       default_time_minutes = excluded.default_time_minutes, \
                       max_nodes_per_job = excluded.max_nodes_per_job, \
                       jobs_running = excluded.jobs_running, jobs_pending = excluded.jobs_pending, \
                       updated_at = excluded.updated_at"
                )))
                .bind(&stored.name)
                .bind(stored.state.as_str())
                .bind(stored.is_default)
                .bind(Json(&stored.nodes))
                .bind(stored.total_nodes)
                .bind(stored.total_cpus)
                .bind(stored.limits.max_time_minutes)
                .bind(stored.limits.default_time_minutes)
                .bind(stored.limits.max_nodes_per_job)
                .bind(stored.jobs_running)
                .bind(stored.jobs_pending)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                current.insert(stored.name.clone(), stored.clone());
                tx.append_other_event(EventKind::PartitionUpdated, &PartitionChange { partition: Cow::Borrowed(&stored) })?;
                changed += 1;
            }
            let mut deleted = 0;
            if !partitions.is_empty() {
                let listed: std::collections::HashSet<&str> =
                    partitions.iter().map(|p| p.name.as_str()).collect();
                for (name, gone) in &current {
                    if listed.contains(name.as_str()) {
                        continue;
                    }
                    sqlx::query("DELETE FROM partitions WHERE name = $1")
                        .bind(name)
                        .execute(&mut **tx)
                        .await?;
                    tx.append_other_event(EventKind::PartitionDeleted, &PartitionChange { partition: Cow::Borrowed(gone) })?;
                    deleted += 1;
                }
            }
            tx.commit().await?;
            Ok((changed, deleted))
        }

        /// Every partition, by name.
        pub async fn list_partitions(pool: &Pool<$db>) -> StoreResult<Vec<crate::domain::Partition>> {
            let rows: Vec<PartitionRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PARTITION_COLUMNS} FROM partitions ORDER BY name"
            )))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(PartitionRow::into_partition).collect()
        }

        pub async fn get_partition(pool: &Pool<$db>, name: &str) -> StoreResult<Option<crate::domain::Partition>> {
            let row: Option<PartitionRow> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PARTITION_COLUMNS} FROM partitions WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?;
            row.map(PartitionRow::into_partition).transpose()
        }
    };
}

pub(crate) use node_queries;
