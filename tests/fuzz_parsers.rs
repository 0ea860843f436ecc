//! Seeded fuzzing of every parser of untrusted text, in the normal test suite (a few thousand
//! inputs each, well under a second): the Slurm node list, the SSE client parser of `watch`, the
//! spool's record format, and the cgroup and /proc files the collector reads. Inputs are valid
//! samples of each format cut, spliced and sprinkled with random bytes; the property is that
//! nothing panics and the results stay within their documented bounds. The seed is fixed
//! (`JOBSCOPE_FUZZ_SEED` overrides it, `JOBSCOPE_FUZZ_ROUNDS` scales the run) so a failure
//! reproduces.

use std::path::Path;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("JOBSCOPE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x1818_2026_u64);
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// `seed` mutated a few times: bytes flipped, inserted (often format-significant ones),
    /// removed, ranges duplicated or cut.
    fn mutate(&mut self, seed: &[u8], specials: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..1 + self.below(6) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] = self.next() as u8;
                }
                1 => out.insert(at, specials[self.below(specials.len())]),
                2 if at < out.len() => {
                    out.remove(at);
                }
                3 => {
                    let end = (at + self.below(16)).min(out.len());
                    let copy = out[at..end].to_vec();
                    for (k, b) in copy.into_iter().enumerate() {
                        out.insert(end + k, b);
                    }
                }
                4 => out.truncate(at),
                _ => {
                    let digits = self.next().to_string();
                    for (k, b) in digits.bytes().enumerate() {
                        out.insert(at + k, b);
                    }
                }
            }
        }
        out
    }
}

fn rounds(base: usize) -> usize {
    let scale = std::env::var("JOBSCOPE_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    base * scale.max(1)
}

#[test]
fn node_lists_never_panic_and_respect_the_cap() {
    let seeds = [
        "n[1-4]",
        "gpu[01-16,20],cpu-a[001-003]",
        "node1,node2",
        "rack[1-2]-n[01-32]",
        "a[9-10]b",
        "x[1-1000000]",
    ];
    let mut rng = Rng::from_env();
    for _ in 0..rounds(5_000) {
        let seed = rng.pick(&seeds);
        let input = rng.mutate(seed.as_bytes(), b"[]-,0123456789");
        let text = String::from_utf8_lossy(&input);
        let max = 1 + rng.below(5000);
        if let Ok(nodes) = jobscope::hook::nodelist::expand(&text, max) {
            assert!(nodes.len() <= max, "{text:?}: {} > {max}", nodes.len());
        }
    }
}

#[test]
fn the_sse_parser_never_panics_whatever_the_chunking() {
    let seeds = [
        "event: job_updated\nid: 42\ndata: {\"job\":{\"id\":\"1\"}}\n\n",
        ": ping\n\nretry: 3000\r\nevent: reset\r\ndata: {}\r\n\r\n",
        "data: a\ndata: b\rid: 7\r\n\n",
    ];
    let mut rng = Rng::from_env();
    for _ in 0..rounds(5_000) {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let seed = rng.pick(&seeds);
            stream.extend(rng.mutate(seed.as_bytes(), b"\r\n:\0 \xff"));
        }
        let mut parser = jobscope::watch::SseParser::default();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            let (chunk, tail) = rest.split_at(n);
            for event in parser.feed(chunk) {
                let _ = format!("{event:?}");
            }
            rest = tail;
        }
        let _ = parser.last_event_id();
    }
}

#[test]
fn damaged_spool_records_are_set_aside_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let limits = jobscope::spool::SpoolLimits {
        max_records: 100_000,
        max_bytes: 1 << 30,
        when_full: jobscope::spool::WhenFull::RejectNew,
    };
    let spool = jobscope::spool::Spool::open(dir.path(), limits).unwrap();
    let mut rng = Rng::from_env();
    for round in 0..rounds(300) {
        let payload = format!("{{\"round\":{round},\"job_id\":\"{}\"}}", rng.next());
        spool.push(payload.as_bytes()).unwrap();
        let entry = spool
            .oldest_first()
            .unwrap()
            .last()
            .expect("the record just pushed");
        let path = dir.path().join(entry.name());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, rng.mutate(&bytes, b"\0\n{}\xff")).unwrap();
        // A damaged record is set aside (None) or an error; one that survived reads back.
        if let Ok(Some(read)) = spool.read(&entry) {
            assert!(read.len() <= bytes.len() * 4, "round {round}");
        }
        let _ = spool.remove(&entry);
    }
    spool.depth().unwrap();
}

fn write_all(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

#[test]
fn cgroup_files_never_panic_the_reader() {
    let seeds: [(&str, &str); 12] = [
        ("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\nnr_throttled 3\nthrottled_usec 1200\n"),
        ("memory.current", "3145745\n"),
        ("memory.peak", "4194304\n"),
        ("memory.max", "max\n"),
        ("memory.stat", "anon 1048576\nfile 2097152\nshmem 0\nkernel 4096\n"),
        ("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n"),
        ("io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=1 wbytes=2 rios=3 wios=4\n"),
        ("pids.current", "12\n"),
        ("cpu.pressure", "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
        ("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
        ("io.pressure", "some avg10=99.99 avg60=0.00 avg300=0.00 total=18446744073709551615\n"),
        ("cgroup.procs", "1\n2\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let job = jobscope::collector::JobCgroup {
        job_key: jobscope::collector::JobKey::JobId("42".into()),
        paths: jobscope::collector::CgroupPaths::V2(dir.path().to_path_buf()),
    };
    let mut reader = jobscope::collector::CgroupReader::default();
    let mut rng = Rng::from_env();
    for _ in 0..rounds(300) {
        let files: Vec<(&str, Vec<u8>)> = seeds
            .iter()
            .map(|(name, text)| (*name, rng.mutate(text.as_bytes(), b" =\n\t-.:\xff0")))
            .collect();
        write_all(dir.path(), &files);
        let sample = reader.read(&job);
        for p in [
            sample.cpu_pressure,
            sample.memory_pressure,
            sample.io_pressure,
        ]
        .into_iter()
        .flatten()
        {
            assert!(p.some_avg10.is_finite(), "{p:?}");
        }
    }
}

#[test]
fn proc_files_never_panic_the_node_sampler() {
    let seeds: [(&str, &str); 3] = [
        ("stat", "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\nctxt 2\n"),
        ("meminfo", "MemTotal:       16384000 kB\nMemFree:         1024000 kB\nMemAvailable:    8192000 kB\nBuffers:  1 kB\n"),
        ("loadavg", "0.52 0.58 0.59 2/1024 12345\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut sampler = jobscope::collector::node::NodeSampler::new(dir.path());
    let mut rng = Rng::from_env();
    for _ in 0..rounds(1_000) {
        let files: Vec<(&str, Vec<u8>)> = seeds
            .iter()
            .map(|(name, text)| (*name, rng.mutate(text.as_bytes(), b" :\n\t.-\xff0")))
            .collect();
        write_all(dir.path(), &files);
        let sample = sampler.sample();
        if let Some(p) = sample.cpu_usage_percent {
            assert!((0.0..=100.0).contains(&p), "cpu {p}");
        }
        for load in [sample.load_1, sample.load_5, sample.load_15]
            .into_iter()
            .flatten()
        {
            assert!(load.is_finite(), "load {load}");
        }
    }
}
