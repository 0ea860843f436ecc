//! `POST /v1/samples` and the node resource through the real router, on SQLite and on
//! PostgreSQL: per-item acceptance, late samples, aggregates in SQL, events, nodes.

mod common;

use serde_json::{json, Value};

fn job_sample(id: &str, cpu: Option<f64>, memory: u64, at: &str) -> Value {
    let mut s = json!({
        "job_id": id, "collected_at": at,
        "cpu_usage_usec": 5_000_000u64, "cpu_user_usec": 4_000_000u64, "cpu_system_usec": 1_000_000u64,
        "memory_current_bytes": memory, "memory_peak_bytes": memory + 1024,
        "io_read_bytes": 4096, "io_write_bytes": 8192, "pids_current": 3, "oom_kills": 0,
        "cpu_pressure": {"some_avg10": 1.5, "some_total_usec": 1234},
        "gpus": [
            {"index": 0, "uuid": "GPU-aaaa", "pci_bus_id": "0000:3b:00.0", "vendor": "nvidia",
             "utilization_percent": 80.0, "memory_used_bytes": 1000, "memory_total_bytes": 80000,
             "power_watts": 250.0, "energy_joules": 1.0e6, "temperature_celsius": 60.0, "processes": [77]},
            {"index": 1, "uuid": "GPU-bbbb", "pci_bus_id": "0000:3c:00.0", "vendor": "nvidia",
             "utilization_percent": 0.0, "memory_used_bytes": 0, "memory_total_bytes": 80000,
             "power_watts": 60.0, "energy_joules": 2.0e5, "temperature_celsius": 30.0, "processes": []}
        ]
    });
    if let Some(cpu) = cpu {
        s["cpu_usage_percent"] = json!(cpu);
    }
    s
}

fn batch(node: &str, at: &str, jobs: Vec<Value>) -> Value {
    json!({
        "node": node, "collected_at": at, "interval_seconds": 15,
        "jobs": jobs,
        "node_stats": {"cpu_usage_percent": 42.0, "memory_total_bytes": 1u64 << 36,
                       "memory_used_bytes": 1u64 << 34, "load_1": 3.5, "load_5": 2.0, "load_15": 1.0,
                       "cpu_count": 64}
    })
}

fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds)).to_rfc3339()
}

on_both_backends!(a_batch_is_stored_item_by_item, |app| {
    app.start_job("100", "alice", &["node-1"]).await;
    app.start_job("101", "bob", &["node-1"]).await;
    let events_before = app.event_count().await;

    let body = batch(
        "node-1",
        &ago(1),
        vec![
            job_sample("100", None, 3 << 20, &ago(30)),
            job_sample("100", Some(50.0), 5 << 20, &ago(15)),
            job_sample("101", Some(25.0), 7 << 20, &ago(15)),
            job_sample("999", Some(10.0), 1 << 20, &ago(15)),
            job_sample("101", Some(250.0), 1 << 20, &ago(15)),
        ],
    );
    let answer = app
        .request("POST", "/v1/samples", Some(&body), &[])
        .await
        .expect(200);
    assert_eq!(answer["node"], "node-1");
    assert_eq!(answer["accepted"], 3);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{answer}");
    assert_eq!(rejected[0]["index"], 3);
    assert_eq!(rejected[0]["reason"], "unknown_job");
    assert_eq!(rejected[1]["index"], 4);
    assert_eq!(rejected[1]["reason"], "invalid");
    assert!(rejected[1]["message"]
        .as_str()
        .unwrap()
        .contains("cpu_usage_percent"));

    // Three samples and one node change: four events.
    assert_eq!(app.event_count().await, events_before + 4);

    let job = app.get("/v1/jobs/100").await.expect(200);
    assert_eq!(job["sample_count"], 2);
    assert_eq!(job["cpu_usage"], 50.0, "the newest sample's percentage");
    assert_eq!(
        job["avg_cpu_usage"], 50.0,
        "the first sample had no percentage"
    );
    assert_eq!(job["memory_usage_mb"], 5);
    assert_eq!(job["memory_usage_bytes"], 5 << 20);
    assert_eq!(
        job["max_memory_usage_bytes"],
        (5 << 20) + 1024,
        "peak counts"
    );
    assert_eq!(job["gpu_usage"], 40.0, "mean of an 80 % and an idle GPU");
    assert_eq!(job["gpus"].as_array().unwrap().len(), 2);
    assert_eq!(
        job["gpus"][1]["utilization_percent"], 0.0,
        "idle GPU reported, not hidden"
    );

    let samples = app.get("/v1/jobs/100/metrics").await.expect(200);
    assert_eq!(samples["total"], 2);
    let newest = &samples["samples"][0];
    assert_eq!(newest["cpu_usage"], 50.0);
    assert_eq!(newest["node"], "node-1");
    assert_eq!(newest["cpu_time_seconds"], 5.0);
    assert_eq!(newest["cpu_user_seconds"], 4.0);
    assert_eq!(newest["io_write_bytes"], 8192);
    assert_eq!(newest["pids"], 3);
    assert_eq!(newest["pressure"]["cpu"]["some_avg10"], 1.5);
    assert_eq!(newest["gpus"][0]["uuid"], "GPU-aaaa");
    assert!(
        newest.get("memory_anon_bytes").is_none(),
        "not measured, not invented"
    );
    let first = &samples["samples"][1];
    assert!(first["cpu_usage"].is_null(), "first sample: counters only");
    assert_eq!(first["memory_usage_mb"], 3);

    let node = app.get("/v1/nodes/node-1").await.expect(200);
    assert_eq!(node["name"], "node-1");
    assert_eq!(node["state"], "allocated");
    assert_eq!(node["running_jobs"], 2);
    assert_eq!(node["cpus"], 64);
    assert_eq!(node["load_1"], 3.5);
    assert_eq!(node["cpu_usage_percent"], 42.0);
    assert_eq!(node["stale"], false);
    assert_eq!(node["report_interval_seconds"], 15.0);
});

on_both_backends!(
    late_samples_count_only_when_collected_before_the_end,
    |app| {
        app.post_event(
        "job-started",
        &json!({"job_id": "200", "user": "alice", "node_list": ["node-2"], "timestamp": ago(300)}),
    )
    .await
    .expect(200);
        app.post_event(
            "job-finished",
            &json!({"job_id": "200", "exit_code": 0, "timestamp": ago(60)}),
        )
        .await
        .expect(200);
        let body = batch(
            "node-2",
            &ago(1),
            vec![
                job_sample("200", Some(30.0), 1 << 20, &ago(90)),
                job_sample("200", Some(30.0), 1 << 20, &ago(10)),
            ],
        );
        let answer = app
            .request("POST", "/v1/samples", Some(&body), &[])
            .await
            .expect(200);
        assert_eq!(answer["accepted"], 1, "{answer}");
        assert_eq!(answer["rejected"][0]["index"], 1);
        assert_eq!(answer["rejected"][0]["reason"], "after_job_end");
        let job = app.get("/v1/jobs/200").await.expect(200);
        assert_eq!(job["state"], "completed");
        assert_eq!(job["sample_count"], 1);

        // The compat single-sample endpoint still refuses finished jobs.
        app.write(
            "POST",
            "/v1/jobs/200/metrics",
            Some(&json!({"cpu_usage": 1.0, "memory_usage_mb": 1})),
        )
        .await
        .expect(409);
    }
);

on_both_backends!(
    a_spooled_older_batch_does_not_overwrite_newer_figures,
    |app| {
        app.start_job("300", "alice", &["node-3"]).await;
        let newer = batch(
            "node-3",
            &ago(5),
            vec![job_sample("300", Some(90.0), 9 << 20, &ago(5))],
        );
        app.request("POST", "/v1/samples", Some(&newer), &[])
            .await
            .expect(200);
        let mut older = batch(
            "node-3",
            &ago(60),
            vec![job_sample("300", Some(10.0), 1 << 20, &ago(60))],
        );
        older["node_stats"]["load_1"] = json!(99.0);
        app.request("POST", "/v1/samples", Some(&older), &[])
            .await
            .expect(200);
        let job = app.get("/v1/jobs/300").await.expect(200);
        assert_eq!(job["sample_count"], 2);
        assert_eq!(
            job["cpu_usage"], 90.0,
            "current values follow the newest sample"
        );
        assert_eq!(job["avg_cpu_usage"], 50.0, "aggregates count both");
        assert_eq!(job["max_cpu_usage"], 90.0);
        let node = app.get("/v1/nodes/node-3").await.expect(200);
        assert_eq!(
            node["load_1"], 3.5,
            "the older report did not overwrite the node"
        );
    }
);

on_both_backends!(bad_batches_are_refused_whole, |app| {
    let no_node = json!({"collected_at": ago(1), "jobs": []});
    app.request("POST", "/v1/samples", Some(&no_node), &[])
        .await
        .expect_error(400, "invalid_request", "Invalid JSON body");
    let blank = json!({"node": " ", "collected_at": ago(1), "jobs": []});
    app.request("POST", "/v1/samples", Some(&blank), &[])
        .await
        .expect_error(400, "validation_error", "node is required");
    let future = json!({"node": "n", "collected_at": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339()});
    app.request("POST", "/v1/samples", Some(&future), &[])
        .await
        .expect(400);
    let bad_interval = json!({"node": "n", "collected_at": ago(1), "interval_seconds": -3});
    app.request("POST", "/v1/samples", Some(&bad_interval), &[])
        .await
        .expect(400);
    // Larger than the batch limit: refused before it is read.
    let huge = vec![b' '; jobscope_batch_limit() + 1];
    app.raw(
        "POST",
        "/v1/samples",
        &huge,
        &[("content-type", "application/json")],
    )
    .await
    .expect(413);
    // A batch bigger than the 64 KiB of other endpoints is fine here.
    app.start_job("400", "alice", &["node-4"]).await;
    let many: Vec<Value> = (0..300)
        .map(|_| job_sample("400", Some(1.0), 1 << 20, &ago(3)))
        .collect();
    let big = batch("node-4", &ago(1), many);
    assert!(serde_json::to_vec(&big).unwrap().len() > 64 * 1024);
    let answer = app
        .request("POST", "/v1/samples", Some(&big), &[])
        .await
        .expect(200);
    assert_eq!(answer["accepted"], 300);
    assert_eq!(
        app.get("/v1/jobs/400").await.expect(200)["sample_count"],
        300
    );
});

fn jobscope_batch_limit() -> usize {
    16 * 1024 * 1024
}

on_both_backends!(
    nodes_are_listed_filtered_and_serve_their_running_jobs,
    |app| {
        app.start_job("500", "alice", &["node-a", "node-b"]).await;
        app.start_job("501", "bob", &["node-b"]).await;
        for node in ["node-a", "node-b", "node-c"] {
            app.request(
                "POST",
                "/v1/samples",
                Some(&batch(node, &ago(1), vec![])),
                &[],
            )
            .await
            .expect(200);
        }
        let all = app.get("/v1/nodes").await.expect(200);
        assert_eq!(all["total"], 3);
        let names: Vec<&str> = all["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["node-a", "node-b", "node-c"]);
        let idle = app.get("/v1/nodes?state=idle").await.expect(200);
        assert_eq!(idle["total"], 1);
        assert_eq!(idle["nodes"][0]["name"], "node-c");
        app.get("/v1/nodes?state=busy").await.expect_error(
            400,
            "validation_error",
            "state must be one of idle, allocated, mixed, down, drained, unknown",
        );
        app.get("/v1/nodes/nope")
            .await
            .expect_error(404, "not_found", "Node nope not found");
        app.get("/v1/nodes/%20").await.expect_error(
            400,
            "validation_error",
            "node name must not start or end with white space",
        );

        let jobs = app.get("/v1/nodes/node-b/jobs").await.expect(200);
        assert_eq!(jobs["total"], 2);
        let jobs = app.get("/v1/nodes/node-a/jobs").await.expect(200);
        assert_eq!(jobs["total"], 1);
        assert_eq!(jobs["jobs"][0]["id"], "500");
        app.post_event("job-finished", &json!({"job_id": "500", "exit_code": 0}))
            .await
            .expect(200);
        let jobs = app.get("/v1/nodes/node-a/jobs").await.expect(200);
        assert_eq!(jobs["total"], 0, "finished jobs are no longer sampled");
        // a node nobody has reported yet has no jobs rather than an error
        assert_eq!(
            app.get("/v1/nodes/node-z/jobs").await.expect(200)["total"],
            0
        );
    }
);

on_both_backends!(sample_and_node_events_reach_the_log, |app| {
    app.start_job("600", "carol", &["node-6"]).await;
    let after = app.event_count().await;
    app.request(
        "POST",
        "/v1/samples",
        Some(&batch(
            "node-6",
            &ago(1),
            vec![job_sample("600", Some(12.5), 1 << 20, &ago(2))],
        )),
        &[],
    )
    .await
    .expect(200);
    let events = app.store.events_after(after, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, "job_sample");
    assert_eq!(events[0].job_id.as_deref(), Some("600"));
    assert_eq!(events[0].payload["job"]["user"], "carol");
    assert_eq!(events[0].payload["sample"]["cpu_usage"], 12.5);
    assert_eq!(events[0].payload["sample"]["node"], "node-6");
    assert_eq!(events[1].kind, "node_updated");
    assert_eq!(events[1].job_id, None);
    assert_eq!(events[1].payload["node"]["name"], "node-6");
    assert_eq!(events[1].payload["node"]["running_jobs"], 1);

    // The log refers to the stored sample rather than copying it: read back, the event carries
    // the sample exactly as the API serves it, every figure, GPUs and pressure included.
    let stored = app.get("/v1/jobs/600/metrics").await.expect(200);
    let sample = &stored["samples"][0];
    assert_eq!(sample["gpus"][0]["uuid"], "GPU-aaaa", "{stored}");
    assert_eq!(
        sample["pressure"]["cpu"]["some_total_usec"], 1234,
        "{stored}"
    );
    assert_eq!(&events[0].payload["sample"], sample);
    assert_eq!(
        events[0]
            .payload
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["correlation_id", "job", "job_id", "sample"]
    );

    // A deleted job takes its samples with it; its sample events stay in the log, in order,
    // with no figures left to tell.
    app.write("DELETE", "/v1/jobs/600", None).await.expect(204);
    assert_eq!(app.sample_rows("600").await, 0);
    let events = app.store.events_after(after, 10).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["job_sample", "node_updated", "job_deleted"]);
    assert!(
        events[0].payload["sample"].is_null(),
        "{}",
        events[0].payload
    );
    assert_eq!(events[0].payload["job"]["user"], "carol");
});

on_both_backends!(a_batch_sent_twice_is_stored_once, |app| {
    app.start_job("700", "alice", &["node-7"]).await;
    let body = batch(
        "node-7",
        &ago(1),
        vec![
            job_sample("700", Some(20.0), 1 << 20, &ago(20)),
            job_sample("700", Some(40.0), 1 << 20, &ago(5)),
        ],
    );
    let first = app
        .request("POST", "/v1/samples", Some(&body), &[])
        .await
        .expect(200);
    assert_eq!(
        (first["accepted"].as_i64(), first["duplicates"].as_i64()),
        (Some(2), Some(0))
    );
    let events = app.event_count().await;
    // The agent timed out waiting for that answer and sends the batch again.
    let again = app
        .request("POST", "/v1/samples", Some(&body), &[])
        .await
        .expect(200);
    assert_eq!(
        (again["accepted"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(2))
    );
    let job = app.get("/v1/jobs/700").await.expect(200);
    assert_eq!(job["sample_count"], 2);
    assert_eq!(job["avg_cpu_usage"], 30.0);
    assert_eq!(
        app.get("/v1/jobs/700/metrics").await.expect(200)["total"],
        2
    );
    assert_eq!(
        app.event_count().await,
        events + 1,
        "only the node's update, no sample events"
    );
});

// A batch may carry up to 10,000 job samples, and each stored one appends an event: the event
// rows must not exceed a statement's bound-parameter limit (SQLite's is 32,766, four per event).
on_both_backends!(a_full_batch_stores_every_sample_and_event, |app| {
    app.start_job("200", "alice", &["node-9"]).await;
    let events_before = app.event_count().await;
    let at = ago(5);
    // Distinct instants: a node's sample of a job at one instant is stored once.
    let base = chrono::Utc::now() - chrono::Duration::seconds(20);
    let jobs: Vec<Value> = (0..9_000)
        .map(|i| {
            let collected = (base + chrono::Duration::milliseconds(i)).to_rfc3339();
            json!({"job_id": "200", "collected_at": collected, "memory_current_bytes": 1u64 << 30})
        })
        .collect();
    let answer = app
        .request(
            "POST",
            "/v1/samples",
            Some(&batch("node-9", &at, jobs)),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(answer["accepted"], 9_000, "{answer}");
    assert_eq!(app.event_count().await, events_before + 9_001);
    let job = app.get("/v1/jobs/200").await.expect(200);
    assert_eq!(job["sample_count"], 9_000);
    assert_eq!(job["memory_usage_bytes"], 1u64 << 30);
});

// Straight through the store, the way the agent's batches go: every figure a sample can carry,
// and none of them, comes back as it was sent (NULLs included: PostgreSQL takes them in its
// binary COPY format), and a repeated batch is counted as duplicates without touching the
// aggregates.
on_both_backends!(
    every_figure_round_trips_and_a_repeat_is_a_duplicate,
    |app| {
        use jobscope::collector::{GpuReading, GpuVendor};
        use jobscope::domain::usage::{Pressure, PressureFigures};
        use jobscope::domain::{MetricSample, SampleDetail};
        use jobscope::store::{LatePolicy, SampleItem, SampleQuery};

        app.start_job("800", "dave", &["node-8"]).await;
        let at = jobscope::domain::now_micros() - chrono::Duration::seconds(30);
        let psi = PressureFigures {
            some_avg10: 0.25,
            some_total_usec: 987_654,
        };
        let full = MetricSample {
            timestamp: at,
            cpu_usage: Some(12.5),
            memory_usage_mb: Some(512),
            gpu_usage: Some(80.0),
            detail: SampleDetail {
                node: Some("node-8".into()),
                cpu_time_seconds: Some(100.25),
                cpu_user_seconds: Some(90.5),
                cpu_system_seconds: Some(9.75),
                cpu_throttled_seconds: Some(0.5),
                cpu_nr_throttled: Some(3),
                memory_usage_bytes: Some(512 << 20),
                memory_peak_bytes: Some(600 << 20),
                memory_limit_bytes: Some(1 << 30),
                memory_anon_bytes: Some(400 << 20),
                memory_file_bytes: Some(100 << 20),
                memory_shmem_bytes: Some(1 << 20),
                oom_kills: Some(0),
                io_read_bytes: Some(4096),
                io_write_bytes: Some(8192),
                io_read_ops: Some(7),
                io_write_ops: Some(9),
                pids: Some(12),
                pressure: Some(Pressure {
                    cpu: Some(psi),
                    memory: None,
                    io: Some(psi),
                }),
                gpus: vec![GpuReading {
                    uuid: Some("GPU-cccc".into()),
                    utilization_percent: Some(80.0),
                    processes: vec![4242],
                    ..GpuReading::new(0, GpuVendor::Nvidia)
                }],
            },
        };
        let bare = MetricSample {
            timestamp: at + chrono::Duration::seconds(15),
            cpu_usage: None,
            memory_usage_mb: None,
            gpu_usage: None,
            detail: SampleDetail {
                node: Some("node-8".into()),
                ..SampleDetail::default()
            },
        };
        let items: Vec<SampleItem> = [&full, &bare]
            .into_iter()
            .map(|sample| SampleItem {
                job_id: "800".into(),
                sample: sample.clone(),
            })
            .collect();

        let first = app
            .store
            .ingest_samples(&items, None, LatePolicy::UntilJobEnd)
            .await
            .unwrap();
        assert_eq!((first.accepted, first.duplicates), (2, 0), "{first:?}");
        let events = app.event_count().await;
        let again = app
            .store
            .ingest_samples(&items, None, LatePolicy::UntilJobEnd)
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 2), "{again:?}");
        assert_eq!(app.event_count().await, events, "no events for duplicates");

        let query = SampleQuery {
            start: None,
            end: None,
            limit: 10,
        };
        let (stored, total) = app.store.list_samples("800", &query).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(
            stored,
            vec![bare, full.clone()],
            "newest first, every figure as sent"
        );

        let job = app.get("/v1/jobs/800").await.expect(200);
        assert_eq!(job["sample_count"], 2);
        assert_eq!(
            job["avg_cpu_usage"], 12.5,
            "the bare sample has no CPU figure"
        );
        assert_eq!(job["max_memory_usage_bytes"], 600u64 << 20);

        // A batch part stored, part new (a spooled batch that overlaps one that got through):
        // the stored sample is a duplicate, the new one is stored with its event, and its GPUs
        // become the job's. (On PostgreSQL the batch's COPY fails on the stored row and the
        // batch goes again as an INSERT that skips it.)
        let newer = MetricSample {
            timestamp: at + chrono::Duration::seconds(20),
            gpu_usage: Some(55.0),
            detail: SampleDetail {
                gpus: vec![GpuReading {
                    uuid: Some("GPU-dddd".into()),
                    utilization_percent: Some(55.0),
                    ..GpuReading::new(1, GpuVendor::Nvidia)
                }],
                ..full.detail.clone()
            },
            ..full.clone()
        };
        let mixed = [&full, &newer].map(|sample| SampleItem {
            job_id: "800".into(),
            sample: sample.clone(),
        });
        let third = app
            .store
            .ingest_samples(&mixed, None, LatePolicy::UntilJobEnd)
            .await
            .unwrap();
        assert_eq!((third.accepted, third.duplicates), (1, 1), "{third:?}");
        assert_eq!(
            app.event_count().await,
            events + 1,
            "one event, the new sample's"
        );
        let (stored, total) = app.store.list_samples("800", &query).await.unwrap();
        assert_eq!((total, &stored[0]), (3, &newer), "the new sample as sent");
        let job = app.get("/v1/jobs/800").await.expect(200);
        assert_eq!(job["sample_count"], 3);
        assert_eq!(job["gpus"][0]["uuid"], "GPU-dddd", "{job}");
    }
);

on_both_backends!(
    batches_of_two_nodes_sharing_jobs_are_stored_side_by_side,
    |app| {
        // Two multi-node jobs reported by both of their nodes, each node listing them in its own
        // order, the two batches stored at the same time: every sample is stored and counted
        // once. (The store updates job rows in id order so that such transactions cannot
        // deadlock; with two jobs PostgreSQL's plan locks them in table order anyway, so this
        // checks the outcome, not the ordering.)
        app.start_job("800", "dana", &["node-a", "node-b"]).await;
        app.start_job("801", "dana", &["node-a", "node-b"]).await;
        for round in 0..20i64 {
            let at = ago(300 - round * 10);
            let a = batch(
                "node-a",
                &at,
                vec![
                    job_sample("800", Some(10.0), 1 << 20, &at),
                    job_sample("801", Some(20.0), 1 << 20, &at),
                ],
            );
            let b = batch(
                "node-b",
                &at,
                vec![
                    job_sample("801", Some(30.0), 1 << 20, &at),
                    job_sample("800", Some(40.0), 1 << 20, &at),
                ],
            );
            let (ra, rb) = tokio::join!(
                app.request("POST", "/v1/samples", Some(&a), &[]),
                app.request("POST", "/v1/samples", Some(&b), &[]),
            );
            assert_eq!(ra.expect(200)["accepted"], 2, "round {round}");
            assert_eq!(rb.expect(200)["accepted"], 2, "round {round}");
        }
        for id in ["800", "801"] {
            let job = app.get(&format!("/v1/jobs/{id}")).await.expect(200);
            assert_eq!(job["sample_count"], 40, "{job}");
        }
    }
);

// Only PostgreSQL stores a batch while a job is being deleted (SQLite writes one transaction at a
// time). The deletion below holds the job's row, as `DELETE /v1/jobs/{id}` does, when the batch
// reaches it: the batch waits, finds the job gone, takes its samples back out and rejects them
// as of an unknown job, and stores the other job's sample as usual.
#[tokio::test]
async fn a_job_deleted_while_its_batch_is_stored_keeps_no_samples_postgres() {
    use jobscope::domain::{MetricSample, SampleDetail};
    use jobscope::store::{LatePolicy, SampleItem, SampleRejection};
    use sqlx::Connection;
    if common::skip_postgres() {
        eprintln!("JOBSCOPE_TEST_SKIP_POSTGRES=1: PostgreSQL test skipped on request");
        return;
    }
    let app = common::TestApp::new(common::Backend::Postgres).await;
    app.start_job("900", "erin", &["node-9"]).await;
    app.start_job("901", "erin", &["node-9"]).await;

    let mut deleting = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; DELETE FROM jobs WHERE id = '900'")
        .execute(&mut deleting)
        .await
        .unwrap();
    let at = jobscope::domain::now_micros() - chrono::Duration::seconds(10);
    let items = ["900", "901"].map(|id| SampleItem {
        job_id: id.into(),
        sample: MetricSample {
            timestamp: at,
            cpu_usage: Some(50.0),
            memory_usage_mb: Some(64),
            gpu_usage: None,
            detail: SampleDetail {
                node: Some("node-9".into()),
                ..SampleDetail::default()
            },
        },
    });
    let store = app.store.clone();
    let batch = tokio::spawn(async move {
        store
            .ingest_samples(&items, None, LatePolicy::UntilJobEnd)
            .await
    });

    // The batch is waiting for the deletion's row lock before the deletion goes on.
    let mut watching = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let waited_from = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watching)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            waited_from.elapsed() < std::time::Duration::from_secs(10),
            "the batch never waited for the deleted job's row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::raw_sql("DELETE FROM metric_samples WHERE job_id = '900'; COMMIT")
        .execute(&mut deleting)
        .await
        .unwrap();

    let outcome = batch.await.unwrap().expect("the batch is stored");
    assert_eq!(outcome.accepted, 1, "{outcome:?}");
    assert_eq!(outcome.rejected, vec![(0, SampleRejection::UnknownJob)]);
    assert_eq!(
        app.sample_rows("900").await,
        0,
        "no sample outlives its job"
    );
    assert_eq!(app.sample_rows("901").await, 1);
    let job = app.get("/v1/jobs/901").await.expect(200);
    assert_eq!(job["sample_count"], 1);
    app.finish().await;
}

on_both_backends!(
    sample_events_keep_only_the_state_and_read_back_whole,
    |app| {
        let post = |node: &'static str, id: &'static str| async move {
            let body = batch(
                node,
                &ago(1),
                vec![job_sample(id, Some(40.0), 1 << 20, &ago(2))],
            );
            app.request("POST", "/v1/samples", Some(&body), &[])
                .await
                .expect(200);
        };
        let after = app.event_count().await;
        app.start_job("700", "dave", &["node-7"]).await;
        post("node-7", "700").await;
        // The log keeps the batch as one row of job ids, sample ids and states (issue 19: the
        // summary was most of a row, and a row per sample more than the packed sample).
        let stored = app
            .count(
                "SELECT COUNT(*) FROM events WHERE job_id IS NULL AND kind = 'job_samples' \
             AND CAST(payload AS TEXT) LIKE '{\"job_ids\":[\"' || $1 || '\"],\"sample_ids\":[%],\"states\":[\"running\"]}'",
                "700",
            )
            .await;
        assert_eq!(stored, 1);
        // The same id deleted and used again: each incarnation's samples keep their own job.
        app.write("DELETE", "/v1/jobs/700", None).await.expect(204);
        app.start_job("700", "erin", &["node-8"]).await;
        post("node-8", "700").await;
        let events = app.store.events_after(after, 100).await.unwrap();
        let samples: Vec<&Value> = events
            .iter()
            .filter(|e| e.kind.as_str() == "job_sample")
            .map(|e| &e.payload)
            .collect();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0]["job"]["user"], "dave");
        assert_eq!(samples[0]["job"]["nodes"], json!(["node-7"]));
        assert!(samples[0]["sample"].is_null(), "gone with the first job");
        assert_eq!(samples[1]["job"]["user"], "erin");
        assert_eq!(samples[1]["job"]["nodes"], json!(["node-8"]));
        assert_eq!(samples[1]["sample"]["node"], "node-8");
        for s in &samples {
            let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["correlation_id", "job", "job_id", "sample"]);
            assert_eq!(s["job"]["state"], "running");
        }
    }
);

on_both_backends!(
    a_batch_is_one_log_row_and_each_sample_keeps_its_own_event_id,
    |app| {
        for (id, user) in [("900", "alice"), ("901", "bob"), ("902", "carol")] {
            app.start_job(id, user, &["node-9"]).await;
        }
        let before = app.event_count().await;
        // Five samples, two of them a job's second: each one's figures must come back on the
        // event of its own place in the batch.
        let sent = [
            ("900", 10.0, 30),
            ("901", 20.0, 30),
            ("902", 30.0, 30),
            ("900", 40.0, 15),
            ("901", 50.0, 15),
        ];
        let jobs = sent
            .iter()
            .map(|&(id, cpu, age)| job_sample(id, Some(cpu), 1 << 20, &ago(age)))
            .collect();
        app.request(
            "POST",
            "/v1/samples",
            Some(&batch("node-9", &ago(1), jobs)),
            &[],
        )
        .await
        .expect(200);
        let rows = app
            .count(
                "SELECT COUNT(*) FROM events WHERE kind = 'job_samples' AND $1 = ''",
                "",
            )
            .await;
        assert_eq!(rows, 1, "the batch's samples share one log row");

        let events = app.store.events_after(before, 100).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "job_sample",
                "job_sample",
                "job_sample",
                "job_sample",
                "job_sample",
                "node_updated"
            ]
        );
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        for pair in ids.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "one id per event, unbroken: {ids:?}");
        }
        assert!(ids[0] > before);
        assert_eq!(
            app.event_count().await,
            ids[5],
            "the newest id is the node's event's"
        );
        for (event, &(job, cpu, _)) in events.iter().zip(&sent) {
            assert_eq!(event.job_id.as_deref(), Some(job));
            assert_eq!(event.payload["job_id"], job);
            assert_eq!(event.payload["job"]["state"], "running");
            assert_eq!(event.payload["job"]["nodes"], json!(["node-9"]));
            assert_eq!(
                event.payload["sample"]["cpu_usage"], cpu,
                "{}",
                event.payload
            );
            assert_eq!(event.payload["sample"]["node"], "node-9");
        }

        // A reader that stopped inside the batch goes on from the next sample; a short page
        // ends inside the batch and the next one takes up from there.
        let resumed = app.store.events_after(ids[1], 100).await.unwrap();
        assert_eq!(resumed.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
        assert_eq!(resumed[0].payload["sample"]["cpu_usage"], 30.0);
        let mut paged = Vec::new();
        let mut cursor = before;
        loop {
            let page = app.store.events_after(cursor, 2).await.unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            cursor = last.id;
            paged.extend(page.iter().map(|e| (e.id, e.payload.clone())));
        }
        assert_eq!(paged.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
        assert_eq!(
            paged.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
            events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>()
        );

        // A job deleted since: its events keep the summary of the job they were logged for,
        // and their samples are gone with it.
        app.write("DELETE", "/v1/jobs/901", None).await.expect(204);
        let after_delete = app.store.events_after(before, 100).await.unwrap();
        let bob: Vec<&Value> = after_delete
            .iter()
            .filter(|e| e.kind.as_str() == "job_sample" && e.job_id.as_deref() == Some("901"))
            .map(|e| &e.payload)
            .collect();
        assert_eq!(bob.len(), 2);
        for p in bob {
            assert_eq!(p["job"]["user"], "bob");
            assert!(p["sample"].is_null(), "{p}");
        }
    }
);

on_both_backends!(batches_stored_at_once_never_share_an_event_id, |app| {
    let nodes: Vec<String> = (0..8).map(|n| format!("node-{n}")).collect();
    for (n, node) in nodes.iter().enumerate() {
        for j in 0..3 {
            app.start_job(&format!("{n}{j}"), "dave", &[node.as_str()])
                .await;
        }
    }
    let before = app.event_count().await;
    for round in 0..3 {
        let posts = nodes.iter().enumerate().map(|(n, node)| {
            let jobs = (0..3)
                .map(|j| {
                    job_sample(
                        &format!("{n}{j}"),
                        Some(1.0),
                        1 << 20,
                        &ago(40 - round * 10),
                    )
                })
                .collect();
            let body = batch(node, &ago(1), jobs);
            async move {
                app.request("POST", "/v1/samples", Some(&body), &[])
                    .await
                    .expect(200);
            }
        });
        futures_util::future::join_all(posts).await;
    }
    let events = app.store.events_after(before, 1000).await.unwrap();
    let samples = events
        .iter()
        .filter(|e| e.kind.as_str() == "job_sample")
        .count();
    assert_eq!(samples, 8 * 3 * 3);
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "ids rise: {ids:?}");
    assert_eq!(app.event_count().await, *ids.last().unwrap());
    for e in events.iter().filter(|e| e.kind.as_str() == "job_sample") {
        assert_eq!(e.payload["sample"]["cpu_usage"], 1.0);
    }
});
