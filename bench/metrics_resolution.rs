//! Rollups benchmark (issue 19): `GET /v1/jobs/{id}/metrics` of a 7-day job, raw (the newest
//! 1,000 samples) against `resolution=auto` (the whole week in at most ~1,000 points), through
//! `serve` in-process on a real loopback socket, on PostgreSQL and on SQLite. The job has one
//! sample every 15 s on one node with two GPUs (40,320 samples by default), stored through
//! `Store::ingest_samples` in batches of 1,000 as agents send them; one rollup pass
//! (`Store::roll_up`, also timed) then writes its 5-minute buckets, as `serve` does every 5
//! minutes.
//!
//! Run: `cargo bench --bench metrics_resolution` (see BENCHMARKS.md). Options by environment:
//! `BENCH_SAMPLES` (default 40320), `BENCH_RUNS` timed requests per kind (default 200),
//! `BENCH_BACKENDS` (default "postgres,sqlite"), `JOBSCOPE_BENCH_POSTGRES_URL`.

#[path = "support.rs"]
mod support;
use support::{
    create_running_job, get_json, ingest_all, main_over_backends, percentile_ms, serve, timed,
};

use chrono::Duration as ChronoDuration;
use jobscope::collector::{GpuReading, GpuVendor};
use jobscope::domain::{now_micros, MetricSample, SampleDetail};
use jobscope::store::{SampleItem, Store};
use std::time::Instant;

const JOB: &str = "7100001";

fn sample(at: chrono::DateTime<chrono::Utc>, i: usize) -> MetricSample {
    let gpus = (0..2)
        .map(|index| GpuReading {
            utilization_percent: Some(((i * 7 + index as usize * 13) % 100) as f64),
            memory_used_bytes: Some(40 << 30),
            memory_total_bytes: Some(80 << 30),
            power_watts: Some(400.0),
            energy_joules: Some(400.0 * 15.0 * i as f64),
            temperature_celsius: Some(60.0),
            ..GpuReading::new(index, GpuVendor::Nvidia)
        })
        .collect();
    MetricSample {
        timestamp: at,
        cpu_usage: Some((i % 97) as f64),
        memory_usage_mb: Some(100_000 + (i % 1000) as i64),
        gpu_usage: Some(50.0),
        detail: SampleDetail {
            node: Some("node-01".into()),
            cpu_time_seconds: Some(15.0 * 30.0 * i as f64),
            memory_usage_bytes: Some((100_000 + (i % 1000) as i64) << 20),
            memory_peak_bytes: Some(110_000 << 20),
            io_read_bytes: Some(i as i64 * 4096),
            pids: Some(40),
            gpus,
            ..SampleDetail::default()
        },
    }
}

/// The job, started `samples` × 15 s ago (less an hour, so a week stays inside the default
/// week of retention), with its samples.
async fn fill(store: &Store, samples: usize) {
    let start =
        now_micros() - ChronoDuration::seconds(samples as i64 * 15) + ChronoDuration::hours(1);
    create_running_job(store, JOB, start, |job| job.allocated_gpus = Some(2)).await;
    let items: Vec<SampleItem> = (0..samples)
        .map(|i| SampleItem {
            job_id: JOB.into(),
            sample: sample(start + ChronoDuration::seconds(15 * i as i64), i),
        })
        .collect();
    ingest_all(store, &items).await;
}

async fn run(backend: &str, url: &str, samples: usize, runs: usize) {
    let store = Store::connect(url).await.expect("store");
    fill(&store, samples).await;
    let started = Instant::now();
    let pass = store.roll_up(now_micros()).await.expect("roll up");
    let rolled = started.elapsed();

    let served = serve(url).await;
    let addr = served.addr;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/v1/jobs/{JOB}/metrics");
    let check = get_json(&client, &format!("{base}?resolution=auto")).await;
    let points = check["total"].as_i64().unwrap();
    let resolution = check["resolution"].as_str().unwrap().to_owned();
    for (what, url) in [
        ("raw (newest 1,000)".to_owned(), base.clone()),
        (
            format!("auto ({resolution}, {points} points)"),
            format!("{base}?resolution=auto"),
        ),
    ] {
        let (times, bytes) = timed(&client, &url, runs).await;
        println!(
            "| {backend} | {samples} | {what} | {runs} | {bytes} | {:.2} | {:.2} | {:.2} |",
            percentile_ms(&times, 0.5),
            percentile_ms(&times, 0.95),
            percentile_ms(&times, 0.99),
        );
    }
    // The store's part alone: the stored buckets and the raw tail, merged (no HTTP, no JSON).
    let width = check["bucket_seconds"].as_i64().unwrap();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let buckets = store.rolled_up(JOB, None, None, width).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(buckets.len() as i64, points);
    }
    times.sort();
    println!(
        "| {backend} | {samples} | Store::rolled_up alone | {runs} | | {:.2} | {:.2} | {:.2} |",
        percentile_ms(&times, 0.5),
        percentile_ms(&times, 0.95),
        percentile_ms(&times, 0.99),
    );
    store.close().await;
    println!(
        "| {backend} | {samples} | rollup pass: {} buckets | 1 | | {:.0} | | |",
        pass.buckets,
        rolled.as_secs_f64() * 1000.0
    );
    served.stop().await;
}

fn main() {
    main_over_backends(
        "metrics_resolution",
        "resolution",
        "40320",
        "200",
        &[
            "backend", "samples", "request", "runs", "bytes", "p50 ms", "p95 ms", "p99 ms",
        ],
        |backend, url, samples, runs| async move { run(&backend, &url, samples, runs).await },
    );
}
