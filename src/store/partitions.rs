//! Day partitions on PostgreSQL (issue 19). Owns the partitions of the two tables that grow
//! with time: the event log `events` (migration 0023, by `occurred_at`) and the sample packs
//! `sample_packs` (migration 0027, by `first_at`: a pack holds one hour, so one day). SQLite has
//! plain tables and none of this.
//!
//! Each UTC day has its own partition of each table, `events_pYYYYMMDD` and
//! `sample_packs_pYYYYMMDD` ([`DayTable`]). [`Store::maintain_partitions`], run by `serve`'s
//! maintenance at start and every few minutes, creates the days from today to [`AHEAD_DAYS`]
//! ahead, so a write never waits for one. Retention ([`Store::prune`]) drops a day's partition
//! whole once the day's end is past it: no row-by-row `DELETE`, no dead rows, and little WAL
//! (BENCHMARKS.md, "Event-log partitions" and "At size"). Each table therefore keeps between
//! `--retention-days` and that plus one day.
//!
//! **A row with no partition.** Each table's default partition catches a row whose day has
//! none (the server's clock set far ahead, partitions dropped by a prune of the future, an old
//! spool packed late, a database written while no `serve` maintained it): the write is stored,
//! never refused. The next maintenance moves such rows into a partition of their own day, in one
//! transaction (PostgreSQL refuses to create a partition whose range holds rows of the default
//! partition, so the rows are moved out and the new table attached); rows of a default partition
//! that are past retention are deleted by the prune in bounded chunks, as on SQLite.
//!
//! Every change here holds the maintenance advisory lock (replicas sharing a database take
//! turns) and a short `lock_timeout`, so it never queues writers behind it for long: a pass that
//! cannot get its locks fails and the next one tries again.

use super::{Backend, Store, StoreResult};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgPool};

/// Days after today whose partitions exist ahead of their first row.
pub const AHEAD_DAYS: i64 = 2;

/// How long a maintenance statement waits for a table lock before it gives up for this pass.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";

/// Serializes partition maintenance between replicas (`pg_advisory_xact_lock`).
const MAINTENANCE_LOCK: &str = "SELECT pg_advisory_xact_lock(7411952870413)";

/// A table partitioned by range of a timestamp, one partition per UTC day.
#[derive(Debug)]
pub struct DayTable {
    /// The partitioned table.
    pub table: &'static str,
    /// Its partition key.
    key: &'static str,
    /// What a partition's name starts with, before the day's `YYYYMMDD`.
    prefix: &'static str,
    /// The partition that catches rows of a day without one.
    pub default: &'static str,
    /// What a dropped partition held, as [`Store::prune`] reports it (rows, or samples).
    measure: &'static str,
}

/// The event log, by the time of each event.
pub const EVENTS: DayTable = DayTable {
    table: "events",
    key: "occurred_at",
    prefix: "events_p",
    default: "events_default",
    measure: "COUNT(*)",
};

/// The sample packs, by the time of each pack's first sample; a dropped day counts its samples.
pub const PACKS: DayTable = DayTable {
    table: "sample_packs",
    key: "first_at",
    prefix: "sample_packs_p",
    default: "sample_packs_default",
    measure: "COALESCE(SUM(samples), 0)",
};

/// Every table partitioned by day.
const TABLES: [&DayTable; 2] = [&EVENTS, &PACKS];

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionUpkeep {
    /// Partitions created (ahead, or for rows a default partition held).
    pub created: Vec<String>,
    /// Rows moved out of default partitions into their day's.
    pub moved: u64,
}

impl DayTable {
    /// The partition of `day` (UTC).
    pub fn partition_name(&self, day: NaiveDate) -> String {
        format!("{}{}", self.prefix, day.format("%Y%m%d"))
    }

    /// The day a partition named by [`Self::partition_name`] holds; `None` for any other table.
    pub fn partition_day(&self, name: &str) -> Option<NaiveDate> {
        let digits = name.strip_prefix(self.prefix)?;
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
    }
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
    /// Creates the day partitions of each [`DayTable`] from `now`'s day to [`AHEAD_DAYS`] after
    /// it and moves the rows their default partitions caught into partitions of their own days.
    /// Nothing to do on SQLite.
    pub async fn maintain_partitions(&self, now: DateTime<Utc>) -> StoreResult<PartitionUpkeep> {
        let mut upkeep = PartitionUpkeep::default();
        if let Backend::Postgres(pool) = &self.backend {
            for table in TABLES {
                maintain(pool, table, now, &mut upkeep).await?;
            }
        }
        Ok(upkeep)
    }

    /// The day partitions of `table`, oldest first (empty on SQLite).
    pub async fn day_partitions(&self, table: &DayTable) -> StoreResult<Vec<NaiveDate>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pool) => Ok(day_partitions(pool, table).await?),
        }
    }
}

/// The partitions of `table` named by day, oldest first.
async fn day_partitions(pool: &PgPool, table: &DayTable) -> Result<Vec<NaiveDate>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(table.table)
    .fetch_all(pool)
    .await?;
    let mut days: Vec<NaiveDate> = names
        .iter()
        .filter_map(|n| table.partition_day(n))
        .collect();
    days.sort();
    Ok(days)
}

async fn maintain(
    pool: &PgPool,
    table: &DayTable,
    now: DateTime<Utc>,
    upkeep: &mut PartitionUpkeep,
) -> StoreResult<()> {
    let existing = day_partitions(pool, table).await?;
    // Days the default partition holds rows of (normally none).
    let caught: Vec<DateTime<Utc>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT DISTINCT date_trunc('day', {key} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
         FROM {default}",
        key = table.key,
        default = table.default,
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
        upkeep.moved += create_partition(pool, table, day).await?;
        upkeep.created.push(table.partition_name(day));
    }
    Ok(())
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

/// Creates the partition of `day` of `table`, moving into it the rows of that day that the
/// default partition holds; one transaction. Returns the rows moved.
async fn create_partition(pool: &PgPool, table: &DayTable, day: NaiveDate) -> StoreResult<u64> {
    let DayTable {
        table: parent,
        key,
        default,
        ..
    } = table;
    let name = table.partition_name(day);
    let (from, to) = (start_of(day), start_of(day) + Duration::days(1));
    let bounds = format!("FROM ({}) TO ({})", literal(from), literal(to));
    let (mut tx, exists) = begin(pool, &name).await?;
    if exists {
        return Ok(0); // another replica made it since the listing
    }
    // Writers routed to the default partition wait while its rows of the day move.
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {default} IN SHARE ROW EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await?;
    let caught: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {default} WHERE {key} >= $1 AND {key} < $2)"
    )))
    .bind(from)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    let mut moved = 0;
    if caught {
        // STORAGE: a pack's data is stored as is, already deflated (migration 0021).
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING STORAGE)"
        )))
        .execute(&mut *tx)
        .await?;
        moved = sqlx::query(AssertSqlSafe(format!(
            "WITH moved AS (DELETE FROM {default} \
               WHERE {key} >= $1 AND {key} < $2 RETURNING *) \
             INSERT INTO {name} SELECT * FROM moved"
        )))
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Attaching checks the rows against the bounds and builds the table's indexes on it.
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES {bounds}"
        )))
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name} PARTITION OF {parent} FOR VALUES {bounds}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// Drops the day partitions of `table` whose day ended at or before `before` (every row in them
/// is past retention); returns what they held, as [`DayTable`] measures it. One short
/// transaction per partition.
pub(super) async fn drop_past(
    pool: &PgPool,
    table: &DayTable,
    before: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut held = 0;
    for day in day_partitions(pool, table).await? {
        if start_of(day) + Duration::days(1) > before {
            break;
        }
        let name = table.partition_name(day);
        let (mut tx, exists) = begin(pool, &name).await?;
        if !exists {
            continue; // dropped by another replica since the listing
        }
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CAST({} AS BIGINT) FROM {name}",
            table.measure
        )))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        held += count.max(0) as u64;
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        assert_eq!(EVENTS.partition_name(day), "events_p20261205");
        assert_eq!(EVENTS.partition_day("events_p20261205"), Some(day));
        assert_eq!(EVENTS.partition_day(EVENTS.default), None);
        assert_eq!(EVENTS.partition_day("events_p2026120"), None);
        assert_eq!(EVENTS.partition_day("events_p20261305"), None);
        assert_eq!(EVENTS.partition_day("events_p2026-1205"), None);
        assert_eq!(PACKS.partition_name(day), "sample_packs_p20261205");
        assert_eq!(PACKS.partition_day("sample_packs_p20261205"), Some(day));
        assert_eq!(PACKS.partition_day(PACKS.default), None);
        assert_eq!(EVENTS.partition_day("sample_packs_p20261205"), None);
    }

    #[test]
    fn literals_are_utc() {
        let t = start_of(NaiveDate::from_ymd_opt(2026, 12, 5).unwrap());
        assert_eq!(literal(t), "'2026-12-05 00:00:00.000000+00'");
    }
}
