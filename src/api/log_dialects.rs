//! The log-stream dialects of seeds 002 and 004, as aliases of ours (which stay the documented
//! form), so their clients run as written:
//!
//! - seed 002: `GET /api/v1/jobs/{id}/logs/stream` (SSE: `connected`, one `log` event per
//!   line as `{"line", "timestamp"}`, then `completed`) and `GET /api/v1/jobs/{id}/events/stream`
//!   (our `/v1/stream/jobs/{id}`). Seed 002's Python client prints `data['line']` of every
//!   `data:` line, whatever the event, so `connected` and `completed` carry their message as
//!   `line` too.
//! - seed 004: `GET /api/v1/logs/stream/sse` and `GET /api/v1/logs/stream/ws` (WebSocket,
//!   server to client only), each with an optional `job_run_id` (a job's stdout and stderr;
//!   without it, every job's output, admin only as `/v1/stream/logs` is). Every message is
//!   seed 004's `LogMessage` — `{job_run_id, timestamp, level, stream, message}`, one per line,
//!   `level` `info` for stdout and `error` for stderr — sent as SSE `log` events or WebSocket
//!   text; a job's stream ends with a `system` message `Log stream completed`.
//!
//! Only the framing differs: the bytes come from the same pumps as `/v1/stream/jobs/{id}/log`
//! and `/v1/stream/logs` (`super::log_stream`, `super::logs::follow_all`), so access rules,
//! counts in `GET /v1/stream/status`, slow clients and shutdown behave the same. Output is cut
//! into lines here; a line still being written is held until its newline or the job's end.
//! Seed 002's events carry the byte offset after their line as the SSE id, so `Last-Event-ID`
//! resumes there; seed 004's streams have no ids (two streams share one connection), and a
//! reconnect starts from the beginning.

use super::auth::Role;
use super::error::{respond, ApiError};
use super::identity::Identity;
use super::log_stream::{self, stopped, LogMessage};
use super::request::job_id;
use super::stream_filter::reject_unknown;
use super::{with_state, AppState};
use crate::domain::joblog::LogStream;
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::pin::Pin;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::ws::{Message, WebSocket, Ws};
use warp::Filter;

const READ: &[Role] = &[Role::Reader];

/// One framed message: its SSE event name, data and id.
struct Framed {
    name: &'static str,
    data: Value,
    id: Option<i64>,
}

impl Framed {
    /// Written `data: {...}`, with the space the seeds' examples show: seed 002's Python
    /// client looks for lines starting `data: `. SSE parsers drop that one space, so
    /// EventSource clients read the same JSON.
    fn sse(self) -> warp::sse::Event {
        let event = warp::sse::Event::default()
            .event(self.name)
            .data(format!(" {}", self.data));
        match self.id {
            Some(id) => event.id(id.to_string()),
            None => event,
        }
    }
}

type Messages = Pin<Box<dyn Stream<Item = Framed> + Send + Sync>>;

/// The seed routes, boxed.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let stream_auth = {
        let (tokens, tickets) = (state.tokens.clone(), state.tickets.clone());
        move || super::auth::require_stream(tokens.clone(), tickets.clone(), READ)
    };
    let st = {
        let state = state.clone();
        move || with_state(state.clone())
    };
    let query = super::request::query_map;
    let seed002_log = warp::path!("api" / "v1" / "jobs" / String / "logs" / "stream")
        .and(warp::get())
        .and(stream_auth())
        .and(query())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(seed002_log)
        .boxed();
    let seed002_events = warp::path!("api" / "v1" / "jobs" / String / "events" / "stream")
        .and(warp::get())
        .and(stream_auth())
        .and(query())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(super::stream::job)
        .boxed();
    let seed004_sse = warp::path!("api" / "v1" / "logs" / "stream" / "sse")
        .and(warp::get())
        .and(stream_auth())
        .and(query())
        .and(st())
        .then(seed004_sse)
        .boxed();
    let seed004_ws = warp::path!("api" / "v1" / "logs" / "stream" / "ws")
        .and(warp::get())
        .and(stream_auth())
        .and(query())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::ws())
        .and(st())
        .then(seed004_ws)
        .boxed();
    seed002_log
        .or(seed002_events)
        .unify()
        .or(seed004_sse)
        .unify()
        .or(seed004_ws)
        .unify()
        .boxed()
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Cuts a followed stream's text into lines, holding the last one until its newline.
#[derive(Default)]
struct Lines {
    buf: String,
    /// The byte offset where `buf` starts, while text and bytes correspond one to one (not
    /// after a replaced invalid byte or a skipped-range marker).
    start: Option<i64>,
}

impl Lines {
    /// The complete lines of `text` (bytes `from..to`), without their line ends, each with
    /// the byte offset after it where that is known.
    fn push(&mut self, text: &str, from: i64, to: i64) -> Vec<(String, Option<i64>)> {
        if self.buf.is_empty() {
            self.start = Some(from);
        }
        if text.len() as i64 != to - from {
            self.start = None;
        }
        self.buf.push_str(text);
        let mut out = Vec::new();
        let mut consumed = 0;
        while let Some(nl) = self.buf[consumed..].find('\n') {
            let line = self.buf[consumed..consumed + nl].trim_end_matches('\r');
            let line = line.to_owned();
            consumed += nl + 1;
            let id = match self.start {
                Some(start) => Some(start + consumed as i64),
                None => (consumed == self.buf.len()).then_some(to),
            };
            out.push((line, id));
        }
        self.buf.drain(..consumed);
        if let Some(start) = self.start.as_mut() {
            *start += consumed as i64;
        }
        out
    }

    /// The line still held (the stream ended without a final newline), ending at `to`.
    fn flush(&mut self, to: i64) -> Option<(String, Option<i64>)> {
        (!self.buf.is_empty()).then(|| (std::mem::take(&mut self.buf), Some(to)))
    }
}

/// The text, start and end of a pump's `log` message.
fn log_text(m: &LogMessage) -> (&str, i64, i64) {
    let text = m.data["text"].as_str().unwrap_or_default();
    let from = m.data["offset"].as_i64().unwrap_or(m.offset);
    (text, from, m.offset)
}

/// Seed 002's framing of one job's followed stream.
fn seed002_frame(lines: &mut Lines, id: &str, m: LogMessage) -> Vec<Framed> {
    let line_event = |(line, offset): (String, Option<i64>)| Framed {
        name: "log",
        data: json!({"line": line, "timestamp": timestamp()}),
        id: offset,
    };
    match m.name {
        "log" => {
            let (text, from, to) = log_text(&m);
            lines
                .push(text, from, to)
                .into_iter()
                .map(line_event)
                .collect()
        }
        "completed" => {
            let message = "Log stream completed";
            let mut out: Vec<Framed> = lines.flush(m.offset).into_iter().map(line_event).collect();
            out.push(Framed {
                name: "completed",
                data: json!({
                    "message": message,
                    "line": message,
                    "job_id": id,
                    "state": m.data["state"],
                    "timestamp": timestamp(),
                }),
                id: None,
            });
            out
        }
        _ => {
            let message = format!("Connected to log stream for job {id}");
            vec![Framed {
                name: m.name,
                data: json!({"message": message, "line": message, "timestamp": timestamp()}),
                id: None,
            }]
        }
    }
}

/// `GET /api/v1/jobs/{id}/logs/stream` (seed 002): the job's stdout (`?stream=stderr` for
/// the other), line by line.
async fn seed002_log(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    respond(
        async {
            let id = job_id(&id)?;
            reject_unknown(&params, &[&["stream"]])?;
            let stream = super::logs::stream_param(&params)?;
            let start = super::stream::cursor(last_event_id, &params)?.unwrap_or(0);
            let mut rx = log_stream::follow(&state, &who, &id, stream, start, "sse").await?;
            let mut lines = Lines::default();
            let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
                .flat_map(move |m| futures_util::stream::iter(seed002_frame(&mut lines, &id, m)))
                .map(Framed::sse);
            Ok(super::stream::sse_response(events, state.shutdown.clone()))
        }
        .await,
    )
}

/// One seed 004 `LogMessage`.
fn seed004_message(job: Option<&str>, stream: &str, message: &str) -> Value {
    let level = if stream == "stderr" { "error" } else { "info" };
    json!({
        "job_run_id": job,
        "timestamp": timestamp(),
        "level": level,
        "stream": stream,
        "message": message,
    })
}

fn seed004_log(data: Value) -> Framed {
    Framed {
        name: "log",
        data,
        id: None,
    }
}

/// Seed 004's messages for `job_run_id` (both streams, then `Log stream completed`), or for
/// every job without one.
async fn seed004_messages(
    state: &AppState,
    who: &Identity,
    params: &HashMap<String, String>,
    protocol: &'static str,
) -> Result<Messages, ApiError> {
    reject_unknown(params, &[&["job_run_id"]])?;
    let Some(raw) = params.get("job_run_id") else {
        return seed004_all(state, who, protocol);
    };
    let id = job_id(raw)?;
    let mut parts: Vec<Messages> = Vec::new();
    for stream in LogStream::ALL {
        // One connection, counted once in `GET /v1/stream/status`.
        let counted = (stream == LogStream::Stdout).then_some(protocol);
        let mut rx = log_stream::follow_counted(state, who, &id, stream, 0, counted).await?;
        let mut lines = Lines::default();
        let job = id.clone();
        let part = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).flat_map(move |m| {
            let mut out = Vec::new();
            let name = stream.as_str();
            let mut push = |(line, _): (String, Option<i64>)| {
                out.push(seed004_log(seed004_message(Some(&job), name, &line)));
            };
            match m.name {
                "log" => {
                    let (text, from, to) = log_text(&m);
                    lines.push(text, from, to).into_iter().for_each(&mut push);
                }
                "completed" => lines.flush(m.offset).into_iter().for_each(&mut push),
                _ => {}
            }
            futures_util::stream::iter(out)
        });
        parts.push(Box::pin(part));
    }
    let end = seed004_log(seed004_message(Some(&id), "system", "Log stream completed"));
    let both = futures_util::stream::select_all(parts).chain(futures_util::stream::iter([end]));
    Ok(Box::pin(both))
}

/// Seed 004's global stream: every job's output, line by line (admin, as `/v1/stream/logs`).
fn seed004_all(
    state: &AppState,
    who: &Identity,
    protocol: &'static str,
) -> Result<Messages, ApiError> {
    let mut rx = super::logs::follow_all(state, who, &HashMap::new(), protocol)?;
    let mut lines: HashMap<(String, String), Lines> = HashMap::new();
    let all =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).flat_map(move |(name, data)| {
            let out: Vec<Framed> = match name {
                "log" => {
                    let job = data["job_id"].as_str().unwrap_or_default().to_owned();
                    let stream = data["stream"].as_str().unwrap_or_default().to_owned();
                    let text = data["text"].as_str().unwrap_or_default();
                    let from = data["offset"].as_i64().unwrap_or(0);
                    let to = from + text.len() as i64;
                    let key = (job.clone(), stream.clone());
                    let held = lines.entry(key).or_default();
                    held.push(text, from, to)
                        .into_iter()
                        .map(|(line, _)| seed004_log(seed004_message(Some(&job), &stream, &line)))
                        .collect()
                }
                "lagged" => {
                    lines.clear();
                    let message = data["message"].as_str().unwrap_or("Fell behind");
                    let mut m = seed004_message(None, "system", message);
                    m["level"] = json!("warn");
                    vec![seed004_log(m)]
                }
                _ => Vec::new(),
            };
            futures_util::stream::iter(out)
        });
    Ok(Box::pin(all))
}

/// `GET /api/v1/logs/stream/sse[?job_run_id=]` (seed 004).
async fn seed004_sse(who: Identity, params: HashMap<String, String>, state: AppState) -> Response {
    respond(
        async {
            let messages = seed004_messages(&state, &who, &params, "sse").await?;
            let events = messages.map(Framed::sse);
            Ok(super::stream::sse_response(events, state.shutdown.clone()))
        }
        .await,
    )
}

/// `GET /api/v1/logs/stream/ws[?job_run_id=]` (seed 004): the same messages as WebSocket text;
/// the server closes the connection after a job's `Log stream completed`.
async fn seed004_ws(
    who: Identity,
    params: HashMap<String, String>,
    origin: Option<String>,
    host: Option<String>,
    ws: Ws,
    state: AppState,
) -> Response {
    if !super::ws::origin_allowed(origin.as_deref(), host.as_deref(), &state.allowed_origins) {
        return ApiError::Forbidden.into_response();
    }
    // Refusals (a missing job, a bad id) are answered before the upgrade, as HTTP errors.
    match seed004_messages(&state, &who, &params, "ws").await {
        Err(e) => e.into_response(),
        Ok(messages) => ws
            .on_upgrade(move |socket| push(socket, messages, state))
            .into_response(),
    }
}

/// Sends `messages` until they end, the client goes or the server shuts down; what the
/// client sends is read (so pings and its close are answered) and otherwise ignored.
async fn push(socket: WebSocket, mut messages: Messages, state: AppState) {
    let (mut tx, mut rx) = socket.split();
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            next = messages.next() => match next {
                Some(m) => {
                    if tx.send(Message::text(m.data.to_string())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            incoming = rx.next() => match incoming {
                Some(Ok(m)) if !m.is_close() => {}
                _ => return,
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
    let _ = tx.send(Message::close()).await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_with_their_end_offsets() {
        let mut lines = Lines::default();
        assert_eq!(
            lines.push("a\nbc", 10, 14),
            vec![("a".to_owned(), Some(12))]
        );
        assert_eq!(
            lines.push("d\r\ne\n", 14, 19),
            vec![("bcd".to_owned(), Some(17)), ("e".to_owned(), Some(19))]
        );
        // Text that does not match its bytes (a replaced invalid byte): only the end is known.
        assert_eq!(
            lines.push("x\u{fffd}\ny\nz", 19, 24),
            vec![("x\u{fffd}".to_owned(), None), ("y".to_owned(), None)]
        );
        assert_eq!(lines.flush(24), Some(("z".to_owned(), Some(24))));
        assert_eq!(lines.flush(24), None);
        assert_eq!(lines.push("q\n", 24, 26), vec![("q".to_owned(), Some(26))]);
    }
}
