//! `jobscope serve` as its own process on a free loopback port, on a fresh SQLite database, for
//! the tests and benchmarks whose measurements must be the server's alone (its resident memory,
//! its open-files limit): `tests/slow_clients.rs` and `bench/stream_fanout.rs`. Included by
//! `#[path]`, so only they compile it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Settings the parent's environment could carry into the server, removed before it starts.
const CLEARED_ENV: [&str; 6] = [
    "HOST",
    "PORT",
    "DATABASE_URL",
    "JOBSCOPE_TOKENS_FILE",
    "JOBSCOPE_CLIENT_STALL_TIMEOUT",
    "RUST_LOG",
];

/// A running `jobscope serve`; killed when dropped.
pub struct ServeProcess {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts `bin serve` with `extra_args` and, when given, `RUST_LOG`; waits for its "jobscope
    /// serving" line. Its JSON log keeps being drained (a full pipe would block the server), and
    /// the lines for which `echo` is true are printed.
    pub fn spawn(
        bin: &str,
        extra_args: &[&str],
        rust_log: Option<&str>,
        echo: fn(&serde_json::Value, &str) -> bool,
    ) -> ServeProcess {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("serve.db").display());
        let mut cmd = Command::new(bin);
        for key in CLEARED_ENV {
            cmd.env_remove(key);
        }
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd
            .args(["serve", "--port", "0", "--database-url", &db])
            .args(extra_args)
            .env("LOG_FORMAT", "json")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("jobscope starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "jobscope serving" {
                let addr = v["fields"]["addr"].as_str().unwrap().to_string();
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                        if echo(&v, &line) {
                            eprintln!("serve: {line}");
                        }
                    }
                });
                return ServeProcess {
                    child,
                    addr,
                    _dir: dir,
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("jobscope did not report its address");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:port`.
    #[allow(dead_code)] // not every includer needs it
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS`), `None` if it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
