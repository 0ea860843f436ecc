//! Server-Sent Events: `GET /v1/stream/jobs` (every job, filtered), `GET /v1/stream/jobs/{id}`
//! (one job, its samples included, closing with `stream_closed` once the job has finished),
//! `GET /v1/stream/nodes` (node state and usage), `GET /v1/stream/partitions` (Slurm's
//! partitions) and `GET /v1/stream/cluster` (a periodic status plus the job changes).
//!
//! Each connection gets a pump task that first replays the event log after the client's cursor
//! (`Last-Event-ID`, or `?last_event_id=`; the header wins), then forwards live events from the
//! [`EventFeed`], skipping ids it already sent: no gap, no duplicate. A cursor older than the
//! log's retention gets a `reset` event: the client should refetch state through REST.
//!
//! **Slow clients.** The pump writes into a small bounded channel ([`CONNECTION_BUFFER`]), so a
//! client that does not read holds at most that many messages here; the feed never waits for
//! anyone. Once such a client has fallen behind by more than the feed keeps, it has *lagged*:
//! the pump drops its backlog and sends `reset` (with the last id it did deliver, so the client
//! may also reconnect from there and replay the gap from the log), then continues live. A second
//! lag within [`LAG_WINDOW`] ends the stream. Lagging clients are never replayed from the log
//! by the server itself: after a burst, thousands of them doing so at once would load the
//! database for nothing. What the socket holds beyond the channel (hyper's write queue, the
//! kernel's send buffer) is bounded too; a peer that stops reading altogether is dropped by the
//! kernel (`TCP_USER_TIMEOUT`, see [`super::socket`]).
//!
//! Messages are framed once per event and stream name, not once per subscriber (see
//! [`FeedEvent::encoded`]).

use super::error::{respond, ApiError};
use super::identity::Identity;
use super::request::job_id;
pub(super) use super::stream_filter::StreamFilter;
use super::stream_filter::{reject_unknown, JOB_PARAMS, NODE_PARAMS, PARTITION_PARAMS};
use super::AppState;
use crate::events::{EventFeed, EventKind, FeedEvent};
use crate::store::Store;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use warp::reply::{Reply, Response};
use warp::sse::Event;

/// Messages buffered per connection between its pump and the socket.
pub(super) const CONNECTION_BUFFER: usize = 64;
/// Log rows read per query while replaying.
const REPLAY_BATCH: i64 = 500;
/// Silence after which a `: ping` comment is sent.
const PING_AFTER: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to EventSource clients.
const RETRY_HINT: Duration = Duration::from_secs(3);
/// A second lag within this window closes the connection.
const LAG_WINDOW: Duration = Duration::from_secs(60);
/// While a send waits for a client to read, how often the pump checks whether it has lagged.
const LAG_CHECK: Duration = Duration::from_millis(100);
/// Catch-up passes over the log before going live (each pass covers what was committed during
/// the previous one); a client still behind after them is handled as lagging.
const CATCH_UP_PASSES: usize = 3;
/// How long one cluster status is shared by every `/v1/stream/cluster` connection.
const STATUS_MAX_AGE: Duration = Duration::from_secs(1);

/// What the open streams share: connection counts by stream and protocol and by job (for
/// `GET /v1/stream/status`), and the cluster status every `/v1/stream/cluster` connection sends.
#[derive(Clone, Default)]
pub struct StreamRegistry {
    counts: Arc<std::sync::Mutex<Counts>>,
    status: Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>,
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

    /// The cluster at a glance, computed at most once per [`STATUS_MAX_AGE`] for all
    /// connections: concurrent callers wait for the one computing it.
    async fn cluster_status(&self, store: &Store) -> Value {
        let mut cached = self.status.lock().await;
        if let Some((at, status)) = cached.as_ref() {
            if at.elapsed() < STATUS_MAX_AGE {
                return status.clone();
            }
        }
        let status = compute_cluster_status(store).await;
        *cached = Some((Instant::now(), status.clone()));
        status
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
pub async fn ticket(who: Identity, state: AppState) -> Response {
    let ticket = state.tickets.issue(who);
    let ttl = super::auth::TICKET_TTL;
    let expires_at =
        crate::domain::now_micros() + chrono::Duration::from_std(ttl).unwrap_or_default();
    let body =
        json!({ "ticket": ticket, "expires_in_seconds": ttl.as_secs(), "expires_at": expires_at });
    warp::reply::with_status(warp::reply::json(&body), warp::http::StatusCode::CREATED)
        .into_response()
}

/// The stream names, each with its own cached encoding of an event (the envelope names the
/// stream).
const STREAM_NAMES: [&str; crate::events::ENCODINGS] =
    ["jobs", "job", "cluster", "nodes", "partitions"];

fn encoding_slot(stream: &str) -> usize {
    STREAM_NAMES
        .iter()
        .position(|name| *name == stream)
        .unwrap_or(0)
}

/// The seeds' envelope: `{"type", "stream", "data", "timestamp"}`, serialised from borrowed
/// parts (the payload is not copied).
#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    stream: &'a str,
    data: &'a Value,
    timestamp: chrono::DateTime<chrono::Utc>,
}

fn envelope_text(
    kind: &str,
    stream: &str,
    data: &Value,
    timestamp: chrono::DateTime<chrono::Utc>,
) -> String {
    let envelope = Envelope {
        kind,
        stream,
        data,
        timestamp,
    };
    // Serialising a `Value` with string keys cannot fail.
    serde_json::to_string(&envelope).unwrap_or_else(|_| String::from("{}"))
}

/// One message of a stream, before it is framed as an SSE event or a WebSocket message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outgoing {
    /// The event-log id (for control messages: the cursor at that point).
    pub id: i64,
    /// The SSE event name: `connected`, `job_event`, `job_sample`, `node_event`,
    /// `partition_event`, `status`,
    /// `reset`, `stream_closed`, `error`.
    pub name: &'static str,
    /// The envelope as JSON text; shared by every subscriber of a logged event.
    pub json: Arc<str>,
}

impl Outgoing {
    fn sse(self) -> Event {
        let event = Event::default()
            .id(self.id.to_string())
            .event(self.name)
            .data(&*self.json);
        if self.name == "connected" {
            event.retry(RETRY_HINT)
        } else {
            event
        }
    }

    /// The envelope with the event `id` and the WebSocket `subscription` added. The envelope is
    /// a JSON object made here, so the two fields are spliced in before its closing brace.
    pub(super) fn ws_text(&self, subscription: &str) -> String {
        let body = self.json.strip_suffix('}').unwrap_or(&self.json);
        let subscription = Value::from(subscription);
        format!(r#"{body},"id":{},"subscription":{subscription}}}"#, self.id)
    }
}

/// The SSE event name of a logged event.
fn event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::JobSample => "job_sample",
        EventKind::NodeUpdated => "node_event",
        EventKind::PartitionUpdated | EventKind::PartitionDeleted => "partition_event",
        EventKind::JobCreated
        | EventKind::JobUpdated
        | EventKind::JobFinished
        | EventKind::JobDeleted
        | EventKind::JobReport => "job_event",
    }
}

fn log_event(event: &FeedEvent, stream: &str) -> Outgoing {
    let json = event.encoded(encoding_slot(stream), |e| {
        envelope_text(e.kind.as_str(), stream, &e.payload, e.occurred_at)
    });
    Outgoing {
        id: event.id,
        name: event_name(event.kind),
        json,
    }
}

fn control_event(name: &'static str, cursor: i64, stream: &str, data: Value) -> Outgoing {
    Outgoing {
        id: cursor,
        name,
        json: envelope_text(name, stream, &data, crate::domain::now_micros()).into(),
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
    /// For a single job's stream opened without a cursor: send the job as it is now (a
    /// `job_event` of type `job_state`) before anything else, as seed 002's streams do, so a
    /// client that joins after the job ended still learns how it ended.
    pub(super) current_state_first: bool,
    /// Counts the connection in `GET /v1/stream/status` while it is open.
    pub(super) _registration: Option<Registered>,
}

impl Subscription {
    pub(super) fn new(stream: &'static str, filter: StreamFilter) -> Subscription {
        Subscription {
            stream,
            filter,
            single_job: None,
            status_every: None,
            current_state_first: false,
            _registration: None,
        }
    }
}

pub async fn jobs(
    who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let see_all = super::jobs::users_see_all(&state);
    let result = reject_unknown(&params, &[JOB_PARAMS])
        .and_then(|()| StreamFilter::parse(&params, true))
        .and_then(|filter| {
            let filter = filter.scoped(&who, see_all);
            let start = cursor(last_event_id, &params)?;
            Ok(open(state, Subscription::new("jobs", filter), start))
        });
    respond(result)
}

/// `GET /v1/stream/nodes`: `node_updated` events, filtered by `node_names`, `states`,
/// `partition`.
pub async fn nodes(
    _who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let result = reject_unknown(&params, &[NODE_PARAMS])
        .and_then(|()| StreamFilter::parse_nodes(&params))
        .and_then(|filter| {
            let start = cursor(last_event_id, &params)?;
            Ok(open(state, Subscription::new("nodes", filter), start))
        });
    respond(result)
}

/// `GET /v1/stream/partitions`: `partition_updated` and `partition_deleted` events, filtered by
/// `partition_names` and `states`.
pub async fn partitions(
    _who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let result = reject_unknown(&params, &[PARTITION_PARAMS])
        .and_then(|()| StreamFilter::parse_partitions(&params))
        .and_then(|filter| {
            let start = cursor(last_event_id, &params)?;
            Ok(open(state, Subscription::new("partitions", filter), start))
        });
    respond(result)
}

/// Default period of the cluster stream's `status` event.
pub(super) const STATUS_EVERY: Duration = Duration::from_secs(5);

/// `GET /v1/stream/cluster`: a `status` event every `interval_seconds` (default 5) with the
/// cluster at a glance, plus the same change events as `/v1/stream/jobs`.
pub async fn cluster(
    who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let see_all = super::jobs::users_see_all(&state);
    let result = (|| {
        reject_unknown(&params, &[JOB_PARAMS, &["interval_seconds"]])?;
        let every = super::request::int_param(
            &params,
            "interval_seconds",
            STATUS_EVERY.as_secs() as i64,
            1,
            3600,
        )?;
        let filter = StreamFilter::parse(&params, true)?.scoped(&who, see_all);
        let start = cursor(last_event_id, &params)?;
        let sub = Subscription {
            status_every: Some(Duration::from_secs(every as u64)),
            ..Subscription::new("cluster", filter)
        };
        Ok(open(state, sub, start))
    })();
    respond(result)
}

/// The cluster at a glance, shared by all connections: jobs and nodes by state (every state
/// present), GPUs held by running jobs, stale nodes (agent silent), and the newest event id.
async fn compute_cluster_status(store: &Store) -> Value {
    let (jobs, running_gpus) = match store.job_counts().await {
        Ok(counts) => counts,
        Err(_) => return json!({ "error": "database unavailable" }),
    };
    // A node's state depends on its last report's age, so it is derived at read time.
    let nodes = match store.list_nodes().await {
        Ok(nodes) => nodes,
        Err(_) => return json!({ "error": "database unavailable" }),
    };
    let mut nodes_by_state: std::collections::BTreeMap<&str, usize> = crate::domain::NodeState::ALL
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    for node in &nodes {
        *nodes_by_state.entry(node.state.as_str()).or_default() += 1;
    }
    let last_event_id = store.last_event_id().await.ok();
    json!({
        "jobs_by_state": jobs,
        "nodes_by_state": nodes_by_state,
        "nodes_total": nodes.len(),
        "stale_nodes": nodes.iter().filter(|n| n.stale).count(),
        "running_gpus": running_gpus,
        "last_event_id": last_event_id,
    })
}

/// The shared status plus how far this connection is behind the event log.
async fn cluster_status(state: &StreamRegistry, store: &Store, cursor: i64) -> Value {
    let mut status = state.cluster_status(store).await;
    if let Some(last) = status["last_event_id"].as_i64() {
        status["delivery_lag_events"] = json!((last - cursor).max(0));
    }
    status
}

pub async fn job(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    last_event_id: Option<String>,
    state: AppState,
) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    // A user's stream of someone else's job is a missing job; the filter below keeps it so.
    if who.user().is_some() {
        if let Err(e) = super::jobs::visible_job(&who, &id, false, &state).await {
            return e.into_response();
        }
    }
    let result = (|| {
        reject_unknown(&params, &[])?;
        let start = cursor(last_event_id, &params)?;
        let sub = Subscription {
            single_job: Some(id.clone()),
            current_state_first: start.is_none(),
            ..Subscription::new(
                "job",
                StreamFilter::single_job(id, false).scoped(&who, false),
            )
        };
        Ok(open(state, sub, start))
    })();
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
    let pump = Pump {
        store: state.store.clone(),
        feed: state.events.clone(),
        registry: state.streams.clone(),
        live,
        sub,
        tx,
        cursor: 0,
        last_lag: None,
        report_wait: state.report_grace * 2 + REPORT_MARGIN,
        closes_at: None,
    };
    pump.run(start, state.shutdown.clone())
}

/// Starts the pump and returns the SSE response.
fn open(state: AppState, sub: Subscription, start: Option<i64>) -> Response {
    let (tx, rx) = mpsc::channel::<Outgoing>(CONNECTION_BUFFER);
    let shutdown = state.shutdown.clone();
    tokio::spawn(pump_for(&state, sub, "sse", start, tx));
    let events =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(|message| message.sse());
    sse_response(events, shutdown)
}

/// The SSE response of every stream route: `events` until the server shuts down, a `ping`
/// comment after [`PING_AFTER`] of quiet, and headers that keep caches and proxies from
/// holding events back.
pub(super) fn sse_response(
    events: impl futures_util::Stream<Item = Event> + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) -> Response {
    let events = events.map(Ok::<Event, Infallible>).take_until(async move {
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

/// Why a pump stopped early, or must change course.
enum Stop {
    /// The client went away or the server is shutting down.
    Gone,
    /// The feed overwrote events this connection had not taken yet.
    Lagged,
}

/// One connection's pump: replay, then live events, into the connection's channel.
struct Pump {
    store: Store,
    feed: EventFeed,
    registry: StreamRegistry,
    live: broadcast::Receiver<Arc<FeedEvent>>,
    /// Holds the connection's registration; dropped (uncounted) when the pump ends.
    sub: Subscription,
    tx: mpsc::Sender<Outgoing>,
    /// Id of the last event this connection has been given (or skipped as not matching).
    cursor: i64,
    last_lag: Option<Instant>,
    /// A single job's stream after its `job_finished`: how long it waits for `job_report`.
    report_wait: Duration,
    /// Set at that `job_finished`: when the stream closes without the report.
    closes_at: Option<tokio::time::Instant>,
}

impl Pump {
    async fn run(mut self, start: Option<i64>, shutdown: watch::Receiver<bool>) {
        match self.catch_up(start).await {
            Ok(true) => {}
            Ok(false) | Err(Stop::Gone) => return,
            Err(Stop::Lagged) => {
                if !matches!(self.lagged().await, Ok(true)) {
                    return;
                }
            }
        }
        self.live_loop(shutdown).await;
    }

    /// Sends `message`. With `check_lag`, a send that has to wait for the client gives up as
    /// soon as the feed has overwritten events this connection had not taken.
    async fn send(&self, message: Outgoing, check_lag: bool) -> Result<(), Stop> {
        let message = match self.tx.try_send(message) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        if !check_lag {
            return self.tx.send(message).await.map_err(|_| Stop::Gone);
        }
        let reserve = self.tx.reserve();
        tokio::pin!(reserve);
        let mut check = tokio::time::interval(LAG_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                permit = &mut reserve => {
                    permit.map_err(|_| Stop::Gone)?.send(message);
                    return Ok(());
                }
                _ = check.tick() => {
                    if self.feed.has_lagged(&self.live) {
                        return Err(Stop::Lagged);
                    }
                }
            }
        }
    }

    /// `connected`, a `reset` for a cursor past retention, then the log after the cursor.
    /// `Ok(false)`: the stream is complete (a finished job's stream).
    async fn catch_up(&mut self, start: Option<i64>) -> Result<bool, Stop> {
        // Without a cursor the stream starts "now": after the newest committed event (the
        // feed's head may trail the log by a moment; an event at or below the cursor is never
        // sent).
        let head = self.feed.head();
        self.cursor = match start {
            Some(cursor) => cursor,
            None => self.store.last_event_id().await.unwrap_or(head).max(head),
        };
        let connected = json!({ "resumed_from": start, "filters": self.sub.filter.describe() });
        let stream = self.sub.stream;
        self.send(
            control_event("connected", self.cursor, stream, connected),
            false,
        )
        .await?;

        if start.is_some() && !cursor_is_retained(&self.store, self.cursor).await {
            let reset = json!({ "reason": "the requested events are no longer retained; refetch state through the REST API" });
            let now_head = self.store.last_event_id().await.unwrap_or(head);
            self.cursor = now_head.max(head);
            self.send(control_event("reset", self.cursor, stream, reset), false)
                .await?;
        }
        if self.sub.current_state_first {
            self.send_current_state().await?;
        }
        // The log, until a pass ends with the live receiver still holding everything since.
        for pass in 0.. {
            self.replay().await?;
            if !self.feed.has_lagged(&self.live) {
                break;
            }
            if pass + 1 == CATCH_UP_PASSES {
                return Err(Stop::Lagged);
            }
            // Everything the feed sent so far is in the log: read it there, live from here.
            self.live = self.live.resubscribe();
        }
        Ok(!self.close_if_finished().await?)
    }

    async fn live_loop(&mut self, mut shutdown: watch::Receiver<bool>) {
        let mut status = self.sub.status_every.map(|every| {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticker
        });
        loop {
            let mut expired = false;
            let received = tokio::select! {
                r = self.live.recv() => Some(r),
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = self.tx.closed() => return,
                _ = async { status.as_mut()?.tick().await; Some(()) }, if status.is_some() => None,
                _ = sleep_until(self.closes_at) => {
                    expired = true;
                    None
                }
            };
            if expired {
                // The report did not come (the server restarted, or it could not be made).
                let _ = self.send_closed("job finished").await;
                return;
            }
            let step = match received {
                // the status period of a cluster stream
                None => self.send_status().await.map(|()| true),
                Some(Ok(event)) => self.deliver(&event).await,
                Some(Err(broadcast::error::RecvError::Lagged(_))) => Err(Stop::Lagged),
                Some(Err(broadcast::error::RecvError::Closed)) => Err(Stop::Gone),
            };
            let lagged = match step {
                Ok(true) => continue,
                Ok(false) | Err(Stop::Gone) => return,
                Err(Stop::Lagged) => self.lagged().await,
            };
            match lagged {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    async fn send_status(&self) -> Result<(), Stop> {
        let data = cluster_status(&self.registry, &self.store, self.cursor).await;
        let status = control_event("status", self.cursor, self.sub.stream, data);
        self.send(status, true).await
    }

    /// One live event; `Ok(false)` when the stream is complete.
    async fn deliver(&mut self, event: &FeedEvent) -> Result<bool, Stop> {
        if event.id <= self.cursor {
            return Ok(true);
        }
        let matched = self.sub.filter.matches(event);
        if matched {
            self.send(log_event(event, self.sub.stream), true).await?;
        }
        // Only now: a lagged send did not deliver it.
        self.cursor = event.id;
        if matched && self.sub.single_job.is_some() {
            match event.kind {
                // The report comes after a grace: wait for it (or the deadline).
                EventKind::JobFinished => {
                    self.closes_at = Some(tokio::time::Instant::now() + self.report_wait);
                }
                EventKind::JobReport | EventKind::JobDeleted => {
                    self.send_closed("job finished").await?;
                    return Ok(false);
                }
                _ => {}
            }
        }
        Ok(true)
    }

    /// The connection fell behind the feed. The first time in [`LAG_WINDOW`]: drop the backlog,
    /// send `reset` and go on live (`Ok(true)`, or `Ok(false)` when a single job's stream is
    /// complete); the second time: end the stream.
    async fn lagged(&mut self) -> Result<bool, Stop> {
        let stream = self.sub.stream;
        if self.last_lag.is_some_and(|t| t.elapsed() < LAG_WINDOW) {
            tracing::info!(
                stream,
                cursor = self.cursor,
                "closing a stream whose client keeps falling behind"
            );
            return Ok(false);
        }
        self.last_lag = Some(Instant::now());
        let delivered = self.cursor;
        // A receiver at the feed's tail; events the feed sent before it, above `head`, are
        // among those skipped, which the reset announces.
        self.live = self.live.resubscribe();
        self.cursor = self.cursor.max(self.feed.head());
        tracing::info!(
            stream,
            delivered,
            skipped_to = self.cursor,
            "a stream client fell behind; sending reset"
        );
        let reset = json!({
            "reason": "this connection fell behind the live feed and events were skipped; refetch state through the REST API, or reconnect with Last-Event-ID set to last_delivered_event_id to replay them from the log",
            "last_delivered_event_id": delivered,
            "skipped_to_event_id": self.cursor,
        });
        self.send(control_event("reset", self.cursor, stream, reset), true)
            .await?;
        Ok(!self.close_if_finished().await?)
    }

    /// Sends every matching logged event after the cursor.
    async fn replay(&mut self) -> Result<(), Stop> {
        loop {
            let page = match self.store.events_after(self.cursor, REPLAY_BATCH).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "stream replay could not read the event log");
                    let error = control_event(
                        "error",
                        self.cursor,
                        self.sub.stream,
                        json!({"reason": "event log unavailable"}),
                    );
                    let _ = self.send(error, false).await;
                    return Err(Stop::Gone);
                }
            };
            let full = page.len() as i64 == REPLAY_BATCH;
            for event in page {
                self.cursor = event.id;
                if self.sub.filter.matches(&event) {
                    self.note_replayed(&event);
                    let event = FeedEvent::new(event);
                    self.send(log_event(&event, self.sub.stream), false).await?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// A single job's stream replaying its `job_finished` waits for the report until the
    /// report's deadline counted from that event; its `job_report` or `job_deleted` ends the
    /// wait (the stream then closes after the replay).
    fn note_replayed(&mut self, event: &crate::store::StoredEvent) {
        if self.sub.single_job.is_none() {
            return;
        }
        match event.kind {
            EventKind::JobFinished => {
                let since = (crate::domain::now_micros() - event.occurred_at)
                    .to_std()
                    .unwrap_or_default();
                self.closes_at =
                    Some(tokio::time::Instant::now() + self.report_wait.saturating_sub(since));
            }
            EventKind::JobReport | EventKind::JobDeleted => self.closes_at = None,
            _ => {}
        }
    }

    /// A single job's current state, read after the cursor was fixed (so a change committed
    /// meanwhile follows it rather than being lost). A job that does not exist sends nothing;
    /// [`Pump::close_if_finished`] then closes the stream with "job not found".
    async fn send_current_state(&self) -> Result<(), Stop> {
        let Some(id) = &self.sub.single_job else {
            return Ok(());
        };
        let job = match self.store.get_job(id).await {
            Ok(job) => job,
            Err(crate::store::StoreError::NotFound) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "a job stream could not read its job's state");
                return Ok(());
            }
        };
        let data = json!({ "job": job });
        let json = envelope_text(
            "job_state",
            self.sub.stream,
            &data,
            crate::domain::now_micros(),
        );
        let message = Outgoing {
            id: self.cursor,
            name: "job_event",
            json: json.into(),
        };
        self.send(message, false).await
    }

    /// The last message of a single-job stream.
    async fn send_closed(&self, reason: &str) -> Result<(), Stop> {
        let closed = control_event(
            "stream_closed",
            self.cursor,
            self.sub.stream,
            json!({ "reason": reason }),
        );
        self.send(closed, false).await
    }

    /// For a single-job stream: a job that is already finished (or gone) ends the stream with
    /// `stream_closed`; `Ok(true)` then.
    async fn close_if_finished(&mut self) -> Result<bool, Stop> {
        let Some(id) = self.sub.single_job.clone() else {
            return Ok(false);
        };
        let job = self.store.get_job(&id).await;
        if matches!(&job, Ok(job) if job.state.is_terminal()) && self.closes_at.is_none() {
            // It may have finished after the last replay read the log: its `job_finished` (and
            // report) are logged with the state, so send them before deciding, not skip them.
            self.replay().await?;
        }
        let reason = match job {
            // Its `job_finished` was replayed, its report not yet: wait for it live.
            Ok(job) if job.state.is_terminal() && self.closes_at.is_some() => return Ok(false),
            Ok(job) if job.state.is_terminal() => "job finished",
            Ok(_) => return Ok(false),
            Err(crate::store::StoreError::NotFound) => "job not found",
            Err(_) => return Ok(false),
        };
        self.send_closed(reason).await?;
        Ok(true)
    }
}

/// Whether the log still holds every event after `cursor`, and `cursor` is one this log gave
/// out: a cursor past the newest event (a browser tab left open while the database was
/// recreated) would otherwise wait, forever, for ids that this log hands out to other events.
async fn cursor_is_retained(store: &Store, cursor: i64) -> bool {
    let Ok(newest) = store.last_event_id().await else {
        return true;
    };
    if cursor > newest {
        return false;
    }
    match store.events_after(0, 1).await {
        Ok(first) => match first.first() {
            Some(oldest) => cursor + 1 >= oldest.id,
            // An empty log at or past the cursor: nothing was lost.
            None => true,
        },
        Err(_) => true,
    }
}

/// A single job's stream waits twice the report grace and this for `job_report` (the report
/// is due one grace after `job_finished` reaches the scheduler; the rest is slack for a
/// slow database).
const REPORT_MARGIN: Duration = Duration::from_secs(1);

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredEvent;

    fn stored(kind: &str, payload: Value) -> FeedEvent {
        FeedEvent::new(StoredEvent {
            id: 9,
            occurred_at: chrono::Utc::now(),
            kind: kind.parse().expect("an event kind"),
            job_id: None,
            payload,
        })
    }

    #[test]
    fn an_event_is_encoded_once_per_stream_name() {
        let event = stored("node_updated", json!({"node": {"name": "n1"}}));
        let a = log_event(&event, "nodes");
        let b = log_event(&event, "nodes");
        assert!(Arc::ptr_eq(&a.json, &b.json), "shared, not re-encoded");
        assert_eq!(a.name, "node_event");
        let envelope: Value = serde_json::from_str(&a.json).unwrap();
        assert_eq!(envelope["type"], "node_updated");
        assert_eq!(envelope["stream"], "nodes");
        assert_eq!(envelope["data"]["node"]["name"], "n1");
        let other: Value = serde_json::from_str(&log_event(&event, "cluster").json).unwrap();
        assert_eq!(other["stream"], "cluster");
    }

    #[test]
    fn ws_text_adds_id_and_subscription() {
        let event = stored("job_created", json!({"a": "}"}));
        let message = log_event(&event, "jobs");
        let ws: Value = serde_json::from_str(&message.ws_text("s\"1")).unwrap();
        assert_eq!(ws["id"], 9);
        assert_eq!(ws["subscription"], "s\"1");
        assert_eq!(ws["data"]["a"], "}");
        assert_eq!(ws["type"], "job_created");
    }
}
