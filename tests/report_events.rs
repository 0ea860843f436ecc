//! The verdict arrives by itself (`src/report_events.rs`), over a real socket on both
//! backends: a job finished by the epilog hook gets exactly one `job_report` event on
//! `/v1/stream/jobs` after the (test-short) grace, with its CPU efficiency; a replay with
//! `Last-Event-ID` includes it; the job's own stream ends after it.

mod common;

use common::sse::SseClient;
use common::{Backend, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

/// A stream's events as `(event id, data)` ([`SseClient`]).
struct Sse(SseClient);

impl Sse {
    async fn connect(base: &str, path: &str, last_event_id: Option<i64>) -> Sse {
        Sse::connect_as(base, path, last_event_id, None).await
    }

    async fn connect_as(
        base: &str,
        path: &str,
        last_event_id: Option<i64>,
        token: Option<&str>,
    ) -> Sse {
        Sse(SseClient::connect_as(base, path, last_event_id, token).await)
    }

    /// The next event's id and envelope; `None` at the end of the stream.
    async fn next(&mut self) -> Option<(Option<i64>, Value)> {
        self.0.next().await.map(|e| (e.id, e.data))
    }

    /// Events until one of type `kind` (inclusive).
    async fn until(&mut self, kind: &str) -> Vec<(Option<i64>, Value)> {
        let mut seen = Vec::new();
        while let Some(e) = self.next().await {
            let done = e.1["type"] == kind;
            seen.push(e);
            if done {
                return seen;
            }
        }
        panic!("stream ended before {kind}: {seen:?}");
    }
}

fn at(seconds_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds_ago)).to_rfc3339()
}

fn sample(job: &str, seconds_ago: i64, cpu_s: f64) -> Value {
    let t = at(seconds_ago);
    json!({
        "node": "n1", "collected_at": t, "interval_seconds": 15,
        "jobs": [{"job_id": job, "collected_at": t, "cpu_usage_usec": (cpu_s * 1e6) as u64,
                  "memory_current_bytes": 200_000_000u64, "memory_peak_bytes": 200_000_000u64}],
        "node_stats": {"cpu_count": 8}
    })
}

/// A job of `user` on 2 CPUs that ran 200 s keeping one CPU busy, finished by the epilog hook.
async fn half_busy_job(server: &TestServer, id: &str, user: &str) {
    server
        .post(
            "/v1/events/job-started",
            json!({"job_id": id, "user": user, "node_list": ["n1"], "timestamp": at(200),
                   "cpu_allocation": 2, "memory_allocation_mb": 1024}),
        )
        .await;
    for (ago, cpu) in [(150, 50.0), (100, 100.0), (1, 199.0)] {
        server.post("/v1/samples", sample(id, ago, cpu)).await;
    }
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": id, "exit_code": 0, "timestamp": at(0)}),
        )
        .await;
}

async fn report_events(server: &TestServer, id: &str) -> usize {
    let events = server.store.events_after(0, 10_000).await.unwrap();
    events
        .iter()
        .filter(|e| e.kind == "job_report" && e.job_id.as_deref() == Some(id))
        .count()
}

async fn one_report_after_the_grace(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut all = Sse::connect(&server.base, "/v1/stream/jobs", None).await;
    half_busy_job(&server, "r1", "alice").await;
    // Opened after the end, before the report: it replays the end and waits for the report.
    let mut own = Sse::connect(&server.base, "/v1/stream/jobs/r1?last_event_id=0", None).await;

    let seen = all.until("job_report").await;
    let (report_id, report) = seen.last().unwrap().clone();
    assert!(
        seen.iter().any(|(_, e)| e["type"] == "job_finished"),
        "the report follows job_finished: {seen:?}"
    );
    assert_eq!(report["data"]["job"]["user"], "alice", "{report}");
    let r = &report["data"]["report"];
    assert_eq!(r["job_id"], "r1", "{r}");
    assert_eq!(r["provisional"], false, "{r}");
    let efficiency = r["cpu"]["efficiency"].as_f64().expect("CPU efficiency");
    assert!((efficiency - 0.5).abs() < 0.02, "{r}");

    // While the job's series are in their grace period, /metrics carries its verdict (the
    // metrics feed follows the event log, so it may come a moment after the stream's).
    let series = "hpc_job_cpu_efficiency_ratio{job_id=\"r1\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exported = loop {
        let body = common::scrape_text(&server.base).await;
        if let Some(value) = common::series_value(&body, series) {
            break value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {series} in /metrics: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        (exported - efficiency).abs() < 1e-9,
        "{exported} vs {efficiency}"
    );

    // Exactly one: nothing more about r1 comes before a later marker event, and the log
    // holds one.
    server.started("marker", "carol").await;
    let after = all.until("job_created").await;
    assert!(
        after.iter().all(|(_, e)| e["type"] != "job_report"),
        "{after:?}"
    );
    assert_eq!(report_events(&server, "r1").await, 1);

    // The job's own stream carries the report, then closes.
    let mine = own.until("job_report").await;
    assert!(mine.iter().any(|(_, e)| e["type"] == "job_finished"));
    let (_, closed) = own.next().await.expect("stream_closed");
    assert_eq!(closed["type"], "stream_closed", "{closed}");
    assert!(own.next().await.is_none(), "the stream ends");

    // A replay from before the report includes it, once.
    let mut replay = Sse::connect(
        &server.base,
        "/v1/stream/jobs",
        Some(report_id.unwrap() - 1),
    )
    .await;
    let replayed = replay.until("job_report").await;
    assert_eq!(replayed.last().unwrap().0, report_id);
    assert_eq!(replayed.last().unwrap().1["data"]["report"]["job_id"], "r1");
    server.shutdown().await;
}

/// A job deleted before its grace ends gets no report.
async fn deleted_job_gets_none(backend: Backend) {
    let db = common::TestDb::new(backend).await;
    let config = jobscope::config::ServeConfig {
        report_grace: Duration::from_secs(2),
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let mut all = Sse::connect(&server.base, "/v1/stream/jobs", None).await;
    half_busy_job(&server, "gone", "alice").await;
    let resp = common::http()
        .delete(format!("{}/v1/jobs/gone", server.base))
        .header("x-changed-by", "t")
        .header("x-source", "test")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    all.until("job_deleted").await;
    // Past the grace, a later job's report arrives and none came for the deleted one.
    half_busy_job(&server, "kept", "alice").await;
    let seen = all.until("job_report").await;
    assert_eq!(seen.last().unwrap().1["data"]["job_id"], "kept");
    assert_eq!(report_events(&server, "gone").await, 0);
    server.shutdown().await;
}

/// A restart during the grace does not lose the report: the new server logs it.
async fn restart_during_grace_still_reports(backend: Backend) {
    let db = common::TestDb::new(backend).await;
    let long = jobscope::config::ServeConfig {
        report_grace: Duration::from_secs(3600),
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(long, Some(db)).await;
    half_busy_job(&server, "r2", "alice").await;
    let db = server.stop_keeping_db().await;
    assert_eq!(report_events_in(db.as_ref().unwrap()).await, 0);
    let config = common::serve_config(&db.as_ref().unwrap().url);
    let server = TestServer::start_with(config, db).await;
    let mut replay = Sse::connect(&server.base, "/v1/stream/jobs", Some(0)).await;
    let seen = replay.until("job_report").await;
    assert_eq!(seen.last().unwrap().1["data"]["job_id"], "r2");
    assert_eq!(report_events(&server, "r2").await, 1);
    server.shutdown().await;
}

async fn report_events_in(db: &common::TestDb) -> usize {
    let store = jobscope::store::Store::connect(&db.url).await.unwrap();
    let n = store
        .events_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "job_report")
        .count();
    store.close().await;
    n
}

/// A user sees only their own jobs' reports: alice's stream carries her report, never bob's
/// (logged first).
async fn alice_does_not_see_bobs_report(backend: Backend) {
    const HOOK: &str = "hook-token-0123456789";
    const AGENT: &str = "agent-token-0123456789";
    const ALICE: &str = "alice-token-0123456789";
    const READER: &str = "reader-token-0123456789";
    let db = common::TestDb::new(backend).await;
    let mut config = common::serve_config(&db.url);
    config.tokens = Some(
        jobscope::api::auth::Tokens::parse(&format!(
            "hook {HOOK}\nagent {AGENT}\nreader {READER}\nuser:alice {ALICE}\n"
        ))
        .unwrap(),
    );
    let server = TestServer::start_with(config, Some(db)).await;
    let post = |path: &'static str, body: Value| {
        let base = server.base.clone();
        async move {
            let resp = common::http()
                .post(format!("{base}{path}"))
                .bearer_auth(if path == "/v1/samples" { AGENT } else { HOOK })
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
        }
    };
    let mut alice = Sse::connect_as(&server.base, "/v1/stream/jobs", None, Some(ALICE)).await;
    let mut reader = Sse::connect_as(&server.base, "/v1/stream/jobs", None, Some(READER)).await;
    for (id, user) in [("b-1", "bob"), ("a-1", "alice")] {
        post(
            "/v1/events/job-started",
            json!({"job_id": id, "user": user, "node_list": ["n1"], "timestamp": at(100),
                   "cpu_allocation": 1}),
        )
        .await;
        post("/v1/samples", sample(id, 50, 25.0)).await;
        post(
            "/v1/events/job-finished",
            json!({"job_id": id, "exit_code": 0}),
        )
        .await;
        // In order: bob's report is logged before alice's job ends.
        let seen = reader.until("job_report").await;
        assert_eq!(seen.last().unwrap().1["data"]["job_id"], id);
    }
    let seen = alice.until("job_report").await;
    assert_eq!(seen.last().unwrap().1["data"]["job_id"], "a-1");
    assert!(
        seen.iter().all(|(_, e)| e["data"]["job"]["user"] != "bob"),
        "alice sees nothing of bob's: {seen:?}"
    );
    // Nor on a replay of the whole log.
    let mut replay = Sse::connect_as(&server.base, "/v1/stream/jobs", Some(0), Some(ALICE)).await;
    let replayed = replay.until("job_report").await;
    assert_eq!(replayed.last().unwrap().1["data"]["job_id"], "a-1");
    server.shutdown().await;
}

on_backends!(
    one_report_after_the_grace,
    deleted_job_gets_none,
    restart_during_grace_still_reports,
    alice_does_not_see_bobs_report
);
