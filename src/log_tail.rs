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
    /// The node whose agent tails the job: `BatchHost`, or the first node of `NodeList`.
    pub batch_host: Option<String>,
}

/// Parses one job of `scontrol show job -o` (one line of `Key=Value` words; `StdOut`,
/// `StdErr`, `UserId=name(uid)`, `BatchHost`, `NodeList`), expanding the filename patterns left in the
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
    // The node that runs the batch script: Slurm's word, or else the allocation's first node
    // (where Slurm starts it), so one agent tails a job, not one per node.
    let batch_host = fields.get("BatchHost").map(|s| s.to_string()).or_else(|| {
        let list = fields
            .get("NodeList")
            .filter(|l| !l.is_empty() && **l != "(null)")?;
        crate::domain::nodelist::expand(list, 1 << 16)
            .ok()?
            .into_iter()
            .next()
    });
    let values = crate::domain::joblog::PathValues {
        job_id,
        array_job_id: fields.get("ArrayJobId").copied(),
        array_task_id: fields.get("ArrayTaskId").copied(),
        user: Some(user),
        job_name: fields.get("JobName").copied(),
        node: batch_host.as_deref(),
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
        batch_host,
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

/// Default of `--log-drain`: how long after a job leaves this node's running list (its epilog
/// has run) its files are still read, for what the job's last processes flush late.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// Largest `--log-drain`: the server takes a finished job's bytes for two minutes after its
/// end (`store::logs::DEFAULT_DRAIN`), and what the agent ships late must still arrive.
pub const MAX_DRAIN: Duration = Duration::from_secs(60);
/// How long past the drain a job's streams wait for the server to take their `eof` before
/// the shipper gives up on them.
const EOF_PATIENCE: Duration = Duration::from_secs(55);
/// Posts one stream may make per pass (a backlog drains over a few passes).
const POSTS_PER_PASS: usize = 4;

/// What one POST did.
enum Posted {
    /// The server holds `offset` now.
    Held(u64),
    /// Refused for good: the log is closed.
    Closed,
    /// Try again next pass (unreachable, 5xx, job not known yet).
    Later,
}

struct JobTails {
    tailers: Vec<Tailer>,
    /// Streams whose log the server closed (nothing more to ship).
    closed: Vec<bool>,
    ended: Option<Instant>,
}

/// Ships the output of the jobs running on one node (`jobscope agent`): a tailer per stream,
/// created from `scontrol show job` when a job first appears on the node (only on its batch
/// host), kept until the job has left the list plus the drain (`--log-drain`, default
/// [`DEFAULT_DRAIN`]), then closed with `eof`.
pub struct LogShipper {
    client: reqwest::Client,
    server: reqwest::Url,
    auth: Option<reqwest::header::HeaderValue>,
    node: String,
    rate: u64,
    /// `--log-drain`.
    drain: Duration,
    jobs: std::collections::HashMap<String, JobTails>,
    /// Jobs not to tail (not the batch host, no output path, scontrol failed), with when to
    /// ask again.
    skipped: std::collections::HashMap<String, Instant>,
}

impl LogShipper {
    pub fn new(
        server: reqwest::Url,
        token: Option<&str>,
        node: String,
        rate: u64,
        timeout: Duration,
    ) -> anyhow::Result<LogShipper> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let auth = match token {
            Some(t) => {
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(LogShipper {
            client,
            server,
            auth,
            node,
            rate,
            drain: DEFAULT_DRAIN,
            jobs: Default::default(),
            skipped: Default::default(),
        })
    }

    /// Reads a finished job's files for `drain` after it left the node (`--log-drain`).
    pub fn with_drain(mut self, drain: Duration) -> LogShipper {
        self.drain = drain;
        self
    }

    /// Tails `output` for job `id` (the agent's lookup, or a test's).
    pub fn track(&mut self, id: &str, output: &JobOutput) {
        let mut tailers = Vec::new();
        if let Some(out) = &output.stdout {
            tailers.push(Tailer::new(
                out.clone(),
                output.uid,
                LogStream::Stdout,
                self.rate,
            ));
        }
        // Slurm's default: stderr goes to the stdout file; shipped once, as stdout.
        if let Some(err) = output
            .stderr
            .as_ref()
            .filter(|e| Some(*e) != output.stdout.as_ref())
        {
            tailers.push(Tailer::new(
                err.clone(),
                output.uid,
                LogStream::Stderr,
                self.rate,
            ));
        }
        let closed = vec![false; tailers.len()];
        self.jobs.insert(
            id.to_owned(),
            JobTails {
                tailers,
                closed,
                ended: None,
            },
        );
    }

    /// Jobs being tailed.
    pub fn tracked(&self) -> usize {
        self.jobs.len()
    }

    /// One pass: looks up jobs new to this node, ships what each stream has new, and closes
    /// the streams of jobs gone for longer than the drain.
    pub async fn pass(&mut self, running: &std::collections::HashSet<String>, now: Instant) {
        for id in running {
            if self.jobs.contains_key(id) || self.skipped.get(id).is_some_and(|t| *t > now) {
                continue;
            }
            match scontrol_job(id, Duration::from_secs(5)).await {
                Some(out) if out.batch_host.as_deref().is_none_or(|h| h == self.node) => {
                    self.track(id, &out)
                }
                _ => {
                    self.skipped
                        .insert(id.clone(), now + Duration::from_secs(60));
                }
            }
        }
        self.skipped.retain(|id, _| running.contains(id));
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            let Some(mut job) = self.jobs.remove(&id) else {
                continue;
            };
            if !running.contains(&id) && job.ended.is_none() {
                job.ended = Some(now);
            }
            let finishing = job
                .ended
                .is_some_and(|e| now.saturating_duration_since(e) >= self.drain);
            for i in 0..job.tailers.len() {
                if job.closed[i] {
                    continue;
                }
                if self.ship_stream(&id, &mut job.tailers[i], now).await {
                    job.closed[i] = true;
                    continue;
                }
                if finishing {
                    let t = &job.tailers[i];
                    let eof = [
                        ("eof", "true".to_owned()),
                        ("offset", t.position().to_string()),
                    ];
                    match self.post(&id, t.stream, &eof, Vec::new()).await {
                        Posted::Held(_) | Posted::Closed => job.closed[i] = true,
                        Posted::Later => {}
                    }
                }
            }
            let gone_long = job
                .ended
                .is_some_and(|e| now.saturating_duration_since(e) >= self.drain + EOF_PATIENCE);
            if job.closed.iter().all(|c| *c) || gone_long {
                continue; // dropped: done (or the server never answered)
            }
            self.jobs.insert(id, job);
        }
    }

    /// Ships what one stream has new; true when the stream is done (refused or closed).
    async fn ship_stream(&self, id: &str, t: &mut Tailer, now: Instant) -> bool {
        if !t.synced() && !t.refused() {
            // Where the server stands (0 for a new log; more after an agent restart).
            match self.post(id, t.stream, &[], Vec::new()).await {
                Posted::Held(offset) => t.resync(offset),
                Posted::Closed => return true,
                Posted::Later => return false,
            }
        }
        for _ in 0..POSTS_PER_PASS {
            let step = match t.poll(now) {
                Ok(step) => step,
                Err(e) => {
                    tracing::debug!(job_id = %id, path = %t.path.display(), error = %e, "cannot read the job's output; will retry");
                    t.reopen();
                    return false;
                }
            };
            match step {
                Step::Idle => return false,
                Step::Refused(why) => {
                    tracing::warn!(job_id = %id, path = %t.path.display(), reason = why.code(), "not reading the job's output");
                    let q = [("unavailable", why.code().to_owned())];
                    let _ = self.post(id, t.stream, &q, Vec::new()).await;
                    return true;
                }
                Step::Bytes {
                    offset,
                    skipped,
                    data,
                } => {
                    if skipped > 0 {
                        tracing::warn!(job_id = %id, stream = %t.stream, skipped, "job output past --log-rate skipped");
                    }
                    let q = [
                        ("offset", offset.to_string()),
                        ("skipped", skipped.to_string()),
                    ];
                    match self.post(id, t.stream, &q, data).await {
                        Posted::Held(held) if held > offset => t.shipped(held),
                        // The server holds another offset (restart, replay): go on from there.
                        Posted::Held(held) => t.resync(held),
                        Posted::Closed => return true,
                        Posted::Later => return false,
                    }
                }
            }
        }
        false
    }

    async fn post(
        &self,
        id: &str,
        stream: LogStream,
        query: &[(&str, String)],
        body: Vec<u8>,
    ) -> Posted {
        let mut url = self.server.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["v1", "jobs", id, "log"]);
        }
        url.query_pairs_mut()
            .append_pair("stream", stream.as_str())
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        let sent_offset = query
            .iter()
            .find(|(k, _)| *k == "offset")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(auth) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(job_id = %id, error = %e, "cannot ship job output; will retry");
                return Posted::Later;
            }
        };
        let status = resp.status();
        let held = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["offset"].as_u64());
        match (status.as_u16(), held) {
            (200, Some(offset)) => Posted::Held(offset),
            (200, None) => Posted::Later,
            // The held offset is where this stream already was: the log is closed.
            (409, Some(offset)) if Some(offset) == sent_offset => Posted::Closed,
            (409, Some(offset)) => Posted::Held(offset),
            (400 | 403 | 413, _) => {
                tracing::warn!(job_id = %id, %status, "the server refused job output; stopped");
                Posted::Closed
            }
            _ => Posted::Later,
        }
    }
}

/// Runs `shipper` every `interval` over the job ids `jobs` holds (the agent's running list)
/// until `stop`.
pub async fn run_shipper(
    mut shipper: LogShipper,
    jobs: tokio::sync::watch::Receiver<std::collections::HashSet<String>>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let running = jobs.borrow().clone();
        shipper.pass(&running, Instant::now()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::{chown, symlink};

    const UID: u32 = 4321;

    fn owned_file(dir: &Path, name: &str, text: &[u8], uid: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        chown(&path, Some(uid), None).unwrap();
        path
    }

    fn refused(path: &Path) -> LogUnavailable {
        match open_checked(path, UID) {
            Err(OpenError::Refused(why)) => why,
            other => panic!("{} was not refused: {other:?}", path.display()),
        }
    }

    #[test]
    fn only_the_job_users_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let good = owned_file(dir.path(), "out", b"hello\n", UID);
        assert!(open_checked(&good, UID).is_ok());
        // A root-only file, like /etc/shadow, reached through the user's symlink.
        let secret = owned_file(dir.path(), "shadow", b"root:secret\n", 0);
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let link = dir.path().join("link");
        symlink(&secret, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(UID), None).unwrap();
        assert_eq!(refused(&link), LogUnavailable::Symlink);
        // A symlink to the user's own file is refused as well: the path must be the file.
        let own_link = dir.path().join("own-link");
        symlink(&good, &own_link).unwrap();
        assert_eq!(refused(&own_link), LogUnavailable::Symlink);
        // Another user's file.
        let theirs = owned_file(dir.path(), "theirs", b"bob's\n", UID + 1);
        assert_eq!(refused(&theirs), LogUnavailable::NotOwned);
        assert_eq!(refused(&secret), LogUnavailable::NotOwned);
        // A fifo is refused without being opened (opening it would block), a directory too.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        chown(&fifo, Some(UID), None).unwrap();
        assert_eq!(refused(&fifo), LogUnavailable::NotRegularFile);
        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        chown(&sub, Some(UID), None).unwrap();
        assert_eq!(refused(&sub), LogUnavailable::NotRegularFile);
        assert!(matches!(
            open_checked(&dir.path().join("absent"), UID),
            Err(OpenError::Missing)
        ));
    }

    #[test]
    fn every_open_checks_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = owned_file(dir.path(), "out", b"one\n", UID);
        let mut t = Tailer::new(path.clone(), UID, LogStream::Stdout, DEFAULT_RATE);
        t.resync(0);
        let now = Instant::now();
        assert_eq!(
            t.poll(now).unwrap(),
            Step::Bytes {
                offset: 0,
                skipped: 0,
                data: b"one\n".to_vec()
            }
        );
        t.shipped(4);
        assert_eq!(t.poll(now).unwrap(), Step::Idle, "nothing new: one fstat");
        // The user swaps the file for a symlink to someone else's; the next open refuses it.
        let secret = owned_file(dir.path(), "secret", b"0123456789\n", 0);
        std::fs::remove_file(&path).unwrap();
        symlink(&secret, &path).unwrap();
        t.reopen();
        assert_eq!(t.poll(now).unwrap(), Step::Refused(LogUnavailable::Symlink));
        assert!(t.refused());
        assert_eq!(t.poll(now).unwrap(), Step::Idle, "refused once, then quiet");
    }

    #[test]
    fn past_the_rate_the_oldest_backlog_is_skipped_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let path = owned_file(dir.path(), "out", &text, UID);
        let mut t = Tailer::new(path, UID, LogStream::Stdout, 100);
        t.resync(0);
        let now = Instant::now();
        // 100 bytes of budget; 400 may wait (4 s of rate); the 500 before them are skipped.
        let Step::Bytes {
            offset,
            skipped,
            data,
        } = t.poll(now).unwrap()
        else {
            panic!("bytes expected")
        };
        assert_eq!((offset, skipped), (0, 500));
        assert_eq!(data, &text[500..600]);
        t.shipped(600);
        assert_eq!(t.poll(now).unwrap(), Step::Idle, "budget spent");
        let later = now + Duration::from_secs(1);
        let Step::Bytes {
            offset,
            skipped,
            data,
        } = t.poll(later).unwrap()
        else {
            panic!("bytes expected")
        };
        assert_eq!(
            (offset, skipped, data.as_slice()),
            (600, 0, &text[600..700])
        );
        assert_eq!(t.skipped_total, 500);
    }

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

    #[test]
    fn without_a_batch_host_the_first_node_tails() {
        let line = "JobId=43 UserId=bob(1001) NodeList=gpu[07-09],cpu01 \
            StdOut=/home/bob/slurm-%j-%N.out";
        let out = parse_scontrol_job(line).unwrap();
        assert_eq!(out.batch_host.as_deref(), Some("gpu07"));
        assert_eq!(
            out.stdout.unwrap(),
            PathBuf::from("/home/bob/slurm-43-gpu07.out")
        );
        // A pending job has no nodes yet: nobody is named, as before.
        let pending = parse_scontrol_job("JobId=44 UserId=bob(1001) NodeList=(null)").unwrap();
        assert_eq!(pending.batch_host, None);
    }
}
