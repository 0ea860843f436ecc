//! `jobscope watch` end to end: a real server on port 0 (SQLite in a temp dir), the real binary as
//! a child process, hooks posted over HTTP; checks what it prints and the exit status it takes
//! from the watched job's final state.

use jobscope::api::auth::Tokens;
use jobscope::app::Application;
use jobscope::config::ServeConfig;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READER_TOKEN: &str = "reader-token-0123456789abcdef";
const HOOK_TOKEN: &str = "hook-token-0123456789abcdef";

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(tokens: Option<Tokens>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Server::start_in(dir, "127.0.0.1:0", tokens).await
    }

    /// A server on `listen` with the database in `dir` (kept across restarts).
    async fn start_in(dir: tempfile::TempDir, listen: &str, tokens: Option<Tokens>) -> Server {
        // The test's own reqwest clients need it too (reqwest has no provider of its own).
        jobscope::install_crypto_provider();
        let config = ServeConfig {
            listen: listen.parse().unwrap(),
            retention: Duration::from_secs(86_400),
            tokens,
            report_grace: Duration::from_millis(100),
            ..ServeConfig::loopback(&format!(
                "sqlite://{}",
                dir.path().join("watch.db").display()
            ))
        };
        let app = Application::build(config).await.expect("serve starts");
        let base = format!("http://{}", app.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Server {
            base,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops this server (its streams end) and starts another on the same port and database.
    async fn restart(mut self) -> Server {
        let _ = self.stop.take().unwrap().send(());
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap());
        assert!(stopped.await.is_ok(), "server stops");
        let listen = self.base.trim_start_matches("http://").to_owned();
        let dir = tempfile::tempdir().unwrap();
        let dir = std::mem::replace(&mut self.dir, dir);
        Server::start_in(dir, &listen, None).await
    }

    async fn post(&self, path: &str, body: Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(HOOK_TOKEN)
            .header("x-changed-by", "t")
            .header("x-source", "watch-test")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    async fn started(&self, id: &str) {
        self.post(
            "/v1/events/job-started",
            json!({"job_id": id, "user": "alice", "node_list": ["n1"]}),
        )
        .await;
    }

    async fn finished(&self, id: &str, exit_code: i64) {
        self.post(
            "/v1/events/job-finished",
            json!({"job_id": id, "exit_code": exit_code}),
        )
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `jobscope watch` running as a child, its stdout and stderr read line by line.
struct Watcher {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    out: Vec<String>,
    err: Vec<String>,
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Watcher {
    fn spawn(args: &[&str]) -> Watcher {
        Watcher::spawn_with_env(args, &[])
    }

    fn spawn_with_env(args: &[&str], envs: &[(&str, &str)]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobscope"))
            .arg("watch")
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "warn")
            .env_remove("JOBSCOPE_SERVER")
            .env_remove("JOBSCOPE_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jobscope watch starts");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Watcher {
            child,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    fn drain(&mut self) {
        self.out.extend(self.stdout.try_iter());
        self.err.extend(self.stderr.try_iter());
    }

    /// Waits until stdout (or stderr) has a line containing `needle`.
    async fn wait_for(&mut self, needle: &str, on_stderr: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.drain();
            let lines = if on_stderr { &self.err } else { &self.out };
            if lines.iter().any(|l| l.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?}; stdout {:?}, stderr {:?}",
                self.out,
                self.err
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself; its status code.
    async fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader threads catch the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.drain();
                return status.code().expect("exited, not killed");
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.drain();
                panic!(
                    "watch did not exit; stdout {:?}, stderr {:?}",
                    self.out, self.err
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_prints_samples_and_states_and_exits_with_its_code() {
    let server = Server::start(None).await;
    server.started("w1").await;
    let mut watcher = Watcher::spawn(&["w1", "--server", &server.base]);
    watcher.wait_for("connected", true).await;

    server
        .post(
            "/v1/jobs/w1/metrics",
            json!({"cpu_usage": 87.5, "memory_usage_mb": 1200, "gpu_usage": 93}),
        )
        .await;
    watcher
        .wait_for("w1  cpu 87.5%  mem 1200 MB  gpu 93%", false)
        .await;
    server.finished("w1", 3).await;

    assert_eq!(watcher.exit_code().await, 3, "stderr {:?}", watcher.err);
    assert!(
        watcher
            .out
            .iter()
            .any(|l| l.ends_with("w1  alice  running → failed  exit 3")),
        "{:?}",
        watcher.out
    );
    // The verdict (`job_report`, a grace after the end) is printed before the exit.
    let report = watcher
        .out
        .iter()
        .position(|l| l.starts_with("Job w1 ("))
        .unwrap_or_else(|| panic!("the report block: {:?}", watcher.out));
    assert!(
        watcher.out[report..].iter().any(|l| l.contains("Grade:")),
        "{:?}",
        watcher.out
    );
    let time = &watcher.out[0][..8];
    assert!(
        time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
        "{time:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_job_exits_zero() {
    let server = Server::start(None).await;
    server.started("w2").await;
    let mut watcher = Watcher::spawn(&["w2", "--server", &server.base]);
    watcher.wait_for("connected", true).await;
    server.finished("w2", 0).await;
    assert_eq!(watcher.exit_code().await, 0, "stderr {:?}", watcher.err);
    assert!(
        watcher
            .out
            .iter()
            .any(|l| l.ends_with("w2  alice  running → completed  exit 0")),
        "{:?}",
        watcher.out
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_already_ended_or_unknown_exits_at_once() {
    let server = Server::start(None).await;
    server.started("w3").await;
    server.finished("w3", 7).await;
    let mut done = Watcher::spawn(&["w3", "--server", &server.base]);
    assert_eq!(done.exit_code().await, 7, "stderr {:?}", done.err);
    assert!(
        done.out
            .iter()
            .any(|l| l.contains("w3  alice") && l.contains("failed  exit 7")),
        "{:?}",
        done.out
    );

    let mut unknown = Watcher::spawn(&["nope", "--server", &server.base]);
    assert_eq!(unknown.exit_code().await, 124, "not a job's exit code 3");
    assert!(
        unknown.err.iter().any(|l| l.contains("job nope not found")),
        "{:?}",
        unknown.err
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_stream_is_fatal_with_status_125() {
    let tokens =
        Tokens::parse(&format!("reader {READER_TOKEN}\nhook {HOOK_TOKEN}\n")).expect("tokens");
    let server = Server::start(Some(tokens)).await;

    let mut anonymous = Watcher::spawn(&["--server", &server.base]);
    assert_eq!(anonymous.exit_code().await, 125);
    assert!(
        anonymous.err.iter().any(|l| l.contains("401")),
        "{:?}",
        anonymous.err
    );

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{READER_TOKEN}\n")).unwrap();
    let token_arg = token_file.to_str().unwrap();
    let mut bad_filter = Watcher::spawn(&[
        "--server",
        &server.base,
        "--token-file",
        token_arg,
        "--states",
        "sleeping",
    ]);
    assert_eq!(bad_filter.exit_code().await, 125);
    assert!(
        bad_filter.err.iter().any(|l| l.contains("400")),
        "{:?}",
        bad_filter.err
    );

    // With the token the stream is accepted, and the token is never shown.
    let mut reader = Watcher::spawn(&[
        "--server",
        &server.base,
        "--user",
        "alice",
        "--token-file",
        token_arg,
    ]);
    reader.wait_for("connected", true).await;
    server.started("w4").await;
    reader.wait_for("w4  alice  new → running", false).await;
    assert!(!reader
        .out
        .iter()
        .chain(&reader.err)
        .any(|l| l.contains(READER_TOKEN)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_resumes_with_the_last_event_id() {
    let server = Server::start(None).await;
    server.started("w5").await;
    let mut watcher = Watcher::spawn(&["w5", "--server", &server.base]);
    watcher.wait_for("connected", true).await;
    server
        .post(
            "/v1/jobs/w5/metrics",
            json!({"cpu_usage": 10, "memory_usage_mb": 1}),
        )
        .await;
    watcher.wait_for("w5  cpu 10%  mem 1 MB", false).await;

    let server = server.restart().await;
    watcher.wait_for("reconnecting in", true).await;
    // Posted while the watcher may still be away: it gets them replayed, each once.
    server
        .post(
            "/v1/jobs/w5/metrics",
            json!({"cpu_usage": 20, "memory_usage_mb": 2}),
        )
        .await;
    server.finished("w5", 0).await;

    assert_eq!(watcher.exit_code().await, 0, "stderr {:?}", watcher.err);
    let samples: Vec<_> = watcher.out.iter().filter(|l| l.contains(" cpu ")).collect();
    assert_eq!(samples.len(), 2, "{:?}", watcher.out);
    assert!(
        samples[1].contains("w5  cpu 20%  mem 2 MB"),
        "{:?}",
        samples
    );
    assert!(
        watcher
            .out
            .iter()
            .any(|l| l.ends_with("w5  alice  running → completed  exit 0")),
        "{:?}",
        watcher.out
    );
}

/// A named test double for Slurm's `scontrol` (the real one is covered by scripts/e2e-slurm.sh):
/// logs its arguments, prints a stale token the first time and `token` after that.
fn fake_scontrol(dir: &std::path::Path, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("scontrol");
    let calls = dir.join("calls");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >>'{calls}'\nif [ \"$(wc -l <'{calls}')\" -eq 1 ]; then echo SLURM_JWT=stale-token; else echo SLURM_JWT={token}; fi\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:/usr/bin:/bin", bin.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_file_watch_asks_scontrol_and_refreshes_once_on_401() {
    const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";
    let tokens = Tokens::parse(&format!(
        "reader {READER_TOKEN}\nhook {HOOK_TOKEN}\nuser:alice {ALICE_TOKEN}\n"
    ))
    .expect("tokens");
    let server = Server::start(Some(tokens)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = fake_scontrol(dir.path(), ALICE_TOKEN);

    server.started("sc1").await;
    let mut watcher =
        Watcher::spawn_with_env(&["sc1", "--server", &server.base], &[("PATH", &path)]);
    watcher.wait_for("connected", true).await;
    server.finished("sc1", 0).await;
    assert_eq!(watcher.exit_code().await, 0, "{:?}", watcher.err);
    assert!(
        watcher
            .err
            .iter()
            .any(|l| l.contains("fetched a fresh one")),
        "{:?}",
        watcher.err
    );
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(
        calls, "token lifespan=3600\ntoken lifespan=3600\n",
        "stale, then fresh"
    );
    assert!(!watcher
        .out
        .iter()
        .chain(&watcher.err)
        .any(|l| l.contains(ALICE_TOKEN)));

    // A token that stays refused is fatal after one refresh (the double now always gives a
    // token the server does not know), not a loop.
    let dir = tempfile::tempdir().unwrap();
    let path = fake_scontrol(dir.path(), "unknown-token");
    let mut refused =
        Watcher::spawn_with_env(&["sc1", "--server", &server.base], &[("PATH", &path)]);
    assert_eq!(refused.exit_code().await, 125, "{:?}", refused.err);
    assert!(
        refused.err.iter().any(|l| l.contains("401")),
        "{:?}",
        refused.err
    );
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(calls.lines().count(), 2);

    // A --token-file wins: scontrol is not asked.
    let dir = tempfile::tempdir().unwrap();
    let path = fake_scontrol(dir.path(), ALICE_TOKEN);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("# alice\nSLURM_JWT={ALICE_TOKEN}\n")).unwrap();
    let mut with_file = Watcher::spawn_with_env(
        &[
            "sc1",
            "--server",
            &server.base,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[("PATH", &path)],
    );
    assert_eq!(with_file.exit_code().await, 0, "{:?}", with_file.err);
    assert!(!dir.path().join("calls").exists(), "scontrol was not run");
}
