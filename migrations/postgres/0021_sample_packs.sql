-- Sample packs (issue 19): once a day is closed, each job's samples of that day on one node
-- are moved out of metric_samples into one row here, packed by src/domain/sample_pack.rs
-- (columns of differences, deflated; lossless). A row of metric_samples costs ~650 bytes on
-- disk with its indexes; a packed sample a few dozen (BENCHMARKS.md, "Sample storage").
--
-- `node` is NULL for samples posted without one (the compat single-sample route). `min_id` and
-- `max_id` bound the metric_samples ids the pack holds, so an event-log row that refers to a
-- packed sample finds its pack. Packs go with their job, and at retention by `last_at`.
CREATE TABLE sample_packs (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    node     TEXT,
    first_at TIMESTAMPTZ NOT NULL,
    last_at  TIMESTAMPTZ NOT NULL,
    samples  INTEGER NOT NULL,
    min_id   BIGINT NOT NULL,
    max_id   BIGINT NOT NULL,
    data     BYTEA NOT NULL
);
CREATE INDEX sample_packs_job_idx ON sample_packs (job_id, first_at);
CREATE INDEX sample_packs_last_idx ON sample_packs (last_at);
-- Already deflated: PostgreSQL's own compression would only spend time finding that out.
ALTER TABLE sample_packs ALTER COLUMN data SET STORAGE EXTERNAL;
