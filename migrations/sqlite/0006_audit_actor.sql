-- Who did it, as authenticated (`role:hook`, `user:alice`, `admin`), beside `changed_by` (which
-- stays what the client sent). NULL for rows written before identities, and for changes the
-- server makes itself (scheduler reconciliation, demo) or makes without authentication.
ALTER TABLE job_audit_events ADD COLUMN actor TEXT;
