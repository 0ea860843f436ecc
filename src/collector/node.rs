//! The node's own figures, for the node's row beside its jobs: CPU usage from two `/proc/stat`
//! snapshots, memory from `/proc/meminfo`, load averages and the online CPU count.
//!
//! Parsing goes through the `procfs` crate, fed from buffers this module reads under a
//! configurable root (default `/proc`), so tests use fixture text. As elsewhere in the
//! collector every figure is an `Option`: an absent file is `None` silently, an unparsable one
//! is `None` and one warning naming it, never a 0 and never a panic. [`NodeSampler`] owns the
//! previous `/proc/stat` snapshot, so its first sample has no CPU percentage.

use procfs::{ExplicitSystemInfo, FromBufRead, FromBufReadSI, FromRead, KernelStats};
use procfs::{LoadAverage, Meminfo, ProcResult};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Where the kernel mounts procfs.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// The node at one instant. Memory is in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// Share of all CPUs' time spent busy since the previous sample, 0..=100.
    pub cpu_usage_percent: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    /// `MemTotal − MemAvailable`: what cannot be reclaimed without swapping, so page cache
    /// does not make an idle node look full.
    pub memory_used_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    pub load_1: Option<f64>,
    pub load_5: Option<f64>,
    pub load_15: Option<f64>,
    /// Online CPUs (the `cpuN` lines of `/proc/stat`; offline CPUs are not listed there).
    pub cpu_count: Option<u32>,
}

/// The aggregate `cpu` line of `/proc/stat`, in ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal. Guest time is already
    /// inside user and nice, so it is not added again.
    pub total: u64,
}

/// Busy share of the ticks between two snapshots, 0..=100. `None` without a previous snapshot,
/// when no tick passed, and when a counter went backwards (iowait may, per proc(5)): the
/// difference would mean nothing.
pub fn cpu_usage_percent(prev: Option<CpuTicks>, cur: CpuTicks) -> Option<f64> {
    let prev = prev?;
    let busy = cur.busy.checked_sub(prev.busy)?;
    let total = cur.total.checked_sub(prev.total).filter(|&t| t > 0)?;
    Some((busy as f64 / total as f64 * 100.0).clamp(0.0, 100.0))
}

/// Samples the node, keeping the previous `/proc/stat` snapshot between calls.
#[derive(Debug)]
pub struct NodeSampler {
    proc_root: PathBuf,
    prev: Option<CpuTicks>,
    buf: Vec<u8>,
}

impl Default for NodeSampler {
    fn default() -> Self {
        Self::new(DEFAULT_PROC_ROOT)
    }
}

impl NodeSampler {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            prev: None,
            buf: Vec::with_capacity(8192),
        }
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Reads the three files. A `/proc/stat` that cannot be read keeps the previous snapshot,
    /// so the next percentage spans both intervals instead of being lost too.
    pub fn sample(&mut self) -> NodeSample {
        let mut s = NodeSample::default();
        if let Some(stat) = self.parse("stat", parse_stat) {
            s.cpu_usage_percent = cpu_usage_percent(self.prev, stat.ticks);
            s.cpu_count = stat.cpu_count;
            self.prev = Some(stat.ticks);
        }
        if let Some(mem) = self.parse("meminfo", parse_meminfo) {
            s.memory_total_bytes = Some(mem.total);
            s.memory_available_bytes = mem.available;
            s.memory_used_bytes = mem.available.map(|a| mem.total - a);
        }
        if let Some(load) = self.parse("loadavg", parse_loadavg) {
            [s.load_1, s.load_5, s.load_15] = load.map(Some);
        }
        s
    }

    /// `None` for an absent file (silently) and for content `parse` rejects (with one warning
    /// naming the file and procfs's reason).
    fn parse<T>(&mut self, name: &str, parse: fn(&[u8]) -> Result<T, String>) -> Option<T> {
        let path = self.proc_root.join(name);
        self.buf.clear();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut self.buf)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read proc file");
                return None;
            }
        }
        match parse(&self.buf) {
            Ok(v) => Some(v),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "unparsable proc file, its figures are skipped");
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct StatFigures {
    ticks: CpuTicks,
    cpu_count: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct MemFigures {
    total: u64,
    available: Option<u64>,
}

/// procfs's parsers return errors for what they expect to meet, but some inputs make them
/// panic (see [`parse_meminfo`]). These files come from the kernel, yet a panic here would take
/// the sampling loop down, so every parse is fenced and a panic is just another unparsable
/// file; the inputs known to panic are also rejected before the parser sees them.
fn fenced<T>(parse: impl FnOnce() -> ProcResult<T>) -> Result<T, String> {
    match panic::catch_unwind(AssertUnwindSafe(parse)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the procfs parser panicked".to_owned()),
    }
}

fn parse_stat(text: &[u8]) -> Result<StatFigures, String> {
    // Only the tick counts are used; the rate matters for procfs's millisecond helpers alone.
    let si = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let stats = fenced(|| KernelStats::from_buf_read(text, &si))?;
    let t = &stats.total;
    let sum = |parts: &[u64]| parts.iter().try_fold(0u64, |acc, &p| acc.checked_add(p));
    let busy = sum(&[
        t.user,
        t.nice,
        t.system,
        t.irq.unwrap_or(0),
        t.softirq.unwrap_or(0),
        t.steal.unwrap_or(0),
    ]);
    let total = busy.and_then(|b| sum(&[b, t.idle, t.iowait.unwrap_or(0)]));
    let (Some(busy), Some(total)) = (busy, total) else {
        return Err("cpu tick counts overflow".to_owned());
    };
    Ok(StatFigures {
        ticks: CpuTicks { busy, total },
        cpu_count: u32::try_from(stats.cpu_time.len()).ok().filter(|&n| n > 0),
    })
}

fn parse_meminfo(text: &[u8]) -> Result<MemFigures, String> {
    // procfs slices each key at a byte offset and multiplies kB into bytes unchecked, so a
    // non-ASCII key panics and a huge value panics (debug) or wraps (release): reject both
    // before it sees them.
    if !text.is_ascii() {
        return Err("not ASCII".to_owned());
    }
    let too_big = text.split(|&b| b == b'\n').any(|line| {
        let mut words = line
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty());
        let (Some(value), Some(unit)) = (words.nth(1), words.next()) else {
            return false;
        };
        let shift = match unit.first().map(u8::to_ascii_lowercase) {
            Some(b'k') => 10,
            Some(b'm') => 20,
            Some(b'g') => 30,
            _ => 0,
        };
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > u64::MAX >> shift)
    });
    if too_big {
        return Err("a value too large to be a byte count".to_owned());
    }
    let mem = fenced(|| Meminfo::from_buf_read(text))?;
    let available = mem.mem_available;
    if mem.mem_total == 0 || available.is_some_and(|a| a > mem.mem_total) {
        return Err(format!(
            "MemTotal {} and MemAvailable {available:?} make no sense",
            mem.mem_total
        ));
    }
    Ok(MemFigures {
        total: mem.mem_total,
        available,
    })
}

fn parse_loadavg(text: &[u8]) -> Result<[f64; 3], String> {
    let load = fenced(|| LoadAverage::from_read(text))?;
    // procfs parses into f32; the kernel prints two decimals, so round the f64 back to them
    // (0.52 rather than 0.5199999809).
    let mut out = [0.0; 3];
    for (o, v) in out.iter_mut().zip([load.one, load.five, load.fifteen]) {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("load average {v} is not a non-negative number"));
        }
        *o = (f64::from(v) * 100.0).round() / 100.0;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::discovery::tests::write;
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what `f` logs, so a test can count warnings.
    pub(crate) fn capturing_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let logged = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
        (out, logged)
    }

    /// `/proc/stat` of a 4-CPU machine (trimmed `intr`/`softirq` lines).
    const STAT_1: &str = "cpu  564299 10 87413 365181 13017 0 8584 29851 0 0\n\
        cpu0 141075 3 21853 91295 3254 0 2146 7463 0 0\n\
        cpu1 141075 3 21853 91295 3254 0 2146 7463 0 0\n\
        cpu2 141075 2 21853 91295 3254 0 2146 7463 0 0\n\
        cpu3 141074 2 21854 91296 3255 0 2146 7462 0 0\n\
        intr 5934548 0 0 0 0 14 0 1064 471\n\
        ctxt 12825505\n\
        btime 1718000000\n\
        processes 14739\n\
        procs_running 2\n\
        procs_blocked 0\n\
        softirq 3096390 0 917360 47 165398 0 0 103 946497 0 1066985\n";
    /// The same machine later: busy +300 (user +200, system +80, softirq +10, steal +10),
    /// idle +90, iowait +10, so 300 of 400 ticks were busy.
    const STAT_2: &str = "cpu  564499 10 87493 365271 13027 0 8594 29861 0 0\n\
        cpu0 141125 3 21873 91317 3256 0 2148 7465 0 0\n\
        cpu1 141125 3 21873 91317 3256 0 2148 7465 0 0\n\
        cpu2 141125 2 21873 91318 3257 0 2149 7466 0 0\n\
        cpu3 141124 2 21874 91319 3258 0 2149 7465 0 0\n\
        ctxt 12826505\n\
        btime 1718000000\n\
        processes 14740\n\
        procs_running 1\n\
        procs_blocked 0\n";
    const MEMINFO: &str = "MemTotal:       24684092 kB\nMemFree:        18435768 kB\n\
        MemAvailable:   23481952 kB\nBuffers:           11940 kB\nCached:          5262288 kB\n\
        SwapCached:            0 kB\nActive:          1885876 kB\nInactive:        3936472 kB\n\
        Active(anon):     141956 kB\nInactive(anon):   585084 kB\nActive(file):    1743920 kB\n\
        Inactive(file):  3351388 kB\nUnevictable:       11576 kB\nMlocked:           10652 kB\n\
        SwapTotal:             0 kB\nSwapFree:              0 kB\nZswap:                 0 kB\n\
        Zswapped:              0 kB\nDirty:            100132 kB\nWriteback:             0 kB\n\
        AnonPages:        559820 kB\nMapped:           470712 kB\nShmem:            178916 kB\n\
        KReclaimable:     264288 kB\nSlab:             303980 kB\nSReclaimable:     264288 kB\n\
        SUnreclaim:        39692 kB\nKernelStack:        2512 kB\nPageTables:         6056 kB\n\
        SecPageTables:         0 kB\nNFS_Unstable:          0 kB\nBounce:                0 kB\n\
        WritebackTmp:          0 kB\nCommitLimit:    12342044 kB\nCommitted_AS:    1115340 kB\n\
        VmallocTotal:   34359738367 kB\nVmallocUsed:       15276 kB\nVmallocChunk:          0 kB\n\
        Percpu:              688 kB\nAnonHugePages:         0 kB\nShmemHugePages:        0 kB\n\
        ShmemPmdMapped:        0 kB\nFileHugePages:     92160 kB\nFilePmdMapped:         0 kB\n\
        HugePages_Total:       0\nHugePages_Free:        0\nHugePages_Rsvd:        0\n\
        HugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:               0 kB\n\
        DirectMap4k:       26624 kB\nDirectMap2M:     2070528 kB\nDirectMap1G:    25165824 kB\n";
    const LOADAVG: &str = "1.56 0.52 12.07 2/157 14739\n";

    fn proc_tree(root: &Path, stat: &str) {
        write(root, "stat", stat.as_bytes());
        write(root, "meminfo", MEMINFO.as_bytes());
        write(root, "loadavg", LOADAVG.as_bytes());
    }

    #[test]
    fn every_figure_from_real_formats_and_cpu_percent_from_the_second_sample() {
        let t = tempfile::tempdir().unwrap();
        proc_tree(t.path(), STAT_1);
        let mut sampler = NodeSampler::new(t.path());
        let (first, logged) = capturing_logs(|| sampler.sample());
        assert_eq!(logged, "");
        let want = NodeSample {
            cpu_usage_percent: None,
            memory_total_bytes: Some(24_684_092 * 1024),
            memory_used_bytes: Some((24_684_092 - 23_481_952) * 1024),
            memory_available_bytes: Some(23_481_952 * 1024),
            load_1: Some(1.56),
            load_5: Some(0.52),
            load_15: Some(12.07),
            cpu_count: Some(4),
        };
        assert_eq!(first, want);

        write(t.path(), "stat", STAT_2.as_bytes());
        let second = sampler.sample();
        assert_eq!(second.cpu_usage_percent, Some(75.0));
        assert_eq!(second.cpu_count, Some(4));

        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["cpu_usage_percent"], 75.0);
        assert_eq!(json["load_5"], 0.52);
        assert_eq!(json["memory_total_bytes"], 24_684_092u64 * 1024);
    }

    #[test]
    fn cpu_percent_edge_cases() {
        let t = |busy, total| CpuTicks { busy, total };
        assert_eq!(cpu_usage_percent(None, t(10, 100)), None);
        assert_eq!(cpu_usage_percent(Some(t(10, 100)), t(10, 100)), None);
        assert_eq!(cpu_usage_percent(Some(t(10, 100)), t(9, 200)), None);
        assert_eq!(cpu_usage_percent(Some(t(10, 100)), t(20, 99)), None);
        assert_eq!(cpu_usage_percent(Some(t(10, 100)), t(10, 200)), Some(0.0));
        assert_eq!(
            cpu_usage_percent(Some(t(10, 100)), t(110, 200)),
            Some(100.0)
        );
        assert_eq!(cpu_usage_percent(Some(t(0, 0)), t(1, 4)), Some(25.0));
    }

    #[test]
    fn a_stat_counter_going_backwards_gives_no_percent_then_recovers() {
        let t = tempfile::tempdir().unwrap();
        proc_tree(t.path(), STAT_2);
        let mut sampler = NodeSampler::new(t.path());
        sampler.sample();
        write(t.path(), "stat", STAT_1.as_bytes());
        assert_eq!(sampler.sample().cpu_usage_percent, None);
        write(t.path(), "stat", STAT_2.as_bytes());
        assert_eq!(sampler.sample().cpu_usage_percent, Some(75.0));
    }

    #[test]
    fn absent_files_are_none_without_a_warning() {
        let t = tempfile::tempdir().unwrap();
        let (s, logged) = capturing_logs(|| NodeSampler::new(t.path()).sample());
        assert_eq!(s, NodeSample::default());
        assert_eq!(logged, "");
    }

    #[test]
    fn a_meminfo_without_memavailable_has_total_but_no_used() {
        let t = tempfile::tempdir().unwrap();
        proc_tree(t.path(), STAT_1);
        let old: String = MEMINFO
            .lines()
            .filter(|l| !l.starts_with("MemAvailable:"))
            .map(|l| format!("{l}\n"))
            .collect();
        write(t.path(), "meminfo", old.as_bytes());
        let s = NodeSampler::new(t.path()).sample();
        assert_eq!(s.memory_total_bytes, Some(24_684_092 * 1024));
        assert_eq!(s.memory_available_bytes, None);
        assert_eq!(s.memory_used_bytes, None);
    }

    #[test]
    fn malformed_files_cost_their_figures_and_one_warning_each() {
        let huge_kb = MEMINFO.replace("24684092 kB", "18446744073709551615 kB");
        let cases: [(&str, &[u8]); 9] = [
            ("stat", b"cpu  1 2 three 4\nctxt 1\nbtime 1\nprocesses 1\n"),
            ("stat", b"cpu0 1 2 3 4\nctxt 1\nbtime 1\nprocesses 1\n"),
            ("stat", b"cpu  1 2\n"),
            ("stat", b"\xff\xfe garbage"),
            ("meminfo", b"MemTotal: 12 kB\n"),
            ("meminfo", "\u{e9} 5 kB\nMemTotal: 1 kB\n".as_bytes()),
            ("meminfo", huge_kb.as_bytes()),
            ("loadavg", b"1.0 nan 2.0 1/2 3\n"),
            ("loadavg", b"0.1 0.2\n"),
        ];
        for (name, content) in cases {
            let t = tempfile::tempdir().unwrap();
            proc_tree(t.path(), STAT_1);
            write(t.path(), name, content);
            let (s, logged) = capturing_logs(|| NodeSampler::new(t.path()).sample());
            assert_eq!(logged.matches("WARN").count(), 1, "{name}: {logged}");
            assert!(logged.contains(name), "{logged}");
            match name {
                "stat" => assert_eq!((s.cpu_count, s.memory_total_bytes.is_some()), (None, true)),
                "meminfo" => assert_eq!((s.memory_total_bytes, s.cpu_count), (None, Some(4))),
                _ => assert_eq!((s.load_1, s.load_15, s.cpu_count), (None, None, Some(4))),
            }
        }
    }

    #[test]
    fn a_panicking_parser_is_an_error_not_a_crash() {
        let r: Result<(), String> = fenced(|| panic!("procfs bug"));
        assert_eq!(r, Err("the procfs parser panicked".to_owned()));
    }

    #[test]
    fn a_failed_stat_read_keeps_the_previous_snapshot() {
        let t = tempfile::tempdir().unwrap();
        proc_tree(t.path(), STAT_1);
        let mut sampler = NodeSampler::new(t.path());
        sampler.sample();
        write(t.path(), "stat", b"not a stat file");
        assert_eq!(sampler.sample().cpu_usage_percent, None);
        write(t.path(), "stat", STAT_2.as_bytes());
        assert_eq!(sampler.sample().cpu_usage_percent, Some(75.0));
    }

    #[test]
    fn this_machines_proc_gives_sane_figures() {
        let mut sampler = NodeSampler::default();
        let (first, logged) = capturing_logs(|| sampler.sample());
        assert_eq!(logged, "");
        assert_eq!(first.cpu_usage_percent, None);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = first.cpu_count.expect("cpu count") as usize;
        // A container's affinity mask can be narrower than the node's online CPUs.
        assert!(count >= cpus, "{count} online < {cpus} usable");
        let total = first.memory_total_bytes.expect("MemTotal");
        let used = first.memory_used_bytes.expect("used");
        let available = first.memory_available_bytes.expect("MemAvailable");
        assert!(total > 64 << 20, "{total}");
        assert_eq!(used + available, total);
        for load in [first.load_1, first.load_5, first.load_15] {
            assert!(load.expect("load") >= 0.0);
        }
        // Burn a little CPU so at least one tick passes between the snapshots.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let second = sampler.sample();
        let percent = second
            .cpu_usage_percent
            .expect("percent after a busy 100 ms");
        assert!((0.0..=100.0).contains(&percent), "{percent}");
        assert!(percent > 0.0, "this thread was busy, so some tick was");
    }
}
