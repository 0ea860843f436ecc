//! The `jobscope` binary as an operator runs it: real process, real socket, real signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobscope");

/// Settings a developer's or container's environment may carry that would change what the
/// test starts; they are removed from the child's environment.
const SERVE_ENV: [&str; 8] = [
    "HOST",
    "PORT",
    "DATABASE_URL",
    "METRICS_RETENTION_DAYS",
    "SEED_DEMO",
    "SCHEDULER_BACKEND",
    "JOBSCOPE_TOKENS_FILE",
    "JOBSCOPE_INSECURE_NO_AUTH",
];

fn jobscope() -> Command {
    let mut cmd = Command::new(BIN);
    for key in SERVE_ENV {
        cmd.env_remove(key);
    }
    cmd
}

/// Starts `jobscope serve` on a free port; returns the child and its address.
fn spawn_serve(db: &str) -> (std::process::Child, String) {
    let mut child = jobscope()
        .args(["serve", "--demo", "--port", "0", "--database-url", db])
        .env("LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("jobscope starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "jobscope serving" {
            let addr = v["fields"]["addr"].as_str().unwrap().to_string();
            // keep draining stderr so the child never blocks on a full pipe
            std::thread::spawn(move || for _ in lines {});
            return (child, addr);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("jobscope did not report its address");
}

async fn get_json(addr: &str, path: &str) -> serde_json::Value {
    jobscope::install_crypto_provider();
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("request sent");
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn serves_demo_data_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let (mut child, addr) = spawn_serve(&db);
    let health = get_json(&addr, "/v1/health").await;
    assert_eq!(health["status"], "healthy");
    let jobs = get_json(&addr, "/v1/jobs?limit=5").await;
    // The living demo adds jobs as it goes and deletes the oldest finished ones.
    let bounded = |total: &serde_json::Value| (100..=110).contains(&total.as_i64().unwrap());
    assert!(bounded(&jobs["total"]), "{}", jobs["total"]);

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "graceful shutdown took {:?}",
        started.elapsed()
    );

    // Restarting with --demo on the same database neither fails nor duplicates anything.
    let (mut again, addr) = spawn_serve(&db);
    let jobs = get_json(&addr, "/v1/jobs?limit=5").await;
    assert!(bounded(&jobs["total"]), "{}", jobs["total"]);
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn refuses_public_address_without_tokens() {
    let out = jobscope()
        .args(["serve", "--host", "0.0.0.0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--host (HOST)") && stderr.contains("--tokens-file"),
        "{stderr}"
    );
}

#[test]
fn invalid_environment_values_name_the_key() {
    let out = jobscope()
        .args(["serve"])
        .env("PORT", "eighty")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--port"), "{stderr}");
    let out = jobscope()
        .args(["serve"])
        .env("SEED_DEMO", "maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--demo"));
}

#[test]
fn version_and_help() {
    let out = jobscope().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("jobscope {}", env!("CARGO_PKG_VERSION"))
    );
    let out = jobscope().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "DATABASE_URL",
        "METRICS_RETENTION_DAYS",
        "SEED_DEMO",
        "SCHEDULER_BACKEND",
        "JOBSCOPE_TOKENS_FILE",
    ] {
        assert!(help.contains(key), "--help does not mention {key}");
    }
}
