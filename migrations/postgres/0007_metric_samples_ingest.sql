-- Cheaper sample inserts (BENCHMARKS.md, "Sample ingestion"): every agent batch inserts a row per
-- running job, and each index and constraint of metric_samples is work per row.
--
-- 1. One unique index on (job_id, timestamp, node) serves both what (job_id, node, timestamp)
--    enforced (a node's sample of a job at one instant is stored once) and what
--    (job_id, timestamp DESC) served (a job's samples newest first): one btree per row, not two.
-- 2. Retention deletes by time, and samples arrive in time order: a BRIN index finds old rows
--    for a fraction of a btree's upkeep and size.
-- 3. No foreign key to jobs: its check was a lookup and a row lock per inserted sample (a fifth
--    of the insert). The batch now locks its jobs once (SELECT ... FOR KEY SHARE, the lock the
--    key took), and deleting a job deletes its samples itself.
--
-- On upgrade the new unique index is built over the whole table (a write lock while it runs).
ALTER TABLE metric_samples DROP CONSTRAINT IF EXISTS metric_samples_job_id_fkey;
CREATE UNIQUE INDEX metric_samples_job_time_node_idx ON metric_samples (job_id, timestamp, node);
DROP INDEX metric_samples_job_node_time_idx;
DROP INDEX metric_samples_job_time_idx;
DROP INDEX metric_samples_time_idx;
CREATE INDEX metric_samples_time_brin_idx ON metric_samples USING brin (timestamp);
