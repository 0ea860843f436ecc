//! Efficiency reports through the real router, on SQLite and on PostgreSQL:
//! `GET /v1/jobs/{id}/report` from stored samples (CPU time against the allocation, memory peak
//! against the request, advice), `GET /v1/reports` worst first with totals, and bad input.

mod common;

use serde_json::{json, Value};

fn at(seconds_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds_ago)).to_rfc3339()
}

/// A batch of one sample of `job` on `node`: `cpu_s` CPU seconds so far, `mem` bytes in use.
fn batch(node: &str, job: &str, seconds_ago: i64, cpu_s: f64, mem: u64) -> Value {
    let t = at(seconds_ago);
    json!({
        "node": node, "collected_at": t, "interval_seconds": 15,
        "jobs": [{"job_id": job, "collected_at": t, "cpu_usage_usec": (cpu_s * 1e6) as u64,
                  "memory_current_bytes": mem, "memory_peak_bytes": mem, "oom_kills": 0,
                  "io_read_bytes": 1 << 20, "io_write_bytes": 1 << 10,
                  "gpus": [
                      {"index": 0, "uuid": "GPU-a", "vendor": "nvidia", "utilization_percent": 90,
                       "memory_used_bytes": 1000 + cpu_s as u64, "memory_total_bytes": 80000,
                       "energy_joules": 100.0 * cpu_s, "processes": []},
                      {"index": 1, "uuid": "GPU-b", "vendor": "nvidia", "utilization_percent": 0.5,
                       "memory_used_bytes": 0, "memory_total_bytes": 80000, "processes": []}]}],
        "node_stats": {"cpu_count": 8}
    })
}

/// A job of `user` on 2 CPUs and 1 GiB that ran 200 s and kept one CPU busy, at 200 MB.
async fn half_busy_job(app: &common::TestApp, id: &str, user: &str) {
    let started = json!({"job_id": id, "user": user, "node_list": ["n1"], "timestamp": at(200),
                         "cpu_allocation": 2, "memory_allocation_mb": 1024, "account": "phys"});
    app.post_event("job-started", &started).await.expect(200);
    for (ago, cpu) in [(150, 50.0), (100, 100.0), (1, 199.0)] {
        let reply = app
            .request(
                "POST",
                "/v1/samples",
                Some(&batch("n1", id, ago, cpu, 200_000_000)),
                &[],
            )
            .await
            .expect(200);
        assert_eq!(reply["accepted"], 1, "{reply}");
    }
    let finished = json!({"job_id": id, "exit_code": 0, "timestamp": at(0)});
    app.post_event("job-finished", &finished).await.expect(200);
}

on_both_backends!(
    a_finished_jobs_report_measures_it_against_its_allocation,
    |app| {
        half_busy_job(app, "r1", "alice").await;
        let r = app.get("/v1/jobs/r1/report").await.expect(200);
        assert_eq!(r["provisional"], false, "{r}");
        let efficiency = r["cpu"]["efficiency"].as_f64().unwrap();
        assert!((efficiency - 0.5).abs() < 0.02, "{r}");
        assert_eq!(r["cpu"]["method"], "cpu_time", "{r}");
        let memory = r["memory"]["use_ratio"].as_f64().unwrap();
        assert!((memory - 200e6 / (1u64 << 30) as f64).abs() < 0.001, "{r}");
        assert_eq!(r["memory"]["oom_killed"], false);
        assert_eq!(r["io"]["read_bytes"], 1 << 20);
        assert_eq!(r["account"], "phys");
        let advice: Vec<&str> = r["advice"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["text"].as_str().unwrap())
            .collect();
        assert!(
            advice
                .iter()
                .any(|a| a.starts_with("peak memory was 19 % of the request")),
            "{advice:?}"
        );
        // 199 CPU seconds of 2 CPUs × 200 s: just under the 50 % threshold.
        assert!(
            advice.iter().any(
                |a| a.starts_with("asked for 2 CPUs, kept 1.0 busy on average")
                    && a.ends_with("next time ask for 1")
            ),
            "{advice:?}"
        );
        assert!(r["grade"].is_string(), "{r}");
        // Each GPU from every sample's list, summarized by the database.
        let devices = r["gpu"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 2, "{r}");
        assert_eq!(devices[0]["uuid"], "GPU-a");
        assert_eq!(devices[0]["utilization_mean"], 90.0);
        assert_eq!(devices[0]["memory_peak_bytes"], 1199);
        assert_eq!(devices[0]["energy_joules"], 100.0 * (199.0 - 50.0));
        assert_eq!(devices[0]["idle"], false);
        assert_eq!(devices[1]["idle"], true, "{r}");
        assert_eq!(devices[1]["utilization_max"], 0.5);
        assert!(
            advice
                .iter()
                .any(|a| a.starts_with("GPU 1 on n1 was never used")),
            "{advice:?}"
        );

        app.get("/v1/jobs/nope/report")
            .await
            .expect_error(404, "not_found", "Job not found");
    }
);

on_both_backends!(a_running_jobs_report_is_provisional, |app| {
    app.start_job("r2", "bob", &["n1"]).await;
    let r = app.get("/v1/jobs/r2/report").await.expect(200);
    assert_eq!(r["provisional"], true, "{r}");
    assert_eq!(r["samples"], 0);
    assert_eq!(r["not_measured"], json!(["CPU usage", "memory"]), "{r}");
    assert_eq!(r["advice"], json!([]));
});

on_both_backends!(the_reports_list_is_worst_first_with_totals, |app| {
    half_busy_job(app, "w1", "alice").await;
    // A job of alice that wasted more: 16 CPUs, the same one busy.
    let started = json!({"job_id": "w2", "user": "alice", "node_list": ["n2"], "timestamp": at(200),
                         "cpu_allocation": 16, "memory_allocation_mb": 1024});
    app.post_event("job-started", &started).await.expect(200);
    app.request(
        "POST",
        "/v1/samples",
        Some(&batch("n2", "w2", 1, 199.0, 1 << 29)),
        &[],
    )
    .await
    .expect(200);
    app.post_event(
        "job-finished",
        &json!({"job_id": "w2", "exit_code": 0, "timestamp": at(0)}),
    )
    .await
    .expect(200);
    half_busy_job(app, "w3", "carol").await;

    let list = app.get("/v1/reports?user=alice&since=1d").await.expect(200);
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["w2", "w1"], "{list}");
    let totals = &list["totals"];
    assert_eq!(totals["jobs"], 2);
    let allocated = totals["cpu_hours_allocated"].as_f64().unwrap();
    // 18 CPUs for 200 s: one CPU-hour.
    assert!((allocated - 1.0).abs() < 0.01, "{list}");
    let unused = totals["cpu_hours_unused"].as_f64().unwrap();
    assert!(
        (unused - (18.0 * 200.0 - 2.0 * 199.0) / 3600.0).abs() < 0.01,
        "{list}"
    );
    let everyone = app.get("/v1/reports").await.expect(200);
    assert_eq!(everyone["totals"]["jobs"], 3, "{everyone}");

    app.get("/v1/reports?since=yesterday").await.expect_error(
        400,
        "validation_error",
        "since must be an RFC 3339 time or an age like 7d, 24h or 90m, not \"yesterday\"",
    );
    let reply = app.get("/v1/reports?sort=best").await;
    reply.expect_error(400, "validation_error", "sort must be waste or start");
});

// Found by scripts/fuzz-api.sh on PostgreSQL: a sample of 9e12 MB was stored, and the report's
// SQL (MB × 2^20 as bytes) then overflowed bigint and answered 500. Memory figures now stop at
// 1 EiB, and a report over the largest allowed figure is still computed.
on_both_backends!(
    memory_figures_are_bounded_so_a_report_never_overflows,
    |app| {
        let started =
            json!({"job_id": "huge", "user": "alice", "node_list": ["n1"], "timestamp": at(60)});
        app.post_event("job-started", &started).await.expect(200);
        let audit = [("X-Changed-By", "test"), ("X-Source", "test")];
        app.request(
            "POST",
            "/v1/jobs/huge/metrics",
            Some(&json!({"cpu_usage": 10, "memory_usage_mb": 9.0e12})),
            &audit,
        )
        .await
        .expect_error(
            400,
            "validation_error",
            "Memory usage must be at most 1099511627776 MB (1 EiB)",
        );
        app.request(
            "POST",
            "/v1/jobs/huge/metrics",
            Some(&json!({"cpu_usage": 10, "memory_usage_mb": 1099511627776_i64})),
            &audit,
        )
        .await
        .expect(201);
        let r = app.get("/v1/jobs/huge/report").await.expect(200);
        assert_eq!(r["memory"]["peak_bytes"], 1_i64 << 60, "{r}");
    }
);
