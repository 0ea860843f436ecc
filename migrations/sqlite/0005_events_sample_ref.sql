-- A job_sample event refers to its stored sample instead of carrying a copy of it: reading the
-- log adds the sample from metric_samples (store::queries, `events_after`). Rows written before
-- this keep their inline sample and read as they did.
ALTER TABLE events ADD COLUMN sample_id INTEGER;
