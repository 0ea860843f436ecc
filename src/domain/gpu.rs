//! A GPU as the collector reads it and everything above stores and serves it: [`GpuReading`]
//! (one device at one instant) and its [`GpuVendor`]. The collector's sources
//! (`collector::gpu`) make them; samples, nodes, reports and metrics carry them.

use serde::{Deserialize, Serialize};

/// Who made the device, as written in JSON (`"nvidia"`, `"amd"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    Nvidia,
    Amd,
}

impl GpuVendor {
    /// Its JSON text (and its `gpu_vendor` label).
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
        }
    }
}

/// One device at one instant. As everywhere in the collector, a figure the driver does not
/// give is `None`, never 0: an idle GPU held by a job reads `Some(0.0)`, an unknown one `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    /// The source's own order (NVML index; for AMD, the order of amdgpu cards by DRM minor).
    pub index: u32,
    pub uuid: Option<String>,
    /// Domain-qualified, lowercase as sysfs writes it: `0000:03:00.0`.
    pub pci_bus_id: Option<String>,
    /// The device node's minor number (`/dev/nvidiaN`, the card's DRM minor for AMD): what
    /// Slurm's GPU indices (`SLURM_JOB_GPUS`) count, whatever order the vendor library uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
    pub vendor: GpuVendor,
    pub utilization_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub power_watts: Option<f64>,
    /// Energy since the driver loaded, a counter.
    pub energy_joules: Option<f64>,
    pub temperature_celsius: Option<f64>,
    /// Pids with a context on the device; empty when none or when the source cannot tell
    /// (amdgpu sysfs cannot).
    pub processes: Vec<u32>,
}

impl GpuReading {
    /// A reading with no figures, to be filled in.
    pub fn new(index: u32, vendor: GpuVendor) -> Self {
        Self {
            index,
            uuid: None,
            pci_bus_id: None,
            minor: None,
            vendor,
            utilization_percent: None,
            memory_used_bytes: None,
            memory_total_bytes: None,
            power_watts: None,
            energy_joules: None,
            temperature_celsius: None,
            processes: Vec::new(),
        }
    }
}
