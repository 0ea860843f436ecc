-- What node agents measure (issue: collector). metric_samples keeps the Go service's columns with
-- their meaning; the new figures sit beside them, NULL when not measured (never invented). A job's
-- first sample has counters but no CPU percentage yet, so cpu_usage may now be NULL, and so may
-- memory_usage_mb where a cgroup has no memory controller.

ALTER TABLE metric_samples ALTER COLUMN cpu_usage DROP NOT NULL;
ALTER TABLE metric_samples ALTER COLUMN memory_usage_mb DROP NOT NULL;
ALTER TABLE metric_samples
    ADD COLUMN node                  TEXT,
    ADD COLUMN cpu_time_seconds      DOUBLE PRECISION,
    ADD COLUMN cpu_user_seconds      DOUBLE PRECISION,
    ADD COLUMN cpu_system_seconds    DOUBLE PRECISION,
    ADD COLUMN cpu_throttled_seconds DOUBLE PRECISION,
    ADD COLUMN cpu_nr_throttled      BIGINT,
    ADD COLUMN memory_usage_bytes    BIGINT,
    ADD COLUMN memory_peak_bytes     BIGINT,
    ADD COLUMN memory_limit_bytes    BIGINT,
    ADD COLUMN memory_anon_bytes     BIGINT,
    ADD COLUMN memory_file_bytes     BIGINT,
    ADD COLUMN memory_shmem_bytes    BIGINT,
    ADD COLUMN oom_kills             BIGINT,
    ADD COLUMN io_read_bytes         BIGINT,
    ADD COLUMN io_write_bytes        BIGINT,
    ADD COLUMN io_read_ops           BIGINT,
    ADD COLUMN io_write_ops          BIGINT,
    ADD COLUMN pids                  BIGINT,
    ADD COLUMN pressure              JSONB,
    ADD COLUMN gpus                  JSONB;

-- An agent that timed out waiting for the answer sends its batch again: a node's sample of a job at
-- one instant is stored once. (Samples posted through the compat API have no node, and NULLs never
-- collide, so they are unaffected.)
CREATE UNIQUE INDEX metric_samples_job_node_time_idx ON metric_samples (job_id, node, timestamp);

-- Averages of CPU divide by the samples that had a percentage, not by all samples.
ALTER TABLE jobs
    ADD COLUMN cpu_sample_count       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_usage_bytes     BIGINT,
    ADD COLUMN max_memory_usage_bytes BIGINT,
    ADD COLUMN gpus                   JSONB;
UPDATE jobs SET cpu_sample_count = sample_count;

-- Compute nodes, created by their agents' reports (and by the Slurm backend). A NULL state means
-- no scheduler has said; the API then derives one from the agent's reports.
CREATE TABLE nodes (
    name                    TEXT PRIMARY KEY,
    state                   TEXT,
    state_reason            TEXT,
    partitions              JSONB NOT NULL DEFAULT '[]',
    cpus                    BIGINT,
    memory_total_bytes      BIGINT,
    cpu_usage_percent       DOUBLE PRECISION,
    memory_used_bytes       BIGINT,
    load_1                  DOUBLE PRECISION,
    load_5                  DOUBLE PRECISION,
    load_15                 DOUBLE PRECISION,
    gpus                    JSONB NOT NULL DEFAULT '[]',
    report_interval_seconds DOUBLE PRECISION,
    last_report_at          TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);
