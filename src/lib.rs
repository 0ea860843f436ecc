//! jobscope: job observability for HPC clusters.
//!
//! Slurm's prolog and epilog post lifecycle events to `serve`; every change goes through the
//! [`store`] in one transaction with its audit row and an event-log row; the [`api`] serves the
//! `/v1` REST surface wire-compatible with the Go service jobscope replaces.

pub mod agent;
pub mod api;
pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod console;
pub mod domain;
pub mod events;
pub mod hook;
pub mod log_cmd;
pub mod log_safe;
pub mod log_tail;
pub mod metrics;
pub mod report;
pub mod report_events;
pub mod scheduler;
pub mod spool;
pub mod store;
pub mod token_file;
pub mod watch;

/// Installs ring as the process's rustls provider. reqwest is built with `rustls-no-provider`
/// so that one crypto provider (ring, which sqlx's TLS uses too) is in the tree; no HTTP client
/// can be built before this has run. Idempotent: a provider installed first is kept.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
