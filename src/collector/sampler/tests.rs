//! Tests of the sampling pass ([`super::Sampler`]) over fake cgroup trees and fake GPUs.

use super::super::discovery::tests::{v2_dir, write};
use super::super::{FakeGpus, GpuVendor};
use super::*;

fn config(root: &Path, proc_root: &Path) -> SamplerConfig {
    SamplerConfig {
        node: "node-1".into(),
        cgroup_root: root.to_path_buf(),
        proc_root: proc_root.to_path_buf(),
        drm_root: root.join("no-drm"),
        interval: Duration::from_secs(15),
        max_open_cgroup_files: fd_limit::KEPT_FILES_CEILING,
    }
}

/// A v2 root with the default slice and slurmstepd scope.
fn v2_root(root: &Path) {
    for dir in ["", "system.slice", "system.slice/slurmstepd.scope"] {
        v2_dir(root, dir);
    }
}

fn gpu(index: u32, minor: u32, pids: Vec<u32>, util: f64) -> GpuReading {
    GpuReading {
        uuid: Some(format!("GPU-{index}")),
        minor: Some(minor),
        utilization_percent: Some(util),
        processes: pids,
        ..GpuReading::new(index, GpuVendor::Nvidia)
    }
}

#[test]
fn cpu_lists_are_counted() {
    assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
    assert_eq!(parse_cpu_list("5"), Some(1));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("a-b"), None);
    // a malformed file never panics (the range's size would overflow a u32)
    assert_eq!(parse_cpu_list("0-4294967295"), None);
    assert_eq!(parse_cpu_list("0-4294967294,1-4294967295"), None);
}

#[test]
fn known_jobs_are_read_leniently() {
    let job = serde_json::json!({"id": "7", "node_count": 2, "allocated_cpus": 8,
        "gpu_devices": ["0", "GPU-x"], "scheduler": {"sluid": "s5K1KKYAYG5D00"}, "cgroup_path": ""});
    let k = KnownJob::from_json(&job).unwrap();
    assert_eq!(k.cpus_on_node, Some(4));
    assert_eq!(k.sluid.as_deref(), Some("s5K1KKYAYG5D00"));
    assert_eq!(k.cgroup_path, None, "blank is absent");
    assert_eq!(k.gpu_devices, ["0", "GPU-x"]);
    let uneven = serde_json::json!({"id": "8", "node_count": 3, "allocated_cpus": 8});
    assert_eq!(
        KnownJob::from_json(&uneven).unwrap().cpus_on_node,
        None,
        "no guess"
    );
    assert!(KnownJob::from_json(&serde_json::json!({"user": "x"})).is_none());
}

#[test]
fn a_stored_job_reads_as_its_json_does() {
    let mut job = crate::domain::Job::new(
        "7".into(),
        "alice".into(),
        vec!["n1".into(), "n2".into()],
        crate::domain::JobState::Running,
        "2026-11-29T23:00:00Z".parse().unwrap(),
        "c",
        "slurm",
        "v",
    );
    job.allocated_cpus = Some(8);
    job.gpu_devices = vec!["0".into()];
    job.cgroup_path = Some(String::new());
    job.scheduler = Some(crate::domain::SchedulerInfo {
        partition: Some("gpu".into()),
        sluid: Some("s5K1KKYAYG5D00".into()),
        ..Default::default()
    });
    let via_json = KnownJob::from_json(&serde_json::to_value(&job).unwrap()).unwrap();
    let direct = KnownJob::from_job(&job);
    assert_eq!(direct, via_json);
    assert_eq!(direct.cpus_on_node, Some(4));
    assert_eq!(direct.partition.as_deref(), Some("gpu"));
    job.allocated_cpus = Some(-1);
    job.requested_cpus = Some(6);
    let via_json = KnownJob::from_json(&serde_json::to_value(&job).unwrap()).unwrap();
    assert_eq!(KnownJob::from_job(&job), via_json);
    assert_eq!(via_json.cpus_on_node, Some(3));
}

#[test]
fn slurm_indices_name_minor_numbers_not_positions() {
    // NVML lists the device with minor 1 first.
    let first = gpu(0, 1, vec![], 0.0);
    assert!(names_device("1", &first));
    assert!(!names_device("0", &first));
    assert!(
        names_device("gpu-0", &first),
        "UUIDs compare case-insensitively"
    );
    let mut with_bus = first.clone();
    with_bus.pci_bus_id = Some("0000:3b:00.0".into());
    assert!(names_device("00000000:3B:00.0", &with_bus));
}

#[test]
fn a_pass_reads_jobs_assigns_gpus_and_reports_idle_ones() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cgroup");
    let proc_root = t.path().join("proc");
    v2_root(&root);
    let job7 = v2_dir(&root, "system.slice/slurmstepd.scope/job_7");
    write(
        &job7,
        "cpu.stat",
        b"usage_usec 1000000\nuser_usec 800000\nsystem_usec 200000\n",
    );
    write(&job7, "memory.current", b"1048576\n");
    write(&job7, "cpuset.cpus.effective", b"0-1\n");
    let job8 = v2_dir(&root, "system.slice/slurmstepd.scope/job_8");
    write(&job8, "cpu.stat", b"usage_usec 5\n");
    // pid 4242 of job 7 runs on GPU minor 0; job 8 holds GPU minor 1 and runs nothing on it.
    write(
        &proc_root,
        "4242/cgroup",
        b"0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n",
    );
    write(
        &proc_root,
        "stat",
        b"cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\n",
    );
    let fake = FakeGpus::new(vec![gpu(0, 0, vec![4242], 97.0), gpu(1, 1, vec![], 0.0)]);
    let mut sampler = Sampler::new(config(&root, &proc_root), Some(Box::new(fake)));
    let known = vec![
        KnownJob {
            id: "7".into(),
            ..KnownJob::default()
        },
        KnownJob {
            id: "8".into(),
            cpus_on_node: Some(1),
            gpu_devices: vec!["1".into()],
            ..KnownJob::default()
        },
    ];
    let (batch, notes) = sampler.sample(&known, Utc::now());
    assert_eq!(notes, PassNotes::default());
    assert_eq!(batch.node, "node-1");
    assert_eq!(batch.interval_seconds, Some(15.0));
    let ids: Vec<&str> = batch.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, ["7", "8"]);
    let j7 = &batch.jobs[0];
    assert_eq!(j7.cpu_usage_percent, None, "first pass: counters only");
    assert_eq!(j7.cgroup.cpu_usage_usec, Some(1_000_000));
    assert_eq!(j7.cgroup.memory_current_bytes, Some(1_048_576));
    assert_eq!(j7.gpus.len(), 1);
    assert_eq!(j7.gpus[0].utilization_percent, Some(97.0));
    let j8 = &batch.jobs[1];
    assert_eq!(j8.gpus.len(), 1, "held GPU reported");
    assert_eq!(j8.gpus[0].utilization_percent, Some(0.0));
    assert_eq!(batch.node_stats.as_ref().unwrap().gpus.len(), 2);

    // Second pass: job 7 used 1 s more of its 2 CPUs.
    std::thread::sleep(Duration::from_millis(50));
    write(&job7, "cpu.stat", b"usage_usec 1050000\n");
    let (batch, _) = sampler.sample(&known, Utc::now());
    let pct = batch.jobs[0]
        .cpu_usage_percent
        .expect("second pass has a percentage");
    assert!(pct > 0.0 && pct <= 100.0, "{pct}");

    // A cgroup gone between discovery and the read yields no sample at all; one that
    // vanished midway still reports what was read.
    let gone = JobCgroup {
        job_key: JobKey::JobId("9".into()),
        paths: CgroupPaths::V2(root.join("system.slice/slurmstepd.scope/job_9")),
    };
    let empty = sampler.cgroups.read(&gone);
    assert!(empty.vanished);
    assert!(!worth_reporting(&empty));
    let partial = super::super::CgroupSample {
        cpu_usage_usec: Some(5),
        ..empty
    };
    assert!(worth_reporting(&partial));

    // Job 8 ends: its cgroup goes, and its CPU history with it.
    std::fs::remove_dir_all(&job8).unwrap();
    let (batch, _) = sampler.sample(&known, Utc::now());
    assert_eq!(batch.jobs.len(), 1);
    assert!(!sampler.jobs.contains_key("8"));
}

/// This process's open file descriptors on files under `dir` (removed ones included).
fn fds_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn an_admin_can_keep_no_files_open() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cgroup");
    v2_root(&root);
    let dir = v2_dir(&root, "system.slice/slurmstepd.scope/job_1");
    write(&dir, "memory.current", b"5\n");
    let known = [KnownJob {
        id: "1".into(),
        ..KnownJob::default()
    }];
    let mut open = Sampler::new(config(&root, &t.path().join("proc")), None);
    let mut closed = Sampler::new(
        SamplerConfig {
            max_open_cgroup_files: 0,
            ..config(&root, &t.path().join("proc"))
        },
        None,
    );
    let (kept, _) = open.sample(&known, Utc::now());
    assert_eq!(fds_under(t.path()), 1, "memory.current stays open");
    drop(open);
    let (afresh, _) = closed.sample(&known, Utc::now());
    assert_eq!(fds_under(t.path()), 0);
    assert_eq!(afresh.jobs[0].cgroup.memory_current_bytes, Some(5));
    assert_eq!(kept.jobs[0].cgroup, afresh.jobs[0].cgroup);
}

#[test]
fn jobs_keep_their_files_open_within_the_budget_and_close_them_when_they_end() {
    use super::super::cgroup::tests::V2_FILES;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cgroup");
    v2_root(&root);
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|id| {
            let dir = v2_dir(&root, &format!("system.slice/slurmstepd.scope/job_{id}"));
            for (name, content) in V2_FILES {
                write(&dir, name, content.as_bytes());
            }
            write(&dir, "cpuset.cpus.effective", b"0-3\n");
            dir
        })
        .collect();
    let known: Vec<KnownJob> = (1..=3)
        .map(|id| KnownJob {
            id: id.to_string(),
            ..KnownJob::default()
        })
        .collect();
    let mut sampler = Sampler::new(config(&root, &t.path().join("proc")), None);
    let mut reference = Sampler::new(config(&root, &t.path().join("proc")), None);
    reference.max_kept_jobs = 0;
    // Two jobs fit the budget; the third is read file by file, with the same figures.
    sampler.max_kept_jobs = 2;
    let figures = |s: &mut Sampler| {
        let (batch, _) = s.sample(&known, Utc::now());
        let cgroups: Vec<_> = batch.jobs.into_iter().map(|j| j.cgroup).collect();
        cgroups
    };
    assert_eq!(fds_under(t.path()), 0);
    for _ in 0..2 {
        assert_eq!(figures(&mut sampler), figures(&mut reference));
        assert_eq!(fds_under(t.path()), 2 * V2_FILES.len());
    }
    // Values written between passes are seen through the kept files.
    write(&dirs[0], "memory.current", b"7\n");
    write(&dirs[2], "memory.current", b"8\n");
    let got: Vec<_> = figures(&mut sampler)
        .iter()
        .map(|c| c.memory_current_bytes)
        .collect();
    assert_eq!(got, [Some(7), Some(104_857_600), Some(8)]);
    // Job 1 ends: its files close, and from the next pass job 3 has its place in the budget.
    std::fs::remove_dir_all(&dirs[0]).unwrap();
    let (batch, _) = sampler.sample(&known, Utc::now());
    assert_eq!(batch.jobs.len(), 2);
    assert_eq!(fds_under(t.path()), V2_FILES.len());
    let (batch, _) = sampler.sample(&known, Utc::now());
    assert_eq!(batch.jobs.len(), 2);
    assert_eq!(fds_under(t.path()), 2 * V2_FILES.len());
    assert!(sampler.jobs.values().all(|j| j.files.is_kept()));
    // All end: nothing left open.
    for dir in &dirs[1..] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let (batch, _) = sampler.sample(&known, Utc::now());
    assert!(batch.jobs.is_empty());
    assert!(sampler.jobs.is_empty());
    assert_eq!(fds_under(t.path()), 0);
}

#[test]
fn the_cpuset_is_read_on_a_jobs_first_two_passes_and_on_refreshes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cgroup");
    v2_root(&root);
    let dir = v2_dir(&root, "system.slice/slurmstepd.scope/job_5");
    write(&dir, "cpu.stat", b"usage_usec 1\n");
    // Read before slurmstepd narrowed it: the parent's CPUs.
    write(&dir, "cpuset.cpus.effective", b"0-63\n");
    let mut sampler = Sampler::new(config(&root, &t.path().join("proc")), None);
    let cpus = |s: &mut Sampler| {
        s.sample(&[], Utc::now());
        s.jobs["5"].cpuset
    };
    assert_eq!(cpus(&mut sampler), Some(64));
    write(&dir, "cpuset.cpus.effective", b"0-3\n");
    assert_eq!(
        cpus(&mut sampler),
        Some(4),
        "the second pass reads it again"
    );
    write(&dir, "cpuset.cpus.effective", b"0-7\n");
    for _ in 2..REFRESH_PASSES {
        assert_eq!(cpus(&mut sampler), Some(4));
    }
    assert_eq!(cpus(&mut sampler), Some(8));
}

#[test]
fn unnamed_sluid_directories_are_counted_not_guessed() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cgroup");
    v2_root(&root);
    let dir = v2_dir(&root, "system.slice/slurmstepd.scope/s5K1KKYAYG5D00");
    write(&dir, "cpu.stat", b"usage_usec 5\n");
    let mut sampler = Sampler::new(config(&root, &t.path().join("proc")), None);
    let (batch, notes) = sampler.sample(&[], Utc::now());
    assert!(batch.jobs.is_empty());
    assert_eq!(notes.unattributed_cgroups, 1);
    let known = [KnownJob {
        id: "99".into(),
        sluid: Some("s5K1KKYAYG5D00".into()),
        ..KnownJob::default()
    }];
    let (batch, notes) = sampler.sample(&known, Utc::now());
    assert_eq!(batch.jobs[0].job_id, "99");
    assert_eq!(notes.unattributed_cgroups, 0);
}

#[test]
fn an_unreadable_root_is_noted_and_the_node_still_reported() {
    let t = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(
        config(&t.path().join("missing"), &t.path().join("proc")),
        None,
    );
    let (batch, notes) = sampler.sample(&[], Utc::now());
    assert!(notes.root_unreadable);
    assert!(batch.node_stats.is_some());
}
