//! The day partitions of the event log and of the sample packs on PostgreSQL
//! (`store::partitions`, issue 19): days created ahead, retention dropping a whole day while the
//! newer rows (and a stream's resume point) stay, a row whose day has no partition caught by the
//! default one and filed later, and each partitioning migration killed half-way.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{Backend, TestApp};
use jobscope::domain::report::Thresholds;
use jobscope::store::partitions::{DayTable, EVENTS, PACKS};
use serde_json::json;

#[tokio::test]
async fn days_are_made_ahead_dropped_whole_and_rows_without_a_day_are_kept() {
    if common::skip_postgres() {
        return;
    }
    let app = TestApp::new(Backend::Postgres).await;
    let now = Utc::now();
    app.store.maintain_partitions(now).await.unwrap();
    assert_days_ahead(&app, &EVENTS, now).await;

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
    let old_day = EVENTS.partition_name(old.date_naive());
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
    let days = app.store.day_partitions(&EVENTS).await.unwrap();
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

/// Packs of days without a partition (an old day, yesterday) wait in the default partition and
/// are read as usual; maintenance files them by day; retention drops the old day whole and
/// counts its samples, the newer day stays, and deleting the job reaches every partition.
#[tokio::test]
async fn packs_are_filed_by_day_and_a_past_day_goes_whole() {
    if common::skip_postgres() {
        return;
    }
    let app = TestApp::new(Backend::Postgres).await;
    let now = Utc::now();
    app.store.maintain_partitions(now).await.unwrap();
    assert_days_ahead(&app, &PACKS, now).await;
    let midnight = |days: i64| {
        (now - Duration::days(days))
            .duration_trunc(Duration::days(1))
            .unwrap()
    };
    let (old, yesterday) = (midnight(5), midnight(1));
    let started = json!({"job_id": "p", "user": "alice", "node_list": ["a"],
                         "timestamp": old.to_rfc3339()});
    app.post_event("job-started", &started).await.expect(200);
    // Eight samples over 10:00 and 11:00 of the old day, three at noon yesterday.
    let at = |day: DateTime<Utc>, hour: i64, i: i64| {
        day + Duration::hours(hour) + Duration::minutes(15 * i)
    };
    let times: Vec<DateTime<Utc>> = (0..8)
        .map(|i| at(old, 10, i))
        .chain((0..3).map(|i| at(yesterday, 12, i)))
        .collect();
    for (i, t) in times.iter().enumerate() {
        let sample = json!({"job_id": "p", "collected_at": t.to_rfc3339(),
                            "cpu_usage_percent": 10.0 + i as f64, "memory_current_bytes": 1 << 20});
        let batch = json!({"node": "a", "collected_at": t.to_rfc3339(), "jobs": [sample]});
        let reply = app
            .request("POST", "/v1/samples", Some(&batch), &[])
            .await
            .expect(200);
        assert_eq!(reply["accepted"], 1, "{reply}");
    }
    let before = app.get("/v1/jobs/p/metrics?limit=100").await.expect(200);
    assert_eq!(before["total"], 11);
    let pass = app
        .store
        .pack_closed_hours(now, Thresholds::site())
        .await
        .unwrap();
    assert_eq!((pass.samples, pass.packs), (11, 3));
    let in_default = "SELECT COUNT(*) FROM sample_packs_default WHERE job_id = $1";
    assert_eq!(
        app.count(in_default, "p").await,
        3,
        "no partition for either day"
    );
    assert_eq!(
        app.get("/v1/jobs/p/metrics?limit=100").await.expect(200),
        before
    );

    let upkeep = app.store.maintain_partitions(now).await.unwrap();
    assert_eq!(upkeep.moved, 3, "{upkeep:?}");
    for day in [old, yesterday] {
        let name = PACKS.partition_name(day.date_naive());
        assert!(upkeep.created.contains(&name), "{name}: {upkeep:?}");
    }
    assert_eq!(app.count(in_default, "p").await, 0);
    assert_eq!(
        app.get("/v1/jobs/p/metrics?limit=100").await.expect(200),
        before
    );
    // A partition made for caught rows stores pack data as the others do: not compressed again.
    let storage = app
        .count(
            "SELECT COUNT(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             WHERE c.relname LIKE 'sample\\_packs\\_p%' AND a.attname = 'data' AND a.attstorage <> $1",
            "e",
        )
        .await;
    assert_eq!(storage, 0, "every day partition keeps EXTERNAL storage");

    let (samples, _) = app.store.prune(now - Duration::days(2)).await.unwrap();
    assert_eq!(samples, 8, "the old day's packs went whole");
    let days = app.store.day_partitions(&PACKS).await.unwrap();
    assert!(!days.contains(&old.date_naive()), "{days:?}");
    assert!(days.contains(&yesterday.date_naive()), "{days:?}");
    let left = app.get("/v1/jobs/p/metrics?limit=100").await.expect(200);
    assert_eq!(left["total"], 3);

    app.write("DELETE", "/v1/jobs/p", None).await.expect(204);
    assert_eq!(app.rows_of("sample_packs", "p").await, 0);
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
    // Enough rows that the copy takes seconds, over three days.
    let fill = "INSERT INTO events (occurred_at, kind, job_id, payload) \
         SELECT now() - (i % 3) * INTERVAL '1 day', 'job_created', 'j' || i, '{\"n\":1}' \
         FROM generate_series(1, 1500000) AS i";
    let counts = "SELECT COUNT(*), MAX(id), SUM(id)::bigint FROM events";
    let (_db, pool, before) =
        kill_migration(23, &[fill], "event log partitioned by UTC day", counts).await;
    assert_eq!(table_kind(&pool, "events").await, "p", "partitioned now");
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

/// Migration 0027 (the sample packs by day) killed half-way: the same.
#[tokio::test]
async fn an_interrupted_pack_partitioning_migration_rolls_back_and_runs_again() {
    if common::skip_postgres() {
        return;
    }
    // Packs of 200 jobs over three days (an hour each, 256 bytes of data), enough for seconds of copy.
    let jobs = "INSERT INTO jobs (id, user_name, nodes, node_count, state, start_time, cluster_name, \
         scheduler_instance, ingest_version, correlation_id, created_at, updated_at) \
         SELECT 'j' || i, 'alice', '[\"a\"]', 1, 'running', now() - INTERVAL '3 days', 'c', 's', 'v', \
         'c' || i, now(), now() FROM generate_series(1, 200) AS i";
    let packs = "INSERT INTO sample_packs (job_id, node, first_at, last_at, samples, min_id, max_id, data) \
         SELECT 'j' || (i % 200 + 1), 'a', now() - (i % 72) * INTERVAL '1 hour', \
         now() - (i % 72) * INTERVAL '1 hour' + INTERVAL '59 minutes', 240, i, i, \
         decode(repeat(md5(i::text), 16), 'hex') FROM generate_series(1, 300000) AS i";
    let counts =
        "SELECT COUNT(*), SUM(samples)::bigint, SUM(length(data))::bigint FROM sample_packs";
    let (_db, pool, _) = kill_migration(
        27,
        &[jobs, packs],
        "Sample packs partitioned by UTC day",
        counts,
    )
    .await;
    assert_eq!(
        table_kind(&pool, "sample_packs").await,
        "p",
        "partitioned now"
    );
    let in_default: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sample_packs_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_default, 0, "every day got its partition");
    // The packs still go with their job.
    sqlx::query("DELETE FROM jobs WHERE id = 'j1'")
        .execute(&pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sample_packs WHERE job_id = 'j1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    pool.close().await;
}

/// `table` has its partitions from `now`'s day to `AHEAD_DAYS` after it.
async fn assert_days_ahead(app: &TestApp, table: &DayTable, now: DateTime<Utc>) {
    let days = app.store.day_partitions(table).await.unwrap();
    for n in 0..=jobscope::store::partitions::AHEAD_DAYS {
        let day = (now + Duration::days(n)).date_naive();
        assert!(
            days.contains(&day),
            "{}: {day} missing from {days:?}",
            table.table
        );
    }
}

/// Migrates a new database to just before `version`, runs `fill`, then kills `jobscope migrate`
/// while the statement that starts with `marker` runs: the migration is not recorded and
/// `counts` reads as before. Then migrates to the end and checks `counts` again; returns the
/// database, a pool of one connection to it, and the counts.
async fn kill_migration(
    version: i64,
    fill: &[&str],
    marker: &str,
    counts: &str,
) -> (common::TestDb, sqlx::PgPool, (i64, i64, i64)) {
    let db = common::TestDb::new(Backend::Postgres).await;
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new("./migrations/postgres"))
        .await
        .unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < version)
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
    for sql in fill {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let read = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(counts))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = read().await;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobscope"))
        .args(["migrate", "--database-url", &db.url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the migration runs (the statement shown begins with its comment).
    let pattern = format!("%{marker}%");
    common::poll_until(
        "the copy to start",
        std::time::Duration::from_secs(60),
        || {
            let (pool, pattern) = (pool.clone(), pattern.clone());
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE $1 \
                 AND state = 'active' AND pid <> pg_backend_pid()",
                )
                .bind(pattern)
                .fetch_one(&pool)
                .await
                .unwrap();
                if n > 0 {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            }
        },
    )
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
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = $1")
            .bind(version)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(applied, 0, "the killed migration is not recorded");
    assert_eq!(read().await, before, "the old table is as it was");

    // Run again, to the end.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_jobscope"))
        .args(["migrate", "--database-url", &db.url])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(read().await, before, "every row carried over");
    (db, pool, before)
}

/// The kind of table `name` is (`r` plain, `p` partitioned).
async fn table_kind(pool: &sqlx::PgPool, name: &str) -> String {
    sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}
