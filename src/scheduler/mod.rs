//! Where jobs come from besides the hooks: [`mock`] seeds a demo cluster's history, [`demo`]
//! keeps that cluster moving under `serve --demo` (its make-up in `demo/mix.rs`, its agents'
//! sample batches in `demo/agents.rs`), and [`slurm`] is the Slurm backend (slurmrestd
//! reconciliation of jobs, nodes and partitions).

pub mod demo;
pub mod mock;
pub mod slurm;
