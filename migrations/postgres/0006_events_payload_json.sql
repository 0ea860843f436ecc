-- Event payloads as `json` (the text as written) instead of `jsonb` (parsed into a binary tree).
-- Nothing queries inside a payload: the event feed reads each row whole and parses it once in the
-- service, so the binary form only cost the insert. A sample batch appends 1,000 payloads of
-- ~1.7 KB; parsing them into jsonb was about half of the event insert, and json rows are ~20 %
-- smaller (BENCHMARKS.md, "Sample ingestion").
-- On upgrade this rewrites the events table (an exclusive lock for as long as that takes): prune
-- old events first where the log is large.
ALTER TABLE events ALTER COLUMN payload TYPE JSON USING payload::json;
