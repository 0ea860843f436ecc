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
        assert!(
            days.contains(&day),
            "{day} missing from {days:?} ({upkeep:?})"
        );
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

/// Migration 0023 killed half-way (the `jobscope migrate` process, while PostgreSQL copies the
/// log) leaves the old table as it was; the next run migrates from the start and every row is
/// there, ids and all.
#[tokio::test]
async fn an_interrupted_partitioning_migration_rolls_back_and_runs_again() {
    if common::skip_postgres() {
        return;
    }
    let db = common::TestDb::new(Backend::Postgres).await;
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new("./migrations/postgres"))
        .await
        .unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 23)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    // One connection, so that every other backend of the database is the migration's.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    migrator.run(&pool).await.unwrap();
    // Enough rows that the copy takes seconds, over three days.
    sqlx::query(
        "INSERT INTO events (occurred_at, kind, job_id, payload) \
         SELECT now() - (i % 3) * INTERVAL '1 day', 'job_created', 'j' || i, '{\"n\":1}' \
         FROM generate_series(1, 1500000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = counts(&pool).await;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobscope"))
        .args(["migrate", "--database-url", &db.url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the migration runs (the statement shown begins with its comment).
    common::poll_until("the copy to start", std::time::Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE '%event log partitioned by UTC day%' \
                 AND state = 'active' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if n > 0 { Ok(()) } else { Err("not yet".to_owned()) }
        }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // The server notices the client gone once the statement ends, and rolls it all back.
    common::poll_until(
        "the killed migration to end",
        std::time::Duration::from_secs(120),
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid()",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                if n == 0 {
                    Ok(())
                } else {
                    Err(format!("{n} backends left"))
                }
            }
        },
    )
    .await;
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 23")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(applied, 0, "the killed migration is not recorded");
    let (kind, rows) = log_state(&pool).await;
    assert_eq!(kind, "r", "the old, plain table is back");
    assert_eq!(rows, before);

    // Run again, to the end.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_jobscope"))
        .args(["migrate", "--database-url", &db.url])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (kind, rows) = log_state(&pool).await;
    assert_eq!(kind, "p", "partitioned now");
    assert_eq!(rows, before);
    let in_default: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_default, 0, "every day got its partition");
    // The sequence carried over: the next id follows.
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO events (occurred_at, kind, payload) VALUES (now(), 'job_created', '{}') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(next > before.1);
    pool.close().await;
}

/// The kind of table `events` is (`r` plain, `p` partitioned) and its (count, max id, id sum).
async fn log_state(pool: &sqlx::PgPool) -> (String, (i64, i64, i64)) {
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'events'")
            .fetch_one(pool)
            .await
            .unwrap();
    (kind, counts(pool).await)
}

async fn counts(pool: &sqlx::PgPool) -> (i64, i64, i64) {
    sqlx::query_as("SELECT COUNT(*), MAX(id), SUM(id)::bigint FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}
