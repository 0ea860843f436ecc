//! Job report benchmark: computing the efficiency report (`GET /v1/jobs/{id}/report`'s work:
//! `Store::get_job`, `Store::report_inputs`, `domain::report::compute`) of one job with 10,000
//! samples from one node, each with two GPUs, on PostgreSQL and on SQLite. The job is stored
//! through `Store::ingest_samples` in batches of 1,000, as agents send them; the report is then
//! computed again and again, timed whole and in its parts: first with every sample in a row (as
//! just ingested), then after `serve`'s packing pass has moved the closed hours into packs (all
//! but the newest hour: how a job of 10,000 samples at 15 s, 42 hours, is stored when it ends).
//! Both must give the same report.
//!
//! Run: `cargo bench --bench job_report` (see BENCHMARKS.md). Options by environment:
//! `BENCH_SAMPLES` (default 10000), `BENCH_RUNS` timed reports (default 50), `BENCH_BACKENDS`
//! (default "postgres,sqlite"), `JOBSCOPE_BENCH_POSTGRES_URL`.

#[path = "support.rs"]
mod support;
use support::{create_running_job, ingest_all, main_over_backends, percentile_ms};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use jobscope::collector::{GpuReading, GpuVendor};
use jobscope::domain::report::{compute, Report, Thresholds};
use jobscope::domain::{now_micros, MetricSample, SampleDetail};
use jobscope::store::{SampleItem, Store};
use std::time::Instant;

const JOB: &str = "7000001";

fn gpu(index: u32, busy: f64, energy: f64) -> GpuReading {
    GpuReading {
        uuid: Some(format!("GPU-5f0e4a2c-1b7d-4c1e-9a51-{index:012x}")),
        pci_bus_id: Some(format!("0000:{:02x}:00.0", 0x1b + index)),
        minor: Some(index),
        utilization_percent: Some(busy),
        memory_used_bytes: Some(64_424_509_440),
        memory_total_bytes: Some(85_899_345_920),
        power_watts: Some(612.5),
        energy_joules: Some(energy),
        temperature_celsius: Some(67.0),
        processes: vec![4242],
        ..GpuReading::new(index, GpuVendor::Nvidia)
    }
}

async fn fill(store: &Store, samples: usize) {
    let start = now_micros() - ChronoDuration::seconds(samples as i64 * 15 + 60);
    create_running_job(store, JOB, start, |job| {
        job.allocated_cpus = Some(64);
        job.allocated_memory_mb = Some(256_000);
        job.allocated_gpus = Some(2);
    })
    .await;
    let mut items = Vec::with_capacity(samples);
    for i in 0..samples {
        let at = start + ChronoDuration::seconds(15 * (i as i64 + 1));
        items.push(SampleItem {
            job_id: JOB.into(),
            sample: MetricSample {
                timestamp: at,
                cpu_usage: Some(40.0 + (i % 7) as f64),
                memory_usage_mb: Some(120_000),
                gpu_usage: Some(45.0),
                detail: SampleDetail {
                    node: Some("node-01".into()),
                    cpu_time_seconds: Some(15.0 * 25.0 * (i + 1) as f64),
                    cpu_user_seconds: Some(15.0 * 20.0 * (i + 1) as f64),
                    cpu_system_seconds: Some(15.0 * 5.0 * (i + 1) as f64),
                    memory_usage_bytes: Some(125_829_120_000 + i as i64),
                    memory_peak_bytes: Some(130_023_424_000),
                    oom_kills: Some(0),
                    io_read_bytes: Some(1 << 30),
                    io_write_bytes: Some(1 << 28),
                    pids: Some(34),
                    gpus: vec![gpu(0, 90.0, 1e6 + i as f64 * 9000.0), gpu(1, 0.0, 2e5)],
                    ..SampleDetail::default()
                },
            },
        });
    }
    ingest_all(store, &items).await;
}

/// Times `runs` reports of the job (after 5 untimed ones); returns the last report and prints
/// a table row.
async fn time_reports(
    store: &Store,
    backend: &str,
    stored: &str,
    samples: usize,
    runs: usize,
    now: DateTime<Utc>,
) -> Report {
    let t = Thresholds::default();
    let (mut whole, mut read, mut computing) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for i in 0..runs + 5 {
        let started = Instant::now();
        let job = store.get_job(JOB).await.unwrap();
        let (nodes, devices) = store.report_inputs(&job, &t).await.unwrap();
        let read_done = Instant::now();
        let report = compute(&job, &nodes, &devices, now, &t);
        let done = Instant::now();
        assert_eq!(report.samples, samples as i64);
        assert_eq!(report.gpu.devices.len(), 2);
        if i >= 5 {
            whole.push(done - started);
            read.push(read_done - started);
            computing.push(done - read_done);
        }
        last = Some(report);
    }
    for v in [&mut whole, &mut read, &mut computing] {
        v.sort();
    }
    println!(
        "| {backend} | {stored} | {samples} | {runs} | {:.2} | {:.2} | {:.2} | {:.3} |",
        percentile_ms(&whole, 0.5),
        percentile_ms(&whole, 0.95),
        percentile_ms(&read, 0.5),
        percentile_ms(&computing, 0.5),
    );
    last.expect("at least one report")
}

async fn run(backend: &str, url: &str, samples: usize, runs: usize) {
    let store = Store::connect(url).await.expect("store");
    fill(&store, samples).await;
    // One instant for both: the job is running, and its report depends on the time.
    let now = Utc::now();
    let from_rows = time_reports(&store, backend, "rows", samples, runs, now).await;
    let pass = store
        .pack_closed_hours(Utc::now(), &Thresholds::default())
        .await
        .expect("packing");
    assert!(pass.samples > 0, "nothing was packed");
    let from_packs = time_reports(&store, backend, "packs + newest hour", samples, runs, now).await;
    assert_eq!(from_packs, from_rows, "packing changed the report");
    store.close().await;
}

fn main() {
    main_over_backends(
        "job_report",
        "report",
        "10000",
        "50",
        &[
            "backend",
            "stored as",
            "samples",
            "reports",
            "p50 ms",
            "p95 ms",
            "read p50 ms",
            "compute p50 ms",
        ],
        |backend, url, samples, runs| async move { run(&backend, &url, samples, runs).await },
    );
}
