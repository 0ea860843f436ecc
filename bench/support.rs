//! Set-up shared by the benchmarks (each includes this file with `#[path]` and uses part of it):
//! the "only under `cargo bench`" prelude, environment knobs, a fresh PostgreSQL database per
//! run, and the two API calls the benchmarks make to set up and check their data. `serve`
//! in-process takes `ServeConfig::loopback`.
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
    let v: serde_json::Value = client
        .get(format!("http://{addr}/v1/jobs/{id}/metrics?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
