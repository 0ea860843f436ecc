//! jobscope: job observability for HPC clusters.
//!
//! Slurm's prolog and epilog post lifecycle events to `serve`; every change goes through the
//! [`store`] in one transaction with its audit row and an event-log row; the [`api`] serves the
//! `/v1` REST surface wire-compatible with the Go service jobscope replaces.

pub mod api;
pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod domain;
pub mod events;
pub mod scheduler;
pub mod store;
