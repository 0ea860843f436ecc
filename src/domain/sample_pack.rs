//! Sample packs: many samples of one job on one node, stored as one compressed value (issue 19).
//!
//! A sample row costs hundreds of bytes on disk, most of it per-row overhead and figures that
//! barely move between two samples. Once a day is closed, the store (`store::sample_packs`)
//! replaces that day's rows of each job and node by one pack made here: the samples laid out
//! column by column (all timestamps, then all CPU times, ...), each column written as the
//! differences between neighbours in variable-length integers, and the whole deflated.
//!
//! Packing is lossless: [`decode`] gives back exactly the samples and ids [`encode`] was given,
//! every `f64` to the bit. Seconds that are whole microseconds (cgroup counters) are written as
//! integers; any other `f64` as the XOR with its predecessor's bits, which is small when the
//! two are close. GPU readings are columns of their own (format 2): each sample's count, then
//! every figure over the readings of the first GPU of every sample, then of the second, and so
//! on, so that neighbours are one device at consecutive instants; UUIDs and PCI addresses are
//! indices into the pack's table of strings. Format 1 stored each sample's readings as JSON
//! text; it is still read.
//!
//! [`decode`] reads bytes from the database: a damaged pack is an error, never a panic, and
//! never more than [`MAX_SAMPLES`] samples or [`MAX_INFLATED`] bytes.

use crate::domain::gpu::{GpuReading, GpuVendor};
use crate::domain::usage::{Pressure, PressureFigures, SampleDetail};
use crate::domain::MetricSample;
use chrono::{DateTime, Utc};
use std::io::{Read, Write};

/// The first byte of every pack: the layout below. A new layout takes a new number, and
/// [`decode`] keeps reading the old ones.
const FORMAT: u8 = 2;

/// The layout before GPU readings had columns: each sample's readings as JSON text. Slow to
/// read back (most of a 4-GPU job's raw answer went into parsing it); read, no longer written.
const FORMAT_GPU_JSON: u8 = 1;

/// At most this many samples in one pack (a day of one job on one node sampled every 15 s is
/// 5,760; at 1 s, 86,400).
pub const MAX_SAMPLES: usize = 1 << 20;

/// At most this many bytes once inflated.
pub const MAX_INFLATED: u64 = 512 << 20;

/// Why a stored pack could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("sample pack is damaged: {0}")]
    Damaged(&'static str),
    #[error("sample pack format {0} is newer than this jobscope")]
    UnknownFormat(u8),
}

/// One stored sample: its row id (what the event log refers to) and its figures.
pub type PackedSample = (i64, MetricSample);

/// Packs `samples` (id and sample, all of one node, in any order) into one value. The node is
/// not stored: it is the pack's key, given back to [`decode`].
pub fn encode(samples: &[PackedSample]) -> Vec<u8> {
    encode_as(samples, FORMAT)
}

/// [`encode`] in layout `format` (tests make the older layout to read it back).
fn encode_as(samples: &[PackedSample], format: u8) -> Vec<u8> {
    let mut sorted: Vec<&PackedSample> = samples.iter().collect();
    sorted.sort_by_key(|(id, s)| (s.timestamp, *id));
    let mut out = Columns::default();
    out.varint(sorted.len() as u64);
    out.ints(sorted.iter().map(|(id, _)| Some(*id)));
    out.times(sorted.iter().map(|(_, s)| s.timestamp.timestamp_micros()));
    for (float, _) in FLOATS {
        out.floats(sorted.iter().map(|(_, s)| float(s)));
    }
    for (int, _) in INTS {
        out.ints(sorted.iter().map(|(_, s)| int(s)));
    }
    out.presence(sorted.iter().map(|(_, s)| s.detail.pressure.is_some()));
    for (resource, _) in PRESSURES {
        type Of = fn(&Pressure) -> Option<&PressureFigures>;
        fn figures(s: &MetricSample, resource: Of) -> Option<&PressureFigures> {
            s.detail.pressure.as_ref().and_then(resource)
        }
        out.presence(sorted.iter().map(|(_, s)| figures(s, resource).is_some()));
        out.floats(
            sorted
                .iter()
                .map(|(_, s)| figures(s, resource).map(|f| f.some_avg10)),
        );
        out.ints(
            sorted
                .iter()
                .map(|(_, s)| figures(s, resource).map(|f| f.some_total_usec as i64)),
        );
    }
    let gpu_lists: Vec<&[GpuReading]> = sorted.iter().map(|(_, s)| &s.detail.gpus[..]).collect();
    if format == FORMAT_GPU_JSON {
        for gpus in gpu_lists {
            if gpus.is_empty() {
                out.varint(0);
            } else {
                let text = serde_json::to_vec(gpus).unwrap_or_default();
                out.varint(text.len() as u64);
                out.bytes.extend_from_slice(&text);
            }
        }
    } else {
        out.gpus(&gpu_lists);
    }
    let mut deflated = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(out.bytes.len() / 4 + 16),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = deflated.write_all(&out.bytes);
    let mut packed = vec![format];
    packed.extend(deflated.finish().unwrap_or_default());
    packed
}

/// The samples of a pack made by [`encode`], oldest first, each with `node` as its node.
pub fn decode(packed: &[u8], node: Option<&str>) -> Result<Vec<PackedSample>, PackError> {
    let (&format, deflated) = packed.split_first().ok_or(PackError::Damaged("empty"))?;
    if format != FORMAT && format != FORMAT_GPU_JSON {
        return Err(PackError::UnknownFormat(format));
    }
    let mut bytes = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| PackError::Damaged("not deflate"))?;
    if bytes.len() as u64 > MAX_INFLATED {
        return Err(PackError::Damaged("too large"));
    }
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    let n = usize::try_from(r.varint()?).map_err(|_| PackError::Damaged("count"))?;
    if n > MAX_SAMPLES {
        return Err(PackError::Damaged("count"));
    }
    let ids = r.ints(n)?;
    let times = r.times(n)?;
    let mut samples = Vec::with_capacity(n);
    for (id, micros) in ids.into_iter().zip(times) {
        let id = id.ok_or(PackError::Damaged("id"))?;
        let timestamp =
            DateTime::<Utc>::from_timestamp_micros(micros).ok_or(PackError::Damaged("time"))?;
        let sample = MetricSample {
            timestamp,
            cpu_usage: None,
            memory_usage_mb: None,
            gpu_usage: None,
            detail: SampleDetail {
                node: node.map(str::to_owned),
                ..SampleDetail::default()
            },
        };
        samples.push((id, sample));
    }
    for (_, set) in FLOATS {
        for ((_, s), v) in samples.iter_mut().zip(r.floats(n)?) {
            set(s, v);
        }
    }
    for (_, set) in INTS {
        for ((_, s), v) in samples.iter_mut().zip(r.ints(n)?) {
            set(s, v);
        }
    }
    for ((_, s), present) in samples.iter_mut().zip(r.presence(n)?) {
        s.detail.pressure = present.then(Pressure::default);
    }
    for (_, set) in PRESSURES {
        let present = r.presence(n)?;
        let avg10 = r.floats(n)?;
        let total = r.ints(n)?;
        for (i, (_, s)) in samples.iter_mut().enumerate() {
            if !present[i] {
                continue;
            }
            let figures = PressureFigures {
                some_avg10: avg10[i].ok_or(PackError::Damaged("pressure"))?,
                some_total_usec: total[i].ok_or(PackError::Damaged("pressure"))? as u64,
            };
            let pressure = s
                .detail
                .pressure
                .as_mut()
                .ok_or(PackError::Damaged("pressure"))?;
            set(pressure, figures);
        }
    }
    if format == FORMAT_GPU_JSON {
        for (_, s) in samples.iter_mut() {
            let len = usize::try_from(r.varint()?).map_err(|_| PackError::Damaged("gpus"))?;
            if len > 0 {
                let text = r.take(len)?;
                s.detail.gpus = serde_json::from_slice::<Vec<GpuReading>>(text)
                    .map_err(|_| PackError::Damaged("gpus"))?;
            }
        }
    } else {
        let lists = r.gpus(n)?;
        for ((_, s), gpus) in samples.iter_mut().zip(lists) {
            s.detail.gpus = gpus;
        }
    }
    if r.at != bytes.len() {
        return Err(PackError::Damaged("trailing bytes"));
    }
    Ok(samples)
}

/// A figure of a sample (`S`: [`MetricSample`], or a [`GpuReading`] of one): how to read it, and
/// how to set it.
type Figure<T, S = MetricSample> = (fn(&S) -> Option<T>, fn(&mut S, Option<T>));

/// One [`Figure`] of `S` per named field, in the order given: the pack's column order.
macro_rules! figures {
    ($s:ty: $($($field:ident).+),* $(,)?) => {
        [$((|s: &$s| s.$($field).+, |s: &mut $s, v| s.$($field).+ = v)),*]
    };
}

/// The `f64` figures, in pack order.
const FLOATS: [Figure<f64>; 6] = figures![MetricSample:
    cpu_usage,
    gpu_usage,
    detail.cpu_time_seconds,
    detail.cpu_user_seconds,
    detail.cpu_system_seconds,
    detail.cpu_throttled_seconds,
];

/// The integer figures, in pack order.
const INTS: [Figure<i64>; 14] = figures![MetricSample:
    memory_usage_mb,
    detail.cpu_nr_throttled,
    detail.memory_usage_bytes,
    detail.memory_peak_bytes,
    detail.memory_limit_bytes,
    detail.memory_anon_bytes,
    detail.memory_file_bytes,
    detail.memory_shmem_bytes,
    detail.oom_kills,
    detail.io_read_bytes,
    detail.io_write_bytes,
    detail.io_read_ops,
    detail.io_write_ops,
    detail.pids,
];

/// The `f64` figures of a GPU reading, in pack order.
const GPU_FLOATS: [Figure<f64, GpuReading>; 4] = figures![GpuReading:
    utilization_percent,
    power_watts,
    energy_joules,
    temperature_celsius,
];

/// The byte counts of a GPU reading, in pack order (stored as the `i64` of the same bits).
const GPU_BYTES: [Figure<u64, GpuReading>; 2] =
    figures![GpuReading: memory_used_bytes, memory_total_bytes];

/// A vendor as a GPU column stores it (exhaustive: a new vendor needs a code of its own).
fn vendor_code(vendor: GpuVendor) -> i64 {
    match vendor {
        GpuVendor::Nvidia => 0,
        GpuVendor::Amd => 1,
    }
}

/// The vendor [`vendor_code`] gave `code`.
fn vendor_of(code: i64) -> Option<GpuVendor> {
    match code {
        0 => Some(GpuVendor::Nvidia),
        1 => Some(GpuVendor::Amd),
        _ => None,
    }
}

/// Where the GPU readings of samples with `counts` readings each go, in pack order: the first
/// reading of every sample that has one, then the second, and so on, as (sample, slot).
fn by_slot(counts: &[usize]) -> Vec<(usize, usize)> {
    let slots = counts.iter().copied().max().unwrap_or(0);
    (0..slots)
        .flat_map(|slot| {
            counts
                .iter()
                .enumerate()
                .filter(move |(_, &c)| c > slot)
                .map(move |(i, _)| (i, slot))
        })
        .collect()
}

/// A pressure resource: how to read it, and how to set it.
type Resource = (
    fn(&Pressure) -> Option<&PressureFigures>,
    fn(&mut Pressure, PressureFigures),
);

/// The pressure resources, in pack order.
const PRESSURES: [Resource; 3] = [
    (|p| p.cpu.as_ref(), |p, f| p.cpu = Some(f)),
    (|p| p.memory.as_ref(), |p, f| p.memory = Some(f)),
    (|p| p.io.as_ref(), |p, f| p.io = Some(f)),
];

/// How a column says which rows have a value.
const NONE_PRESENT: u8 = 0;
const ALL_PRESENT: u8 = 1;
const BITMAP: u8 = 2;

/// How a float column is written.
const FLOAT_MICROS: u8 = 0;
const FLOAT_XOR: u8 = 1;

/// The pack being written, before deflate.
#[derive(Default)]
struct Columns {
    bytes: Vec<u8>,
}

impl Columns {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    fn signed(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn presence(&mut self, present: impl Iterator<Item = bool>) {
        let present: Vec<bool> = present.collect();
        if present.iter().all(|p| !p) {
            self.bytes.push(NONE_PRESENT);
        } else if present.iter().all(|p| *p) {
            self.bytes.push(ALL_PRESENT);
        } else {
            self.bytes.push(BITMAP);
            for chunk in present.chunks(8) {
                let byte = chunk
                    .iter()
                    .enumerate()
                    .fold(0u8, |b, (i, p)| b | (u8::from(*p) << i));
                self.bytes.push(byte);
            }
        }
    }

    /// Which values are there, then each present value as the difference from the previous one.
    fn ints(&mut self, values: impl Iterator<Item = Option<i64>>) {
        let values: Vec<Option<i64>> = values.collect();
        self.presence(values.iter().map(Option::is_some));
        let mut previous = 0i64;
        for v in values.into_iter().flatten() {
            self.signed(v.wrapping_sub(previous));
            previous = v;
        }
    }

    /// Microseconds, always present: the change of the step between neighbours (samples come
    /// at a steady interval, so this is mostly zero or near it).
    fn times(&mut self, values: impl Iterator<Item = i64>) {
        let (mut previous, mut step) = (0i64, 0i64);
        for v in values {
            let this_step = v.wrapping_sub(previous);
            self.signed(this_step.wrapping_sub(step));
            previous = v;
            step = this_step;
        }
    }

    /// Each sample's GPU readings (format 2): the counts, the table of strings, then one column
    /// per figure over the readings in [`by_slot`] order.
    fn gpus(&mut self, lists: &[&[GpuReading]]) {
        let counts: Vec<usize> = lists.iter().map(|l| l.len()).collect();
        self.ints(counts.iter().map(|&c| Some(c as i64)));
        let readings: Vec<&GpuReading> = by_slot(&counts)
            .into_iter()
            .map(|(i, slot)| &lists[i][slot])
            .collect();
        if readings.is_empty() {
            return;
        }
        let mut strings: Vec<&str> = Vec::new();
        let (mut uuids, mut buses) = (Vec::new(), Vec::new());
        for g in &readings {
            for (text, column) in [(&g.uuid, &mut uuids), (&g.pci_bus_id, &mut buses)] {
                column.push(text.as_deref().map(|t| {
                    let at = strings.iter().position(|s| *s == t).unwrap_or_else(|| {
                        strings.push(t);
                        strings.len() - 1
                    });
                    at as i64
                }));
            }
        }
        self.varint(strings.len() as u64);
        for text in &strings {
            self.varint(text.len() as u64);
            self.bytes.extend_from_slice(text.as_bytes());
        }
        self.ints(uuids.into_iter());
        self.ints(buses.into_iter());
        self.ints(readings.iter().map(|g| Some(i64::from(g.index))));
        self.ints(readings.iter().map(|g| g.minor.map(i64::from)));
        self.ints(readings.iter().map(|g| Some(vendor_code(g.vendor))));
        for (float, _) in GPU_FLOATS {
            self.floats(readings.iter().map(|g| float(g)));
        }
        for (bytes, _) in GPU_BYTES {
            self.ints(readings.iter().map(|g| bytes(g).map(|b| b as i64)));
        }
        self.ints(readings.iter().map(|g| Some(g.processes.len() as i64)));
        self.ints(
            readings
                .iter()
                .flat_map(|g| g.processes.iter().map(|&pid| Some(i64::from(pid)))),
        );
    }

    fn floats(&mut self, values: impl Iterator<Item = Option<f64>>) {
        let values: Vec<Option<f64>> = values.collect();
        let as_micros: Option<Vec<Option<i64>>> = values
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(v) => whole_micros(*v).map(Some),
            })
            .collect();
        match as_micros {
            Some(micros) => {
                self.bytes.push(FLOAT_MICROS);
                self.ints(micros.into_iter());
            }
            None => {
                self.bytes.push(FLOAT_XOR);
                self.presence(values.iter().map(Option::is_some));
                let mut previous = 0u64;
                for v in values.into_iter().flatten() {
                    let bits = v.to_bits();
                    self.varint(bits ^ previous);
                    previous = bits;
                }
            }
        }
    }
}

/// `v` as a whole number of microseconds, when that number gives `v` back to the bit.
fn whole_micros(v: f64) -> Option<i64> {
    if !v.is_finite() || v.abs() > 9.0e12 {
        return None;
    }
    let micros = (v * 1e6).round() as i64;
    (micros_to_f64(micros).to_bits() == v.to_bits()).then_some(micros)
}

fn micros_to_f64(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// The inflated pack being read.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, PackError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(PackError::Damaged("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&[u8], PackError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(PackError::Damaged("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, PackError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PackError::Damaged("varint"))
    }

    fn signed(&mut self) -> Result<i64, PackError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn presence(&mut self, n: usize) -> Result<Vec<bool>, PackError> {
        match self.byte()? {
            NONE_PRESENT => Ok(vec![false; n]),
            ALL_PRESENT => Ok(vec![true; n]),
            BITMAP => {
                let bitmap = self.take(n.div_ceil(8))?;
                Ok((0..n)
                    .map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
                    .collect())
            }
            _ => Err(PackError::Damaged("presence")),
        }
    }

    fn ints(&mut self, n: usize) -> Result<Vec<Option<i64>>, PackError> {
        let present = self.presence(n)?;
        let mut previous = 0i64;
        let mut out = Vec::with_capacity(n);
        for p in present {
            if p {
                previous = previous.wrapping_add(self.signed()?);
                out.push(Some(previous));
            } else {
                out.push(None);
            }
        }
        Ok(out)
    }

    fn times(&mut self, n: usize) -> Result<Vec<i64>, PackError> {
        let (mut previous, mut step) = (0i64, 0i64);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            step = step.wrapping_add(self.signed()?);
            previous = previous.wrapping_add(step);
            out.push(previous);
        }
        Ok(out)
    }

    /// A count no larger than the bytes left (each value takes at least one): what a damaged
    /// pack claims cannot make the reader allocate more than the pack's own size.
    fn count(&mut self, v: Option<i64>) -> Result<usize, PackError> {
        v.and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v <= self.bytes.len() - self.at)
            .ok_or(PackError::Damaged("gpu count"))
    }

    /// What [`Columns::gpus`] wrote for `n` samples: each sample's readings.
    fn gpus(&mut self, n: usize) -> Result<Vec<Vec<GpuReading>>, PackError> {
        let counts = self
            .ints(n)?
            .into_iter()
            .map(|c| self.count(c))
            .collect::<Result<Vec<usize>, _>>()?;
        let m = counts
            .iter()
            .try_fold(0usize, |sum, &c| sum.checked_add(c))
            .and_then(|m| i64::try_from(m).ok());
        let m = self.count(m)?;
        let mut lists: Vec<Vec<GpuReading>> =
            counts.iter().map(|&c| Vec::with_capacity(c)).collect();
        if m == 0 {
            return Ok(lists);
        }
        let order = by_slot(&counts);
        let table = self.varint()?;
        let table = self.count(i64::try_from(table).ok())?;
        let mut strings = Vec::with_capacity(table);
        for _ in 0..table {
            let len = self.varint()?;
            let len = self.count(i64::try_from(len).ok())?;
            let text = std::str::from_utf8(self.take(len)?)
                .map_err(|_| PackError::Damaged("gpu string"))?;
            strings.push(text.to_owned());
        }
        let string = |i: Option<i64>| -> Result<Option<String>, PackError> {
            i.map(|i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| strings.get(i))
                    .cloned()
                    .ok_or(PackError::Damaged("gpu string index"))
            })
            .transpose()
        };
        let small = |v: Option<i64>| -> Result<Option<u32>, PackError> {
            v.map(|v| u32::try_from(v).map_err(|_| PackError::Damaged("gpu number")))
                .transpose()
        };
        let uuids = self.ints(m)?;
        let buses = self.ints(m)?;
        let indices = self.ints(m)?;
        let minors = self.ints(m)?;
        let vendors = self.ints(m)?;
        let mut readings = Vec::with_capacity(m);
        for i in 0..m {
            let index = small(indices[i])?.ok_or(PackError::Damaged("gpu index"))?;
            let vendor = vendors[i]
                .and_then(vendor_of)
                .ok_or(PackError::Damaged("gpu vendor"))?;
            let mut g = GpuReading::new(index, vendor);
            g.uuid = string(uuids[i])?;
            g.pci_bus_id = string(buses[i])?;
            g.minor = small(minors[i])?;
            readings.push(g);
        }
        for (_, set) in GPU_FLOATS {
            for (g, v) in readings.iter_mut().zip(self.floats(m)?) {
                set(g, v);
            }
        }
        for (_, set) in GPU_BYTES {
            for (g, v) in readings.iter_mut().zip(self.ints(m)?) {
                set(g, v.map(|b| b as u64));
            }
        }
        let processes = self
            .ints(m)?
            .into_iter()
            .map(|c| self.count(c))
            .collect::<Result<Vec<usize>, _>>()?;
        let total: usize = processes.iter().sum();
        self.count(Some(total as i64))?;
        let mut pids = self.ints(total)?.into_iter();
        for (g, count) in readings.iter_mut().zip(processes) {
            g.processes = pids
                .by_ref()
                .take(count)
                .map(small)
                .collect::<Result<Option<Vec<u32>>, _>>()?
                .ok_or(PackError::Damaged("gpu process"))?;
        }
        for ((sample, _), reading) in order.into_iter().zip(readings) {
            lists[sample].push(reading);
        }
        Ok(lists)
    }

    fn floats(&mut self, n: usize) -> Result<Vec<Option<f64>>, PackError> {
        match self.byte()? {
            FLOAT_MICROS => Ok(self
                .ints(n)?
                .into_iter()
                .map(|m| m.map(micros_to_f64))
                .collect()),
            FLOAT_XOR => {
                let present = self.presence(n)?;
                let mut previous = 0u64;
                let mut out = Vec::with_capacity(n);
                for p in present {
                    if p {
                        previous ^= self.varint()?;
                        out.push(Some(f64::from_bits(previous)));
                    } else {
                        out.push(None);
                    }
                }
                Ok(out)
            }
            _ => Err(PackError::Damaged("float column")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A CPU job's sample as an agent sends it every 15 s, with figures that move.
    fn cpu_sample(i: i64) -> MetricSample {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
            + chrono::Duration::microseconds(i * 15_000_000 + (i * 7919) % 3000);
        let cpu_time = i as f64 * 14.3 + (i % 7) as f64 * 0.000_117;
        MetricSample {
            timestamp: at,
            cpu_usage: (i > 0).then(|| 95.0 + ((i * 37) % 500) as f64 / 97.0),
            memory_usage_mb: Some(1200 + i % 13),
            gpu_usage: None,
            detail: SampleDetail {
                node: Some("cn001".into()),
                cpu_time_seconds: Some(cpu_time),
                cpu_user_seconds: Some(cpu_time * 0.9),
                cpu_system_seconds: Some(0.25 * i as f64),
                cpu_throttled_seconds: Some(0.0),
                cpu_nr_throttled: Some(0),
                memory_usage_bytes: Some(1_258_291_200 + (i * 4096) % 1_000_000),
                memory_peak_bytes: Some(1_300_000_000),
                memory_limit_bytes: Some(4 << 30),
                memory_anon_bytes: Some(1_000_000_000 + i * 4096),
                memory_file_bytes: Some(200_000_000),
                memory_shmem_bytes: Some(0),
                oom_kills: Some(0),
                io_read_bytes: Some(i * 65_536),
                io_write_bytes: Some(i * 1_048_576),
                io_read_ops: Some(i * 3),
                io_write_ops: Some(i * 17),
                pids: Some(33 + i % 2),
                pressure: (i % 3 != 0).then(|| Pressure {
                    cpu: Some(PressureFigures {
                        some_avg10: (i % 5) as f64 * 0.37,
                        some_total_usec: (i * 1234) as u64,
                    }),
                    memory: None,
                    io: (i % 2 == 0).then_some(PressureFigures {
                        some_avg10: 0.0,
                        some_total_usec: u64::MAX - i as u64,
                    }),
                }),
                gpus: Vec::new(),
            },
        }
    }

    fn gpu(index: u32, util: f64) -> GpuReading {
        let mut g = GpuReading::new(index, GpuVendor::Nvidia);
        g.uuid = Some(format!("GPU-{index:08x}-aaaa-bbbb-cccc-0123456789ab"));
        g.pci_bus_id = Some(format!("0000:0{index}:00.0"));
        g.minor = Some(index);
        g.utilization_percent = Some(util);
        g.memory_used_bytes = Some(30 << 30);
        g.memory_total_bytes = Some(80 << 30);
        g.power_watts = Some(312.25);
        g.energy_joules = Some(1.0e6 + util);
        g.temperature_celsius = Some(61.0);
        g.processes = vec![4242];
        g
    }

    fn day(n: i64) -> Vec<PackedSample> {
        (0..n).map(|i| (1000 + i * 3, cpu_sample(i))).collect()
    }

    #[test]
    fn a_day_of_samples_comes_back_exactly() {
        let samples = day(5760);
        let packed = encode(&samples);
        let back = decode(&packed, Some("cn001")).unwrap();
        assert_eq!(back, samples);
        // Every float to the bit, not only as `==` sees it.
        for ((_, a), (_, b)) in back.iter().zip(&samples) {
            assert_eq!(a.cpu_usage.map(f64::to_bits), b.cpu_usage.map(f64::to_bits));
            assert_eq!(
                a.detail.cpu_time_seconds.map(f64::to_bits),
                b.detail.cpu_time_seconds.map(f64::to_bits)
            );
        }
    }

    #[test]
    fn a_cpu_sample_packs_into_a_few_dozen_bytes() {
        let samples = day(5760);
        let per_sample = encode(&samples).len() as f64 / samples.len() as f64;
        // What a row of metric_samples takes is ~650 bytes; the goal of issue 19 is 120.
        assert!(per_sample < 40.0, "{per_sample:.1} bytes per sample");
    }

    #[test]
    fn odd_values_survive() {
        let mut samples = day(40);
        samples[3].1.cpu_usage = Some(-0.0);
        samples[4].1.detail.cpu_time_seconds = Some(f64::MAX);
        samples[5].1.detail.cpu_user_seconds = Some(f64::MIN_POSITIVE);
        samples[6].1.detail.memory_usage_bytes = Some(i64::MIN);
        samples[7].1.detail.memory_peak_bytes = Some(i64::MAX);
        samples[8].1.memory_usage_mb = None;
        samples[9].1.detail.gpus = vec![gpu(0, 99.5), gpu(1, 0.0)];
        samples[10].1.detail.pressure = Some(Pressure::default());
        samples[11].0 = i64::MAX;
        samples[12].0 = i64::MIN;
        samples[13].1.detail.node = None;
        let back = decode(&encode(&samples), Some("cn001")).unwrap();
        for ((ia, a), (ib, b)) in back.iter().zip(&samples) {
            assert_eq!(ia, ib);
            assert_eq!(a.timestamp, b.timestamp);
            assert_eq!(a.cpu_usage.map(f64::to_bits), b.cpu_usage.map(f64::to_bits));
            assert_eq!(a.detail.pressure, b.detail.pressure);
            assert_eq!(a.detail.gpus, b.detail.gpus);
            assert_eq!(a.detail.memory_usage_bytes, b.detail.memory_usage_bytes);
            assert_eq!(a.detail.memory_peak_bytes, b.detail.memory_peak_bytes);
            assert_eq!(a.detail.cpu_time_seconds, b.detail.cpu_time_seconds);
            assert_eq!(a.detail.cpu_user_seconds, b.detail.cpu_user_seconds);
            assert_eq!(a.memory_usage_mb, b.memory_usage_mb);
        }
        // The node is the pack's, not each sample's.
        assert_eq!(back[13].1.detail.node.as_deref(), Some("cn001"));
    }

    #[test]
    fn samples_come_back_oldest_first_whatever_order_they_were_given() {
        let mut samples = day(10);
        samples.reverse();
        let back = decode(&encode(&samples), Some("cn001")).unwrap();
        samples.reverse();
        assert_eq!(back, samples);
    }

    #[test]
    fn an_empty_pack_and_a_node_less_one() {
        assert_eq!(decode(&encode(&[]), None).unwrap(), Vec::new());
        let mut samples = day(3);
        for (_, s) in &mut samples {
            s.detail.node = None;
        }
        assert_eq!(decode(&encode(&samples), None).unwrap(), samples);
    }

    #[test]
    fn damaged_packs_are_errors_not_panics() {
        let packed = encode(&day(200));
        assert_eq!(decode(&[], None), Err(PackError::Damaged("empty")));
        assert_eq!(decode(&[9, 1, 2], None), Err(PackError::UnknownFormat(9)));
        // Every truncation, and every single-byte change, is an error or a valid pack: never a
        // panic (a flipped byte inside deflate's stored data may still inflate).
        for len in 0..packed.len() {
            let _ = decode(&packed[..len], Some("n"));
        }
        for at in 1..packed.len() {
            let mut bad = packed.clone();
            bad[at] ^= 0x5a;
            let _ = decode(&bad, Some("n"));
        }
        // Inflated bytes that are not a pack.
        let mut junk = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        junk.write_all(&[0xff; 64]).unwrap();
        let mut bad = vec![FORMAT];
        bad.extend(junk.finish().unwrap());
        assert!(decode(&bad, None).is_err());
    }

    /// A 4-GPU job's day: every sample with four readings whose figures move.
    fn gpu_day(n: i64) -> Vec<PackedSample> {
        let mut samples = day(n);
        for (i, (_, s)) in samples.iter_mut().enumerate() {
            s.detail.gpus = (0..4)
                .map(|d| {
                    let mut g = gpu(d, ((i * 13 + d as usize * 7) % 100) as f64);
                    g.memory_used_bytes = Some((20 << 30) + (i as u64 * 4096 * (d as u64 + 1)));
                    g.power_watts = Some(250.0 + ((i * 31) % 170) as f64 * 0.5);
                    g.energy_joules = Some(1.0e6 + i as f64 * 3_900.125 + d as f64);
                    g.temperature_celsius = Some(55.0 + (i % 9) as f64);
                    g.processes = vec![4242, 4243 + d];
                    g
                })
                .collect();
        }
        samples
    }

    #[test]
    fn gpu_readings_come_back_exactly_and_cost_less_than_as_json() {
        let samples = gpu_day(240);
        let columns = encode(&samples);
        let json = encode_as(&samples, FORMAT_GPU_JSON);
        assert_eq!(columns[0], FORMAT);
        assert_eq!(decode(&columns, Some("cn001")).unwrap(), samples);
        assert_eq!(
            decode(&json, Some("cn001")).unwrap(),
            samples,
            "format 1 still reads"
        );
        let per_sample = |p: &[u8]| p.len() as f64 / samples.len() as f64;
        assert!(
            per_sample(&columns) < per_sample(&json) * 0.8,
            "columns {:.1} against JSON {:.1} bytes per sample",
            per_sample(&columns),
            per_sample(&json)
        );
    }

    #[test]
    fn gpu_lists_of_every_shape_survive() {
        let mut samples = day(12);
        let mut amd = GpuReading::new(7, GpuVendor::Amd);
        amd.minor = Some(u32::MAX);
        amd.memory_total_bytes = Some(u64::MAX);
        amd.utilization_percent = Some(f64::NAN);
        let mut bare = GpuReading::new(u32::MAX, GpuVendor::Nvidia);
        bare.processes = (0..50).map(|p| p * 1000).collect();
        samples[1].1.detail.gpus = vec![gpu(0, 1.0)];
        samples[2].1.detail.gpus = vec![amd.clone(), bare.clone(), gpu(2, 3.5)];
        samples[3].1.detail.gpus = vec![bare.clone()];
        samples[5].1.detail.gpus = vec![gpu(0, 2.0), gpu(0, 2.0)];
        samples[11].1.detail.gpus = vec![amd, gpu(1, -0.0)];
        let back = decode(&encode(&samples), Some("cn001")).unwrap();
        for ((ia, a), (ib, b)) in back.iter().zip(&samples) {
            assert_eq!(ia, ib);
            assert_eq!(a.detail.gpus.len(), b.detail.gpus.len());
            for (x, y) in a.detail.gpus.iter().zip(&b.detail.gpus) {
                // NaN is not equal to itself: compare the bits of every float.
                let bits = |g: &GpuReading| GPU_FLOATS.map(|(f, _)| f(g).map(f64::to_bits));
                assert_eq!(bits(x), bits(y));
                let without_floats = |g: &GpuReading| {
                    let mut g = g.clone();
                    for (_, set) in GPU_FLOATS {
                        set(&mut g, None);
                    }
                    g
                };
                assert_eq!(without_floats(x), without_floats(y));
            }
        }
    }

    #[test]
    fn damaged_gpu_columns_are_errors_not_panics() {
        let packed = encode(&gpu_day(30));
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&packed[1..])
            .read_to_end(&mut inflated)
            .unwrap();
        let deflate = |bytes: &[u8]| {
            let mut d =
                flate2::write::DeflateEncoder::new(vec![FORMAT], flate2::Compression::fast());
            d.write_all(bytes).unwrap();
            d.finish().unwrap()
        };
        assert_eq!(decode(&deflate(&inflated), None).map(|s| s.len()), Ok(30));
        // Every truncation is an error; every changed byte an error or some pack.
        for len in 0..inflated.len() {
            assert!(
                decode(&deflate(&inflated[..len]), None).is_err(),
                "cut at {len}"
            );
        }
        for at in 0..inflated.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = inflated.clone();
                bad[at] ^= flip;
                let _ = decode(&deflate(&bad), None);
            }
        }
    }

    #[test]
    fn whole_micros_only_when_exact() {
        assert_eq!(whole_micros(14.3), Some(14_300_000));
        assert_eq!(whole_micros(0.000_001), Some(1));
        assert_eq!(whole_micros(1.0 / 3.0), None);
        assert_eq!(whole_micros(f64::NAN), None);
        assert_eq!(whole_micros(-2.5), Some(-2_500_000));
    }
}
