//! cgroup v1: a job's figures from one directory per controller (`cpuacct`, `memory`),
//! converted to the v2 units (CPU ticks of [`super::USER_HZ`] to microseconds, v1's "no limit"
//! to `None`) so nothing downstream needs to know the version.

use super::parse::{keyed, parse_u64};
use super::{CgroupFiles, CgroupReader, CgroupSample};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// v1 reports "no limit" as `PAGE_COUNTER_MAX` pages: i64::MAX rounded down to the page size
/// (9223372036854771712 with 4 KiB pages). Anything this close to i64::MAX is that, whatever the
/// page size (up to 1 MiB); no machine has 8 EiB of memory.
const V1_UNLIMITED_MIN: u64 = (i64::MAX as u64) & !0xF_FFFF;

impl CgroupReader {
    pub(super) fn read_v1(
        &mut self,
        dirs: &BTreeMap<String, PathBuf>,
        f: &mut CgroupFiles,
        s: &mut CgroupSample,
    ) {
        // A co-mounted hierarchy is named after all its controllers (`cpu,cpuacct`).
        let controller = |name: &str| {
            dirs.iter()
                .find(|(mount, _)| mount.split(',').any(|c| c == name))
                .map(|(_, dir)| dir)
        };
        if let Some(dir) = controller("cpuacct") {
            s.cpu_usage_usec = self
                .parse(f, dir, "cpuacct.usage", parse_u64)
                .map(|ns| ns / 1000);
            let [user, system] = self
                .parse(f, dir, "cpuacct.stat", |t| keyed(t, ["user", "system"]))
                .unwrap_or_default();
            let hz = u128::from(self.user_hz.get());
            let to_usec = |ticks: u64| u64::try_from(u128::from(ticks) * 1_000_000 / hz).ok();
            s.cpu_user_usec = user.and_then(to_usec);
            s.cpu_system_usec = system.and_then(to_usec);
        }
        if let Some(dir) = controller("memory") {
            s.memory_current_bytes = self.parse(f, dir, "memory.usage_in_bytes", parse_u64);
            s.memory_peak_bytes = self.parse(f, dir, "memory.max_usage_in_bytes", parse_u64);
            s.memory_limit_bytes = self
                .parse(f, dir, "memory.limit_in_bytes", parse_u64)
                .filter(|&limit| limit < V1_UNLIMITED_MIN);
            const STAT: [&str; 3] = ["total_rss", "total_cache", "total_shmem"];
            [
                s.memory_anon_bytes,
                s.memory_file_bytes,
                s.memory_shmem_bytes,
            ] = self
                .parse(f, dir, "memory.stat", |t| keyed(t, STAT))
                .unwrap_or_default();
            [s.oom_kills] = self
                .parse(f, dir, "memory.oom_control", |t| keyed(t, ["oom_kill"]))
                .unwrap_or_default();
        }
    }
}
