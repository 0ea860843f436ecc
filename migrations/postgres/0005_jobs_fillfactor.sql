-- Every agent batch updates the row of each of its running jobs (current figures, aggregates).
-- On full pages each update puts the new row version on another page, so all five indexes of
-- jobs get a new entry per update, and the table and its indexes bloat between vacuums. Room left
-- on each page lets PostgreSQL keep the new version beside the old one (a HOT update: no index
-- entries, and the old version is reclaimed on the next visit to the page). Measured on 1,000
-- running jobs (BENCHMARKS.md, "Sample ingestion"): one batch's UPDATE took 10-18 ms on a fresh
-- table, 27 ms after 26 batches without vacuum, and 4 ms with this setting.
-- Applies to pages written from now on (new jobs); older rows are finished jobs, rarely updated.
ALTER TABLE jobs SET (fillfactor = 70);
