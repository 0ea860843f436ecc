//! NVIDIA GPUs through NVML (`nvml-wrapper`). `libnvidia-ml.so.1` is opened at run time, once per
//! process, so the same binary runs on nodes without a driver: there [`NvmlGpus::open`] returns
//! the reason and the caller turns the GPU part off with one info line.
//!
//! Every call is blocking FFI into the driver (a busy or falling-off-the-bus GPU can take
//! seconds), so the sampler runs this on a blocking thread. A call that fails costs that figure
//! (`None`), never the device or the others: NVML reports `NotSupported` for power on many
//! boards and energy on older ones, and that must not hide utilisation.

use super::{GpuReading, GpuSource, GpuVendor};
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use std::collections::HashSet;

/// Where the driver's library is looked up (the unversioned `.so` exists only with dev files).
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// An initialised NVML and the devices it reported at start.
pub struct NvmlGpus {
    nvml: Nvml,
    count: u32,
    /// Devices whose failure was already logged, so a dead GPU warns once, not every interval.
    warned: HashSet<(u32, &'static str)>,
}

impl std::fmt::Debug for NvmlGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlGpus")
            .field("count", &self.count)
            .finish()
    }
}

impl NvmlGpus {
    /// Loads and initialises NVML. An error means "no NVIDIA GPUs here" for the caller: no
    /// library, no driver loaded, no permission, or no device at all.
    pub fn open() -> Result<NvmlGpus, String> {
        let nvml = Nvml::builder()
            .lib_path(std::ffi::OsStr::new(NVML_LIBRARY))
            .init()
            .map_err(|err| describe(&err))?;
        let count = nvml.device_count().map_err(|err| describe(&err))?;
        if count == 0 {
            return Err("NVML found no NVIDIA device".into());
        }
        Ok(NvmlGpus {
            nvml,
            count,
            warned: HashSet::new(),
        })
    }

    pub fn device_count(&self) -> u32 {
        self.count
    }

    /// `Some(value)`, or `None` with a warning the first time this figure fails on this device
    /// (`NotSupported` is silent: the board simply lacks the sensor).
    fn figure<T>(
        &mut self,
        index: u32,
        what: &'static str,
        result: Result<T, NvmlError>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported) => None,
            Err(err) => {
                if self.warned.insert((index, what)) {
                    tracing::warn!(gpu = index, figure = what, error = %err, "NVML read failed; figure skipped");
                }
                None
            }
        }
    }

    fn read(&mut self, index: u32) -> Option<GpuReading> {
        let device = match self.nvml.device_by_index(index) {
            Ok(device) => device,
            Err(err) => {
                if self.warned.insert((index, "device")) {
                    tracing::warn!(gpu = index, error = %err, "NVML cannot open the device; skipped");
                }
                return None;
            }
        };
        let uuid = device.uuid();
        let pci = device.pci_info().map(|p| normalise_bus_id(&p.bus_id));
        let minor = device.minor_number();
        let utilization = device.utilization_rates().map(|u| f64::from(u.gpu));
        let memory = device.memory_info();
        let power = device.power_usage().map(|mw| f64::from(mw) / 1000.0);
        let energy = device
            .total_energy_consumption()
            .map(|mj| mj as f64 / 1000.0);
        let temperature = device.temperature(TemperatureSensor::Gpu).map(f64::from);
        let compute = device.running_compute_processes();
        let graphics = device.running_graphics_processes();

        let mut r = GpuReading::new(index, GpuVendor::Nvidia);
        r.uuid = self.figure(index, "uuid", uuid);
        r.pci_bus_id = self.figure(index, "pci_info", pci);
        r.minor = self.figure(index, "minor_number", minor);
        r.utilization_percent = self.figure(index, "utilization", utilization);
        if let Some(m) = self.figure(index, "memory_info", memory) {
            r.memory_used_bytes = Some(m.used);
            r.memory_total_bytes = Some(m.total);
        }
        r.power_watts = self.figure(index, "power_usage", power);
        r.energy_joules = self.figure(index, "total_energy_consumption", energy);
        r.temperature_celsius = self.figure(index, "temperature", temperature);
        let mut pids: Vec<u32> = Vec::new();
        for list in [
            self.figure(index, "compute_processes", compute),
            self.figure(index, "graphics_processes", graphics),
        ]
        .into_iter()
        .flatten()
        {
            pids.extend(list.iter().map(|p| p.pid));
        }
        pids.sort_unstable();
        pids.dedup();
        r.processes = pids;
        Some(r)
    }
}

impl GpuSource for NvmlGpus {
    fn devices(&mut self) -> Vec<GpuReading> {
        (0..self.count).filter_map(|i| self.read(i)).collect()
    }
}

/// NVML writes bus ids uppercase with an 8-digit domain (`00000000:3B:00.0`); sysfs and the AMD
/// source use `0000:3b:00.0`. One spelling, so devices can be matched across sources.
pub fn normalise_bus_id(raw: &str) -> String {
    let raw = raw.trim().trim_end_matches('\0').to_ascii_lowercase();
    match raw.split_once(':') {
        Some((domain, rest))
            if domain.len() > 4 && domain.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("{}:{rest}", &domain[domain.len() - 4..])
        }
        _ => raw,
    }
}

fn describe(err: &NvmlError) -> String {
    match err {
        NvmlError::LibloadingError(e) => format!("cannot load {NVML_LIBRARY} ({e})"),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".into(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".into(),
        other => format!("NVML initialisation failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_are_spelled_like_sysfs() {
        assert_eq!(normalise_bus_id("00000000:3B:00.0"), "0000:3b:00.0");
        assert_eq!(normalise_bus_id("0000:3b:00.0"), "0000:3b:00.0");
        assert_eq!(normalise_bus_id("00000001:C3:00.0\0"), "0001:c3:00.0");
        assert_eq!(normalise_bus_id("garbage"), "garbage");
    }

    /// On a machine without the NVIDIA driver (CI, this project's development machines), opening
    /// NVML must fail cleanly with a reason, not crash; on a GPU machine it must find devices
    /// and read them. Whichever this machine is, the test checks that case.
    #[test]
    fn nvml_opens_or_says_why_not() {
        match NvmlGpus::open() {
            Err(reason) => {
                assert!(!reason.is_empty());
                eprintln!("no NVML here: {reason}");
            }
            Ok(mut gpus) => {
                let readings = gpus.devices();
                assert_eq!(readings.len() as u32, gpus.device_count());
                for r in readings {
                    assert_eq!(r.vendor, GpuVendor::Nvidia);
                    assert!(
                        r.uuid.as_deref().is_some_and(|u| u.starts_with("GPU-")),
                        "{r:?}"
                    );
                    assert!(r.memory_total_bytes.is_some_and(|t| t > 0), "{r:?}");
                    assert!(r
                        .utilization_percent
                        .is_some_and(|u| (0.0..=100.0).contains(&u)));
                }
            }
        }
    }
}
