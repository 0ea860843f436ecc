//! Job output: the bytes agents ship of a job's stdout and stderr, in their own tables
//! (`job_log_streams`, `job_log_chunks`; migrations `*_job_logs.sql`), never in the event log.
//!
//! A stream is a run of chunks that covers `[0, end_offset)` without gap or overlap: an append
//! must start exactly at the offset the server holds, or it is refused with that offset (the
//! agent seeks there), so an agent restart or a spool replay neither loses nor duplicates a
//! byte. Bytes not kept are chunks without data: ranges the agent skipped under its rate limit,
//! and, past `max_bytes` per stream, the oldest part of the tail (the head, the first half of
//! the cap, is kept). After every commit the appended bytes go to the stream's live readers
//! through [`LogHub`] (a per-job broadcast; readers that miss one read the table).

use crate::domain::joblog::{Chunk, LogStream, LogUnavailable};
use crate::domain::JobState;
use crate::store::{Store, StoreError, StoreResult};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Default of `--log-max-bytes-per-job` (per stream).
pub const DEFAULT_MAX_BYTES: i64 = 16 * 1024 * 1024;
/// How long after a job's end its log still takes bytes (the agent drains a few seconds; a
/// spooled delivery may come later).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(120);

/// One append: `skipped` bytes the agent did not ship from `offset`, then `data`.
#[derive(Debug, Clone)]
pub struct LogAppend {
    pub job_id: String,
    pub stream: LogStream,
    pub offset: i64,
    pub skipped: i64,
    pub data: Bytes,
    /// The agent stopped tailing: these are the stream's last bytes.
    pub eof: bool,
}

impl LogAppend {
    fn carries_bytes(&self) -> bool {
        self.skipped > 0 || !self.data.is_empty()
    }
}

/// What became of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored (or, without bytes, nothing to store); the offset the server now holds.
    Stored { end_offset: i64 },
    /// The append did not start at the offset the server holds (an overlap or a gap).
    Conflict { held: i64 },
    /// The job ended more than the drain ago, or the agent already said it was done.
    Closed { held: i64 },
}

/// A stream's bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogState {
    pub end_offset: i64,
    pub stored_bytes: i64,
    pub skipped_bytes: i64,
    pub eof: bool,
    pub unavailable: Option<String>,
}

/// A chunk's place without its bytes (line pagination reads these first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub start: i64,
    pub length: i64,
    /// Newlines it renders as (a skipped range: one, its marker line).
    pub newlines: i64,
    pub has_data: bool,
}

/// Bytes appended to a job's stream, as its live readers get them.
#[derive(Debug, Clone)]
pub struct LogNotice {
    pub job_id: String,
    pub stream: LogStream,
    /// Offset of the first byte (skipped or not) of this append.
    pub offset: i64,
    pub skipped: i64,
    pub data: Bytes,
    pub eof: bool,
}

impl LogNotice {
    pub fn end(&self) -> i64 {
        self.offset + self.skipped + self.data.len() as i64
    }
}

/// Per-job broadcast of appended bytes, and the limits appends obey. Shared by every clone of
/// the store. A job's channel exists while someone listens; bounded, so a slow reader lags
/// (and catches up from the table) instead of growing memory.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    jobs: Mutex<HashMap<String, broadcast::Sender<Arc<LogNotice>>>>,
    all: broadcast::Sender<Arc<LogNotice>>,
    max_bytes: std::sync::atomic::AtomicI64,
    drain_ms: std::sync::atomic::AtomicU64,
}

/// Notices a listener may fall behind by before it lags.
const CHANNEL_CAPACITY: usize = 256;

impl Default for LogHub {
    fn default() -> Self {
        LogHub {
            inner: Arc::new(HubInner {
                jobs: Mutex::default(),
                all: broadcast::channel(CHANNEL_CAPACITY * 4).0,
                max_bytes: DEFAULT_MAX_BYTES.into(),
                drain_ms: (DEFAULT_DRAIN.as_millis() as u64).into(),
            }),
        }
    }
}

impl LogHub {
    /// Bytes kept per job and stream (`--log-max-bytes-per-job`); at least 2 (head and tail).
    pub fn set_max_bytes(&self, n: i64) {
        self.inner
            .max_bytes
            .store(n.max(2), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn max_bytes(&self) -> i64 {
        self.inner
            .max_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long after its end a job's log still takes bytes.
    pub fn set_drain(&self, d: Duration) {
        self.inner
            .drain_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn drain(&self) -> Duration {
        Duration::from_millis(
            self.inner
                .drain_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Whether a job that ended at `end` is past the drain at `now`.
    pub fn drained(&self, end: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let drain = chrono::Duration::from_std(self.drain()).unwrap_or(chrono::Duration::MAX);
        end.is_some_and(|end| now - end > drain)
    }

    /// The appends of job `job_id` from now on.
    pub fn subscribe(&self, job_id: &str) -> broadcast::Receiver<Arc<LogNotice>> {
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        // Channels whose readers all left and whose job printed nothing since go now.
        jobs.retain(|_, tx| tx.receiver_count() > 0);
        jobs.entry(job_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Every job's appends from now on (the global log stream).
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<LogNotice>> {
        self.inner.all.subscribe()
    }

    fn publish(&self, notice: LogNotice) {
        let notice = Arc::new(notice);
        let _ = self.inner.all.send(notice.clone());
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = jobs.get(&notice.job_id) {
            if tx.send(notice.clone()).is_err() {
                // Nobody listens any more: the channel goes until someone subscribes again.
                jobs.remove(&notice.job_id);
            }
        }
    }

    /// Jobs with a live channel (for tests of the cleanup).
    pub fn channels(&self) -> usize {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn newlines(data: &[u8]) -> i64 {
    data.iter().filter(|b| **b == b'\n').count() as i64
}

/// Which tail chunks to fold into one skipped range so that at most `excess` fewer data bytes
/// are held: the oldest ones first, never the newest chunk. `tail` is in offset order. Returns
/// the range `[first, cut)` to replace and the data bytes it removes.
fn trim_plan(tail: &[ChunkMeta], excess: i64) -> Option<(i64, i64, i64)> {
    if excess <= 0 || tail.len() < 2 {
        return None;
    }
    let first = tail[0].start;
    let mut removed = 0;
    let mut cut = None;
    for (i, c) in tail[..tail.len() - 1].iter().enumerate() {
        if removed >= excess {
            // A skipped range right after the cut joins it: one marker, not two.
            if c.has_data {
                break;
            }
        }
        if c.has_data {
            removed += c.length;
        }
        cut = Some(tail[i + 1].start);
    }
    let cut = cut?;
    (removed > 0).then_some((first, cut, removed))
}

macro_rules! backend {
    ($name:ident, $db:ty, $begin:expr, $key_share:expr, $row_lock:expr) => {
        mod $name {
            use super::*;
            use sqlx::{AssertSqlSafe, Pool};

            pub(super) async fn append(
                pool: &Pool<$db>,
                a: &LogAppend,
                hub: &LogHub,
                now: DateTime<Utc>,
            ) -> StoreResult<AppendOutcome> {
                let mut tx = pool.begin_with($begin).await?;
                let job: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(AssertSqlSafe(
                    format!("SELECT state, end_time FROM jobs WHERE id = $1 {}", $key_share),
                ))
                .bind(&a.job_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((state, end_time)) = job else {
                    return Err(StoreError::NotFound);
                };
                let state: JobState = state
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("job state {state:?}")))?;
                sqlx::query(
                    "INSERT INTO job_log_streams (job_id, stream) VALUES ($1, $2) \
                     ON CONFLICT (job_id, stream) DO NOTHING",
                )
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .execute(&mut *tx)
                .await?;
                let (held, stored, eof): (i64, i64, bool) = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT end_offset, stored_bytes, eof FROM job_log_streams \
                     WHERE job_id = $1 AND stream = $2 {}",
                    $row_lock
                )))
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .fetch_one(&mut *tx)
                .await?;
                if state.is_terminal() && hub.drained(end_time, now) && a.carries_bytes() {
                    return Ok(AppendOutcome::Closed { held });
                }
                if !a.carries_bytes() && !a.eof {
                    // A probe: the agent asks where to go on.
                    tx.commit().await?;
                    return Ok(AppendOutcome::Stored { end_offset: held });
                }
                if eof && a.carries_bytes() {
                    return Ok(AppendOutcome::Closed { held });
                }
                if a.offset != held && a.carries_bytes() {
                    return Ok(AppendOutcome::Conflict { held });
                }
                let insert = "INSERT INTO job_log_chunks \
                    (job_id, stream, start_offset, length, newlines, data) \
                    VALUES ($1, $2, $3, $4, $5, $6)";
                let mut at = held;
                if a.skipped > 0 {
                    sqlx::query(insert)
                        .bind(&a.job_id)
                        .bind(a.stream.as_str())
                        .bind(at)
                        .bind(a.skipped)
                        .bind(1i64)
                        .bind(None::<&[u8]>)
                        .execute(&mut *tx)
                        .await?;
                    at += a.skipped;
                }
                let len = a.data.len() as i64;
                if len > 0 {
                    sqlx::query(insert)
                        .bind(&a.job_id)
                        .bind(a.stream.as_str())
                        .bind(at)
                        .bind(len)
                        .bind(newlines(&a.data))
                        .bind(&a.data[..])
                        .execute(&mut *tx)
                        .await?;
                    at += len;
                }
                sqlx::query(
                    "UPDATE job_log_streams SET end_offset = $3, \
                     stored_bytes = stored_bytes + $4, skipped_bytes = skipped_bytes + $5, \
                     eof = $6 WHERE job_id = $1 AND stream = $2",
                )
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .bind(at)
                .bind(len)
                .bind(a.skipped)
                .bind(eof || a.eof)
                .execute(&mut *tx)
                .await?;
                let cap = hub.max_bytes();
                if stored + len > cap {
                    trim(&mut tx, a, cap, stored + len - cap).await?;
                }
                tx.commit().await?;
                Ok(AppendOutcome::Stored { end_offset: at })
            }

            /// Folds the oldest tail chunks into one skipped range (see [`trim_plan`]).
            async fn trim(
                tx: &mut sqlx::Transaction<'static, $db>,
                a: &LogAppend,
                cap: i64,
                excess: i64,
            ) -> StoreResult<()> {
                let rows: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
                    "SELECT start_offset, length, newlines, data IS NOT NULL \
                     FROM job_log_chunks WHERE job_id = $1 AND stream = $2 \
                     AND start_offset >= $3 ORDER BY start_offset",
                )
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .bind(cap / 2)
                .fetch_all(&mut **tx)
                .await?;
                let tail: Vec<ChunkMeta> = rows
                    .into_iter()
                    .map(|(start, length, newlines, has_data)| ChunkMeta {
                        start,
                        length,
                        newlines,
                        has_data,
                    })
                    .collect();
                let Some((first, cut, removed)) = trim_plan(&tail, excess) else {
                    return Ok(());
                };
                sqlx::query(
                    "DELETE FROM job_log_chunks WHERE job_id = $1 AND stream = $2 \
                     AND start_offset >= $3 AND start_offset < $4",
                )
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .bind(first)
                .bind(cut)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO job_log_chunks \
                     (job_id, stream, start_offset, length, newlines, data) \
                     VALUES ($1, $2, $3, $4, 1, NULL)",
                )
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .bind(first)
                .bind(cut - first)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE job_log_streams SET stored_bytes = stored_bytes - $3, \
                     skipped_bytes = skipped_bytes + $3 WHERE job_id = $1 AND stream = $2",
                )
                .bind(&a.job_id)
                .bind(a.stream.as_str())
                .bind(removed)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            pub(super) async fn mark_unavailable(
                pool: &Pool<$db>,
                job_id: &str,
                stream: LogStream,
                reason: &str,
            ) -> StoreResult<()> {
                let mut tx = pool.begin_with($begin).await?;
                let found: Option<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT id FROM jobs WHERE id = $1 {}",
                    $key_share
                )))
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
                if found.is_none() {
                    return Err(StoreError::NotFound);
                }
                sqlx::query(
                    "INSERT INTO job_log_streams (job_id, stream, unavailable) VALUES ($1, $2, $3) \
                     ON CONFLICT (job_id, stream) DO UPDATE SET unavailable = $3",
                )
                .bind(job_id)
                .bind(stream.as_str())
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn unavailable_of(
                pool: &Pool<$db>,
                job_ids: &[String],
            ) -> StoreResult<Vec<(String, String, String)>> {
                if job_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "SELECT job_id, stream, unavailable FROM job_log_streams \
                     WHERE unavailable IS NOT NULL AND job_id IN (",
                );
                crate::store::queries::push_in_list(&mut q, job_ids.iter().map(String::as_str));
                q.push(" ORDER BY job_id, stream DESC");
                Ok(q.build_query_as().fetch_all(pool).await?)
            }

            pub(super) async fn state(
                pool: &Pool<$db>,
                job_id: &str,
                stream: LogStream,
            ) -> StoreResult<Option<LogState>> {
                let row: Option<(i64, i64, i64, bool, Option<String>)> = sqlx::query_as(
                    "SELECT end_offset, stored_bytes, skipped_bytes, eof, unavailable \
                     FROM job_log_streams WHERE job_id = $1 AND stream = $2",
                )
                .bind(job_id)
                .bind(stream.as_str())
                .fetch_optional(pool)
                .await?;
                Ok(row.map(
                    |(end_offset, stored_bytes, skipped_bytes, eof, unavailable)| LogState {
                        end_offset,
                        stored_bytes,
                        skipped_bytes,
                        eof,
                        unavailable,
                    },
                ))
            }

            pub(super) async fn chunks(
                pool: &Pool<$db>,
                job_id: &str,
                stream: LogStream,
                from: i64,
                to: i64,
            ) -> StoreResult<Vec<Chunk>> {
                // The chunk that holds `from` starts at the greatest start at or before it.
                let rows: Vec<(i64, i64, Option<Vec<u8>>)> = sqlx::query_as(
                    "SELECT start_offset, length, data FROM job_log_chunks \
                     WHERE job_id = $1 AND stream = $2 AND start_offset < $4 \
                     AND start_offset >= COALESCE((SELECT MAX(start_offset) FROM job_log_chunks \
                        WHERE job_id = $1 AND stream = $2 AND start_offset <= $3), 0) \
                     ORDER BY start_offset",
                )
                .bind(job_id)
                .bind(stream.as_str())
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(start, length, data)| Chunk {
                        start,
                        length,
                        data,
                    })
                    .collect())
            }

            pub(super) async fn index(
                pool: &Pool<$db>,
                job_id: &str,
                stream: LogStream,
            ) -> StoreResult<Vec<ChunkMeta>> {
                let rows: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
                    "SELECT start_offset, length, newlines, data IS NOT NULL \
                     FROM job_log_chunks WHERE job_id = $1 AND stream = $2 \
                     ORDER BY start_offset",
                )
                .bind(job_id)
                .bind(stream.as_str())
                .fetch_all(pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(start, length, newlines, has_data)| ChunkMeta {
                        start,
                        length,
                        newlines,
                        has_data,
                    })
                    .collect())
            }

            pub(super) async fn prune(pool: &Pool<$db>, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query(
                    "DELETE FROM job_log_streams WHERE job_id IN \
                     (SELECT id FROM jobs WHERE end_time < $1)",
                )
                .bind(before)
                .execute(pool)
                .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

backend!(sqlite, sqlx::Sqlite, "BEGIN IMMEDIATE", "", "");
backend!(
    postgres,
    sqlx::Postgres,
    "BEGIN",
    "FOR KEY SHARE",
    "FOR UPDATE"
);

macro_rules! on_backend {
    ($self:ident, $op:literal, $func:ident ( $($arg:expr),* )) => {{
        let started = std::time::Instant::now();
        let result = match &$self.backend {
            super::Backend::Sqlite(pool) => sqlite::$func(pool, $($arg),*).await,
            super::Backend::Postgres(pool) => postgres::$func(pool, $($arg),*).await,
        };
        $self.observe($op, started, &result);
        result
    }};
}

impl Store {
    /// Limits and live readers of job output.
    pub fn logs(&self) -> &LogHub {
        &self.logs
    }

    /// Appends to a job's stream (see the module notes); `NotFound` for an unknown job. The
    /// bytes go to live readers once committed.
    pub async fn append_log(&self, append: &LogAppend) -> StoreResult<AppendOutcome> {
        let now = crate::domain::now_micros();
        let hub = self.logs.clone();
        let result = on_backend!(self, "append_log", append(append, &hub, now));
        if let Ok(AppendOutcome::Stored { end_offset }) = &result {
            if append.carries_bytes() || append.eof {
                self.logs.publish(LogNotice {
                    job_id: append.job_id.clone(),
                    stream: append.stream,
                    offset: end_offset - append.skipped - append.data.len() as i64,
                    skipped: append.skipped,
                    data: append.data.clone(),
                    eof: append.eof,
                });
            }
        }
        result
    }

    /// Records why the agent could not read a job's stream.
    pub async fn mark_log_unavailable(
        &self,
        job_id: &str,
        stream: LogStream,
        reason: LogUnavailable,
    ) -> StoreResult<()> {
        on_backend!(
            self,
            "mark_log_unavailable",
            mark_unavailable(job_id, stream, reason.message())
        )
    }

    /// Why the agent could not read the output of each of `job_ids` that has such a record:
    /// the job's `log_unavailable` (stdout's reason first, else stderr's).
    pub async fn log_unavailable_of(
        &self,
        job_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, String>> {
        let mut out = std::collections::HashMap::new();
        // Bound in pieces: SQLite allows a limited number of parameters per statement.
        for ids in job_ids.chunks(500) {
            let rows = on_backend!(self, "log_unavailable_of", unavailable_of(ids))?;
            // Rows come stdout before stderr for each job: the first one wins.
            for (job_id, _stream, reason) in rows {
                out.entry(job_id).or_insert(reason);
            }
        }
        Ok(out)
    }

    /// A stream's bookkeeping; `None` when nothing was ever shipped or recorded.
    pub async fn log_state(
        &self,
        job_id: &str,
        stream: LogStream,
    ) -> StoreResult<Option<LogState>> {
        on_backend!(self, "log_state", state(job_id, stream))
    }

    /// The chunks that hold any byte of `[from, to)`, whole, in offset order.
    pub async fn log_chunks(
        &self,
        job_id: &str,
        stream: LogStream,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<Chunk>> {
        on_backend!(self, "log_chunks", chunks(job_id, stream, from, to))
    }

    /// Every chunk's place and newline count, without bytes, in offset order.
    pub async fn log_index(&self, job_id: &str, stream: LogStream) -> StoreResult<Vec<ChunkMeta>> {
        on_backend!(self, "log_index", index(job_id, stream))
    }

    /// Deletes the output of jobs that ended before `before` (retention, as samples); returns
    /// the streams removed.
    pub async fn prune_logs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        on_backend!(self, "prune_logs", prune(before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(start: i64, length: i64, has_data: bool) -> ChunkMeta {
        ChunkMeta {
            start,
            length,
            newlines: 0,
            has_data,
        }
    }

    #[test]
    fn channels_go_with_their_readers() {
        let hub = LogHub::default();
        let mut one = hub.subscribe("1");
        let mut all = hub.subscribe_all();
        let two = hub.subscribe("2");
        assert_eq!(hub.channels(), 2);
        hub.publish(LogNotice {
            job_id: "1".into(),
            stream: LogStream::Stdout,
            offset: 0,
            skipped: 0,
            data: Bytes::from_static(b"x"),
            eof: false,
        });
        assert_eq!(one.try_recv().unwrap().end(), 1);
        assert_eq!(all.try_recv().unwrap().job_id, "1");
        drop(two);
        let _three = hub.subscribe("3");
        assert_eq!(hub.channels(), 2, "job 2's channel went with its reader");
        drop(one);
        hub.publish(LogNotice {
            job_id: "1".into(),
            stream: LogStream::Stdout,
            offset: 1,
            skipped: 0,
            data: Bytes::from_static(b"y"),
            eof: false,
        });
        assert_eq!(hub.channels(), 1, "a publish to nobody drops the channel");
    }

    #[test]
    fn trimming_takes_the_oldest_tail_and_joins_an_earlier_marker() {
        let tail = [
            meta(100, 50, false),
            meta(150, 10, true),
            meta(160, 10, true),
            meta(170, 10, true),
        ];
        assert_eq!(trim_plan(&tail, 5), Some((100, 160, 10)));
        assert_eq!(trim_plan(&tail, 15), Some((100, 170, 20)));
        // Never the newest chunk.
        assert_eq!(trim_plan(&tail, 1000), Some((100, 170, 20)));
        assert_eq!(trim_plan(&tail, 0), None);
        assert_eq!(trim_plan(&tail[3..], 10), None);
        // A marker right after the cut is folded in.
        let tail = [meta(0, 10, true), meta(10, 5, false), meta(15, 10, true)];
        assert_eq!(trim_plan(&tail, 10), Some((0, 15, 10)));
    }
}
