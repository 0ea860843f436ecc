//! Test harness: a fresh database per test on either backend, the real router, and helpers to
//! send requests in-process (`warp::test`).
//!
//! PostgreSQL comes from `JOBSCOPE_TEST_POSTGRES_URL` (default: the local server, user
//! `postgres`). Each test creates its own database and drops it at the end. When PostgreSQL
//! cannot be reached the test fails; a developer without PostgreSQL can opt out explicitly with
//! `JOBSCOPE_TEST_SKIP_POSTGRES=1` (CI never sets it).

#![allow(dead_code)]

pub mod spec;
pub mod sse;

use jobscope::api::auth::Tokens;
use jobscope::api::{routes, AppState};
use jobscope::store::Store;
use serde_json::Value;
use sqlx::{Connection, Executor};
use warp::http::{HeaderMap, StatusCode};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn admin_url() -> String {
    std::env::var("JOBSCOPE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

pub fn skip_postgres() -> bool {
    std::env::var("JOBSCOPE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("jobscope_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                        "PostgreSQL is not reachable at {admin}: {e}. Start it (see README) or set \
                         JOBSCOPE_TEST_POSTGRES_URL; to skip the PostgreSQL half on purpose set \
                         JOBSCOPE_TEST_SKIP_POSTGRES=1"
                    )
                    });
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                let url = format!("{base}/{name}");
                TestDb {
                    url,
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Drops the PostgreSQL database even when the test panicked (its own runtime may be gone, so
/// this uses a short-lived one on a separate thread).
impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A response from the router.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts the status and, for errors, the JSON error code; returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let is_json = self
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        if is_json {
            self.json()
        } else {
            Value::Null
        }
    }
    /// Asserts an error response: status, `error` code and `message`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str, message: &str) {
        let body = self.expect(status);
        assert_eq!(body["error"], code, "{body}");
        assert_eq!(body["message"], message, "{body}");
    }
}

/// The API over one fresh database.
pub struct TestApp {
    pub db: TestDb,
    pub store: Store,
    state: AppState,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
    /// Dropping it stops the event feed.
    _stop: tokio::sync::watch::Sender<bool>,
}

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
pub const HOOK_TOKEN: &str = "hook-token-0123456789";
pub const AGENT_TOKEN: &str = "agent-token-0123456789";
pub const READER_TOKEN: &str = "reader-token-0123456789";

impl TestApp {
    pub async fn new(backend: Backend) -> TestApp {
        Self::build(backend, None).await
    }

    /// With one token of each role configured.
    pub async fn with_tokens(backend: Backend) -> TestApp {
        let text = format!(
            "admin {ADMIN_TOKEN}\nhook {HOOK_TOKEN}\nagent {AGENT_TOKEN}\nreader {READER_TOKEN}\n"
        );
        Self::build(backend, Some(Tokens::parse(&text).unwrap())).await
    }

    async fn build(backend: Backend, tokens: Option<Tokens>) -> TestApp {
        // Store errors are logged, never sent to clients: show them in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("jobscope=warn")
            .try_init();
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.url)
            .await
            .expect("store connects and migrates");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let events = jobscope::events::EventFeed::start(store.clone(), 4096, stopped.clone())
            .await
            .expect("event feed starts");
        let state = AppState {
            store: store.clone(),
            tokens,
            events,
            shutdown: stopped,
            tickets: Default::default(),
            streams: Default::default(),
            allowed_origins: Default::default(),
            metrics: Default::default(),
            metrics_token: None,
            slurm_health: None,
            report_grace: TEST_REPORT_GRACE,
        };
        TestApp {
            db,
            store,
            state,
            token: None,
            _stop: stop,
        }
    }

    pub async fn finish(self) {
        self.store.close().await;
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = warp::test::request().method(method).path(path);
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").json(body);
        }
        let resp = req.reply(&routes(self.state.clone())).await;
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.body().to_vec(),
        }
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = warp::test::request().method(method).path(path).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.reply(&routes(self.state.clone())).await;
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.body().to_vec(),
        }
    }

    /// Status of a request without reading its body (streams never end).
    pub async fn status_only(&self, method: &str, path: &str, body: Option<&Value>) -> u16 {
        let mut req = warp::test::request()
            .method(method)
            .path(path)
            .header("x-changed-by", "tester")
            .header("x-source", "integration-test");
        if let Some(body) = body {
            req = req.json(body);
        }
        match req.filter(&routes(self.state.clone())).await {
            Ok(response) => response.status().as_u16(),
            Err(rejection) => panic!("the router rejected {method} {path}: {rejection:?}"),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[]).await
    }

    /// A write through the job API, with the audit headers it requires.
    pub async fn write(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.request(
            method,
            path,
            body,
            &[("x-changed-by", "tester"), ("x-source", "integration-test")],
        )
        .await
    }

    pub async fn post_event(&self, kind: &str, body: &Value) -> Reply {
        self.request("POST", &format!("/v1/events/{kind}"), Some(body), &[])
            .await
    }

    /// job-started for `id` on `nodes`, asserting it was created.
    pub async fn start_job(&self, id: &str, user: &str, nodes: &[&str]) {
        let body = serde_json::json!({"job_id": id, "user": user, "node_list": nodes});
        let reply = self.post_event("job-started", &body).await.expect(200);
        assert_eq!(reply["status"], "created", "{reply}");
    }

    pub async fn audit(&self, id: &str) -> Vec<Value> {
        let body = self.get(&format!("/v1/jobs/{id}/audit")).await.expect(200);
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Rows of `metric_samples` for `job_id`, read from the database itself (the API answers
    /// 404 for a deleted job's samples).
    pub async fn sample_rows(&self, job_id: &str) -> i64 {
        self.rows_of("metric_samples", job_id).await
    }

    /// Rows of `table` for `job_id`, read from the database itself.
    pub async fn rows_of(&self, table: &str, job_id: &str) -> i64 {
        self.count(
            &format!("SELECT COUNT(*) FROM {table} WHERE job_id = $1"),
            job_id,
        )
        .await
    }

    /// The number `sql` (a `COUNT(*)` with `$1` for `job_id`) reads from the database itself.
    pub async fn count(&self, sql: &str, job_id: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.db.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.db.url).await.unwrap();
            let n = sqlx::query_scalar(sql).bind(job_id).fetch_one(&pool).await;
            pool.close().await;
            n.unwrap()
        } else {
            let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
            let n = sqlx::query_scalar(sql).bind(job_id).fetch_one(&pool).await;
            pool.close().await;
            n.unwrap()
        }
    }

    /// Runs `sql` (one statement; `$1` bound to `at` when given) on the database itself; rows
    /// affected.
    pub async fn execute(&self, sql: &str, at: Option<chrono::DateTime<chrono::Utc>>) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.db.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.db.url).await.unwrap();
            let query = sqlx::query(sql);
            let n = match at {
                Some(at) => query.bind(at).execute(&pool).await,
                None => query.execute(&pool).await,
            };
            pool.close().await;
            n.unwrap().rows_affected()
        } else {
            let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
            let query = sqlx::query(sql);
            let n = match at {
                Some(at) => query.bind(at).execute(&pool).await,
                None => query.execute(&pool).await,
            };
            pool.close().await;
            n.unwrap().rows_affected()
        }
    }

    pub async fn event_count(&self) -> i64 {
        self.store
            .last_event_id()
            .await
            .expect("event log readable")
    }
}

/// `serve` settings for tests: loopback port 0, no demo, no tokens, one day of retention.
pub fn serve_config(database_url: &str) -> jobscope::config::ServeConfig {
    jobscope::config::ServeConfig {
        retention: std::time::Duration::from_secs(86_400),
        report_grace: TEST_REPORT_GRACE,
        ..jobscope::config::ServeConfig::loopback(database_url)
    }
}

/// The `job_report` grace of test servers: short, so finished jobs' reports (and the close of
/// their single-job streams) come at once.
pub const TEST_REPORT_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// A real `serve` on a real socket, running until [`TestServer::shutdown`].
pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: Option<TestDb>,
}

impl TestServer {
    /// On a fresh database of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        let db = TestDb::new(backend).await;
        let config = serve_config(&db.url);
        Self::start_with(config, Some(db)).await
    }

    /// With `config`; `db` is kept alive as long as the server (none for a second replica).
    pub async fn start_with(
        config: jobscope::config::ServeConfig,
        db: Option<TestDb>,
    ) -> TestServer {
        let app = jobscope::app::Application::build(config)
            .await
            .expect("serve starts");
        let addr = app.local_addr();
        let store = app.store().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestServer {
            base: format!("http://{addr}"),
            addr,
            store,
            stop: Some(stop),
            task,
            db,
        }
    }

    /// The database URL, to start a second replica on it.
    pub fn database_url(&self) -> &str {
        &self.db.as_ref().expect("this server owns its database").url
    }

    /// An API write (audit headers included); asserts success.
    pub async fn post(&self, path: &str, body: Value) {
        let resp = http()
            .post(format!("{}{path}", self.base))
            .header("x-changed-by", "t")
            .header("x-source", "socket-test")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    /// A GET's JSON answer (no token); asserts success.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = http()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// job-started for `id` by `user` on one node.
    pub async fn started(&self, id: &str, user: &str) {
        self.post(
            "/v1/events/job-started",
            serde_json::json!({"job_id": id, "user": user, "node_list": ["n1"]}),
        )
        .await;
    }

    /// Stops the server but keeps its database, to start it again (same port) with
    /// [`TestServer::start_with`].
    pub async fn stop_keeping_db(mut self) -> Option<TestDb> {
        let _ = self.stop.take().unwrap().send(());
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
        assert!(done.is_ok(), "graceful shutdown took over 10 s");
        self.db.take()
    }

    /// Stops the server; fails if the graceful shutdown takes over 10 s (open streams must not
    /// hold it up).
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
        assert!(
            done.is_ok(),
            "graceful shutdown must not wait for open streams"
        );
    }
}

/// An HTTP client for tests that talk to a real socket.
pub fn http() -> reqwest::Client {
    jobscope::install_crypto_provider();
    reqwest::Client::new()
}

/// The text of `GET {base}/metrics`, asked without a token.
pub async fn scrape_text(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("a scrape")
        .text()
        .await
        .expect("the scrape's text")
}

/// The value of `series` (its name and labels as exposed, e.g. `up{job="x"}`) in a scrape.
pub fn series_value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// For each `async fn NAME(backend: Backend)` named, the tests `NAME::sqlite` and
/// `NAME::postgres`.
#[macro_export]
macro_rules! on_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
                #[tokio::test]
                async fn postgres() {
                    if $crate::common::skip_postgres() {
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )+
    };
}

/// Runs the body once on SQLite and once on PostgreSQL, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: &$crate::common::TestApp) $body

            #[tokio::test]
            async fn sqlite() {
                let app = $crate::common::TestApp::new($crate::common::Backend::Sqlite).await;
                run(&app).await;
                app.finish().await;
            }

            #[tokio::test]
            async fn postgres() {
                if $crate::common::skip_postgres() {
                    eprintln!("JOBSCOPE_TEST_SKIP_POSTGRES=1: PostgreSQL half skipped on request");
                    return;
                }
                let app = $crate::common::TestApp::new($crate::common::Backend::Postgres).await;
                run(&app).await;
                app.finish().await;
            }
        }
    };
}

/// A partition as the Slurm backend would store it: one node named after it, 8 CPUs, no jobs.
#[allow(dead_code)]
pub fn partition(
    name: &str,
    state: jobscope::domain::PartitionState,
) -> jobscope::domain::Partition {
    jobscope::domain::Partition {
        name: name.into(),
        state,
        is_default: false,
        nodes: vec![format!("{name}-01")],
        total_nodes: Some(1),
        total_cpus: Some(8),
        limits: Default::default(),
        jobs_running: 0,
        jobs_pending: 0,
        updated_at: chrono::Utc::now(),
    }
}

impl TestApp {
    /// With `tokens` configured (identities: users, Slurm JWTs).
    pub async fn with_given_tokens(backend: Backend, tokens: Tokens) -> TestApp {
        Self::build(backend, Some(tokens)).await
    }

    /// The router's state, to send requests with other headers.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }
}

/// Polls `check` until it gives `Some`, every `every`, for at most `limit`; the value it gave.
/// Panics naming `what` (and the last thing `check` saw, when it said) when time runs out. The
/// one way a test waits: on a condition, never on a clock.
pub async fn poll_until<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let every = std::time::Duration::from_millis(20).max(limit / 100);
    let started = std::time::Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if started.elapsed() >= limit => {
                panic!("waited {limit:?} for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}
