//! Tests of reading cgroups, v1 and v2, from fixture directories.

use super::super::discovery::tests::{v2_dir, write};
use super::super::discovery::{discover, JobKey, DEFAULT_CGROUP_ROOT};
use super::super::node::tests::capturing_logs;
use super::*;
use std::path::PathBuf;

const PSI: &str = "some avg10=1.50 avg60=0.80 avg300=0.20 total=123456\n\
    full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
const PSI_IDLE: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
/// Every v2 file, as a kernel with all controllers enabled writes it.
pub(crate) const V2_FILES: [(&str, &str); MAX_KEPT_FILES] = [
    (
        "cpu.stat",
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n\
        core_sched.force_idle_usec 0\nnr_periods 10\nnr_throttled 3\nthrottled_usec 2500\n\
        nr_bursts 0\nburst_usec 0\n",
    ),
    ("memory.current", "104857600\n"),
    ("memory.peak", "209715200\n"),
    ("memory.max", "4294967296\n"),
    (
        "memory.stat",
        "anon 73400320\nfile 26214400\nkernel 1048576\nshmem 4096\n",
    ),
    (
        "memory.events",
        "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n",
    ),
    (
        "io.stat",
        "8:0 rbytes=1000 wbytes=2000 rios=10 wios=20 dbytes=0 dios=0\n\
        259:0 rbytes=5 wbytes=6 rios=1 wios=2 dbytes=0 dios=0\n",
    ),
    ("pids.current", "7\n"),
    ("cpu.pressure", PSI),
    ("memory.pressure", PSI),
    ("io.pressure", PSI_IDLE),
];

/// A v2 job cgroup under `root` with the given files.
fn v2_job(root: &Path, files: &[(&str, &str)]) -> (JobCgroup, PathBuf) {
    let dir = v2_dir(root, "system.slice/slurmstepd.scope/job_42");
    for (name, content) in files {
        write(&dir, name, content.as_bytes());
    }
    let job_key = JobKey::JobId("42".into());
    (
        JobCgroup {
            job_key,
            paths: CgroupPaths::V2(dir.clone()),
        },
        dir,
    )
}

fn psi(some_avg10: f64, some_total_usec: u64) -> Option<Pressure> {
    Some(Pressure {
        some_avg10,
        some_total_usec,
    })
}

#[test]
fn v2_every_figure_from_real_formats() {
    let t = tempfile::tempdir().unwrap();
    let (job, _) = v2_job(t.path(), &V2_FILES);
    let (s, logged) = capturing_logs(|| CgroupReader::default().read(&job));
    assert_eq!(logged, "");
    let want = CgroupSample {
        cpu_usage_usec: Some(1_500_000),
        cpu_user_usec: Some(1_000_000),
        cpu_system_usec: Some(500_000),
        cpu_nr_throttled: Some(3),
        cpu_throttled_usec: Some(2500),
        memory_current_bytes: Some(104_857_600),
        memory_peak_bytes: Some(209_715_200),
        memory_limit_bytes: Some(4_294_967_296),
        memory_anon_bytes: Some(73_400_320),
        memory_file_bytes: Some(26_214_400),
        memory_shmem_bytes: Some(4096),
        oom_kills: Some(1),
        io_read_bytes: Some(1005),
        io_write_bytes: Some(2006),
        io_read_ops: Some(11),
        io_write_ops: Some(22),
        pids_current: Some(7),
        cpu_pressure: psi(1.5, 123_456),
        memory_pressure: psi(1.5, 123_456),
        io_pressure: psi(0.0, 0),
        vanished: false,
    };
    assert_eq!(s, want);
}

#[test]
fn absent_files_are_none_unlimited_is_none_and_an_empty_io_stat_is_zero() {
    let t = tempfile::tempdir().unwrap();
    // A hierarchy without the cpu controller: no throttling keys; no memory/pids files.
    let cpu_stat = "usage_usec 10\nuser_usec 6\nsystem_usec 4\n";
    let files = [
        ("cpu.stat", cpu_stat),
        ("memory.max", "max\n"),
        ("io.stat", ""),
    ];
    let (job, _) = v2_job(t.path(), &files);
    let (s, logged) = capturing_logs(|| CgroupReader::default().read(&job));
    assert_eq!(logged, "");
    let want = CgroupSample {
        cpu_usage_usec: Some(10),
        cpu_user_usec: Some(6),
        cpu_system_usec: Some(4),
        io_read_bytes: Some(0),
        io_write_bytes: Some(0),
        io_read_ops: Some(0),
        io_write_ops: Some(0),
        ..Default::default()
    };
    assert_eq!(s, want);
}

#[test]
fn malformed_truncated_huge_and_non_utf8_files_cost_their_figures_and_one_warning_each() {
    let t = tempfile::tempdir().unwrap();
    let (job, dir) = v2_job(t.path(), &V2_FILES);
    // Truncated mid-line: what was written before the cut is still good.
    write(
        &dir,
        "cpu.stat",
        b"usage_usec 1500000\nuser_usec 1000000\nsyst",
    );
    let bad: [(&str, &[u8]); 7] = [
        ("memory.current", b"18446744073709551616\n"), // u64::MAX + 1
        ("memory.peak", b""),
        ("memory.max", b"-1\n"),
        ("memory.stat", b"anon \xff\xfe\x00\x80\nfile 1\n"),
        (
            "io.stat",
            b"8:0 rbytes=1 wbytes=2 rios=3 wios=4\n8:16 rbytes=12 wb",
        ),
        (
            "cpu.pressure",
            b"some avg10=NaN avg60=0.00 avg300=0.00 total=1\n",
        ),
        (
            "memory.pressure",
            b"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        ),
    ];
    for (name, content) in bad {
        write(&dir, name, content);
    }
    let (s, logged) = capturing_logs(|| CgroupReader::default().read(&job));
    let want = CgroupSample {
        cpu_usage_usec: Some(1_500_000),
        cpu_user_usec: Some(1_000_000),
        oom_kills: Some(1),
        pids_current: Some(7),
        io_pressure: psi(0.0, 0),
        ..Default::default()
    };
    assert_eq!(s, want);
    assert_eq!(logged.matches("WARN").count(), bad.len(), "{logged}");
    for (name, _) in bad {
        let named = logged.matches(&format!("/{name}")).count();
        assert_eq!(named, 1, "{name}: {logged}");
    }
}

#[test]
fn any_bytes_at_all_never_panic() {
    let t = tempfile::tempdir().unwrap();
    let (job, dir) = v2_job(t.path(), &V2_FILES);
    let junk: [&[u8]; 6] = [
        b"\n\n",
        b"usage_usec",
        b"= =",
        b"\0\0",
        b"8:0 =",
        b"some total=-1",
    ];
    let mut reader = CgroupReader::default();
    let mut kept = CgroupFiles::kept();
    for content in junk {
        for (name, _) in V2_FILES {
            write(&dir, name, content);
        }
        for s in [
            capturing_logs(|| reader.read(&job)).0,
            capturing_logs(|| reader.read_kept(&job, &mut kept, false)).0,
        ] {
            assert_eq!(
                (s.cpu_usage_usec, s.memory_limit_bytes, s.cpu_pressure),
                (None, None, None)
            );
        }
    }
    assert_eq!(kept.open_count(), V2_FILES.len());
}

#[test]
fn kept_files_read_what_a_fresh_open_reads_and_see_in_place_rewrites() {
    let t = tempfile::tempdir().unwrap();
    let (job, dir) = v2_job(t.path(), &V2_FILES);
    let mut reader = CgroupReader::default();
    let mut files = CgroupFiles::kept();
    let want = reader.read(&job);
    assert_eq!(files.open_count(), 0);
    for _ in 0..3 {
        let (s, logged) = capturing_logs(|| reader.read_kept(&job, &mut files, false));
        assert_eq!((s, logged.as_str()), (want.clone(), ""));
        assert_eq!(files.open_count(), V2_FILES.len());
    }
    // The kernel regenerates a file on each read; a fixture is rewritten in place (same
    // inode, as `fs::write` does): longer, shorter, then past the 4 KiB buffer.
    let padding: String = (0..600).map(|i| format!("pad_{i} 0\n")).collect();
    let long_stat = format!("{padding}anon 5\nfile 6\nshmem 7\n");
    assert!(long_stat.len() > 4096);
    write(&dir, "cpu.stat", b"usage_usec 1500001\nuser_usec 1000000\nsystem_usec 500001\nnr_throttled 30\nthrottled_usec 25000\n");
    write(&dir, "memory.current", b"1\n");
    write(&dir, "memory.stat", long_stat.as_bytes());
    let s = reader.read_kept(&job, &mut files, false);
    assert_eq!(s, reader.read(&job));
    let got = (s.cpu_usage_usec, s.cpu_nr_throttled, s.memory_current_bytes);
    assert_eq!(got, (Some(1_500_001), Some(30), Some(1)));
    let got = (
        s.memory_anon_bytes,
        s.memory_file_bytes,
        s.memory_shmem_bytes,
    );
    assert_eq!(got, (Some(5), Some(6), Some(7)));
    assert_eq!(files.open_count(), V2_FILES.len(), "no file reopened");

    // An empty `io.stat` is a real zero while the directory is there...
    write(&dir, "io.stat", b"");
    let s = reader.read_kept(&job, &mut files, false);
    assert_eq!((s.io_read_bytes, s.vanished), (Some(0), false));
    // ...and a file gone with a removed directory when it is not (a regular file's
    // removal keeps its content readable through an open descriptor; cgroupfs fails it).
    std::fs::remove_dir_all(&dir).unwrap();
    let s = reader.read_kept(&job, &mut files, false);
    assert_eq!((s.io_read_bytes, s.vanished), (None, true));
    assert_eq!(files.open_count(), 0);
}

#[test]
fn a_file_absent_at_start_is_no_error_and_is_looked_for_again_on_refresh() {
    let t = tempfile::tempdir().unwrap();
    let (job, dir) = v2_job(t.path(), &V2_FILES[..1]);
    let mut reader = CgroupReader::default();
    let mut files = CgroupFiles::kept();
    for refresh in [true, false] {
        let (s, logged) = capturing_logs(|| reader.read_kept(&job, &mut files, refresh));
        assert_eq!(logged, "");
        assert_eq!((s.cpu_usage_usec, s.pids_current), (Some(1_500_000), None));
        assert!(!s.vanished);
        assert_eq!(files.open_count(), 1);
    }
    // A controller enabled late: seen from the next refresh on, not looked for before.
    write(&dir, "pids.current", b"3\n");
    let s = reader.read_kept(&job, &mut files, false);
    assert_eq!(s.pids_current, None);
    let s = reader.read_kept(&job, &mut files, true);
    assert_eq!(s.pids_current, Some(3));
    assert_eq!(files.open_count(), 2);
}

#[test]
fn a_transient_set_keeps_nothing_open() {
    let t = tempfile::tempdir().unwrap();
    let (job, _) = v2_job(t.path(), &V2_FILES);
    let mut files = CgroupFiles::transient();
    let s = CgroupReader::default().read_kept(&job, &mut files, false);
    assert_eq!(s.cpu_usage_usec, Some(1_500_000));
    assert_eq!(files.open_count(), 0);
}

#[test]
fn a_job_whose_paths_change_reads_its_new_directory() {
    let t = tempfile::tempdir().unwrap();
    let (job, _) = v2_job(t.path(), &V2_FILES);
    let other = v2_dir(t.path(), "elsewhere/job_42");
    write(&other, "cpu.stat", b"usage_usec 9\n");
    let mut reader = CgroupReader::default();
    let mut files = CgroupFiles::kept();
    reader.read_kept(&job, &mut files, false);
    let moved = JobCgroup {
        paths: CgroupPaths::V2(other),
        ..job
    };
    let s = reader.read_kept(&moved, &mut files, false);
    assert_eq!((s.cpu_usage_usec, s.memory_current_bytes), (Some(9), None));
    assert_eq!(files.open_count(), 1);
}

#[test]
fn a_cgroup_removed_between_discovery_and_read_is_vanished_not_an_error() {
    let t = tempfile::tempdir().unwrap();
    let root = v2_dir(t.path(), "");
    let (_, dir) = v2_job(&root, &V2_FILES);
    let found = discover(&root, None, &Default::default()).unwrap();
    assert_eq!(found.len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
    let s = CgroupReader::default().read(&found[0]);
    assert_eq!(
        s,
        CgroupSample {
            vanished: true,
            ..Default::default()
        }
    );
}

#[test]
fn v1_figures_in_v2_units_with_the_tick_rate_as_a_parameter() {
    let t = tempfile::tempdir().unwrap();
    let job_dir = |hierarchy: &str| t.path().join(hierarchy).join("slurm/uid_1000/job_8");
    let (cpu, memory) = (job_dir("cpu,cpuacct"), job_dir("memory"));
    write(&cpu, "cpuacct.usage", b"2500000000\n");
    write(&cpu, "cpuacct.stat", b"user 150\nsystem 50\n");
    let stat = "cache 1\nrss 2\nshmem 0\ntotal_cache 8192\ntotal_rss 40960\ntotal_shmem 4096\n";
    for (name, content) in [
        ("memory.usage_in_bytes", "52428800\n"),
        ("memory.max_usage_in_bytes", "62914560\n"),
        ("memory.limit_in_bytes", "9223372036854771712\n"),
        ("memory.stat", stat),
        (
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
    ] {
        write(&memory, name, content.as_bytes());
    }
    std::fs::create_dir_all(job_dir("freezer")).unwrap();
    let job = discover(t.path(), None, &Default::default())
        .unwrap()
        .remove(0);

    let want = CgroupSample {
        cpu_usage_usec: Some(2_500_000),
        cpu_user_usec: Some(1_500_000),
        cpu_system_usec: Some(500_000),
        memory_current_bytes: Some(52_428_800),
        memory_peak_bytes: Some(62_914_560),
        memory_limit_bytes: None,
        memory_anon_bytes: Some(40960),
        memory_file_bytes: Some(8192),
        memory_shmem_bytes: Some(4096),
        oom_kills: Some(2),
        ..Default::default()
    };
    assert_eq!(CgroupReader::default().read(&job), want);
    let mut files = CgroupFiles::kept();
    let kept = CgroupReader::default().read_kept(&job, &mut files, true);
    assert_eq!((kept, files.open_count()), (want, 7));
    write(&cpu, "cpuacct.usage", b"3000000000\n");
    let s = CgroupReader::default().read_kept(&job, &mut files, false);
    assert_eq!(s.cpu_usage_usec, Some(3_000_000));
    write(&cpu, "cpuacct.usage", b"2500000000\n");
    let s = CgroupReader::new(NonZeroU64::new(250).unwrap()).read(&job);
    assert_eq!(
        (s.cpu_user_usec, s.cpu_system_usec),
        (Some(600_000), Some(200_000))
    );
    write(&memory, "memory.limit_in_bytes", b"1073741824\n");
    let s = CgroupReader::default().read(&job);
    assert_eq!(s.memory_limit_bytes, Some(1 << 30));
    // The memory hierarchy goes first as the job ends: keep the CPU figures, flag it.
    std::fs::remove_dir_all(&memory).unwrap();
    let s = CgroupReader::default().read(&job);
    let got = (s.cpu_usage_usec, s.memory_current_bytes, s.vanished);
    assert_eq!(got, (Some(2_500_000), None, true));
}

#[test]
fn cpu_percent_edge_cases() {
    let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let at = |secs: i64, usage_usec: u64| {
        let at = t0 + chrono::Duration::seconds(secs);
        CpuPoint { usage_usec, at }
    };
    let pct = |prev: CpuPoint, cur: CpuPoint, cpus: u32| cpu_percent(Some(prev), cur, cpus);
    assert_eq!(cpu_percent(None, at(10, 5_000_000), 4), None);
    assert_eq!(pct(at(0, 0), at(10, 20_000_000), 4), Some(50.0));
    assert_eq!(pct(at(0, 0), at(10, 0), 4), Some(0.0));
    assert_eq!(pct(at(0, 0), at(10, 41_000_000), 4), Some(100.0));
    assert_eq!(pct(at(0, 0), at(0, 1_000), 4), None);
    assert_eq!(pct(at(10, 0), at(0, 1_000), 4), None);
    assert_eq!(pct(at(0, 0), at(10, 1_000), 0), None);
    assert_eq!(pct(at(0, 9_000_000), at(10, 1_000), 4), None);
}

/// CPU time this process has used: utime + stime from `/proc/self/stat`, in ticks.
fn own_cpu_usec() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = after_name
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().unwrap())
        .sum();
    ticks * 1_000_000 / USER_HZ.get()
}

#[test]
fn a_real_v2_cgroup_counts_the_cpu_this_process_burns() {
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    let hierarchy = [root.to_path_buf(), root.join("unified")]
        .into_iter()
        .find(|d| d.join("cgroup.controllers").is_file());
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = own.lines().find_map(|l| l.strip_prefix("0::"));
    let (Some(hierarchy), Some(own)) = (hierarchy, own) else {
        eprintln!(
            "no cgroup v2 hierarchy under {DEFAULT_CGROUP_ROOT} or no v2 line in \
             /proc/self/cgroup: only checking that a missing cgroup reads as nothing"
        );
        let paths = CgroupPaths::V2(root.join("unified/absent"));
        let job = JobCgroup {
            job_key: JobKey::JobId("0".into()),
            paths,
        };
        let s = CgroupReader::default().read(&job);
        assert_eq!(
            s,
            CgroupSample {
                vanished: true,
                ..Default::default()
            }
        );
        return;
    };
    let paths = CgroupPaths::V2(hierarchy.join(own.trim_start_matches('/')));
    let job = JobCgroup {
        job_key: JobKey::JobId("self".into()),
        paths,
    };
    let mut reader = CgroupReader::default();
    let before = reader.read(&job).cpu_usage_usec;
    let own_before = own_cpu_usec();
    // Burn until this process has used 500 ms of CPU (not of wall time: on a loaded machine
    // the scheduler may give it far less than the wall clock), giving up after 20 s.
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while own_cpu_usec() - own_before < 500_000
        && start.elapsed() < std::time::Duration::from_secs(20)
    {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    let own_used = own_cpu_usec() - own_before;
    let after = reader.read(&job);
    let (Some(before), Some(now)) = (before, after.cpu_usage_usec) else {
        panic!("cpu.stat of {job:?} has no usage_usec: {after:?}");
    };
    // The cgroup holds this process and maybe others, so it grew by at least what we used,
    // within the issue's ±10 % (the kernel flushes cgroup CPU statistics lazily) and one
    // tick of /proc's resolution.
    let grown = now.saturating_sub(before);
    assert!(own_used >= 250_000, "burned only {own_used} µs");
    assert!(
        grown as f64 + 10_000.0 >= own_used as f64 * 0.9,
        "cgroup {grown} µs < 90 % of the process's {own_used} µs"
    );
    assert!(!after.vanished);
}

/// A fresh child of this machine's writable cgroup v2 hierarchy, removed when dropped.
struct RealChild(PathBuf);

impl RealChild {
    fn create(name: &str) -> Result<RealChild, String> {
        let root = Path::new(DEFAULT_CGROUP_ROOT);
        let hierarchy = [root.to_path_buf(), root.join("unified")]
            .into_iter()
            .find(|d| d.join("cgroup.controllers").is_file())
            .ok_or("no cgroup v2 hierarchy")?;
        let dir = hierarchy.join(format!("jobscope-test-{name}-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(RealChild(dir)),
            Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
}

impl Drop for RealChild {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_real_cgroup_removed_under_kept_files_is_vanished_and_they_close() {
    let child = match RealChild::create("kept") {
        Ok(child) => child,
        Err(why) => {
            eprintln!("not run (needs root and a writable cgroup v2 hierarchy): {why}");
            return;
        }
    };
    let dir = &child.0;
    let job = JobCgroup {
        job_key: JobKey::JobId("kept".into()),
        paths: CgroupPaths::V2(dir.clone()),
    };
    let mut reader = CgroupReader::default();
    let mut files = CgroupFiles::kept();
    let s = reader.read_kept(&job, &mut files, true);
    // Every v2 cgroup has cpu.stat, whatever controllers its parent enables.
    assert!(s.cpu_usage_usec.is_some() && !s.vanished, "{s:?}");
    let open = files.open_count();
    assert!(open >= 1);

    // Removed and made again at the same path (a requeued job): the new cgroup is read.
    std::fs::remove_dir(dir).unwrap();
    std::fs::create_dir(dir).unwrap();
    let (s, logged) = capturing_logs(|| reader.read_kept(&job, &mut files, false));
    assert_eq!(logged, "");
    assert!(s.cpu_usage_usec.is_some() && !s.vanished, "{s:?}");
    assert_eq!(files.open_count(), open);

    // Removed for good: the kept files fail with ENODEV, which is a vanished cgroup with
    // no figures (so no sample), and they are closed.
    std::fs::remove_dir(dir).unwrap();
    let (s, logged) = capturing_logs(|| reader.read_kept(&job, &mut files, false));
    assert_eq!(logged, "");
    let gone = CgroupSample {
        vanished: true,
        ..Default::default()
    };
    assert_eq!(s, gone);
    assert_eq!(files.open_count(), 0);
}
