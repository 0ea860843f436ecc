//! Where jobs come from besides the hooks: [`demo`] is the cluster of `serve --demo` (its
//! make-up in `demo/mix.rs`, the history it seeds in `demo/history.rs`, its agents' sample
//! batches in `demo/agents.rs`), and [`slurm`] is the Slurm backend (slurmrestd reconciliation
//! of jobs, nodes and partitions).

pub mod demo;
pub mod slurm;
