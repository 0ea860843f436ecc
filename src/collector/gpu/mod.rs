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

pub use crate::domain::gpu::{GpuReading, GpuVendor};
use std::sync::{Arc, Mutex, PoisonError};

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
