-- jobscope schema, PostgreSQL. Table and column names of jobs, metric_samples and
-- job_audit_events follow the Go service so its users' SQL keeps working.

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    user_name           TEXT NOT NULL,
    nodes               JSONB NOT NULL,
    node_count          BIGINT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    start_time          TIMESTAMPTZ NOT NULL,
    end_time            TIMESTAMPTZ,
    runtime_seconds     DOUBLE PRECISION,
    cpu_usage           DOUBLE PRECISION,
    memory_usage_mb     BIGINT,
    gpu_usage           DOUBLE PRECISION,
    requested_cpus      BIGINT,
    allocated_cpus      BIGINT,
    requested_memory_mb BIGINT,
    allocated_memory_mb BIGINT,
    requested_gpus      BIGINT,
    allocated_gpus      BIGINT,
    cluster_name        TEXT NOT NULL,
    scheduler_instance  TEXT NOT NULL,
    ingest_version      TEXT NOT NULL,
    last_sample_at      TIMESTAMPTZ,
    sample_count        BIGINT NOT NULL DEFAULT 0,
    avg_cpu_usage       DOUBLE PRECISION,
    max_cpu_usage       DOUBLE PRECISION,
    max_memory_usage_mb BIGINT,
    avg_gpu_usage       DOUBLE PRECISION,
    max_gpu_usage       DOUBLE PRECISION,
    -- running sums behind the averages, so an average is exact after any number of samples
    cpu_usage_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    gpu_usage_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    gpu_sample_count    BIGINT NOT NULL DEFAULT 0,
    scheduler_type      TEXT,
    external_job_id     TEXT,
    raw_state           TEXT,
    submit_time         TIMESTAMPTZ,
    partition           TEXT,
    account             TEXT,
    qos                 TEXT,
    priority            BIGINT,
    scheduler_exit_code BIGINT,
    state_reason        TEXT,
    time_limit_minutes  BIGINT,
    scheduler_extra     JSONB,
    cgroup_path         TEXT,
    gpu_vendor          TEXT CHECK (gpu_vendor IN ('none', 'nvidia', 'amd', 'mixed')),
    gpu_devices         JSONB NOT NULL DEFAULT '[]',
    gpu_count           BIGINT,
    exit_code           BIGINT,
    signal              BIGINT,
    correlation_id      TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
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
    id              BIGSERIAL PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    timestamp       TIMESTAMPTZ NOT NULL,
    cpu_usage       DOUBLE PRECISION NOT NULL,
    memory_usage_mb BIGINT NOT NULL,
    gpu_usage       DOUBLE PRECISION
);
CREATE INDEX metric_samples_job_time_idx ON metric_samples (job_id, timestamp DESC);
CREATE INDEX metric_samples_time_idx ON metric_samples (timestamp);

-- No foreign key: the trail of a deleted job outlives it.
CREATE TABLE job_audit_events (
    id             BIGSERIAL PRIMARY KEY,
    job_id         TEXT NOT NULL,
    change_type    TEXT NOT NULL CHECK (change_type IN ('create', 'update', 'delete')),
    changed_at     TIMESTAMPTZ NOT NULL,
    changed_by     TEXT NOT NULL,
    source         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    job_snapshot   JSONB NOT NULL
);
CREATE INDEX job_audit_events_job_idx ON job_audit_events (job_id, id);

-- Append-only log of every committed change; its id is the stream event id (SSE `id:`).
CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    job_id      TEXT,
    payload     JSONB NOT NULL
);
CREATE INDEX events_time_idx ON events (occurred_at);
