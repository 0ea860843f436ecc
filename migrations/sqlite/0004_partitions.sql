-- Scheduler partitions (Slurm's queues), kept from slurmrestd by `serve --scheduler slurm`:
-- state, nodes, per-job limits, and the jobs running and waiting in each at the last pass.
-- NULL limits mean "no limit, or the scheduler did not say".
CREATE TABLE partitions (
    name                 TEXT PRIMARY KEY,
    state                TEXT NOT NULL,
    is_default           BOOLEAN NOT NULL DEFAULT FALSE,
    nodes                TEXT NOT NULL DEFAULT '[]',
    total_nodes          INTEGER,
    total_cpus           INTEGER,
    max_time_minutes     INTEGER,
    default_time_minutes INTEGER,
    max_nodes_per_job    INTEGER,
    jobs_running         INTEGER NOT NULL DEFAULT 0,
    jobs_pending         INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
