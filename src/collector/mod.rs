//! What a job actually used, measured on its node, and what the agent sends of it.
//!
//! - [`discovery`] finds the job-level cgroups of running jobs in whichever layout Slurm produced;
//! - [`cgroup`] reads one of them into a [`CgroupSample`] and turns two samples into a CPU
//!   percentage;
//! - [`gpu`] reads the node's GPUs (NVML for NVIDIA, amdgpu sysfs for AMD) into [`GpuReading`]s;
//! - [`node`] reads the node's own figures from `/proc` (CPU, memory, load);
//! - [`sampler`] runs one pass over the running jobs: it owns the previous sample and each job's
//!   kept-open cgroup files ([`CgroupFiles`]), within the share of the open-files limit that
//!   [`fd_limit`] grants (its tests, over fake cgroup trees, in `sampler/tests.rs`);
//! - [`report`] is the batch a pass makes (`POST /v1/samples`) and its conversion into what the
//!   store keeps.
//!
//! The readers are pure functions of a directory tree (the root is a parameter), so every layout
//! and every damaged file is tested on fixture trees, and none owns state between intervals.

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
