//! The OpenAPI document and the router cannot drift apart: every path and method the document
//! lists is sent to the router, which must not answer 404 or 405; and the served document is the
//! file in the repository.

mod common;

use common::spec::{operations, SPEC};
use common::{Backend, TestApp};
use serde_json::json;

#[test]
fn the_document_lists_every_route() {
    let ops = operations();
    let listed: Vec<String> = ops.iter().map(|(p, m)| format!("{m} {p}")).collect();
    for want in [
        "GET /v1/health",
        "GET /v1/openapi.yaml",
        "GET /v1/jobs",
        "POST /v1/jobs",
        "GET /v1/jobs/{id}",
        "PATCH /v1/jobs/{id}",
        "DELETE /v1/jobs/{id}",
        "GET /v1/jobs/{id}/metrics",
        "POST /v1/jobs/{id}/metrics",
        "GET /v1/jobs/{id}/audit",
        "POST /v1/samples",
        "GET /v1/nodes",
        "GET /v1/nodes/{name}",
        "GET /v1/nodes/{name}/jobs",
        "GET /v1/partitions",
        "GET /v1/partitions/{name}",
        "GET /v1/stream/partitions",
        "POST /v1/events/job-started",
        "POST /v1/events/job-finished",
        "GET /v1/stream/jobs",
        "GET /v1/stream/jobs/{id}",
        "GET /v1/stream/cluster",
        "POST /v1/stream/tickets",
        "GET /v1/stream/status",
        "GET /v1/ws",
        "GET /ws",
        "GET /ws/cluster",
        "GET /events",
        "GET /v1/jobs/{id}/report",
        "GET /v1/reports",
        "GET /v1/jobs/{id}/log",
        "POST /v1/jobs/{id}/log",
        "GET /v1/jobs/{id}/log/download",
        "GET /v1/stream/jobs/{id}/log",
        "GET /v1/stream/logs",
    ] {
        assert!(
            listed.iter().any(|l| l == want),
            "{want} missing from openapi/jobscope.yaml: {listed:?}"
        );
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::new(Backend::Sqlite).await;
    let ops = operations();
    assert!(ops.len() >= 16, "the document parser found only {ops:?}");
    // A partition named like the node, as the Slurm backend would store it: a 404 on a
    // partition path can only mean a missing route.
    app.store
        .sync_partitions(&[common::partition("n", jobscope::domain::PartitionState::Up)])
        .await
        .unwrap();
    for (path, method) in ops {
        // The job exists before each call, so a 404 can only mean a missing route.
        let _ = app
            .post_event(
                "job-started",
                &json!({"job_id": "walk-1", "user": "u", "node_list": ["n"]}),
            )
            .await;
        // The node exists too (an agent's report creates it), so a 404 on a node path can
        // only mean a missing route.
        let _ = app
            .request(
                "POST",
                "/v1/samples",
                Some(&json!({"node": "n", "collected_at": chrono::Utc::now(), "node_stats": {}})),
                &[],
            )
            .await;
        let concrete = path.replace("{id}", "walk-1").replace("{name}", "n");
        let body = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/jobs") => Some(json!({"id": "walk-2", "user": "u", "nodes": ["n"]})),
            ("POST", p) if p.ends_with("/metrics") => {
                Some(json!({"cpu_usage": 1, "memory_usage_mb": 1}))
            }
            ("POST", "/v1/events/job-started") => {
                Some(json!({"job_id": "walk-3", "user": "u", "node_list": ["n"]}))
            }
            ("POST", "/v1/events/job-finished") => {
                Some(json!({"job_id": "walk-1", "exit_code": 0}))
            }
            ("PATCH", _) => Some(json!({"cpu_usage": 1})),
            ("POST", "/v1/samples") => Some(
                json!({"node": "n", "collected_at": chrono::Utc::now(), "jobs": [{"job_id": "walk-1"}]}),
            ),
            _ => None,
        };
        let status = app.status_only(&method, &concrete, body.as_ref()).await;
        assert!(
            status != 404 && status != 405,
            "{method} {path} is documented but the router answers {status}"
        );
        assert!(status < 500, "{method} {path} failed: {status}");
    }
    app.finish().await;
}

#[tokio::test]
async fn the_served_document_is_the_repository_file() {
    let app = TestApp::new(Backend::Sqlite).await;
    let reply = app.get("/v1/openapi.yaml").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.header("content-type"), Some("application/yaml"));
    assert_eq!(reply.body, SPEC.as_bytes());
    app.finish().await;
}

/// Every route of the route table, and each of its methods, is documented: the table and the
/// document cannot drift apart in either direction.
#[test]
fn every_route_in_the_table_is_documented() {
    let ops = operations();
    for route in jobscope::api::route_table::ROUTES {
        for method in route.methods() {
            assert!(
                ops.iter().any(|(p, m)| p == route.template && m == method),
                "{method} {} is routed but not in openapi/",
                route.template
            );
        }
    }
}

/// Every documented operation has its own route template (so `/metrics` does not count it as
/// "other") and is in the `Allow` table under it (so a 405 never names the wrong methods, and a
/// malformed request to a real route is a 400, not a 405).
#[test]
fn every_operation_has_a_route_template_and_its_method_is_allowed() {
    use jobscope::api::{allow::allowed_methods, metrics::route_template};
    for (path, method) in operations() {
        let concrete = path.replace("{id}", "4242").replace("{name}", "n1");
        let template = route_template(&concrete);
        assert_eq!(template, path, "{method} {path}: template {template}");
        let allowed = allowed_methods(template).unwrap_or_else(|| panic!("{path} has no Allow"));
        assert!(
            allowed.split(", ").any(|m| m == method),
            "{method} {path} is not in Allow: {allowed}"
        );
    }
}
