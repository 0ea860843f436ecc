//! Server-Sent Events: `GET /v1/stream/jobs` (every job, filtered) and `GET /v1/stream/jobs/{id}`
//! (one job, its samples included, closing with `stream_closed` once the job has finished).
//!
//! Each connection gets a pump task that first replays the event log after the client's cursor
//! (`Last-Event-ID`, or `?last_event_id=`; the header wins), then forwards live events from the
//! [`EventFeed`](crate::events::EventFeed), skipping ids it already sent: no gap, no duplicate.
//! The pump writes into a small bounded channel, so a client that does not read holds at most
//! that many events; the feed itself never waits for anyone. A pump that falls behind the feed
//! replays from the log again (nothing is lost); if it falls behind twice in a minute the
//! connection is closed and the client resumes with its `Last-Event-ID`. A cursor older than the
//! log's retention gets a `reset` event: the client should refetch state through REST.

use super::error::{respond, ApiError};
use super::request::job_id;
use super::AppState;
use crate::domain::validate;
use crate::domain::JobState;
use crate::store::{Store, StoredEvent};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use warp::reply::{Reply, Response};
use warp::sse::Event;

/// Events buffered per connection between its pump and the socket.
pub(super) const CONNECTION_BUFFER: usize = 64;
/// Log rows read per query while replaying.
const REPLAY_BATCH: i64 = 500;
/// Silence after which a `: ping` comment is sent.
const PING_AFTER: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to EventSource clients.
const RETRY_HINT: Duration = Duration::from_secs(3);
/// A second fall-behind within this window closes the connection.
const LAG_WINDOW: Duration = Duration::from_secs(60);

/// Open stream connections, by stream and protocol and by job, for `GET /v1/stream/status`.
#[derive(Clone, Default)]
pub struct StreamRegistry {
    counts: Arc<std::sync::Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    by_stream: std::collections::BTreeMap<(&'static str, &'static str), usize>,
    by_job: std::collections::BTreeMap<String, usize>,
}

/// Counts one open connection until dropped.
pub(super) struct Registered {
    registry: StreamRegistry,
    key: (&'static str, &'static str),
    job: Option<String>,
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(
        &self,
        stream: &'static str,
        protocol: &'static str,
        job: Option<String>,
    ) -> Registered {
        let mut counts = self.lock();
        *counts.by_stream.entry((stream, protocol)).or_default() += 1;
        if let Some(job) = &job {
            *counts.by_job.entry(job.clone()).or_default() += 1;
        }
        Registered {
            registry: self.clone(),
            key: (stream, protocol),
            job,
        }
    }

    /// Open connections per (stream, protocol), for `/metrics`.
    pub fn connection_counts(&self) -> Vec<(&'static str, &'static str, usize)> {
        let counts = self.lock();
        counts
            .by_stream
            .iter()
            .map(|((stream, protocol), n)| (*stream, *protocol, *n))
            .collect()
    }

    /// `{"connections", "streams": {stream: {protocol: n}}, "jobs": {job_id: n}}`.
    pub fn snapshot(&self) -> Value {
        let counts = self.lock();
        let mut streams = serde_json::Map::new();
        for ((stream, protocol), n) in &counts.by_stream {
            let entry = streams
                .entry(stream.to_string())
                .or_insert_with(|| json!({}));
            entry[*protocol] = json!(n);
        }
        json!({
            "connections": counts.by_stream.values().sum::<usize>(),
            "streams": streams,
            "jobs": counts.by_job,
        })
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut counts = self.registry.lock();
        if let Some(n) = counts.by_stream.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.by_stream.remove(&self.key);
            }
        }
        if let Some(job) = &self.job {
            if let Some(n) = counts.by_job.get_mut(job) {
                *n -= 1;
                if *n == 0 {
                    counts.by_job.remove(job);
                }
            }
        }
    }
}

/// `GET /v1/stream/status` (admin): open connections per stream and protocol, and per job.
pub async fn status(state: AppState) -> Response {
    warp::reply::json(&state.streams.snapshot()).into_response()
}

/// `POST /v1/stream/tickets` (reader): a single-use ticket, valid for 60 s, that the streams
/// accept as `?ticket=` (for EventSource, which cannot send headers).
pub async fn ticket(state: AppState) -> Response {
    let ticket = state.tickets.issue();
    let ttl = super::auth::TICKET_TTL;
    let expires_at =
        crate::domain::now_micros() + chrono::Duration::from_std(ttl).unwrap_or_default();
    let body =
        json!({ "ticket": ticket, "expires_in_seconds": ttl.as_secs(), "expires_at": expires_at });
    warp::reply::with_status(warp::reply::json(&body), warp::http::StatusCode::CREATED)
        .into_response()
}

/// Which events a connection wants.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamFilter {
    user: Option<String>,
    states: Vec<JobState>,
    partition: Option<String>,
    node: Option<String>,
    job_ids: Vec<String>,
    exclude_samples: bool,
}

fn comma_list(params: &HashMap<String, String>, key: &str) -> Vec<String> {
    params
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl StreamFilter {
    pub(super) fn parse(
        params: &HashMap<String, String>,
        exclude_samples_default: bool,
    ) -> Result<StreamFilter, ApiError> {
        let states = comma_list(params, "states")
            .iter()
            .map(|s| {
                s.parse::<JobState>()
                    .map_err(|_| ApiError::Validation(format!("Invalid job state {s:?} in states")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let job_ids = comma_list(params, "job_ids");
        let job_ids = validate::name_list("job_ids", &job_ids, 1000)?;
        let exclude_samples = match params.get("exclude_samples").map(|s| s.trim()) {
            None | Some("") => exclude_samples_default,
            Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(_) => {
                return Err(ApiError::Validation(
                    "exclude_samples must be true or false".into(),
                ))
            }
        };
        Ok(StreamFilter {
            user: validate::optional_name("user", params.get("user").map(String::as_str))?,
            states,
            partition: validate::optional_name(
                "partition",
                params.get("partition").map(String::as_str),
            )?,
            node: validate::optional_name("node", params.get("node").map(String::as_str))?,
            job_ids,
            exclude_samples,
        })
    }

    pub(super) fn matches(&self, event: &StoredEvent) -> bool {
        // Node (and other non-job) events have their own streams.
        if event.job_id.is_none() {
            return false;
        }
        if self.exclude_samples && event.kind == "job_sample" {
            return false;
        }
        let job = &event.payload["job"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        if !self.job_ids.is_empty()
            && !event
                .job_id
                .as_ref()
                .is_some_and(|id| self.job_ids.contains(id))
        {
            return false;
        }
        if let Some(user) = &self.user {
            if text(&job["user"]).as_ref() != Some(user) {
                return false;
            }
        }
        if !self.states.is_empty() && !self.states.iter().any(|s| job["state"] == s.as_str()) {
            return false;
        }
        if let Some(partition) = &self.partition {
            if text(&job["scheduler"]["partition"]).as_ref() != Some(partition) {
                return false;
            }
        }
        if let Some(node) = &self.node {
            let on_node = job["nodes"]
                .as_array()
                .is_some_and(|nodes| nodes.iter().any(|n| n == node.as_str()));
            if !on_node {
                return false;
            }
        }
        true
    }
}

/// The seeds' envelope: `{"type", "stream", "data", "timestamp"}`.
fn envelope(
    kind: &str,
    stream: &str,
    data: Value,
    timestamp: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({ "type": kind, "stream": stream, "data": data, "timestamp": timestamp })
}

/// One message of a stream, before it is framed as an SSE event or a WebSocket message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outgoing {
    /// The event-log id (for control messages: the cursor at that point).
    pub id: i64,
    /// The SSE event name: `connected`, `job_event`, `job_sample`, `reset`, `stream_closed`, `error`.
    pub name: &'static str,
    /// The envelope `{"type", "stream", "data", "timestamp"}`.
    pub envelope: Value,
}

impl Outgoing {
    fn sse(self) -> Event {
        let event = Event::default()
            .id(self.id.to_string())
            .event(self.name)
            .data(self.envelope.to_string());
        if self.name == "connected" {
            event.retry(RETRY_HINT)
        } else {
            event
        }
    }
}

fn log_event(event: &StoredEvent, stream: &str) -> Outgoing {
    let name = if event.kind == "job_sample" {
        "job_sample"
    } else {
        "job_event"
    };
    Outgoing {
        id: event.id,
        name,
        envelope: envelope(
            &event.kind,
            stream,
            event.payload.clone(),
            event.occurred_at,
        ),
    }
}

fn control_event(name: &'static str, cursor: i64, stream: &str, data: Value) -> Outgoing {
    Outgoing {
        id: cursor,
        name,
        envelope: envelope(name, stream, data, crate::domain::now_micros()),
    }
}

/// The client's resume cursor: the `Last-Event-ID` header, else `?last_event_id=`.
pub(super) fn cursor(
    header: Option<String>,
    params: &HashMap<String, String>,
) -> Result<Option<i64>, ApiError> {
    match header.or_else(|| params.get("last_event_id").cloned()) {
        None => Ok(None),
        Some(raw) if raw.trim().is_empty() => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::InvalidRequest(
                    "Last-Event-ID must be an event id (a non-negative integer)".into(),
                )
            }),
    }
}

/// What one connection streams.
pub(super) struct Subscription {
    pub(super) stream: &'static str,
    pub(super) filter: StreamFilter,
    /// For `/v1/stream/jobs/{id}`: close after the job's terminal event.
    pub(super) single_job: Option<String>,
    /// For `/v1/stream/cluster`: how often to send a `status` event.
    pub(super) status_every: Option<Duration>,
    /// Counts the connection in `GET /v1/stream/status` while it is open.
    pub(super) _registration: Option<Registered>,
}

pub async fn jobs(
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    respond(open_filtered(&params, last_event_id, state, "jobs", None))
}

/// Default period of the cluster stream's `status` event.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// `GET /v1/stream/cluster`: a `status` event every `interval_seconds` (default 5) with the
/// cluster at a glance, plus the same change events as `/v1/stream/jobs`.
pub async fn cluster(
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let every = super::request::int_param(
        &params,
        "interval_seconds",
        STATUS_EVERY.as_secs() as i64,
        1,
        3600,
    );
    let result = every.and_then(|every| {
        let every = Duration::from_secs(every as u64);
        open_filtered(&params, last_event_id, state, "cluster", Some(every))
    });
    respond(result)
}

/// A stream of all jobs' changes under the query's filters and cursor (`jobs`, `cluster`).
fn open_filtered(
    params: &HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
    stream: &'static str,
    status_every: Option<Duration>,
) -> Result<Response, ApiError> {
    let filter = StreamFilter::parse(params, true)?;
    let start = cursor(last_event_id, params)?;
    let sub = Subscription {
        stream,
        filter,
        single_job: None,
        status_every,
        _registration: None,
    };
    Ok(open(state, sub, start))
}

/// The cluster at a glance: jobs by state, GPUs in use, and how far this connection is behind
/// the event log. Nodes join when node reports exist.
async fn cluster_status(store: &Store, cursor: i64) -> Value {
    let (jobs, running_gpus) = match store.job_counts().await {
        Ok(counts) => counts,
        Err(_) => return json!({ "error": "database unavailable" }),
    };
    let last_event_id = store.last_event_id().await.unwrap_or(cursor);
    json!({
        "jobs_by_state": jobs,
        "running_gpus": running_gpus,
        "last_event_id": last_event_id,
        "delivery_lag_events": (last_event_id - cursor).max(0),
    })
}

pub async fn job(
    id: String,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let result = job_id(&id).and_then(|id| {
        let filter = StreamFilter {
            job_ids: vec![id.clone()],
            exclude_samples: false,
            ..StreamFilter::default()
        };
        let start = cursor(last_event_id, &params)?;
        Ok(open(
            state,
            Subscription {
                stream: "job",
                filter,
                single_job: Some(id),
                status_every: None,
                _registration: None,
            },
            start,
        ))
    });
    respond(result)
}

/// Registers `sub` under `protocol` in the connection registry and returns its pump. The feed
/// is subscribed here, before the pump reads the log, so nothing committed in between is missed.
pub(super) fn pump_for(
    state: &AppState,
    sub: Subscription,
    protocol: &'static str,
    start: Option<i64>,
    tx: mpsc::Sender<Outgoing>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let registration = state
        .streams
        .register(sub.stream, protocol, sub.single_job.clone());
    let sub = Subscription {
        _registration: Some(registration),
        ..sub
    };
    let live = state.events.subscribe();
    pump(
        state.store.clone(),
        state.events.head(),
        live,
        sub,
        start,
        tx,
        state.shutdown.clone(),
    )
}

/// Starts the pump and returns the SSE response.
fn open(state: AppState, sub: Subscription, start: Option<i64>) -> Response {
    let (tx, rx) = mpsc::channel::<Outgoing>(CONNECTION_BUFFER);
    let shutdown = state.shutdown.clone();
    tokio::spawn(pump_for(&state, sub, "sse", start, tx));
    let events =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(|message| Ok::<Event, Infallible>(message.sse()))
            .take_until(async move {
                let mut shutdown = shutdown;
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
    let body = warp::sse::keep_alive()
        .interval(PING_AFTER)
        .text("ping")
        .stream(events);
    let mut response = warp::sse::reply(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        "x-accel-buffering",
        warp::http::HeaderValue::from_static("no"),
    );
    response
}

/// Why a pump stopped early.
enum Stop {
    /// The client went away or the server is shutting down.
    Gone,
}

async fn send(tx: &mpsc::Sender<Outgoing>, event: Outgoing) -> Result<(), Stop> {
    tx.send(event).await.map_err(|_| Stop::Gone)
}

async fn pump(
    store: Store,
    head: i64,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    sub: Subscription,
    start: Option<i64>,
    tx: mpsc::Sender<Outgoing>,
    shutdown: watch::Receiver<bool>,
) {
    // `sub` holds the connection's registration; it is dropped (uncounted) when this returns.
    let _ = run_pump(&store, head, &mut live, &sub, start, &tx, shutdown).await;
}

async fn run_pump(
    store: &Store,
    head: i64,
    live: &mut broadcast::Receiver<Arc<StoredEvent>>,
    sub: &Subscription,
    start: Option<i64>,
    tx: &mpsc::Sender<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Stop> {
    // Without a cursor the stream starts "now": after the newest committed event (the feed's
    // head may trail the log by a moment; an event at or below the cursor is never sent).
    let mut cursor = match start {
        Some(cursor) => cursor,
        None => store.last_event_id().await.unwrap_or(head).max(head),
    };
    let connected = json!({ "resumed_from": start, "filters": format!("{:?}", sub.filter) });
    send(
        tx,
        control_event("connected", cursor, sub.stream, connected),
    )
    .await?;

    if start.is_some() && !cursor_is_retained(store, cursor).await {
        let reset = json!({ "reason": "the requested events are no longer retained; refetch state through the REST API" });
        let now_head = store.last_event_id().await.unwrap_or(head);
        cursor = now_head.max(head);
        send(tx, control_event("reset", cursor, sub.stream, reset)).await?;
    }
    cursor = replay(store, cursor, sub, tx).await?;
    if close_if_finished(store, sub, cursor, tx).await? {
        return Ok(());
    }

    let mut last_lag: Option<Instant> = None;
    let mut status = sub.status_every.map(|every| {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    });
    loop {
        let received = tokio::select! {
            r = live.recv() => Some(r),
            _ = shutdown.wait_for(|stop| *stop) => return Err(Stop::Gone),
            _ = tx.closed() => return Err(Stop::Gone),
            _ = async { status.as_mut()?.tick().await; Some(()) }, if status.is_some() => None,
        };
        let Some(received) = received else {
            // the status period of a cluster stream
            let data = cluster_status(store, cursor).await;
            send(tx, control_event("status", cursor, sub.stream, data)).await?;
            continue;
        };
        match received {
            Ok(event) => {
                if event.id <= cursor {
                    continue;
                }
                cursor = event.id;
                if sub.filter.matches(&event) {
                    send(tx, log_event(&event, sub.stream)).await?;
                    if is_terminal_for(sub, &event) {
                        send_closed(tx, cursor, sub, "job finished").await?;
                        return Ok(());
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                if last_lag.is_some_and(|t| t.elapsed() < LAG_WINDOW) {
                    tracing::info!(
                        missed,
                        stream = sub.stream,
                        "closing a stream that keeps falling behind"
                    );
                    return Err(Stop::Gone);
                }
                last_lag = Some(Instant::now());
                cursor = replay(store, cursor, sub, tx).await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
        }
    }
}

/// Whether the log still holds every event after `cursor`.
async fn cursor_is_retained(store: &Store, cursor: i64) -> bool {
    match store.events_after(0, 1).await {
        Ok(first) => match first.first() {
            Some(oldest) => cursor + 1 >= oldest.id,
            // An empty log: retained only if the client has not seen anything we lost.
            None => cursor <= store.last_event_id().await.unwrap_or(0),
        },
        Err(_) => true,
    }
}

/// Sends every matching logged event after `cursor`; returns the new cursor.
async fn replay(
    store: &Store,
    mut cursor: i64,
    sub: &Subscription,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<i64, Stop> {
    loop {
        let page = match store.events_after(cursor, REPLAY_BATCH).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "stream replay could not read the event log");
                let _ = send(
                    tx,
                    control_event(
                        "error",
                        cursor,
                        sub.stream,
                        json!({"reason": "event log unavailable"}),
                    ),
                )
                .await;
                return Err(Stop::Gone);
            }
        };
        let full = page.len() as i64 == REPLAY_BATCH;
        for event in page {
            cursor = event.id;
            if sub.filter.matches(&event) {
                send(tx, log_event(&event, sub.stream)).await?;
            }
        }
        if !full {
            return Ok(cursor);
        }
    }
}

/// The last message of a single-job stream.
async fn send_closed(
    tx: &mpsc::Sender<Outgoing>,
    cursor: i64,
    sub: &Subscription,
    reason: &str,
) -> Result<(), Stop> {
    let closed = control_event(
        "stream_closed",
        cursor,
        sub.stream,
        json!({ "reason": reason }),
    );
    send(tx, closed).await
}

fn is_terminal_for(sub: &Subscription, event: &StoredEvent) -> bool {
    sub.single_job.is_some() && matches!(event.kind.as_str(), "job_finished" | "job_deleted")
}

/// For a single-job stream: after the replay, a job that is already finished (or gone) ends the
/// stream with `stream_closed`.
async fn close_if_finished(
    store: &Store,
    sub: &Subscription,
    cursor: i64,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<bool, Stop> {
    let Some(id) = &sub.single_job else {
        return Ok(false);
    };
    let reason = match store.get_job(id).await {
        Ok(job) if job.state.is_terminal() => "job finished",
        Ok(_) => return Ok(false),
        Err(crate::store::StoreError::NotFound) => "job not found",
        Err(_) => return Ok(false),
    };
    send_closed(tx, cursor, sub, reason).await?;
    Ok(true)
}
