//! Agent sampling benchmark: the CPU time and memory of one [`Sampler`] (the agent's whole
//! sampling pass: discovery, every job's cgroup files, the CPU percentage, the node's `/proc`
//! figures, the batch) over N fixture cgroup v2 jobs on tmpfs, for N = 1, 100, 1,000 and 5,000;
//! then the whole `jobscope agent` binary against a real `jobscope serve` on SQLite, with
//! 1,000 fixture jobs that the server knows as running.
//!
//! CPU time is the process's own (`getrusage(RUSAGE_SELF)`, user + system: reading tmpfs files
//! is kernel time), over many passes, divided by passes × N; wall time is not used. Each N runs
//! in a fresh child process so its peak RSS (`VmHWM`) is its own.
//!
//! Run: `cargo bench --bench agent_sampling` (see BENCHMARKS.md). Options by environment:
//! `BENCH_JOBS` (default "1,100,1000,5000"), `BENCH_SAMPLES` job samples per N (default
//! 200000; passes = samples / N, within 20..=50000), `BENCH_AGENT_JOBS` (default 1000; 0 skips the
//! agent-binary run), `BENCH_AGENT_SECONDS` (default 30), `BENCH_DIR` (default /dev/shm).

use jobscope::collector::{KnownJob, Sampler, SamplerConfig};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{env_or, post_job_started, stored_samples};

/// User and system CPU time of this process so far.
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: &str) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn write(dir: &Path, name: &str, content: &str) {
    fs::write(dir.join(name), content).unwrap();
}

/// A job-level cgroup v2 directory as Slurm 23–25 leaves it on a node with every controller
/// enabled: the files the agent reads with the contents a 6.1 kernel writes (full `memory.stat`,
/// `cpu.stat` with burst/force-idle lines, two devices in `io.stat`), plus the step directories.
fn fixture_job(scope: &Path, id: u64) {
    let dir = scope.join(format!("job_{id}"));
    for step in ["step_extern/user/task_special", "step_batch/user/task_0"] {
        fs::create_dir_all(dir.join(step)).unwrap();
    }
    write(&dir, "cgroup.controllers", "cpuset cpu io memory pids\n");
    let usage = 3_600_000_000 + id * 7_919;
    write(
        &dir,
        "cpu.stat",
        &format!(
            "usage_usec {usage}\nuser_usec {}\nsystem_usec {}\ncore_sched.force_idle_usec 0\n\
             nr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n",
            usage / 10 * 9,
            usage / 10
        ),
    );
    write(&dir, "cpuset.cpus.effective", "0-15\n");
    let mem = 17_179_869_184 + id * 4096;
    write(&dir, "memory.current", &format!("{mem}\n"));
    write(&dir, "memory.peak", &format!("{}\n", mem + 1_073_741_824));
    write(&dir, "memory.max", "68719476736\n");
    let mut stat = format!(
        "anon {}\nfile {}\nkernel 52428800\nkernel_stack 1048576\npagetables 33554432\n\
         sec_pagetables 0\npercpu 2048\nsock 0\nvmalloc 0\nshmem 8388608\nzswap 0\nzswapped 0\n\
         file_mapped 104857600\nfile_dirty 4096\nfile_writeback 0\nswapcached 0\n\
         anon_thp 14680064000\nfile_thp 0\nshmem_thp 0\ninactive_anon 1048576\n\
         active_anon {}\ninactive_file 1073741824\nactive_file 1073741824\nunevictable 0\n\
         slab_reclaimable 20971520\nslab_unreclaimable 10485760\nslab 31457280\n",
        mem - 2_147_483_648,
        2_147_483_648u64,
        mem - 2_148_532_224
    );
    for (k, v) in [
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", 1520),
        ("workingset_activate_anon", 0),
        ("workingset_activate_file", 311),
        ("workingset_restore_anon", 0),
        ("workingset_restore_file", 0),
        ("workingset_nodereclaim", 0),
        ("pgscan", 4096),
        ("pgsteal", 4000),
        ("pgscan_kswapd", 0),
        ("pgscan_direct", 4096),
        ("pgsteal_kswapd", 0),
        ("pgsteal_direct", 4000),
        ("pgfault", 41_943_040),
        ("pgmajfault", 12),
        ("pgrefill", 0),
        ("pgactivate", 2048),
        ("pgdeactivate", 0),
        ("pglazyfree", 0),
        ("pglazyfreed", 0),
        ("zswpin", 0),
        ("zswpout", 0),
        ("thp_fault_alloc", 7000),
        ("thp_collapse_alloc", 0),
    ] {
        stat.push_str(&format!("{k} {v}\n"));
    }
    write(&dir, "memory.stat", &stat);
    write(
        &dir,
        "memory.events",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    );
    write(
        &dir,
        "io.stat",
        &format!(
            "259:0 rbytes={} wbytes={} rios=52311 wios=8812 dbytes=0 dios=0\n\
             8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
            1_073_741_824 + id,
            536_870_912 + id
        ),
    );
    write(&dir, "pids.current", "34\n");
    for psi in ["cpu.pressure", "memory.pressure", "io.pressure"] {
        write(
            &dir,
            psi,
            "some avg10=0.12 avg60=0.08 avg300=0.02 total=1234567\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=23456\n",
        );
    }
}

/// `<root>/system.slice/slurmstepd.scope/job_<id>` for `n` jobs, beside the other cgroups a
/// node has (slurmd.service, sshd.service, user.slice) so discovery walks a realistic root.
fn fixture_tree(root: &Path, n: u64) -> PathBuf {
    write_dir(root, "");
    for other in [
        "system.slice/slurmd.service",
        "system.slice/sshd.service",
        "system.slice/systemd-journald.service",
        "user.slice/user-0.slice",
        "init.scope",
    ] {
        write_dir(root, other);
    }
    let scope = root.join("system.slice/slurmstepd.scope");
    write_dir(root, "system.slice/slurmstepd.scope/system");
    for id in 0..n {
        fixture_job(&scope, 1_000_000 + id);
    }
    scope
}

fn write_dir(root: &Path, rel: &str) {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).unwrap();
    write(&dir, "cgroup.controllers", "cpuset cpu io memory pids\n");
}

fn known_jobs(n: u64) -> Vec<KnownJob> {
    (0..n)
        .map(|i| KnownJob {
            id: (1_000_000 + i).to_string(),
            cpus_on_node: Some(16),
            ..KnownJob::default()
        })
        .collect()
}

fn bench_dir() -> (tempfile::TempDir, &'static str) {
    let wanted = env_or("BENCH_DIR", "/dev/shm");
    match tempfile::Builder::new()
        .prefix("jobscope-bench-")
        .tempdir_in(&wanted)
    {
        Ok(dir) => (dir, "tmpfs"),
        Err(err) => {
            eprintln!("cannot use {wanted} ({err}); falling back to the temp dir (not tmpfs)");
            (tempfile::tempdir().unwrap(), "temp dir")
        }
    }
}

/// One N, in this (child) process: prints one table row.
fn child(n: u64) {
    let samples: u64 = env_or("BENCH_SAMPLES", "200000").parse().unwrap();
    let (dir, kind) = bench_dir();
    let built = Instant::now();
    fixture_tree(dir.path(), n);
    let build_s = built.elapsed().as_secs_f64();
    let (_, hwm_before) = memory_kib("self");
    let known = known_jobs(n);
    let mut sampler = Sampler::new(
        SamplerConfig {
            node: "bench-node".into(),
            cgroup_root: dir.path().to_path_buf(),
            proc_root: "/proc".into(),
            drm_root: dir.path().join("no-drm"),
            interval: Duration::from_secs(15),
            max_open_cgroup_files: jobscope::collector::fd_limit::KEPT_FILES_CEILING,
        },
        None,
    );
    // Two warm-up passes: the CPU percentage needs a previous reading, buffers grow once.
    for warm_up in 0..2 {
        let (batch, _) = sampler.sample(&known, chrono::Utc::now());
        assert_eq!(batch.jobs.len() as u64, n, "every fixture job is sampled");
        assert!(batch
            .jobs
            .iter()
            .all(|j| (warm_up == 0 || j.cpu_usage_percent.is_some())
                && j.cgroup.memory_anon_bytes.is_some()
                && j.cgroup.io_pressure.is_some()));
    }
    let passes = (samples / n).clamp(20, 50_000);
    let (u0, s0) = cpu_times();
    let wall = Instant::now();
    let mut sampled = 0usize;
    for _ in 0..passes {
        let (batch, _) = sampler.sample(&known, chrono::Utc::now());
        sampled = batch.jobs.len();
        std::hint::black_box(&batch);
    }
    let wall = wall.elapsed();
    let (u1, s1) = cpu_times();
    assert_eq!(sampled as u64, n);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (passes * n) as f64;
    let (user, system) = (per(u1 - u0), per(s1 - s0));
    let (rss, hwm) = memory_kib("self");
    println!(
        "| {n} | {passes} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {kind} |",
        user + system,
        user,
        system,
        wall.as_secs_f64() * 1e3 / passes as f64,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        hwm_before as f64 / 1024.0,
    );
    eprintln!("  N={n}: fixture built in {build_s:.1} s");
    drop(dir);
}

/// CPU ticks (utime + stime) of a process, from `/proc/<pid>/stat`.
fn proc_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (closed again at once; `serve` binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole agent binary: a real `serve` (SQLite) knows `n` running jobs on the node, the
/// agent samples their fixture cgroups every second and posts to it.
fn agent_binary(n: u64, seconds: u64) {
    let exe = env!("CARGO_BIN_EXE_jobscope");
    let (dir, kind) = bench_dir();
    let work = tempfile::tempdir().unwrap();
    fixture_tree(&dir.path().join("cg"), n);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let serve = Killed(
        Command::new(exe)
            .args(["serve", "--port", &port.to_string()])
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}",
                work.path().join("bench.db").display()
            ))
            .env("RUST_LOG", "warn")
            .env_remove("JOBSCOPE_TOKENS_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("serve starts"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("http://{addr}/v1/health"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "serve did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..n {
            let body = serde_json::json!({
                "job_id": (1_000_000 + i).to_string(), "user": "bench", "node_list": ["bench-node"],
                "cpu_allocation": 16, "partition": "cpu"});
            post_job_started(&client, &addr, &body).await;
        }
    });
    let agent_log = work.path().join("agent.log");
    let mut agent = Killed(
        Command::new(exe)
            .args([
                "agent",
                "--node",
                "bench-node",
                "--interval",
                "1s",
                "--gpu",
                "none",
            ])
            .arg("--server")
            .arg(format!("http://{addr}"))
            .arg("--cgroup-root")
            .arg(dir.path().join("cg"))
            .arg("--spool-dir")
            .arg(work.path().join("spool"))
            .env("RUST_LOG", "info")
            .env_remove("JOBSCOPE_TOKEN_FILE")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&agent_log).unwrap())
            .spawn()
            .expect("agent starts"),
    );
    let pid = agent.0.id();
    // Settle (first passes, connection, allocator), then measure over `seconds`.
    std::thread::sleep(Duration::from_secs(3));
    let samples_of =
        |rt: &tokio::runtime::Runtime| rt.block_on(stored_samples(&client, &addr, "1000000"));
    let ticks0 = proc_ticks(pid);
    let passes0 = samples_of(&rt);
    let mut hwm_max = 0;
    let mut rss_max = 0;
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        let (rss, hwm) = memory_kib(&pid.to_string());
        rss_max = rss_max.max(rss);
        hwm_max = hwm_max.max(hwm);
    }
    let ticks1 = proc_ticks(pid);
    let passes1 = samples_of(&rt);
    let alive = agent.0.try_wait().unwrap().is_none();
    let (serve_rss, serve_hwm) = memory_kib(&serve.0.id().to_string());
    drop(agent);
    drop(serve);
    let passes = passes1.saturating_sub(passes0);
    let tck = 100.0; // USER_HZ on Linux
    let cpu_s = (ticks1 - ticks0) as f64 / tck;
    println!(
        "| {n} | {seconds} | {passes} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {kind} | {} |",
        if passes > 0 {
            cpu_s * 1e6 / (passes * n) as f64
        } else {
            f64::NAN
        },
        cpu_s * 100.0 / seconds as f64,
        rss_max as f64 / 1024.0,
        hwm_max as f64 / 1024.0,
        serve_hwm.max(serve_rss) as f64 / 1024.0,
        if alive { "ok" } else { "agent exited" }
    );
    if !alive || passes == 0 {
        eprintln!(
            "agent log:\n{}",
            fs::read_to_string(&agent_log).unwrap_or_default()
        );
    }
    let _ = std::io::stdout().flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args[i + 1].parse().expect("N"));
        return;
    }
    if !support::begin("agent_sampling") {
        return;
    }
    println!("Sampler, one process per N (CPU per job sample = process CPU / (passes × N)):\n");
    println!("| jobs | passes | CPU µs/job sample | user µs | system µs | wall ms/pass | VmRSS MiB | VmHWM MiB | VmHWM before sampling MiB | files on |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let _ = std::io::stdout().flush();
    let exe = std::env::current_exe().unwrap();
    for n in env_or("BENCH_JOBS", "1,100,1000,5000").split(',') {
        let status = Command::new(&exe)
            .args(["--child", n.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "child for N={n} failed");
    }
    let agent_jobs: u64 = env_or("BENCH_AGENT_JOBS", "1000").parse().unwrap();
    if agent_jobs > 0 {
        let seconds: u64 = env_or("BENCH_AGENT_SECONDS", "30").parse().unwrap();
        println!(
            "\n`jobscope agent` process, --interval 1s, against `jobscope serve` on SQLite:\n"
        );
        println!("| jobs | seconds | passes | CPU µs/job sample | CPU % of a core | VmRSS MiB (max) | VmHWM MiB | serve VmHWM MiB | files on | |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let _ = std::io::stdout().flush();
        agent_binary(agent_jobs, seconds);
    }
}
