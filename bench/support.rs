//! Set-up shared by the benchmarks that start `serve` in-process: an environment knob, a
//! `ServeConfig` on a free loopback port, and a fresh PostgreSQL database per run.

use jobscope::cli::SchedulerKind;
use jobscope::config::ServeConfig;
use sqlx::{Connection, Executor};
use std::time::Duration;

/// `key` from the environment, or `default`.
pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// `serve` on 127.0.0.1:0 with `database_url`, no tokens, no demo, no scheduler.
pub fn config(database_url: &str) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.to_string(),
        retention: Duration::from_secs(7 * 86_400),
        demo: false,
        scheduler: SchedulerKind::None,
        tokens: None,
        insecure_no_auth: false,
        allowed_origins: Vec::new(),
        slurm: None,
        collect: None,
        metrics: Default::default(),
        client_stall_timeout: jobscope::api::socket::DEFAULT_STALL_TIMEOUT,
    }
}

/// Drops and creates database `name` on the server of `admin`; its URL.
pub async fn create_pg_database(admin: &str, name: &str) -> String {
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
