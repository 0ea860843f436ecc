-- Sample packs partitioned by UTC day of `first_at` (issue 19), as the event log is (0023). A
-- pack holds one job's samples of one hour on one node, so a day's packs are a day partition,
-- and retention drops it whole (store::partitions) instead of deleting a day of packs row by
-- row: at 1,000 nodes that DELETE wrote ~3 GB of WAL a day and left the rows dead until vacuum
-- (BENCHMARKS.md, "At size"). `sample_packs_default` catches a pack whose day has no partition
-- (an old spool packed late, a clock set wrong); `serve` moves such packs into a partition of
-- their own day. The index on `last_at` served only that DELETE and is not made again.
--
-- Cost on upgrade: every pack row is copied once (its data stays in TOAST, copied with it) and
-- the indexes are rebuilt, holding an exclusive lock on `sample_packs` for the whole of it (a
-- packing pass, a report or a chart of a job's older samples waits). The migration is one
-- transaction: killed half-way, it leaves the old table as it was and runs again from the start
-- at the next `serve` or `jobscope migrate` (tests/partitions.rs kills it).
ALTER TABLE sample_packs RENAME TO sample_packs_before_0027;
ALTER TABLE sample_packs_before_0027
    RENAME CONSTRAINT sample_packs_job_id_fkey TO sample_packs_before_0027_job_id_fkey;
ALTER INDEX sample_packs_job_idx RENAME TO sample_packs_before_0027_job_idx;
ALTER INDEX sample_packs_undigested_idx RENAME TO sample_packs_before_0027_undigested_idx;
DROP INDEX sample_packs_last_idx;

CREATE TABLE sample_packs (
    job_id   TEXT NOT NULL,
    node     TEXT,
    first_at TIMESTAMPTZ NOT NULL,
    last_at  TIMESTAMPTZ NOT NULL,
    samples  INTEGER NOT NULL,
    min_id   BIGINT NOT NULL,
    max_id   BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    digest   JSON
) PARTITION BY RANGE (first_at);
-- Already deflated (0021); partitions made with PARTITION OF take this from the parent.
ALTER TABLE sample_packs ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE sample_packs_default PARTITION OF sample_packs DEFAULT;

-- One partition per UTC day that has packs, and today and the two days after it; named
-- sample_packs_pYYYYMMDD as store::partitions names them.
DO $$
DECLARE
    day TIMESTAMP;
BEGIN
    FOR day IN
        SELECT DISTINCT date_trunc('day', first_at AT TIME ZONE 'UTC') FROM sample_packs_before_0027
        UNION
        SELECT date_trunc('day', now() AT TIME ZONE 'UTC') + n * INTERVAL '1 day'
        FROM generate_series(0, 2) AS n
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF sample_packs FOR VALUES FROM (%L) TO (%L)',
            'sample_packs_p' || to_char(day, 'YYYYMMDD'),
            day AT TIME ZONE 'UTC',
            (day + INTERVAL '1 day') AT TIME ZONE 'UTC');
    END LOOP;
END $$;

INSERT INTO sample_packs (job_id, node, first_at, last_at, samples, min_id, max_id, data, digest)
SELECT job_id, node, first_at, last_at, samples, min_id, max_id, data, digest
FROM sample_packs_before_0027;
DROP TABLE sample_packs_before_0027;

-- Built after the copy (one sort per partition instead of an insert per row).
ALTER TABLE sample_packs ADD CONSTRAINT sample_packs_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;
CREATE INDEX sample_packs_job_idx ON sample_packs (job_id, first_at);
CREATE INDEX sample_packs_undigested_idx ON sample_packs (job_id) WHERE digest IS NULL;
