-- A report's summary of each sample pack (issue 14; see the PostgreSQL migration 0026): one
-- small JSON text per pack, so a report need not decode every packed sample's GPU list. Packs
-- written before have none until the next packing pass fills them in.
ALTER TABLE sample_packs ADD COLUMN digest TEXT;
