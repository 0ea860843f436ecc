//! The Go service's Slurm settings (issue #17): a slurmrestd that offers only v0.0.37 (the Go
//! service's default) is used, `SLURM_API_VERSION` pins the version even where a newer one is
//! offered, and a `SLURM_AUTH_TOKEN` value is sent as `X-SLURM-USER-TOKEN`. The slurmrestd
//! here is a stand-in serving the real responses captured from Debian's 22.05 slurmrestd
//! (`tests/fixtures/slurmrestd/*-v0.0.37.json`).

mod common;

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warp::Filter;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/slurmrestd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A slurmrestd offering `versions`; records every (path, X-SLURM-USER-TOKEN) it is asked.
async fn fake_slurmrestd(
    versions: &'static [&'static str],
) -> (String, Arc<Mutex<Vec<(String, Option<String>)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let route = warp::path!("slurm" / String / String)
        .and(warp::header::optional::<String>("x-slurm-user-token"))
        .map(move |version: String, what: String, token: Option<String>| {
            log.lock()
                .unwrap()
                .push((format!("/slurm/{version}/{what}"), token));
            let body = if !versions.contains(&version.as_str()) {
                None
            } else {
                match what.as_str() {
                    "ping" => Some(serde_json::json!({"errors": [], "pings": [{"hostname": "vm", "ping": "UP"}]})),
                    "jobs" => Some(fixture(&format!("jobs-{version}.json"))),
                    "nodes" => Some(fixture(&format!("nodes-{version}.json"))),
                    "partitions" => Some(fixture(&format!("partitions-{version}.json"))),
                    _ => None,
                }
            };
            match body {
                Some(body) => warp::reply::with_status(
                    warp::reply::json(&body),
                    warp::http::StatusCode::OK,
                ),
                None => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"errors": [{"error": "Unknown path"}]})),
                    warp::http::StatusCode::NOT_FOUND,
                ),
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (url, seen)
}

async fn serve_with(
    url: &str,
    version: Option<&'static str>,
    token: Option<&str>,
) -> common::TestServer {
    let db = common::TestDb::new(common::Backend::Sqlite).await;
    let mut config = common::serve_config(&db.url);
    config.scheduler = jobscope::config::SchedulerKind::Slurm;
    config.slurm = Some(jobscope::scheduler::slurm::SlurmConfig {
        url: url.to_owned(),
        user: Some("slurm".into()),
        token_file: None,
        token: token.map(|t| jobscope::scheduler::slurm::SlurmToken(t.to_owned())),
        version,
        interval: Duration::from_millis(200),
    });
    common::TestServer::start_with(config, Some(db)).await
}

/// Polls until the server's partitions list the captured `debug` partition (a reconcile pass
/// went through).
async fn wait_reconciled(server: &common::TestServer) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health: Value = common::http()
            .get(format!("{}/v1/health", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let partitions: Value = common::http()
            .get(format!("{}/v1/partitions", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["status"] == "healthy" && partitions["total"].as_i64().unwrap_or(0) > 0 {
            return partitions;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reconciled: {health} {partitions}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_slurmrestd_offering_only_v0_0_37_is_used() {
    jobscope::install_crypto_provider();
    let (url, seen) = fake_slurmrestd(&["v0.0.37"]).await;
    let server = serve_with(&url, None, Some("jwt-from-env")).await;
    let partitions = wait_reconciled(&server).await;
    assert!(partitions.to_string().contains("\"debug\""), "{partitions}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(p, _)| p == "/slurm/v0.0.38/ping"),
        "negotiation tried newer versions first: {seen:?}"
    );
    assert!(seen.iter().any(|(p, _)| p == "/slurm/v0.0.37/partitions"));
    assert!(
        seen.iter()
            .all(|(_, token)| token.as_deref() == Some("jwt-from-env")),
        "SLURM_AUTH_TOKEN's value is sent on every request: {seen:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn slurm_api_version_pins_the_version() {
    jobscope::install_crypto_provider();
    let (url, seen) = fake_slurmrestd(&["v0.0.38", "v0.0.37"]).await;
    let server = serve_with(&url, Some("v0.0.37"), None).await;
    wait_reconciled(&server).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(p, _)| p.starts_with("/slurm/v0.0.37/")),
        "only the pinned version is asked: {seen:?}"
    );
    server.shutdown().await;
}
