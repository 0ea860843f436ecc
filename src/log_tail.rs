//! The agent's side of job output: tails a job's stdout/stderr file and ships new bytes with
//! their offsets (`POST /v1/jobs/{id}/log`).
//!
//! The agent runs as root and the path is the user's choice, so a file is opened only if it is
//! what it claims to be: never through a symlink (`O_NOFOLLOW`, and `lstat` first so a fifo or a
//! device is never even opened), a regular file, owned by the job's uid, and the same inode
//! `lstat` saw. Every open re-checks all of it (a path replaced between two opens is caught). A
//! refusal is logged once and recorded on the job's log as `log_unavailable`.
//!
//! Nothing is re-sent: the server answers the offset it holds (on a probe after a restart, or in
//! a 409 after an overlap), and the tailer reads from there; the file itself is the spool, so an
//! unreachable server loses nothing but time. A job printing faster than `--log-rate` gets
//! the front of its backlog skipped (a marked range, never silently lost) once it is more than
//! a few seconds behind. When nothing was printed, a pass costs one `fstat`.

use crate::domain::joblog::{LogStream, LogUnavailable};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest chunk one POST carries (the server's limit).
pub const MAX_CHUNK: u64 = 1024 * 1024;
/// Default of `--log-rate`, bytes per second per job and stream.
pub const DEFAULT_RATE: u64 = 256 * 1024;
/// How far behind (in seconds of `--log-rate`) a stream may fall before its oldest unsent
/// bytes are skipped.
const BACKLOG_SECONDS: u64 = 4;

/// Why a file was not opened.
#[derive(Debug)]
pub enum OpenError {
    /// Refused for good reason (recorded on the job).
    Refused(LogUnavailable),
    /// Not there (yet: Slurm creates it when the batch step starts).
    Missing,
    Io(io::Error),
}

/// Opens `path` for reading if it is a regular file owned by `uid`, reached without a
/// symlink. `lstat` first: a fifo, device, socket or directory is refused without being opened
/// (opening a fifo blocks, a tape device rewinds); then the open (`O_NOFOLLOW | O_NONBLOCK`)
/// and `fstat` must find the very inode `lstat` saw, owned by `uid`.
pub fn open_checked(path: &Path, uid: u32) -> Result<File, OpenError> {
    let before = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing),
        Err(e) => return Err(OpenError::Io(e)),
    };
    check(&before, uid)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => OpenError::Refused(LogUnavailable::Symlink),
            _ if e.kind() == io::ErrorKind::NotFound => OpenError::Missing,
            _ => OpenError::Io(e),
        })?;
    let after = file.metadata().map_err(OpenError::Io)?;
    check(&after, uid)?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        // Replaced between the two looks: whatever it is now, it was not what was checked.
        return Err(OpenError::Refused(LogUnavailable::NotOwned));
    }
    Ok(file)
}

fn check(meta: &std::fs::Metadata, uid: u32) -> Result<(), OpenError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(OpenError::Refused(LogUnavailable::Symlink));
    }
    if !kind.is_file() {
        return Err(OpenError::Refused(LogUnavailable::NotRegularFile));
    }
    if meta.uid() != uid {
        return Err(OpenError::Refused(LogUnavailable::NotOwned));
    }
    Ok(())
}

/// What one pass over a stream found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new (or the file is not there yet).
    Idle,
    /// Ship `skipped` bytes as skipped from `offset`, then `data`.
    Bytes {
        offset: u64,
        skipped: u64,
        data: Vec<u8>,
    },
    /// The file was refused: record it (once).
    Refused(LogUnavailable),
}

/// One job stream's tail.
#[derive(Debug)]
pub struct Tailer {
    pub path: PathBuf,
    pub uid: u32,
    pub stream: LogStream,
    file: Option<File>,
    /// The next offset to ship: what the server holds.
    pos: u64,
    /// Whether the server was asked where it stands (after a start or restart).
    synced: bool,
    refused: bool,
    rate: u64,
    tokens: f64,
    refilled: Instant,
    /// Bytes skipped by the rate limit (counted, shipped as marked ranges).
    pub skipped_total: u64,
}

impl Tailer {
    pub fn new(path: PathBuf, uid: u32, stream: LogStream, rate: u64) -> Tailer {
        let rate = rate.max(1);
        Tailer {
            path,
            uid,
            stream,
            file: None,
            pos: 0,
            synced: false,
            refused: false,
            rate,
            tokens: rate as f64,
            refilled: Instant::now(),
            skipped_total: 0,
        }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Whether the server's offset is known (else ship a probe first).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The server holds `offset`: go on from there.
    pub fn resync(&mut self, offset: u64) {
        self.pos = offset;
        self.synced = true;
    }

    /// Whether the file was refused (then nothing more is read).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// One pass: opens the file if needed (with every check), then one `fstat`; reads only when
    /// the file grew past what was shipped, within the rate.
    pub fn poll(&mut self, now: Instant) -> io::Result<Step> {
        if self.refused {
            return Ok(Step::Idle);
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        if self.file.is_none() {
            match open_checked(&self.path, self.uid) {
                Ok(f) => self.file = Some(f),
                Err(OpenError::Missing) => return Ok(Step::Idle),
                Err(OpenError::Refused(why)) => {
                    self.refused = true;
                    return Ok(Step::Refused(why));
                }
                Err(OpenError::Io(e)) => return Err(e),
            }
        }
        let Some(file) = &self.file else {
            return Ok(Step::Idle);
        };
        let size = file.metadata()?.len();
        if size <= self.pos {
            return Ok(Step::Idle);
        }
        let available = size - self.pos;
        let send = available.min(self.tokens as u64).min(MAX_CHUNK);
        let backlog = self.rate.saturating_mul(BACKLOG_SECONDS);
        let skipped = available.saturating_sub(send).saturating_sub(backlog);
        if send == 0 && skipped == 0 {
            return Ok(Step::Idle);
        }
        let mut data = vec![0u8; send as usize];
        let n = read_at_full(file, &mut data, self.pos + skipped)?;
        data.truncate(n);
        self.tokens -= n as f64;
        self.skipped_total += skipped;
        Ok(Step::Bytes {
            offset: self.pos,
            skipped,
            data,
        })
    }

    /// The server took a step: it now holds `offset`.
    pub fn shipped(&mut self, offset: u64) {
        self.pos = offset;
    }

    /// Forgets the open file, so the next pass opens (and checks) the path again.
    pub fn reopen(&mut self) {
        self.file = None;
    }
}

fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Where a job's output goes, as Slurm says (`scontrol show job -o`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    pub uid: u32,
    pub batch_host: Option<String>,
}

/// Parses one job of `scontrol show job -o` (one line of `Key=Value` words; `StdOut`,
/// `StdErr`, `UserId=name(uid)`, `BatchHost`), expanding the filename patterns left in the
/// paths. `None` without a uid.
pub fn parse_scontrol_job(text: &str) -> Option<JobOutput> {
    let mut fields = std::collections::HashMap::new();
    for word in text.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            fields.entry(k).or_insert(v);
        }
    }
    let user_id = fields.get("UserId")?;
    let (user, uid) = user_id.split_once('(')?;
    let uid: u32 = uid.trim_end_matches(')').parse().ok()?;
    let job_id = fields.get("JobId").copied();
    let values = crate::domain::joblog::PathValues {
        job_id,
        array_job_id: fields.get("ArrayJobId").copied(),
        array_task_id: fields.get("ArrayTaskId").copied(),
        user: Some(user),
        job_name: fields.get("JobName").copied(),
        node: fields.get("BatchHost").copied(),
    };
    let path = |key: &str| {
        fields
            .get(key)
            .filter(|p| p.starts_with('/'))
            .map(|p| PathBuf::from(crate::domain::joblog::expand_output_path(p, &values)))
    };
    Some(JobOutput {
        stdout: path("StdOut"),
        stderr: path("StdErr"),
        uid,
        batch_host: fields.get("BatchHost").map(|s| s.to_string()),
    })
}

/// Asks the local `scontrol` where job `id` writes (bounded by `timeout`).
pub async fn scontrol_job(id: &str, timeout: Duration) -> Option<JobOutput> {
    let run = tokio::process::Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, run).await.ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    parse_scontrol_job(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_give_paths_and_uid() {
        let line = "JobId=42 JobName=train UserId=alice(1000) GroupId=alice(1000) \
            BatchHost=n01 StdErr=/home/alice/train-%j.err StdIn=/dev/null \
            StdOut=/home/alice/train-42.out WorkDir=/home/alice";
        let out = parse_scontrol_job(line).unwrap();
        assert_eq!(out.uid, 1000);
        assert_eq!(
            out.stdout.unwrap(),
            PathBuf::from("/home/alice/train-42.out")
        );
        assert_eq!(
            out.stderr.unwrap(),
            PathBuf::from("/home/alice/train-42.err")
        );
        assert_eq!(out.batch_host.as_deref(), Some("n01"));
        assert!(parse_scontrol_job("JobId=1 UserId=alice").is_none());
    }
}
