//! Where jobs come from besides the hooks. `mock` seeds a demo cluster; the Slurm backend
//! (slurmrestd reconciliation) lands here too.

pub mod demo;
pub mod mock;
pub mod slurm;
