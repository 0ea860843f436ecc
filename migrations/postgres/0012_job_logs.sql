-- A job's output (stdout, stderr) as the agent shipped it, kept apart from the event log: the
-- bytes of one stream are a run of chunks that cover [0, end_offset) without gap or overlap.
-- A chunk with NULL data stands for bytes not kept (the agent's rate limit, or the per-job cap
-- trimming the oldest tail); it is rendered as one marker line. See src/store/logs.rs.
CREATE TABLE job_log_streams (
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    stream       TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    -- the next byte offset the server expects (everything before it is held or marked skipped)
    end_offset   BIGINT NOT NULL DEFAULT 0,
    -- bytes of data held (at most the cap)
    stored_bytes BIGINT NOT NULL DEFAULT 0,
    -- bytes marked skipped (rate limit and cap)
    skipped_bytes BIGINT NOT NULL DEFAULT 0,
    -- the agent shipped the last bytes (it stopped tailing after the job's end)
    eof          BOOLEAN NOT NULL DEFAULT FALSE,
    -- why the agent could not read the file (e.g. "not owned by the job's user")
    unavailable  TEXT,
    PRIMARY KEY (job_id, stream)
);

CREATE TABLE job_log_chunks (
    job_id       TEXT NOT NULL,
    stream       TEXT NOT NULL,
    start_offset BIGINT NOT NULL,
    length       BIGINT NOT NULL CHECK (length > 0),
    -- newlines in data (a skipped range renders as one line)
    newlines     BIGINT NOT NULL,
    data         BYTEA,
    PRIMARY KEY (job_id, stream, start_offset),
    FOREIGN KEY (job_id, stream) REFERENCES job_log_streams (job_id, stream) ON DELETE CASCADE
);
