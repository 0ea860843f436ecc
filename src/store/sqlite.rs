//! SQLite backend: the embedded default. One file, WAL mode so readers never wait for the
//! writer, and `BEGIN IMMEDIATE` for writes so two writers queue on the lock instead of failing
//! with SQLITE_BUSY halfway through a transaction.

use super::StoreResult;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub(super) async fn connect(url: &str, acquire_timeout: Duration) -> StoreResult<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL survives an application crash; only an OS crash can lose the last
        // transactions, and never corrupts the file.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(acquire_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub(super) mod q {
    super::super::queries::store_queries!(
        sqlx::Sqlite,
        "BEGIN IMMEDIATE",
        None::<&'static str>,
        "",
        // julianday() is exact to about a millisecond; round rather than show float noise.
        "ROUND(MAX(0.0, (julianday($3) - julianday(start_time)) * 86400.0), 3)",
        crate::store::bulk::sqlite,
        crate::store::lifecycle_batch::sqlite
    );
}
