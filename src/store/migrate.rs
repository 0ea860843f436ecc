//! `jobscope migrate [--dry-run]`: brings a database to jobscope's current schema, or says
//! what doing so would change. On PostgreSQL that includes adopting a database the Go service
//! created (`go_schema`); otherwise it is sqlx's pending migrations.

use super::go_schema::{self, Found};
use super::{is_postgres_url, postgres, sqlite, StoreResult};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use std::collections::BTreeSet;
use std::str::FromStr;

/// Applies what the database at `url` lacks (or, with `dry_run`, changes nothing), and returns
/// what was done or would be done, one line each, for the terminal.
pub async fn migrate(url: &str, dry_run: bool) -> StoreResult<Vec<String>> {
    if is_postgres_url(url) {
        migrate_postgres(url, dry_run).await
    } else {
        migrate_sqlite(url, dry_run).await
    }
}

async fn migrate_postgres(url: &str, dry_run: bool) -> StoreResult<Vec<String>> {
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let found = go_schema::inspect(&mut *pool.acquire().await?).await?;
    let before = applied(&pool, &found).await?;
    let mut lines = Vec::new();
    let verb = if dry_run { "would" } else { "did" };
    if let Found::GoService(go) = &found {
        lines.push(format!(
            "the database is the Go service's: {} jobs, {} metric samples, {} audit rows{}",
            go.jobs,
            go.samples,
            go.audit_rows,
            if go.missing_columns.is_empty() {
                String::new()
            } else {
                format!(" (an older revision: no {})", go.missing_columns.join(", "))
            }
        ));
        lines.extend(go_schema::blockers(go));
        lines.push(format!(
            "{} it in place, in one transaction (all rows kept):",
            if dry_run { "would adopt" } else { "adopting" }
        ));
        for (i, step) in go_schema::describe(go).into_iter().enumerate() {
            lines.push(format!("  {}. {step}", i + 1));
        }
    }
    let pending = pending(&postgres::MIGRATOR, &before, &found);
    if dry_run {
        lines.extend(describe_pending(&pending, verb));
        pool.close().await;
        return Ok(lines);
    }
    postgres::migrate(&pool).await?;
    if matches!(found, Found::GoService(_)) {
        lines.push("adopted the Go service's database".into());
    }
    lines.extend(describe_pending(&pending, verb));
    pool.close().await;
    Ok(lines)
}

async fn migrate_sqlite(url: &str, dry_run: bool) -> StoreResult<Vec<String>> {
    let options = SqliteConnectOptions::from_str(url)?.create_if_missing(!dry_run);
    let pool = match SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
    {
        Ok(pool) => pool,
        // A dry run creates nothing: a missing file gets every migration.
        Err(_) if dry_run => {
            let all = pending(&sqlite::MIGRATOR, &BTreeSet::new(), &Found::Empty);
            let mut lines = vec!["the database file does not exist yet".to_owned()];
            lines.extend(describe_pending(&all, "would"));
            return Ok(lines);
        }
        Err(err) => return Err(err.into()),
    };
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&pool)
    .await?;
    let before: BTreeSet<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    let pending = pending(&sqlite::MIGRATOR, &before, &Found::Jobscope);
    if !dry_run {
        sqlite::MIGRATOR.run(&pool).await?;
    }
    pool.close().await;
    Ok(describe_pending(
        &pending,
        if dry_run { "would" } else { "did" },
    ))
}

/// Versions recorded as applied (none for an empty or a Go database).
async fn applied(pool: &sqlx::PgPool, found: &Found) -> StoreResult<BTreeSet<i64>> {
    if *found != Found::Jobscope {
        return Ok(BTreeSet::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect(),
    )
}

/// Migrations still to run: those not applied, and after an adoption only the ones past the
/// adopted version.
fn pending(migrator: &Migrator, applied: &BTreeSet<i64>, found: &Found) -> Vec<(i64, String)> {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .filter(|m| !matches!(found, Found::GoService(_)) || m.version > go_schema::ADOPTED_VERSION)
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}

fn describe_pending(pending: &[(i64, String)], verb: &str) -> Vec<String> {
    if pending.is_empty() {
        return vec!["no migration to apply: the schema is current".into()];
    }
    let mut lines = vec![format!("{verb} apply {} migration(s):", pending.len())];
    lines.extend(pending.iter().map(|(v, d)| format!("  {v:04} {d}")));
    lines
}
