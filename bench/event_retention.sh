#!/usr/bin/env bash
# One day of event-log retention on PostgreSQL, side by side in one run (issue 19): the chunked
# DELETE of 2,000 rows a statement that retention did before migration 0023 (and SQLite still
# does) against dropping the day's partition (store::partitions). Each side gets the same day of
# ROWS job_sample-shaped rows; time and WAL (pg_current_wal_lsn before and after) are printed.
# Usage: bench/event_retention.sh [ROWS]   (PG_URL, default the local server)
set -euo pipefail
ROWS=${1:-3000000}
URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
psql -q "$URL" -c "DROP DATABASE IF EXISTS jobscope_bench_retention" -c "CREATE DATABASE jobscope_bench_retention"
DB="${URL%/*}/jobscope_bench_retention"
Q() { psql -q -X -v ON_ERROR_STOP=1 -At "$DB" "$@"; }
Q <<SQL
CREATE TABLE plain (id BIGSERIAL PRIMARY KEY, occurred_at TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL,
  job_id TEXT, payload JSON NOT NULL, sample_id BIGINT);
CREATE INDEX plain_time_idx ON plain (occurred_at);
CREATE TABLE parted (id BIGINT NOT NULL, occurred_at TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL,
  job_id TEXT, payload JSON NOT NULL, sample_id BIGINT, PRIMARY KEY (id, occurred_at))
  PARTITION BY RANGE (occurred_at);
CREATE INDEX parted_time_idx ON parted (occurred_at);
CREATE TABLE parted_p1 PARTITION OF parted FOR VALUES FROM ('2026-01-01+00') TO ('2026-01-02+00');
CREATE TABLE parted_p2 PARTITION OF parted FOR VALUES FROM ('2026-01-02+00') TO ('2026-01-03+00');
-- The day to retire, and the next day's first hour that stays.
INSERT INTO plain (occurred_at, kind, job_id, payload, sample_id)
  SELECT '2026-01-01+00'::timestamptz + (i * INTERVAL '86400 seconds') / $ROWS, 'job_sample',
         'job-' || (i % 10000), '{"state":"running"}', i FROM generate_series(1, $ROWS) AS i;
INSERT INTO plain (occurred_at, kind, job_id, payload, sample_id)
  SELECT '2026-01-02 00:30+00', 'job_sample', 'job-1', '{"state":"running"}', i FROM generate_series(1, 100000) AS i;
INSERT INTO parted SELECT * FROM plain;
VACUUM ANALYZE plain; VACUUM ANALYZE parted;
CHECKPOINT;
SQL
echo "rows in the day: $ROWS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# Today's chunked delete: one statement (its own transaction) per 2,000 rows.
CHUNKS=$(( ROWS / 2000 + 2 ))
{
  echo "SELECT pg_current_wal_lsn() AS lsn0 \\gset"
  echo "SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset"
  for _ in $(seq "$CHUNKS"); do
    echo "DELETE FROM plain WHERE id IN (SELECT id FROM plain WHERE occurred_at < '2026-01-02+00' LIMIT 2000);"
  done
  echo "SELECT 'chunked DELETE: ' || round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2) || ' s, WAL ' || pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn0')) || ', rows left ' || (SELECT count(*) FROM plain);"
} | Q
{
  echo "SELECT pg_current_wal_lsn() AS lsn0 \\gset"
  echo "SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset"
  echo "DROP TABLE parted_p1;"
  echo "SELECT 'partition DROP: ' || round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) || ' s, WAL ' || pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn0')) || ', rows left ' || (SELECT count(*) FROM parted);"
} | Q
echo "plain table after the DELETE: $(Q -c "SELECT pg_size_pretty(pg_total_relation_size('plain'))") (dead rows until VACUUM); parted: $(Q -c "SELECT pg_size_pretty(pg_total_relation_size('parted_p2'))")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
psql -q "$URL" -c "DROP DATABASE jobscope_bench_retention"
