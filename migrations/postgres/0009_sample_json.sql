-- A sample's GPU list and PSI figures, and a job's current GPU list, as `json` (the text as the
-- agent sent it, checked) instead of `jsonb` (parsed into a binary tree). Every agent batch
-- stores 1,000 of each: parsing them into jsonb took about 10 ms of a batch's insert on the
-- benchmark's server, checking them as json about 2 ms, and a sample row is a fifth smaller
-- (1,001 bytes against 1,279; BENCHMARKS.md, "Sample ingestion"). jobscope reads these columns
-- whole; SQL over them keeps `->`, `->>` and `json_array_elements`, but loses jsonb's
-- containment operators and GIN indexes, which nothing here uses. jobs.gpus changes with them
-- because each batch copies a job's newest sample GPU list into it, and a jsonb target would
-- parse it again.
-- On upgrade this rewrites metric_samples and jobs (an exclusive lock for as long as that takes):
-- where the table is large, let retention prune it first (a shorter `--retention-days`).
ALTER TABLE metric_samples
    ALTER COLUMN pressure TYPE JSON USING pressure::json,
    ALTER COLUMN gpus TYPE JSON USING gpus::json;
ALTER TABLE jobs ALTER COLUMN gpus TYPE JSON USING gpus::json;
