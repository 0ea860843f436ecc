//! A job's output followed live, for the SSE route `GET /v1/stream/jobs/{id}/log` and the
//! WebSocket subscription `job_log`: `connected`, then `log` messages (`{stream, offset,
//! text}`) from the requested byte offset as bytes arrive, then `completed` once the job has
//! finished and its last bytes are in. Each message carries the offset to resume from, so a
//! client that reconnects there gets no gap and no duplicate.
//!
//! One pump per connection reads what the table holds past its offset, then takes live appends
//! that start exactly where it stands; anything else (a lag, a skipped range, a character cut
//! between appends) sends it back to the table.
//!
//! The reading rules that the history and download routes (`super::logs`) share with it live
//! here too: who may read a job's output ([`readable_job`]), when a stream is complete
//! ([`is_complete`]), and cutting stored chunks at a character boundary ([`slice`]).

use super::auth::Role;
use super::error::ApiError;
use super::identity::Identity;
use super::stream::Registered;
use super::AppState;
use crate::domain::joblog::{complete_utf8_prefix, skip_marker, to_text, Chunk, LogStream};
use crate::domain::now_micros;
use crate::domain::Job;
use crate::store::logs::{LogNotice, LogState};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use warp::sse::Event;

/// How often a live log stream looks at the job (its end, another replica's bytes).
const RECHECK: Duration = Duration::from_secs(1);

/// Bytes a stream reads from the database per step (download, and a live stream catching up).
pub(super) const STREAM_STEP_BYTES: i64 = 256 * 1024;

/// Events a slow client may have queued before a pump waits for it.
pub(super) const CONNECTION_BUFFER: usize = 64;

/// Job `id` if `who` may read its output: the owner, an admin, or anyone on an open server.
pub(super) async fn readable_job(
    who: &Identity,
    id: &str,
    state: &AppState,
) -> Result<Job, ApiError> {
    if matches!(who, Identity::Role(role) if *role != Role::Admin) {
        return Err(ApiError::Forbidden);
    }
    super::jobs::visible_job(who, id, false, state).await
}

/// Whether a stream has all its bytes: the job ended and the agent sent its last bytes, said
/// it could not read the file, or the drain passed.
pub(super) fn is_complete(state: &AppState, job: &Job, log: &LogState) -> bool {
    job.state.is_terminal()
        && (log.eof
            || log.unavailable.is_some()
            || state.store.logs().drained(job.end_time, now_micros()))
}

/// Whether [`slice`] holds back a character cut at the end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// No: the end of the log (complete), bytes as they are.
    Never,
    /// Yes, unless nothing else is left to return (a page must move on).
    IfProgress,
    /// Yes, even if that leaves nothing (a live stream waits for the rest).
    Always,
}

/// Renders `chunks` from `from` up to `to` (a skipped range whole), holding back an incomplete
/// character at the end as `hold` says. Returns the bytes and the offset they reach.
pub(super) fn slice(chunks: &[Chunk], from: i64, to: i64, hold: Hold) -> (Vec<u8>, i64) {
    let mut out = Vec::new();
    let mut pos = from;
    let mut data_tail = 0usize;
    for c in chunks {
        if c.end() <= pos || c.start >= to {
            continue;
        }
        match &c.data {
            None => {
                out.extend_from_slice(skip_marker(c.length).as_bytes());
                pos = c.end();
                data_tail = 0;
            }
            Some(data) => {
                let a = (pos - c.start) as usize;
                let b = ((to.min(c.end()) - c.start) as usize).min(data.len());
                out.extend_from_slice(&data[a.min(b)..b]);
                data_tail = b - a.min(b);
                pos = c.start + b as i64;
            }
        }
    }
    if hold != Hold::Never {
        let back = out.len() - complete_utf8_prefix(&out);
        let progress = (pos - back as i64) > from;
        if back > 0 && back <= data_tail && (progress || hold == Hold::Always) {
            out.truncate(out.len() - back);
            pos -= back as i64;
        }
    }
    (out, pos)
}

/// Resolves when the server shuts down (the watch guard is dropped inside, never held).
pub(super) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

pub(super) fn event(name: &str, data: &serde_json::Value, id: Option<i64>) -> Event {
    let e = Event::default().event(name).data(data.to_string());
    match id {
        Some(id) => e.id(id.to_string()),
        None => e,
    }
}

/// One message of a followed log, before it is framed for SSE or a WebSocket.
#[derive(Debug, Clone)]
pub(super) struct LogMessage {
    /// `connected`, `log` or `completed`.
    pub name: &'static str,
    pub data: Value,
    /// The byte offset to resume from after this message.
    pub offset: i64,
}

impl LogMessage {
    /// The SSE event: a `log` event's id is its resume offset (`Last-Event-ID`).
    pub(super) fn sse(self) -> Event {
        let id = (self.name == "log").then_some(self.offset);
        event(self.name, &self.data, id)
    }
}

/// Starts following `stream` of job `id` from byte `start` for `who`, counted under
/// `protocol` in `GET /v1/stream/status` while the receiver is held. Refused as the history
/// is (another user's job reads as missing; service roles other than admin are forbidden),
/// and an offset past the end of the log is a validation error.
pub(super) async fn follow(
    state: &AppState,
    who: &Identity,
    id: &str,
    stream: LogStream,
    start: i64,
    protocol: &'static str,
) -> Result<mpsc::Receiver<LogMessage>, ApiError> {
    follow_counted(state, who, id, stream, start, Some(protocol)).await
}

/// [`follow`], counted in `GET /v1/stream/status` only with a `protocol`: a connection that
/// follows both of a job's streams (seed 004's) counts once.
pub(super) async fn follow_counted(
    state: &AppState,
    who: &Identity,
    id: &str,
    stream: LogStream,
    start: i64,
    protocol: Option<&'static str>,
) -> Result<mpsc::Receiver<LogMessage>, ApiError> {
    readable_job(who, id, state).await?;
    let end = state
        .store
        .log_state(id, stream)
        .await?
        .map_or(0, |l| l.end_offset);
    if start > end {
        return Err(ApiError::Validation(format!(
            "offset is past the end of the log ({end} bytes)"
        )));
    }
    // Subscribed before anything is read, so no append in between is missed.
    let live = state.store.logs().subscribe(id);
    let (tx, rx) = mpsc::channel::<LogMessage>(CONNECTION_BUFFER);
    // Counted in `GET /v1/stream/status` (stream `job_log`, and under the job) while open.
    let registration = protocol.map(|p| state.streams.register("job_log", p, Some(id.to_owned())));
    let pump = LogPump {
        _registration: registration,
        state: state.clone(),
        id: id.to_owned(),
        stream,
        pos: start,
        tx,
        live,
    };
    tokio::spawn(pump.run());
    Ok(rx)
}

/// One connection's pump: what the table holds from `pos`, then live appends, then
/// `completed`.
struct LogPump {
    _registration: Option<Registered>,
    state: AppState,
    id: String,
    stream: LogStream,
    /// The next byte offset to send (the last event's id).
    pos: i64,
    tx: mpsc::Sender<LogMessage>,
    live: broadcast::Receiver<Arc<LogNotice>>,
}

/// The client went away or the server is shutting down.
struct Gone;

impl LogPump {
    async fn run(mut self) {
        let _ = self.pump().await;
    }

    async fn send(&self, name: &'static str, data: Value, offset: i64) -> Result<(), Gone> {
        let message = LogMessage { name, data, offset };
        self.tx.send(message).await.map_err(|_| Gone)
    }

    async fn pump(&mut self) -> Result<(), Gone> {
        let connected = json!({
            "job_id": self.id,
            "stream": self.stream,
            "offset": self.pos,
            "message": format!("Connected to the {} of job {}", self.stream, self.id),
        });
        self.send("connected", connected, self.pos).await?;
        let mut shutdown = self.state.shutdown.clone();
        loop {
            let Some(job) = self.catch_up(false).await? else {
                return Ok(());
            };
            if let Some(job) = job {
                self.catch_up(true).await?;
                let done = json!({
                    "job_id": self.id,
                    "stream": self.stream,
                    "offset": self.pos,
                    "state": job.state,
                    "message": "Log stream completed",
                });
                return self.send("completed", done, self.pos).await;
            }
            // Live: appends that start where this connection stands are sent as they come;
            // anything else (a lag, a skipped range, a held-back character) goes back to the
            // table.
            let recheck = tokio::time::sleep(RECHECK);
            tokio::pin!(recheck);
            loop {
                tokio::select! {
                    notice = self.live.recv() => match notice {
                        Ok(n) if n.stream != self.stream || n.end() <= self.pos => {}
                        Ok(n) if n.offset == self.pos && n.skipped == 0 && !n.eof => {
                            let keep = complete_utf8_prefix(&n.data);
                            if keep < n.data.len() {
                                break;
                            }
                            self.emit(self.pos, &n.data, n.end()).await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                        _ => break,
                    },
                    _ = &mut recheck => break,
                    _ = stopped(&mut shutdown) => return Err(Gone),
                    _ = self.tx.closed() => return Err(Gone),
                }
            }
        }
    }

    async fn emit(&mut self, from: i64, bytes: &[u8], to: i64) -> Result<(), Gone> {
        let data = json!({"stream": self.stream, "offset": from, "text": to_text(bytes)});
        self.send("log", data, to).await?;
        self.pos = to;
        Ok(())
    }

    /// Sends what the table holds past `pos` (with `flush`, a trailing incomplete character
    /// too). Returns `None` when the job is gone, `Some(Some(job))` when the stream is
    /// complete and every byte has been sent or is about to be flushed, `Some(None)` otherwise.
    async fn catch_up(&mut self, flush: bool) -> Result<Option<Option<Job>>, Gone> {
        let store = self.state.store.clone();
        let Ok(log) = store.log_state(&self.id, self.stream).await else {
            return Ok(Some(None));
        };
        let log = log.unwrap_or_default();
        while self.pos < log.end_offset {
            let to = (self.pos + STREAM_STEP_BYTES).min(log.end_offset);
            let Ok(chunks) = store.log_chunks(&self.id, self.stream, self.pos, to).await else {
                return Ok(Some(None));
            };
            let hold = if flush { Hold::Never } else { Hold::Always };
            let (out, next) = slice(&chunks, self.pos, to, hold);
            if next <= self.pos {
                break;
            }
            self.emit(self.pos, &out, next).await?;
        }
        if flush {
            return Ok(Some(None));
        }
        match store.get_job(&self.id).await {
            Ok(job) if is_complete(&self.state, &job, &log) => Ok(Some(Some(job))),
            Ok(_) => Ok(Some(None)),
            Err(crate::store::StoreError::NotFound) => Ok(None),
            Err(_) => Ok(Some(None)),
        }
    }
}
