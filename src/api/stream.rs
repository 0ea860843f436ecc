//! Server-Sent Events: `GET /v1/stream/jobs` (every job, filtered), `GET /v1/stream/jobs/{id}` (one
//! job, its samples included, closing with `stream_closed` once the job has finished), `GET
//! /v1/stream/nodes` (node state and usage), `GET /v1/stream/partitions` (Slurm's partitions) and
//! `GET /v1/stream/cluster` (a periodic status plus the job changes).
//!
//! Each connection gets a pump task that first replays the event log after the client's cursor
//! (`Last-Event-ID`, or `?last_event_id=`; the header wins), then forwards live events from the
//! [`EventFeed`](crate::events::EventFeed), skipping ids it already sent: no gap, no duplicate.
//! Without a cursor a stream starts after the newest event committed before its response went
//! out, so a client that has its response sees every event committed from then on. A
//! cursor older than the log's retention gets a `reset` event: the client should refetch state
//! through REST.
//!
//! **Slow clients.** The pump writes into a small bounded channel ([`CONNECTION_BUFFER`]), so a
//! client that does not read holds at most that many messages here; the feed never waits for
//! anyone. Once such a client has fallen behind by more than the feed keeps, it has *lagged*: the
//! pump drops its backlog and sends `reset` (with the last id it did deliver, so the client may
//! also reconnect from there and replay the gap from the log), then continues live. A second lag
//! within [`LAG_WINDOW`](pump::LAG_WINDOW) ends the stream. Lagging clients are never replayed from
//! the log by the server itself: after a burst, thousands of them doing so at once would load the
//! database for nothing. What the socket holds beyond the channel (hyper's write queue, the
//! kernel's send buffer) is bounded too; a peer that stops reading altogether is dropped by the
//! kernel (`TCP_USER_TIMEOUT`, see [`super::socket`]).
//!
//! Messages are framed once per event and stream name, not once per subscriber (see
//! [`FeedEvent::encoded`](crate::events::FeedEvent::encoded)).
//!
//! The pieces: [`registry`] counts the open connections and shares the cluster status; [`encode`]
//! makes the envelope and frames it for SSE or a WebSocket; [`pump`] replays and follows one
//! connection; this file holds the routes' handlers and the SSE response. A job's output is
//! followed by [`super::log_stream`] instead.

use super::error::ApiError;
use super::identity::Identity;
use super::request::job_id;
pub(super) use super::stream_filter::StreamFilter;
use super::stream_filter::{reject_unknown, JOB_PARAMS, NODE_PARAMS, PARTITION_PARAMS};
use super::AppState;
use crate::store::Store;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use warp::reply::{Reply, Response};
use warp::sse::Event;

mod encode;
mod pump;
mod registry;

pub(super) use encode::Outgoing;
pub(super) use pump::{pump_for, start_from, Start};
pub(super) use registry::Registered;
pub use registry::StreamRegistry;

/// Messages buffered per connection between its pump and the socket.
pub(super) const CONNECTION_BUFFER: usize = 64;
/// Silence after which a `: ping` comment is sent.
const PING_AFTER: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to EventSource clients.
const RETRY_HINT: Duration = Duration::from_secs(3);
/// How long one cluster status is shared by every `/v1/stream/cluster` connection.
const STATUS_MAX_AGE: Duration = Duration::from_secs(1);

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
            Ok((Subscription::new("jobs", filter), start))
        });
    open(state, result).await
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
            Ok((Subscription::new("nodes", filter), start))
        });
    open(state, result).await
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
            Ok((Subscription::new("partitions", filter), start))
        });
    open(state, result).await
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
        Ok((sub, start))
    })();
    open(state, result).await
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
        Ok((sub, start))
    })();
    open(state, result).await
}

/// Starts the pump and returns the SSE response, or the request's error. A stream without a
/// cursor starts from "now" as fixed before the response goes out (see [`start_from`]).
async fn open(state: AppState, request: Result<(Subscription, Option<i64>), ApiError>) -> Response {
    let (sub, start) = match request {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let start = start_from(&state, start).await;
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
