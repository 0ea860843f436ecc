-- Each node's newest figures for a multi-node job, and the whole job's maxima (see
-- src/domain/figures.rs): the job's current figures and aggregates are the whole job's, summed
-- over its nodes, instead of whichever node reported last. NULL for single-node jobs. `json`
-- like the other JSON columns the sample path writes (0009): stored as sent, read whole.
ALTER TABLE jobs ADD COLUMN node_figures JSON;
