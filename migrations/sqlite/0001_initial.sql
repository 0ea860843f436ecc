-- jobscope schema, SQLite (timestamps are RFC 3339 text written by jobscope, JSON is text). Table and column names of jobs, metric_samples and
-- job_audit_events follow the Go service so its users' SQL keeps working.

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    user_name           TEXT NOT NULL,
    nodes               TEXT NOT NULL,
    node_count          INTEGER NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    start_time          TEXT NOT NULL,
    end_time            TEXT,
    runtime_seconds     REAL,
    cpu_usage           REAL,
    memory_usage_mb     INTEGER,
    gpu_usage           REAL,
    requested_cpus      INTEGER,
    allocated_cpus      INTEGER,
    requested_memory_mb INTEGER,
    allocated_memory_mb INTEGER,
    requested_gpus      INTEGER,
    allocated_gpus      INTEGER,
    cluster_name        TEXT NOT NULL,
    scheduler_instance  TEXT NOT NULL,
    ingest_version      TEXT NOT NULL,
    last_sample_at      TEXT,
    sample_count        INTEGER NOT NULL DEFAULT 0,
    avg_cpu_usage       REAL,
    max_cpu_usage       REAL,
    max_memory_usage_mb INTEGER,
    avg_gpu_usage       REAL,
    max_gpu_usage       REAL,
    -- running sums behind the averages, so an average is exact after any number of samples
    cpu_usage_sum       REAL NOT NULL DEFAULT 0,
    gpu_usage_sum       REAL NOT NULL DEFAULT 0,
    gpu_sample_count    INTEGER NOT NULL DEFAULT 0,
    scheduler_type      TEXT,
    external_job_id     TEXT,
    raw_state           TEXT,
    submit_time         TEXT,
    partition           TEXT,
    account             TEXT,
    qos                 TEXT,
    priority            INTEGER,
    scheduler_exit_code INTEGER,
    state_reason        TEXT,
    time_limit_minutes  INTEGER,
    scheduler_extra     TEXT,
    cgroup_path         TEXT,
    gpu_vendor          TEXT CHECK (gpu_vendor IN ('none', 'nvidia', 'amd', 'mixed')),
    gpu_devices         TEXT NOT NULL DEFAULT '[]',
    gpu_count           INTEGER,
    exit_code           INTEGER,
    signal              INTEGER,
    correlation_id      TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE INDEX jobs_state_start_idx ON jobs (state, start_time DESC);
CREATE INDEX jobs_user_start_idx ON jobs (user_name, start_time DESC);
CREATE INDEX jobs_start_idx ON jobs (start_time DESC, id);

-- One row per (job, node): exact node filters use this index instead of scanning a list.
CREATE TABLE job_nodes (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    node   TEXT NOT NULL,
    PRIMARY KEY (job_id, node)
);
CREATE INDEX job_nodes_node_idx ON job_nodes (node, job_id);

CREATE TABLE metric_samples (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    timestamp       TEXT NOT NULL,
    cpu_usage       REAL NOT NULL,
    memory_usage_mb INTEGER NOT NULL,
    gpu_usage       REAL
);
CREATE INDEX metric_samples_job_time_idx ON metric_samples (job_id, timestamp DESC);
CREATE INDEX metric_samples_time_idx ON metric_samples (timestamp);

-- No foreign key: the trail of a deleted job outlives it.
CREATE TABLE job_audit_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         TEXT NOT NULL,
    change_type    TEXT NOT NULL CHECK (change_type IN ('create', 'update', 'delete')),
    changed_at     TEXT NOT NULL,
    changed_by     TEXT NOT NULL,
    source         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    job_snapshot   TEXT NOT NULL
);
CREATE INDEX job_audit_events_job_idx ON job_audit_events (job_id, id);

-- Append-only log of every committed change; its id is the stream event id (SSE `id:`).
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at TEXT NOT NULL,
    kind        TEXT NOT NULL,
    job_id      TEXT,
    payload     TEXT NOT NULL
);
CREATE INDEX events_time_idx ON events (occurred_at);
