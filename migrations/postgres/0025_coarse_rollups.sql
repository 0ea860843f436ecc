-- Rollups (issue 19): coarser stored levels, 15-minute and hourly buckets per job and node, so a
-- week-long chart (`resolution=auto` answers 15-minute points) reads a third of the 5-minute rows
-- and a month-long one (hourly multiples) a twelfth. Same columns as `sample_rollups`, plus the
-- level's width; each bucket is rewritten whole from the 5-minute buckets by the rollup pass.
-- Existing data carries over: the 5-minute buckets are untouched, and the passes after this
-- migration fold the ones stored before it into the coarse levels (from `coarse_from` back to
-- the oldest, a week per pass); until then answers read the 5-minute buckets there.
CREATE TABLE sample_rollups_coarse (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seconds      BIGINT NOT NULL,
    bucket_start TIMESTAMPTZ NOT NULL,
    node         TEXT NOT NULL,
    samples      BIGINT NOT NULL,
    figures      BYTEA NOT NULL,
    PRIMARY KEY (job_id, seconds, bucket_start, node)
);
CREATE INDEX sample_rollups_coarse_bucket_idx ON sample_rollups_coarse (bucket_start);

-- Coarse buckets are whole from `coarse_from` up to `rolled_until` (NULL: none built yet).
ALTER TABLE rollup_state ADD COLUMN coarse_from TIMESTAMPTZ;
