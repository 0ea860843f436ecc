//! One sampling pass on a node: find the running jobs' cgroups, read each, turn counters into a
//! CPU percentage against the previous pass, assign GPUs to jobs, read the node, and produce the
//! [`SampleBatch`] that `POST /v1/samples` takes. The agent and `serve --collect` both drive it.
//!
//! The sampler owns what must survive between passes (per job: the previous CPU reading, the
//! job's cgroup files kept open, its cpuset size; the GPU source, read buffers) and nothing
//! else; a job's state, open files included, goes with the first pass that does not report it.
//! Kept files are bounded by a share of the open-files limit ([`super::fd_limit`]): the jobs
//! beyond it are read file by file. Everything it does is blocking file and FFI I/O, so callers
//! run [`Sampler::sample`] on a blocking thread. It never invents a figure: a job it cannot
//! attribute, a cgroup it cannot read, a GPU it cannot place are left out (and counted), never
//! filled in.

use super::discovery::{discover, CgroupPaths, JobCgroup, JobKey};
use super::report::{JobReport, NodeStats, SampleBatch};
use super::{
    cpu_percent, fd_limit, AmdSysfs, CgroupFiles, CgroupReader, CpuPoint, GpuReading, GpuSource,
    NodeSampler, NvmlGpus, MAX_KEPT_FILES,
};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the server says about a job running on this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownJob {
    pub id: String,
    /// Slurm 26.05's job cgroup directory name (`SLURM_JOB_SLUID`), when the prolog sent it.
    pub sluid: Option<String>,
    /// An explicit cgroup from the job-started event; it wins over discovery.
    pub cgroup_path: Option<String>,
    /// CPUs the job holds on this node, when the scheduler said (single-node jobs, or an even
    /// split); the job's own `cpuset` is preferred when the cgroup has one.
    pub cpus_on_node: Option<u32>,
    /// `gpu_devices` of the job-started event: Slurm indices (device minor numbers), UUIDs or
    /// PCI bus ids.
    pub gpu_devices: Vec<String>,
    /// Who and where, for the agent's own per-job metrics labels.
    pub user: Option<String>,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub nodes: Vec<String>,
}

impl KnownJob {
    /// From a job as the API serves it (`GET /v1/nodes/{name}/jobs` items, or the store's Job
    /// serialised): read leniently, since a newer server may add fields and an older one lack
    /// `sluid`.
    pub fn from_json(job: &serde_json::Value) -> Option<KnownJob> {
        let id = job["id"].as_str()?.to_owned();
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let node_count = job["node_count"].as_u64().unwrap_or(1).max(1);
        let cpus = job["allocated_cpus"]
            .as_u64()
            .or_else(|| job["requested_cpus"].as_u64());
        let cpus_on_node = cpus
            .filter(|c| *c > 0 && c % node_count == 0)
            .and_then(|c| u32::try_from(c / node_count).ok());
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(KnownJob {
            id,
            sluid: text(&job["scheduler"]["sluid"]),
            cgroup_path: text(&job["cgroup_path"]),
            cpus_on_node,
            gpu_devices: strings(&job["gpu_devices"]),
            user: text(&job["user"]),
            account: text(&job["scheduler"]["account"]),
            partition: text(&job["scheduler"]["partition"]),
            nodes: strings(&job["nodes"]),
        })
    }
}

impl KnownJob {
    /// From the store's job (serve's in-process collector): the same reading as
    /// [`KnownJob::from_json`], without the JSON.
    pub fn from_job(job: &crate::domain::Job) -> KnownJob {
        let text = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
        let scheduler = job.scheduler.as_ref();
        let node_count = u64::try_from(job.node_count).unwrap_or(1).max(1);
        let cpus = job
            .allocated_cpus
            .and_then(|c| u64::try_from(c).ok())
            .or_else(|| job.requested_cpus.and_then(|c| u64::try_from(c).ok()));
        KnownJob {
            id: job.id.clone(),
            sluid: text(scheduler.and_then(|s| s.sluid.as_ref())),
            cgroup_path: text(job.cgroup_path.as_ref()),
            cpus_on_node: cpus
                .filter(|c| *c > 0 && c % node_count == 0)
                .and_then(|c| u32::try_from(c / node_count).ok()),
            gpu_devices: job.gpu_devices.clone(),
            user: text(Some(&job.user)),
            account: text(scheduler.and_then(|s| s.account.as_ref())),
            partition: text(scheduler.and_then(|s| s.partition.as_ref())),
            nodes: job.nodes.clone(),
        }
    }
}

/// The node's name: `explicit` when given, else the host name up to its first dot (Slurm's
/// usual node name).
pub fn node_name(explicit: Option<&str>, proc_root: &Path) -> Option<String> {
    if let Some(name) = explicit.map(str::trim).filter(|n| !n.is_empty()) {
        return Some(name.to_owned());
    }
    let host = std::fs::read_to_string(proc_root.join("sys/kernel/hostname")).ok()?;
    let short = host.trim().split('.').next()?.to_owned();
    (!short.is_empty()).then_some(short)
}

/// Which GPUs to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuChoice {
    /// NVML if it loads, else amdgpu sysfs if a card is there, else none.
    Auto,
    Nvidia,
    Amd,
    None,
}

/// Where a sampler reads from.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub node: String,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    pub drm_root: PathBuf,
    pub interval: Duration,
    /// Cgroup files kept open between passes at most (about eleven a job); 0 opens, reads and
    /// closes every file every pass. The open-files limit may allow fewer (see [`fd_limit`]).
    pub max_open_cgroup_files: usize,
}

/// What one pass could not use, for the agent's counters and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassNotes {
    /// Cgroups in SLUID directories no job-started event has named.
    pub unattributed_cgroups: usize,
    /// Jobs whose cgroup vanished during the read (they ended).
    pub vanished: usize,
    /// The cgroup root could not be read at all.
    pub root_unreadable: bool,
}

/// A job's first pass and every this many after it look again for the files it lacked and
/// re-read its cpuset: a running job's cpuset does not change and a controller is rarely
/// enabled late, so this only bounds how long such a change goes unseen (5 minutes at the
/// default 15 s), at a twentieth of the cost of looking every pass.
const REFRESH_PASSES: u32 = 20;

/// What the sampler keeps of a job between passes.
#[derive(Debug, Default)]
struct JobState {
    /// The last CPU reading, for the next pass's percentage.
    previous_cpu: Option<CpuPoint>,
    /// Kept open, or transient while the job is beyond the budget.
    files: CgroupFiles,
    /// [`cpuset_size`] as of the last refresh.
    cpuset: Option<u32>,
    /// Passes read, for [`REFRESH_PASSES`].
    passes: u32,
    /// The last pass that reported the job.
    reported_in: u64,
}

/// The node's sampler; see the module docs.
pub struct Sampler {
    config: SamplerConfig,
    cgroups: CgroupReader,
    node: NodeSampler,
    gpus: Option<Box<dyn GpuSource>>,
    jobs: HashMap<String, JobState>,
    /// How many jobs may keep their cgroup files open (see [`fd_limit`]).
    max_kept_jobs: usize,
    passes: u64,
    warned_root: bool,
}

impl Sampler {
    pub fn new(config: SamplerConfig, gpus: Option<Box<dyn GpuSource>>) -> Sampler {
        let budget = fd_limit::open_files_limit()
            .map_or(0, fd_limit::kept_files_budget)
            .min(config.max_open_cgroup_files);
        Sampler {
            node: NodeSampler::new(config.proc_root.clone()),
            cgroups: CgroupReader::new(super::USER_HZ),
            config,
            gpus,
            jobs: HashMap::new(),
            max_kept_jobs: budget / MAX_KEPT_FILES,
            passes: 0,
            warned_root: false,
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Reads every job cgroup and the node once. `known` are the jobs the server has running
    /// here; discovery adds jobs it does not know (their samples are rejected per item and
    /// counted there, which tells an admin a prolog was lost).
    pub fn sample(&mut self, known: &[KnownJob], now: DateTime<Utc>) -> (SampleBatch, PassNotes) {
        let mut notes = PassNotes::default();
        let cgroups = self.job_cgroups(known, &mut notes);
        let by_id: HashMap<&str, &KnownJob> = known.iter().map(|j| (j.id.as_str(), j)).collect();

        let devices = self.gpus.as_mut().map(|g| g.devices()).unwrap_or_default();
        let owners = self.gpu_owners(&devices, &cgroups, known);

        self.passes += 1;
        let pass = self.passes;
        let mut kept = self.jobs.values().filter(|j| j.files.is_kept()).count();
        let mut jobs = Vec::with_capacity(cgroups.len());
        for (id, cgroup) in &cgroups {
            if !self.jobs.contains_key(id) {
                self.jobs.insert(id.clone(), JobState::default());
            }
            let state = self.jobs.get_mut(id).expect("inserted above");
            // Jobs beyond the budget are read file by file until a kept job ends.
            if !state.files.is_kept() && kept < self.max_kept_jobs {
                state.files = CgroupFiles::kept();
                kept += 1;
            }
            let refresh = state.passes.is_multiple_of(REFRESH_PASSES);
            state.passes = state.passes.wrapping_add(1);
            let read_at = Utc::now();
            let sample = self.cgroups.read_kept(cgroup, &mut state.files, refresh);
            if sample.vanished {
                notes.vanished += 1;
            }
            if !worth_reporting(&sample) {
                continue;
            }
            // Also on the second pass: the first may run before slurmstepd has written the job's
            // cpuset (v2 then shows the parent's CPUs, v1 an empty set), and the first sample
            // has no percentage to divide yet.
            if refresh || state.passes == 2 {
                state.cpuset = cpuset_size(cgroup);
            }
            let cpus = state
                .cpuset
                .or_else(|| by_id.get(id.as_str()).and_then(|j| j.cpus_on_node));
            let cpu_usage_percent = match (sample.cpu_usage_usec, cpus) {
                (Some(usage_usec), cpus) => {
                    let point = CpuPoint {
                        usage_usec,
                        at: read_at,
                    };
                    let previous = state.previous_cpu.replace(point);
                    cpus.and_then(|c| cpu_percent(previous, point, c))
                }
                (None, _) => None,
            };
            state.reported_in = pass;
            let gpus: Vec<GpuReading> = devices
                .iter()
                .zip(&owners)
                .filter(|(_, owner)| owner.contains(id))
                .map(|(d, _)| d.clone())
                .collect();
            jobs.push(JobReport {
                job_id: id.clone(),
                collected_at: Some(read_at),
                cpu_usage_percent,
                cgroup: sample,
                gpus,
            });
        }
        // A job not reported this pass ended (or cannot be read at all): its files close.
        self.jobs.retain(|_, job| job.reported_in == pass);

        let node_stats = NodeStats {
            sample: self.node.sample(),
            gpus: devices,
        };
        let batch = SampleBatch {
            node: self.config.node.clone(),
            collected_at: now,
            interval_seconds: Some(self.config.interval.as_secs_f64()),
            jobs,
            node_stats: Some(node_stats),
        };
        (batch, notes)
    }

    /// Job id → its job-level cgroup: discovered ones, overridden by explicit paths.
    fn job_cgroups(
        &mut self,
        known: &[KnownJob],
        notes: &mut PassNotes,
    ) -> Vec<(String, JobCgroup)> {
        let root = self.config.cgroup_root.clone();
        let sluids: HashMap<String, String> = known
            .iter()
            .filter_map(|j| Some((j.sluid.clone()?, j.id.clone())))
            .collect();
        let mut found: HashMap<String, JobCgroup> = HashMap::new();
        match discover(&root, Some(&self.config.node), &sluids) {
            Ok(cgroups) => {
                self.warned_root = false;
                for cgroup in cgroups {
                    match &cgroup.job_key {
                        JobKey::JobId(id) => {
                            found.insert(id.clone(), cgroup);
                        }
                        JobKey::Sluid(_) => notes.unattributed_cgroups += 1,
                    }
                }
            }
            Err(err) => {
                notes.root_unreadable = true;
                if !self.warned_root {
                    self.warned_root = true;
                    tracing::warn!(root = %root.display(), error = %err, "cannot read the cgroup root; no job samples until it is readable");
                }
            }
        }
        for job in known {
            if let Some(path) = &job.cgroup_path {
                let key = JobKey::JobId(job.id.clone());
                if let Some(cgroup) = JobCgroup::from_explicit(&root, key, Path::new(path)) {
                    found.insert(job.id.clone(), cgroup);
                }
            }
        }
        let mut out: Vec<(String, JobCgroup)> = found.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// For each device, the ids of the jobs it belongs to: a job whose processes run on it, or
    /// a job whose `gpu_devices` names it (so a GPU held and unused shows up at 0 %).
    fn gpu_owners(
        &self,
        devices: &[GpuReading],
        cgroups: &[(String, JobCgroup)],
        known: &[KnownJob],
    ) -> Vec<HashSet<String>> {
        let dir_to_job: HashMap<String, &str> = cgroups
            .iter()
            .filter_map(|(id, cg)| Some((job_dir_name(cg)?, id.as_str())))
            .collect();
        devices
            .iter()
            .map(|device| {
                let mut owners: HashSet<String> = HashSet::new();
                for pid in &device.processes {
                    if let Some(id) = self.job_of_pid(*pid, &dir_to_job) {
                        owners.insert(id.to_owned());
                    }
                }
                for job in known {
                    if job
                        .gpu_devices
                        .iter()
                        .any(|name| names_device(name, device))
                    {
                        owners.insert(job.id.clone());
                    }
                }
                owners
            })
            .collect()
    }

    /// The job whose cgroup directory appears in the process's cgroup paths.
    fn job_of_pid<'a>(&self, pid: u32, dir_to_job: &HashMap<String, &'a str>) -> Option<&'a str> {
        let text =
            std::fs::read_to_string(self.config.proc_root.join(pid.to_string()).join("cgroup"))
                .ok()?;
        text.lines()
            .filter_map(|line| line.splitn(3, ':').nth(2))
            .flat_map(|path| path.split('/'))
            .find_map(|component| dir_to_job.get(component).copied())
    }
}

/// Whether a read produced anything. A cgroup gone before a single figure was read (the job
/// ended between discovery and the read) has nothing to report, and an empty sample would still
/// count in the job's `sample_count`.
fn worth_reporting(sample: &super::CgroupSample) -> bool {
    let nothing = super::CgroupSample {
        vanished: sample.vanished,
        ..Default::default()
    };
    *sample != nothing
}

/// Name of the job-level directory (`job_42`, or a SLUID), which every process of the job has
/// in its `/proc/<pid>/cgroup` paths.
fn job_dir_name(cgroup: &JobCgroup) -> Option<String> {
    let dir = match &cgroup.paths {
        CgroupPaths::V2(dir) => dir,
        CgroupPaths::V1(dirs) => dirs.values().next()?,
    };
    Some(dir.file_name()?.to_str()?.to_owned())
}

/// Whether one of a job's `gpu_devices` entries names `device`: a UUID, a PCI bus id, or a
/// Slurm index, which counts device minor numbers (not the vendor library's order).
pub fn names_device(name: &str, device: &GpuReading) -> bool {
    let name = name.trim();
    if let Ok(index) = name.parse::<u32>() {
        return device.minor.unwrap_or(device.index) == index;
    }
    device
        .uuid
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(name))
        || device
            .pci_bus_id
            .as_deref()
            .is_some_and(|p| super::normalise_bus_id(name) == *p)
}

/// CPUs in the job's cpuset (`cpuset.cpus.effective` on v2, `cpuset.cpus` in v1's cpuset
/// hierarchy): exactly what the job may run on, on this node.
pub fn cpuset_size(cgroup: &JobCgroup) -> Option<u32> {
    let file = match &cgroup.paths {
        CgroupPaths::V2(dir) => dir.join("cpuset.cpus.effective"),
        CgroupPaths::V1(dirs) => dirs
            .iter()
            .find(|(controller, _)| controller.split(',').any(|c| c == "cpuset"))?
            .1
            .join("cpuset.cpus"),
    };
    parse_cpu_list(std::fs::read_to_string(file).ok()?.trim())
}

/// Size of a kernel CPU list (`0-3,8,10-11`); `None` when malformed or empty.
pub fn parse_cpu_list(list: &str) -> Option<u32> {
    if list.is_empty() {
        return None;
    }
    let mut total: u32 = 0;
    for part in list.split(',') {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
        total = total.checked_add(n)?;
    }
    Some(total)
}

/// The GPU source chosen by `choice`, and a line saying what was found. `None` means the GPU
/// part is off.
pub fn open_gpus(choice: GpuChoice, drm_root: &Path) -> (Option<Box<dyn GpuSource>>, String) {
    let nvidia = || match NvmlGpus::open() {
        Ok(g) => {
            let line = format!("NVIDIA GPUs through NVML: {} device(s)", g.device_count());
            Ok((Box::new(g) as Box<dyn GpuSource>, line))
        }
        Err(reason) => Err(reason),
    };
    let amd = || {
        let mut source = AmdSysfs::new(drm_root);
        let n = source.devices().len();
        if n > 0 {
            Ok((
                Box::new(source) as Box<dyn GpuSource>,
                format!("AMD GPUs through amdgpu sysfs: {n} card(s)"),
            ))
        } else {
            Err(format!("no amdgpu card under {}", drm_root.display()))
        }
    };
    let chosen = match choice {
        GpuChoice::None => Err("GPU sampling disabled (--gpu none)".to_owned()),
        GpuChoice::Nvidia => nvidia(),
        GpuChoice::Amd => amd(),
        GpuChoice::Auto => {
            nvidia().or_else(|nv| amd().map_err(|amd| format!("no GPUs: {nv}; {amd}")))
        }
    };
    match chosen {
        Ok((source, line)) => (Some(source), line),
        Err(reason) => (None, format!("GPU sampling off: {reason}")),
    }
}

#[cfg(test)]
mod tests;
