//! Bearer-token roles on every route, on both backends.

mod common;

use common::{Backend, TestApp, ADMIN_TOKEN, AGENT_TOKEN, HOOK_TOKEN, READER_TOKEN};
use serde_json::json;

async fn roles_are_enforced(backend: Backend) {
    let mut app = TestApp::with_tokens(backend).await;
    let started = json!({"job_id": "1", "user": "u", "node_list": ["n"]});

    // no token, a wrong token, a malformed header
    app.token = None;
    let reply = app.post_event("job-started", &started).await;
    reply.expect_error(401, "unauthorized", "Missing or invalid bearer token");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    app.get("/v1/jobs").await.expect(401);
    app.get("/v1/openapi.yaml").await.expect(401);
    app.get("/v1/health").await.expect(200);
    app.token = Some("not-a-configured-token".into());
    app.get("/v1/jobs").await.expect(401);
    let basic = app
        .request(
            "GET",
            "/v1/jobs",
            None,
            &[("authorization", "Basic YWRtaW4=")],
        )
        .await;
    assert_eq!(basic.status.as_u16(), 401);

    // hook: lifecycle events only
    app.token = Some(HOOK_TOKEN.into());
    app.post_event("job-started", &started).await.expect(200);
    app.get("/v1/jobs").await.expect_error(
        403,
        "forbidden",
        "This token's role may not use this endpoint",
    );
    app.write("DELETE", "/v1/jobs/1", None).await.expect(403);
    app.write(
        "POST",
        "/v1/jobs/1/metrics",
        Some(&json!({"cpu_usage": 1, "memory_usage_mb": 1})),
    )
    .await
    .expect(403);

    // reader: reads only
    app.token = Some(READER_TOKEN.into());
    app.get("/v1/jobs").await.expect(200);
    app.get("/v1/jobs/1").await.expect(200);
    app.get("/v1/jobs/1/audit").await.expect(200);
    app.get("/v1/jobs/1/metrics").await.expect(200);
    app.get("/v1/openapi.yaml").await.expect(200);
    app.get("/v1/nodes").await.expect(200);
    app.request(
        "POST",
        "/v1/samples",
        Some(&json!({"node": "n", "collected_at": chrono::Utc::now().to_rfc3339()})),
        &[],
    )
    .await
    .expect(403);
    app.post_event("job-finished", &json!({"job_id": "1"}))
        .await
        .expect(403);
    app.write("PATCH", "/v1/jobs/1", Some(&json!({"cpu_usage": 1})))
        .await
        .expect(403);

    // agent: samples, not lifecycle or job edits
    app.token = Some(AGENT_TOKEN.into());
    app.write(
        "POST",
        "/v1/jobs/1/metrics",
        Some(&json!({"cpu_usage": 5, "memory_usage_mb": 5})),
    )
    .await
    .expect(201);
    app.post_event("job-finished", &json!({"job_id": "1"}))
        .await
        .expect(403);
    app.write("DELETE", "/v1/jobs/1", None).await.expect(403);
    app.get("/v1/jobs").await.expect(403);
    app.get("/v1/jobs/1/metrics").await.expect(403);
    let batch =
        json!({"node": "node-1", "collected_at": chrono::Utc::now().to_rfc3339(), "jobs": []});
    app.request("POST", "/v1/samples", Some(&batch), &[])
        .await
        .expect(200);
    // the running jobs of a node (what to sample), but not the node list
    app.get("/v1/nodes/node-1/jobs").await.expect(200);
    app.get("/v1/nodes").await.expect(403);

    // admin: everything
    app.token = Some(ADMIN_TOKEN.into());
    app.post_event("job-finished", &json!({"job_id": "1", "exit_code": 0}))
        .await
        .expect(200);
    app.get("/v1/jobs/1").await.expect(200);
    app.write("DELETE", "/v1/jobs/1", None).await.expect(204);
    app.finish().await;
}

#[tokio::test]
async fn roles_are_enforced_on_sqlite() {
    roles_are_enforced(Backend::Sqlite).await;
}

#[tokio::test]
async fn roles_are_enforced_on_postgres() {
    if common::skip_postgres() {
        return;
    }
    roles_are_enforced(Backend::Postgres).await;
}
