-- Each GPU's running figures per job and node (see src/store/gpu_figures.rs), kept by the sample
-- write path so that an efficiency report reads one row per device instead of every sample's
-- GPU list, and keeps its figures once raw samples expire. No foreign key, like metric_samples
-- (0007): deleting a job deletes its rows in the same transaction.
-- idle_samples counts the samples below idle_below_percent (the site's threshold when they were
-- stored; NULL when samples were counted below different ones, and a report then reads the
-- samples). The *_at columns say when the newest memory total and the first and last energy
-- readings were taken, so that batches arriving out of order combine.
CREATE TABLE job_gpu_figures (
    job_id              TEXT NOT NULL,
    node                TEXT NOT NULL,
    gpu_index           BIGINT NOT NULL,
    uuid                TEXT,
    samples             BIGINT NOT NULL,
    utilization_samples BIGINT NOT NULL,
    utilization_sum     DOUBLE PRECISION NOT NULL,
    utilization_max     DOUBLE PRECISION,
    idle_samples        BIGINT NOT NULL,
    idle_below_percent  DOUBLE PRECISION,
    memory_peak_bytes   BIGINT,
    memory_total_bytes  BIGINT,
    memory_total_at     TIMESTAMPTZ,
    energy_first        DOUBLE PRECISION,
    energy_first_at     TIMESTAMPTZ,
    energy_last         DOUBLE PRECISION,
    energy_last_at      TIMESTAMPTZ,
    PRIMARY KEY (job_id, node, gpu_index)
);

-- The samples already stored, folded once (counted below the default idle threshold, 5 %).
-- A sample without a node is its job's first node's, as in the report.
INSERT INTO job_gpu_figures (job_id, node, gpu_index, uuid, samples, utilization_samples,
    utilization_sum, utilization_max, idle_samples, idle_below_percent, memory_peak_bytes,
    memory_total_bytes, memory_total_at, energy_first, energy_first_at, energy_last, energy_last_at)
SELECT s.job_id,
       COALESCE(s.node, j.nodes ->> 0, ''),
       g.index::bigint,
       (array_agg(g.uuid ORDER BY s.timestamp) FILTER (WHERE g.uuid IS NOT NULL))[1],
       COUNT(*),
       COUNT(g.utilization_percent),
       COALESCE(SUM(g.utilization_percent), 0),
       MAX(g.utilization_percent),
       COUNT(*) FILTER (WHERE g.utilization_percent < 5),
       5,
       LEAST(MAX(g.memory_used_bytes), 9223372036854775807)::bigint,
       LEAST((array_agg(g.memory_total_bytes ORDER BY s.timestamp DESC)
              FILTER (WHERE g.memory_total_bytes IS NOT NULL))[1], 9223372036854775807)::bigint,
       MAX(s.timestamp) FILTER (WHERE g.memory_total_bytes IS NOT NULL),
       (array_agg(g.energy_joules ORDER BY s.timestamp) FILTER (WHERE g.energy_joules IS NOT NULL))[1],
       MIN(s.timestamp) FILTER (WHERE g.energy_joules IS NOT NULL),
       (array_agg(g.energy_joules ORDER BY s.timestamp DESC) FILTER (WHERE g.energy_joules IS NOT NULL))[1],
       MAX(s.timestamp) FILTER (WHERE g.energy_joules IS NOT NULL)
FROM metric_samples s
JOIN jobs j ON j.id = s.job_id
CROSS JOIN LATERAL json_array_elements(CASE WHEN json_typeof(s.gpus) = 'array' THEN s.gpus ELSE '[]'::json END) AS e(v)
CROSS JOIN LATERAL json_to_record(e.v) AS g(index numeric, uuid text, utilization_percent double precision,
    memory_used_bytes numeric, memory_total_bytes numeric, energy_joules double precision)
WHERE s.gpus IS NOT NULL AND json_typeof(e.v) = 'object' AND g.index IS NOT NULL
GROUP BY s.job_id, COALESCE(s.node, j.nodes ->> 0, ''), g.index::bigint;
