-- Slurm's node features (`Feature=` in slurm.conf, e.g. ["gpu", "ssd"]), as the scheduler
-- reports them; seed 000's node stream filters on them. Empty where no scheduler says.
ALTER TABLE nodes ADD COLUMN features JSONB NOT NULL DEFAULT '[]';
