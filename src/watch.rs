//! `jobscope watch`: a terminal client of the live streams (`GET /v1/stream/jobs/{id}` and
//! `GET /v1/stream/jobs`).
//!
//! It prints one line per event on stdout (state changes, samples, gaps), keeps the last `id:`
//! it saw and, when the connection drops, reconnects with `Last-Event-ID` so the server replays
//! what was missed: exponential backoff from 0.5 s doubling to 30 s, plus jitter so that many
//! watchers cut off together do not come back together. A 4xx answer (bad filter, 401, 403) is
//! not retried.
//!
//! With a JOB_ID it ends when the server sends `stream_closed`, and its exit status is the job's
//! outcome, so that scripts can wait on a job ([`LONG_ABOUT`] has the table):
//! completed 0; failed the job's exit code when it is 1..=255, else 1; cancelled 130. Its own
//! outcomes use 124 (the job does not exist) and 125 (a refused request or another error),
//! after `timeout(1)`'s convention: batch scripts rarely exit with those. Ctrl-C ends it
//! quietly with 130.
//!
//! The SSE frames are parsed here ([`SseParser`]) rather than with a crate: the format is a few
//! lines of spec, and reconnection needs the parser's `id` bookkeeping anyway.

use crate::client::{self, ApiClient, Call, ClientOptions};
use crate::events::EventKind;
use chrono::{DateTime, Local, Utc};
use futures_util::StreamExt;
use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// `jobscope watch --help`: what it prints and how its exit status maps the job's final state.
pub const LONG_ABOUT: &str = "\
Follow the live stream in the terminal: one line per state change, per sample (with a JOB_ID), \
and a warning when the server no longer has events that were missed. A dropped connection is \
resumed where it stopped (Last-Event-ID), retrying with backoff from 0.5 s up to 30 s.

With a JOB_ID, watch exits when the job has ended, with a status taken from its final state, so \
a script can wait on a job:
  completed                0
  failed                   the job's exit code if it is 1..=255, else 1
  cancelled                130
  job not found            124
  request refused (4xx)    125 (bad filter, 401 missing or unknown token, 403 role)
  other error              125
  Ctrl-C                   130
A failed job's own code can be any of 1..=255; 124 and 125 are rare for batch scripts, and \
watch names its own errors on stderr.

Example: jobscope watch 4242 && echo done";

/// First reconnection delay; it doubles per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exit statuses that are not a job's outcome (outside the common job codes 1, 2, 126-128+n).
const EXIT_REFUSED: u8 = 125;
const EXIT_NOT_FOUND: u8 = 124;
const EXIT_INTERRUPTED: u8 = 130;

/// Runs `jobscope watch`; reports its own errors on stderr.
pub async fn run(args: WatchConfig) -> ExitCode {
    if let Some(stream) = args.log {
        return follow_log(args, stream).await;
    }
    let outcome = tokio::select! {
        outcome = watch(args) => outcome,
        // Ctrl-C is how a user stops following: no message, the shell's usual status.
        _ = tokio::signal::ctrl_c() => return ExitCode::from(EXIT_INTERRUPTED),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Fatal::Refused(message)) => {
            eprintln!("jobscope watch: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(Fatal::Other(err)) => {
            eprintln!("jobscope watch: {err:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// `watch JOB --log`: the job's output as it grows ([`crate::log_cmd::follow`]).
async fn follow_log(args: WatchConfig, stream: crate::domain::joblog::LogStream) -> ExitCode {
    let id = args.job_id.clone().unwrap_or_default();
    let mut out = std::io::stdout();
    let followed = crate::log_cmd::follow(
        &id,
        stream,
        &args.server,
        args.token_file.as_ref(),
        &mut out,
    );
    let outcome = tokio::select! {
        outcome = followed => outcome,
        _ = tokio::signal::ctrl_c() => return ExitCode::from(EXIT_INTERRUPTED),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("jobscope watch: {err:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// Why watching stopped without an outcome.
#[derive(Debug)]
enum Fatal {
    /// The server answered 4xx: retrying would not help.
    Refused(String),
    /// Bad arguments, an unreadable token file, a closed stdout.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Fatal {
    fn from(err: anyhow::Error) -> Self {
        Fatal::Other(err)
    }
}

/// What to watch, where and as whom: `jobscope watch`'s arguments, as `cli` hands them over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// One job (exit when it ends), or every job matching `user` and `states`.
    pub job_id: Option<String>,
    pub user: Option<String>,
    pub states: Option<String>,
    pub server: String,
    pub token_file: Option<std::path::PathBuf>,
    /// `--log`: print this output stream of the job as it grows instead of its events.
    pub log: Option<crate::domain::joblog::LogStream>,
}

/// Where to connect and as whom.
struct Target {
    api: ApiClient,
    stream_url: Url,
    job_url: Option<Url>,
    /// No --token-file and `scontrol` on the PATH: the token comes from `scontrol token`, and
    /// a 401 fetches a fresh one (once per refusal).
    from_scontrol: bool,
}

impl Target {
    fn new(args: &WatchConfig) -> anyhow::Result<Target> {
        let base = client::server_url(&args.server)?;
        let (stream_url, job_url) = match &args.job_id {
            Some(id) => (
                client::join(&base, &["v1", "stream", "jobs", id]),
                Some(client::join(&base, &["v1", "jobs", id])),
            ),
            None => {
                let mut url = client::join(&base, &["v1", "stream", "jobs"]);
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(user) = &args.user {
                        query.append_pair("user", user);
                    }
                    if let Some(states) = &args.states {
                        query.append_pair("states", states);
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                (url, None)
            }
        };
        let token = match &args.token_file {
            Some(path) => Some(crate::token_file::read(path)?),
            None => None,
        };
        let from_scontrol = token.is_none() && crate::token_file::scontrol_on_path();
        let options = ClientOptions {
            timeout: None,
            connect_timeout: Duration::from_secs(10),
            user_agent: None,
        };
        Ok(Target {
            api: ApiClient::new(base, token.as_deref(), options)?,
            stream_url,
            job_url,
            from_scontrol,
        })
    }

    fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        self.api.get(url.clone())
    }

    /// A token from `scontrol token` when that is the source; a failure is said on stderr and
    /// watching goes on without one (the server then answers 401 if it wants a token).
    async fn fetch_scontrol_token(&self) -> bool {
        if !self.from_scontrol {
            return false;
        }
        let fetched = crate::token_file::from_scontrol(Duration::from_secs(15))
            .await
            .and_then(|token| self.api.set_token(&token));
        match fetched {
            Ok(()) => true,
            Err(err) => {
                eprintln!("jobscope watch: no token from scontrol: {err:#}");
                false
            }
        }
    }
}

/// What a finished connection left to do.
enum Ended {
    /// The stream sent `stream_closed`: exit with this status.
    Exit(u8),
    /// The connection dropped (or the server ended it): resume.
    Dropped(String),
    /// A 401 with a token from `scontrol`: a fresh one was fetched; reconnect at once.
    Reauthorized,
}

async fn watch(args: WatchConfig) -> Result<u8, Fatal> {
    let target = Target::new(&args)?;
    target.fetch_scontrol_token().await;
    let mut state = WatchState::default();
    let mut rng = XorShift::from_time();
    let mut attempt: u32 = 0;
    loop {
        let reason = match connect(&target, &mut state).await? {
            Ended::Exit(code) => return Ok(code),
            Ended::Dropped(reason) => reason,
            Ended::Reauthorized => continue,
        };
        // A connection that got as far as `connected` was a success: start the backoff over.
        if std::mem::take(&mut state.connected_once) {
            attempt = 0;
        }
        let delay = backoff(attempt, rng.next());
        attempt = attempt.saturating_add(1);
        eprintln!(
            "jobscope watch: {reason}; reconnecting in {:.1} s",
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
}

/// What survives reconnections.
#[derive(Default)]
struct WatchState {
    /// The last `id:` received: the resume cursor.
    last_event_id: Option<String>,
    /// The newest snapshot of the watched job, for the exit status.
    last_job: Option<Value>,
    /// Set when the current connection received `connected`.
    connected_once: bool,
    /// Whether "connected" was already said on stderr.
    announced: bool,
    /// A 401 made `watch` fetch a fresh `scontrol` token, and no connection has succeeded
    /// since: a second 401 is final.
    refreshed: bool,
}

/// One connection: request, then events until it ends.
async fn connect(target: &Target, state: &mut WatchState) -> Result<Ended, Fatal> {
    let mut request = target
        .get(&target.stream_url)
        .header(ACCEPT, "text/event-stream");
    if let Some(id) = &state.last_event_id {
        request = request.header("last-event-id", id.as_str());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return Ok(Ended::Dropped(client::describe(&err))),
    };
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED
        && !std::mem::replace(&mut state.refreshed, true)
        && target.fetch_scontrol_token().await
    {
        eprintln!(
            "jobscope watch: the server refused the token (401); fetched a fresh one from scontrol"
        );
        return Ok(Ended::Reauthorized);
    }
    if !status.is_success() && !Call::Stream.retry(status) {
        return Err(Fatal::Refused(refusal(status, response).await));
    }
    if !status.is_success() {
        return Ok(Ended::Dropped(format!("server answered {status}")));
    }
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        let chunk = match body.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => return Ok(Ended::Dropped(client::describe(&err))),
            None => return Ok(Ended::Dropped("the server ended the stream".into())),
        };
        for event in parser.feed(&chunk) {
            if let Some(code) = handle(target, state, &event).await? {
                return Ok(Ended::Exit(code));
            }
        }
        if let Some(id) = parser.last_event_id() {
            state.last_event_id = Some(id.to_owned());
        }
    }
}

/// The message of a 4xx answer: the server's `{"error", "message"}` body when it has one.
async fn refusal(status: StatusCode, response: reqwest::Response) -> String {
    let body = response.text().await.unwrap_or_default();
    let message = client::server_message(&body).unwrap_or_default();
    let hint = match status {
        StatusCode::UNAUTHORIZED => "; pass a token with --token-file or JOBSCOPE_TOKEN_FILE",
        StatusCode::FORBIDDEN => "; the token's role may not read streams",
        _ => "",
    };
    if message.is_empty() {
        format!("the server refused the stream ({status}){hint}")
    } else {
        format!("the server refused the stream ({status}): {message}{hint}")
    }
}

/// Prints one event; `Some(status)` when watching is over.
async fn handle(
    target: &Target,
    state: &mut WatchState,
    event: &SseEvent,
) -> Result<Option<u8>, Fatal> {
    let envelope: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    let data = &envelope["data"];
    match event.event.as_str() {
        "connected" => {
            state.connected_once = true;
            state.refreshed = false;
            if !state.announced {
                state.announced = true;
                eprintln!("jobscope watch: connected");
            }
        }
        "stream_closed" => return closed(target, state, data).await.map(Some),
        "error" => eprintln!(
            "jobscope watch: the server reported: {}",
            data["reason"].as_str().unwrap_or("an error")
        ),
        // The verdict, a grace after the end (`report_events`): its readable block.
        "job_event" if event_kind(&envelope) == Some(EventKind::JobReport) => {
            if let Some(block) = format_report(data) {
                print_line(block.trim_end())?;
            }
        }
        name => {
            if name == "job_event" && data["job"].is_object() {
                state.last_job = Some(data["job"].clone());
            }
            if let Some(line) = format_event(name, &envelope) {
                print_line(&line)?;
            }
        }
    }
    Ok(None)
}

/// The exit status once a single job's stream closed.
async fn closed(target: &Target, state: &WatchState, data: &Value) -> Result<u8, Fatal> {
    let job_id = target
        .stream_url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("")
        .to_owned();
    if data["reason"] == "job not found" {
        eprintln!("jobscope watch: job {job_id} not found");
        return Ok(EXIT_NOT_FOUND);
    }
    if let Some(job) = state.last_job.as_ref().filter(|j| is_terminal(j)) {
        return Ok(exit_status(job));
    }
    // Joined after the job had ended (or its last event was before our cursor): ask for it.
    let Some(url) = &target.job_url else {
        return Ok(1);
    };
    let response = target.get(url).send().await.map_err(|err| {
        Fatal::Other(anyhow::anyhow!(
            "cannot fetch the job: {}",
            client::describe(&err)
        ))
    })?;
    match response.status() {
        StatusCode::NOT_FOUND => {
            eprintln!("jobscope watch: job {job_id} not found");
            Ok(EXIT_NOT_FOUND)
        }
        status if status.is_success() => {
            let job: Value = response
                .json()
                .await
                .map_err(|err| Fatal::Other(anyhow::anyhow!("unreadable job: {err}")))?;
            let line = format_state(&job, None, Some(EventKind::JobFinished));
            print_line(&format!("{}  {line}", clock(job["end_time"].as_str())))?;
            Ok(exit_status(&job))
        }
        status => Err(Fatal::Refused(refusal(status, response).await)),
    }
}

fn is_terminal(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

/// The exit status for a job's final snapshot: completed 0; failed its exit code when 1..=255,
/// else 1; cancelled 130; anything else (not finished) 1.
pub fn exit_status(job: &Value) -> u8 {
    match job["state"].as_str() {
        Some("completed") => 0,
        Some("failed") => job["exit_code"]
            .as_i64()
            .and_then(|code| u8::try_from(code).ok())
            .filter(|code| *code != 0)
            .unwrap_or(1),
        Some("cancelled") => EXIT_INTERRUPTED,
        _ => 1,
    }
}

fn print_line(line: &str) -> Result<(), Fatal> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|err| Fatal::Other(anyhow::anyhow!("cannot write to stdout: {err}")))
}

/// `HH:MM:SS` in local time of an envelope's timestamp (now when it has none).
fn clock(timestamp: Option<&str>) -> String {
    let at = timestamp
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    at.with_timezone(&Local).format("%H:%M:%S").to_string()
}

/// `87.5`, `93`: one decimal, none when it is zero.
fn number(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// The line for one event, or `None` for events that print nothing.
/// The readable block of a `job_report` event's report; `None` when it is not one.
pub fn format_report(data: &Value) -> Option<String> {
    let report: crate::domain::report::Report =
        serde_json::from_value(data["report"].clone()).ok()?;
    Some(crate::domain::report::render(&report))
}

pub fn format_event(name: &str, envelope: &Value) -> Option<String> {
    let at = clock(envelope["timestamp"].as_str());
    let data = &envelope["data"];
    let text = match name {
        "job_sample" => {
            let sample = &data["sample"];
            let id = data["job_id"]
                .as_str()
                .or(data["job"]["id"].as_str())
                .unwrap_or("?");
            let mut line = id.to_owned();
            if let Some(cpu) = sample["cpu_usage"].as_f64() {
                line += &format!("  cpu {}%", number(cpu));
            }
            if let Some(mem) = sample["memory_usage_mb"].as_f64() {
                line += &format!("  mem {} MB", number(mem));
            }
            if let Some(gpu) = sample["gpu_usage"].as_f64() {
                line += &format!("  gpu {}%", number(gpu));
            }
            line
        }
        "job_event" => format_state(
            &data["job"],
            data["previous_state"].as_str(),
            event_kind(envelope),
        ),
        "reset" => {
            "missed events (too old to replay, or this client fell behind); state may have changed"
                .into()
        }
        _ => return None,
    };
    Some(format!("{at}  {text}"))
}

/// The event kind an envelope's `type` names; `None` for one this client does not know.
fn event_kind(envelope: &Value) -> Option<EventKind> {
    envelope["type"].as_str()?.parse().ok()
}

/// `4242  alice  running → completed  exit 0`, without the time.
fn format_state(job: &Value, previous: Option<&str>, kind: Option<EventKind>) -> String {
    let id = job["id"].as_str().unwrap_or("?");
    let user = job["user"].as_str().unwrap_or("?");
    let state = job["state"].as_str().unwrap_or("?");
    let change = match (kind, previous) {
        (Some(EventKind::JobDeleted), _) => "deleted".to_owned(),
        (Some(EventKind::JobCreated), _) => format!("new → {state}"),
        (_, Some(prev)) if prev != state => format!("{prev} → {state}"),
        (Some(EventKind::JobUpdated), _) => format!("{state} (updated)"),
        _ => state.to_owned(),
    };
    let mut line = format!("{id}  {user}  {change}");
    if is_terminal(job) && kind != Some(EventKind::JobDeleted) {
        if let Some(code) = job["exit_code"].as_i64() {
            line += &format!("  exit {code}");
        }
        if let Some(signal) = job["signal"].as_i64() {
            line += &format!("  signal {signal}");
        }
    }
    line
}

/// The delay before reconnection attempt `attempt` (0-based): 0.5 s doubling up to 30 s, plus
/// up to a quarter more from `random`.
pub fn backoff(attempt: u32, random: u64) -> Duration {
    let base = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_MAX);
    let jitter_ms = (base.as_millis() as u64 / 4).max(1);
    base + Duration::from_millis(random % jitter_ms)
}

/// A tiny xorshift64 for jitter: no quality needed, only watchers that do not agree.
struct XorShift(u64);

impl XorShift {
    fn from_time() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Mix in the pid so watchers started in the same instant differ; never zero.
        XorShift((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id at dispatch (the stream's cursor, which may come from an earlier frame).
    pub id: Option<String>,
}

/// An incremental SSE parser: feed it body chunks as they come, split anywhere (even inside a
/// UTF-8 character or between `\r` and `\n`); it returns the events completed by each chunk.
/// Lines end with `\n`, `\r\n` or `\r`; `:` starts a comment; an empty line dispatches.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` first in the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    /// The id of the frame being read, applied at dispatch.
    pending_id: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// The last `id:` of a dispatched frame (the resume cursor).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
            let crlf = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if crlf {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    fn process_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // The spec ignores an id containing NUL.
            "id" if !value.contains('\0') => self.pending_id = Some(value.to_owned()),
            // `retry:` and unknown fields: ignored (the backoff is ours).
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if let Some(id) = self.pending_id.take() {
            self.last_id = (!id.is_empty()).then_some(id);
        }
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<String>) {
        let mut parser = SseParser::default();
        let events = chunks.iter().flat_map(|c| parser.feed(c)).collect();
        (events, parser.last_event_id().map(str::to_owned))
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let (events, last) = parse_all(&[b"id: 7\nevent: job_event\ndata: {\"a\":\ndata:1}\n\n"]);
        assert_eq!(
            events,
            vec![SseEvent {
                event: "job_event".into(),
                data: "{\"a\":\n1}".into(),
                id: Some("7".into()),
            }]
        );
        assert_eq!(last.as_deref(), Some("7"));
    }

    #[test]
    fn comments_and_retry_alone_dispatch_nothing() {
        let (events, last) = parse_all(&[b": ping\n\nretry: 3000\n\n:another\ndata: x\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].data, "x");
        assert_eq!(last, None);
    }

    #[test]
    fn crlf_and_lone_cr_end_lines() {
        let (events, _) = parse_all(&[b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r"]);
        let names: Vec<_> = events
            .iter()
            .map(|e| (e.event.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(names, vec![("a", "1"), ("b", "2")]);
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let stream = "id: 1\r\nevent: job_sample\r\ndata: {\"cpu\": \"87.5 – µ\"}\r\n\r\n: ping\r\n\r\nid: 2\ndata: b\n\n";
        let (whole, _) = parse_all(&[stream.as_bytes()]);
        assert_eq!(whole.len(), 2);
        for size in 1..stream.len() {
            let chunks: Vec<&[u8]> = stream.as_bytes().chunks(size).collect();
            let (split, last) = parse_all(&chunks);
            assert_eq!(split, whole, "chunks of {size} bytes");
            assert_eq!(last.as_deref(), Some("2"));
        }
    }

    #[test]
    fn an_unfinished_frame_waits_for_its_blank_line() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"id: 9\ndata: half").is_empty());
        assert_eq!(parser.last_event_id(), None);
        let events = parser.feed(b"\n\n");
        assert_eq!(events[0].data, "half");
        assert_eq!(parser.last_event_id(), Some("9"));
    }

    #[test]
    fn exit_status_maps_the_final_state() {
        let status =
            |state: &str, exit: Value| exit_status(&json!({"state": state, "exit_code": exit}));
        assert_eq!(status("completed", json!(0)), 0);
        assert_eq!(status("failed", json!(3)), 3);
        assert_eq!(status("failed", json!(255)), 255);
        assert_eq!(status("failed", json!(0)), 1);
        assert_eq!(status("failed", json!(256)), 1);
        assert_eq!(status("failed", json!(-9)), 1);
        assert_eq!(status("failed", Value::Null), 1);
        assert_eq!(status("cancelled", json!(0)), 130);
        assert_eq!(status("running", Value::Null), 1);
    }

    #[test]
    fn lines_for_states_samples_and_resets() {
        let finished = json!({"type": "job_finished", "timestamp": "2024-05-01T10:02:03Z", "data": {
            "job": {"id": "4242", "user": "alice", "state": "completed", "exit_code": 0},
            "previous_state": "running"}});
        let line = format_event("job_event", &finished).unwrap();
        assert!(
            line.ends_with("  4242  alice  running → completed  exit 0"),
            "{line}"
        );
        let sample = json!({"type": "job_sample", "data": {"job_id": "4242",
            "sample": {"cpu_usage": 87.5, "memory_usage_mb": 1200, "gpu_usage": 93.0}}});
        let line = format_event("job_sample", &sample).unwrap();
        assert!(
            line.ends_with("  4242  cpu 87.5%  mem 1200 MB  gpu 93%"),
            "{line}"
        );
        assert!(format_event("reset", &json!({}))
            .unwrap()
            .contains("missed events"));
        assert_eq!(format_event("connected", &json!({})), None);
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds_with_bounded_jitter() {
        assert_eq!(backoff(0, 0), Duration::from_millis(500));
        assert_eq!(backoff(1, 0), Duration::from_secs(1));
        assert_eq!(backoff(6, 0), Duration::from_secs(30));
        assert_eq!(backoff(40, 0), Duration::from_secs(30));
        assert!(backoff(0, u64::MAX) < Duration::from_millis(625));
        let mut rng = XorShift(1);
        assert_ne!(rng.next(), rng.next());
    }
}
