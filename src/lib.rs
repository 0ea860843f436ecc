//! jobscope: job observability for HPC clusters.
//!
//! Slurm's prolog and epilog post lifecycle events to `serve`; every change goes through the
//! [`store`] in one transaction with its audit row and an event-log row; the [`api`] serves the
//! `/v1` REST surface wire-compatible with the Go service jobscope replaces.
//!
//! The modules, lowest first:
//! - [`domain`]: the job model, its rules, the types every layer shares (GPU readings, agent
//!   reports, Slurm host lists) and the event contract ([`domain::event`]: an
//!   [`events::EventKind`] and one payload type per kind); pure, no I/O;
//! - [`collector`]: what a node measures (cgroups, GPUs, `/proc`); [`log_tail`]: the agent's
//!   reader of jobs' output files; [`spool`]: the on-disk queue of what could not be delivered;
//!   [`token_file`]: the one token-file rule; [`log_safe`]: text fit for a log line;
//! - [`store`]: the database (SQLite or PostgreSQL), one transaction per change, and the event
//!   log it writes the contract's payloads into (the SQL of both backends, by table, in
//!   `store/queries/`); it reports its timings through [`store::StoreObserver`], which
//!   `metrics` implements;
//! - [`events`] (the feed of committed events), [`metrics`], [`report_events`] and
//!   [`scheduler`] sit on the store; [`api`] and [`console`] serve them;
//! - [`client`]: the one client of our own API (URL join, token, retries, error text, and the
//!   `--server`/`--token-file` flags of the commands that use it);
//! - the commands on top: [`app`] (`serve`, whose flags and checked settings are [`config`]),
//!   [`agent`], [`hook`] (flags and settings in [`hook::config`]), [`watch`], [`report`],
//!   [`log_cmd`]; [`cli`] gathers them into subcommands and turns the agent's and watch's
//!   arguments into their settings.
//!
//! tests/layers.rs checks that no module refers to one above it; none does.

pub mod agent;
pub mod api;
pub mod app;
pub mod cli;
pub mod client;
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
