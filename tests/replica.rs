//! `--database-read-url` against a real PostgreSQL streaming replica (`scripts/dev-replica.sh`,
//! which `scripts/test.sh` starts when it can): the API's reads come from the replica, writes
//! still go to the primary, and a replica that does not hold jobscope's schema is refused at
//! start with a clear reason.
//!
//! The replica's server URL comes from `JOBSCOPE_TEST_REPLICA_URL`. Without it these tests say
//! so and pass, unless `JOBSCOPE_REQUIRE_REPLICA=1` (CI sets it), which makes them fail.

mod common;

use common::{http, serve_config, Backend, TestDb, TestServer};
use jobscope::store::{Store, StoreError};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use std::time::Duration;

/// The replica server's URL, or `None` (after saying why) when none was given and none is
/// required.
fn replica_server() -> Option<String> {
    if common::skip_postgres() {
        return None;
    }
    match std::env::var("JOBSCOPE_TEST_REPLICA_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("JOBSCOPE_REQUIRE_REPLICA").is_ok_and(|v| v == "1") => panic!(
            "JOBSCOPE_REQUIRE_REPLICA=1 but JOBSCOPE_TEST_REPLICA_URL is not set; \
             start one with scripts/dev-replica.sh start"
        ),
        _ => {
            eprintln!(
                "no read replica: set JOBSCOPE_TEST_REPLICA_URL (scripts/dev-replica.sh start) \
                 to run this test"
            );
            None
        }
    }
}

/// `db`'s database on the replica server at `server`.
fn on_replica(server: &str, db: &TestDb) -> String {
    let name = db.url.rsplit('/').next().expect("a database name");
    let base = server.rsplit_once('/').expect("a URL with a database").0;
    format!("{base}/{name}")
}

/// Waits until the replica has replayed the creation of `url`'s database.
async fn connect_when_replayed(url: &str) -> PgConnection {
    for _ in 0..300 {
        if let Ok(conn) = PgConnection::connect(url).await {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica never showed the test database ({url})");
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let resp = http()
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until `path` answers 200 with a body `ready` accepts (the replica has replayed what
/// it shows); until then it must answer 200 or 404.
async fn until_served(server: &TestServer, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let (status, body) = get(server, path).await;
        if status == 200 && ready(&body) {
            return body;
        }
        assert!(status == 200 || status == 404, "{path}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered as wanted from the replica");
}

fn listed_ids(list: &Value) -> Vec<&str> {
    list["jobs"]
        .as_array()
        .expect("a job list")
        .iter()
        .map(|j| j["id"].as_str().expect("a job id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reads_come_from_the_replica_and_writes_from_the_primary() {
    let Some(replica) = replica_server() else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let replica_db = on_replica(&replica, &db);
    let mut standby = connect_when_replayed(&replica_db).await;
    let mut config = serve_config(&db.url);
    config.database_read_url = Some(replica_db);
    let server = TestServer::start_with(config, Some(db)).await;
    assert!(server.store.has_read_replica());

    server.started("r-1", "alice").await;
    until_served(&server, "/v1/jobs/r-1", |_| true).await;

    // With replay paused, what is written now reaches the primary but not the replica.
    standby
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause the replica's replay");
    server.started("r-2", "alice").await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "r-1", "exit_code": 0, "signal": 0}),
        )
        .await;
    let on_primary = server.store.get_job("r-2").await.map(|j| j.user);
    let paused = (
        get(&server, "/v1/jobs/r-2").await.0,
        get(&server, "/v1/jobs").await.1,
        get(&server, "/v1/jobs/r-1").await.1,
        get(&server, "/v1/jobs/r-2/metrics").await.0,
        get(&server, "/v1/jobs/r-1/audit").await.1,
        get(&server, "/v1/health").await,
    );
    standby
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume the replica's replay");

    assert_eq!(on_primary.expect("r-2 on the primary"), "alice");
    let (r2, list, r1, r2_metrics, r1_audit, health) = paused;
    assert_eq!(health.0, 200, "{}", health.1);
    assert_eq!(health.1["status"], "healthy", "{}", health.1);
    let lag = health.1["read_replica_lag_bytes"].as_i64();
    assert!(
        lag.is_some_and(|l| l > 0),
        "a paused replica is behind: {}",
        health.1
    );
    assert_eq!(r2, 404, "a job only the primary has was read from it");
    assert_eq!(listed_ids(&list), ["r-1"], "{list}");
    assert_eq!(
        r1["state"], "running",
        "the replica's r-1 is not finished yet: {r1}"
    );
    assert_eq!(r2_metrics, 404);
    assert_eq!(
        r1_audit["events"].as_array().map(Vec::len),
        Some(1),
        "only the creation replayed: {r1_audit}"
    );

    // Replay resumed: the replica catches up and the API shows both changes.
    until_served(&server, "/v1/jobs/r-2", |_| true).await;
    let r1 = until_served(&server, "/v1/jobs/r-1", |j| j["state"] == "completed").await;
    assert_eq!(r1["state"], "completed", "{r1}");
    let list = get(&server, "/v1/jobs?sort=start_time&order=asc").await.1;
    let mut ids = listed_ids(&list);
    ids.sort_unstable();
    assert_eq!(ids, ["r-1", "r-2"], "{list}");
    // Other tests write to the same cluster meanwhile, so the lag need not be 0 here.
    let health = get(&server, "/v1/health").await.1;
    assert_eq!(health["status"], "healthy", "{health}");
    assert!(
        health["read_replica_lag_bytes"]
            .as_i64()
            .is_some_and(|l| l >= 0),
        "{health}"
    );

    // Storage timings say which database each operation ran on: the API's job reads on the
    // replica, the hooks' writes on the primary and never on the replica.
    let scrape = common::scrape_text(&server.base).await;
    let count = |operation: &str, database: &str| {
        let series = format!(
            r#"storage_operation_duration_seconds_count{{database="{database}",operation="{operation}",success="true"}}"#
        );
        common::series_value(&scrape, &series).unwrap_or(0.0)
    };
    assert!(count("get_job", "replica") >= 4.0, "{scrape}");
    assert_eq!(count("insert_job_if_absent", "primary"), 2.0, "{scrape}");
    assert_eq!(count("insert_job_if_absent", "replica"), 0.0, "{scrape}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_replica_without_jobscopes_schema_is_refused_with_the_reason() {
    let Some(replica) = replica_server() else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&db.url).await.expect("the primary");
    // The replica's own `postgres` database: reachable, but no jobscope tables.
    let err = match store
        .clone()
        .with_read_replica(&replica, Duration::from_secs(5), Duration::from_millis(300))
        .await
    {
        Ok(_) => panic!("a database without the schema was taken as the replica"),
        Err(err) => err,
    };
    assert!(matches!(err, StoreError::Replica(_)), "{err:?}");
    assert!(err.to_string().contains("no jobscope schema"), "{err}");
    store.close().await;
}
