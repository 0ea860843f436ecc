//! The event log's day partitions on PostgreSQL (`store::partitions`, issue 19): days created
//! ahead, retention dropping a whole day while the newer events (and a stream's resume point)
//! stay, and a row whose day has no partition caught by the default one and filed later.

mod common;

use chrono::{Duration, Utc};
use common::{Backend, TestApp};

#[tokio::test]
async fn days_are_made_ahead_dropped_whole_and_rows_without_a_day_are_kept() {
    if common::skip_postgres() {
        return;
    }
    let app = TestApp::new(Backend::Postgres).await;
    let now = Utc::now();
    let upkeep = app.store.maintain_partitions(now).await.unwrap();
    let days = app.store.event_partitions().await.unwrap();
    for n in 0..=jobscope::store::partitions::AHEAD_DAYS {
        let day = (now + Duration::days(n)).date_naive();
        assert!(days.contains(&day), "{day} missing from {days:?} ({upkeep:?})");
    }

    // Rows of a day with no partition (an old day, as a replayed log would bring) land in the
    // default partition: nothing is refused.
    let old = now - Duration::days(20);
    let inserted = app
        .execute(
            "INSERT INTO events (occurred_at, kind, job_id, payload) \
             SELECT $1, 'job_created', NULL, '{}' FROM generate_series(1, 300)",
            Some(old),
        )
        .await;
    assert_eq!(inserted, 300);
    let caught = app
        .count("SELECT COUNT(*) FROM events_default WHERE $1 <> ''", "x")
        .await;
    assert_eq!(caught, 300);
    // Maintenance files them into a partition of their own day.
    let upkeep = app.store.maintain_partitions(now).await.unwrap();
    assert_eq!(upkeep.moved, 300, "{upkeep:?}");
    let old_day = jobscope::store::partitions::partition_name(old.date_naive());
    assert_eq!(upkeep.created, vec![old_day.clone()]);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM events_default WHERE $1 <> ''", "x")
            .await,
        0
    );
    let last_old = app.event_count().await;

    // Newer events after them; a stream that read up to the old day resumes after it.
    app.start_job("keep", "alice", &["a"]).await;
    let (_, events) = app.store.prune(now - Duration::days(1)).await.unwrap();
    assert_eq!(events, 300, "the old day went whole");
    let days = app.store.event_partitions().await.unwrap();
    assert!(!days.contains(&old.date_naive()), "{days:?}");
    let resumed = app.store.events_after(last_old, 100).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].job_id.as_deref(), Some("keep"));
    assert!(resumed[0].id > last_old, "ids keep increasing");
    // From the start as well: only today's event is left.
    let all = app.store.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 1);

    // A prune that does not reach a whole day keeps it.
    let (_, events) = app.store.prune(now - Duration::days(1)).await.unwrap();
    assert_eq!(events, 0);
    assert_eq!(app.store.events_after(0, 100).await.unwrap().len(), 1);
    app.finish().await;
}
