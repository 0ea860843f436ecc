-- A job_sample event refers to its stored sample instead of carrying a copy of it: reading the
-- log adds the sample from metric_samples (store::queries, `events_after`). The copy was 87 % of
-- each such row, and every agent batch appends one per running job: the log was larger than the
-- samples themselves, and writing it a fifth of a batch's time (BENCHMARKS.md, "Sample
-- ingestion"). Rows written before this keep their inline sample and read as they did.
ALTER TABLE events ADD COLUMN sample_id BIGINT;
