//! cgroup v2: a job's figures from the unified hierarchy's files (`cpu.stat`, `memory.*`,
//! `io.stat`, `pids.current`, the PSI files), in the units every caller sees.

use super::parse::{io_totals, keyed, parse_u64, pressure};
use super::{CgroupFiles, CgroupReader, CgroupSample};
use std::path::Path;

impl CgroupReader {
    pub(super) fn read_v2(&mut self, dir: &Path, f: &mut CgroupFiles, s: &mut CgroupSample) {
        const CPU: [&str; 5] = [
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_throttled",
            "throttled_usec",
        ];
        [
            s.cpu_usage_usec,
            s.cpu_user_usec,
            s.cpu_system_usec,
            s.cpu_nr_throttled,
            s.cpu_throttled_usec,
        ] = self
            .parse(f, dir, "cpu.stat", |t| keyed(t, CPU))
            .unwrap_or_default();
        s.memory_current_bytes = self.parse(f, dir, "memory.current", parse_u64);
        s.memory_peak_bytes = self.parse(f, dir, "memory.peak", parse_u64);
        s.memory_limit_bytes = self
            .parse(f, dir, "memory.max", |t| match t.trim() {
                "max" => Some(None),
                n => parse_u64(n).map(Some),
            })
            .flatten();
        [
            s.memory_anon_bytes,
            s.memory_file_bytes,
            s.memory_shmem_bytes,
        ] = self
            .parse(f, dir, "memory.stat", |t| {
                keyed(t, ["anon", "file", "shmem"])
            })
            .unwrap_or_default();
        [s.oom_kills] = self
            .parse(f, dir, "memory.events", |t| keyed(t, ["oom_kill"]))
            .unwrap_or_default();
        if let Some(io) = self.parse(f, dir, "io.stat", io_totals) {
            [
                s.io_read_bytes,
                s.io_write_bytes,
                s.io_read_ops,
                s.io_write_ops,
            ] = io.map(Some);
        }
        s.pids_current = self.parse(f, dir, "pids.current", parse_u64);
        s.cpu_pressure = self.parse(f, dir, "cpu.pressure", pressure);
        s.memory_pressure = self.parse(f, dir, "memory.pressure", pressure);
        s.io_pressure = self.parse(f, dir, "io.pressure", pressure);
    }
}
