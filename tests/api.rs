//! The API end to end through the real router, on SQLite and on PostgreSQL: every test runs on
//! both (see `on_both_backends!`).

mod common;

use serde_json::{json, Value};

fn started(id: &str) -> Value {
    json!({"job_id": id, "user": "alice", "node_list": ["node-1", "node-2"], "cpu_allocation": 8,
           "memory_allocation_mb": 16000, "gpu_allocation": 2, "gpu_vendor": "nvidia",
           "gpu_devices": ["0", "1"], "partition": "gpu", "account": "physics",
           "cgroup_path": "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_4242"})
}

on_both_backends!(health_reports_the_database, |app| {
    let body = app.get("/v1/health").await.expect(200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());
});

on_both_backends!(unknown_routes_and_methods_are_json_errors, |app| {
    app.get("/v1/nope")
        .await
        .expect_error(404, "not_found", "No such endpoint");
    app.get("/")
        .await
        .expect_error(404, "not_found", "No such endpoint");
    app.request("DELETE", "/v1/health", None, &[])
        .await
        .expect_error(405, "method_not_allowed", "Method not allowed");
    app.request("PUT", "/v1/jobs", None, &[])
        .await
        .expect_error(405, "method_not_allowed", "Method not allowed");
    app.request(
        "POST",
        "/v1/events/job-started/extra",
        Some(&json!({})),
        &[],
    )
    .await
    .expect(404);
});

on_both_backends!(job_started_creates_the_job_once, |app| {
    let reply = app.post_event("job-started", &started("4242")).await;
    let body = reply.expect(200);
    assert_eq!(
        body,
        json!({"status": "created", "job_id": "4242", "message": "Job created"})
    );
    let correlation = reply.header("x-correlation-id").unwrap().to_string();

    let job = app.get("/v1/jobs/4242").await.expect(200);
    assert_eq!(job["state"], "running");
    assert_eq!(job["user"], "alice");
    assert_eq!(job["nodes"], json!(["node-1", "node-2"]));
    assert_eq!(job["node_count"], 2);
    assert_eq!(job["requested_cpus"], 8);
    assert_eq!(job["allocated_cpus"], 8);
    assert_eq!(job["allocated_memory_mb"], 16000);
    assert_eq!(job["allocated_gpus"], 2);
    assert_eq!(job["gpu_vendor"], "nvidia");
    assert_eq!(job["gpu_devices"], json!(["0", "1"]));
    assert_eq!(job["gpu_count"], 2);
    assert_eq!(
        job["cgroup_path"],
        "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_4242"
    );
    assert_eq!(job["scheduler_instance"], "slurm");
    assert_eq!(job["ingest_version"], "prolog-v1");
    assert_eq!(job["sample_count"], 0);
    assert_eq!(
        job["scheduler"],
        json!({"type": "slurm", "external_job_id": "4242", "partition": "gpu", "account": "physics"})
    );
    assert!(job.get("end_time").is_none());

    // Slurm runs the prolog on every node: repeats are skipped and write nothing.
    let events_before = app.event_count().await;
    for _ in 0..3 {
        let again = app
            .post_event("job-started", &started("4242"))
            .await
            .expect(200);
        assert_eq!(again["status"], "skipped");
    }
    assert_eq!(app.event_count().await, events_before);
    let audit = app.audit("4242").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["change_type"], "create");
    assert_eq!(audit[0]["changed_by"], "slurm-prolog");
    assert_eq!(audit[0]["source"], "lifecycle-event");
    assert_eq!(audit[0]["correlation_id"], correlation.as_str());
    assert_eq!(audit[0]["job_snapshot"]["state"], "running");
});

on_both_backends!(job_started_validates_its_input, |app| {
    let cases = [
        (
            json!({"user": "a", "node_list": ["n"]}),
            "job_id is required",
        ),
        (
            json!({"job_id": "  ", "user": "a", "node_list": ["n"]}),
            "job_id is required",
        ),
        (
            json!({"job_id": "1", "node_list": ["n"]}),
            "user is required",
        ),
        (json!({"job_id": "1", "user": "a"}), "node_list is required"),
        (
            json!({"job_id": "1", "user": "a", "node_list": []}),
            "node_list is required",
        ),
        (
            json!({"job_id": "1", "user": "a", "node_list": ["n"], "cpu_allocation": -1}),
            "cpu_allocation must be non-negative",
        ),
        (
            json!({"job_id": "1", "user": "a", "node_list": ["n"], "gpu_vendor": "intel"}),
            "Invalid gpu_vendor (expected none, nvidia, amd or mixed)",
        ),
        (
            json!({"job_id": "1", "user": "a", "node_list": ["n"], "cgroup_path": "relative/path"}),
            "cgroup_path must be an absolute path",
        ),
        (
            json!({"job_id": "x".repeat(256), "user": "a", "node_list": ["n"]}),
            "job_id must be at most 255 characters",
        ),
        (
            json!({"job_id": "1", "user": "a", "node_list": ["y".repeat(256)]}),
            "node_list must be at most 255 characters",
        ),
    ];
    for (body, message) in cases {
        app.post_event("job-started", &body)
            .await
            .expect_error(400, "validation_error", message);
    }
    let wrong_type = json!({"job_id": "1", "user": "a", "node_list": "n1"});
    app.post_event("job-started", &wrong_type)
        .await
        .expect_error(400, "invalid_request", "Invalid JSON body");
    app.raw("POST", "/v1/events/job-started", b"{not json", &[])
        .await
        .expect_error(400, "invalid_request", "Invalid JSON body");
    assert_eq!(
        app.event_count().await,
        0,
        "nothing may be written for rejected input"
    );
});

on_both_backends!(job_finished_maps_slurm_states_and_is_idempotent, |app| {
    for (id, finished, want_state) in [
        ("10", json!({"exit_code": 0, "signal": 0}), "completed"),
        ("11", json!({"exit_code": 3, "signal": 0}), "failed"),
        ("12", json!({"exit_code": 0, "signal": 9}), "cancelled"),
        (
            "13",
            json!({"slurm_state": "TIMEOUT", "exit_code": 0, "signal": 0}),
            "cancelled",
        ),
        (
            "14",
            json!({"slurm_state": "OUT_OF_MEMORY", "exit_code": 0}),
            "failed",
        ),
        (
            "15",
            json!({"slurm_state": "CANCELLED by 1000"}),
            "cancelled",
        ),
        (
            "16",
            json!({"final_state": "completed", "exit_code": 1}),
            "completed",
        ),
    ] {
        app.start_job(id, "bob", &["node-3"]).await;
        let mut body = finished.clone();
        body["job_id"] = json!(id);
        let reply = app.post_event("job-finished", &body).await.expect(200);
        assert_eq!(reply["status"], "updated", "{id}: {reply}");
        let job = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
        assert_eq!(job["state"], want_state, "{id}: {job}");
        assert!(job["end_time"].is_string(), "{id}");
        assert!(job["runtime_seconds"].as_f64().unwrap() >= 0.0);
        if let Some(code) = finished.get("exit_code") {
            assert_eq!(&job["exit_code"], code, "{id}");
            assert_eq!(&job["scheduler"]["exit_code"], code, "{id}");
        }
        if let Some(sig) = finished.get("signal") {
            assert_eq!(&job["signal"], sig, "{id}");
        }
    }
    let timeout = app.get("/v1/jobs/13").await.expect(200);
    assert_eq!(timeout["scheduler"]["raw_state"], "TIMEOUT");
    let by_user = app.get("/v1/jobs/15").await.expect(200);
    assert_eq!(by_user["scheduler"]["raw_state"], "CANCELLED");

    // A second epilog (another node of the job) changes nothing.
    let events_before = app.event_count().await;
    let again = app
        .post_event(
            "job-finished",
            &json!({"job_id": "11", "exit_code": 0, "final_state": "completed"}),
        )
        .await
        .expect(200);
    assert_eq!(again["status"], "skipped");
    assert_eq!(app.get("/v1/jobs/11").await.expect(200)["state"], "failed");
    assert_eq!(app.event_count().await, events_before);

    let audit = app.audit("11").await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1]["change_type"], "update");
    assert_eq!(audit[1]["changed_by"], "slurm-epilog");
    assert_eq!(audit[1]["job_snapshot"]["state"], "failed");
    // prolog and epilog of a job share one correlation id without coordinating
    assert_eq!(audit[0]["correlation_id"], audit[1]["correlation_id"]);
});

on_both_backends!(job_finished_rejects_bad_input, |app| {
    app.start_job("20", "carol", &["n1"]).await;
    let bad = [
        (
            json!({"job_id": "20", "final_state": "running"}),
            "Invalid final_state",
        ),
        (
            json!({"job_id": "20", "final_state": "pending"}),
            "Invalid final_state",
        ),
        (
            json!({"job_id": "20", "final_state": "exploded"}),
            "Invalid final_state",
        ),
        (
            json!({"job_id": "20", "exit_code": 768}),
            "exit_code must be between 0 and 255 (the exit status, not the raw wait status)",
        ),
        (
            json!({"job_id": "20", "exit_code": -1}),
            "exit_code must be between 0 and 255 (the exit status, not the raw wait status)",
        ),
        (
            json!({"job_id": "20", "signal": 200}),
            "signal must be between 0 and 127",
        ),
        (json!({"final_state": "completed"}), "job_id is required"),
    ];
    for (body, message) in bad {
        app.post_event("job-finished", &body)
            .await
            .expect_error(400, "validation_error", message);
    }
    assert_eq!(app.get("/v1/jobs/20").await.expect(200)["state"], "running");
    app.post_event("job-finished", &json!({"job_id": "nope", "exit_code": 0}))
        .await
        .expect_error(404, "not_found", "Job not found");
});

on_both_backends!(epilog_before_prolog_creates_the_job_finished, |app| {
    let body = json!({"job_id": "30", "exit_code": 2, "signal": 0, "user": "dmitri", "node_list": ["n7"],
                      "timestamp": "2026-01-01T10:00:00Z"});
    let reply = app.post_event("job-finished", &body).await.expect(200);
    assert_eq!(reply["status"], "created");
    let job = app.get("/v1/jobs/30").await.expect(200);
    assert_eq!(job["state"], "failed");
    assert_eq!(job["user"], "dmitri");
    assert_eq!(job["nodes"], json!(["n7"]));
    assert_eq!(job["end_time"], "2026-01-01T10:00:00Z");
    assert_eq!(job["exit_code"], 2);
    // The late prolog supplies what the epilog could not know: the start and the allocation.
    let late = app
        .post_event(
            "job-started",
            &json!({"job_id": "30", "user": "dmitri", "node_list": ["n7"], "cpu_allocation": 4,
                    "timestamp": "2026-01-01T09:58:30Z"}),
        )
        .await
        .expect(200);
    assert_eq!(late["status"], "updated", "{late}");
    let job = app.get("/v1/jobs/30").await.expect(200);
    assert_eq!(job["state"], "failed");
    assert_eq!(job["start_time"], "2026-01-01T09:58:30Z");
    assert_eq!(job["runtime_seconds"], 90.0);
    assert_eq!(job["allocated_cpus"], 4);
    // Another node's prolog adds nothing more and writes nothing.
    let events = app.event_count().await;
    let again = app
        .post_event(
            "job-started",
            &json!({"job_id": "30", "user": "dmitri", "node_list": ["n7"], "cpu_allocation": 4}),
        )
        .await
        .expect(200);
    assert_eq!(again["status"], "skipped");
    assert_eq!(app.event_count().await, events);
    let audit = app.audit("30").await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["changed_by"], "slurm-epilog");
    assert_eq!(audit[1]["changed_by"], "slurm-prolog");
    assert_eq!(audit[1]["change_type"], "update");
});

on_both_backends!(controller_and_node_prologs_complement_each_other, |app| {
    // PrologSlurmctld knows the account and job name but not the GPUs; the node Prolog knows
    // the GPUs. Whichever comes second fills in what the first lacked.
    let ctld = json!({"job_id": "35", "user": "erin", "node_list": ["n1", "n2"], "account": "climate", "job_name": "wrf"});
    let node = json!({"job_id": "35", "user": "erin", "node_list": ["n1", "n2"], "gpu_devices": ["0", "1"],
                      "gpu_vendor": "nvidia", "account": "ignored-when-known"});
    assert_eq!(
        app.post_event("job-started", &ctld).await.expect(200)["status"],
        "created"
    );
    assert_eq!(
        app.post_event("job-started", &node).await.expect(200)["status"],
        "updated"
    );
    assert_eq!(
        app.post_event("job-started", &node).await.expect(200)["status"],
        "skipped"
    );
    let job = app.get("/v1/jobs/35").await.expect(200);
    assert_eq!(job["gpu_devices"], json!(["0", "1"]));
    assert_eq!(job["gpu_count"], 2);
    assert_eq!(job["scheduler"]["account"], "climate");
    assert_eq!(job["scheduler"]["extra"]["job_name"], "wrf");
    assert_eq!(app.audit("35").await.len(), 2);
});

on_both_backends!(sluid_is_stored_and_filled_in_by_a_later_prolog, |app| {
    // Slurm 26.05+ sends SLURM_JOB_SLUID; the first prolog may come from an older hook without it.
    let first = json!({"job_id": "36", "user": "erin", "node_list": ["n1"]});
    let later =
        json!({"job_id": "36", "user": "erin", "node_list": ["n1"], "sluid": "s5K1KKYAYG5D00"});
    app.post_event("job-started", &first).await.expect(200);
    assert!(app.get("/v1/jobs/36").await.expect(200)["scheduler"]
        .get("sluid")
        .is_none());
    assert_eq!(
        app.post_event("job-started", &later).await.expect(200)["status"],
        "updated"
    );
    let job = app.get("/v1/jobs/36").await.expect(200);
    assert_eq!(job["scheduler"]["sluid"], "s5K1KKYAYG5D00");
    let fresh =
        json!({"job_id": "37", "user": "erin", "node_list": ["n1"], "sluid": "s5K1KKYAYG5D01"});
    app.post_event("job-started", &fresh).await.expect(200);
    assert_eq!(
        app.get("/v1/jobs/37").await.expect(200)["scheduler"]["sluid"],
        "s5K1KKYAYG5D01"
    );
    let bad =
        json!({"job_id": "38", "user": "erin", "node_list": ["n1"], "sluid": "x".repeat(300)});
    app.post_event("job-started", &bad).await.expect(400);
});

on_both_backends!(every_change_appends_one_event_in_order, |app| {
    let before = app.event_count().await;
    app.start_job("36", "farah", &["n1"]).await;
    app.write(
        "POST",
        "/v1/jobs/36/metrics",
        Some(&json!({"cpu_usage": 12.5, "memory_usage_mb": 64})),
    )
    .await
    .expect(201);
    let sampled = app.store.events_after(before, 100).await.unwrap();
    assert_eq!(sampled[1].payload["sample"]["cpu_usage"], 12.5);
    app.write("PATCH", "/v1/jobs/36", Some(&json!({"gpu_usage": 3})))
        .await
        .expect(200);
    app.post_event("job-finished", &json!({"job_id": "36", "exit_code": 0}))
        .await
        .expect(200);
    app.write("DELETE", "/v1/jobs/36", None).await.expect(204);
    // rejected changes append nothing
    app.write("PATCH", "/v1/jobs/36", Some(&json!({"gpu_usage": 3})))
        .await
        .expect(404);
    app.post_event("job-finished", &json!({"job_id": "36", "exit_code": 0}))
        .await
        .expect(404);

    let events = app.store.events_after(before, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "job_created",
            "job_sample",
            "job_updated",
            "job_finished",
            "job_deleted"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert!(events.iter().all(|e| e.job_id.as_deref() == Some("36")));
    // Read back after the deletion, the sample event has lost its sample with the job.
    assert!(events[1].payload["sample"].is_null());
    assert_eq!(events[3].payload["previous_state"], "running");
    assert_eq!(events[3].payload["job"]["state"], "completed");
    // one correlation id across the whole life of the job
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e.payload["correlation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
});

on_both_backends!(given_correlation_ids_are_kept_and_echoed, |app| {
    let reply = app
        .request(
            "POST",
            "/v1/events/job-started",
            Some(&started("40")),
            &[("x-correlation-id", "trace-abc-1")],
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.header("x-correlation-id"), Some("trace-abc-1"));
    assert_eq!(app.audit("40").await[0]["correlation_id"], "trace-abc-1");
    let bad = app
        .request(
            "POST",
            "/v1/events/job-started",
            Some(&started("41")),
            &[("x-correlation-id", "has space")],
        )
        .await;
    bad.expect_error(
        400,
        "validation_error",
        "X-Correlation-Id must be 1 to 255 visible ASCII characters",
    );
});

on_both_backends!(create_job_through_the_api, |app| {
    let body = json!({"id": "api-1", "user": "erin", "nodes": ["n1", "n2", "n1"],
                      "scheduler": {"type": "manual", "partition": "debug", "priority": 5}});
    let reply = app.write("POST", "/v1/jobs", Some(&body)).await;
    let job = reply.expect(201);
    assert_eq!(job["id"], "api-1");
    assert_eq!(job["state"], "running");
    assert_eq!(job["nodes"], json!(["n1", "n2"]));
    assert_eq!(job["cluster_name"], "default");
    assert_eq!(job["scheduler_instance"], "api");
    assert_eq!(job["ingest_version"], "api-v1");
    assert_eq!(job["scheduler"]["partition"], "debug");
    let generated = reply
        .header("x-correlation-id")
        .expect("correlation id echoed");
    assert!(uuid::Uuid::parse_str(generated).is_ok());

    app.write("POST", "/v1/jobs", Some(&body))
        .await
        .expect_error(409, "conflict", "Job with this ID already exists");
    for (body, message) in [
        (json!({"user": "u", "nodes": ["n"]}), "Job ID is required"),
        (json!({"id": "x", "nodes": ["n"]}), "User is required"),
        (
            json!({"id": "x", "user": "u", "nodes": []}),
            "At least one node is required",
        ),
        (
            json!({"id": "x", "user": "u"}),
            "At least one node is required",
        ),
    ] {
        app.write("POST", "/v1/jobs", Some(&body))
            .await
            .expect_error(400, "validation_error", message);
    }
    let audit = app.audit("api-1").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["changed_by"], "tester");
    assert_eq!(audit[0]["source"], "integration-test");
    assert_eq!(audit[0]["correlation_id"], generated);
});

on_both_backends!(api_writes_require_audit_headers, |app| {
    let body = json!({"id": "h-1", "user": "u", "nodes": ["n"]});
    app.request("POST", "/v1/jobs", Some(&body), &[("x-source", "s")])
        .await
        .expect_error(400, "validation_error", "X-Changed-By header is required");
    app.request(
        "POST",
        "/v1/jobs",
        Some(&body),
        &[("x-changed-by", " "), ("x-source", "s")],
    )
    .await
    .expect_error(400, "validation_error", "X-Changed-By header is required");
    app.request("POST", "/v1/jobs", Some(&body), &[("x-changed-by", "me")])
        .await
        .expect_error(400, "validation_error", "X-Source header is required");
    app.start_job("h-2", "u", &["n"]).await;
    app.request("DELETE", "/v1/jobs/h-2", None, &[])
        .await
        .expect(400);
    app.request("PATCH", "/v1/jobs/h-2", Some(&json!({"cpu_usage": 1})), &[])
        .await
        .expect(400);
    app.request(
        "POST",
        "/v1/jobs/h-2/metrics",
        Some(&json!({"cpu_usage": 1, "memory_usage_mb": 1})),
        &[],
    )
    .await
    .expect(400);
    app.get("/v1/jobs/h-1").await.expect(404);
    assert_eq!(app.get("/v1/jobs/h-2").await.expect(200)["sample_count"], 0);
});

on_both_backends!(list_filters_are_exact_and_validated, |app| {
    app.start_job("50", "alice", &["node-1"]).await;
    app.start_job("51", "alice", &["node-10"]).await;
    app.start_job("52", "bob", &["node-1", "node-2"]).await;
    app.post_event("job-finished", &json!({"job_id": "52", "exit_code": 1}))
        .await
        .expect(200);

    let ids = |body: Value| -> Vec<String> {
        let mut ids: Vec<String> = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(app.get("/v1/jobs?node=node-1").await.expect(200)),
        ["50", "52"]
    );
    assert_eq!(
        ids(app.get("/v1/jobs?node=node-10").await.expect(200)),
        ["51"]
    );
    assert_eq!(
        ids(app.get("/v1/jobs?user=alice").await.expect(200)),
        ["50", "51"]
    );
    assert_eq!(
        ids(app.get("/v1/jobs?state=failed").await.expect(200)),
        ["52"]
    );
    assert_eq!(
        ids(app
            .get("/v1/jobs?state=running&node=node-1")
            .await
            .expect(200)),
        ["50"]
    );
    assert_eq!(
        ids(app.get("/v1/jobs?user=nobody").await.expect(200)),
        Vec::<String>::new()
    );

    let page = app.get("/v1/jobs?limit=2&offset=1").await.expect(200);
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    let all = app.get("/v1/jobs").await.expect(200);
    assert_eq!(all["limit"], 100);
    assert_eq!(all["offset"], 0);
    // newest start first
    let starts: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["start_time"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(starts, sorted);

    app.get("/v1/jobs?limit=0").await.expect_error(
        400,
        "validation_error",
        "limit must be between 1 and 1000",
    );
    app.get("/v1/jobs?limit=1001").await.expect_error(
        400,
        "validation_error",
        "limit must be between 1 and 1000",
    );
    app.get("/v1/jobs?offset=-1").await.expect(400);
    app.get("/v1/jobs?limit=ten").await.expect_error(
        400,
        "invalid_request",
        "limit must be an integer",
    );
    app.get("/v1/jobs?state=done")
        .await
        .expect_error(400, "validation_error", "Invalid job state");
    app.get(&format!("/v1/jobs?user={}", "u".repeat(256)))
        .await
        .expect(400);
    app.get("/v1/jobs?user=%zz")
        .await
        .expect_error(400, "invalid_request", "Invalid query string");
});

on_both_backends!(patch_updates_and_terminal_jobs_are_frozen, |app| {
    app.start_job("60", "gwen", &["n1"]).await;
    let job = app
        .write(
            "PATCH",
            "/v1/jobs/60",
            Some(&json!({"cpu_usage": 55.5, "memory_usage_mb": 1024})),
        )
        .await
        .expect(200);
    assert_eq!(job["cpu_usage"], 55.5);
    assert_eq!(job["memory_usage_mb"], 1024);
    assert_eq!(job["state"], "running");

    for (body, message) in [
        (json!({"state": "paused"}), "Invalid job state"),
        (
            json!({"cpu_usage": 101}),
            "CPU usage must be between 0 and 100",
        ),
        (
            json!({"memory_usage_mb": -5}),
            "Memory usage must be non-negative",
        ),
        (
            json!({"gpu_usage": -1}),
            "GPU usage must be between 0 and 100",
        ),
    ] {
        app.write("PATCH", "/v1/jobs/60", Some(&body))
            .await
            .expect_error(400, "validation_error", message);
    }
    app.write("PATCH", "/v1/jobs/60", Some(&json!({"state": "pending"})))
        .await
        .expect_error(
            409,
            "conflict",
            "Invalid state transition from running to pending",
        );

    let done = app
        .write("PATCH", "/v1/jobs/60", Some(&json!({"state": "completed"})))
        .await
        .expect(200);
    assert_eq!(done["state"], "completed");
    assert!(done["end_time"].is_string());
    assert!(done["runtime_seconds"].as_f64().unwrap() >= 0.0);

    let audit_before = app.audit("60").await.len();
    let events_before = app.event_count().await;
    app.write("PATCH", "/v1/jobs/60", Some(&json!({"cpu_usage": 1})))
        .await
        .expect_error(
            409,
            "conflict",
            "Job is in terminal state and cannot be updated",
        );
    app.write(
        "POST",
        "/v1/jobs/60/metrics",
        Some(&json!({"cpu_usage": 1, "memory_usage_mb": 1})),
    )
    .await
    .expect_error(
        409,
        "conflict",
        "Job is in terminal state and cannot be updated",
    );
    assert_eq!(app.audit("60").await.len(), audit_before);
    assert_eq!(app.event_count().await, events_before);
    assert_eq!(app.get("/v1/jobs/60").await.expect(200)["sample_count"], 0);

    app.write("PATCH", "/v1/jobs/missing", Some(&json!({"cpu_usage": 1})))
        .await
        .expect_error(404, "not_found", "Job not found");
    let audit = app.audit("60").await;
    assert_eq!(
        audit
            .iter()
            .map(|a| a["change_type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["create", "update", "update"]
    );
    assert_eq!(audit[2]["job_snapshot"]["state"], "completed");
});

on_both_backends!(delete_keeps_the_audit_trail, |app| {
    app.start_job("70", "hiro", &["n1"]).await;
    let reply = app.write("DELETE", "/v1/jobs/70", None).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert!(reply.body.is_empty());
    app.get("/v1/jobs/70")
        .await
        .expect_error(404, "not_found", "Job not found");
    app.write("DELETE", "/v1/jobs/70", None)
        .await
        .expect_error(404, "not_found", "Job not found");
    let audit = app.audit("70").await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1]["change_type"], "delete");
    assert_eq!(audit[1]["changed_by"], "tester");
    assert_eq!(audit[1]["job_snapshot"]["id"], "70");
    app.get("/v1/jobs/never-existed/audit")
        .await
        .expect_error(404, "not_found", "Job not found");
});

on_both_backends!(
    samples_update_aggregates_and_read_back_newest_first,
    |app| {
        // Yesterday, whatever today is: sample times may not lie in the future.
        let day = (chrono::Utc::now() - chrono::Duration::days(1))
            .format("%Y-%m-%dT")
            .to_string();
        app.start_job("80", "alice", &["n1"]).await;
        let samples = [
            (format!("{day}10:00:00Z"), 10.0, 100.0, Some(50.0)),
            (format!("{day}10:01:00Z"), 30.0, 300.0, None),
            (format!("{day}10:02:00Z"), 20.0, 200.4, Some(70.0)),
        ];
        for (ts, cpu, mem, gpu) in samples {
            let mut body = json!({"cpu_usage": cpu, "memory_usage_mb": mem, "timestamp": ts});
            if let Some(g) = gpu {
                body["gpu_usage"] = json!(g);
            }
            let created = app
                .write("POST", "/v1/jobs/80/metrics", Some(&body))
                .await
                .expect(201);
            assert_eq!(created["cpu_usage"], cpu);
            assert_eq!(created["timestamp"], ts);
        }
        // A late sample (older than the newest) counts in the aggregates but not as current value.
        app.write("POST", "/v1/jobs/80/metrics", Some(&json!({"cpu_usage": 40.0, "memory_usage_mb": 50, "timestamp": &format!("{day}09:59:00Z")})))
        .await
        .expect(201);

        let job = app.get("/v1/jobs/80").await.expect(200);
        assert_eq!(job["sample_count"], 4);
        assert_eq!(job["cpu_usage"], 20.0);
        assert_eq!(job["memory_usage_mb"], 200);
        assert_eq!(job["gpu_usage"], 70.0);
        assert_eq!(job["avg_cpu_usage"], 25.0);
        assert_eq!(job["max_cpu_usage"], 40.0);
        assert_eq!(job["max_memory_usage_mb"], 300);
        assert_eq!(job["avg_gpu_usage"], 60.0);
        assert_eq!(job["max_gpu_usage"], 70.0);
        assert_eq!(job["last_sample_at"], format!("{day}10:02:00Z"));

        let all = app.get("/v1/jobs/80/metrics").await.expect(200);
        assert_eq!(all["job_id"], "80");
        assert_eq!(all["total"], 4);
        let times: Vec<String> = all["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["timestamp"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            times,
            [
                format!("{day}10:02:00Z"),
                format!("{day}10:01:00Z"),
                format!("{day}10:00:00Z"),
                format!("{day}09:59:00Z")
            ]
        );
        assert!(all["samples"][1].get("gpu_usage").is_none());

        let ranged = app
            .get(&format!(
                "/v1/jobs/80/metrics?start_time={day}10:00:00Z&end_time={day}10:01:00Z"
            ))
            .await
            .expect(200);
        assert_eq!(ranged["total"], 2);
        let from = app
            .get(&format!(
                "/v1/jobs/80/metrics?start_time={day}10:01:00%2B00:00"
            ))
            .await
            .expect(200);
        assert_eq!(from["total"], 2);
        let until = app
            .get(&format!(
                "/v1/jobs/80/metrics?end_time={day}10:00:00Z&limit=1"
            ))
            .await
            .expect(200);
        assert_eq!(until["total"], 2);
        assert_eq!(until["samples"].as_array().unwrap().len(), 1);
        assert_eq!(until["samples"][0]["timestamp"], format!("{day}10:00:00Z"));

        app.get("/v1/jobs/80/metrics?limit=10001")
            .await
            .expect_error(400, "validation_error", "limit must be between 1 and 10000");
        app.get("/v1/jobs/80/metrics?start_time=yesterday")
            .await
            .expect_error(
                400,
                "invalid_request",
                "start_time must be an RFC 3339 timestamp",
            );
        app.get(&format!(
            "/v1/jobs/80/metrics?start_time={day}11:00:00Z&end_time={day}10:00:00Z"
        ))
        .await
        .expect(400);
        app.get("/v1/jobs/nope/metrics")
            .await
            .expect_error(404, "not_found", "Job not found");

        for (body, message) in [
            (
                json!({"cpu_usage": 100.5, "memory_usage_mb": 1}),
                "CPU usage must be between 0 and 100",
            ),
            (
                json!({"cpu_usage": -1, "memory_usage_mb": 1}),
                "CPU usage must be between 0 and 100",
            ),
            (
                json!({"cpu_usage": 1, "memory_usage_mb": -1}),
                "Memory usage must be non-negative",
            ),
            (json!({"memory_usage_mb": 1}), "cpu_usage is required"),
            (json!({"cpu_usage": 1}), "memory_usage_mb is required"),
            (
                json!({"cpu_usage": 1, "memory_usage_mb": 1, "gpu_usage": 300}),
                "GPU usage must be between 0 and 100",
            ),
            (
                json!({"cpu_usage": 1, "memory_usage_mb": 1, "timestamp": "2999-01-01T00:00:00Z"}),
                "timestamp is in the future",
            ),
        ] {
            app.write("POST", "/v1/jobs/80/metrics", Some(&body))
                .await
                .expect_error(400, "validation_error", message);
        }
        app.write(
            "POST",
            "/v1/jobs/nope/metrics",
            Some(&json!({"cpu_usage": 1, "memory_usage_mb": 1})),
        )
        .await
        .expect_error(404, "not_found", "Job not found");
        assert_eq!(app.get("/v1/jobs/80").await.expect(200)["sample_count"], 4);
        // no audit row per sample
        assert_eq!(app.audit("80").await.len(), 1);
    }
);

on_both_backends!(concurrent_writers_never_lose_or_duplicate, |app| {
    // Twenty prologs of one job at once (a 20-node job): one create, one audit row.
    let body = started("90");
    let replies =
        futures_util::future::join_all((0..20).map(|_| app.post_event("job-started", &body))).await;
    let created = replies
        .iter()
        .filter(|r| r.json()["status"] == "created")
        .count();
    assert_eq!(created, 1);
    assert!(replies.iter().all(|r| r.status.as_u16() == 200));
    assert_eq!(app.audit("90").await.len(), 1);

    // Fifty samples at once: every one counted, aggregates exact.
    let posts = (0..50).map(|i| {
        let body = json!({"cpu_usage": (i % 10) as f64 * 10.0, "memory_usage_mb": i});
        async move { app.write("POST", "/v1/jobs/90/metrics", Some(&body)).await }
    });
    let replies = futures_util::future::join_all(posts).await;
    assert!(replies.iter().all(|r| r.status.as_u16() == 201));
    let job = app.get("/v1/jobs/90").await.expect(200);
    assert_eq!(job["sample_count"], 50);
    assert_eq!(job["avg_cpu_usage"], 45.0);
    assert_eq!(job["max_cpu_usage"], 90.0);
    assert_eq!(job["max_memory_usage_mb"], 49);
});

on_both_backends!(a_burst_of_hooks_records_each_job_as_stored, |app| {
    // Prologs, then epilogs, of 24 jobs at once go through group commit in batches; on
    // PostgreSQL a batch's new jobs and ends are written by one statement whose audit snapshots
    // and event payloads are made before it runs. Each must be the job exactly as stored:
    // nanosecond timestamps, extras, GPUs, an end before the start, two epilogs of one job.
    let before = app.event_count().await;
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S");
    let ids: Vec<String> = (0..24).map(|i| format!("burst-{i}")).collect();
    let prologs = ids.iter().enumerate().map(|(i, id)| {
        let body = json!({
            "job_id": id, "user": format!("usér-{i}"), "node_list": [format!("n{i}"), format!("n{}", i + 1)],
            "timestamp": format!("{hour_ago}.{:09}Z", 123_456_789 + i * 1_001),
            "cpu_allocation": 4 + i, "memory_allocation_mb": 1000 * i, "gpu_allocation": i % 3,
            "gpu_vendor": if i % 3 == 0 { "none" } else { "nvidia" },
            "gpu_devices": (0..i % 3).map(|d| d.to_string()).collect::<Vec<_>>(),
            "partition": "gpu", "account": "physics", "job_name": format!("run {i} ✓"),
            "array_job_id": "700", "array_task_id": i, "cluster_name": "hpc",
            "cgroup_path": format!("/sys/fs/cgroup/system.slice/slurmstepd.scope/job_{i}"),
        });
        async move { app.post_event("job-started", &body).await }
    });
    for reply in futures_util::future::join_all(prologs).await {
        assert_eq!(reply.expect(200)["status"], "created");
    }
    // The first 16 end; every other one has its epilog twice (two nodes), and one ends before
    // it started (node clocks disagree).
    let epilogs = ids[..16].iter().enumerate().flat_map(|(i, id)| {
        let at = if i == 5 { "2000-01-01T00:00:00.000000999Z".to_owned() } else { format!("{hour_ago}.{:09}Z", 999_999_999 - i) };
        let body = json!({"job_id": id, "exit_code": i % 3, "signal": if i == 7 { 9 } else { 0 }, "timestamp": at});
        (0..1 + (i + 1) % 2).map(move |_| body.clone())
    });
    let replies = futures_util::future::join_all(epilogs.map(|body| async move {
        let reply = app.post_event("job-finished", &body).await.expect(200);
        (
            body["job_id"].as_str().unwrap().to_owned(),
            reply["status"].as_str().unwrap().to_owned(),
        )
    }))
    .await;
    for id in &ids[..16] {
        let statuses: Vec<&str> = replies
            .iter()
            .filter(|(j, _)| j == id)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == "updated").count(),
            1,
            "{id}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == "updated" || *s == "skipped"),
            "{id}: {statuses:?}"
        );
    }

    let events = app.store.events_after(before, 1000).await.unwrap();
    let without_runtime = |mut job: Value| {
        job.as_object_mut().unwrap().remove("runtime_seconds");
        job
    };
    for (i, id) in ids.iter().enumerate() {
        // The job as stored, without what `GET /v1/jobs/{id}` adds to it.
        let mut stored = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
        for added in ["per_node", "totals", "log_unavailable"] {
            stored.as_object_mut().unwrap().remove(added);
        }
        let audit = app.audit(id).await;
        let of_kind = |kind: &str| {
            let found: Vec<&Value> = events
                .iter()
                .filter(|e| e.job_id.as_deref() == Some(id.as_str()) && e.kind.as_str() == kind)
                .map(|e| &e.payload["job"])
                .collect();
            assert_eq!(found.len(), 1, "{id}: {kind} events");
            found[0].clone()
        };
        let snapshot = |change: &str| {
            let found: Vec<&Value> = audit
                .iter()
                .filter(|a| a["change_type"] == change)
                .map(|a| &a["job_snapshot"])
                .collect();
            assert_eq!(found.len(), 1, "{id}: {change} audit rows");
            found[0].clone()
        };
        let created = of_kind("job_created");
        assert_eq!(snapshot("create"), created, "{id}");
        assert!(
            created["start_time"]
                .as_str()
                .unwrap()
                .ends_with(&format!(".{:06}Z", 123_456 + i)),
            "{created}"
        );
        if i < 16 {
            assert_eq!(audit.len(), 2, "{id}");
            let finished = of_kind("job_finished");
            assert_eq!(
                finished, stored,
                "{id}: the finished event's job is the stored job"
            );
            assert_eq!(snapshot("update"), stored, "{id}");
            assert_eq!(stored["exit_code"], i % 3);
            if i == 5 {
                assert_eq!(stored["end_time"], stored["start_time"]);
                assert_eq!(stored["runtime_seconds"], 0.0);
            }
            // Everything the prolog gave is as the created event said.
            for field in [
                "user",
                "nodes",
                "start_time",
                "cgroup_path",
                "gpu_devices",
                "gpu_count",
                "correlation_id",
            ] {
                assert_eq!(stored[field], created[field], "{id}: {field}");
            }
        } else {
            assert_eq!(audit.len(), 1, "{id}");
            assert_eq!(
                without_runtime(created),
                without_runtime(stored),
                "{id}: the created event's job is the stored job"
            );
        }
    }
});

on_both_backends!(oversized_and_malformed_requests, |app| {
    let big =
        json!({"job_id": "big", "user": "u", "node_list": ["n"], "account": "a".repeat(70 * 1024)});
    app.post_event("job-started", &big).await.expect_error(
        413,
        "payload_too_large",
        "Request body is larger than 65536 bytes",
    );
    // Without a Content-Length the body is still cut off at the limit.
    let raw = serde_json::to_vec(&big).unwrap();
    app.raw(
        "POST",
        "/v1/events/job-started",
        &raw,
        &[("transfer-encoding", "chunked")],
    )
    .await
    .expect(413);
    app.get("/v1/jobs/big").await.expect(404);
    app.get(&format!("/v1/jobs/{}", "x".repeat(256)))
        .await
        .expect_error(
            400,
            "validation_error",
            "job id must be at most 255 characters",
        );
    app.get("/v1/jobs/%20abc").await.expect_error(
        400,
        "validation_error",
        "job id must not start or end with white space",
    );
    app.get("/v1/jobs/a%2Fb")
        .await
        .expect_error(404, "not_found", "Job not found");
    app.get("/v1/jobs/%ZZ")
        .await
        .expect_error(400, "invalid_request", "Invalid job id in path");
});

on_both_backends!(database_errors_are_500_without_details, |app| {
    app.start_job("db-1", "u", &["n"]).await;
    app.store.close().await;
    let reply = app.get("/v1/jobs/db-1").await;
    reply.expect_error(500, "internal_error", "Internal server error");
    let health = app.get("/v1/health").await.expect(503);
    assert_eq!(health["status"], "unhealthy");
});

on_both_backends!(demo_seed_is_repeatable, |app| {
    let first = jobscope::scheduler::demo::seed(&app.store).await.unwrap();
    assert_eq!(first, jobscope::scheduler::demo::JOB_COUNT);
    let total = app.get("/v1/jobs?limit=1").await.expect(200)["total"].clone();
    let events = app.event_count().await;
    let second = jobscope::scheduler::demo::seed(&app.store).await.unwrap();
    assert_eq!(second, 0);
    assert_eq!(
        app.get("/v1/jobs?limit=1").await.expect(200)["total"],
        total
    );
    assert_eq!(app.event_count().await, events);
    assert_eq!(total, 100);
    for state in ["pending", "running", "completed", "failed", "cancelled"] {
        let n = app
            .get(&format!("/v1/jobs?state={state}&limit=1"))
            .await
            .expect(200)["total"]
            .as_i64()
            .unwrap();
        assert!(n > 0, "no {state} demo job");
    }
    let running = app.get("/v1/jobs?state=running&limit=1").await.expect(200);
    let id = running["jobs"][0]["id"].as_str().unwrap().to_string();
    let samples = app.get(&format!("/v1/jobs/{id}/metrics")).await.expect(200);
    assert!(samples["total"].as_i64().unwrap() > 0);
    assert_eq!(samples["total"], running["jobs"][0]["sample_count"]);
    // Aggregates stay exact when live samples join seeded ones.
    app.write(
        "POST",
        &format!("/v1/jobs/{id}/metrics"),
        Some(&json!({"cpu_usage": 50, "memory_usage_mb": 10})),
    )
    .await
    .expect(201);
    let job = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
    let all = app
        .get(&format!("/v1/jobs/{id}/metrics?limit=10000"))
        .await
        .expect(200);
    let cpus: Vec<f64> = all["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cpu_usage"].as_f64().unwrap())
        .collect();
    let avg = cpus.iter().sum::<f64>() / cpus.len() as f64;
    assert!((job["avg_cpu_usage"].as_f64().unwrap() - avg).abs() < 1e-9);
});
