//! `GET /metrics` on a real server: series follow the event feed (on both backends), a restarted
//! server loads running jobs and partitions from the store, finished jobs vanish after the grace
//! period, the endpoint's authentication, and scrapes during heavy ingestion.

mod common;

use common::{http, poll_until, Backend, TestDb, TestServer};
use jobscope::config::{MetricsConfig, ServeConfig};
use jobscope::metrics::MetricsOptions;
use serde_json::json;
use std::time::Duration;

fn config(url: &str, grace: Duration) -> ServeConfig {
    ServeConfig {
        metrics: MetricsConfig {
            options: MetricsOptions {
                per_job: true,
                grace,
            },
            token: None,
        },
        ..common::serve_config(url)
    }
}

async fn scrape(base: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http().get(format!("{base}/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("scrape");
    let status = resp.status().as_u16();
    if status == 200 {
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    }
    (status, resp.text().await.unwrap())
}

use common::series_value as value;

/// Scrapes until `check` holds (the snapshot follows the feed asynchronously); fails after 15 s.
async fn scrape_until(base: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    poll_until(what, Duration::from_secs(15), || async {
        let (status, text) = scrape(base, None).await;
        assert_eq!(status, 200);
        if check(&text) {
            Ok(text)
        } else {
            Err(format!("\n{text}"))
        }
    })
    .await
}

async fn a_jobs_life(backend: Backend) {
    let db = TestDb::new(backend).await;
    let url = db.url.clone();
    let server = TestServer::start_with(config(&url, Duration::from_secs(1)), Some(db)).await;
    let base = server.base.clone();
    server.started("j1", "alice").await;
    server.started("j2", "bob").await;
    server
        .post(
            "/v1/jobs/j1/metrics",
            json!({"cpu_usage": 55.0, "memory_usage_mb": 10, "gpu_usage": 20.0}),
        )
        .await;
    let text = scrape_until(&base, "j1's sample", |t| {
        value(
            t,
            r#"hpc_job_cpu_usage_percent{job_id="j1",user="alice",node="n1"}"#,
        ) == Some(55.0)
    })
    .await;
    assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(2.0));
    assert_eq!(
        value(
            &text,
            r#"jobscope_hook_events_total{event="job-started",outcome="created"}"#
        ),
        Some(2.0)
    );
    assert_eq!(value(&text, "jobscope_samples_ingested_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            r#"storage_operation_duration_seconds_count{database="primary",operation="insert_job_if_absent",success="true"}"#
        ),
        Some(2.0)
    );
    // One after the other, each hook commits in its own group-commit transaction.
    assert_eq!(
        value(&text, "jobscope_lifecycle_batch_events_count"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "jobscope_lifecycle_batch_events_sum"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"jobscope_lifecycle_batch_events_bucket{le="1"}"#),
        Some(2.0)
    );
    // Route labels are templates: the job id never becomes a label value of the histogram.
    assert!(text.contains(r#"{method="POST",route="/v1/jobs/{id}/metrics",status="201"}"#));
    assert!(!text
        .lines()
        .any(|l| l.starts_with("jobscope_http") && l.contains("j1")));

    // A second server on the same database loads the running jobs from the store.
    let replica = TestServer::start_with(config(&url, Duration::from_secs(1)), None).await;
    let (_, text) = scrape(&replica.base, None).await;
    assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(2.0));
    assert_eq!(
        value(
            &text,
            r#"hpc_job_cpu_usage_percent{job_id="j1",user="alice",node="n1"}"#
        ),
        Some(55.0)
    );
    replica.shutdown().await;

    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "j1", "exit_code": 0}),
        )
        .await;
    let text = scrape_until(&base, "j1 completed", |t| {
        value(t, r#"hpc_jobs{state="completed"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(1.0));
    assert_eq!(
        value(&text, r#"hpc_jobs_finished_total{state="completed"}"#),
        Some(1.0)
    );
    // After the (1 s) grace period every series of j1 is gone; j2's stay.
    let text = scrape_until(&base, "j1's series gone", |t| !t.contains("job_id=\"j1\"")).await;
    assert!(
        text.contains(r#"hpc_job_info{job_id="j2",user="bob""#),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_jobs_life_in_metrics_sqlite() {
    a_jobs_life(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_jobs_life_in_metrics_postgres() {
    if common::skip_postgres() {
        return;
    }
    a_jobs_life(Backend::Postgres).await;
}

/// Partition series follow the Slurm feed's events, and a restarted server loads them from
/// the store.
#[tokio::test]
async fn partitions_follow_events_and_survive_a_restart() {
    use jobscope::domain::PartitionState::{Drain, Up};
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start_with(config(&db.url, Duration::from_secs(60)), Some(db)).await;
    let mut gpu = common::partition("gpu", Up);
    gpu.jobs_running = 3;
    gpu.jobs_pending = 7;
    let cpu = common::partition("cpu", Drain);
    server
        .store
        .sync_partitions(&[gpu.clone(), cpu.clone()])
        .await
        .unwrap();
    let text = scrape_until(&server.base, "the gpu queue", |t| {
        value(t, r#"hpc_partition_jobs{partition="gpu",state="pending"}"#) == Some(7.0)
    })
    .await;
    assert_eq!(
        value(
            &text,
            r#"hpc_partition_jobs{partition="gpu",state="running"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_partition_state{partition="cpu",state="drain"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"hpc_partition_cpus{partition="cpu"}"#),
        Some(8.0)
    );
    // cpu is removed from Slurm: its series go.
    server.store.sync_partitions(&[gpu]).await.unwrap();
    scrape_until(&server.base, "cpu gone", |t| {
        !t.contains(r#"partition="cpu""#)
    })
    .await;

    let db = server.stop_keeping_db().await.unwrap();
    let server = TestServer::start_with(config(&db.url, Duration::from_secs(60)), Some(db)).await;
    let (_, text) = scrape(&server.base, None).await;
    assert_eq!(
        value(
            &text,
            r#"hpc_partition_jobs{partition="gpu",state="pending"}"#
        ),
        Some(7.0),
        "loaded at start:\n{text}"
    );
    assert!(!text.contains(r#"partition="cpu""#));
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_take_a_reader_or_the_metrics_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tokens = jobscope::api::auth::Tokens::parse(
        "reader reader-token-0123456789\nhook hook-token-0123456789ab\n",
    )
    .unwrap();
    let mut cfg = config(&db.url, Duration::from_secs(60));
    cfg.tokens = Some(tokens);
    cfg.metrics.token = Some(jobscope::config::MetricsToken(
        "metrics-token-0123456789".into(),
    ));
    let server = TestServer::start_with(cfg, Some(db)).await;
    let base = server.base.clone();
    assert_eq!(scrape(&base, None).await.0, 401);
    assert_eq!(scrape(&base, Some("wrong-token-0123456789")).await.0, 401);
    assert_eq!(scrape(&base, Some("hook-token-0123456789ab")).await.0, 403);
    assert_eq!(scrape(&base, Some("reader-token-0123456789")).await.0, 200);
    let (status, text) = scrape(&base, Some("metrics-token-0123456789")).await;
    assert_eq!(status, 200);
    assert!(text.contains("hpc_jobs{state=\"running\"} 0"), "{text}");
    // The metrics token reads /metrics only.
    let resp = http()
        .get(format!("{base}/v1/jobs"))
        .bearer_auth("metrics-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (_, text) = scrape(&base, Some("reader-token-0123456789")).await;
    assert!(
        text.contains(r#"jobscope_http_request_duration_seconds_count{method="GET",route="/metrics",status="401"}"#),
        "rejected requests are counted too"
    );
    server.shutdown().await;
}

/// Writers post samples as fast as they can while a scraper scrapes: scrapes keep answering
/// during the ingestion, and afterwards the counters account for every sample.
#[tokio::test]
async fn scrapes_answer_during_heavy_ingestion() {
    let db = TestDb::new(Backend::Sqlite).await;
    // Eight writers queue on SQLite's one write lock; on a loaded CI machine a write can wait
    // past the default 5 s and be answered 503 (the bounded wait of --db-acquire-timeout, tested
    // in tests/hardening.rs). What this test measures is scrapes during ingestion, so it waits.
    let config = ServeConfig {
        db_acquire_timeout: Duration::from_secs(60),
        ..config(&db.url, Duration::from_secs(60))
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let base = server.base.clone();
    for i in 0..8 {
        server.started(&format!("h{i}"), "u").await;
    }
    scrape_until(&base, "eight running jobs", |t| {
        value(t, r#"hpc_jobs{state="running"}"#) == Some(8.0)
    })
    .await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                let client = http();
                for n in 0..40 {
                    let resp = client
                        .post(format!("{base}/v1/jobs/h{i}/metrics"))
                        .header("x-changed-by", "t")
                        .header("x-source", "t")
                        .json(&json!({"cpu_usage": n as f64, "memory_usage_mb": n}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 201);
                }
            })
        })
        .collect();
    let scraper = {
        let (base, done) = (base.clone(), done.clone());
        tokio::spawn(async move {
            let mut during = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, text) = scrape(&base, None).await;
                assert_eq!(status, 200);
                assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(8.0));
                if !done.load(std::sync::atomic::Ordering::SeqCst) {
                    during += 1;
                }
            }
            during
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = scraper.await.unwrap();
    assert!(
        during >= 2,
        "only {during} scrapes finished while 320 samples were posted"
    );
    scrape_until(&base, "every sample counted and the last one shown", |t| {
        value(t, "jobscope_samples_ingested_total") == Some(320.0)
            && value(
                t,
                r#"hpc_job_cpu_usage_percent{job_id="h7",user="u",node="n1"}"#,
            ) == Some(39.0)
    })
    .await;
    server.shutdown().await;
}

/// One node's batch with one sample of `job`: `cpu` percent of the node's CPUs, `cpu_s` CPU
/// seconds so far, `mem` bytes, one GPU.
fn node_batch(
    node: &str,
    job: &str,
    cpu: f64,
    cpu_s: u64,
    mem: u64,
    gpu: u32,
) -> serde_json::Value {
    let at = chrono::Utc::now().to_rfc3339();
    json!({
        "node": node, "collected_at": at, "interval_seconds": 15,
        "jobs": [{
            "job_id": job, "collected_at": at, "cpu_usage_percent": cpu,
            "cpu_usage_usec": cpu_s * 1_000_000, "memory_current_bytes": mem,
            "memory_peak_bytes": mem, "io_read_bytes": 1000, "io_write_bytes": 10, "oom_kills": 0,
            "gpus": [{"index": gpu, "uuid": format!("GPU-{node}"), "vendor": "nvidia",
                      "utilization_percent": 50.0, "memory_used_bytes": 1, "memory_total_bytes": 2,
                      "processes": []}]
        }],
        "node_stats": {"cpu_count": 8}
    })
}

/// A job on two nodes: its figures are the sums of both nodes' (and its CPU usage the share of
/// all its CPUs), `GET /v1/jobs/{id}` breaks them down per node, and `/metrics` has a series
/// per node.
async fn a_multi_node_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server =
        TestServer::start_with(config(&db.url.clone(), Duration::from_secs(60)), Some(db)).await;
    server
        .post(
            "/v1/events/job-started",
            json!({"job_id": "mn1", "user": "alice", "node_list": ["na", "nb"], "cpu_allocation": 16}),
        )
        .await;
    server
        .post(
            "/v1/samples",
            node_batch("na", "mn1", 20.0, 100, 1 << 30, 0),
        )
        .await;
    server
        .post(
            "/v1/samples",
            node_batch("nb", "mn1", 80.0, 300, 3 << 30, 1),
        )
        .await;
    let job: serde_json::Value = http()
        .get(format!("{}/v1/jobs/mn1", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let totals = &job["totals"];
    assert_eq!(totals["cpu_time_seconds"], 400.0, "{job}");
    assert_eq!(totals["memory_usage_bytes"], 4u64 << 30, "{job}");
    assert_eq!(totals["largest_node"], "nb", "{job}");
    assert_eq!(totals["cpu_usage"], 50.0, "{job}");
    assert_eq!(totals["cores_busy"], 8.0, "{job}");
    assert_eq!(totals["io_read_bytes"], 2000, "{job}");
    assert_eq!(totals["gpu_count"], 2, "{job}");
    assert_eq!(job["per_node"].as_array().unwrap().len(), 2, "{job}");
    assert_eq!(job["per_node"][1]["node"], "nb", "{job}");
    // The job's own figures are the whole job's, not the last node's.
    assert_eq!(job["cpu_usage"], 50.0, "{job}");
    assert_eq!(job["memory_usage_bytes"], 4u64 << 30, "{job}");
    assert_eq!(job["max_memory_usage_bytes"], 4u64 << 30, "{job}");
    assert_eq!(job["gpus"].as_array().unwrap().len(), 2, "{job}");

    let text = scrape_until(&server.base, "both nodes' series", |t| {
        value(
            t,
            r#"hpc_job_cpu_usage_percent{job_id="mn1",user="alice",node="nb"}"#,
        ) == Some(80.0)
    })
    .await;
    assert_eq!(
        value(
            &text,
            r#"hpc_job_cpu_usage_percent{job_id="mn1",user="alice",node="na"}"#
        ),
        Some(20.0),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_multi_node_job_is_measured_as_one_sqlite() {
    a_multi_node_job(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_multi_node_job_is_measured_as_one_postgres() {
    if common::skip_postgres() {
        return;
    }
    a_multi_node_job(Backend::Postgres).await;
}

/// Nodes no agent reports get usage series derived from the newest samples of the jobs running
/// on them (CPU and GPU averaged, memory summed; the Go service's figures), labelled
/// `source="jobs"`; a figure no job has is left out. Once the node's agent reports, its own
/// figures replace the derived ones.
async fn node_usage_without_agents(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server =
        TestServer::start_with(config(&db.url.clone(), Duration::from_secs(60)), Some(db)).await;
    for (id, user, node) in [
        ("u1", "alice", "n1"),
        ("u2", "bob", "n1"),
        ("u3", "carol", "n2"),
    ] {
        server
            .post(
                "/v1/events/job-started",
                json!({"job_id": id, "user": user, "node_list": [node]}),
            )
            .await;
    }
    for (id, sample) in [
        (
            "u1",
            json!({"cpu_usage": 40.0, "memory_usage_mb": 100, "gpu_usage": 20.0}),
        ),
        ("u2", json!({"cpu_usage": 60.0, "memory_usage_mb": 300})),
        ("u3", json!({"cpu_usage": 10.0, "memory_usage_mb": 50})),
    ] {
        server.post(&format!("/v1/jobs/{id}/metrics"), sample).await;
    }
    // Until the last of the three samples (n2's) is in too: the feed applies them in order.
    let text = scrape_until(&server.base, "n1's and n2's derived usage", |t| {
        value(t, r#"hpc_node_memory_usage_bytes{node="n1",source="jobs"}"#)
            == Some(400.0 * 1024.0 * 1024.0)
            && value(t, r#"hpc_node_memory_usage_bytes{node="n2",source="jobs"}"#)
                == Some(50.0 * 1024.0 * 1024.0)
    })
    .await;
    let derived =
        |node: &str, name: &str| value(&text, &format!(r#"{name}{{node="{node}",source="jobs"}}"#));
    assert_eq!(
        derived("n1", "hpc_node_cpu_usage_percent"),
        Some(50.0),
        "{text}"
    );
    assert_eq!(
        derived("n1", "hpc_node_gpu_usage_percent"),
        Some(20.0),
        "{text}"
    );
    assert_eq!(
        derived("n2", "hpc_node_cpu_usage_percent"),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        derived("n2", "hpc_node_memory_usage_bytes"),
        Some(50.0 * 1024.0 * 1024.0)
    );
    // No job on n2 has a GPU figure: none is made up.
    assert!(
        !text.contains(r#"hpc_node_gpu_usage_percent{node="n2""#),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"hpc_node_cpu_usage_percent{node="n1"}"#),
        None
    );

    // n1's agent reports: its figures win, the derived ones go; n2 keeps its derived series.
    let at = chrono::Utc::now().to_rfc3339();
    server
        .post(
            "/v1/samples",
            json!({
                "node": "n1", "collected_at": at, "interval_seconds": 15, "jobs": [],
                "node_stats": {"cpu_count": 8, "cpu_usage_percent": 12.5,
                               "memory_used_bytes": 4096, "memory_total_bytes": 8192}
            }),
        )
        .await;
    let text = scrape_until(&server.base, "n1's agent figures", |t| {
        value(t, r#"hpc_node_cpu_usage_percent{node="n1"}"#) == Some(12.5)
    })
    .await;
    assert_eq!(
        value(&text, r#"hpc_node_memory_usage_bytes{node="n1"}"#),
        Some(4096.0)
    );
    assert!(!text.contains(r#"{node="n1",source="jobs"}"#), "{text}");
    assert_eq!(
        value(
            &text,
            r#"hpc_node_cpu_usage_percent{node="n2",source="jobs"}"#
        ),
        Some(10.0),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn node_usage_without_agents_sqlite() {
    node_usage_without_agents(Backend::Sqlite).await;
}

#[tokio::test]
async fn node_usage_without_agents_postgres() {
    if common::skip_postgres() {
        return;
    }
    node_usage_without_agents(Backend::Postgres).await;
}
