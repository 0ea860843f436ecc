//! The seeds' own client snippets, run as written against a real `serve` (issue #17): seed
//! 000's curl lines and its JavaScript WebSocket client (Node's WebSocket), and seed 001's
//! Python client (the `websockets` package). The only edits are the ones a site makes: the
//! server's address instead of `localhost:8080`, and for seed 001 a jobscope reader token in
//! place of the Helios gateway's `/api/auth/login` (which jobscope does not have) — the
//! connection itself, `?token=` included, is the seed's.
//!
//! Tools: `curl`, `node` (20+, `--experimental-websocket`) and a Python with `websockets`
//! (`JOBSCOPE_TEST_PYTHON`, default `python3`; e.g. a venv with `pip install websockets`).
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
    let db = TestDb::new(Backend::Sqlite).await;
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
