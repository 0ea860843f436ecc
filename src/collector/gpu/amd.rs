//! AMD GPUs through amdgpu's sysfs files under `/sys/class/drm/card<N>/device/` (the root is a
//! parameter, so tests use fixture trees): busy percent, VRAM used/total, hwmon power and
//! temperature, `unique_id`, and the PCI bus id from where the `device` link points.
//!
//! No library is loaded and nothing is initialised: a node without amdgpu simply has no card
//! whose vendor is AMD, and reads as no devices. amdgpu does not expose per-device processes or
//! an energy counter here, so those stay empty/`None`.

use super::{GpuReading, GpuSource, GpuVendor};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel lists DRM devices.
pub const DEFAULT_DRM_ROOT: &str = "/sys/class/drm";

/// PCI vendor id of AMD/ATI, as sysfs writes it in `device/vendor`.
const AMD_PCI_VENDOR: &str = "0x1002";

/// Reads every amdgpu card under a DRM class directory.
#[derive(Debug, Clone)]
pub struct AmdSysfs {
    root: PathBuf,
}

impl Default for AmdSysfs {
    fn default() -> Self {
        Self::new(DEFAULT_DRM_ROOT)
    }
}

impl AmdSysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `card<N>` entries by N. Connectors (`card0-DP-1`) and render nodes are not devices.
    fn cards(&self) -> Vec<PathBuf> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %self.root.display(), error = %e, "cannot list DRM devices");
                return Vec::new();
            }
        };
        let mut cards: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let n = name.to_str()?.strip_prefix("card")?;
                if !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((n.parse().ok()?, entry.path()))
            })
            .collect();
        cards.sort_unstable_by_key(|(n, _)| *n);
        cards.into_iter().map(|(_, path)| path).collect()
    }

    fn read_card(card: &Path, index: u32) -> GpuReading {
        let dev = card.join("device");
        let mut r = GpuReading::new(index, GpuVendor::Amd);
        r.uuid = read(&dev.join("unique_id"), |t| {
            Some(
                Some(t.trim())
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned),
            )
        })
        .flatten();
        r.pci_bus_id = pci_bus_id(&dev);
        r.utilization_percent = read(&dev.join("gpu_busy_percent"), |t| {
            t.trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .map(f64::from)
        });
        r.memory_used_bytes = read(&dev.join("mem_info_vram_used"), parse_u64);
        r.memory_total_bytes = read(&dev.join("mem_info_vram_total"), parse_u64);
        if let Some(hwmon) = hwmon_dir(&dev) {
            // Newer GPUs (RDNA3, MI300) report `power1_input` instead of `power1_average`.
            let power = ["power1_average", "power1_input"]
                .into_iter()
                .map(|name| hwmon.join(name))
                .find(|path| path.exists());
            r.power_watts = power
                .and_then(|path| read(&path, parse_u64))
                .map(|uw| uw as f64 / 1e6);
            r.temperature_celsius = read(&hwmon.join("temp1_input"), |t| {
                t.trim().parse::<i64>().ok().map(|mc| mc as f64 / 1000.0)
            });
        }
        r
    }
}

impl GpuSource for AmdSysfs {
    fn devices(&mut self) -> Vec<GpuReading> {
        // Indices count AMD cards only: a server's BMC display adapter is often card0.
        let mut index = 0;
        let mut out = Vec::new();
        for card in self.cards() {
            let vendor = fs::read_to_string(card.join("device/vendor")).unwrap_or_default();
            if !vendor.trim().eq_ignore_ascii_case(AMD_PCI_VENDOR) {
                continue;
            }
            out.push(Self::read_card(&card, index));
            index += 1;
        }
        out
    }
}

/// `None` for an absent file (silently: this GPU or kernel lacks it, or the card just went
/// away) and for content `parse` rejects or a failed read (with one warning naming the file).
fn read<T>(path: &Path, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read amdgpu file");
            return None;
        }
    };
    let parsed = std::str::from_utf8(&bytes).ok().and_then(parse);
    if parsed.is_none() {
        tracing::warn!(file = %path.display(), "unparsable amdgpu file, its figure is skipped");
    }
    parsed
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `card<N>/device` links to the PCI device directory, named by its address.
fn pci_bus_id(dev: &Path) -> Option<String> {
    let target = fs::read_link(dev).ok()?;
    let name = target.file_name()?.to_str()?;
    is_pci_address(name).then(|| name.to_ascii_lowercase())
}

/// `dddd:bb:dd.f`, hexadecimal.
fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b':',
            10 => *c == b'.',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The first `hwmon*` directory of the device (amdgpu registers one).
fn hwmon_dir(dev: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dev.join("hwmon"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("hwmon"))
        })
        .map(|e| e.path())
        .collect();
    dirs.sort_unstable();
    dirs.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::super::super::discovery::tests::write;
    use super::super::super::node::tests::capturing_logs;
    use super::*;
    use std::os::unix::fs::symlink;

    /// A card as amdgpu lays it out: `card<N>/device` links to the PCI device directory.
    fn card(root: &Path, n: u32, pci: &str, vendor: &str, files: &[(&str, &str)]) {
        let pci_dir = root.join("devices").join(pci);
        write(&pci_dir, "vendor", format!("{vendor}\n").as_bytes());
        for (rel, content) in files {
            write(&pci_dir, rel, content.as_bytes());
        }
        let card = root.join(format!("card{n}"));
        fs::create_dir_all(&card).unwrap();
        symlink(&pci_dir, card.join("device")).unwrap();
    }

    const MI250: [(&str, &str); 6] = [
        ("gpu_busy_percent", "87\n"),
        ("mem_info_vram_used", "17179869184\n"),
        ("mem_info_vram_total", "68702699520\n"),
        ("unique_id", "a1b2c3d4e5f60718\n"),
        ("hwmon/hwmon3/power1_average", "312000000\n"),
        ("hwmon/hwmon3/temp1_input", "45500\n"),
    ];

    #[test]
    fn two_amd_cards_skipping_connectors_and_other_vendors() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        // card0 is a BMC's display adapter, as on many servers.
        card(
            root,
            0,
            "0000:02:00.0",
            "0x1a03",
            &[("gpu_busy_percent", "5\n")],
        );
        card(root, 1, "0000:C3:00.0", "0x1002", &MI250);
        // An idle card without hwmon or unique_id.
        card(
            root,
            2,
            "0000:03:00.0",
            "0x1002",
            &[
                ("gpu_busy_percent", "0\n"),
                ("mem_info_vram_used", "0\n"),
                ("mem_info_vram_total", "17163091968\n"),
            ],
        );
        fs::create_dir_all(root.join("card1-DP-1")).unwrap();
        write(root, "card1-DP-1/status", b"connected\n");
        fs::create_dir_all(root.join("renderD128")).unwrap();
        write(root, "version", b"drm 1.1.0 20060810\n");

        let (devices, logged) = capturing_logs(|| AmdSysfs::new(root).devices());
        assert_eq!(logged, "");
        let want = vec![
            GpuReading {
                uuid: Some("a1b2c3d4e5f60718".to_owned()),
                pci_bus_id: Some("0000:c3:00.0".to_owned()),
                utilization_percent: Some(87.0),
                memory_used_bytes: Some(17_179_869_184),
                memory_total_bytes: Some(68_702_699_520),
                power_watts: Some(312.0),
                temperature_celsius: Some(45.5),
                ..GpuReading::new(0, GpuVendor::Amd)
            },
            GpuReading {
                pci_bus_id: Some("0000:03:00.0".to_owned()),
                utilization_percent: Some(0.0),
                memory_used_bytes: Some(0),
                memory_total_bytes: Some(17_163_091_968),
                ..GpuReading::new(1, GpuVendor::Amd)
            },
        ];
        assert_eq!(devices, want);
    }

    #[test]
    fn power1_input_when_there_is_no_power1_average() {
        let t = tempfile::tempdir().unwrap();
        card(
            t.path(),
            0,
            "0000:03:00.0",
            "0x1002",
            &[("hwmon/hwmon0/power1_input", "25000000\n")],
        );
        let devices = AmdSysfs::new(t.path()).devices();
        assert_eq!(devices[0].power_watts, Some(25.0));
        assert_eq!(devices[0].temperature_celsius, None);
    }

    #[test]
    fn garbage_values_cost_their_figure_and_one_warning_each() {
        let t = tempfile::tempdir().unwrap();
        card(
            t.path(),
            0,
            "0000:03:00.0",
            "0x1002",
            &[
                ("gpu_busy_percent", "250\n"),
                ("mem_info_vram_used", "-1\n"),
                ("unique_id", "\n"),
                ("hwmon/hwmon0/power1_average", "lots\n"),
                ("hwmon/hwmon0/temp1_input", "45.5\n"),
            ],
        );
        write(
            &t.path().join("devices/0000:03:00.0"),
            "mem_info_vram_total",
            b"\xff\xfe",
        );
        let (devices, logged) = capturing_logs(|| AmdSysfs::new(t.path()).devices());
        assert_eq!(
            devices,
            vec![GpuReading {
                pci_bus_id: Some("0000:03:00.0".to_owned()),
                ..GpuReading::new(0, GpuVendor::Amd)
            }]
        );
        assert_eq!(logged.matches("WARN").count(), 5, "{logged}");
        for name in [
            "gpu_busy_percent",
            "mem_info_vram_used",
            "mem_info_vram_total",
            "power1_average",
            "temp1_input",
        ] {
            assert!(logged.contains(name), "{name}: {logged}");
        }
    }

    #[test]
    fn no_drm_directory_or_a_device_that_is_not_a_link_gives_what_it_can() {
        let t = tempfile::tempdir().unwrap();
        let (devices, logged) = capturing_logs(|| AmdSysfs::new(t.path().join("nope")).devices());
        assert_eq!((devices, logged.as_str()), (vec![], ""));

        // A plain `device` directory: figures, but no PCI address to name.
        write(t.path(), "card0/device/vendor", b"0x1002\n");
        write(t.path(), "card0/device/gpu_busy_percent", b"3\n");
        let devices = AmdSysfs::new(t.path()).devices();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].pci_bus_id, None);
        assert_eq!(devices[0].utilization_percent, Some(3.0));
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:03:00.0"));
        assert!(is_pci_address("0001:C3:1f.7"));
        assert!(!is_pci_address("03:00.0"));
        assert!(!is_pci_address("0000:03:00:0"));
        assert!(!is_pci_address("card0"));
    }
}
