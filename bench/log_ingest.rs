//! Job output benchmarks (issue 15), against `serve` in-process on a real loopback socket:
//!
//! 1. Ingestion: `BENCH_LOG_JOBS` jobs (default 100) print at once: each job's "agent" posts
//!    `BENCH_LOG_CHUNK` bytes (default 64 KiB) per `POST /v1/jobs/{id}/log`, `BENCH_LOG_ROUNDS`
//!    times (default 8), all jobs concurrently; MB/s stored (checked against the stored offsets).
//! 2. SSE fan-out: `BENCH_LOG_READERS` (default 100) readers of one job's
//!    `/v1/stream/jobs/{id}/log`; `BENCH_LOG_LINES` lines (default 200) posted 5 ms apart, each
//!    carrying its send time; delivery latency per reader and line, p50/p99/max.
//! 3. The agent's idle cost: `Tailer::poll` on a file that did not grow (one `fstat`), per call.
//!
//! Run: `cargo bench --bench log_ingest` (see BENCHMARKS.md). `BENCH_BACKENDS` (default
//! "postgres,sqlite"), `JOBSCOPE_BENCH_POSTGRES_URL`.

#[path = "support.rs"]
mod support;
use support::{create_pg_database, env_or, post_job_started, serve};

use futures_util::StreamExt;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn ingestion(client: &reqwest::Client, addr: std::net::SocketAddr, backend: &str) {
    let jobs: usize = env_or("BENCH_LOG_JOBS", "100").parse().unwrap();
    let chunk: usize = env_or("BENCH_LOG_CHUNK", "65536").parse().unwrap();
    let rounds: usize = env_or("BENCH_LOG_ROUNDS", "8").parse().unwrap();
    for j in 0..jobs {
        let body =
            serde_json::json!({"job_id": format!("log-{j}"), "user": "bench", "node_list": ["n1"]});
        post_job_started(client, addr, &body).await;
    }
    // A line of text repeated: what a job's stdout looks like.
    let line = b"epoch 12 step 3400 loss 0.0412 lr 3.0e-4 throughput 1832.5 samples/s\n";
    let data: Vec<u8> = line.iter().copied().cycle().take(chunk).collect();
    let data = bytes::Bytes::from(data);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for j in 0..jobs {
        let client = client.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let url = format!(
                    "http://{addr}/v1/jobs/log-{j}/log?stream=stdout&offset={}",
                    r * data.len()
                );
                let resp = client.post(url).body(data.clone()).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (jobs * rounds * chunk) as f64;
    // Everything is there.
    let v: serde_json::Value = client
        .get(format!("http://{addr}/v1/jobs/log-0/log?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["end_offset"].as_u64().unwrap() as usize, rounds * chunk);
    println!(
        "| {backend} | ingestion | {jobs} jobs × {rounds} × {} KiB | {:.1} MB in {:.2} s | **{:.1} MB/s** |",
        chunk / 1024,
        total / 1e6,
        elapsed,
        total / 1e6 / elapsed
    );
}

async fn fan_out(client: &reqwest::Client, addr: std::net::SocketAddr, backend: &str) {
    let readers: usize = env_or("BENCH_LOG_READERS", "100").parse().unwrap();
    let lines: usize = env_or("BENCH_LOG_LINES", "200").parse().unwrap();
    let body = serde_json::json!({"job_id": "fan-1", "user": "bench", "node_list": ["n1"]});
    post_job_started(client, addr, &body).await;
    let epoch = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(readers);
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let client = client.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .get(format!("http://{addr}/v1/stream/jobs/fan-1/log"))
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes_stream();
            let mut parser = jobscope::watch::SseParser::default();
            let mut latencies = Vec::with_capacity(lines);
            let mut text = String::new();
            while latencies.len() < lines {
                let Some(Ok(chunk)) = body.next().await else {
                    break;
                };
                for event in parser.feed(&chunk) {
                    match event.event.as_str() {
                        "connected" => {
                            let _ = ready.send(()).await;
                        }
                        "log" => {
                            let now = epoch.elapsed().as_secs_f64();
                            let v: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                            text.push_str(v["text"].as_str().unwrap());
                            while let Some(end) = text.find('\n') {
                                let line: String = text.drain(..=end).collect();
                                let sent: f64 = line.trim().parse().unwrap();
                                latencies.push((now - sent) * 1000.0);
                            }
                        }
                        _ => {}
                    }
                }
            }
            latencies
        }));
    }
    for _ in 0..readers {
        ready_rx.recv().await.unwrap();
    }
    let mut offset = 0usize;
    for _ in 0..lines {
        let line = format!("{:.6}\n", epoch.elapsed().as_secs_f64());
        let url = format!("http://{addr}/v1/jobs/fan-1/log?stream=stdout&offset={offset}");
        offset += line.len();
        let resp = client.post(url).body(line).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every reader gets every line")
            .unwrap();
        assert_eq!(got.len(), lines, "a reader missed lines");
        all.extend(got);
    }
    all.sort_by(f64::total_cmp);
    println!(
        "| {backend} | SSE fan-out | {readers} readers × {lines} lines | p50 {:.2} ms | **p99 {:.2} ms** (max {:.2}) |",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN)
    );
}

fn idle_tail() {
    use jobscope::domain::joblog::LogStream;
    use jobscope::log_tail::Tailer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    std::fs::write(&path, b"hello\n").unwrap();
    let uid = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let mut t = Tailer::new(path, uid, LogStream::Stdout, 1 << 20);
    t.resync(6);
    let now = Instant::now();
    assert_eq!(t.poll(now).unwrap(), jobscope::log_tail::Step::Idle);
    let n = 200_000;
    let started = Instant::now();
    for _ in 0..n {
        let _ = t.poll(now).unwrap();
    }
    let per = started.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!(
        "| - | agent idle poll (one fstat) | {n} polls | **{per:.2} µs per job and stream** | |"
    );
}

fn main() {
    if !support::begin("log_ingest") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| backend | what | load | result | |\n|---|---|---|---|---|");
    idle_tail();
    for backend in env_or("BENCH_BACKENDS", "postgres,sqlite").split(',') {
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = match backend {
                "postgres" => create_pg_database("jobscope_bench_logs").await,
                _ => format!("sqlite://{}", dir.path().join("bench.db").display()),
            };
            let served = serve(&url).await;
            let addr = served.addr;
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap();
            ingestion(&client, addr, backend).await;
            fan_out(&client, addr, backend).await;
            served.stop().await;
        });
    }
}
