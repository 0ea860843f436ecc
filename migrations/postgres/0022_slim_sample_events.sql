-- A job_sample row of the event log now keeps only the job's state (issue 19): `{"state":...}`.
-- The rest of the job summary a stream shows with a sample (user, nodes, partition, correlation
-- id) is the job's, added back when the log is read, from `jobs`, or from here once the job is
-- deleted. The summary was ~200 of the ~330 bytes each sample's event row took on disk
-- (BENCHMARKS.md, "Sample storage"); a deleted job now keeps it once. `deleted_at` is when the
-- job's row went: a sample event before it belongs to this incarnation of the id. Rows written
-- before this migration keep their whole summary and read as they did.
CREATE TABLE deleted_jobs (
    job_id         TEXT NOT NULL,
    deleted_at     TIMESTAMPTZ NOT NULL,
    user_name      TEXT NOT NULL,
    nodes          JSONB NOT NULL,
    partition      TEXT,
    correlation_id TEXT NOT NULL,
    PRIMARY KEY (job_id, deleted_at)
);
CREATE INDEX deleted_jobs_deleted_idx ON deleted_jobs (deleted_at);
