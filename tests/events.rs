//! The event feed over the real store, on both backends: commit order, catch-up from the log
//! followed by live events without gap or duplicate, and bounded lag.

mod common;

use jobscope::events::EventFeed;
use serde_json::json;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<jobscope::events::FeedEvent>>,
) -> std::sync::Arc<jobscope::events::FeedEvent> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("feed open")
}

on_both_backends!(live_events_arrive_in_commit_order, |app| {
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let feed = EventFeed::start(app.store.clone(), 1024, stop)
        .await
        .unwrap();
    let mut rx = feed.subscribe();
    app.start_job("e1", "alice", &["n1"]).await;
    app.write(
        "POST",
        "/v1/jobs/e1/metrics",
        Some(&json!({"cpu_usage": 5, "memory_usage_mb": 1})),
    )
    .await
    .expect(201);
    app.post_event("job-finished", &json!({"job_id": "e1", "exit_code": 0}))
        .await
        .expect(200);
    let kinds: Vec<String> = {
        let mut kinds = Vec::new();
        let mut last = 0;
        for _ in 0..3 {
            let e = next_event(&mut rx).await;
            assert!(e.id > last, "ids must increase");
            last = e.id;
            kinds.push(e.kind.to_string());
        }
        kinds
    };
    assert_eq!(kinds, ["job_created", "job_sample", "job_finished"]);
    assert_eq!(feed.head(), app.event_count().await);
});

on_both_backends!(catch_up_then_live_has_no_gap_and_no_duplicate, |app| {
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let feed = EventFeed::start(app.store.clone(), 4096, stop)
        .await
        .unwrap();
    for i in 0..20 {
        app.start_job(&format!("c{i}"), "bob", &["n1"]).await;
    }
    // A reader that saw the first 5 events reconnects while writers keep going.
    let seen = app
        .store
        .events_after(0, 5)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    let writers = async {
        for i in 20..60 {
            app.start_job(&format!("c{i}"), "bob", &["n1"]).await;
        }
    };
    let reader = async {
        let mut live = feed.subscribe();
        let mut got = Vec::new();
        let mut cursor = seen;
        loop {
            let page = app.store.events_after(cursor, 7).await.unwrap();
            if page.is_empty() {
                break;
            }
            for e in page {
                cursor = e.id;
                got.push(e.id);
            }
        }
        while got.len() < 55 {
            let e = next_event(&mut live).await;
            if e.id > cursor {
                cursor = e.id;
                got.push(e.id);
            }
        }
        got
    };
    let ((), got) = tokio::join!(writers, reader);
    let all: Vec<i64> = app
        .store
        .events_after(seen, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        got, all,
        "the reader must see exactly the logged events after its cursor, in order"
    );
    assert_eq!(got.len(), 55);
});

on_both_backends!(a_lagging_subscriber_is_told_so, |app| {
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let feed = EventFeed::start(app.store.clone(), 4, stop).await.unwrap();
    let mut slow = feed.subscribe();
    for i in 0..12 {
        app.start_job(&format!("l{i}"), "carol", &["n1"]).await;
    }
    // wait until the feed has published everything
    common::poll_until(
        "the feed to publish every event",
        Duration::from_secs(10),
        || async {
            let (head, logged) = (feed.head(), app.event_count().await);
            if head == logged {
                Ok(())
            } else {
                Err(format!("head {head}, logged {logged}"))
            }
        },
    )
    .await;
    match slow.recv().await {
        Err(RecvError::Lagged(missed)) => assert!(missed >= 8, "missed {missed}"),
        other => panic!("expected a lag report, got {other:?}"),
    }
});

/// Events logged before migration 0006 (PostgreSQL, `payload` was `jsonb`) read back the same
/// after it turned the column into `json`.
#[tokio::test]
async fn events_logged_as_jsonb_read_back_after_the_json_migration() {
    if common::skip_postgres() {
        return;
    }
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let all = sqlx::migrate!("./migrations/postgres");
    let before_0006 = sqlx::migrate::Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version < 6)
            .cloned()
            .collect(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    let payload =
        json!({ "job_id": "j1", "sample": { "cpu_usage": 12.5, "gpus": [{ "index": 0 }] } });
    {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        before_0006.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO events (occurred_at, kind, job_id, payload) VALUES (now(), 'job_sample', 'j1', $1)",
        )
        .bind(sqlx::types::Json(&payload))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = jobscope::store::Store::connect(&db.url).await.unwrap();
    let events = store.events_after(0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "job_sample");
    assert_eq!(events[0].payload, payload);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let column_type: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'payload'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(column_type, "json");
    pool.close().await;
}

on_both_backends!(
    a_burst_of_mixed_lifecycle_events_keeps_each_meaning,
    |app| {
        // Hooks that arrive together are applied as group-commit batches (on PostgreSQL the new
        // jobs and the ends of running jobs in one statement): each event must still mean what it
        // means alone, and the feed must see every change once, in id order.
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let feed = EventFeed::start(app.store.clone(), 4096, stop)
            .await
            .unwrap();
        for i in 0..12 {
            app.start_job(&format!("b-run-{i}"), "alice", &["n1"]).await;
        }
        app.start_job("b-again", "alice", &["n1"]).await;
        app.start_job("b-done", "alice", &["n1"]).await;
        app.post_event("job-finished", &json!({"job_id": "b-done", "exit_code": 0}))
            .await
            .expect(200);
        let before = app.event_count().await;
        let mut rx = feed.subscribe();

        let mut posts = Vec::new();
        for i in 0..12 {
            posts.push((
                "job-started",
                json!({"job_id": format!("b-new-{i}"), "user": "bob", "node_list": ["n2", "n3"]}),
            ));
            posts.push((
                "job-finished",
                json!({"job_id": format!("b-run-{i}"), "exit_code": i % 2}),
            ));
        }
        posts.push(("job-finished", json!({"job_id": "b-done", "exit_code": 1})));
        posts.push((
            "job-finished",
            json!({"job_id": "b-unknown", "exit_code": 0}),
        ));
        posts.push((
            "job-started",
            json!({"job_id": "b-again", "user": "alice", "node_list": ["n1"]}),
        ));
        let replies = futures_util::future::join_all(
            posts.iter().map(|(kind, body)| app.post_event(kind, body)),
        )
        .await;
        for (i, reply) in replies.iter().take(24).enumerate() {
            let want = if i % 2 == 0 { "created" } else { "updated" };
            assert_eq!(reply.expect(200)["status"], want, "reply {i}");
        }
        assert_eq!(replies[24].expect(200)["status"], "skipped");
        assert_eq!(replies[25].status.as_u16(), 404);
        assert_eq!(replies[26].expect(200)["status"], "skipped");

        for i in 0..12 {
            let new = app.get(&format!("/v1/jobs/b-new-{i}")).await.expect(200);
            assert_eq!(new["state"], "running");
            assert_eq!(new["nodes"], json!(["n2", "n3"]));
            assert_eq!(app.audit(&format!("b-new-{i}")).await.len(), 1);
            assert_eq!(app.rows_of("job_nodes", &format!("b-new-{i}")).await, 2);
            let ended = app.get(&format!("/v1/jobs/b-run-{i}")).await.expect(200);
            let state = if i % 2 == 0 { "completed" } else { "failed" };
            assert_eq!(ended["state"], state, "b-run-{i}");
            assert_eq!(ended["exit_code"], i % 2);
            assert!(ended["end_time"].is_string());
            assert_eq!(app.audit(&format!("b-run-{i}")).await.len(), 2);
        }
        let done = app.get("/v1/jobs/b-done").await.expect(200);
        assert_eq!(
            (done["state"].clone(), done["exit_code"].clone()),
            (json!("completed"), json!(0))
        );
        assert_eq!(app.audit("b-done").await.len(), 2);
        assert_eq!(app.audit("b-again").await.len(), 1);
        app.get("/v1/jobs/b-unknown").await.expect(404);

        // 24 changes, 24 events: each once, ids increasing, each with its change. b-done's report
        // (made after a short grace) may land among them: it is not a change of this burst.
        let report = jobscope::events::EventKind::JobReport;
        let logged = app.store.events_after(before, 1000).await.unwrap();
        assert_eq!(logged.iter().filter(|e| e.kind != report).count(), 24);
        let mut last = 0;
        let mut seen = std::collections::BTreeSet::new();
        let mut changes = 0;
        while changes < 24 {
            let e = next_event(&mut rx).await;
            assert!(e.id > last, "ids must increase");
            last = e.id;
            // The feed may still be delivering what was logged before the burst.
            if e.id <= before || e.kind == report {
                continue;
            }
            changes += 1;
            let job = e.job_id.clone().expect("a job event");
            assert!(seen.insert(job.clone()), "{job} twice");
            if job.starts_with("b-new-") {
                assert_eq!(e.kind.to_string(), "job_created");
            } else {
                assert!(job.starts_with("b-run-"), "{job}");
                assert_eq!(e.payload["previous_state"], "running");
            }
        }
        assert_eq!(feed.head(), app.event_count().await);
    }
);
