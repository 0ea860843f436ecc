-- What node agents measure (issue: collector). metric_samples keeps the Go service's columns with
-- their meaning; the new figures sit beside them, NULL when not measured (never invented). A job's
-- first sample has counters but no CPU percentage yet, so cpu_usage may now be NULL, and so may
-- memory_usage_mb where a cgroup has no memory controller. SQLite cannot drop a NOT NULL
-- constraint, so the table is rebuilt.

CREATE TABLE metric_samples_new (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id                TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    timestamp             TEXT NOT NULL,
    cpu_usage             REAL,
    memory_usage_mb       INTEGER,
    gpu_usage             REAL,
    node                  TEXT,
    cpu_time_seconds      REAL,
    cpu_user_seconds      REAL,
    cpu_system_seconds    REAL,
    cpu_throttled_seconds REAL,
    cpu_nr_throttled      INTEGER,
    memory_usage_bytes    INTEGER,
    memory_peak_bytes     INTEGER,
    memory_limit_bytes    INTEGER,
    memory_anon_bytes     INTEGER,
    memory_file_bytes     INTEGER,
    memory_shmem_bytes    INTEGER,
    oom_kills             INTEGER,
    io_read_bytes         INTEGER,
    io_write_bytes        INTEGER,
    io_read_ops           INTEGER,
    io_write_ops          INTEGER,
    pids                  INTEGER,
    pressure              TEXT,
    gpus                  TEXT
);
INSERT INTO metric_samples_new (id, job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage)
    SELECT id, job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage FROM metric_samples;
DROP TABLE metric_samples;
ALTER TABLE metric_samples_new RENAME TO metric_samples;
CREATE INDEX metric_samples_job_time_idx ON metric_samples (job_id, timestamp DESC);
CREATE INDEX metric_samples_time_idx ON metric_samples (timestamp);

-- An agent that timed out waiting for the answer sends its batch again: a node's sample of a job at
-- one instant is stored once. (Samples posted through the compat API have no node, and NULLs never
-- collide, so they are unaffected.)
CREATE UNIQUE INDEX metric_samples_job_node_time_idx ON metric_samples (job_id, node, timestamp);

-- Averages of CPU divide by the samples that had a percentage, not by all samples.
ALTER TABLE jobs ADD COLUMN cpu_sample_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN memory_usage_bytes INTEGER;
ALTER TABLE jobs ADD COLUMN max_memory_usage_bytes INTEGER;
ALTER TABLE jobs ADD COLUMN gpus TEXT;
UPDATE jobs SET cpu_sample_count = sample_count;

-- Compute nodes, created by their agents' reports (and by the Slurm backend). A NULL state means
-- no scheduler has said; the API then derives one from the agent's reports.
CREATE TABLE nodes (
    name                    TEXT PRIMARY KEY,
    state                   TEXT,
    state_reason            TEXT,
    partitions              TEXT NOT NULL DEFAULT '[]',
    cpus                    INTEGER,
    memory_total_bytes      INTEGER,
    cpu_usage_percent       REAL,
    memory_used_bytes       INTEGER,
    load_1                  REAL,
    load_5                  REAL,
    load_15                 REAL,
    gpus                    TEXT NOT NULL DEFAULT '[]',
    report_interval_seconds REAL,
    last_report_at          TEXT,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
