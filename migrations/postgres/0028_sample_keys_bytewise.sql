-- A raw sample's text keys (job id, node name) compared byte by byte (issue 19). They are
-- identifiers, never sorted for a reader, yet every insert into the unique (job_id, timestamp,
-- node) index compared them under the database's collation: `strcoll` for a database created
-- `C.UTF-8` or `en_US.UTF-8`, which PostgreSQL 15 does not treat as `C`. Measured with `COPY` of
-- a 1,000-sample batch into a copy of this table with its three indexes: 7-16 ms under
-- `C.UTF-8`, 4.6-6.3 ms with these two columns `COLLATE "C"` (BENCHMARKS.md, "At size").
-- Equality is the same under both (both are deterministic), so no row changes meaning; a
-- comparison with a column of the default collation takes this one's.
--
-- Cost on upgrade: the table is not rewritten (text stays text); the unique index is rebuilt
-- under an exclusive lock on `metric_samples`. The table holds only the raw samples not yet
-- packed (about two hours' worth; ~5 million rows at 1,000 nodes), so expect seconds. One
-- statement, one transaction: killed half-way, nothing changes and it runs again.
ALTER TABLE metric_samples
    ALTER COLUMN job_id TYPE TEXT COLLATE "C",
    ALTER COLUMN node TYPE TEXT COLLATE "C";
