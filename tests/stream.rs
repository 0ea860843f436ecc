//! Server-Sent Events over a real socket (server on port 0) and a real HTTP client, on both
//! backends: event names and envelope, filters, resume with Last-Event-ID without gap or
//! duplicate, single-job streams that close, reset for an expired cursor, and shutdown.

mod common;

use common::sse::SseClient;
use common::{Backend, TestServer};
use jobscope::config::ServeConfig;
use serde_json::{json, Value};
use std::time::Duration;

async fn start(backend: Backend) -> TestServer {
    TestServer::start(backend).await
}

async fn filters_envelope_and_order(backend: Backend) {
    let server = start(backend).await;
    let mut alice = SseClient::connect(&server.base, "/v1/stream/jobs?user=alice", None).await;
    let connected = alice.next().await.unwrap();
    assert_eq!(connected.name, "connected");
    assert_eq!(connected.data["type"], "connected");
    assert_eq!(connected.data["stream"], "jobs");

    server.started("s1", "alice").await;
    server.started("s2", "bob").await;
    server
        .post(
            "/v1/jobs/s1/metrics",
            json!({"cpu_usage": 10, "memory_usage_mb": 1}),
        )
        .await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "s1", "exit_code": 0}),
        )
        .await;

    let created = alice.next().await.unwrap();
    assert_eq!(created.name, "job_event");
    assert_eq!(created.data["type"], "job_created");
    assert_eq!(created.data["stream"], "jobs");
    assert_eq!(created.data["data"]["job"]["id"], "s1");
    assert!(created.data["timestamp"].is_string());
    // bob's job is filtered out and samples are excluded by default on the global stream
    let finished = alice.next().await.unwrap();
    assert_eq!(finished.data["type"], "job_finished");
    assert_eq!(finished.data["data"]["job"]["state"], "completed");
    assert!(finished.id.unwrap() > created.id.unwrap());
    server.shutdown().await;
}

async fn resume_without_gap_or_duplicate(backend: Backend) {
    let server = start(backend).await;
    let mut client =
        SseClient::connect(&server.base, "/v1/stream/jobs?exclude_samples=false", None).await;
    assert_eq!(client.next().await.unwrap().name, "connected");
    for i in 0..3 {
        server.started(&format!("r{i}"), "carol").await;
    }
    let mut last = 0;
    for _ in 0..3 {
        let e = client.next().await.unwrap();
        assert!(e.id.unwrap() > last);
        last = e.id.unwrap();
    }
    drop(client);
    // changes while disconnected
    server.started("r3", "carol").await;
    server
        .post(
            "/v1/jobs/r3/metrics",
            json!({"cpu_usage": 1, "memory_usage_mb": 1}),
        )
        .await;
    let mut again = SseClient::connect(
        &server.base,
        "/v1/stream/jobs?exclude_samples=false",
        Some(last),
    )
    .await;
    let connected = again.next().await.unwrap();
    assert_eq!(connected.name, "connected");
    assert_eq!(connected.data["data"]["resumed_from"], last);
    let missed1 = again.next().await.unwrap();
    let missed2 = again.next().await.unwrap();
    assert_eq!(
        (missed1.data["type"].as_str(), missed2.data["type"].as_str()),
        (Some("job_created"), Some("job_sample"))
    );
    assert_eq!(missed1.data["data"]["job"]["id"], "r3");
    assert_eq!(missed2.name, "job_sample");
    assert!(missed1.id.unwrap() > last && missed2.id.unwrap() > missed1.id.unwrap());
    // and then live, nothing repeated
    server.started("r4", "carol").await;
    let live = again.next().await.unwrap();
    assert_eq!(live.data["data"]["job"]["id"], "r4");
    assert!(live.id.unwrap() > missed2.id.unwrap());
    server.shutdown().await;
}

async fn single_job_stream_closes(backend: Backend) {
    let server = start(backend).await;
    server.started("j1", "dmitri").await;
    let mut client =
        SseClient::connect(&server.base, "/v1/stream/jobs/j1?last_event_id=0", None).await;
    assert_eq!(client.next().await.unwrap().name, "connected");
    assert_eq!(client.next().await.unwrap().data["type"], "job_created");
    server
        .post(
            "/v1/jobs/j1/metrics",
            json!({"cpu_usage": 50, "memory_usage_mb": 2}),
        )
        .await;
    let sample = client.next().await.unwrap();
    assert_eq!(sample.name, "job_sample");
    assert_eq!(sample.data["data"]["sample"]["cpu_usage"], 50.0);
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "j1", "exit_code": 3}),
        )
        .await;
    let finished = client.next().await.unwrap();
    assert_eq!(finished.data["data"]["job"]["state"], "failed");
    // The stream waits for the job's report, then closes.
    let report = client.next().await.unwrap();
    assert_eq!(report.data["type"], "job_report");
    assert_eq!(report.data["data"]["report"]["job_id"], "j1");
    let closed = client.next().await.unwrap();
    assert_eq!(closed.name, "stream_closed");
    assert!(
        client.next().await.is_none(),
        "the stream ends after stream_closed"
    );

    // A finished job's stream sends the job as it ended and closes at once.
    let mut late = SseClient::connect(&server.base, "/v1/stream/jobs/j1", None).await;
    assert_eq!(late.next().await.unwrap().name, "connected");
    assert_eq!(late.next().await.unwrap().data["type"], "job_state");
    assert_eq!(late.next().await.unwrap().name, "stream_closed");
    server.shutdown().await;
}

async fn expired_cursor_gets_reset(backend: Backend) {
    let server = start(backend).await;
    server.started("x1", "erin").await;
    server.started("x2", "erin").await;
    let pruned = server
        .store
        // Two days on: PostgreSQL's log goes a whole day partition at a time (store::partitions).
        .prune(chrono::Utc::now() + chrono::Duration::days(2))
        .await
        .unwrap();
    assert!(pruned.1 >= 2);
    server.started("x3", "erin").await;
    let mut client = SseClient::connect(&server.base, "/v1/stream/jobs", Some(1)).await;
    assert_eq!(client.next().await.unwrap().name, "connected");
    let reset = client.next().await.unwrap();
    assert_eq!(reset.name, "reset");
    assert_eq!(reset.data["type"], "reset");
    // then live events continue
    server.started("x4", "erin").await;
    assert_eq!(client.next().await.unwrap().data["data"]["job"]["id"], "x4");
    server.shutdown().await;
}

async fn bad_stream_parameters_are_400(backend: Backend) {
    let server = start(backend).await;
    let client = common::http();
    for path in [
        "/v1/stream/jobs?states=running,done",
        "/v1/stream/jobs?exclude_samples=maybe",
    ] {
        let resp = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
    }
    let resp = client
        .get(format!("{}/v1/stream/jobs", server.base))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

/// Two `serve` processes' worth of replicas on one PostgreSQL: a commit on one rings the other
/// (LISTEN/NOTIFY), and a stream client on one sees hooks posted to the other, in order.
#[tokio::test]
async fn replicas_on_one_postgres_hear_each_other() {
    if common::skip_postgres() {
        return;
    }
    let a = start(Backend::Postgres).await;
    let b = TestServer::start_with(common::serve_config(a.database_url()), None).await;

    let mut doorbell = b.store.commits();
    doorbell.borrow_and_update();
    a.started("rep-0", "gwen").await;
    tokio::time::timeout(Duration::from_secs(5), doorbell.changed())
        .await
        .expect("replica B is notified of A's commit")
        .unwrap();

    // Resume after rep-0 on B: a fresh connection starts at B's feed head, which may still be
    // catching up with A's commit; a cursor makes the starting point exact.
    let after_rep0 = b.store.last_event_id().await.unwrap();
    let mut client = SseClient::connect(&b.base, "/v1/stream/jobs", Some(after_rep0)).await;
    assert_eq!(client.next().await.unwrap().name, "connected");
    for i in 1..=3 {
        a.started(&format!("rep-{i}"), "gwen").await;
    }
    let mut last = 0;
    for i in 1..=3 {
        let e = client.next().await.unwrap();
        assert_eq!(e.data["data"]["job"]["id"], format!("rep-{i}"));
        assert!(e.id.unwrap() > last);
        last = e.id.unwrap();
    }
    b.shutdown().await;
    a.shutdown().await;
}

async fn cluster_stream_reports_status_and_changes(backend: Backend) {
    let server = start(backend).await;
    server.started("k1", "hiro").await;
    server.started("k2", "hiro").await;
    server
        .post(
            "/v1/events/job-finished",
            json!({"job_id": "k2", "exit_code": 0}),
        )
        .await;
    // From the current end of the log (a fresh connection would start at the feed's head,
    // which may still be catching up with the commits above).
    let now = server.store.last_event_id().await.unwrap();
    let mut client = SseClient::connect(
        &server.base,
        "/v1/stream/cluster?interval_seconds=1",
        Some(now),
    )
    .await;
    assert_eq!(client.next().await.unwrap().name, "connected");
    let status = client.next().await.unwrap();
    assert_eq!(status.name, "status");
    assert_eq!(status.data["stream"], "cluster");
    let by_state = &status.data["data"]["jobs_by_state"];
    assert_eq!(by_state["running"], 1, "{status:?}");
    assert_eq!(by_state["completed"], 1);
    for state in ["pending", "failed", "cancelled"] {
        assert_eq!(by_state[state], 0, "every state is present");
    }
    assert_eq!(status.data["data"]["delivery_lag_events"], 0);
    // change events come on the same connection, and the status repeats
    server.started("k3", "hiro").await;
    let mut saw_change = false;
    let mut statuses = 0;
    while !(saw_change && statuses >= 1) {
        let e = client.next().await.unwrap();
        match e.name.as_str() {
            // k2's verdict, a (test-short) grace after its end
            "job_event" if e.data["type"] == "job_report" => {
                assert_eq!(e.data["data"]["job_id"], "k2");
            }
            "job_event" => {
                assert_eq!(e.data["data"]["job"]["id"], "k3");
                saw_change = true;
            }
            "status" => statuses += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let resp = common::http()
        .get(format!(
            "{}/v1/stream/cluster?interval_seconds=0",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

/// An agent's report from `node` with one sample per job in `jobs`: one `node_updated` event
/// when the node's row changes (its first report always does).
async fn report(server: &TestServer, node: &str, jobs: &[&str]) {
    let at = chrono::Utc::now().to_rfc3339();
    let samples: Vec<Value> = jobs
        .iter()
        .map(|id| json!({"job_id": id, "cpu_usage_percent": 50.0, "memory_current_bytes": 1u64 << 20}))
        .collect();
    server
        .post(
            "/v1/samples",
            json!({"node": node, "collected_at": at, "interval_seconds": 15, "jobs": samples,
                   "node_stats": {"cpu_usage_percent": 10.0, "memory_total_bytes": 1u64 << 34,
                                  "memory_used_bytes": 1u64 << 30, "cpu_count": 8}}),
        )
        .await;
}

/// `/v1/stream/nodes` carries the `node_updated` events of agent reports, filtered by name and
/// state, and nothing of jobs; the cluster status counts nodes by state.
async fn nodes_stream_filters_node_events(backend: Backend) {
    let server = start(backend).await;
    server
        .post(
            "/v1/events/job-started",
            json!({"job_id": "nj1", "user": "ivy", "node_list": ["node-a"]}),
        )
        .await;
    let now = server.store.last_event_id().await.unwrap();
    let mut named = SseClient::connect(
        &server.base,
        "/v1/stream/nodes?node_names=node-a,node-b",
        Some(now),
    )
    .await;
    let mut allocated =
        SseClient::connect(&server.base, "/v1/stream/nodes?states=allocated", Some(now)).await;
    let mut cluster = SseClient::connect(
        &server.base,
        "/v1/stream/cluster?interval_seconds=1",
        Some(now),
    )
    .await;
    for client in [&mut named, &mut allocated, &mut cluster] {
        assert_eq!(client.next().await.unwrap().name, "connected");
    }
    report(&server, "node-a", &["nj1"]).await; // runs nj1: allocated
    report(&server, "node-c", &[]).await; // idle, not named
    report(&server, "node-b", &[]).await; // idle
    server.started("nj2", "ivy").await; // a job event: never on the node stream

    let a = named.next().await.unwrap();
    assert_eq!(a.name, "node_event");
    assert_eq!(a.data["type"], "node_updated");
    assert_eq!(a.data["stream"], "nodes");
    assert_eq!(a.data["data"]["node"]["name"], "node-a");
    assert_eq!(a.data["data"]["node"]["state"], "allocated");
    let b = named.next().await.unwrap();
    assert_eq!(b.data["data"]["node"]["name"], "node-b");
    assert_eq!(b.data["data"]["node"]["state"], "idle");
    assert!(b.id.unwrap() > a.id.unwrap());
    let only = allocated.next().await.unwrap();
    assert_eq!(only.data["data"]["node"]["name"], "node-a");
    assert_eq!(only.id, a.id);

    // Nothing else matched: a fresh report of node-b (a change in its figures) comes next.
    server
        .post(
            "/v1/samples",
            json!({"node": "node-b", "collected_at": chrono::Utc::now().to_rfc3339(),
                   "interval_seconds": 15, "jobs": [],
                   "node_stats": {"cpu_usage_percent": 90.0, "memory_total_bytes": 1u64 << 34,
                                  "memory_used_bytes": 1u64 << 31, "cpu_count": 8}}),
        )
        .await;
    let again = named.next().await.unwrap();
    assert_eq!(again.data["data"]["node"]["name"], "node-b");
    assert_eq!(again.data["data"]["node"]["cpu_usage_percent"], 90.0);

    // The cluster stream: node events are not among its changes; its status counts nodes.
    let status = loop {
        let e = cluster.next().await.unwrap();
        match e.name.as_str() {
            "status" if e.data["data"]["nodes_total"] == 3 => break e,
            "status" => continue,
            "job_event" => assert_eq!(e.data["data"]["job"]["id"], "nj2"),
            other => panic!("unexpected {other} on the cluster stream"),
        }
    };
    let nodes = &status.data["data"]["nodes_by_state"];
    assert_eq!(nodes["allocated"], 1, "{status:?}");
    assert_eq!(nodes["idle"], 2);
    assert_eq!(nodes["down"], 0, "every state is present");
    assert_eq!(status.data["data"]["stale_nodes"], 0);

    let resp = common::http()
        .get(format!("{}/v1/stream/nodes?states=sleeping", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "validation_error", "{body}");
    server.shutdown().await;
}

/// `/v1/stream/partitions` carries the partition events of the Slurm feed, filtered by name and
/// state (any case), and nothing of jobs.
async fn partitions_stream_filters_partition_events(backend: Backend) {
    use common::partition;
    use jobscope::domain::PartitionState::{Down, Up};
    let server = start(backend).await;
    let now = server.store.last_event_id().await.unwrap();
    let mut named = SseClient::connect(
        &server.base,
        "/v1/stream/partitions?partition_names=gpu",
        Some(now),
    )
    .await;
    let mut down =
        SseClient::connect(&server.base, "/v1/stream/partitions?states=DOWN", Some(now)).await;
    for client in [&mut named, &mut down] {
        assert_eq!(client.next().await.unwrap().name, "connected");
    }
    server.started("pj1", "ivy").await; // a job event: never on the partition stream
    let store = &server.store;
    store
        .sync_partitions(&[partition("batch", Up), partition("gpu", Up)])
        .await
        .unwrap();
    store
        .sync_partitions(&[partition("batch", Down), partition("gpu", Up)])
        .await
        .unwrap();
    store
        .sync_partitions(&[partition("batch", Down)])
        .await
        .unwrap(); // gpu removed

    let a = named.next().await.unwrap();
    assert_eq!(a.name, "partition_event");
    assert_eq!(a.data["type"], "partition_updated");
    assert_eq!(a.data["stream"], "partitions");
    assert_eq!(a.data["data"]["partition"]["name"], "gpu");
    assert_eq!(a.data["data"]["partition"]["state"], "up");
    let b = named.next().await.unwrap();
    assert_eq!(b.data["type"], "partition_deleted");
    assert_eq!(b.data["data"]["partition"]["name"], "gpu");
    assert!(b.id.unwrap() > a.id.unwrap());
    let d = down.next().await.unwrap();
    assert_eq!(d.data["data"]["partition"]["name"], "batch");
    assert_eq!(d.data["data"]["partition"]["state"], "down");

    // Only those matched: the next event each sees is a new one.
    store
        .sync_partitions(&[partition("batch", Down), partition("gpu", Down)])
        .await
        .unwrap();
    let again = named.next().await.unwrap();
    assert_eq!(again.data["data"]["partition"]["state"], "down");
    assert_eq!(down.next().await.unwrap().id, again.id);

    for bad in ["states=sleepy", "partition_names=a,%07"] {
        let resp = common::http()
            .get(format!("{}/v1/stream/partitions?{bad}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "validation_error", "{body}");
    }
    server.shutdown().await;
}

/// An agent batch is one row of the log but one event per sample: a client that stopped inside
/// the batch resumes at the next sample, each sample with its own id.
async fn resume_inside_an_agent_batch(backend: Backend) {
    let server = start(backend).await;
    for id in ["b1", "b2", "b3", "b4"] {
        server.started(id, "erin").await;
    }
    let mut client = SseClient::connect(
        &server.base,
        "/v1/stream/jobs?exclude_samples=false&last_event_id=0",
        None,
    )
    .await;
    assert_eq!(client.next().await.unwrap().name, "connected");
    for _ in 0..4 {
        assert_eq!(client.next().await.unwrap().data["type"], "job_created");
    }
    report(&server, "node-b", &["b1", "b2", "b3", "b4"]).await;
    let mut samples = Vec::new();
    for _ in 0..4 {
        let e = client.next().await.unwrap();
        assert_eq!(e.name, "job_sample");
        samples.push((e.id.unwrap(), e.data["data"]["job_id"].clone()));
    }
    assert_eq!(
        samples
            .iter()
            .map(|(_, job)| job.clone())
            .collect::<Vec<_>>(),
        [json!("b1"), json!("b2"), json!("b3"), json!("b4")]
    );
    assert!(
        samples.windows(2).all(|p| p[1].0 == p[0].0 + 1),
        "{samples:?}"
    );
    drop(client);

    let mut again = SseClient::connect(
        &server.base,
        "/v1/stream/jobs?exclude_samples=false",
        Some(samples[1].0),
    )
    .await;
    assert_eq!(again.next().await.unwrap().name, "connected");
    for (id, job) in &samples[2..] {
        let e = again.next().await.unwrap();
        assert_eq!(e.name, "job_sample");
        assert_eq!((e.id.unwrap(), &e.data["data"]["job_id"]), (*id, job));
        assert_eq!(e.data["data"]["sample"]["node"], "node-b");
    }
    // then live, nothing repeated (the batch's `node_updated` is not a jobs stream's)
    server.started("b5", "erin").await;
    let live = again.next().await.unwrap();
    assert_eq!(live.data["type"], "job_created");
    assert_eq!(live.data["data"]["job"]["id"], "b5");
    assert!(live.id.unwrap() > samples[3].0 + 1);
    server.shutdown().await;
}

/// A stream opened without a cursor starts when it is answered: an event committed right after
/// the response arrived (before the client has read anything) is delivered, every time.
async fn answered_stream_misses_nothing(backend: Backend) {
    let server = start(backend).await;
    for round in 0..20 {
        let id = format!("now{round}");
        let path = format!("/v1/stream/jobs?job_ids={id}");
        let mut stream = SseClient::connect(&server.base, &path, None).await;
        server.started(&id, "alice").await;
        let created = stream.next_event().await;
        assert_eq!(created.data["type"], "job_created", "round {round}");
        assert_eq!(
            created.data["data"]["job"]["id"],
            id.as_str(),
            "round {round}"
        );
    }
    server.shutdown().await;
}

on_backends!(
    answered_stream_misses_nothing,
    filters_envelope_and_order,
    resume_without_gap_or_duplicate,
    resume_inside_an_agent_batch,
    single_job_stream_closes,
    expired_cursor_gets_reset,
    bad_stream_parameters_are_400,
    cluster_stream_reports_status_and_changes,
    nodes_stream_filters_node_events,
    partitions_stream_filters_partition_events
);

/// With tokens configured: EventSource-style access through a single-use ticket, a token in
/// the URL, and the admin's view of open connections.
#[tokio::test]
async fn tickets_tokens_in_urls_and_stream_status() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "reader reader-token-0123456789\nadmin admin-token-0123456789\n",
    )
    .unwrap();
    let db = common::TestDb::new(Backend::Sqlite).await;
    let config = ServeConfig {
        tokens: Some(
            jobscope::api::auth::Tokens::parse(&std::fs::read_to_string(&tokens).unwrap()).unwrap(),
        ),
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let base = server.base.clone();
    let http = common::http();

    // no credentials
    let resp = http
        .get(format!("{base}/v1/stream/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // a ticket works once
    let ticket: Value = http
        .post(format!("{base}/v1/stream/tickets"))
        .bearer_auth("reader-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ticket["expires_in_seconds"], 60);
    let t = ticket["ticket"].as_str().unwrap();
    let mut by_ticket =
        SseClient::connect(&base, &format!("/v1/stream/jobs?ticket={t}"), None).await;
    assert_eq!(by_ticket.next().await.unwrap().name, "connected");
    let again = http
        .get(format!("{base}/v1/stream/jobs?ticket={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "a used ticket is refused");
    // a long-lived token in the URL, on a running job's stream
    http.post(format!("{base}/v1/events/job-started"))
        .bearer_auth("admin-token-0123456789")
        .json(&json!({"job_id": "j9", "user": "u", "node_list": ["n"]}))
        .send()
        .await
        .unwrap();
    let mut by_token = SseClient::connect(
        &base,
        "/v1/stream/jobs/j9?access_token=reader-token-0123456789",
        None,
    )
    .await;
    assert_eq!(by_token.next().await.unwrap().name, "connected");

    // the admin sees both connections; a reader may not look
    let status = http
        .get(format!("{base}/v1/stream/status"))
        .bearer_auth("reader-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 403);
    let status: Value = http
        .get(format!("{base}/v1/stream/status"))
        .bearer_auth("admin-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["connections"], 2, "{status}");
    assert_eq!(status["streams"]["jobs"]["sse"], 1);
    assert_eq!(status["streams"]["job"]["sse"], 1);
    assert_eq!(status["jobs"]["j9"], 1);

    // A closed connection is no longer counted. The server notices when writing to it fails,
    // so give it events to write.
    drop(by_ticket);
    let mut connections = Value::Null;
    for i in 0..50 {
        http.post(format!("{base}/v1/events/job-started"))
            .bearer_auth("admin-token-0123456789")
            .json(&json!({"job_id": format!("w{i}"), "user": "u", "node_list": ["n"]}))
            .send()
            .await
            .unwrap();
        let s: Value = http
            .get(format!("{base}/v1/stream/status"))
            .bearer_auth("admin-token-0123456789")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        connections = s["connections"].clone();
        if connections == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connections, 1);
    drop(by_token);
    server.shutdown().await;
}
