//! The slurmrestd reconciler and the node and partition feeds against a real store (both
//! backends), fed from fixtures: real captures of Debian's slurmrestd 22.05 and hand-written
//! v0.0.41 responses.

mod common;

use jobscope::scheduler::slurm::jobs::{parse_jobs, SlurmJob};
use jobscope::scheduler::slurm::nodes::parse_nodes;
use jobscope::scheduler::slurm::partitions::{count_jobs, parse_partitions};
use jobscope::scheduler::slurm::reconcile::{PassReport, Reconciler};
use serde_json::{json, Value};
use std::time::Duration;

/// A slurmrestd response from `tests/fixtures/slurmrestd`.
fn body(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/slurmrestd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture(name: &str) -> Vec<SlurmJob> {
    parse_jobs(&body(name))
}

fn ago(minutes: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
}

async fn state_of(app: &common::TestApp, id: &str) -> Value {
    let job = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
    json!([
        job["state"],
        job["exit_code"],
        job["signal"],
        job["scheduler"]["raw_state"]
    ])
}

/// Who made each change in the job's audit trail, oldest first.
async fn changed_by(app: &common::TestApp, id: &str) -> Vec<String> {
    app.audit(id)
        .await
        .iter()
        .map(|a| a["changed_by"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(reconciler_confirms_creates_and_finalizes, |app| {
    // v0.0.41 fixture: 1 COMPLETED, 2 FAILED 3:0, 3 CANCELLED 0:15, 4 RUNNING, 5 TIMEOUT 0:15,
    // 6 OUT_OF_MEMORY 0:9, 7 cancelled while pending.
    let slurm = fixture("jobs-v0.0.41.handwritten.json");
    let prolog = |id: &str, at: String| json!({"job_id": id, "user": "root", "node_list": ["vm"], "timestamp": at});
    // 2: prolog only (its epilog was lost). 3 and 5: the epilog guessed success (0:0).
    // 99: running here, unknown to Slurm for long; 98: just started, not listed yet.
    for id in ["2", "3", "5", "99"] {
        app.post_event("job-started", &prolog(id, ago(10)))
            .await
            .expect(200);
    }
    app.post_event("job-started", &prolog("98", ago(0)))
        .await
        .expect(200);
    for id in ["3", "5"] {
        app.post_event(
            "job-finished",
            &json!({"job_id": id, "exit_code": 0, "signal": 0}),
        )
        .await
        .expect(200);
        assert_eq!(
            state_of(app, id).await[0],
            "completed",
            "the epilog's guess"
        );
    }

    let mut reconciler = Reconciler::default();
    let report = reconciler
        .pass(&slurm, &app.store, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        report,
        PassReport {
            confirmed: 3,
            created: 3,
            vanished: 1
        }
    );
    assert_eq!(
        state_of(app, "1").await,
        json!(["completed", 0, 0, "COMPLETED"]),
        "created finished"
    );
    assert_eq!(state_of(app, "2").await, json!(["failed", 3, 0, "FAILED"]));
    assert_eq!(
        state_of(app, "3").await,
        json!(["cancelled", 0, 15, "CANCELLED"])
    );
    assert_eq!(
        state_of(app, "4").await,
        json!(["running", null, null, "RUNNING"]),
        "created running"
    );
    assert_eq!(
        state_of(app, "5").await,
        json!(["cancelled", 0, 15, "TIMEOUT"])
    );
    assert_eq!(
        state_of(app, "6").await,
        json!(["failed", 0, 9, "OUT_OF_MEMORY"]),
        "created finished"
    );
    app.get("/v1/jobs/7").await.expect(404);
    assert_eq!(
        state_of(app, "99").await,
        json!(["failed", null, null, "VANISHED"])
    );
    assert_eq!(
        state_of(app, "98").await[0],
        "running",
        "within the grace period"
    );

    // Every change by the reconciler is in the audit trail, after the hooks' rows: Slurm's final
    // word, then the CPUs the prolog did not send.
    let trail = changed_by(app, "3").await;
    assert_eq!(
        trail,
        [
            "slurm-prolog",
            "slurm-epilog",
            "slurm-reconciler",
            "slurm-reconciler"
        ]
    );
    assert_eq!(app.get("/v1/jobs/3").await.expect(200)["allocated_cpus"], 1);
    let four = app.get("/v1/jobs/4").await.expect(200);
    assert_eq!(four["scheduler"]["extra"]["job_name"], "run");
    assert_eq!(four["cluster_name"], "jobscope-dev");
    assert_eq!(app.audit("4").await[0]["changed_by"], "slurm-reconciler");

    // A second pass changes nothing; a late epilog cannot undo Slurm's word.
    let events = app.event_count().await;
    let again = reconciler
        .pass(&slurm, &app.store, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again, PassReport::default());
    assert_eq!(app.event_count().await, events);
    app.post_event(
        "job-finished",
        &json!({"job_id": "5", "exit_code": 0, "signal": 0}),
    )
    .await
    .expect(200);
    assert_eq!(state_of(app, "5").await[0], "cancelled");
});

on_both_backends!(reconciler_reads_real_22_05_responses, |app| {
    // Captured from Debian's slurmrestd: 3 was cancelled while running, 5 timed out.
    for v in ["v0.0.36", "v0.0.37", "v0.0.38"] {
        let slurm = fixture(&format!("jobs-{v}.json"));
        let mut reconciler = Reconciler::default();
        reconciler
            .pass(&slurm, &app.store, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            state_of(app, "3").await,
            json!(["cancelled", 0, 15, "CANCELLED"]),
            "{v}"
        );
        assert_eq!(
            state_of(app, "5").await,
            json!(["cancelled", 0, 15, "TIMEOUT"]),
            "{v}"
        );
        assert_eq!(
            state_of(app, "2").await,
            json!(["failed", 3, 0, "FAILED"]),
            "{v}"
        );
        let gpu = app.get("/v1/jobs/4").await.expect(200);
        assert_eq!(gpu["state"], "running");
        assert_eq!(gpu["scheduler"]["partition"], "debug");
    }
});

on_both_backends!(reconciler_fills_in_the_memory_no_hook_knows, |app| {
    // The 22.05 v0.0.38 capture's running job 4 and finished job 1, given what
    // `sbatch -c 2 --mem=1G` shows with memory consumable (CR_Core_Memory).
    let mut body = body("jobs-v0.0.38.json");
    for job in body["jobs"].as_array_mut().unwrap() {
        job["memory_per_node"] = json!(1024);
        job["tres_alloc_str"] = json!("cpu=2,mem=1G,node=1,billing=2");
    }
    let slurm = parse_jobs(&body);
    let started = ago(1);
    for id in ["1", "4"] {
        app.post_event(
            "job-started",
            &json!({"job_id": id, "user": "root", "node_list": ["vm"], "cpu_allocation": 2, "timestamp": started}),
        )
        .await
        .expect(200);
    }
    app.post_event(
        "job-finished",
        &json!({"job_id": "1", "exit_code": 0, "signal": 0}),
    )
    .await
    .expect(200);
    let figures = |job: &Value| {
        json!([
            job["requested_memory_mb"],
            job["allocated_memory_mb"],
            job["allocated_cpus"]
        ])
    };
    let before = app.get("/v1/jobs/4").await.expect(200);
    assert_eq!(
        figures(&before),
        json!([null, null, 2]),
        "hooks know no memory"
    );

    let mut reconciler = Reconciler::default();
    reconciler
        .pass(&slurm, &app.store, Duration::from_secs(60))
        .await
        .unwrap();
    for id in ["1", "4"] {
        let job = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
        assert_eq!(figures(&job), json!([1024, 1024, 2]), "job {id}");
        // The hooks' times stay: they are finer than Slurm's whole seconds.
        assert_eq!(job["start_time"], before["start_time"], "job {id}");
        let report = app.get(&format!("/v1/jobs/{id}/report")).await.expect(200);
        assert_eq!(report["memory"]["allocated_bytes"], 1u64 << 30, "job {id}");
    }
    let trail = changed_by(app, "4").await;
    assert_eq!(trail, ["slurm-prolog", "slurm-reconciler"]);

    // Filled once: the next pass finds nothing missing and writes nothing.
    let events = app.event_count().await;
    reconciler
        .pass(&slurm, &app.store, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(app.event_count().await, events);
});

fn node_fixture(name: &str) -> Vec<jobscope::store::SchedulerNode> {
    parse_nodes(&body(name))
}

/// The events after `after`; none of them may be about a job.
async fn other_events(app: &common::TestApp, after: i64) -> Vec<jobscope::store::StoredEvent> {
    let events = app.store.events_after(after, 1000).await.unwrap();
    assert!(events.iter().all(|e| e.job_id.is_none()), "{events:?}");
    events
}

async fn node_events(app: &common::TestApp, after: i64) -> Vec<Value> {
    other_events(app, after)
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(e.kind, "node_updated");
            e.payload["node"].clone()
        })
        .collect()
}

on_both_backends!(slurm_nodes_are_stored_and_changes_are_events, |app| {
    // v0.0.41 fixture: n01 idle, n02 mixed+DRAIN, n03 down+NOT_RESPONDING, n04 idle+COMPLETING,
    // n05 future.
    let nodes = node_fixture("nodes-v0.0.41.handwritten.json");
    let before = app.event_count().await;
    assert_eq!(
        app.store.update_nodes_from_scheduler(&nodes).await.unwrap(),
        5
    );
    let events = node_events(app, before).await;
    let names: Vec<&str> = events.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n01", "n02", "n03", "n04", "n05"]);
    assert_eq!(events[1]["state"], "drained");

    let all = app.get("/v1/nodes").await.expect(200);
    let summary: Vec<Value> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            json!([
                n["name"],
                n["state"],
                n["state_reason"],
                n["partitions"],
                n["load_1"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            json!(["n01", "idle", null, ["batch", "debug"], 0.12]),
            json!(["n02", "drained", "bad DIMM", ["batch"], 31.5]),
            json!(["n03", "down", "Not responding", ["batch"], null]),
            json!(["n04", "allocated", null, ["gpu"], 1.01]),
            json!(["n05", "unknown", null, [], null]),
        ]
    );
    let n01 = app.get("/v1/nodes/n01").await.expect(200);
    assert_eq!(n01["cpus"], 64);
    assert_eq!(n01["memory_total_bytes"], 257000i64 * 1024 * 1024);

    // The same report again changes nothing and logs nothing.
    let before = app.event_count().await;
    assert_eq!(
        app.store.update_nodes_from_scheduler(&nodes).await.unwrap(),
        0
    );
    assert_eq!(app.event_count().await, before);

    // n02 is resumed: one event, for n02 only, and the reason is gone.
    let mut resumed = nodes.clone();
    resumed[1].state = jobscope::domain::NodeState::Mixed;
    resumed[1].state_reason = None;
    assert_eq!(
        app.store
            .update_nodes_from_scheduler(&resumed)
            .await
            .unwrap(),
        1
    );
    let events = node_events(app, before).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        json!([
            events[0]["name"],
            events[0]["state"],
            events[0].get("state_reason")
        ]),
        json!(["n02", "mixed", null])
    );

    // n05 is taken out of slurm.conf: Slurm no longer speaks for it. One event; with no
    // agent either, it is `unknown`, in no partition.
    let before = app.event_count().await;
    let fewer: Vec<_> = resumed
        .iter()
        .filter(|n| n.name != "n05")
        .cloned()
        .collect();
    assert_eq!(
        app.store.update_nodes_from_scheduler(&fewer).await.unwrap(),
        1
    );
    let events = node_events(app, before).await;
    assert_eq!(
        json!([
            events.len(),
            events[0]["name"],
            events[0]["state"],
            events[0]["partitions"]
        ]),
        json!([1, "n05", "unknown", []])
    );
    let n05 = app.get("/v1/nodes/n05").await.expect(200);
    assert_eq!(
        json!([n05["state"], n05.get("state_reason")]),
        json!(["unknown", null])
    );
    // Nothing more to release; an empty list (a restricted view) releases nothing.
    assert_eq!(
        app.store.update_nodes_from_scheduler(&fewer).await.unwrap(),
        0
    );
    assert_eq!(app.store.update_nodes_from_scheduler(&[]).await.unwrap(), 0);
    assert_eq!(app.get("/v1/nodes/n01").await.expect(200)["state"], "idle");
});

on_both_backends!(a_live_agents_figures_win_over_slurms, |app| {
    // The agent on n01 reports 60 CPUs, 64 GiB and load 3.5 just now.
    app.request(
        "POST",
        "/v1/samples",
        Some(&json!({
            "node": "n01", "collected_at": chrono::Utc::now().to_rfc3339(), "interval_seconds": 15,
            "jobs": [],
            "node_stats": {"cpu_usage_percent": 42.0, "memory_total_bytes": 1u64 << 36,
                           "memory_used_bytes": 1u64 << 34, "load_1": 3.5, "load_5": 2.0,
                           "load_15": 1.0, "cpu_count": 60}
        })),
        &[],
    )
    .await
    .expect(200);
    let nodes = node_fixture("nodes-v0.0.41.handwritten.json");
    app.store.update_nodes_from_scheduler(&nodes).await.unwrap();
    let n01 = app.get("/v1/nodes/n01").await.expect(200);
    assert_eq!(
        json!([
            n01["state"],
            n01["partitions"],
            n01["cpus"],
            n01["memory_total_bytes"],
            n01["load_1"],
            n01["memory_used_bytes"],
            n01["stale"]
        ]),
        json!([
            "idle",
            ["batch", "debug"],
            60,
            1u64 << 36,
            3.5,
            1u64 << 34,
            false
        ]),
        "Slurm's state and partitions, the agent's figures"
    );
    // Slurm's word on the state sticks after the agent's next report.
    let mut drained = nodes.clone();
    drained[0].state = jobscope::domain::NodeState::Drained;
    drained[0].state_reason = Some("maintenance".into());
    app.store
        .update_nodes_from_scheduler(&drained)
        .await
        .unwrap();
    app.request(
        "POST",
        "/v1/samples",
        Some(&json!({
            "node": "n01", "collected_at": chrono::Utc::now().to_rfc3339(), "interval_seconds": 15,
            "jobs": [], "node_stats": {"load_1": 4.0, "cpu_count": 60}
        })),
        &[],
    )
    .await
    .expect(200);
    let n01 = app.get("/v1/nodes/n01").await.expect(200);
    assert_eq!(
        json!([n01["state"], n01["state_reason"], n01["load_1"]]),
        json!(["drained", "maintenance", 4.0])
    );
});

on_both_backends!(real_22_05_nodes_and_v0_0_36_keeps_partitions, |app| {
    app.store
        .update_nodes_from_scheduler(&node_fixture("nodes-v0.0.38.json"))
        .await
        .unwrap();
    let vm = app.get("/v1/nodes/vm").await.expect(200);
    assert_eq!(
        json!([
            vm["state"],
            vm["state_reason"],
            vm["partitions"],
            vm["cpus"],
            vm["load_1"]
        ]),
        json!(["drained", "disk check (jobscope test)", ["debug"], 2, 8.84])
    );
    // v0.0.36 lists no partitions: the stored ones stay.
    app.store
        .update_nodes_from_scheduler(&node_fixture("nodes-v0.0.36.json"))
        .await
        .unwrap();
    let vm = app.get("/v1/nodes/vm").await.expect(200);
    assert_eq!(
        json!([vm["state"], vm["partitions"]]),
        json!(["allocated", ["debug"]])
    );
});

fn partition_fixture(name: &str) -> Vec<jobscope::domain::Partition> {
    parse_partitions(&body(name))
}

/// (kind, partition name, state, running, pending) of every event after `after`.
async fn partition_events(app: &common::TestApp, after: i64) -> Vec<Value> {
    other_events(app, after)
        .await
        .into_iter()
        .map(|e| {
            let p = &e.payload["partition"];
            json!([
                e.kind,
                p["name"],
                p["state"],
                p["jobs_running"],
                p["jobs_pending"]
            ])
        })
        .collect()
}

on_both_backends!(slurm_partitions_are_kept_and_changes_are_events, |app| {
    assert_eq!(
        app.get("/v1/partitions").await.expect(200),
        json!({"partitions": [], "total": 0})
    );
    // v0.0.41 fixture: batch (default, up), gpu (down), old (inactive); jobs in batch and gpu.
    let mut parts = partition_fixture("partitions-v0.0.41.handwritten.json");
    // The fixture's jobs all ran in `debug`: its running job moves to batch, and a copy of it
    // waits for batch or gpu.
    let mut slurm = fixture("jobs-v0.0.41.handwritten.json");
    let running = slurm.iter_mut().find(|j| j.is_running()).unwrap();
    running.partition = Some("batch".into());
    let mut waiting = running.clone();
    waiting.state = "PENDING".into();
    waiting.partition = Some("batch,gpu".into());
    slurm.push(waiting);
    count_jobs(&mut parts, &slurm);
    let before = app.event_count().await;
    assert_eq!(app.store.sync_partitions(&parts).await.unwrap(), (3, 0));
    let events = partition_events(app, before).await;
    let names: Vec<&Value> = events.iter().map(|e| &e[1]).collect();
    assert_eq!(names, [&json!("batch"), &json!("gpu"), &json!("old")]);
    assert!(
        events.iter().all(|e| e[0] == "partition_updated"),
        "{events:?}"
    );

    let all = app.get("/v1/partitions").await.expect(200);
    assert_eq!(all["total"], 3);
    let batch = &all["partitions"][0];
    assert_eq!(
        json!([
            batch["name"],
            batch["state"],
            batch["is_default"],
            batch["nodes"],
            batch["total_cpus"],
            batch["limits"]
        ]),
        json!(["batch", "up", true, ["n01", "n02", "n03"], 192,
               {"max_time_minutes": 2880, "default_time_minutes": 60, "max_nodes_per_job": null}])
    );
    assert_eq!(
        json!([batch["jobs_running"], batch["jobs_pending"]]),
        json!([1, 1])
    );
    assert_eq!(all["partitions"][1]["jobs_pending"], 1, "queued for both");
    // Filters: any case, and a bad state is a 400 in the JSON error format.
    let up = app.get("/v1/partitions?state=UP").await.expect(200);
    assert_eq!(up["total"], 1);
    assert_eq!(up["partitions"][0]["name"], "batch");
    let bad = app.get("/v1/partitions?state=sleepy").await.expect(400);
    assert_eq!(bad["error"], "validation_error", "{bad}");
    let gpu = app.get("/v1/partitions/gpu").await.expect(200);
    assert_eq!(
        json!([gpu["state"], gpu["limits"]["max_nodes_per_job"]]),
        json!(["down", 1])
    );
    let missing = app.get("/v1/partitions/nope").await.expect(404);
    assert_eq!(missing["error"], "not_found");

    // The same list again changes nothing and logs nothing.
    let before = app.event_count().await;
    assert_eq!(app.store.sync_partitions(&parts).await.unwrap(), (0, 0));
    assert_eq!(app.event_count().await, before);

    // gpu comes up with two jobs waiting; old is removed from slurm.conf.
    let mut next: Vec<_> = parts.iter().filter(|p| p.name != "old").cloned().collect();
    next[1].state = jobscope::domain::PartitionState::Up;
    next[1].jobs_pending = 2;
    assert_eq!(app.store.sync_partitions(&next).await.unwrap(), (1, 1));
    assert_eq!(
        partition_events(app, before).await,
        vec![
            json!(["partition_updated", "gpu", "up", 0, 2]),
            json!(["partition_deleted", "old", "inactive", 0, 0]),
        ]
    );
    app.get("/v1/partitions/old").await.expect(404);
    // An empty list (a restricted view, most likely) deletes nothing.
    assert_eq!(app.store.sync_partitions(&[]).await.unwrap(), (0, 0));
    assert_eq!(app.get("/v1/partitions").await.expect(200)["total"], 2);

    // Real 22.05 responses: drained with limits, then up again.
    let before = app.event_count().await;
    let drained = partition_fixture("partitions-v0.0.38.drain.json");
    assert_eq!(app.store.sync_partitions(&drained).await.unwrap(), (1, 2));
    let debug = app.get("/v1/partitions/debug").await.expect(200);
    assert_eq!(
        json!([debug["state"], debug["nodes"], debug["limits"]]),
        json!(["drain", ["vm"], {"max_time_minutes": 2880, "default_time_minutes": 30, "max_nodes_per_job": 4}])
    );
    let up = partition_fixture("partitions-v0.0.38.json");
    assert_eq!(app.store.sync_partitions(&up).await.unwrap(), (1, 0));
    assert_eq!(partition_events(app, before).await.len(), 4);
});

/// `--scheduler slurm` with slurmrestd unreachable: the service is degraded, not down.
#[tokio::test]
async fn health_is_degraded_while_slurmrestd_is_unreachable() {
    jobscope::install_crypto_provider();
    // A port that was free a moment ago: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let db = common::TestDb::new(common::Backend::Sqlite).await;
    let mut config = common::serve_config(&db.url);
    config.scheduler = jobscope::config::SchedulerKind::Slurm;
    config.slurm = Some(jobscope::scheduler::slurm::SlurmConfig {
        url: url.clone(),
        user: None,
        token_file: None,
        token: None,
        version: None,
        interval: Duration::from_secs(1),
    });
    let server = common::TestServer::start_with(config, Some(db)).await;
    let health = common::poll_until("the connection error", Duration::from_secs(20), || async {
        let resp = reqwest::get(format!("{}/v1/health", server.base))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "degraded", "{body}");
        // First "not connected yet", then the connection error itself.
        if body["reason"].as_str().unwrap().contains("cannot reach") {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert!(
        health["reason"].as_str().unwrap().contains(&url),
        "{health}"
    );
    server.shutdown().await;
}
