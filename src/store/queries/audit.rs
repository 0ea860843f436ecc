//! The audit trail: the `job_audit_events` row ([`AuditRow`]) and its read. Audit rows are
//! written by `WriteTx::commit` (see `mod.rs`) from what `record_change` queues (`jobs.rs`).

use crate::domain::AuditEvent;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// An audit row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    job_id: String,
    change_type: String,
    changed_at: DateTime<Utc>,
    changed_by: String,
    source: String,
    correlation_id: String,
    job_snapshot: Json<serde_json::Value>,
    actor: Option<String>,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        AuditEvent {
            id: r.id,
            job_id: r.job_id,
            change_type: r.change_type,
            changed_at: r.changed_at,
            changed_by: r.changed_by,
            source: r.source,
            correlation_id: r.correlation_id,
            job_snapshot: r.job_snapshot.0,
            actor: r.actor,
        }
    }
}

/// The audit functions of `store_queries!`, expanded into the same backend module (its
/// imports, `WriteTx` and the other concerns' functions are in scope there).
macro_rules! audit_queries {
    ($db:ty, $row_lock:expr, $runtime_until_3:expr) => {
        pub async fn audit_trail(pool: &Pool<$db>, id: &str) -> StoreResult<Vec<AuditEvent>> {
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, job_id, change_type, changed_at, changed_by, source, correlation_id, job_snapshot, actor \
                 FROM job_audit_events WHERE job_id = $1 ORDER BY id ASC",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            if rows.is_empty() {
                get_job(pool, id).await?;
            }
            Ok(rows.into_iter().map(AuditEvent::from).collect())
        }
    };
}

pub(crate) use audit_queries;
