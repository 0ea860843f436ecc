//! `GET /v1/jobs`' partition filter and its `sort` and `order` parameters (the console's jobs
//! page sorts and filters on the server), on both backends.

mod common;

use serde_json::json;

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

on_both_backends!(jobs_filter_by_partition_and_sort, |app| {
    for (id, user, partition, at) in [
        ("j1", "carol", "gpu", "2026-01-01T10:00:00Z"),
        ("j2", "alice", "cpu", "2026-01-01T11:00:00Z"),
        ("j3", "bob", "gpu", "2026-01-01T09:00:00Z"),
    ] {
        let body = json!({"job_id": id, "user": user, "node_list": ["n1"], "partition": partition, "timestamp": at});
        app.post_event("job-started", &body).await.expect(200);
    }
    // One sample gives j3 a CPU figure; the others have none and sort last either way.
    app.write(
        "POST",
        "/v1/jobs/j3/metrics",
        Some(&json!({"cpu_usage": 50.0, "memory_usage_mb": 1000})),
    )
    .await
    .expect(201);

    let default = app.get("/v1/jobs").await.expect(200);
    assert_eq!(ids(&default), ["j2", "j1", "j3"], "newest start first");
    let gpu = app.get("/v1/jobs?partition=gpu").await.expect(200);
    assert_eq!(
        (ids(&gpu), gpu["total"].as_i64()),
        (vec!["j1".to_string(), "j3".into()], Some(2))
    );
    let by_user = app.get("/v1/jobs?sort=user&order=asc").await.expect(200);
    assert_eq!(ids(&by_user), ["j2", "j3", "j1"]);
    let by_user_desc = app.get("/v1/jobs?sort=user").await.expect(200);
    assert_eq!(ids(&by_user_desc), ["j1", "j3", "j2"]);
    for order in ["asc", "desc"] {
        let by_cpu = app
            .get(&format!("/v1/jobs?sort=cpu_usage&order={order}"))
            .await
            .expect(200);
        assert_eq!(
            ids(&by_cpu)[0],
            "j3",
            "jobs without CPU figures come last ({order})"
        );
    }
    let bad = app.get("/v1/jobs?sort=banana").await.expect(400);
    assert!(
        bad["message"].as_str().unwrap().starts_with("Invalid sort"),
        "{bad}"
    );
    app.get("/v1/jobs?order=up").await.expect_error(
        400,
        "validation_error",
        "Invalid order (expected asc or desc)",
    );
});
