//! Adopting the Go service's PostgreSQL database (`store::go_schema`): a database built with the
//! Go service's own start-up statements and filled as it would have filled it is upgraded in
//! place by `serve`, and everything reads back through the `/v1` routes. PostgreSQL only (the Go
//! service had no SQLite backend), and never skipped: `JOBSCOPE_TEST_SKIP_POSTGRES` does not
//! apply here.

mod common;

use common::sse::SseClient;
use common::{http, serve_config, Backend, TestDb, TestServer};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

/// The Go service's start-up statements (shared/go-service-schema.md). `with_gpu_columns`:
/// the current revision; without, an older site that never got the four later columns.
fn go_ddl(with_gpu_columns: bool) -> String {
    let gpu = if with_gpu_columns {
        "cgroup_path TEXT, gpu_count INTEGER DEFAULT 0, gpu_vendor TEXT, gpu_devices TEXT,"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, user_name TEXT NOT NULL, nodes TEXT NOT NULL,
            node_count INTEGER DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending',
            start_time TIMESTAMPTZ NOT NULL, end_time TIMESTAMPTZ, runtime_seconds DOUBLE PRECISION DEFAULT 0,
            cpu_usage DOUBLE PRECISION DEFAULT 0, memory_usage_mb BIGINT DEFAULT 0, gpu_usage DOUBLE PRECISION,
            external_job_id TEXT, scheduler_type TEXT, raw_state TEXT, partition TEXT, account TEXT, qos TEXT,
            priority BIGINT, submit_time TIMESTAMPTZ, exit_code INTEGER, state_reason TEXT, time_limit_minutes INTEGER,
            requested_cpus BIGINT DEFAULT 0, allocated_cpus BIGINT DEFAULT 0, requested_memory_mb BIGINT DEFAULT 0,
            allocated_memory_mb BIGINT DEFAULT 0, requested_gpus BIGINT DEFAULT 0, allocated_gpus BIGINT DEFAULT 0,
            cluster_name TEXT, scheduler_instance TEXT, ingest_version TEXT,
            last_sample_at TIMESTAMPTZ, sample_count BIGINT DEFAULT 0, avg_cpu_usage DOUBLE PRECISION DEFAULT 0,
            max_cpu_usage DOUBLE PRECISION DEFAULT 0, max_memory_usage_mb BIGINT DEFAULT 0,
            avg_gpu_usage DOUBLE PRECISION DEFAULT 0, max_gpu_usage DOUBLE PRECISION DEFAULT 0,
            {gpu}
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
        CREATE INDEX IF NOT EXISTS idx_jobs_state ON jobs(state);
        CREATE INDEX IF NOT EXISTS idx_jobs_user ON jobs(user_name);
        CREATE INDEX IF NOT EXISTS idx_jobs_start_time ON jobs(start_time);
        CREATE INDEX IF NOT EXISTS idx_jobs_cluster_name ON jobs(cluster_name);
        CREATE TABLE IF NOT EXISTS metric_samples (
            id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            timestamp TIMESTAMPTZ NOT NULL, cpu_usage DOUBLE PRECISION NOT NULL,
            memory_usage_mb BIGINT NOT NULL, gpu_usage DOUBLE PRECISION);
        CREATE INDEX IF NOT EXISTS idx_metrics_job_id ON metric_samples(job_id);
        CREATE INDEX IF NOT EXISTS idx_metrics_timestamp ON metric_samples(timestamp);
        CREATE INDEX IF NOT EXISTS idx_metrics_job_timestamp ON metric_samples(job_id, timestamp DESC);
        CREATE TABLE IF NOT EXISTS job_audit_events (
            id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, change_type TEXT NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), changed_by TEXT NOT NULL, source TEXT NOT NULL,
            correlation_id TEXT NOT NULL, job_snapshot JSONB NOT NULL);
        CREATE INDEX IF NOT EXISTS idx_job_audit_job_id ON job_audit_events(job_id);
        CREATE INDEX IF NOT EXISTS idx_job_audit_changed_at ON job_audit_events(changed_at);
        CREATE INDEX IF NOT EXISTS idx_job_audit_change_type ON job_audit_events(change_type);
        CREATE INDEX IF NOT EXISTS idx_job_audit_correlation_id ON job_audit_events(correlation_id);"
    )
}

/// What the Go service would have written: a running two-node job with samples, a completed
/// GPU job, a pending job with the Go service's zero defaults, a failed job, and the trail of a
/// job deleted since (an older revision's `delete` row).
fn go_rows(with_gpu_columns: bool) -> String {
    let gpu_job = if with_gpu_columns {
        "INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time, end_time, runtime_seconds,
            cpu_usage, memory_usage_mb, gpu_usage, requested_cpus, allocated_cpus, allocated_gpus,
            cluster_name, scheduler_instance, ingest_version, last_sample_at, sample_count,
            avg_cpu_usage, max_cpu_usage, max_memory_usage_mb, avg_gpu_usage, max_gpu_usage,
            scheduler_type, external_job_id, partition, account, exit_code,
            cgroup_path, gpu_count, gpu_vendor, gpu_devices)
         VALUES ('1002', 'bob', 'gpu-01', 1, 'completed', now() - interval '2 hours', now() - interval '1 hour', 3600,
            80, 2048, 90, 8, 8, 2, 'hpc', 'slurm-a', 'go-1.4', now() - interval '1 hour', 2,
            75, 80, 4096, 85, 90, 'slurm', '1002', 'gpu', 'ml', 0,
            '/sys/fs/cgroup/system.slice/slurmstepd.scope/job_1002', 2, 'nvidia', '0,1');"
    } else {
        "INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time, end_time, runtime_seconds,
            cpu_usage, memory_usage_mb, gpu_usage, requested_cpus, allocated_cpus, allocated_gpus,
            cluster_name, scheduler_instance, ingest_version, last_sample_at, sample_count,
            avg_cpu_usage, max_cpu_usage, max_memory_usage_mb, avg_gpu_usage, max_gpu_usage,
            scheduler_type, external_job_id, partition, account, exit_code)
         VALUES ('1002', 'bob', 'gpu-01', 1, 'completed', now() - interval '2 hours', now() - interval '1 hour', 3600,
            80, 2048, 90, 8, 8, 2, 'hpc', 'slurm-a', 'go-1.4', now() - interval '1 hour', 2,
            75, 80, 4096, 85, 90, 'slurm', '1002', 'gpu', 'ml', 0);"
    };
    format!(
        "INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time, cpu_usage, memory_usage_mb,
            requested_cpus, allocated_cpus, requested_memory_mb, allocated_memory_mb,
            cluster_name, scheduler_instance, ingest_version, last_sample_at, sample_count,
            avg_cpu_usage, max_cpu_usage, max_memory_usage_mb, scheduler_type, external_job_id,
            partition, account, qos, priority, time_limit_minutes)
         VALUES ('1001', 'alice', 'node-01, node-02', 2, 'running', now() - interval '30 minutes', 40, 1500,
            16, 16, 32000, 32000, 'hpc', 'slurm-a', 'go-1.4', now() - interval '1 minute', 3,
            30, 40, 1500, 'slurm', '1001', 'batch', 'physics', 'normal', 100, 120);
         {gpu_job}
         INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time)
         VALUES ('1003', 'carol', 'node-03', 1, 'pending', now() - interval '5 minutes');
         INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time, end_time, runtime_seconds,
            cluster_name, exit_code, partition)
         VALUES ('1004', 'alice', 'node-03', 1, 'failed', now() - interval '3 hours', now() - interval '170 minutes', 600,
            'hpc', 1, 'batch');
         INSERT INTO metric_samples (job_id, timestamp, cpu_usage, memory_usage_mb, gpu_usage) VALUES
            ('1001', now() - interval '3 minutes', 20, 1000, NULL),
            ('1001', now() - interval '2 minutes', 30, 1200, NULL),
            ('1001', now() - interval '1 minute', 40, 1500, NULL),
            ('1002', now() - interval '90 minutes', 70, 4096, 80),
            ('1002', now() - interval '61 minutes', 80, 2048, 90);
         INSERT INTO job_audit_events (job_id, change_type, changed_at, changed_by, source, correlation_id, job_snapshot) VALUES
            ('1001', 'create', now() - interval '30 minutes', 'slurm-prolog', 'lifecycle-event', 'corr-1001',
                '{{\"id\": \"1001\", \"user\": \"alice\", \"nodes\": [\"node-01\", \"node-02\"], \"state\": \"running\"}}'),
            ('1001', 'update', now() - interval '1 minute', 'collector', 'metrics', 'corr-1001-tick',
                '{{\"id\": \"1001\", \"state\": \"running\", \"cpu_usage\": 40}}'),
            ('1002', 'create', now() - interval '2 hours', 'slurm-prolog', 'lifecycle-event', 'corr-1002',
                '{{\"id\": \"1002\", \"state\": \"running\"}}'),
            ('1002', 'update', now() - interval '1 hour', 'slurm-epilog', 'lifecycle-event', 'corr-1002-end',
                '{{\"id\": \"1002\", \"state\": \"completed\"}}'),
            ('999', 'create', now() - interval '1 day', 'alice', 'api', 'corr-999',
                '{{\"id\": \"999\", \"state\": \"running\"}}'),
            ('999', 'update', now() - interval '23 hours', 'alice', 'api', 'corr-999-b',
                '{{\"id\": \"999\", \"state\": \"cancelled\"}}'),
            ('999', 'delete', now() - interval '22 hours', 'admin', 'api', 'corr-999-c',
                '{{\"id\": \"999\", \"state\": \"cancelled\"}}');"
    )
}

/// A fresh PostgreSQL database holding the Go service's schema and rows.
async fn go_database(with_gpu_columns: bool) -> TestDb {
    let db = TestDb::new(Backend::Postgres).await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(go_ddl(with_gpu_columns)))
        .await
        .expect("the Go schema");
    conn.execute(sqlx::AssertSqlSafe(go_rows(with_gpu_columns)))
        .await
        .expect("the Go rows");
    conn.close().await.unwrap();
    db
}

/// Every table's definition (columns, constraints, indexes, storage options, sequences) and the
/// recorded migrations, as text lines, in a stable order.
async fn catalog(url: &str) -> Vec<String> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut lines = Vec::new();
    for sql in [
        "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable \
            || ' default=' || COALESCE(column_default, '') FROM information_schema.columns \
            WHERE table_schema = 'public' ORDER BY table_name, column_name",
        "SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1",
        "SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        "SELECT 'table ' || relname || ' ' || COALESCE(array_to_string(reloptions, ','), '') FROM pg_class \
            WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1",
        "SELECT 'sequence ' || sequence_name || ' ' || data_type FROM information_schema.sequences \
            WHERE sequence_schema = 'public' ORDER BY 1",
        "SELECT 'migration ' || version || ' ' || description || ' ' || success || ' ' || encode(checksum, 'hex') \
            FROM _sqlx_migrations ORDER BY version",
    ] {
        let rows: Vec<String> = match sqlx::query_scalar(sql).fetch_all(&mut conn).await {
            Ok(rows) => rows,
            // No migration table (a Go database): nothing to list.
            Err(_) if sql.contains("_sqlx_migrations") => Vec::new(),
            Err(e) => panic!("{sql}: {e}"),
        };
        lines.extend(rows);
    }
    conn.close().await.unwrap();
    lines
}

/// The Go tables' contents, row by row, as JSON text.
async fn go_contents(url: &str) -> Vec<String> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut rows = Vec::new();
    for table in ["jobs", "metric_samples", "job_audit_events"] {
        let sql = format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY t.id");
        let found: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        rows.extend(found.into_iter().map(|r| format!("{table} {r}")));
    }
    conn.close().await.unwrap();
    rows
}

async fn get(server: &TestServer, path: &str) -> Value {
    let resp = http()
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect()
}

/// The adopted schema is exactly the one jobscope's migrations build, for both Go revisions.
#[tokio::test]
async fn adopted_schema_is_the_migrated_schema() {
    let fresh = TestDb::new(Backend::Postgres).await;
    jobscope::store::Store::connect(&fresh.url)
        .await
        .unwrap()
        .close()
        .await;
    let expected = catalog(&fresh.url).await;
    assert!(expected.iter().any(|l| l.starts_with("migration 11 ")));
    for with_gpu_columns in [true, false] {
        let db = go_database(with_gpu_columns).await;
        let store = jobscope::store::Store::connect(&db.url)
            .await
            .expect("adopts the Go database");
        store.close().await;
        let adopted = catalog(&db.url).await;
        let missing: Vec<_> = expected.iter().filter(|l| !adopted.contains(l)).collect();
        let extra: Vec<_> = adopted.iter().filter(|l| !expected.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "gpu columns {with_gpu_columns}: the adopted schema differs from the migrated one\n\
             missing: {missing:#?}\nextra: {extra:#?}"
        );
    }
}

/// `serve` adopts the database at start; every row reads back through the API, writes work on
/// adopted jobs, the seeded log replays the live jobs, and a second start changes nothing.
#[tokio::test]
async fn serve_adopts_the_go_database_and_serves_its_rows() {
    let db = go_database(true).await;
    let url = db.url.clone();
    let server = TestServer::start_with(serve_config(&url), Some(db)).await;

    // Jobs, filtered and one by one.
    let jobs = get(&server, "/v1/jobs?limit=100").await;
    let list = jobs["jobs"].clone();
    let mut all = ids(&list);
    all.sort();
    assert_eq!(all, ["1001", "1002", "1003", "1004"], "{jobs}");
    assert_eq!(jobs["total"], 4, "{jobs}");
    assert_eq!(
        ids(&get(&server, "/v1/jobs?state=running").await["jobs"]),
        ["1001"]
    );
    let mut alice = ids(&get(&server, "/v1/jobs?user=alice").await["jobs"])
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    alice.sort();
    assert_eq!(alice, ["1001", "1004"]);
    assert_eq!(
        ids(&get(&server, "/v1/jobs?node=node-02").await["jobs"]),
        ["1001"]
    );

    let running = get(&server, "/v1/jobs/1001").await;
    assert_eq!(running["nodes"], json!(["node-01", "node-02"]), "{running}");
    assert_eq!(running["node_count"], 2);
    assert_eq!(running["state"], "running");
    assert_eq!(running["sample_count"], 3);
    assert_eq!(running["avg_cpu_usage"], 30.0);
    assert_eq!(running["requested_memory_mb"], 32000);
    assert_eq!(running["cluster_name"], "hpc");
    assert_eq!(running["scheduler"]["partition"], "batch");
    assert_eq!(running["scheduler"]["time_limit_minutes"], 120);
    // Its trace id is the one its first audit row recorded.
    assert_eq!(running["correlation_id"], "corr-1001");

    let gpu = get(&server, "/v1/jobs/1002").await;
    assert_eq!(gpu["gpu_devices"], json!(["0", "1"]), "{gpu}");
    assert_eq!(gpu["gpu_vendor"], "nvidia");
    assert_eq!(gpu["gpu_count"], 2);
    assert_eq!(gpu["avg_gpu_usage"], 85.0);
    assert_eq!(gpu["scheduler"]["exit_code"], 0);
    assert_eq!(gpu["runtime_seconds"], 3600.0);

    // The Go service's zeros for what it was not told are omitted, as it omitted them.
    let pending = get(&server, "/v1/jobs/1003").await;
    for absent in ["requested_cpus", "cpu_usage", "avg_cpu_usage", "gpu_count"] {
        assert!(pending.get(absent).is_none(), "{absent}: {pending}");
    }
    assert_eq!(pending["cluster_name"], "default");
    let failed = get(&server, "/v1/jobs/1004").await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["scheduler"]["exit_code"], 1, "{failed}");

    // Samples, audit trails (a deleted job's included), reports, nodes, partitions.
    let samples = get(&server, "/v1/jobs/1001/metrics").await;
    let cpu: Vec<f64> = samples["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("{samples}"))
        .iter()
        .map(|s| s["cpu_usage"].as_f64().unwrap())
        .collect();
    let mut sorted = cpu.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, [20.0, 30.0, 40.0], "{samples}");
    assert_eq!(
        get(&server, "/v1/jobs/1002/metrics").await["samples"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let trail = get(&server, "/v1/jobs/999/audit").await;
    let kinds: Vec<&str> = trail["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{trail}"))
        .iter()
        .map(|e| e["change_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["create", "update", "delete"], "{trail}");
    assert_eq!(trail["events"][2]["changed_by"], "admin");
    assert_eq!(
        get(&server, "/v1/jobs/1001/audit").await["events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let report = get(&server, "/v1/jobs/1002/report").await;
    assert_eq!(report["job_id"], "1002", "{report}");
    get(&server, "/v1/reports?since=1d").await;
    let node_jobs = get(&server, "/v1/nodes/node-02/jobs").await;
    assert_eq!(ids(&node_jobs["jobs"]), ["1001"], "{node_jobs}");
    // Nodes come from agents and the scheduler, never from job rows: none yet, and a name is a
    // JSON 404, not an error of the adopted schema.
    assert_eq!(get(&server, "/v1/nodes").await["total"], 0);
    let resp = http()
        .get(format!("{}/v1/nodes/node-02", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(
        get(&server, "/v1/partitions").await["partitions"],
        json!([])
    );
    get(&server, "/v1/health").await;
    get(&server, "/v1/whoami").await;
    get(&server, "/v1/openapi.yaml").await;

    // /metrics starts from the jobs as they are.
    let metrics = get(&server, "/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("hpc_job_state_total{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hpc_job_total 4"), "{metrics}");

    // The seeded log replays the live jobs, oldest start first.
    let mut stream = Sse::connect(&server.base, "/v1/stream/jobs", 0).await;
    let first = stream.next().await;
    let second = stream.next().await;
    assert_eq!(
        (first.0.as_str(), first.1["job"]["id"].as_str()),
        ("job_created", Some("1001")),
        "{first:?}"
    );
    assert_eq!(
        (second.0.as_str(), second.1["job"]["id"].as_str()),
        ("job_created", Some("1003")),
        "{second:?}"
    );

    // Writes go on from the Go figures: a fourth sample moves the average of three.
    server
        .post(
            "/v1/jobs/1001/metrics",
            json!({"cpu_usage": 70.0, "memory_usage_mb": 1600}),
        )
        .await;
    let after = get(&server, "/v1/jobs/1001").await;
    assert_eq!(after["sample_count"], 4, "{after}");
    assert_eq!(after["avg_cpu_usage"], 40.0, "{after}");
    assert_eq!(after["max_cpu_usage"], 70.0, "{after}");
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "1001", "exit_code": 0}),
        )
        .await;
    assert_eq!(get(&server, "/v1/jobs/1001").await["state"], "completed");
    // The other writes on adopted rows: a PATCH, a new job beside them, and a deletion whose
    // audit row follows the Go service's.
    let resp = http()
        .patch(format!("{}/v1/jobs/1003", server.base))
        .header("x-changed-by", "t")
        .header("x-source", "go-schema-test")
        .json(&json!({"state": "running"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get(&server, "/v1/jobs/1003").await["state"], "running");
    server
        .post(
            "/v1/jobs",
            json!({"id": "2001", "user": "dave", "nodes": ["node-09"]}),
        )
        .await;
    assert_eq!(get(&server, "/v1/jobs").await["total"], 5);
    let resp = http()
        .delete(format!("{}/v1/jobs/1002", server.base))
        .header("x-changed-by", "t")
        .header("x-source", "go-schema-test")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let trail = get(&server, "/v1/jobs/1002/audit").await;
    let kinds: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["create", "update", "delete"], "{trail}");
    let (next, _) = stream.next_of("job_finished").await;
    assert_eq!(next, "job_finished");
    drop(stream);
    server.shutdown().await;
}

/// A second start, and `migrate`, find nothing to do; `--dry-run` on a Go database lists the
/// steps and changes nothing.
#[tokio::test]
async fn adoption_is_idempotent_and_dry_run_changes_nothing() {
    let db = go_database(false).await;
    let before = (catalog(&db.url).await, go_contents(&db.url).await);
    let lines = jobscope::store::migrate(&db.url, true).await.unwrap();
    let text = lines.join("\n");
    assert!(
        text.contains("the Go service's: 4 jobs, 5 metric samples, 7 audit rows"),
        "{text}"
    );
    assert!(
        text.contains("no cgroup_path, gpu_count, gpu_vendor, gpu_devices"),
        "{text}"
    );
    assert!(text.contains("would adopt it in place"), "{text}");
    assert!(
        text.contains("one job_created event per pending or running job (2)"),
        "{text}"
    );
    // Migrations newer than the adopted schema are listed to be applied after it.
    let later: Vec<String> = std::fs::read_dir("migrations/postgres")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.split('_').next().and_then(|v| v.parse::<i64>().ok())
                > Some(jobscope::store::go_schema::ADOPTED_VERSION)
        })
        .collect();
    if later.is_empty() {
        assert!(text.contains("no migration to apply"), "{text}");
    } else {
        let head = format!("would apply {} migration(s):", later.len());
        assert!(text.contains(&head), "{text}");
        for name in &later {
            let version = &name[..4];
            assert!(text.contains(&format!("  {version} ")), "{name}: {text}");
        }
    }
    assert_eq!(
        (catalog(&db.url).await, go_contents(&db.url).await),
        before,
        "a dry run changed the database"
    );

    let applied = jobscope::store::migrate(&db.url, false)
        .await
        .unwrap()
        .join("\n");
    assert!(
        applied.contains("adopted the Go service's database"),
        "{applied}"
    );
    let adopted = catalog(&db.url).await;
    let events = event_count(&db.url).await;
    assert_eq!(events, 2);

    let again = jobscope::store::migrate(&db.url, true)
        .await
        .unwrap()
        .join("\n");
    assert!(!again.contains("Go service"), "{again}");
    assert!(again.contains("no migration to apply"), "{again}");
    jobscope::store::Store::connect(&db.url)
        .await
        .unwrap()
        .close()
        .await;
    jobscope::store::migrate(&db.url, false).await.unwrap();
    assert_eq!(
        catalog(&db.url).await,
        adopted,
        "a second start changed the schema"
    );
    assert_eq!(
        event_count(&db.url).await,
        events,
        "a second start seeded again"
    );
}

/// A failure part-way (here a table of the site's own named like one jobscope creates late in
/// the adoption) rolls everything back: the Go tables are exactly as they were, and the error
/// says so.
#[tokio::test]
async fn a_failure_part_way_leaves_the_go_tables_untouched() {
    let db = go_database(true).await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("CREATE TABLE partitions (site_note TEXT)")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let before = (catalog(&db.url).await, go_contents(&db.url).await);
    let err = match jobscope::store::Store::connect(&db.url).await {
        Ok(_) => panic!("adoption over a foreign partitions table succeeded"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("failed at \"new tables: events (the stream log), nodes, partitions\""),
        "{err}"
    );
    assert!(err.contains("Nothing was changed"), "{err}");
    assert!(err.contains("partitions"), "{err}");
    let after = (catalog(&db.url).await, go_contents(&db.url).await);
    assert_eq!(after, before, "the failed adoption left changes behind");
    assert!(
        before
            .0
            .iter()
            .any(|l| l == "column jobs.nodes text null=NO default="),
        "the catalog check looks at the Go columns: {:#?}",
        before.0
    );
}

async fn event_count(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// A stream's events as the change type and data ([`SseClient`]), `connected` skipped.
struct Sse(SseClient);

impl Sse {
    async fn connect(base: &str, path: &str, last_event_id: i64) -> Sse {
        Sse(SseClient::connect(base, path, Some(last_event_id)).await)
    }

    async fn next(&mut self) -> (String, Value) {
        let event = self.0.next_event().await;
        // The envelope names the change in `type`, the job under `data`.
        let kind = event.data["type"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or(event.name);
        (kind, event.data["data"].clone())
    }

    /// Skips events until one named `name` (within the 10 s of each read).
    async fn next_of(&mut self, name: &str) -> (String, Value) {
        loop {
            let event = self.next().await;
            if event.0 == name {
                return event;
            }
        }
    }
}

/// A value the adopted columns refuse (a state jobscope does not know) is named by the dry run
/// and stops `serve` before anything is changed.
#[tokio::test]
async fn an_unknown_state_is_named_and_changes_nothing() {
    let db = go_database(true).await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("UPDATE jobs SET state = 'TIMEOUT' WHERE id = '1004'")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let before = (catalog(&db.url).await, go_contents(&db.url).await);
    let text = jobscope::store::migrate(&db.url, true)
        .await
        .unwrap()
        .join("\n");
    assert!(
        text.contains("blocked: 1 job(s) with state 'TIMEOUT'"),
        "{text}"
    );
    let err = match jobscope::store::Store::connect(&db.url).await {
        Ok(_) => panic!("adopted a job in state TIMEOUT"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("state 'TIMEOUT'"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!((catalog(&db.url).await, go_contents(&db.url).await), before);
}
