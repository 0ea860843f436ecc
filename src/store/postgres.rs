//! PostgreSQL backend: production, and the one several `serve` replicas can share.

use super::StoreResult;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Channel on which a commit that appended events notifies every `serve` replica.
pub(super) const EVENTS_CHANNEL: &str = "jobscope_events";

/// Run before a transaction appends event rows: the advisory lock that orders event-log ids
/// (see `queries/mod.rs`), and a notification that PostgreSQL delivers to every listening replica
/// when (and only if) the transaction commits. One statement, one round trip.
pub(super) const EVENT_ORDER_LOCK: &str =
    "SELECT pg_advisory_xact_lock(7411952870412), pg_notify('jobscope_events', '')";

/// Group-commit writer tasks: two, so that one batch's statements overlap the other's commit.
/// More writers make smaller batches for the same load, each paying its four round trips and
/// a flush: 2 gave 0.28-0.31 x pgbench at 32 clients where 4 gave 0.20-0.25. One writer makes
/// bigger commits (4.1 events each at 8 clients, against 2.6) for 5-15 % more events there, but
/// 2,250-3,158 events/s at 32 clients against 3,546-3,829 (BENCHMARKS.md, "Hook ingestion").
pub(super) const LIFECYCLE_WRITERS: usize = 2;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The pool settings of the primary and of a read replica alike.
fn pool_options(acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(acquire_timeout)
}

pub(super) async fn connect(url: &str, acquire_timeout: Duration) -> StoreResult<PgPool> {
    let pool = pool_options(acquire_timeout).connect(url).await?;
    migrate(&pool).await?;
    warn_if_autovacuum_is_off(&pool).await;
    Ok(pool)
}

/// A pool on a read replica (`--database-read-url`): no migrations (a replica is read-only
/// and replays the primary's), and every session read-only, so a write sent there by mistake
/// fails at once instead of on the replica's own check.
pub(super) async fn connect_replica(url: &str, acquire_timeout: Duration) -> StoreResult<PgPool> {
    let pool = pool_options(acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET default_transaction_read_only = on")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect(url)
        .await?;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&pool)
        .await?;
    if !in_recovery {
        tracing::warn!(
            "--database-read-url is not a server in recovery (not a streaming replica); \
             reads go there all the same"
        );
    }
    Ok(pool)
}

/// Waits up to `catch_up` for `replica` to hold every migration `primary` has applied: the
/// API's reads expect the schema this build migrated the primary to.
pub(super) async fn await_replica_schema(
    primary: &PgPool,
    replica: &PgPool,
    catch_up: Duration,
) -> StoreResult<()> {
    const NEWEST: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
    let wanted: Option<i64> = sqlx::query_scalar(NEWEST).fetch_one(primary).await?;
    let deadline = tokio::time::Instant::now() + catch_up;
    loop {
        let found: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar(NEWEST).fetch_one(replica).await;
        match found {
            Ok(found) if found >= wanted => return Ok(()),
            Ok(_) | Err(sqlx::Error::Database(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(found) => {
                return Err(super::StoreError::Replica(format!(
                    "it has schema version {} after {:?}, the primary {}; is it a replica of \
                     DATABASE_URL's database?",
                    found.unwrap_or(0),
                    catch_up,
                    wanted.unwrap_or(0)
                )))
            }
            Err(err @ sqlx::Error::Database(_)) => {
                return Err(super::StoreError::Replica(format!(
                    "it has no jobscope schema after {catch_up:?} ({err}); is it a replica of \
                     DATABASE_URL's database?"
                )))
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Bytes of WAL `replica` has still to replay of what `primary` has written (read from the
/// primary first, so a replica that keeps up shows 0, never less).
pub(super) async fn replica_lag(primary: &PgPool, replica: &PgPool) -> StoreResult<Option<i64>> {
    let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(primary)
        .await?;
    let behind: Option<i64> = sqlx::query_scalar(
        "SELECT GREATEST(0, pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()))::int8",
    )
    .bind(written)
    .fetch_one(replica)
    .await?;
    Ok(behind)
}

/// Packing deletes every raw sample row once its hour is packed (`sample_packs.rs`): some 2.4
/// million rows an hour per 1,000 nodes, whose space only a `VACUUM` makes reusable. With the
/// server's autovacuum off, `metric_samples` grows by every row ever packed (on the at-size
/// bench, 32 GB in 21 hours of 1,000 nodes; BENCHMARKS.md, "At size"), so say so at start.
async fn warn_if_autovacuum_is_off(pool: &PgPool) {
    match sqlx::query_scalar::<_, String>("SHOW autovacuum")
        .fetch_one(pool)
        .await
    {
        Ok(setting) if setting == "off" => tracing::warn!(
            "PostgreSQL's autovacuum is off: the raw sample rows that packing deletes every hour \
             are reclaimed only by a VACUUM, and metric_samples grows by ~700 bytes per sample \
             until one runs; turn autovacuum on or run `VACUUM metric_samples` every hour"
        ),
        Ok(_) => {}
        Err(err) => tracing::debug!(error = %err, "cannot read the autovacuum setting"),
    }
}

/// Adopts a database the Go service created (see `go_schema`), then applies pending migrations.
pub(super) async fn migrate(pool: &PgPool) -> StoreResult<Option<super::go_schema::Adopted>> {
    let adopted = super::go_schema::adopt_if_go(pool, &MIGRATOR).await?;
    MIGRATOR.run(pool).await?;
    Ok(adopted)
}

/// Rings `commits` whenever any replica (this one included) commits events, so every replica's
/// event feed reads the log at once instead of at its next poll. A lost connection rings too:
/// notifications sent while it was down are gone, and the log has whatever they announced.
pub(super) fn listen_for_commits(pool: PgPool, commits: Arc<watch::Sender<u64>>) {
    tokio::spawn(async move {
        let mut listener = loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen(EVENTS_CHANNEL).await {
                    Ok(()) => break listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot LISTEN for other replicas' commits; retrying")
                    }
                },
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot LISTEN for other replicas' commits; retrying")
                }
            }
            if pool.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
        loop {
            match listener.try_recv().await {
                Ok(_) => commits.send_modify(|n| *n = n.wrapping_add(1)),
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

pub(super) mod q {
    super::super::queries::store_queries!(
        sqlx::Postgres,
        "BEGIN",
        Some(super::EVENT_ORDER_LOCK),
        "FOR UPDATE",
        "GREATEST(0, EXTRACT(EPOCH FROM ($3 - start_time)))::DOUBLE PRECISION",
        crate::store::bulk::postgres,
        crate::store::lifecycle_batch::postgres
    );
}
