//! The exporter on its own: event application, grace period, escaping, and scrapes that do not
//! wait for ingestion.

use super::*;
use crate::store::StoredEvent;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn event(id: i64, kind: &str, job_id: &str, payload: Value) -> StoredEvent {
    StoredEvent {
        id,
        occurred_at: chrono::Utc::now(),
        kind: kind.parse().expect("an event kind"),
        job_id: Some(job_id.into()),
        payload,
        missing_sample: None,
    }
}

fn job(id: &str, user: &str, state: &str) -> Value {
    json!({
        "id": id, "user": user, "nodes": ["node-01", "node-02"], "node_count": 2, "state": state,
        "start_time": (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339(),
        "allocated_cpus": 8, "allocated_memory_mb": 1024, "gpu_count": 2, "gpu_vendor": "nvidia",
        "scheduler": {"partition": "gpu", "account": "physics", "time_limit_minutes": 60},
        "cluster_name": "c", "scheduler_instance": "s", "ingest_version": "v", "sample_count": 0
    })
}

/// `value` as the contract type `T` (the snapshot takes typed jobs, nodes and samples).
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid document")
}

fn sample_event(id: i64, job_id: &str, user: &str, node: &str, cpu_seconds: f64) -> StoredEvent {
    event(
        id,
        "job_sample",
        job_id,
        json!({
            "job_id": job_id,
            "job": {"id": job_id, "user": user, "state": "running", "nodes": ["node-01", "node-02"],
                    "scheduler": {"partition": "gpu"}},
            "sample": {
                "timestamp": chrono::Utc::now().to_rfc3339(), "cpu_usage": 50.0, "memory_usage_mb": 2,
                "node": node, "cpu_time_seconds": cpu_seconds, "memory_peak_bytes": 4096,
                "io_read_bytes": 10, "oom_kills": 0,
                "gpus": [
                    {"index": 0, "vendor": "nvidia", "utilization_percent": 90.0, "energy_joules": 1000.5,
                     "memory_used_bytes": 1024, "memory_total_bytes": 2048, "power_watts": 250.0,
                     "temperature_celsius": 60.0, "processes": []},
                    {"index": 1, "vendor": "nvidia", "utilization_percent": 0.0, "processes": []}
                ]
            },
            "correlation_id": "c"
        }),
    )
}

fn counts(running: i64) -> std::collections::BTreeMap<String, i64> {
    crate::domain::JobState::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .chain([("running".to_owned(), running)])
        .collect()
}

fn render(snapshot: &Snapshot, now: Instant) -> String {
    let mut out = String::new();
    snapshot.render(
        &mut out,
        true,
        Duration::from_secs(120),
        now,
        chrono::Utc::now(),
    );
    out
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn events_drive_job_series_and_counts() {
    let mut s = Snapshot::default();
    s.reset(&counts(0), &[], &[], 0);
    let now = Instant::now();
    s.apply_event(
        &event(
            1,
            "job_created",
            "7",
            json!({"job": job("7", "alice", "running")}),
        ),
        now,
    );
    s.apply_event(&sample_event(2, "7", "alice", "node-02", 12.5), now);
    let text = render(&s, now);
    assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(1.0));
    assert_eq!(
        value(&text, r#"hpc_job_state_total{state="pending"}"#),
        Some(0.0)
    );
    assert_eq!(value(&text, "hpc_job_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            r#"hpc_job_info{job_id="7",user="alice",account="physics",partition="gpu"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_cpu_seconds_total{job_id="7",node="node-02"}"#
        ),
        Some(12.5)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_cpu_usage_percent{job_id="7",user="alice",node="node-02"}"#
        ),
        Some(50.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_memory_usage_bytes{job_id="7",user="alice",node="node-02"}"#
        ),
        Some(2.0 * 1024.0 * 1024.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_gpu_device_utilization_percent{job_id="7",node="node-02",gpu_vendor="nvidia",gpu_id="1"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_gpu_device_energy_joules_total{job_id="7",node="node-02",gpu_vendor="nvidia",gpu_id="0"}"#
        ),
        Some(1000.5)
    );
    // Unmeasured figures are absent, never 0.
    assert!(!text.contains("hpc_job_gpu_device_power_watts{job_id=\"7\",node=\"node-02\",gpu_vendor=\"nvidia\",gpu_id=\"1\"}"));
    assert!(!text.contains("hpc_job_pids{"));
    assert_eq!(
        value(&text, r#"hpc_job_allocated_cpus{job_id="7"}"#),
        Some(8.0)
    );
    assert_eq!(
        value(&text, r#"hpc_job_allocated_memory_bytes{job_id="7"}"#),
        Some(1024.0 * 1024.0 * 1024.0)
    );
    assert_eq!(
        value(&text, r#"hpc_job_time_limit_seconds{job_id="7"}"#),
        Some(3600.0)
    );
    assert_eq!(
        value(&text, r#"hpc_user_running_jobs{user="alice"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"hpc_node_job_count{node="node-02"}"#),
        Some(1.0)
    );
    let runtime = value(
        &text,
        r#"hpc_job_runtime_seconds{job_id="7",user="alice",node="node-01"}"#,
    )
    .expect("runtime series");
    assert!((59.0..120.0).contains(&runtime), "{runtime}");
}

#[test]
fn a_finished_jobs_series_vanish_after_the_grace_period() {
    let mut s = Snapshot::default();
    s.reset(&counts(1), &[typed(job("9", "bob", "running"))], &[], 0);
    let t0 = Instant::now();
    s.apply_event(&sample_event(1, "9", "bob", "node-01", 3.0), t0);
    let mut finished = job("9", "bob", "failed");
    finished["runtime_seconds"] = json!(42.0);
    s.apply_event(
        &event(
            2,
            "job_finished",
            "9",
            json!({"job": finished, "previous_state": "running"}),
        ),
        t0,
    );
    // Within the grace period: the last values and the final runtime are still there.
    let during = render(&s, t0 + Duration::from_secs(119));
    assert_eq!(
        value(
            &during,
            r#"hpc_job_cpu_seconds_total{job_id="9",node="node-01"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &during,
            r#"hpc_job_runtime_seconds{job_id="9",user="bob",node="node-01"}"#
        ),
        Some(42.0)
    );
    assert_eq!(value(&during, r#"hpc_jobs{state="failed"}"#), Some(1.0));
    assert_eq!(value(&during, r#"hpc_jobs{state="running"}"#), Some(0.0));
    assert_eq!(
        value(&during, r#"hpc_jobs_finished_total{state="failed"}"#),
        Some(1.0)
    );
    // A finished job no longer counts as running anywhere.
    assert_eq!(
        value(&during, r#"hpc_node_job_count{node="node-01"}"#),
        Some(0.0)
    );
    // After it: every series of the job is gone, the counts stay.
    let after = render(&s, t0 + Duration::from_secs(121));
    assert!(!after.contains("job_id=\"9\""), "{after}");
    assert_eq!(value(&after, r#"hpc_jobs{state="failed"}"#), Some(1.0));
    s.expire(t0 + Duration::from_secs(121), Duration::from_secs(120));
    assert_eq!(s.tracked_jobs(), 0);
}

#[test]
fn label_values_are_escaped_in_the_exposition() {
    let mut s = Snapshot::default();
    s.reset(&counts(0), &[], &[], 0);
    let user = "ev\"il\\us\ner";
    s.apply_event(
        &event(
            1,
            "job_created",
            "x\"1",
            json!({"job": job("x\"1", user, "running")}),
        ),
        Instant::now(),
    );
    let text = render(&s, Instant::now());
    assert!(
        text.contains(r#"hpc_job_info{job_id="x\"1",user="ev\"il\\us\ner",account="physics",partition="gpu"} 1"#),
        "{text}"
    );
    // Every line is a comment or a single series line: the newline in the name did not split one.
    for line in text.lines() {
        assert!(
            line.starts_with('#') || line.starts_with("hpc_"),
            "broken line: {line:?}"
        );
    }
}

#[test]
fn deleted_and_pending_jobs_adjust_counts_only() {
    let mut s = Snapshot::default();
    s.reset(&counts(0), &[], &[], 0);
    let now = Instant::now();
    s.apply_event(
        &event(
            1,
            "job_created",
            "p",
            json!({"job": job("p", "u", "pending")}),
        ),
        now,
    );
    s.apply_event(
        &event(
            2,
            "job_created",
            "r",
            json!({"job": job("r", "u", "running")}),
        ),
        now,
    );
    s.apply_event(
        &event(
            3,
            "job_deleted",
            "r",
            json!({"job": job("r", "u", "running")}),
        ),
        now,
    );
    let text = render(&s, now);
    assert_eq!(value(&text, r#"hpc_jobs{state="pending"}"#), Some(1.0));
    assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(0.0));
    assert_eq!(value(&text, "hpc_job_total"), Some(2.0));
    assert!(
        !text.contains("job_id="),
        "pending and deleted jobs have no series"
    );
    // A payload of the wrong shape is skipped, not a panic.
    s.apply_event(
        &event(4, "job_sample", "r", json!({"sample": "nonsense"})),
        now,
    );
    s.apply_event(&event(5, "job_updated", "r", json!({"job": 17})), now);
}

#[test]
fn node_reports_become_node_series() {
    let mut s = Snapshot::default();
    let node = json!({
        "name": "node-07", "state": "mixed", "partitions": ["gpu"], "cpus": 64,
        "memory_total_bytes": 1000, "cpu_usage_percent": 12.5, "memory_used_bytes": 400,
        "load_1": 3.5, "load_5": 2.0, "load_15": 1.0, "running_jobs": 2,
        "gpus": [{"index": 0, "vendor": "amd", "utilization_percent": 80.0, "processes": []},
                 {"index": 1, "vendor": "amd", "utilization_percent": 40.0, "processes": []}],
        "last_report_at": "2026-01-01T00:00:00Z", "report_interval_seconds": 15.0,
        "stale": false, "updated_at": "2026-01-01T00:00:00Z"
    });
    s.reset(&counts(0), &[], &[typed(node)], 0);
    let text = render(&s, Instant::now());
    assert_eq!(
        value(&text, r#"hpc_node_total_cpus{node="node-07"}"#),
        Some(64.0)
    );
    assert_eq!(
        value(&text, r#"hpc_node_cpu_load{node="node-07"}"#),
        Some(3.5)
    );
    assert_eq!(
        value(&text, r#"hpc_node_gpu_usage_percent{node="node-07"}"#),
        Some(60.0)
    );
    assert_eq!(
        value(&text, r#"hpc_node_state{node="node-07",state="mixed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"hpc_node_state{node="node-07",state="idle"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_node_last_report_timestamp_seconds{node="node-07"}"#
        ),
        Some(1767225600.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_node_gpu_device_utilization_percent{node="node-07",gpu_vendor="amd",gpu_id="1"}"#
        ),
        Some(40.0)
    );
    // The node's own count comes from running jobs, not from the report's figure.
    assert_eq!(
        value(&text, r#"hpc_node_job_count{node="node-07"}"#),
        Some(0.0)
    );
}

#[test]
fn the_agent_feeds_samples_directly() {
    let metrics = Metrics::new(MetricsOptions {
        per_job: true,
        grace: Duration::from_millis(1),
    });
    let labels = JobLabels {
        job_id: "55".into(),
        user: "carol".into(),
        account: Some("chem".into()),
        partition: Some("cpu".into()),
        nodes: vec!["node-03".into()],
    };
    metrics.record_job_sample(
        &labels,
        &typed(
            json!({"timestamp": "2026-01-01T00:00:00Z", "cpu_usage": null, "memory_usage_mb": 1,
                     "node": "node-03", "cpu_time_seconds": 7.0, "pids": 4}),
        ),
    );
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            r#"hpc_job_cpu_seconds_total{job_id="55",node="node-03"}"#
        ),
        Some(7.0)
    );
    assert_eq!(
        value(&text, r#"hpc_job_pids{job_id="55",node="node-03"}"#),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_info{job_id="55",user="carol",account="chem",partition="cpu"}"#
        ),
        Some(1.0)
    );
    metrics.retain_running_jobs(["56"]);
    std::thread::sleep(Duration::from_millis(5));
    metrics.retain_running_jobs(["56"]);
    let text = metrics.render();
    assert!(!text.contains("job_id=\"55\""), "{text}");
}

#[test]
fn per_job_series_can_be_switched_off() {
    let metrics = Metrics::new(MetricsOptions {
        per_job: false,
        grace: Duration::from_secs(60),
    });
    metrics.update(|s| s.reset(&counts(1), &[typed(job("1", "dora", "running"))], &[], 0));
    let text = metrics.render();
    assert!(!text.contains("job_id="), "{text}");
    assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(1.0));
    assert_eq!(
        value(&text, r#"hpc_user_running_jobs{user="dora"}"#),
        Some(1.0)
    );
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    assert!(text.contains("jobscope_hook_events_total{event=\"job-started\",outcome=\"error\"} 0"));
}

/// A scrape takes the snapshot's read lock only; ingestion holds the write lock for one short
/// batch at a time. While a writer thread applies events as fast as it can, scrapes keep
/// completing, each with a consistent picture (the counts always add up).
#[test]
fn scrapes_are_not_blocked_by_ingestion() {
    let metrics = Metrics::default();
    metrics.update(|s| {
        s.reset(
            &counts(200),
            &(0..200)
                .map(|i| typed(job(&i.to_string(), "u", "running")))
                .collect::<Vec<_>>(),
            &[],
            0,
        )
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (metrics, stop, applied) = (metrics.clone(), stop.clone(), applied.clone());
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<StoredEvent> = (0..64)
                    .map(|_| {
                        id += 1;
                        sample_event(id, &(id % 200).to_string(), "u", "node-01", id as f64)
                    })
                    .collect();
                let now = Instant::now();
                metrics.update(|s| batch.iter().for_each(|e| s.apply_event(e, now)));
                applied.fetch_add(64, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    for _ in 0..20 {
        // Let the writer make progress before the next scrape, so scrapes and writes interleave.
        let before = applied.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while applied.load(std::sync::atomic::Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "the writer made no progress");
            std::thread::yield_now();
        }
        let text = metrics.render();
        assert_eq!(value(&text, r#"hpc_jobs{state="running"}"#), Some(200.0));
        assert_eq!(
            text.matches("\nhpc_job_info{").count(),
            200,
            "every running job in every scrape"
        );
    }
    // Every scrape finished while the writer was still running (it stops only now).
    assert!(!writer.is_finished());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn the_agent_feeds_a_whole_batch() {
    let metrics = Metrics::default();
    let batch: crate::collector::SampleBatch = serde_json::from_value(json!({
        "node": "node-09",
        "collected_at": chrono::Utc::now(),
        "interval_seconds": 10.0,
        "jobs": [
            {"job_id": "77", "cpu_usage_percent": 50.0, "cpu_usage_usec": 3_000_000,
             "memory_peak_bytes": 100, "io_write_bytes": 5,
             "gpus": [{"index": 0, "uuid": null, "pci_bus_id": null, "vendor": "nvidia",
                       "utilization_percent": 30.0, "memory_used_bytes": null, "memory_total_bytes": null,
                       "power_watts": 100.0, "energy_joules": 5.0, "temperature_celsius": null,
                       "processes": []}]},
            {"job_id": "", "cpu_usage_percent": 50.0}
        ],
        "node_stats": {"cpu_usage_percent": 10.0, "memory_total_bytes": 1000, "memory_used_bytes": 10,
                       "load_1": 1.5, "cpu_count": 8}
    }))
    .expect("a valid batch");
    let labels = [(
        "77".to_owned(),
        JobLabels {
            job_id: "77".into(),
            user: "erin".into(),
            account: None,
            partition: Some("gpu".into()),
            nodes: vec!["node-09".into()],
        },
    )]
    .into_iter()
    .collect();
    metrics.record_agent_batch(&batch, &labels);
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            r#"hpc_job_cpu_seconds_total{job_id="77",node="node-09"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_info{job_id="77",user="erin",account="",partition="gpu"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"hpc_job_gpu_device_power_watts{job_id="77",node="node-09",gpu_vendor="nvidia",gpu_id="0"}"#
        ),
        Some(100.0)
    );
    assert_eq!(
        value(&text, r#"hpc_node_cpu_load{node="node-09"}"#),
        Some(1.5)
    );
    assert_eq!(
        value(&text, r#"hpc_node_report_interval_seconds{node="node-09"}"#),
        Some(10.0)
    );
    assert_eq!(
        value(&text, r#"jobscope_metrics_tracked_jobs"#),
        Some(1.0),
        "the invalid item is skipped"
    );
}
