//! WebSocket streams over a real socket (server on port 0) and a real WebSocket client:
//! subscribe/ack, events in order with ids, several subscriptions on one connection,
//! unsubscribe, ping/pong, malformed messages, the Origin check, resume without gap or
//! duplicate, the job stream closing, the status registry and shutdown. The dead-peer timeout
//! is tested beside the handler (`src/api/ws.rs`), with short intervals.

mod common;

use common::{Backend, TestDb, TestServer};
use futures_util::{SinkExt, StreamExt};
use jobscope::config::ServeConfig;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start() -> TestServer {
    let db = TestDb::new(Backend::Sqlite).await;
    let config = ServeConfig {
        allowed_origins: vec!["https://dash.example.org".into()],
        ..common::serve_config(&db.url)
    };
    TestServer::start_with(config, Some(db)).await
}

fn ws_url(server: &TestServer) -> String {
    format!("ws://{}/v1/ws", server.addr)
}

async fn connect(server: &TestServer) -> Socket {
    let (socket, resp) = tokio_tungstenite::connect_async(ws_url(server))
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    socket
}

async fn send(ws: &mut Socket, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON message (server pings are skipped), or `None` once the connection ended.
async fn next(ws: &mut Socket) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")?;
        match frame {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(other) => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Socket, stream: &str, options: Value) -> String {
    send(
        ws,
        json!({"type": "subscribe", "stream": stream, "options": options}),
    )
    .await;
    let ack = next(ws).await.unwrap();
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["stream"], stream);
    ack["subscription"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn subscriptions_ack_deliver_in_order_and_unsubscribe() {
    let server = start().await;
    let mut ws = connect(&server).await;
    let alice = subscribe(&mut ws, "jobs", json!({"user": "alice"})).await;
    let all = subscribe(&mut ws, "jobs", json!({"states": ["pending", "running"]})).await;
    assert_ne!(alice, all);

    server.started("a1", "alice").await;
    server.started("b1", "bob").await;
    // alice's subscription sees a1; the other sees a1 then b1, interleaved on one socket.
    let mut seen: Vec<(String, String, i64)> = Vec::new();
    while seen.len() < 3 {
        let m = next(&mut ws).await.unwrap();
        assert_eq!(m["type"], "job_created", "{m}");
        assert_eq!(m["stream"], "jobs");
        assert!(m["timestamp"].is_string());
        seen.push((
            m["subscription"].as_str().unwrap().to_owned(),
            m["data"]["job"]["id"].as_str().unwrap().to_owned(),
            m["id"].as_i64().unwrap(),
        ));
    }
    let of = |sub: &str| -> Vec<(String, i64)> {
        seen.iter()
            .filter(|(s, _, _)| s == sub)
            .map(|(_, job, id)| (job.clone(), *id))
            .collect()
    };
    let for_all = of(&all);
    assert_eq!(of(&alice).len(), 1);
    assert_eq!(of(&alice)[0], for_all[0]);
    assert_eq!(for_all.len(), 2);
    assert_eq!((for_all[0].0.as_str(), for_all[1].0.as_str()), ("a1", "b1"));
    assert!(for_all[1].1 > for_all[0].1, "ids increase: {for_all:?}");

    send(
        &mut ws,
        json!({"type": "unsubscribe", "subscription": alice}),
    )
    .await;
    let ack = next(&mut ws).await.unwrap();
    assert_eq!(ack, json!({"type": "unsubscribed", "subscription": alice}));
    server.started("a2", "alice").await;
    let m = next(&mut ws).await.unwrap();
    assert_eq!(m["subscription"], all.as_str(), "unsubscribed: {m}");
    assert_eq!(m["data"]["job"]["id"], "a2");
    // Nothing else is queued for the old subscription: the next message is our pong.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await.unwrap(), json!({"type": "pong"}));

    send(
        &mut ws,
        json!({"type": "unsubscribe", "subscription": alice}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "error");
    server.shutdown().await;
}

/// The `nodes` stream: node events of agent reports, filtered as on SSE, beside a `jobs`
/// subscription that never carries them.
#[tokio::test]
async fn nodes_subscriptions_get_node_events() {
    let server = start().await;
    let mut ws = connect(&server).await;
    let nodes = subscribe(&mut ws, "nodes", json!({"node_names": ["gpu-7"]})).await;
    let jobs = subscribe(&mut ws, "jobs", json!({})).await;
    for node in ["cpu-1", "gpu-7"] {
        server
            .post(
                "/v1/samples",
                json!({"node": node, "collected_at": chrono::Utc::now().to_rfc3339(),
                       "interval_seconds": 15, "jobs": [],
                       "node_stats": {"cpu_usage_percent": 5.0, "cpu_count": 4}}),
            )
            .await;
    }
    server.started("w1", "una").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = next(&mut ws).await.unwrap();
        got.push((m["subscription"].as_str().unwrap().to_owned(), m));
    }
    // The two subscriptions are pumped independently: their messages may interleave either way.
    got.sort_by_key(|(sub, _)| sub != &nodes);
    let (sub, node) = &got[0];
    assert_eq!(sub, &nodes);
    assert_eq!(node["type"], "node_updated");
    assert_eq!(node["stream"], "nodes");
    assert_eq!(node["data"]["node"]["name"], "gpu-7");
    assert!(node["id"].as_i64().unwrap() > 0);
    let (sub, job) = &got[1];
    assert_eq!(sub, &jobs);
    assert_eq!(job["data"]["job"]["id"], "w1");
    // bad options are answered with an error, the connection stays
    send(
        &mut ws,
        json!({"type": "subscribe", "stream": "nodes", "options": {"user": "x"}}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "error");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await.unwrap(), json!({"type": "pong"}));
    server.shutdown().await;
}

/// The `partitions` stream: the Slurm feed's partition events, filtered by state.
#[tokio::test]
async fn partitions_subscriptions_get_partition_events() {
    use common::partition;
    use jobscope::domain::PartitionState;
    let server = start().await;
    let mut ws = connect(&server).await;
    let sub = subscribe(&mut ws, "partitions", json!({"states": ["DRAIN"]})).await;
    server
        .store
        .sync_partitions(&[
            partition("a", PartitionState::Up),
            partition("b", PartitionState::Drain),
        ])
        .await
        .unwrap();
    let m = next(&mut ws).await.unwrap();
    assert_eq!(m["subscription"], sub.as_str());
    assert_eq!(m["type"], "partition_updated");
    assert_eq!(m["stream"], "partitions");
    assert_eq!(m["data"]["partition"]["name"], "b");
    send(
        &mut ws,
        json!({"type": "subscribe", "stream": "partitions", "options": {"node_names": "x"}}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "error");
    send(
        &mut ws,
        json!({"type": "subscribe", "stream": "partitions", "options": {"states": "sleepy"}}),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "error");
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_messages_get_errors_and_the_connection_stays_up() {
    let server = start().await;
    let mut ws = connect(&server).await;
    for bad in [
        Message::text("not json"),
        Message::text(r#"{"type":"subscribe"}"#),
        Message::text(r#"{"type":"launch"}"#),
        Message::text(r#"{"type":"subscribe","stream":"nope"}"#),
        Message::text(r#"{"type":"subscribe","stream":"jobs","options":{"states":"sleeping"}}"#),
        Message::text(r#"{"type":"subscribe","stream":"jobs","options":{"colour":"red"}}"#),
        Message::text(r#"{"type":"subscribe","stream":"jobs","options":{"last_event_id":-3}}"#),
        Message::text(r#"{"type":"subscribe","stream":"job","options":{}}"#),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        ws.send(bad.clone()).await.unwrap();
        let reply = next(&mut ws).await.expect("still connected");
        assert_eq!(reply["type"], "error", "{bad:?} -> {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await.unwrap(), json!({"type": "pong"}));
    let sub = subscribe(&mut ws, "jobs", json!({})).await;
    server.started("m1", "u").await;
    assert_eq!(next(&mut ws).await.unwrap()["subscription"], sub.as_str());
    server.shutdown().await;
}

#[tokio::test]
async fn foreign_origins_are_refused_before_upgrading() {
    let server = start().await;
    let host = server.base.trim_start_matches("http://").to_owned();
    let handshake = |origin: Option<String>| {
        let mut req = ws_url(&server).into_client_request().unwrap();
        if let Some(origin) = origin {
            req.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    match handshake(Some("https://evil.example.com".into())).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "forbidden");
        }
        other => panic!("a foreign Origin must get 403, got {other:?}"),
    }
    for origin in [
        None,
        Some(format!("http://{host}")),
        Some("https://dash.example.org".into()),
    ] {
        let (_, resp) = handshake(origin.clone())
            .await
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        assert_eq!(resp.status(), 101, "{origin:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn resume_with_last_event_id_has_no_gap_or_duplicate() {
    let server = start().await;
    let mut first = connect(&server).await;
    subscribe(&mut first, "jobs", json!({})).await;
    for i in 0..3 {
        server.started(&format!("r{i}"), "carol").await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(next(&mut first).await.unwrap()["id"].as_i64().unwrap());
    }
    drop(first);

    // Resume after the first event: the other two are replayed, then live ones follow.
    let mut ws = connect(&server).await;
    let sub = subscribe(&mut ws, "jobs", json!({"last_event_id": ids[0]})).await;
    server.started("r3", "carol").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next(&mut ws).await.unwrap();
        assert_eq!(m["subscription"], sub.as_str());
        got.push((
            m["id"].as_i64().unwrap(),
            m["data"]["job"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(got[0], (ids[1], "r1".to_owned()));
    assert_eq!(got[1], (ids[2], "r2".to_owned()));
    assert_eq!(got[2].1, "r3");
    assert!(got[2].0 > ids[2]);
    server.shutdown().await;
}

#[tokio::test]
async fn job_streams_close_and_connections_are_counted_and_end_on_shutdown() {
    let server = start().await;
    server.started("j1", "u").await;
    let mut ws = connect(&server).await;
    let sub = subscribe(&mut ws, "job", json!({"job_id": "j1", "last_event_id": 0})).await;
    let created = next(&mut ws).await.unwrap();
    assert_eq!(created["type"], "job_created");
    assert_eq!(created["stream"], "job");

    let status = server.get_json("/v1/stream/status").await;
    assert_eq!(status["streams"]["job"]["ws"], 1, "{status}");
    assert_eq!(status["jobs"]["j1"], 1, "{status}");

    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "j1", "exit_code": 0}),
        )
        .await;
    let finished = next(&mut ws).await.unwrap();
    assert_eq!(finished["type"], "job_finished");
    // The subscription waits for the job's report (a test-short grace), then closes.
    let report = next(&mut ws).await.unwrap();
    assert_eq!(report["type"], "job_report");
    assert_eq!(report["subscription"], sub.as_str());
    assert_eq!(report["data"]["report"]["job_id"], "j1");
    let closed = next(&mut ws).await.unwrap();
    assert_eq!(closed["type"], "stream_closed");
    assert_eq!(closed["subscription"], sub.as_str());
    assert_eq!(closed["id"], report["id"]);

    // The connection itself stays open until the server shuts down.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await.unwrap(), json!({"type": "pong"}));
    subscribe(&mut ws, "jobs", json!({})).await;
    server.shutdown().await;
    assert_eq!(next(&mut ws).await, None, "shutdown ends the connection");
}
