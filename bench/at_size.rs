//! At-size benchmark (issue 19): a day of a 1,000-node cluster on PostgreSQL, and what `serve`
//! costs over it.
//!
//! **The day.** `BENCH_NODES` × `BENCH_JOBS_PER_NODE` running jobs (default 1,000 × 10) sampled
//! every 15 s for `BENCH_HOURS` hours (default 24: 57.6 M samples), one job in ten with four
//! GPUs, created through `Store::create_job`; plus `BENCH_FINISHED` finished jobs of the same day
//! (default 30,000: 10,000 jobs at a time that last 8 hours on average end 30,000 a day) with no
//! samples of their own. The samples of yesterday (UTC) are written an hour at a time by the
//! `INSERT ... SELECT generate_series` of `support::FILL_SQL`, each hour with its `job_sample`
//! events in the same transaction, in the stored shape (`BATCH_EVENTS_SQL`: one log row per
//! node and 15-second pass, as `serve` logs an agent's batch); a packing task runs `Store::pack_closed_hours` after each hour lands and a
//! rollup task `Store::roll_up` up to that hour's end after it is packed, both timed, the three
//! going on at once (so the raw rows never exceed about two hours of samples, ~3.5 GB). Progress
//! is kept in the table `bench_at_size_progress`, so a run cut off resumes at the next hour.
//!
//! **The measurements**, once the day is there: sizes (`pg_total_relation_size`, the event log
//! and the packs summed over their partitions), then `serve` in-process over the database: the time from
//! `Application::build` to its first `/metrics` answer and that answer's bytes; `POST
//! /v1/samples` of 1,000-sample batches; `GET /v1/jobs/{id}/metrics` raw and
//! `resolution=auto` alternately for a CPU job and a GPU job in the middle of the range;
//! `GET /v1/jobs?state=running`; the process's VmRSS/VmHWM after. Last, one day's retention
//! (`Store::prune` before the day's end: the drop of the day's log and pack partitions) with its
//! time and WAL, on a copy of the database (`CREATE DATABASE ... TEMPLATE`, dropped after), so
//! the day stays for the next run.
//!
//! The database (`BENCH_DB`, default `jobscope_at_size`) is kept between runs: it is only
//! dropped and created again with `BENCH_FRESH=1`.
//!
//! Run: `cargo bench --bench at_size` (see BENCHMARKS.md). Options by environment:
//! `BENCH_NODES`, `BENCH_JOBS_PER_NODE`, `BENCH_HOURS`, `BENCH_FINISHED`, `BENCH_DB`,
//! `BENCH_FRESH`, `BENCH_RUNS` timed requests per kind (default 200), `BENCH_BATCHES` timed
//! sample batches (default 40), `BENCH_PRUNE` (default 1: measure retention on a copy),
//! `BENCH_ROLLUP_PASS` (1: time one of `serve`'s 5-minute rollup passes instead; see
//! `measure_rollup_pass`, it writes to the database),
//! `BENCH_GENERATE_ONLY`, `BENCH_STOP_FILE` (a path: once it exists no further hour is started,
//! the ones under way are packed and rolled up), `JOBSCOPE_BENCH_POSTGRES_URL`.

#[path = "support.rs"]
mod support;
use support::{
    bench_audit, bench_job, env_or, get_json, percentile_ms, post_samples_timed, timed, FILL_SQL,
};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use jobscope::collector::{CgroupSample, GpuReading, GpuVendor, JobReport, SampleBatch};
use jobscope::domain::report::Thresholds;
use jobscope::domain::{Job, JobState};
use jobscope::store::Store;
use sqlx::{Connection, Executor, PgPool};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Samples per job per hour at 15 s.
const PER_HOUR: i64 = 240;

struct Plan {
    jobs: i64,
    hours: i64,
    finished: i64,
}

/// The 1-, 5- and 15-minute load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `field` (kB) of /proc/self/status, in MB.
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime), counted from the state (field 3) at index 0.
    (ticks(11) + ticks(12)) / 100.0
}

fn log(msg: impl std::fmt::Display) {
    eprintln!(
        "[{}] {msg} (load {})",
        Utc::now().format("%H:%M:%S"),
        load()
    );
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The URL of database `name`, created if missing (dropped first with `fresh`).
async fn open_database(name: &str, fresh: bool) -> String {
    let admin = env_or(
        "JOBSCOPE_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    if fresh {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .unwrap();
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    if !exists {
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// Yesterday's midnight (UTC) on a first run; the day the jobs were made for on a rerun.
async fn the_day(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar::<_, DateTime<Utc>>("SELECT day FROM bench_at_size_progress_day")
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or_else(|| {
            (Utc::now() - ChronoDuration::days(1))
                .duration_trunc(ChronoDuration::days(1))
                .unwrap()
        })
}

/// The jobs (running ones sampled all day, finished ones of the day), those missing only.
async fn create_jobs(store: &Store, pool: &PgPool, day: DateTime<Utc>, plan: &Plan) {
    let have: HashSet<String> = sqlx::query_scalar("SELECT id FROM jobs")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let started = Instant::now();
    let audit = bench_audit();
    let mut made = 0;
    for j in 1..=plan.jobs {
        if have.contains(&format!("job-{j}")) {
            continue;
        }
        let job = bench_job(j, 200, day - ChronoDuration::minutes(1));
        store.create_job(&job, &audit).await.expect("job");
        made += 1;
    }
    for f in 1..=plan.finished {
        let id = format!("done-{f}");
        if have.contains(&id) {
            continue;
        }
        // Spread over the day, 1 to 16 hours long, ending before the day's end.
        let end = day + ChronoDuration::seconds((f * 86_400 / plan.finished.max(1)).min(86_399));
        let start = end - ChronoDuration::minutes(60 + (f * 37) % 900);
        let state = if f % 20 == 0 {
            JobState::Failed
        } else {
            JobState::Completed
        };
        let mut job = Job::new(
            id,
            format!("user{}", f % 200),
            vec![format!("node-{}", f % 1000)],
            state,
            start,
            "bench",
            "slurm",
            "api-v1",
        );
        job.end_time = Some(end);
        job.allocated_cpus = Some(4);
        job.allocated_gpus = Some(if f % 10 == 0 { 4 } else { 0 });
        store.create_job(&job, &audit).await.expect("finished job");
        made += 1;
        if made % 10_000 == 0 {
            log(format!("{made} jobs created"));
        }
    }
    log(format!(
        "created {made} jobs in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
}

/// Sums of a task's passes, for the report.
#[derive(Default, Debug, Clone, Copy)]
struct Spent {
    wall_s: f64,
    samples: u64,
}

/// The day: the hours not filled yet are filled (with their events) one at a time, packed
/// after each, rolled up after packing; resumable.
async fn generate(url: &str, pool: &PgPool, day: DateTime<Utc>, plan: &Plan) {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_at_size_progress (hour INT PRIMARY KEY, \
         filled_s FLOAT8, samples BIGINT, packed_s FLOAT8, rolled_s FLOAT8)",
    )
    .await
    .unwrap();
    // The day's event partition, as `serve`'s maintenance names it (it only makes today's on).
    let part = format!("events_p{}", day.format("%Y%m%d"));
    pool.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {part} PARTITION OF events FOR VALUES FROM ('{}') TO ('{}')",
        day.format("%Y-%m-%d 00:00:00+00"),
        (day + ChronoDuration::days(1)).format("%Y-%m-%d 00:00:00+00"),
    )))
    .await
    .unwrap();
    let done: Vec<(i32, Option<f64>, Option<f64>)> =
        sqlx::query_as("SELECT hour, packed_s, rolled_s FROM bench_at_size_progress ORDER BY hour")
            .fetch_all(pool)
            .await
            .unwrap();
    let filled: HashSet<i64> = done.iter().map(|d| d.0 as i64).collect();
    let to_pack: Vec<i64> = done
        .iter()
        .filter(|d| d.1.is_none())
        .map(|d| d.0 as i64)
        .collect();
    let to_roll: Vec<i64> = done
        .iter()
        .filter(|d| d.1.is_some() && d.2.is_none())
        .map(|d| d.0 as i64)
        .collect();
    let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel::<i64>(64);
    let (roll_tx, mut roll_rx) = tokio::sync::mpsc::channel::<i64>(64);
    for h in to_pack {
        pack_tx.send(h).await.unwrap();
    }
    for h in to_roll {
        roll_tx.send(h).await.unwrap();
    }
    let cpu_before = cpu_seconds();
    let started = Instant::now();

    // Packing: after each hour lands.
    let store = Store::connect(url).await.expect("store");
    let packer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut spent = Spent::default();
            while let Some(h) = pack_rx.recv().await {
                let t = Instant::now();
                let pass = store
                    .pack_closed_hours(Utc::now(), Thresholds::site())
                    .await
                    .expect("pack pass");
                let took = t.elapsed().as_secs_f64();
                spent.wall_s += took;
                spent.samples += pass.samples;
                sqlx::query("UPDATE bench_at_size_progress SET packed_s = $2 WHERE hour = $1")
                    .bind(h as i32)
                    .bind(took)
                    .execute(&pool)
                    .await
                    .unwrap();
                log(format!(
                    "hour {h}: packed {} samples into {} packs in {took:.1} s",
                    pass.samples, pass.packs
                ));
                roll_tx.send(h).await.unwrap();
            }
            store.close().await;
            spent
        })
    };
    // Rollups: up to each packed hour's end, as `serve`'s 5-minute passes would have.
    let store = Store::connect(url).await.expect("store");
    let roller = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut spent = Spent::default();
            while let Some(first) = roll_rx.recv().await {
                // Hours packed while the previous pass ran are rolled up in one pass.
                let mut hours = vec![first];
                while let Ok(h) = roll_rx.try_recv() {
                    hours.push(h);
                }
                let h = *hours.iter().max().unwrap();
                let t = Instant::now();
                let now = day + ChronoDuration::hours(h + 1) + jobscope::store::rollups::SETTLE;
                let pass = store.roll_up(now).await.expect("roll up");
                let took = t.elapsed().as_secs_f64();
                spent.wall_s += took;
                spent.samples += pass.buckets as u64;
                sqlx::query(
                    "UPDATE bench_at_size_progress SET rolled_s = $2 / $3 WHERE hour = ANY($1)",
                )
                .bind(hours.iter().map(|&h| h as i32).collect::<Vec<i32>>())
                .bind(took)
                .bind(hours.len() as f64)
                .execute(&pool)
                .await
                .unwrap();
                log(format!(
                    "hours {hours:?}: rolled up {} jobs, {} buckets in {took:.1} s",
                    pass.jobs, pass.buckets
                ));
            }
            store.close().await;
            spent
        })
    };

    // Filling: an hour of every job's samples and their event rows, one transaction.
    let mut fill = Spent::default();
    for h in 0..plan.hours {
        if filled.contains(&h) {
            continue;
        }
        if std::env::var("BENCH_STOP_FILE").is_ok_and(|f| std::path::Path::new(&f).exists()) {
            log(format!("stop file found: no hour from {h} on in this run"));
            break;
        }
        // Keep at most about two hours of raw rows: wait while packing lags.
        while scalar(
            pool,
            "SELECT COUNT(*) FROM bench_at_size_progress WHERE packed_s IS NULL",
        )
        .await
            > 1
        {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let t = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        let rows = sqlx::query(FILL_SQL)
            .bind(day)
            .bind(plan.jobs as i32)
            .bind(h * PER_HOUR)
            .bind((h + 1) * PER_HOUR)
            .execute(&mut *tx)
            .await
            .expect("fill")
            .rows_affected();
        sqlx::query(BATCH_EVENTS_SQL)
            .bind(day + ChronoDuration::hours(h))
            .bind(day + ChronoDuration::hours(h + 1))
            .execute(&mut *tx)
            .await
            .expect("events");
        let took = t.elapsed().as_secs_f64();
        sqlx::query(
            "INSERT INTO bench_at_size_progress (hour, filled_s, samples) VALUES ($1, $2, $3)",
        )
        .bind(h as i32)
        .bind(took)
        .bind(rows as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        fill.wall_s += took;
        fill.samples += rows;
        log(format!(
            "hour {h}: filled {rows} samples and events in {took:.1} s"
        ));
        pack_tx.send(h).await.unwrap();
    }
    drop(pack_tx);
    let packed = packer.await.unwrap();
    let rolled = roller.await.unwrap();
    log(format!(
        "this run: filled {} samples in {:.0} s, packed {} in {:.0} s, rolled up {} buckets in {:.0} s; \
         {:.0} s in all, this process {:.0} CPU s",
        fill.samples,
        fill.wall_s,
        packed.samples,
        packed.wall_s,
        rolled.samples,
        rolled.wall_s,
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu_before
    ));
}

/// The hour's `job_sample` events as `serve` logs them: one row per node and 15-second pass
/// (that node's agent batch), in the stored form of `StoredSampleBatch` (the text `serde_json`
/// writes), its id the last of a block of one id per sample, drawn from the log's sequence.
const BATCH_EVENTS_SQL: &str = "WITH batches AS ( \
      SELECT max(id) AS last_sample, count(*) AS n, max(timestamp) + interval '1 second' AS at, \
        '{\"job_ids\":[\"' || string_agg(job_id, '\",\"' ORDER BY id) || '\"],\"sample_ids\":[' \
          || string_agg(id::text, ',' ORDER BY id) || '],\"states\":[' \
          || string_agg('\"running\"', ',' ORDER BY id) || ']}' AS payload \
      FROM metric_samples WHERE timestamp >= $1 AND timestamp < $2 \
      GROUP BY node, floor(extract(epoch FROM timestamp - $1) / 15)), \
    block AS (SELECT nextval('events_id_seq') - 1 AS base, (SELECT sum(n) FROM batches)::bigint AS total), \
    taken AS (SELECT setval('events_id_seq', base + total) FROM block) \
    INSERT INTO events (id, occurred_at, kind, job_id, payload, sample_id) \
    SELECT block.base + sum(batches.n) OVER (ORDER BY batches.last_sample), batches.at, 'job_samples', \
      NULL, batches.payload::json, NULL \
    FROM batches, block, taken";

/// One agent's batch: a sample of each of `jobs` jobs `ingest-N` on `bench-node`, one in ten
/// with four GPUs.
fn batch(jobs: usize, pass: u64) -> SampleBatch {
    let now = Utc::now();
    let reports = (0..jobs)
        .map(|i| {
            let usage = 3_600_000_000 + pass * 15_000_000 + i as u64;
            let gpus = if i % 10 == 0 {
                (0..4)
                    .map(|g| GpuReading {
                        uuid: Some(format!("GPU-5f0e4a2c-1b7d-4c1e-9a51-{:012x}", i * 4 + g)),
                        utilization_percent: Some(90.0),
                        memory_used_bytes: Some(64_424_509_440),
                        memory_total_bytes: Some(85_899_345_920),
                        power_watts: Some(612.5),
                        energy_joules: Some(98_765_432.1 + pass as f64),
                        temperature_celsius: Some(67.0),
                        processes: vec![80_000 + i as u32],
                        ..GpuReading::new(g as u32, GpuVendor::Nvidia)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            JobReport {
                job_id: format!("ingest-{i}"),
                collected_at: Some(now),
                cpu_usage_percent: Some(87.5),
                cgroup: CgroupSample {
                    cpu_usage_usec: Some(usage),
                    cpu_user_usec: Some(usage / 10 * 9),
                    cpu_system_usec: Some(usage / 10),
                    memory_current_bytes: Some(17_179_869_184 + i as u64),
                    memory_peak_bytes: Some(18_253_611_008),
                    memory_limit_bytes: Some(68_719_476_736),
                    io_read_bytes: Some(1_073_741_824 + pass),
                    io_write_bytes: Some(536_870_912 + pass),
                    pids_current: Some(34),
                    ..CgroupSample::default()
                },
                gpus,
            }
        })
        .collect();
    SampleBatch {
        node: "bench-node".into(),
        collected_at: now,
        interval_seconds: Some(15.0),
        jobs: reports,
        node_stats: None,
    }
}

fn row(what: &str, runs: usize, bytes: usize, times: &mut [Duration]) {
    times.sort();
    println!(
        "| {what} | {runs} | {bytes} | {:.2} | {:.2} | {:.2} | load {} |",
        percentile_ms(times, 0.5),
        percentile_ms(times, 0.95),
        percentile_ms(times, 0.99),
        load()
    );
}

/// CPU seconds (user + system) of the whole machine so far, from `/proc/stat`.
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user, nice, system, idle, iowait, irq, softirq: all but idle and iowait.
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    busy / 100.0
}

/// One of `serve`'s 5-minute rollup passes (`Store::roll_up`) in steady state at the cluster's
/// size (`BENCH_ROLLUP_PASS=1`): the running jobs' raw samples of the pass's window (the last
/// `RELOOK` + 5 minutes, as a pass re-reads them) are written, the previous pass is marked done 5
/// minutes ago, and one pass is timed, with this process's and the machine's CPU. It adds those
/// samples and their rollups to the database: run it on a copy (`CREATE DATABASE ... TEMPLATE`).
async fn measure_rollup_pass(url: &str, pool: &PgPool, jobs: i64) {
    use jobscope::store::rollups::{RELOOK, SETTLE};
    let now = Utc::now();
    let to = (now - SETTLE)
        .duration_trunc(ChronoDuration::minutes(5))
        .unwrap();
    let previous = to - ChronoDuration::minutes(5);
    let from = previous - RELOOK;
    // Samples every 15 s from `from` to now, each job at its own offset within the 15 s.
    let steps = (now - from).num_seconds() / 15;
    let t = Instant::now();
    // A rerun writes the window again.
    sqlx::query("DELETE FROM metric_samples WHERE timestamp >= $1")
        .bind(from - ChronoDuration::minutes(5))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(FILL_SQL)
        .bind(from)
        .bind(jobs as i32)
        .bind(0i64)
        .bind(steps)
        .execute(pool)
        .await
        .unwrap();
    log(format!(
        "rollup pass: wrote {} samples of {jobs} jobs from {from} in {:.1} s",
        jobs * steps,
        t.elapsed().as_secs_f64()
    ));
    sqlx::query("UPDATE rollup_state SET rolled_until = $1")
        .bind(previous)
        .execute(pool)
        .await
        .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE metric_samples")
        .execute(pool)
        .await
        .unwrap();
    let store = Store::connect(url).await.unwrap();
    let (cpu0, machine0, t) = (cpu_seconds(), machine_cpu_seconds(), Instant::now());
    let pass = store.roll_up(now).await.unwrap();
    let wall = t.elapsed().as_secs_f64();
    log(format!(
        "rollup pass: {} jobs, {} buckets, rolled until {:?}: {wall:.1} s wall, {:.1} s CPU of this \
         process, {:.1} s CPU of the machine (this process, PostgreSQL and anything else)",
        pass.jobs,
        pass.buckets,
        pass.rolled_until,
        cpu_seconds() - cpu0,
        machine_cpu_seconds() - machine0
    ));
    store.close().await;
}

/// `serve` over the day: start to first `/metrics`, ingestion, reads, memory.
async fn measure_serve(url: &str, jobs_made: i64, runs: usize, batches: usize) {
    let rss_before = status_mb("VmRSS:");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let served = support::serve(url).await;
    let addr = served.addr;
    let metrics_bytes = loop {
        if let Ok(r) = client.get(format!("http://{addr}/metrics")).send().await {
            if r.status().is_success() {
                break r.bytes().await.unwrap().len();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let first_metrics = started.elapsed();
    println!(
        "serve: build to first /metrics {:.2} s, {metrics_bytes} bytes; VmRSS before {rss_before:.0} MB; load {}",
        first_metrics.as_secs_f64(),
        load()
    );
    println!();
    println!("| request | runs | bytes | p50 ms | p95 ms | p99 ms | |");
    println!("|---|---|---|---|---|---|---|");

    // Ingestion: 1,000 running jobs on one node (made once, kept for reruns).
    let jobs = 1000;
    for i in 0..jobs {
        let body = serde_json::json!({"job_id": format!("ingest-{i}"), "user": format!("user{}", i % 50),
            "node_list": ["bench-node"], "cpu_allocation": 16, "gpu_allocation": if i % 10 == 0 { 4 } else { 0 },
            "gpu_vendor": "nvidia", "partition": "gpu"});
        let r = client
            .post(format!("http://{addr}/v1/events/job-started"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().as_u16() == 409,
            "{}",
            r.status()
        );
    }
    let pass0: u64 = Utc::now().timestamp() as u64;
    let mut times = Vec::new();
    let mut body_len = 0;
    for i in 0..batches + 3 {
        let body = serde_json::to_vec(&batch(jobs, pass0 + i as u64)).unwrap();
        body_len = body.len();
        let took = post_samples_timed(&client, addr, body, jobs).await;
        if i >= 3 {
            times.push(took);
        }
    }
    row(
        "POST /v1/samples (1,000 samples)",
        batches,
        body_len,
        &mut times,
    );

    // A job's metrics, raw and auto alternately, for a CPU job and a GPU job mid-range.
    let mid = jobs_made / 2 + 1;
    for id in [format!("job-{mid}"), format!("job-{}", mid - 1)] {
        let base = format!("http://{addr}/v1/jobs/{id}/metrics");
        let auto = format!("{base}?resolution=auto");
        let check = get_json(&client, &auto).await;
        let label = format!(
            "{} {} points, {} s buckets",
            check["resolution"].as_str().unwrap_or("?"),
            check["total"],
            check["bucket_seconds"]
        );
        let (mut raw_t, mut auto_t) = (Vec::new(), Vec::new());
        let (mut raw_b, mut auto_b) = (0, 0);
        for i in 0..runs + 10 {
            for (url, times, bytes) in [
                (&base, &mut raw_t, &mut raw_b),
                (&auto, &mut auto_t, &mut auto_b),
            ] {
                let t = Instant::now();
                let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
                if i >= 10 {
                    times.push(t.elapsed());
                }
                *bytes = body.len();
            }
        }
        row(
            &format!("GET /v1/jobs/{id}/metrics (raw, newest 1,000)"),
            runs,
            raw_b,
            &mut raw_t,
        );
        row(
            &format!("GET /v1/jobs/{id}/metrics?resolution=auto ({label})"),
            runs,
            auto_b,
            &mut auto_t,
        );
    }
    let url_running = format!("http://{addr}/v1/jobs?state=running");
    let (mut times, bytes) = timed(&client, &url_running, runs).await;
    row("GET /v1/jobs?state=running", runs, bytes, &mut times);
    println!();
    println!(
        "serving process (in-process serve, plus the bench's client): VmRSS {:.0} MB, VmHWM {:.0} MB; load {}",
        status_mb("VmRSS:"),
        status_mb("VmHWM:"),
        load()
    );
    served.stop().await;
}

/// Bytes on disk of the tables the day fills, after `VACUUM ANALYZE`.
/// Sets each running job's `sample_count` to the samples stored for it (rows and packs), as
/// the ingestion path keeps it: `FILL_SQL` writes rows behind its back, and `resolution=auto`
/// decides from that count whether a job is small enough to answer raw.
async fn count_samples(pool: &PgPool) {
    let started = Instant::now();
    let updated = sqlx::query(
        "UPDATE jobs j SET sample_count = s.n FROM ( \
           SELECT job_id, SUM(n)::bigint AS n FROM ( \
             SELECT job_id, SUM(samples) AS n FROM sample_packs GROUP BY job_id \
             UNION ALL SELECT job_id, COUNT(*) FROM metric_samples GROUP BY job_id) parts \
           GROUP BY job_id) s \
         WHERE j.id = s.job_id AND j.sample_count IS DISTINCT FROM s.n",
    )
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    log(format!(
        "sample counts of {updated} jobs set from their stored samples in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}

async fn sizes(pool: &PgPool) {
    let samples = scalar(
        pool,
        "SELECT COALESCE(SUM(samples), 0)::bigint FROM sample_packs",
    )
    .await
        + scalar(pool, "SELECT COUNT(*) FROM metric_samples").await;
    let nodes = scalar(pool, "SELECT COUNT(DISTINCT node) FROM sample_packs").await;
    // The hours generated: sizes per node-day scale by 24 / hours.
    let hours = scalar(pool, "SELECT COUNT(*) FROM bench_at_size_progress")
        .await
        .max(1);
    let per_node_day = |size: i64| size as f64 / 1e6 / nodes.max(1) as f64 * 24.0 / hours as f64;
    for t in [
        "metric_samples",
        "sample_packs",
        "sample_rollups",
        "sample_rollups_coarse",
        "jobs",
    ] {
        pool.execute(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {t}")))
            .await
            .unwrap();
    }
    println!();
    println!(
        "{samples} samples of {nodes} nodes; database {:.0} MB in all; load {}",
        scalar(pool, "SELECT pg_database_size(current_database())").await as f64 / 1e6,
        load()
    );
    println!();
    println!(
        "| table | rows | MB (table + TOAST + indexes) | bytes per sample | MB per node-day |"
    );
    println!("|---|---|---|---|---|");
    let mut total = 0;
    for (t, size_sql, rows_sql) in [
        (
            "sample_packs (all partitions)",
            "SELECT COALESCE((SELECT SUM(pg_total_relation_size(relid)) \
             FROM pg_partition_tree('sample_packs')), pg_total_relation_size('sample_packs'))::bigint",
            "SELECT COUNT(*) FROM sample_packs",
        ),
        (
            "metric_samples",
            "SELECT pg_total_relation_size('metric_samples')",
            "SELECT COUNT(*) FROM metric_samples",
        ),
        (
            "sample_rollups",
            "SELECT pg_total_relation_size('sample_rollups')",
            "SELECT COUNT(*) FROM sample_rollups",
        ),
        (
            "sample_rollups_coarse",
            "SELECT pg_total_relation_size('sample_rollups_coarse')",
            "SELECT COUNT(*) FROM sample_rollups_coarse",
        ),
        (
            "events (all partitions)",
            "SELECT SUM(pg_total_relation_size(relid))::bigint FROM pg_partition_tree('events')",
            "SELECT COUNT(*) FROM events",
        ),
    ] {
        let size = scalar(pool, size_sql).await;
        let rows = scalar(pool, rows_sql).await;
        total += size;
        println!(
            "| {t} | {rows} | {:.0} | {:.1} | {:.2} |",
            size as f64 / 1e6,
            size as f64 / samples.max(1) as f64,
            per_node_day(size)
        );
    }
    println!(
        "| **all of these** | | {:.0} | {:.1} | {:.2} |",
        total as f64 / 1e6,
        total as f64 / samples.max(1) as f64,
        per_node_day(total)
    );
    let jobs = scalar(pool, "SELECT pg_total_relation_size('jobs')").await;
    println!(
        "(`jobs`: {} rows, {:.0} MB)",
        scalar(pool, "SELECT COUNT(*) FROM jobs").await,
        jobs as f64 / 1e6
    );
}

/// One day's retention on a copy of the database: `Store::prune` before the day's end.
async fn measure_prune(name: &str, day: DateTime<Utc>) {
    let admin = env_or(
        "JOBSCOPE_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let copy = format!("{name}_prune");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {copy} WITH (FORCE)"
    )))
    .await
    .unwrap();
    let t = Instant::now();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {copy} TEMPLATE {name} STRATEGY FILE_COPY"
    )))
    .await
    .unwrap();
    log(format!(
        "copied the database in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{copy}");
    let store = Store::connect(&url).await.expect("store");
    let pool = PgPool::connect(&url).await.unwrap();
    let before_packs = scalar(&pool, "SELECT COUNT(*) FROM sample_packs").await;
    // Before migration 0027 the packs were one plain table, deleted row by row.
    let packs_partitioned = scalar(
        &pool,
        "SELECT COUNT(*) FROM pg_class WHERE relname = 'sample_packs' AND relkind = 'p'",
    )
    .await
        == 1;
    pool.execute("CHECKPOINT").await.unwrap();
    let lsn_before: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    let load_before = load();
    let t = Instant::now();
    let (samples, events) = store
        .prune(day + ChronoDuration::days(1))
        .await
        .expect("prune");
    let took = t.elapsed();
    let wal: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint")
            .bind(&lsn_before)
            .fetch_one(&pool)
            .await
            .unwrap();
    println!();
    println!("| retention of one day (`Store::prune`) | samples | event rows | packs | s | WAL MB | load before / after |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {samples} | {events} | {before_packs} | {:.1} | {:.1} | {load_before} / {} |",
        if packs_partitioned {
            "pack and event partitions dropped"
        } else {
            "packs deleted, event partition dropped"
        },
        took.as_secs_f64(),
        wal as f64 / 1e6,
        load()
    );
    store.close().await;
    pool.close().await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {copy} WITH (FORCE)"
    )))
    .await
    .unwrap();
}

async fn run(name: &str, plan: Plan) {
    let fresh = env_or("BENCH_FRESH", "0") == "1";
    let url = open_database(name, fresh).await;
    let t = Instant::now();
    let store = Store::connect(&url).await.expect("store (migrations)");
    log(format!(
        "connected, migrations applied, in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let pool = PgPool::connect(&url).await.unwrap();
    pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_at_size_progress_day (day TIMESTAMPTZ NOT NULL)",
    )
    .await
    .unwrap();
    let day = the_day(&pool).await;
    if scalar(&pool, "SELECT COUNT(*) FROM bench_at_size_progress_day").await == 0 {
        sqlx::query("INSERT INTO bench_at_size_progress_day VALUES ($1)")
            .bind(day)
            .execute(&pool)
            .await
            .unwrap();
    }
    log(format!(
        "database {name}, day {day}: {} jobs × {} hours, {} finished jobs",
        plan.jobs, plan.hours, plan.finished
    ));
    create_jobs(&store, &pool, day, &plan).await;
    store.close().await;
    generate(&url, &pool, day, &plan).await;
    if env_or("BENCH_GENERATE_ONLY", "0") == "1" {
        return;
    }
    if env_or("BENCH_ROLLUP_PASS", "0") == "1" {
        measure_rollup_pass(&url, &pool, plan.jobs).await;
        pool.close().await;
        return;
    }
    count_samples(&pool).await;
    sizes(&pool).await;
    let runs: usize = env_or("BENCH_RUNS", "200").parse().unwrap();
    let batches: usize = env_or("BENCH_BATCHES", "40").parse().unwrap();
    measure_serve(&url, plan.jobs, runs, batches).await;
    pool.close().await;
    if env_or("BENCH_PRUNE", "1") == "1" {
        measure_prune(name, day).await;
    }
}

fn main() {
    if !support::begin("at_size") {
        return;
    }
    let nodes: i64 = env_or("BENCH_NODES", "1000").parse().unwrap();
    let per_node: i64 = env_or("BENCH_JOBS_PER_NODE", "10").parse().unwrap();
    let plan = Plan {
        jobs: nodes * per_node,
        hours: env_or("BENCH_HOURS", "24").parse().unwrap(),
        finished: env_or("BENCH_FINISHED", "30000").parse().unwrap(),
    };
    let name = env_or("BENCH_DB", "jobscope_at_size");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&name, plan));
}
