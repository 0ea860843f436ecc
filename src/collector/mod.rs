//! What a job actually used, measured on its node. [`discovery`] finds the job-level cgroups of
//! running jobs in whichever layout Slurm produced; [`cgroup`] reads one of them into a
//! [`CgroupSample`] and turns two samples into a CPU percentage.
//!
//! Both halves are pure functions of a directory tree (the root is a parameter), so every layout
//! and every damaged file is tested on fixture trees, and neither owns state between intervals:
//! the [`sampler`] that calls them owns the previous sample and each job's kept-open cgroup
//! files ([`CgroupFiles`]), within the share of the open-files limit [`fd_limit`] grants.

pub mod cgroup;
pub mod discovery;
pub mod fd_limit;
pub mod gpu;
pub mod node;
pub mod report;
pub mod sampler;

pub use cgroup::{
    cpu_percent, CgroupFiles, CgroupReader, CgroupSample, CpuPoint, Pressure, MAX_KEPT_FILES,
    USER_HZ,
};
pub use discovery::{discover, CgroupPaths, CgroupVersion, JobCgroup, JobKey, DEFAULT_CGROUP_ROOT};
pub use gpu::{
    normalise_bus_id, AmdSysfs, FakeGpus, GpuReading, GpuSource, GpuVendor, NvmlGpus,
    DEFAULT_DRM_ROOT,
};
pub use node::{cpu_usage_percent, CpuTicks, NodeSample, NodeSampler, DEFAULT_PROC_ROOT};
pub use report::{JobReport, NodeStats, SampleBatch};
pub use sampler::{open_gpus, GpuChoice, KnownJob, PassNotes, Sampler, SamplerConfig};
