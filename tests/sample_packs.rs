//! Sample packs (issue 19) through the real router and store, on SQLite and on PostgreSQL: a
//! closed hour's rows move into packs, and every reader answers exactly as before (the samples
//! route with its pages, ranges and counts; the event log's replay); late and resent samples
//! join their hour's pack once; retention and job deletion take packs with them.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use jobscope::domain::report::Thresholds;
use serde_json::{json, Value};

/// Midnight UTC `days` days ago.
fn midnight(days: i64) -> DateTime<Utc> {
    (Utc::now() - Duration::days(days))
        .duration_trunc(Duration::days(1))
        .unwrap()
}

/// One agent sample with every figure an agent sends, moving with `i`.
fn item(id: &str, at: DateTime<Utc>, i: u64, gpu: bool) -> Value {
    let mut v = json!({
        "job_id": id, "collected_at": at.to_rfc3339(),
        "cpu_usage_percent": 12.5 + (i as f64) / 3.0,
        "cpu_usage_usec": 1_000_000 * i + 17, "cpu_user_usec": 900_000 * i,
        "cpu_system_usec": 100_000 * i, "cpu_nr_throttled": i / 4, "cpu_throttled_usec": 333 * i,
        "memory_current_bytes": (1u64 << 30) + 4096 * i, "memory_peak_bytes": (1u64 << 31),
        "memory_limit_bytes": 4u64 << 30, "memory_anon_bytes": 7_000 * i,
        "memory_file_bytes": 5_000, "memory_shmem_bytes": 0, "oom_kills": 0,
        "io_read_bytes": 65_536 * i, "io_write_bytes": 1 << 20, "io_read_ops": 3 * i,
        "io_write_ops": 9, "pids_current": 30 + i % 3,
    });
    if i.is_multiple_of(2) {
        v["cpu_pressure"] = json!({"some_avg10": 0.25 * i as f64, "some_total_usec": 1000 * i});
    }
    if gpu {
        v["gpus"] = json!([{"index": 0, "uuid": "GPU-0a", "vendor": "nvidia",
            "utilization_percent": 40.0 + (i % 50) as f64, "memory_used_bytes": 1000 * i,
            "memory_total_bytes": 80u64 << 30, "energy_joules": 100.5 * i as f64, "processes": [7]}]);
    }
    v
}

async fn send(app: &common::TestApp, node: &str, items: Vec<Value>) -> Value {
    let at = items[0]["collected_at"].clone();
    let body = json!({"node": node, "collected_at": at, "interval_seconds": 15, "jobs": items});
    app.request("POST", "/v1/samples", Some(&body), &[])
        .await
        .expect(200)
}

/// Sends `items`, each of which must be stored.
async fn store_all(app: &common::TestApp, node: &str, items: Vec<Value>) {
    let n = items.len();
    let reply = send(app, node, items).await;
    assert_eq!(reply["accepted"], n, "{reply}");
}

/// Job `p1` on nodes a and b, started three days ago: node a sampled every 10 minutes from
/// 22:00 three days ago to 02:00 two days ago, with a GPU; node b three times between 22:00 and
/// 22:30; and one sample a minute ago (its hour is not closed: it stays a row).
async fn job_over_two_days(app: &common::TestApp) -> (DateTime<Utc>, usize) {
    let day2 = midnight(2);
    let from = day2 - Duration::hours(2);
    let body = json!({"job_id": "p1", "user": "alice", "node_list": ["a", "b"],
                      "timestamp": (from - Duration::minutes(5)).to_rfc3339(), "cpu_allocation": 4});
    app.post_event("job-started", &body).await.expect(200);
    let mut sent = 0;
    for i in 0..25u64 {
        let at = from + Duration::minutes(10 * i as i64);
        store_all(app, "a", vec![item("p1", at, i, true)]).await;
        sent += 1;
    }
    for i in 0..3u64 {
        let at = from + Duration::minutes(7 + 11 * i as i64);
        store_all(app, "b", vec![item("p1", at, i, false)]).await;
        sent += 1;
    }
    store_all(
        app,
        "a",
        vec![item("p1", Utc::now() - Duration::minutes(1), 99, true)],
    )
    .await;
    sent += 1;
    (from, sent)
}

/// What the samples route answers for `query`.
async fn samples(app: &common::TestApp, query: &str) -> Value {
    app.get(&format!("/v1/jobs/p1/metrics?{query}"))
        .await
        .expect(200)
}

/// The `job_sample` events of the log, as the feed reads them.
async fn sample_events(app: &common::TestApp) -> Vec<Value> {
    let events = app.store.events_after(0, 100_000).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.kind.as_str() == "job_sample")
        .map(|e| e.payload)
        .collect()
}

on_both_backends!(closed_hours_are_packed_and_read_back_unchanged, |app| {
    let (from, sent) = job_over_two_days(app).await;
    let enc = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    let queries = [
        "limit=10000".to_owned(),
        "limit=5".to_owned(),
        "limit=1".to_owned(),
        format!(
            "start_time={}&end_time={}",
            enc(from + Duration::minutes(65)),
            enc(from + Duration::hours(3))
        ),
        format!("start_time={}&limit=4", enc(from + Duration::minutes(100))),
        format!("end_time={}", enc(from + Duration::minutes(30))),
        "resolution=5m".to_owned(),
    ];
    let mut before = Vec::new();
    for q in &queries {
        before.push(samples(app, q).await);
    }
    assert_eq!(before[0]["total"], sent);
    let events_before = sample_events(app).await;
    assert_eq!(events_before.len(), sent);
    assert!(events_before.iter().all(|e| e["sample"].is_object()));

    let pass = app
        .store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    assert_eq!(pass.samples as usize, sent - 1, "all but today's sample");
    // Node a in five hours (22:00 to 02:00), node b in one.
    assert_eq!(pass.packs, 6);
    assert_eq!(app.sample_rows("p1").await, 1);
    assert_eq!(app.rows_of("sample_packs", "p1").await, 6);

    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&samples(app, q).await, expected, "GET metrics?{q}");
    }
    assert_eq!(sample_events(app).await, events_before);

    // A second pass finds nothing to do.
    let again = app
        .store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    assert_eq!((again.samples, again.packs), (0, 0));
});

on_both_backends!(late_and_resent_samples_join_their_hours_pack_once, |app| {
    let (from, sent) = job_over_two_days(app).await;
    app.store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    // An agent's spool, days late: one new sample of the packed first day, and one that the
    // pack already holds (same node, same instant).
    let reply = send(
        app,
        "a",
        vec![
            item("p1", from + Duration::minutes(5), 50, true),
            item("p1", from + Duration::minutes(10), 1, true),
        ],
    )
    .await;
    assert_eq!(
        reply["accepted"], 2,
        "the rows table cannot see the packs: {reply}"
    );
    let pass = app
        .store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    assert_eq!(pass.samples, 2);
    assert_eq!(pass.packs, 1, "node a's first hour is packed again");
    assert_eq!(app.rows_of("sample_packs", "p1").await, 6);
    let all = samples(app, "limit=10000").await;
    assert_eq!(all["total"], sent + 1, "the resent sample is there once");
    let late = &all["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["cpu_time_seconds"] == json!(50.000017))
        .count();
    assert_eq!(*late, 1);
});

on_both_backends!(retention_and_deletion_take_the_packs, |app| {
    let (_, sent) = job_over_two_days(app).await;
    app.store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    // The packs before midnight go: node b's, and node a's of 22:00 and 23:00.
    let (samples_gone, _) = app.store.prune(midnight(2)).await.unwrap();
    assert_eq!(
        samples_gone,
        3 + 12,
        "node b's 3 and node a's 12 before midnight"
    );
    assert_eq!(app.rows_of("sample_packs", "p1").await, 3);
    let left = samples(app, "limit=10000").await;
    assert_eq!(left["total"], sent - 15);
    for s in left["samples"].as_array().unwrap() {
        let at: DateTime<Utc> = s["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(at >= midnight(2), "{at} is past retention");
    }
    app.write("DELETE", "/v1/jobs/p1", None).await.expect(204);
    assert_eq!(app.rows_of("sample_packs", "p1").await, 0);
});

on_both_backends!(
    retention_deletes_in_chunks_until_nothing_old_is_left,
    |app| {
        // More old event rows than several pruning statements take (2,000 each), and one that stays.
        let old = Utc::now() - Duration::days(30);
        let inserted = app
            .execute(
                "INSERT INTO events (occurred_at, kind, job_id, payload) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12001) \
             SELECT $1, 'job_created', NULL, '{}' FROM n",
                Some(old),
            )
            .await;
        assert_eq!(inserted, 12_001);
        app.start_job("keep", "alice", &["a"]).await;
        let (_, events) = app
            .store
            .prune(Utc::now() - Duration::days(1))
            .await
            .unwrap();
        assert_eq!(events, 12_001);
        let left = app.store.events_after(0, 100).await.unwrap();
        assert_eq!(left.len(), 1, "the new job's event stays");
        assert_eq!(left[0].job_id.as_deref(), Some("keep"));
    }
);

on_both_backends!(reports_read_packs_as_they_read_rows, |app| {
    job_over_two_days(app).await;
    let body = json!({"job_id": "p1", "exit_code": 0, "timestamp": Utc::now().to_rfc3339()});
    app.post_event("job-finished", &body).await.expect(200);
    let report = || async {
        let mut r = app.get("/v1/jobs/p1/report").await.expect(200);
        r.as_object_mut().unwrap().remove("computed_at");
        r
    };
    let list = || async {
        app.get("/v1/reports?since=7d")
            .await
            .expect(200)
            .get("jobs")
            .cloned()
    };
    // Another site's idle threshold: the packs' digests, counted at the default, do not fit.
    let strict = Thresholds {
        gpu_idle_percent: 45.0,
        ..Thresholds::default()
    };
    let inputs = |t: Thresholds| async move {
        let job = app.store.get_job("p1").await.unwrap();
        app.store.report_inputs(&job, &t).await.unwrap()
    };
    let (before, listed, strict_before) =
        (report().await, list().await, inputs(strict.clone()).await);
    assert_eq!(before["samples"], 29, "{before}");
    assert!(strict_before.1[0].idle_samples > 0, "{strict_before:?}");

    let pass = app
        .store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    assert_eq!(pass.packs, 6);
    assert_eq!(
        report().await,
        before,
        "from packs' digests and the newest row"
    );
    assert_eq!(list().await, listed);
    assert_eq!(
        inputs(strict.clone()).await,
        strict_before,
        "digests computed anew"
    );

    // Packs written before digests were kept: read from their samples, and the next pass fills
    // their digests in.
    let cleared = app
        .execute("UPDATE sample_packs SET digest = NULL", None)
        .await;
    assert_eq!(cleared, 6);
    assert_eq!(report().await, before, "from the packs' samples");
    let pass = app
        .store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .unwrap();
    assert_eq!((pass.samples, pass.digests), (0, 6));
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sample_packs WHERE job_id = $1 AND digest IS NULL",
            "p1"
        )
        .await,
        0
    );
    assert_eq!(report().await, before);
});
