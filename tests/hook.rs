//! `jobscope hook` as Slurm runs it: the real binary with a `SLURM_*` environment, against a real
//! `serve` on a socket (SQLite), a dead port, and a server that comes back. Every run must exit 0.

mod common;

use common::{Backend, TestDb, TestServer};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobscope");
const HOOK_TOKEN: &str = "hook-secret-0123456789";

/// Environment of a node Prolog/Epilog for `job` (what Debian's Slurm 22.05 sets).
fn slurm_env(context: &str, job: &str, exit2: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("SLURM_SCRIPT_CONTEXT", context),
        ("SLURM_JOB_ID", job),
        ("SLURM_JOB_USER", "alice"),
        ("SLURM_JOB_UID", "1000"),
        ("SLURM_JOB_PARTITION", "debug"),
        ("SLURM_NODELIST", "node[01-02]"),
        ("SLURM_JOB_CPUS_PER_NODE", "4(x2)"),
        ("SLURM_JOB_GPUS", "0,1"),
        ("SLURM_CLUSTER_NAME", "testcluster"),
        ("SLURMD_NODENAME", "node01"),
    ];
    if let Some(e) = exit2 {
        env.push(("SLURM_JOB_EXIT_CODE2", e));
    }
    env.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs the hook like Slurm: empty environment, stdin closed.
fn hook(kind: &str, env: &[(String, String)], args: &[&str]) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .arg("hook")
        .arg(kind)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("JOBSCOPE_HOOK_CONFIG", "/nonexistent/hook.toml")
        .env("RUST_LOG", "jobscope=info")
        .stdin(Stdio::null())
        .output()
        .expect("hook runs");
    (out, t0.elapsed())
}

fn assert_exit_0(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "hook must exit 0; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "hook printed on stdout");
}

async fn server_with_token() -> TestServer {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = common::serve_config(&db.url);
    config.tokens = Some(
        jobscope::api::auth::Tokens::parse(&format!(
            "hook {HOOK_TOKEN}\nadmin admin-secret-0123456789\n"
        ))
        .unwrap(),
    );
    TestServer::start_with(config, Some(db)).await
}

async fn job(server: &TestServer, id: &str) -> Option<Value> {
    match server.store.get_job(id).await {
        Ok(j) => Some(serde_json::to_value(j).unwrap()),
        Err(jobscope::store::StoreError::NotFound) => None,
        Err(e) => panic!("{e}"),
    }
}

fn spool_records(dir: &Path) -> usize {
    jobscope::hook::open_spool(dir)
        .unwrap()
        .depth()
        .unwrap()
        .records
}

fn token_file(dir: &Path) -> String {
    let p = dir.join("hook.token");
    std::fs::write(&p, format!("{HOOK_TOKEN}\n")).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn prolog_and_epilog_reach_the_server_with_the_hook_token() {
    let server = server_with_token().await;
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    // Settings from a TOML file, as on a node.
    let config = tmp.path().join("hook.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\ntoken_file = \"{}\"\ntimeout = \"2s\"\nspool_dir = \"{}\"\n",
            server.base,
            token_file(tmp.path()),
            spool.display()
        ),
    )
    .unwrap();
    let cfg = ["--config", config.to_str().unwrap()];

    let (out, _) = hook("prolog", &slurm_env("prolog_slurmd", "4242", None), &cfg);
    assert_exit_0(&out);
    let j = job(&server, "4242")
        .await
        .expect("job created by the prolog");
    assert_eq!(j["state"], "running");
    assert_eq!(j["user"], "alice");
    assert_eq!(j["nodes"], serde_json::json!(["node01", "node02"]));
    assert_eq!(j["allocated_cpus"], 8);
    assert_eq!(j["gpu_devices"], serde_json::json!(["0", "1"]));
    assert_eq!(j["cluster_name"], "testcluster");
    assert_eq!(j["scheduler"]["partition"], "debug");

    let (out, _) = hook(
        "epilog",
        &slurm_env("epilog_slurmd", "4242", Some("3:0")),
        &cfg,
    );
    assert_exit_0(&out);
    let j = job(&server, "4242").await.unwrap();
    assert_eq!(
        (
            j["state"].clone(),
            j["exit_code"].clone(),
            j["signal"].clone()
        ),
        ("failed".into(), 3.into(), 0.into())
    );
    assert_eq!(spool_records(&spool), 0);

    // A wrong token: 401 is fixable by an admin, so the event waits in the spool.
    std::fs::write(tmp.path().join("hook.token"), "wrong\n").unwrap();
    let (out, _) = hook("prolog", &slurm_env("prolog_slurmd", "4243", None), &cfg);
    assert_exit_0(&out);
    assert!(job(&server, "4243").await.is_none());
    assert_eq!(spool_records(&spool), 1);
    // Fixed: the next run delivers it first.
    token_file(tmp.path());
    let (out, _) = hook("prolog", &slurm_env("prolog_slurmd", "4244", None), &cfg);
    assert_exit_0(&out);
    assert!(job(&server, "4243").await.is_some());
    assert!(job(&server, "4244").await.is_some());
    assert_eq!(spool_records(&spool), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_down_spools_and_the_next_run_delivers_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let spool_arg = spool.to_str().unwrap().to_owned();
    let tok = token_file(tmp.path());
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = [
        "--server",
        &dead,
        "--token-file",
        &tok,
        "--spool-dir",
        &spool_arg,
    ];
    let (out, t) = hook("prolog", &slurm_env("prolog_slurmd", "10", None), &down);
    assert_exit_0(&out);
    assert!(
        t < Duration::from_secs(2),
        "took {t:?} with the server down"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spooling"), "{stderr}");
    assert!(
        !stderr.contains(HOOK_TOKEN),
        "the token must never be logged"
    );
    std::thread::sleep(Duration::from_millis(20));
    let (out, _) = hook(
        "epilog",
        &slurm_env("epilog_slurmd", "10", Some("0:0")),
        &down,
    );
    assert_exit_0(&out);
    let (out, _) = hook("prolog", &slurm_env("prolog_slurmctld", "11", None), &down);
    assert_exit_0(&out);
    assert_eq!(spool_records(&spool), 3);
    let spooled_at = chrono::Utc::now();

    std::thread::sleep(Duration::from_millis(300));
    let server = server_with_token().await;
    let up = [
        "--server",
        &server.base,
        "--token-file",
        &tok,
        "--spool-dir",
        &spool_arg,
    ];
    let (out, _) = hook("prolog", &slurm_env("prolog_slurmd", "12", None), &up);
    assert_exit_0(&out);
    assert_eq!(spool_records(&spool), 0, "spool drained");
    let j10 = job(&server, "10").await.expect("spooled prolog delivered");
    assert_eq!(j10["state"], "completed");
    // The times are those of the original events, not of the delivery.
    let start: chrono::DateTime<chrono::Utc> = j10["start_time"].as_str().unwrap().parse().unwrap();
    let end: chrono::DateTime<chrono::Utc> = j10["end_time"].as_str().unwrap().parse().unwrap();
    assert!(
        start < end && end <= spooled_at,
        "{start} {end} {spooled_at}"
    );
    // Oldest first: the prolog created the job and the epilog finished it (not the reverse).
    let audit = server.store.audit_trail("10").await.unwrap();
    let by: Vec<&str> = audit.iter().map(|a| a.changed_by.as_str()).collect();
    assert_eq!(by, ["slurm-prolog", "slurm-epilog"]);
    assert_eq!(job(&server, "11").await.unwrap()["state"], "running");
    assert_eq!(job(&server, "12").await.unwrap()["state"], "running");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_drains_the_hook_spool_and_bad_events_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let spool = jobscope::hook::open_spool(&spool_dir).unwrap();
    let event = |path: &str, body: Value| {
        serde_json::to_vec(&serde_json::json!({"path": path, "job_id": "x", "body": body})).unwrap()
    };
    spool
        .push(&event(
            "/v1/events/job-started",
            serde_json::json!({"job_id": "20", "user": "bob", "node_list": ["n1"]}),
        ))
        .unwrap();
    // Refused for good (400: no user): dropped.
    spool
        .push(&event(
            "/v1/events/job-started",
            serde_json::json!({"job_id": "21", "node_list": ["n1"]}),
        ))
        .unwrap();
    // Not ours: dropped without being sent.
    spool
        .push(&event("/v1/jobs", serde_json::json!({})))
        .unwrap();
    spool.push(b"not json").unwrap();
    // Unknown job, no user: 404, kept for a later pass.
    spool
        .push(&event(
            "/v1/events/job-finished",
            serde_json::json!({"job_id": "22", "exit_code": 0}),
        ))
        .unwrap();
    spool
        .push(&event(
            "/v1/events/job-finished",
            serde_json::json!({"job_id": "20", "exit_code": 1, "signal": 0}),
        ))
        .unwrap();

    let server = server_with_token().await;
    let client = jobscope::hook::HookClient::new(
        &server.base,
        Some(HOOK_TOKEN.into()),
        Duration::from_secs(2),
    )
    .unwrap();
    let report = jobscope::hook::deliver_spooled(&spool, &client, Duration::from_secs(5)).await;
    assert_eq!(
        (report.delivered, report.dropped, report.remaining),
        (2, 3, 1),
        "{report:?}"
    );
    assert_eq!(job(&server, "20").await.unwrap()["state"], "failed");
    assert!(job(&server, "21").await.is_none());
    assert_eq!(spool.depth().unwrap().records, 1);

    // Server gone: the pass stops at once and keeps everything.
    server.shutdown().await;
    let report = jobscope::hook::deliver_spooled(&spool, &client, Duration::from_secs(5)).await;
    assert_eq!((report.delivered, report.remaining), (0, 1), "{report:?}");
    assert!(report.stopped.is_some());
}

#[test]
fn bad_input_never_fails_the_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let spool_arg = spool.to_str().unwrap();
    // No SLURM environment at all: nothing to send, nothing spooled.
    let (out, _) = hook(
        "prolog",
        &[],
        &["--spool-dir", spool_arg, "--server", "http://127.0.0.1:9"],
    );
    assert_exit_0(&out);
    assert!(!spool.exists() || spool_records(&spool) == 0);
    // Unknown subcommand argument, unknown flag, bad values.
    for args in [
        vec!["hook", "bogus"],
        vec!["hook", "prolog", "--no-such-flag"],
        vec!["hook"],
    ] {
        let out = Command::new(BIN).args(&args).env_clear().output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    let env = slurm_env("prolog_slurmd", "30", None);
    let config = tmp.path().join("hook.toml");
    std::fs::write(
        &config,
        "server = \"http://127.0.0.1:9\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let (out, _) = hook(
        "prolog",
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "--timeout",
            "forever",
            "--server",
            "gopher://x",
            "--spool-dir",
            spool_arg,
        ],
    );
    assert_exit_0(&out);
    // The bad flag was logged and the file's server kept: nothing listens there, so the event
    // was spooled.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--server") && stderr.contains("colour"),
        "{stderr}"
    );
    assert_eq!(spool_records(&spool), 1);
    // A spool directory that cannot be created: logged, still exit 0.
    let (out, _) = hook(
        "epilog",
        &env,
        &[
            "--spool-dir",
            "/proc/no/such/dir",
            "--server",
            "http://127.0.0.1:9",
        ],
    );
    assert_exit_0(&out);
}
