//! Stream fan-out benchmark: N idle SSE connections to a `jobscope serve` process (release build,
//! SQLite, real loopback sockets), then job-started hooks posted at a fixed rate while every
//! connection receives every event.
//!
//! Per N it reports:
//! - server memory per connection: the serve process's VmRSS with N connections open (each has
//!   received `connected`) minus its VmRSS before the first, divided by N; the kernel's TCP
//!   buffer memory (`/proc/net/sockstat`) is reported beside it, as it is not in VmRSS;
//! - for each publishing rate: the delay from just before the hook request is sent (so it
//!   includes the commit itself; an upper bound of commit → receipt) to the moment a client has
//!   read the event off its socket, p50/p99/max over every (event, client) pair; the same from
//!   the moment the hook was answered (a lower bound: an event often reaches clients before its
//!   hook's answer reaches the publisher, which counts as 0); the hook's own round trip; and
//!   deliveries per second (events received by all clients / time from the first
//!   hook to the last receipt).
//!
//! The clients are plain tokio `TcpStream`s that send one GET and scan the SSE bytes for the
//! job id (no HTTP client library, no JSON parsing), all in this process on a 2-worker runtime;
//! the server is a separate process with tokio's default workers. Both share the machine's
//! cores, so client CPU is part of what is measured. The open-files limit is raised to its hard
//! maximum with setrlimit (inherited by the server); N plus about 100 must fit under it.
//!
//! Run: `cargo bench --bench stream_fanout` (see BENCHMARKS.md). Options by environment:
//! `BENCH_CONNECTIONS` (default "1000,5000,10000"), `BENCH_DELIVERIES` (target deliveries per
//! second, comma list, default "100000,200000"; the event rate is that divided by N),
//! `BENCH_SECONDS` per rate (default 10).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_jobscope");

#[path = "../tests/common/serve_process.rs"]
mod serve_process;
use serve_process::ServeProcess;

#[path = "support.rs"]
mod support;
use support::env_list;

/// The server; its warnings, errors and resets are shown.
fn spawn_serve() -> ServeProcess {
    ServeProcess::spawn(BIN, &[], Some("warn,jobscope=info"), |_, line| {
        line.contains("WARN") || line.contains("ERROR") || line.contains("reset")
    })
}

fn rss_kib(pid: u32) -> u64 {
    serve_process::rss_kib(pid).unwrap_or(0)
}

/// Pages of memory the kernel holds in TCP buffers (all sockets), from /proc/net/sockstat.
fn tcp_mem_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter()
                .position(|x| *x == "mem")
                .and_then(|i| f.get(i + 1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages * 4
}

/// What every client shares: when each event's hook was sent (ns since `epoch`; 0 = not yet).
struct Shared {
    epoch: Instant,
    sent_at: Vec<AtomicU64>,
    /// When each event's hook was answered (the commit is done by then).
    acked_at: Vec<AtomicU64>,
    connected: AtomicUsize,
    received: AtomicU64,
    last_receipt_ns: AtomicU64,
    resets: AtomicU64,
}

/// One SSE client: a raw socket, one GET, then scans for `"id":"b<k>"` in job events and notes
/// the delay since event k's hook was sent.
async fn client(addr: String, shared: Arc<Shared>, mut delays: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut socket = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    let request = format!("GET /v1/stream/jobs HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut connected = false;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match socket.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return delays,
            Ok(n) => n,
        };
        filled += n;
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        // Complete frames end with a blank line; keep the partial rest for the next read.
        let Some(end) = find_last(&buf[..filled], b"\n\n") else {
            continue;
        };
        let frames = &buf[..end + 2];
        if !connected && find(frames, b"\"type\":\"connected\"").is_some() {
            connected = true;
            shared.connected.fetch_add(1, Ordering::Relaxed);
        }
        if find(frames, b"\"type\":\"reset\"").is_some() {
            shared.resets.fetch_add(1, Ordering::Relaxed);
        }
        let mut at = 0;
        while let Some(i) = find(&frames[at..], b"\"id\":\"b") {
            let digits = &frames[at + i + 7..];
            let k = digits
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .fold(0usize, |k, c| k * 10 + (c - b'0') as usize);
            if k < shared.sent_at.len() {
                delays.push((k as u32, (now_ns / 1000) as u32));
                shared.received.fetch_add(1, Ordering::Relaxed);
                shared.last_receipt_ns.fetch_max(now_ns, Ordering::Relaxed);
            }
            at += i + 7;
        }
        buf.copy_within(end + 2..filled, 0);
        filled -= end + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Posts job-started for `b<first>..b<first+count>` at `rate` per second, open loop: each
/// request is started on its schedule in its own task, whether or not earlier ones have been
/// answered (hooks commit in groups); returns the hooks' round trips.
async fn publish(
    addr: &str,
    shared: &Arc<Shared>,
    first: usize,
    count: usize,
    rate: f64,
) -> Vec<u32> {
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/events/job-started");
    let start = Instant::now();
    let mut requests = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let k = first + i;
        let (http, url, shared) = (http.clone(), url.clone(), shared.clone());
        requests.push(tokio::spawn(async move {
            let body =
                serde_json::json!({"job_id": format!("b{k}"), "user": "bench", "node_list": ["n1"]});
            let sent = Instant::now();
            shared.sent_at[k].store(shared.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let resp = http.post(&url).json(&body).send().await.expect("hook sent");
            assert!(resp.status().is_success(), "hook: {}", resp.status());
            shared.acked_at[k].store(shared.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            sent.elapsed().as_micros() as u32
        }));
    }
    let mut round_trips = Vec::with_capacity(count);
    for r in requests {
        round_trips.push(r.await.unwrap());
    }
    round_trips
}

async fn run(n: usize, deliveries: &[u64], seconds: u64) {
    let server = spawn_serve();
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);
    let tcp_before = tcp_mem_kib();
    let total_events: usize = deliveries
        .iter()
        .map(|d| ((*d as f64 / n as f64).ceil() as usize).max(1) * seconds as usize)
        .sum();
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent_at: (0..total_events).map(|_| AtomicU64::new(0)).collect(),
        acked_at: (0..total_events).map(|_| AtomicU64::new(0)).collect(),
        connected: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        last_receipt_ns: AtomicU64::new(0),
        resets: AtomicU64::new(0),
    });
    let per_client = total_events;
    let mut tasks = Vec::with_capacity(n);
    let opened = Instant::now();
    for i in 0..n {
        tasks.push(tokio::spawn(client(
            server.addr.clone(),
            shared.clone(),
            Vec::with_capacity(per_client),
        )));
        // Stay under the listen backlog.
        if i % 500 == 499 {
            while shared.connected.load(Ordering::Relaxed) + 500 < i {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    while shared.connected.load(Ordering::Relaxed) < n {
        assert!(
            opened.elapsed() < Duration::from_secs(120),
            "only {} of {n} connected",
            shared.connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_s = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    let tcp_idle = tcp_mem_kib();
    let per_conn = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
    println!(
        "| {n} | {rss_before} | {rss_idle} | {:.1} | {} | {open_s:.1} |",
        per_conn / 1024.0,
        tcp_idle.saturating_sub(tcp_before)
    );

    let mut first = 0;
    let mut results = Vec::new();
    for &target in deliveries {
        let rate = ((target as f64 / n as f64).ceil()).max(1.0);
        let count = rate as usize * seconds as usize;
        let received_before = shared.received.load(Ordering::Relaxed);
        let start_ns = shared.epoch.elapsed().as_nanos() as u64;
        let round_trips = publish(&server.addr, &shared, first, count, rate).await;
        // Wait for the last deliveries (or give up after 30 s).
        let expected = received_before + (count * n) as u64;
        let wait = Instant::now();
        while shared.received.load(Ordering::Relaxed) < expected
            && wait.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let received = shared.received.load(Ordering::Relaxed) - received_before;
        let span_s = (shared.last_receipt_ns.load(Ordering::Relaxed) - start_ns) as f64 / 1e9;
        let mut rt = round_trips;
        rt.sort_unstable();
        results.push((rate, count, first, received, span_s, rt));
        first += count;
    }
    let rss_after = rss_kib(pid);
    // Close the clients and gather their delay samples.
    drop(server);
    let mut all: Vec<Vec<(u32, u32)>> = Vec::with_capacity(n);
    for t in tasks {
        all.push(t.await.unwrap());
    }
    println!();
    println!("| connections | events/s | deliveries expected | received | deliveries/s | from hook sent p50 ms | p99 ms | max ms | from hook answered p50 ms | p99 ms | hook round trip p50 ms | resets |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (rate, count, first, received, span_s, rt) in results {
        let range = first as u32..(first + count) as u32;
        let at = |v: &Vec<AtomicU64>, k: u32| v[k as usize].load(Ordering::Relaxed) / 1000;
        let mut delays: Vec<u32> = Vec::with_capacity(count * n);
        let mut from_ack: Vec<u32> = Vec::with_capacity(count * n);
        for (k, received_us) in all.iter().flatten().filter(|(k, _)| range.contains(k)) {
            let received_us = *received_us as u64;
            delays.push(received_us.saturating_sub(at(&shared.sent_at, *k)) as u32);
            // Events often arrive before their hook's answer does: those count as 0.
            from_ack.push(received_us.saturating_sub(at(&shared.acked_at, *k)) as u32);
        }
        delays.sort_unstable();
        from_ack.sort_unstable();
        println!(
            "| {n} | {rate:.0} | {} | {received} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            count * n,
            received as f64 / span_s,
            percentile(&delays, 0.50),
            percentile(&delays, 0.99),
            delays
                .last()
                .map(|d| *d as f64 / 1000.0)
                .unwrap_or(f64::NAN),
            percentile(&from_ack, 0.50),
            percentile(&from_ack, 0.99),
            percentile(&rt, 0.50),
            shared.resets.load(Ordering::Relaxed),
        );
    }
    println!("(serve VmRSS after publishing: {rss_after} KiB)");
}

fn main() {
    if !support::begin("stream_fanout") {
        return;
    }
    let limit = jobscope::collector::fd_limit::raise_open_files_limit().unwrap_or(0);
    let connections: Vec<u64> = env_list("BENCH_CONNECTIONS", "1000,5000,10000");
    let deliveries: Vec<u64> = env_list("BENCH_DELIVERIES", "100000,200000");
    let seconds = env_list::<u64>("BENCH_SECONDS", "10")
        .first()
        .copied()
        .unwrap_or(10);
    println!("open files limit raised to {limit} (setrlimit RLIMIT_NOFILE, soft = hard)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for &n in &connections {
        // The server and this process each hold one descriptor per connection.
        if n + 100 > limit {
            println!("skipping N={n}: needs {} open files", n + 100);
            continue;
        }
        println!("\n### N = {n}\n");
        println!("| connections | serve VmRSS before KiB | with N idle KiB | KiB per connection | kernel TCP buffers KiB | seconds to open |");
        println!("|---|---|---|---|---|---|");
        runtime.block_on(async {
            let n = n as usize;
            run(n, &deliveries, seconds).await;
        });
    }
}
