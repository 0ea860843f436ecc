//! Sample storage benchmark (issue 19): bytes on disk per sample on PostgreSQL, as rows of
//! `metric_samples` and after `Store::pack_closed_hours` moved them into `sample_packs`, and what
//! reading a job's samples costs in both forms.
//!
//! A day of a cluster: `BENCH_JOBS` single-node jobs (default 2,000), each sampled every 15 s
//! for `BENCH_SAMPLES_PER_JOB` samples (default 5,760: a whole day), one job in ten with four
//! GPUs. Rows are written by one `INSERT ... SELECT` over `generate_series` (the bulk path
//! would take an hour for 11.5 M rows) with every column an agent on cgroup v2 fills: counters
//! that grow, memory that wanders, pressure figures, full-precision CPU percentages (the
//! hardest figure to pack), GPU lists as the agent sends them. Sizes are
//! `pg_total_relation_size` (heap, TOAST and indexes) after `VACUUM ANALYZE`.
//!
//! Run: `cargo bench --bench storage_size` (see BENCHMARKS.md). Options by environment:
//! `BENCH_JOBS`, `BENCH_SAMPLES_PER_JOB`, `JOBSCOPE_BENCH_POSTGRES_URL`.

#[path = "support.rs"]
mod support;
use support::{bench_job, env_or, percentile_ms, FILL_SQL};

use chrono::{Duration, DurationRound, Utc};
use jobscope::domain::report::Thresholds;
use jobscope::store::{AuditContext, SampleQuery, Store};
use sqlx::{Executor, PgPool};
use std::time::Instant;

/// Table, TOAST and indexes of `table`, summed over its partitions where it has them
/// (`pg_partition_tree` lists nothing for a plain table).
async fn size(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE((SELECT SUM(pg_total_relation_size(relid)) \
         FROM pg_partition_tree('{table}')), pg_total_relation_size('{table}'))::bigint"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// p50 and p95 of reading one job's newest 1,000 samples and all of its samples, over `runs`
/// jobs, in ms.
async fn read_times(store: &Store, jobs: i64, runs: i64) -> [f64; 4] {
    let (mut page, mut all) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let id = format!("job-{}", 1 + (r * 7919) % jobs);
        for (limit, times) in [(1000, &mut page), (i64::MAX, &mut all)] {
            let q = SampleQuery {
                start: None,
                end: None,
                limit,
            };
            let started = Instant::now();
            let (samples, _) = store.list_samples(&id, &q).await.unwrap();
            times.push(started.elapsed());
            assert!(!samples.is_empty());
        }
    }
    page.sort();
    all.sort();
    [
        percentile_ms(&page, 0.5),
        percentile_ms(&page, 0.95),
        percentile_ms(&all, 0.5),
        percentile_ms(&all, 0.95),
    ]
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / 1e6
}

async fn run(url: &str, jobs: i64, per_job: i64) {
    let store = Store::connect(url).await.expect("store");
    let pool = PgPool::connect(url).await.unwrap();
    let day = (Utc::now() - Duration::days(2))
        .duration_trunc(Duration::days(1))
        .unwrap();
    let audit = AuditContext {
        changed_by: "bench".into(),
        source: "bench".into(),
        correlation_id: "bench".into(),
        actor: None,
    };
    let started = Instant::now();
    for j in 1..=jobs {
        let job = bench_job(j, 50, day - Duration::minutes(1));
        store.create_job(&job, &audit).await.expect("job");
    }
    sqlx::query(FILL_SQL)
        .bind(day)
        .bind(jobs as i32)
        .bind(0i64)
        .bind(per_job)
        .execute(&pool)
        .await
        .expect("fill");
    pool.execute("VACUUM ANALYZE metric_samples").await.unwrap();
    let rows = count(&pool, "SELECT COUNT(*) FROM metric_samples").await;
    let gpu_rows = count(
        &pool,
        "SELECT COUNT(*) FROM metric_samples WHERE gpus IS NOT NULL",
    )
    .await;
    let raw = size(&pool, "metric_samples").await;
    println!(
        "filled {rows} rows ({gpu_rows} with 4 GPUs) in {:.0} s; load {}",
        started.elapsed().as_secs_f64(),
        load()
    );
    let raw_reads = read_times(&store, jobs, 50).await;

    let started = Instant::now();
    let pass = store
        .pack_closed_hours(Utc::now(), Thresholds::site())
        .await
        .expect("pack pass");
    let packing = started.elapsed().as_secs_f64();
    assert_eq!(pass.samples as i64, rows);
    pool.execute("VACUUM ANALYZE sample_packs").await.unwrap();
    let packs = size(&pool, "sample_packs").await;
    let left = count(&pool, "SELECT COUNT(*) FROM metric_samples").await;
    let (cpu_data, cpu_samples): (i64, i64) = sqlx::query_as(
        "SELECT SUM(octet_length(data))::bigint, SUM(samples)::bigint FROM sample_packs \
         WHERE NOT job_id LIKE '%0'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (gpu_data, gpu_samples): (i64, i64) = sqlx::query_as(
        "SELECT SUM(octet_length(data))::bigint, SUM(samples)::bigint FROM sample_packs \
         WHERE job_id LIKE '%0'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let packed_reads = read_times(&store, jobs, 50).await;
    println!(
        "packed {} samples into {} packs in {packing:.0} s ({:.0} samples/s); {left} rows left; load {}",
        pass.samples,
        pass.packs,
        pass.samples as f64 / packing,
        load()
    );
    println!();
    println!("| form | samples | MB on disk | bytes per sample |");
    println!("|---|---|---|---|");
    println!(
        "| rows (`metric_samples`) | {rows} | {:.0} | {:.0} |",
        mb(raw),
        raw as f64 / rows as f64
    );
    println!(
        "| packs (`sample_packs`, all) | {} | {:.0} | {:.1} |",
        pass.samples,
        mb(packs),
        packs as f64 / pass.samples as f64
    );
    println!(
        "| packs: data of CPU-only jobs | {cpu_samples} | {:.0} | {:.1} |",
        mb(cpu_data),
        cpu_data as f64 / cpu_samples as f64
    );
    println!(
        "| packs: data of 4-GPU jobs | {gpu_samples} | {:.0} | {:.1} |",
        mb(gpu_data),
        gpu_data as f64 / gpu_samples as f64
    );
    println!();
    println!("| read one job's samples | newest 1,000 p50 ms | p95 ms | all p50 ms | all p95 ms |");
    println!("|---|---|---|---|---|");
    for (form, t) in [("rows", raw_reads), ("packs", packed_reads)] {
        println!(
            "| {form} | {:.2} | {:.2} | {:.2} | {:.2} |",
            t[0], t[1], t[2], t[3]
        );
    }
    store.close().await;
}

/// The 1-minute load average, for the figures' context.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if !support::begin("storage_size") {
        return;
    }
    let jobs: i64 = env_or("BENCH_JOBS", "2000").parse().unwrap();
    let per_job: i64 = env_or("BENCH_SAMPLES_PER_JOB", "5760").parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(support::create_pg_database("jobscope_bench_storage"));
    rt.block_on(run(&url, jobs, per_job));
}
