//! Hook ingestion benchmark: C concurrent clients each post job-started / job-finished pairs for
//! distinct jobs to a `serve` started in-process (release build, real socket), on SQLite and on
//! PostgreSQL; then pgbench runs a one-row INSERT per transaction against the same PostgreSQL
//! server with the same C, as the ceiling of "one commit per event".
//!
//! The clients run in a second process (this binary again, `BENCH_DRIVER=process`, the default),
//! each a keep-alive connection writing prepared HTTP/1.1 requests and reading the answers
//! itself: a client as lean as pgbench's, and CPU that is counted apart from the server's. For
//! each run the table gives the CPU time per event of the server process, of the client process
//! and of PostgreSQL's processes. `BENCH_DRIVER=reqwest` drives the server with reqwest clients in
//! its own process, as this benchmark did before 2026-12-05.
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
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Serialize, Deserialize)]
struct RunResult {
    events: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// CPU time of the client process (user + system), when the clients ran in their own.
    client_cpu: Option<Duration>,
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

/// Drives `serve` at `addr` with `clients` clients for `seconds`, as `BENCH_DRIVER` says.
fn drive(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    clients: usize,
    seconds: u64,
    run_id: &str,
) -> RunResult {
    match env_or("BENCH_DRIVER", "process").as_str() {
        "reqwest" => rt.block_on(drive_reqwest(addr, clients, seconds, run_id)),
        "process" => drive_in_child(addr, clients, seconds, run_id),
        other => panic!("BENCH_DRIVER: unknown driver {other} (process or reqwest)"),
    }
}

/// Runs the raw clients in a child process (this binary with `--clients`) and reads its result.
fn drive_in_child(
    addr: std::net::SocketAddr,
    clients: usize,
    seconds: u64,
    run_id: &str,
) -> RunResult {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--bench",
            "--clients",
            &addr.to_string(),
            &clients.to_string(),
            &seconds.to_string(),
            run_id,
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("client process runs");
    assert!(out.status.success(), "client process failed");
    serde_json::from_slice(&out.stdout).expect("client process result")
}

/// The child process: `clients` raw HTTP/1.1 keep-alive clients, each on its own connection.
fn client_process(args: &[String]) {
    let [addr, clients, seconds, run_id] = args else {
        panic!("--clients ADDR CLIENTS SECONDS RUN_ID")
    };
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let clients: usize = clients.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(raw_client(addr, c, deadline, run_id.clone())))
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    let mut result = RunResult {
        events: 0,
        errors: 0,
        elapsed: started.elapsed(),
        latencies_us: Vec::new(),
        client_cpu: Some(process_cpu() - cpu_before),
    };
    for (events, errors, latencies) in results {
        result.events += events;
        result.errors += errors;
        result.latencies_us.extend(latencies);
    }
    println!("{}", serde_json::to_string(&result).unwrap());
}

/// One client: job-started then job-finished for a new job id, until `deadline`; (accepted
/// events, failed events, latency of each request in µs).
async fn raw_client(
    addr: std::net::SocketAddr,
    c: usize,
    deadline: Instant,
    run_id: String,
) -> (u64, u64, Vec<u64>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(4096);
    let (mut events, mut errors, mut latencies) = (0, 0, Vec::new());
    let mut n = 0u64;
    while Instant::now() < deadline {
        let id = format!("{run_id}-{c}-{n}");
        n += 1;
        let start = format!(
            r#"{{"job_id":"{id}","user":"bench","node_list":["node-{c:03}"],"cpu_allocation":32,"partition":"cpu"}}"#
        );
        let finish = format!(r#"{{"job_id":"{id}","exit_code":0,"signal":0}}"#);
        for (path, body) in [("job-started", start), ("job-finished", finish)] {
            let request = format!(
                "POST /v1/events/{path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let t = Instant::now();
            stream.write_all(request.as_bytes()).await.unwrap();
            let status = read_response(&mut stream, &mut buf).await;
            latencies.push(t.elapsed().as_micros() as u64);
            if (200..300).contains(&status) {
                events += 1;
            } else {
                errors += 1;
            }
        }
    }
    (events, errors, latencies)
}

/// Reads one HTTP/1.1 response with a `content-length` from `stream`; its status code.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> u16 {
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ASCII response head");
            let status: u16 = head[9..12].parse().expect("status code");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a response with content-length");
            while buf.len() < end + 4 + length {
                assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed");
            }
            return status;
        }
        assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed");
    }
}

/// CPU time (user + system) this process has used.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    ticks_of_stat(&stat)
}

/// utime + stime of a `/proc/PID/stat` line, as a duration (at 100 ticks a second).
fn ticks_of_stat(stat: &str) -> Duration {
    stat_ticks(stat, [11, 12])
}

/// The sum of two tick counts of a `/proc/PID/stat` line (`fields` counted after the command
/// name's closing parenthesis), as a duration at 100 ticks a second.
fn stat_ticks(stat: &str, fields: [usize; 2]) -> Duration {
    let after_name: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .iter()
        .filter_map(|&i| after_name.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time used so far by the PostgreSQL backends connected to database `db` (their process
/// title names it), so that other work on the same server is not counted, plus what the
/// postmaster has collected from backends that exited (pgbench's, when it ends). The server's
/// shared processes (WAL writer, checkpointer) are left out for both sides of the comparison.
fn postgres_cpu(db: &str) -> Duration {
    let title = format!(" {db} ");
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if !stat.contains("(postgres)") {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&title) {
            total += ticks_of_stat(&stat);
        } else if !cmdline.starts_with("postgres:") {
            total += children_ticks(&stat);
        }
    }
    total
}

async fn drive_reqwest(
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
        client_cpu: None,
    }
}

/// What pgbench did: transactions a second, how many, and the CPU time its own process and
/// PostgreSQL's used meanwhile.
struct Reference {
    tps: f64,
    transactions: f64,
    client_cpu: Duration,
    postgres_cpu: Duration,
}

/// CPU time (user + system) of this process's waited-for children.
fn children_cpu() -> Duration {
    children_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// cutime + cstime of a `/proc/PID/stat` line: its waited-for children's CPU time.
fn children_ticks(stat: &str) -> Duration {
    stat_ticks(stat, [13, 14])
}

/// pgbench: one single-row INSERT per transaction, `clients` connections, `seconds` long.
fn pgbench(url: &str, clients: usize, seconds: u64) -> Option<Reference> {
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
    let db = url.rsplit('/').next().unwrap_or_default();
    let (client_before, pg_before) = (children_cpu(), postgres_cpu(db));
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
    let (client_cpu, postgres_cpu) = (children_cpu() - client_before, postgres_cpu(db) - pg_before);
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))?
            .trim_start_matches(prefix)
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Reference {
        tps: value("tps = ")?,
        transactions: value("number of transactions actually processed: ")?,
        client_cpu,
        postgres_cpu,
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

/// `jobscope_lifecycle_batch_events` from the server's `/metrics`: (events, transactions)
/// committed so far.
async fn lifecycle_batches(addr: std::net::SocketAddr) -> (f64, f64) {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body");
    let series = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    (
        series("jobscope_lifecycle_batch_events_sum"),
        series("jobscope_lifecycle_batch_events_count"),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--clients") {
        return client_process(&args[i + 1..]);
    }
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

    println!(
        "| backend | clients | events/s | p50 ms | p99 ms | errors | events/commit \
         | CPU µs/event: server / clients / PostgreSQL | pgbench 1-row INSERT tps \
         | CPU µs/tx: pgbench / PostgreSQL | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
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
            drive(&rt, addr, c, 1, "warmup");
            let running: usize = env_or("BENCH_RUNNING_JOBS", "0").parse().unwrap();
            rt.block_on(start_jobs(addr, running));
            let db = format!("jobscope_bench_{c}");
            let batches_before = rt.block_on(lifecycle_batches(addr));
            let (server_before, pg_before) = (process_cpu(), postgres_cpu(&db));
            let result = drive(&rt, addr, c, seconds, "run");
            // The server's CPU is this process's, less the clients' when they ran here.
            let server_cpu = process_cpu() - server_before;
            let pg_cpu = postgres_cpu(&db) - pg_before;
            let batches_after = rt.block_on(lifecycle_batches(addr));
            // Group commit at work: hook events per committed transaction during the run.
            let per_commit = (batches_after.0 - batches_before.0)
                / (batches_after.1 - batches_before.1).max(1.0);
            let _ = stop_tx.send(());
            let _ = rt.block_on(server);
            let per_event = |d: Duration| d.as_micros() as f64 / result.events.max(1) as f64;
            let cpu = format!(
                "{:.0} / {} / {}",
                per_event(server_cpu),
                result
                    .client_cpu
                    .map_or("in server".into(), |d| format!("{:.0}", per_event(d))),
                if pg_url.is_some() {
                    format!("{:.0}", per_event(pg_cpu))
                } else {
                    "-".into()
                }
            );
            let reference = pg_url.as_deref().and_then(|u| pgbench(u, c, seconds));
            let (ceiling, reference_cpu, ratio) = match reference {
                Some(r) => (
                    format!("{:.0}", r.tps),
                    format!(
                        "{:.0} / {:.0}",
                        r.client_cpu.as_micros() as f64 / r.transactions,
                        r.postgres_cpu.as_micros() as f64 / r.transactions
                    ),
                    format!("{:.2}", result.rate() / r.tps),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "| {backend} | {c} | {:.0} | {:.2} | {:.2} | {} | {per_commit:.2} | {cpu} | {ceiling} | {reference_cpu} | {ratio} |",
                result.rate(),
                result.percentile(0.50),
                result.percentile(0.99),
                result.errors
            );
        }
    }
}
