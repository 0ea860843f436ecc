//! Hook ingestion benchmark: C concurrent clients each post job-started / job-finished pairs for
//! distinct jobs to a `serve` started in-process (release build, real socket), on SQLite and on
//! PostgreSQL; then pgbench runs a one-row INSERT per transaction against the same PostgreSQL
//! server with the same C, as the ceiling of "one commit per event".
//!
//! Run: `cargo bench --bench hook_ingest` (see BENCHMARKS.md). Options by environment:
//! `BENCH_CLIENTS` (default "1,8,32"), `BENCH_SECONDS` per run (default 10),
//! `BENCH_BACKENDS` (default "sqlite,postgres"), `JOBSCOPE_BENCH_POSTGRES_URL`
//! (default postgres://postgres@127.0.0.1:5432/postgres). `BENCH_SCRAPE_MS` (default 0: off)
//! scrapes `/metrics` at that period during each run, and `BENCH_RUNNING_JOBS` (default 0)
//! starts that many jobs first, so the scrapes carry their series: ingestion with and without
//! a Prometheus scraping compares the two settings.

#[path = "support.rs"]
mod support;
use support::{create_pg_database, env_or};

use jobscope::app::Application;
use jobscope::config::ServeConfig;
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct RunResult {
    events: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> f64 {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        if l.is_empty() {
            return 0.0;
        }
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i] as f64 / 1000.0
    }
}

async fn drive(
    addr: std::net::SocketAddr,
    clients: usize,
    seconds: u64,
    run_id: &str,
) -> RunResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let counter = counter.clone();
            let errors = errors.clone();
            let run_id = run_id.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let id = format!("{run_id}-{c}-{n}");
                    n += 1;
                    let start = json!({"job_id": id, "user": "bench", "node_list": [format!("node-{c:03}")],
                                       "cpu_allocation": 32, "partition": "cpu"});
                    let finish = json!({"job_id": id, "exit_code": 0, "signal": 0});
                    for (path, body) in [("job-started", start), ("job-finished", finish)] {
                        let t = Instant::now();
                        let ok = client
                            .post(format!("http://{addr}/v1/events/{path}"))
                            .json(&body)
                            .send()
                            .await
                            .map(|r| r.status().is_success())
                            .unwrap_or(false);
                        latencies.push(t.elapsed().as_micros() as u64);
                        if ok {
                            counter.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let scrape_every: u64 = env_or("BENCH_SCRAPE_MS", "0").parse().unwrap();
    let scraper = (scrape_every > 0).then(|| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut scrapes = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(scrape_every));
            while Instant::now() < deadline {
                tick.tick().await;
                let resp = client.get(format!("http://{addr}/metrics")).send().await;
                if let Ok(resp) = resp {
                    if resp.status().is_success() && resp.bytes().await.is_ok() {
                        scrapes += 1;
                    }
                }
            }
            scrapes
        })
    });
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap());
    }
    if let Some(scraper) = scraper {
        eprintln!(
            "hook_ingest: {} scrapes of /metrics during the run",
            scraper.await.unwrap()
        );
    }
    RunResult {
        events: counter.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies_us,
    }
}

/// pgbench: one single-row INSERT per transaction, `clients` connections, `seconds` long.
fn pgbench(url: &str, clients: usize, seconds: u64) -> Option<f64> {
    let setup =
        "CREATE TABLE IF NOT EXISTS bench_events (id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, \
                 payload JSONB NOT NULL, at TIMESTAMPTZ NOT NULL)";
    Command::new("psql")
        .args(["-q", "-d", url, "-c", setup])
        .status()
        .ok()?;
    let script = std::env::temp_dir().join("jobscope-pgbench-insert.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 1000000000)\nINSERT INTO bench_events (job_id, payload, at) VALUES (:id, '{\"state\":\"running\"}', now());\n",
    )
    .ok()?;
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// Starts `n` jobs that stay running (their series are in every scrape).
async fn start_jobs(addr: std::net::SocketAddr, n: usize) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let body = json!({"job_id": format!("running-{i}"), "user": format!("u{}", i % 50),
                          "node_list": [format!("node-{:03}", i % 100)], "cpu_allocation": 32,
                          "gpu_allocation": 2, "partition": "gpu", "account": "bench"});
        let resp = client
            .post(format!("http://{addr}/v1/events/job-started"))
            .json(&body)
            .send()
            .await
            .expect("job-started");
        assert!(resp.status().is_success());
    }
}

fn main() {
    if !support::begin("hook_ingest") {
        return;
    }
    let clients: Vec<usize> = env_or("BENCH_CLIENTS", "1,8,32")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let seconds: u64 = env_or("BENCH_SECONDS", "10").parse().unwrap();
    let backends = env_or("BENCH_BACKENDS", "sqlite,postgres");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    println!("| backend | clients | events/s | p50 ms | p99 ms | errors | pgbench 1-row INSERT tps | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for backend in backends.split(',') {
        for &c in &clients {
            let (url, pg_url) = match backend {
                "sqlite" => (
                    format!(
                        "sqlite://{}",
                        dir.path().join(format!("bench-{c}.db")).display()
                    ),
                    None,
                ),
                "postgres" => {
                    let url = rt.block_on(create_pg_database(&format!("jobscope_bench_{c}")));
                    (url.clone(), Some(url))
                }
                other => panic!("unknown backend {other}"),
            };
            let app = rt
                .block_on(Application::build(ServeConfig::loopback(&url)))
                .expect("serve starts");
            let addr = app.local_addr();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = rt.spawn(app.run_until(async move {
                let _ = stop_rx.await;
            }));
            // warm-up: connections, prepared statements
            rt.block_on(drive(addr, c, 1, "warmup"));
            let running: usize = env_or("BENCH_RUNNING_JOBS", "0").parse().unwrap();
            rt.block_on(start_jobs(addr, running));
            let result = rt.block_on(drive(addr, c, seconds, "run"));
            let _ = stop_tx.send(());
            let _ = rt.block_on(server);
            let pgbench_tps = pg_url.as_deref().and_then(|u| pgbench(u, c, seconds));
            let (ceiling, ratio) = match pgbench_tps {
                Some(tps) => (format!("{tps:.0}"), format!("{:.2}", result.rate() / tps)),
                None => ("-".into(), "-".into()),
            };
            println!(
                "| {backend} | {c} | {:.0} | {:.2} | {:.2} | {} | {ceiling} | {ratio} |",
                result.rate(),
                result.percentile(0.50),
                result.percentile(0.99),
                result.errors
            );
        }
    }
}
