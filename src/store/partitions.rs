//! Day partitions of the event log on PostgreSQL (issue 19). Owns the partitions of `events`
//! (migration 0023 made it a table partitioned by range of `occurred_at`); SQLite has one plain
//! table and none of this.
//!
//! Each UTC day has its own partition, `events_pYYYYMMDD`. [`Store::maintain_partitions`], run by
//! `serve`'s maintenance at start and every few minutes, creates the days from today to
//! [`AHEAD_DAYS`] ahead, so a write never waits for one. Retention ([`Store::prune`]) drops a day's
//! partition whole once the day's end is past it: no row-by-row `DELETE`, no dead rows, and
//! little WAL (BENCHMARKS.md, "Event-log partitions"). The log therefore keeps between
//! `--retention-days` and that plus one day.
//!
//! **A row with no partition.** `events_default` catches an event whose day has none (the
//! server's clock set far ahead, partitions dropped by a prune of the future, a database written
//! while no `serve` maintained it): the batch is stored, never refused. The next maintenance
//! moves such rows into a partition of their own day, in one transaction (PostgreSQL refuses to
//! create a partition whose range holds rows of the default partition, so the rows are moved
//! out and the new table attached); rows of the default partition that are past retention are
//! deleted by the prune in bounded chunks, as on SQLite.
//!
//! Every change here holds the maintenance advisory lock (replicas sharing a database take
//! turns) and a short `lock_timeout`, so it never queues writers behind it for long: a pass that
//! cannot get its locks fails and the next one tries again.

use super::{Backend, Store, StoreResult};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgPool};

/// Days after today whose partitions exist ahead of their first event.
pub const AHEAD_DAYS: i64 = 2;

/// The partition that catches rows of a day without one.
pub const DEFAULT_PARTITION: &str = "events_default";

/// How long a maintenance statement waits for a table lock before it gives up for this pass.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";

/// Serializes partition maintenance between replicas (`pg_advisory_xact_lock`).
const MAINTENANCE_LOCK: &str = "SELECT pg_advisory_xact_lock(7411952870413)";

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionUpkeep {
    /// Partitions created (ahead, or for rows the default partition held).
    pub created: Vec<String>,
    /// Rows moved out of the default partition into their day's.
    pub moved: u64,
}

/// The partition of `day` (UTC).
pub fn partition_name(day: NaiveDate) -> String {
    format!("events_p{}", day.format("%Y%m%d"))
}

/// The day a partition named by [`partition_name`] holds; `None` for any other table.
pub fn partition_day(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix("events_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

/// Midnight (UTC) starting `day`.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// A timestamp as a SQL literal (DDL takes no parameters; the text is our own formatting).
fn literal(t: DateTime<Utc>) -> String {
    format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

impl Store {
    /// Creates the event log's partitions from `now`'s day to [`AHEAD_DAYS`] after it and moves
    /// the rows the default partition caught into partitions of their own days. Nothing to do
    /// on SQLite.
    pub async fn maintain_partitions(&self, now: DateTime<Utc>) -> StoreResult<PartitionUpkeep> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(PartitionUpkeep::default()),
            Backend::Postgres(pool) => maintain(pool, now).await,
        }
    }

    /// The event log's day partitions, oldest first (empty on SQLite).
    pub async fn event_partitions(&self) -> StoreResult<Vec<NaiveDate>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pool) => Ok(day_partitions(pool).await?),
        }
    }
}

/// The `events` partitions named by day, oldest first.
async fn day_partitions(pool: &PgPool) -> Result<Vec<NaiveDate>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'events'::regclass",
    )
    .fetch_all(pool)
    .await?;
    let mut days: Vec<NaiveDate> = names.iter().filter_map(|n| partition_day(n)).collect();
    days.sort();
    Ok(days)
}

async fn maintain(pool: &PgPool, now: DateTime<Utc>) -> StoreResult<PartitionUpkeep> {
    let mut upkeep = PartitionUpkeep::default();
    let existing = day_partitions(pool).await?;
    // Days the default partition holds rows of (normally none: one index probe).
    let caught: Vec<DateTime<Utc>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT DISTINCT date_trunc('day', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
         FROM {DEFAULT_PARTITION}"
    )))
    .fetch_all(pool)
    .await?;
    let today = now.date_naive();
    let mut wanted: Vec<NaiveDate> = (0..=AHEAD_DAYS)
        .filter_map(|n| today.checked_add_signed(Duration::days(n)))
        .collect();
    wanted.extend(caught.iter().map(|t| t.date_naive()));
    wanted.sort();
    wanted.dedup();
    for day in wanted {
        if existing.contains(&day) {
            continue;
        }
        let moved = create_partition(pool, day).await?;
        upkeep.created.push(partition_name(day));
        upkeep.moved += moved;
    }
    Ok(upkeep)
}

/// A maintenance transaction (its advisory lock and lock timeout taken), and whether the table
/// `name` exists in it.
async fn begin(
    pool: &PgPool,
    name: &str,
) -> StoreResult<(sqlx::Transaction<'static, sqlx::Postgres>, bool)> {
    let mut tx = pool.begin().await?;
    sqlx::query(MAINTENANCE_LOCK).execute(&mut *tx).await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    Ok((tx, exists))
}

/// Creates the partition of `day`, moving into it the rows of that day that the default
/// partition holds; one transaction. Returns the rows moved.
async fn create_partition(pool: &PgPool, day: NaiveDate) -> StoreResult<u64> {
    let name = partition_name(day);
    let (from, to) = (start_of(day), start_of(day) + Duration::days(1));
    let bounds = format!("FROM ({}) TO ({})", literal(from), literal(to));
    let (mut tx, exists) = begin(pool, &name).await?;
    if exists {
        return Ok(0); // another replica made it since the listing
    }
    // Writers routed to the default partition wait while its rows of the day move.
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {DEFAULT_PARTITION} IN SHARE ROW EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await?;
    let caught: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE occurred_at >= $1 AND occurred_at < $2)"
    )))
    .bind(from)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    let mut moved = 0;
    if caught {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS)"
        )))
        .execute(&mut *tx)
        .await?;
        moved = sqlx::query(AssertSqlSafe(format!(
            "WITH moved AS (DELETE FROM {DEFAULT_PARTITION} \
               WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) \
             INSERT INTO {name} SELECT * FROM moved"
        )))
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Attaching checks the rows against the bounds and builds the log's indexes on it.
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE events ATTACH PARTITION {name} FOR VALUES {bounds}"
        )))
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name} PARTITION OF events FOR VALUES {bounds}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// Drops the day partitions whose day ended at or before `before` (every row in them is past
/// retention); returns the rows they held. One short transaction per partition.
pub(super) async fn drop_past(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let mut rows = 0;
    for day in day_partitions(pool).await? {
        if start_of(day) + Duration::days(1) > before {
            break;
        }
        let name = partition_name(day);
        let (mut tx, exists) = begin(pool, &name).await?;
        if !exists {
            continue; // dropped by another replica since the listing
        }
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {name}")))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows += count.max(0) as u64;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        assert_eq!(partition_name(day), "events_p20261205");
        assert_eq!(partition_day("events_p20261205"), Some(day));
        assert_eq!(partition_day(DEFAULT_PARTITION), None);
        assert_eq!(partition_day("events_p2026120"), None);
        assert_eq!(partition_day("events_p20261305"), None);
        assert_eq!(partition_day("events_p2026-1205"), None);
    }

    #[test]
    fn literals_are_utc() {
        let t = start_of(NaiveDate::from_ymd_opt(2026, 12, 5).unwrap());
        assert_eq!(literal(t), "'2026-12-05 00:00:00.000000+00'");
    }
}
