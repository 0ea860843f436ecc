-- Each GPU's running figures per job and node (see src/store/gpu_figures.rs), kept by the sample
-- write path so that an efficiency report reads one row per device instead of every sample's
-- GPU list, and keeps its figures once raw samples expire. Deleting a job deletes its rows in
-- the same transaction. idle_samples counts the samples below idle_below_percent (NULL when
-- counted below different thresholds: a report then reads the samples). The *_at columns say
-- when the newest memory total and the first and last energy readings were taken.
CREATE TABLE job_gpu_figures (
    job_id              TEXT NOT NULL,
    node                TEXT NOT NULL,
    gpu_index           INTEGER NOT NULL,
    uuid                TEXT,
    samples             INTEGER NOT NULL,
    utilization_samples INTEGER NOT NULL,
    utilization_sum     REAL NOT NULL,
    utilization_max     REAL,
    idle_samples        INTEGER NOT NULL,
    idle_below_percent  REAL,
    memory_peak_bytes   INTEGER,
    memory_total_bytes  INTEGER,
    memory_total_at     TEXT,
    energy_first        REAL,
    energy_first_at     TEXT,
    energy_last         REAL,
    energy_last_at      TEXT,
    PRIMARY KEY (job_id, node, gpu_index)
);

-- The samples already stored, folded once (counted below the default idle threshold, 5 %).
INSERT INTO job_gpu_figures (job_id, node, gpu_index, uuid, samples, utilization_samples,
    utilization_sum, utilization_max, idle_samples, idle_below_percent, memory_peak_bytes,
    memory_total_bytes, memory_total_at, energy_first, energy_first_at, energy_last, energy_last_at)
SELECT job_id, node, gpu_index,
       json_group_array(uuid ORDER BY timestamp) FILTER (WHERE uuid IS NOT NULL) ->> 0,
       COUNT(*),
       COUNT(utilization),
       COALESCE(SUM(utilization), 0.0),
       MAX(utilization),
       COUNT(*) FILTER (WHERE utilization < 5),
       5.0,
       MAX(memory_used),
       json_group_array(memory_total ORDER BY timestamp DESC) FILTER (WHERE memory_total IS NOT NULL) ->> 0,
       MAX(timestamp) FILTER (WHERE memory_total IS NOT NULL),
       json_group_array(energy ORDER BY timestamp) FILTER (WHERE energy IS NOT NULL) ->> 0,
       MIN(timestamp) FILTER (WHERE energy IS NOT NULL),
       json_group_array(energy ORDER BY timestamp DESC) FILTER (WHERE energy IS NOT NULL) ->> 0,
       MAX(timestamp) FILTER (WHERE energy IS NOT NULL)
FROM (
    SELECT s.job_id AS job_id,
           COALESCE(s.node, j.nodes ->> 0, '') AS node,
           s.timestamp AS timestamp,
           g.value ->> 'index' AS gpu_index,
           g.value ->> 'uuid' AS uuid,
           g.value ->> 'utilization_percent' AS utilization,
           g.value ->> 'memory_used_bytes' AS memory_used,
           g.value ->> 'memory_total_bytes' AS memory_total,
           g.value ->> 'energy_joules' AS energy
    FROM metric_samples s
    JOIN jobs j ON j.id = s.job_id
    JOIN json_each(CASE WHEN json_valid(s.gpus) AND json_type(s.gpus) = 'array' THEN s.gpus ELSE '[]' END) AS g
    WHERE s.gpus IS NOT NULL AND g.type = 'object'
)
WHERE gpu_index IS NOT NULL
GROUP BY job_id, node, gpu_index;
