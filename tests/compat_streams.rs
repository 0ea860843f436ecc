//! The streams as the seeds' clients use them (issue #17), over a real socket on both backends:
//! the three stream bugs (a cursor ahead of the log, the `connected` filters, a finished job's
//! stream), the seeds' query dialects (states in any case, `user_id`, `exclude_new`,
//! `exclude_completed`, unknown parameters refused), the seed-000 and seed-001 routes
//! (`/events?stream=`, `/ws`, `/ws/cluster`) and CORS.

mod common;

use common::sse::SseClient;
use common::{Backend, TestDb, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

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
        "/v1/stream/nodes?states=IDLE&node_names=n1",
        None,
    )
    .await;
    let filters = nodes.next().await.unwrap().data["data"]["filters"].clone();
    assert_eq!(filters["states"], json!(["idle"]));
    assert_eq!(filters["node_names"], json!(["n1"]));
    server.shutdown().await;
}

/// Seed 000's node `features` filter: Slurm's node features (slurm.conf `Feature=`), from the
/// scheduler's node records; a node with any of the listed features is streamed.
async fn node_stream_filters_on_features(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ssd = SseClient::connect(&server.base, "/v1/stream/nodes?features=ssd,gpu", None).await;
    let connected = ssd.next().await.unwrap();
    assert_eq!(
        connected.data["data"]["filters"]["features"],
        json!(["ssd", "gpu"])
    );
    let node = |name: &str, features: &[&str]| jobscope::store::SchedulerNode {
        name: name.into(),
        state: jobscope::domain::NodeState::Idle,
        state_reason: None,
        partitions: Some(vec!["batch".into()]),
        features: Some(features.iter().map(|f| f.to_string()).collect()),
        cpus: Some(8),
        memory_total_bytes: None,
        load_1: None,
    };
    server
        .store
        .update_nodes_from_scheduler(&[node("plain", &["ib"]), node("fast", &["ib", "ssd"])])
        .await
        .unwrap();
    let event = ssd.next().await.unwrap();
    assert_eq!(
        event.data["data"]["node"]["name"], "fast",
        "{:?}",
        event.data
    );
    assert_eq!(event.data["data"]["node"]["features"], json!(["ib", "ssd"]));
    // The REST list takes the same filter.
    let listed = server.get_json("/v1/nodes?features=ssd").await;
    let names: Vec<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fast"]);
    // A feature taken away is a change, streamed to who watches the feature it had.
    server
        .store
        .update_nodes_from_scheduler(&[node("plain", &["ib"]), node("fast", &["gpu"])])
        .await
        .unwrap();
    let event = ssd.next().await.unwrap();
    assert_eq!(event.data["data"]["node"]["features"], json!(["gpu"]));
    let resp = common::http()
        .get(format!("{}/v1/stream/nodes?features=a,%07", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
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
    // A finished job's stream waits for the job's report (made after a grace; short in tests)
    // unless it was made before the stream opened: then or now, the stream closes after it.
    let mut next = late.next().await.unwrap();
    if next.name == "job_event" {
        assert_eq!(next.data["type"], "job_report", "{:?}", next.data);
        next = late.next().await.unwrap();
    }
    assert_eq!(next.name, "stream_closed", "{:?}", next.data);
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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(server: &TestServer, path: &str) -> Socket {
    let (socket, resp) = tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr))
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    socket
}

async fn ws_send(ws: &mut Socket, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON message (pings skipped); panics after 10 s or when the connection ended.
async fn ws_next(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("connection open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// `GET /events?stream=` is the matching `/v1/stream/*` route; a bad stream is a 400.
async fn seed000_events_route(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut jobs = SseClient::connect(
        &server.base,
        "/events?stream=jobs&states=RUNNING,PENDING",
        None,
    )
    .await;
    let connected = jobs.next().await.unwrap();
    assert_eq!(connected.data["stream"], "jobs");
    assert_eq!(
        connected.data["data"]["filters"]["states"],
        json!(["running", "pending"])
    );
    let mut partitions = SseClient::connect(&server.base, "/events?stream=partitions", None).await;
    assert_eq!(
        partitions.next().await.unwrap().data["stream"],
        "partitions"
    );
    let mut nodes =
        SseClient::connect(&server.base, "/events?stream=nodes&partition=compute", None).await;
    assert_eq!(nodes.next().await.unwrap().data["stream"], "nodes");
    server.started("e1", "ida").await;
    let event = jobs.next().await.unwrap();
    assert_eq!(event.name, "job_event");
    assert_eq!(event.data["data"]["job"]["id"], "e1");
    for path in ["/events?stream=gossip", "/events?stream=nodes&user_id=ida"] {
        let resp = common::http()
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
    }
    server.shutdown().await;
}

/// Seed 000's WebSocket: `{stream, options}` subscribes; events arrive as `type: event`;
/// errors carry `error`. Seed 001's: subscribed at open to status and job changes; `data`
/// flags; a bare `unsubscribe`. And our own `/v1/ws` gains a `cluster` stream.
async fn seed_websockets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut seed000 = ws_connect(&server, "/ws").await;
    ws_send(
        &mut seed000,
        json!({"stream": "jobs", "options": {"states": ["RUNNING", "PENDING"], "user_id": "john", "partition": "compute"}}),
    )
    .await;
    let ack = ws_next(&mut seed000).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    server
        .post(
            "/v1/events/job-started",
            json!({"job_id": "w1", "user": "john", "node_list": ["n1"], "partition": "compute"}),
        )
        .await;
    let event = ws_next(&mut seed000).await;
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["event_type"], "job_created");
    assert_eq!(event["stream"], "jobs");
    assert_eq!(event["data"]["job"]["id"], "w1");
    ws_send(
        &mut seed000,
        json!({"stream": "jobs", "options": {"colour": "red"}}),
    )
    .await;
    let error = ws_next(&mut seed000).await;
    assert_eq!(error["type"], "error");
    assert!(
        error["error"].as_str().unwrap().contains("colour"),
        "{error}"
    );

    // Seed 001: status and job changes without asking.
    let mut cluster = ws_connect(&server, "/ws/cluster").await;
    let ack = ws_next(&mut cluster).await;
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["data"]["status"], true);
    assert_eq!(ack["data"]["state_changes"], true);
    let status = ws_next(&mut cluster).await;
    assert_eq!(status["type"], "status", "{status}");
    assert_eq!(status["data"]["jobs_by_state"]["running"], 1);
    server.started("w2", "kim").await;
    let change = loop {
        let m = ws_next(&mut cluster).await;
        if m["type"] != "status" {
            break m;
        }
    };
    assert_eq!(change["type"], "job_created");
    assert_eq!(change["data"]["job"]["id"], "w2");
    // Only state changes: no more status; latency is named unsupported.
    ws_send(
        &mut cluster,
        json!({"type": "subscribe", "data": {"status": false, "latency": true, "state_changes": true}}),
    )
    .await;
    let ack = loop {
        let m = ws_next(&mut cluster).await;
        if m["type"] == "subscribed" {
            break m;
        }
    };
    assert_eq!(ack["data"]["status"], false);
    assert_eq!(ack["data"]["unsupported"], json!(["latency"]));
    server.started("w3", "kim").await;
    let next = ws_next(&mut cluster).await;
    assert_eq!(next["type"], "job_created", "no status after status: false");
    assert_eq!(next["data"]["job"]["id"], "w3");
    ws_send(&mut cluster, json!({"type": "unsubscribe"})).await;
    let gone = ws_next(&mut cluster).await;
    assert_eq!(gone["type"], "unsubscribed");
    // Nothing is subscribed any more: the connection registry drops its cluster stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.get_json("/v1/stream/status").await;
        if status["streams"]["cluster"].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ws_send(&mut cluster, json!({"type": "ping"})).await;
    assert_eq!(ws_next(&mut cluster).await["type"], "pong");
    ws_send(
        &mut cluster,
        json!({"type": "subscribe", "data": {"gossip": true}}),
    )
    .await;
    assert_eq!(ws_next(&mut cluster).await["type"], "error");

    // Our /v1/ws: the cluster stream.
    let mut ours = ws_connect(&server, "/v1/ws").await;
    ws_send(
        &mut ours,
        json!({"type": "subscribe", "stream": "cluster", "options": {"interval_seconds": 1}}),
    )
    .await;
    assert_eq!(ws_next(&mut ours).await["type"], "subscribed");
    // Statuses every second; one computed within the last second is shared, so the three
    // running jobs show by the second one at the latest.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = ws_next(&mut ours).await;
        assert_eq!(status["type"], "status");
        assert_eq!(status["stream"], "cluster");
        if status["data"]["jobs_by_state"]["running"] == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
    }
    // Unknown query parameters on the WebSocket routes are refused before upgrading.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws?stream=jobs", server.addr))
        .await
        .unwrap_err();
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 400),
        other => panic!("expected a 400, got {other:?}"),
    }
    server.shutdown().await;
}

/// CORS on REST and SSE from `--allowed-origins`: listed origins only, preflight answered,
/// never credentials; `*` allows every origin, still without credentials.
async fn cors_for_listed_origins(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = jobscope::config::ServeConfig {
        allowed_origins: vec!["https://dash.example.org".into()],
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let client = common::http();
    let get = |path: &str, origin: &str| {
        client
            .get(format!("{}{path}", server.base))
            .header("origin", origin)
            .send()
    };
    let listed = get("/v1/jobs", "https://dash.example.org").await.unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://dash.example.org"
    );
    assert!(listed.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("Origin"));
    assert!(!listed
        .headers()
        .contains_key("access-control-allow-credentials"));
    let other = get("/v1/jobs", "https://evil.example.org").await.unwrap();
    assert_eq!(other.status(), 200);
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let sse = get("/v1/stream/jobs", "https://dash.example.org")
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    assert_eq!(
        sse.headers()["access-control-allow-origin"],
        "https://dash.example.org"
    );
    drop(sse);
    let preflight = |origin: &str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/jobs/42", server.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://dash.example.org").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-methods"],
        "GET, PATCH, DELETE"
    );
    let allow_headers = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allow_headers.contains("authorization") && allow_headers.contains("content-type"));
    assert!(!ok
        .headers()
        .contains_key("access-control-allow-credentials"));
    let refused = preflight("https://evil.example.org").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    server.shutdown().await;

    let db = TestDb::new(backend).await;
    let config = jobscope::config::ServeConfig {
        allowed_origins: vec!["*".into()],
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let any = common::http()
        .get(format!("{}/v1/health", server.base))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(any.headers()["access-control-allow-origin"], "*");
    assert!(!any
        .headers()
        .contains_key("access-control-allow-credentials"));
    server.shutdown().await;
}

on_backends!(
    seed000_events_route,
    seed_websockets,
    cors_for_listed_origins,
    seed_query_dialect,
    cursor_ahead_of_the_log_gets_reset,
    connected_shows_filters_as_json,
    job_stream_sends_current_state_first,
    node_stream_filters_on_features,
);
