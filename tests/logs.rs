//! Job output: agents append a stream's bytes from the offset the server holds (overlaps and
//! gaps refused with that offset), the per-job cap keeps head and tail with one marker, a
//! finished job's log closes after the drain, history pages by bytes and by lines, the
//! download is the bytes as shipped, and the SSE log stream and the WebSocket `job_log`
//! subscription resume by byte offset without gap or duplicate. On both backends.

mod common;

use common::sse::SseClient;
use common::{Backend, TestApp, TestServer, ADMIN_TOKEN, AGENT_TOKEN, HOOK_TOKEN, READER_TOKEN};
use futures_util::StreamExt;
use jobscope::api::auth::Tokens;
use serde_json::{json, Value};
use std::time::Duration;

const ALICE_TOKEN: &str = "alice-token-0123456789";
const BOB_TOKEN: &str = "bob-token-0123456789";

fn tokens() -> Tokens {
    Tokens::parse(&format!(
        "admin {ADMIN_TOKEN}\nhook {HOOK_TOKEN}\nagent {AGENT_TOKEN}\nreader {READER_TOKEN}\n\
         user:alice {ALICE_TOKEN}\nuser:bob {BOB_TOKEN}\n"
    ))
    .unwrap()
}

async fn app_with_job(backend: Backend, id: &str) -> TestApp {
    let mut app = TestApp::with_given_tokens(backend, tokens()).await;
    app.token = Some(HOOK_TOKEN.into());
    app.start_job(id, "alice", &["n1"]).await;
    app
}

/// An agent's POST of `body` to `path` (query included).
async fn ship(app: &TestApp, path: &str, body: &[u8]) -> common::Reply {
    let auth = format!("Bearer {AGENT_TOKEN}");
    app.raw(
        "POST",
        path,
        body,
        &[
            ("authorization", &auth),
            ("content-type", "application/octet-stream"),
        ],
    )
    .await
}

async fn read_as(app: &TestApp, token: &str, path: &str) -> common::Reply {
    let auth = format!("Bearer {token}");
    app.raw("GET", path, b"", &[("authorization", &auth)]).await
}

async fn appends_and_refusals(backend: Backend) {
    let app = app_with_job(backend, "j-1").await;
    let first = ship(
        &app,
        "/v1/jobs/j-1/log?stream=stdout&offset=0",
        b"line1\nline2\n",
    )
    .await
    .expect(200);
    assert_eq!(first["offset"], 12, "{first}");
    // The same chunk again (an agent restart, a spool replay): refused with the held offset,
    // stored once.
    let again = ship(
        &app,
        "/v1/jobs/j-1/log?stream=stdout&offset=0",
        b"line1\nline2\n",
    )
    .await;
    assert_eq!(again.expect(409)["offset"], 12);
    assert_eq!(again.json()["error"], "conflict");
    // A gap.
    let gap = ship(&app, "/v1/jobs/j-1/log?stream=stdout&offset=20", b"x").await;
    assert_eq!(gap.expect(409)["offset"], 12);
    // An overlap that also carries new bytes.
    let overlap = ship(
        &app,
        "/v1/jobs/j-1/log?stream=stdout&offset=6",
        b"line2\nline3\n",
    )
    .await;
    assert_eq!(overlap.expect(409)["offset"], 12);
    // A probe answers where to go on.
    let probe = ship(&app, "/v1/jobs/j-1/log?stream=stdout", b"")
        .await
        .expect(200);
    assert_eq!(probe["offset"], 12);
    ship(&app, "/v1/jobs/j-1/log?stream=stdout&offset=12", b"line3\n")
        .await
        .expect(200);

    // Bad input.
    for (path, status) in [
        ("/v1/jobs/j-1/log?stream=both&offset=18", 400),
        ("/v1/jobs/j-1/log?offset=18", 400),
        ("/v1/jobs/j-1/log?stream=stdout&offset=-1", 400),
        ("/v1/jobs/j-1/log?stream=stdout&offset=x", 400),
        ("/v1/jobs/j-1/log?stream=stdout&offset=18&skipped=-5", 400),
        ("/v1/jobs/j-1/log?stream=stdout&offset=18&eof=maybe", 400),
        ("/v1/jobs/j-1/log?stream=stdout&unavailable=because", 400),
        ("/v1/jobs/nope/log?stream=stdout&offset=0", 404),
    ] {
        let reply = ship(&app, path, b"more\n").await;
        assert_eq!(reply.status.as_u16(), status, "{path}");
        assert!(reply.json()["error"].is_string(), "{path}: JSON error");
    }
    let huge = vec![b'a'; 16 * 1024 * 1024];
    ship(&app, "/v1/jobs/j-1/log?stream=stdout&offset=18", &huge)
        .await
        .expect_error(
            413,
            "payload_too_large",
            "Request body is larger than 1048576 bytes",
        );
    // Only agents (and admins) write.
    let auth = format!("Bearer {READER_TOKEN}");
    app.raw(
        "POST",
        "/v1/jobs/j-1/log?stream=stdout&offset=18",
        b"x",
        &[("authorization", &auth)],
    )
    .await
    .expect(403);

    // Nothing was stored twice or out of place.
    let log = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-1/log")
        .await
        .expect(200);
    assert_eq!(log["text"], "line1\nline2\nline3\n", "{log}");
    assert_eq!(log["end_offset"], 18);
    assert_eq!(log["next_offset"], 18);
    assert_eq!(log["more"], false);
    assert_eq!(log["complete"], false);
    app.finish().await;
}

async fn reading_history(backend: Backend) {
    let app = app_with_job(backend, "j-2").await;
    let lines: String = (1..=5).map(|i| format!("line {i}\n")).collect();
    ship(
        &app,
        "/v1/jobs/j-2/log?stream=stdout&offset=0",
        &lines.as_bytes()[..10],
    )
    .await
    .expect(200);
    ship(
        &app,
        "/v1/jobs/j-2/log?stream=stdout&offset=10",
        &lines.as_bytes()[10..],
    )
    .await
    .expect(200);
    ship(
        &app,
        "/v1/jobs/j-2/log?stream=stderr&offset=0",
        b"oops \xff\n",
    )
    .await
    .expect(200);
    ship(&app, "/v1/jobs/j-2/log?stream=stdout&offset=35", b"partial")
        .await
        .expect(200);

    // Who may read: the owner and admins; bob's view is a missing job; roles are refused.
    let get = |token: &'static str, q: &'static str| {
        let app = &app;
        async move { read_as(app, token, &format!("/v1/jobs/j-2/log{q}")).await }
    };
    let whole = get(ALICE_TOKEN, "").await.expect(200);
    assert_eq!(whole["text"], format!("{lines}partial"));
    assert_eq!(
        get(ADMIN_TOKEN, "").await.expect(200)["text"],
        whole["text"]
    );
    let bob = get(BOB_TOKEN, "").await;
    bob.expect_error(404, "not_found", "Job not found");
    get(READER_TOKEN, "").await.expect(403);

    // Bytes.
    let page = get(ALICE_TOKEN, "?offset=3&limit=9").await.expect(200);
    assert_eq!(page["text"], "e 1\nline ");
    assert_eq!(page["next_offset"], 12);
    assert_eq!(page["more"], true);
    let next = get(ALICE_TOKEN, "?offset=12&limit=100").await.expect(200);
    assert_eq!(next["text"], "2\nline 3\nline 4\nline 5\npartial");
    assert_eq!(next["more"], false);
    // Lines, tail -n style.
    let tail = get(ALICE_TOKEN, "?from_line=-2").await.expect(200);
    assert_eq!(tail["text"], "line 5\npartial");
    assert_eq!(tail["from_line"], 5);
    assert_eq!(tail["total_lines"], 6);
    let head = get(ALICE_TOKEN, "?from_line=2&lines=2").await.expect(200);
    assert_eq!(head["text"], "line 2\nline 3\n");
    assert_eq!(head["next_line"], 4);
    let rest = get(ALICE_TOKEN, "?from_line=4&lines=100").await.expect(200);
    assert_eq!(rest["text"], "line 4\nline 5\npartial");
    assert_eq!(rest["lines"], 3);
    let past = get(ALICE_TOKEN, "?from_line=40").await.expect(200);
    assert_eq!(past["text"], "");
    // Invalid UTF-8 is replaced only in text.
    let err = get(ALICE_TOKEN, "?stream=stderr").await.expect(200);
    assert_eq!(err["text"], "oops \u{fffd}\n");

    for q in [
        "?offset=43",
        "?limit=-1",
        "?limit=0",
        "?offset=-3",
        "?stream=stdin",
        "?from_line=0",
        "?lines=-4",
        "?from_line=1&offset=0",
    ] {
        let reply = get(ALICE_TOKEN, q).await;
        assert_eq!(reply.status.as_u16(), 400, "{q}: {}", reply.json());
    }

    // The download is the bytes as shipped.
    let dl = get(ALICE_TOKEN, "/download?stream=stderr").await;
    assert_eq!(dl.status.as_u16(), 200);
    assert_eq!(dl.body, b"oops \xff\n");
    assert_eq!(
        dl.header("content-disposition"),
        Some("attachment; filename=\"j-2-stderr.log\"")
    );
    assert!(dl.header("content-type").unwrap().starts_with("text/plain"));
    let dl = get(ALICE_TOKEN, "/download").await;
    assert_eq!(dl.body, format!("{lines}partial").as_bytes());
    get(BOB_TOKEN, "/download").await.expect(404);
    app.finish().await;
}

async fn cap_keeps_head_and_tail(backend: Backend) {
    let app = app_with_job(backend, "j-3").await;
    app.store.logs().set_max_bytes(1000);
    let mut offset = 0;
    for i in 0..20 {
        let chunk = format!("chunk {i:02} {}\n", "x".repeat(90));
        assert_eq!(chunk.len(), 100);
        let path = format!("/v1/jobs/j-3/log?stream=stdout&offset={offset}");
        ship(&app, &path, chunk.as_bytes()).await.expect(200);
        offset += 100;
    }
    let log = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-3/log?limit=1048576")
        .await
        .expect(200);
    let stored = log["stored_bytes"].as_i64().unwrap();
    let skipped = log["skipped_bytes"].as_i64().unwrap();
    assert!(stored <= 1000, "{log}");
    assert_eq!(stored + skipped, 2000);
    assert_eq!(log["end_offset"], 2000);
    let text = log["text"].as_str().unwrap();
    assert!(text.starts_with("chunk 00 "), "the head is kept: {text}");
    assert!(text.ends_with(&format!("chunk 19 {}\n", "x".repeat(90))));
    let marker = format!("[jobscope: {skipped} bytes of output skipped]\n");
    assert_eq!(text.matches("bytes of output skipped").count(), 1, "{text}");
    assert!(text.contains(&marker), "{text}");
    // The head is the first half of the cap, the rest the newest tail.
    assert!(
        text.contains("chunk 04 ") && !text.contains("chunk 05 "),
        "{text}"
    );
    assert!(
        text.contains("chunk 15 ") && !text.contains("chunk 14 "),
        "{text}"
    );
    let lines = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-3/log?from_line=-2")
        .await
        .expect(200);
    assert_eq!(
        lines["text"],
        format!("chunk 18 {x}\nchunk 19 {x}\n", x = "x".repeat(90))
    );
    assert_eq!(lines["total_lines"], 11);
    let dl = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-3/log/download").await;
    assert_eq!(dl.body, text.as_bytes());
    app.finish().await;
}

async fn finished_jobs_close_their_log(backend: Backend) {
    let mut app = app_with_job(backend, "j-4").await;
    ship(&app, "/v1/jobs/j-4/log?stream=stdout&offset=0", b"start\n")
        .await
        .expect(200);
    app.post_event("job-finished", &json!({"job_id": "j-4", "exit_code": 0}))
        .await
        .expect(200);
    // Within the drain the last bytes still come, and the agent's eof completes the stream.
    let log = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-4/log")
        .await
        .expect(200);
    assert_eq!(log["complete"], false);
    ship(
        &app,
        "/v1/jobs/j-4/log?stream=stdout&offset=6&eof=true",
        b"end\n",
    )
    .await
    .expect(200);
    let log = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-4/log")
        .await
        .expect(200);
    assert_eq!(log["complete"], true);
    assert_eq!(log["text"], "start\nend\n");
    ship(&app, "/v1/jobs/j-4/log?stream=stdout&offset=10", b"late\n")
        .await
        .expect(409);
    // stderr had no eof: complete once the drain has passed, and closed to appends.
    app.store.logs().set_drain(Duration::ZERO);
    let err = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-4/log?stream=stderr")
        .await
        .expect(200);
    assert_eq!(err["complete"], true);
    let closed = ship(&app, "/v1/jobs/j-4/log?stream=stderr&offset=0", b"late\n").await;
    assert_eq!(closed.expect(409)["offset"], 0);
    let err = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-4/log?stream=stderr")
        .await
        .expect(200);
    assert_eq!(err["text"], "");

    // An unreadable file is recorded on the job's log.
    app.token = Some(HOOK_TOKEN.into());
    app.start_job("j-5", "alice", &["n1"]).await;
    ship(
        &app,
        "/v1/jobs/j-5/log?stream=stdout&unavailable=not_owned",
        b"",
    )
    .await
    .expect(200);
    let log = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-5/log")
        .await
        .expect(200);
    assert_eq!(log["log_unavailable"], "not owned by the job's user");
    // ... and on the job itself, alone and in the list (issue #15); stderr's reason shows only
    // where stdout has none.
    ship(
        &app,
        "/v1/jobs/j-4/log?stream=stderr&unavailable=not_regular_file",
        b"",
    )
    .await
    .expect(200);
    let job = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-5").await.expect(200);
    assert_eq!(job["log_unavailable"], "not owned by the job's user");
    let list = read_as(&app, ALICE_TOKEN, "/v1/jobs").await.expect(200);
    let of = |id: &str| {
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {list}"))["log_unavailable"]
            .clone()
    };
    assert_eq!(of("j-5"), "not owned by the job's user");
    assert_eq!(
        of("j-4"),
        jobscope::domain::joblog::LogUnavailable::NotRegularFile.message()
    );
    app.start_job("j-6", "alice", &["n1"]).await;
    let job = read_as(&app, ALICE_TOKEN, "/v1/jobs/j-6").await.expect(200);
    assert!(job["log_unavailable"].is_null(), "{job}");
    // Deleting the job deletes its output.
    app.token = Some(ADMIN_TOKEN.into());
    app.write("DELETE", "/v1/jobs/j-4", None).await.expect(204);
    assert!(app
        .store
        .log_state("j-4", jobscope::domain::joblog::LogStream::Stdout)
        .await
        .unwrap()
        .is_none());
    app.finish().await;
}

on_backends!(
    appends_and_refusals,
    reading_history,
    cap_keeps_head_and_tail,
    finished_jobs_close_their_log
);

/// A log stream over SSE ([`SseClient`]), its events as (name, id, data).
struct Sse(SseClient);

impl Sse {
    async fn open(base: &str, path: &str, last_event_id: Option<i64>) -> Sse {
        Sse(SseClient::connect(base, path, last_event_id).await)
    }

    async fn next(&mut self) -> (String, Option<i64>, Value) {
        let event = self.0.next().await.expect("stream open");
        (event.name, event.id, event.data)
    }

    /// `log` texts until the stream holds `want` bytes from where it started; returns the
    /// text and the last id.
    async fn text_until(&mut self, end: i64) -> (String, i64) {
        let mut text = String::new();
        loop {
            let (name, id, data) = self.next().await;
            assert_eq!(name, "log", "{data}");
            text.push_str(data["text"].as_str().unwrap());
            let id = id.expect("log events carry the byte offset");
            if id >= end {
                return (text, id);
            }
        }
    }
}

async fn post_raw(server: &TestServer, path: &str, body: &'static [u8]) -> Value {
    let resp = common::http()
        .post(format!("{}{path}", server.base))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

async fn live_stream_resumes_by_offset(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.started("s-1", "alice").await;
    post_raw(&server, "/v1/jobs/s-1/log?stream=stdout&offset=0", b"one\n").await;
    let mut sse = Sse::open(&server.base, "/v1/stream/jobs/s-1/log", None).await;
    let (name, _, connected) = sse.next().await;
    assert_eq!(name, "connected");
    assert_eq!(connected["offset"], 0);
    let (text, id) = sse.text_until(4).await;
    assert_eq!((text.as_str(), id), ("one\n", 4));
    // Live bytes, a character split between two posts, and stderr (not this stream's).
    post_raw(
        &server,
        "/v1/jobs/s-1/log?stream=stdout&offset=4",
        b"two \xe2\x98",
    )
    .await;
    post_raw(&server, "/v1/jobs/s-1/log?stream=stderr&offset=0", b"err\n").await;
    post_raw(
        &server,
        "/v1/jobs/s-1/log?stream=stdout&offset=10",
        b"\x83\nthree\n",
    )
    .await;
    let (text, id) = sse.text_until(18).await;
    assert_eq!(
        text, "two \u{2603}\nthree\n",
        "no replacement character, no gap"
    );
    assert_eq!(id, 18);
    // Counted in the stream status while open, and no longer once closed.
    let status = || server.get_json("/v1/stream/status");
    let open = status().await;
    assert_eq!(open["streams"]["job_log"]["sse"], 1, "{open}");
    assert_eq!(open["jobs"]["s-1"], 1, "{open}");
    drop(sse);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = status().await;
        if now["streams"].get("job_log").is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still counted: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Resume from an offset in the middle: exactly the rest, then completed at the end.
    let mut resumed = Sse::open(&server.base, "/v1/stream/jobs/s-1/log", Some(4)).await;
    assert_eq!(resumed.next().await.0, "connected");
    let (text, _) = resumed.text_until(18).await;
    assert_eq!(text, "two \u{2603}\nthree\n");
    post_raw(
        &server,
        "/v1/jobs/s-1/log?stream=stdout&offset=18&eof=true",
        b"four\n",
    )
    .await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "s-1", "exit_code": 0}),
        )
        .await;
    let (text, _) = resumed.text_until(23).await;
    assert_eq!(text, "four\n");
    let (name, _, done) = resumed.next().await;
    assert_eq!(name, "completed", "{done}");
    assert_eq!(done["offset"], 23);

    // A client of the finished job gets it all, then completed.
    let mut late = Sse::open(&server.base, "/v1/stream/jobs/s-1/log?stream=stdout", None).await;
    assert_eq!(late.next().await.0, "connected");
    let (text, _) = late.text_until(23).await;
    assert_eq!(text, "one\ntwo \u{2603}\nthree\nfour\n");
    assert_eq!(late.next().await.0, "completed");
    // Past the end is a 400.
    let resp = common::http()
        .get(format!("{}/v1/stream/jobs/s-1/log", server.base))
        .header("last-event-id", "99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

/// Seed 002's line-framed alias (`/api/v1/jobs/{id}/logs/stream`): one `log` event per line
/// whatever the appends, each with the byte offset after it as its id; `Last-Event-ID` resumes
/// after that line, with no gap and no duplicate; an unknown parameter is a 400.
async fn seed002_stream_resumes_by_line(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.started("l-1", "alice").await;
    post_raw(
        &server,
        "/v1/jobs/l-1/log?stream=stdout&offset=0",
        b"one\ntw",
    )
    .await;
    post_raw(
        &server,
        "/v1/jobs/l-1/log?stream=stdout&offset=6",
        b"o\nthree\n",
    )
    .await;
    let path = "/api/v1/jobs/l-1/logs/stream";
    let mut sse = Sse::open(&server.base, path, None).await;
    let (name, _, data) = sse.next().await;
    assert_eq!(name, "connected", "{data}");
    let mut lines = Vec::new();
    for _ in 0..3 {
        let (name, id, data) = sse.next().await;
        assert_eq!(name, "log", "{data}");
        lines.push((data["line"].as_str().unwrap().to_owned(), id.unwrap()));
    }
    let want = [("one", 4), ("two", 8), ("three", 14)];
    let want: Vec<(String, i64)> = want.iter().map(|(l, o)| (l.to_string(), *o)).collect();
    assert_eq!(lines, want);
    // Resumed after "two": "three", then what comes next, and the end.
    let mut resumed = Sse::open(&server.base, path, Some(8)).await;
    assert_eq!(resumed.next().await.0, "connected");
    let (_, id, data) = resumed.next().await;
    assert_eq!((data["line"].as_str(), id), (Some("three"), Some(14)));
    post_raw(
        &server,
        "/v1/jobs/l-1/log?stream=stdout&offset=14&eof=true",
        b"four",
    )
    .await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "l-1", "exit_code": 0}),
        )
        .await;
    let (_, id, data) = resumed.next().await;
    assert_eq!((data["line"].as_str(), id), (Some("four"), Some(18)));
    let (name, _, data) = resumed.next().await;
    assert_eq!(name, "completed", "{data}");
    assert_eq!(data["state"], "completed");
    assert!(resumed.0.next().await.is_none(), "the stream ends");
    let resp = common::http()
        .get(format!("{}{path}?colour=red", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

on_backends!(
    live_stream_resumes_by_offset,
    seed002_stream_resumes_by_line
);

/// A WebSocket on `/v1/ws` (with `token`, if any), read as JSON messages.
struct Ws(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl Ws {
    async fn open(server: &TestServer, token: Option<&str>) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}/v1/ws", server.addr)
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().unwrap();
            req.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket handshake");
        Ws(socket)
    }

    /// The next JSON message (server pings skipped).
    async fn next(&mut self) -> Value {
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.0.next())
                .await
                .expect("a message within 10 s")
                .expect("connection open")
                .unwrap();
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends a `job_log` subscribe and returns the answer (`subscribed` or `error`).
    async fn subscribe_log(&mut self, options: Value) -> Value {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let message = json!({"type": "subscribe", "stream": "job_log", "options": options});
        self.0
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        self.next().await
    }

    /// `log` texts until one reaches byte `end`; returns the text and the last id.
    async fn text_until(&mut self, end: i64) -> (String, i64) {
        let mut text = String::new();
        loop {
            let m = self.next().await;
            assert_eq!(m["type"], "log", "{m}");
            assert_eq!(m["stream"], "job_log", "{m}");
            text.push_str(m["data"]["text"].as_str().unwrap());
            let id = m["id"]
                .as_i64()
                .expect("log messages carry the byte offset");
            assert_eq!(
                m["data"]["offset"].as_i64().unwrap()
                    + m["data"]["text"].as_str().unwrap().len() as i64,
                id,
                "the id is where the text ends: {m}"
            );
            if id >= end {
                return (text, id);
            }
        }
    }
}

/// The WebSocket `job_log` subscription has the SSE route's semantics: lines as they are
/// appended, resume from a byte offset with no gap and no duplicate, `completed` at the end.
async fn ws_job_log_follows_and_resumes(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.started("w-1", "alice").await;
    post_raw(&server, "/v1/jobs/w-1/log?stream=stdout&offset=0", b"one\n").await;
    let mut ws = Ws::open(&server, None).await;
    let ack = ws.subscribe_log(json!({"job_id": "w-1"})).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["stream"], "job_log");
    assert_eq!(ws.text_until(4).await, ("one\n".to_owned(), 4));
    // Appended while it follows, stderr (another stream) left out.
    post_raw(&server, "/v1/jobs/w-1/log?stream=stderr&offset=0", b"err\n").await;
    post_raw(&server, "/v1/jobs/w-1/log?stream=stdout&offset=4", b"two\n").await;
    assert_eq!(ws.text_until(8).await, ("two\n".to_owned(), 8));
    let status = server.get_json("/v1/stream/status").await;
    assert_eq!(status["streams"]["job_log"]["ws"], 1, "{status}");

    // A second connection resumes from the first one's offset 4: exactly what follows it.
    let mut resumed = Ws::open(&server, None).await;
    let ack = resumed
        .subscribe_log(json!({"job_id": "w-1", "stream": "stdout", "last_event_id": 4}))
        .await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(resumed.text_until(8).await, ("two\n".to_owned(), 8));
    // The last bytes, the job's end: both get them, then completed.
    post_raw(
        &server,
        "/v1/jobs/w-1/log?stream=stdout&offset=8&eof=true",
        b"three\n",
    )
    .await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "w-1", "exit_code": 0}),
        )
        .await;
    for ws in [&mut ws, &mut resumed] {
        assert_eq!(ws.text_until(14).await, ("three\n".to_owned(), 14));
        let done = ws.next().await;
        assert_eq!(done["type"], "completed", "{done}");
        assert_eq!(done["data"]["offset"], 14, "{done}");
        assert_eq!(done["id"], 14, "{done}");
    }
    // stderr from its start; an offset past the end and a bad stream are errors, and the
    // connection stays usable.
    let ack = ws
        .subscribe_log(json!({"job_id": "w-1", "stream": "stderr", "offset": 0}))
        .await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ws.text_until(4).await, ("err\n".to_owned(), 4));
    let err = ws
        .subscribe_log(json!({"job_id": "w-1", "offset": 99}))
        .await;
    assert_eq!(err["type"], "error", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("past the end"),
        "{err}"
    );
    let err = ws
        .subscribe_log(json!({"job_id": "w-1", "stream": "stdin"}))
        .await;
    assert_eq!(err["type"], "error", "{err}");
    server.shutdown().await;
}

/// Another non-admin user, and a service role other than admin, are refused a job's output
/// on the WebSocket as on the SSE route; the owner and an admin are not.
async fn ws_job_log_is_the_owners(backend: Backend) {
    let db = common::TestDb::new(backend).await;
    let config = jobscope::config::ServeConfig {
        tokens: Some(tokens()),
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let resp = common::http()
        .post(format!("{}/v1/events/job-started", server.base))
        .header("authorization", &admin)
        .json(&json!({"job_id": "w-2", "user": "alice", "node_list": ["n1"]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = common::http()
        .post(format!(
            "{}/v1/jobs/w-2/log?stream=stdout&offset=0",
            server.base
        ))
        .header("authorization", format!("Bearer {AGENT_TOKEN}"))
        .body(&b"secret\n"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for refused in [BOB_TOKEN, READER_TOKEN] {
        let mut ws = Ws::open(&server, Some(refused)).await;
        let err = ws.subscribe_log(json!({"job_id": "w-2"})).await;
        assert_eq!(err["type"], "error", "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        // Nothing else arrives: the next answer is to a ping.
        use futures_util::SinkExt;
        ws.0.send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "ping"}).to_string(),
        ))
        .await
        .unwrap();
        assert_eq!(ws.next().await["type"], "pong");
    }
    for allowed in [ALICE_TOKEN, ADMIN_TOKEN] {
        let mut ws = Ws::open(&server, Some(allowed)).await;
        let ack = ws.subscribe_log(json!({"job_id": "w-2"})).await;
        assert_eq!(ack["type"], "subscribed", "{ack}");
        assert_eq!(ws.text_until(7).await, ("secret\n".to_owned(), 7));
    }
    server.shutdown().await;
}

on_backends!(ws_job_log_follows_and_resumes, ws_job_log_is_the_owners);

/// The agent's shipper against a real server and real files: new bytes only, nothing twice
/// after a restart, a symlinked output path recorded as unavailable with no bytes, and the
/// streams closed with eof once the job has left the node.
async fn agent_ships_output(backend: Backend) {
    use jobscope::log_tail::{JobOutput, LogShipper, DEFAULT_DRAIN};
    use std::collections::HashSet;
    use std::os::unix::fs::{chown, symlink};
    use std::time::Instant;
    const UID: u32 = 4321;
    let server = TestServer::start(backend).await;
    server.started("a-1", "alice").await;
    server.started("a-2", "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slurm-a-1.out");
    std::fs::write(&out, b"first\n").unwrap();
    chown(&out, Some(UID), None).unwrap();
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, b"root:secret\n").unwrap();
    let link = dir.path().join("slurm-a-2.out");
    symlink(&secret, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(UID), None).unwrap();

    let base: reqwest::Url = server.base.parse().unwrap();
    let shipper = || {
        let mut s = LogShipper::new(
            base.clone(),
            None,
            "n1".into(),
            1 << 20,
            Duration::from_secs(5),
        )
        .unwrap();
        let output = |path: &std::path::Path| JobOutput {
            stdout: Some(path.to_owned()),
            stderr: Some(path.to_owned()),
            uid: UID,
            batch_host: Some("n1".into()),
        };
        s.track("a-1", &output(&out));
        s.track("a-2", &output(&link));
        s
    };
    let running: HashSet<String> = ["a-1".to_string(), "a-2".to_string()].into();
    let mut agent = shipper();
    let now = Instant::now();
    agent.pass(&running, now).await;
    let state = |id: &'static str| {
        let store = server.store.clone();
        async move {
            store
                .log_state(id, jobscope::domain::joblog::LogStream::Stdout)
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    assert_eq!(state("a-1").await.end_offset, 6);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"second\n"))
        .unwrap();
    agent.pass(&running, now).await;
    assert_eq!(state("a-1").await.end_offset, 13);
    // A restarted agent starts from what the server holds.
    let mut restarted = shipper();
    restarted.pass(&running, now).await;
    let chunks = server
        .store
        .log_chunks("a-1", jobscope::domain::joblog::LogStream::Stdout, 0, 100)
        .await
        .unwrap();
    let text: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.data.clone().unwrap())
        .collect();
    assert_eq!(text, b"first\nsecond\n", "nothing lost, nothing twice");
    // The symlink: no bytes, the reason recorded.
    let a2 = state("a-2").await;
    assert_eq!(a2.end_offset, 0);
    assert_eq!(
        a2.unavailable.as_deref(),
        Some("the output path is a symbolic link")
    );
    // The job leaves the node: after the drain its stream is closed with eof.
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "a-1", "exit_code": 0}),
        )
        .await;
    let none = HashSet::new();
    restarted.pass(&none, now).await;
    assert!(!state("a-1").await.eof, "still draining");
    restarted.pass(&none, now + DEFAULT_DRAIN).await;
    assert!(state("a-1").await.eof);
    assert_eq!(restarted.tracked(), 0);
    server.shutdown().await;
}

/// `--log-drain` (issue #15): a finished job's file is still read for the drain the agent was
/// given, not the default, and its log closed only then.
async fn agent_drain_is_a_setting(backend: Backend) {
    use jobscope::domain::joblog::LogStream;
    use jobscope::log_tail::{JobOutput, LogShipper, DEFAULT_DRAIN};
    use std::collections::HashSet;
    use std::time::Instant;
    const UID: u32 = 4321;
    let server = TestServer::start(backend).await;
    server.started("d-1", "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slurm-d-1.out");
    std::fs::write(&out, b"early\n").unwrap();
    std::os::unix::fs::chown(&out, Some(UID), None).unwrap();
    let drain = Duration::from_secs(30);
    let mut agent = LogShipper::new(
        server.base.parse().unwrap(),
        None,
        "n1".into(),
        1 << 20,
        Duration::from_secs(5),
    )
    .unwrap()
    .with_drain(drain);
    agent.track(
        "d-1",
        &JobOutput {
            stdout: Some(out.clone()),
            stderr: None,
            uid: UID,
            batch_host: Some("n1".into()),
        },
    );
    let now = Instant::now();
    agent.pass(&["d-1".to_string()].into(), now).await;
    let state = || async {
        server
            .store
            .log_state("d-1", LogStream::Stdout)
            .await
            .unwrap()
            .unwrap_or_default()
    };
    assert_eq!(state().await.end_offset, 6);
    // The job leaves the node (its epilog ran); its last process flushes a line later.
    let none = HashSet::new();
    agent.pass(&none, now).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"late\n"))
        .unwrap();
    // Past the default drain but within the one given: still read, not closed.
    agent.pass(&none, now + DEFAULT_DRAIN).await;
    let log = state().await;
    assert_eq!(log.end_offset, 11);
    assert!(!log.eof, "closed at the default drain, not --log-drain");
    agent
        .pass(&none, now + drain - Duration::from_millis(1))
        .await;
    assert!(!state().await.eof);
    assert_eq!(agent.tracked(), 1);
    agent.pass(&none, now + drain).await;
    assert!(state().await.eof, "closed once --log-drain has passed");
    assert_eq!(agent.tracked(), 0);
    server.shutdown().await;
}

on_backends!(agent_ships_output, agent_drain_is_a_setting);

/// `jobscope log` prints the stored output (or its tail), `jobscope watch JOB --log` follows
/// it and exits with the job's status.
async fn log_commands(backend: Backend) {
    use jobscope::domain::joblog::LogStream;
    use jobscope::log_cmd::{follow, print_history, LogArgs};
    let server = TestServer::start(backend).await;
    server.started("c-1", "alice").await;
    post_raw(
        &server,
        "/v1/jobs/c-1/log?stream=stdout&offset=0",
        b"a\nb\nc\n",
    )
    .await;
    post_raw(
        &server,
        "/v1/jobs/c-1/log?stream=stderr&offset=0",
        b"oops\n",
    )
    .await;
    let args = |stream, tail| LogArgs {
        job_id: "c-1".into(),
        stream,
        tail,
        api: jobscope::client::ServerArgs {
            server: server.base.clone(),
            token_file: None,
        },
    };
    let mut out = Vec::new();
    print_history(&args(LogStream::Stdout, None), &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"a\nb\nc\n");
    let mut out = Vec::new();
    print_history(&args(LogStream::Stdout, Some(2)), &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"b\nc\n");
    let mut out = Vec::new();
    print_history(&args(LogStream::Stderr, None), &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"oops\n");
    let mut missing = args(LogStream::Stdout, None);
    missing.job_id = "nope".into();
    let err = print_history(&missing, &mut Vec::new()).await.unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");

    // Follow: what is there, what comes, then the job's exit status.
    let base = server.base.clone();
    let follower = tokio::spawn(async move {
        let mut out = Vec::new();
        let code = follow("c-1", LogStream::Stdout, &base, None, &mut out).await;
        (code.unwrap(), out)
    });
    post_raw(
        &server,
        "/v1/jobs/c-1/log?stream=stdout&offset=6&eof=true",
        b"d\n",
    )
    .await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "c-1", "exit_code": 3, "final_state": "failed"}),
        )
        .await;
    let (code, out) = tokio::time::timeout(Duration::from_secs(20), follower)
        .await
        .expect("watch --log ends with the job")
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "a\nb\nc\nd\n");
    assert_eq!(code, 3, "the failed job's exit code");
    server.shutdown().await;
}

on_backends!(log_commands);

/// `/v1/stream/logs`: every job's appends live, filtered by job ids and by owner.
async fn global_log_stream(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.started("g-1", "alice").await;
    server.started("g-2", "bob").await;
    let mut by_id = Sse::open(&server.base, "/v1/stream/logs?job_ids=g-2,g-9", None).await;
    let mut by_user = Sse::open(&server.base, "/v1/stream/logs?user=alice", None).await;
    let mut all = Sse::open(&server.base, "/v1/stream/logs", None).await;
    for sse in [&mut by_id, &mut by_user, &mut all] {
        assert_eq!(sse.next().await.0, "connected");
    }
    post_raw(
        &server,
        "/v1/jobs/g-1/log?stream=stdout&offset=0",
        b"alice's\n",
    )
    .await;
    post_raw(
        &server,
        "/v1/jobs/g-2/log?stream=stderr&offset=0",
        b"bob's \xe2\x98",
    )
    .await;
    post_raw(
        &server,
        "/v1/jobs/g-2/log?stream=stderr&offset=8",
        b"\x83\n",
    )
    .await;
    let (_, _, first) = by_id.next().await;
    assert_eq!(
        (
            first["job_id"].as_str(),
            first["stream"].as_str(),
            first["text"].as_str()
        ),
        (Some("g-2"), Some("stderr"), Some("bob's "))
    );
    let (_, _, second) = by_id.next().await;
    assert_eq!(second["text"], "\u{2603}\n", "the split character, whole");
    assert_eq!(second["offset"], 6);
    let (_, _, mine) = by_user.next().await;
    assert_eq!(
        (mine["job_id"].as_str(), mine["text"].as_str()),
        (Some("g-1"), Some("alice's\n"))
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (name, _, data) = all.next().await;
        assert_eq!(name, "log");
        seen.push(data["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["g-1", "g-2", "g-2"]);
    // bob's job never reaches alice's filter: one more of alice's comes next.
    post_raw(
        &server,
        "/v1/jobs/g-1/log?stream=stdout&offset=8",
        b"again\n",
    )
    .await;
    assert_eq!(by_user.next().await.2["text"], "again\n");
    server.shutdown().await;
}

on_backends!(global_log_stream);
