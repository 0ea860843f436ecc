//! Slow stream clients against the real `jobscope serve` process, on real sockets: while
//! thousands of events are published, a client that never reads must not grow the server's
//! memory, a client that pauses gets `reset` and is disconnected when it keeps lagging, a client
//! that reads gets every event, and the stuck client is eventually dropped by the kernel
//! (`--client-stall-timeout`).
//!
//! The server runs as its own process so that its resident memory (`VmRSS`) is the server's
//! alone. Memory is measured as the growth between two equal publishing phases *after* the
//! feed's ring (4096 events) is full: with bounded buffering it is flat; if the stuck
//! connection buffered what it cannot send, it would grow by at least the phase's encoded size.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_jobscope");

#[path = "common/serve_process.rs"]
mod serve_process;
use serve_process::ServeProcess;
/// Events per measured phase; each is larger than the feed's ring, so a non-reading client
/// lags once per phase.
const PHASE: usize = 6000;
const WARM_UP: usize = 2000;
/// GPU devices per job: makes each event about 4 KB of JSON.
const GPUS_PER_JOB: usize = 100;
/// The first test's stall timeout: longer than it runs, so the stuck client stays connected
/// while memory is measured. The second test uses a short one.
const LONG_STALL_S: u64 = 600;
const SHORT_STALL_S: u64 = 2;

/// The server with `--client-stall-timeout` set; its warnings and stream lines are shown.
fn spawn_serve(stall_timeout_s: u64) -> ServeProcess {
    let stall = stall_timeout_s.to_string();
    ServeProcess::spawn(BIN, &["--client-stall-timeout", &stall], None, |v, line| {
        v["level"] != "INFO" || line.contains("stream")
    })
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    serve_process::rss_kib(pid).expect("VmRSS in /proc")
}

/// Bytes queued in the kernel on the server's side of the connection from `peer_port`
/// (`tx_queue` of /proc/net/tcp), for the report.
fn server_send_queue(server_port: u16, peer_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |s: &str| u16::from_str_radix(s.rsplit(':').next()?, 16).ok();
        if port(f[1])? == server_port && port(f[2])? == peer_port {
            u64::from_str_radix(f[4].split(':').next()?, 16).ok()
        } else {
            None
        }
    })
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

#[derive(Debug)]
struct Sse {
    name: String,
    id: i64,
    data: Value,
}

/// A reading SSE client (reqwest).
struct SseClient {
    body: ByteStream,
    buffer: String,
}

impl SseClient {
    async fn connect(base: &str) -> SseClient {
        jobscope::install_crypto_provider();
        let resp = reqwest::get(format!("{base}/v1/stream/jobs?exclude_samples=false"))
            .await
            .expect("stream request");
        assert_eq!(resp.status(), 200);
        SseClient {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event; `None` when the server ended the stream; panics after `wait` of silence.
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::new(), -1, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().unwrap_or(-1);
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a ping comment or the retry hint
                }
                let data = serde_json::from_str(&data).expect("data is JSON");
                return Some(Sse { name, id, data });
            }
            let chunk = tokio::time::timeout(wait, self.body.next())
                .await
                .expect("the stream went silent")?;
            let Ok(chunk) = chunk else { return None };
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Publishes `count` job-started events from 8 concurrent writers; returns when each job id's
/// hook was acknowledged (the commit is done by then).
async fn publish(
    base: &str,
    from: usize,
    count: usize,
    acked: &Arc<Mutex<HashMap<String, Instant>>>,
) {
    let http = reqwest::Client::new();
    let gpus: Vec<String> = (0..GPUS_PER_JOB)
        .map(|i| format!("GPU-5c0ffee0-1d2e-4f3a-9b8c-{i:012}"))
        .collect();
    let writers = 8;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (http, base, gpus, acked) =
            (http.clone(), base.to_owned(), gpus.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for k in (from + w..from + count).step_by(writers) {
                let id = format!("p{k}");
                let body =
                    json!({"job_id": id, "user": "load", "node_list": ["n1"], "gpu_devices": gpus});
                let resp = http
                    .post(format!("{base}/v1/events/job-started"))
                    .json(&body)
                    .send()
                    .await
                    .expect("hook sent");
                assert!(resp.status().is_success(), "{}", resp.status());
                acked.lock().unwrap().insert(id, Instant::now());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn open_connections(base: &str) -> i64 {
    let status: Value = reqwest::get(format!("{base}/v1/stream/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["connections"].as_i64().unwrap_or(-1)
}

/// A stream client with a 4 KiB receive buffer that never reads.
async fn stuck_client(addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request =
        format!("GET /v1/stream/jobs?exclude_samples=false HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stuck.write_all(request.as_bytes()).await.unwrap();
    stuck
}

/// Waits until `/v1/stream/status` counts `n` open connections.
async fn wait_for_connections(base: &str, n: i64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let open = open_connections(base).await;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {open} connections open, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_bounded_and_reset_while_others_keep_up() {
    let server = spawn_serve(LONG_STALL_S);
    let pid = server.pid();
    let base = server.base();
    let server_port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let stuck = stuck_client(&server.addr).await;
    let stuck_port = stuck.local_addr().unwrap().port();

    // The pausing client: reads `connected`, then nothing until told.
    let mut paused = SseClient::connect(&base).await;
    assert_eq!(
        paused.next(Duration::from_secs(10)).await.unwrap().name,
        "connected"
    );

    // The reading client: takes everything, noting when each job's event arrived.
    let mut fast = SseClient::connect(&base).await;
    assert_eq!(
        fast.next(Duration::from_secs(10)).await.unwrap().name,
        "connected"
    );
    let total = WARM_UP + 2 * PHASE;
    let reader = tokio::spawn(async move {
        let mut seen: Vec<(String, i64, Instant)> = Vec::with_capacity(total);
        while seen.len() < total {
            let e = fast
                .next(Duration::from_secs(30))
                .await
                .expect("the reading client's stream stays open");
            assert_eq!(
                e.name, "job_event",
                "a reading client is never reset: {e:?}"
            );
            let id = e.data["data"]["job"]["id"].as_str().unwrap().to_owned();
            seen.push((id, e.id, Instant::now()));
        }
        (seen, fast)
    });
    wait_for_connections(&base, 3, Duration::from_secs(10), "stuck, paused, reading").await;

    let acked = Arc::new(Mutex::new(HashMap::new()));
    let t0 = Instant::now();
    publish(&base, 0, WARM_UP, &acked).await;
    eprintln!("warm-up published in {:.1} s", t0.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(pid);
    let started = Instant::now();
    publish(&base, WARM_UP, PHASE, &acked).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(pid);
    eprintln!(
        "phase 1 published {:.1} s after the warm-up",
        started.elapsed().as_secs_f64()
    );

    // The paused client fell more than the feed's ring behind: what it was sent before, in
    // order, then `reset` naming the last event it got.
    let mut last = 0;
    let reset = loop {
        let e = paused
            .next(Duration::from_secs(10))
            .await
            .expect("the paused client is not closed after one lag");
        if e.name == "reset" {
            break e;
        }
        assert_eq!(e.name, "job_event");
        assert!(e.id > last, "ids increase");
        last = e.id;
    };
    assert_eq!(
        reset.data["data"]["last_delivered_event_id"], last,
        "{reset:?}"
    );
    assert!(reset.id > last, "the reset skips ahead: {reset:?}");
    let reset_at = Instant::now();
    let after_reset_send_q = server_send_queue(server_port, stuck_port);

    publish(&base, WARM_UP + PHASE, PHASE, &acked).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss2 = rss_kib(pid);
    let publish_seconds = started.elapsed().as_secs_f64();
    let stuck_send_q = server_send_queue(server_port, stuck_port);
    eprintln!(
        "VmRSS after warm-up {rss0} KiB, after phase 1 {rss1} KiB, after phase 2 {rss2} KiB; \
         2x{PHASE} events of ~4 KB in {publish_seconds:.1} s; kernel send queue of the stuck \
         connection {after_reset_send_q:?} then {stuck_send_q:?} bytes"
    );
    // Phase 2 encodes about 6000 x 4 KB = 24 MB; a connection keeping it would show.
    assert!(
        rss2.saturating_sub(rss1) < 10 * 1024,
        "server memory kept growing with a stuck client: {rss1} KiB -> {rss2} KiB"
    );

    // The paused client lagged again within a minute: the server ends its stream, with no
    // second reset.
    let mut after = 0;
    loop {
        match paused.next(Duration::from_secs(10)).await {
            None => break,
            // On a starved machine phase 2 can outlast the 60 s window: a later lag is then a
            // first one again and legitimately answered with another reset.
            Some(e) if e.name == "reset" => assert!(
                reset_at.elapsed() >= Duration::from_secs(60),
                "a second reset within the window instead of closing: {e:?}"
            ),
            Some(e) => {
                assert_eq!(e.name, "job_event", "only events after the reset: {e:?}");
                assert!(e.id > reset.id && e.id > after);
                after = e.id;
            }
        }
    }

    // The reading client got every event, in order, without a reset, each soon after its
    // hook was acknowledged.
    let (seen, _fast) = reader.await.unwrap();
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "ids increase");
    let acked = acked.lock().unwrap();
    let mut delays: Vec<Duration> = seen
        .iter()
        .map(|(job, _, at)| at.saturating_duration_since(acked[job]))
        .collect();
    delays.sort();
    let p99 = delays[delays.len() * 99 / 100];
    let max = *delays.last().unwrap();
    eprintln!("reading client: {total} events, p99 {p99:?}, max {max:?} after the hook's answer");
    assert!(
        max < Duration::from_secs(5),
        "the reading client was held up: max delay {max:?}"
    );

    // The stuck client's socket was open throughout, with the kernel's send queue full (its
    // stream task ended at its second lag, but its connection holds what it buffered), so the
    // flat memory above was measured with it holding all it could.
    assert!(
        stuck_send_q.is_some_and(|q| q > 0),
        "the stuck connection is still open with data queued"
    );
    drop(stuck);
}

/// A client that stops reading is dropped by the kernel once the server's data has waited
/// `--client-stall-timeout` (TCP_USER_TIMEOUT on a closed receive window), which ends its
/// stream task; a client that reads stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_is_dropped_after_the_stall_timeout() {
    let server = spawn_serve(SHORT_STALL_S);
    let base = server.base();
    let mut stuck = stuck_client(&server.addr).await;
    let mut reading = SseClient::connect(&base).await;
    assert_eq!(
        reading.next(Duration::from_secs(10)).await.unwrap().name,
        "connected"
    );
    wait_for_connections(&base, 2, Duration::from_secs(10), "stuck and reading").await;
    // About 1.2 MB: more than the stuck connection's buffers (channel, hyper, kernel) hold.
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let events = 300;
    let (_, seen) = tokio::join!(publish(&base, 0, events, &acked), async {
        let mut seen = 0;
        while seen < events {
            let e = reading.next(Duration::from_secs(30)).await.expect("open");
            assert_eq!(e.name, "job_event");
            seen += 1;
        }
        seen
    });
    assert_eq!(seen, events);
    wait_for_connections(
        &base,
        1,
        Duration::from_secs(SHORT_STALL_S + 20),
        "the stuck client dropped",
    )
    .await;
    eprintln!(
        "stuck client dropped {:.1} s after publishing started",
        started.elapsed().as_secs_f64()
    );
    // Its socket yields what the kernel had delivered, then a reset or the end.
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stuck.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stuck connection is closed");
    // The reading client is still served.
    publish(&base, events, 1, &acked).await;
    let e = reading.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(e.data["data"]["job"]["id"], format!("p{events}"));
}
