//! Set-up shared by the benchmarks (each includes this file with `#[path]` and uses part of it):
//! the "only under `cargo bench`" prelude and a `main` over the backends, environment knobs, a
//! fresh PostgreSQL database per run, a running job with its samples stored as agents send them,
//! and the API calls the benchmarks make to set up and check their data. `serve` in-process
//! takes `ServeConfig::loopback`.
#![allow(dead_code)]

use sqlx::{Connection, Executor};

/// `key` from the environment, or `default`.
pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// A comma list of numbers from the environment, or `default`; entries that are not numbers
/// are skipped.
pub fn env_list<T: std::str::FromStr>(key: &str, default: &str) -> Vec<T> {
    env_or(key, default)
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Posts a job-started hook to `serve` at `addr`; panics unless it is accepted.
pub async fn post_job_started(
    client: &reqwest::Client,
    addr: impl std::fmt::Display,
    body: &serde_json::Value,
) {
    let r = client
        .post(format!("http://{addr}/v1/events/job-started"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// How many samples `serve` at `addr` has stored for job `id`.
pub async fn stored_samples(
    client: &reqwest::Client,
    addr: impl std::fmt::Display,
    id: &str,
) -> u64 {
    let v = get_json(
        client,
        &format!("http://{addr}/v1/jobs/{id}/metrics?limit=1"),
    )
    .await;
    v["total"].as_u64().unwrap_or(0)
}

/// Drops and creates database `name` on the PostgreSQL server of `JOBSCOPE_BENCH_POSTGRES_URL`
/// (default postgres://postgres@127.0.0.1:5432/postgres); its URL.
pub async fn create_pg_database(name: &str) -> String {
    let admin = env_or(
        "JOBSCOPE_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let admin = admin.as_str();
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("PostgreSQL reachable");
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await
    .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

/// Whether `cargo bench` asked for this benchmark (`cargo test --all-targets` also runs bench
/// targets, which must then do nothing); with `RUST_LOG` set, logs go to stderr.
pub fn begin(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: run with `cargo bench --bench {name}`");
        return false;
    }
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    jobscope::install_crypto_provider();
    true
}

/// The `p` quantile (0..=1) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The database URL of `backend` (`sqlite`: a file `NAME.db` in `dir`; `postgres`: a fresh
/// database `jobscope_bench_NAME`).
pub fn backend_url(
    rt: &tokio::runtime::Runtime,
    backend: &str,
    dir: &std::path::Path,
    name: &str,
) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
        "postgres" => rt.block_on(create_pg_database(&format!("jobscope_bench_{name}"))),
        other => panic!("unknown backend {other}"),
    }
}

/// The audit context of the rows a benchmark writes itself.
pub fn bench_audit() -> jobscope::store::AuditContext {
    jobscope::store::AuditContext {
        changed_by: "bench".into(),
        source: "bench".into(),
        correlation_id: "bench".into(),
        actor: None,
    }
}

/// Creates job `id`, running on `node-01` for alice since `start`, after `edit` has set what
/// the benchmark needs (allocations).
pub async fn create_running_job(
    store: &jobscope::store::Store,
    id: &str,
    start: chrono::DateTime<chrono::Utc>,
    edit: impl FnOnce(&mut jobscope::domain::Job),
) {
    let mut job = jobscope::domain::Job::new(
        id.into(),
        "alice".into(),
        vec!["node-01".into()],
        jobscope::domain::JobState::Running,
        start,
        "bench",
        "slurm",
        "api-v1",
    );
    edit(&mut job);
    store.create_job(&job, &bench_audit()).await.expect("job");
}

/// Stores `items` through `Store::ingest_samples` in batches of 1,000, as agents send them;
/// panics unless every sample is accepted.
pub async fn ingest_all(store: &jobscope::store::Store, items: &[jobscope::store::SampleItem]) {
    for chunk in items.chunks(1000) {
        let outcome = store
            .ingest_samples(chunk, None, jobscope::store::LatePolicy::UntilJobEnd)
            .await
            .expect("batch");
        assert_eq!(outcome.accepted, chunk.len());
    }
}

/// `runs` GETs of `url` after 10 warm-ups, each timed to its body's last byte: the times,
/// sorted, and the body's length.
pub async fn timed(
    client: &reqwest::Client,
    url: &str,
    runs: usize,
) -> (Vec<std::time::Duration>, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for i in 0..runs + 10 {
        let started = std::time::Instant::now();
        let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
        if i >= 10 {
            times.push(started.elapsed());
        }
        size = body.len();
    }
    times.sort();
    (times, size)
}

/// The body of `GET url` as JSON; panics on a transport or decoding error.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `main` of a benchmark that runs once per backend of `BENCH_BACKENDS` (default
/// "postgres,sqlite") with `BENCH_SAMPLES` samples and `BENCH_RUNS` runs (defaults given):
/// prints the Markdown table head of `columns`, then awaits `run(backend, url, samples, runs)`
/// for each backend on a fresh database named after `db_name` (see [`backend_url`]).
pub fn main_over_backends<F, Fut>(
    name: &str,
    db_name: &str,
    default_samples: &str,
    default_runs: &str,
    columns: &[&str],
    run: F,
) where
    F: Fn(String, String, usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !begin(name) {
        return;
    }
    let samples: usize = env_or("BENCH_SAMPLES", default_samples).parse().unwrap();
    let runs: usize = env_or("BENCH_RUNS", default_runs).parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!("| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
    for backend in env_or("BENCH_BACKENDS", "postgres,sqlite").split(',') {
        let url = backend_url(&rt, backend, dir.path(), db_name);
        rt.block_on(run(backend.to_owned(), url, samples, runs));
    }
}

/// `serve` running in-process on a loopback socket, until [`Served::stop`].
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts `serve` over the database `url` (`ServeConfig::loopback`).
pub async fn serve(url: &str) -> Served {
    let app = jobscope::app::Application::build(jobscope::config::ServeConfig::loopback(url))
        .await
        .unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Served { addr, stop, server }
}

impl Served {
    /// Asks `serve` to shut down and waits for it, at most 10 s.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.server).await;
    }
}

/// Sample rows as an agent on cgroup v2 sends them, written by one `INSERT ... SELECT` over
/// `generate_series` (storage_size, at_size): jobs `job-1` to `job-$2` on nodes `node-(j % 1000)`,
/// one job in ten with four GPUs, samples `$3` to `$4 - 1` (sample `i` of job `j` at
/// `$1 + 15 i + j % 15` seconds), with counters that grow with `i`.
pub const FILL_SQL: &str = "INSERT INTO metric_samples (job_id, timestamp, node, cpu_usage, memory_usage_mb, \
    cpu_time_seconds, cpu_user_seconds, cpu_system_seconds, cpu_throttled_seconds, cpu_nr_throttled, \
    memory_usage_bytes, memory_peak_bytes, memory_limit_bytes, memory_anon_bytes, memory_file_bytes, \
    memory_shmem_bytes, oom_kills, io_read_bytes, io_write_bytes, io_read_ops, io_write_ops, pids, \
    pressure, gpus) \
    SELECT 'job-' || j, $1::timestamptz + make_interval(secs => i * 15 + (j % 15)), 'node-' || (j % 1000), \
      CASE WHEN i = 0 THEN NULL ELSE random() * 100 END, (2000 + (sin(i / 40.0) * 50))::bigint, \
      round((i * 55.5 + random() * 3)::numeric, 6)::float8, round((i * 50.1 + random() * 2)::numeric, 6)::float8, \
      round((i * 5.4 + random())::numeric, 6)::float8, 0, 0, \
      2000000000 + (sin(i / 40.0) * 50000000)::bigint + (random() * 409600)::bigint, 2100000000, 8589934592, \
      1900000000 + (sin(i / 40.0) * 50000000)::bigint, 90000000 + (random() * 40960)::bigint, 0, 0, \
      i * 1048576 + (random() * 65536)::bigint, i * 262144 + (random() * 4096)::bigint, i * 16, i * 4, \
      32 + (random() * 3)::int, \
      json_build_object( \
        'cpu', json_build_object('some_avg10', round((random() * 2)::numeric, 2), 'some_total_usec', i * 1500 + (random() * 100)::int), \
        'memory', json_build_object('some_avg10', 0.0, 'some_total_usec', i * 3), \
        'io', json_build_object('some_avg10', round((random() * 0.5)::numeric, 2), 'some_total_usec', i * 700)), \
      CASE WHEN j % 10 = 0 THEN (SELECT json_agg(json_build_object( \
        'index', g, 'uuid', 'GPU-' || md5(j::text || '-' || g::text), 'pci_bus_id', '0000:' || (16 + g) || ':00.0', \
        'minor', g, 'vendor', 'nvidia', 'utilization_percent', (random() * 100)::int, \
        'memory_used_bytes', 40000000000 + (random() * 1000000)::bigint * 4096, 'memory_total_bytes', 85899345920, \
        'power_watts', round((250 + random() * 400)::numeric, 3), 'energy_joules', round((i * 6000 + random() * 100)::numeric, 3), \
        'temperature_celsius', 55 + (random() * 20)::int, 'processes', json_build_array(4000 + j))) \
        FROM generate_series(0, 3) g) END \
    FROM generate_series(1, $2::int) j, generate_series($3::bigint, $4::bigint - 1) i";

/// Posts one sample batch (`body`, JSON) to `serve` at `addr`; the time to its answer. Panics
/// unless it is accepted whole (`expected` samples).
pub async fn post_samples_timed(
    client: &reqwest::Client,
    addr: impl std::fmt::Display,
    body: Vec<u8>,
    expected: usize,
) -> std::time::Duration {
    let t = std::time::Instant::now();
    let r = client
        .post(format!("http://{addr}/v1/samples"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: serde_json::Value = r.json().await.unwrap();
    let took = t.elapsed();
    assert!(status.is_success(), "{status}: {answer}");
    assert_eq!(answer["accepted"], expected, "{answer}");
    took
}

/// Running job `job-J` of the storage benches: started at `start` on `node-(J mod 1000)` by
/// `user(J mod users)`, 4 CPUs, and four GPUs for one job in ten.
pub fn bench_job(
    j: i64,
    users: i64,
    start: chrono::DateTime<chrono::Utc>,
) -> jobscope::domain::Job {
    let mut job = jobscope::domain::Job::new(
        format!("job-{j}"),
        format!("user{}", j % users),
        vec![format!("node-{}", j % 1000)],
        jobscope::domain::JobState::Running,
        start,
        "bench",
        "slurm",
        "api-v1",
    );
    job.allocated_cpus = Some(4);
    job.allocated_gpus = Some(if j % 10 == 0 { 4 } else { 0 });
    job
}
