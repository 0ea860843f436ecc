//! Pure rules of the job model: states and their transitions, the Slurm state mapping used by
//! the epilog path, and input validation. Nothing here does I/O, so every rule is unit-tested
//! directly.

pub mod duration;
pub mod event;
pub mod figures;
pub mod gpu;
pub mod job;
pub mod joblog;
pub mod nodelist;
pub mod partition;
pub mod report;
pub mod rollup;
pub mod sample_pack;
pub mod slurm_state;
pub mod usage;
pub mod validate;

pub use job::{now_micros, AuditEvent, GpuVendor, Job, JobState, MetricSample, SchedulerInfo};
pub use partition::{Partition, PartitionLimits, PartitionState};
pub use usage::{Node, NodeState, SampleDetail};
