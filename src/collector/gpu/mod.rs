//! What the node's GPUs are doing: the [`GpuSource`] trait every vendor implements, the
//! [`GpuReading`] they all return, the amdgpu sysfs source ([`AmdSysfs`]) and a test double
//! ([`FakeGpus`]).
//!
//! NVIDIA devices come through NVML ([`NvmlGpus`], `nvml-wrapper`, loaded at run time and
//! initialised once). Sources block (sysfs reads, NVML calls), so
//! callers run them on a blocking thread (`spawn_blocking`). Assigning devices to jobs is the
//! caller's business: it should match on `uuid` or `pci_bus_id`, since Slurm's indices and a
//! vendor library's order can differ.

mod amd;
mod nvidia;

pub use amd::{AmdSysfs, DEFAULT_DRM_ROOT};
pub use nvidia::{normalise_bus_id, NvmlGpus, NVML_LIBRARY};

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};

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

/// A set of GPUs that can be read. Blocking; `Send` so it can move onto a blocking thread.
pub trait GpuSource: Send {
    /// Every device the source sees, each with what could be read of it. A device that vanished
    /// or a file that failed costs figures (and a warning), never the other devices.
    fn devices(&mut self) -> Vec<GpuReading>;
}

/// **Test double**, for machines without GPUs (CI, development, end-to-end tests): returns the
/// readings it was given, unchanged, on every call. Clones share the readings, so a test can
/// change what a source already handed to the sampler reports.
#[derive(Debug, Clone, Default)]
pub struct FakeGpus {
    readings: Arc<Mutex<Vec<GpuReading>>>,
}

impl FakeGpus {
    pub fn new(readings: Vec<GpuReading>) -> Self {
        Self {
            readings: Arc::new(Mutex::new(readings)),
        }
    }

    /// Replaces what this source and its clones return from now on.
    pub fn set(&self, readings: Vec<GpuReading>) {
        *self.readings.lock().unwrap_or_else(PoisonError::into_inner) = readings;
    }
}

impl GpuSource for FakeGpus {
    fn devices(&mut self) -> Vec<GpuReading> {
        self.readings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(index: u32) -> GpuReading {
        GpuReading {
            uuid: Some(format!("GPU-{index}")),
            utilization_percent: Some(0.0),
            processes: vec![4242],
            ..GpuReading::new(index, GpuVendor::Nvidia)
        }
    }

    #[test]
    fn fake_gpus_return_their_readings_and_clones_share_updates() {
        let fake = FakeGpus::new(vec![reading(0), reading(1)]);
        let mut boxed: Box<dyn GpuSource> = Box::new(fake.clone());
        assert_eq!(boxed.devices(), vec![reading(0), reading(1)]);
        assert_eq!(boxed.devices().len(), 2, "readings are not consumed");
        fake.set(vec![reading(7)]);
        assert_eq!(boxed.devices(), vec![reading(7)]);
        assert_eq!(FakeGpus::default().devices(), vec![]);
    }

    #[test]
    fn readings_serialize_with_a_lowercase_vendor_and_nulls_for_unknowns() {
        let json = serde_json::to_value(reading(3)).unwrap();
        assert_eq!(json["vendor"], "nvidia");
        assert_eq!(json["index"], 3);
        assert_eq!(json["utilization_percent"], 0.0);
        assert!(json["power_watts"].is_null());
        assert_eq!(json["processes"], serde_json::json!([4242]));
        let amd = serde_json::to_value(GpuReading::new(0, GpuVendor::Amd)).unwrap();
        assert_eq!(amd["vendor"], "amd");
        let back: GpuReading = serde_json::from_value(json).unwrap();
        assert_eq!(back, reading(3));
    }
}
