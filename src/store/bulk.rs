//! The batch statements of the store, one module per backend: the job lookup, sample insert and
//! job update of `ingest_samples` (an agent's batch of 1,000 job samples, up to 10,000), and the
//! event-log insert of every write transaction. These carry whole batches, so they decide how fast
//! a batch is stored; everything else is the same SQL on both backends (`queries/`).
//!
//! Both modules have the same functions with the same effect; they differ in how rows reach the
//! database:
//! - **SQLite**: multi-row `VALUES` lists, chunked under its 32,766 bound parameters. SQLite runs
//!   in the process, and binding many parameters is cheap there.
//! - **PostgreSQL**: samples by binary `COPY` (see [`super::pg_copy`]), with ids taken from the
//!   sequence beforehand since `COPY` returns none. A batch with a sample already stored (sent
//!   again after a lost answer) fails the `COPY` on the unique index; it is then rolled back to
//!   a savepoint and inserted with `ON CONFLICT DO NOTHING` instead. Everything else goes as one
//!   array parameter per column, spread into rows by `UNNEST`: one statement per table whatever
//!   the batch size. The text never changes, so a connection prepares it once, where a `VALUES`
//!   list is a new statement for each chunk size (parsed, described and planned again, and
//!   evicting others from the statement cache); and the server decodes a few arrays rather than
//!   thousands of parameters (see "Sample ingestion" in BENCHMARKS.md).

use crate::domain::usage::SampleDetail;
use crate::store::queries::{
    id_blocks, json_encode_error, push_in_list, to_json, JobDelta, QueuedEvent, SampledJobRow,
    JOB_DELTA_SET, SAMPLE_COLUMNS,
};
use crate::store::{SampleItem, StoreResult};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};

/// The `RETURNING` of a sample insert, one per row really inserted: its id, job, time and node.
type InsertedSample = (i64, String, DateTime<Utc>, Option<String>);

/// What a sample insert returns (see [`InsertedSample`]).
const INSERTED_SAMPLE: &str = "RETURNING id, job_id, timestamp, node";

/// Figures of [`SampleDetail`] stored as `float8` (seconds) and as `int8` (counts).
const SECONDS: usize = 4;
const COUNTS: usize = 13;

/// cpu_time_seconds through cpu_throttled_seconds, then cpu_nr_throttled through pids: the
/// plain figures of a sample, in `SAMPLE_COLUMNS` order.
fn figures(d: &SampleDetail) -> ([Option<f64>; SECONDS], [Option<i64>; COUNTS]) {
    let seconds = [
        d.cpu_time_seconds,
        d.cpu_user_seconds,
        d.cpu_system_seconds,
        d.cpu_throttled_seconds,
    ];
    let counts = [
        d.cpu_nr_throttled,
        d.memory_usage_bytes,
        d.memory_peak_bytes,
        d.memory_limit_bytes,
        d.memory_anon_bytes,
        d.memory_file_bytes,
        d.memory_shmem_bytes,
        d.oom_kills,
        d.io_read_bytes,
        d.io_write_bytes,
        d.io_read_ops,
        d.io_write_ops,
        d.pids,
    ];
    (seconds, counts)
}

/// A sample's pressure figures as stored: none when no resource has any.
fn stored_pressure(d: &SampleDetail) -> Option<&crate::domain::usage::Pressure> {
    d.pressure.as_ref().filter(|p| !p.is_empty())
}

/// A sample's GPU figures as stored: none for a sample without GPUs.
fn stored_gpus(d: &SampleDetail) -> Option<&[crate::domain::gpu::GpuReading]> {
    (!d.gpus.is_empty()).then_some(d.gpus.as_slice())
}

/// The stored row id of each item, `None` where it was stored before (an `ON CONFLICT DO
/// NOTHING` insert returns only the rows it inserted). Items are matched to rows by (job, time,
/// node); samples without a node never conflict, so they may repeat: those keys hold several
/// rows, handed out in order.
fn ids_of_items(items: &[&SampleItem], inserted: Vec<InsertedSample>) -> Vec<Option<i64>> {
    let mut by_key: HashMap<(String, DateTime<Utc>, Option<String>), VecDeque<i64>> =
        HashMap::with_capacity(inserted.len());
    for (id, job_id, timestamp, node) in inserted {
        by_key
            .entry((job_id, timestamp, node))
            .or_default()
            .push_back(id);
    }
    items
        .iter()
        .map(|item| {
            let key = (
                item.job_id.clone(),
                item.sample.timestamp,
                item.sample.detail.node.clone(),
            );
            by_key.get_mut(&key)?.pop_front()
        })
        .collect()
}

pub(in crate::store) mod sqlite {
    use super::*;
    pub(in crate::store) use crate::store::node_figures::sqlite::keep_node_figures;
    use sqlx::types::Json;
    use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

    /// The jobs of `ids` that exist.
    pub(in crate::store) async fn select_jobs(
        conn: &mut SqliteConnection,
        ids: &[&str],
    ) -> StoreResult<Vec<SampledJobRow>> {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "SELECT {} FROM jobs WHERE id IN (",
                crate::store::queries::SAMPLED_JOB_COLUMNS
            ));
            push_in_list(&mut qb, chunk.iter().map(|id| id.to_string()));
            rows.extend(qb.build_query_as().fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }

    /// Inserts the samples, skipping those already stored; the row id of each item, `None` for
    /// those skipped.
    pub(in crate::store) async fn insert_samples(
        conn: &mut SqliteConnection,
        items: &[&SampleItem],
    ) -> StoreResult<Vec<Option<i64>>> {
        let mut inserted = Vec::with_capacity(items.len());
        // 400 rows × 25 columns: 10,000 parameters a statement.
        for chunk in items.chunks(400) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO metric_samples ({SAMPLE_COLUMNS}) "));
            qb.push_values(chunk, |mut b, item| {
                let s = &item.sample;
                let d = &s.detail;
                b.push_bind(item.job_id.as_str())
                    .push_bind(s.timestamp)
                    .push_bind(s.cpu_usage)
                    .push_bind(s.memory_usage_mb)
                    .push_bind(s.gpu_usage)
                    .push_bind(d.node.as_deref());
                let (seconds, counts) = figures(d);
                for value in seconds {
                    b.push_bind(value);
                }
                for value in counts {
                    b.push_bind(value);
                }
                b.push_bind(stored_pressure(d).map(Json))
                    .push_bind(stored_gpus(d).map(Json));
            });
            qb.push(" ON CONFLICT DO NOTHING ").push(INSERTED_SAMPLE);
            inserted.extend(qb.build_query_as().fetch_all(&mut *conn).await?);
        }
        Ok(ids_of_items(items, inserted))
    }

    /// Applies each job's share of a batch to its row (see [`JOB_DELTA_SET`]); the ids of the
    /// jobs updated.
    pub(in crate::store) async fn update_jobs(
        conn: &mut SqliteConnection,
        deltas: &[JobDelta<'_>],
    ) -> StoreResult<Vec<String>> {
        let mut updated = Vec::with_capacity(deltas.len());
        // 500 rows × 16 columns: 8,000 parameters a statement.
        for chunk in deltas.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!("{JOB_DELTA_SET} FROM ("));
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(d.job_id.to_owned())
                    .push_bind(d.newest_at)
                    .push_bind(d.newest_cpu)
                    .push_bind(d.newest_memory_mb)
                    .push_bind(d.newest_gpu)
                    .push_bind(d.newest_memory_bytes)
                    .push_bind(d.newest_gpus_sample)
                    .push_bind(d.samples)
                    .push_bind(d.cpu_samples)
                    .push_bind(d.cpu_sum)
                    .push_bind(d.cpu_max)
                    .push_bind(d.memory_mb_max)
                    .push_bind(d.memory_bytes_max)
                    .push_bind(d.gpu_samples)
                    .push_bind(d.gpu_sum)
                    .push_bind(d.gpu_max);
            });
            qb.push(") AS s WHERE jobs.id = s.column1 RETURNING id");
            updated.extend(qb.build_query_scalar().fetch_all(&mut *conn).await?);
        }
        Ok(updated)
    }

    /// Appends the event rows, ids in the order given. Each row's id is the last of its block
    /// (see [`crate::domain::event::StoredSampleBatch`]), counted on from the highest id the
    /// table ever gave (`AUTOINCREMENT` keeps it in `sqlite_sequence`, and raises it to the ids
    /// written here); the write transaction holds the database's only write lock.
    pub(in crate::store) async fn insert_events(
        conn: &mut SqliteConnection,
        occurred_at: DateTime<Utc>,
        events: &[QueuedEvent],
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let given: i64 = sqlx::query_scalar(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), \
             COALESCE((SELECT MAX(id) FROM events), 0))",
        )
        .fetch_one(&mut *conn)
        .await?;
        let (_, upto) = id_blocks(events);
        let rows: Vec<(i64, &QueuedEvent)> = upto.iter().map(|u| given + u).zip(events).collect();
        // 2,000 rows × 6 columns, under the parameter limit.
        for chunk in rows.chunks(2000) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO events (id, occurred_at, kind, job_id, payload, sample_id) ",
            );
            qb.push_values(chunk, |mut b, (id, e)| {
                b.push_bind(*id)
                    .push_bind(occurred_at)
                    .push_bind(e.stored_kind())
                    .push_bind(e.job_id.as_deref())
                    .push_bind(e.payload.as_str())
                    .push_bind(e.sample_id);
            });
            qb.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

pub(in crate::store) mod postgres {
    use super::*;
    pub(in crate::store) use crate::store::node_figures::postgres::keep_node_figures;
    use crate::store::pg_copy::BinaryCopy;
    use sqlx::{AssertSqlSafe, PgConnection};

    /// `UNNEST($first::type1[], $first+1::type2[], ...)`: one array parameter per column.
    fn unnest(first: usize, types: &[&str]) -> String {
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}[]", first + i))
            .collect();
        format!("UNNEST({})", arrays.join(", "))
    }

    /// Element types of the arrays of [`SampleArrays`], in `SAMPLE_COLUMNS` order. The JSON
    /// columns are bound as text and cast, so that they are checked as `json`, never parsed
    /// into `jsonb` on the way (a `Json` parameter is `jsonb`).
    pub(super) fn sample_types() -> Vec<&'static str> {
        let mut types = vec!["text", "timestamptz", "float8", "int8", "float8", "text"];
        types.extend(["float8"; SECONDS]);
        types.extend(["int8"; COUNTS]);
        types.extend(["json", "json"]);
        types
    }

    /// A batch of samples as one array per `metric_samples` column.
    struct SampleArrays<'a> {
        job_id: Vec<&'a str>,
        timestamp: Vec<DateTime<Utc>>,
        cpu_usage: Vec<Option<f64>>,
        memory_usage_mb: Vec<Option<i64>>,
        gpu_usage: Vec<Option<f64>>,
        node: Vec<Option<&'a str>>,
        /// cpu_time_seconds, cpu_user_seconds, cpu_system_seconds, cpu_throttled_seconds.
        seconds: [Vec<Option<f64>>; SECONDS],
        /// cpu_nr_throttled through pids, in `SAMPLE_COLUMNS` order.
        counts: [Vec<Option<i64>>; COUNTS],
        pressure: Vec<Option<String>>,
        gpus: Vec<Option<String>>,
    }

    impl<'a> SampleArrays<'a> {
        fn of(items: &[&'a SampleItem]) -> StoreResult<SampleArrays<'a>> {
            let n = items.len();
            let mut a = SampleArrays {
                job_id: Vec::with_capacity(n),
                timestamp: Vec::with_capacity(n),
                cpu_usage: Vec::with_capacity(n),
                memory_usage_mb: Vec::with_capacity(n),
                gpu_usage: Vec::with_capacity(n),
                node: Vec::with_capacity(n),
                seconds: std::array::from_fn(|_| Vec::with_capacity(n)),
                counts: std::array::from_fn(|_| Vec::with_capacity(n)),
                pressure: Vec::with_capacity(n),
                gpus: Vec::with_capacity(n),
            };
            for item in items {
                let s = &item.sample;
                let d = &s.detail;
                a.job_id.push(&item.job_id);
                a.timestamp.push(s.timestamp);
                a.cpu_usage.push(s.cpu_usage);
                a.memory_usage_mb.push(s.memory_usage_mb);
                a.gpu_usage.push(s.gpu_usage);
                a.node.push(d.node.as_deref());
                let (seconds, counts) = figures(d);
                for (column, value) in a.seconds.iter_mut().zip(seconds) {
                    column.push(value);
                }
                for (column, value) in a.counts.iter_mut().zip(counts) {
                    column.push(value);
                }
                a.pressure
                    .push(stored_pressure(d).map(to_json).transpose()?);
                a.gpus.push(stored_gpus(d).map(to_json).transpose()?);
            }
            Ok(a)
        }
    }

    /// The `COPY` of a batch's samples: the row id, then `SAMPLE_COLUMNS`.
    fn sample_copy_sql() -> &'static str {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        SQL.get_or_init(|| {
            format!("COPY metric_samples (id, {SAMPLE_COLUMNS}) FROM STDIN (FORMAT binary)")
        })
    }

    /// Fields of a row of [`sample_copy_sql`].
    pub(super) const SAMPLE_COPY_FIELDS: i16 = 1 + 6 + SECONDS as i16 + COUNTS as i16 + 2;

    /// The batch's samples as a binary `COPY` stream, the row of `items[i]` with id `ids[i]`.
    fn sample_copy_data(items: &[&SampleItem], ids: &[i64]) -> StoreResult<Vec<u8>> {
        // A sample row with two GPUs is ~1.1 KB on the wire.
        let mut copy = BinaryCopy::with_capacity(items.len() * 1200);
        for (item, &id) in items.iter().zip(ids) {
            let s = &item.sample;
            let d = &s.detail;
            copy.row(SAMPLE_COPY_FIELDS)
                .int8(Some(id))
                .text(Some(&item.job_id))
                .timestamptz(s.timestamp)
                .float8(s.cpu_usage)
                .int8(s.memory_usage_mb)
                .float8(s.gpu_usage)
                .text(d.node.as_deref());
            let (seconds, counts) = figures(d);
            for value in seconds {
                copy.float8(value);
            }
            for value in counts {
                copy.int8(value);
            }
            copy.json(stored_pressure(d))
                .and_then(|copy| copy.json(stored_gpus(d)))
                .map_err(json_encode_error)?;
        }
        Ok(copy.finish())
    }

    /// The jobs of `ids` that exist. Not locked: the batch's UPDATE locks them (see
    /// `ingest_samples`), and a row lock here cost a WAL record per job.
    ///
    /// Each id is looked up by the primary key on its own (`LATERAL ... LIMIT 1`, which the
    /// planner cannot turn into a join). Written as `id = ANY($1)`, a custom plan (sqlx's first
    /// five executions on each pooled connection) for 1,000 ids on a `jobs` table of 41,000 rows
    /// scanned the whole table: 12-14 ms against 2.7 by key (BENCHMARKS.md, "At size").
    pub(in crate::store) async fn select_jobs(
        conn: &mut PgConnection,
        ids: &[&str],
    ) -> StoreResult<Vec<SampledJobRow>> {
        Ok(sqlx::query_as(AssertSqlSafe(select_jobs_sql()))
            .bind(ids)
            .fetch_all(conn)
            .await?)
    }

    /// The query of [`select_jobs`]: `$1` the ids (`text[]`).
    pub(super) fn select_jobs_sql() -> String {
        format!(
            "SELECT j.* FROM UNNEST($1::text[]) AS wanted(id) \
             CROSS JOIN LATERAL (SELECT {} FROM jobs WHERE jobs.id = wanted.id LIMIT 1) j",
            crate::store::queries::SAMPLED_JOB_COLUMNS
        )
    }

    /// Inserts the samples, skipping those already stored; the row id of each item, `None` for
    /// those skipped. The batch goes by `COPY` (see the module doc); only when a sample of it is
    /// stored already does it go by `INSERT ... ON CONFLICT DO NOTHING`.
    pub(in crate::store) async fn insert_samples(
        conn: &mut PgConnection,
        items: &[&SampleItem],
    ) -> StoreResult<Vec<Option<i64>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval('metric_samples_id_seq') FROM generate_series(1, $1)",
        )
        .bind(items.len() as i64)
        .fetch_all(&mut *conn)
        .await?;
        let data = sample_copy_data(items, &ids)?;
        sqlx::raw_sql("SAVEPOINT sample_copy")
            .execute(&mut *conn)
            .await?;
        let copied = async {
            let mut copy = conn.copy_in_raw(sample_copy_sql()).await?;
            copy.send(data).await?;
            copy.finish().await
        }
        .await;
        match copied {
            Ok(_) => {
                sqlx::raw_sql("RELEASE SAVEPOINT sample_copy")
                    .execute(&mut *conn)
                    .await?;
                Ok(ids.into_iter().map(Some).collect())
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT sample_copy")
                    .execute(&mut *conn)
                    .await?;
                insert_samples_skipping_stored(conn, items).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`insert_samples`] for a batch with samples stored before: a row inserted for each of the
    /// others.
    async fn insert_samples_skipping_stored(
        conn: &mut PgConnection,
        items: &[&SampleItem],
    ) -> StoreResult<Vec<Option<i64>>> {
        let a = SampleArrays::of(items)?;
        let mut query = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO metric_samples ({SAMPLE_COLUMNS}) SELECT * FROM {} \
             ON CONFLICT DO NOTHING {INSERTED_SAMPLE}",
            unnest(1, &sample_types())
        )))
        .bind(a.job_id)
        .bind(a.timestamp)
        .bind(a.cpu_usage)
        .bind(a.memory_usage_mb)
        .bind(a.gpu_usage)
        .bind(a.node);
        for column in a.seconds {
            query = query.bind(column);
        }
        for column in a.counts {
            query = query.bind(column);
        }
        let inserted = query.bind(a.pressure).bind(a.gpus).fetch_all(conn).await?;
        Ok(ids_of_items(items, inserted))
    }

    /// Applies each job's share of a batch to its row (see [`JOB_DELTA_SET`]); the ids of the
    /// jobs updated.
    pub(in crate::store) async fn update_jobs(
        conn: &mut PgConnection,
        deltas: &[JobDelta<'_>],
    ) -> StoreResult<Vec<String>> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        fn column<'d, 'a, T>(
            deltas: &'d [JobDelta<'a>],
            f: impl Fn(&'d JobDelta<'a>) -> T,
        ) -> Vec<T> {
            deltas.iter().map(f).collect()
        }
        // The fields of `JobDelta`, in order: s.column1 to s.column16.
        let types = [
            "text",        // job_id
            "timestamptz", // newest_at
            "float8",      // newest_cpu
            "int8",        // newest_memory_mb
            "float8",      // newest_gpu
            "int8",        // newest_memory_bytes
            "int8",        // newest_gpus_sample
            "int8",        // samples
            "int8",        // cpu_samples
            "float8",      // cpu_sum
            "float8",      // cpu_max
            "int8",        // memory_mb_max
            "int8",        // memory_bytes_max
            "int8",        // gpu_samples
            "float8",      // gpu_sum
            "float8",      // gpu_max
        ];
        let names: Vec<String> = (1..=types.len()).map(|i| format!("column{i}")).collect();
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "{JOB_DELTA_SET} FROM {} AS s({}) WHERE jobs.id = s.column1 RETURNING jobs.id",
            unnest(1, &types),
            names.join(", ")
        )))
        .bind(column(deltas, |d| d.job_id))
        .bind(column(deltas, |d| d.newest_at))
        .bind(column(deltas, |d| d.newest_cpu))
        .bind(column(deltas, |d| d.newest_memory_mb))
        .bind(column(deltas, |d| d.newest_gpu))
        .bind(column(deltas, |d| d.newest_memory_bytes))
        .bind(column(deltas, |d| d.newest_gpus_sample))
        .bind(column(deltas, |d| d.samples))
        .bind(column(deltas, |d| d.cpu_samples))
        .bind(column(deltas, |d| d.cpu_sum))
        .bind(column(deltas, |d| d.cpu_max))
        .bind(column(deltas, |d| d.memory_mb_max))
        .bind(column(deltas, |d| d.memory_bytes_max))
        .bind(column(deltas, |d| d.gpu_samples))
        .bind(column(deltas, |d| d.gpu_sum))
        .bind(column(deltas, |d| d.gpu_max))
        .fetch_all(conn)
        .await?)
    }

    /// Appends the event rows, ids in the order given. The ids are one block drawn from the
    /// sequence at once (`setval` past `nextval`), each row taking the last of its own (see
    /// [`crate::domain::event::StoredSampleBatch`]): the block is unbroken because every
    /// writer of the log holds the event-order lock (`EVENT_ORDER_LOCK`) while it draws.
    pub(in crate::store) async fn insert_events(
        conn: &mut PgConnection,
        occurred_at: DateTime<Utc>,
        events: &[QueuedEvent],
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let (total, upto) = id_blocks(events);
        let kinds: Vec<&str> = events.iter().map(|e| e.stored_kind()).collect();
        let job_ids: Vec<Option<&str>> = events.iter().map(|e| e.job_id.as_deref()).collect();
        // The payloads go as text, copied as they are; the cast to `json` only checks them.
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        let sample_ids: Vec<Option<i64>> = events.iter().map(|e| e.sample_id).collect();
        sqlx::query(AssertSqlSafe(format!(
            "WITH block AS (SELECT setval('events_id_seq', nextval('events_id_seq') + $2 - 1) AS last) \
             INSERT INTO events (id, occurred_at, kind, job_id, payload, sample_id) \
             SELECT block.last - $2 + e.upto, $1, e.kind, e.job_id, e.payload::json, e.sample_id \
             FROM block, {} AS e(upto, kind, job_id, payload, sample_id)",
            unnest(3, &["int8", "text", "text", "text", "int8"])
        )))
        .bind(occurred_at)
        .bind(total)
        .bind(upto)
        .bind(kinds)
        .bind(job_ids)
        .bind(payloads)
        .bind(sample_ids)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::postgres::{sample_types, SAMPLE_COPY_FIELDS};
    use crate::store::queries::SAMPLE_COLUMNS;

    #[test]
    fn store_bulk_binds_one_array_per_sample_column() {
        assert_eq!(sample_types().len(), SAMPLE_COLUMNS.split(',').count());
    }

    #[test]
    fn store_bulk_copies_the_id_and_every_sample_column() {
        assert_eq!(
            SAMPLE_COPY_FIELDS as usize,
            1 + SAMPLE_COLUMNS.split(',').count()
        );
    }

    /// A sample batch's lookup of its jobs goes by the primary key even in a custom plan for
    /// 1,000 ids, where `id = ANY($1)` scanned all of `jobs` (see `select_jobs`).
    #[tokio::test]
    async fn postgres_looks_a_batchs_jobs_up_by_their_key() {
        use sqlx::{Connection, Executor, Row};
        let Some((store, url)) = crate::store::test_postgres_store().await else {
            return;
        };
        crate::store::create_test_jobs(&store, 200, |_| "node-1".into()).await;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        // 10,000 more rows, copies of those under other ids: a day's jobs of a small site.
        db.execute(
            "INSERT INTO jobs SELECT (jsonb_populate_record(NULL::jobs, \
               to_jsonb(j) || jsonb_build_object('id', j.id || '-' || g))).* \
             FROM jobs j, generate_series(1, 50) g",
        )
        .await
        .unwrap();
        db.execute("ANALYZE jobs").await.unwrap();
        db.execute("SET plan_cache_mode = force_custom_plan")
            .await
            .unwrap();
        db.execute(sqlx::AssertSqlSafe(format!(
            "PREPARE lookup(text[]) AS {}",
            super::postgres::select_jobs_sql()
        )))
        .await
        .unwrap();
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("job-{}-{}", i % 200, i / 200 + 1))
            .collect();
        crate::store::assert_plan(
            &mut db,
            &format!("EXECUTE lookup('{{{}}}')", ids.join(",")),
            "jobs_pkey",
            "Seq Scan",
            "a batch's jobs",
        )
        .await;
        let rows = db
            .fetch_all("EXECUTE lookup(ARRAY['job-1', 'job-1-7', 'no-such-job'])")
            .await
            .unwrap();
        let mut ids: Vec<String> = rows.iter().map(|r| r.get("id")).collect();
        ids.sort();
        assert_eq!(ids, ["job-1", "job-1-7"], "the jobs that exist, each once");
        let _ = db.close().await;
        crate::store::drop_test_postgres_store(store, &url).await;
    }
}
