-- A report's summary of each sample pack (issue 14; see the PostgreSQL migration 0026): one
-- small JSON text per pack, so a report need not decode every packed sample's GPU list. Packs
-- written before have none until the next packing pass fills them in.
ALTER TABLE sample_packs ADD COLUMN digest TEXT;
-- Finds the packs still lacking one without reading every pack each pass (empty once filled).
CREATE INDEX sample_packs_undigested_idx ON sample_packs (job_id) WHERE digest IS NULL;
