//! Sample ingestion benchmark: the server stores one agent batch of 1,000 job samples (every
//! cgroup figure, two GPUs per job, the node's figures) on PostgreSQL and on SQLite, timed
//! through `Store::ingest_samples` (one transaction) and through HTTP `POST /v1/samples` on a
//! real loopback socket (JSON parsing, validation and the same transaction), one batch at a
//! time, after warm-up batches. The 1,000 jobs exist and run, so every sample is stored.
//!
//! Run: `cargo bench --bench sample_ingest` (see BENCHMARKS.md). Options by environment:
//! `BENCH_BATCHES` timed batches per path (default 40), `BENCH_JOBS` samples per batch (default
//! 1000), `BENCH_BACKENDS` (default "postgres,sqlite"), `BENCH_PAUSE_MS` idle time before each
//! batch, so that the previous batch's after-effects (the event feed reading it back) are over
//! when the next one is timed (default 0: back to back), `JOBSCOPE_BENCH_POSTGRES_URL`
//! (default postgres://postgres@127.0.0.1:5432/postgres).

#[path = "support.rs"]
mod support;
use support::{create_pg_database, env_or, post_job_started, post_samples_timed, stored_samples};

use chrono::Utc;
use jobscope::collector::{
    CgroupSample, GpuReading, GpuVendor, JobReport, NodeSample, NodeStats, Pressure, SampleBatch,
};
use jobscope::store::{LatePolicy, Store};
use std::time::{Duration, Instant};

fn job_id(i: usize) -> String {
    format!("{}", 5_000_000 + i)
}

fn gpu(index: u32, busy: f64, pid: u32) -> GpuReading {
    GpuReading {
        uuid: Some(format!("GPU-5f0e4a2c-1b7d-4c1e-9a51-{index:012x}")),
        pci_bus_id: Some(format!("0000:{:02x}:00.0", 0x1b + index)),
        minor: Some(index),
        utilization_percent: Some(busy),
        memory_used_bytes: Some(64_424_509_440),
        memory_total_bytes: Some(85_899_345_920),
        power_watts: Some(612.5),
        energy_joules: Some(98_765_432.1),
        temperature_celsius: Some(67.0),
        processes: vec![pid],
        ..GpuReading::new(index, GpuVendor::Nvidia)
    }
}

/// One node's report: `jobs` samples with every figure the v2 reader produces and two GPUs each.
fn batch(jobs: usize, pass: u64) -> SampleBatch {
    let now = Utc::now();
    let psi = Pressure {
        some_avg10: 0.12,
        some_total_usec: 1_234_567 + pass,
    };
    let reports = (0..jobs)
        .map(|i| {
            let usage = 3_600_000_000 + pass * 15_000_000 + i as u64;
            JobReport {
                job_id: job_id(i),
                collected_at: Some(now),
                cpu_usage_percent: Some(87.5),
                cgroup: CgroupSample {
                    cpu_usage_usec: Some(usage),
                    cpu_user_usec: Some(usage / 10 * 9),
                    cpu_system_usec: Some(usage / 10),
                    cpu_nr_throttled: Some(0),
                    cpu_throttled_usec: Some(0),
                    memory_current_bytes: Some(17_179_869_184 + i as u64),
                    memory_peak_bytes: Some(18_253_611_008),
                    memory_limit_bytes: Some(68_719_476_736),
                    memory_anon_bytes: Some(15_032_385_536),
                    memory_file_bytes: Some(2_147_483_648),
                    memory_shmem_bytes: Some(8_388_608),
                    oom_kills: Some(0),
                    io_read_bytes: Some(1_073_741_824 + pass),
                    io_write_bytes: Some(536_870_912 + pass),
                    io_read_ops: Some(52_311),
                    io_write_ops: Some(8_812),
                    pids_current: Some(34),
                    cpu_pressure: Some(psi),
                    memory_pressure: Some(psi),
                    io_pressure: Some(psi),
                    vanished: false,
                },
                gpus: vec![
                    gpu((2 * i % 8) as u32, 93.0, 80_000 + i as u32),
                    gpu((2 * i % 8 + 1) as u32, 91.0, 80_000 + i as u32),
                ],
            }
        })
        .collect();
    SampleBatch {
        node: "bench-node".into(),
        collected_at: now,
        interval_seconds: Some(15.0),
        jobs: reports,
        node_stats: Some(NodeStats {
            sample: NodeSample {
                cpu_usage_percent: Some(71.2),
                memory_total_bytes: Some(1_099_511_627_776),
                memory_used_bytes: Some(274_877_906_944),
                memory_available_bytes: Some(824_633_720_832),
                load_1: Some(48.1),
                load_5: Some(47.9),
                load_15: Some(45.3),
                cpu_count: Some(64),
            },
            gpus: (0..8).map(|i| gpu(i, 92.0, 80_000)).collect(),
        }),
    }
}

struct Timings(Vec<Duration>);

impl Timings {
    fn ms(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1e3
    }
    fn mean_ms(&self) -> f64 {
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / self.0.len() as f64
    }
}

async fn create_jobs(client: &reqwest::Client, addr: std::net::SocketAddr, jobs: usize) {
    for i in 0..jobs {
        let body = serde_json::json!({"job_id": job_id(i), "user": format!("user{}", i % 50),
            "node_list": ["bench-node"], "cpu_allocation": 16, "gpu_allocation": 2,
            "gpu_vendor": "nvidia", "partition": "gpu"});
        post_job_started(client, addr, &body).await;
    }
}

/// Times `batches` batches through the store, then through HTTP; prints two rows.
async fn run(backend: &str, url: &str, jobs: usize, batches: usize, pause: Duration) {
    let served = support::serve(url).await;
    let addr = served.addr;
    let client = reqwest::Client::new();
    create_jobs(&client, addr, jobs).await;
    let store = Store::connect(url).await.expect("store");
    let mut pass = 0u64;

    // Through the store: the transaction alone (prepare() is timed separately, it is CPU only).
    let mut store_times = Vec::new();
    let mut prepare_times = Vec::new();
    for i in 0..batches + 3 {
        pass += 1;
        tokio::time::sleep(pause).await;
        let b = batch(jobs, pass);
        let t = Instant::now();
        let prepared = b.prepare(Utc::now()).expect("valid batch");
        let prepare = t.elapsed();
        let t = Instant::now();
        let outcome = store
            .ingest_samples(
                &prepared.items,
                prepared.node_report.as_ref(),
                LatePolicy::UntilJobEnd,
            )
            .await
            .expect("stored");
        let took = t.elapsed();
        assert_eq!(outcome.accepted, jobs, "{:?}", outcome.rejected.first());
        if i >= 3 {
            store_times.push(took);
            prepare_times.push(prepare);
        }
    }

    // Through HTTP, as the agent sends it.
    let mut http_times = Vec::new();
    let mut body_len = 0;
    for i in 0..batches + 3 {
        pass += 1;
        tokio::time::sleep(pause).await;
        let body = serde_json::to_vec(&batch(jobs, pass)).unwrap();
        body_len = body.len();
        let took = post_samples_timed(&client, addr, body, jobs).await;
        if i >= 3 {
            http_times.push(took);
        }
    }
    let stored = stored_samples(&client, addr, &job_id(0)).await;
    assert_eq!(stored as usize, 2 * (batches + 3), "every batch stored");
    store.close().await;
    served.stop().await;

    let (s, h, p) = (
        Timings(store_times),
        Timings(http_times),
        Timings(prepare_times),
    );
    println!(
        "| {backend} | Store::ingest_samples | {jobs} | {batches} | {:.1} | {:.1} | {:.1} | prepare() {:.1} ms |",
        s.ms(0.5),
        s.ms(0.99),
        s.mean_ms(),
        p.ms(0.5)
    );
    println!(
        "| {backend} | POST /v1/samples | {jobs} | {batches} | {:.1} | {:.1} | {:.1} | body {:.2} MiB |",
        h.ms(0.5),
        h.ms(0.99),
        h.mean_ms(),
        body_len as f64 / 1_048_576.0
    );
}

/// The HTTP path's parse of one batch's body into its type, timed beside a parse of the same
/// body into a `serde_json::Value` (the reference: the same bytes, no type), alternately.
fn parse_body(jobs: usize, batches: usize) {
    let body = serde_json::to_vec(&batch(jobs, 1)).unwrap();
    let (mut typed, mut value) = (Vec::new(), Vec::new());
    for i in 0..batches + 3 {
        let t = Instant::now();
        std::hint::black_box(serde_json::from_slice::<SampleBatch>(&body).unwrap());
        let typed_took = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
        if i >= 3 {
            typed.push(typed_took);
            value.push(t.elapsed());
        }
    }
    let (typed, value) = (Timings(typed), Timings(value));
    println!(
        "| - | parse of the body into `SampleBatch` | {jobs} | {batches} | {:.2} | {:.2} | {:.2} | into a `Value`: p50 {:.2} ms; ratio {:.2} |",
        typed.ms(0.5),
        typed.ms(0.99),
        typed.mean_ms(),
        value.ms(0.5),
        typed.ms(0.5) / value.ms(0.5)
    );
}

fn main() {
    if !support::begin("sample_ingest") {
        return;
    }
    let batches: usize = env_or("BENCH_BATCHES", "40").parse().unwrap();
    let jobs: usize = env_or("BENCH_JOBS", "1000").parse().unwrap();
    let pause = Duration::from_millis(env_or("BENCH_PAUSE_MS", "0").parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!("| backend | path | samples/batch | batches | p50 ms | p99 ms | mean ms | |");
    println!("|---|---|---|---|---|---|---|---|");
    parse_body(jobs, batches);
    for backend in env_or("BENCH_BACKENDS", "postgres,sqlite").split(',') {
        let url = match backend {
            "sqlite" => format!("sqlite://{}", dir.path().join("samples.db").display()),
            "postgres" => rt.block_on(create_pg_database("jobscope_bench_samples")),
            other => panic!("unknown backend {other}"),
        };
        rt.block_on(run(backend, &url, jobs, batches, pause));
    }
}
