-- Sample packs (issue 19): once a day is closed, each job's samples of that day on one node
-- are moved out of metric_samples into one row here, packed by src/domain/sample_pack.rs
-- (columns of differences, deflated; lossless). See the PostgreSQL migration 0021.
CREATE TABLE sample_packs (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    node     TEXT,
    first_at TEXT NOT NULL,
    last_at  TEXT NOT NULL,
    samples  INTEGER NOT NULL,
    min_id   INTEGER NOT NULL,
    max_id   INTEGER NOT NULL,
    data     BLOB NOT NULL
);
CREATE INDEX sample_packs_job_idx ON sample_packs (job_id, first_at);
CREATE INDEX sample_packs_last_idx ON sample_packs (last_at);
