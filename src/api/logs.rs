//! Job output. `POST /v1/jobs/{id}/log` (agents ship a stream's bytes from the offset the
//! server holds), `GET /v1/jobs/{id}/log` (history by bytes or by lines, with the next cursor
//! and whether the log is complete), `GET /v1/jobs/{id}/log/download` (the whole stored
//! stream, streamed from the database), and the SSE `GET /v1/stream/jobs/{id}/log`
//! (`connected`, `log`, `completed`; the event id is the byte offset to resume from), whose
//! pump, shared with the WebSocket subscription `job_log`, is [`super::log_stream`].
//!
//! A job's output is its owner's and admins': a user asking for another user's job gets the
//! missing-job answer, and service roles other than admin (reader, hook, agent) may not read
//! it. The storage rules (no gap, no overlap, the cap) are `store::logs`.

use super::auth::{identify, require_role, require_stream, Role};
use super::error::{respond, ApiError};
use super::identity::Identity;
use super::log_stream::{
    self, event, is_complete, readable_job, slice, stopped, Hold, CONNECTION_BUFFER,
    STREAM_STEP_BYTES,
};
use super::request::{int_param, job_id, query_map, read_limited};
use super::{with_state, AppState};
use crate::domain::joblog::{
    complete_utf8_prefix, line_window, render, skip_marker, to_text, Chunk, LogStream,
    LogUnavailable,
};
use crate::store::logs::{AppendOutcome, LogAppend};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use tokio::sync::{broadcast, mpsc};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

type Handled = Result<Response, ApiError>;

/// Largest chunk an agent may post.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Default and largest page of `GET /v1/jobs/{id}/log` by bytes.
const DEFAULT_PAGE_BYTES: i64 = 64 * 1024;
const MAX_PAGE_BYTES: i64 = 1024 * 1024;
/// Default and largest page by lines.
const DEFAULT_LINES: i64 = 100;
const MAX_LINES: i64 = 10_000;

const READ: &[Role] = &[Role::Reader];
const AGENT: &[Role] = &[Role::Agent];
/// Admin only.
const ADMIN: &[Role] = &[];

/// The four routes, boxed.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let tokens = state.tokens.clone();
    let st = {
        let state = state.clone();
        move || with_state(state.clone())
    };
    let append = warp::path!("v1" / "jobs" / String / "log")
        .and(warp::post())
        .and(require_role(tokens.clone(), AGENT))
        .and(query_map())
        .and(raw_body(MAX_CHUNK_BYTES))
        .and(st())
        .then(append)
        .boxed();
    let history = warp::path!("v1" / "jobs" / String / "log")
        .and(warp::get())
        .and(identify(tokens.clone(), READ))
        .and(query_map())
        .and(st())
        .then(history)
        .boxed();
    let download = warp::path!("v1" / "jobs" / String / "log" / "download")
        .and(warp::get())
        .and(identify(tokens.clone(), READ))
        .and(query_map())
        .and(st())
        .then(download)
        .boxed();
    let live = warp::path!("v1" / "stream" / "jobs" / String / "log")
        .and(warp::get())
        .and(require_stream(tokens, state.tickets.clone(), READ))
        .and(query_map())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(st())
        .then(live)
        .boxed();
    let global = warp::path!("v1" / "stream" / "logs")
        .and(warp::get())
        .and(require_stream(
            state.tokens.clone(),
            state.tickets.clone(),
            ADMIN,
        ))
        .and(query_map())
        .and(st())
        .then(global)
        .boxed();
    append
        .or(history)
        .unify()
        .or(download)
        .unify()
        .or(live)
        .unify()
        .or(global)
        .unify()
        .boxed()
}

/// The raw request body, at most `limit` bytes (413 beyond, chunked or not).
fn raw_body(limit: usize) -> BoxedFilter<(Bytes,)> {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, body| async move {
            read_limited(declared, body, limit)
                .await
                .map(Bytes::from)
                .map_err(warp::reject::custom)
        })
        .boxed()
}

/// `stream=stdout|stderr`; stdout when absent.
pub(super) fn stream_param(params: &HashMap<String, String>) -> Result<LogStream, ApiError> {
    match params.get("stream") {
        None => Ok(LogStream::Stdout),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::Validation("stream must be stdout or stderr".into())),
    }
}

fn bool_param(params: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(_) => Err(ApiError::Validation(format!(
            "{name} must be true or false"
        ))),
    }
}

async fn append(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    body: Bytes,
    state: AppState,
) -> Response {
    respond(append_inner(id, who, params, body, state).await)
}

async fn append_inner(
    id: String,
    _who: Identity,
    params: HashMap<String, String>,
    body: Bytes,
    state: AppState,
) -> Handled {
    let id = job_id(&id)?;
    let stream = match params.get("stream") {
        Some(_) => stream_param(&params)?,
        None => return Err(ApiError::Validation("stream is required".into())),
    };
    if let Some(code) = params.get("unavailable") {
        let reason = LogUnavailable::from_code(code).ok_or_else(|| {
            let codes: Vec<_> = LogUnavailable::ALL.iter().map(|u| u.code()).collect();
            ApiError::Validation(format!("unavailable must be one of {}", codes.join(", ")))
        })?;
        if !body.is_empty() {
            return Err(ApiError::Validation(
                "a log marked unavailable carries no bytes".into(),
            ));
        }
        state
            .store
            .mark_log_unavailable(&id, stream, reason)
            .await?;
        tracing::warn!(job_id = %id, %stream, reason = reason.code(), "job output unavailable");
        return Ok(warp::reply::json(&json!({
            "job_id": id,
            "stream": stream,
            "log_unavailable": reason.message(),
        }))
        .into_response());
    }
    const MAX_OFFSET: i64 = 1 << 50;
    let offset = match params.get("offset") {
        Some(_) => int_param(&params, "offset", 0, 0, MAX_OFFSET)?,
        None if body.is_empty() && !params.contains_key("skipped") => -1,
        None => return Err(ApiError::Validation("offset is required".into())),
    };
    let skipped = int_param(&params, "skipped", 0, 0, 1 << 40)?;
    let eof = bool_param(&params, "eof")?;
    let append = LogAppend {
        job_id: id.clone(),
        stream,
        offset,
        skipped,
        data: body,
        eof,
    };
    let stored = append.data.len();
    let conflict = |held: i64, message: String| {
        warp::reply::with_status(
            warp::reply::json(&json!({"error": "conflict", "message": message, "offset": held})),
            StatusCode::CONFLICT,
        )
        .into_response()
    };
    Ok(match state.store.append_log(&append).await? {
        AppendOutcome::Stored { end_offset } => warp::reply::json(&json!({
            "job_id": id,
            "stream": stream,
            "offset": end_offset,
            "stored": stored,
        }))
        .into_response(),
        AppendOutcome::Conflict { held } => conflict(
            held,
            format!("The server holds {stream} of this job up to byte {held}; send from there"),
        ),
        AppendOutcome::Closed { held } => conflict(
            held,
            "This job's log is closed: the job ended before the drain, or its last bytes came"
                .into(),
        ),
    })
}

async fn history(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    state: AppState,
) -> Response {
    respond(history_inner(id, who, params, state).await)
}

async fn history_inner(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    state: AppState,
) -> Handled {
    let id = job_id(&id)?;
    let stream = stream_param(&params)?;
    let by_lines = params.contains_key("from_line") || params.contains_key("lines");
    if by_lines && (params.contains_key("offset") || params.contains_key("limit")) {
        return Err(ApiError::Validation(
            "page by offset and limit, or by from_line and lines, not both".into(),
        ));
    }
    let job = readable_job(&who, &id, &state).await?;
    let log = state
        .store
        .log_state(&id, stream)
        .await?
        .unwrap_or_default();
    let mut body = json!({
        "job_id": id,
        "stream": stream,
        "end_offset": log.end_offset,
        "stored_bytes": log.stored_bytes,
        "skipped_bytes": log.skipped_bytes,
        "complete": is_complete(&state, &job, &log),
        "log_unavailable": log.unavailable,
    });
    let page = if by_lines {
        let from_line = int_param(&params, "from_line", 1, -1_000_000_000, 1_000_000_000)?;
        if from_line == 0 {
            return Err(ApiError::Validation(
                "from_line counts from 1, or from the end when negative".into(),
            ));
        }
        let lines = int_param(&params, "lines", DEFAULT_LINES, 1, MAX_LINES)?;
        line_page(&state, &id, stream, from_line, lines).await?
    } else {
        let offset = int_param(&params, "offset", 0, 0, i64::MAX)?;
        if offset > log.end_offset {
            return Err(ApiError::Validation(format!(
                "offset is past the end of the log ({} bytes)",
                log.end_offset
            )));
        }
        let limit = int_param(&params, "limit", DEFAULT_PAGE_BYTES, 1, MAX_PAGE_BYTES)?;
        byte_page(&state, &id, stream, offset, limit, log.end_offset).await?
    };
    if let (Some(out), serde_json::Value::Object(page)) = (body.as_object_mut(), page) {
        out.extend(page);
    }
    Ok(warp::reply::json(&body).into_response())
}

/// The bytes `[offset, offset + limit)` as text; a skipped range is its marker, whole; a
/// character cut by the page's end is left to the next page.
async fn byte_page(
    state: &AppState,
    id: &str,
    stream: LogStream,
    offset: i64,
    limit: i64,
    end: i64,
) -> Result<serde_json::Value, ApiError> {
    let to = offset.saturating_add(limit).min(end);
    let chunks = state.store.log_chunks(id, stream, offset, to).await?;
    let hold = if to < end {
        Hold::IfProgress
    } else {
        Hold::Never
    };
    let (out, next) = slice(&chunks, offset, to, hold);
    Ok(json!({
        "offset": offset,
        "next_offset": next,
        "more": next < end,
        "text": to_text(&out),
    }))
}

/// Lines `from_line..` (negative: from the end), at most `lines`, found with the chunks'
/// newline counts so only the chunks that hold them are read.
async fn line_page(
    state: &AppState,
    id: &str,
    stream: LogStream,
    from_line: i64,
    lines: i64,
) -> Result<serde_json::Value, ApiError> {
    let index = state.store.log_index(id, stream).await?;
    let newlines: i64 = index.iter().map(|c| c.newlines).sum();
    let partial = match index.last() {
        Some(last) if last.has_data => {
            let chunks = state
                .store
                .log_chunks(id, stream, last.start, last.start + last.length)
                .await?;
            chunks
                .last()
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.last())
                .is_some_and(|b| *b != b'\n')
        }
        _ => false,
    };
    let total = newlines + partial as i64;
    let first = if from_line < 0 {
        (total + from_line + 1).max(1)
    } else {
        from_line
    };
    let mut text = String::new();
    let mut returned = 0;
    if first <= total {
        // The chunk holding the newline before line `first`, and the one holding the newline
        // that ends the last line wanted.
        let (mut k, mut cum_k, mut j) = (0usize, 0i64, index.len() - 1);
        let mut cum = 0i64;
        let mut found_k = first == 1;
        for (i, c) in index.iter().enumerate() {
            if !found_k && cum + c.newlines >= first - 1 {
                (k, cum_k, found_k) = (i, cum, true);
            }
            if found_k && cum + c.newlines >= first - 1 + lines {
                j = i;
                break;
            }
            cum += c.newlines;
        }
        let chunks = state
            .store
            .log_chunks(id, stream, index[k].start, index[j].start + index[j].length)
            .await?;
        let mut out = Vec::new();
        render(&chunks, index[k].start, &mut out);
        let (range, _) = line_window(&out, first - cum_k, lines);
        let window = &out[range];
        returned = window.iter().filter(|b| **b == b'\n').count() as i64
            + window.last().is_some_and(|b| *b != b'\n') as i64;
        text = to_text(window);
    }
    Ok(json!({
        "from_line": first,
        "lines": returned,
        "next_line": first + returned,
        "total_lines": total,
        "text": text,
    }))
}

async fn download(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    state: AppState,
) -> Response {
    respond(download_inner(id, who, params, state).await)
}

async fn download_inner(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    state: AppState,
) -> Handled {
    let id = job_id(&id)?;
    let stream = stream_param(&params)?;
    readable_job(&who, &id, &state).await?;
    let end = state
        .store
        .log_state(&id, stream)
        .await?
        .map_or(0, |l| l.end_offset);
    // A task reads the chunks a step at a time into a small channel: the body never holds
    // more than a few steps, whatever the log's size.
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let store = state.store.clone();
    let job = id.clone();
    tokio::spawn(async move {
        let mut pos = 0;
        while pos < end {
            let to = (pos + STREAM_STEP_BYTES).min(end);
            let chunks = match store.log_chunks(&job, stream, pos, to).await {
                Ok(chunks) if !chunks.is_empty() => chunks,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(job_id = %job, error = %e, "log download cut short");
                    let _ = tx.send(Err(std::io::Error::other("store"))).await;
                    return;
                }
            };
            let mut out = Vec::new();
            render(&chunks, pos, &mut out);
            pos = chunks.last().map_or(end, Chunk::end);
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = warp::reply::stream(body).into_response();
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}-{stream}.log\"")) {
        headers.insert("content-disposition", v);
    }
    Ok(response)
}

async fn live(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    respond(live_inner(id, who, params, last_event_id, state).await)
}

async fn live_inner(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Handled {
    let id = job_id(&id)?;
    let stream = stream_param(&params)?;
    let start = match last_event_id {
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::Validation("Last-Event-ID must be a byte offset".into()))?,
        None => int_param(&params, "offset", 0, 0, i64::MAX)?,
    };
    let mut rx = log_stream::follow(&state, &who, &id, stream, start, "sse").await?;
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|m| m.sse());
    Ok(super::stream::sse_response(events, state.shutdown.clone()))
}

/// `GET /v1/stream/logs` (admin): every job's output as it arrives, live only (a client
/// resumes one job with `/v1/stream/jobs/{id}/log`); filters `job_ids` (comma-separated) and
/// `user`. A connection that falls behind gets a `lagged` event saying how many appends it
/// missed.
async fn global(who: Identity, params: HashMap<String, String>, state: AppState) -> Response {
    respond(global_inner(who, params, state).await)
}

async fn global_inner(who: Identity, params: HashMap<String, String>, state: AppState) -> Handled {
    let mut rx = follow_all(&state, &who, &params, "sse")?;
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|(name, data)| event(name, &data, None));
    Ok(super::stream::sse_response(events, state.shutdown.clone()))
}

/// Starts following every job's output for `who` (admin), filtered by `params` (`job_ids`,
/// `user`), counted under `protocol` in `GET /v1/stream/status`: `connected`, then `log`
/// messages (`{job_id, stream, offset, text}`) and `lagged` ones, by name. Shared by
/// `/v1/stream/logs` and seed 004's global streams (`super::log_dialects`).
pub(super) fn follow_all(
    state: &AppState,
    who: &Identity,
    params: &HashMap<String, String>,
    protocol: &'static str,
) -> Result<mpsc::Receiver<(&'static str, serde_json::Value)>, ApiError> {
    if !matches!(who, Identity::Open | Identity::Role(Role::Admin)) {
        return Err(ApiError::Forbidden);
    }
    let job_ids: Option<std::collections::HashSet<String>> = match params.get("job_ids") {
        None => None,
        Some(raw) => Some(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(job_id)
                .collect::<Result<_, _>>()?,
        ),
    };
    let user =
        crate::domain::validate::optional_name("user", params.get("user").map(String::as_str))?;
    let mut live = state.store.logs().subscribe_all();
    let registration = state.streams.register("logs", protocol, None);
    let (tx, rx) = mpsc::channel::<(&'static str, serde_json::Value)>(CONNECTION_BUFFER);
    let store = state.store.clone();
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let _registration = registration;
        let hello = json!({"message": "Connected to every job's output"});
        if tx.send(("connected", hello)).await.is_err() {
            return;
        }
        // Owners looked up once per job; bytes of a character split between appends.
        let mut owners: HashMap<String, Option<String>> = HashMap::new();
        let mut pending: HashMap<(String, LogStream), Vec<u8>> = HashMap::new();
        loop {
            let notice = tokio::select! {
                n = live.recv() => n,
                _ = stopped(&mut shutdown) => return,
                _ = tx.closed() => return,
            };
            let n = match notice {
                Ok(n) => n,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    pending.clear();
                    let lag = json!({"missed": missed, "message": "Fell behind; fetch the logs you follow with GET /v1/jobs/{id}/log"});
                    if tx.send(("lagged", lag)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if job_ids.as_ref().is_some_and(|ids| !ids.contains(&n.job_id)) {
                continue;
            }
            if let Some(user) = &user {
                if !owners.contains_key(&n.job_id) {
                    let owner = store.get_job(&n.job_id).await.ok().map(|j| j.user);
                    owners.insert(n.job_id.clone(), owner);
                }
                if owners[&n.job_id].as_ref() != Some(user) {
                    continue;
                }
            }
            let key = (n.job_id.clone(), n.stream);
            // A skipped range drops a held partial character: its rest was skipped too.
            let (mut bytes, start) = if n.skipped > 0 {
                pending.remove(&key);
                (skip_marker(n.skipped).into_bytes(), n.offset)
            } else {
                let held = pending.remove(&key).unwrap_or_default();
                let start = n.offset - held.len() as i64;
                (held, start)
            };
            bytes.extend_from_slice(&n.data);
            let keep = if n.eof {
                bytes.len()
            } else {
                complete_utf8_prefix(&bytes)
            };
            if keep < bytes.len() {
                pending.insert(key, bytes.split_off(keep));
            }
            if bytes.is_empty() {
                continue;
            }
            let data = json!({
                "job_id": n.job_id,
                "stream": n.stream,
                "offset": start,
                "text": to_text(&bytes),
            });
            if tx.send(("log", data)).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
