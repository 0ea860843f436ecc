//! People, not only roles: `user:NAME` tokens and Slurm JWTs, scoped to their own jobs.
//!
//! The role × route × identity matrix walks every operation of the OpenAPI document, so a new
//! route cannot be left out; bad JWTs are 401 JSON; another user's job is a missing job; and a
//! user's SSE and WebSocket streams never carry someone else's events, live or replayed.

mod common;

use common::sse::SseClient;
use common::{Backend, TestApp, TestServer, ADMIN_TOKEN, AGENT_TOKEN, HOOK_TOKEN, READER_TOKEN};
use futures_util::{SinkExt, StreamExt};
use jobscope::api::auth::Tokens;
use jobscope::api::jwt::{self, JwtKey};
use serde_json::{json, Value};
use std::time::Duration;

use common::spec::operations;

const KEY: &[u8] = b"the-cluster-jwt-key-for-tests-0123456789";
const ALICE_TOKEN: &str = "alice-token-0123456789";
const BOB_TOKEN: &str = "bob-token-0123456789";

fn tokens() -> Tokens {
    let text = format!(
        "admin {ADMIN_TOKEN}\nhook {HOOK_TOKEN}\nagent {AGENT_TOKEN}\nreader {READER_TOKEN}\n\
         user:alice {ALICE_TOKEN}\nuser:bob {BOB_TOKEN}\n"
    );
    Tokens::parse(&text)
        .unwrap()
        .with_jwt(Some(JwtKey::from_bytes(KEY)))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn jwt_for(user: &str) -> String {
    jwt::sign(KEY, &json!({"sun": user, "iat": now(), "exp": now() + 600}))
}

/// What a user may call: reads of their own jobs, nodes, partitions, the job and cluster
/// streams, tickets, whoami. Everything else is 403.
fn user_may(method: &str, path: &str) -> bool {
    method == "GET"
        && !matches!(
            path,
            "/metrics"
                | "/v1/stream/status"
                | "/v1/stream/logs"
                // Seed 004's global log stream (without `job_run_id`): /v1/stream/logs's alias.
                // (Its WebSocket form wants upgrade headers first: see the 400 below.)
                | "/api/v1/logs/stream/sse"
                | "/v1/nodes/{name}/jobs"
        )
        || (method == "POST" && path == "/v1/stream/tickets")
}

/// The request body each operation needs to reach its handler.
fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/jobs") => Some(json!({"id": "m-2", "user": "u", "nodes": ["n"]})),
        ("POST", p) if p.ends_with("/metrics") => {
            Some(json!({"cpu_usage": 1, "memory_usage_mb": 1}))
        }
        ("POST", "/v1/events/job-started") => {
            Some(json!({"job_id": "m-3", "user": "u", "node_list": ["n"]}))
        }
        ("POST", "/v1/events/job-finished") => Some(json!({"job_id": "m-9", "exit_code": 0})),
        ("PATCH", _) => Some(json!({"cpu_usage": 1})),
        ("POST", "/v1/samples") => Some(json!({"node": "n", "collected_at": chrono::Utc::now()})),
        _ => None,
    }
}

async fn status_as(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> u16 {
    let mut req = warp::test::request()
        .method(method)
        .path(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-changed-by", "tester")
        .header("x-source", "identity-test");
    if let Some(body) = body {
        req = req.json(body);
    }
    match req.filter(&jobscope::api::routes(app_state(app))).await {
        Ok(response) => response.status().as_u16(),
        Err(rejection) => panic!("the router rejected {method} {path}: {rejection:?}"),
    }
}

fn app_state(app: &TestApp) -> jobscope::api::AppState {
    app.state()
}

async fn matrix(backend: Backend) {
    let mut app = TestApp::with_given_tokens(backend, tokens()).await;
    app.token = Some(ADMIN_TOKEN.into());
    let ops = operations();
    assert!(ops.len() >= 20, "the document parser found only {ops:?}");
    assert!(
        ops.iter().any(|(p, m)| p == "/v1/whoami" && m == "GET"),
        "whoami is documented"
    );
    // alice's job m-1 and bob's job b-1.
    for (id, user) in [("m-1", "alice"), ("b-1", "bob"), ("m-9", "alice")] {
        app.request(
            "POST",
            "/v1/events/job-started",
            Some(&json!({"job_id": id, "user": user, "node_list": ["n"]})),
            &[],
        )
        .await
        .expect(200);
    }
    let alice_jwt = jwt_for("alice");
    for (path, method) in &ops {
        let body = body_for(method, path);
        for (who, token) in [
            ("user:alice (token)", ALICE_TOKEN),
            ("user:alice (jwt)", alice_jwt.as_str()),
        ] {
            let mine = path.replace("{id}", "m-1").replace("{name}", "n");
            let status = status_as(&app, token, method, &mine, body.as_ref()).await;
            if user_may(method, path) {
                assert!(
                    status < 400
                        || (status == 404 && path.contains("{name}"))
                        // Past authentication, the WebSocket route wants upgrade headers.
                        || (status == 400 && ["/v1/ws", "/ws", "/ws/cluster", "/api/v1/logs/stream/ws"].contains(&path.as_str())),
                    "{who}: {method} {path} answered {status}, expected allowed"
                );
            } else {
                assert_eq!(status, 403, "{who}: {method} {path} must be forbidden");
            }
            if path.contains("{id}") && user_may(method, path) && !path.starts_with("/v1/stream") {
                let theirs = path.replace("{id}", "b-1");
                let status = status_as(&app, token, method, &theirs, body.as_ref()).await;
                assert_eq!(
                    status, 404,
                    "{who}: {method} {theirs} (bob's) must look missing"
                );
            }
        }
        // No token at all: only health is open.
        let anonymous = {
            let mut req = warp::test::request()
                .method(method)
                .path(&path.replace("{id}", "m-1").replace("{name}", "n"));
            if let Some(b) = &body {
                req = req.json(b);
            }
            req.filter(&jobscope::api::routes(app.state()))
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        if path == "/v1/health" {
            assert_eq!(anonymous, 200);
        } else {
            assert_eq!(anonymous, 401, "anonymous {method} {path}");
        }
    }
    app.finish().await;
}

on_backends!(matrix);

async fn scope_and_bad_tokens(backend: Backend) {
    let mut app = TestApp::with_given_tokens(backend, tokens()).await;
    app.token = Some(HOOK_TOKEN.into());
    for (id, user) in [("a-1", "alice"), ("a-2", "alice"), ("b-1", "bob")] {
        app.post_event(
            "job-started",
            &json!({"job_id": id, "user": user, "node_list": ["n"]}),
        )
        .await
        .expect(200);
    }
    app.token = Some(jwt_for("alice"));
    let list = app.get("/v1/jobs").await.expect(200);
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(list["total"], 2);
    assert!(
        ids.contains(&"a-1") && ids.contains(&"a-2") && !ids.contains(&"b-1"),
        "{ids:?}"
    );
    let other = app.get("/v1/jobs?user=bob").await.expect(200);
    assert_eq!(other["total"], 0, "?user=bob from alice is an empty list");
    let whoami = app.get("/v1/whoami").await.expect(200);
    assert_eq!(whoami["identity"], "user:alice");
    assert_eq!(whoami["jobs_visible"], "own");

    // Bob's job and a job that does not exist answer the same body.
    let theirs = app.get("/v1/jobs/b-1").await;
    let missing = app.get("/v1/jobs/zz-404").await;
    assert_eq!(theirs.status.as_u16(), 404);
    assert_eq!(theirs.body, missing.body);
    assert_eq!(
        app.get("/v1/jobs/b-1/audit").await.body,
        app.get("/v1/jobs/zz-404/audit").await.body
    );
    // The audit trail records who did it, as authenticated, beside what the client sent.
    let trail = app.get("/v1/jobs/a-1/audit").await.expect(200);
    assert_eq!(trail["events"][0]["actor"], "role:hook");
    assert_eq!(trail["events"][0]["changed_by"], "slurm-prolog");

    app.token = Some(ADMIN_TOKEN.into());
    app.write("PATCH", "/v1/jobs/a-2", Some(&json!({"cpu_usage": 5})))
        .await
        .expect(200);
    let trail = app.get("/v1/jobs/a-2/audit").await.expect(200);
    assert_eq!(trail["events"][1]["actor"], "admin");
    assert_eq!(trail["events"][1]["changed_by"], "tester");

    // A reader still sees everything.
    app.token = Some(READER_TOKEN.into());
    assert_eq!(app.get("/v1/jobs").await.expect(200)["total"], 3);
    assert_eq!(
        app.get("/v1/whoami").await.expect(200)["identity"],
        "role:reader"
    );

    // Bad JWTs: 401 JSON, never a 500.
    let n = now();
    let bad = [
        (
            "another key",
            jwt::sign(
                b"not-the-cluster-key",
                &json!({"sun": "alice", "exp": n + 600}),
            ),
        ),
        (
            "expired",
            jwt::sign(
                KEY,
                &json!({"sun": "alice", "exp": n - 3600, "iat": n - 7200}),
            ),
        ),
        (
            "future iat",
            jwt::sign(
                KEY,
                &json!({"sun": "alice", "exp": n + 7200, "iat": n + 3600}),
            ),
        ),
        (
            "alg none",
            jwt::sign_with_header(
                KEY,
                &json!({"alg": "none"}),
                &json!({"sun": "alice", "exp": n + 600}),
            ),
        ),
        (
            "alg HS512",
            jwt::sign_with_header(
                KEY,
                &json!({"alg": "HS512"}),
                &json!({"sun": "alice", "exp": n + 600}),
            ),
        ),
        ("bad base64", "eyJ!!!.e30.c2ln".to_string()),
        (
            "100 KB",
            format!("{}.{}.{}", "a".repeat(50_000), "b".repeat(50_000), "c"),
        ),
        (
            "control chars",
            jwt::sign(KEY, &json!({"sun": "ali\u{1b}ce", "exp": n + 600})),
        ),
    ];
    for (what, token) in bad {
        app.token = Some(token);
        let reply = app.get("/v1/jobs").await;
        reply.expect_error(401, "unauthorized", "Missing or invalid bearer token");
        let _ = what;
    }
    // ?token= is accepted like ?access_token= (streams), and a user may not read the
    // connection status.
    app.token = None;
    let q = format!("/v1/stream/status?token={}", jwt_for("alice"));
    assert_eq!(
        app.status_only("GET", &q, None).await,
        401,
        "status takes no query token"
    );
    app.token = Some(jwt_for("alice"));
    app.get("/v1/stream/status").await.expect(403);
    app.get("/metrics").await.expect(403);
    app.finish().await;
}

on_backends!(scope_and_bad_tokens);

/// `--users-see-all-jobs`: every job's lifecycle, but only one's own samples and audit.
async fn users_see_all_jobs(backend: Backend) {
    let mut t = tokens();
    t.users_see_all_jobs = true;
    let mut app = TestApp::with_given_tokens(backend, t).await;
    app.token = Some(HOOK_TOKEN.into());
    for (id, user) in [("a-1", "alice"), ("b-1", "bob")] {
        app.post_event(
            "job-started",
            &json!({"job_id": id, "user": user, "node_list": ["n"]}),
        )
        .await
        .expect(200);
    }
    app.token = Some(ALICE_TOKEN.into());
    assert_eq!(app.get("/v1/jobs").await.expect(200)["total"], 2);
    app.get("/v1/jobs/b-1").await.expect(200);
    app.get("/v1/jobs/b-1/metrics").await.expect(404);
    app.get("/v1/jobs/b-1/audit").await.expect(404);
    app.get("/v1/jobs/a-1/audit").await.expect(200);
    app.finish().await;
}

on_backends!(users_see_all_jobs);

/// A stream's `data:` payloads ([`SseClient`]).
struct Sse(SseClient);

impl Sse {
    async fn open(base: &str, path: &str, token: &str, last_event_id: Option<i64>) -> Sse {
        Sse(SseClient::connect_as(base, path, last_event_id, Some(token)).await)
    }

    async fn next(&mut self) -> Value {
        self.0.next().await.expect("stream open").data
    }

    /// Job ids of job events up to (and including) the one for `until`.
    async fn job_ids_until(&mut self, until: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            if let Some(id) = event["data"]["job"]["id"].as_str() {
                seen.push(id.to_owned());
                if id == until {
                    return seen;
                }
            }
        }
    }
}

async fn streams_carry_only_own_jobs(backend: Backend) {
    let db = common::TestDb::new(backend).await;
    let mut config = common::serve_config(&db.url);
    config.tokens = Some(tokens());
    let server = TestServer::start_with(config, Some(db)).await;
    let hook = |id: &'static str, user: &'static str, kind: &'static str| {
        let base = server.base.clone();
        async move {
            let body = if kind == "job-started" {
                json!({"job_id": id, "user": user, "node_list": ["n1"]})
            } else {
                json!({"job_id": id, "exit_code": 0})
            };
            let resp = common::http()
                .post(format!("{base}/v1/events/{kind}"))
                .bearer_auth(HOOK_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
    };
    let alice = jwt_for("alice");
    let mut live = Sse::open(
        &server.base,
        "/v1/stream/jobs?exclude_samples=false",
        &alice,
        None,
    )
    .await;
    let mut cluster = Sse::open(
        &server.base,
        "/v1/stream/cluster?interval_seconds=3600",
        &alice,
        None,
    )
    .await;
    // WebSocket, subscribed to every job.
    let ws_url = format!("ws://{}/v1/ws?token={}", server.addr, alice);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type": "subscribe", "stream": "jobs", "options": {"exclude_samples": false}})
            .to_string(),
    ))
    .await
    .unwrap();

    hook("b-1", "bob", "job-started").await;
    hook("b-1", "bob", "job-finished").await;
    hook("a-1", "alice", "job-started").await;
    hook("b-2", "bob", "job-started").await;
    hook("a-2", "alice", "job-started").await;

    assert_eq!(live.job_ids_until("a-2").await, ["a-1", "a-2"], "live SSE");
    assert_eq!(
        cluster.job_ids_until("a-2").await,
        ["a-1", "a-2"],
        "cluster SSE"
    );
    let mut ws_ids = Vec::new();
    while ws_ids.last().map(String::as_str) != Some("a-2") {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a WebSocket message within 10 s")
            .unwrap()
            .unwrap();
        if let Ok(text) = message.to_text() {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if let Some(id) = v["data"]["job"]["id"].as_str() {
                ws_ids.push(id.to_owned());
            }
        }
    }
    assert_eq!(ws_ids, ["a-1", "a-2"], "WebSocket");

    // Replayed from the start of the log.
    let mut replay = Sse::open(&server.base, "/v1/stream/jobs", &alice, Some(0)).await;
    assert_eq!(replay.job_ids_until("a-2").await, ["a-1", "a-2"], "replay");
    // Bob's job stream is a missing job to alice.
    let resp = common::http()
        .get(format!("{}/v1/stream/jobs/b-2", server.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // A ticket carries the identity it was issued to.
    let ticket: Value = common::http()
        .post(format!("{}/v1/stream/tickets", server.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!(
        "/v1/stream/jobs?ticket={}",
        ticket["ticket"].as_str().unwrap()
    );
    let mut by_ticket = Sse(SseClient::connect(&server.base, &path, None).await);
    hook("b-3", "bob", "job-started").await;
    hook("a-3", "alice", "job-started").await;
    assert_eq!(
        by_ticket.job_ids_until("a-3").await,
        ["a-3"],
        "ticket stream"
    );
    drop((live, cluster, replay, by_ticket, ws));
    server.shutdown().await;
}

on_backends!(streams_carry_only_own_jobs);
