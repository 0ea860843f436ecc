//! Parsing cgroup files' text: a number, a `key value` file, `io.stat` and the PSI files. A
//! parser answers `None` for text it rejects; the reader turns that into one warning.

use super::Pressure;

pub(super) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The wanted keys of a `key value` file. Unknown keys are ignored (kernels add them); a wanted
/// key with a bad value rejects the file, since a garbled line makes its neighbours suspect.
pub(super) fn keyed<const N: usize>(text: &str, keys: [&str; N]) -> Option<[Option<u64>; N]> {
    let mut out = [None; N];
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(key) = words.next() else { continue };
        if let Some(i) = keys.iter().position(|k| *k == key) {
            out[i] = Some(words.next()?.parse().ok()?);
        }
    }
    Some(out)
}

/// `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per device with any IO,
/// so an empty file is a real zero.
pub(super) fn io_totals(text: &str) -> Option<[u64; 4]> {
    const KEYS: [&str; 4] = ["rbytes", "wbytes", "rios", "wios"];
    let mut sums = [0u64; 4];
    for line in text.lines() {
        for field in line.split_ascii_whitespace().skip(1) {
            let (key, value) = field.split_once('=')?;
            if let Some(i) = KEYS.iter().position(|k| *k == key) {
                sums[i] = sums[i].checked_add(value.parse().ok()?)?;
            }
        }
    }
    Some(sums)
}

/// PSI: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then a `full` line.
pub(super) fn pressure(text: &str) -> Option<Pressure> {
    let some = text.lines().find_map(|l| l.strip_prefix("some "))?;
    let (mut avg10, mut total) = (None, None);
    for field in some.split_ascii_whitespace() {
        match field.split_once('=')? {
            ("avg10", v) => avg10 = v.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)),
            ("total", v) => total = v.parse().ok(),
            _ => {}
        }
    }
    Some(Pressure {
        some_avg10: avg10?,
        some_total_usec: total?,
    })
}
