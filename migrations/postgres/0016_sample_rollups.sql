-- Rollups (issue 19): a job's samples folded into 5-minute buckets per node, kept past the raw
-- samples' retention (`--rollup-retention-days`). `figures` holds each figure's count, min, sum
-- and max, per GPU too, in a compact binary form written and read whole (29 bytes a figure; see
-- `encode` in src/domain/rollup.rs). A bucket is rewritten whole from the raw samples while
-- they exist.
CREATE TABLE sample_rollups (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    node         TEXT NOT NULL,
    bucket_start TIMESTAMPTZ NOT NULL,
    samples      BIGINT NOT NULL,
    figures      BYTEA NOT NULL,
    PRIMARY KEY (job_id, bucket_start, node)
);
CREATE INDEX sample_rollups_bucket_idx ON sample_rollups (bucket_start);

-- One row: every raw sample before `rolled_until` is in the rollups; raw samples before
-- `raw_pruned_before` may be gone.
CREATE TABLE rollup_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    rolled_until      TIMESTAMPTZ,
    raw_pruned_before TIMESTAMPTZ
);
INSERT INTO rollup_state (id) VALUES (1);

-- What a job's record and report read from its samples, kept when its last raw sample expires:
-- the newest sample (MetricSample JSON) and the report's per-node and per-GPU summaries.
CREATE TABLE job_sample_archive (
    job_id         TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    archived_at    TIMESTAMPTZ NOT NULL,
    newest_sample  TEXT,
    report_nodes   TEXT NOT NULL,
    report_devices TEXT NOT NULL
);
