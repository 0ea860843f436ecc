//! A bounded on-disk spool: what a client could not deliver waits here, one file per record, until
//! a later run delivers it. Used by `jobscope hook` for lifecycle events and by the node agent for
//! sample batches.
//!
//! - **Order.** Record names are `<ns since epoch, 20 digits>-<pid, 10>-<counter, 10>.rec`, so the
//!   lexical order of names is arrival order across processes (up to the clocks of one machine).
//! - **Atomic records.** A record is written to a `.tmp-*` name, synced, then renamed: a crash
//!   leaves at most a temp file (swept later), never a half record under a record name. Every
//!   record also carries a header with its length and a checksum, so a record damaged on disk, or
//!   a foreign file that happens to be named like one, is moved to `corrupt/` instead of delivered.
//! - **Bounded.** [`SpoolLimits`] caps records and bytes. A full spool either drops its oldest
//!   records ([`WhenFull::DropOldest`], for sample batches: fresh data matters more) or refuses the
//!   new one ([`WhenFull::RejectNew`], for lifecycle events: the first event of a job matters
//!   most). Either way [`Spool::push`] says what was lost so the caller can count and log it.
//!   Pushers serialise on an advisory lock (`.push.lock`), so the limits hold across processes.
//! - **One drainer.** Delivering is guarded by a second advisory lock (`.drain.lock`, taken with
//!   [`Spool::try_drain`]): a process that finds it taken leaves the spool to the holder, so two
//!   processes draining at once never send the same record twice. The lock dies with its process,
//!   so a crashed drainer blocks nobody. A record is removed only by the caller, after delivery.
//!
//! The directory is created 0700 and records 0600: events name users and jobs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"JSSPOOL1";
/// Magic, payload length (u64 LE), FNV-1a 64 of the payload (u64 LE).
const HEADER_LEN: usize = 24;
const SUFFIX: &str = ".rec";
const TMP_PREFIX: &str = ".tmp-";
const CORRUPT_DIR: &str = "corrupt";
/// Files kept in `corrupt/` for an admin to look at; older ones are deleted.
const MAX_CORRUPT_KEPT: usize = 100;
/// A temp file older than this was left by a crashed writer.
const STALE_TMP_SECS: u64 = 600;

/// What a full spool does with a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Delete the oldest records until the new one fits.
    DropOldest,
    /// Keep what is there and refuse the new record.
    RejectNew,
}

/// Size limits of a spool. A record counts with its header ([`record_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_records: usize,
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

/// Records and bytes (headers included) in the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub records: usize,
    pub bytes: u64,
}

/// Why a record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The spool is full and its policy is [`WhenFull::RejectNew`].
    Full,
    /// The record alone is larger than the spool may ever hold.
    TooLarge,
}

/// Result of [`Spool::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored; `dropped` are the oldest records deleted to make room (empty unless the policy
    /// is [`WhenFull::DropOldest`] and the spool was full).
    Stored { dropped: Depth },
    /// Not stored.
    Rejected(Rejected),
}

/// One record waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    name: String,
    bytes: u64,
}

impl SpoolEntry {
    /// The file name; names sort in arrival order.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size on disk, header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the record was pushed (from its name).
    pub fn pushed_at(&self) -> Option<SystemTime> {
        let nanos: u64 = self.name.get(..20)?.parse().ok()?;
        Some(UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
    }
}

/// Bytes a payload of `len` bytes takes in the spool.
pub fn record_size(len: usize) -> u64 {
    (HEADER_LEN + len) as u64
}

/// Held while draining; dropping it lets another process drain.
#[derive(Debug)]
pub struct DrainGuard {
    _file: File,
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Spool {
    /// Opens the spool in `dir`, creating it (mode 0700, parents as needed) if it is missing.
    pub fn open(dir: impl Into<PathBuf>, limits: SpoolLimits) -> io::Result<Spool> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        if !fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Spool { dir, limits })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> SpoolLimits {
        self.limits
    }

    /// Stores one record, applying the spool's limits.
    pub fn push(&self, payload: &[u8]) -> io::Result<PushOutcome> {
        let size = record_size(payload.len());
        if size > self.limits.max_bytes || self.limits.max_records == 0 {
            return Ok(PushOutcome::Rejected(Rejected::TooLarge));
        }
        let _lock = self.lock(".push.lock", true)?;
        let mut entries = self.list()?;
        let mut depth = total(&entries);
        let mut dropped = Depth::default();
        let fits = |d: &Depth| {
            d.records < self.limits.max_records && d.bytes + size <= self.limits.max_bytes
        };
        if !fits(&depth) {
            match self.limits.when_full {
                WhenFull::RejectNew => return Ok(PushOutcome::Rejected(Rejected::Full)),
                WhenFull::DropOldest => {
                    entries.reverse(); // pop() from the end = oldest first
                    while !fits(&depth) {
                        let Some(old) = entries.pop() else { break };
                        match fs::remove_file(self.path(&old.name)) {
                            Ok(()) => {
                                dropped.records += 1;
                                dropped.bytes += old.bytes;
                            }
                            // A drainer delivered it meanwhile: room made all the same.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                        depth.records -= 1;
                        depth.bytes -= old.bytes;
                    }
                }
            }
        }
        self.write_record(payload)?;
        Ok(PushOutcome::Stored { dropped })
    }

    fn write_record(&self, payload: &[u8]) -> io::Result<()> {
        let name = next_name();
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&header(payload))?;
            f.write_all(payload)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path(&name))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The records, oldest first. Files that are not records (temp files, locks, `corrupt/`,
    /// anything foreign) are not listed.
    pub fn oldest_first(&self) -> io::Result<std::vec::IntoIter<SpoolEntry>> {
        Ok(self.list()?.into_iter())
    }

    /// Records and bytes waiting.
    pub fn depth(&self) -> io::Result<Depth> {
        Ok(total(&self.list()?))
    }

    /// The payload of a record. `Ok(None)` when it is gone (delivered or dropped meanwhile) or
    /// was damaged; a damaged record is moved to `corrupt/` so it is not met again.
    pub fn read(&self, entry: &SpoolEntry) -> io::Result<Option<Vec<u8>>> {
        let path = self.path(&entry.name);
        let mut data = Vec::new();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut data)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        match decode(&data) {
            Some(payload) => Ok(Some(payload.to_vec())),
            None => {
                tracing::warn!(spool = %self.dir.display(), record = %entry.name, "damaged spool record moved to corrupt/");
                self.quarantine(&entry.name)?;
                Ok(None)
            }
        }
    }

    /// Deletes a record (after it was delivered). A record already gone is not an error.
    pub fn remove(&self, entry: &SpoolEntry) -> io::Result<()> {
        match fs::remove_file(self.path(&entry.name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes the drain lock without waiting: `None` when another process is draining (it will
    /// deliver what is here). Also sweeps temp files left by crashed writers.
    pub fn try_drain(&self) -> io::Result<Option<DrainGuard>> {
        let guard = self.lock(".drain.lock", false)?;
        if guard.is_some() {
            self.sweep_stale_tmp();
        }
        Ok(guard.map(|file| DrainGuard { _file: file }))
    }

    fn lock(&self, name: &str, wait: bool) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join(name))?;
        if wait {
            file.lock()?;
            return Ok(Some(file));
        }
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn list(&self) -> io::Result<Vec<SpoolEntry>> {
        let mut out = Vec::new();
        for item in fs::read_dir(&self.dir)? {
            let Ok(item) = item else { continue };
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_record_name(&name) {
                continue;
            }
            // Gone between readdir and stat (delivered, dropped): skip it.
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(SpoolEntry {
                name,
                bytes: meta.len(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn quarantine(&self, name: &str) -> io::Result<()> {
        let dir = self.dir.join(CORRUPT_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        match fs::rename(self.path(name), dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Keep only the newest few: the spool's bound must hold for damaged files too.
        let mut kept: Vec<_> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        if kept.len() > MAX_CORRUPT_KEPT {
            kept.sort();
            for old in &kept[..kept.len() - MAX_CORRUPT_KEPT] {
                let _ = fs::remove_file(dir.join(old));
            }
        }
        Ok(())
    }

    fn sweep_stale_tmp(&self) {
        let Ok(items) = fs::read_dir(&self.dir) else {
            return;
        };
        for item in items.filter_map(|e| e.ok()) {
            let stale = item
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TMP_PREFIX))
                && item
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > STALE_TMP_SECS);
            if stale {
                let _ = fs::remove_file(item.path());
            }
        }
    }
}

fn total(entries: &[SpoolEntry]) -> Depth {
    Depth {
        records: entries.len(),
        bytes: entries.iter().map(|e| e.bytes).sum(),
    }
}

/// `<20 digits>-<10 digits>-<10 digits>.rec`.
fn is_record_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(SUFFIX) else {
        return false;
    };
    let parts: Vec<&str> = stem.split('-').collect();
    parts.len() == 3
        && [20, 10, 10]
            .iter()
            .zip(&parts)
            .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_digit()))
}

fn next_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{nanos:020}-{pid:010}-{seq:010}{SUFFIX}",
        pid = std::process::id()
    )
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn header(payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[16..].copy_from_slice(&fnv1a(payload).to_le_bytes());
    h
}

fn decode(data: &[u8]) -> Option<&[u8]> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(data[8..16].try_into().ok()?);
    let sum = u64::from_le_bytes(data[16..24].try_into().ok()?);
    let payload = &data[HEADER_LEN..];
    (payload.len() as u64 == len && fnv1a(payload) == sum).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn limits(records: usize, bytes: u64, when_full: WhenFull) -> SpoolLimits {
        SpoolLimits {
            max_records: records,
            max_bytes: bytes,
            when_full,
        }
    }

    fn payloads(spool: &Spool) -> Vec<Vec<u8>> {
        spool
            .oldest_first()
            .unwrap()
            .filter_map(|e| spool.read(&e).unwrap())
            .collect()
    }

    #[test]
    fn records_come_back_oldest_first_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/spool");
        let spool = Spool::open(&dir, limits(100, 1 << 20, WhenFull::RejectNew)).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for i in 0..20 {
            let out = spool.push(format!("event {i}").as_bytes()).unwrap();
            assert_eq!(
                out,
                PushOutcome::Stored {
                    dropped: Depth::default()
                }
            );
        }
        let got = payloads(&spool);
        let want: Vec<Vec<u8>> = (0..20).map(|i| format!("event {i}").into_bytes()).collect();
        assert_eq!(got, want);
        let first = spool.oldest_first().unwrap().next().unwrap();
        let mode = fs::metadata(dir.join(first.name()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            spool.depth().unwrap(),
            Depth {
                records: 20,
                bytes: (0..20)
                    .map(|i| record_size(format!("event {i}").len()))
                    .sum()
            }
        );
        spool.remove(&first).unwrap();
        spool.remove(&first).unwrap(); // already gone: fine
        assert_eq!(spool.read(&first).unwrap(), None);
        assert_eq!(spool.depth().unwrap().records, 19);
        assert_eq!(payloads(&spool)[0], b"event 1");
    }

    #[test]
    fn reject_new_keeps_the_oldest_records() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), limits(3, 1 << 20, WhenFull::RejectNew)).unwrap();
        for i in 0..3 {
            assert!(matches!(
                spool.push(&[i]).unwrap(),
                PushOutcome::Stored { .. }
            ));
        }
        assert_eq!(
            spool.push(&[9]).unwrap(),
            PushOutcome::Rejected(Rejected::Full)
        );
        assert_eq!(payloads(&spool), vec![vec![0], vec![1], vec![2]]);

        // The byte limit counts headers: room for exactly two 10-byte records.
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(
            tmp.path(),
            limits(100, 2 * record_size(10), WhenFull::RejectNew),
        )
        .unwrap();
        assert!(matches!(
            spool.push(&[1; 10]).unwrap(),
            PushOutcome::Stored { .. }
        ));
        assert!(matches!(
            spool.push(&[2; 10]).unwrap(),
            PushOutcome::Stored { .. }
        ));
        assert_eq!(
            spool.push(&[3; 1]).unwrap(),
            PushOutcome::Rejected(Rejected::Full)
        );
        assert_eq!(
            spool.push(&[4; 2 * 10 + HEADER_LEN + 1]).unwrap(),
            PushOutcome::Rejected(Rejected::TooLarge)
        );
    }

    #[test]
    fn drop_oldest_makes_room_and_says_what_it_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), limits(3, 1 << 20, WhenFull::DropOldest)).unwrap();
        for i in 0..3u8 {
            spool.push(&[i; 4]).unwrap();
        }
        assert_eq!(
            spool.push(&[3; 4]).unwrap(),
            PushOutcome::Stored {
                dropped: Depth {
                    records: 1,
                    bytes: record_size(4)
                }
            }
        );
        assert_eq!(payloads(&spool), vec![vec![1; 4], vec![2; 4], vec![3; 4]]);

        // By bytes: a big record pushes out as many small ones as it needs.
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(
            tmp.path(),
            limits(100, 4 * record_size(10), WhenFull::DropOldest),
        )
        .unwrap();
        for i in 0..4u8 {
            spool.push(&[i; 10]).unwrap();
        }
        let big = vec![9u8; 2 * 10 + HEADER_LEN];
        assert_eq!(
            spool.push(&big).unwrap(),
            PushOutcome::Stored {
                dropped: Depth {
                    records: 2,
                    bytes: 2 * record_size(10)
                }
            }
        );
        assert_eq!(payloads(&spool), vec![vec![2; 10], vec![3; 10], big]);
        assert!(spool.depth().unwrap().bytes <= 4 * record_size(10));
    }

    #[test]
    fn damaged_and_foreign_files_are_skipped_never_delivered() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), limits(100, 1 << 20, WhenFull::RejectNew)).unwrap();
        spool.push(b"good one").unwrap();
        spool.push(b"to be damaged").unwrap();
        spool.push(b"good two").unwrap();
        let entries: Vec<_> = spool.oldest_first().unwrap().collect();
        // Flip a payload byte: the checksum catches it.
        let path = tmp.path().join(entries[1].name());
        let mut data = fs::read(&path).unwrap();
        *data.last_mut().unwrap() ^= 0xff;
        fs::write(&path, data).unwrap();
        // A truncated record, a foreign file named like a record, an empty one, a directory,
        // a leftover temp file and a file with another name.
        let names = [
            "00000000000000000001-0000000001-0000000001.rec",
            "00000000000000000002-0000000001-0000000001.rec",
        ];
        fs::write(tmp.path().join(names[0]), &MAGIC[..5]).unwrap();
        fs::write(tmp.path().join(names[1]), b"{\"job_id\":\"1\"}").unwrap();
        fs::create_dir(
            tmp.path()
                .join("00000000000000000003-0000000001-0000000001.rec"),
        )
        .unwrap();
        fs::write(tmp.path().join(".tmp-half"), b"JSSPOOL1...").unwrap();
        fs::write(tmp.path().join("README"), b"not a record").unwrap();
        fs::write(tmp.path().join("1-2-3.rec"), b"bad name").unwrap();

        assert_eq!(
            payloads(&spool),
            vec![b"good one".to_vec(), b"good two".to_vec()]
        );
        let mut quarantined: Vec<_> = fs::read_dir(tmp.path().join(CORRUPT_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        quarantined.sort();
        let mut want = vec![
            names[0].to_string(),
            names[1].to_string(),
            entries[1].name().to_string(),
        ];
        want.sort();
        assert_eq!(quarantined, want);
        // Once moved aside they are no longer listed.
        assert_eq!(spool.depth().unwrap().records, 2);
    }

    #[test]
    fn concurrent_pushers_lose_nothing_and_respect_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), limits(1000, 1 << 20, WhenFull::RejectNew)).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        spool.push(format!("{t}:{i}").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got: Vec<String> = payloads(&spool)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(got.len(), 400);
        // Each pusher's own records keep their order.
        for t in 0..8 {
            let mine: Vec<&String> = got
                .iter()
                .filter(|s| s.starts_with(&format!("{t}:")))
                .collect();
            let want: Vec<String> = (0..50).map(|i| format!("{t}:{i}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>());
        }

        // With a limit, concurrent pushers never overshoot it (the push lock serialises them).
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), limits(30, 1 << 20, WhenFull::RejectNew)).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .filter(|_| matches!(spool.push(b"x").unwrap(), PushOutcome::Stored { .. }))
                        .count()
                })
            })
            .collect();
        let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(stored, 30);
        assert_eq!(spool.depth().unwrap().records, 30);
    }

    #[test]
    fn only_one_drainer_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), limits(10, 1 << 20, WhenFull::RejectNew)).unwrap();
        let first = spool.try_drain().unwrap();
        assert!(first.is_some());
        // Another open file description (as another process would have) is refused.
        let other = Spool::open(tmp.path(), spool.limits()).unwrap();
        assert!(other.try_drain().unwrap().is_none());
        drop(first);
        assert!(other.try_drain().unwrap().is_some());
    }

    #[test]
    fn names_sort_in_arrival_order() {
        let a = next_name();
        let b = next_name();
        assert!(is_record_name(&a), "{a}");
        let entry = SpoolEntry {
            name: a.clone(),
            bytes: 0,
        };
        let age = entry.pushed_at().unwrap().elapsed().unwrap_or_default();
        assert!(age.as_secs() < 60, "{age:?}");
        assert!(a < b);
        assert!(!is_record_name(
            "00000000000000000001-0000000001-0000000001.tmp"
        ));
        assert!(!is_record_name(
            "0000000000000000000x-0000000001-0000000001.rec"
        ));
    }
}
