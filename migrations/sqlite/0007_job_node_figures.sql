-- Each node's newest figures for a multi-node job, and the whole job's maxima (see
-- src/domain/figures.rs). NULL for single-node jobs.
ALTER TABLE jobs ADD COLUMN node_figures TEXT;
