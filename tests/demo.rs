//! The living demo (`serve --demo`, here at `--demo-speed 25`): nodes that report, jobs that
//! queue, run, get sampled and end in varied ways, all visible through the API and `/metrics`,
//! and a store that stays bounded while it runs.

mod common;

use common::{http, poll_until, Backend, TestDb, TestServer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const SPEED: f64 = 25.0;

async fn get(server: &TestServer, path: &str) -> Value {
    let response = http()
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .expect("request sent");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON body")
}

async fn text(server: &TestServer, path: &str) -> String {
    http()
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .unwrap()
}

/// What the demo showed while it was watched.
#[derive(Default)]
struct Seen {
    /// Final or current state of every job the living demo created (ids without `demo-`).
    states: BTreeMap<String, String>,
    raw_finals: BTreeSet<String>,
    max_total: i64,
    arrays: bool,
    multi_node: Option<String>,
}

async fn run(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = jobscope::config::ServeConfig {
        demo: true,
        scheduler: jobscope::config::SchedulerKind::Mock,
        demo_speed: SPEED,
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;

    // Nodes: fifty, as agents and the scheduler report them, one drained and one down.
    let nodes = poll_until("50 reporting nodes", Duration::from_secs(60), || async {
        let nodes = get(&server, "/v1/nodes").await;
        let list = nodes["nodes"].as_array().cloned().unwrap_or_default();
        let reported = list
            .iter()
            .filter(|n| n["last_report_at"].is_string())
            .count();
        if list.len() == 50 && reported >= 49 {
            Ok(list)
        } else {
            Err(nodes.to_string())
        }
    })
    .await;
    let state_of = |s: &str| nodes.iter().filter(|n| n["state"] == s).count();
    assert_eq!(state_of("drained"), 1, "{nodes:?}");
    assert_eq!(state_of("down"), 1, "{nodes:?}");
    assert!(state_of("idle") + state_of("mixed") + state_of("allocated") == 48);
    let busy = nodes
        .iter()
        .filter(|n| n["running_jobs"].as_i64().unwrap_or(0) > 0)
        .count();
    assert!(busy > 5, "jobs run on only {busy} nodes");
    assert!(nodes
        .iter()
        .any(|n| n["gpus"].as_array().is_some_and(|g| g.len() == 4)));

    // Jobs: watched until the mix shows (varied ends, array tasks, a multi-node job).
    let mut seen = Seen::default();
    // Generous: the whole suite may be loading the machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let page = get(&server, "/v1/jobs?limit=1000").await;
        let total = page["total"].as_i64().unwrap();
        seen.max_total = seen.max_total.max(total);
        for job in page["jobs"].as_array().unwrap() {
            let id = job["id"].as_str().unwrap().to_string();
            assert_eq!(job["scheduler"]["type"], "mock", "{job}");
            if id.starts_with("demo-") {
                continue;
            }
            seen.arrays |= id.contains('_');
            if job["nodes"].as_array().unwrap().len() > 1 && job["state"] == "completed" {
                seen.multi_node = Some(id.clone());
            }
            if let Some(raw) = job["scheduler"]["raw_state"].as_str() {
                if job["end_time"].is_string() {
                    seen.raw_finals.insert(raw.to_string());
                }
            }
            seen.states
                .insert(id, job["state"].as_str().unwrap().to_string());
        }
        let finals: BTreeSet<&str> = [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
        ]
        .into_iter()
        .filter(|r| seen.raw_finals.contains(*r))
        .collect();
        let states: BTreeSet<&String> = seen.states.values().collect();
        if finals.len() >= 3 && states.len() >= 4 && seen.arrays && seen.multi_node.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's mix did not show: finals {finals:?}, states {states:?}, arrays {}, multi-node {:?}",
            seen.arrays,
            seen.multi_node
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.max_total <= jobscope::scheduler::demo::JOB_BOUND as i64 + 10,
        "the demo grew to {} jobs",
        seen.max_total
    );
    let seeded = get(&server, "/v1/jobs?limit=1000").await["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["id"].as_str().unwrap().starts_with("demo-"))
        .count();
    assert!(seeded < 100, "the oldest finished jobs were not pruned");

    // A finished multi-node job has samples from each of its nodes, with agent figures.
    let id = seen.multi_node.unwrap();
    let job = get(&server, &format!("/v1/jobs/{id}")).await;
    let samples = get(&server, &format!("/v1/jobs/{id}/metrics?limit=1000")).await;
    let samples = samples["samples"].as_array().cloned().unwrap_or_default();
    let nodes: BTreeSet<&str> = samples.iter().filter_map(|s| s["node"].as_str()).collect();
    assert_eq!(nodes.len(), job["nodes"].as_array().unwrap().len(), "{job}");
    assert!(samples.iter().all(|s| s["cpu_time_seconds"].is_number()));
    assert!(job["max_memory_usage_mb"].as_i64().unwrap() > 0, "{job}");
    let audit = get(&server, &format!("/v1/jobs/{id}/audit")).await;
    assert!(audit.to_string().contains("demo"), "{audit}");

    // Partitions with queues, and node series for Prometheus.
    let partitions = get(&server, "/v1/partitions").await;
    assert_eq!(partitions["partitions"].as_array().unwrap().len(), 5);
    let metrics = text(&server, "/metrics").await;
    assert!(
        metrics.contains("hpc_node_cpu_usage_percent{"),
        "no node series"
    );

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_lives_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_lives_on_postgres() {
    if common::skip_postgres() {
        return;
    }
    run(Backend::Postgres).await;
}
