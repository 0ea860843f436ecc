//! Adopting a PostgreSQL database that the Go service created (its schema is described in
//! `shared/go-service-schema.md`): `serve` and `jobscope migrate` recognise it and upgrade it in
//! place, keeping every `jobs`, `metric_samples` and `job_audit_events` row.
//!
//! The Go service kept no migration table: at every start it ran `CREATE ... IF NOT EXISTS`. A
//! database with its three tables and no `_sqlx_migrations` is therefore the Go service's. The
//! adoption turns those tables into exactly what jobscope's migrations 1 to [`ADOPTED_VERSION`]
//! build (tests/go_schema.rs compares the two catalogs), creates jobscope's other tables, records
//! those migrations as applied, and seeds the event log; sqlx then applies any later migration as
//! on any jobscope database.
//!
//! **One transaction.** Every step runs in a single transaction (PostgreSQL's DDL is
//! transactional): a failure anywhere rolls all of it back and the Go tables are as they were.
//! Altering tables in place, rather than copying them into new ones, keeps ids and sequences and
//! costs one rewrite of `jobs` and an index build over the other two; `metric_samples` only gains
//! nullable columns, which PostgreSQL adds without rewriting a row.
//!
//! **What changes in the data.** `nodes` and `gpu_devices` (comma-joined text) become JSON
//! arrays; states are lower-cased; the Go service's zeros that meant "unknown" (resources it was
//! not told, figures of a job that never had a sample) become NULL, so the API omits them as the
//! Go service did; its `exit_code` (shown under `scheduler`) becomes `scheduler_exit_code`; a
//! job's correlation id is that of its first audit row. Its indexes are replaced by jobscope's.

use super::queries::{to_json, JobRow, JOB_COLUMNS};
use super::{StoreError, StoreResult};
use crate::domain::event::{EventKind, JobChange};
use chrono::Utc;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{PgConnection, PgPool};
use std::borrow::Cow;

/// The jobscope migration whose schema the adoption builds; later ones are applied by sqlx.
pub const ADOPTED_VERSION: i64 = 11;

/// Serialises adoptions by several `serve` replicas starting at once (any fixed key: the others
/// wait, then find the database adopted).
const ADOPT_LOCK: i64 = 7411952870413;

/// Events inserted per statement while seeding the log.
const SEED_BATCH: usize = 1000;

/// What a database holds, as far as migrating it is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No `jobs` table and no migration table: jobscope's migrations create everything.
    Empty,
    /// jobscope's own (a migration table exists).
    Jobscope,
    /// The Go service's tables, without a migration table.
    GoService(GoDatabase),
}

/// A Go service's database as found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GoDatabase {
    /// Of `cgroup_path`, `gpu_count`, `gpu_vendor`, `gpu_devices`: those an older Go revision
    /// did not add.
    pub missing_columns: Vec<&'static str>,
    pub jobs: i64,
    /// Pending or running jobs: each gets a `job_created` event in the seeded log.
    pub live_jobs: i64,
    pub samples: i64,
    pub audit_rows: i64,
    /// States (and GPU vendors) jobscope does not know, with their job counts: the adoption
    /// stops at the `jobs` conversion until they are corrected.
    pub unknown_values: Vec<(String, i64)>,
}

/// One step of the adoption: what it does, in words, and its statements.
pub struct Step {
    pub what: String,
    sql: Vec<&'static str>,
}

/// What an adoption did.
#[derive(Debug, Clone, PartialEq)]
pub struct Adopted {
    pub found: GoDatabase,
    /// `job_created` events written to the new event log.
    pub seeded_events: usize,
}

const MAYBE_MISSING: [&str; 4] = ["cgroup_path", "gpu_count", "gpu_vendor", "gpu_devices"];

/// Looks at the current schema of the connection's database.
pub async fn inspect(conn: &mut PgConnection) -> StoreResult<Found> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_name IN ('_sqlx_migrations', 'jobs', 'metric_samples', 'job_audit_events')",
    )
    .fetch_all(&mut *conn)
    .await?;
    let has = |t: &str| tables.iter().any(|x| x == t);
    if has("_sqlx_migrations") {
        return Ok(Found::Jobscope);
    }
    if !has("jobs") {
        return Ok(Found::Empty);
    }
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'jobs'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let column = |name: &str| {
        columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.as_str())
    };
    if column("nodes") != Some("text") || !has("metric_samples") || !has("job_audit_events") {
        return Err(StoreError::Adoption(
            "the database has a jobs table but no _sqlx_migrations table, and it is not the Go \
             service's schema (jobs.nodes as text, metric_samples, job_audit_events): refusing to \
             touch it"
                .into(),
        ));
    }
    let missing_columns = MAYBE_MISSING
        .into_iter()
        .filter(|c| column(c).is_none())
        .collect();
    let (jobs, live_jobs, samples, audit_rows): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs), \
                (SELECT count(*) FROM jobs WHERE lower(btrim(state)) IN ('pending', 'running')), \
                (SELECT count(*) FROM metric_samples), (SELECT count(*) FROM job_audit_events)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let vendor = if column("gpu_vendor").is_some() {
        "UNION ALL SELECT 'gpu_vendor ' || quote_literal(gpu_vendor), count(*) FROM jobs \
         WHERE NULLIF(lower(btrim(gpu_vendor)), '') NOT IN ('none', 'nvidia', 'amd', 'mixed') \
         GROUP BY gpu_vendor"
    } else {
        ""
    };
    let unknown_values: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT 'state ' || quote_literal(state), count(*) FROM jobs \
         WHERE lower(btrim(state)) NOT IN ('pending', 'running', 'completed', 'failed', 'cancelled') \
         GROUP BY state {vendor} ORDER BY 1"
    )))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Found::GoService(GoDatabase {
        missing_columns,
        jobs,
        live_jobs,
        samples,
        audit_rows,
        unknown_values,
    }))
}

/// The steps that adopt `go`, in order (the event-log seeding, done in Rust, comes after them).
pub fn steps(go: &GoDatabase) -> Vec<Step> {
    let mut steps = Vec::new();
    if !go.missing_columns.is_empty() {
        steps.push(Step {
            what: format!(
                "jobs: add the columns an older Go revision lacks ({})",
                go.missing_columns.join(", ")
            ),
            sql: vec![ADD_MISSING_COLUMNS],
        });
    }
    let step = |what: &str, sql: &[&'static str]| Step {
        what: what.to_owned(),
        sql: sql.to_vec(),
    };
    steps.extend([
        step(
            "jobs: replace the Go service's indexes (idx_jobs_*) with jobscope's",
            &[DROP_JOB_INDEXES],
        ),
        // First: its (job_id, id) index finds each job's first audit row when jobs are filled.
        step(
            "job_audit_events: actor column, change_type check, jobscope's index instead of idx_job_audit_*",
            &[DROP_AUDIT_INDEXES, CONVERT_AUDIT, AUDIT_INDEX],
        ),
        step(
            "jobs: nodes and gpu_devices from comma-joined text to JSON arrays, states lower-cased, \
             the Go service's zeros for unknown figures to NULL, exit_code to scheduler_exit_code, \
             jobscope's columns added (one rewrite of the table)",
            &[RENAME_EXIT_CODE, CONVERT_JOBS],
        ),
        step(
            "jobs: running sums behind the averages, and each job's correlation id from its first audit row",
            &[FILL_JOBS, FINISH_JOBS],
        ),
        step(
            "jobs: jobscope's indexes, and job_nodes (one row per job and node)",
            &[
                JOB_INDEX_STATE,
                JOB_INDEX_USER,
                JOB_INDEX_START,
                JOB_INDEX_SLUID,
                CREATE_JOB_NODES,
                FILL_JOB_NODES,
                JOB_NODES_INDEX,
            ],
        ),
        step(
            "metric_samples: jobscope's sample columns (nullable, no rewrite), no foreign key, \
             jobscope's indexes instead of idx_metrics_*",
            &[
                DROP_SAMPLE_INDEXES,
                CONVERT_SAMPLES,
                SAMPLE_INDEX_UNIQUE,
                SAMPLE_INDEX_BRIN,
            ],
        ),
        step(
            "new tables: events (the stream log), nodes, partitions",
            &[
                CREATE_EVENTS,
                EVENTS_INDEX,
                CREATE_NODES,
                CREATE_PARTITIONS,
            ],
        ),
    ]);
    steps
}

/// What stops the adoption of `go` (values the converted columns refuse), one line each.
pub fn blockers(go: &GoDatabase) -> Vec<String> {
    let mut lines = Vec::new();
    for (value, jobs) in &go.unknown_values {
        lines.push(format!(
            "blocked: {jobs} job(s) with {value}, which jobscope does not know: correct them \
             (states pending, running, completed, failed, cancelled; GPU vendors none, nvidia, \
             amd, mixed) or the jobs conversion fails and nothing is changed"
        ));
    }
    lines
}

/// What [`adopt_if_go`] would do to `go`, one line each, for `jobscope migrate --dry-run`.
pub fn describe(go: &GoDatabase) -> Vec<String> {
    let mut lines: Vec<String> = steps(go).into_iter().map(|s| s.what).collect();
    lines.push(format!(
        "_sqlx_migrations: record jobscope's migrations 1 to {ADOPTED_VERSION} as applied"
    ));
    lines.push(format!(
        "events: one job_created event per pending or running job ({}), so streams replayed \
         from the start and /metrics begin from the jobs as they are",
        go.live_jobs
    ));
    lines
}

/// Adopts the database when it is the Go service's; `None` when it is not (nothing done).
pub async fn adopt_if_go(pool: &PgPool, migrator: &Migrator) -> StoreResult<Option<Adopted>> {
    // A cheap look first, so an ordinary start takes no lock.
    if !matches!(
        inspect(&mut *pool.acquire().await?).await?,
        Found::GoService(_)
    ) {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ADOPT_LOCK)
        .execute(&mut *tx)
        .await?;
    // `DROP INDEX IF EXISTS` of an index an older Go revision lacked is not news.
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *tx)
        .await?;
    // Another replica may have adopted it while this one waited for the lock.
    let Found::GoService(found) = inspect(&mut tx).await? else {
        return Ok(None);
    };
    let blocked = blockers(&found);
    if !blocked.is_empty() {
        return Err(StoreError::Adoption(format!(
            "the database is the Go service's, but it cannot be adopted as it is; nothing was \
             changed. {}",
            blocked.join("; ")
        )));
    }
    tracing::info!(
        jobs = found.jobs,
        samples = found.samples,
        audit_rows = found.audit_rows,
        missing_columns = ?found.missing_columns,
        "the database is the Go service's: adopting it in place, in one transaction"
    );
    for step in steps(&found) {
        for sql in &step.sql {
            if let Err(err) = sqlx::raw_sql(*sql).execute(&mut *tx).await {
                return Err(failed(&step.what, &err));
            }
        }
        tracing::info!(step = %step.what, "adoption step done");
    }
    let what = "_sqlx_migrations: record the migrations the adopted schema has";
    tx.ensure_migrations_table("_sqlx_migrations")
        .await
        .map_err(|e| failed(what, &e))?;
    for migration in migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && m.version <= ADOPTED_VERSION)
    {
        tx.skip("_sqlx_migrations", migration)
            .await
            .map_err(|e| failed(what, &e))?;
    }
    let seeded_events = seed_events(&mut tx)
        .await
        .map_err(|e| failed("events: seed the log with the live jobs", &e))?;
    tx.commit().await?;
    tracing::info!(
        jobs = found.jobs,
        samples = found.samples,
        audit_rows = found.audit_rows,
        seeded_events,
        "adopted the Go service's database; its rows are kept"
    );
    Ok(Some(Adopted {
        found,
        seeded_events,
    }))
}

fn failed(step: &str, err: &dyn std::fmt::Display) -> StoreError {
    StoreError::Adoption(format!(
        "adopting the Go service's database failed at \"{step}\": {err}. Nothing was changed \
         (the adoption is one transaction); `jobscope migrate --dry-run` lists the steps"
    ))
}

/// One `job_created` event per pending or running job, oldest start first: a client replaying
/// the log from its start learns every live job, and the metrics snapshot starts at the log's end
/// with the jobs as they are. Finished jobs stay history (REST and the audit trail), not events.
async fn seed_events(conn: &mut PgConnection) -> StoreResult<usize> {
    let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'running') ORDER BY start_time, id"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let now = Utc::now();
    let mut seeded = 0;
    let mut ids = Vec::with_capacity(SEED_BATCH);
    let mut payloads = Vec::with_capacity(SEED_BATCH);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        ids.clear();
        payloads.clear();
        for row in rows.by_ref().take(SEED_BATCH) {
            let job = row.into_job(now)?;
            let change = JobChange {
                job: Cow::Borrowed(&job),
                correlation_id: Cow::Borrowed(job.correlation_id.as_deref().unwrap_or_default()),
                previous_state: None,
            };
            payloads.push(to_json(&change)?);
            ids.push(job.id);
        }
        sqlx::query(
            "INSERT INTO events (occurred_at, kind, job_id, payload) \
             SELECT $1, $2, t.job_id, t.payload::json \
             FROM UNNEST($3::text[], $4::text[]) WITH ORDINALITY AS t(job_id, payload, n) ORDER BY t.n",
        )
        .bind(now)
        .bind(EventKind::JobCreated.as_str())
        .bind(&ids)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
        seeded += ids.len();
    }
    Ok(seeded)
}

// The statements. Column types, defaults, constraints and index names are those of
// migrations/postgres/0001..0011 (tests/go_schema.rs checks the catalogs match).

const ADD_MISSING_COLUMNS: &str = "ALTER TABLE jobs \
    ADD COLUMN IF NOT EXISTS cgroup_path TEXT, \
    ADD COLUMN IF NOT EXISTS gpu_count INTEGER DEFAULT 0, \
    ADD COLUMN IF NOT EXISTS gpu_vendor TEXT, \
    ADD COLUMN IF NOT EXISTS gpu_devices TEXT";

const DROP_JOB_INDEXES: &str = "DROP INDEX IF EXISTS idx_jobs_state, idx_jobs_user, \
    idx_jobs_start_time, idx_jobs_cluster_name";

const RENAME_EXIT_CODE: &str = "ALTER TABLE jobs RENAME COLUMN exit_code TO scheduler_exit_code";

// USING expressions see the row as it was. `nodes` and `gpu_devices` are split on commas (spaces
// around them and empty names dropped); a zero the Go service stored for something it was not
// told becomes NULL. Current figures and aggregates of a job that never had a sample are the Go
// service's defaults, not measurements.
const CONVERT_JOBS: &str = r"ALTER TABLE jobs
    ALTER COLUMN nodes TYPE JSONB
        USING array_to_json(array_remove(regexp_split_to_array(btrim(nodes), '\s*,\s*'), ''))::jsonb,
    ALTER COLUMN node_count DROP DEFAULT,
    ALTER COLUMN node_count TYPE BIGINT USING CASE WHEN node_count > 0 THEN node_count
        ELSE cardinality(array_remove(regexp_split_to_array(btrim(nodes), '\s*,\s*'), '')) END,
    ALTER COLUMN node_count SET NOT NULL,
    ALTER COLUMN state DROP DEFAULT,
    ALTER COLUMN state TYPE TEXT USING lower(btrim(state)),
    ALTER COLUMN runtime_seconds DROP DEFAULT,
    ALTER COLUMN cpu_usage DROP DEFAULT,
    ALTER COLUMN cpu_usage TYPE DOUBLE PRECISION
        USING CASE WHEN COALESCE(sample_count, 0) = 0 AND cpu_usage = 0 THEN NULL ELSE cpu_usage END,
    ALTER COLUMN memory_usage_mb DROP DEFAULT,
    ALTER COLUMN memory_usage_mb TYPE BIGINT
        USING CASE WHEN COALESCE(sample_count, 0) = 0 AND memory_usage_mb = 0 THEN NULL ELSE memory_usage_mb END,
    ALTER COLUMN requested_cpus DROP DEFAULT,
    ALTER COLUMN requested_cpus TYPE BIGINT USING NULLIF(requested_cpus, 0),
    ALTER COLUMN allocated_cpus DROP DEFAULT,
    ALTER COLUMN allocated_cpus TYPE BIGINT USING NULLIF(allocated_cpus, 0),
    ALTER COLUMN requested_memory_mb DROP DEFAULT,
    ALTER COLUMN requested_memory_mb TYPE BIGINT USING NULLIF(requested_memory_mb, 0),
    ALTER COLUMN allocated_memory_mb DROP DEFAULT,
    ALTER COLUMN allocated_memory_mb TYPE BIGINT USING NULLIF(allocated_memory_mb, 0),
    ALTER COLUMN requested_gpus DROP DEFAULT,
    ALTER COLUMN requested_gpus TYPE BIGINT USING NULLIF(requested_gpus, 0),
    ALTER COLUMN allocated_gpus DROP DEFAULT,
    ALTER COLUMN allocated_gpus TYPE BIGINT USING NULLIF(allocated_gpus, 0),
    ALTER COLUMN cluster_name TYPE TEXT USING COALESCE(NULLIF(cluster_name, ''), 'default'),
    ALTER COLUMN cluster_name SET NOT NULL,
    ALTER COLUMN scheduler_instance TYPE TEXT USING COALESCE(scheduler_instance, ''),
    ALTER COLUMN scheduler_instance SET NOT NULL,
    ALTER COLUMN ingest_version TYPE TEXT USING COALESCE(ingest_version, ''),
    ALTER COLUMN ingest_version SET NOT NULL,
    ALTER COLUMN sample_count TYPE BIGINT USING COALESCE(sample_count, 0),
    ALTER COLUMN sample_count SET NOT NULL,
    ALTER COLUMN avg_cpu_usage DROP DEFAULT,
    ALTER COLUMN avg_cpu_usage TYPE DOUBLE PRECISION
        USING CASE WHEN COALESCE(sample_count, 0) = 0 THEN NULL ELSE avg_cpu_usage END,
    ALTER COLUMN max_cpu_usage DROP DEFAULT,
    ALTER COLUMN max_cpu_usage TYPE DOUBLE PRECISION
        USING CASE WHEN COALESCE(sample_count, 0) = 0 THEN NULL ELSE max_cpu_usage END,
    ALTER COLUMN max_memory_usage_mb DROP DEFAULT,
    ALTER COLUMN max_memory_usage_mb TYPE BIGINT
        USING CASE WHEN COALESCE(sample_count, 0) = 0 THEN NULL ELSE max_memory_usage_mb END,
    ALTER COLUMN avg_gpu_usage DROP DEFAULT,
    ALTER COLUMN avg_gpu_usage TYPE DOUBLE PRECISION
        USING CASE WHEN COALESCE(sample_count, 0) = 0
            OR (gpu_usage IS NULL AND COALESCE(max_gpu_usage, 0) = 0) THEN NULL ELSE avg_gpu_usage END,
    ALTER COLUMN max_gpu_usage DROP DEFAULT,
    ALTER COLUMN max_gpu_usage TYPE DOUBLE PRECISION
        USING CASE WHEN COALESCE(sample_count, 0) = 0
            OR (gpu_usage IS NULL AND COALESCE(max_gpu_usage, 0) = 0) THEN NULL ELSE max_gpu_usage END,
    ALTER COLUMN scheduler_exit_code TYPE BIGINT,
    ALTER COLUMN time_limit_minutes TYPE BIGINT,
    ALTER COLUMN gpu_count DROP DEFAULT,
    ALTER COLUMN gpu_count TYPE BIGINT USING NULLIF(gpu_count, 0),
    ALTER COLUMN gpu_vendor TYPE TEXT USING NULLIF(lower(btrim(gpu_vendor)), ''),
    ALTER COLUMN gpu_devices TYPE JSONB
        USING array_to_json(array_remove(regexp_split_to_array(btrim(COALESCE(gpu_devices, '')), '\s*,\s*'), ''))::jsonb,
    ALTER COLUMN gpu_devices SET DEFAULT '[]',
    ALTER COLUMN gpu_devices SET NOT NULL,
    ALTER COLUMN created_at DROP DEFAULT,
    ALTER COLUMN updated_at DROP DEFAULT,
    ADD COLUMN cpu_usage_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN gpu_usage_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN gpu_sample_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN scheduler_extra JSONB,
    ADD COLUMN exit_code BIGINT,
    ADD COLUMN signal BIGINT,
    ADD COLUMN correlation_id TEXT,
    ADD COLUMN cpu_sample_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_usage_bytes BIGINT,
    ADD COLUMN max_memory_usage_bytes BIGINT,
    ADD COLUMN gpus JSON,
    ADD COLUMN sluid TEXT,
    ADD COLUMN node_figures JSON,
    ADD CONSTRAINT jobs_state_check
        CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    ADD CONSTRAINT jobs_gpu_vendor_check CHECK (gpu_vendor IN ('none', 'nvidia', 'amd', 'mixed'))";

// The Go service averaged over every sample; jobscope keeps the sums and counts behind its
// averages, so a new sample moves an adopted average exactly as it would have moved the Go one.
const FILL_JOBS: &str = "UPDATE jobs SET \
    cpu_sample_count = sample_count, \
    cpu_usage_sum = COALESCE(avg_cpu_usage, 0) * sample_count, \
    gpu_sample_count = CASE WHEN avg_gpu_usage IS NULL THEN 0 ELSE sample_count END, \
    gpu_usage_sum = CASE WHEN avg_gpu_usage IS NULL THEN 0 ELSE avg_gpu_usage * sample_count END, \
    correlation_id = COALESCE( \
        (SELECT a.correlation_id FROM job_audit_events a WHERE a.job_id = jobs.id ORDER BY a.id LIMIT 1), \
        'go-' || md5(jobs.id || clock_timestamp()::text))";

const FINISH_JOBS: &str =
    "ALTER TABLE jobs ALTER COLUMN correlation_id SET NOT NULL, SET (fillfactor = 70)";

const JOB_INDEX_STATE: &str = "CREATE INDEX jobs_state_start_idx ON jobs (state, start_time DESC)";
const JOB_INDEX_USER: &str =
    "CREATE INDEX jobs_user_start_idx ON jobs (user_name, start_time DESC)";
const JOB_INDEX_START: &str = "CREATE INDEX jobs_start_idx ON jobs (start_time DESC, id)";
const JOB_INDEX_SLUID: &str = "CREATE INDEX jobs_sluid_idx ON jobs (sluid) WHERE sluid IS NOT NULL";

const CREATE_JOB_NODES: &str = "CREATE TABLE job_nodes ( \
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, \
    node   TEXT NOT NULL, \
    PRIMARY KEY (job_id, node))";
const FILL_JOB_NODES: &str = "INSERT INTO job_nodes (job_id, node) \
    SELECT DISTINCT id, jsonb_array_elements_text(nodes) FROM jobs";
const JOB_NODES_INDEX: &str = "CREATE INDEX job_nodes_node_idx ON job_nodes (node, job_id)";

const DROP_SAMPLE_INDEXES: &str =
    "DROP INDEX IF EXISTS idx_metrics_job_id, idx_metrics_timestamp, idx_metrics_job_timestamp";

const CONVERT_SAMPLES: &str = "ALTER TABLE metric_samples \
    DROP CONSTRAINT IF EXISTS metric_samples_job_id_fkey, \
    ALTER COLUMN cpu_usage DROP NOT NULL, \
    ALTER COLUMN memory_usage_mb DROP NOT NULL, \
    ADD COLUMN node                  TEXT, \
    ADD COLUMN cpu_time_seconds      DOUBLE PRECISION, \
    ADD COLUMN cpu_user_seconds      DOUBLE PRECISION, \
    ADD COLUMN cpu_system_seconds    DOUBLE PRECISION, \
    ADD COLUMN cpu_throttled_seconds DOUBLE PRECISION, \
    ADD COLUMN cpu_nr_throttled      BIGINT, \
    ADD COLUMN memory_usage_bytes    BIGINT, \
    ADD COLUMN memory_peak_bytes     BIGINT, \
    ADD COLUMN memory_limit_bytes    BIGINT, \
    ADD COLUMN memory_anon_bytes     BIGINT, \
    ADD COLUMN memory_file_bytes     BIGINT, \
    ADD COLUMN memory_shmem_bytes    BIGINT, \
    ADD COLUMN oom_kills             BIGINT, \
    ADD COLUMN io_read_bytes         BIGINT, \
    ADD COLUMN io_write_bytes        BIGINT, \
    ADD COLUMN io_read_ops           BIGINT, \
    ADD COLUMN io_write_ops          BIGINT, \
    ADD COLUMN pids                  BIGINT, \
    ADD COLUMN pressure              JSON, \
    ADD COLUMN gpus                  JSON";
// Samples posted without a node (all of the Go service's) have a NULL node, and NULLs never
// collide, so the unique index cannot fail on adopted rows.
const SAMPLE_INDEX_UNIQUE: &str = "CREATE UNIQUE INDEX metric_samples_job_time_node_idx \
    ON metric_samples (job_id, timestamp, node)";
const SAMPLE_INDEX_BRIN: &str =
    "CREATE INDEX metric_samples_time_brin_idx ON metric_samples USING brin (timestamp)";

const DROP_AUDIT_INDEXES: &str = "DROP INDEX IF EXISTS idx_job_audit_job_id, \
    idx_job_audit_changed_at, idx_job_audit_change_type, idx_job_audit_correlation_id";
const CONVERT_AUDIT: &str = "ALTER TABLE job_audit_events \
    ALTER COLUMN changed_at DROP DEFAULT, \
    ADD COLUMN actor TEXT, \
    ADD CONSTRAINT job_audit_events_change_type_check \
        CHECK (change_type IN ('create', 'update', 'delete'))";
const AUDIT_INDEX: &str = "CREATE INDEX job_audit_events_job_idx ON job_audit_events (job_id, id)";

const CREATE_EVENTS: &str = "CREATE TABLE events ( \
    id          BIGSERIAL PRIMARY KEY, \
    occurred_at TIMESTAMPTZ NOT NULL, \
    kind        TEXT NOT NULL, \
    job_id      TEXT, \
    payload     JSON NOT NULL, \
    sample_id   BIGINT)";
const EVENTS_INDEX: &str = "CREATE INDEX events_time_idx ON events (occurred_at)";

const CREATE_NODES: &str = "CREATE TABLE nodes ( \
    name                    TEXT PRIMARY KEY, \
    state                   TEXT, \
    state_reason            TEXT, \
    partitions              JSONB NOT NULL DEFAULT '[]', \
    cpus                    BIGINT, \
    memory_total_bytes      BIGINT, \
    cpu_usage_percent       DOUBLE PRECISION, \
    memory_used_bytes       BIGINT, \
    load_1                  DOUBLE PRECISION, \
    load_5                  DOUBLE PRECISION, \
    load_15                 DOUBLE PRECISION, \
    gpus                    JSONB NOT NULL DEFAULT '[]', \
    report_interval_seconds DOUBLE PRECISION, \
    last_report_at          TIMESTAMPTZ, \
    created_at              TIMESTAMPTZ NOT NULL, \
    updated_at              TIMESTAMPTZ NOT NULL)";

const CREATE_PARTITIONS: &str = "CREATE TABLE partitions ( \
    name                 TEXT PRIMARY KEY, \
    state                TEXT NOT NULL, \
    is_default           BOOLEAN NOT NULL DEFAULT FALSE, \
    nodes                JSONB NOT NULL DEFAULT '[]', \
    total_nodes          BIGINT, \
    total_cpus           BIGINT, \
    max_time_minutes     BIGINT, \
    default_time_minutes BIGINT, \
    max_nodes_per_job    BIGINT, \
    jobs_running         BIGINT NOT NULL DEFAULT 0, \
    jobs_pending         BIGINT NOT NULL DEFAULT 0, \
    created_at           TIMESTAMPTZ NOT NULL, \
    updated_at           TIMESTAMPTZ NOT NULL)";
