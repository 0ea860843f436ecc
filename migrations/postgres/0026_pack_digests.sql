-- A report's summary of each sample pack (issue 14): per node, the sample count, CPU time, the
-- CPU mean as sum and count, memory peak, OOM kills and I/O; per GPU, utilization sum, maximum
-- and idle count, memory peak, first and last energy (domain::report::SampleDigest, as JSON).
-- A report then reads one small row per pack instead of decoding every packed sample's GPU list.
-- Packs written before this migration have none: a report decodes those, and the next packing
-- pass fills them in (store::sample_packs).
ALTER TABLE sample_packs ADD COLUMN digest JSON;
-- Finds the packs still lacking one without reading every pack each pass (empty once filled).
CREATE INDEX sample_packs_undigested_idx ON sample_packs (job_id) WHERE digest IS NULL;
