//! What a hostile or unlucky client found (issue 18), each against the real router or a real
//! `serve` on a real socket, on both backends: far-past timestamps, samples before their job,
//! non-ASCII audit headers, 405 without `Allow`, a 100,000-character path, and a database that
//! does not answer (503 with `Retry-After`, and the hook spool keeps the event).

mod common;

use common::{Backend, TestApp, TestServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PAST: &str = "-9999-01-01T00:00:00Z";
const BEFORE_2000: &str = "1999-12-31T23:59:59Z";

fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds)).to_rfc3339()
}

on_both_backends!(far_past_timestamps_are_refused_naming_the_field, |app| {
    let past = "timestamp must not be before 2000-01-01T00:00:00Z";
    for t in [PAST, BEFORE_2000] {
        let body = json!({"job_id": "p1", "user": "u", "node_list": ["n1"], "timestamp": t});
        app.post_event("job-started", &body)
            .await
            .expect_error(400, "validation_error", past);
    }
    app.start_job("p2", "u", &["n1"]).await;
    let body = json!({"job_id": "p2", "final_state": "completed", "timestamp": PAST});
    app.post_event("job-finished", &body)
        .await
        .expect_error(400, "validation_error", past);

    app.write(
        "POST",
        "/v1/jobs",
        Some(&json!({"id": "p3", "user": "u", "nodes": ["n1"]})),
    )
    .await
    .expect(201);
    let sample = json!({"cpu_usage": 1.0, "memory_usage_mb": 1.0, "timestamp": PAST});
    app.write("POST", "/v1/jobs/p3/metrics", Some(&sample))
        .await
        .expect_error(400, "validation_error", past);
    let job = json!({"id": "p4", "user": "u", "nodes": ["n1"], "scheduler": {"submit_time": PAST}});
    app.write("POST", "/v1/jobs", Some(&job))
        .await
        .expect_error(
            400,
            "validation_error",
            "scheduler.submit_time must not be before 2000-01-01T00:00:00Z",
        );
    app.get(&format!("/v1/jobs/p3/metrics?start_time={BEFORE_2000}"))
        .await
        .expect_error(
            400,
            "validation_error",
            "start_time must not be before 2000-01-01T00:00:00Z",
        );

    // A batch: a far-past envelope refuses the batch; a far-past item is refused on its own.
    let batch = json!({"node": "n1", "collected_at": PAST, "jobs": []});
    app.request("POST", "/v1/samples", Some(&batch), &[])
        .await
        .expect_error(
            400,
            "validation_error",
            "collected_at must not be before 2000-01-01T00:00:00Z",
        );
    let batch = json!({"node": "n1", "collected_at": ago(0), "jobs": [
        {"job_id": "p2", "collected_at": PAST},
        {"job_id": "p3"},
    ]});
    let answer = app
        .request("POST", "/v1/samples", Some(&batch), &[])
        .await
        .expect(200);
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 0, "{answer}");
    assert_eq!(answer["rejected"][0]["reason"], "invalid", "{answer}");
    assert_eq!(
        answer["rejected"][0]["message"],
        "jobs[].collected_at must not be before 2000-01-01T00:00:00Z"
    );

    // Nothing out of range was stored: every job's times still parse as the schema says.
    let jobs = app.get("/v1/jobs").await.expect(200);
    for job in jobs["jobs"].as_array().unwrap() {
        let start = job["start_time"].as_str().unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(start).unwrap();
        assert!(t.timestamp() >= 946_684_800, "{job}");
    }
});

on_both_backends!(a_sample_before_its_job_started_is_refused_per_item, |app| {
    let body = json!({"job_id": "s1", "user": "u", "node_list": ["n1"], "timestamp": ago(3600)});
    app.post_event("job-started", &body).await.expect(200);
    let batch = json!({"node": "n1", "collected_at": ago(0), "jobs": [
        {"job_id": "s1", "collected_at": ago(7200)},
        // Within the 5 minutes of clock skew allowed between nodes: the job's.
        {"job_id": "s1", "collected_at": ago(3660)},
    ]});
    let answer = app
        .request("POST", "/v1/samples", Some(&batch), &[])
        .await
        .expect(200);
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 0, "{answer}");
    assert_eq!(answer["rejected"][0]["reason"], "before_job_start");

    // A job whose only sample is from before its start has no last_sample_at.
    let body = json!({"job_id": "s2", "user": "u", "node_list": ["n1"], "timestamp": ago(60)});
    app.post_event("job-started", &body).await.expect(200);
    let batch = json!({"node": "n1", "collected_at": ago(0), "jobs": [
        {"job_id": "s2", "collected_at": ago(86_400)},
    ]});
    let answer = app
        .request("POST", "/v1/samples", Some(&batch), &[])
        .await
        .expect(200);
    assert_eq!(answer["accepted"], 0, "{answer}");
    let job = app.get("/v1/jobs/s2").await.expect(200);
    assert!(job.get("last_sample_at").is_none(), "{job}");
    assert_eq!(app.sample_rows("s2").await, 0);
});

// PostgreSQL cannot store NUL in text or jsonb: schemathesis found a job whose scheduler extra
// key held one answered 500 on PostgreSQL (and was stored on SQLite). Both now refuse it.
on_both_backends!(
    nul_characters_in_a_body_are_refused_and_nothing_is_stored,
    |app| {
        let refused = "Text in the request body may not contain the NUL character (\\u0000): the databases cannot store it";
        let job = json!({"id": "z1", "user": "u", "nodes": ["n1"],
        "scheduler": {"extra": {"a\u{0}b": {"k": ["x"]}}}});
        app.write("POST", "/v1/jobs", Some(&job))
            .await
            .expect_error(400, "validation_error", refused);
        let job = json!({"id": "z1", "user": "u\u{0}", "nodes": ["n1"]});
        app.write("POST", "/v1/jobs", Some(&job))
            .await
            .expect_error(400, "validation_error", refused);
        app.get("/v1/jobs/z1").await.expect(404);
        let body = json!({"job_id": "z2", "user": "u", "node_list": ["n1"], "timestamp": ago(5),
        "scheduler": {"raw_state": "RUN\u{0}NING"}});
        app.post_event("job-started", &body)
            .await
            .expect_error(400, "validation_error", refused);
        app.get("/v1/jobs/z2").await.expect(404);

        // A literal backslash-u-0000 (escaped backslash) is ordinary text and is kept.
        let job = json!({"id": "z3", "user": "u", "nodes": ["n1"],
        "scheduler": {"extra": {"note": "\\u0000"}}});
        app.write("POST", "/v1/jobs", Some(&job)).await.expect(201);
        let stored = app.get("/v1/jobs/z3").await.expect(200);
        assert_eq!(stored["scheduler"]["extra"]["note"], "\\u0000", "{stored}");
    }
);

async fn non_ascii_audit_headers_are_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let client = common::http();
    server.started("h1", "u").await;
    let non_ascii = reqwest::header::HeaderValue::from_bytes("Zoë".as_bytes()).unwrap();
    for (method, path) in [
        (reqwest::Method::POST, "/v1/jobs"),
        (reqwest::Method::PATCH, "/v1/jobs/h1"),
        (reqwest::Method::DELETE, "/v1/jobs/h1"),
    ] {
        for header in ["x-correlation-id", "x-changed-by"] {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("x-changed-by", "t".parse().unwrap());
            headers.insert("x-source", "s".parse().unwrap());
            headers.insert(header, non_ascii.clone());
            let resp = client
                .request(method.clone(), format!("{}{path}", server.base))
                .headers(headers)
                .json(&json!({"id": "h2", "user": "u", "nodes": ["n1"], "state": "running"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                400,
                "{method} {path} with non-ASCII {header}"
            );
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "validation_error", "{body}");
        }
    }
    server.shutdown().await;
}

async fn method_not_allowed_says_allow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let client = common::http();

    let resp = client
        .put(format!("{}/v1/jobs", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let resp = client
        .post(format!("{}/v1/jobs/h1/audit", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    server.shutdown().await;
}

async fn a_path_too_long_gets_the_json_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    let client = common::http();

    // (reqwest refuses to send such a URI: raw HTTP.)
    let (status, body) = raw_get(server.addr, &format!("/v1/jobs/{}", "a".repeat(100_000))).await;
    assert_eq!(status, 414);
    let body: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(body["error"], "uri_too_long", "{body}");

    // The server still serves.
    let resp = client
        .get(format!("{}/v1/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.shutdown().await;
}

/// A plain GET of a WebSocket route (`Connection: close`, no upgrade) is a 400 saying so, not a
/// 500 (schemathesis found `Connection: keep-alive` on `/ws` answered 500).
async fn a_websocket_route_without_an_upgrade_is_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    for route in ["/v1/ws", "/ws", "/ws/cluster"] {
        let (status, body) = raw_get(server.addr, route).await;
        assert_eq!(status, 400, "{route}: {body}");
        let body: Value = serde_json::from_str(&body).expect("a JSON error body");
        assert_eq!(body["error"], "invalid_request", "{route}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("WebSocket upgrade"),
            "{route}: {body}"
        );
    }
    server.shutdown().await;
}

/// A GET sent as raw HTTP/1.1 on a new connection: the status and the body.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

on_backends!(
    non_ascii_audit_headers_are_400,
    method_not_allowed_says_allow,
    a_path_too_long_gets_the_json_error,
    a_websocket_route_without_an_upgrade_is_400,
    slow_and_idle_connections_are_closed,
    past_the_cap_a_connection_gets_503,
    a_stream_is_not_cut_by_the_header_timeout
);

/// A server whose connection settings are `limits`.
async fn server_with(
    backend: Backend,
    limits: jobscope::api::connections::ConnectionLimits,
) -> TestServer {
    let db = common::TestDb::new(backend).await;
    let config = jobscope::config::ServeConfig {
        connections: limits,
        ..common::serve_config(&db.url)
    };
    TestServer::start_with(config, Some(db)).await
}

/// Whether the server closed `conn` (EOF or reset) within `within`.
async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn slow_and_idle_connections_are_closed(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let limits = jobscope::api::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let server = server_with(backend, limits).await;
    let started = Instant::now();
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            if slow
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "idle connection kept"
    );
    assert!(
        trickle.await.unwrap(),
        "a connection trickling headers was kept for 20 s"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The server still serves.
    let (status, _) = raw_get(server.addr, "/v1/health").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

async fn past_the_cap_a_connection_gets_503(backend: Backend) {
    let limits = jobscope::api::connections::ConnectionLimits {
        max_connections: 8,
        ..Default::default()
    };
    let server = server_with(backend, limits).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // The server counts a connection once it accepted it: poll until the ninth is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = raw_get(server.addr, "/v1/health").await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "never refused past the cap");
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw_get(server.addr, "/v1/health").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not served once the held connections closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

async fn a_stream_is_not_cut_by_the_header_timeout(backend: Backend) {
    use futures_util::StreamExt;
    let limits = jobscope::api::connections::ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let server = server_with(backend, limits).await;
    let resp = common::http()
        .get(format!("{}/v1/stream/jobs", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    // Longer than the header-read timeout, on purpose: the stream must outlive it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.started("st1", "u").await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("st1") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the stream answers")
            .expect("the stream is still open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
        assert!(Instant::now() < deadline);
    }
    server.shutdown().await;
}

/// The hook spool holding one event; its delivery report against `server`.
async fn deliver_one_spooled(base: &str, dir: &std::path::Path, job: &str) -> (usize, usize) {
    let spool = jobscope::hook::open_spool(dir).unwrap();
    if spool.depth().unwrap().records == 0 {
        let event = jobscope::hook::event::Event {
            path: "/v1/events/job-started".into(),
            job_id: job.into(),
            body: json!({"job_id": job, "user": "u", "node_list": ["n1"]}),
        };
        spool.push(&serde_json::to_vec(&event).unwrap()).unwrap();
    }
    let client = jobscope::hook::HookClient::new(base, None, Duration::from_secs(30)).unwrap();
    let report = jobscope::hook::deliver_spooled(&spool, &client, Duration::from_secs(30)).await;
    (report.delivered, report.remaining)
}

/// A write answered 503 with Retry-After within the acquire timeout (not 500 after 10 s).
async fn expect_unavailable(base: &str, job: &str) {
    let started = Instant::now();
    let resp = common::http()
        .post(format!("{base}/v1/events/job-started"))
        .json(&json!({"job_id": job, "user": "u", "node_list": ["n1"]}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");
}

/// SQLite: another process holds the write lock longer than the acquire timeout.
#[tokio::test]
async fn a_locked_sqlite_database_answers_503_and_the_hook_spool_keeps_the_event() {
    use sqlx::{Connection, Executor};
    let db = common::TestDb::new(Backend::Sqlite).await;
    let config = jobscope::config::ServeConfig {
        db_acquire_timeout: Duration::from_secs(1),
        ..common::serve_config(&db.url)
    };
    let url = db.url.clone();
    let server = TestServer::start_with(config, Some(db)).await;
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();

    expect_unavailable(&server.base, "l1").await;
    let spool_dir = tempfile::tempdir().unwrap();
    let (delivered, remaining) = deliver_one_spooled(&server.base, spool_dir.path(), "l2").await;
    assert_eq!((delivered, remaining), (0, 1), "kept after a 503");

    locker.execute("ROLLBACK").await.unwrap();
    let (delivered, remaining) = deliver_one_spooled(&server.base, spool_dir.path(), "l2").await;
    assert_eq!(
        (delivered, remaining),
        (1, 0),
        "delivered once the database answers"
    );
    server.shutdown().await;
}

/// A TCP proxy to PostgreSQL that can be cut: while down, every connection is cut and new ones
/// are held without an answer (a partitioned or hung database).
struct Proxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        Proxy { port, up, links }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for link in self.links.lock().unwrap().drain(..) {
                link.abort();
            }
        }
    }
}

/// PostgreSQL: the database goes away (every connection cut, new ones refused).
#[tokio::test]
async fn a_postgres_outage_answers_503_and_the_hook_spool_keeps_the_event() {
    if common::skip_postgres() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("jobscope=warn")
        .try_init();
    let db = common::TestDb::new(Backend::Postgres).await;
    let url = reqwest::Url::parse(&db.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let target = tokio::net::lookup_host(target)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let config = jobscope::config::ServeConfig {
        db_acquire_timeout: Duration::from_secs(1),
        ..common::serve_config(proxied.as_str())
    };
    let server = TestServer::start_with(config, Some(db)).await;
    server.started("o0", "u").await;

    proxy.set_up(false);
    expect_unavailable(&server.base, "o1").await;
    let spool_dir = tempfile::tempdir().unwrap();
    let (delivered, remaining) = deliver_one_spooled(&server.base, spool_dir.path(), "o2").await;
    assert_eq!((delivered, remaining), (0, 1), "kept after a 503");

    proxy.set_up(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (delivered, remaining) =
            deliver_one_spooled(&server.base, spool_dir.path(), "o2").await;
        if (delivered, remaining) == (1, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered after the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown().await;
}

/// Log lines written by the code under test, as the text log would show them.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// A newline in a rejected sample's job id cannot forge a log line (the handler runs on this
/// test's thread, where the capturing subscriber is the default).
#[tokio::test]
async fn client_text_cannot_forge_log_lines() {
    let app = TestApp::new(Backend::Sqlite).await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let forged = "x\n2026-01-01T00:00:00.000000Z ERROR jobscope: FORGED";
    let batch = json!({"node": "n1", "collected_at": ago(0), "jobs": [{"job_id": forged}]});
    let answer = app
        .request("POST", "/v1/samples", Some(&batch), &[])
        .await
        .expect(200);
    assert_eq!(answer["rejected"][0]["reason"], "invalid", "{answer}");
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("sample batch"),
        "the rejection is logged: {text}"
    );
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-01-01"),
            "forged line: {line:?}\n{text}"
        );
    }
    drop(_guard);
    app.finish().await;
}

/// A connection that never sends a byte (an HTTP client's pool keeps such connections: hyper
/// opens one while a request waits, and pools it unused when an older one frees up first) does
/// not hold up a graceful shutdown; it used to, until the first-byte timeout (20 s), which CI
/// caught as a 10 s shutdown in tests/hook.rs.
#[tokio::test]
async fn a_connection_that_never_speaks_does_not_hold_up_shutdown() {
    let server = TestServer::start(Backend::Sqlite).await;
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Accepted in order: once a later connection is answered, the silent one was accepted.
    let health = common::http()
        .get(format!("{}/v1/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let started = Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(silent);
}
