//! Scrape cost of `/metrics`: render time and response size with N running jobs, each on one
//! node with 2 GPUs and every figure an agent measures (the worst case per job), plus the time a
//! real HTTP scrape takes through `serve`'s router on a loopback socket.
//!
//! ```sh
//! BENCH_JOBS=1000,10000 BENCH_SCRAPES=20 cargo bench --bench metrics_scrape
//! ```
//!
//! The snapshot is fed the same way `serve` feeds it (event-log rows through `apply`), so the
//! per-job work is what production does; results go to BENCHMARKS.md.

use jobscope::metrics::{JobLabels, Metrics, MetricsOptions};
use serde_json::json;
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::env_list;

fn gpu(index: u32, i: usize) -> serde_json::Value {
    json!({"index": index, "uuid": format!("GPU-{i}-{index}"), "pci_bus_id": null, "vendor": "nvidia",
           "utilization_percent": 87.5, "memory_used_bytes": 40_000_000_000u64 + i as u64,
           "memory_total_bytes": 80_000_000_000u64, "power_watts": 312.25,
           "energy_joules": 123_456.5 + i as f64, "temperature_celsius": 64.0, "processes": [1234]})
}

/// A metrics exporter tracking `jobs` running jobs with a full sample each.
fn exporter(jobs: usize) -> Metrics {
    let metrics = Metrics::new(MetricsOptions::default());
    for i in 0..jobs {
        let node = format!("node-{:05}", i / 4);
        let labels = JobLabels {
            job_id: format!("{}", 1_000_000 + i),
            user: format!("user{:03}", i % 300),
            account: Some(format!("acct{:02}", i % 40)),
            partition: Some("gpu".into()),
            nodes: vec![node.clone()],
        };
        let sample = json!({
            "timestamp": "2026-11-29T12:00:00Z", "cpu_usage": 73.25, "memory_usage_mb": 30_000,
            "gpu_usage": 87.5, "node": node,
            "cpu_time_seconds": 98_765.25 + i as f64, "cpu_throttled_seconds": 12.5,
            "memory_usage_bytes": 31_457_280_000u64, "memory_peak_bytes": 33_000_000_000u64,
            "oom_kills": 0, "io_read_bytes": 1_234_567_890u64, "io_write_bytes": 987_654_321u64,
            "pids": 48, "gpus": [gpu(0, i), gpu(1, i)]
        });
        metrics.record_job_sample(
            &labels,
            &serde_json::from_value(sample).expect("sample is valid"),
        );
    }
    metrics
}

/// User and system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    let stat = procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .expect("/proc/self/stat");
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn main() {
    if !support::begin("metrics_scrape") {
        return;
    }
    let sizes: Vec<usize> = env_list("BENCH_JOBS", "1000,10000");
    let scrapes = env_list::<usize>("BENCH_SCRAPES", "20")[0].max(1);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!("| running jobs | series | body MB | render p50 ms | render p95 ms | render CPU ms | HTTP scrape p50 ms | HTTP scrape p95 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for jobs in sizes {
        let metrics = exporter(jobs);
        let body = metrics.render();
        let series = body.lines().filter(|l| !l.starts_with('#')).count();
        let mut render = Vec::with_capacity(scrapes);
        let cpu_before = cpu_seconds();
        for _ in 0..scrapes {
            let started = Instant::now();
            let out = metrics.render();
            render.push(started.elapsed());
            std::hint::black_box(out);
        }
        // CPU time per render: what a scrape costs when the machine is shared (wall time is not).
        let cpu_ms = (cpu_seconds() - cpu_before) * 1e3 / scrapes as f64;
        render.sort();
        let http = runtime.block_on(http_scrapes(metrics.clone(), scrapes));
        println!(
            "| {jobs} | {series} | {:.1} | {:.1} | {:.1} | {cpu_ms:.1} | {:.1} | {:.1} |",
            body.len() as f64 / 1e6,
            percentile(&render, 0.5).as_secs_f64() * 1e3,
            percentile(&render, 0.95).as_secs_f64() * 1e3,
            percentile(&http, 0.5).as_secs_f64() * 1e3,
            percentile(&http, 0.95).as_secs_f64() * 1e3,
        );
    }
}

/// Full scrapes (request, render on a blocking thread, transfer of the whole body) over a real
/// loopback socket, served by the agent's standalone endpoint (the same handler as serve's).
async fn http_scrapes(metrics: Metrics, scrapes: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(jobscope::api::metrics::serve_standalone(
        listener,
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    let mut times = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let started = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        times.push(started.elapsed());
        assert!(body.len() > 1000);
    }
    let _ = stop.send(());
    let _ = server.await;
    times.sort();
    times
}
