-- A job_sample row of the event log now keeps only the job's state (issue 19); the rest of its
-- job summary is read from `jobs`, or from here once the job is deleted. See the PostgreSQL
-- migration 0022.
CREATE TABLE deleted_jobs (
    job_id         TEXT NOT NULL,
    deleted_at     TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    nodes          TEXT NOT NULL,
    partition      TEXT,
    correlation_id TEXT NOT NULL,
    PRIMARY KEY (job_id, deleted_at)
);
CREATE INDEX deleted_jobs_deleted_idx ON deleted_jobs (deleted_at);
