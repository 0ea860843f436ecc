//! The seeds' own client snippets, run as written against a real `serve` (issue #17): seed
//! 000's curl lines and its JavaScript WebSocket client (Node's WebSocket), and seed 001's
//! Python client (the `websockets` package). The only edits are the ones a site makes: the
//! server's address instead of `localhost:8080`, and for seed 001 a jobscope reader token in
//! place of the Helios gateway's `/api/auth/login` (which jobscope does not have) — the
//! connection itself, `?token=` included, is the seed's.
//!
//! Seeds 002 and 004 (job output): their curl lines, JavaScript EventSource and WebSocket
//! clients and seed 002's Python (`requests`) client, against the aliases in
//! `api::log_dialects`; each test says what it adapted (the job id, and for seed 004's relative
//! URLs the page's origin).
//!
//! Tools: `curl`, `node` (20+, `--experimental-websocket`, `--experimental-eventsource`) and
//! a Python with `websockets` and `requests` (`JOBSCOPE_TEST_PYTHON`, default `python3`; e.g.
//! a venv with `pip install websockets requests`).
//! A missing tool skips its test with a message, unless `JOBSCOPE_REQUIRE_SEED_CLIENTS=1`,
//! which makes it a failure.

mod common;

use common::{Backend, TestDb, TestServer};
use jobscope::api::auth::Tokens;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READER: &str = "reader-token-0123456789";

async fn start(tokens: bool) -> TestServer {
    start_on(Backend::Sqlite, tokens).await
}

async fn start_on(backend: Backend, tokens: bool) -> TestServer {
    let db = TestDb::new(backend).await;
    let mut config = common::serve_config(&db.url);
    if tokens {
        config.tokens = Some(
            Tokens::parse(&format!("reader {READER}\nadmin admin-token-0123456789\n")).unwrap(),
        );
    }
    TestServer::start_with(config, Some(db)).await
}

/// Whether `program args` runs; otherwise the test is skipped (or fails when required).
fn tool_available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let required = std::env::var("JOBSCOPE_REQUIRE_SEED_CLIENTS").is_ok_and(|v| v == "1");
        assert!(!required, "{program} {args:?} is required but failed");
        eprintln!("{program} is missing or lacks what the seed needs: seed client test skipped");
    }
    ok
}

fn python() -> String {
    std::env::var("JOBSCOPE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A client process whose stdout lines are read on a thread; killed when dropped.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Client {
    fn spawn(mut command: Command) -> Client {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("client starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Client {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 15 s) for a line containing every one of `parts`; returns it.
    async fn wait_for(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(line) = self
                .seen
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line.clone();
            }
            match self.lines.try_recv() {
                Ok(line) => self.seen.push(line),
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "no line with {parts:?} within 15 s; the client printed {:#?}",
                        self.seen
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!(
                        "the client exited without printing {parts:?}; it printed {:#?}",
                        self.seen
                    )
                }
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's text with the server's address for `localhost:8080`.
fn at(server: &TestServer, text: &str) -> String {
    text.replace("localhost:8080", &server.addr.to_string())
}

/// Seed 000, "cURL Examples", the three lines as written.
#[tokio::test]
async fn seed000_curl_lines() {
    if !tool_available("curl", &["--version"]) {
        return;
    }
    let server = start(false).await;
    server
        .store
        .sync_partitions(&[common::partition(
            "compute",
            jobscope::domain::PartitionState::Up,
        )])
        .await
        .unwrap();
    let lines = [
        r#"curl -N "http://localhost:8080/events?stream=jobs&states=RUNNING,PENDING""#,
        r#"curl -N "http://localhost:8080/events?stream=nodes&partition=compute""#,
        r#"curl -N "http://localhost:8080/events?stream=partitions""#,
    ];
    let mut clients: Vec<Client> = lines
        .iter()
        .map(|line| {
            let mut sh = Command::new("sh");
            sh.args(["-c", &at(&server, line)]);
            Client::spawn(sh)
        })
        .collect();
    for client in &mut clients {
        client.wait_for(&["event:connected"]).await;
    }
    server.started("c1", "john").await;
    let (jobs, rest) = clients.split_first_mut().unwrap();
    let created = jobs.wait_for(&["data:", "\"job_created\"", "\"c1\""]).await;
    assert!(created.contains("\"running\""), "{created}");
    assert!(
        jobs.wait_for(&["event:job_event"])
            .await
            .starts_with("event:"),
        "a named job_event"
    );
    // The partitions stream hears a partition change.
    server
        .store
        .sync_partitions(&[common::partition(
            "compute",
            jobscope::domain::PartitionState::Down,
        )])
        .await
        .unwrap();
    rest[1]
        .wait_for(&["data:", "\"partition_updated\"", "\"compute\""])
        .await;
    server.shutdown().await;
}

/// Seed 000, "WebSocket Client (JavaScript)", as written (Node's WebSocket stands in for the
/// browser's).
#[tokio::test]
async fn seed000_javascript_websocket_client() {
    if !tool_available(
        "node",
        &[
            "--experimental-websocket",
            "-e",
            "new WebSocket('ws://127.0.0.1:9').onerror=()=>{}",
        ],
    ) {
        return;
    }
    let server = start(false).await;
    let script = at(
        &server,
        r#"
const ws = new WebSocket('ws://localhost:8080/ws');

ws.onopen = () => {
    // Request job stream with filtering
    ws.send(JSON.stringify({
        stream: 'jobs',
        options: {
            states: ['RUNNING', 'PENDING'],
            user_id: 'john',
            partition: 'compute'
        }
    }));
};

ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    
    switch (data.type) {
        case 'event':
            console.log('Received event:', data.data);
            break;
        case 'error':
            console.error('Stream error:', data.error);
            break;
        case 'stream_closed':
            console.log('Stream closed');
            break;
    }
};
"#,
    );
    // The seed logs objects with console.log's default formatting; JSON makes them readable
    // to the test without changing what the client does.
    let script = format!(
        "const inspect = console.log; console.log = (...a) => inspect(...a.map(x => typeof x === 'object' ? JSON.stringify(x) : x));\n{script}"
    );
    let mut node = Command::new("node");
    node.args(["--experimental-websocket", "-e", &script]);
    let mut client = Client::spawn(node);
    // Subscribed before the job starts: poll the registry rather than sleep.
    wait_for_subscribers(&server, "jobs", "ws").await;
    server.started("other", "someone-else").await;
    server
        .post(
            "/v1/events/job-started",
            json!({"job_id": "j-js", "user": "john", "node_list": ["n1"], "partition": "compute"}),
        )
        .await;
    let line = client.wait_for(&["Received event:", "j-js"]).await;
    assert!(line.contains("\"user\":\"john\""), "{line}");
    assert!(
        !client.seen.iter().any(|l| l.contains("someone-else")),
        "the filter held: {:?}",
        client.seen
    );
    server.shutdown().await;
}

/// Seed 001, "Python Client", as written but for the token (see the module doc).
#[tokio::test]
async fn seed001_python_client() {
    if !tool_available(&python(), &["-c", "import websockets"]) {
        return;
    }
    let server = start(true).await;
    let script = at(
        &server,
        r#"
import asyncio
import websockets
import json

async def connect_websocket():
    # Get authentication token (seed 001 logs in to its gateway; jobscope: a reader token)
    token = 'reader-token-0123456789'

    # Connect to WebSocket
    uri = f"ws://localhost:8080/ws/cluster?token={token}"

    async with websockets.connect(uri) as websocket:
        print("Connected to WebSocket")

        # Receive messages
        async for message in websocket:
            data = json.loads(message)
            print(f"Type: {data['type']}, Data: {data.get('data')}")

# Run the client
asyncio.run(connect_websocket())
"#,
    );
    let mut py = Command::new(python());
    py.args(["-u", "-c", &script]);
    let mut client = Client::spawn(py);
    client.wait_for(&["Connected to WebSocket"]).await;
    client
        .wait_for(&["Type: status, Data:", "jobs_by_state"])
        .await;
    let admin = common::http();
    let resp = admin
        .post(format!("{}/v1/events/job-started", server.base))
        .bearer_auth("admin-token-0123456789")
        .json(&json!({"job_id": "py-1", "user": "ann", "node_list": ["n1"]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    client.wait_for(&["Type: job_created", "py-1"]).await;
    // The periodic status keeps coming (every 5 s by default).
    let first = client_count(&client.seen, "Type: status");
    let deadline = Instant::now() + Duration::from_secs(12);
    while client_count(&client.seen, "Type: status") <= first {
        assert!(Instant::now() < deadline, "a second status within 12 s");
        // Never a blocking wait here: the server runs on this test's runtime.
        while let Ok(line) = client.lines.try_recv() {
            client.seen.push(line);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;

    // A wrong token is refused before upgrading: the seed's client fails to connect.
    let server = start(true).await;
    let bad = at(
        &server,
        r#"
import asyncio, websockets
async def main():
    try:
        async with websockets.connect("ws://localhost:8080/ws/cluster?token=not-a-token-at-all"):
            print("connected")
    except Exception as e:
        print("refused", type(e).__name__, getattr(getattr(e, 'response', None), 'status_code', None))
asyncio.run(main())
"#,
    );
    let mut py = Command::new(python());
    py.args(["-u", "-c", &bad]);
    let mut client = Client::spawn(py);
    client.wait_for(&["refused", "401"]).await;
    server.shutdown().await;
}

fn client_count(lines: &[String], part: &str) -> usize {
    lines.iter().filter(|l| l.contains(part)).count()
}

/// Waits until `GET /v1/stream/status` counts a `protocol` connection on `stream`.
async fn wait_for_subscribers(server: &TestServer, stream: &str, protocol: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status: serde_json::Value = common::http()
            .get(format!("{}/v1/stream/status", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["streams"][stream][protocol].as_u64().unwrap_or(0) > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {stream} subscriber: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Seeds 002 and 004: a job's output -------------------------------------------------

/// Ships `text` as job `job`'s `stream` from byte `offset` (as the agent does); `eof` marks
/// the last bytes. Returns the offset after them.
async fn ship(
    server: &TestServer,
    job: &str,
    stream: &str,
    offset: usize,
    text: &str,
    eof: bool,
) -> usize {
    let resp = common::http()
        .post(format!(
            "{}/v1/jobs/{job}/log?stream={stream}&offset={offset}&eof={eof}",
            server.base
        ))
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "ship: {}", resp.status());
    offset + text.len()
}

async fn finish(server: &TestServer, job: &str) {
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": job, "exit_code": 0}),
        )
        .await;
}

/// Seed 002's job id in its snippets, `job-id`, becomes the test's job.
fn seed002(server: &TestServer, text: &str, job: &str) -> String {
    at(server, text).replace("job-id", job)
}

fn node_available(flag: &str) -> bool {
    tool_available("node", &[flag, "-e", "0"])
}

/// Node's `console.log` prints objects as JSON (the seeds log whole objects; a browser's
/// console would show them expanded), so the test can read them. Nothing else changes.
const JSON_CONSOLE: &str = "const inspect = console.log; console.log = (...a) => inspect(...a.map(x => typeof x === 'object' ? JSON.stringify(x) : x));\n";

/// Seed 002, "Log Streaming (SSE)" and "Event Streaming (SSE)": the two curl lines as written
/// but for the job id (`job-id` there). Its third curl line, `POST /api/v1/jobs` with an
/// Ansible playbook in YAML, submits work to seed 002's job runner: jobscope observes Slurm's
/// jobs and runs none, so that one has no counterpart.
async fn seed002_curl_lines(backend: Backend) {
    if !tool_available("curl", &["--version"]) {
        return;
    }
    let server = start_on(backend, false).await;
    server.started("j2", "ann").await;
    let at_byte = ship(&server, "j2", "stdout", 0, "line one\nline two\n", false).await;
    let lines = [
        r#"curl -N -H "Accept: text/event-stream" \
    http://localhost:8080/api/v1/jobs/job-id/logs/stream"#,
        r#"curl -N -H "Accept: text/event-stream" \
    http://localhost:8080/api/v1/jobs/job-id/events/stream"#,
    ];
    let mut clients: Vec<Client> = lines
        .iter()
        .map(|line| {
            let mut sh = Command::new("sh");
            sh.args(["-c", &seed002(&server, line, "j2")]);
            Client::spawn(sh)
        })
        .collect();
    let (logs, events) = clients.split_first_mut().unwrap();
    let events = &mut events[0];
    logs.wait_for(&["event:connected"]).await;
    logs.wait_for(&["data:", r#""line":"line one""#]).await;
    logs.wait_for(&["data:", r#""line":"line two""#]).await;
    events.wait_for(&["event:job_event"]).await;
    events.wait_for(&["data:", "\"j2\"", "\"running\""]).await;
    // Live: a line cut in two appends arrives once, whole.
    let at_byte = ship(&server, "j2", "stdout", at_byte, "line th", false).await;
    ship(&server, "j2", "stdout", at_byte, "ree\n", true).await;
    logs.wait_for(&["data:", r#""line":"line three""#]).await;
    assert!(
        !logs.seen.iter().any(|l| l.contains(r#""line":"line th""#)),
        "{:#?}",
        logs.seen
    );
    finish(&server, "j2").await;
    logs.wait_for(&["event:completed"]).await;
    events.wait_for(&["data:", "\"j2\"", "\"completed\""]).await;
    server.shutdown().await;
}

/// Seed 002, "JavaScript/Web Browser", as written but for the job id; Node's EventSource
/// (`--experimental-eventsource`) stands in for the browser's.
async fn seed002_javascript_eventsource(backend: Backend) {
    if !node_available("--experimental-eventsource") {
        return;
    }
    let server = start_on(backend, false).await;
    server.started("j2js", "ann").await;
    let at_byte = ship(&server, "j2js", "stdout", 0, "hello\n", false).await;
    let script = seed002(
        &server,
        r#"
const eventSource = new EventSource('http://localhost:8080/api/v1/jobs/job-id/logs/stream');

eventSource.addEventListener('log', function(event) {
    const logData = JSON.parse(event.data);
    console.log('LOG:', logData.line);
});

eventSource.addEventListener('completed', function(event) {
    console.log('Stream completed');
    eventSource.close();
});
"#,
        "j2js",
    );
    let mut node = Command::new("node");
    node.args(["--experimental-eventsource", "-e", &script]);
    let mut client = Client::spawn(node);
    client.wait_for(&["LOG: hello"]).await;
    // A last line without its newline is sent when the job ends.
    ship(&server, "j2js", "stdout", at_byte, "bye", true).await;
    finish(&server, "j2js").await;
    client.wait_for(&["LOG: bye"]).await;
    client.wait_for(&["Stream completed"]).await;
    // The client closed its EventSource: it exits rather than reconnecting.
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "node still running after close()"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// Seed 002, "Python", as written (`requests`), but for the host; the snippet only defines
/// `stream_job_logs`, so the script ends with one call of it for the test's job. The job has
/// ended, so the stream ends and so does the client.
async fn seed002_python_client(backend: Backend) {
    if !tool_available(&python(), &["-c", "import requests"]) {
        return;
    }
    let server = start_on(backend, false).await;
    server.started("j2py", "ann").await;
    ship(&server, "j2py", "stdout", 0, "alpha\nbeta\n", true).await;
    finish(&server, "j2py").await;
    let script = at(
        &server,
        r#"
import requests
import json

def stream_job_logs(job_id):
    url = f"http://localhost:8080/api/v1/jobs/{job_id}/logs/stream"
    headers = {'Accept': 'text/event-stream'}
    
    with requests.get(url, headers=headers, stream=True) as response:
        for line in response.iter_lines():
            if line:
                line = line.decode('utf-8')
                if line.startswith('data: '):
                    data = line[6:]  # Remove 'data: ' prefix
                    try:
                        log_data = json.loads(data)
                        print(f"LOG: {log_data['line']}")
                    except json.JSONDecodeError:
                        print(f"LOG: {data}")
"#,
    ) + "\nstream_job_logs('j2py')\nprint('DONE')\n";
    let mut py = Command::new(python());
    py.args(["-u", "-c", &script]);
    let mut client = Client::spawn(py);
    client.wait_for(&["DONE"]).await;
    let printed: Vec<&str> = client.seen.iter().map(String::as_str).collect();
    assert_eq!(
        printed,
        [
            "LOG: Connected to log stream for job j2py",
            "LOG: alpha",
            "LOG: beta",
            "LOG: Log stream completed",
            "DONE"
        ]
    );
    server.shutdown().await;
}

/// Seed 004, "WebSocket Streaming", as written but for the job run id (`abc-123` there).
async fn seed004_javascript_websocket(backend: Backend) {
    if !node_available("--experimental-websocket") {
        return;
    }
    let server = start_on(backend, false).await;
    server.started("j4", "ann").await;
    let out = ship(&server, "j4", "stdout", 0, "out one\n", false).await;
    let err = ship(&server, "j4", "stderr", 0, "err one\n", false).await;
    let script = at(
        &server,
        r#"
const ws = new WebSocket('ws://localhost:8080/api/v1/logs/stream/ws?job_run_id=abc-123');

ws.onmessage = (event) => {
  const logMessage = JSON.parse(event.data);
  console.log(logMessage);
};
"#,
    )
    .replace("abc-123", "j4");
    let mut node = Command::new("node");
    node.args([
        "--experimental-websocket",
        "-e",
        &format!("{JSON_CONSOLE}{script}"),
    ]);
    let mut client = Client::spawn(node);
    let line = client
        .wait_for(&[r#""message":"out one""#, r#""job_run_id":"j4""#])
        .await;
    assert!(
        line.contains(r#""level":"info""#) && line.contains(r#""stream":"stdout""#),
        "{line}"
    );
    let line = client.wait_for(&[r#""message":"err one""#]).await;
    // One connection following both streams counts once.
    let status = server.get_json("/v1/stream/status").await;
    assert_eq!(status["jobs"]["j4"], 1, "{status}");
    assert_eq!(status["streams"]["job_log"]["ws"], 1, "{status}");
    assert!(
        line.contains(r#""level":"error""#) && line.contains(r#""stream":"stderr""#),
        "{line}"
    );
    ship(&server, "j4", "stdout", out, "out two\n", true).await;
    ship(&server, "j4", "stderr", err, "", true).await;
    finish(&server, "j4").await;
    client.wait_for(&[r#""message":"out two""#]).await;
    client
        .wait_for(&[r#""stream":"system""#, "Log stream completed"])
        .await;
    server.shutdown().await;
}

/// A browser page's `EventSource` resolves a relative URL against the page's origin; Node has
/// no page, so this shim (the only addition) resolves it against the server's address, where
/// a page using seed 004's snippet would be served from.
fn page_origin_shim(server: &TestServer) -> String {
    format!(
        "const PageEventSource = EventSource;\n\
         globalThis.EventSource = class extends PageEventSource {{\n\
           constructor(url, init) {{ super(new URL(url, '{}'), init); }}\n\
         }};\n",
        server.base
    )
}

/// Seed 004, "Server-Sent Events", as written but for the job run id; the relative URL is
/// resolved as the page would (see [`page_origin_shim`]).
async fn seed004_javascript_eventsource(backend: Backend) {
    if !node_available("--experimental-eventsource") {
        return;
    }
    let server = start_on(backend, false).await;
    server.started("j4s", "ann").await;
    let out = ship(&server, "j4s", "stdout", 0, "first\n", false).await;
    let script = r#"
const eventSource = new EventSource('/api/v1/logs/stream/sse?job_run_id=abc-123');

eventSource.addEventListener('log', (event) => {
  const logMessage = JSON.parse(event.data);
  console.log(logMessage);
});
"#
    .replace("abc-123", "j4s");
    let mut node = Command::new("node");
    node.args([
        "--experimental-eventsource",
        "-e",
        &format!("{JSON_CONSOLE}{}{script}", page_origin_shim(&server)),
    ]);
    let mut client = Client::spawn(node);
    client
        .wait_for(&[r#""message":"first""#, r#""job_run_id":"j4s""#])
        .await;
    ship(&server, "j4s", "stderr", 0, "oops\n", false).await;
    let line = client.wait_for(&[r#""message":"oops""#]).await;
    assert!(line.contains(r#""level":"error""#), "{line}");
    ship(&server, "j4s", "stdout", out, "", true).await;
    server.shutdown().await;
}

/// Seed 004, "Plain JavaScript", as written: its WebSocket and its EventSource both follow
/// every job's output (no `job_run_id`). Node lacks a DOM: a minimal `document` stands in,
/// whose `#logs` element prints each appended element's text; the relative EventSource URL is
/// resolved as the page would (see [`page_origin_shim`]).
async fn seed004_plain_javascript(backend: Backend) {
    if !node_available("--experimental-eventsource") || !node_available("--experimental-websocket")
    {
        return;
    }
    let server = start_on(backend, false).await;
    let script = at(
        &server,
        r#"
// Using WebSocket directly
const ws = new WebSocket('ws://localhost:8080/api/v1/logs/stream/ws');

ws.onopen = () => {
  console.log('Connected to log stream');
};

ws.onmessage = (event) => {
  const log = JSON.parse(event.data);
  const logElement = document.createElement('div');
  logElement.textContent = `[${log.timestamp}] [${log.level}] ${log.message}`;
  document.getElementById('logs').appendChild(logElement);
};

// Using Server-Sent Events
const eventSource = new EventSource('/api/v1/logs/stream/sse');

eventSource.addEventListener('log', (event) => {
  const log = JSON.parse(event.data);
  console.log(log);
});
"#,
    );
    let document = "const document = {\n\
                      createElement: (tag) => ({ tag, textContent: '' }),\n\
                      getElementById: (id) => ({ appendChild: (el) => console.log(`#${id} <${el.tag}> ${el.textContent}`) }),\n\
                    };\n";
    let mut node = Command::new("node");
    node.args([
        "--experimental-websocket",
        "--experimental-eventsource",
        "-e",
        &format!(
            "{JSON_CONSOLE}{}{document}{script}",
            page_origin_shim(&server)
        ),
    ]);
    let mut client = Client::spawn(node);
    client.wait_for(&["Connected to log stream"]).await;
    wait_for_subscribers(&server, "logs", "ws").await;
    wait_for_subscribers(&server, "logs", "sse").await;
    server.started("g1", "ann").await;
    ship(&server, "g1", "stdout", 0, "global line\n", false).await;
    ship(&server, "g1", "stderr", 0, "global err\n", false).await;
    client
        .wait_for(&["#logs <div> [", "] [info] global line"])
        .await;
    client
        .wait_for(&["#logs <div> [", "] [error] global err"])
        .await;
    client
        .wait_for(&[r#""message":"global line""#, r#""job_run_id":"g1""#])
        .await;
    server.shutdown().await;
}

on_backends!(
    seed002_curl_lines,
    seed002_javascript_eventsource,
    seed002_python_client,
    seed004_javascript_websocket,
    seed004_javascript_eventsource,
    seed004_plain_javascript,
);
