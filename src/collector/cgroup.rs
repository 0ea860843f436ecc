//! Reading one job's cgroup into a [`CgroupSample`], and CPU percentage from two samples.
//!
//! Every figure is an `Option`: a file this kernel or controller set does not provide is `None`,
//! never 0, because downstream a 0 reads as a measurement (the Go service invented numbers; we
//! never do). The files are read while the job may be ending, so a vanished directory, a
//! truncated file or garbage bytes cost the figures of that file and one warning naming it,
//! never a panic or a failed sample. v1 figures are converted to the v2 units here so nothing
//! downstream needs to know the cgroup version.
//!
//! A node samples every job every interval, and opening, reading and closing a dozen files per
//! job was four fifths of the agent's CPU time, all of it in the kernel. So a job's files can be
//! kept open between passes in a [`CgroupFiles`] that the caller owns per job, and re-read with
//! one `pread` at offset 0 each: cgroupfs regenerates a file's content on every read from the
//! start. A cgroup removed while its files are open fails those reads with ENODEV, which reads
//! exactly like a file gone before its open. An open cgroupfs file costs kernel memory (see
//! [`super::fd_limit`]), so the caller decides which jobs may keep theirs.

use super::discovery::{CgroupPaths, JobCgroup};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;

mod parse;
mod v1;
mod v2;

/// The kernel's USER_HZ, the unit of v1 `cpuacct.stat`; 100 on every mainstream architecture.
pub const USER_HZ: NonZeroU64 = NonZeroU64::new(100).expect("100 is not zero");

/// The errno of a read in a cgroup that was removed while the file was open.
const ENODEV: i32 = 19;

/// Defines [`CgroupSample`] from its one list of fields, with [`CgroupSample::read_field`]
/// over the same list: an agent report carries these fields inline beside the job's own
/// (`collector::report`), and reading them by name there cost half of `serde(flatten)`'s time.
macro_rules! cgroup_sample {
    ($(#[$meta:meta])* pub struct CgroupSample { $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct CgroupSample {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl CgroupSample {
            /// Reads the value of `key` from `map` into the field of that name; `false` (and
            /// nothing read) when no field has that name.
            pub fn read_field<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($field) => self.$field = map.next_value()?,)*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

cgroup_sample! {
/// What a job's cgroup said at one instant. Cumulative figures are counters since the cgroup
/// was created; CPU times are microseconds, memory and IO are bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupSample {
    pub cpu_usage_usec: Option<u64>,
    pub cpu_user_usec: Option<u64>,
    pub cpu_system_usec: Option<u64>,
    pub cpu_nr_throttled: Option<u64>,
    pub cpu_throttled_usec: Option<u64>,
    pub memory_current_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// `None` also when the cgroup has no limit (`max`, or v1's huge sentinel).
    pub memory_limit_bytes: Option<u64>,
    /// v2 `anon`; v1 `total_rss`, its closest equivalent.
    pub memory_anon_bytes: Option<u64>,
    /// v2 `file`; v1 `total_cache`. Both include shmem.
    pub memory_file_bytes: Option<u64>,
    pub memory_shmem_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    /// IO counters, summed over the devices in `io.stat`.
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub io_read_ops: Option<u64>,
    pub io_write_ops: Option<u64>,
    pub pids_current: Option<u64>,
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
    /// The cgroup disappeared during the read (the job ended); the figures are what was read.
    #[serde(default)]
    pub vanished: bool,
}
}

/// The `some` line of a PSI file: share of wall time at least one task stalled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// Percent over the last 10 s.
    pub some_avg10: f64,
    /// Cumulative stall time, microseconds.
    pub some_total_usec: u64,
}

/// The most files a [`CgroupFiles`] keeps open: the eleven v2 files (v1 reads seven).
pub const MAX_KEPT_FILES: usize = 11;

/// One job's cgroup files, kept open between passes by [`CgroupReader::read_kept`], or, for a
/// set made with [`CgroupFiles::transient`], opened and closed on every read (what a job gets
/// when the process has no file descriptors to spare). Dropping it closes the files.
///
/// A file that was absent (this kernel or controller set lacks it) is remembered as absent and
/// not looked for again until the caller's next refresh, so a kernel without `memory.peak` costs
/// nothing per pass; the refresh catches a controller enabled after the job's first pass.
#[derive(Debug, Default)]
pub struct CgroupFiles {
    keep: bool,
    /// The directories the files were opened in; a job whose paths change starts afresh.
    paths: Option<CgroupPaths>,
    /// By file name (unique within a job, v1 included); `None` is absent.
    files: Vec<(&'static str, Option<File>)>,
}

impl CgroupFiles {
    /// Files opened on first read and kept open.
    pub fn kept() -> CgroupFiles {
        CgroupFiles {
            keep: true,
            ..Default::default()
        }
    }

    /// Every read opens, reads and closes its file.
    pub fn transient() -> CgroupFiles {
        CgroupFiles::default()
    }

    pub fn is_kept(&self) -> bool {
        self.keep
    }

    /// File descriptors held now.
    pub fn open_count(&self) -> usize {
        self.files.iter().filter(|(_, f)| f.is_some()).count()
    }

    /// Closes every file and forgets which were absent.
    fn close(&mut self) {
        self.files.clear();
        self.paths = None;
    }

    /// `dir/name` into `buf`: its length, `Ok(None)` for a file remembered as absent, and
    /// NotFound or ENODEV for one gone now.
    fn read(
        &mut self,
        dir: &Path,
        name: &'static str,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<usize>> {
        if !self.keep {
            return read_whole(&File::open(dir.join(name))?, buf).map(Some);
        }
        let mut reopening = false;
        if let Some(i) = self.files.iter().position(|(n, _)| *n == name) {
            let Some(file) = &self.files[i].1 else {
                return Ok(None);
            };
            match read_whole(file, buf) {
                // cgroupfs fails a removed file's reads with ENODEV; should a kernel end them
                // with end-of-file instead, an empty read (which only `io.stat` gives for real)
                // is checked against the directory.
                Ok(0) if !dir.is_dir() => {
                    self.files.swap_remove(i);
                    return Err(io::ErrorKind::NotFound.into());
                }
                Ok(len) => return Ok(Some(len)),
                // Removed, and perhaps made again at the same path (a requeued job): the file
                // as it is now decides, as on a first read.
                Err(e) if e.raw_os_error() == Some(ENODEV) => {
                    self.files.swap_remove(i);
                    reopening = true;
                }
                Err(e) => return Err(e),
            }
        }
        match File::open(dir.join(name)) {
            Ok(file) => {
                let len = read_whole(&file, buf)?;
                debug_assert!(self.files.len() < MAX_KEPT_FILES, "{name} is one too many");
                self.files.push((name, Some(file)));
                Ok(Some(len))
            }
            Err(e) => {
                // Absent on a first look is remembered; absent right after its cgroup was
                // removed is not (it may be in the middle of being made again for a requeued
                // job), so the next pass opens it afresh.
                if e.kind() == io::ErrorKind::NotFound && !reopening {
                    self.files.push((name, None));
                }
                Err(e)
            }
        }
    }
}

/// A whole file into `buf` (all of whose length is space, kept initialised so it is not zeroed
/// per read) with `pread` from offset 0, growing `buf` when the content fills it. A short read
/// is the end: cgroupfs regenerates a file as one record and hands over all of it that fits,
/// and a regular file (a fixture) reads up to its size; so one system call per file.
fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((buf.len() * 2).max(4096), 0);
        }
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    return Ok(len);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads cgroups into samples, reusing one buffer so a node with thousands of jobs does not
/// allocate per file.
#[derive(Debug)]
pub struct CgroupReader {
    user_hz: NonZeroU64,
    buf: Vec<u8>,
    saw_missing: bool,
}

impl Default for CgroupReader {
    fn default() -> Self {
        Self::new(USER_HZ)
    }
}

impl CgroupReader {
    /// `user_hz` is the tick rate of v1 `cpuacct.stat` (`getconf CLK_TCK`).
    pub fn new(user_hz: NonZeroU64) -> Self {
        Self {
            user_hz,
            buf: vec![0; 4096],
            saw_missing: false,
        }
    }

    /// One read of every file, each opened and closed again.
    pub fn read(&mut self, cgroup: &JobCgroup) -> CgroupSample {
        self.read_kept(cgroup, &mut CgroupFiles::transient(), false)
    }

    /// One read of every file through `files`, which keeps them open for the next read (unless
    /// transient). `refresh` looks again for files that were absent. A cgroup that vanished
    /// closes them.
    pub fn read_kept(
        &mut self,
        cgroup: &JobCgroup,
        files: &mut CgroupFiles,
        refresh: bool,
    ) -> CgroupSample {
        if files.paths.as_ref() != Some(&cgroup.paths) {
            files.close();
            if files.keep {
                files.paths = Some(cgroup.paths.clone());
            }
        } else if refresh {
            files.files.retain(|(_, f)| f.is_some());
        }
        self.saw_missing = false;
        let mut s = CgroupSample::default();
        match &cgroup.paths {
            CgroupPaths::V2(dir) => {
                self.read_v2(dir, files, &mut s);
                s.vanished = self.saw_missing && !dir.is_dir();
            }
            CgroupPaths::V1(dirs) => {
                self.read_v1(dirs, files, &mut s);
                s.vanished = self.saw_missing && dirs.values().any(|d| !d.is_dir());
            }
        }
        if s.vanished {
            files.close();
        }
        s
    }

    /// `None` for an absent file (silently: the kernel or controller set lacks it) and for
    /// content `parse` rejects (with one warning naming the file).
    fn parse<T>(
        &mut self,
        files: &mut CgroupFiles,
        dir: &Path,
        name: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let len = match files.read(dir, name, &mut self.buf) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ENODEV) => {
                self.saw_missing = true;
                return None;
            }
            Err(e) => {
                let path = dir.join(name);
                tracing::warn!(file = %path.display(), error = %e, "cannot read cgroup file");
                return None;
            }
        };
        let parsed = std::str::from_utf8(&self.buf[..len]).ok().and_then(parse);
        if parsed.is_none() {
            let path = dir.join(name);
            tracing::warn!(file = %path.display(), "unparsable cgroup file, its figures are skipped");
        }
        parsed
    }
}

/// A job's cumulative CPU time and when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPoint {
    pub usage_usec: u64,
    pub at: DateTime<Utc>,
}

/// CPU use over the interval as a share of the allocated CPUs, 0..=100. `None` for a job's
/// first sample, for a clock that did not move forward, for no CPUs, and for a counter that
/// went backwards (the cgroup was recreated, so the difference means nothing).
pub fn cpu_percent(prev: Option<CpuPoint>, cur: CpuPoint, cpus: u32) -> Option<f64> {
    let prev = prev?;
    let wall_usec = (cur.at - prev.at).num_microseconds().filter(|&w| w > 0)?;
    let used_usec = cur.usage_usec.checked_sub(prev.usage_usec)?;
    if cpus == 0 {
        return None;
    }
    // Reads are not atomic with their timestamps, so a busy job can come out a little over 100.
    let percent = used_usec as f64 / wall_usec as f64 / f64::from(cpus) * 100.0;
    Some(percent.clamp(0.0, 100.0))
}

#[cfg(test)]
pub(crate) mod tests;
