-- The event log partitioned by UTC day on `occurred_at` (issue 19). At 1,000 nodes × 10 jobs
-- sampled every 15 s the log gains ~57 M rows a day, and retention deleted them 2,000 at a time:
-- hours of DELETE and a table bloated by dead rows. A day partition past retention is now dropped
-- whole (store::partitions; `serve` creates the days ahead). `events_default` catches a row whose
-- day has no partition yet (a clock set wrong, partitions not yet made); `serve` moves such rows
-- into a partition of their own.
--
-- Ids stay the stream ids, from the same sequence, under the same advisory lock, so they stay
-- unique and increasing; the primary key is (id, occurred_at) because PostgreSQL wants the
-- partition key in every unique index of a partitioned table. `events_after` reads each
-- partition's key index from the id on (an ordered merge over a handful of day partitions).
--
-- Cost on upgrade: every row is copied once and its two indexes rebuilt, holding an exclusive
-- lock on `events` (reads and writes of the log wait) for the whole of it: about 2 s per million
-- rows on the development machine (1.5 M rows in 2.8 s, tests/partitions.rs). Prune old events
-- first where the log is large. The migration is one transaction: killed half-way, it leaves the
-- old table as it was and runs again from the start at the next `serve` or `jobscope migrate`
-- (tests/partitions.rs kills it).
ALTER TABLE events RENAME TO events_before_0023;
ALTER TABLE events_before_0023 RENAME CONSTRAINT events_pkey TO events_before_0023_pkey;
ALTER INDEX events_time_idx RENAME TO events_before_0023_time_idx;
-- The sequence outlives the old table (it was the old column's).
ALTER SEQUENCE events_id_seq OWNED BY NONE;

CREATE TABLE events (
    id          BIGINT NOT NULL DEFAULT nextval('events_id_seq'),
    occurred_at TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    job_id      TEXT,
    payload     JSON NOT NULL,
    sample_id   BIGINT
) PARTITION BY RANGE (occurred_at);
ALTER SEQUENCE events_id_seq OWNED BY events.id;
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- One partition per UTC day that has rows (found by skipping along the time index), and today
-- and the two days after it; named events_pYYYYMMDD as store::partitions names them.
DO $$
DECLARE
    day TIMESTAMP;
BEGIN
    FOR day IN
        WITH RECURSIVE days(d) AS (
            SELECT date_trunc('day', MIN(occurred_at) AT TIME ZONE 'UTC') FROM events_before_0023
            UNION ALL
            SELECT (SELECT date_trunc('day', MIN(o.occurred_at) AT TIME ZONE 'UTC')
                    FROM events_before_0023 o
                    WHERE o.occurred_at >= (days.d + INTERVAL '1 day') AT TIME ZONE 'UTC')
            FROM days WHERE days.d IS NOT NULL
        )
        SELECT d FROM days WHERE d IS NOT NULL
        UNION
        SELECT date_trunc('day', now() AT TIME ZONE 'UTC') + n * INTERVAL '1 day'
        FROM generate_series(0, 2) AS n
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            'events_p' || to_char(day, 'YYYYMMDD'),
            day AT TIME ZONE 'UTC',
            (day + INTERVAL '1 day') AT TIME ZONE 'UTC');
    END LOOP;
END $$;

INSERT INTO events (id, occurred_at, kind, job_id, payload, sample_id)
SELECT id, occurred_at, kind, job_id, payload, sample_id FROM events_before_0023;
DROP TABLE events_before_0023;

-- Built after the copy (one sort per partition instead of an insert per row).
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id, occurred_at);
CREATE INDEX events_time_idx ON events (occurred_at);
