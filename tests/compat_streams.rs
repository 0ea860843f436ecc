//! The streams as the seeds' clients use them (issue #17), over a real socket on both backends:
//! the three stream bugs (a cursor ahead of the log, the `connected` filters, a finished job's
//! stream), the seeds' query dialects (states in any case, `user_id`, `exclude_new`,
//! `exclude_completed`, unknown parameters refused), the seed-000 and seed-001 routes
//! (`/events?stream=`, `/ws`, `/ws/cluster`) and CORS.

mod common;

use bytes::Bytes;
use common::{Backend, TestServer};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use std::pin::Pin;
use std::time::Duration;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One parsed SSE event.
#[derive(Debug)]
struct Sse {
    name: String,
    id: Option<i64>,
    data: Value,
}

/// Reads SSE events from a response body.
struct SseClient {
    body: ByteStream,
    buffer: String,
}

impl SseClient {
    async fn connect(base: &str, path: &str, last_event_id: Option<i64>) -> SseClient {
        let mut req = common::http().get(format!("{base}{path}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseClient {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (ping) or the retry hint alone
                }
                return Some(Sse {
                    name,
                    id,
                    data: serde_json::from_str(&data).expect("data is JSON"),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.expect("body chunk")));
        }
    }

    /// The next event other than `connected`.
    async fn next_event(&mut self) -> Sse {
        loop {
            let event = self.next().await.expect("stream still open");
            if event.name != "connected" {
                return event;
            }
        }
    }
}

/// A browser tab left open while the database was recreated resumes with an id the new log has
/// not reached: it gets `reset`, then the new log's live events. (Before the fix it connected
/// and then got nothing: every event id up to its cursor counted as already seen.)
async fn cursor_ahead_of_the_log_gets_reset(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.started("a1", "ann").await;
    let newest = server.store.last_event_id().await.unwrap();
    let ahead = newest + 1000;
    let mut client = SseClient::connect(&server.base, "/v1/stream/jobs", Some(ahead)).await;
    let connected = client.next().await.unwrap();
    assert_eq!(connected.name, "connected");
    assert_eq!(connected.data["data"]["resumed_from"], ahead);
    let reset = client.next().await.unwrap();
    assert_eq!(reset.name, "reset", "{:?}", reset.data);
    assert_eq!(
        reset.id,
        Some(newest),
        "the reset carries the log's real head"
    );
    server.started("a2", "ann").await;
    let live = client.next().await.unwrap();
    assert_eq!(live.data["data"]["job"]["id"], "a2");
    assert!(live.id.unwrap() > newest);

    // The same on a single job's stream and on the WebSocket (same pump): `?last_event_id=`.
    let mut job = SseClient::connect(
        &server.base,
        &format!("/v1/stream/jobs/a2?last_event_id={ahead}"),
        None,
    )
    .await;
    assert_eq!(job.next().await.unwrap().name, "connected");
    assert_eq!(job.next().await.unwrap().name, "reset");
    // A cursor the log does hold is still resumed, not reset.
    let mut fine = SseClient::connect(&server.base, "/v1/stream/jobs", Some(newest)).await;
    assert_eq!(fine.next().await.unwrap().name, "connected");
    let replayed = fine.next().await.unwrap();
    assert_eq!(replayed.name, "job_event");
    assert_eq!(replayed.data["data"]["job"]["id"], "a2");
    server.shutdown().await;
}

/// `connected` names its filters as JSON (it was Rust's debug text of the filter).
async fn connected_shows_filters_as_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = SseClient::connect(
        &server.base,
        "/v1/stream/jobs?user=ann&states=running,failed&job_ids=1,2",
        None,
    )
    .await;
    let connected = client.next().await.unwrap();
    let filters = &connected.data["data"]["filters"];
    assert!(filters.is_object(), "filters are JSON: {filters}");
    assert_eq!(filters["user"], "ann");
    assert_eq!(filters["states"], json!(["running", "failed"]));
    assert_eq!(filters["job_ids"], json!(["1", "2"]));
    assert_eq!(filters["exclude_samples"], true);
    assert_eq!(filters["partition"], Value::Null);

    let mut nodes = SseClient::connect(
        &server.base,
        "/v1/stream/nodes?states=IDLE&features=gpu,ssd",
        None,
    )
    .await;
    let filters = nodes.next().await.unwrap().data["data"]["filters"].clone();
    assert_eq!(filters["states"], json!(["idle"]));
    assert_eq!(filters["features"], json!(["gpu", "ssd"]));
    server.shutdown().await;
}

/// A job's stream opened after the job ended sends the job as it ended, then `stream_closed`
/// (it used to close at once with nothing but `connected`); a running job's stream starts with
/// its current state too, as seed 002's do.
async fn job_stream_sends_current_state_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.started("f1", "fay").await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "f1", "exit_code": 3}),
        )
        .await;
    let mut late = SseClient::connect(&server.base, "/v1/stream/jobs/f1", None).await;
    assert_eq!(late.next().await.unwrap().name, "connected");
    let state = late.next().await.unwrap();
    assert_eq!(state.name, "job_event", "{:?}", state.data);
    assert_eq!(state.data["type"], "job_state");
    assert_eq!(state.data["stream"], "job");
    assert_eq!(state.data["data"]["job"]["id"], "f1");
    assert_eq!(state.data["data"]["job"]["state"], "failed");
    assert_eq!(state.data["data"]["job"]["exit_code"], 3);
    assert_eq!(late.next().await.unwrap().name, "stream_closed");
    assert!(late.next().await.is_none(), "the stream ends");

    server.started("r1", "fay").await;
    let mut running = SseClient::connect(&server.base, "/v1/stream/jobs/r1", None).await;
    assert_eq!(running.next().await.unwrap().name, "connected");
    let state = running.next().await.unwrap();
    assert_eq!(state.data["type"], "job_state");
    assert_eq!(state.data["data"]["job"]["state"], "running");
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "r1", "exit_code": 0}),
        )
        .await;
    let finished = running.next().await.unwrap();
    assert_eq!(finished.data["type"], "job_finished");

    // A missing job still closes with "job not found" and no state.
    let mut missing = SseClient::connect(&server.base, "/v1/stream/jobs/nope", None).await;
    assert_eq!(missing.next().await.unwrap().name, "connected");
    let closed = missing.next().await.unwrap();
    assert_eq!(closed.name, "stream_closed");
    assert_eq!(closed.data["data"]["reason"], "job not found");
    server.shutdown().await;
}

/// Seed 000's query dialect: Slurm's upper-case states, `user_id`, `exclude_new`,
/// `exclude_completed`; unknown parameters are a 400 naming them.
async fn seed_query_dialect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut upper = SseClient::connect(
        &server.base,
        "/v1/stream/jobs?states=RUNNING,Pending&user_id=gus",
        None,
    )
    .await;
    let mut no_new =
        SseClient::connect(&server.base, "/v1/stream/jobs?exclude_new=true", None).await;
    let mut no_done = SseClient::connect(
        &server.base,
        "/v1/stream/jobs?exclude_completed=true&exclude_new=false",
        None,
    )
    .await;
    server.started("d1", "hal").await; // another user's
    server.started("d2", "gus").await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "d2", "exit_code": 0}),
        )
        .await;
    server.started("d3", "gus").await;

    // gus's running jobs only: d2's start and d3's start, not d2's end.
    let a = upper.next_event().await;
    assert_eq!(a.data["data"]["job"]["id"], "d2");
    let b = upper.next_event().await;
    assert_eq!(b.data["data"]["job"]["id"], "d3");
    assert_eq!(b.data["type"], "job_created");
    // No creations: d2's end is the first event, then nothing until the next non-creation.
    let first = no_new.next_event().await;
    assert_eq!(first.data["type"], "job_finished");
    assert_eq!(first.data["data"]["job"]["id"], "d2");
    // No finished jobs: the three creations, never d2's end.
    let ids: Vec<Value> = [
        no_done.next_event().await,
        no_done.next_event().await,
        no_done.next_event().await,
    ]
    .iter()
    .map(|e| {
        assert_eq!(e.data["type"], "job_created");
        e.data["data"]["job"]["id"].clone()
    })
    .collect();
    assert_eq!(ids, [json!("d1"), json!("d2"), json!("d3")]);

    let client = common::http();
    for (path, named) in [
        ("/v1/stream/jobs?colour=red&user=a", "\"colour\""),
        ("/v1/stream/jobs/d1?exclude_new=true", "\"exclude_new\""),
        ("/v1/stream/nodes?user=a", "\"user\""),
        ("/v1/stream/partitions?partition=a", "\"partition\""),
        (
            "/v1/stream/cluster?intervall_seconds=3",
            "\"intervall_seconds\"",
        ),
    ] {
        let resp = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(named), "{path}: {message}");
    }
    for path in [
        "/v1/stream/jobs?user=a&user_id=b",
        "/v1/stream/jobs?exclude_new=sometimes",
        "/v1/stream/jobs?states=RUNNING,DONE",
    ] {
        let resp = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
    }
    server.shutdown().await;
}

on_backends!(
    seed_query_dialect,
    cursor_ahead_of_the_log_gets_reset,
    connected_shows_filters_as_json,
    job_stream_sends_current_state_first,
);
