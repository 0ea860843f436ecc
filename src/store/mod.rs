//! The store: every read and write of jobs, samples, audit rows and the event log, on SQLite (the
//! embedded default) or PostgreSQL, chosen by the URL scheme.
//!
//! Each mutation is one transaction that writes the job row, its audit row and its event-log row
//! together, so the audit trail and the streams can never disagree with the data. The SQL is
//! written once (`queries/`) and compiled for both backends; `sqlite.rs` and `postgres.rs` hold
//! only what differs: connecting, pragmas, migrations and transaction start, and `bulk.rs` the
//! statements that carry a whole sample batch, which each backend writes its own fastest way.
//! Samples age through three forms: rows (`metric_samples`, about an hour), packs
//! (`sample_packs.rs`, lossless, until `--retention-days`) and 5-minute rollups (`rollups.rs`,
//! until `--rollup-retention-days`); readers go through [`Store::list_samples`] and never see which.
//! On PostgreSQL the event log and the packs are partitioned by day and retention drops whole
//! days (`partitions.rs`).

mod bulk;
pub mod go_schema;
mod group_commit;
mod lifecycle_batch;
pub mod logs;
mod migrate;
mod node_figures;
pub mod partitions;
mod pg_copy;
mod postgres;
pub(crate) mod queries;
mod reports;
pub mod rollups;
pub mod sample_packs;
mod sqlite;

pub use group_commit::LifecycleOp;
pub use migrate::migrate;
pub use reports::ReportFilter;

/// Ingestion's inputs live in `domain` (the collector, below the store, makes them).
pub use crate::domain::usage::{NodeReport, SampleItem};
use crate::domain::{AuditEvent, Job, JobState, MetricSample, Node, Partition};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// Who made a change and why; one of these goes into every audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    pub changed_by: String,
    pub source: String,
    pub correlation_id: String,
    /// The authenticated identity (`role:hook`, `user:alice`, `admin`); `None` for the
    /// server's own changes and for servers without authentication.
    pub actor: Option<String>,
}

/// Filters of `GET /v1/jobs`, already validated.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub user: Option<String>,
    pub node: Option<String>,
    pub limit: i64,
    pub offset: i64,
    pub partition: Option<String>,
    /// Order of the page (default: newest start first).
    pub sort: JobSort,
    pub ascending: bool,
}

/// What `GET /v1/jobs` may sort by (`sort=`); jobs without the value come last either way,
/// and ties are broken by id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JobSort {
    #[default]
    StartTime,
    EndTime,
    Id,
    User,
    State,
    Partition,
    CpuUsage,
    MemoryUsage,
}

impl JobSort {
    pub const NAMES: [&'static str; 8] = [
        "start_time",
        "end_time",
        "id",
        "user",
        "state",
        "partition",
        "cpu_usage",
        "memory_usage_mb",
    ];

    pub fn parse(name: &str) -> Option<JobSort> {
        const ALL: [JobSort; 8] = [
            JobSort::StartTime,
            JobSort::EndTime,
            JobSort::Id,
            JobSort::User,
            JobSort::State,
            JobSort::Partition,
            JobSort::CpuUsage,
            JobSort::MemoryUsage,
        ];
        JobSort::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| ALL[i])
    }

    /// The column behind it (a fixed name, never user text).
    pub(crate) fn column(self) -> &'static str {
        match self {
            JobSort::StartTime => "start_time",
            JobSort::EndTime => "end_time",
            JobSort::Id => "id",
            JobSort::User => "user_name",
            JobSort::State => "state",
            JobSort::Partition => "partition",
            JobSort::CpuUsage => "cpu_usage",
            JobSort::MemoryUsage => "memory_usage_mb",
        }
    }

    /// Whether the column may be NULL (those jobs are listed last, whatever the direction).
    /// The other columns sort on themselves alone, so that an index in their order (such as
    /// `jobs_state_start_idx` for the running jobs by start) gives the page without reading
    /// and sorting every matching job: at 11,000 running jobs 0.4 ms instead of 25.
    pub(crate) fn may_be_null(self) -> bool {
        matches!(
            self,
            JobSort::EndTime | JobSort::Partition | JobSort::CpuUsage | JobSort::MemoryUsage
        )
    }
}

/// Fields a PATCH may change, already validated.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    pub state: Option<JobState>,
    pub cpu_usage: Option<f64>,
    pub memory_usage_mb: Option<i64>,
    pub gpu_usage: Option<f64>,
}

/// What the epilog (or, later, the reconciler) knows about a job's end.
#[derive(Debug, Clone)]
pub struct Finish {
    pub state: JobState,
    pub end_time: DateTime<Utc>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub raw_state: Option<String>,
    /// Record the change under the job's stored correlation id instead of the one given (the
    /// caller sent none, so the change continues the job's trace).
    pub inherit_correlation: bool,
}

/// Range and size of a samples query.
#[derive(Debug, Clone)]
pub struct SampleQuery {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Which samples a finished job still takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// Agents: a sample collected up to the job's end is the job's, however late it arrives.
    UntilJobEnd,
    /// The compat single-sample endpoint: a finished job takes no more samples.
    WhileRunning,
}

/// Why one sample of a batch was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleRejection {
    /// No job has this id (yet: a sample can beat its prolog, and is then lost).
    UnknownJob,
    /// Collected after the job ended: the cgroup was reused or the clock is off.
    AfterJobEnd,
    /// The job is finished (single-sample endpoint).
    JobFinished,
    /// Collected before the job started (beyond the allowed clock skew): not the job's.
    BeforeJobStart,
}

/// What became of a batch: how many were stored, and the index and reason of each rejection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    /// Samples stored by this call.
    pub accepted: usize,
    /// Samples already stored (a batch delivered twice); not counted again.
    pub duplicates: usize,
    pub rejected: Vec<(usize, SampleRejection)>,
}

/// What a scheduler says about a node (the Slurm backend's node feed). `None` figures are
/// unknown and leave the stored value as it is; `partitions: None` likewise (v0.0.36 of
/// slurmrestd does not list them).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerNode {
    pub name: String,
    pub state: crate::domain::NodeState,
    pub state_reason: Option<String>,
    pub partitions: Option<Vec<String>>,
    /// Slurm's node features (`Feature=` in slurm.conf); `None` when the report does not say.
    pub features: Option<Vec<String>>,
    pub cpus: Option<i64>,
    pub memory_total_bytes: Option<i64>,
    pub load_1: Option<f64>,
}

/// One row of the event log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub kind: crate::domain::event::EventKind,
    pub job_id: Option<String>,
    pub payload: serde_json::Value,
    /// A `job_sample` row whose sample row is gone: its id, for `store::sample_packs` to look
    /// up in the packs (`None` once found, or for every other row).
    #[serde(skip)]
    pub(crate) missing_sample: Option<i64>,
}

/// Result of an idempotent insert or update.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The change was written; the job as it is now.
    Done(Box<Job>),
    /// The job existed; what it lacked was filled in from the change (a later job-started).
    Filled(Box<Job>),
    /// Nothing was written: the change had already happened.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job not found")]
    NotFound,
    #[error("job already exists")]
    AlreadyExists,
    #[error("job is in terminal state")]
    Terminal,
    #[error("a job cannot move from {from} to {to}")]
    InvalidTransition { from: JobState, to: JobState },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Adopting the Go service's database failed (and was rolled back).
    #[error("{0}")]
    Adoption(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The read replica cannot serve this database (see [`Store::with_read_replica`]).
    #[error("read replica: {0}")]
    Replica(String),
    #[error("the store is shutting down")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Default of `--db-acquire-timeout`.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl StoreError {
    /// Whether the database could not be reached or was busy for longer than the acquire
    /// timeout: the request may succeed later as it is (the API answers 503 with Retry-After,
    /// and the hook and agent keep the event).
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
            // SQLite's SQLITE_BUSY (5) and SQLITE_LOCKED (6): another writer held the database
            // past the busy timeout.
            sqlx::Error::Database(db) => {
                db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                    && matches!(db.code().as_deref(), Some("5" | "6" | "517" | "261"))
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// A PostgreSQL read replica for the API's reads ([`Store::reader`]), when configured.
    replica: Option<Backend>,
    /// Which database `backend` is: the read replica in a [`Store::reader`], else the primary.
    database: Database,
    lifecycle: group_commit::GroupCommit,
    /// Rung after every commit that wrote event-log rows (see `crate::events`).
    commits: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Where operation timings go once `/metrics` exists (shared by every clone).
    observer: SharedObserver,
    /// Job output's limits and live readers (see `logs`).
    logs: logs::LogHub,
}

/// Calls the same query function on whichever backend this store uses.
macro_rules! dispatch {
    ($self:ident, $op:literal, $func:ident ( $($arg:expr),* )) => {{
        let started = Instant::now();
        let result = match &$self.backend {
            Backend::Sqlite(pool) => sqlite::q::$func(pool, $($arg),*).await,
            Backend::Postgres(pool) => postgres::q::$func(pool, $($arg),*).await,
        };
        $self.observe($op, started, &result);
        result
    }};
}

/// Where the store reports how long each operation took: the store sits below `metrics`, so
/// `metrics` implements this and hands itself over ([`Store::observe_with`]).
pub trait StoreObserver: Send + Sync {
    /// One storage operation on `database`: `success` is false when the database failed (not
    /// when a job was simply not found).
    fn observe(
        &self,
        operation: &'static str,
        database: Database,
        elapsed: Duration,
        success: bool,
    );

    /// A group-commit transaction of `events` hook events committed (see `group_commit`).
    fn lifecycle_batch(&self, _events: usize) {}
}

/// Which database an operation ran on: the primary, or the read replica of [`Store::reader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Primary,
    Replica,
}

impl Database {
    pub fn as_str(self) -> &'static str {
        match self {
            Database::Primary => "primary",
            Database::Replica => "replica",
        }
    }
}

/// The observer `Store::observe_with` sets once, shared by the store's clones and its
/// group-commit writers.
type SharedObserver = std::sync::Arc<std::sync::OnceLock<Box<dyn StoreObserver>>>;

fn observe<T>(
    observer: Option<&dyn StoreObserver>,
    database: Database,
    operation: &'static str,
    started: Instant,
    result: &StoreResult<T>,
) {
    let elapsed = started.elapsed();
    if let Some(observer) = observer {
        // A database failure is a failed operation; "not found", "already exists" and the like
        // are answers.
        let failed = matches!(
            result,
            Err(StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Closed)
        );
        observer.observe(operation, database, elapsed, !failed);
    }
    match result {
        Err(StoreError::Database(err)) => {
            tracing::error!(operation, database = database.as_str(), error = %err, elapsed_ms = elapsed.as_millis() as u64, "storage operation failed")
        }
        _ => tracing::trace!(
            operation,
            elapsed_us = elapsed.as_micros() as u64,
            "storage operation"
        ),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://...`), creating an SQLite file if it is
    /// missing, and applies pending migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`Store::connect`] where an operation waits at most `acquire_timeout` for a connection
    /// (SQLite: also for the write lock) before failing with an error
    /// [`StoreError::is_unavailable`] recognises.
    pub async fn connect_with(url: &str, acquire_timeout: Duration) -> StoreResult<Store> {
        let (backend, writers) = if is_postgres_url(url) {
            (
                Backend::Postgres(postgres::connect(url, acquire_timeout).await?),
                postgres::LIFECYCLE_WRITERS,
            )
        } else {
            // SQLite has one writer at a time anyway.
            (
                Backend::Sqlite(sqlite::connect(url, acquire_timeout).await?),
                1,
            )
        };
        let commits = std::sync::Arc::new(tokio::sync::watch::Sender::new(0));
        if let Backend::Postgres(pool) = &backend {
            postgres::listen_for_commits(pool.clone(), commits.clone());
        }
        let observer = SharedObserver::default();
        let lifecycle = group_commit::GroupCommit::start(
            backend.clone(),
            writers,
            commits.clone(),
            observer.clone(),
        );
        Ok(Store {
            backend,
            replica: None,
            database: Database::Primary,
            lifecycle,
            commits,
            observer,
            logs: Default::default(),
        })
    }

    /// Sends the reads of [`Store::reader`] to the PostgreSQL read replica at `url` from now on
    /// (on this handle and its clones made after). The replica must serve the primary's schema:
    /// `serve` has just migrated the primary, so this waits up to `catch_up` for the replica to
    /// replay the migrations, and says so when it has not.
    pub async fn with_read_replica(
        mut self,
        url: &str,
        acquire_timeout: Duration,
        catch_up: Duration,
    ) -> StoreResult<Store> {
        let Backend::Postgres(primary) = &self.backend else {
            return Err(StoreError::Replica(
                "a read replica needs a PostgreSQL primary".into(),
            ));
        };
        let replica = postgres::connect_replica(url, acquire_timeout).await?;
        postgres::await_replica_schema(primary, &replica, catch_up).await?;
        self.replica = Some(Backend::Postgres(replica));
        Ok(self)
    }

    /// This store for the API's reads: the same store, its queries sent to the read replica
    /// when one is configured. Such reads may lag the primary by the replica's replay delay,
    /// so nothing that writes, streams the event log or must see its own writes uses it.
    pub fn reader(&self) -> Store {
        match &self.replica {
            Some(replica) => Store {
                backend: replica.clone(),
                database: Database::Replica,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// How many bytes of write-ahead log the read replica has still to replay (0: caught up);
    /// `None` without a replica, or when it is not replaying (not a standby).
    pub async fn read_replica_lag(&self) -> StoreResult<Option<i64>> {
        let (Backend::Postgres(primary), Some(Backend::Postgres(replica))) =
            (&self.backend, &self.replica)
        else {
            return Ok(None);
        };
        postgres::replica_lag(primary, replica).await
    }

    /// Whether [`Store::reader`] reads from a replica.
    pub fn has_read_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Reports every storage operation's duration and outcome to `metrics` from now on (on
    /// every clone of this store). Only the first call counts.
    pub fn observe_with(&self, metrics: impl StoreObserver + 'static) {
        let _ = self.observer.set(Box::new(metrics));
    }

    fn observe<T>(&self, operation: &'static str, started: Instant, result: &StoreResult<T>) {
        observe(
            self.observer.get().map(|o| &**o),
            self.database,
            operation,
            started,
            result,
        );
    }

    /// A receiver that sees a change after every commit that appended events.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn ring<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_ok() {
            self.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        result
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, "ping", ping())
    }

    /// Inserts a new job. `AlreadyExists` when the id is taken.
    pub async fn create_job(&self, job: &Job, audit: &AuditContext) -> StoreResult<Job> {
        let result = dispatch!(self, "create_job", create_job(job, audit));
        self.ring(result)
    }

    /// Inserts the job unless one with its id exists (the prolog path: repeats are skipped).
    /// Goes through group commit, like [`Store::finish_job`].
    pub async fn insert_job_if_absent(
        &self,
        job: &Job,
        audit: &AuditContext,
    ) -> StoreResult<Applied> {
        let op = LifecycleOp::Start {
            job: Box::new(job.clone()),
            audit: audit.clone(),
        };
        let started = Instant::now();
        let result = self.lifecycle.apply(op).await;
        self.observe("insert_job_if_absent", started, &result);
        result
    }

    /// Moves a job to its terminal state unless it is terminal already (the epilog path).
    pub async fn finish_job(
        &self,
        id: &str,
        finish: &Finish,
        audit: &AuditContext,
    ) -> StoreResult<Applied> {
        let op = LifecycleOp::Finish {
            id: id.to_owned(),
            finish: finish.clone(),
            audit: audit.clone(),
        };
        let started = Instant::now();
        let result = self.lifecycle.apply(op).await;
        self.observe("finish_job", started, &result);
        result
    }

    pub async fn update_job(
        &self,
        id: &str,
        patch: &JobPatch,
        audit: &AuditContext,
    ) -> StoreResult<Job> {
        let result = dispatch!(self, "update_job", update_job(id, patch, audit));
        self.ring(result)
    }

    /// The scheduler's final word on a job (see `queries::confirm_final`): finishes a running
    /// job or corrects a finished one; `Skipped` when nothing changes.
    pub async fn confirm_final(
        &self,
        id: &str,
        finish: &Finish,
        audit: &AuditContext,
    ) -> StoreResult<Applied> {
        let result = dispatch!(self, "confirm_final", confirm_final(id, finish, audit));
        self.ring(result)
    }

    pub async fn delete_job(&self, id: &str, audit: &AuditContext) -> StoreResult<()> {
        let result = dispatch!(self, "delete_job", delete_job(id, audit));
        self.ring(result)
    }

    pub async fn get_job(&self, id: &str) -> StoreResult<Job> {
        dispatch!(self, "get_job", get_job(id))
    }

    /// One page of jobs matching `filter`, newest start first, and the number of all matches.
    pub async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<(Vec<Job>, i64)> {
        dispatch!(self, "list_jobs", list_jobs(filter))
    }

    /// Records one sample of a pending or running job (the Go service's
    /// `POST /v1/jobs/{id}/metrics`): `NotFound` for an unknown job, `Terminal` for a finished one.
    pub async fn add_sample(&self, id: &str, sample: &MetricSample) -> StoreResult<()> {
        let items = [SampleItem {
            job_id: id.to_owned(),
            sample: sample.clone(),
        }];
        let outcome = self
            .ingest_samples(&items, None, LatePolicy::WhileRunning)
            .await?;
        match outcome.rejected.first() {
            None => Ok(()),
            Some((_, SampleRejection::UnknownJob)) => Err(StoreError::NotFound),
            Some(_) => Err(StoreError::Terminal),
        }
    }

    /// Stores a batch of samples (and the reporting node's figures) in one transaction; each
    /// item is accepted or rejected on its own. No audit rows: samples do not change a job's
    /// identity or state. One `job_sample` event per accepted sample, one `node_updated` event
    /// when the node's row changed.
    pub async fn ingest_samples(
        &self,
        items: &[SampleItem],
        node: Option<&NodeReport>,
        policy: LatePolicy,
    ) -> StoreResult<IngestOutcome> {
        let result = dispatch!(self, "ingest_samples", ingest_samples(items, node, policy));
        self.ring(result)
    }

    /// Writes the scheduler's view of nodes (upsert by name): state, reason and partitions
    /// always; CPUs, memory and load only while no live agent reports them (the agent measures
    /// more often). One `node_updated` event per node that changed; returns how many changed.
    pub async fn update_nodes_from_scheduler(&self, nodes: &[SchedulerNode]) -> StoreResult<usize> {
        let result = dispatch!(
            self,
            "update_nodes_from_scheduler",
            update_nodes_from_scheduler(nodes)
        );
        self.ring(result)
    }

    /// Makes the stored partitions the scheduler's list (see `sync_partitions` in the queries):
    /// one `partition_updated` event per partition that changed, one `partition_deleted` per
    /// partition no longer listed. Returns (changed, deleted).
    pub async fn sync_partitions(&self, partitions: &[Partition]) -> StoreResult<(usize, usize)> {
        let result = dispatch!(self, "sync_partitions", sync_partitions(partitions));
        self.ring(result)
    }

    /// Every partition, by name.
    pub async fn list_partitions(&self) -> StoreResult<Vec<Partition>> {
        dispatch!(self, "list_partitions", list_partitions())
    }

    pub async fn get_partition(&self, name: &str) -> StoreResult<Option<Partition>> {
        dispatch!(self, "get_partition", get_partition(name))
    }

    /// Every node, by name.
    pub async fn list_nodes(&self) -> StoreResult<Vec<Node>> {
        dispatch!(self, "list_nodes", list_nodes())
    }

    pub async fn get_node(&self, name: &str) -> StoreResult<Option<Node>> {
        dispatch!(self, "get_node", get_node(name))
    }

    /// Samples of a job in a time range, newest first, and how many the range holds.
    pub async fn list_samples(
        &self,
        id: &str,
        query: &SampleQuery,
    ) -> StoreResult<(Vec<MetricSample>, i64)> {
        let rows = dispatch!(self, "list_samples", list_samples(id, query))?;
        self.with_packed_samples(id, query, rows).await
    }

    /// The audit trail of a job, oldest first; it outlives the job.
    pub async fn audit_trail(&self, id: &str) -> StoreResult<Vec<AuditEvent>> {
        dispatch!(self, "audit_trail", audit_trail(id))
    }

    /// Deletes samples and event-log rows older than `before`; returns (samples, events) removed.
    /// On PostgreSQL the log goes a day partition at a time, once the whole day is before
    /// `before` (`partitions`), so it keeps up to a day more than asked.
    pub async fn prune(&self, before: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        // On PostgreSQL whole day partitions of the log go first (`partitions`); the chunked
        // delete then only sees the rows its default partition caught.
        let (events_table, dropped) = match &self.backend {
            Backend::Sqlite(_) => ("events", 0),
            Backend::Postgres(pool) => (
                partitions::EVENTS.default,
                partitions::drop_past(pool, &partitions::EVENTS, before).await?,
            ),
        };
        let (samples, events) = dispatch!(self, "prune", prune(before, events_table))?;
        Ok((samples + self.prune_packs(before).await?, events + dropped))
    }

    /// Inserts samples for a job in one statement, without touching aggregates of other jobs;
    /// used by the demo seeder, which computes the aggregates itself.
    pub async fn seed_job(
        &self,
        job: &Job,
        samples: &[MetricSample],
        audit: &AuditContext,
    ) -> StoreResult<bool> {
        let result = dispatch!(self, "seed_job", seed_job(job, samples, audit));
        self.ring(result)
    }

    /// The correlation id a job's first event recorded (`None` for an unknown job).
    pub async fn correlation_of(&self, id: &str) -> StoreResult<Option<String>> {
        dispatch!(self, "correlation_of", correlation_of(id))
    }

    /// Jobs per state (all five states present) and the GPUs held by running jobs.
    pub async fn job_counts(&self) -> StoreResult<(std::collections::BTreeMap<String, i64>, i64)> {
        dispatch!(self, "job_counts", job_counts())
    }

    /// Up to `limit` events with an id above `after`, oldest first (a sample batch's row gives
    /// one per sample, and a page may end inside it).
    pub async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<StoredEvent>> {
        let events = dispatch!(self, "events_after", events_after(after, limit))?;
        if events.iter().any(|e| e.missing_sample.is_some()) {
            return self.with_packed_event_samples(events).await;
        }
        Ok(events)
    }

    /// Logs the `job_report` event of a finished job once (see `queries::append_job_report`).
    pub async fn append_job_report(
        &self,
        id: &str,
        since: DateTime<Utc>,
        payload: &crate::domain::event::JobReport<'_>,
    ) -> StoreResult<bool> {
        let result = dispatch!(
            self,
            "append_job_report",
            append_job_report(id, since, payload)
        );
        self.ring(result)
    }

    /// Finished jobs since `since` without a logged report (restart recovery).
    pub async fn jobs_missing_report(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        dispatch!(
            self,
            "jobs_missing_report",
            jobs_missing_report(since, limit)
        )
    }

    /// Id of the newest event (0 when the log is empty): a sample batch's row has the id of its
    /// last sample.
    pub async fn last_event_id(&self) -> StoreResult<i64> {
        dispatch!(self, "last_event_id", last_event_id())
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// For the store's own tests on PostgreSQL: a store over a new, empty database on the server
/// of `JOBSCOPE_TEST_POSTGRES_URL` (default the local one), and the database's URL; `None`
/// only when `JOBSCOPE_TEST_SKIP_POSTGRES=1` says to skip.
#[cfg(test)]
pub(crate) async fn test_postgres_store() -> Option<(Store, String)> {
    use sqlx::{Connection, Executor};
    if std::env::var("JOBSCOPE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("skipped on purpose: JOBSCOPE_TEST_SKIP_POSTGRES=1");
        return None;
    }
    crate::install_crypto_provider();
    let admin = test_postgres_admin_url();
    let name = format!("jobscope_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable (JOBSCOPE_TEST_POSTGRES_URL)");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("CREATE DATABASE");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').expect("a URL with a database").0
    );
    let store = Store::connect(&url)
        .await
        .expect("store over the new database");
    Some((store, url))
}

/// Creates running jobs `job-0` to `job-{count - 1}` through `store`, job `i` on node
/// `node_of(i)`, for the store's own tests.
#[cfg(test)]
pub(crate) async fn create_test_jobs(store: &Store, count: usize, node_of: fn(usize) -> String) {
    let audit = AuditContext {
        changed_by: "test".into(),
        source: "test".into(),
        correlation_id: "test".into(),
        actor: None,
    };
    for i in 0..count {
        let job = crate::domain::Job::new(
            format!("job-{i}"),
            "alice".into(),
            vec![node_of(i)],
            crate::domain::JobState::Running,
            chrono::Utc::now(),
            "default",
            "slurm",
            "test",
        );
        store.create_job(&job, &audit).await.unwrap();
    }
}

/// PostgreSQL's plan for `execute` (an `EXECUTE` of a statement prepared on `db`), as
/// `EXPLAIN (FORMAT JSON)` gives it.
#[cfg(test)]
pub(crate) async fn explain(db: &mut sqlx::PgConnection, execute: &str) -> serde_json::Value {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {execute}"
    )))
    .fetch_one(&mut *db)
    .await
    .unwrap()
    .get::<sqlx::types::Json<serde_json::Value>, _>(0)
    .0
}

/// Asserts that PostgreSQL's plan for `execute` (an `EXECUTE` of a statement prepared on `db`)
/// names `wanted` (an index) and never `unwanted` (an index, or `Seq Scan`); `what` says what
/// the statement reads, for the failure message.
#[cfg(test)]
pub(crate) async fn assert_plan(
    db: &mut sqlx::PgConnection,
    execute: &str,
    wanted: &str,
    unwanted: &str,
    what: &str,
) {
    let text = explain(db, execute).await.to_string();
    assert!(
        !text.contains(unwanted),
        "{what}, read by {unwanted}: {text}"
    );
    assert!(text.contains(wanted), "{what}, read by {wanted}: {text}");
}

/// Closes a store of [`test_postgres_store`] and drops its database.
#[cfg(test)]
pub(crate) async fn drop_test_postgres_store(store: Store, url: &str) {
    use sqlx::{Connection, Executor};
    store.close().await;
    let (_, name) = url.rsplit_once('/').expect("a URL with a database");
    let mut conn = sqlx::PgConnection::connect(&test_postgres_admin_url())
        .await
        .expect("PostgreSQL reachable (JOBSCOPE_TEST_POSTGRES_URL)");
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .await
    .expect("DROP DATABASE");
}

/// The database the store's PostgreSQL tests create and drop theirs from.
#[cfg(test)]
fn test_postgres_admin_url() -> String {
    std::env::var("JOBSCOPE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}
