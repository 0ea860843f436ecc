//! The web console in a real browser: Debian's chromium, driven through chromedriver's
//! WebDriver HTTP API (plain reqwest, no browser crate). Against `serve --demo` and a server
//! fed by the test: the cluster page shows the demo's nodes, a job started by a hook appears in
//! the jobs list within 2 s without a reload, its page charts samples posted after it opened
//! (one series per node), and a wrong token gets an error, not a blank page. A screenshot of
//! each page is kept under `$CARGO_TARGET_TMPDIR/console/` for a person to look at.
//!
//! Without chromium and chromedriver the test is skipped, unless `JOBSCOPE_REQUIRE_BROWSER=1`
//! (CI) makes that a failure. The browser is always cleaned up: the WebDriver session is
//! deleted and chromedriver's whole process group killed when the guard drops, panics included.

mod common;

use common::{http, Backend, TestDb, TestServer};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const READER: &str = "reader-token-0123456789";

/// Holds back the page's next EventSources: each is created only when the test calls
/// `window.__releaseStreams()`, so the test can commit something between a page's first load
/// and its stream's start.
const HOLD_STREAMS: &str = r#"
    const Real = window.EventSource;
    window.__heldStreams = [];
    window.EventSource = function (url) {
        const listeners = [];
        const held = {
            real: null,
            closed: false,
            addEventListener(name, fn) { listeners.push([name, fn]); if (this.real) this.real.addEventListener(name, fn); },
            close() { this.closed = true; if (this.real) this.real.close(); },
        };
        window.__heldStreams.push(() => {
            if (held.closed) return;
            held.real = new Real(url);
            for (const [name, fn] of listeners) held.real.addEventListener(name, fn);
        });
        return held;
    };
    window.__releaseStreams = () => {
        window.EventSource = Real;
        for (const open of window.__heldStreams.splice(0)) open();
    };
    return 1;
"#;

/// A chromedriver and one browser session; cleaned up on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: Option<String>,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can end chromedriver and every browser
            // process it started at once.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: None,
            client: http(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .client
                .get(browser.url("/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile_dir = browser._profile.path().display().to_string();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         format!("--user-data-dir={profile_dir}")]
            }
        }}});
        let created = browser.send("POST", "/session", Some(caps)).await;
        browser.session = Some(
            created["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
                .to_string(),
        );
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let request = match method {
            "POST" => self
                .client
                .post(self.url(path))
                .json(&body.unwrap_or(json!({}))),
            "DELETE" => self.client.delete(self.url(path)),
            _ => self.client.get(self.url(path)),
        };
        let response = request.send().await.expect("WebDriver answers");
        let value: Value = response.json().await.expect("WebDriver JSON");
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_ref().unwrap())
    }

    async fn go(&self, url: &str) {
        self.send(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    async fn eval(&self, script: &str) -> Value {
        let value = self
            .send(
                "POST",
                &self.session_path("/execute/sync"),
                Some(json!({"script": script, "args": []})),
            )
            .await;
        if value.get("error").is_some() {
            panic!("script failed: {value}\n{script}");
        }
        value
    }

    /// Polls `script` (a JS expression) until it is truthy; returns the value and how long
    /// it took.
    async fn wait_for(&self, script: &str, within: Duration, what: &str) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let v = self.eval(&format!("return ({script});")).await;
            let truthy = !(v.is_null() || v == json!(false) || v == json!(0) || v == json!(""));
            if truthy {
                return (v, started.elapsed());
            }
            if started.elapsed() > within {
                let body = self
                    .eval("return document.getElementById('main').innerText.slice(0, 2000);")
                    .await;
                panic!("{what}: not within {within:?}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let png = self
            .send("GET", &self.session_path("/screenshot"), None)
            .await;
        let bytes = base64_decode(png.as_str().expect("screenshot data"));
        std::fs::write(path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session quits chromium; a plain blocking request, since drop may run
        // while a panic unwinds out of the runtime.
        if let Some(id) = self.session.take() {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        // Then chromedriver and anything left in its process group.
        let pgid = self.driver.id() as libc::pid_t;
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots), without pulling in a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Where screenshots go.
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present && std::env::var("JOBSCOPE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("JOBSCOPE_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
    }
    if !present {
        eprintln!("chromium or chromedriver missing: browser test skipped");
    }
    present
}

async fn post(server: &TestServer, path: &str, body: Value) -> Value {
    let response = http()
        .post(format!("{}{path}", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let out = output_dir();
    let db = TestDb::new(Backend::Sqlite).await;
    let config = jobscope::config::ServeConfig {
        demo: true,
        scheduler: jobscope::config::SchedulerKind::Mock,
        demo_speed: 2.0,
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let browser = Browser::start().await;

    // The cluster page: the demo's fifty nodes, coloured by state, and its partitions.
    browser.go(&format!("{}/", server.base)).await;
    let (_, shown) = browser
        .wait_for(
            "document.querySelectorAll('#node-grid li').length === 50 && document.querySelectorAll('#partitions tr').length === 5",
            Duration::from_secs(20),
            "the cluster page shows the demo's 50 nodes and 5 partitions",
        )
        .await;
    let timing = browser
        .eval("const n = performance.getEntriesByType('navigation')[0]; return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.transferSize};")
        .await;
    eprintln!(
        "first load: DOMContentLoaded {} ms, load {} ms, nodes drawn {} ms after load started polling; {}",
        timing["dcl"],
        timing["load"],
        shown.as_millis(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let states = browser
        .eval("return ['drained','down'].map(s => document.querySelectorAll('#node-grid li.s-' + s).length);")
        .await;
    assert_eq!(states, json!([1, 1]), "one drained and one down node");
    // The pending card and the partitions' queues count the same jobs (the demo's queue).
    browser
        .wait_for(
            "(() => { const card = document.querySelector('.card.pending .n'); if (!card) return false; const queued = [...document.querySelectorAll('#partitions tr td:nth-child(6)')].reduce((a, td) => a + Number(td.textContent), 0); return Number(card.textContent) > 0 && queued > 0; })()",
            Duration::from_secs(20),
            "pending jobs counted on the card and in the partitions",
        )
        .await;
    browser.screenshot(&out.join("cluster.png")).await;

    // The jobs page: a job started by a hook shows up within 2 s, without a reload.
    browser.go(&format!("{}/#/jobs", server.base)).await;
    browser
        .wait_for(
            "document.querySelectorAll('#jobs-body tr[data-job]').length > 10",
            Duration::from_secs(10),
            "the jobs list",
        )
        .await;
    browser
        .eval("window.__sameDocument = true; return 1;")
        .await;
    let started = Instant::now();
    post(
        &server,
        "/v1/events/job-started",
        json!({"job_id": "web-4242", "user": "zoe", "node_list": ["web-a", "web-b"],
               "cpu_allocation": 16, "memory_allocation_mb": 32000, "partition": "cpu"}),
    )
    .await;
    browser
        .wait_for(
            "document.querySelector('#jobs-body tr[data-job=\"web-4242\"]')",
            Duration::from_secs(2),
            "the hook's job in the jobs list within 2 s",
        )
        .await;
    eprintln!("hook to jobs list: {} ms", started.elapsed().as_millis());
    assert_eq!(
        browser.eval("return window.__sameDocument === true;").await,
        json!(true),
        "the list updated without a reload"
    );
    // Filters and sorting go to the server.
    browser
        .go(&format!(
            "{}/#/jobs?user=zoe&sort=id&order=asc",
            server.base
        ))
        .await;
    browser
        .wait_for(
            "document.querySelectorAll('#jobs-body tr[data-job]').length === 1 && document.querySelector('#jobs-body tr[data-job=\"web-4242\"]')",
            Duration::from_secs(10),
            "the user filter",
        )
        .await;
    browser.go(&format!("{}/#/jobs", server.base)).await;
    browser
        .wait_for(
            "document.querySelectorAll('#jobs-body tr[data-job]').length > 10",
            Duration::from_secs(10),
            "the jobs list again",
        )
        .await;
    browser.screenshot(&out.join("jobs.png")).await;

    // The job page: samples become chart points, one series per node; those committed after
    // the page loaded its history but before its stream started (held back here, in the
    // browser, by a gate on EventSource) too.
    browser.eval(HOLD_STREAMS).await;
    browser
        .go(&format!("{}/#/jobs/web-4242", server.base))
        .await;
    browser
        .wait_for(
            "document.querySelector('#job-header h1') && document.querySelector('#audit tr') && window.__heldStreams.length === 1",
            Duration::from_secs(10),
            "the job page, its stream held back",
        )
        .await;
    let post_round = |round: i64| {
        let server = &server;
        async move {
            for (node, cpu) in [
                ("web-a", 40.0 + round as f64),
                ("web-b", 60.0 + round as f64),
            ] {
                let at = chrono::Utc::now() - chrono::Duration::seconds(30 - round * 10);
                post(
                    server,
                    "/v1/samples",
                    json!({"node": node, "collected_at": at, "interval_seconds": 10,
                           "jobs": [{"job_id": "web-4242", "cpu_usage_percent": cpu,
                                     "memory_current_bytes": (4 + round) * 1024 * 1024 * 1024_i64}]}),
                )
                .await;
            }
        }
    };
    post_round(0).await;
    browser.eval("window.__releaseStreams(); return 1;").await;
    browser
        .wait_for(
            "document.getElementById('live').classList.contains('on')",
            Duration::from_secs(10),
            "the job's stream open",
        )
        .await;
    post_round(1).await;
    post_round(2).await;
    let (points, _) = browser
        .wait_for(
            "(() => { const f = document.getElementById('chart-cpu'); return f && f.dataset.series === '2' && Number(f.dataset.points) >= 6 ? f.dataset.points : false; })()",
            Duration::from_secs(5),
            "six live chart points on two node series",
        )
        .await;
    eprintln!("CPU chart points: {points}");
    let latest = browser
        .eval("return [...document.querySelectorAll('#latest tr')].map(r => r.textContent);")
        .await;
    let latest = latest.to_string();
    assert!(
        latest.contains("web-a") && latest.contains("42.0 %"),
        "{latest}"
    );
    assert!(
        latest.contains("web-b") && latest.contains("62.0 %"),
        "{latest}"
    );
    let canvas = browser
        .eval("return document.querySelectorAll('#chart-cpu canvas, #chart-mem canvas').length;")
        .await;
    assert_eq!(canvas, json!(2), "a CPU and a memory chart are drawn");
    // The efficiency report follows the samples: the running job's is provisional and gives
    // its CPU efficiency from what was posted.
    let (report, _) = browser
        .wait_for(
            "(() => { const r = document.getElementById('report'); return r && /provisional/.test(r.textContent) && /CPU efficiency[0-9]+ %/.test(r.textContent) ? r.textContent : false; })()",
            Duration::from_secs(10),
            "the job's provisional efficiency report with a CPU figure",
        )
        .await;
    eprintln!("report: {report}");
    browser.screenshot(&out.join("job.png")).await;

    // A phone in dark mode: the cluster page fits the width (tables scroll inside their box).
    browser
        .send(
            "POST",
            &browser.session_path("/goog/cdp/execute"),
            Some(json!({"cmd": "Emulation.setEmulatedMedia",
                        "params": {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}})),
        )
        .await;
    browser
        .send(
            "POST",
            &browser.session_path("/window/rect"),
            Some(json!({"width": 400, "height": 900})),
        )
        .await;
    browser.go(&format!("{}/#/", server.base)).await;
    browser
        .wait_for(
            "document.querySelectorAll('#node-grid li').length === 50",
            Duration::from_secs(10),
            "the cluster page on a phone",
        )
        .await;
    let fits = browser
        .eval("return [document.documentElement.scrollWidth, window.innerWidth, matchMedia('(prefers-color-scheme: dark)').matches];")
        .await;
    assert!(
        fits[0].as_i64() <= fits[1].as_i64() && fits[2] == json!(true),
        "page wider than the phone, or not dark: {fits}"
    );
    browser
        .screenshot(&out.join("cluster-phone-dark.png"))
        .await;
    drop(browser);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_with_a_wrong_token_shows_an_error() {
    if !browser_available() {
        return;
    }
    let out = output_dir();
    let db = TestDb::new(Backend::Sqlite).await;
    let tokens = jobscope::api::auth::Tokens::parse(&format!("reader {READER}\n")).unwrap();
    let config = jobscope::config::ServeConfig {
        tokens: Some(tokens),
        ..common::serve_config(&db.url)
    };
    let server = TestServer::start_with(config, Some(db)).await;
    let browser = Browser::start().await;
    browser.go(&format!("{}/", server.base)).await;
    browser
        .wait_for(
            "document.getElementById('signin-form')",
            Duration::from_secs(10),
            "the sign-in form when the server wants a token",
        )
        .await;
    let type_and_submit = |token: &str| {
        format!(
            "const i = document.getElementById('token'); i.value = {}; document.getElementById('signin-form').requestSubmit(); return 1;",
            json!(token)
        )
    };
    browser.eval(&type_and_submit("not-the-right-token")).await;
    let (message, _) = browser
        .wait_for(
            "(() => { const e = document.getElementById('signin-error'); return e && !e.hidden && e.textContent; })()",
            Duration::from_secs(5),
            "an error for a wrong token",
        )
        .await;
    assert!(
        message.as_str().unwrap().contains("did not accept"),
        "{message}"
    );
    browser.screenshot(&out.join("signin-error.png")).await;
    // The token is never put in a URL.
    let href = browser.eval("return location.href;").await;
    assert!(!href.to_string().contains("not-the-right"), "{href}");

    browser.eval(&type_and_submit(READER)).await;
    browser
        .wait_for(
            "document.querySelector('#job-cards .card.running')",
            Duration::from_secs(10),
            "the cluster page after signing in",
        )
        .await;
    browser
        .wait_for(
            "document.getElementById('live').classList.contains('on')",
            Duration::from_secs(10),
            "the cluster stream, opened with a ticket",
        )
        .await;
    drop(browser);
    server.shutdown().await;
}
