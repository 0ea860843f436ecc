-- Scheduler partitions (Slurm's queues), kept from slurmrestd by `serve --scheduler slurm`:
-- state, nodes, per-job limits, and the jobs running and waiting in each at the last pass.
-- NULL limits mean "no limit, or the scheduler did not say".
CREATE TABLE partitions (
    name                 TEXT PRIMARY KEY,
    state                TEXT NOT NULL,
    is_default           BOOLEAN NOT NULL DEFAULT FALSE,
    nodes                JSONB NOT NULL DEFAULT '[]',
    total_nodes          BIGINT,
    total_cpus           BIGINT,
    max_time_minutes     BIGINT,
    default_time_minutes BIGINT,
    max_nodes_per_job    BIGINT,
    jobs_running         BIGINT NOT NULL DEFAULT 0,
    jobs_pending         BIGINT NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
