//! PostgreSQL backend: production, and the one several `serve` replicas can share.

use super::StoreResult;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::time::Duration;

/// Key of the transaction-level advisory lock that orders event-log ids (see `queries.rs`).
pub(super) const EVENT_ORDER_LOCK: &str = "SELECT pg_advisory_xact_lock(7411952870412)";

/// Group-commit writer tasks: enough to overlap one batch's statements with another's commit.
pub(super) const LIFECYCLE_WRITERS: usize = 4;

pub(super) async fn connect(url: &str) -> StoreResult<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

pub(super) mod q {
    super::super::queries::store_queries!(
        sqlx::Postgres,
        "BEGIN",
        Some(super::EVENT_ORDER_LOCK),
        "FOR UPDATE",
        "GREATEST(0, EXTRACT(EPOCH FROM ($3 - start_time)))::DOUBLE PRECISION"
    );
}
