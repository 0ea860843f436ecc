-- Slurm 26.05+ gives every job a cluster-unique id (SLUID, e.g. s5K1KKYAYG5D00) besides its
-- number; from then on it also names the job's cgroup directory, so agents look jobs up by it.
ALTER TABLE jobs ADD COLUMN sluid TEXT;
CREATE INDEX jobs_sluid_idx ON jobs (sluid) WHERE sluid IS NOT NULL;
