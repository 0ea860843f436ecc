//! The process's open-files limit, and the share of it the sampler may hold as kept cgroup files.
//!
//! The sampler keeps each job's cgroup files open between passes (up to
//! [`MAX_KEPT_FILES`](super::MAX_KEPT_FILES) a job), so 1,000 jobs need more descriptors than the
//! usual soft limit of 1024. The agent raises its soft limit to the hard one at start; whatever
//! limit is in force, the sampler keeps files open only within [`kept_files_budget`] of it and
//! reads the jobs beyond that file by file, so a low limit costs CPU time, never a sample, and
//! never an `EMFILE` for the rest of the process.
//!
//! Descriptors are not the only cost: once read, an open cgroupfs file holds its `seq_file`
//! buffer (a page) besides its `struct file`, about 5–6 KiB of kernel memory charged to the
//! agent's memory cgroup (measured on 6.18). The budget is therefore also capped at
//! [`KEPT_FILES_CEILING`], whatever the limit, so a node with thousands of jobs and a hard limit
//! of 524288 (systemd's default) does not push the agent past its unit's `MemoryMax`.

use std::io;

/// Descriptors always left to the rest of the process: HTTP connections, the spool, NVML's
/// device files, the files a pass opens and closes, and, in `serve --collect`, its clients.
const RESERVED: u64 = 256;

/// The most cgroup files kept open whatever the limit: about 1,500 jobs, ~90 MiB of kernel
/// memory, within `scripts/jobscope-agent.service`'s `MemoryMax=256M` beside the agent's own
/// 20–40 MiB.
pub const KEPT_FILES_CEILING: usize = 16_384;

/// Cgroup files the sampler may keep open under a soft limit of `soft_limit`: three quarters
/// of it, leaving at least [`RESERVED`] (and a quarter of a large limit) to everything else,
/// and never more than [`KEPT_FILES_CEILING`].
pub fn kept_files_budget(soft_limit: u64) -> usize {
    let left = (soft_limit / 4).max(RESERVED);
    let share = usize::try_from(soft_limit.saturating_sub(left)).unwrap_or(usize::MAX);
    share.min(KEPT_FILES_CEILING)
}

/// The soft and hard `RLIMIT_NOFILE`.
fn get() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and touches nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// The soft open-files limit in force, `None` if it cannot be read.
pub fn open_files_limit() -> Option<u64> {
    get().ok().map(|l| l.rlim_cur)
}

/// Raises the soft open-files limit to the hard one (an unlimited hard limit to the kernel's
/// `fs.nr_open`, the most it accepts) and logs once, at info, the limit in use and the sampler's
/// share. A refusal is logged too and leaves the limit as it was. Returns the soft limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = match get() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-files limit; no cgroup files kept open");
            return None;
        }
    };
    let wanted = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < wanted {
        let before = limit.rlim_cur;
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit reads the struct it is given and touches nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            let error = io::Error::last_os_error();
            tracing::warn!(%error, soft = before, wanted, "cannot raise the open-files limit");
            limit.rlim_cur = before;
        }
    }
    tracing::info!(
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        kept_cgroup_files = kept_files_budget(limit.rlim_cur),
        "open-files limit"
    );
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_a_quarter_or_the_reserve_and_stops_at_the_ceiling() {
        assert_eq!(kept_files_budget(0), 0);
        assert_eq!(kept_files_budget(200), 0);
        assert_eq!(kept_files_budget(1024), 768);
        assert_eq!(kept_files_budget(20_000), 15_000);
        assert_eq!(kept_files_budget(524_288), KEPT_FILES_CEILING);
        assert_eq!(kept_files_budget(u64::MAX), KEPT_FILES_CEILING);
    }

    #[test]
    fn raising_is_idempotent_and_never_lowers() {
        let before = open_files_limit().expect("getrlimit works");
        let raised = raise_open_files_limit().expect("getrlimit works");
        assert!(raised >= before);
        assert_eq!(raise_open_files_limit(), Some(raised));
        assert_eq!(open_files_limit(), Some(raised));
    }
}
