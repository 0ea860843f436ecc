-- The Go service's schema (its start-up statements, shared/go-service-schema.md) filled with
-- 20,000 jobs (1,000 running), 2,000,000 samples and 200,000 audit rows: the database of the
-- adoption benchmark in BENCHMARKS.md ("Adopting a Go-service database").
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, user_name TEXT NOT NULL, nodes TEXT NOT NULL, node_count INTEGER DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending', start_time TIMESTAMPTZ NOT NULL, end_time TIMESTAMPTZ, runtime_seconds DOUBLE PRECISION DEFAULT 0, cpu_usage DOUBLE PRECISION DEFAULT 0, memory_usage_mb BIGINT DEFAULT 0, gpu_usage DOUBLE PRECISION, external_job_id TEXT, scheduler_type TEXT, raw_state TEXT, partition TEXT, account TEXT, qos TEXT, priority BIGINT, submit_time TIMESTAMPTZ, exit_code INTEGER, state_reason TEXT, time_limit_minutes INTEGER, requested_cpus BIGINT DEFAULT 0, allocated_cpus BIGINT DEFAULT 0, requested_memory_mb BIGINT DEFAULT 0, allocated_memory_mb BIGINT DEFAULT 0, requested_gpus BIGINT DEFAULT 0, allocated_gpus BIGINT DEFAULT 0, cluster_name TEXT, scheduler_instance TEXT, ingest_version TEXT, last_sample_at TIMESTAMPTZ, sample_count BIGINT DEFAULT 0, avg_cpu_usage DOUBLE PRECISION DEFAULT 0, max_cpu_usage DOUBLE PRECISION DEFAULT 0, max_memory_usage_mb BIGINT DEFAULT 0, avg_gpu_usage DOUBLE PRECISION DEFAULT 0, max_gpu_usage DOUBLE PRECISION DEFAULT 0, cgroup_path TEXT, gpu_count INTEGER DEFAULT 0, gpu_vendor TEXT, gpu_devices TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
CREATE INDEX IF NOT EXISTS idx_jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS idx_jobs_user ON jobs(user_name);
CREATE INDEX IF NOT EXISTS idx_jobs_start_time ON jobs(start_time);
CREATE INDEX IF NOT EXISTS idx_jobs_cluster_name ON jobs(cluster_name);
CREATE TABLE IF NOT EXISTS metric_samples (id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, timestamp TIMESTAMPTZ NOT NULL, cpu_usage DOUBLE PRECISION NOT NULL, memory_usage_mb BIGINT NOT NULL, gpu_usage DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS idx_metrics_job_id ON metric_samples(job_id);
CREATE INDEX IF NOT EXISTS idx_metrics_timestamp ON metric_samples(timestamp);
CREATE INDEX IF NOT EXISTS idx_metrics_job_timestamp ON metric_samples(job_id, timestamp DESC);
CREATE TABLE IF NOT EXISTS job_audit_events (id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, change_type TEXT NOT NULL, changed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), changed_by TEXT NOT NULL, source TEXT NOT NULL, correlation_id TEXT NOT NULL, job_snapshot JSONB NOT NULL);
CREATE INDEX IF NOT EXISTS idx_job_audit_job_id ON job_audit_events(job_id);
CREATE INDEX IF NOT EXISTS idx_job_audit_changed_at ON job_audit_events(changed_at);
CREATE INDEX IF NOT EXISTS idx_job_audit_change_type ON job_audit_events(change_type);
CREATE INDEX IF NOT EXISTS idx_job_audit_correlation_id ON job_audit_events(correlation_id);
INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time, end_time, cpu_usage, memory_usage_mb, allocated_cpus, cluster_name, sample_count, avg_cpu_usage, max_cpu_usage, gpu_devices, gpu_vendor, gpu_count)
SELECT i::text, 'user' || (i % 50), 'node-' || (i % 200) || ',node-' || ((i + 1) % 200), 2,
  CASE WHEN i > 19000 THEN 'running' ELSE 'completed' END, now() - (i || ' minutes')::interval,
  CASE WHEN i > 19000 THEN NULL ELSE now() END, 50, 1000, 8, 'hpc', 100, 45, 90,
  CASE WHEN i % 4 = 0 THEN '0,1' END, CASE WHEN i % 4 = 0 THEN 'nvidia' END, CASE WHEN i % 4 = 0 THEN 2 ELSE 0 END
FROM generate_series(1, 20000) i;
INSERT INTO metric_samples (job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage)
SELECT (1 + (i % 20000))::text, now() - (i || ' seconds')::interval, 50, 1000, NULL FROM generate_series(1, 2000000) i;
INSERT INTO job_audit_events (job_id, change_type, changed_by, source, correlation_id, job_snapshot)
SELECT (1 + (i % 20000))::text, CASE WHEN i <= 20000 THEN 'create' ELSE 'update' END, 'collector', 'metrics', md5(i::text), '{"id": "x", "state": "running", "cpu_usage": 50, "nodes": ["node-1", "node-2"]}'
FROM generate_series(1, 200000) i;
